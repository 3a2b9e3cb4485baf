//! Fault injection: the blocking client against real peers that misbehave.
//!
//! - A TCP proxy between the client and mosquitto (configured like IoT Hub's endpoint)
//!   corrupts, truncates, delays, stalls and resets connections; `mosquitto_sub` on the
//!   service side counts what arrived. For every fault class: the client reconnects with
//!   back-off, no QoS 1 message is lost (duplicates are counted and reported), nothing
//!   becomes fatal, and open descriptors and memory stay flat.
//! - A scripted TLS broker (rustls over real TCP) sends what mosquitto never would: a QoS 2
//!   PUBLISH, topics and property bags the parser refuses, and withholds acknowledgements
//!   across a packet-id wrap.
//! - Deadlines: a connect to a black-holed port and a DPS peer that dribbles its handshake
//!   return within their timeouts.
//!
//! Tests run one at a time (they count the process's descriptors and memory).

mod common;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::faults::{
    device_client, open_fds, raw_publish, rss_kib, Fault, FaultProxy, ScriptedBroker, Seen,
    ServiceBroker, DEVICE, KEY,
};
use common::Pki;
use mqttbytes::v4;
use tether::auth::sas::SasKey;
use tether::client::Client;
use tether::mqtt::properties::PropertyBag;
use tether::policy::TlsPolicy;
use tether::session::{Disconnect, Event};
use tether::Code;

const RETRY_MIN_MS: u32 = 300;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn device(port: u16, keep_alive_secs: u16) -> Client {
    device_client(port, keep_alive_secs, RETRY_MIN_MS, 8_000)
}

/// What one fault run observed.
#[derive(Debug)]
struct Report {
    connected: usize,
    disconnects: Vec<Disconnect>,
    accepts: Vec<Instant>,
    missing: Vec<String>,
    duplicates: usize,
    fds: (usize, usize),
    rss_kib: (u64, u64),
}

impl Report {
    fn assert_nothing_fatal_and_nothing_lost(&self, what: &str) {
        eprintln!(
            "{what}: {} connections, {} disconnections, {} lost, {} duplicates, fds {} -> {}, \
             RSS {} -> {} KiB",
            self.connected,
            self.disconnects.len(),
            self.missing.len(),
            self.duplicates,
            self.fds.0,
            self.fds.1,
            self.rss_kib.0,
            self.rss_kib.1
        );
        let fatal: Vec<_> = self
            .disconnects
            .iter()
            .filter(|d| matches!(d, Disconnect::Fatal(_)))
            .collect();
        assert!(fatal.is_empty(), "{what}: became fatal: {fatal:?}");
        assert!(
            self.missing.is_empty(),
            "{what}: QoS 1 messages lost: {:?}",
            self.missing
        );
        assert!(
            self.fds.1 <= self.fds.0,
            "{what}: open descriptors grew from {} to {}",
            self.fds.0,
            self.fds.1
        );
        assert!(
            self.rss_kib.1 < self.rss_kib.0 + 16 * 1024,
            "{what}: RSS grew from {} to {} KiB",
            self.rss_kib.0,
            self.rss_kib.1
        );
    }

    /// The gaps between consecutive connection attempts grow (exponential back-off),
    /// starting at no less than twice the minimum delay.
    fn assert_backoff(&self, what: &str, faults: usize) {
        let gaps: Vec<u128> = self
            .accepts
            .windows(2)
            .take(faults)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        eprintln!("{what}: gaps between connection attempts (ms): {gaps:?}");
        assert_eq!(gaps.len(), faults, "{what}: too few reconnections");
        assert!(
            gaps[0] >= u128::from(RETRY_MIN_MS) * 2 * 9 / 10,
            "{what}: reconnected after {} ms, sooner than the back-off allows",
            gaps[0]
        );
        for w in gaps.windows(2) {
            assert!(
                w[1] * 10 >= w[0] * 14,
                "{what}: back-off did not grow: {gaps:?}"
            );
        }
    }
}

