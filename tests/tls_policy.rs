//! The TLS policy against real peers: openssl s_server in every case of PEERS.md's table, a
//! fake server sending downgraded ServerHellos, and the `tether tls-check` CLI.

mod common;

use common::{fake_tls_server, server_hello, tether_cli, Pki, SServer};

fn check(port: u16, extra: &[&str]) -> (i32, String, String) {
    let pki = Pki::shared();
    let target = format!("localhost:{port}");
    let ca = pki.path("ca.pem");
    let mut args = vec![
        "tls-check",
        target.as_str(),
        "--ca",
        ca.as_str(),
        "--timeout",
        "5",
    ];
    args.extend_from_slice(extra);
    tether_cli(&args)
}

fn server(args: &[&str]) -> SServer {
    SServer::start(&Pki::shared().dir, args)
}

fn good_server_args() -> Vec<&'static str> {
    vec!["-cert", "server.pem", "-key", "server.key", "-tls1_2"]
}

#[test]
fn tls_check_succeeds_with_tls12_and_a_hub_suite() {
    let s = server(&good_server_args());
    let (code, out, err) = check(s.port, &[]);
    assert_eq!(code, 0, "stderr: {err}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("TLSv1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
    );
    assert_eq!(lines.next(), Some("0 subject: CN=localhost"));
    assert_eq!(lines.next(), Some("  issuer: CN=Tether Test Root CA"));
    assert!(out.contains("trust anchor: Tether Test Root CA"), "{out}");
}

#[test]
fn client_hello_offers_exactly_the_policy_suites_and_tls12_only() {
    let s = server(&good_server_args());
    let (code, _, err) = check(s.port, &[]);
    assert_eq!(code, 0, "stderr: {err}");
    let log = s.log();
    let offered = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("Client cipher list: ")
                .or_else(|| l.strip_prefix("Shared ciphers:"))
        })
        .unwrap_or_else(|| panic!("s_server log has no cipher list:\n{log}"));
    // The renegotiation SCSV is a signal (RFC 5746), not a cipher suite.
    let suites: Vec<&str> = offered
        .split(':')
        .filter(|s| !s.is_empty() && *s != "TLS_EMPTY_RENEGOTIATION_INFO_SCSV")
        .collect();
    assert_eq!(
        suites,
        ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"],
        "full log:\n{log}"
    );
    assert!(log.contains("Protocol version: TLSv1.2"), "{log}");
}

#[test]
fn tls_refuses_server_limited_to_tls11() {
    let s = server(&[
        "-cert",
        "server.pem",
        "-key",
        "server.key",
        "-min_protocol",
        "TLSv1",
        "-max_protocol",
        "TLSv1.1",
        "-cipher",
        "DEFAULT:@SECLEVEL=0",
    ]);
    let (code, _, err) = check(s.port, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("IoT Hub policy requires TLS 1.2"), "{err}");
    assert!(err.contains("TETHER_RESULT_TLS_VERSION_REFUSED"), "{err}");
}

#[test]
fn tls_refuses_server_with_rsa_key_exchange_only() {
    let s = server(&[
        "-cert",
        "server.pem",
        "-key",
        "server.key",
        "-tls1_2",
        "-cipher",
        "AES128-GCM-SHA256",
    ]);
    let (code, _, err) = check(s.port, &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("TETHER_RESULT_TLS_CIPHER_SUITE_REFUSED"),
        "{err}"
    );
    assert!(
        err.contains("accepts none of the IoT Hub policy's cipher suites"),
        "{err}"
    );
}

#[test]
fn tls_refuses_server_with_cbc_suites_only() {
    let s = server(&[
        "-cert",
        "server.pem",
        "-key",
        "server.key",
        "-tls1_2",
        "-cipher",
        "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES128-SHA",
    ]);
    let (code, _, err) = check(s.port, &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("TETHER_RESULT_TLS_CIPHER_SUITE_REFUSED"),
        "{err}"
    );
}

#[test]
fn tls_refuses_expired_certificate_with_its_dates() {
    let s = server(&["-cert", "expired.pem", "-key", "expired.key", "-tls1_2"]);
    let (code, _, err) = check(s.port, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("TETHER_RESULT_CERT_EXPIRED"), "{err}");
    assert!(
        err.contains(
            "certificate localhost expired on 2020-01-02 00:00:00 UTC (device clock says 20"
        ),
        "{err}"
    );
}

#[test]
fn tls_refuses_certificate_for_another_host() {
    let s = server(&[
        "-cert",
        "wrong-host.pem",
        "-key",
        "wrong-host.key",
        "-tls1_2",
    ]);
    let (code, _, err) = check(s.port, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("TETHER_RESULT_CERT_WRONG_HOST"), "{err}");
    assert!(
        err.contains("certificate is for wrong.example.com, not localhost"),
        "{err}"
    );
}

#[test]
fn tls_refuses_self_signed_certificate() {
    let s = server(&[
        "-cert",
        "self-signed.pem",
        "-key",
        "self-signed.key",
        "-tls1_2",
    ]);
    let (code, _, err) = check(s.port, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("TETHER_RESULT_CERT_UNTRUSTED"), "{err}");
    assert!(err.contains("self-signed"), "{err}");
}

#[test]
fn tls_names_the_issuer_of_an_untrusted_chain() {
    let s = server(&["-cert", "untrusted.pem", "-key", "untrusted.key", "-tls1_2"]);
    let (code, _, err) = check(s.port, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("TETHER_RESULT_CERT_UNTRUSTED"), "{err}");
    assert!(
        err.contains("was issued by \"CN=Unknown Test CA\", which is not a trusted root"),
        "{err}"
    );
}

