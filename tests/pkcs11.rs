//! Keys held by a PKCS#11 token: SoftHSM2 tokens made by the tests (keys imported and keys
//! generated on the token), mutual TLS against `openssl s_server` requiring a client
//! certificate and against the local IoT Hub stand-in, and every bad input by its name.

#![cfg(all(feature = "pkcs11", target_os = "linux"))]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::hub::{registry, Hub, HOST};
use common::pkcs11::{in_child, is_child, SoftHsm, SwTpm, PIN, SOFTHSM_MODULE};
use common::{run, temp_dir, Pki, SServer};
use tether::auth::pkcs11::{generate_p256, Pin, TokenSigner};
use tether::Code;

/// Issues `dir/name.pem` for a new key `dir/name.key` (`newkey`: `rsa:2048`, `ec` with
/// `curve`), CN `cn`, signed by the shared test CA, for client authentication.
fn issue(dir: &Path, name: &str, cn: &str, curve: Option<&str>) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let mut req = std::process::Command::new("openssl");
    req.args([
        "req",
        "-new",
        "-nodes",
        "-subj",
        &format!("/CN={cn}"),
        "-newkey",
    ]);
    match curve {
        Some(curve) => req.args(["ec", "-pkeyopt", &format!("ec_paramgen_curve:{curve}")]),
        None => req.arg("rsa:2048"),
    };
    run(req.arg("-keyout").arg(&key).arg("-out").arg(&csr));
    (sign_csr(&csr, dir, name), key)
}

/// Signs a CSR with the shared test CA (client authentication).
fn sign_csr(csr: &Path, dir: &Path, name: &str) -> PathBuf {
    let pki = Pki::shared();
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let pem = dir.join(format!("{name}.pem"));
    run(std::process::Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-in"])
        .arg(csr)
        .args(["-CA", &pki.path("ca.pem"), "-CAkey", &pki.path("ca.key")])
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&pem));
    pem
}

const RSA_TOKEN: &str = "tether-rsa";
const EC_TOKEN: &str = "tether-ec";
const GEN_TOKEN: &str = "tether-gen";

/// The tokens every test of this binary shares, made once before the module is loaded.
struct Tokens {
    hsm: &'static SoftHsm,
    dir: PathBuf,
}

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let hsm = SoftHsm::shared();
        let dir = temp_dir("p11-certs");
        hsm.init_token(RSA_TOKEN);
        let (cert, key) = issue(&dir, "rsa", "p11-rsa", None);
        hsm.import_key(RSA_TOKEN, &key, "device", "01");
        hsm.write_cert(RSA_TOKEN, &cert, "device", "01");

        hsm.init_token(EC_TOKEN);
        for (name, curve, id) in [("ec256", "P-256", "02"), ("ec384", "P-384", "03")] {
            let (cert, key) = issue(&dir, name, &format!("p11-{name}"), Some(curve));
            hsm.import_key(EC_TOKEN, &key, name, id);
            hsm.write_cert(EC_TOKEN, &cert, name, id);
        }
        // Two keys with one label; a key without a certificate; a certificate of another key.
        for (name, id) in [("twin-a", "04"), ("twin-b", "05"), ("lonely", "06")] {
            let (_, key) = issue(&dir, name, name, Some("P-256"));
            let label = if name.starts_with("twin") {
                "twin"
            } else {
                name
            };
            hsm.import_key(EC_TOKEN, &key, label, id);
        }
        let (_, key) = issue(&dir, "mismatch", "mismatch", Some("P-256"));
        let (other_cert, _) = issue(&dir, "other", "mismatch", Some("P-256"));
        hsm.import_key(EC_TOKEN, &key, "mismatch", "07");
        hsm.write_cert(EC_TOKEN, &other_cert, "mismatch", "07");

        hsm.init_token(GEN_TOKEN);
        Tokens { hsm, dir }
    })
}

fn pin() -> Pin {
    Pin::value(PIN)
}

fn open_err(uri: &str, pin: Pin) -> tether::Error {
    tokens();
    TokenSigner::certified_key(Some(SOFTHSM_MODULE), uri, pin).unwrap_err()
}

