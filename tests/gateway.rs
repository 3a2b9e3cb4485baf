//! Many sessions on one thread, and the two clocks, against real peers: the local IoT Hub
//! stand-in (`tether hub`) and `openssl s_server`.
//!
//! - `examples/gateway.rs` (epoll, one TLS connection per leaf-device identity) connects
//!   every session and loses no message;
//! - the wall clock jumps by years mid-session: keep-alive (monotonic) neither stalls nor
//!   fires at once, and the SAS token is renewed in time and accepted by the broker;
//! - handshakes interleaved on one thread keep their own certificate diagnostics;
//! - TLS session resumption across identities is an explicit, shared cache, refused for
//!   X.509 identities.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::hub::{registry, sas_device, Hub, HOST};
use common::{temp_dir, Pki, SServer};
use rustls::pki_types::UnixTime;
use rustls::time_provider::TimeProvider;
use tether::auth::connection_string::ConnectionString;
use tether::client::monotonic_now_ms as mono;
use tether::policy::TlsPolicy;
use tether::session::{Disconnect, Event, Session, SessionConfig};
use tether::Code;

const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
const KEY2: &str =
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";

fn connection_string(device: &str) -> String {
    format!("HostName={HOST};DeviceId={device};SharedAccessKey={KEY};GatewayHostName=localhost")
}

fn hub_with(devices: &[String]) -> Hub {
    let entries: Vec<String> = devices
        .iter()
        .map(|d| sas_device(d, "enabled", KEY, KEY2))
        .collect();
    Hub::start(&registry(&[], &entries))
}

fn config(device: &str, tls: Arc<rustls::ClientConfig>) -> SessionConfig {
    let cs = ConnectionString::parse(&connection_string(device)).unwrap();
    SessionConfig::from_connection_string(&cs, tls, false).unwrap()
}

