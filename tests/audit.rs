//! `tether audit` against real old clients, started by the tests: openssl s_client limited
//! to TLS 1.0, TLS 1.1, RSA key exchange, ECDHE-RSA CBC-SHA256, without SNI and TLS 1.3
//! only; curl; Python's ssl; mosquitto_pub capped at TLS 1.1 through OPENSSL_CONF. Each gets
//! its verdict and reason live (`--listen`) and again from a tcpdump capture of the same
//! connections (`--pcap`). Also: the MQTT CONNECT report after a full handshake, bad input
//! over the wire and bad capture files, and the C function from a C program.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::{compile_c, free_port, require, root, run, temp_dir, tether_cli, wait_for_port, Pki};

/// A running `tether audit --listen`, its stdout lines on a channel.
struct Listener {
    child: Child,
    lines: Receiver<String>,
    port: u16,
}

impl Listener {
    fn start(port: u16, extra: &[&str]) -> Listener {
        let mut child = common::target_command(env!("CARGO_BIN_EXE_tether"))
            .args(["audit", "--listen", &format!("127.0.0.1:{port}"), "--json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("tether audit starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "tether audit did not listen on {port}"
        );
        Listener { child, lines, port }
    }

    fn next(&self, what: &str) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(40))
            .unwrap_or_else(|_| panic!("no audit line for {what} within 40 s"))
    }

    fn wait(mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "tether audit did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One old client and what the audit must say about it.
struct Case {
    name: &'static str,
    command: Command,
    verdict: &'static str,
    /// The finding id that must be there, and a phrase of its problem text.
    finding: Option<(&'static str, &'static str)>,
}

fn s_client(port: u16, args: &[&str]) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args);
    cmd
}

/// An OpenSSL configuration that caps clients at TLS 1.1 (mosquitto_pub's `--tls-version` is
/// only a minimum) and allows the old suites that need.
fn tls11_openssl_conf(dir: &Path) -> PathBuf {
    let path = dir.join("openssl-tls11.cnf");
    std::fs::write(
        &path,
        "openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_sect\n[ssl_sect]\n\
         system_default = system_default_sect\n[system_default_sect]\n\
         MinProtocol = TLSv1\nMaxProtocol = TLSv1.1\nCipherString = DEFAULT@SECLEVEL=0\n",
    )
    .unwrap();
    path
}