/// Sends `messages` QoS 1 messages (one per 100 ms) through a proxy applying `plan`, until
/// all are acknowledged, and reports what happened.
fn run(plan: &[Fault], messages: usize, keep_alive_secs: u16) -> Report {
    let broker = ServiceBroker::start();
    let received = broker.subscribe(&format!("devices/{DEVICE}/messages/events/#"));
    let proxy = FaultProxy::start(broker.port(), plan);
    let mut client = device(proxy.port, keep_alive_secs);
    let wanted: Vec<String> = (0..messages).map(|i| format!("m-{i}")).collect();
    client.connect(Duration::from_secs(30)).unwrap();
    let baseline = (open_fds(), rss_kib());
    let mut connected = 0;
    let mut disconnects = Vec::new();
    let mut acked = std::collections::BTreeSet::new();
    let mut sent = 0;
    let mut next_send = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    while acked.len() < messages && Instant::now() < deadline {
        if sent < messages && Instant::now() >= next_send {
            match client.send_telemetry(wanted[sent].as_bytes(), &PropertyBag::new(), 1) {
                Ok(_) => {
                    sent += 1;
                    next_send += Duration::from_millis(100);
                }
                Err(e) if e.code() == Code::QueueFull => {}
                Err(e) => panic!("send failed: {e}"),
            }
        }
        match client.poll(Duration::from_millis(20)).unwrap() {
            Some(Event::Connected { .. }) => connected += 1,
            Some(Event::Disconnected(why)) => disconnects.push(why),
            Some(Event::TelemetryAcked { id }) => {
                acked.insert(id);
            }
            _ => {}
        }
    }
    assert_eq!(
        acked.len(),
        messages,
        "not every message was acknowledged within 90 s (disconnections: {disconnects:?})"
    );
    let (missing, duplicates) = received.wait_all(&wanted, Duration::from_secs(10));
    // Let the relays of closed connections wind down before counting descriptors.
    std::thread::sleep(Duration::from_millis(300));
    let end = (open_fds(), rss_kib());
    client.disconnect();
    Report {
        connected,
        disconnects,
        accepts: proxy.accepts(),
        missing,
        duplicates,
        fds: (baseline.0, end.0),
        rss_kib: (baseline.1, end.1),
    }
}

/// Runs a fault that ends a connection shortly after it starts on three connections in a
/// row: each is retried, later than the one before.
fn repeated_fault(fault: Fault, what: &str) {
    let _serial = serial();
    let report = run(&[fault, fault, fault], 60, 5);
    report.assert_nothing_fatal_and_nothing_lost(what);
    assert!(
        report.disconnects.len() >= 3,
        "{what}: the fault did not end the connections: {:?}",
        report.disconnects
    );
    report.assert_backoff(what, 3);
}

#[test]
fn a_corrupted_tls_record_after_connack_is_retried_not_fatal() {
    repeated_fault(
        Fault::CorruptToClient { after_ms: 200 },
        "corrupted record to the client",
    );
}

#[test]
fn a_corrupted_record_towards_the_broker_is_retried() {
    repeated_fault(
        Fault::CorruptToBroker { after_ms: 200 },
        "corrupted record to the broker",
    );
}

#[test]
fn a_record_cut_in_the_middle_is_retried() {
    repeated_fault(Fault::Truncate { after_ms: 200 }, "truncated record");
}

#[test]
fn a_reset_connection_is_retried() {
    repeated_fault(Fault::Reset { after_ms: 200 }, "TCP reset");
}

