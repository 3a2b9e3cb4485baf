//! The local IoT Hub stand-in (`tether hub`: mosquitto + the tether-hub plugin) against
//! independent clients: mosquitto_pub/mosquitto_sub with SAS tokens made by `tether::auth::sas`
//! and with X.509 certificates made by openssl.
//!
//! The plugin must be built beside the `tether` binary (`cargo build --workspace` or
//! `cargo build -p tether-hub`); `.ci/test` does it.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::hub::{now, registry, sas_device, token, Hub, HOST};
use common::{require, run, temp_dir, Pki};

const K1: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
const K2: &str = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=";
const K3: &str = "c2Vjb25kYXJ5IGtleSBvZiBzZW5zb3ItMSwgZGVtbyBvbmx5";

fn accepted(out: &Output, hub: &Hub) {
    assert!(
        out.status.success(),
        "expected the connection to be accepted: {}\n{}\nbroker log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        hub.log()
    );
}

/// The connection was refused (CONNACK "not authorised") and the broker logged `reason`.
fn refused(out: &Output, hub: &Hub, reason: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not authorised"),
        "expected a refusal: {}\n{err}\nbroker log:\n{}",
        out.status,
        hub.log()
    );
    assert!(
        hub.wait_log(reason, Duration::from_secs(2)),
        "the broker log does not give the reason \"{reason}\":\n{}",
        hub.log()
    );
}