fn cases(port: u16, dir: &Path) -> Vec<Case> {
    let pki = Pki::shared();
    let tls11_conf = tls11_openssl_conf(dir);
    let mut curl = Command::new("curl");
    curl.args(["-sk", "--max-time", "10", "--resolve"])
        .arg(format!("curl.example:{port}:127.0.0.1"))
        .arg(format!("https://curl.example:{port}/"));
    let mut python = Command::new("python3");
    python.arg("-c").arg(format!(
        "import socket, ssl\n\
         ctx = ssl.create_default_context()\n\
         ctx.check_hostname = False\n\
         ctx.verify_mode = ssl.CERT_NONE\n\
         s = socket.create_connection(('127.0.0.1', {port}), timeout=10)\n\
         try:\n    ctx.wrap_socket(s, server_hostname='python.example')\n\
         except Exception as e:\n    print('refused:', e)\n"
    ));
    let mut mosquitto = Command::new("mosquitto_pub");
    mosquitto
        .env("OPENSSL_CONF", &tls11_conf)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--tls-version",
            "tlsv1.1",
        ])
        .args([
            "--cafile",
            &pki.path("ca.pem"),
            "-i",
            "old-device",
            "-t",
            "t",
            "-m",
            "m",
        ]);
    vec![
        Case {
            name: "s_client -tls1",
            command: s_client(port, &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
            verdict: "will-fail",
            finding: Some((
                "no-tls12",
                "offers TLS 1.0 at most; IoT Hub requires TLS 1.2",
            )),
        },
        Case {
            name: "s_client -tls1_1",
            command: s_client(port, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
            verdict: "will-fail",
            finding: Some((
                "no-tls12",
                "offers TLS 1.1 at most; IoT Hub requires TLS 1.2",
            )),
        },
        Case {
            name: "s_client -cipher AES128-SHA",
            command: s_client(port, &["-tls1_2", "-cipher", "AES128-SHA"]),
            verdict: "will-fail",
            finding: Some((
                "no-hub-suite",
                "offers RSA key exchange only (TLS_RSA_WITH_AES_128_CBC_SHA (0x002f))",
            )),
        },
        Case {
            name: "s_client ECDHE-RSA-AES128-SHA256",
            command: s_client(
                port,
                &[
                    "-tls1_2",
                    "-cipher",
                    "ECDHE-RSA-AES128-SHA256",
                    "-servername",
                    "cbc.example",
                ],
            ),
            verdict: "ok-with-warnings",
            finding: Some((
                "cbc-only",
                "offers only the hub's CBC suites (TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256 (0xc027))",
            )),
        },
        Case {
            name: "s_client -noservername",
            command: s_client(port, &["-noservername"]),
            verdict: "ok-with-warnings",
            finding: Some(("no-sni", "sends no server name (SNI)")),
        },
        Case {
            name: "s_client -tls1_3",
            command: s_client(port, &["-tls1_3", "-servername", "tls13.example"]),
            verdict: "will-fail",
            finding: Some(("no-tls12", "offers TLS 1.3 only")),
        },
        Case {
            name: "curl",
            command: curl,
            verdict: "ok",
            finding: None,
        },
        Case {
            name: "python ssl",
            command: python,
            verdict: "ok",
            finding: None,
        },
        Case {
            name: "mosquitto_pub capped at TLS 1.1",
            command: mosquitto,
            verdict: "will-fail",
            finding: Some((
                "no-tls12",
                "offers TLS 1.1 at most; IoT Hub requires TLS 1.2",
            )),
        },
    ]
}

fn check(case: &Case, line: &str, source: &str) {
    assert!(
        line.contains(&format!("\"audit\":{{\"verdict\":\"{}\"", case.verdict)),
        "{} ({source}): expected verdict {}, got {line}",
        case.name,
        case.verdict
    );
    match case.finding {
        Some((id, problem)) => {
            let at = line
                .find(&format!("\"id\":\"{id}\",\"problem\":\""))
                .unwrap_or_else(|| panic!("{} ({source}): no finding {id} in {line}", case.name));
            assert!(
                line[at..].contains(problem),
                "{} ({source}): finding {id} does not say \"{problem}\": {line}",
                case.name
            );
        }
        None => assert!(
            line.contains("\"findings\":[]"),
            "{} ({source}): expected no findings: {line}",
            case.name
        ),
    }
}

/// tcpdump on the loopback interface, stopped with SIGINT.
struct Tcpdump {
    child: Child,
    file: PathBuf,
}

impl Tcpdump {
    fn start(port: u16, file: PathBuf) -> Tcpdump {
        require("tcpdump", "tcpdump");
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "-U", "--immediate-mode", "-n", "-w"])
            .arg(&file)
            .args(["tcp", "port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(
            line.contains("listening on lo"),
            "tcpdump did not start (it needs root or CAP_NET_RAW): {line}"
        );
        std::thread::spawn(move || for _ in stderr.lines() {});
        Tcpdump { child, file }
    }

    fn stop(mut self) -> PathBuf {
        std::thread::sleep(Duration::from_secs(1)); // let the last packets reach the file
        run(Command::new("kill").args(["-INT", &self.child.id().to_string()]));
        let status = self.child.wait().unwrap();
        assert!(status.success(), "tcpdump ended with {status}");
        self.file.clone()
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_client(case: &mut Case) -> Child {
    case.command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", case.name))
}

#[test]
fn old_clients_get_their_verdict_live_and_from_a_tcpdump_capture() {
    for (tool, package) in [
        ("openssl", "openssl"),
        ("curl", "curl"),
        ("python3", "python3"),
        ("mosquitto_pub", "mosquitto-clients"),
    ] {
        require(tool, package);
    }
    let dir = temp_dir("audit-clients");
    let port = free_port();
    let tcpdump = Tcpdump::start(port, dir.join("clients.pcap"));
    let mut cases = cases(port, &dir);
    let listener = Listener::start(
        port,
        &["--count", &cases.len().to_string(), "--timeout", "300"],
    );
    for case in &mut cases {
        let mut client = run_client(case);
        let line = listener.next(case.name);
        let _ = client.kill();
        let _ = client.wait();
        check(case, &line, "live");
    }
    assert_eq!(
        listener.wait(),
        3,
        "a device that will fail makes the exit status 3"
    );
    let capture = tcpdump.stop();

    let (code, stdout, stderr) =
        tether_cli(&["audit", "--pcap", capture.to_str().unwrap(), "--json"]);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        cases.len(),
        "one report per client in the capture: {:?}",
        lines
            .iter()
            .map(|l| &l[..l.find(",\"max_version").unwrap_or(l.len())])
            .collect::<Vec<_>>()
    );
    for (case, line) in cases.iter().zip(&lines) {
        assert!(
            line.contains(&format!(",\"server\":\"127.0.0.1:{port}\"")),
            "{line}"
        );
        check(case, line, "capture");
    }
    // The text form names each device and its reasons too.
    let (_, text, _) = tether_cli(&["audit", "--pcap", capture.to_str().unwrap()]);
    assert!(
        text.contains(&format!(" -> 127.0.0.1:{port} will-fail (up to TLSv1.0")),
        "{text}"
    );
    assert!(
        text.contains(
            "  FAIL offers TLS 1.1 at most; IoT Hub requires TLS 1.2\n       fix: enable TLS 1.2"
        ),
        "{text}"
    );
}

#[test]
fn with_a_certificate_the_listener_reports_the_mqtt_connect_without_the_signature() {
    require("mosquitto_pub", "mosquitto-clients");
    let pki = Pki::shared();
    let listener = Listener::start(
        free_port(),
        &[
            "--cert",
            &pki.path("server.pem"),
            "--key",
            &pki.path("server.key"),
            "--count",
            "1",
        ],
    );
    let key = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
    let (code, token, err) = tether_cli(&[
        "sas-token",
        "--resource",
        "localhost/devices/dev1",
        "--key",
        key,
        "--ttl",
        "3600",
    ]);
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_owned();
    let sig = token
        .split('&')
        .find_map(|p| p.strip_prefix("sig=").or_else(|| p.split("sig=").nth(1)))
        .unwrap()
        .to_owned();
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &listener.port.to_string()])
        .args(["--cafile", &pki.path("ca.pem"), "-i", "dev1"])
        .args(["-u", "localhost/dev1/?api-version=2021-04-12", "-P", &token])
        .args([
            "-t",
            "devices/dev1/messages/events/",
            "-m",
            "hello",
            "-q",
            "0",
        ])
        .output()
        .unwrap();
    let line = listener.next("mosquitto_pub with a SAS token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(line.contains("\"audit\":{\"verdict\":\"ok\""), "{line}");
    assert!(line.contains("\"connect\":{\"client_id\":\"dev1\",\"username\":\"localhost/dev1/?api-version=2021-04-12\",\"username_shape_ok\":true,\"api_version\":\"2021-04-12\",\"password\":\"sas\",\"sas_resource\":\"localhost/devices/dev1\""), "{line}");
    let left: i64 = line
        .split("\"sas_expires_in\":")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|t| t.parse().ok())
        .unwrap();
    assert!(
        (3300..=3600).contains(&left),
        "expiry against the audit clock: {left}"
    );
    assert!(
        !line.contains(&sig) && !line.contains("sig="),
        "the signature leaked: {line}"
    );
    assert_eq!(listener.wait(), 0);
}

