//! MQTT over WebSockets against real peers:
//! - the stand-in's WebSocket listener (`tether hub --ws-port`): telemetry, C2D, methods and
//!   twin from the blocking client, directly and through tinyproxy; `auto` falling back when
//!   the MQTT port is closed; the CLI; the official Python device SDK (`websockets=True`);
//! - a WebSocket server tether did not write: Python's `websockets` package bridging to a
//!   plain mosquitto, behind TLS 1.2 with the hub's suites;
//! - a hostile server written here (a fault peer, like openssl s_server) for the bad inputs:
//!   no `mqtt` subprotocol, a wrong `Sec-WebSocket-Accept`, text frames, oversized frames,
//!   fragments, a close mid-frame.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::hub::{registry, sas_device, Hub, HOST};
use common::proxy::Tinyproxy;
use common::{free_port, require, target_command, Mosquitto, Pki};
use tether::auth::connection_string::ConnectionString;
use tether::client::{Client, ClientOptions};
use tether::mqtt::properties::PropertyBag;
use tether::session::{Event, SessionConfig, Subscription};
use tether::transport::proxy::Proxy;
use tether::transport::ws::{accept_for, read_client_frame, server_frame};
use tether::transport::Transport;
use tether::Code;

const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
const DEVICE: &str = "dev-ws";

fn hub_with_ws() -> (Hub, u16) {
    // A fresh WebSocket port for each attempt: one picked free may be taken by another
    // process before the hub binds it.
    let registry = registry(&[], &[sas_device(DEVICE, "enabled", KEY, KEY)]);
    let mut attempt = 0;
    let (hub, ws) = loop {
        let ws = free_port();
        match Hub::try_start_full(&registry, |_| {}, &["--ws-port", &ws.to_string()]) {
            Ok(hub) => break (hub, ws),
            Err(log) if log.contains("Address already in use") && attempt < 3 => attempt += 1,
            Err(log) => panic!("tether hub did not get ready:\n{log}"),
        }
    };
    assert!(
        hub.ready.ends_with(&format!(" ws={ws}")),
        "ready line names the WebSocket port: {}",
        hub.ready
    );
    (hub, ws)
}

fn config(host: &str, device: &str, ca: &str) -> SessionConfig {
    let cs = ConnectionString::parse(&format!(
        "HostName={host};DeviceId={device};SharedAccessKey={KEY};GatewayHostName=localhost"
    ))
    .unwrap();
    let mut policy = tether::policy::TlsPolicy::new();
    policy.add_ca_file(ca).unwrap();
    SessionConfig::from_connection_string(&cs, policy.build().unwrap(), false).unwrap()
}

fn options(
    transport: Transport,
    port: u16,
    ws_port: Option<u16>,
    proxy: Option<&str>,
) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(10),
        retry_min_ms: 100,
        retry_max_ms: 1_000,
        retry_jitter_ms: 100,
        ..ClientOptions::route(
            transport,
            Some(port),
            ws_port,
            proxy.map(|p| Proxy::parse(p).unwrap()),
        )
    }
}

/// Polls until `want` matches an event (others are ignored), within 20 s.
fn wait_event(
    c: &mut Client,
    what: &str,
    log: &dyn Fn() -> String,
    want: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(e) = c.poll(Duration::from_millis(100)).unwrap() {
            if want(&e) {
                return e;
            }
            if let Event::Disconnected(why) = &e {
                panic!("disconnected waiting for {what}: {why:?}\n{}", log());
            }
        }
    }
    panic!("no {what} within 20 s\n{}", log())
}