#[test]
fn a_stalled_connection_is_detected_and_replaced() {
    let _serial = serial();
    // Keep-alive 2 s: the client keeps sending (so no ping is due), and the missing
    // PUBACKs tell it the link is dead.
    let report = run(&[Fault::Stall { after_ms: 300 }], 40, 2);
    report.assert_nothing_fatal_and_nothing_lost("stall");
    let stalled = report
        .disconnects
        .first()
        .expect("the stall ended the connection");
    assert_eq!(
        stalled.error().map(|e| e.code()),
        Some(Code::Timeout),
        "{stalled:?}"
    );
    let gap = report.accepts[1] - report.accepts[0];
    assert!(
        gap < Duration::from_secs(8),
        "the stalled connection was replaced only after {gap:?}"
    );
}

#[test]
fn a_slow_link_loses_nothing_and_needs_no_reconnection() {
    let _serial = serial();
    let report = run(&[Fault::Delay { ms: 150 }], 30, 5);
    report.assert_nothing_fatal_and_nothing_lost("delay");
    assert!(
        report.disconnects.is_empty(),
        "a slow link was dropped: {:?}",
        report.disconnects
    );
}

/// Polls until `until` says stop or `timeout`; returns every event.
fn poll_for(
    client: &mut Client,
    timeout: Duration,
    mut until: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + timeout;
    let mut events = Vec::new();
    while Instant::now() < deadline && !until(&events) {
        if let Some(e) = client.poll(Duration::from_millis(50)).unwrap() {
            events.push(e);
        }
    }
    events
}

#[test]
fn a_qos2_publish_from_the_broker_is_retried_with_backoff() {
    let _serial = serial();
    // The first three connections get a QoS 2 PUBLISH right after CONNACK; the fourth is
    // well-behaved.
    let broker = ScriptedBroker::start(|conn| {
        conn.accept();
        if conn.index < 3 {
            conn.publish(
                &format!("devices/{DEVICE}/messages/devicebound/"),
                2,
                7,
                b"q2",
            );
        }
        while conn.next(Duration::from_secs(30)).is_some() {}
    });
    let mut client = device(broker.port, 30);
    client.connect(Duration::from_secs(20)).unwrap();
    let events = poll_for(&mut client, Duration::from_secs(20), |events| {
        events
            .iter()
            .filter(|e| matches!(e, Event::Connected { .. }))
            .count()
            >= 4 // the first connection's event (kept by `connect`) and three more
    });
    let disconnects: Vec<&Disconnect> = events
        .iter()
        .filter_map(|e| match e {
            Event::Disconnected(d) => Some(d),
            _ => None,
        })
        .collect();
    assert!(disconnects.len() >= 3, "{events:?}");
    for d in &disconnects {
        assert!(
            matches!(d, Disconnect::Retriable(e) if e.code() == Code::MqttQosUnsupported),
            "a QoS 2 PUBLISH must be retried: {d:?}"
        );
    }
    let accepts = broker.accepts();
    let gaps: Vec<u128> = accepts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    eprintln!("QoS 2: gaps between connection attempts (ms): {gaps:?}");
    assert!(gaps[0] >= u128::from(RETRY_MIN_MS) * 2 * 9 / 10, "{gaps:?}");
    assert!(
        gaps[1] * 10 >= gaps[0] * 14,
        "back-off did not grow: {gaps:?}"
    );
    // The well-behaved fourth connection stays up.
    let later = poll_for(&mut client, Duration::from_secs(2), |_| false);
    assert!(
        !later.iter().any(|e| matches!(e, Event::Disconnected(_))),
        "{later:?}"
    );
}