/// Mutual TLS against `openssl s_server -Verify 1 -verify_return_error` with the token's key,
/// the server limited to `sigalgs` for the client's signature; returns s_server's log.
fn mutual_tls_with_s_server(uri: &str, sigalgs: &str) -> String {
    tokens();
    mutual_tls_with_module(SOFTHSM_MODULE, uri, sigalgs)
}

/// As [`mutual_tls_with_s_server`], with the key on a token of `module`.
fn mutual_tls_with_module(module: &str, uri: &str, sigalgs: &str) -> String {
    let pki = Pki::shared();
    let s = s_server_requiring_a_client_cert(&["-client_sigalgs", sigalgs]);
    let mut policy = tether::policy::TlsPolicy::new();
    policy.add_ca_file(&pki.path("ca.pem")).unwrap();
    policy.set_client_pkcs11(Some(module), uri, pin()).unwrap();
    let result = tether::handshake::check(
        "localhost",
        s.port,
        policy.build().unwrap(),
        true,
        Duration::from_secs(10),
    );
    let log = s.log();
    result.unwrap_or_else(|e| panic!("handshake with the token's key failed: {e:?}\n{log}"));
    log
}

#[test]
fn rsa_key_on_the_token_signs_pss_and_pkcs1_for_s_server() {
    let uri = format!("pkcs11:token={RSA_TOKEN};object=device");
    for (sigalgs, hash, kind) in [
        ("rsa_pss_rsae_sha256", "SHA256", "RSA-PSS"),
        ("rsa_pss_rsae_sha384", "SHA384", "RSA-PSS"),
        ("RSA+SHA256", "SHA256", "RSA"),
        ("RSA+SHA384", "SHA384", "RSA"),
    ] {
        let log = mutual_tls_with_s_server(&uri, sigalgs);
        let expected =
            format!("Peer certificate: CN = p11-rsa\nHash used: {hash}\nSignature type: {kind}\n");
        assert!(log.contains(&expected), "{sigalgs}: {log}");
    }
}

#[test]
fn ec_p256_and_p384_keys_on_the_token_sign_for_s_server() {
    for (uri, sigalgs, cn, hash) in [
        (
            format!("pkcs11:token={EC_TOKEN};id=%02"),
            "ECDSA+SHA256",
            "p11-ec256",
            "SHA256",
        ),
        (
            format!("pkcs11:token={EC_TOKEN};object=ec384;type=private"),
            "ECDSA+SHA384",
            "p11-ec384",
            "SHA384",
        ),
    ] {
        let log = mutual_tls_with_s_server(&uri, sigalgs);
        let expected =
            format!("Peer certificate: CN = {cn}\nHash used: {hash}\nSignature type: ECDSA\n");
        assert!(log.contains(&expected), "{uri}: {log}");
    }
}

/// A key generated on the token: non-extractable, its CSR signed by the token, the issued
/// certificate written back onto the token; returns the certificate.
fn generate_on_token(object: &str, id: u8, cn: &str) -> PathBuf {
    let t = tokens();
    let uri = format!("pkcs11:token={GEN_TOKEN};object={object};id=%{id:02X}");
    let key = generate_p256(Some(SOFTHSM_MODULE), &uri, pin()).unwrap();
    let csr = t.dir.join(format!("{object}.csr"));
    std::fs::write(&csr, key.csr_pem(cn).unwrap()).unwrap();
    // openssl checks the CSR's signature (made by the token) against its public key.
    let verified = run(std::process::Command::new("openssl")
        .args(["req", "-verify", "-noout", "-subject", "-in"])
        .arg(&csr));
    let text = String::from_utf8_lossy(&verified.stdout).into_owned()
        + &String::from_utf8_lossy(&verified.stderr);
    assert!(
        text.contains("verify OK") || text.contains("Certificate request self-signature verify OK"),
        "{text}"
    );
    assert!(text.contains(&format!("CN = {cn}")), "{text}");
    let cert = sign_csr(&csr, &t.dir, object);
    t.hsm
        .write_cert(GEN_TOKEN, &cert, object, &format!("{id:02X}"));
    // The token says the key is sensitive and was never extractable.
    let listed = run(t
        .hsm
        .tool(GEN_TOKEN)
        .args(["--list-objects", "--type", "privkey"]));
    let listed = String::from_utf8_lossy(&listed.stdout);
    let entry = listed
        .split("Private Key Object")
        .find(|e| e.contains(&format!("label:      {object}\n")))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        entry.contains("sensitive")
            && entry.contains("never extractable")
            && entry.contains("local"),
        "{entry}"
    );
    cert
}