#[test]
fn gateway_example_connects_every_session_and_loses_nothing() {
    let n: usize = std::env::var("GATEWAY_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let devices: Vec<String> = (0..n).map(|i| format!("leaf-{i}")).collect();
    let hub = hub_with(&devices);
    let dir = temp_dir("gateway");
    let list = dir.join("devices.txt");
    let lines: Vec<String> = devices.iter().map(|d| connection_string(d)).collect();
    std::fs::write(&list, lines.join("\n")).unwrap();
    // Build the example with the profile of this test binary.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = !cfg!(debug_assertions);
    let mut build = Command::new(&cargo);
    build
        .current_dir(common::root())
        .args(["build", "--example", "gateway"]);
    if release {
        build.arg("--release");
    }
    assert!(
        build.status().unwrap().success(),
        "cargo build --example gateway"
    );
    let exe = common::root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("examples/gateway");
    let rate = (n as u64 * 10).min(5000).to_string();
    let out = Command::new(&exe)
        .arg(hub.ca())
        .arg(&list)
        .arg(hub.sas.to_string())
        .args([rate.as_str(), "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(out.status.success(), "gateway failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("connected {n} in ")), "{stdout}");
    let last = stdout.lines().last().unwrap();
    let fields: Vec<&str> = last.split(' ').collect();
    // "acked A lost L disconnects D"
    assert_eq!(fields[0], "acked", "{stdout}");
    let acked: u64 = fields[1].parse().unwrap();
    assert_eq!(
        acked,
        rate.parse::<u64>().unwrap() * 3,
        "every message acked: {stdout}"
    );
    assert_eq!(fields[3], "0", "messages lost: {stdout}");
    assert_eq!(fields[5], "0", "disconnects: {stdout}");
    // The broker saw each leaf identity connect.
    for d in devices.iter().step_by(n.div_ceil(10)) {
        assert!(
            hub.log().contains(&format!("accepted \"{d}\"")),
            "{d} not seen by the hub"
        );
    }
}

/// A wall clock that the test can set forward and back: the OS clock plus an offset.
#[derive(Debug, Default)]
struct JumpingClock {
    offset_ms: AtomicI64,
}

impl TimeProvider for JumpingClock {
    fn current_time(&self) -> Option<UnixTime> {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let ms = real + self.offset_ms.load(Ordering::Relaxed);
        Some(UnixTime::since_unix_epoch(Duration::from_millis(ms as u64)))
    }
}

/// What the driver saw, in monotonic ms.
#[derive(Default)]
struct Seen {
    connected: Vec<u64>,
    renewals: Vec<u64>,
    /// Keep-alive pings: output produced by a timer while the session stayed connected.
    pings: Vec<u64>,
    /// Any other disconnection.
    failures: Vec<String>,
}

/// Drives `session` over real sockets until monotonic `until`, reconnecting at once after a
/// renewal. Checks, at every step, that the next deadline is neither overdue after the timers
/// ran (everything due fired, nothing queued up) nor further than one keep-alive away while
/// connected (nothing stalls).
fn drive(
    session: &mut Session,
    stream: &mut Option<TcpStream>,
    port: u16,
    until: u64,
    seen: &mut Seen,
) {
    let keep_alive_ms = u64::from(session.config().options.keep_alive_secs) * 1000;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while mono() < until {
        if stream.is_none() {
            let s = TcpStream::connect(("localhost", port)).unwrap();
            s.set_nodelay(true).unwrap();
            *stream = Some(s);
            session.connect(mono()).unwrap();
        }
        let now = mono();
        if session.next_deadline().is_some_and(|d| d <= now) {
            let connected = session.is_connected();
            session.handle_timeout(now);
            if connected && session.is_connected() && session.wants_output() {
                seen.pings.push(now);
            }
            if let Some(d) = session.next_deadline() {
                assert!(
                    d > now,
                    "a deadline still due after handle_timeout: {d} <= {now}"
                );
            }
        }
        if session.is_connected() {
            let d = session
                .next_deadline()
                .expect("a connected session has a timer");
            assert!(
                d <= mono() + keep_alive_ms,
                "next deadline {} ms away, beyond the keep-alive: stalled",
                d - mono()
            );
        }
        out.clear();
        session.poll_output(&mut out);
        let s = stream.as_mut().unwrap();
        if !out.is_empty() {
            s.write_all(&out).unwrap();
        }
        let wait = session
            .next_deadline()
            .map(|d| d.saturating_sub(mono()))
            .unwrap_or(50)
            .clamp(1, 50);
        s.set_read_timeout(Some(Duration::from_millis(wait)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => session.connection_lost(tether::Error::new(Code::ConnectionClosed, "closed")),
            Ok(n) => {
                let _ = session.handle_input(&buf[..n], mono());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("socket: {e}"),
        }
        while let Some(event) = session.poll_event() {
            match event {
                Event::Connected { .. } => seen.connected.push(mono()),
                Event::Disconnected(why) => {
                    out.clear();
                    session.poll_output(&mut out);
                    let _ = stream.as_mut().unwrap().write_all(&out);
                    *stream = None;
                    match why {
                        Disconnect::Renewal => seen.renewals.push(mono()),
                        other => seen.failures.push(format!("{other:?}")),
                    }
                }
                _ => {}
            }
        }
    }
}

#[test]
fn wall_clock_jumps_by_years_keep_alive_holds_and_the_token_is_renewed() {
    let hub = hub_with(&["clock-dev".to_owned()]);
    let clock = Arc::new(JumpingClock::default());
    let mut policy = TlsPolicy::new();
    policy.add_ca_file(&hub.ca()).unwrap();
    policy.set_clock(clock.clone());
    let mut config = config("clock-dev", policy.build().unwrap());
    config.options.keep_alive_secs = 2;
    config.options.token_ttl_secs = 10; // renewed 5 s after it is made
    let mut session = Session::new(config).unwrap();
    let mut stream = None;
    let mut seen = Seen::default();

    let start = mono();
    drive(&mut session, &mut stream, hub.sas, start + 3_000, &mut seen);
    assert_eq!(
        seen.connected.len(),
        1,
        "connected once: {:?}",
        seen.failures
    );
    assert!(
        !seen.pings.is_empty(),
        "a keep-alive ping within 3 s of a 2 s keep-alive"
    );

    // NTP moves the wall clock 2 years ahead (the stand-in's certificate is valid for 825
    // days): by the wall clock the token is overdue, so it is renewed at the next timer.
    const YEARS_2_MS: i64 = 2 * 365 * 86_400_000;
    let jump = mono();
    clock.offset_ms.store(YEARS_2_MS, Ordering::Relaxed);
    drive(&mut session, &mut stream, hub.sas, jump + 4_000, &mut seen);
    let renewed = *seen
        .renewals
        .first()
        .expect("renewed after the forward jump");
    assert!(
        renewed - jump <= 2_000 + 1_500,
        "renewal {} ms after the jump",
        renewed - jump
    );
    assert_eq!(
        seen.connected.len(),
        2,
        "reconnected with the new token: {:?}",
        seen.failures
    );
    let jumped_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + YEARS_2_MS / 1000;
    let day = |unix: i64| tether::cert::format_utc(unix)[..10].to_owned();
    assert!(
        hub.wait_log(
            &format!("token expires at {}", day(jumped_now)),
            Duration::from_secs(5)
        ),
        "the broker accepted a token made on the jumped wall clock ({}):\n{}",
        day(jumped_now),
        hub.log()
    );

    // Back by 2 years: the token made on the jumped clock reads as valid for 2 more years,
    // but its life is also counted on the monotonic clock: renewed 5 s after it was made.
    let back = mono();
    let renewals_before = seen.renewals.len();
    clock.offset_ms.store(0, Ordering::Relaxed);
    drive(&mut session, &mut stream, hub.sas, back + 12_000, &mut seen);
    let after_back = seen.renewals.len() - renewals_before;
    assert!(
        after_back >= 2,
        "renewals after the backward jump: {:?}",
        seen.renewals
    );
    assert!(
        hub.log().contains(&format!(
            "token expires at {}",
            day(jumped_now - YEARS_2_MS / 1000)
        )),
        "tokens made on the corrected clock:\n{}",
        hub.log()
    );

    // Within one connection, the wall clock falls back to 1976 for 3 s (as on a device whose
    // RTC lost power) and returns: the keep-alive goes on, nothing ends the connection.
    let connections = seen.connected.len();
    while seen.connected.len() == connections {
        drive(&mut session, &mut stream, hub.sas, mono() + 20, &mut seen);
    }
    let real_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    clock
        .offset_ms
        .store(200_000_000_000 - real_ms, Ordering::Relaxed); // 1976-05-03
    let excursion = mono();
    drive(
        &mut session,
        &mut stream,
        hub.sas,
        excursion + 3_000,
        &mut seen,
    );
    clock.offset_ms.store(0, Ordering::Relaxed);
    assert_eq!(
        seen.connected.len(),
        connections + 1,
        "the connection held through 1976"
    );
    assert!(
        seen.pings.iter().any(|&p| p > excursion),
        "a keep-alive ping while the wall clock read 1976: {:?}",
        seen.pings
    );
    drive(
        &mut session,
        &mut stream,
        hub.sas,
        mono() + 4_000,
        &mut seen,
    );
    assert!(
        seen.renewals.len() > renewals_before + after_back,
        "renewed after the excursion"
    );

    for pair in seen.connected.windows(2).skip(1) {
        let life = pair[1] - pair[0];
        assert!(
            (4_000..=7_500).contains(&life),
            "a connection lived {life} ms, not about 5 s"
        );
    }
    assert!(
        seen.failures.is_empty(),
        "only renewals end connections: {:?}",
        seen.failures
    );
    // Pings one keep-alive apart within a connection: never in a burst, never stalled.
    for pair in seen.pings.windows(2) {
        let gap = pair[1] - pair[0];
        let reconnected_between = seen.connected.iter().any(|&c| c > pair[0] && c <= pair[1]);
        if !reconnected_between {
            assert!(
                (1_500..=3_500).contains(&gap),
                "pings {gap} ms apart: {:?}",
                seen.pings
            );
        }
    }
    assert!(seen.pings.len() >= 8, "pings: {:?}", seen.pings);
}

#[test]
fn interleaved_handshakes_on_one_thread_keep_their_own_certificate_diagnostics() {
    let pki = Pki::shared();
    let dir = std::path::Path::new(&pki.path("ca.pem"))
        .parent()
        .unwrap()
        .to_path_buf();
    let untrusted = SServer::start(&dir, &["-cert", "untrusted.pem", "-key", "untrusted.key"]);
    let wrong = SServer::start(&dir, &["-cert", "wrong-host.pem", "-key", "wrong-host.key"]);
    let mut policy = TlsPolicy::new();
    policy.add_ca_file(&pki.path("ca.pem")).unwrap();
    let tls = policy.build().unwrap();
    let mut sessions: Vec<(Session, TcpStream, Vec<u8>)> = [untrusted.port, wrong.port]
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let mut s = Session::new(config(&format!("dev-{i}"), tls.clone())).unwrap();
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.connect(mono()).unwrap();
            let mut hello = Vec::new();
            s.poll_output(&mut hello);
            stream.write_all(&hello).unwrap();
            (s, stream, Vec::new())
        })
        .collect();
    // Both servers' first flights, whole, before either session sees a byte.
    for (_, stream, flight) in &mut sessions {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 4096];
        while flight.len() < 5 || !flight.windows(4).any(|w| w == [0x0e, 0, 0, 0]) {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "server closed early");
            flight.extend_from_slice(&buf[..n]);
        }
    }
    // Fed in alternating 64-byte pieces: the two handshakes are under way at once.
    let mut errors: Vec<Option<tether::Error>> = vec![None, None];
    let mut at = 0;
    while errors.iter().any(Option::is_none) && at < 64 * 1024 {
        for (i, (s, _, flight)) in sessions.iter_mut().enumerate() {
            if errors[i].is_some() || at >= flight.len() {
                continue;
            }
            let piece = &flight[at..(at + 64).min(flight.len())];
            if let Err(e) = s.handle_input(piece, mono()) {
                errors[i] = Some(e);
            }
        }
        at += 64;
    }
    // Each failure names its own server's certificate, never the other one's.
    let expected = [
        (Code::CertUntrusted, "Unknown Test CA", "wrong.example.com"),
        (Code::CertWrongHost, "wrong.example.com", "Unknown Test CA"),
    ];
    for (error, (code, own, other)) in errors.into_iter().zip(expected) {
        let error = error.expect("both handshakes are refused");
        assert_eq!(error.code(), code, "{error}");
        assert!(error.message().contains(own), "{error}");
        assert!(!error.message().contains(other), "{error}");
    }
}