#[test]
fn bad_hellos_over_the_wire_are_named_and_the_listener_goes_on() {
    let inputs: [(&[u8], &str); 4] = [
        (
            &[0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0, 0, 0, 16],
            "\"error\":\"sslv2\"",
        ),
        (b"GET / HTTP/1.1\r\n\r\n", "\"error\":\"not-tls\""),
        (
            &[22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3],
            "\"error\":\"truncated\"",
        ),
        (
            &[22, 3, 1, 0xff, 0xff, 1, 0, 0, 0],
            "\"error\":\"oversized\"",
        ),
    ];
    let listener = Listener::start(free_port(), &["--count", "4", "--timeout", "120"]);
    for (bytes, want) in inputs {
        let mut s = TcpStream::connect(("127.0.0.1", listener.port)).unwrap();
        s.write_all(bytes).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let line = listener.next(want);
        assert!(line.contains(want), "{line}");
    }
    assert_eq!(listener.wait(), 3);
}

#[test]
fn bad_capture_files_are_named_errors() {
    let dir = temp_dir("audit-bad-capture");
    let not_capture = root().join("Cargo.toml");
    let (code, _, err) = tether_cli(&["audit", "--pcap", not_capture.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a pcap or pcapng capture"), "{err}");
    // A pcap header, then a record announcing 100 bytes of which 10 are there.
    let mut pcap = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    pcap.extend_from_slice(&[0xff, 0xff, 0, 0, 1, 0, 0, 0]);
    pcap.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 100, 0, 0, 0]);
    pcap.extend_from_slice(&[0u8; 10]);
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &pcap).unwrap();
    let (code, _, err) = tether_cli(&["audit", "--pcap", cut.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("cut.pcap is truncated"), "{err}");
    let (code, _, err) = tether_cli(&["audit", "--pcap", "/nonexistent.pcap"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent.pcap"), "{err}");
    let (code, _, err) = tether_cli(&["audit", "--json"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn c_program_audits_openssls_own_hellos() {
    let out = compile_c(
        "audit_checks",
        "tests/c/audit_checks.c",
        &[],
        &["-lssl", "-lcrypto"],
    );
    let result = Command::new(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}");
    assert!(stdout.contains("verdict tls12-gcm: ok\n"), "{stdout}");
    assert!(stdout.contains("verdict tls11: will-fail\n"), "{stdout}");
    assert!(
        stdout.contains("verdict cbc-sha256: ok-with-warnings\n"),
        "{stdout}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn the_hub_stand_in_logs_each_devices_verdict_and_still_relays_it() {
    require("mosquitto", "mosquitto");
    require("mosquitto_pub", "mosquitto-clients");
    let plugin = Path::new(env!("CARGO_BIN_EXE_tether"))
        .parent()
        .unwrap()
        .join("libtether_hub.so");
    assert!(
        plugin.is_file(),
        "{} is missing: build it with `cargo build -p tether-hub` (.ci/test does)",
        plugin.display()
    );
    let root_dir = temp_dir("audit-hub");
    let host = "audit-hub.azure-devices.net";
    let key = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
    let registry = root_dir.join("registry.json");
    std::fs::write(
        &registry,
        format!(
            r#"{{"hostName": "{host}", "certificateAuthorities": [], "devices": [{{"deviceId": "d1",
            "status": "enabled", "authentication": {{"type": "sas", "symmetricKey":
            {{"primaryKey": "{key}", "secondaryKey": ""}}}}}}]}}"#
        ),
    )
    .unwrap();
    let (port, x509) = (free_port(), free_port());
    let log = root_dir.join("hub.log");
    let dir = root_dir.join("hub");
    let mut hub = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["hub", "--registry"])
        .arg(&registry)
        .args([
            "--port",
            &port.to_string(),
            "--x509-port",
            &x509.to_string(),
            "--dir",
        ])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(hub.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        ready
            .trim()
            .starts_with(&format!("ready sas={port} x509={x509} service=")),
        "{ready}: {}",
        read_log()
    );
    let (code, token, _) = tether_cli(&[
        "sas-token",
        "--resource",
        &format!("{host}/devices/d1"),
        "--key",
        key,
        "--ttl",
        "600",
    ]);
    assert_eq!(code, 0);
    let tls11_conf = tls11_openssl_conf(&root_dir);
    let publish = |openssl_conf: Option<&Path>| {
        let mut cmd = Command::new("mosquitto_pub");
        if let Some(conf) = openssl_conf {
            cmd.env("OPENSSL_CONF", conf)
                .args(["--tls-version", "tlsv1.1"]);
        }
        cmd.args(["-h", "localhost", "-p", &port.to_string(), "--cafile"])
            .arg(dir.join("ca.pem"))
            .args([
                "-i",
                "d1",
                "-u",
                &format!("{host}/d1/?api-version=2021-04-12"),
            ])
            .args([
                "-P",
                token.trim(),
                "-t",
                "devices/d1/messages/events/",
                "-m",
                "x",
            ])
            .output()
            .unwrap()
    };
    let old = publish(Some(&tls11_conf));
    let modern = publish(None);
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !read_log().contains(needle) {
            std::thread::sleep(Duration::from_millis(50));
        }
        read_log()
    };
    let text = wait_for(" sni=localhost ok");
    let _ = Command::new("kill")
        .args(["-TERM", &hub.id().to_string()])
        .status();
    let _ = hub.wait();
    assert!(!old.status.success(), "the hub stand-in accepted TLS 1.1");
    assert!(
        modern.status.success(),
        "the relay broke a good device: {}\n{text}",
        String::from_utf8_lossy(&modern.stderr)
    );
    let audits: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("audit 127.0.0.1:"))
        .collect();
    assert_eq!(audits.len(), 2, "{text}");
    assert!(
        audits[0].contains(" sni=localhost will-fail: offers TLS 1.1 at most; IoT Hub requires TLS 1.2 (fix: enable TLS 1.2"),
        "{text}"
    );
    assert!(audits[1].ends_with(" sni=localhost ok"), "{text}");
}