#[test]
fn key_generated_on_the_token_gets_a_csr_signed_by_it_and_then_signs_tls() {
    generate_on_token("generated", 0x10, "p11-generated");
    let log = mutual_tls_with_s_server(
        &format!("pkcs11:token={GEN_TOKEN};object=generated"),
        "ECDSA+SHA256",
    );
    assert!(
        log.contains(
            "Peer certificate: CN = p11-generated\nHash used: SHA256\nSignature type: ECDSA\n"
        ),
        "{log}"
    );
    // The same label again is refused: the token already holds that key.
    let e = generate_p256(
        Some(SOFTHSM_MODULE),
        &format!("pkcs11:token={GEN_TOKEN};object=generated;id=%10"),
        pin(),
    )
    .unwrap_err();
    assert_eq!(e.code(), Code::Pkcs11KeyAmbiguous, "{e:?}");
}

fn x509_device(id: &str, thumbprint: Option<&str>) -> String {
    let auth = match thumbprint {
        Some(t) => {
            format!(r#"{{"type": "selfSigned", "x509Thumbprint": {{"primaryThumbprint": "{t}"}}}}"#)
        }
        None => r#"{"type": "certificateAuthority"}"#.to_string(),
    };
    format!(r#"{{"deviceId": "{id}", "status": "enabled", "authentication": {auth}}}"#)
}

/// A client of the stand-in's X.509 port whose key is on the token.
fn token_client(hub: &Hub, device: &str, uri: &str) -> tether::client::Client {
    use tether::auth::connection_string::ConnectionString;
    use tether::session::SessionConfig;
    let cs = ConnectionString::parse(&format!(
        "HostName={HOST};DeviceId={device};x509=true;GatewayHostName=localhost"
    ))
    .unwrap();
    let mut policy = tether::policy::TlsPolicy::new();
    policy.add_ca_file(&hub.ca()).unwrap();
    policy
        .set_client_pkcs11(Some(SOFTHSM_MODULE), uri, pin())
        .unwrap();
    let config = SessionConfig::from_connection_string(&cs, policy.build().unwrap(), true).unwrap();
    tether::client::Client::new(
        config,
        tether::client::ClientOptions {
            port: hub.x509,
            ..tether::client::ClientOptions::default()
        },
    )
    .unwrap()
}

/// Sends one QoS 1 message and waits for its acknowledgement.
fn send_and_ack(client: &mut tether::client::Client, hub: &Hub) {
    use tether::mqtt::properties::PropertyBag;
    use tether::session::Event;
    client
        .send_telemetry(b"from the token", &PropertyBag::new(), 1)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(Event::TelemetryAcked { .. }) = client.poll(Duration::from_millis(100)).unwrap()
        {
            return;
        }
    }
    panic!("no acknowledgement\n{}", hub.log());
}

#[test]
fn stand_in_accepts_token_keys_registered_by_ca_and_by_thumbprint() {
    let pki = Pki::shared();
    let cert = generate_on_token("hub-thumb", 0x20, "p11-thumb");
    let thumb = tether::auth::x509::thumbprints(&std::fs::read(&cert).unwrap())
        .unwrap()
        .sha256;
    // p11-rsa: CA-signed, registered through the CA; p11-thumb: registered by thumbprint.
    let reg = registry(
        &[pki.path("ca.pem")],
        &[
            x509_device("p11-rsa", None),
            x509_device("p11-thumb", Some(&thumb)),
        ],
    );
    let hub = Hub::start(&reg);
    let mut by_ca = token_client(&hub, "p11-rsa", &format!("pkcs11:token={RSA_TOKEN};id=%01"));
    by_ca.connect(Duration::from_secs(20)).unwrap();
    send_and_ack(&mut by_ca, &hub);
    assert!(
        hub.wait_log("accepted \"p11-rsa\"", Duration::from_secs(5)),
        "{}",
        hub.log()
    );
    let mut by_thumb = token_client(
        &hub,
        "p11-thumb",
        &format!("pkcs11:token={GEN_TOKEN};object=hub-thumb"),
    );
    by_thumb.connect(Duration::from_secs(20)).unwrap();
    send_and_ack(&mut by_thumb, &hub);
    assert!(
        hub.wait_log(
            "accepted \"p11-thumb\" from 127.0.0.1 (X.509, primary thumbprint)",
            Duration::from_secs(5)
        ),
        "{}",
        hub.log()
    );
}

#[test]
fn each_bad_input_has_its_own_error() {
    let ec = |rest: &str| format!("pkcs11:token={EC_TOKEN};{rest}");
    let cases = [
        (
            TokenSigner::certified_key(Some("/nonexistent/libp11.so"), &ec("object=ec256"), pin())
                .unwrap_err(),
            Code::Pkcs11ModuleNotFound,
            "does not exist",
        ),
        (
            open_err("pkcs11:token=absent;object=ec256", pin()),
            Code::Pkcs11TokenAbsent,
            "no token matching pkcs11:token=absent;object=ec256",
        ),
        (
            {
                // Logged in first with the right PIN: PKCS#11 log-ins belong to the process,
                // and the wrong PIN must still be refused.
                TokenSigner::certified_key(Some(SOFTHSM_MODULE), &ec("object=ec256"), pin())
                    .unwrap();
                open_err(&ec("object=ec256"), Pin::value("0000"))
            },
            Code::Pkcs11PinIncorrect,
            "refused the PIN",
        ),
        (
            open_err(&ec("object=nothing"), pin()),
            Code::Pkcs11KeyNotFound,
            "\"ec256\" (id=%02)",
        ),
        (
            open_err(&ec("object=twin"), pin()),
            Code::Pkcs11KeyAmbiguous,
            "2 private keys",
        ),
        (
            open_err(&ec("object=lonely"), pin()),
            Code::Pkcs11CertNotFound,
            "no certificate for the key \"lonely\"",
        ),
        (
            open_err(&ec("object=mismatch"), pin()),
            Code::KeyCertMismatch,
            "does not match",
        ),
        (
            open_err("token=x;object=y", pin()),
            Code::Pkcs11UriInvalid,
            "pkcs11:",
        ),
    ];
    for (e, code, needle) in cases {
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(needle), "{needle}: {e:?}");
        assert!(
            !e.message().contains(PIN) && !e.message().contains("0000"),
            "{e:?}"
        );
    }
    // A file that is not a PKCS#11 module: the test binary itself.
    let exe = std::env::current_exe().unwrap();
    let e = TokenSigner::certified_key(exe.to_str(), &ec("object=ec256"), pin()).unwrap_err();
    assert_eq!(e.code(), Code::Pkcs11ModuleInvalid, "{e:?}");
}

