//! `tether audit`: will a device survive IoT Hub's TLS enforcement?
//!
//! `--listen [HOST:]PORT`: devices (or a test bench) are pointed at this listener; each
//! ClientHello is audited and reported (one line, or one JSON object with `--json`). With
//! `--cert/--key` the handshake is completed like the hub would and the device's MQTT
//! CONNECT is reported too. `--pcap FILE`: the same report from a tcpdump/Wireshark capture.
//!
//! Exit status: 0 when every device audited would connect (ok or ok-with-warnings), 3 when
//! one would fail or sent an unreadable hello, 2 for usage errors, 1 for an unreadable
//! capture, 6 when the listener cannot be opened.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tether::audit::server::{hub_server_config, serve, Session};
use tether::audit::{self, error_json, json_string, pcap, HelloError, Report, Verdict};

/// Will a device survive IoT Hub's TLS enforcement?
///
/// Audits each device's ClientHello (devices pointed at the listener, or a tcpdump
/// capture) against IoT Hub's TLS policy: verdict ok, ok-with-warnings or will-fail, each
/// reason with its fix. See docs/audit.md.
#[derive(clap::Args, Debug)]
#[command(after_help = after_help!(
"  tether audit --listen 8883 --count 10       # point devices here; one line per device
  tether audit --listen 0.0.0.0:8883 --cert server.pem --key server.key --json
  tcpdump -i eth0 -w fleet.pcap port 8883 && tether audit --pcap fleet.pcap

For audit, 0 means every device audited would connect (ok or ok-with-warnings), 3 that one
would fail or sent an unreadable hello, 1 an unreadable capture, 6 a listener that cannot
be opened."
))]
pub struct AuditArgs {
    /// Listen for devices on [HOST:]PORT (HOST defaults to 0.0.0.0).
    #[arg(long, value_name = "[HOST:]PORT")]
    pub listen: Option<String>,
    /// Read ClientHellos from a pcap or pcapng capture.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// One JSON object per device instead of text.
    #[arg(long)]
    pub json: bool,
    /// Server certificate chain (PEM): complete the handshake like the hub and report the
    /// device's MQTT CONNECT.
    #[arg(long, value_name = "FILE", requires = "key", requires = "listen")]
    pub cert: Option<PathBuf>,
    /// The server certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Stop after N devices (listener). Connections that send nothing (port probes) are
    /// neither reported nor counted.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after SECONDS (listener); also the per-device read timeout cap.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
}

/// Runs the audit; returns the exit status.
pub fn run(args: AuditArgs) -> i32 {
    if let Some(path) = &args.pcap {
        return run_pcap(path, args.json);
    }
    match run_listen(&args) {
        Ok(status) => status,
        Err((status, message)) => {
            eprintln!("tether audit: {message}");
            status
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One device's report, as text or JSON.
fn render(
    json: bool,
    peer: &str,
    server: Option<&str>,
    report: &Result<Report, HelloError>,
    connect: Option<&tether::Result<tether::audit::connect::ConnectFacts>>,
) -> String {
    if json {
        let audit = match report {
            Ok(r) => r.to_json(),
            Err(e) => error_json(e),
        };
        let mut out = format!("{{\"peer\":{}", json_string(peer));
        if let Some(s) = server {
            out.push_str(&format!(",\"server\":{}", json_string(s)));
        }
        out.push_str(&format!(",\"audit\":{audit}"));
        match connect {
            Some(Ok(c)) => out.push_str(&format!(",\"connect\":{}", c.to_json())),
            Some(Err(e)) => {
                out.push_str(&format!(",\"connect_error\":{}", json_string(e.message())))
            }
            None => {}
        }
        out.push_str("}\n");
        out
    } else {
        let mut out = String::from(peer);
        if let Some(s) = server {
            out.push_str(&format!(" -> {s}"));
        }
        match report {
            Ok(r) => out.push_str(&format!(" {}", r.to_text())),
            Err(e) => out.push_str(&format!(
                " {}: {e}\n",
                if matches!(e, HelloError::Sslv2 { .. }) {
                    "will-fail"
                } else {
                    "unreadable"
                }
            )),
        }
        match connect {
            Some(Ok(c)) => out.push_str(&format!("  {}\n", c.to_text())),
            Some(Err(e)) => out.push_str(&format!("  mqtt: {}\n", e.message())),
            None => {}
        }
        out
    }
}

fn fails(report: &Result<Report, HelloError>) -> bool {
    !matches!(report, Ok(r) if r.verdict != Verdict::WillFail)
}

fn run_pcap(path: &std::path::Path, json: bool) -> i32 {
    let name = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("tether audit: cannot read {name}: {e}");
            return 1;
        }
    };
    let hellos = match pcap::hellos_in_capture(&bytes, &name) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("tether audit: {}", e.message());
            return 1;
        }
    };
    if hellos.is_empty() {
        eprintln!("tether audit: {name} holds no TLS ClientHello");
    }
    let mut status = 0;
    let mut out = std::io::stdout().lock();
    for h in &hellos {
        let report = h.hello.clone().map(|hello| audit::audit(&hello));
        if fails(&report) {
            status = 3;
        }
        let _ = out.write_all(
            render(
                json,
                &h.client.to_string(),
                Some(&h.server.to_string()),
                &report,
                None,
            )
            .as_bytes(),
        );
    }
    status
}

