//! The sans-IO session paired with a scripted hub: a real rustls TLS 1.2 server in memory
//! that reads our MQTT packets (decoded by mqttbytes, an independent implementation) and
//! answers as IoT Hub would. Time is simulated: no sockets, no sleeps. Both clocks read
//! the simulated time: the monotonic `now` given to each call, and the wall clock (the TLS
//! configuration's, so certificates are checked on it too) set by [`set_wall`].

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::BytesMut;
use mqttbytes::v4;
use mqttbytes::QoS;
use rustls::ServerConnection;

use common::Pki;
use tether::auth::connection_string::{Credential, KeyPair, KeySlot};
use tether::auth::sas::{self, SasKey};
use tether::mqtt::properties::PropertyBag;
use tether::policy::{load_certificates, load_private_key, TlsPolicy};
use tether::session::{Disconnect, Event, Session, SessionConfig, SessionOptions, Subscription};
use tether::Code;

const HOST: &str = "localhost";
const DEVICE: &str = "dev-1";
const PRIMARY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
const SECONDARY: &str =
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
/// The simulated clock's start: the next midnight UTC, in milliseconds (after the test
/// PKI was made, so its certificates are valid).
fn t0() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (now / 86_400 + 1) * 86_400_000
    })
}

thread_local! {
    /// The simulated wall clock of this test's thread (each test runs on its own).
    static WALL_MS: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Sets the simulated wall clock (it starts at [`t0`]).
fn set_wall(ms: u64) {
    WALL_MS.with(|w| w.set(Some(ms)));
}

#[derive(Debug)]
struct SimulatedWall;

impl rustls::time_provider::TimeProvider for SimulatedWall {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        let ms = WALL_MS.with(|w| w.get()).unwrap_or_else(t0);
        Some(rustls::pki_types::UnixTime::since_unix_epoch(
            std::time::Duration::from_millis(ms),
        ))
    }
}

fn server_config(cert: &str, key: &str) -> Arc<rustls::ServerConfig> {
    let pki = Pki::shared();
    let certs = load_certificates(&std::fs::read(pki.path(cert)).unwrap()).unwrap();
    let key = load_private_key(&std::fs::read(pki.path(key)).unwrap()).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    )
}

fn keys(secondary: bool) -> Credential {
    let mut pair = KeyPair::new(SasKey::from_base64(PRIMARY).unwrap());
    if secondary {
        pair.set_secondary(SasKey::from_base64(SECONDARY).unwrap());
    }
    Credential::Keys {
        keys: Box::new(pair),
        key_name: None,
    }
}

fn session(credential: Credential, options: SessionOptions) -> Session {
    let mut policy = TlsPolicy::new();
    policy.add_ca_file(&Pki::shared().path("ca.pem")).unwrap();
    policy.set_clock(Arc::new(SimulatedWall));
    Session::new(SessionConfig {
        hub_host: HOST.into(),
        server_name: HOST.into(),
        device_id: DEVICE.into(),
        module_id: None,
        credential,
        tls: policy.build().unwrap(),
        has_client_cert: false,
        options,
    })
    .unwrap()
}

/// The hub's side of one connection.
struct Hub {
    tls: ServerConnection,
    rx: BytesMut,
}

impl Hub {
    fn new() -> Hub {
        Hub::with_cert("server.pem", "server.key")
    }

    fn with_cert(cert: &str, key: &str) -> Hub {
        Hub {
            tls: ServerConnection::new(server_config(cert, key)).unwrap(),
            rx: BytesMut::new(),
        }
    }