#[test]
fn a_locked_user_pin_is_named() {
    if !is_child() {
        let hsm = SoftHsm::new("softhsm-locked", "");
        in_child("a_locked_user_pin_is_named", &hsm);
        return;
    }
    // In the child, with its own configuration: lock the PIN before the module is loaded.
    let t = tokens();
    t.hsm.lock_user_pin(EC_TOKEN);
    let e = open_err(&format!("pkcs11:token={EC_TOKEN};object=ec256"), pin());
    assert_eq!(e.code(), Code::Pkcs11PinLocked, "{e:?}");
    assert!(e.message().contains("is locked"), "{e:?}");
}

#[test]
fn a_token_without_the_needed_mechanism_is_named() {
    if !is_child() {
        // SoftHSM's `slots.mechanisms` applies to the whole module: its own configuration,
        // in a child process. A leading `-` disables the listed mechanisms, but SoftHSM 2.6
        // keeps the first one listed (it compares it with the `-`): MD5 goes first.
        let hsm = SoftHsm::new(
            "softhsm-no-rsa",
            "slots.mechanisms = -CKM_MD5,CKM_RSA_PKCS,CKM_RSA_PKCS_PSS",
        );
        in_child("a_token_without_the_needed_mechanism_is_named", &hsm);
        return;
    }
    let e = open_err(&format!("pkcs11:token={RSA_TOKEN};object=device"), pin());
    assert_eq!(e.code(), Code::Pkcs11MechanismUnsupported, "{e:?}");
    assert!(
        e.message().contains("CKM_RSA_PKCS or CKM_RSA_PKCS_PSS"),
        "{e:?}"
    );
    // EC keys on the same module still work.
    TokenSigner::certified_key(
        Some(SOFTHSM_MODULE),
        &format!("pkcs11:token={EC_TOKEN};object=ec256"),
        pin(),
    )
    .unwrap();
}

