//! DPS provisioning against a scripted DPS responder: a real TLS 1.2 server (rustls) on a
//! loopback port that reads our MQTT packets with mqttbytes and answers as DPS does (202
//! with an operation id and retry-after, then 200 with the assigned hub).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::BytesMut;
use mqttbytes::v4;
use mqttbytes::QoS;

use common::Pki;
use tether::auth::dps::derive_device_key;
use tether::auth::sas::{self, SasKey};
use tether::policy::{load_certificates, load_private_key, TlsPolicy};
use tether::provisioning::{provision, Assignment, DpsCredential, DpsRequest};
use tether::Code;

const SCOPE: &str = "0neFEEDC0DE";
const REG: &str = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
const GROUP_KEY: &str =
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";

/// What the responder saw.
#[derive(Debug, Default)]
struct Seen {
    client_id: String,
    username: String,
    password: String,
    topics: Vec<String>,
    bodies: Vec<String>,
}

/// A scripted DPS: answers the registration with the given (status, retry-after, body)
/// replies in order, one per request. Returns its port and what it saw.
fn dps_responder(replies: Vec<(u16, Option<u32>, String)>) -> (u16, mpsc::Receiver<Seen>) {
    let pki = Pki::shared();
    let certs = load_certificates(&std::fs::read(pki.path("server.pem")).unwrap()).unwrap();
    let key = load_private_key(&std::fs::read(pki.path("server.key")).unwrap()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut seen = Seen::default();
        let mut rx = BytesMut::new();
        let mut replies = replies.into_iter();
        let mut buf = [0u8; 8192];
        loop {
            let packet = loop {
                match v4::read(&mut rx, 1 << 20) {
                    Ok(p) => break Some(p),
                    Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("malformed packet from the device: {e:?}"),
                }
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => rx.extend_from_slice(&buf[..n]),
                }
            };
            let mut out = BytesMut::new();
            match packet {
                None | Some(v4::Packet::Disconnect) => break,
                Some(v4::Packet::Connect(c)) => {
                    seen.client_id = c.client_id.clone();
                    let login = c.login.unwrap_or_else(|| v4::Login::new("", ""));
                    seen.username = login.username;
                    seen.password = login.password;
                    v4::ConnAck::new(v4::ConnectReturnCode::Success, false)
                        .write(&mut out)
                        .unwrap();
                }
                Some(v4::Packet::Subscribe(s)) => {
                    v4::SubAck::new(
                        s.pkid,
                        vec![v4::SubscribeReasonCode::Success(QoS::AtLeastOnce)],
                    )
                    .write(&mut out)
                    .unwrap();
                }
                Some(v4::Packet::Publish(p)) => {
                    v4::PubAck::new(p.pkid).write(&mut out).unwrap();
                    let rid = p
                        .topic
                        .split("$rid=")
                        .nth(1)
                        .unwrap()
                        .split('&')
                        .next()
                        .unwrap()
                        .to_owned();
                    seen.topics.push(p.topic.clone());
                    seen.bodies
                        .push(String::from_utf8_lossy(&p.payload).into_owned());
                    let (status, retry, body) = replies.next().expect("a scripted reply");
                    let topic = match retry {
                        Some(r) => {
                            format!("$dps/registrations/res/{status}/?$rid={rid}&retry-after={r}")
                        }
                        None => format!("$dps/registrations/res/{status}/?$rid={rid}"),
                    };
                    v4::Publish::new(topic, QoS::AtMostOnce, body.into_bytes())
                        .write(&mut out)
                        .unwrap();
                }
                Some(_) => {}
            }
            if !out.is_empty() {
                tls.write_all(&out).unwrap();
                tls.flush().unwrap();
            }
        }
        let _ = tx.send(seen);
    });
    (port, rx)
}

fn request(port: u16, credential: DpsCredential) -> DpsRequest {
    let mut policy = TlsPolicy::new();
    policy.add_ca_file(&Pki::shared().path("ca.pem")).unwrap();
    DpsRequest {
        endpoint: "localhost".into(),
        port,
        id_scope: SCOPE.into(),
        registration_id: REG.into(),
        credential,
        tls: policy.build().unwrap(),
        has_client_cert: false,
        transport: tether::transport::Transport::Mqtt,
        websocket_port: 443,
        proxy: None,
        timeout: Duration::from_secs(20),
    }
}