    /// Moves bytes both ways until neither side has anything to say.
    fn pump(&mut self, s: &mut Session, now: u64) {
        for _ in 0..20 {
            let mut out = Vec::new();
            s.poll_output(&mut out);
            let mut moved = !out.is_empty();
            if !out.is_empty() {
                self.tls.read_tls(&mut out.as_slice()).unwrap();
                if self.tls.process_new_packets().is_err() {
                    return;
                }
                let mut buf = [0u8; 65536];
                while let Ok(n) = self.tls.reader().read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    self.rx.extend_from_slice(&buf[..n]);
                }
            }
            let mut back = Vec::new();
            while self.tls.wants_write() {
                self.tls.write_tls(&mut back).unwrap();
            }
            if !back.is_empty() {
                moved = true;
                if s.handle_input(&back, now).is_err() {
                    return;
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn packet(&mut self) -> Option<v4::Packet> {
        match v4::read(&mut self.rx, 1 << 20) {
            Ok(p) => Some(p),
            Err(mqttbytes::Error::InsufficientBytes(_)) => None,
            Err(e) => panic!("the session sent a malformed packet: {e:?}"),
        }
    }

    fn expect_connect(&mut self) -> v4::Connect {
        match self.packet() {
            Some(v4::Packet::Connect(c)) => c,
            other => panic!("expected CONNECT, got {other:?}"),
        }
    }

    fn send(&mut self, write: impl FnOnce(&mut BytesMut)) {
        let mut buf = BytesMut::new();
        write(&mut buf);
        self.tls.writer().write_all(&buf).unwrap();
    }

    fn connack(&mut self, code: v4::ConnectReturnCode) {
        self.send(|b| {
            v4::ConnAck::new(code, false).write(b).unwrap();
        });
    }

    fn publish(&mut self, topic: &str, qos: QoS, pkid: u16, payload: &[u8]) {
        let mut p = v4::Publish::new(topic, qos, payload.to_vec());
        p.pkid = pkid;
        self.send(|b| {
            p.write(b).unwrap();
        });
    }
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Connects `s` to a new hub and accepts it; returns the hub and the CONNECT it saw.
fn connected(s: &mut Session, now: u64) -> (Hub, v4::Connect) {
    let mut hub = Hub::new();
    set_wall(now);
    s.connect(now).unwrap();
    hub.pump(s, now);
    let connect = hub.expect_connect();
    hub.connack(v4::ConnectReturnCode::Success);
    hub.pump(s, now);
    (hub, connect)
}

#[test]
fn session_connects_with_iot_hub_identity_and_a_valid_sas_token() {
    let mut s = session(keys(false), SessionOptions::default());
    let (_hub, connect) = connected(&mut s, t0());
    assert_eq!(connect.client_id, DEVICE);
    assert_eq!(connect.keep_alive, 60);
    let login = connect.login.expect("a user name and password");
    assert_eq!(
        login.username,
        format!(
            "{HOST}/{DEVICE}/?api-version=2021-04-12&DeviceClientType=tether%2F{}",
            tether::VERSION
        )
    );
    let key = SasKey::from_base64(PRIMARY).unwrap();
    let token = sas::verify(&login.password, &key, t0() / 1000).expect("the hub accepts the token");
    assert_eq!(token.expiry_unix, t0() / 1000 + 3600);
    match events(&mut s).as_slice() {
        [Event::Connected {
            tls_version,
            cipher_suite,
            key,
            resent,
        }] => {
            assert_eq!(tls_version, "TLSv1.2");
            assert_eq!(cipher_suite, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
            assert_eq!(*key, Some(KeySlot::Primary));
            assert_eq!(*resent, 0);
        }
        other => panic!("expected Connected, got {other:?}"),
    }
    assert!(s.is_connected());
}

#[test]
fn telemetry_is_published_with_properties_and_acknowledged() {
    let mut s = session(keys(false), SessionOptions::default());
    let (mut hub, _) = connected(&mut s, t0());
    events(&mut s);
    let mut bag = PropertyBag::new();
    bag.append("$.ct", Some("application/json"))
        .append("temp unit", Some("°C"));
    let id = s.send_telemetry(br#"{"t":21.5}"#, &bag, 1, t0()).unwrap();
    hub.pump(&mut s, t0());
    let publish = match hub.packet() {
        Some(v4::Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    assert_eq!(
        publish.topic,
        "devices/dev-1/messages/events/%24.ct=application%2Fjson&temp%20unit=%C2%B0C"
    );
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert_eq!(&publish.payload[..], br#"{"t":21.5}"#);
    assert_eq!(s.inflight(), 1);
    hub.send(|b| {
        v4::PubAck::new(publish.pkid).write(b).unwrap();
    });
    hub.pump(&mut s, t0());
    assert_eq!(events(&mut s), [Event::TelemetryAcked { id }]);
    assert_eq!(s.inflight(), 0);
}

/// The TLS records in `bytes`: (content type, length of the fragment).
fn records(mut bytes: &[u8]) -> Vec<(u8, usize)> {
    let mut found = Vec::new();
    while bytes.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
        found.push((bytes[0], len));
        bytes = &bytes[(5 + len).min(bytes.len())..];
    }
    assert!(bytes.is_empty(), "output ends inside a record");
    found
}

#[test]
fn a_burst_leaves_as_one_tls_record_and_the_hub_gets_every_message_in_order() {
    let mut s = session(keys(false), SessionOptions::default());
    let (mut hub, _) = connected(&mut s, t0());
    events(&mut s);
    let bag = PropertyBag::new();
    let mut ids = Vec::new();
    for i in 0..40u32 {
        let qos = (i % 2) as u8;
        let payload = format!("{i:0>256}");
        ids.push((
            s.send_telemetry(payload.as_bytes(), &bag, qos, t0())
                .unwrap(),
            qos,
        ));
    }
    // 40 PUBLISHes of about 300 bytes: less than one 16 KiB record.
    let mut out = Vec::new();
    s.poll_output(&mut out);
    let found = records(&out);
    assert_eq!(found.len(), 1, "records: {found:?}");
    assert_eq!(found[0].0, 0x17, "an application-data record");
    // AES-GCM in TLS 1.2: 8 bytes of explicit nonce and a 16-byte tag around the plaintext.
    let plaintext = found[0].1 - 8 - 16;
    // Each PUBLISH: type, 2-byte remaining length, topic length and the 30-byte topic,
    // the packet id (QoS 1), the 256-byte body.
    assert_eq!(
        plaintext,
        20 * (1 + 2 + 2 + 30 + 256) + 20 * (1 + 2 + 2 + 30 + 2 + 256)
    );
    // rustls takes at most 4 KiB per read_tls.
    let mut rest = out.as_slice();
    while !rest.is_empty() {
        hub.tls.read_tls(&mut rest).unwrap();
        hub.tls.process_new_packets().unwrap();
    }
    let mut buf = vec![0u8; 65536];
    let n = hub.tls.reader().read(&mut buf).unwrap();
    assert_eq!(n, plaintext);
    hub.rx.extend_from_slice(&buf[..n]);
    for i in 0..40u32 {
        let p = match hub.packet() {
            Some(v4::Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH {i}, got {other:?}"),
        };
        assert_eq!(p.topic, "devices/dev-1/messages/events/");
        assert_eq!(
            p.qos,
            if i % 2 == 1 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            }
        );
        assert!(!p.dup);
        assert_eq!(&p.payload[..], format!("{i:0>256}").as_bytes());
        if p.qos == QoS::AtLeastOnce {
            hub.send(|b| {
                v4::PubAck::new(p.pkid).write(b).unwrap();
            });
        }
    }
    hub.pump(&mut s, t0());
    let acked: Vec<Event> = events(&mut s);
    let want: Vec<Event> = ids
        .iter()
        .filter(|(_, qos)| *qos == 1)
        .map(|(id, _)| Event::TelemetryAcked { id: *id })
        .collect();
    assert_eq!(acked, want);
    assert_eq!(s.inflight(), 0);
}

#[test]
fn keep_alive_pings_and_a_silent_hub_is_a_retriable_timeout() {
    let mut s = session(keys(false), SessionOptions::default());
    let (mut hub, _) = connected(&mut s, t0());
    events(&mut s);
    assert_eq!(s.next_deadline(), Some(t0() + 60_000));
    s.handle_timeout(t0() + 59_999);
    hub.pump(&mut s, t0() + 59_999);
    assert!(hub.packet().is_none(), "no ping before the keep-alive");
    s.handle_timeout(t0() + 60_000);
    hub.pump(&mut s, t0() + 60_000);
    assert!(matches!(hub.packet(), Some(v4::Packet::PingReq)));
    // The hub answers: the next ping is a keep-alive later.
    hub.send(|b| {
        v4::PingResp.write(b).unwrap();
    });
    hub.pump(&mut s, t0() + 60_100);
    s.handle_timeout(t0() + 120_000);
    hub.pump(&mut s, t0() + 120_000);
    assert!(matches!(hub.packet(), Some(v4::Packet::PingReq)));
    // Now it stays silent.
    s.handle_timeout(t0() + 180_000);
    match events(&mut s).as_slice() {
        [Event::Disconnected(Disconnect::Retriable(e))] => {
            assert_eq!(e.code(), Code::Timeout);
            assert!(e.message().contains("no PINGRESP"), "{e:?}");
        }
        other => panic!("expected a retriable timeout, got {other:?}"),
    }
    assert!(!s.is_active());
}

#[test]
fn sas_renewal_reconnects_with_a_fresh_token_and_loses_nothing() {
    let options = SessionOptions {
        token_ttl_secs: 600,
        ..SessionOptions::default()
    };
    let mut s = session(keys(false), options);
    let (mut hub, first) = connected(&mut s, t0());
    s.subscribe(Subscription::C2d, t0()).unwrap();
    hub.pump(&mut s, t0());
    assert!(matches!(hub.packet(), Some(v4::Packet::Subscribe(_))));
    events(&mut s);

    // Renewal is due at the larger of 120 s and 15 % of 600 s before expiry: 480 s in.
    let renew = t0() + 480_000;
    assert!(s.next_deadline().unwrap() <= renew);
    s.handle_timeout(renew - 1);
    assert!(s.is_connected());
    // A message sent just before the renewal, not acknowledged on this connection.
    let id = s
        .send_telemetry(b"one", &PropertyBag::new(), 1, renew - 1)
        .unwrap();
    s.handle_timeout(renew);
    assert_eq!(events(&mut s), [Event::Disconnected(Disconnect::Renewal)]);
    hub.pump(&mut s, renew);
    // The idle 480 s also brought a keep-alive ping; the connection ends with DISCONNECT.
    let mut p = hub.packet();
    while matches!(p, Some(v4::Packet::PingReq)) {
        p = hub.packet();
    }
    let sent = match p {
        Some(v4::Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    assert!(matches!(hub.packet(), Some(v4::Packet::Disconnect)));

    let (mut hub, second) = connected(&mut s, renew + 50);
    let key = SasKey::from_base64(PRIMARY).unwrap();
    let old = sas::parse(&first.login.unwrap().password).unwrap();
    let new = sas::verify(&second.login.unwrap().password, &key, renew / 1000).unwrap();
    assert_eq!(new.expiry_unix, old.expiry_unix + 480);
    // Subscriptions are restored and the unacknowledged message is re-sent with DUP.
    match hub.packet() {
        Some(v4::Packet::Subscribe(sub)) => {
            assert_eq!(sub.filters[0].path, "devices/dev-1/messages/devicebound/#")
        }
        other => panic!("expected SUBSCRIBE, got {other:?}"),
    }
    match hub.packet() {
        Some(v4::Packet::Publish(p)) => {
            assert!(p.dup);
            assert_eq!((p.pkid, &p.payload[..]), (sent.pkid, &b"one"[..]));
        }
        other => panic!("expected the re-sent PUBLISH, got {other:?}"),
    }
    assert!(matches!(
        events(&mut s).as_slice(),
        [Event::Connected { resent: 1, .. }]
    ));
    hub.send(|b| {
        v4::PubAck::new(sent.pkid).write(b).unwrap();
    });
    hub.pump(&mut s, renew + 60);
    assert_eq!(events(&mut s), [Event::TelemetryAcked { id }]);
}

#[test]
fn a_refused_primary_key_switches_to_the_secondary_once() {
    let mut s = session(keys(true), SessionOptions::default());
    let mut hub = Hub::new();
    s.connect(t0()).unwrap();
    hub.pump(&mut s, t0());
    hub.expect_connect();
    hub.connack(v4::ConnectReturnCode::NotAuthorized);
    hub.pump(&mut s, t0());
    match events(&mut s).as_slice() {
        [Event::Disconnected(Disconnect::KeySwitched { error, now_using })] => {
            assert_eq!(*now_using, KeySlot::Secondary);
            assert_eq!(error.code(), Code::NotAuthorized);
            assert!(error.message().contains("primary key refused"), "{error:?}");
        }
        other => panic!("expected KeySwitched, got {other:?}"),
    }
    let mut hub = Hub::new();
    s.connect(t0() + 10).unwrap();
    hub.pump(&mut s, t0() + 10);
    let connect = hub.expect_connect();
    let secondary = SasKey::from_base64(SECONDARY).unwrap();
    sas::verify(&connect.login.unwrap().password, &secondary, t0() / 1000)
        .expect("signed with the secondary key");
    // Refused again: no more switching, the application must act.
    hub.connack(v4::ConnectReturnCode::NotAuthorized);
    hub.pump(&mut s, t0() + 10);
    match events(&mut s).as_slice() {
        [Event::Disconnected(Disconnect::Fatal(e))] => {
            assert!(e.message().contains("secondary key refused"), "{e:?}")
        }
        other => panic!("expected a fatal refusal, got {other:?}"),
    }
}

#[test]
fn c2d_methods_and_twin_arrive_as_events_and_methods_are_answered() {
    let mut s = session(keys(false), SessionOptions::default());
    let (mut hub, _) = connected(&mut s, t0());
    events(&mut s);
    s.subscribe(Subscription::C2d, t0()).unwrap();
    s.subscribe(Subscription::Methods, t0()).unwrap();
    let rid = s.twin_get(t0()).unwrap();
    hub.pump(&mut s, t0());
    let mut subscribed = Vec::new();
    let mut twin_get = None;
    while let Some(p) = hub.packet() {
        match p {
            v4::Packet::Subscribe(sub) => {
                subscribed.extend(sub.filters.into_iter().map(|f| f.path));
                hub.send(|b| {
                    v4::SubAck::new(
                        sub.pkid,
                        vec![v4::SubscribeReasonCode::Success(QoS::AtLeastOnce)],
                    )
                    .write(b)
                    .unwrap();
                });
            }
            v4::Packet::Publish(p) => twin_get = Some(p.topic),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        subscribed,
        [
            "devices/dev-1/messages/devicebound/#",
            "$iothub/methods/POST/#",
            "$iothub/twin/res/#",
            "$iothub/twin/PATCH/properties/desired/#"
        ]
    );
    assert_eq!(twin_get.unwrap(), format!("$iothub/twin/GET/?$rid={rid}"));

    hub.publish(
        "devices/dev-1/messages/devicebound/%24.mid=m1&color=dark%20blue&flag&empty=",
        QoS::AtLeastOnce,
        7,
        b"hello",
    );
    hub.publish(
        "$iothub/methods/POST/reboot/?$rid=42",
        QoS::AtMostOnce,
        0,
        b"{\"delay\":1}",
    );
    hub.publish(
        &format!("$iothub/twin/res/200/?$rid={rid}"),
        QoS::AtMostOnce,
        0,
        b"{\"desired\":{}}",
    );
    hub.publish(
        "$iothub/twin/PATCH/properties/desired/?$version=5",
        QoS::AtMostOnce,
        0,
        b"{\"x\":1}",
    );
    hub.pump(&mut s, t0() + 5);
    let got = events(&mut s);
    assert_eq!(
        got[0],
        Event::C2d {
            properties: vec![
                ("$.mid".into(), Some("m1".into())),
                ("color".into(), Some("dark blue".into())),
                ("flag".into(), None),
                ("empty".into(), Some(String::new())),
            ],
            payload: b"hello".to_vec(),
        }
    );
    assert_eq!(
        got[1],
        Event::MethodRequest {
            name: "reboot".into(),
            request_id: "42".into(),
            payload: b"{\"delay\":1}".to_vec(),
        }
    );
    assert_eq!(
        got[2],
        Event::TwinResponse {
            request_id: rid,
            status: 200,
            version: None,
            payload: b"{\"desired\":{}}".to_vec(),
        }
    );
    assert_eq!(
        got[3],
        Event::DesiredPatch {
            version: 5,
            payload: b"{\"x\":1}".to_vec(),
        }
    );
    // The QoS 1 C2D message was acknowledged once polled (at-least-once), and the method
    // gets its answer.
    hub.pump(&mut s, t0() + 5);
    assert!(matches!(hub.packet(), Some(v4::Packet::PubAck(a)) if a.pkid == 7));
    s.respond_method("42", 200, b"{\"ok\":true}", t0() + 6)
        .unwrap();
    hub.pump(&mut s, t0() + 6);
    match hub.packet() {
        Some(v4::Packet::Publish(p)) => {
            assert_eq!(p.topic, "$iothub/methods/res/200/?$rid=42");
            assert_eq!(&p.payload[..], b"{\"ok\":true}");
        }
        other => panic!("expected the method response, got {other:?}"),
    }
}

#[test]
fn the_in_flight_queue_is_bounded() {
    let options = SessionOptions {
        max_inflight: 3,
        ..SessionOptions::default()
    };
    let mut s = session(keys(false), options);
    // QoS 1 messages queue while disconnected; QoS 0 needs a connection.
    for _ in 0..3 {
        s.send_telemetry(b"x", &PropertyBag::new(), 1, t0())
            .unwrap();
    }
    let err = s
        .send_telemetry(b"x", &PropertyBag::new(), 1, t0())
        .unwrap_err();
    assert_eq!(err.code(), Code::QueueFull);
    let err = s
        .send_telemetry(b"x", &PropertyBag::new(), 0, t0())
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidState);
    let err = s
        .send_telemetry(b"x", &PropertyBag::new(), 2, t0())
        .unwrap_err();
    assert_eq!(err.code(), Code::MqttQosUnsupported);
    // Connecting sends the three queued messages.
    let (mut hub, _) = connected(&mut s, t0());
    let mut published = 0;
    while let Some(p) = hub.packet() {
        assert!(matches!(p, v4::Packet::Publish(_)));
        published += 1;
    }
    assert_eq!(published, 3);
}

#[test]
fn unsent_output_is_bounded_for_qos0_and_drains() {
    let mut s = session(keys(false), SessionOptions::default());
    let (mut hub, _) = connected(&mut s, t0());
    // 255 KiB messages while the driver takes no output: four fit in the 1 MiB bound.
    let body = vec![7u8; 255 * 1024];
    let mut accepted = 0;
    let err = loop {
        match s.send_telemetry(&body, &PropertyBag::new(), 0, t0()) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted <= 4, "the output bound was not applied");
    };
    assert_eq!(err.code(), Code::QueueFull, "{err}");
    assert_eq!(accepted, 4);
    // QoS 1 is refused too while the output is full (nothing is queued on the side).
    let err = s
        .send_telemetry(&body, &PropertyBag::new(), 1, t0())
        .unwrap_err();
    assert_eq!(err.code(), Code::QueueFull);
    assert_eq!(s.inflight(), 0);
    // Once the output is taken, sending works again.
    hub.pump(&mut s, t0());
    s.send_telemetry(&body, &PropertyBag::new(), 0, t0())
        .unwrap();
}

#[test]
fn a_hub_certificate_for_another_host_is_a_fatal_named_refusal() {
    let mut s = session(keys(false), SessionOptions::default());
    let mut hub = Hub::with_cert("wrong-host.pem", "wrong-host.key");
    s.connect(t0()).unwrap();
    hub.pump(&mut s, t0());
    match events(&mut s).as_slice() {
        [Event::Disconnected(Disconnect::Fatal(e))] => {
            assert_eq!(e.code(), Code::CertWrongHost);
            assert_eq!(
                e.message(),
                "certificate is for wrong.example.com, not localhost"
            );
        }
        other => panic!("expected a fatal TLS refusal, got {other:?}"),
    }
}

#[test]
fn connack_timeout_and_a_clock_left_at_1970() {
    let mut s = session(keys(false), SessionOptions::default());
    let mut hub = Hub::new();
    s.connect(t0()).unwrap();
    hub.pump(&mut s, t0());
    assert_eq!(s.next_deadline(), Some(t0() + 30_000));
    s.handle_timeout(t0() + 30_000);
    assert!(matches!(
        events(&mut s).as_slice(),
        [Event::Disconnected(Disconnect::Retriable(e))] if e.code() == Code::Timeout
    ));
    // The wall clock says 1970: no token is made from it, whatever the monotonic time.
    set_wall(5_000);
    let err = s.connect(t0() + 30_001).unwrap_err();
    assert_eq!(err.code(), Code::ClockNotSet);
}

#[test]
fn a_client_certificate_close_to_expiry_is_reported_at_connect() {
    use std::sync::{Arc, Mutex};
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    tether::log::set_sink(
        tether::log::Level::Warn,
        Some(Arc::new(move |_, line: &str| {
            sink.lock().unwrap().push(line.to_owned())
        })),
    );
    let options = SessionOptions {
        // Five days after the simulated clock's start.
        client_cert_not_after: Some((t0() / 1000 + 5 * 86_400) as i64),
        ..SessionOptions::default()
    };
    let mut s = session(keys(false), options);
    s.connect(t0()).unwrap();
    tether::log::set_sink(tether::log::Level::Warn, None);
    let lines = lines.lock().unwrap();
    let expected = format!(
        "the client certificate expires on {} (in 5 days): renew it before then",
        tether::cert::format_utc((t0() / 1000 + 5 * 86_400) as i64)
    );
    assert!(lines.contains(&expected), "{lines:?}");
}

#[test]
fn wall_clock_jumps_move_the_token_renewal_never_the_keep_alive() {
    const YEARS_2_MS: u64 = 2 * 365 * 86_400_000;
    let options = SessionOptions {
        token_ttl_secs: 600, // renewed 480 s in
        ..SessionOptions::default()
    };
    let mut s = session(keys(false), options);
    let (_hub, _) = connected(&mut s, t0());
    events(&mut s);
    // NTP sets the wall clock 2 years ahead (within the certificates' validity): the token is overdue by the wall clock, and
    // is renewed at the next timer, not 480 s later.
    set_wall(t0() + YEARS_2_MS);
    assert_eq!(s.next_deadline(), Some(t0() + 60_000), "keep-alive unmoved");
    s.handle_timeout(t0() + 1_000);
    assert_eq!(events(&mut s), [Event::Disconnected(Disconnect::Renewal)]);

    // Reconnected on the jumped clock, then set back 2 years.
    let mut hub = Hub::new();
    s.connect(t0() + 2_000).unwrap();
    hub.pump(&mut s, t0() + 2_000);
    let connect = hub.expect_connect();
    hub.connack(v4::ConnectReturnCode::Success);
    hub.pump(&mut s, t0() + 2_000);
    events(&mut s);
    let key = SasKey::from_base64(PRIMARY).unwrap();
    let password = connect.login.unwrap().password;
    let token = sas::verify(&password, &key, (t0() + YEARS_2_MS) / 1000).unwrap();
    assert_eq!(token.expiry_unix, (t0() + YEARS_2_MS) / 1000 + 600);
    set_wall(t0());
    // The keep-alive still runs one period after the last write, on the monotonic clock.
    assert_eq!(s.next_deadline(), Some(t0() + 62_000));
    s.handle_timeout(t0() + 62_000);
    hub.pump(&mut s, t0() + 62_000);
    assert!(matches!(hub.packet(), Some(v4::Packet::PingReq)));
    hub.send(|b| {
        v4::PingResp.write(b).unwrap();
    });
    hub.pump(&mut s, t0() + 62_100);
    assert!(s.is_connected());
    // By the wall clock the token now has 2 years to run; by the monotonic clock it is due
    // 480 s after it was made: renewed then.
    let later = t0() + 2_000 + 479_999 - 30_000;
    s.handle_timeout(later);
    hub.pump(&mut s, later);
    assert!(matches!(hub.packet(), Some(v4::Packet::PingReq)));
    hub.send(|b| {
        v4::PingResp.write(b).unwrap();
    });
    hub.pump(&mut s, later);
    s.handle_timeout(t0() + 2_000 + 479_999);
    assert!(
        s.is_connected(),
        "not renewed before 480 s on the monotonic clock"
    );
    s.handle_timeout(t0() + 2_000 + 480_000);
    assert_eq!(events(&mut s), [Event::Disconnected(Disconnect::Renewal)]);
}
