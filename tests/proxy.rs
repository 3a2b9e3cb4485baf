//! HTTP CONNECT proxies against a real proxy (tinyproxy): the blocking client and the CLI
//! reach the IoT Hub stand-in (`tether hub`) through it, with and without Basic
//! authentication; its refusals (407, 403, an unreachable hub) are named with the proxy's
//! status line (DPS through it: tests/provisioning.rs); the conventional environment (`HTTPS_PROXY`,
//! `NO_PROXY`, `TETHER_PROXY`) is honoured.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::hub::{registry, sas_device, Hub, HOST};
use common::proxy::Tinyproxy;
use common::{free_port, target_command};
use tether::auth::connection_string::ConnectionString;
use tether::client::{Client, ClientOptions};
use tether::mqtt::properties::PropertyBag;
use tether::session::{Disconnect, Event, SessionConfig};
use tether::transport::proxy::Proxy;
use tether::transport::Transport;
use tether::Code;

const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
const DEVICE: &str = "dev-proxy";
const USER: (&str, &str) = ("alice", "pr0xy-s3cret");

fn hub() -> Hub {
    Hub::start(&registry(&[], &[sas_device(DEVICE, "enabled", KEY, KEY)]))
}

fn client(hub: &Hub, options: ClientOptions) -> Client {
    let cs = ConnectionString::parse(&format!(
        "HostName={HOST};DeviceId={DEVICE};SharedAccessKey={KEY};GatewayHostName=localhost"
    ))
    .unwrap();
    let mut policy = tether::policy::TlsPolicy::new();
    policy.add_ca_file(&hub.ca()).unwrap();
    let config =
        SessionConfig::from_connection_string(&cs, policy.build().unwrap(), false).unwrap();
    Client::new(config, options).unwrap()
}

fn via(port: u16, proxy: &str) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(10),
        retry_min_ms: 100,
        retry_jitter_ms: 100,
        ..ClientOptions::route(
            Transport::Mqtt,
            Some(port),
            None,
            Some(Proxy::parse(proxy).unwrap()),
        )
    }
}

/// Connects, sends one QoS 1 message and waits for the hub's acknowledgement.
fn send_one(c: &mut Client, hub: &Hub) {
    c.connect(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:?}\n{}", hub.log()));
    let id = c
        .send_telemetry(b"through the proxy", &PropertyBag::new(), 1)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no PUBACK\n{}", hub.log());
        match c.poll(Duration::from_millis(200)).unwrap() {
            Some(Event::TelemetryAcked { id: acked }) if acked == id => break,
            Some(Event::Disconnected(why)) => panic!("{why:?}\n{}", hub.log()),
            _ => {}
        }
    }
}

#[test]
fn client_reaches_the_hub_through_a_proxy_with_and_without_basic_auth() {
    let hub = hub();
    // An open proxy.
    let open = Tinyproxy::start(&[hub.sas], None);
    let mut c = client(&hub, via(hub.sas, &open.url(None)));
    send_one(&mut c, &hub);
    c.disconnect();
    assert_eq!(
        open.connects(),
        [format!("localhost:{}", hub.sas)],
        "{}",
        open.log()
    );

    // A proxy that wants credentials: given in the URL, sent as Basic.
    let guarded = Tinyproxy::start(&[hub.sas], Some(USER));
    let mut c = client(&hub, via(hub.sas, &guarded.url(Some(USER))));
    send_one(&mut c, &hub);
    c.disconnect();
    assert_eq!(guarded.connects().len(), 1, "{}", guarded.log());

    // Without them (407), or with wrong ones (tinyproxy answers 401): named, not retried,
    // the password nowhere.
    for (url, line) in [
        (
            guarded.url(None),
            "\"HTTP/1.0 407 Proxy Authentication Required\"",
        ),
        (
            guarded.url(Some(("alice", "wrong-pass"))),
            "\"HTTP/1.0 401 Unauthorized\"",
        ),
    ] {
        let mut c = client(&hub, via(hub.sas, &url));
        let e = c.connect(Duration::from_secs(20)).unwrap_err();
        assert_eq!(e.code(), Code::ProxyAuthRequired, "{e:?}");
        assert!(e.message().contains(line), "{e:?}");
        assert!(
            e.message().contains(&format!("127.0.0.1:{}", guarded.port)),
            "the proxy is named: {e:?}"
        );
        assert!(!e.message().contains("wrong-pass") && !format!("{c:?}").contains("wrong-pass"));
    }
}

#[test]
fn proxy_refusals_are_named_with_the_status_line() {
    let hub = hub();
    // CONNECT allowed to another port only: 403, fatal.
    let strict = Tinyproxy::start(&[hub.sas + 1000], None);
    let mut c = client(&hub, via(hub.sas, &strict.url(None)));
    let e = c.connect(Duration::from_secs(20)).unwrap_err();
    assert_eq!(e.code(), Code::ProxyRefused, "{e:?}");
    assert!(
        e.message().contains("403") && e.message().contains(&format!("localhost:{}", hub.sas)),
        "{e:?}"
    );

    // The proxy cannot reach the hub (nothing listens there): the proxy's 5xx is a failed
    // connection, retried with back-off.
    let closed = free_port();
    let open = Tinyproxy::start(&[closed], None);
    let mut c = client(&hub, via(closed, &open.url(None)));
    let began = Instant::now();
    let e = c.connect(Duration::from_secs(3)).unwrap_err();
    assert_eq!(e.code(), Code::ConnectFailed, "{e:?}");
    assert!(e.message().contains("could not reach"), "{e:?}");
    assert!(
        e.message().contains("Unable to connect"),
        "tinyproxy's line: {e:?}"
    );
    assert!(
        began.elapsed() >= Duration::from_secs(3),
        "it kept retrying"
    );
    assert!(open.connects().len() >= 2, "retried: {}", open.log());

    // No proxy listening at all: the proxy is named.
    let nothing = free_port();
    let mut c = client(&hub, via(hub.sas, &format!("http://127.0.0.1:{nothing}")));
    let e = c.connect(Duration::from_secs(2)).unwrap_err();
    assert_eq!(e.code(), Code::ConnectFailed, "{e:?}");
    assert!(
        e.message().contains(&format!("proxy 127.0.0.1:{nothing}")),
        "{e:?}"
    );
}