/// s_server requiring a client certificate from the test CA, with `extra` arguments.
fn s_server_requiring_a_client_cert(extra: &[&str]) -> SServer {
    let mut args = vec![
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
    ];
    args.extend_from_slice(extra);
    SServer::start(&Pki::shared().dir, &args)
}

#[test]
fn a_token_removed_mid_session_is_a_retriable_disconnect_and_comes_back() {
    if !is_child() {
        // Removing a token must not disturb the other tests: own configuration, own process.
        in_child(
            "a_token_removed_mid_session_is_a_retriable_disconnect_and_comes_back",
            &SoftHsm::new("softhsm-removal", ""),
        );
        return;
    }
    let t = tokens();
    let pki = Pki::shared();
    let mut policy = tether::policy::TlsPolicy::new();
    policy.add_ca_file(&pki.path("ca.pem")).unwrap();
    policy
        .set_client_pkcs11(
            Some(SOFTHSM_MODULE),
            &format!("pkcs11:token={RSA_TOKEN};id=%01"),
            pin(),
        )
        .unwrap();
    // One configuration, as a client keeps across reconnections. Each s_server is a new
    // process, so no TLS session is resumed: every handshake needs the token's signature.
    let config = policy.build().unwrap();
    let handshake = || {
        let s = s_server_requiring_a_client_cert(&["-client_sigalgs", "RSA+SHA256"]);
        tether::handshake::check(
            "localhost",
            s.port,
            config.clone(),
            true,
            Duration::from_secs(10),
        )
    };
    handshake().unwrap();

    // The token goes away: its files are deleted and the module loses every session and
    // log-in (another user of the module in this process finalises it, as happens when a
    // token daemon restarts).
    run(t
        .hsm
        .command("softhsm2-util")
        .args(["--delete-token", "--token", RSA_TOKEN]));
    let other_user = cryptoki::context::Pkcs11::new(SOFTHSM_MODULE).unwrap();
    other_user.finalize().unwrap();
    for _ in 0..2 {
        let e = handshake().unwrap_err();
        assert_eq!(e.code(), Code::Pkcs11TokenFailed, "{e:?}");
        // The session's one rule: a failed token is retried, like a lost network.
        assert!(
            matches!(
                tether::session::Disconnect::for_error(e),
                tether::session::Disconnect::Retriable(_)
            ),
            "a failed token is retriable"
        );
    }

    // The token comes back (same label, same key and certificate) and the module is
    // restarted again (SoftHSM reads its token folder at `C_Initialize`): the next handshake
    // initialises the module, logs in again by itself and signs.
    t.hsm.init_token(RSA_TOKEN);
    t.hsm
        .import_key(RSA_TOKEN, &t.dir.join("rsa.key"), "device", "01");
    t.hsm
        .write_cert(RSA_TOKEN, &t.dir.join("rsa.pem"), "device", "01");
    let other_user = cryptoki::context::Pkcs11::new(SOFTHSM_MODULE).unwrap();
    other_user.finalize().unwrap();
    handshake().unwrap();
}