#[test]
fn undecodable_messages_are_handed_over_raw_and_the_connection_stays_up() {
    let _serial = serial();
    let bad = [
        (
            format!("devices/{DEVICE}/messages/devicebound/a=%zz"),
            Code::PropertyBagInvalid,
        ),
        (
            format!("devices/{DEVICE}/messages/devicebound/a=1&&b=2"),
            Code::PropertyBagInvalid,
        ),
        (
            "$iothub/twin/PATCH/properties/desired/?$version=abc".into(),
            Code::TopicInvalid,
        ),
        (
            "$iothub/methods/POST/a/b/?$rid=1".into(),
            Code::TopicInvalid,
        ),
        (format!("devices/{DEVICE}/twin/not-c2d"), Code::TopicInvalid),
    ];
    let topics: Vec<String> = bad.iter().map(|(t, _)| t.clone()).collect();
    let sent = topics.clone();
    let broker = ScriptedBroker::start(move |conn| {
        conn.accept();
        for (i, topic) in sent.iter().enumerate() {
            conn.publish(topic, 1, i as u16 + 1, format!("body-{i}").as_bytes());
        }
        while conn.next(Duration::from_secs(30)).is_some() {}
    });
    let mut client = device(broker.port, 30);
    client.connect(Duration::from_secs(20)).unwrap();
    let events = poll_for(&mut client, Duration::from_secs(10), |events| {
        events
            .iter()
            .filter(|e| matches!(e, Event::Undecodable { .. }))
            .count()
            >= bad.len()
    });
    assert!(
        !events.iter().any(|e| matches!(e, Event::Disconnected(_))),
        "an undecodable message ended the connection: {events:?}"
    );
    let raw: Vec<(String, Vec<u8>, Code)> = events
        .into_iter()
        .filter_map(|e| match e {
            Event::Undecodable {
                topic,
                payload,
                reason,
            } => Some((topic, payload, reason.code())),
            _ => None,
        })
        .collect();
    assert_eq!(raw.len(), bad.len(), "{raw:?}");
    for (i, ((topic, payload, code), (want_topic, want_code))) in raw.iter().zip(&bad).enumerate() {
        assert_eq!(topic, want_topic);
        assert_eq!(payload, format!("body-{i}").as_bytes());
        assert_eq!(code, want_code, "{topic}");
    }
    // Every one of them was acknowledged once taken (the broker reads on its own thread).
    let end = Instant::now() + Duration::from_secs(10);
    while broker.acks().len() < bad.len() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(broker.acks(), (1..=bad.len() as u16).collect::<Vec<_>>());
}

#[test]
fn a_received_qos1_message_is_acknowledged_only_once_polled() {
    let _serial = serial();
    let broker = ScriptedBroker::start(|conn| {
        conn.accept();
        let topic = format!("devices/{DEVICE}/messages/devicebound/");
        // Both in one TLS record, so the client reads them together.
        let mut both = raw_publish(&topic, 1, 1, b"first");
        both.extend(raw_publish(&topic, 1, 2, b"second"));
        conn.send_raw(&both);
        while conn.next(Duration::from_secs(30)).is_some() {}
    });
    let mut client = device(broker.port, 30);
    client.connect(Duration::from_secs(20)).unwrap();
    let first = poll_for(&mut client, Duration::from_secs(10), |e| {
        e.iter().any(|e| matches!(e, Event::C2d { .. }))
    });
    assert!(
        matches!(first.last(), Some(Event::C2d { payload, .. }) if payload == b"first"),
        "{first:?}"
    );
    // The second message has arrived but the application has not taken it: no PUBACK.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        broker.acks(),
        vec![1],
        "acknowledged before the application had it"
    );
    let second = client.poll(Duration::from_secs(5)).unwrap();
    assert!(
        matches!(&second, Some(Event::C2d { payload, .. }) if payload == b"second"),
        "{second:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.acks().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(broker.acks(), vec![1, 2]);
}