fn now() -> u64 {
    tether::client::system_now_ms() / 1000
}

fn group_credential() -> DpsCredential {
    let group = SasKey::from_base64(GROUP_KEY).unwrap();
    DpsCredential::SymmetricKey {
        key: Box::new(derive_device_key(&group, REG).unwrap()),
        group: true,
    }
}

#[test]
fn provisioning_registers_polls_after_retry_after_and_returns_the_assigned_hub() {
    let (port, seen) = dps_responder(vec![
        (
            202,
            Some(1),
            r#"{"operationId":"4.d0a671905ea5b2c8.42d78160","status":"assigning"}"#.into(),
        ),
        (
            200,
            None,
            r#"{"operationId":"4.d0a671905ea5b2c8.42d78160","status":"assigned","registrationState":{"assignedHub":"hub-7.azure-devices.net","deviceId":"sn-007","status":"assigned"}}"#.into(),
        ),
    ]);
    let start = std::time::Instant::now();
    let assignment = provision(&request(port, group_credential()), now()).unwrap();
    assert_eq!(
        assignment,
        Assignment {
            assigned_hub: "hub-7.azure-devices.net".into(),
            device_id: "sn-007".into(),
        }
    );
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "retry-after was honoured"
    );
    let seen = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.client_id, REG);
    assert!(
        seen.username.starts_with(&format!(
            "{SCOPE}/registrations/{REG}/api-version=2019-03-31&ClientVersion=tether/"
        )),
        "{}",
        seen.username
    );
    // The token is signed with the derived key, for the registration, as a group enrollment.
    let derived = derive_device_key(&SasKey::from_base64(GROUP_KEY).unwrap(), REG).unwrap();
    let token = sas::verify(&seen.password, &derived, now()).expect("a valid token");
    assert_eq!(token.resource_uri, format!("{SCOPE}/registrations/{REG}"));
    assert_eq!(token.key_name.as_deref(), Some("registration"));
    assert_eq!(
        seen.topics,
        [
            "$dps/registrations/PUT/iotdps-register/?$rid=1".to_owned(),
            "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.d0a671905ea5b2c8.42d78160".to_owned(),
        ]
    );
    assert_eq!(seen.bodies[0], format!("{{\"registrationId\":\"{REG}\"}}"));
}

#[test]
fn provisioning_goes_through_a_real_http_proxy_and_names_its_refusal() {
    let assigned = r#"{"operationId":"4.a","status":"assigned","registrationState":{"assignedHub":"hub-7.azure-devices.net","deviceId":"sn-007","status":"assigned"}}"#;
    let (port, seen) = dps_responder(vec![(200, None, assigned.into())]);
    let proxy = common::proxy::Tinyproxy::start(&[port], None);
    let request = DpsRequest {
        proxy: Some(tether::transport::proxy::Proxy::parse(&proxy.url(None)).unwrap()),
        ..request(port, group_credential())
    };
    let assignment = provision(&request, now()).unwrap();
    assert_eq!(assignment.assigned_hub, "hub-7.azure-devices.net");
    assert_eq!(proxy.connects(), [format!("localhost:{port}")]);
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(5)).unwrap().client_id,
        REG
    );

    // A proxy that refuses CONNECT to the DPS port: its status line, named.
    let strict = common::proxy::Tinyproxy::start(&[port + 1], None);
    let request = DpsRequest {
        proxy: Some(tether::transport::proxy::Proxy::parse(&strict.url(None)).unwrap()),
        ..request
    };
    let err = provision(&request, now()).unwrap_err();
    assert_eq!(err.code(), Code::ProxyRefused, "{err:?}");
    assert!(err.message().contains("403 Access violation"), "{err:?}");
}

#[test]
fn provisioning_names_a_refusal() {
    let (port, _seen) = dps_responder(vec![(
        401,
        None,
        r#"{"errorCode":401002,"message":"The device is unauthorized to register."}"#.into(),
    )]);
    let err = provision(&request(port, group_credential()), now()).unwrap_err();
    assert_eq!(err.code(), Code::NotAuthorized);
    assert!(err.message().contains("status 401"), "{err:?}");
    assert!(
        err.message().contains("unauthorized to register"),
        "{err:?}"
    );
}