#[test]
fn tls_without_test_ca_trusts_only_the_hub_roots() {
    let s = server(&good_server_args());
    let target = format!("localhost:{}", s.port);
    let (code, _, err) = tether_cli(&["tls-check", &target, "--timeout", "5"]);
    assert_ne!(code, 0);
    assert!(err.contains("DigiCert Global Root G2"), "{err}");
    assert!(
        err.contains("Microsoft RSA Root Certificate Authority 2017"),
        "{err}"
    );
}

#[test]
fn tls_reports_client_certificate_required_when_none_configured() {
    let s = server(&[
        "-cert",
        "server.pem",
        "-key",
        "server.key",
        "-tls1_2",
        "-Verify",
        "1",
        "-verify_return_error",
        "-CAfile",
        "ca.pem",
    ]);
    let (code, _, err) = check(s.port, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("TETHER_RESULT_CLIENT_CERT_REQUIRED"), "{err}");
    assert!(err.contains("requires a client certificate"), "{err}");
}

#[test]
fn tls_completes_mutual_tls_with_a_device_certificate() {
    let pki = Pki::shared();
    let s = server(&[
        "-cert",
        "server.pem",
        "-key",
        "server.key",
        "-tls1_2",
        "-Verify",
        "1",
        "-verify_return_error",
        "-CAfile",
        "ca.pem",
    ]);
    let (cert, key) = (pki.path("device.pem"), pki.path("device.key"));
    let (code, out, err) = check(s.port, &["--cert", &cert, "--key", &key]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("TLSv1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n"));
    assert!(s.log().contains("depth=0 CN = my-device"), "{}", s.log());
}

#[test]
fn tls_refuses_a_client_key_that_does_not_match_its_certificate() {
    let pki = Pki::shared();
    let (cert, key) = (pki.path("device.pem"), pki.path("server.key"));
    let (code, _, err) = check(1, &["--cert", &cert, "--key", &key]);
    assert_ne!(code, 0);
    assert!(err.contains("TETHER_RESULT_KEY_CERT_MISMATCH"), "{err}");
}

#[test]
fn tls13_is_used_only_when_opted_in() {
    let s = server(&["-cert", "server.pem", "-key", "server.key"]);
    let (code, out, err) = check(s.port, &["--tls13"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("TLSv1.3 TLS13_AES_128_GCM_SHA256\n"),
        "{out}"
    );
    let s = server(&["-cert", "server.pem", "-key", "server.key"]);
    let (code, out, err) = check(s.port, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("TLSv1.2 "), "{out}");
}

#[test]
fn client_refuses_a_downgraded_server_hello() {
    let port = fake_tls_server(server_hello(0x0302, 0xc02f));
    let (code, _, err) = check(port, &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("server offered TLSv1.1; IoT Hub policy requires TLS 1.2"),
        "{err}"
    );
}

#[test]
fn client_refuses_a_server_choosing_rsa_key_exchange() {
    let port = fake_tls_server(server_hello(0x0303, 0x009c));
    let (code, _, err) = check(port, &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("TETHER_RESULT_TLS_CIPHER_SUITE_REFUSED"),
        "{err}"
    );
    assert!(
        err.contains("server chose the cipher suite TLS_RSA_WITH_AES_128_GCM_SHA256 (0x009c)"),
        "{err}"
    );
}

#[test]
fn client_refuses_a_server_choosing_a_cbc_suite() {
    let port = fake_tls_server(server_hello(0x0303, 0xc013));
    let (code, _, err) = check(port, &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA (0xc013), outside the IoT Hub policy"),
        "{err}"
    );
}

#[test]
fn tls_check_reports_a_closed_port() {
    let port = common::free_port();
    let (code, _, err) = check(port, &[]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("TETHER_RESULT_CONNECT_FAILED"), "{err}");
}

/// A device clock fixed at `unix` seconds, through the policy's one clock seam.
#[derive(Debug)]
struct FixedClock(u64);

impl rustls::time_provider::TimeProvider for FixedClock {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(rustls::pki_types::UnixTime::since_unix_epoch(
            std::time::Duration::from_secs(self.0),
        ))
    }
}

fn check_with_clock(unix: u64) -> tether::Error {
    let pki = Pki::shared();
    let s = server(&good_server_args());
    let mut policy = tether::policy::TlsPolicy::new();
    policy.add_ca_file(&pki.path("ca.pem")).unwrap();
    policy.set_clock(std::sync::Arc::new(FixedClock(unix)));
    tether::handshake::check(
        "localhost",
        s.port,
        policy.build().unwrap(),
        false,
        std::time::Duration::from_secs(5),
    )
    .unwrap_err()
}

#[test]
fn tls_names_a_device_clock_left_at_1970() {
    let err = check_with_clock(86_400);
    assert_eq!(err.code(), tether::Code::ClockNotSet);
    assert_eq!(
        err.message(),
        "device clock is 1970-01-02: set the time (NTP or RTC) before connecting"
    );
}

#[test]
fn tls_names_a_certificate_not_yet_valid_for_a_clock_behind() {
    // 2025-06-01: after the clock floor, before the test PKI was made.
    let err = check_with_clock(1_748_736_000);
    assert_eq!(err.code(), tether::Code::CertNotYetValid);
    assert!(
        err.message()
            .contains("(device clock says 2025-06-01 00:00:00 UTC); check the device clock"),
        "{err:?}"
    );
}
