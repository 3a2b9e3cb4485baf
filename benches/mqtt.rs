//! IoT Hub MQTT framing benchmarks: topic building and parsing (operations per second) and
//! PUBLISH encode/decode throughput (MB/s) for 256 B and 256 KiB payloads.
//!
//! Run with `cargo bench --bench mqtt`. Each case runs for about half a second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tether::mqtt::codec::{self, Decoded};
use tether::mqtt::properties::{Count, PropertyBag, SliceSink};
use tether::mqtt::topics::{self, UsernameOptions};

/// Runs `f` repeatedly for about `budget` and returns calls per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut calls = 0u64;
    let start = Instant::now();
    let mut batch = 1u64;
    loop {
        for _ in 0..batch {
            f();
        }
        calls += batch;
        let elapsed = start.elapsed();
        if elapsed >= budget {
            return calls as f64 / elapsed.as_secs_f64();
        }
        batch = (batch * 2).min(1 << 16);
    }
}

fn ops(name: &str, f: impl FnMut()) {
    let r = rate(Duration::from_millis(500), f);
    println!("{name:<44} {:>12.0} ops/s  ({:>8.1} ns/op)", r, 1e9 / r);
}

fn throughput(name: &str, bytes: usize, f: impl FnMut()) {
    let r = rate(Duration::from_millis(500), f);
    println!(
        "{name:<44} {:>12.1} MB/s  ({:>10.0} packets/s)",
        r * bytes as f64 / 1e6,
        r
    );
}

fn main() {
    let mut bag = PropertyBag::new();
    bag.append("$.ct", Some("application/json"))
        .append("$.ce", Some("utf-8"))
        .append("sensor", Some("boiler room/2"));
    let bag = bag.as_str().to_owned();
    let mut buf = [0u8; 512];

    ops("telemetry topic (3 properties, no alloc)", || {
        let mut c = Count::default();
        topics::telemetry_topic_to(&mut c, "my_device", Some("my_module"), black_box(&bag))
            .unwrap();
        let mut s = SliceSink::new(&mut buf[..c.0]);
        topics::telemetry_topic_to(&mut s, "my_device", Some("my_module"), black_box(&bag))
            .unwrap();
        black_box(s.len());
    });
    let options = UsernameOptions {
        client_type: Some("tether/0.1.0"),
        model_id: Some("dtmi:com:example:Thermostat;1"),
        ..Default::default()
    };
    ops("username (client type + model id, no alloc)", || {
        let mut c = Count::default();
        topics::username_to(
            &mut c,
            "myhub.azure-devices.net",
            "my_device",
            None,
            &options,
        )
        .unwrap();
        let mut s = SliceSink::new(&mut buf[..c.0]);
        topics::username_to(
            &mut s,
            "myhub.azure-devices.net",
            "my_device",
            None,
            &options,
        )
        .unwrap();
        black_box(s.len());
    });
    let c2d = "devices/useragent_c/messages/devicebound/%24.to=%2Fdevices%2Fuseragent_c%2Fmessages%2FdeviceBound&abc=123&ghi=%2Fsome%2Fthing&jkl=%2Fsome%2Fthing%2F%3Fbla%3Dbla";
    ops("c2d topic parse + iterate 4 properties", || {
        let t = topics::parse_c2d_topic(black_box(c2d)).unwrap();
        let n = t.properties().filter(|p| p.is_ok()).count();
        black_box(n);
    });
    ops("twin response topic parse", || {
        black_box(
            topics::parse_twin_topic(black_box("$iothub/twin/res/204/?$rid=42&$version=16"))
                .unwrap(),
        );
    });
    ops("method request topic parse", || {
        black_box(
            topics::parse_method_request_topic(black_box("$iothub/methods/POST/reboot/?$rid=17"))
                .unwrap(),
        );
    });

    let topic = format!("devices/my_device/messages/events/{bag}");
    for size in [256usize, 256 * 1024] {
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let p = codec::Publish {
            topic: &topic,
            payload: &payload,
            qos: 1,
            pkid: 1,
            dup: false,
        };
        let len = p.encoded_len().unwrap();
        let mut out = vec![0u8; len];
        let label = if size >= 1024 {
            format!("{} KiB", size / 1024)
        } else {
            format!("{size} B")
        };
        throughput(
            &format!("encode PUBLISH QoS 1, {label} payload"),
            len,
            || {
                black_box(p.encode(black_box(&mut out)).unwrap());
            },
        );
        throughput(
            &format!("decode PUBLISH QoS 1, {label} payload"),
            len,
            || {
                match codec::decode(black_box(&out), codec::DEFAULT_MAX_PACKET_SIZE).unwrap() {
                    Decoded::Complete { len, .. } => black_box(len),
                    Decoded::Incomplete { .. } => unreachable!(),
                };
            },
        );
    }
}