#[test]
fn c_example_provision_dps_prints_the_assignment() {
    let (port, seen) = dps_responder(vec![(
        200,
        None,
        r#"{"operationId":"op-1","status":"assigned","registrationState":{"assignedHub":"hub-9.azure-devices.net","deviceId":"sensor-9"}}"#.into(),
    )]);
    let build = common::build_examples(&common::install_prefix(), false);
    let out = std::process::Command::new(build.join("provision_dps"))
        .env("TETHER_DPS_ID_SCOPE", SCOPE)
        .env("TETHER_DPS_REGISTRATION_ID", REG)
        .env("TETHER_DPS_GROUP_KEY", GROUP_KEY)
        .env("TETHER_DPS_ENDPOINT", "localhost")
        .env("TETHER_PORT", port.to_string())
        .env("TETHER_CA_FILE", Pki::shared().path("ca.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "assigned hub-9.azure-devices.net sensor-9\n"
    );
    let seen = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.client_id, REG);
}

fn assigned(hub: &str, device: &str) -> String {
    format!(
        r#"{{"operationId":"op-1","status":"assigned","registrationState":{{"assignedHub":"{hub}","deviceId":"{device}","status":"assigned"}}}}"#
    )
}

#[test]
fn provisioning_refuses_an_assignment_that_would_inject_connection_string_fields() {
    // A hostile or broken DPS must not smuggle ";GatewayHostName=..." (or anything that is
    // not a host name or a device id) into what the device pastes into a connection string.
    let cases = [
        (
            "hub-7.azure-devices.net;GatewayHostName=evil.example",
            "sn-007",
            "DPS reply: assignedHub: host name",
            "';' at offset 23",
        ),
        (
            "hub-7.azure-devices.net",
            "sn-007;GatewayHostName=evil.example",
            "DPS reply: deviceId: device id",
            "a connection string cannot hold ';'",
        ),
        (
            "hub-7.azure-devices.net/x",
            "sn-007",
            "DPS reply: assignedHub",
            "'/' at offset 23",
        ),
        (
            "hub-7.azure-devices.net",
            "sn 007",
            "DPS reply: deviceId",
            "a space at offset 2",
        ),
        (
            "hub-7.azure-devices.net",
            "",
            "DPS reply: deviceId",
            "device id is empty",
        ),
    ];
    for (hub, device, field, why) in cases {
        let (port, _seen) = dps_responder(vec![(200, None, assigned(hub, device))]);
        let err = provision(&request(port, group_credential()), now()).unwrap_err();
        assert_eq!(err.code(), Code::IdInvalid, "{hub} {device}: {err:?}");
        assert!(err.message().starts_with(field), "{err:?}");
        assert!(err.message().contains(why), "{err:?}");
    }
    // IoT Hub's own id characters (other than ';') are a valid assignment.
    let (port, _seen) = dps_responder(vec![(
        200,
        None,
        assigned("hub-7.azure-devices.net", "sn+007#(a)"),
    )]);
    let a = provision(&request(port, group_credential()), now()).unwrap();
    assert_eq!(a.device_id, "sn+007#(a)");
}

/// A DPS endpoint that completes the TLS handshake, reads the CONNECT, then sends a record
/// that does not decrypt (a corrupted or forged record). Returns its port.
fn corrupting_dps() -> u16 {
    let config = common::faults::server_config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 4096];
        // The CONNECT arrives once the handshake is complete.
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0 && buf[0] == 0x10, "a CONNECT first");
        // An application-data record of the right shape whose contents fail to decrypt.
        let mut record = vec![23, 3, 3, 0, 40];
        record.extend_from_slice(&[0x5a; 40]);
        tls.sock.write_all(&record).unwrap();
        let _ = tls.sock.read(&mut buf);
    });
    port
}

#[test]
fn provisioning_names_a_tls_record_rejected_after_the_handshake_as_the_session_does() {
    let port = corrupting_dps();
    let err = provision(&request(port, group_credential()), now()).unwrap_err();
    // The device session reports such a record the same way (tests/faults.rs,
    // a_corrupted_tls_record_after_connack_is_retried_not_fatal): an I/O failure worth
    // retrying, not a handshake refusal.
    assert_eq!(err.code(), Code::Io, "{err:?}");
    assert!(
        err.message()
            .starts_with("TLS record from localhost rejected: "),
        "{err:?}"
    );
    assert!(tether::session::Disconnect::for_error(err).will_retry());
}

