//! Soak run: one client sends QoS 1 telemetry for N minutes through a fault proxy in front
//! of mosquitto (configured like IoT Hub's endpoint) that breaks every connection after a
//! while: corrupted records both ways, a record cut in the middle, a TCP reset, a stall.
//! Not run in CI.
//!
//!   cargo bench --bench soak -- [MINUTES] [FAULT_PERIOD_SECONDS]     (default 30 and 20)
//!
//! Prints messages sent and acknowledged, reconnections, duplicates and lost messages (as
//! counted by a `mosquitto_sub` on the service side), fatal disconnections, and RSS and open
//! descriptors at the start and the end. Exits non-zero if a message was lost or a
//! disconnection was fatal.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::faults::{device_client, open_fds, rss_kib, Fault, FaultProxy, ServiceBroker, DEVICE};
use tether::mqtt::properties::PropertyBag;
use tether::session::{Disconnect, Event};
use tether::Code;

fn main() {
    // `cargo bench` passes `--bench`; numbers are ours.
    let numbers: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let minutes = numbers.first().copied().unwrap_or(30);
    let period_ms = numbers.get(1).copied().unwrap_or(20) * 1000;
    let run_for = Duration::from_secs(minutes * 60);

    let classes = |after_ms| {
        [
            Fault::CorruptToClient { after_ms },
            Fault::Truncate { after_ms },
            Fault::Reset { after_ms },
            Fault::CorruptToBroker { after_ms },
            Fault::Stall { after_ms },
        ]
    };
    let connections = (run_for.as_millis() as u64 / period_ms.max(1) + 10) as usize;
    let plan: Vec<Fault> = (0..connections)
        .map(|i| classes(period_ms)[i % 5])
        .collect();

    let broker = ServiceBroker::start();
    let received = broker.subscribe(&format!("devices/{DEVICE}/messages/events/#"));
    let proxy = FaultProxy::start(broker.port(), &plan);
    // Keep-alive 10 s: a stall is noticed by the overdue PUBACKs within that.
    let mut client = device_client(proxy.port, 10, 500, 10_000);
    client
        .connect(Duration::from_secs(30))
        .expect("first connection");
    let start = (rss_kib(), open_fds());
    eprintln!(
        "soak: {minutes} min, a fault every {} s, RSS {} KiB, {} descriptors at start",
        period_ms / 1000,
        start.0,
        start.1
    );

    let began = Instant::now();
    let mut sent = Vec::new();
    let mut acked = 0usize;
    let mut connected = 0usize;
    let mut fatal = Vec::new();
    let mut disconnects = 0usize;
    let mut queue_full = 0usize;
    let mut next_send = Instant::now();
    let mut next_report = Instant::now() + Duration::from_secs(60);
    let mut handle = |event: Option<Event>,
                      acked: &mut usize,
                      connected: &mut usize,
                      disconnects: &mut usize| match event {
        Some(Event::TelemetryAcked { .. }) => *acked += 1,
        Some(Event::Connected { .. }) => *connected += 1,
        Some(Event::Disconnected(why)) => {
            *disconnects += 1;
            if let Disconnect::Fatal(e) = &why {
                fatal.push(e.to_string());
            }
        }
        _ => {}
    };
    while began.elapsed() < run_for {
        if Instant::now() >= next_send {
            let payload = format!("s-{}", sent.len());
            match client.send_telemetry(payload.as_bytes(), &PropertyBag::new(), 1) {
                Ok(_) => sent.push(payload),
                Err(e) if e.code() == Code::QueueFull => queue_full += 1,
                Err(e) => panic!("send: {e}"),
            }
            next_send += Duration::from_millis(50);
        }
        let event = client.poll(Duration::from_millis(10)).expect("poll");
        handle(event, &mut acked, &mut connected, &mut disconnects);
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(60);
            eprintln!(
                "soak: {:>4} s: {} sent, {acked} acknowledged, {} reconnections, RSS {} KiB",
                began.elapsed().as_secs(),
                sent.len(),
                connected.saturating_sub(1),
                rss_kib()
            );
        }
    }
    // Drain: everything sent must be acknowledged.
    let drain = Instant::now() + Duration::from_secs(120);
    while acked < sent.len() && Instant::now() < drain {
        let event = client.poll(Duration::from_millis(50)).expect("poll");
        handle(event, &mut acked, &mut connected, &mut disconnects);
    }
    let (missing, duplicates) = received.wait_all(&sent, Duration::from_secs(30));
    let end = (rss_kib(), open_fds());
    client.disconnect();
    println!("| soak | value |");
    println!("|---|---|");
    println!("| duration | {minutes} min |");
    println!("| fault period | {} s |", period_ms / 1000);
    println!("| messages sent (QoS 1) | {} |", sent.len());
    println!("| acknowledged | {acked} |");
    println!("| QUEUE_FULL refusals | {queue_full} |");
    println!("| proxied connections | {} |", proxy.accepts().len());
    println!("| reconnections | {} |", connected.saturating_sub(1));
    println!("| disconnections | {disconnects} |");
    println!("| fatal | {} |", fatal.len());
    println!("| duplicates at the service | {duplicates} |");
    println!("| lost | {} |", missing.len());
    println!("| RSS start / end | {} / {} KiB |", start.0, end.0);
    println!("| open descriptors start / end | {} / {} |", start.1, end.1);
    if !missing.is_empty() || !fatal.is_empty() {
        eprintln!("soak FAILED: lost {missing:?}, fatal {fatal:?}");
        std::process::exit(1);
    }
}