#[test]
fn a_proxy_that_never_answers_is_bounded_by_the_connect_timeout() {
    // A listener that accepts and stays silent: the CONNECT answer never comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let hub = hub();
    let mut options = via(hub.sas, &format!("http://127.0.0.1:{port}"));
    options.connect_timeout = Duration::from_secs(1);
    let mut c = client(&hub, options);
    let began = Instant::now();
    let e = c.connect(Duration::from_secs(2)).unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(6));
    assert_eq!(e.code(), Code::Timeout, "{e:?}");
    assert!(e.message().contains("did not answer CONNECT"), "{e:?}");
    drop(silent);
}

#[test]
fn retriable_and_fatal_proxy_outcomes_follow_the_session_rules() {
    assert!(tether::session::is_fatal(Code::ProxyAuthRequired));
    assert!(tether::session::is_fatal(Code::ProxyRefused));
    assert!(!tether::session::is_fatal(Code::ConnectFailed));
    let why = Disconnect::for_error(tether::Error::new(Code::ProxyRefused, "x"));
    assert!(!why.will_retry());
}

fn cli(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = target_command(env!("CARGO_BIN_EXE_tether"));
    for (name, _) in std::env::vars() {
        let proxyish =
            name.eq_ignore_ascii_case("https_proxy") || name.eq_ignore_ascii_case("no_proxy");
        if (name.starts_with("TETHER_") && name != "TETHER_TEST_RUNNER") || proxyish {
            cmd.env_remove(name);
        }
    }
    let out = cmd
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_send_and_tls_check_use_proxy_flags_and_the_conventional_environment() {
    let hub = hub();
    let proxy = Tinyproxy::start(&[hub.sas], Some(USER));
    let cs = format!(
        "HostName={HOST};DeviceId={DEVICE};SharedAccessKey={KEY};GatewayHostName=localhost"
    );
    let port = hub.sas.to_string();
    let ca = hub.ca();
    let base = [
        ("TETHER_CONNECTION_STRING", cs.as_str()),
        ("TETHER_CA_FILE", ca.as_str()),
        ("TETHER_PORT", port.as_str()),
    ];
    let with = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        base.iter()
            .chain(extra.iter())
            .map(|(k, v)| (*k, v.to_string()))
            .collect()
    };
    let run = |args: &[&str], env: &[(&'static str, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        cli(args, &env)
    };
    let good = proxy.url(Some(USER));

    // --proxy URL
    let (code, out, err) = run(
        &["send", "--qos", "1", "--json", "--proxy", &good, "hi"],
        &with(&[]),
    );
    assert_eq!(code, 0, "{err}\n{}", hub.log());
    assert!(out.contains("\"acked\":1"), "{out}");
    assert_eq!(proxy.connects().len(), 1);

    // HTTPS_PROXY, https_proxy and TETHER_PROXY are each enough...
    for name in ["HTTPS_PROXY", "https_proxy", "TETHER_PROXY"] {
        let (code, _, err) = run(&["send", "--qos", "1", "hi"], &with(&[(name, &good)]));
        assert_eq!(code, 0, "{name}: {err}");
    }
    assert_eq!(proxy.connects().len(), 4, "{}", proxy.log());
    // ...and NO_PROXY naming the host goes direct.
    let (code, _, err) = run(
        &["send", "--qos", "1", "hi"],
        &with(&[
            ("HTTPS_PROXY", &good),
            ("NO_PROXY", "example.com,localhost"),
        ]),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(proxy.connects().len(), 4, "NO_PROXY bypassed the proxy");

    // A refusal is the command's error, with the status line and without the password.
    let (code, _, err) = run(
        &["send", "--qos", "1", "hi"],
        &with(&[("HTTPS_PROXY", &proxy.url(Some(("alice", "not-this-one"))))]),
    );
    assert_eq!(code, 6, "network results exit with 6: {err}");
    assert!(
        err.contains("TETHER_RESULT_PROXY_AUTH_REQUIRED") && err.contains("401 Unauthorized"),
        "{err}"
    );
    assert!(
        !err.contains("not-this-one") && !err.contains(USER.1),
        "{err}"
    );

    // tls-check through the proxy.
    let (code, out, err) = run(
        &["tls-check", "localhost", "--json", "--proxy", &good],
        &with(&[]),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"version\":\"TLSv1.2\""), "{out}");
    // (the refused request was logged as a CONNECT too)
    assert_eq!(proxy.connects().len(), 6, "{}", proxy.log());

    // A malformed proxy URL is a usage error that does not echo it.
    let (code, _, err) = run(&["send", "--proxy", "ftp://u:leak@p:1", "hi"], &with(&[]));
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("leak"), "{err}");
}
