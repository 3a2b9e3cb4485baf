//! The stand-in acting as IoT Hub: cloud-to-device messages, direct methods and twins driven
//! with `tether hub c2d|invoke|twin|watch` (and the REST API), received by devices we did not
//! write (the official Python SDK `azure-iot-device`, plain paho-mqtt) and by tether's own
//! client; and IoT Hub's isolation rules, each with its test.
//!
//! The Python peers run in a venv (`target/azure-iot-venv`, made on first use with
//! `pip install azure-iot-device`; `.ci/setup` makes it too).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::hub::{now, token, username, Hub, HOST};
use tether::auth::sas::{write_token, Resource, SasKey, MAX_TOKEN_LEN};

const KEY1: &str = "a2V5IG9mIGQxLCBmb3IgdGhlIGh1YiBzZXJ2aWNlIHRlc3Q=";
const KEY2: &str = "a2V5IG9mIGQyLCBmb3IgdGhlIGh1YiBzZXJ2aWNlIHRlc3Q=";
const KEY3: &str = "a2V5IG9mIGQzLCBmb3IgdGhlIGh1YiBzZXJ2aWNlIHRlc3Q=";
const SERVICE_KEY: &str = "c2VydmljZSBwb2xpY3kga2V5IG9mIHRoZSB0ZXN0IGh1Yg==";
const WAIT: Duration = Duration::from_secs(30);

fn registry() -> String {
    let dev = |id: &str, key: &str| common::hub::sas_device(id, "enabled", key, "");
    format!(
        r#"{{"hostName": "{HOST}", "devices": [{}, {}, {}],
            "authorizationPolicies": [
              {{"keyName": "service", "primaryKey": "{SERVICE_KEY}", "rights": "ServiceConnect"}},
              {{"keyName": "reader", "primaryKey": "{SERVICE_KEY}", "rights": "RegistryRead"}}]}}"#,
        dev("d1", KEY1),
        dev("d2", KEY2),
        dev("d3", KEY3)
    )
}

fn key_of(device: &str) -> &'static str {
    match device {
        "d1" => KEY1,
        "d2" => KEY2,
        _ => KEY3,
    }
}

/// The venv's python with azure-iot-device (and paho-mqtt), made once.
fn python() -> PathBuf {
    common::python_venv(
        "azure-iot-venv",
        "azure.iot.device, paho.mqtt.client",
        &["azure-iot-device"],
        "the official Python device SDK",
    )
}

fn script(name: &str) -> PathBuf {
    common::root().join("tests/hub_service").join(name)
}

/// The lines a child prints, on a channel.
fn line_channel(stdout: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    lines
}

/// A third device listening on every `$iothub/...` filter a device may use and on its own
/// C2D topic: it must see nothing of other devices' traffic.
fn spy(hub: &Hub, device: &str) -> Peer {
    let mut spy = Peer::raw(hub, device);
    for filter in [
        "$iothub/twin/res/#".to_owned(),
        "$iothub/methods/POST/#".to_owned(),
        "$iothub/twin/PATCH/properties/desired/#".to_owned(),
        format!("devices/{device}/messages/devicebound/#"),
    ] {
        assert_eq!(spy.subscribe(&filter), 1, "{filter}");
    }
    spy
}

/// A Python process printing one JSON object per line.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
    seen: Vec<Value>,
    name: String,
}

