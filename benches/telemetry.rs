//! Telemetry over TLS 1.2 to a local mosquitto configured like IoT Hub, ours against
//! `mosquitto_pub` (C + OpenSSL) and the Azure IoT Python SDK (`azure-iot-device`), all in
//! the same run, interleaved, medians of several rounds.
//!
//!   cargo bench --bench telemetry                 (prints markdown tables)
//!   TETHER_BENCH_ROUNDS=7 cargo bench --bench telemetry
//!   TETHER_BENCH_BASELINE=/path/to/an/older/telemetry-bench cargo bench --bench telemetry
//!
//! The broker is the IoT Hub-like TLS 1.2 listener with `set_tcp_nodelay true` and without
//! `log_type all` (logging every packet costs the broker 20-30 %). Every client runs as its own
//! process (ours: this binary started as `telemetry-bench client PORT TOKEN COUNT QOS`), so the
//! same figures are measured for each:
//! - messages/s for 1,000 and 10,000 messages of 256 B at QoS 0 and QoS 1, for the whole
//!   process as a user runs it (start-up, connect and disconnect included); for ours also from
//!   connect to disconnect inside the process (the figure earlier notes gave);
//! - client CPU time (user + system of the client process, from `wait4`) per message;
//! - instructions per message under `valgrind --tool=callgrind`: runs with N and 2N messages,
//!   (I(2N) - I(N)) / N, so start-up and connect cancel out;
//! - connect time (TCP + TLS 1.2 + CONNACK), heap held and peak heap of one connected client,
//!   RSS over 100,000 QoS 1 messages (in this process).
//!
//! `TETHER_BENCH_BASELINE` names an older build of this benchmark (its `client` mode is the
//! same protocol): it runs as one more peer, "tether before", so a change is compared with
//! what it replaced in the same run.
//! - the same client over MQTT and over MQTT over WebSockets in the same run
//!   (`telemetry/ws.rs`: messages/s and instructions per message).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "telemetry/ws.rs"]
mod telemetry_ws;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
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
static PEAK_BYTES: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE_BYTES.fetch_add(by, Ordering::Relaxed) + by;
    PEAK_BYTES.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as isize - layout.size() as isize);
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

/// The broker: TLS 1.2 only with the hub's suites, like IoT Hub's endpoint, TCP_NODELAY on
/// its sockets, no per-packet logging. Credentials are not checked here (each peer sends its
/// own user name format); tests/client.rs and tests/hub.rs cover authentication.
fn broker() -> Mosquitto {
    Mosquitto::start_with(
        "log_type error\nlog_type warning\nset_tcp_nodelay true\n",
        &Mosquitto::tls_listener(
            "{port}",
            Pki::shared(),
            "allow_anonymous true\nmax_inflight_messages 0\nmax_queued_messages 0\n",
        ),
        None,
    )
}

fn client(port: u16, token: &str, ca: &str) -> Client {
    let cs = ConnectionString::parse(&format!(
        "HostName=localhost;DeviceId={DEVICE};SharedAccessSignature={token}"
    ))
    .unwrap();
    let mut policy = TlsPolicy::new();
    policy.add_ca_file(ca).unwrap();
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

/// The `client` mode (`client PORT TOKEN COUNT QOS CA_FILE`): connect, send `count`
/// messages, wait for every PUBACK (QoS 1), disconnect. Prints the connect time (ms) and the time from before connecting to after
/// disconnecting (s).
fn client_main(args: &[String]) {
    let port: u16 = args[0].parse().unwrap();
    let token = &args[1];
    let count: u64 = args[2].parse().unwrap();
    let qos: u8 = args[3].parse().unwrap();
    let start = Instant::now();
    let mut c = client(port, token, &args[4]);
    c.connect(Duration::from_secs(10)).unwrap();
    let connected = start.elapsed();
    // A burst: QoS 1 messages are coalesced like QoS 0 ones, sent at each poll.
    c.hold_output(true).unwrap();
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
        // Everything sent: wait for the acknowledgements rather than spin.
        let wait = if sent < count { 0 } else { 100 };
        if let Some(Event::TelemetryAcked { .. }) = c.poll(Duration::from_millis(wait)).unwrap() {
            acked += 1;
        }
    }
    c.disconnect();
    println!(
        "{} {}",
        connected.as_secs_f64() * 1000.0,
        start.elapsed().as_secs_f64()
    );
}

