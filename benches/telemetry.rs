//! Telemetry over TLS 1.2 to a local mosquitto configured like IoT Hub, ours against
//! `mosquitto_pub` (C + OpenSSL) and, when installed, the Azure IoT Python SDK.
//!
//!   cargo bench --bench telemetry            (prints a markdown table)
//!
//! Measures, in one run: messages/s for 1,000 and 10,000 messages of 256 B at QoS 0 and
//! QoS 1 (for ours: from `connect` to the last PUBACK, or to the last byte written at QoS 0;
//! for the peers: the whole process, as a user would run it); connect time (TCP + TLS +
//! CONNACK, median of 20); heap held by one connected client; RSS growth over 100,000
//! messages; and the same client over MQTT and over MQTT over WebSockets in the same run
//! (`telemetry/ws.rs`: messages/s and instructions per message).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "telemetry/ws.rs"]
mod telemetry_ws;

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::Command;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use common::{Mosquitto, Pki};
use tether::auth::connection_string::ConnectionString;
use tether::auth::sas::{write_token, Resource, SasKey, MAX_TOKEN_LEN};
use tether::client::{system_now_ms, Client, ClientOptions};
use tether::mqtt::properties::PropertyBag;
use tether::mqtt::topics::{self, UsernameOptions};
use tether::policy::TlsPolicy;
use tether::session::{Event, SessionConfig};

struct Counting;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const DEVICE: &str = "bench-device";
const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
const PAYLOAD: [u8; 256] = [b'x'; 256];