#[test]
fn c_example_sends_through_the_stand_in_with_token_keys_from_arguments_and_environment() {
    use std::process::Command;
    let t = tokens();
    let pki = Pki::shared();
    let hub = Hub::start(&registry(
        &[pki.path("ca.pem")],
        &[
            x509_device("p11-ec256", None),
            x509_device("p11-ec384", None),
        ],
    ));
    let exe = common::build_examples(&common::install_prefix(), false).join("telemetry_pkcs11");
    let example = || {
        let mut cmd = Command::new(&exe);
        cmd.env("SOFTHSM2_CONF", &t.hsm.conf)
            .env("TETHER_PKCS11_PIN", PIN);
        cmd
    };
    let port = hub.x509.to_string();
    let ec256 = format!("pkcs11:token={EC_TOKEN};object=ec256");
    // The policy built in C; the PIN from the example's callback.
    let out = example()
        .args([
            HOST,
            "p11-ec256",
            SOFTHSM_MODULE,
            &ec256,
            &hub.ca(),
            &port,
            "localhost",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "acked 1\n",
        "{text}\n{}",
        hub.log()
    );
    // Everything from TETHER_* variables.
    let from_env = |device: &str, uri: &str, pin: &str| {
        example()
            .env(
                "TETHER_CONNECTION_STRING",
                format!("HostName={HOST};DeviceId={device};x509=true;GatewayHostName=localhost"),
            )
            .env("TETHER_PKCS11_MODULE", SOFTHSM_MODULE)
            .env("TETHER_PKCS11_URI", uri)
            .env("TETHER_PKCS11_PIN", pin)
            .env("TETHER_CA_FILE", hub.ca())
            .env("TETHER_PORT", &port)
            .output()
            .unwrap()
    };
    let out = from_env("p11-ec384", &format!("pkcs11:token={EC_TOKEN};id=%03"), PIN);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "acked 1\n",
        "{text}\n{}",
        hub.log()
    );
    assert!(
        hub.wait_log("accepted \"p11-ec384\"", Duration::from_secs(5)),
        "{}",
        hub.log()
    );
    // A wrong PIN is named, and not printed.
    let out = from_env("p11-ec256", &ec256, "9876");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("TETHER_RESULT_PKCS11_PIN_INCORRECT"),
        "{text}"
    );
    assert!(!text.contains("9876"), "{text}");
}

