//! The telemetry benchmark's WebSockets section: the same client, the same messages, in the
//! same run, over MQTT (8883-style) and over MQTT over WebSockets (443-style), both against
//! the IoT Hub stand-in (`tether hub --ws-port`: each path crosses one relay of the
//! stand-in's, the ClientHello audit relay or the WebSocket front, before the same
//! mosquitto). Reports messages/s (QoS 1, 10,000 x 256 B, median of 3 alternating rounds) and
//! instructions per message: this benchmark re-runs itself under valgrind (callgrind, all of
//! the client's threads) for 200 and 2,200 messages and divides the difference by 2,000, so
//! start-up, TLS handshake and connect are left out.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::hub::{registry, sas_device, Hub, HOST};
use crate::common::{free_port, require, temp_dir};
use tether::auth::connection_string::ConnectionString;
use tether::client::{Client, ClientOptions};
use tether::mqtt::properties::PropertyBag;
use tether::policy::TlsPolicy;
use tether::session::{Event, SessionConfig};
use tether::transport::Transport;

const DEVICE: &str = "bench-ws";
const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
const PAYLOAD: [u8; 256] = [b'x'; 256];
/// The environment variable that makes this benchmark a child run: `TRANSPORT PORT COUNT CA`.
pub const CHILD: &str = "TETHER_BENCH_WS_CHILD";

fn client(transport: Transport, port: u16, ca: &str) -> Client {
    let cs = ConnectionString::parse(&format!(
        "HostName={HOST};DeviceId={DEVICE};SharedAccessKey={KEY};GatewayHostName=localhost"
    ))
    .unwrap();
    let mut policy = TlsPolicy::new();
    policy.add_ca_file(ca).unwrap();
    let mut config =
        SessionConfig::from_connection_string(&cs, policy.build().unwrap(), false).unwrap();
    config.options.max_inflight = 1000;
    Client::new(
        config,
        ClientOptions::route(transport, Some(port), None, None),
    )
    .unwrap()
}

/// Connects, sends `count` QoS 1 messages, waits for every PUBACK; returns the time taken
/// after the connection was accepted.
fn run(transport: Transport, port: u16, ca: &str, count: u64) -> Duration {
    let mut c = client(transport, port, ca);
    c.connect(Duration::from_secs(20)).unwrap();
    let start = Instant::now();
    let bag = PropertyBag::new();
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < count {
        if sent < count {
            match c.send_telemetry(&PAYLOAD, &bag, 1) {
                Ok(_) => {
                    sent += 1;
                    continue;
                }
                Err(e) if e.code() == tether::Code::QueueFull => {}
                Err(e) => panic!("{e}"),
            }
        }
        match c
            .poll(Duration::from_millis(if sent < count { 0 } else { 100 }))
            .unwrap()
        {
            Some(Event::TelemetryAcked { .. }) => acked += 1,
            Some(Event::Disconnected(why)) => panic!("{why:?}"),
            _ => {}
        }
    }
    let took = start.elapsed();
    c.disconnect();
    took
}

/// The child run (under valgrind): `TRANSPORT PORT COUNT CA` from [`CHILD`].
pub fn child(spec: &str) {
    let mut words = spec.split(' ');
    let transport = Transport::parse(words.next().unwrap()).unwrap();
    let port: u16 = words.next().unwrap().parse().unwrap();
    let count: u64 = words.next().unwrap().parse().unwrap();
    let ca = words.next().unwrap();
    run(transport, port, ca, count);
}

/// Instructions of a child run of `count` messages, all threads (callgrind's total).
fn instructions(transport: Transport, port: u16, ca: &str, count: u64) -> Option<u64> {
    let dir = temp_dir("bench-callgrind");
    let out = dir.join("callgrind.out");
    let status = Command::new("valgrind")
        .args(["--tool=callgrind", "--cache-sim=no", "--branch-sim=no"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(std::env::current_exe().unwrap())
        .env(CHILD, format!("{} {port} {count} {ca}", transport.name()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let text = std::fs::read_to_string(&out).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals: ")
                .or_else(|| l.strip_prefix("summary: "))
        })
        .and_then(|n| n.trim().parse().ok())
}

pub fn report() {
    require("valgrind", "valgrind");
    let ws = free_port();
    let hub = Hub::start_full(
        &registry(&[], &[sas_device(DEVICE, "enabled", KEY, KEY)]),
        |_| {},
        &["--ws-port", &ws.to_string()],
    );
    let ca = hub.ca();
    let paths = [(Transport::Mqtt, hub.sas), (Transport::WebSockets, ws)];
    // Warm both paths, then alternate 3 rounds of 10,000.
    for (t, p) in paths {
        run(t, p, &ca, 1_000);
    }
    let count = 10_000u64;
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..3 {
        for (i, (t, p)) in paths.iter().enumerate() {
            rates[i].push(count as f64 / run(*t, *p, &ca, count).as_secs_f64());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (mqtt, wss) = (median(&mut rates[0]), median(&mut rates[1]));
    let per_message = |t: Transport, p: u16| -> Option<f64> {
        let small = instructions(t, p, &ca, 200)?;
        let large = instructions(t, p, &ca, 2_200)?;
        Some(large.saturating_sub(small) as f64 / 2_000.0)
    };
    let (mqtt_i, ws_i) = (
        per_message(paths[0].0, paths[0].1),
        per_message(paths[1].0, paths[1].1),
    );
    println!("\nMQTT vs MQTT over WebSockets, same run, both through the stand-in (QoS 1, 256 B):");
    println!("| transport | msg/s (10,000, median of 3) | instructions per message (callgrind) |");
    println!("|---|---|---|");
    let show = |i: Option<f64>| {
        i.map(|v| format!("{v:.0}"))
            .unwrap_or_else(|| "valgrind failed".into())
    };
    println!("| mqtt | {mqtt:.0} | {} |", show(mqtt_i));
    println!("| websockets | {wss:.0} | {} |", show(ws_i));
    let instr = match (mqtt_i, ws_i) {
        (Some(a), Some(b)) => format!("{:+.1} %", (b / a - 1.0) * 100.0),
        _ => "-".into(),
    };
    println!(
        "websockets vs mqtt: throughput {:+.1} %, instructions per message {instr}",
        (wss / mqtt - 1.0) * 100.0
    );
}