fn token() -> String {
    let mut buf = [0u8; MAX_TOKEN_LEN];
    let resource = Resource::Device {
        host: "localhost",
        device: DEVICE,
    };
    let expiry = system_now_ms() / 1000 + 24 * 3600;
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

/// The broker: TLS 1.2 only with the hub's suites, like IoT Hub's endpoint. Credentials are
/// not checked here (each peer sends its own user name format); tests/client.rs and
/// tests/hub.rs cover authentication.
fn broker() -> Mosquitto {
    Mosquitto::start(&Mosquitto::tls_listener(
        "{port}",
        Pki::shared(),
        "allow_anonymous true\nmax_inflight_messages 0\nmax_queued_messages 0\n",
    ))
}

fn client(port: u16, token: &str) -> Client {
    let cs = ConnectionString::parse(&format!(
        "HostName=localhost;DeviceId={DEVICE};SharedAccessSignature={token}"
    ))
    .unwrap();
    let mut policy = TlsPolicy::new();
    policy.add_ca_file(&Pki::shared().path("ca.pem")).unwrap();
    let mut config =
        SessionConfig::from_connection_string(&cs, policy.build().unwrap(), false).unwrap();
    config.options.max_inflight = 1000;
    Client::new(
        config,
        ClientOptions {
            port,
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

/// Ours: messages/s from connect to the last acknowledgement (QoS 1) or last write (QoS 0).
fn ours(port: u16, token: &str, count: u64, qos: u8) -> f64 {
    let start = Instant::now();
    let mut c = client(port, token);
    c.connect(Duration::from_secs(10)).unwrap();
    let bag = PropertyBag::new();
    let (mut sent, mut acked) = (0u64, 0u64);
    while sent < count || (qos == 1 && acked < count) {
        if sent < count {
            match c.send_telemetry(&PAYLOAD, &bag, qos) {
                Ok(_) => {
                    sent += 1;
                    continue;
                }
                Err(e) if e.code() == tether::Code::QueueFull => {}
                Err(e) => panic!("{e}"),
            }
        }
        if let Some(Event::TelemetryAcked { .. }) = c.poll(Duration::from_millis(0)).unwrap() {
            acked += 1;
        }
    }
    c.disconnect();
    count as f64 / start.elapsed().as_secs_f64()
}

/// `mosquitto_pub --repeat N`: the whole process, start-up included.
fn mosquitto_pub(port: u16, token: &str, username: &str, count: u64, qos: u8) -> f64 {
    let body = String::from_utf8(PAYLOAD.to_vec()).unwrap();
    let start = Instant::now();
    common::run(
        Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &port.to_string(), "--cafile"])
            .arg(Pki::shared().path("ca.pem"))
            .args(["-i", DEVICE, "-u", username, "-P", token])
            .args(["-t", &format!("devices/{DEVICE}/messages/events/")])
            .args(["-q", &qos.to_string(), "-m", &body])
            .args(["--repeat", &count.to_string()]),
    );
    count as f64 / start.elapsed().as_secs_f64()
}

const PYTHON_SDK: &str = r#"
import sys, time, paho.mqtt.client as mqtt
from azure.iot.device import IoTHubDeviceClient, Message
port, token, ca, count, qos = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
original = mqtt.Client.connect
def connect(self, *a, **k):
    # The SDK always dials 8883; the local broker listens elsewhere.
    k["port"] = port
    return original(self, *a[:1], *a[2:], **k)
mqtt.Client.connect = connect
start = time.time()
client = IoTHubDeviceClient.create_from_sastoken(token, server_verification_cert=open(ca).read())
client.connect()
for i in range(count):
    client.send_message(Message("x" * 256))
client.disconnect()
print(count / (time.time() - start))
"#;

/// The Azure IoT Python SDK (QoS 1 only), when `azure-iot-device` is importable.
fn python_sdk(port: u16, token: &str, count: u64) -> Option<f64> {
    let ok = Command::new("python3")
        .args(["-c", "import azure.iot.device"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        return None;
    }
    let out = Command::new("python3")
        .args(["-c", PYTHON_SDK, &port.to_string(), token])
        .arg(Pki::shared().path("ca.pem"))
        .args([&count.to_string(), "1"])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "python SDK failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    // A child run of the WebSockets section (under valgrind): nothing else.
    if let Ok(spec) = std::env::var(telemetry_ws::CHILD) {
        return telemetry_ws::child(&spec);
    }
    common::require("mosquitto", "mosquitto");
    common::require("mosquitto_pub", "mosquitto-clients");
    let token = token();
    let broker = broker();
    let port = broker.port;
    let username = topics::username(
        "localhost",
        DEVICE,
        None,
        &UsernameOptions {
            client_type: Some(&format!("tether/{}", tether::VERSION)),
            ..UsernameOptions::default()
        },
    )
    .unwrap();

    println!("| messages (256 B) | QoS | tether (Rust client) | mosquitto_pub (C + OpenSSL) | Python SDK |");
    println!("|---|---|---|---|---|");
    for count in [1_000u64, 10_000] {
        for qos in [0u8, 1] {
            let ours = ours(port, &token, count, qos);
            let theirs = mosquitto_pub(port, &token, &username, count, qos);
            let python = if qos == 1 && count == 1_000 {
                python_sdk(port, &token, count)
                    .map(|v| format!("{v:.0} msg/s"))
                    .unwrap_or_else(|| "not installed".into())
            } else {
                "-".into()
            };
            println!("| {count} | {qos} | {ours:.0} msg/s | {theirs:.0} msg/s | {python} |");
        }
    }

    let mut times: Vec<f64> = (0..20)
        .map(|_| {
            let start = Instant::now();
            let mut c = client(port, &token);
            c.connect(Duration::from_secs(10)).unwrap();
            let t = start.elapsed().as_secs_f64() * 1000.0;
            c.disconnect();
            t
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "\nconnect (TCP + TLS 1.2 + CONNACK), median of 20: {:.2} ms",
        times[10]
    );

    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut c = client(port, &token);
    c.connect(Duration::from_secs(10)).unwrap();
    let held = LIVE_BYTES.load(Ordering::Relaxed) - before;
    println!(
        "heap held by one connected client: {:.1} KiB",
        held as f64 / 1024.0
    );

    let bag = PropertyBag::new();
    let mut rss = Vec::new();
    let mut acked = 0u64;
    for i in 0..100_000u64 {
        loop {
            match c.send_telemetry(&PAYLOAD, &bag, 1) {
                Ok(_) => break,
                Err(e) if e.code() == tether::Code::QueueFull => {
                    if let Some(Event::TelemetryAcked { .. }) =
                        c.poll(Duration::from_millis(0)).unwrap()
                    {
                        acked += 1;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        if i % 20_000 == 19_999 {
            rss.push(rss_kib());
        }
    }
    while acked < 100_000 {
        if let Some(Event::TelemetryAcked { .. }) = c.poll(Duration::from_millis(100)).unwrap() {
            acked += 1;
        }
    }
    let heap_after = LIVE_BYTES.load(Ordering::Relaxed) - before;
    println!(
        "100,000 QoS 1 messages: RSS every 20,000 (KiB): {rss:?}; heap after: {:.1} KiB",
        heap_after as f64 / 1024.0
    );
    c.disconnect();
    telemetry_ws::report();
}
