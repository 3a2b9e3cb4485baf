//! The blocking client against a real mosquitto broker configured like IoT Hub's endpoint
//! (TLS 1.2 only, the hub's suites, user name + SAS token as password, per-device ACL), with
//! mosquitto_sub / mosquitto_pub as the independent "service" side.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{require, run, Mosquitto, Pki};
use tether::auth::connection_string::ConnectionString;
use tether::auth::sas::{write_token, Resource, SasKey, MAX_TOKEN_LEN};
use tether::client::{Client, ClientOptions};
use tether::mqtt::properties::PropertyBag;
use tether::mqtt::topics::{self, UsernameOptions};
use tether::policy::TlsPolicy;
use tether::session::{Disconnect, Event, SessionConfig, Subscription};
use tether::Code;

const DEVICE: &str = "dev-1";
const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
const SERVICE_PASSWORD: &str = "service-secret";

fn token(expiry: u64) -> String {
    let mut buf = [0u8; MAX_TOKEN_LEN];
    let resource = Resource::Device {
        host: "localhost",
        device: DEVICE,
    };
    write_token(
        &resource,
        &SasKey::from_base64(KEY).unwrap(),
        None,
        expiry,
        &mut buf,
    )
    .unwrap()
    .to_owned()
}

fn device_username() -> String {
    topics::username(
        "localhost",
        DEVICE,
        None,
        &UsernameOptions {
            client_type: Some(&format!("tether/{}", tether::VERSION)),
            ..UsernameOptions::default()
        },
    )
    .unwrap()
}

/// A broker accepting `DEVICE` with `token`, and a "service" user that reads and writes
/// every device's topics.
fn broker(token: &str, port: Option<u16>) -> Mosquitto {
    require("mosquitto_passwd", "mosquitto");
    let pki = Pki::shared();
    let dir = common::temp_dir("client-auth");
    let passwords = dir.join("passwords");
    run(Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .arg(device_username())
        .arg(token));
    run(Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&passwords)
        .arg("service")
        .arg(SERVICE_PASSWORD));
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        format!(
            "user {}\ntopic readwrite devices/{DEVICE}/#\ntopic readwrite $iothub/#\n\
             user service\ntopic readwrite devices/#\ntopic readwrite $iothub/#\n",
            device_username()
        ),
    )
    .unwrap();
    let port = port
        .map(|p| p.to_string())
        .unwrap_or_else(|| "{port}".into());
    Mosquitto::start_on(
        &Mosquitto::tls_listener(
            &port,
            pki,
            &format!(
                "allow_anonymous false\npassword_file {}\nacl_file {}\n",
                passwords.display(),
                acl.display()
            ),
        ),
        port.parse().ok(),
    )
}