/// Connects `session` to the stand-in and returns whether its TLS session was resumed.
fn connect_once(session: &mut Session, port: u16) -> bool {
    let mut stream = None;
    let mut seen = Seen::default();
    let start = mono();
    while seen.connected.is_empty() {
        assert!(
            mono() - start < 15_000,
            "not connected: {:?}",
            seen.failures
        );
        drive(session, &mut stream, port, mono() + 100, &mut seen);
    }
    let resumed = session.tls_resumed();
    session.disconnect(mono());
    let mut out = Vec::new();
    session.poll_output(&mut out);
    let _ = stream.as_mut().unwrap().write_all(&out);
    resumed
}

#[test]
fn sas_identities_sharing_a_configuration_resume_tls_sessions_unless_disabled() {
    let hub = hub_with(&["r-1".to_owned(), "r-2".to_owned(), "r-3".to_owned()]);
    let build = |resumption: bool| {
        let mut policy = TlsPolicy::new();
        policy.add_ca_file(&hub.ca()).unwrap();
        policy.enable_resumption(resumption);
        policy.build().unwrap()
    };
    // One configuration for three leaf identities (a gateway): the second and third
    // identities resume the TLS session the first one made; the broker still
    // authenticates each by its own token.
    let shared = build(true);
    let mut sessions: Vec<Session> = ["r-1", "r-2", "r-3"]
        .iter()
        .map(|d| Session::new(config(d, shared.clone())).unwrap())
        .collect();
    let resumed: Vec<bool> = sessions
        .iter_mut()
        .map(|s| connect_once(s, hub.sas))
        .collect();
    assert_eq!(resumed, [false, true, true]);
    for d in ["r-1", "r-2", "r-3"] {
        assert!(
            hub.log().contains(&format!("accepted \"{d}\"")),
            "{d}:\n{}",
            hub.log()
        );
    }
    // Resumption off: full handshakes only.
    let off = build(false);
    let mut a = Session::new(config("r-1", off.clone())).unwrap();
    let mut b = Session::new(config("r-2", off)).unwrap();
    assert!(!connect_once(&mut a, hub.sas));
    assert!(
        !connect_once(&mut b, hub.sas),
        "resumed with resumption disabled"
    );
    // Another configuration (as each X.509 identity has, with its own certificate) never
    // resumes this one's sessions.
    let mut other = Session::new(config("r-3", build(true))).unwrap();
    assert!(
        !connect_once(&mut other, hub.sas),
        "resumed across configurations"
    );
}