/// `tether hub SUBCOMMAND --dir DIR ARGS...`: the stand-in's service side.
fn service(hub: &Hub, args: &[&str]) -> Child {
    let dir = hub.dir.to_string_lossy().into_owned();
    target_command(env!("CARGO_BIN_EXE_tether"))
        .args(["hub", args[0], "--dir", &dir])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finished(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Telemetry, C2D, a method and the twin over one client's connection.
fn exercise(c: &mut Client, hub: &Hub) {
    let log = || hub.log();
    c.connect(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:?}\n{}", hub.log()));
    for sub in [Subscription::C2d, Subscription::Methods, Subscription::Twin] {
        c.subscribe(sub).unwrap();
    }
    // Telemetry, acknowledged by the hub (the plugin lets it through to the broker).
    let id = c
        .send_telemetry(b"{\"t\":21.5}", &PropertyBag::new(), 1)
        .unwrap();
    wait_event(
        c,
        "PUBACK",
        &log,
        |e| matches!(e, Event::TelemetryAcked { id: i } if *i == id),
    );
    // Twin: get, then patch reported.
    let rid = c.twin_get().unwrap();
    let twin = wait_event(
        c,
        "twin",
        &log,
        |e| matches!(e, Event::TwinResponse { request_id, .. } if *request_id == rid),
    );
    let Event::TwinResponse {
        status, payload, ..
    } = twin
    else {
        unreachable!()
    };
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&payload).contains("\"desired\""));
    let rid = c
        .twin_patch_reported(br#"{"transport":"websockets"}"#)
        .unwrap();
    let patched = wait_event(
        c,
        "reported patch",
        &log,
        |e| matches!(e, Event::TwinResponse { request_id, .. } if *request_id == rid),
    );
    assert!(
        matches!(patched, Event::TwinResponse { status: 204, .. }),
        "{patched:?}"
    );
    let twin: serde_json::Value =
        serde_json::from_str(&finished(service(hub, &["twin", DEVICE]))).unwrap();
    assert_eq!(
        twin["properties"]["reported"]["transport"], "websockets",
        "{twin}"
    );
    // A desired patch from the service.
    finished(service(
        hub,
        &["twin", DEVICE, "--desired", r#"{"interval":7}"#],
    ));
    let desired = wait_event(c, "desired patch", &log, |e| {
        matches!(e, Event::DesiredPatch { .. })
    });
    let Event::DesiredPatch { payload, .. } = desired else {
        unreachable!()
    };
    assert!(String::from_utf8_lossy(&payload).contains("\"interval\":7"));
    // C2D.
    finished(service(hub, &["c2d", DEVICE, "over the firewall"]));
    let c2d = wait_event(c, "C2D", &log, |e| matches!(e, Event::C2d { .. }));
    let Event::C2d { payload, .. } = c2d else {
        unreachable!()
    };
    assert_eq!(payload, b"over the firewall");
    // A direct method, answered.
    let invoke = service(
        hub,
        &[
            "invoke",
            DEVICE,
            "reboot",
            "--payload",
            r#"{"in":3}"#,
            "--json",
        ],
    );
    let method = wait_event(c, "method", &log, |e| {
        matches!(e, Event::MethodRequest { .. })
    });
    let Event::MethodRequest {
        name,
        request_id,
        payload,
    } = method
    else {
        unreachable!()
    };
    assert_eq!(
        (name.as_str(), payload.as_slice()),
        ("reboot", br#"{"in":3}"#.as_slice())
    );
    c.respond_method(&request_id, 200, br#"{"ok":true}"#)
        .unwrap();
    // Keep the connection running while the service waits for the answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut invoke = Some(invoke);
    while invoke.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the method answer did not arrive"
        );
        let _ = c.poll(Duration::from_millis(50)).unwrap();
    }
    let answered = finished(invoke.take().unwrap());
    assert!(
        answered.contains("\"status\":200") && answered.contains("\"ok\":true"),
        "{answered}"
    );
    c.disconnect();
}

#[test]
fn client_does_telemetry_c2d_methods_and_twin_over_websockets_directly_and_through_a_proxy() {
    let (hub, ws) = hub_with_ws();
    let mut c = Client::new(
        config(HOST, DEVICE, &hub.ca()),
        options(Transport::WebSockets, ws, None, None),
    )
    .unwrap();
    assert!(c.uses_websockets());
    exercise(&mut c, &hub);
    drop(c);

    // The same through a proxy that requires Basic credentials and only allows the
    // WebSocket port.
    let proxy = Tinyproxy::start(&[ws], Some(("dev", "pw-for-proxy")));
    let mut c = Client::new(
        config(HOST, DEVICE, &hub.ca()),
        options(
            Transport::WebSockets,
            ws,
            None,
            Some(&proxy.url(Some(("dev", "pw-for-proxy")))),
        ),
    )
    .unwrap();
    exercise(&mut c, &hub);
    assert_eq!(
        proxy.connects(),
        [format!("localhost:{ws}")],
        "{}",
        proxy.log()
    );
}

/// Collects the library's log lines for one test.
fn capture_log() -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    tether::log::set_sink(
        tether::log::Level::Info,
        Some(Arc::new(move |_, line: &str| {
            sink.lock().unwrap().push(line.to_owned())
        })),
    );
    lines
}

#[test]
fn auto_falls_back_to_websockets_when_the_mqtt_port_is_closed_and_says_so() {
    let (hub, ws) = hub_with_ws();
    let lines = capture_log();
    // Nothing listens on the MQTT port given: `auto` must move to the WebSocket port.
    let closed = free_port();
    let mut c = Client::new(
        config(HOST, DEVICE, &hub.ca()),
        options(Transport::Auto, closed, Some(ws), None),
    )
    .unwrap();
    assert!(!c.uses_websockets());
    c.connect(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:?}\n{}", hub.log()));
    assert!(c.uses_websockets());
    let id = c
        .send_telemetry(b"fell back", &PropertyBag::new(), 1)
        .unwrap();
    wait_event(
        &mut c,
        "PUBACK",
        &|| hub.log(),
        |e| matches!(e, Event::TelemetryAcked { id: i } if *i == id),
    );
    let log = lines.lock().unwrap().join("\n");
    assert!(
        log.contains(&format!(
            "port {closed} cannot be reached: falling back to MQTT over WebSockets on port {ws}"
        )),
        "{log}"
    );
    assert!(
        log.contains("over WebSockets ("),
        "the connection is logged as WebSockets: {log}"
    );
    // An `auto` client that reaches MQTT stays on it.
    let mut c = Client::new(
        config(HOST, DEVICE, &hub.ca()),
        options(Transport::Auto, hub.sas, Some(ws), None),
    )
    .unwrap();
    c.connect(Duration::from_secs(20)).unwrap();
    assert!(!c.uses_websockets());
    tether::log::set_sink(tether::log::Level::Info, None);
}

fn cli(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = target_command(env!("CARGO_BIN_EXE_tether"));
    for (name, _) in std::env::vars() {
        if name.starts_with("TETHER_") && name != "TETHER_TEST_RUNNER"
            || name.to_ascii_lowercase().ends_with("_proxy")
        {
            cmd.env_remove(name);
        }
    }
    let out = cmd
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_send_listen_and_tls_check_take_transport_and_the_environment() {
    let (hub, ws) = hub_with_ws();
    let cs = format!(
        "HostName={HOST};DeviceId={DEVICE};SharedAccessKey={KEY};GatewayHostName=localhost"
    );
    let ca = hub.ca();
    let ws_s = ws.to_string();
    let base = [
        ("TETHER_CONNECTION_STRING", cs.as_str()),
        ("TETHER_CA_FILE", ca.as_str()),
    ];
    // --transport websockets --port WS
    let (code, out, err) = cli(
        &[
            "send",
            "--qos",
            "1",
            "--json",
            "--transport",
            "websockets",
            "--port",
            &ws_s,
            "-v",
            "hi",
        ],
        &base,
    );
    assert_eq!(code, 0, "{err}\n{}", hub.log());
    assert!(out.contains("\"acked\":1"), "{out}");
    assert!(err.contains("(MQTT over WebSockets)"), "{err}");
    // TETHER_TRANSPORT=auto with the MQTT port closed and --ws-port.
    let closed = free_port().to_string();
    let env = [
        base[0],
        base[1],
        ("TETHER_TRANSPORT", "auto"),
        ("TETHER_PORT", closed.as_str()),
    ];
    let (code, _, err) = cli(
        &["send", "--qos", "1", "--ws-port", &ws_s, "-v", "hi"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("falling back to MQTT over WebSockets"),
        "{err}"
    );
    // listen over WebSockets receives a C2D message.
    let mut listen = target_command(env!("CARGO_BIN_EXE_tether"));
    listen
        .args([
            "listen",
            "--json",
            "--count",
            "1",
            "--timeout",
            "60",
            "--transport",
            "websockets",
            "--port",
            &ws_s,
        ])
        .envs(base.iter().copied())
        .env_remove("TETHER_PORT")
        .env_remove("TETHER_TRANSPORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut listen = listen.spawn().unwrap();
    let mut lines = BufReader::new(listen.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("listening"), "{first}");
    // Until the subscription is in place a C2D message waits in the stand-in: it arrives.
    finished(service(&hub, &["c2d", DEVICE, "to the listener"]));
    let got = lines.next().unwrap().unwrap();
    assert!(got.contains("to the listener"), "{got}");
    assert!(listen.wait().unwrap().success());
    // An unknown transport is a usage error.
    let (code, _, err) = cli(&["send", "--transport", "carrier-pigeon", "hi"], &base);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mqtt, websockets or auto"), "{err}");
    // tls-check: the WebSocket port is TLS 1.2 with a hub suite.
    let (code, out, err) = cli(
        &[
            "tls-check",
            "localhost",
            "--json",
            "--transport",
            "websockets",
            "--port",
            &ws_s,
        ],
        &base[1..],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("\"port\":{ws}")) && out.contains("TLSv1.2"),
        "{out}"
    );
}

// ------------------------------------------------------------ a WebSocket server not ours

/// Python's `websockets` package in front of a plain mosquitto, TLS 1.2 with the hub's
/// suites, serving `/$iothub/websocket` with the subprotocol `mqtt`.
struct Bridge {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<String>>,
    broker: Mosquitto,
}

impl Bridge {
    fn start() -> Bridge {
        let python = common::python_venv(
            "ws-venv",
            "websockets",
            &["websockets"],
            "Python's websockets package (a WebSocket server tether did not write)",
        );
        let broker = Mosquitto::start("listener {port} 127.0.0.1\nallow_anonymous true\n");
        let pki = Pki::shared();
        let port = free_port();
        let mut child = Command::new(python)
            .arg(common::root().join("tests/websockets/bridge.py"))
            .args([
                port.to_string(),
                broker.port.to_string(),
                pki.path("server.pem"),
                pki.path("server.key"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(
            ready.trim(),
            "ready",
            "the bridge did not start: {}",
            stderr.lock().unwrap()
        );
        Bridge {
            child,
            port,
            stderr,
            broker,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn client_talks_mqtt_through_the_websockets_package_to_mosquitto() {
    require("mosquitto_sub", "mosquitto-clients");
    let bridge = Bridge::start();
    let pki = Pki::shared();
    // The service side subscribes on the plain broker.
    let sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &bridge.broker.port.to_string(),
            "-t",
            "devices/+/messages/events/#",
            "-C",
            "1",
            "-v",
            "-W",
            "30",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut c = Client::new(
        config("hub.example", DEVICE, &pki.path("ca.pem")),
        options(Transport::WebSockets, bridge.port, None, None),
    )
    .unwrap();
    c.connect(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:?}\n{}", bridge.log()));
    c.subscribe(Subscription::C2d).unwrap();
    // A payload over 64 KiB: 64-bit frame lengths both ways.
    let big = vec![b'w'; 70_000];
    let id = c.send_telemetry(&big, &PropertyBag::new(), 1).unwrap();
    wait_event(
        &mut c,
        "PUBACK",
        &|| bridge.log(),
        |e| matches!(e, Event::TelemetryAcked { id: i } if *i == id),
    );
    let out = sub.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("devices/{DEVICE}/messages/events/ ")),
        "{text}"
    );
    assert_eq!(
        text.trim_end().len(),
        format!("devices/{DEVICE}/messages/events/ ").len() + big.len()
    );
    // C2D from the broker side, over 64 KiB too.
    let pub_out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &bridge.broker.port.to_string(),
            "-q",
            "1",
        ])
        .args([
            "-t",
            &format!("devices/{DEVICE}/messages/devicebound/%24.mid=1"),
            "-s",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut p| {
            p.stdin.take().unwrap().write_all(&vec![b'c'; 66_000])?;
            p.wait_with_output()
        })
        .unwrap();
    assert!(pub_out.status.success());
    let c2d = wait_event(&mut c, "C2D", &|| bridge.log(), |e| {
        matches!(e, Event::C2d { .. })
    });
    let Event::C2d { payload, .. } = c2d else {
        unreachable!()
    };
    assert_eq!(payload.len(), 66_000);
    c.disconnect();
    let log = bridge.log();
    assert!(
        log.contains(
            "connection path=/$iothub/websocket?iothub-no-client-cert=true subprotocol=mqtt"
        ),
        "the SAS path and subprotocol: {log}"
    );
}

// --------------------------------------------------------- the official Python device SDK

#[test]
fn official_python_sdk_over_websockets_reaches_the_stand_ins_websocket_listener() {
    let python = common::python_venv(
        "azure-iot-venv",
        "azure.iot.device, paho.mqtt.client",
        &["azure-iot-device"],
        "the official Python device SDK",
    );
    let (hub, ws) = hub_with_ws();
    let conn = format!(
        "HostName={HOST};DeviceId={DEVICE};SharedAccessKey={KEY};GatewayHostName=localhost"
    );
    let mut sdk = Command::new(python)
        .arg(common::root().join("tests/hub_service/sdk_device.py"))
        .args([conn, hub.ca(), ws.to_string(), "websockets".into()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = sdk.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let expect = |what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("the SDK printed no {what}\n{}", hub.log())
    };
    expect("\"ready\"");
    let twin: serde_json::Value =
        serde_json::from_str(&finished(service(&hub, &["twin", DEVICE]))).unwrap();
    assert_eq!(
        twin["properties"]["reported"]["fw"], "1.2.3",
        "the SDK's reported patch arrived: {twin}"
    );
    finished(service(
        &hub,
        &["c2d", DEVICE, "to the sdk over websockets"],
    ));
    expect("to the sdk over websockets");
    let answer = finished(service(
        &hub,
        &["invoke", DEVICE, "ping", "--payload", "1", "--json"],
    ));
    assert!(
        answer.contains("\"status\":200") && answer.contains("\"method\":\"ping\""),
        "{answer}"
    );
    drop(sdk.stdin.take());
    let _ = sdk.kill();
    let _ = sdk.wait();
}

// --------------------------------------------------------------- a hostile WebSocket server

#[derive(Clone, Copy, Debug)]
enum Hostile {
    NoSubprotocol,
    WrongAccept,
    Refused404,
    TextFrame,
    Oversized,
    /// CONNACK in two fragments with a ping between: a good server, for the positive case.
    Fragmented,
    CloseMidFrame,
    CloseFrame,
    /// A good server playing DPS: CONNACK, SUBACK, then `200 assigned` for the registration.
    Dps,
}

/// The frames a hostile server read: (opcode, payload).
type Frames = Arc<Mutex<Vec<(u8, Vec<u8>)>>>;

/// A TLS server (the test PKI) answering WebSocket upgrades as `how` says; counts accepts
/// and records the frames it read (opcode, payload).
struct HostileServer {
    port: u16,
    accepts: Arc<AtomicUsize>,
    frames: Frames,
}

impl HostileServer {
    fn start(how: Hostile) -> HostileServer {
        let pki = Pki::shared();
        let certs =
            tether::policy::load_certificates(&std::fs::read(pki.path("server.pem")).unwrap())
                .unwrap();
        let key = tether::policy::load_private_key(&std::fs::read(pki.path("server.key")).unwrap())
            .unwrap();
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
        let accepts = Arc::new(AtomicUsize::new(0));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (accepts.clone(), frames.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let (config, seen) = (config.clone(), seen.clone());
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let _ = serve_hostile(&mut tls, how, &seen);
                });
            }
        });
        HostileServer {
            port,
            accepts,
            frames,
        }
    }
}

fn serve_hostile(
    tls: &mut (impl Read + Write),
    how: Hostile,
    seen: &Mutex<Vec<(u8, Vec<u8>)>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap_or("")
        .to_owned();
    let accept = match how {
        Hostile::WrongAccept => accept_for("not the client's key"),
        _ => accept_for(&key),
    };
    let answer = match how {
        Hostile::Refused404 => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
        Hostile::NoSubprotocol => format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        ),
        _ => format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        ),
    };
    tls.write_all(answer.as_bytes())?;
    tls.flush()?;
    // Read frames until the CONNECT has arrived, then misbehave.
    let mut next_frame =
        |tls: &mut dyn Read, buf: &mut Vec<u8>| -> std::io::Result<Option<(u8, Vec<u8>)>> {
            loop {
                if let Ok(Some((frame, used))) = read_client_frame(buf, 1 << 20) {
                    buf.drain(..used);
                    seen.lock()
                        .unwrap()
                        .push((frame.opcode, frame.payload.clone()));
                    return Ok(Some((frame.opcode, frame.payload)));
                }
                let n = tls.read(&mut chunk)?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        };
    if matches!(how, Hostile::Dps) {
        return play_dps(
            tls,
            &mut |tls: &mut dyn Read, buf: &mut Vec<u8>| next_frame(tls, buf),
            &mut buf,
        );
    }
    let Some((2, connect)) = next_frame(tls, &mut buf)? else {
        return Ok(());
    };
    assert_eq!(connect[0], 0x10, "the first binary frame holds the CONNECT");
    let connack = [0x20u8, 0x02, 0x00, 0x00];
    let out: Vec<u8> = match how {
        Hostile::TextFrame => server_frame(0x1, true, b"hello"),
        Hostile::Oversized => vec![0x82, 127, 0, 0, 0x01, 0, 0, 0, 0, 0], // 2^40 bytes announced
        Hostile::Fragmented => [
            server_frame(0x2, false, &connack[..1]),
            server_frame(0x9, true, b"are you there"),
            server_frame(0x0, false, &connack[1..3]),
            server_frame(0x0, true, &connack[3..]),
        ]
        .concat(),
        Hostile::CloseMidFrame => {
            server_frame(0x2, true, &[0x20, 0x02, 0, 0, 0, 0, 0, 0])[..5].to_vec()
        }
        Hostile::CloseFrame => server_frame(0x8, true, b"\x03\xe9going away"),
        _ => Vec::new(),
    };
    tls.write_all(&out)?;
    tls.flush()?;
    if matches!(how, Hostile::Fragmented) {
        // Keep reading (the pong, pings, the close) until the client leaves.
        while next_frame(tls, &mut buf)?.is_some() {}
        return Ok(());
    }
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

type NextFrame<'a> =
    dyn FnMut(&mut dyn Read, &mut Vec<u8>) -> std::io::Result<Option<(u8, Vec<u8>)>> + 'a;

/// DPS over WebSockets, answered with mqttbytes (as tests/provisioning.rs's responder does).
fn play_dps(
    tls: &mut (impl Read + Write),
    next_frame: &mut NextFrame<'_>,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    use mqttbytes::v4;
    let mut rx = bytes::BytesMut::new();
    loop {
        let packet = loop {
            match v4::read(&mut rx, 1 << 20) {
                Ok(p) => break p,
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("malformed MQTT from the device: {e:?}"),
            }
            match next_frame(tls, buf)? {
                Some((2 | 0, payload)) => rx.extend_from_slice(&payload),
                Some(_) => {}
                None => return Ok(()),
            }
        };
        let mut out = bytes::BytesMut::new();
        match packet {
            v4::Packet::Connect(c) => {
                assert!(c
                    .login
                    .is_some_and(|l| l.username.contains("/registrations/")));
                v4::ConnAck::new(v4::ConnectReturnCode::Success, false)
                    .write(&mut out)
                    .unwrap();
            }
            v4::Packet::Subscribe(sub) => {
                v4::SubAck::new(
                    sub.pkid,
                    vec![v4::SubscribeReasonCode::Success(
                        mqttbytes::QoS::AtLeastOnce,
                    )],
                )
                .write(&mut out)
                .unwrap();
            }
            v4::Packet::Publish(p) => {
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
                let body = r#"{"operationId":"4.w","status":"assigned","registrationState":{"assignedHub":"ws-hub.azure-devices.net","deviceId":"dev-ws","status":"assigned"}}"#;
                v4::Publish::new(
                    format!("$dps/registrations/res/200/?$rid={rid}"),
                    mqttbytes::QoS::AtMostOnce,
                    body.as_bytes().to_vec(),
                )
                .write(&mut out)
                .unwrap();
            }
            v4::Packet::Disconnect => return Ok(()),
            _ => {}
        }
        if !out.is_empty() {
            tls.write_all(&server_frame(0x2, true, &out))?;
            tls.flush()?;
        }
    }
}

fn hostile_client(server: &HostileServer) -> Client {
    let pki = Pki::shared();
    Client::new(
        config("hub.example", DEVICE, &pki.path("ca.pem")),
        options(Transport::WebSockets, server.port, None, None),
    )
    .unwrap()
}

#[test]
fn bad_upgrades_are_named_and_not_retried() {
    for (how, needle) in [
        (Hostile::NoSubprotocol, "without the \"mqtt\" subprotocol"),
        (Hostile::WrongAccept, "wrong Sec-WebSocket-Accept"),
        (Hostile::Refused404, "\"HTTP/1.1 404 Not Found\""),
    ] {
        let server = HostileServer::start(how);
        let mut c = hostile_client(&server);
        let began = Instant::now();
        let e = c.connect(Duration::from_secs(10)).unwrap_err();
        assert_eq!(e.code(), Code::WebsocketUpgradeFailed, "{how:?}: {e:?}");
        assert!(e.message().contains(needle), "{how:?}: {e:?}");
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{how:?}: refused at once"
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            server.accepts.load(Ordering::SeqCst),
            1,
            "{how:?}: not retried"
        );
    }
}

#[test]
fn bad_frames_are_named_and_the_client_reconnects() {
    for (how, code, needle) in [
        (Hostile::TextFrame, Code::WebsocketProtocol, "text frame"),
        (Hostile::Oversized, Code::WebsocketProtocol, "more than"),
        (Hostile::CloseMidFrame, Code::ConnectionClosed, "closed"),
        (
            Hostile::CloseFrame,
            Code::ConnectionClosed,
            "status 1001: going away",
        ),
    ] {
        let server = HostileServer::start(how);
        let mut c = hostile_client(&server);
        // Retried with back-off until the time is up; the last failure is returned.
        let e = c.connect(Duration::from_secs(4)).unwrap_err();
        assert_eq!(e.code(), code, "{how:?}: {e:?}");
        assert!(e.message().contains(needle), "{how:?}: {e:?}");
        assert!(
            server.accepts.load(Ordering::SeqCst) >= 2,
            "{how:?}: reconnected"
        );
    }
}

#[test]
fn fragmented_frames_are_reassembled_and_pings_answered() {
    let server = HostileServer::start(Hostile::Fragmented);
    let mut c = hostile_client(&server);
    c.connect(Duration::from_secs(10))
        .expect("CONNACK reassembled from three fragments");
    c.disconnect();
    std::thread::sleep(Duration::from_millis(300));
    let frames = server.frames.lock().unwrap().clone();
    assert!(
        frames.contains(&(0xA, b"are you there".to_vec())),
        "the ping was answered with a pong carrying its payload: {frames:?}"
    );
    // The DISCONNECT in a binary frame, then a close frame with 1000.
    let tail: Vec<u8> = frames.iter().map(|f| f.0).collect();
    assert!(tail.ends_with(&[0x2, 0x8]), "{tail:?}");
    assert_eq!(frames.last().unwrap().1, 1000u16.to_be_bytes());
    assert_eq!(frames[frames.len() - 2].1, [0xE0, 0x00]);
}

// ------------------------------------------------------------------ C, through the proxy

#[test]
fn c_example_gets_c2d_methods_and_twin_over_websockets_through_a_proxy_from_the_environment() {
    let (hub, ws) = hub_with_ws();
    let proxy = Tinyproxy::start(&[ws], Some(("c", "c-proxy-pass")));
    let examples = common::build_examples(&common::install_prefix(), false);
    finished(service(
        &hub,
        &["twin", DEVICE, "--desired", r#"{"rate":5}"#],
    ));
    // Only the environment changes: the example calls tether_client_new_from_env.
    let mut device = Command::new(examples.join("c2d_methods_twin"))
        .arg("3")
        .env(
            "TETHER_CONNECTION_STRING",
            format!(
                "HostName={HOST};DeviceId={DEVICE};SharedAccessKey={KEY};GatewayHostName=localhost"
            ),
        )
        .env("TETHER_TRANSPORT", "websockets")
        .env("TETHER_PORT", ws.to_string())
        .env("TETHER_CA_FILE", hub.ca())
        .env("HTTPS_PROXY", proxy.url(Some(("c", "c-proxy-pass"))))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("TETHER_PROXY")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let out = device.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = |what: &str| {
        lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the C example printed no {what}\n{}", hub.log()))
    };
    assert_eq!(next("ready"), "ready");
    assert_eq!(
        next("twin"),
        r#"twin 200 {"desired":{"$version":2,"rate":5},"reported":{"$version":1}}"#
    );
    assert_eq!(next("reported"), "twin 204 ");
    finished(service(&hub, &["c2d", DEVICE, "wake"]));
    assert!(next("c2d").starts_with("c2d wake "));
    let invoke = service(
        &hub,
        &[
            "invoke",
            DEVICE,
            "blink",
            "--payload",
            r#"{"times":2}"#,
            "--json",
        ],
    );
    let answered: serde_json::Value = serde_json::from_str(&finished(invoke)).unwrap();
    assert_eq!(
        answered,
        serde_json::json!({"status": 200, "payload": {"done": true}})
    );
    assert_eq!(next("method"), r#"method blink {"times":2}"#);
    finished(service(
        &hub,
        &["twin", DEVICE, "--desired", r#"{"rate":10}"#],
    ));
    assert_eq!(next("desired"), r#"desired v3 {"$version":3,"rate":10}"#);
    assert!(device.wait().unwrap().success());
    assert_eq!(
        proxy.connects(),
        [format!("localhost:{ws}")],
        "{}",
        proxy.log()
    );
}

// ------------------------------------------------- own-socket firmware: the sans-IO session

#[test]
fn a_session_on_the_callers_own_socket_speaks_websockets_when_told() {
    use std::net::TcpStream;
    use tether::session::Session;
    let (hub, ws) = hub_with_ws();
    let mut cfg = config(HOST, DEVICE, &hub.ca());
    // What `tether_session_new` sets for TETHER_TRANSPORT_WEBSOCKETS.
    cfg.options.websockets = true;
    let mut session = Session::new(cfg).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", ws)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let now = tether::client::system_now_ms;
    session.connect(now()).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut step = |session: &mut Session| -> Vec<Event> {
        out.clear();
        session.poll_output(&mut out);
        sock.write_all(&out).unwrap();
        match sock.read(&mut buf) {
            Ok(0) => panic!("the stand-in closed the connection\n{}", hub.log()),
            Ok(n) => session.handle_input(&buf[..n], now()).unwrap(),
            Err(_) => {}
        }
        session.handle_timeout(now());
        std::iter::from_fn(|| session.poll_event()).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut connected = false;
    while !connected {
        assert!(Instant::now() < deadline, "no CONNACK\n{}", hub.log());
        connected = step(&mut session)
            .iter()
            .any(|e| matches!(e, Event::Connected { .. }));
    }
    let id = session
        .send_telemetry(b"own socket, WebSockets", &PropertyBag::new(), 1, now())
        .unwrap();
    let mut acked = false;
    while !acked {
        assert!(Instant::now() < deadline, "no PUBACK\n{}", hub.log());
        acked = step(&mut session)
            .iter()
            .any(|e| matches!(e, Event::TelemetryAcked { id: i } if *i == id));
    }
    session.disconnect(now());
    out.clear();
    session.poll_output(&mut out);
    assert!(
        !out.is_empty(),
        "DISCONNECT, the WebSocket close and close_notify to send"
    );
}

// ------------------------------------------------------------------ DPS over WebSockets

#[test]
fn dps_registers_over_websockets_through_a_proxy_and_auto_falls_back() {
    use tether::provisioning::{provision, DpsCredential, DpsRequest};
    let server = HostileServer::start(Hostile::Dps);
    let proxy = Tinyproxy::start(&[server.port], None);
    let mut policy = tether::policy::TlsPolicy::new();
    policy.add_ca_file(&Pki::shared().path("ca.pem")).unwrap();
    let request = DpsRequest {
        endpoint: "localhost".into(),
        port: free_port(), // nothing listens: `auto` must fall back
        id_scope: "0ne00000001".into(),
        registration_id: DEVICE.into(),
        credential: DpsCredential::SymmetricKey {
            key: Box::new(tether::auth::sas::SasKey::from_base64(KEY).unwrap()),
            group: false,
        },
        tls: policy.build().unwrap(),
        has_client_cert: false,
        timeout: Duration::from_secs(20),
        transport: Transport::WebSockets,
        websocket_port: server.port,
        proxy: Some(Proxy::parse(&proxy.url(None)).unwrap()),
    };
    let now = tether::client::system_now_ms() / 1000;
    let assignment = provision(&request, now).unwrap();
    assert_eq!(assignment.assigned_hub, "ws-hub.azure-devices.net");
    assert_eq!(proxy.connects(), [format!("localhost:{}", server.port)]);
    let assignment = provision(
        &DpsRequest {
            transport: Transport::Auto,
            proxy: None,
            ..request
        },
        now,
    )
    .unwrap();
    assert_eq!(assignment.device_id, "dev-ws");
    assert_eq!(server.accepts.load(Ordering::SeqCst), 2);
    // The upgrade asked for the SAS path.
    let frames = server.frames.lock().unwrap().clone();
    assert!(
        frames.iter().any(|(op, _)| *op == 2),
        "binary frames: {frames:?}"
    );
}