fn client(port: u16, token: &str) -> Client {
    let cs = ConnectionString::parse(&format!(
        "HostName=localhost;DeviceId={DEVICE};SharedAccessSignature={token}"
    ))
    .unwrap();
    let mut policy = TlsPolicy::new();
    policy.add_ca_file(&Pki::shared().path("ca.pem")).unwrap();
    let config =
        SessionConfig::from_connection_string(&cs, policy.build().unwrap(), false).unwrap();
    Client::new(
        config,
        ClientOptions {
            port,
            retry_min_ms: 100,
            retry_max_ms: 1_000,
            retry_jitter_ms: 100,
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

/// `mosquitto_sub` as the service, printing `topic payload` lines.
struct Subscriber {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Subscriber {
    fn start(port: u16, filter: &str) -> Subscriber {
        require("mosquitto_sub", "mosquitto-clients");
        // Line-buffered, so each line reaches us as it is printed.
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-h",
                "localhost",
                "-p",
                &port.to_string(),
                "--cafile",
            ])
            .arg(Pki::shared().path("ca.pem"))
            .args([
                "-u",
                "service",
                "-P",
                SERVICE_PASSWORD,
                "-q",
                "1",
                "-v",
                "-t",
                filter,
            ])
            .args(["-i", "service-sub", "-d"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let sub = Subscriber { child, lines };
        // mosquitto_sub -d prints "received SUBACK" once subscribed.
        let seen = std::cell::RefCell::new(Vec::new());
        let subscribed = sub.wait_for(
            |l| {
                seen.borrow_mut().push(l.to_owned());
                l.contains("received SUBACK")
            },
            Duration::from_secs(10),
        );
        assert!(
            subscribed.is_some(),
            "mosquitto_sub did not subscribe: {:?}",
            seen.borrow()
        );
        sub
    }

    fn wait_for(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Message lines (`topic payload`) received within `timeout`.
    fn messages(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with("devices/") => out.push(line),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        out
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn far_expiry() -> u64 {
    tether::client::system_now_ms() / 1000 + 24 * 3600
}

fn wait_acks(client: &mut Client, ids: &[u64], timeout: Duration) -> Vec<u64> {
    let deadline = Instant::now() + timeout;
    let mut acked = Vec::new();
    while acked.len() < ids.len() && Instant::now() < deadline {
        if let Some(Event::TelemetryAcked { id }) = client.poll(Duration::from_millis(200)).unwrap()
        {
            acked.push(id);
        }
    }
    acked
}

#[test]
fn telemetry_with_properties_arrives_intact_at_a_subscriber() {
    let token = token(far_expiry());
    let broker = broker(&token, None);
    let sub = Subscriber::start(broker.port, "devices/dev-1/messages/events/#");
    let mut c = client(broker.port, &token);
    c.connect(Duration::from_secs(10)).unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut bag = PropertyBag::new();
        bag.append("$.ct", Some("application/json"))
            .append("seq", Some(&i.to_string()))
            .append("note", Some("a/b c"));
        ids.push(
            c.send_telemetry(format!("{{\"n\":{i}}}").as_bytes(), &bag, 1)
                .unwrap(),
        );
    }
    assert_eq!(wait_acks(&mut c, &ids, Duration::from_secs(10)), ids);
    let got = sub.messages(Duration::from_secs(2));
    let expected: Vec<String> = (0..5)
        .map(|i| {
            format!(
                "devices/dev-1/messages/events/%24.ct=application%2Fjson&seq={i}&note=a%2Fb%20c {{\"n\":{i}}}"
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(c.session().inflight(), 0);
}

#[test]
fn cloud_to_device_messages_reach_the_client() {
    let token = token(far_expiry());
    let broker = broker(&token, None);
    let mut c = client(broker.port, &token);
    c.connect(Duration::from_secs(10)).unwrap();
    c.subscribe(Subscription::C2d).unwrap();
    // Let the SUBACK come back before the service sends.
    c.poll(Duration::from_millis(300)).unwrap();
    run(Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &broker.port.to_string(),
            "--cafile",
        ])
        .arg(Pki::shared().path("ca.pem"))
        .args(["-u", "service", "-P", SERVICE_PASSWORD, "-q", "1"])
        .args([
            "-t",
            "devices/dev-1/messages/devicebound/%24.mid=42&kind=alert%20high",
        ])
        .args(["-m", "turn on"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        if let Some(Event::C2d {
            properties,
            payload,
        }) = c.poll(Duration::from_millis(200)).unwrap()
        {
            got = Some((properties, payload));
        }
    }
    let (properties, payload) = got.expect("a C2D message");
    assert_eq!(payload, b"turn on");
    let props: BTreeMap<_, _> = properties.into_iter().collect();
    assert_eq!(props["$.mid"].as_deref(), Some("42"));
    assert_eq!(props["kind"].as_deref(), Some("alert high"));
}

#[test]
fn a_refused_token_is_a_fatal_error_without_a_reconnect_storm() {
    let broker = broker(&token(far_expiry()), None);
    let mut c = client(broker.port, &token(far_expiry() + 1));
    let err = c.connect(Duration::from_secs(10)).unwrap_err();
    assert_eq!(err.code(), Code::NotAuthorized);
    assert!(err.message().contains("SAS token refused"), "{err:?}");
    // No automatic retry after a fatal refusal: polling stays quiet.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(c.poll(Duration::from_millis(300)).unwrap(), None);
    }
    // One refusal per attempt. (The harness's readiness probes are plain TCP connections
    // that the broker may also log as new connections.)
    let attempts = broker.log().matches("disconnected, not authorised").count();
    assert_eq!(attempts, 1, "{}", broker.log());
}

#[test]
fn qos1_messages_survive_a_broker_restart() {
    let token = token(far_expiry());
    let mut broker = broker(&token, None);
    let port = broker.port;
    let mut c = client(port, &token);
    c.connect(Duration::from_secs(10)).unwrap();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            c.send_telemetry(format!("before {i}").as_bytes(), &PropertyBag::new(), 1)
                .unwrap(),
        );
    }
    assert_eq!(wait_acks(&mut c, &ids, Duration::from_secs(10)), ids);
    // The broker dies; messages sent now wait in the in-flight queue.
    broker.stop();
    let mut lost = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)).unwrap() {
            Some(Event::Disconnected(Disconnect::Retriable(_))) => break,
            Some(other) => panic!("unexpected {other:?}"),
            None => {}
        }
    }
    for i in 0..10 {
        lost.push(
            c.send_telemetry(format!("during {i}").as_bytes(), &PropertyBag::new(), 1)
                .unwrap(),
        );
    }
    assert_eq!(c.session().inflight(), 10);
    // Back on the same port; a subscriber is there before the client reconnects.
    let broker = self::broker(&token, Some(port));
    let sub = Subscriber::start(port, "devices/dev-1/messages/events/#");
    let acked = wait_acks(&mut c, &lost, Duration::from_secs(20));
    assert_eq!(acked.len(), 10, "acked {acked:?}");
    let got = sub.messages(Duration::from_secs(2));
    // At least once: every message arrives; QoS 1 allows duplicates, which are counted.
    let mut duplicates = 0;
    for i in 0..10 {
        let line = format!("devices/dev-1/messages/events/ during {i}");
        let copies = got.iter().filter(|l| **l == line).count();
        assert!(copies >= 1, "{line} missing from {got:?}");
        duplicates += copies - 1;
    }
    assert_eq!(got.len(), 10 + duplicates, "only our messages: {got:?}");
    eprintln!("broker restart: 10 of 10 QoS 1 messages delivered, {duplicates} duplicates");
    drop(broker);
}

#[test]
fn an_unreachable_hub_is_retried_with_growing_delays() {
    let port = common::free_port();
    let mut c = client(port, &token(far_expiry()));
    let start = Instant::now();
    let err = c.connect(Duration::from_millis(3500)).unwrap_err();
    assert_eq!(err.code(), Code::ConnectFailed, "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(3500));
    // The client keeps retrying on later polls; time the next failed attempts.
    let mut failures = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(4);
    while failures.len() < 5 && Instant::now() < deadline {
        if let Some(Event::Disconnected(Disconnect::Retriable(e))) =
            c.poll(Duration::from_millis(100)).unwrap()
        {
            assert_eq!(e.code(), Code::ConnectFailed);
            failures.push(start.elapsed());
        }
    }
    assert!(failures.len() >= 4, "{failures:?}");
    let gaps: Vec<Duration> = failures.windows(2).map(|w| w[1] - w[0]).collect();
    // Back-off is capped at 1 s in this test; it never hammers the hub.
    for gap in &gaps {
        assert!(*gap >= Duration::from_millis(150), "gaps {gaps:?}");
    }
}

fn cli(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    common::target_command(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn cli_send_reports_every_message_acknowledged() {
    let token = token(far_expiry());
    let broker = broker(&token, None);
    let sub = Subscriber::start(broker.port, "devices/dev-1/messages/events/#");
    let cs = format!("HostName=localhost;DeviceId={DEVICE};SharedAccessSignature={token}");
    let port = broker.port.to_string();
    let ca = Pki::shared().path("ca.pem");
    let out = cli(
        &[
            "send",
            "--count",
            "20",
            "--qos",
            "1",
            "--property",
            "kind=test",
            "hello",
        ],
        &[
            ("TETHER_CONNECTION_STRING", &cs),
            ("TETHER_PORT", &port),
            ("TETHER_CA_FILE", &ca),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sent 20 acked 20\n");
    let got = sub.messages(Duration::from_secs(2));
    assert_eq!(got.len(), 20, "{got:?}");
    assert!(got
        .iter()
        .all(|l| l == "devices/dev-1/messages/events/kind=test hello"));
}

#[test]
fn cli_send_fails_clearly_when_the_token_is_refused() {
    let broker = broker(&token(far_expiry()), None);
    let cs = format!(
        "HostName=localhost;DeviceId={DEVICE};SharedAccessSignature={}",
        token(far_expiry() + 5)
    );
    let port = broker.port.to_string();
    let ca = Pki::shared().path("ca.pem");
    let out = cli(
        &[
            "send",
            "--connection-string",
            &cs,
            "--port",
            &port,
            "--ca",
            &ca,
            "hello",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TETHER_RESULT_NOT_AUTHORIZED"), "{err}");
    assert!(err.contains("CONNACK 5"), "{err}");
}

#[test]
fn cli_listen_prints_c2d_and_answers_methods() {
    let token = token(far_expiry());
    let broker = broker(&token, None);
    let port = broker.port.to_string();
    let ca = Pki::shared().path("ca.pem");
    let cs = format!("HostName=localhost;DeviceId={DEVICE};SharedAccessSignature={token}");
    let responses = Subscriber::start(broker.port, "$iothub/methods/res/#");
    let mut listen = common::target_command(env!("CARGO_BIN_EXE_tether"))
        .args([
            "listen",
            "--count",
            "2",
            "--status",
            "201",
            "--timeout",
            "20",
        ])
        .args(["--connection-string", &cs, "--port", &port, "--ca", &ca])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(listen.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "listening");
    // The subscriptions are sent right after CONNACK; give them a moment to be granted.
    std::thread::sleep(Duration::from_millis(500));
    let publish = |topic: &str, message: &str| {
        run(Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &port, "--cafile", &ca])
            .args([
                "-u",
                "service",
                "-P",
                SERVICE_PASSWORD,
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                message,
            ]));
    };
    publish("devices/dev-1/messages/devicebound/color=red", "paint");
    publish("$iothub/methods/POST/reboot/?$rid=7", "{\"in\":5}");
    assert_eq!(lines.next().unwrap().unwrap(), "c2d [color=red] paint");
    assert_eq!(lines.next().unwrap().unwrap(), "method reboot {\"in\":5}");
    assert!(listen.wait().unwrap().success());
    let answer = responses.wait_for(
        |l| l.starts_with("$iothub/methods/res/"),
        Duration::from_secs(5),
    );
    assert_eq!(
        answer.as_deref(),
        Some("$iothub/methods/res/201/?$rid=7 {}")
    );
}

/// The C examples, built once per test binary with CMake against an installed prefix.
fn examples() -> &'static std::path::Path {
    static BUILD: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILD.get_or_init(|| common::build_examples(&common::install_prefix(), false))
}

#[test]
fn c_example_telemetry_sas_sends_messages_that_arrive_with_properties() {
    let token = token(far_expiry());
    let broker = broker(&token, None);
    let sub = Subscriber::start(broker.port, "devices/dev-1/messages/events/#");
    let cs = format!("HostName=localhost;DeviceId={DEVICE};SharedAccessSignature={token}");
    let out = Command::new(examples().join("telemetry_sas"))
        .arg("3")
        .env("TETHER_CONNECTION_STRING", &cs)
        .env("TETHER_PORT", broker.port.to_string())
        .env("TETHER_CA_FILE", Pki::shared().path("ca.pem"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with("acked 3\n"), "{stdout}");
    let got = sub.messages(Duration::from_secs(2));
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        got[0],
        "devices/dev-1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&sensor=thermo-1 \
         {\"temperature\":20.5,\"seq\":0}"
    );
}

#[test]
fn c_example_telemetry_sas_names_a_missing_connection_string() {
    let out = Command::new(examples().join("telemetry_sas"))
        .env_remove("TETHER_CONNECTION_STRING")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TETHER_RESULT_CONNECTION_STRING_INVALID")
            && err.contains("TETHER_CONNECTION_STRING is not set"),
        "{err}"
    );
}

#[test]
fn c_example_telemetry_x509_authenticates_with_its_certificate() {
    let pki = Pki::shared();
    let broker = Mosquitto::start(
        &Mosquitto::tls_listener(
            "{port}",
            pki,
            "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n\
         acl_file ACL\n",
        )
        .replace("ACL", &{
            let acl = common::temp_dir("x509-acl").join("acl");
            std::fs::write(
                &acl,
                "pattern readwrite devices/%u/#\nuser service\ntopic read devices/#\n",
            )
            .unwrap();
            acl.display().to_string()
        }),
    );
    let out = Command::new(examples().join("telemetry_x509"))
        .args(["localhost", "my-device"])
        .arg(pki.path("device.pem"))
        .arg(pki.path("device.key"))
        .arg(pki.path("ca.pem"))
        .arg(broker.port.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "acked 1\n");
    assert!(broker.log().contains("as my-device"), "{}", broker.log());
}

#[test]
fn c_example_c2d_methods_twin_handles_each_kind_of_message() {
    let token = token(far_expiry());
    let broker = broker(&token, None);
    let port = broker.port.to_string();
    let ca = Pki::shared().path("ca.pem");
    let cs = format!("HostName=localhost;DeviceId={DEVICE};SharedAccessSignature={token}");
    // The service side: sees the twin requests and method answers.
    let service = Subscriber::start(broker.port, "$iothub/#");
    let mut device = Command::new(examples().join("c2d_methods_twin"))
        .arg("3")
        .env("TETHER_CONNECTION_STRING", &cs)
        .env("TETHER_PORT", &port)
        .env("TETHER_CA_FILE", &ca)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(device.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let get = service
        .wait_for(
            |l| l.starts_with("$iothub/twin/GET/"),
            Duration::from_secs(5),
        )
        .expect("a twin GET");
    let rid = get
        .split("$rid=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let patch = service
        .wait_for(
            |l| l.starts_with("$iothub/twin/PATCH/properties/reported/"),
            Duration::from_secs(5),
        )
        .expect("a reported patch");
    assert!(patch.ends_with(" {\"firmware\":\"1.2.3\"}"), "{patch}");
    let publish = |topic: &str, message: &str| {
        run(Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &port, "--cafile", &ca])
            .args([
                "-u",
                "service",
                "-P",
                SERVICE_PASSWORD,
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                message,
            ]));
    };
    publish(
        &format!("$iothub/twin/res/200/?$rid={rid}"),
        "{\"desired\":{\"rate\":5}}",
    );
    publish("devices/dev-1/messages/devicebound/%24.mid=9&flag", "wake");
    publish("$iothub/methods/POST/blink/?$rid=77", "{\"times\":2}");
    publish(
        "$iothub/twin/PATCH/properties/desired/?$version=4",
        "{\"rate\":10}",
    );
    let printed: Vec<String> = (0..4).map(|_| lines.next().unwrap().unwrap()).collect();
    assert_eq!(
        printed,
        [
            "twin 200 {\"desired\":{\"rate\":5}}",
            "c2d wake $.mid=9 flag=(null)",
            "method blink {\"times\":2}",
            "desired v4 {\"rate\":10}",
        ]
    );
    assert!(device.wait().unwrap().success());
    let answer = service.wait_for(
        |l| l.starts_with("$iothub/methods/res/"),
        Duration::from_secs(5),
    );
    assert_eq!(
        answer.as_deref(),
        Some("$iothub/methods/res/200/?$rid=77 {\"done\":true}")
    );
}

#[test]
fn c_example_own_socket_drives_the_session_over_its_own_socket() {
    let token = token(far_expiry());
    let broker = broker(&token, None);
    let sub = Subscriber::start(broker.port, "devices/dev-1/messages/events/#");
    let cs = format!("HostName=localhost;DeviceId={DEVICE};SharedAccessSignature={token}");
    let out = Command::new(examples().join("own_socket"))
        .arg("4")
        .env("TETHER_CONNECTION_STRING", &cs)
        .env("TETHER_PORT", broker.port.to_string())
        .env("TETHER_CA_FILE", Pki::shared().path("ca.pem"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "connected: TLSv1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\nacked 4\n"
    );
    assert_eq!(sub.messages(Duration::from_secs(2)).len(), 4);
    // The example ended with a graceful MQTT DISCONNECT.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        broker.log().contains("Received DISCONNECT from dev-1"),
        "{}",
        broker.log()
    );
}

/// The documented bound of coalescing: QoS 0 telemetry (and QoS 1 under `hold_output`)
/// stays in the process until the next `poll` (or `flush`), then all of it arrives, in order.
#[test]
fn held_telemetry_leaves_at_the_next_poll_in_order() {
    let token = token(far_expiry());
    let broker = broker(&token, None);
    let sub = Subscriber::start(broker.port, "devices/dev-1/messages/events/#");
    let mut c = client(broker.port, &token);
    c.connect(Duration::from_secs(10)).unwrap();
    let bag = PropertyBag::new();
    for i in 0..30 {
        c.send_telemetry(format!("q0-{i}").as_bytes(), &bag, 0)
            .unwrap();
    }
    assert_eq!(
        sub.messages(Duration::from_millis(700)),
        Vec::<String>::new(),
        "QoS 0 messages left before poll"
    );
    // Whatever event it returns (the connection's), the held output leaves.
    c.poll(Duration::ZERO).unwrap();
    let want: Vec<String> = (0..30)
        .map(|i| format!("devices/dev-1/messages/events/ q0-{i}"))
        .collect();
    assert_eq!(sub.messages(Duration::from_secs(3)), want);

    c.hold_output(true).unwrap();
    let ids: Vec<u64> = (0..5)
        .map(|i| {
            c.send_telemetry(format!("q1-{i}").as_bytes(), &bag, 1)
                .unwrap()
        })
        .collect();
    assert_eq!(
        sub.messages(Duration::from_millis(700)),
        Vec::<String>::new(),
        "held QoS 1 messages left before poll"
    );
    assert_eq!(wait_acks(&mut c, &ids, Duration::from_secs(10)), ids);
    let want: Vec<String> = (0..5)
        .map(|i| format!("devices/dev-1/messages/events/ q1-{i}"))
        .collect();
    assert_eq!(sub.messages(Duration::from_secs(2)), want);
    // Released: a QoS 1 message leaves before send_telemetry returns.
    c.hold_output(false).unwrap();
    c.send_telemetry(b"q1-now", &bag, 1).unwrap();
    assert_eq!(
        sub.messages(Duration::from_secs(2)),
        ["devices/dev-1/messages/events/ q1-now"]
    );
    c.disconnect();
}