#[test]
fn c_program_provisions_through_dps_session_with_its_own_socket() {
    let (port, seen) = dps_responder(vec![
        (
            202,
            Some(1),
            r#"{"operationId":"op-7","status":"assigning"}"#.into(),
        ),
        (200, None, assigned("hub-7.azure-devices.net", "sn-007")),
    ]);
    let program = common::compile_c("dps_session", "tests/c/dps_session.c", &[], &[]);
    let start = std::time::Instant::now();
    let out = common::run(
        std::process::Command::new(&program)
            .env("TETHER_PORT", port.to_string())
            .env("TETHER_DPS_ENDPOINT", "localhost")
            .env("TETHER_DPS_ID_SCOPE", SCOPE)
            .env("TETHER_DPS_REGISTRATION_ID", REG)
            .env("TETHER_DPS_GROUP_KEY", GROUP_KEY)
            .env("TETHER_CA_FILE", Pki::shared().path("ca.pem")),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "needed 23 6\nassigned hub-7.azure-devices.net sn-007\n"
    );
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "the C loop waited DPS's retry-after through next_deadline"
    );
    let seen = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.client_id, REG);
    let derived = derive_device_key(&SasKey::from_base64(GROUP_KEY).unwrap(), REG).unwrap();
    sas::verify(&seen.password, &derived, now()).expect("a valid token");
    assert_eq!(
        seen.topics,
        [
            "$dps/registrations/PUT/iotdps-register/?$rid=1".to_owned(),
            "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=op-7".to_owned(),
        ]
    );
}

#[test]
fn dps_session_reads_no_clock_a_retry_after_waits_on_the_callers_time() {
    use tether::provisioning::{DpsSession, DpsStatus};
    // DPS asks for a 30 s wait; the caller's clock jumps there at once.
    let (port, seen) = dps_responder(vec![
        (
            202,
            Some(30),
            r#"{"operationId":"op-30","status":"assigning"}"#.into(),
        ),
        (200, None, assigned("hub-3.azure-devices.net", "sn-3")),
    ]);
    let mut req = request(port, group_credential());
    req.timeout = Duration::from_secs(120);
    let mut dps = DpsSession::new(req).unwrap();
    let mut now_ms = tether::client::system_now_ms();
    let started = std::time::Instant::now();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    dps.start(now_ms).unwrap();
    let overall = now_ms + 120_000;
    assert_eq!(dps.next_deadline(), Some(overall));
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut jumped = false;
    while dps.status() == DpsStatus::InProgress {
        assert!(started.elapsed() < Duration::from_secs(25), "stuck");
        out.clear();
        dps.poll_output(&mut out);
        tcp.write_all(&out).unwrap();
        let deadline = dps.next_deadline().unwrap();
        if deadline < overall {
            // The retry timer: 30 s after the 202 arrived, on our clock.
            assert!(deadline >= now_ms + 30_000 && deadline <= now_ms + 31_000);
            assert!(!jumped);
            jumped = true;
            now_ms = deadline;
            dps.handle_timeout(now_ms);
            continue;
        }
        match tcp.read(&mut buf) {
            Ok(0) => dps.transport_closed(),
            Ok(n) => dps.handle_input(&buf[..n], now_ms).unwrap(),
            Err(_) => {}
        }
    }
    out.clear();
    dps.poll_output(&mut out);
    let _ = tcp.write_all(&out);
    assert!(jumped, "DPS's retry-after became a deadline");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the 30 s wait was the caller's to skip"
    );
    let assignment = dps.outcome().unwrap().as_ref().unwrap();
    assert_eq!(assignment.assigned_hub, "hub-3.azure-devices.net");
    assert_eq!(assignment.device_id, "sn-3");
    assert_eq!(dps.next_deadline(), None);
    let seen = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.topics.len(), 2);
    assert!(
        seen.topics[1].contains("operationId=op-30"),
        "{:?}",
        seen.topics
    );
}