/// One client process: wall time, CPU time (user + system), and what it printed.
struct Run {
    wall_s: f64,
    cpu_s: f64,
    stdout: String,
}

/// Runs `cmd` to completion, its CPU time taken from `wait4`.
// The child is reaped by `wait4` (for its resource usage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command, what: &str) -> Run {
    let err_path = common::temp_dir("bench-stderr").join("stderr");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall_s = start.elapsed().as_secs_f64();
    assert_eq!(reaped, pid, "wait4 for {what}");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what} failed (status {status}): {}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Run {
        wall_s,
        cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
        stdout,
    }
}

const PYTHON_SDK: &str = r#"
import sys, paho.mqtt.client as mqtt
from azure.iot.device import IoTHubDeviceClient, Message
port, token, ca, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
original = mqtt.Client.connect
def connect(self, *a, **k):
    # The SDK always dials 8883; the local broker listens elsewhere.
    k["port"] = port
    return original(self, *a[:1], *a[2:], **k)
mqtt.Client.connect = connect
client = IoTHubDeviceClient.create_from_sastoken(token, server_verification_cert=open(ca).read())
client.connect()
for i in range(count):
    client.send_message(Message("x" * 256))
client.disconnect()
"#;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Peer {
    Tether,
    Before,
    MosquittoPub,
    PythonSdk,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Tether => "tether",
            Peer::Before => "tether before",
            Peer::MosquittoPub => "mosquitto_pub",
            Peer::PythonSdk => "Python SDK",
        }
    }
}

struct Peers {
    port: u16,
    token: String,
    username: String,
    me: PathBuf,
    baseline: Option<PathBuf>,
    python: PathBuf,
}