/// Handshake time with the token's key against the same key in memory: one s_server, one
/// run, interleaved, medians (printed; docs/performance.md quotes them). A fresh client
/// configuration per handshake, so no TLS session is resumed and every handshake signs.
#[test]
fn handshake_time_with_a_softhsm_key_and_with_the_key_in_memory() {
    let t = tokens();
    let pki = Pki::shared();
    let rounds = 15;
    let accepts = (4 * rounds).to_string();
    let s = s_server_requiring_a_client_cert(&["-naccept", &accepts]);

    let token = |uri: &str| {
        let mut p = tether::policy::TlsPolicy::new();
        p.add_ca_file(&pki.path("ca.pem")).unwrap();
        p.set_client_pkcs11(Some(SOFTHSM_MODULE), uri, pin())
            .unwrap();
        p
    };
    let memory = |name: &str| {
        let mut p = tether::policy::TlsPolicy::new();
        p.add_ca_file(&pki.path("ca.pem")).unwrap();
        let dir = t.dir.to_string_lossy().into_owned();
        p.set_client_cert_files(&format!("{dir}/{name}.pem"), &format!("{dir}/{name}.key"))
            .unwrap();
        p
    };
    let kinds = [
        (
            "RSA-2048 SoftHSM",
            token(&format!("pkcs11:token={RSA_TOKEN};id=%01")),
        ),
        ("RSA-2048 memory", memory("rsa")),
        (
            "P-256 SoftHSM",
            token(&format!("pkcs11:token={EC_TOKEN};id=%02")),
        ),
        ("P-256 memory", memory("ec256")),
    ];
    let mut times = vec![Vec::new(); kinds.len()];
    for _ in 0..rounds {
        for (i, (_, policy)) in kinds.iter().enumerate() {
            let config = policy.build().unwrap();
            let started = Instant::now();
            tether::handshake::check("localhost", s.port, config, true, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{e:?}\n{}", s.log()));
            times[i].push(started.elapsed());
        }
    }
    for ((name, _), mut t) in kinds.iter().zip(times) {
        t.sort();
        println!(
            "handshake {name}: median {:?} (min {:?}, max {:?}, n={rounds})",
            t[rounds / 2],
            t[0],
            t[rounds - 1]
        );
    }
    assert_eq!(
        s.log().matches("Verification: OK").count(),
        4 * rounds,
        "every handshake authenticated the client"
    );
}

#[test]
fn a_software_tpm_generates_a_key_signs_its_csr_and_authenticates_to_s_server() {
    const TPM_TOKEN: &str = "tether-tpm";
    let name = "a_software_tpm_generates_a_key_signs_its_csr_and_authenticates_to_s_server";
    let uri = format!("pkcs11:token={TPM_TOKEN};object=tpm-key;id=%31");
    if is_child() {
        // Generation in a child process: swtpm serves one client at a time, and a loaded
        // tpm2-pkcs11 keeps its connection, so pkcs11-tool could not reach the TPM after.
        let module = std::env::var("TETHER_TEST_TPM_MODULE").unwrap();
        let key = generate_p256(Some(&module), &uri, pin()).unwrap();
        let csr = std::env::var("TETHER_TEST_TPM_CSR").unwrap();
        std::fs::write(csr, key.csr_pem("p11-tpm").unwrap()).unwrap();
        return;
    }
    let tpm = SwTpm::start(TPM_TOKEN);
    let csr = tpm.dir.join("tpm.csr");
    for (var, value) in tpm.env() {
        std::env::set_var(var, value);
    }
    std::env::set_var("TETHER_TEST_TPM_MODULE", &tpm.module);
    std::env::set_var("TETHER_TEST_TPM_CSR", &csr);
    in_child(name, SoftHsm::shared());
    let verified = run(std::process::Command::new("openssl")
        .args(["req", "-verify", "-noout", "-in"])
        .arg(&csr));
    let text = String::from_utf8_lossy(&verified.stdout).into_owned()
        + &String::from_utf8_lossy(&verified.stderr);
    assert!(text.contains("verify OK"), "{text}");
    let cert = sign_csr(&csr, &tpm.dir, "tpm");
    let der = tpm.dir.join("tpm.der");
    run(std::process::Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .arg("-out")
        .arg(&der));
    run(tpm
        .tool(TPM_TOKEN)
        .arg("--login")
        .arg("--write-object")
        .arg(&der)
        .args(["--type", "cert", "--label", "tpm-key", "--id", "31"]));
    let listed = run(tpm
        .tool(TPM_TOKEN)
        .args(["--login", "--list-objects", "--type", "privkey"]));
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("never extractable"), "{listed}");
    let log = mutual_tls_with_module(&tpm.module, &uri, "ECDSA+SHA256");
    assert!(
        log.contains("Peer certificate: CN = p11-tpm\nHash used: SHA256\nSignature type: ECDSA\n"),
        "{log}"
    );
}