#[test]
fn unacknowledged_messages_are_resent_in_send_order_across_the_packet_id_wrap() {
    let _serial = serial();
    const ACKED: usize = 65_533;
    let broker = ScriptedBroker::start(|conn| {
        conn.accept();
        let mut count = 0usize;
        while let Some(packet) = conn.next(Duration::from_secs(60)) {
            if let v4::Packet::Publish(p) = packet {
                count += 1;
                if conn.index == 0 && count <= ACKED {
                    conn.puback(p.pkid);
                } else if conn.index == 0 && count == ACKED + 4 {
                    return; // drop the connection with four messages unacknowledged
                } else if conn.index > 0 {
                    conn.puback(p.pkid);
                }
            }
        }
    });
    let mut client = device(broker.port, 60);
    client.connect(Duration::from_secs(20)).unwrap();
    let mut sent = 0;
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while sent < ACKED + 4 && Instant::now() < deadline {
        match client.send_telemetry(format!("w-{sent}").as_bytes(), &PropertyBag::new(), 1) {
            Ok(_) => sent += 1,
            Err(e) if e.code() == Code::QueueFull => {
                while let Some(ev) = client.poll(Duration::from_millis(1)).unwrap() {
                    if let Event::TelemetryAcked { .. } = ev {
                        acked += 1;
                    }
                }
            }
            Err(e) => panic!("send {sent}: {e}"),
        }
    }
    assert_eq!(
        sent,
        ACKED + 4,
        "sending timed out after {acked} acknowledgements"
    );
    let resent = || -> Vec<(u16, bool, Vec<u8>)> {
        broker
            .seen()
            .into_iter()
            .filter_map(|(conn, s)| match s {
                Seen::Publish { pkid, dup, payload } if conn == 1 => Some((pkid, dup, payload)),
                _ => None,
            })
            .collect()
    };
    let wait = Instant::now() + Duration::from_secs(30);
    while resent().len() < 4 && Instant::now() < wait {
        let _ = client.poll(Duration::from_millis(50)).unwrap();
    }
    let resent = resent();
    let want: Vec<(u16, bool, Vec<u8>)> = [65_534u16, 65_535, 1, 2]
        .into_iter()
        .zip(ACKED..)
        .map(|(pkid, i)| (pkid, true, format!("w-{i}").into_bytes()))
        .collect();
    assert_eq!(resent, want, "re-sent out of send order");
}

#[test]
fn qos0_back_pressure_returns_queue_full_instead_of_buffering() {
    let _serial = serial();
    // A broker that accepts the connection and then reads nothing more.
    let broker = ScriptedBroker::start(|conn| {
        conn.accept();
        std::thread::sleep(Duration::from_secs(30));
    });
    let mut client = device(broker.port, 60);
    client.connect(Duration::from_secs(20)).unwrap();
    let rss_before = rss_kib();
    let payload = vec![0x5a_u8; 256 * 1024 - 1024];
    let mut accepted = 0;
    let mut refused = 0;
    let start = Instant::now();
    for _ in 0..400 {
        let began = Instant::now();
        match client.send_telemetry(&payload, &PropertyBag::new(), 0) {
            Ok(_) => accepted += 1,
            Err(e) if e.code() == Code::QueueFull => refused += 1,
            Err(e) => panic!("send: {e}"),
        }
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "a send blocked for {:?}",
            began.elapsed()
        );
    }
    let rss_after = rss_kib();
    eprintln!(
        "400 sends of 256 KiB to a peer that reads nothing: {accepted} accepted, {refused} \
         QUEUE_FULL in {:?}; RSS {rss_before} -> {rss_after} KiB",
        start.elapsed()
    );
    assert!(refused > 0, "no back-pressure: every send was accepted");
    // The session's 1 MiB, what the client took from it, and the kernel's socket buffers.
    assert!(accepted < 48, "{accepted} messages buffered");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
}

/// A listening socket whose accept queue is full: further SYNs are dropped, so a TCP
/// connect to it hangs (as to a black-holed address).
fn black_hole() -> (Vec<std::net::TcpStream>, u16, i32) {
    // SAFETY: plain socket calls on a descriptor we own; closed by the caller.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), len),
            0
        );
        assert_eq!(libc::listen(fd, 0), 0);
        let mut bound: libc::sockaddr_in = std::mem::zeroed();
        let mut blen = len;
        libc::getsockname(fd, (&mut bound as *mut libc::sockaddr_in).cast(), &mut blen);
        let port = u16::from_be(bound.sin_port);
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(300),
            ) {
                Ok(s) => fillers.push(s),
                Err(_) => return (fillers, port, fd),
            }
        }
        panic!("could not fill the accept queue of a backlog-0 listener");
    }
}