fn exits_within(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

#[test]
fn sas_device_is_accepted_with_primary_and_with_secondary_key() {
    let hub = Hub::start(&registry(&[], &[sas_device("d1", "enabled", K1, K2)]));
    let se = now() + 3600;
    accepted(&hub.publish("d1", &token("d1", K1, se)), &hub);
    assert!(hub.wait_log("accepted \"d1\"", Duration::from_secs(2)));
    assert!(hub.log().contains("SAS, primary key"), "{}", hub.log());
    accepted(&hub.publish("d1", &token("d1", K2, se)), &hub);
    assert!(
        hub.wait_log("SAS, secondary key", Duration::from_secs(2)),
        "{}",
        hub.log()
    );
}

#[test]
fn sas_refusals_disabled_wrong_key_expired_other_device_client_id() {
    let hub = Hub::start(&registry(
        &[],
        &[
            sas_device("d1", "enabled", K1, K2),
            sas_device("d2", "enabled", K3, ""),
            sas_device("off", "disabled", K1, ""),
        ],
    ));
    let se = now() + 3600;
    refused(
        &hub.publish("off", &token("off", K1, se)),
        &hub,
        "\"off\" is disabled in the registry (TETHER_RESULT_DEVICE_DISABLED)",
    );
    refused(
        &hub.publish("d1", &token("d1", K3, se)),
        &hub,
        "matches neither the primary nor the secondary key",
    );
    refused(
        &hub.publish("d1", &token("d1", K1, now() - 10)),
        &hub,
        "TETHER_RESULT_TOKEN_EXPIRED",
    );
    // d2's own token, presented as d1.
    refused(
        &hub.publish("d1", &token("d2", K3, se)),
        &hub,
        "token is for \"test-hub.azure-devices.net/devices/d2\"",
    );
    // A good token for d1 from a client calling itself d2.
    let out = hub
        .sas_client("mosquitto_pub", "d2", "d1", &token("d1", K1, se))
        .args(["-t", "devices/d1/messages/events/", "-m", "x"])
        .output()
        .unwrap();
    refused(&out, &hub, "client id \"d2\" does not match");
    // No refusal logs a key or a signature.
    let log = hub.log();
    assert!(!log.contains(K1) && !log.contains("sig="), "{log}");
}

#[test]
fn a_token_expiring_during_a_connection_disconnects_it() {
    let hub = Hub::start(&registry(&[], &[sas_device("d1", "enabled", K1, "")]));
    let se = now() + 4;
    let mut sub = hub
        .sas_client("mosquitto_sub", "d1", "d1", &token("d1", K1, se))
        .args(["-t", "devices/d1/messages/devicebound/#", "-q", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        hub.wait_log("accepted \"d1\"", Duration::from_secs(5)),
        "{}",
        hub.log()
    );
    let wait = Duration::from_secs(se.saturating_sub(now()) + 3);
    assert!(
        exits_within(&mut sub, wait),
        "still connected 3 s after the token expired:\n{}",
        hub.log()
    );
    assert!(
        hub.log()
            .contains("disconnecting \"d1\": SAS token expired"),
        "{}",
        hub.log()
    );
}

#[test]
fn registry_edits_apply_live_disable_kicks_and_rotation_refuses_the_old_key() {
    let hub = Hub::start(&registry(&[], &[sas_device("d1", "enabled", K1, "")]));
    let se = now() + 3600;
    let mut sub = hub
        .sas_client("mosquitto_sub", "d1", "d1", &token("d1", K1, se))
        .args(["-t", "devices/d1/messages/devicebound/#", "-q", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(hub.wait_log("accepted \"d1\"", Duration::from_secs(5)));
    // Disable: the connected device is disconnected and its next connection refused.
    hub.set_registry(&registry(&[], &[sas_device("d1", "disabled", K1, "")]));
    assert!(
        exits_within(&mut sub, Duration::from_secs(3)),
        "a disabled device stayed connected:\n{}",
        hub.log()
    );
    assert!(hub
        .log()
        .contains("disconnecting \"d1\": disabled in the registry"));
    refused(
        &hub.publish("d1", &token("d1", K1, se)),
        &hub,
        "\"d1\" is disabled",
    );
    // Rotate: K1 removed, K2 primary. K1 tokens are refused, K2 tokens accepted.
    hub.set_registry(&registry(&[], &[sas_device("d1", "enabled", K2, "")]));
    let deadline = Instant::now() + Duration::from_secs(3);
    while !hub.publish("d1", &token("d1", K2, se)).status.success() {
        assert!(
            Instant::now() < deadline,
            "rotation not applied:\n{}",
            hub.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    refused(
        &hub.publish("d1", &token("d1", K1, se)),
        &hub,
        "does not match the primary key",
    );
}

#[test]
fn a_device_cannot_read_or_write_another_devices_topics_nor_publish_qos2() {
    let hub = Hub::start(&registry(
        &[],
        &[
            sas_device("d1", "enabled", K1, ""),
            sas_device("d2", "enabled", K2, ""),
        ],
    ));
    let se = now() + 3600;
    // d1 asks for d2's cloud-to-device messages: the subscription is refused.
    let out = hub
        .sas_client("mosquitto_sub", "d1", "d1", &token("d1", K1, se))
        .args(["-t", "devices/d2/messages/devicebound/#", "-W", "3"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denied"),
        "{out:?}"
    );
    assert!(hub.wait_log(
        "\"d1\" may not subscribe to \"devices/d2/messages/devicebound/#\"",
        Duration::from_secs(2)
    ));
    // d1 listens on its own topic; d2 publishing there is refused and nothing arrives.
    let sub = hub
        .sas_client("mosquitto_sub", "d1", "d1", &token("d1", K1, se))
        .args([
            "-t",
            "devices/d1/messages/devicebound/#",
            "-C",
            "1",
            "-W",
            "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(hub.wait_log("accepted \"d1\"", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(300));
    let out = hub
        .sas_client("mosquitto_pub", "d2", "d2", &token("d2", K2, se))
        .args([
            "-t",
            "devices/d1/messages/devicebound/x",
            "-m",
            "intruder",
            "-q",
            "1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}"); // MQTT 3.1.1 acknowledges a denied publish
    assert!(hub.wait_log(
        "\"d2\" may not publish on \"devices/d1/messages/devicebound/x\"",
        Duration::from_secs(2)
    ));
    let received = sub.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&received.stdout).contains("intruder"),
        "{received:?}"
    );
    // QoS 2 is refused even on the device's own topic, and the connection closed (the
    // listener's max_qos 1).
    hub.sas_client("mosquitto_pub", "d2", "d2", &token("d2", K2, se))
        .args(["-t", "devices/d2/messages/events/", "-m", "x", "-q", "2"])
        .output()
        .unwrap();
    assert!(
        hub.wait_log(
            "Too high QoS in PUBLISH from d2, disconnecting",
            Duration::from_secs(2)
        ),
        "{}",
        hub.log()
    );
}

/// A self-signed device certificate with CN = `cn` in `dir` (`name.pem`, `name.key`).
fn self_signed(dir: &Path, name: &str, cn: &str) -> (String, String) {
    run(Command::new("openssl").current_dir(dir).args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &format!("{name}.key"),
        "-out",
        &format!("{name}.pem"),
        "-days",
        "30",
        "-subj",
        &format!("/CN={cn}"),
        "-addext",
        "extendedKeyUsage=clientAuth",
    ]));
    let p = |ext: &str| {
        dir.join(format!("{name}.{ext}"))
            .to_string_lossy()
            .into_owned()
    };
    (p("pem"), p("key"))
}

fn sha256_thumbprint(pem: &str) -> String {
    let bytes = std::fs::read(pem).unwrap();
    tether::auth::x509::thumbprints(&bytes).unwrap().sha256
}

fn x509_device(id: &str, kind: &str, thumbprint: Option<&str>) -> String {
    let auth = match thumbprint {
        Some(t) => {
            format!(r#"{{"type": "{kind}", "x509Thumbprint": {{"primaryThumbprint": "{t}"}}}}"#)
        }
        None => format!(r#"{{"type": "{kind}"}}"#),
    };
    format!(r#"{{"deviceId": "{id}", "status": "enabled", "authentication": {auth}}}"#)
}

#[test]
fn x509_self_signed_and_ca_signed_devices_are_accepted_unknown_thumbprint_and_wrong_cn_refused() {
    require("openssl", "openssl");
    let pki = Pki::shared();
    let certs = temp_dir("hub-x509");
    let (ss_pem, ss_key) = self_signed(&certs, "ss", "ss-device");
    let (other_pem, other_key) = self_signed(&certs, "other", "stranger");
    let reg = registry(
        &[pki.path("ca.pem")],
        &[
            x509_device("ss-device", "selfSigned", Some(&sha256_thumbprint(&ss_pem))),
            x509_device("stranger", "selfSigned", Some(&"AB".repeat(32))),
            x509_device("my-device", "certificateAuthority", None),
            x509_device("not-my-device", "certificateAuthority", None),
            sas_device("d1", "enabled", K1, ""),
        ],
    );
    // Self-signed device certificates are trusted at the TLS layer from DIR/trusted/.
    let hub = Hub::start_with(&reg, |dir| {
        std::fs::copy(&ss_pem, dir.join("trusted/ss.pem")).unwrap();
        std::fs::copy(&other_pem, dir.join("trusted/other.pem")).unwrap();
    });
    accepted(&hub.publish_x509("ss-device", &ss_pem, &ss_key), &hub);
    assert!(hub.wait_log(
        "accepted \"ss-device\" from 127.0.0.1 (X.509, primary thumbprint)",
        Duration::from_secs(2)
    ));
    let device_pem = pki.path("device.pem");
    let device_key = pki.path("device.key");
    accepted(
        &hub.publish_x509("my-device", &device_pem, &device_key),
        &hub,
    );
    assert!(hub.wait_log(
        "accepted \"my-device\" from 127.0.0.1 (X.509, issued by CN=Tether Test Root CA)",
        Duration::from_secs(2)
    ));
    refused(
        &hub.publish_x509("stranger", &other_pem, &other_key),
        &hub,
        "matches neither registered thumbprint",
    );
    refused(
        &hub.publish_x509("not-my-device", &device_pem, &device_key),
        &hub,
        "TETHER_RESULT_CERT_DEVICE_MISMATCH",
    );
    // A SAS device cannot come in with a certificate.
    refused(
        &hub.publish_x509("d1", &device_pem, &device_key),
        &hub,
        "\"d1\" authenticates with SAS",
    );
}

#[test]
fn hub_stops_cleanly_on_sigterm_and_names_a_missing_plugin() {
    let mut hub = Hub::start(&registry(&[], &[sas_device("d1", "enabled", K1, "")]));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(hub.child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = hub.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "tether hub did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(hub.log().contains("terminating"), "{}", hub.log());

    let dir = temp_dir("hub-noplugin");
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["hub", "--registry"])
        .arg(&hub.registry)
        .args(["--port", "1883", "--dir"])
        .arg(&dir)
        .env("TETHER_HUB_PLUGIN", dir.join("nowhere.so"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TETHER_HUB_PLUGIN") && err.contains("nowhere.so"),
        "{err}"
    );
}

// The device client against the stand-in: what a device sees of renewal and refusals.

fn device_client(hub: &Hub, device: &str, key: &str, ttl_secs: u64) -> tether::client::Client {
    use tether::auth::connection_string::ConnectionString;
    use tether::session::SessionConfig;
    // HostName names the hub (user name, token); the TLS connection goes to the stand-in,
    // whose certificate is for localhost.
    let cs = ConnectionString::parse(&format!(
        "HostName={HOST};DeviceId={device};SharedAccessKey={key};GatewayHostName=localhost"
    ))
    .unwrap();
    let mut policy = tether::policy::TlsPolicy::new();
    policy.add_ca_file(&hub.ca()).unwrap();
    let mut config =
        SessionConfig::from_connection_string(&cs, policy.build().unwrap(), false).unwrap();
    config.options.token_ttl_secs = ttl_secs;
    tether::client::Client::new(
        config,
        tether::client::ClientOptions {
            port: hub.sas,
            ..tether::client::ClientOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn client_renews_its_token_across_several_lifetimes_without_losing_a_message() {
    use tether::mqtt::properties::PropertyBag;
    use tether::session::{Disconnect, Event};
    let hub = Hub::start(&registry(&[], &[sas_device("renew-1", "enabled", K1, K2)]));
    // 10 s tokens are renewed 5 s before expiry: a reconnection every ~5 s.
    let mut c = device_client(&hub, "renew-1", K1, 10);
    c.connect(Duration::from_secs(10)).unwrap();
    let start = Instant::now();
    let (mut sent, mut acked, mut renewals, mut connects) = (0u64, 0u64, 0, 0);
    let mut next_send = Instant::now();
    while start.elapsed() < Duration::from_secs(17) {
        if Instant::now() >= next_send {
            c.send_telemetry(format!("m{sent}").as_bytes(), &PropertyBag::new(), 1)
                .unwrap();
            sent += 1;
            next_send += Duration::from_millis(250);
        }
        match c.poll(Duration::from_millis(50)).unwrap() {
            Some(Event::TelemetryAcked { .. }) => acked += 1,
            Some(Event::Disconnected(Disconnect::Renewal)) => renewals += 1,
            Some(Event::Connected { .. }) => connects += 1,
            Some(other) => panic!("unexpected {other:?}\n{}", hub.log()),
            None => {}
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked < sent && Instant::now() < deadline {
        if let Some(Event::TelemetryAcked { .. }) = c.poll(Duration::from_millis(100)).unwrap() {
            acked += 1;
        }
    }
    assert!(renewals >= 3, "renewals {renewals}\n{}", hub.log());
    // The first connection's CONNECTED event, then one per renewal.
    assert_eq!(connects, renewals + 1, "every renewal reconnected");
    assert_eq!(acked, sent, "every QoS 1 message was acknowledged");
    // The stand-in never had to kick an expired token.
    assert!(!hub.log().contains("expired"), "{}", hub.log());
}

#[test]
fn client_of_a_disabled_device_gets_a_clear_error_and_no_reconnect_storm() {
    use tether::Code;
    let hub = Hub::start(&registry(&[], &[sas_device("off-1", "disabled", K1, K2)]));
    let mut c = device_client(&hub, "off-1", K1, 3600);
    let err = c.connect(Duration::from_secs(10)).unwrap_err();
    assert_eq!(err.code(), Code::NotAuthorized);
    assert!(err.message().contains("CONNACK 5"), "{err:?}");
    assert!(err.message().contains("disabled device"), "{err:?}");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        assert_eq!(c.poll(Duration::from_millis(200)).unwrap(), None);
    }
    // Each attempt that reaches the hub gets one decision from the plugin. (Counting the
    // broker's "New connection" lines would also count `tether hub`'s own readiness probes.)
    let attempts = hub.log().matches("tether-hub: refused \"off-1\"").count();
    assert_eq!(attempts, 1, "{}", hub.log());
}

/// Every event until the telemetry `id` is acknowledged (or 10 s).
fn events_until_acked(
    c: &mut tether::client::Client,
    id: u64,
    hub: &Hub,
) -> Vec<tether::session::Event> {
    use tether::session::Event;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    while Instant::now() < deadline {
        if let Some(e) = c.poll(Duration::from_millis(100)).unwrap() {
            let done = matches!(e, Event::TelemetryAcked { id: acked, .. } if acked == id);
            events.push(e);
            if done {
                return events;
            }
        }
    }
    panic!(
        "telemetry {id} was not acknowledged: {events:?}\n{}",
        hub.log()
    );
}

#[test]
fn ids_with_iot_hubs_symbols_connect_subscribe_and_send_through_the_stand_in() {
    use tether::auth::connection_string::{Credential, KeyPair};
    use tether::auth::sas::SasKey;
    use tether::mqtt::properties::PropertyBag;
    use tether::session::{Event, SessionConfig, SessionOptions, Subscription};
    use tether::Code;
    // Everything IoT Hub allows that a connection string and a topic can carry ('?' first,
    // to catch a user-name parser that splits at the first "/?").
    let id = "?dev:7.(a)!@$'*,=%_-";
    let hub = Hub::start(&registry(&[], &[sas_device(id, "enabled", K1, K2)]));
    let mut c = device_client(&hub, id, K1, 3600);
    c.connect(Duration::from_secs(10)).unwrap();
    c.subscribe(Subscription::C2d).unwrap();
    let sent = c
        .send_telemetry(b"{\"t\":21}", &PropertyBag::new(), 1)
        .unwrap();
    // The broker answers SUBSCRIBE before the later PUBLISH: by the PUBACK, a refused
    // subscription would have been reported.
    let events = events_until_acked(&mut c, sent, &hub);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::SubscriptionRefused { .. })),
        "{events:?}\n{}",
        hub.log()
    );
    assert!(
        hub.wait_log(&format!("accepted \"{id}\""), Duration::from_secs(2)),
        "{}",
        hub.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!hub.log().contains("may not"), "{}", hub.log());
    drop(c);

    // '+', '#' and ';' too: the hub accepts the id, its token and its user name, but MQTT
    // topic names cannot carry '+' or '#' (and a connection string cannot carry ';', so
    // the configuration is made directly).
    let id = "d+1#;x";
    let hub = Hub::start(&registry(&[], &[sas_device(id, "enabled", K1, "")]));
    let mut policy = tether::policy::TlsPolicy::new();
    policy.add_ca_file(&hub.ca()).unwrap();
    let config = SessionConfig {
        hub_host: HOST.into(),
        server_name: "localhost".into(),
        device_id: id.into(),
        module_id: None,
        credential: Credential::Keys {
            keys: Box::new(KeyPair::new(SasKey::from_base64(K1).unwrap())),
            key_name: None,
        },
        tls: policy.build().unwrap(),
        has_client_cert: false,
        options: SessionOptions::default(),
    };
    let mut c = tether::client::Client::new(
        config,
        tether::client::ClientOptions {
            port: hub.sas,
            ..tether::client::ClientOptions::default()
        },
    )
    .unwrap();
    c.connect(Duration::from_secs(10)).unwrap();
    assert!(
        hub.wait_log(&format!("accepted \"{id}\""), Duration::from_secs(2)),
        "{}",
        hub.log()
    );
    let e = c.send_telemetry(b"x", &PropertyBag::new(), 1).unwrap_err();
    assert_eq!(e.code(), Code::IdInvalid);
    assert!(
        e.message()
            .contains("contains '+' at offset 1: MQTT topic names cannot contain '+' or '#'"),
        "{e:?}"
    );
    let e = c.subscribe(Subscription::C2d).unwrap_err();
    assert!(
        e.message().contains("MQTT topic names cannot contain"),
        "{e:?}"
    );
    // The connection is still up and usable for what does not name the device in a topic.
    c.subscribe(Subscription::Methods).unwrap();
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        match c.poll(Duration::from_millis(100)).unwrap() {
            None | Some(Event::Connected { .. }) => {}
            Some(e) => panic!("unexpected {e:?}\n{}", hub.log()),
        }
    }
}