#[test]
fn a_hello_split_across_tcp_segments_is_reassembled_live_and_from_the_capture() {
    require("python3", "python3");
    let dir = temp_dir("audit-split");
    let port = free_port();
    let tcpdump = Tcpdump::start(port, dir.join("split.pcap"));
    let listener = Listener::start(port, &["--count", "1", "--timeout", "120"]);
    // Python's ssl writes its hello into a memory BIO; it goes out in three TCP segments.
    let script = format!(
        "import socket, ssl, time\n\
         ctx = ssl.create_default_context()\n\
         ctx.check_hostname = False\n\
         ctx.verify_mode = ssl.CERT_NONE\n\
         inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()\n\
         obj = ctx.wrap_bio(inc, out, server_hostname='split.example')\n\
         try:\n    obj.do_handshake()\nexcept ssl.SSLWantReadError:\n    pass\n\
         hello = out.read()\n\
         s = socket.create_connection(('127.0.0.1', {port}))\n\
         s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n\
         for part in (hello[:3], hello[3:60], hello[60:]):\n    s.sendall(part)\n    time.sleep(0.3)\n\
         s.recv(100)\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live = listener.next("the split hello");
    assert!(live.contains("\"audit\":{\"verdict\":\"ok\""), "{live}");
    assert!(live.contains("\"sni\":\"split.example\""), "{live}");
    assert_eq!(listener.wait(), 0);
    let capture = tcpdump.stop();
    // The capture holds the hello in three segments (plus the handshake and the alert).
    let (code, stdout, stderr) =
        tether_cli(&["audit", "--pcap", capture.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("\"audit\":{\"verdict\":\"ok\""), "{stdout}");
    assert!(stdout.contains("\"sni\":\"split.example\""), "{stdout}");
    let segments = Command::new("tcpdump")
        .args(["-r"])
        .arg(&capture)
        .args([
            "-n",
            "tcp",
            "dst",
            "port",
            &port.to_string(),
            "and",
            "tcp[tcpflags] & tcp-push != 0",
        ])
        .output()
        .unwrap();
    let pushed = String::from_utf8_lossy(&segments.stdout).lines().count();
    assert!(
        pushed >= 3,
        "expected the hello in 3 segments:\n{}",
        String::from_utf8_lossy(&segments.stdout)
    );
}