#[test]
fn connect_returns_within_its_deadline_when_tcp_hangs() {
    let _serial = serial();
    let (_fillers, port, fd) = black_hole();
    let mut client = device(port, 60);
    let began = Instant::now();
    let result = client.connect(Duration::from_millis(200));
    let took = began.elapsed();
    // SAFETY: our listening socket, closed once.
    unsafe { libc::close(fd) };
    assert!(result.is_err(), "connected to a black hole?");
    assert!(
        took < Duration::from_millis(200 + 800),
        "connect(200 ms) took {took:?}"
    );
}

#[test]
fn dps_provisioning_deadline_covers_a_dribbled_handshake() {
    let _serial = serial();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = listener.accept() {
            let mut hello = [0u8; 4096];
            let _ = s.read(&mut hello);
            // A handshake record of 200 bytes, one byte every 300 ms.
            let mut record = vec![22, 3, 3, 0, 200, 2, 0, 0, 196, 3, 3];
            record.resize(205, 0x42);
            for b in record {
                if stopped.load(std::sync::atomic::Ordering::Relaxed) || s.write_all(&[b]).is_err()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    });
    let mut policy = TlsPolicy::new();
    policy.add_ca_file(&Pki::shared().path("ca.pem")).unwrap();
    let request = tether::provisioning::DpsRequest {
        endpoint: "localhost".into(),
        port,
        id_scope: "0ne00000001".into(),
        registration_id: DEVICE.into(),
        credential: tether::provisioning::DpsCredential::SymmetricKey {
            key: Box::new(SasKey::from_base64(KEY).unwrap()),
            group: false,
        },
        tls: policy.build().unwrap(),
        has_client_cert: false,
        transport: tether::transport::Transport::Mqtt,
        websocket_port: 443,
        proxy: None,
        timeout: Duration::from_secs(1),
    };
    let began = Instant::now();
    let result = tether::provisioning::provision(&request, tether::client::system_now_ms() / 1000);
    let took = began.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let err = result.expect_err("a dribbling peer cannot provision");
    assert_eq!(err.code(), Code::Timeout, "{err}");
    assert!(
        took < Duration::from_millis(1000 + 700),
        "provision(1 s) took {took:?}"
    );
}

#[test]
fn c_program_gets_undecodable_messages_as_events_and_stays_connected() {
    let _serial = serial();
    common::require("cc", "gcc");
    let topic = format!("devices/{DEVICE}/messages/devicebound/a=%zz");
    let sent = topic.clone();
    let broker = ScriptedBroker::start(move |conn| {
        conn.accept();
        conn.publish(&sent, 1, 1, b"raw-body");
        conn.publish(
            &format!("devices/{DEVICE}/messages/devicebound/"),
            1,
            2,
            b"good",
        );
        while conn.next(Duration::from_secs(30)).is_some() {}
    });
    let program = common::compile_c("undecodable", "tests/c/undecodable.c", &[], &[]);
    let out = common::run(
        std::process::Command::new(&program)
            .env(
                "TETHER_CONNECTION_STRING",
                format!("HostName=localhost;DeviceId={DEVICE};SharedAccessKey={KEY}"),
            )
            .env("TETHER_CA_FILE", Pki::shared().path("ca.pem"))
            .env("TETHER_PORT", broker.port.to_string()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!(
            "undecodable {topic} raw-body TETHER_RESULT_PROPERTY_BAG_INVALID "
        )),
        "{stdout}"
    );
    assert_eq!(lines[1], "c2d good");
    // The broker reads on its own thread: give it time to take in what the client sent
    // before it exited.
    let end = Instant::now() + Duration::from_secs(10);
    while broker.acks().len() < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(broker.acks(), vec![1, 2]);
}