impl Peer {
    fn spawn(mut cmd: Command, name: &str) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = line_channel(child.stdout.take().unwrap());
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Peer {
            stdin: child.stdin.take(),
            child,
            events,
            seen: Vec::new(),
            name: name.into(),
        }
    }

    /// A paho-mqtt device connected to the SAS port as `device`.
    fn raw(hub: &Hub, device: &str) -> Peer {
        Peer::raw_with(hub, device, &[])
    }

    /// As [`Peer::raw`], with extra arguments (`persistent`: clean session 0).
    fn raw_with(hub: &Hub, device: &str, extra: &[&str]) -> Peer {
        let mut cmd = Command::new(python());
        cmd.arg(script("raw_device.py"))
            .arg(hub.sas.to_string())
            .arg(hub.ca())
            .args([
                device,
                &username(device),
                &token(device, key_of(device), now() + 600),
            ])
            .args(extra);
        let mut peer = Peer::spawn(cmd, device);
        let c = peer.expect("connected", |v| v.get("connected").is_some());
        assert_eq!(c["connected"], 0, "{device} was refused");
        peer
    }

    /// A device written with the official SDK, connected as `device`.
    fn sdk(hub: &Hub, device: &str) -> Peer {
        let conn = format!(
            "HostName={HOST};DeviceId={device};SharedAccessKey={};GatewayHostName=localhost",
            key_of(device)
        );
        let mut cmd = Command::new(python());
        cmd.arg(script("sdk_device.py"))
            .arg(conn)
            .arg(hub.ca())
            .arg(hub.sas.to_string());
        let mut peer = Peer::spawn(cmd, device);
        peer.expect("SDK ready", |v| v.get("ready").is_some());
        peer
    }

    fn send(&mut self, command: Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    fn subscribe(&mut self, filter: &str) -> Value {
        self.send(json!({ "sub": filter }));
        self.expect("SUBACK", |v| v.get("suback").is_some())["suback"][0].clone()
    }

    /// Takes the first event matching `want`, waiting for it; the others read stay in `seen`.
    fn expect(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        if let Some(i) = self.seen.iter().position(&want) {
            return self.seen.remove(i);
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    if want(&v) {
                        return v;
                    }
                    self.seen.push(v);
                }
                Err(_) => break,
            }
        }
        panic!(
            "{}: no {what} within {WAIT:?}; saw {:?}",
            self.name, self.seen
        )
    }

    /// Everything received in the next `d`.
    fn drain(&mut self, d: Duration) -> Vec<Value> {
        let deadline = Instant::now() + d;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(v) => self.seen.push(v),
                Err(_) => break,
            }
        }
        self.seen.clone()
    }

    fn messages(&mut self, d: Duration) -> Vec<Value> {
        self.drain(d)
            .into_iter()
            .filter(|v| v.get("msg").is_some())
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(hub: &Hub, args: &[&str]) -> Output {
    cli_in(&hub.dir, args)
}

/// `tether hub ARGS[0] --dir DIR ARGS[1..]`.
fn cli_in(dir: &Path, args: &[&str]) -> Output {
    let dir = dir.to_string_lossy().into_owned();
    let mut all = vec!["hub", args[0], "--dir", &dir];
    all.extend_from_slice(&args[1..]);
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(&all)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tether failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A service policy token (`skn`) for the whole hub.
fn service_token(policy: &str, key: &str) -> String {
    let key = SasKey::from_base64(key).unwrap();
    let mut buf = [0u8; MAX_TOKEN_LEN];
    write_token(
        &Resource::parse(HOST).unwrap(),
        &key,
        Some(policy),
        now() + 600,
        &mut buf,
    )
    .unwrap()
    .to_owned()
}

/// One call to the REST API with Python's HTTP client: (HTTP status, body).
fn rest(hub: &Hub, method: &str, path: &str, auth: &str, body: Option<Value>) -> (u64, Value) {
    let url = format!("https://localhost:{}{path}", hub.service);
    let mut cmd = Command::new(python());
    cmd.arg(script("rest_call.py"))
        .args([method, &url])
        .arg(hub.ca())
        .arg(auth);
    if let Some(b) = body {
        cmd.arg(b.to_string());
    }
    let out = cmd.output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("REST call failed: {}", String::from_utf8_lossy(&out.stderr)));
    (v["status"].as_u64().unwrap(), v["body"].clone())
}

const API: &str = "api-version=2021-04-12";

/// `tether hub invoke ... --json`: the device's status and payload.
fn invoke(hub: &Hub, device: &str, method: &str, payload: &str, timeout: u64) -> Output {
    cli(
        hub,
        &[
            "invoke",
            device,
            method,
            "--payload",
            payload,
            "--timeout",
            &timeout.to_string(),
            "--json",
        ],
    )
}

#[test]
fn official_python_sdk_gets_c2d_methods_twin_and_desired_while_a_third_device_sees_nothing() {
    let hub = Hub::start(&registry());
    let mut spy = spy(&hub, "d3");
    let mut sdk = Peer::sdk(&hub, "d1");
    let twin = sdk.expect("twin", |v| v.get("twin").is_some());
    assert_eq!(twin["twin"]["desired"]["$version"], 1, "{twin}");

    ok(&cli(
        &hub,
        &[
            "c2d",
            "d1",
            "--property",
            "kind=note",
            "hello from the cloud",
        ],
    ));
    let c2d = sdk.expect("C2D message", |v| v.get("c2d").is_some());
    assert_eq!(c2d["c2d"], "hello from the cloud");
    assert_eq!(c2d["properties"]["kind"], "note");

    let out: Value =
        serde_json::from_str(&ok(&invoke(&hub, "d1", "reboot", r#"{"delay":5}"#, 20))).unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(
        out["payload"],
        json!({"echo": {"delay": 5}, "method": "reboot"})
    );
    sdk.expect("method", |v| v["method"] == "reboot");

    let twin: Value = serde_json::from_str(&ok(&cli(
        &hub,
        &["twin", "d1", "--desired", r#"{"rate":7}"#],
    )))
    .unwrap();
    assert_eq!(twin["properties"]["desired"]["$version"], 2);
    let desired = sdk.expect("desired patch", |v| v.get("desired").is_some());
    assert_eq!(desired["desired"], json!({"rate": 7, "$version": 2}));
    // The SDK's reported patch was stored (204 with the new $version).
    let twin: Value = serde_json::from_str(&ok(&cli(&hub, &["twin", "d1"]))).unwrap();
    assert_eq!(twin["properties"]["reported"]["fw"], "1.2.3");
    assert_eq!(twin["properties"]["reported"]["$version"], 2);

    // The same through the REST API, as a backend written against IoT Hub calls it.
    let auth = service_token("service", SERVICE_KEY);
    let (status, body) = rest(
        &hub,
        "POST",
        &format!("/twins/d1/methods?{API}"),
        &auth,
        Some(json!({"methodName": "blink", "payload": [1, 2], "responseTimeoutInSeconds": 20})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": 200, "payload": {"echo": [1, 2], "method": "blink"}})
    );
    let (status, body) = rest(
        &hub,
        "PATCH",
        &format!("/twins/d1?{API}"),
        &auth,
        Some(json!({"properties": {"desired": {"rate": 9}}})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["properties"]["desired"]["$version"], 3);
    let desired = sdk.expect("desired patch from REST", |v| {
        v.get("desired").is_some_and(|d| d["$version"] == 3)
    });
    assert_eq!(desired["desired"], json!({"rate": 9, "$version": 3}));
    let (status, body) = rest(&hub, "GET", &format!("/twins/d1?{API}"), &auth, None);
    assert_eq!(status, 200);
    assert_eq!(body["deviceId"], "d1");
    assert_eq!(body["properties"]["reported"]["fw"], "1.2.3");

    let seen = spy.messages(Duration::from_secs(2));
    assert!(seen.is_empty(), "d3 saw d1's traffic: {seen:?}");
    // The twin store survives in the folder.
    let saved = std::fs::read_to_string(hub.dir.join("twins.json")).unwrap();
    assert!(saved.contains("\"rate\": 9"), "{saved}");
}

#[test]
fn a_method_call_goes_only_to_its_device_and_only_it_can_answer() {
    let hub = Hub::start(&registry());
    // Not connected or not subscribed: 404 at once.
    let out = invoke(&hub, "d1", "ping", "{}", 5);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
    let mut d1 = Peer::raw(&hub, "d1");
    let mut d2 = Peer::raw(&hub, "d2");
    assert_eq!(d1.subscribe("$iothub/methods/POST/#"), 1);
    assert_eq!(d2.subscribe("$iothub/methods/POST/#"), 1);
    let dir = hub.dir.clone();
    let call = std::thread::spawn(move || {
        cli_in(&dir, &["invoke", "d1", "ping", "--timeout", "6", "--json"])
    });
    let request = d1.expect("method call", |v| {
        v["msg"]
            .as_str()
            .is_some_and(|t| t.starts_with("$iothub/methods/POST/ping/?$rid="))
    });
    let topic = request["msg"].as_str().unwrap();
    let rid = topic.rsplit('=').next().unwrap();
    // d2 answers d1's call: ignored, so the call times out (504).
    d2.send(json!({"pub": format!("$iothub/methods/res/200/?$rid={rid}"), "payload": "{\"from\":\"d2\"}"}));
    let out = call.join().unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("504"),
        "{out:?}"
    );
    assert!(
        d2.messages(Duration::from_secs(1)).is_empty(),
        "d2 received d1's call"
    );
    // d1 answering its own call works.
    let dir = hub.dir.clone();
    let call = std::thread::spawn(move || {
        cli_in(&dir, &["invoke", "d1", "ping", "--timeout", "20", "--json"])
    });
    let request = d1.expect("second call", |v| {
        v["msg"].as_str().is_some_and(|t| t.contains("ping/?$rid=")) && v["msg"] != topic
    });
    let rid = request["msg"].as_str().unwrap().rsplit('=').next().unwrap();
    d1.send(json!({"pub": format!("$iothub/methods/res/201/?$rid={rid}"), "payload": "{\"pong\":true}"}));
    let out: Value = serde_json::from_str(&ok(&call.join().unwrap())).unwrap();
    assert_eq!(out, json!({"status": 201, "payload": {"pong": true}}));
}

#[test]
fn twin_responses_and_desired_patches_reach_only_their_device() {
    let hub = Hub::start(&registry());
    let mut d1 = Peer::raw(&hub, "d1");
    let mut d2 = Peer::raw(&hub, "d2");
    for d in [&mut d1, &mut d2] {
        assert_eq!(d.subscribe("$iothub/twin/res/#"), 1);
        assert_eq!(d.subscribe("$iothub/twin/PATCH/properties/desired/#"), 1);
    }
    d1.send(json!({"pub": "$iothub/twin/PATCH/properties/reported/?$rid=5", "payload": "{\"temp\":20}"}));
    let res = d1.expect("204", |v| {
        v["msg"]
            .as_str()
            .is_some_and(|t| t.starts_with("$iothub/twin/res/"))
    });
    assert_eq!(res["msg"], "$iothub/twin/res/204/?$rid=5&$version=2");
    d1.send(json!({"pub": "$iothub/twin/GET/?$rid=6", "payload": ""}));
    let res = d1.expect("200", |v| v["msg"] == "$iothub/twin/res/200/?$rid=6");
    let doc: Value = serde_json::from_str(res["payload"].as_str().unwrap()).unwrap();
    assert_eq!(doc["reported"], json!({"temp": 20, "$version": 2}));
    ok(&cli(&hub, &["twin", "d1", "--desired", r#"{"on":true}"#]));
    let patch = d1.expect("desired", |v| {
        v["msg"] == "$iothub/twin/PATCH/properties/desired/?$version=2"
    });
    assert_eq!(
        serde_json::from_str::<Value>(patch["payload"].as_str().unwrap()).unwrap(),
        json!({"on": true, "$version": 2})
    );
    let leaked = d2.messages(Duration::from_secs(2));
    assert!(leaked.is_empty(), "d2 saw d1's twin traffic: {leaked:?}");
    // d2's own twin is untouched.
    let twin: Value = serde_json::from_str(&ok(&cli(&hub, &["twin", "d2"]))).unwrap();
    assert_eq!(twin["properties"]["desired"], json!({"$version": 1}));
}

#[test]
fn c2d_messages_wait_for_their_device_and_at_most_50_are_pending() {
    let hub = Hub::start(&registry());
    for n in 0..2 {
        let out = ok(&cli(
            &hub,
            &["c2d", "d1", "--property", "n=x y", &format!("m{n}")],
        ));
        assert!(out.starts_with("queued c2d-"), "{out}");
    }
    let mut d2 = Peer::raw(&hub, "d2");
    assert_eq!(d2.subscribe("devices/d2/messages/devicebound/#"), 1);
    let mut d1 = Peer::raw(&hub, "d1");
    assert_eq!(d1.subscribe("devices/d1/messages/devicebound/#"), 1);
    let m0 = d1.expect("m0", |v| v["payload"] == "m0");
    d1.expect("m1", |v| v["payload"] == "m1");
    let topic = m0["msg"].as_str().unwrap();
    assert!(
        topic.starts_with("devices/d1/messages/devicebound/%24.mid=c2d-")
            && topic.ends_with("&n=x%20y"),
        "{topic}"
    );
    let again = d1.messages(Duration::from_secs(1));
    assert!(again.is_empty(), "delivered twice: {again:?}");
    assert!(d2.messages(Duration::from_secs(1)).is_empty());
    drop(d2);
    // A persistent session (clean session 0, as the official SDKs connect) gets what was
    // queued while it was away as soon as it is back, without subscribing again.
    {
        let mut d2 = Peer::raw_with(&hub, "d2", &["persistent"]);
        assert_eq!(d2.subscribe("devices/d2/messages/devicebound/#"), 1);
    }
    ok(&cli(&hub, &["c2d", "d2", "while away"]));
    let mut d2 = Peer::raw_with(&hub, "d2", &["persistent"]);
    d2.expect("the queued message", |v| v["payload"] == "while away");
    // d3 is not connected: its queue fills up to IoT Hub's 50.
    for n in 0..50 {
        ok(&cli(&hub, &["c2d", "d3", &format!("m{n}")]));
    }
    let out = cli(&hub, &["c2d", "d3", "one too many"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403") && err.contains("50"), "{err}");
    // IoT Hub's 64 KB limit.
    let out = cli(&hub, &["c2d", "d1", &"x".repeat(64 * 1024 + 1)]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("64 KB"),
        "{out:?}"
    );
}

#[test]
fn each_refused_publish_closes_the_connection() {
    let hub = Hub::start(&registry());
    let cases = [
        (
            json!({"pub": "devices/d1/messages/devicebound/x", "payload": "self"}),
            "own C2D topic",
        ),
        (
            json!({"pub": "devices/d2/messages/events/", "payload": "x"}),
            "another device",
        ),
        (
            json!({"pub": "devices/d1/messages/events/", "payload": "x", "qos": 2}),
            "QoS 2",
        ),
        (
            json!({"pub": "devices/d1/messages/events/", "size": 256 * 1024}),
            "over 256 KB",
        ),
        (
            json!({"pub": "$iothub/methods/POST/reboot/?$rid=1", "payload": "{}"}),
            "a method call",
        ),
        (
            json!({"pub": "$iothub/twin/res/200/?$rid=1", "payload": "{}"}),
            "a twin response",
        ),
    ];
    let mut victim = Peer::raw(&hub, "d2");
    assert_eq!(victim.subscribe("$iothub/methods/POST/#"), 1);
    assert_eq!(victim.subscribe("$iothub/twin/res/#"), 1);
    for (publish, why) in cases {
        let mut d1 = Peer::raw(&hub, "d1");
        d1.send(publish);
        d1.expect(why, |v| v.get("disconnected").is_some());
    }
    // A message within the limits stays connected.
    let mut d1 = Peer::raw(&hub, "d1");
    d1.send(json!({"pub": "devices/d1/messages/events/a=1", "size": 200 * 1024}));
    d1.expect("PUBACK", |v| v.get("puback").is_some());
    let after = d1.drain(Duration::from_secs(2));
    assert!(
        !after.iter().any(|v| v.get("disconnected").is_some()),
        "{after:?}"
    );
    assert!(victim.messages(Duration::from_secs(1)).is_empty());
    assert!(hub.log().contains("disconnecting \"d1\": refused publish"));
}

#[test]
fn subscriptions_outside_a_devices_own_topics_are_refused() {
    let hub = Hub::start(&registry());
    let mut d1 = Peer::raw(&hub, "d1");
    for filter in [
        "$iothub/#",
        "$iothub/twin/GET/#",
        "$iothub/methods/res/#",
        "devices/d2/messages/devicebound/#",
        "devices/+/messages/devicebound/#",
        "#",
    ] {
        assert_eq!(d1.subscribe(filter), 128, "{filter}");
    }
    for filter in [
        "$iothub/twin/res/#",
        "$iothub/methods/POST/#",
        "$iothub/twin/PATCH/properties/desired/#",
        "devices/d1/messages/devicebound/#",
    ] {
        assert_eq!(d1.subscribe(filter), 1, "{filter}");
    }
    // IoT Hub grants QoS 1 to a QoS 2 subscription.
    d1.send(json!({"sub": "devices/d1/messages/devicebound/#", "qos": 2}));
    let granted = d1.expect("SUBACK", |v| v.get("suback").is_some());
    assert_eq!(granted["suback"][0], 1);
}

/// `tether hub watch --dir DIR [DEVICE] --json`, its lines on a channel (killed on drop).
struct Watch {
    child: Child,
    lines: Receiver<String>,
}

impl Watch {
    fn start(hub: &Hub, device: &str) -> Watch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["hub", "watch", "--dir"])
            .arg(&hub.dir)
            .args([device, "--json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = line_channel(child.stdout.take().unwrap());
        // The watch is registered on the broker's next tick.
        std::thread::sleep(Duration::from_secs(1));
        Watch { child, lines }
    }

    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .expect("watch printed a message");
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_prints_telemetry_with_its_properties() {
    let hub = Hub::start(&registry());
    let watch = Watch::start(&hub, "d1");
    let mut d2 = Peer::raw(&hub, "d2");
    d2.send(json!({"pub": "devices/d2/messages/events/", "payload": "not followed"}));
    d2.expect("PUBACK", |v| v.get("puback").is_some());
    let mut d1 = Peer::raw(&hub, "d1");
    d1.send(json!({"pub": "devices/d1/messages/events/k=v%201&%24.ct=application%2Fjson", "payload": "{\"t\":21}"}));
    assert_eq!(
        watch.next(),
        json!({"device": "d1", "properties": {"k": "v 1", "$.ct": "application/json"}, "payload": {"t": 21}})
    );
}

#[test]
fn retained_messages_are_passed_on_marked_and_never_kept() {
    let hub = Hub::start(&registry());
    let watch = Watch::start(&hub, "d1");
    {
        let mut d1 = Peer::raw(&hub, "d1");
        d1.send(json!({"pub": "devices/d1/messages/events/", "payload": "kept?", "retain": true}));
        d1.expect("PUBACK", |v| v.get("puback").is_some());
        assert_eq!(
            watch.next(),
            json!({"device": "d1", "properties": {"mqtt-retain": "true"}, "payload": "kept?"})
        );
        let after = d1.drain(Duration::from_secs(1));
        assert!(
            !after.iter().any(|v| v.get("disconnected").is_some()),
            "{after:?}"
        );
    }
    // A later subscriber gets nothing replayed.
    let mut again = Peer::raw(&hub, "d1");
    assert_eq!(again.subscribe("devices/d1/messages/events/#"), 1);
    let replayed = again.messages(Duration::from_secs(2));
    assert!(
        replayed.is_empty(),
        "a retained message was replayed: {replayed:?}"
    );
}

#[test]
fn service_commands_name_a_missing_stand_in() {
    let dir = common::temp_dir("no-hub");
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["hub", "twin", "--dir"])
        .arg(&dir)
        .arg("d1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no running stand-in"), "{err}");
}

#[test]
fn rest_calls_need_a_service_connect_policy_and_an_api_version() {
    let hub = Hub::start(&registry());
    let good = service_token("service", SERVICE_KEY);
    let twin = format!("/twins/d2?{API}");
    let (status, body) = rest(&hub, "GET", &twin, &good, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["properties"]["desired"]["$version"], 1);
    for (auth, why) in [
        (String::new(), "no Authorization header"),
        (
            service_token("reader", SERVICE_KEY),
            "a policy without ServiceConnect",
        ),
        (service_token("service", KEY1), "the wrong key"),
        (service_token("nobody", SERVICE_KEY), "an unknown policy"),
        (token("d2", KEY2, now() + 600), "a device token"),
    ] {
        let (status, body) = rest(&hub, "GET", &twin, &auth, None);
        assert_eq!(status, 401, "{why}: {body}");
        assert!(!body.to_string().contains("sig="), "{body}");
    }
    let (status, _) = rest(&hub, "GET", "/twins/d2", &good, None);
    assert_eq!(status, 400, "no api-version");
    let (status, _) = rest(&hub, "GET", &format!("/twins/nobody?{API}"), &good, None);
    assert_eq!(status, 404);
    // No device listening: 404 as IoT Hub answers (device not online).
    let (status, body) = rest(
        &hub,
        "POST",
        &format!("/twins/d2/methods?{API}"),
        &good,
        Some(json!({"methodName": "m", "payload": null, "responseTimeoutInSeconds": 5})),
    );
    assert_eq!(status, 404);
    assert!(
        body["Message"].as_str().unwrap().contains("404103"),
        "{body}"
    );
}

#[test]
fn host_name_is_in_the_server_certificate() {
    let root = common::temp_dir("hub-host");
    let registry_file = root.join("registry.json");
    std::fs::write(&registry_file, registry()).unwrap();
    let dir = root.join("hub");
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["hub", "--registry"])
        .arg(&registry_file)
        .args([
            "--port",
            &port.to_string(),
            "--x509-port",
            &common::free_port().to_string(),
        ])
        .args(["--host-name", HOST, "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let sans = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(dir.join("server.pem"))
        .output()
        .unwrap();
    // A client that checks the hub's name (not localhost) completes the handshake.
    let handshake = Command::new(python())
        .args([
            "-c",
            "import socket, ssl, sys\n\
             ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
             s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[2]))), server_hostname=sys.argv[3])\n\
             print(s.version())",
        ])
        .arg(dir.join("ca.pem"))
        .args([&port.to_string(), HOST])
        .output()
        .unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    assert!(line.starts_with("ready "), "{line}");
    let sans = String::from_utf8_lossy(&sans.stdout);
    assert!(
        sans.contains(&format!("DNS:{HOST}"))
            && sans.contains("DNS:localhost")
            && sans.contains("127.0.0.1"),
        "{sans}"
    );
    assert_eq!(
        String::from_utf8_lossy(&handshake.stdout).trim(),
        "TLSv1.2",
        "{}",
        String::from_utf8_lossy(&handshake.stderr)
    );
}

#[test]
fn tethers_c_example_and_cli_get_c2d_methods_and_desired_from_the_stand_in() {
    let hub = Hub::start(&registry());
    let examples = common::build_examples(&common::install_prefix(), false);
    let mut spy = spy(&hub, "d3");
    ok(&cli(&hub, &["twin", "d2", "--desired", r#"{"rate":5}"#]));
    let mut device = Command::new(examples.join("c2d_methods_twin"))
        .arg("3")
        .env(
            "TETHER_CONNECTION_STRING",
            format!("HostName={HOST};DeviceId=d2;SharedAccessKey={KEY2};GatewayHostName=localhost"),
        )
        .env("TETHER_PORT", hub.sas.to_string())
        .env("TETHER_CA_FILE", hub.ca())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_channel(device.stdout.take().unwrap());
    let next = |what: &str| {
        lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("the C example printed no {what}"))
    };
    assert_eq!(next("ready"), "ready");
    assert_eq!(
        next("twin"),
        r#"twin 200 {"desired":{"$version":2,"rate":5},"reported":{"$version":1}}"#
    );
    assert_eq!(next("reported"), "twin 204 ");
    ok(&cli(&hub, &["c2d", "d2", "--property", "flag=up", "wake"]));
    let c2d = next("c2d");
    assert!(
        c2d.starts_with("c2d wake $.mid=c2d-") && c2d.ends_with(" flag=up"),
        "{c2d}"
    );
    let out: Value =
        serde_json::from_str(&ok(&invoke(&hub, "d2", "blink", r#"{"times":2}"#, 20))).unwrap();
    assert_eq!(out, json!({"status": 200, "payload": {"done": true}}));
    assert_eq!(next("method"), r#"method blink {"times":2}"#);
    ok(&cli(&hub, &["twin", "d2", "--desired", r#"{"rate":10}"#]));
    assert_eq!(next("desired"), r#"desired v3 {"$version":3,"rate":10}"#);
    assert!(device.wait().unwrap().success());
    let twin: Value = serde_json::from_str(&ok(&cli(&hub, &["twin", "d2"]))).unwrap();
    assert_eq!(twin["properties"]["reported"]["firmware"], "1.2.3");
    let seen = spy.messages(Duration::from_secs(1));
    assert!(seen.is_empty(), "d3 saw d2's traffic: {seen:?}");
}
