//! The `tether` command line against real peers: the local IoT Hub stand-in (`tether hub`,
//! mosquitto with the tether-hub plugin) with mosquitto_sub/_pub playing the service, and a
//! plain TLS mosquitto where the telemetry's bytes must be seen. Help, one-line usage errors,
//! the shared `TETHER_*` environment, JSON outputs (parsed), payloads from `@FILE` and
//! standard input, `listen` and `twin`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::hub::{now, registry, sas_device, Hub, HOST};
use common::{require, target_command, temp_dir, Mosquitto, Pki};
use serde_json::Value;
use tether::auth::sas::{self, SasKey};

const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
const DEVICE: &str = "dev-cli";

/// The CLI with `envs` on top of an environment without any `TETHER_*` variable.
fn tether(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = target_command(env!("CARGO_BIN_EXE_tether"));
    for (name, _) in std::env::vars() {
        if name.starts_with("TETHER_") && name != "TETHER_TEST_RUNNER" {
            cmd.env_remove(name);
        }
    }
    cmd.args(args).envs(envs.iter().copied());
    cmd
}

fn output(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    text(tether(args, envs).stdin(Stdio::null()).output().unwrap())
}

fn text(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts the CLI with `stdin` as its standard input (then closed), output captured.
fn start(args: &[&str], envs: &[(&str, &str)], stdin: &[u8]) -> Child {
    let mut child = tether(args, envs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child
}

fn json(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A child process whose standard output arrives line by line.
struct Lines {
    child: Child,
    rx: Receiver<String>,
}

impl Lines {
    fn spawn(cmd: &mut Command) -> Lines {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { child, rx }
    }

    /// The next line for which `pred` holds, within `timeout`.
    fn wait_for(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) if pred(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        err
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ help and usage errors

/// The subcommands `tether --help` lists (the `help` pseudo-command left out).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_subcommand_answers_help_with_examples_and_exit_codes() {
    let (code, top, err) = output(&["--help"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(top.contains("Exit status: 0 success"), "{top}");
    let mut commands = subcommands(&top);
    for expected in [
        "tls-check",
        "sas-token",
        "derive-key",
        "thumbprint",
        "send",
        "listen",
        "twin",
        "hub",
        "audit",
        "completions",
        "version",
    ] {
        assert!(commands.iter().any(|c| c == expected), "{commands:?}");
    }
    let (_, twin_help, _) = output(&["twin", "--help"], &[]);
    let twin_subs = subcommands(&twin_help);
    assert_eq!(twin_subs, ["get", "patch"]);
    commands.extend(twin_subs.iter().map(|s| format!("twin {s}")));
    let (_, hub_help, _) = output(&["hub", "--help"], &[]);
    let hub_subs = subcommands(&hub_help);
    assert_eq!(hub_subs, ["c2d", "invoke", "twin", "watch"]);
    commands.extend(hub_subs.iter().map(|s| format!("hub {s}")));
    for command in &commands {
        let words: Vec<&str> = command.split(' ').collect();
        let mut args = words.clone();
        args.push("--help");
        let (code, help, err) = output(&args, &[]);
        assert_eq!(code, 0, "{command} --help: {err}");
        assert!(err.is_empty(), "{command} --help: {err}");
        assert!(
            help.contains(&format!("Usage: tether {command}")),
            "{command}: {help}"
        );
        assert!(
            help.contains("Exit status: 0 success, 1 other failure, 2 usage error, 3 TLS"),
            "{command}: {help}"
        );
        if command != "version" {
            assert!(help.contains("Examples:\n  "), "{command}: {help}");
        }
        // `tether help CMD` shows the same page.
        let mut via_help = vec!["help"];
        via_help.extend(&words);
        let (code, same, _) = output(&via_help, &[]);
        assert_eq!(code, 0, "help {command}");
        assert_eq!(same, help, "tether help {command}");
    }
    // Every connecting command documents the environment it reads.
    for command in ["send", "listen", "twin get", "twin patch", "tls-check"] {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let (_, help, _) = output(&args, &[]);
        for var in ["TETHER_CA_FILE", "TETHER_PORT", "TETHER_CERT_FILE"] {
            assert!(help.contains(&format!("[env: {var}")), "{command}: {var}");
        }
        assert!(help.contains("--tls13"), "{command}");
    }
}

#[test]
fn completions_cover_every_subcommand() {
    let (_, top, _) = output(&["--help"], &[]);
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, script, err) = output(&["completions", shell], &[]);
        assert_eq!(code, 0, "{shell}: {err}");
        for command in subcommands(&top) {
            assert!(script.contains(&command), "{shell} lacks {command}");
        }
    }
    // bash accepts the script (syntax check).
    let dir = temp_dir("cli-completions");
    let (_, script, _) = output(&["completions", "bash"], &[]);
    std::fs::write(dir.join("tether.bash"), script).unwrap();
    let status = Command::new("bash")
        .arg("-n")
        .arg(dir.join("tether.bash"))
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn usage_errors_are_one_line_naming_the_cause_and_the_help() {
    let dir = temp_dir("cli-usage");
    let cert = dir.join("c.pem").to_string_lossy().into_owned();
    for (args, envs, cause, help) in [
        (
            vec!["send", "--bogus", "x"],
            vec![],
            "'--bogus'",
            "tether send",
        ),
        (vec!["send"], vec![], "<PAYLOAD>", "tether send"),
        (
            vec!["send", "--qos", "2", "x"],
            vec![],
            "'2'",
            "tether send",
        ),
        (vec!["sned", "x"], vec![], "'sned'", "tether"),
        (
            vec!["twin", "get", "--count", "1"],
            vec![],
            "'--count'",
            "tether twin get",
        ),
        (
            vec![
                "sas-token",
                "--resource",
                "h/devices/a",
                "--key",
                "AAAA",
                "--ttl",
                "5",
                "--expiry",
                "5",
            ],
            vec![],
            "cannot be used with",
            "tether sas-token",
        ),
        (
            vec!["sas-token"],
            vec![],
            "--connection-string",
            "tether sas-token",
        ),
        // TETHER_CERT_FILE without TETHER_KEY_FILE is refused like --cert without --key.
        (
            vec!["tls-check", "localhost"],
            vec![("TETHER_CERT_FILE", cert.as_str())],
            "--key",
            "tether tls-check",
        ),
        (
            vec!["send", "x"],
            vec![("TETHER_PORT", "abc")],
            "'abc' for '--port <N>': invalid digit found in string (from TETHER_PORT)",
            "tether send",
        ),
        (
            vec!["listen", "--port", "0"],
            vec![],
            "'0'",
            "tether listen",
        ),
        (
            vec!["hub", "--registry", "r.json", "--dir", "d"],
            vec![],
            "--port",
            "tether hub",
        ),
    ] {
        let (code, out, err) = output(&args, &envs);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got:\n{err}");
        assert!(err.starts_with("tether: "), "{args:?}: {err}");
        assert!(err.contains(cause), "{args:?} should name {cause}: {err}");
        assert!(err.contains("TETHER_RESULT_INVALID_ARGUMENT"), "{err}");
        assert!(
            err.trim_end().ends_with(&format!("try '{help} --help'")),
            "{args:?}: {err}"
        );
    }
    // No command at all: the overview, as a usage error.
    let (code, _, err) = output(&[], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("Usage: tether <COMMAND>"), "{err}");
}

// ------------------------------------------------------------------ offline commands

#[test]
fn sas_token_lives_an_hour_by_default_from_flags_or_the_environment() {
    let key = SasKey::from_base64(KEY).unwrap();
    let check = |out: &str, resource: &str| {
        let t = sas::verify_for(out.trim_end(), &key, resource, 0).unwrap();
        let lifetime = t.expiry_unix as i64 - now() as i64;
        assert!((3590..=3600).contains(&lifetime), "lifetime {lifetime}");
    };
    let (code, out, err) = output(
        &[
            "sas-token",
            "--resource",
            "h.example/devices/d1",
            "--key",
            KEY,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    check(&out, "h.example/devices/d1");
    let cs = format!("HostName=h.example;DeviceId=d2;SharedAccessKey={KEY}");
    let (code, out, err) = output(&["sas-token"], &[("TETHER_CONNECTION_STRING", &cs)]);
    assert_eq!(code, 0, "{err}");
    check(&out, "h.example/devices/d2");
    // --resource wins over the environment.
    let (code, out, _) = output(
        &[
            "sas-token",
            "--resource",
            "h.example/devices/d3",
            "--key",
            KEY,
        ],
        &[("TETHER_CONNECTION_STRING", &cs)],
    );
    assert_eq!(code, 0);
    check(&out, "h.example/devices/d3");
}

#[test]
fn thumbprint_json_holds_the_text_outputs_values() {
    let pki = Pki::shared();
    let file = pki.path("device.pem");
    let (code, text_out, err) = output(&["thumbprint", &file], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = output(&["thumbprint", &file, "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    let sha1 = v["sha1"].as_str().unwrap();
    let sha256 = v["sha256"].as_str().unwrap();
    assert_eq!(sha1.len(), 40);
    assert_eq!(sha256.len(), 64);
    assert!(sha256
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    assert_eq!(text_out, format!("SHA1 {sha1}\nSHA256 {sha256}\n"));
    assert_eq!(v["file"], file.as_str());
}

// ------------------------------------------------------------------ against the stand-in

/// The stand-in with the device under test; the service side is `tether hub twin|invoke`.
fn hub() -> Hub {
    Hub::start(&registry(&[], &[sas_device(DEVICE, "enabled", KEY, KEY)]))
}

fn device_env(hub: &Hub) -> Vec<(&'static str, String)> {
    vec![
        (
            "TETHER_CONNECTION_STRING",
            format!(
                "HostName={HOST};DeviceId={DEVICE};SharedAccessKey={KEY};GatewayHostName=localhost"
            ),
        ),
        ("TETHER_CA_FILE", hub.ca()),
        ("TETHER_PORT", hub.sas.to_string()),
    ]
}

fn envs<'a>(owned: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    owned.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `tether hub SUBCOMMAND --dir DIR ARGS...` against the running stand-in: the service side
/// (the stand-in answers twin requests and carries C2D, methods and desired patches itself).
fn service(hub: &Hub, args: &[&str]) -> String {
    let dir = hub.dir.to_string_lossy().into_owned();
    let mut all = vec!["hub", args[0], "--dir", &dir];
    all.extend_from_slice(&args[1..]);
    let (code, out, err) = output(&all, &[]);
    assert_eq!(code, 0, "tether {all:?}: {err}");
    out
}

#[test]
fn tls_check_reads_tether_ca_file_port_and_connection_string_and_prints_json() {
    let hub = hub();
    let env = device_env(&hub);
    let port = hub.sas.to_string();
    let ca = hub.ca();
    // HOST from the argument, port and CA from the environment.
    let (code, out, err) = output(
        &["tls-check", "localhost", "--json"],
        &[("TETHER_CA_FILE", &ca), ("TETHER_PORT", &port)],
    );
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["host"], "localhost");
    assert_eq!(v["port"], hub.sas);
    assert_eq!(v["version"], "TLSv1.2");
    assert!(
        v["suite"]
            .as_str()
            .unwrap()
            .starts_with("TLS_ECDHE_RSA_WITH_AES_"),
        "{v}"
    );
    let chain = v["chain"].as_array().unwrap();
    assert!(
        chain[0]["subject"].as_str().unwrap().contains("localhost"),
        "{v}"
    );
    assert!(chain[0]["not_after_unix"].as_i64().unwrap() > now() as i64);
    // Everything from the environment: the host is the connection string's gateway.
    // Empty variables count as unset, as in the library.
    let mut all = envs(&env);
    all.extend([("TETHER_CERT_FILE", ""), ("TETHER_KEY_FILE", "")]);
    let (code, out, err) = output(&["tls-check", "--json", "--tls13"], &all);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["host"], "localhost");
    // The flags win over the environment.
    let (code, out, err) = output(
        &["tls-check", "localhost", "--port", &port, "--ca", &ca],
        &[("TETHER_CA_FILE", "/nonexistent.pem"), ("TETHER_PORT", "1")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("TLSv1.2 TLS_ECDHE_RSA_WITH_AES_"), "{out}");
    // Without the CA the stand-in's certificate is untrusted: exit 3, one line.
    let (code, _, err) = output(&["tls-check", "localhost"], &[("TETHER_PORT", &port)]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("TETHER_RESULT_CERT_UNTRUSTED"), "{err}");
}

#[test]
fn send_prints_json_and_takes_its_payload_from_a_file_or_stdin() {
    // The bytes are checked on a plain TLS mosquitto where a subscriber may read them...
    let pki = Pki::shared();
    let broker = Mosquitto::start(&Mosquitto::tls_listener(
        "{port}",
        pki,
        "allow_anonymous true",
    ));
    require("stdbuf", "coreutils");
    let port = broker.port.to_string();
    let ca = pki.path("ca.pem");
    let sub = Lines::spawn(Command::new("stdbuf").args([
        "-oL",
        "mosquitto_sub",
        "-h",
        "localhost",
        "-p",
        &port,
        "--cafile",
        &ca,
        "-q",
        "1",
        "-v",
        "-t",
        "devices/dev-1/messages/events/#",
        "-t",
        "probe",
    ]));
    let probe = || {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "localhost",
                "-p",
                &port,
                "--cafile",
                &ca,
                "-t",
                "probe",
                "-m",
                "p",
            ])
            .status()
            .unwrap();
        sub.wait_for(|l| l.starts_with("probe"), Duration::from_millis(500))
            .is_some()
    };
    assert!((0..40).any(|_| probe()), "mosquitto_sub did not subscribe");
    let cs = format!("HostName=localhost;DeviceId=dev-1;SharedAccessKey={KEY}");
    let env = [
        ("TETHER_CONNECTION_STRING", cs.as_str()),
        ("TETHER_PORT", port.as_str()),
        ("TETHER_CA_FILE", ca.as_str()),
    ];
    let dir = temp_dir("cli-send");
    let file = dir.join("reading.json");
    std::fs::write(&file, "{\"from\":\"file\",\"t\":21.5}").unwrap();
    let at_file = format!("@{}", file.display());
    let (code, out, err) = output(&["send", "--count", "2", "--json", &at_file], &env);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["sent"], 2);
    assert_eq!(v["acked"], 2);
    assert_eq!(v["qos"], 1);
    assert_eq!(v["tls_version"], "TLSv1.2");
    assert_eq!(v["bytes"], 24);
    for _ in 0..2 {
        assert_eq!(
            sub.wait_for(|l| l.starts_with("devices/"), Duration::from_secs(10))
                .as_deref(),
            Some("devices/dev-1/messages/events/ {\"from\":\"file\",\"t\":21.5}")
        );
    }
    let child = start(&["send", "-"], &env, b"from standard input");
    let (code, out, err) = text(child.wait_with_output().unwrap());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "sent 1 acked 1\n");
    assert_eq!(
        sub.wait_for(|l| l.starts_with("devices/"), Duration::from_secs(10))
            .as_deref(),
        Some("devices/dev-1/messages/events/ from standard input")
    );
    // A missing file is named, and nothing is sent.
    let (code, out, err) = output(&["send", "@/nonexistent/reading.json"], &env);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("/nonexistent/reading.json")
            && err.contains("TETHER_RESULT_FILE_NOT_READABLE"),
        "{err}"
    );
    assert!(sub
        .wait_for(|l| l.starts_with("devices/"), Duration::from_secs(1))
        .is_none());
    drop(broker);

    // ...and the acknowledgements come from the stand-in too.
    let hub = hub();
    let env = device_env(&hub);
    let (code, out, err) = output(&["send", "--json", "--qos", "1", "hello"], &envs(&env));
    assert_eq!(code, 0, "{err}\n{}", hub.log());
    let v = json(&out);
    assert_eq!(
        (v["sent"].as_u64(), v["acked"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn listen_prints_a_desired_patch_and_twin_and_answers_a_method_with_the_chosen_payload() {
    let hub = hub();
    let env = device_env(&hub);
    service(&hub, &["twin", DEVICE, "--desired", r#"{"color":"red"}"#]);
    let dir = temp_dir("cli-listen");
    let answer_file = dir.join("answer.json");
    std::fs::write(&answer_file, "{\"rebooting\":true}").unwrap();
    let at_answer = format!("@{}", answer_file.display());
    let mut listen = Lines::spawn(&mut tether(
        &[
            "listen",
            "--json",
            "--get-twin",
            "--status",
            "201",
            "--response",
            &at_answer,
            "--timeout",
            "60",
        ],
        &envs(&env),
    ));
    let first = listen.wait_for(|_| true, Duration::from_secs(30));
    if first.is_none() {
        panic!("listen did not start: {}\n{}", listen.stderr(), hub.log());
    }
    assert_eq!(
        json(&first.unwrap()),
        serde_json::json!({"event": "listening"})
    );

    // --get-twin: the stand-in answers with the twin it keeps.
    let twin = listen
        .wait_for(|l| l.contains("\"twin\""), Duration::from_secs(20))
        .expect("the twin response");
    let twin = json(&twin);
    assert_eq!(twin["status"], 200);
    assert_eq!(
        twin["payload"],
        json(r#"{"desired":{"color":"red","$version":2},"reported":{"$version":1}}"#)
    );

    // The device subscribed before asking for the twin, so patches and methods reach it now.
    service(&hub, &["twin", DEVICE, "--desired", r#"{"color":"blue"}"#]);
    let desired = listen
        .wait_for(|l| l.contains("\"desired\""), Duration::from_secs(20))
        .expect("the desired patch");
    let desired = json(&desired);
    assert_eq!(desired["version"], 3);
    assert_eq!(desired["payload"]["color"], "blue");

    let answered = service(
        &hub,
        &[
            "invoke",
            DEVICE,
            "reboot",
            "--payload",
            r#"{"delay":5}"#,
            "--json",
        ],
    );
    assert_eq!(
        json(&answered),
        serde_json::json!({"status": 201, "payload": {"rebooting": true}})
    );
    let method = listen
        .wait_for(|l| l.contains("\"method\""), Duration::from_secs(20))
        .expect("the method call");
    let method = json(&method);
    assert_eq!(method["name"], "reboot");
    assert!(method["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(method["payload"]["delay"], 5);
    assert_eq!(method["status"], 201);
}

#[test]
fn listen_text_lines_for_a_desired_patch_and_stops_after_count() {
    let hub = hub();
    let env = device_env(&hub);
    let mut listen = Lines::spawn(&mut tether(
        &["listen", "--count", "1", "--timeout", "60"],
        &envs(&env),
    ));
    if listen
        .wait_for(|l| l == "listening", Duration::from_secs(30))
        .is_none()
    {
        panic!("listen did not start: {}\n{}", listen.stderr(), hub.log());
    }
    // Until the subscription is in place the patch is only stored: repeat it until seen.
    let mut seen = None;
    for _ in 0..20 {
        service(&hub, &["twin", DEVICE, "--desired", r#"{"on":true}"#]);
        seen = listen.wait_for(|l| l.starts_with("desired"), Duration::from_secs(1));
        if seen.is_some() {
            break;
        }
    }
    let seen = seen.expect("a desired patch");
    let (version, payload) = seen
        .strip_prefix("desired ")
        .and_then(|r| r.split_once(' '))
        .expect("desired VERSION PAYLOAD");
    assert_eq!(json(payload)["on"], true, "{seen}");
    assert_eq!(json(payload)["$version"].to_string(), version, "{seen}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = listen.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "listen did not stop after --count 1"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn twin_get_prints_the_document_and_patch_reads_stdin_and_prints_json() {
    let hub = hub();
    let env = device_env(&hub);
    service(&hub, &["twin", DEVICE, "--desired", r#"{"interval":30}"#]);
    let doc = r#"{"desired":{"interval":30,"$version":2},"reported":{"$version":1}}"#;

    let get = Lines::spawn(&mut tether(&["twin", "get"], &envs(&env)));
    let printed = get
        .wait_for(|_| true, Duration::from_secs(20))
        .expect("the twin document");
    assert_eq!(json(&printed), json(doc));

    let patch = start(
        &["twin", "patch", "-", "--json"],
        &envs(&env),
        br#"{"firmware":"1.2.3"}"#,
    );
    let (code, out, err) = text(patch.wait_with_output().unwrap());
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["status"], 204);
    assert_eq!(v["version"], 2);
    let twin = json(&service(&hub, &["twin", DEVICE]));
    assert_eq!(twin["properties"]["reported"]["firmware"], "1.2.3");

    // A refusal by the hub (a reported patch must be a JSON object) fails the command,
    // naming the status.
    let (code, _, err) = output(&["twin", "patch", "[1]", "--timeout", "30"], &envs(&env));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("status 400"), "{err}");

    // A patch that is not JSON never leaves the command line.
    let (code, _, err) = output(&["twin", "patch", "not json"], &envs(&env));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not JSON"), "{err}");
}