#[test]
fn cli_tls_check_and_send_use_a_token_key() {
    let t = tokens();
    let pki = Pki::shared();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(args)
            .env("SOFTHSM2_CONF", &t.hsm.conf)
            .env("TETHER_PKCS11_PIN", PIN)
            .env_remove("TETHER_CONNECTION_STRING")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let uri = format!("pkcs11:token={EC_TOKEN};object=ec256");
    // tls-check: mutual TLS with s_server, the key on the token.
    let s = s_server_requiring_a_client_cert(&["-client_sigalgs", "ECDSA+SHA256"]);
    let port = s.port.to_string();
    let ca = pki.path("ca.pem");
    let (code, out, err) = cli(&[
        "tls-check",
        "localhost",
        "--port",
        &port,
        "--ca",
        &ca,
        "--pkcs11-module",
        SOFTHSM_MODULE,
        "--pkcs11-uri",
        &uri,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        s.log().contains("Peer certificate: CN = p11-ec256\n"),
        "{}",
        s.log()
    );
    // send through the stand-in, the device registered through the CA.
    let hub = Hub::start(&registry(
        std::slice::from_ref(&ca),
        &[x509_device("p11-ec256", None)],
    ));
    let cs = format!("HostName={HOST};DeviceId=p11-ec256;x509=true;GatewayHostName=localhost");
    let x509 = hub.x509.to_string();
    let (code, out, err) = cli(&[
        "send",
        "from the CLI",
        "--connection-string",
        &cs,
        "--port",
        &x509,
        "--ca",
        &hub.ca(),
        "--pkcs11-module",
        SOFTHSM_MODULE,
        "--pkcs11-uri",
        &uri,
    ]);
    assert_eq!(code, Some(0), "{out}{err}\n{}", hub.log());
    assert!(
        hub.wait_log("accepted \"p11-ec256\"", Duration::from_secs(5)),
        "{}",
        hub.log()
    );
    // A wrong PIN: its own result and exit status, the PIN not printed.
    let (code, _, err) = cli(&[
        "tls-check",
        "localhost",
        "--port",
        &port,
        "--ca",
        &ca,
        "--pkcs11-module",
        SOFTHSM_MODULE,
        "--pkcs11-uri",
        &uri,
        "--pkcs11-pin",
        "9876",
    ]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("TETHER_RESULT_PKCS11_PIN_INCORRECT"), "{err}");
    assert!(!err.contains("9876"), "{err}");
    // --pkcs11-uri and --cert exclude each other.
    let (code, _, err) = cli(&[
        "tls-check",
        "localhost",
        "--pkcs11-uri",
        &uri,
        "--cert",
        &ca,
        "--key",
        &ca,
    ]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn c_api_generates_a_key_and_csr_on_the_token_and_checks_the_buffer_first() {
    use std::ffi::CString;
    use tether::internal::ffi::pkcs11::{tether_pkcs11_generate_csr, TETHER_PKCS11_CSR_MAX_LEN};
    tokens();
    let module = CString::new(SOFTHSM_MODULE).unwrap();
    let uri = CString::new(format!("pkcs11:token={GEN_TOKEN};object=from-c;id=%40")).unwrap();
    let pin = CString::new(PIN).unwrap();
    let cn = CString::new("p11-from-c").unwrap();
    let mut buf = vec![0u8; TETHER_PKCS11_CSR_MAX_LEN + 1];
    let mut len = 0usize;
    let call = |buf: &mut [u8], len: &mut usize| unsafe {
        tether_pkcs11_generate_csr(
            module.as_ptr(),
            uri.as_ptr(),
            pin.as_ptr(),
            cn.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            len,
        )
    };
    // Too small a buffer is refused before any key is generated.
    let code = call(&mut buf[..100], &mut len);
    assert_eq!(code, Code::BufferTooSmall);
    assert_eq!(len, TETHER_PKCS11_CSR_MAX_LEN);
    assert_eq!(call(&mut buf, &mut len), Code::Ok);
    let pem = std::str::from_utf8(&buf[..len]).unwrap();
    assert!(
        pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"),
        "{pem}"
    );
    let csr = tokens().dir.join("from-c.csr");
    std::fs::write(&csr, pem).unwrap();
    let out = run(std::process::Command::new("openssl")
        .args(["req", "-verify", "-noout", "-subject", "-in"])
        .arg(&csr));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("verify OK") && text.contains("CN = p11-from-c"),
        "{text}"
    );
    // The key now exists: generating it again is refused.
    assert_eq!(call(&mut buf, &mut len), Code::Pkcs11KeyAmbiguous);
}