fn listen_address(spec: &str) -> Result<SocketAddr, (i32, String)> {
    let spec = if spec.contains(':') && !spec.starts_with('[') && spec.matches(':').count() == 1
        || spec.starts_with('[')
    {
        spec.to_owned()
    } else if spec.parse::<u16>().is_ok() {
        format!("0.0.0.0:{spec}")
    } else {
        spec.to_owned()
    };
    use std::net::ToSocketAddrs;
    spec.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or((2, format!("--listen {spec}: expected [HOST:]PORT")))
}

fn run_listen(args: &AuditArgs) -> Result<i32, (i32, String)> {
    let spec = args.listen.as_deref().unwrap_or_default();
    let addr = listen_address(spec)?;
    let config = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| (1, format!("cannot read {}: {e}", p.display())))
            };
            let key_pem = zeroize::Zeroizing::new(read(key)?);
            Some(
                hub_server_config(&read(cert)?, &key_pem)
                    .map_err(|e| (1, e.message().to_owned()))?,
            )
        }
        _ => None,
    };
    let listener =
        TcpListener::bind(addr).map_err(|e| (6, format!("cannot listen on {addr}: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| (6, format!("listener: {e}")))?;
    let local = listener.local_addr().map_err(|e| (6, e.to_string()))?;
    eprintln!("tether audit: listening on {local}");
    let deadline = args
        .timeout
        .filter(|t| t.is_finite() && *t > 0.0)
        .map(|t| Instant::now() + Duration::from_secs_f64(t));
    let per_device = Duration::from_secs(10);
    let seen = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let output = Arc::new(Mutex::new(()));
    let mut workers = Vec::new();
    loop {
        if args.count.is_some_and(|n| seen.load(Ordering::SeqCst) >= n) {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                let (config, json) = (config.clone(), args.json);
                let (seen, failed, output) = (seen.clone(), failed.clone(), output.clone());
                workers.push(std::thread::spawn(move || {
                    let Session { report, connect } = serve(stream, config, per_device, now_unix());
                    if report == Err(HelloError::Empty) {
                        return; // a port probe or health check, not a device
                    }
                    if fails(&report)
                        || matches!(connect, Some(Err(_))) && config_completes(&report)
                    {
                        failed.store(true, Ordering::SeqCst);
                    }
                    let text = render(json, &peer.to_string(), None, &report, connect.as_ref());
                    let _guard = output.lock();
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                    seen.fetch_add(1, Ordering::SeqCst);
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err((6, format!("accept: {e}"))),
        }
    }
    for w in workers {
        let _ = w.join();
    }
    Ok(if failed.load(Ordering::SeqCst) { 3 } else { 0 })
}

/// Whether a failed handshake after this audit counts as a failure: only when the audit says
/// the device should have connected with a GCM suite (rustls has no CBC suites).
fn config_completes(report: &Result<Report, HelloError>) -> bool {
    matches!(report, Ok(r) if r.hello.cipher_suites.iter().any(|s| audit::HUB_PREFERRED_SUITES.contains(s)))
}