impl Peers {
    /// The command that sends `count` messages at `qos` as `peer`, or `None` when the peer
    /// cannot (the Python SDK sends telemetry at QoS 1 only).
    fn command(&self, peer: Peer, count: u64, qos: u8) -> Option<Command> {
        let port = self.port.to_string();
        let client = |exe: &PathBuf| {
            let mut cmd = Command::new(exe);
            cmd.args(["client", &port, &self.token, &count.to_string()])
                .arg(qos.to_string())
                .arg(Pki::shared().path("ca.pem"));
            cmd
        };
        match peer {
            Peer::Tether => Some(client(&self.me)),
            Peer::Before => self.baseline.as_ref().map(client),
            Peer::MosquittoPub => {
                let mut cmd = Command::new("mosquitto_pub");
                cmd.args(["-h", "localhost", "-p", &port, "--cafile"])
                    .arg(Pki::shared().path("ca.pem"))
                    .args(["-i", DEVICE, "-u", &self.username, "-P", &self.token])
                    .args(["-t", &format!("devices/{DEVICE}/messages/events/")])
                    .args(["-q", &qos.to_string(), "-m"])
                    .arg(std::str::from_utf8(&PAYLOAD).unwrap())
                    .args(["--repeat", &count.to_string()]);
                Some(cmd)
            }
            Peer::PythonSdk if qos == 1 => {
                let mut cmd = Command::new(&self.python);
                cmd.args(["-c", PYTHON_SDK, &port, &self.token])
                    .arg(Pki::shared().path("ca.pem"))
                    .arg(count.to_string());
                Some(cmd)
            }
            Peer::PythonSdk => None,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Instructions executed by `cmd` under callgrind (all threads).
fn instructions(cmd: Command, what: &str) -> u64 {
    let out = common::temp_dir("callgrind").join("callgrind.out");
    let mut vg = Command::new("valgrind");
    vg.args(["--tool=callgrind", "--trace-children=no"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => vg.env(k, v),
            None => vg.env_remove(k),
        };
    }
    run_measured(&mut vg, what);
    let text = std::fs::read_to_string(&out).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no instruction total in {}", out.display()))
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
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("client") {
        return client_main(&args[2..]);
    }
    common::require("mosquitto", "mosquitto");
    common::require("mosquitto_pub", "mosquitto-clients");
    common::require("valgrind", "valgrind");
    let python = common::python_venv(
        "azure-iot-venv",
        "azure.iot.device, paho.mqtt.client",
        &["azure-iot-device"],
        "the official Python device SDK (the comparison peer)",
    );
    let rounds: usize = std::env::var("TETHER_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let broker = broker();
    let peers = Peers {
        port: broker.port,
        token: token(),
        username: topics::username(
            "localhost",
            DEVICE,
            None,
            &UsernameOptions {
                client_type: Some(&format!("tether/{}", tether::VERSION)),
                ..UsernameOptions::default()
            },
        )
        .unwrap(),
        me: std::env::current_exe().unwrap(),
        baseline: std::env::var_os("TETHER_BENCH_BASELINE").map(PathBuf::from),
        python,
    };
    let mut all = vec![Peer::Tether, Peer::MosquittoPub, Peer::PythonSdk];
    if peers.baseline.is_some() {
        all.insert(1, Peer::Before);
    }
    let cases: Vec<(u64, u8)> = vec![(1_000, 0), (1_000, 1), (10_000, 0), (10_000, 1)];

    // Interleaved: every round runs every case for every peer, in an order rotated per round.
    let mut runs: HashMap<(Peer, u64, u8), Vec<Run>> = HashMap::new();
    for round in 0..rounds {
        for &(count, qos) in &cases {
            for i in 0..all.len() {
                let peer = all[(i + round) % all.len()];
                if let Some(mut cmd) = peers.command(peer, count, qos) {
                    let run = run_measured(&mut cmd, peer.name());
                    runs.entry((peer, count, qos)).or_default().push(run);
                }
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }

    let cell = |peer: Peer, count: u64, qos: u8, f: &dyn Fn(&Run) -> f64, unit: &str| match runs
        .get(&(peer, count, qos))
    {
        Some(r) => format!("{:.1} {unit}", median(r.iter().map(f).collect())),
        None => "-".to_owned(),
    };
    let header = |title: &str| {
        println!("\n{title}\n");
        print!("| messages (256 B) | QoS |");
        for p in &all {
            print!(" {} |", p.name());
        }
        println!();
        println!("|---|---|{}", "---|".repeat(all.len()));
    };
    header(&format!(
        "Messages per second, whole client process (start-up, connect, disconnect), median of {rounds} rounds:"
    ));
    for &(count, qos) in &cases {
        print!("| {count} | {qos} |");
        for &p in &all {
            print!(
                " {} |",
                cell(p, count, qos, &|r| count as f64 / r.wall_s, "msg/s")
            );
        }
        println!();
    }
    header("Client CPU time (user + system of the process) per message, whole process / messages, median:");
    for &(count, qos) in &cases {
        print!("| {count} | {qos} |");
        for &p in &all {
            print!(
                " {} |",
                cell(p, count, qos, &|r| r.cpu_s * 1e6 / count as f64, "us")
            );
        }
        println!();
    }
    println!("\nMarginal CPU per message, (CPU(10,000) - CPU(1,000)) / 9,000 of the medians:");
    for qos in [0u8, 1] {
        let line: Vec<String> = all
            .iter()
            .filter_map(|&p| {
                let cpu = |count| {
                    runs.get(&(p, count, qos))
                        .map(|r| median(r.iter().map(|r| r.cpu_s).collect()))
                };
                Some(format!(
                    "{} {:.2} us",
                    p.name(),
                    (cpu(10_000)? - cpu(1_000)?) * 1e6 / 9_000.0
                ))
            })
            .collect();
        println!("- QoS {qos}: {}", line.join(", "));
    }
    println!("\nInside the process, from before connect to after disconnect (median msg/s); connect time (median ms):");
    for p in [Peer::Tether, Peer::Before] {
        let parsed = |r: &Run| -> (f64, f64) {
            let mut it = r
                .stdout
                .split_whitespace()
                .map(|v| v.parse::<f64>().unwrap());
            (it.next().unwrap(), it.next().unwrap())
        };
        let mut line = Vec::new();
        let mut connects = Vec::new();
        for &(count, qos) in &cases {
            if let Some(r) = runs.get(&(p, count, qos)) {
                line.push(format!(
                    "{count} QoS {qos}: {:.0} msg/s",
                    median(r.iter().map(|r| count as f64 / parsed(r).1).collect())
                ));
                connects.extend(r.iter().map(|r| parsed(r).0));
            }
        }
        if !line.is_empty() {
            println!(
                "- {}: {}; connect {:.2} ms",
                p.name(),
                line.join(", "),
                median(connects)
            );
        }
    }

    // Instructions per message: N and 2N messages under callgrind, the difference over N.
    let n = 1_000u64;
    println!("\nInstructions per message (callgrind, (I(2N) - I(N)) / N, N = {n}; start-up and connect cancel out):\n");
    println!("| QoS | peer | I(N) | I(2N) | per message |");
    println!("|---|---|---|---|---|");
    for qos in [1u8, 0] {
        for &p in &all {
            if p == Peer::PythonSdk {
                continue; // Python under valgrind takes minutes; its CPU time is above.
            }
            let (Some(a), Some(b)) = (peers.command(p, n, qos), peers.command(p, 2 * n, qos))
            else {
                continue;
            };
            let i1 = instructions(a, p.name());
            let i2 = instructions(b, p.name());
            println!(
                "| {qos} | {} | {i1} | {i2} | {:.0} |",
                p.name(),
                (i2 as f64 - i1 as f64) / n as f64
            );
        }
    }

    let mut times: Vec<f64> = (0..20)
        .map(|_| {
            let start = Instant::now();
            let mut c = client(peers.port, &peers.token, &Pki::shared().path("ca.pem"));
            c.connect(Duration::from_secs(10)).unwrap();
            let t = start.elapsed().as_secs_f64() * 1000.0;
            c.disconnect();
            t
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "\nconnect (TCP + TLS 1.2 + CONNACK), in this process, median of 20: {:.2} ms",
        times[10]
    );

    let before = LIVE_BYTES.load(Ordering::Relaxed);
    PEAK_BYTES.store(before, Ordering::Relaxed);
    let mut c = client(peers.port, &peers.token, &Pki::shared().path("ca.pem"));
    c.connect(Duration::from_secs(10)).unwrap();
    let held = LIVE_BYTES.load(Ordering::Relaxed) - before;
    let peak = PEAK_BYTES.load(Ordering::Relaxed) - before;
    println!(
        "heap of one connected client: held {:.1} KiB, peak while connecting {:.1} KiB",
        held as f64 / 1024.0,
        peak as f64 / 1024.0
    );

    let bag = PropertyBag::new();
    let mut rss = Vec::new();
    let mut acked = 0u64;
    PEAK_BYTES.store(LIVE_BYTES.load(Ordering::Relaxed), Ordering::Relaxed);
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
        "100,000 QoS 1 messages (1,000 in flight): RSS every 20,000 (KiB): {rss:?}; heap after: {:.1} KiB; peak heap: {:.1} KiB",
        heap_after as f64 / 1024.0,
        (PEAK_BYTES.load(Ordering::Relaxed) - before) as f64 / 1024.0
    );
    c.disconnect();
    telemetry_ws::report();
}
