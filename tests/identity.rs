//! Device identity against real peers: SAS tokens accepted by mosquitto, mutual TLS with
//! file keys and with an external signer against `openssl s_server -Verify 1` and mosquitto's
//! X.509 listener, the CLI's published vectors, and the refusals a user must understand.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{require, run, temp_dir, tether_cli, Mosquitto, Pki, SServer};
use rustls::SignatureScheme;
use tether::auth::sas::{self, Expiry, Resource, SasKey, SasToken};
use tether::auth::x509::{DeviceCertificate, ExternalSigner};
use tether::handshake;
use tether::internal::FixedClock;
use tether::policy::TlsPolicy;
use tether::{Code, Error};

const VECTOR_KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
const GROUP_KEY: &str =
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";

fn openssl(dir: &Path, args: &[&str]) -> std::process::Output {
    require("openssl", "openssl");
    run(Command::new("openssl").current_dir(dir).args(args))
}

/// Extra device certificates for these tests, signed by the shared test CA: an EC P-256 and
/// an EC P-384 device, a device named "other-device", and an expired device certificate.
struct Devices {
    dir: PathBuf,
}

impl Devices {
    fn get() -> &'static Devices {
        static D: OnceLock<Devices> = OnceLock::new();
        D.get_or_init(|| {
            let pki = Pki::shared();
            let dir = pki.dir.clone();
            let d = Devices { dir };
            d.ec_leaf("ec256", "ec-device", "prime256v1");
            d.ec_leaf("ec384", "ec384-device", "secp384r1");
            pki.leaf("other", "other-device", "clientAuth", "", "ca");
            d.expired_device();
            d
        })
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn ec_leaf(&self, name: &str, cn: &str, curve: &str) {
        let dir = &self.dir;
        std::fs::write(
            dir.join(format!("{name}.ext")),
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        openssl(
            dir,
            &["ecparam", "-name", curve, "-genkey", "-noout", "-out", &key],
        );
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "825",
                "-out",
                &pem,
                "-extfile",
                &ext,
            ],
        );
    }

    fn expired_device(&self) {
        let dir = &self.dir;
        std::fs::create_dir_all(dir.join("dev-db")).unwrap();
        std::fs::write(dir.join("dev-db/index.txt"), "").unwrap();
        std::fs::write(dir.join("dev-db/serial"), "2000\n").unwrap();
        std::fs::write(
            dir.join("expired-device.cnf"),
            "[ca]\ndefault_ca=test\n[test]\ndir=dev-db\ndatabase=dev-db/index.txt\n\
             serial=dev-db/serial\nnew_certs_dir=dev-db\ncertificate=ca.pem\nprivate_key=ca.key\n\
             default_md=sha256\npolicy=any\ncopy_extensions=none\nx509_extensions=ext\n\
             [any]\ncommonName=supplied\n[ext]\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "expired-device.key",
                "-out",
                "expired-device.csr",
                "-subj",
                "/CN=my-device",
            ],
        );
        openssl(
            dir,
            &[
                "ca",
                "-batch",
                "-config",
                "expired-device.cnf",
                "-in",
                "expired-device.csr",
                "-out",
                "expired-device.pem",
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200102000000Z",
            ],
        );
    }
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A signer that is another process: `openssl pkeyutl` signs the digest with the key file,
/// standing in for a secure element. tether only ever sees digests and signatures.
#[derive(Debug)]
struct OpensslSigner {
    key_path: String,
}

impl ExternalSigner for OpensslSigner {
    fn sign(
        &self,
        scheme: SignatureScheme,
        digest: &[u8],
        out: &mut [u8],
    ) -> tether::Result<usize> {
        let mut args = vec!["pkeyutl", "-sign", "-inkey", &self.key_path];
        let pkcs1 = ["-pkeyopt", "rsa_padding_mode:pkcs1"];
        let pss = [
            "-pkeyopt",
            "rsa_padding_mode:pss",
            "-pkeyopt",
            "rsa_pss_saltlen:digest",
        ];
        let md256 = ["-pkeyopt", "digest:sha256"];
        let md384 = ["-pkeyopt", "digest:sha384"];
        match scheme {
            SignatureScheme::RSA_PKCS1_SHA256 => args.extend(md256.iter().chain(&pkcs1)),
            SignatureScheme::RSA_PKCS1_SHA384 => args.extend(md384.iter().chain(&pkcs1)),
            SignatureScheme::RSA_PSS_SHA256 => args.extend(md256.iter().chain(&pss)),
            SignatureScheme::RSA_PSS_SHA384 => args.extend(md384.iter().chain(&pss)),
            _ => {} // ECDSA: pkeyutl signs the digest as given and returns DER
        }
        let mut child = Command::new("openssl")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl runs");
        child.stdin.take().unwrap().write_all(digest).unwrap();
        let output = child.wait_with_output().unwrap();
        if !output.status.success() || output.stdout.len() > out.len() {
            return Err(Error::new(
                Code::SignerFailed,
                format!(
                    "openssl pkeyutl: {}",
                    String::from_utf8_lossy(&output.stderr)
                ),
            ));
        }
        out[..output.stdout.len()].copy_from_slice(&output.stdout);
        Ok(output.stdout.len())
    }
}

fn policy_with_test_ca() -> TlsPolicy {
    let mut policy = TlsPolicy::new();
    policy.add_ca_file(&Pki::shared().path("ca.pem")).unwrap();
    policy
}

fn policy_with_file_key(cert: &str, key: &str) -> TlsPolicy {
    let mut policy = policy_with_test_ca();
    policy.set_client_cert_files(cert, key).unwrap();
    policy
}

fn policy_with_signer(cert: &str, key: &str) -> TlsPolicy {
    let mut policy = policy_with_test_ca();
    let device = DeviceCertificate::from_file(cert).unwrap();
    let certified = device
        .with_signer(Arc::new(OpensslSigner {
            key_path: key.to_owned(),
        }))
        .unwrap();
    policy.set_client_key(Arc::new(certified));
    policy
}

fn mutual_tls_server() -> SServer {
    let pki = Pki::shared();
    SServer::start(
        &pki.dir,
        &[
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
        ],
    )
}

fn check(policy: &TlsPolicy, port: u16) -> tether::Result<handshake::Negotiated> {
    handshake::check(
        "localhost",
        port,
        policy.build().unwrap(),
        policy.has_client_cert(),
        Duration::from_secs(10),
    )
}

// ---------------------------------------------------------------- minimal MQTT 3.1.1

fn mqtt_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn connect_packet(client_id: &str, username: &str, password: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, b"MQTT");
    body.push(4);
    body.push(0x80 | 0x02 | if password.is_some() { 0x40 } else { 0 });
    body.extend_from_slice(&60u16.to_be_bytes());
    mqtt_string(&mut body, client_id.as_bytes());
    mqtt_string(&mut body, username.as_bytes());
    if let Some(p) = password {
        mqtt_string(&mut body, p.as_bytes());
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

/// Connects over TLS with `policy`, sends CONNECT, returns the CONNACK return code.
fn mqtt_connect(
    policy: &TlsPolicy,
    port: u16,
    client_id: &str,
    username: &str,
    password: Option<&str>,
) -> u8 {
    let config = policy.build().unwrap();
    let name = handshake::server_name("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(&connect_packet(client_id, username, password))
        .unwrap();
    let mut connack = [0u8; 4];
    tls.read_exact(&mut connack).expect("a CONNACK");
    assert_eq!(connack[..2], [0x20, 0x02], "not a CONNACK: {connack:?}");
    connack[3]
}

// ---------------------------------------------------------------- published vectors (CLI)

fn openssl_hmac_base64(key_b64: &str, message: &[u8]) -> String {
    // The key is decoded by openssl itself, independently of tether.
    let hex: String = base64_decode_with_openssl(key_b64)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut child = Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-mac",
            "HMAC",
            "-macopt",
            &format!("hexkey:{hex}"),
            "-binary",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message).unwrap();
    let mac = child.wait_with_output().unwrap().stdout;
    let mut child = Command::new("openssl")
        .args(["base64", "-A"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&mac).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

fn base64_decode_with_openssl(b64: &str) -> Vec<u8> {
    require("openssl", "openssl");
    let mut child = Command::new("openssl")
        .args(["base64", "-d", "-A"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b64.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap().stdout
}

#[test]
fn openssl_agrees_with_the_published_hmac_vector() {
    // Guards the independent reference used by the CLI tests below.
    assert_eq!(
        openssl_hmac_base64(VECTOR_KEY, b"sign this message"),
        "8NJRMT83CcplGrAGaUVIUM/md5914KpWVNngSVoF9/M="
    );
}

#[test]
fn cli_sas_token_signs_the_published_string() {
    let (code, out, err) = tether_cli(&[
        "sas-token",
        "--resource",
        "myiothub.azure-devices.net/devices/my_device",
        "--key",
        VECTOR_KEY,
        "--expiry",
        "1578941692",
    ]);
    assert_eq!(code, 0, "{err}");
    let sig = openssl_hmac_base64(
        VECTOR_KEY,
        b"myiothub.azure-devices.net%2Fdevices%2Fmy_device\n1578941692",
    );
    let expected = format!(
        "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig={}&se=1578941692\n",
        sas::url_encode_string(&sig)
    );
    assert_eq!(out, expected);

    let (code, out, _) = tether_cli(&[
        "sas-token",
        "--resource",
        "myiothub.azure-devices.net/devices/my_device/modules/my_module",
        "--key",
        VECTOR_KEY,
        "--expiry",
        "1578941692",
        "--key-name",
        "owner",
    ]);
    assert_eq!(code, 0);
    let sig = openssl_hmac_base64(
        VECTOR_KEY,
        b"myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module\n1578941692",
    );
    assert_eq!(
        out,
        format!(
            "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module&sig={}&se=1578941692&skn=owner\n",
            sas::url_encode_string(&sig)
        )
    );
}

#[test]
fn cli_derive_key_prints_the_published_vector() {
    let (code, out, err) = tether_cli(&[
        "derive-key",
        "--group-key",
        GROUP_KEY,
        "--registration-id",
        "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=\n");
}

#[test]
fn cli_thumbprint_matches_openssl_fingerprints() {
    let pki = Pki::shared();
    let (code, out, err) = tether_cli(&["thumbprint", &pki.path("device.pem")]);
    assert_eq!(code, 0, "{err}");
    let fingerprint = |md: &str| {
        let out = openssl(
            &pki.dir,
            &["x509", "-in", "device.pem", "-noout", "-fingerprint", md],
        );
        let text = String::from_utf8(out.stdout).unwrap();
        text.split_once('=').unwrap().1.trim().replace(':', "")
    };
    assert_eq!(
        out,
        format!(
            "SHA1 {}\nSHA256 {}\n",
            fingerprint("-sha1"),
            fingerprint("-sha256")
        )
    );
    // DER gives the same answer.
    let (_, der_out, _) = tether_cli(&["thumbprint", &pki.path("device.der")]);
    assert_eq!(der_out, out);
}

#[test]
fn cli_connection_string_token_verifies_and_errors_exit_nonzero() {
    let (code, out, err) = tether_cli(&[
        "sas-token",
        "--connection-string",
        &format!("HostName=h.example;DeviceId=dev1;SharedAccessKey={VECTOR_KEY}"),
        "--ttl",
        "600",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1);
    let key = SasKey::from_base64(VECTOR_KEY).unwrap();
    let parsed = sas::verify_for(out.trim_end(), &key, "h.example/devices/dev1", 0).unwrap();
    assert!(parsed.expiry_unix > 1_735_689_600);
    for (args, needle) in [
        (
            vec![
                "sas-token",
                "--resource",
                "h/devices/a b",
                "--key",
                "AAAA",
                "--ttl",
                "5",
            ],
            "TETHER_RESULT_ID_INVALID",
        ),
        (
            vec![
                "sas-token",
                "--resource",
                "h/devices/a",
                "--key",
                "A*AA",
                "--ttl",
                "5",
            ],
            "TETHER_RESULT_SAS_KEY_INVALID",
        ),
        (
            vec!["sas-token", "--resource", "h/devices/a"],
            "TETHER_RESULT_INVALID_ARGUMENT",
        ),
        (
            vec!["sas-token", "--connection-string", "HostName=h;DeviceId=d"],
            "TETHER_RESULT_CONNECTION_STRING_INVALID",
        ),
        (
            vec![
                "derive-key",
                "--group-key",
                GROUP_KEY,
                "--registration-id",
                "a/b",
            ],
            "TETHER_RESULT_ID_INVALID",
        ),
        (
            vec!["thumbprint", "/nonexistent.pem"],
            "TETHER_RESULT_FILE_NOT_READABLE",
        ),
    ] {
        let (code, out, err) = tether_cli(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("A*AA"), "the key is never echoed: {err}");
    }
}

// ---------------------------------------------------------------- SAS against mosquitto

#[test]
fn sas_token_is_accepted_by_mosquitto_and_a_wrong_one_refused() {
    require("mosquitto_passwd", "mosquitto");
    let pki = Pki::shared();
    let host = "localhost";
    let device = "sas-device";
    let username = format!("{host}/{device}/?api-version=2021-04-12");
    let key = SasKey::from_base64(VECTOR_KEY).unwrap();
    let resource = Resource::device(host, device).unwrap();
    // A password file matches one exact token, so the expiry is fixed for the test.
    let now = 1_800_000_000;
    let token = SasToken::generate(
        &resource,
        &key,
        None,
        Expiry::In { ttl_secs: 3600 },
        &FixedClock(now),
    )
    .unwrap();
    let dir = temp_dir("sas-broker");
    let passwd = dir.join("passwd");
    std::fs::write(&passwd, "").unwrap();
    run(Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&passwd)
        .arg(&username)
        .arg(token.as_str()));
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        format!("user {username}\ntopic readwrite devices/{device}/#\n"),
    )
    .unwrap();
    let broker = Mosquitto::start(&Mosquitto::tls_listener(
        "{port}",
        pki,
        &format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\n",
            passwd.display(),
            acl.display()
        ),
    ));
    let policy = policy_with_test_ca();
    let rc = mqtt_connect(
        &policy,
        broker.port,
        device,
        &username,
        Some(token.as_str()),
    );
    assert_eq!(rc, 0, "broker log:\n{}", broker.log());
    // The same token verifies locally, as the hub stand-in will check it.
    sas::verify_for(
        token.as_str(),
        &key,
        "localhost/devices/sas-device",
        now + 10,
    )
    .unwrap();
    // A token from another key is refused by the broker (CONNACK 5, not authorized).
    let other = SasKey::from_bytes(b"not the device key").unwrap();
    let wrong = SasToken::generate(
        &resource,
        &other,
        None,
        Expiry::In { ttl_secs: 3600 },
        &FixedClock(now),
    )
    .unwrap();
    let rc = mqtt_connect(
        &policy,
        broker.port,
        device,
        &username,
        Some(wrong.as_str()),
    );
    assert_eq!(rc, 5);
    assert_eq!(
        sas::verify(wrong.as_str(), &key, now).unwrap_err().code(),
        Code::SignatureMismatch
    );
}

// ---------------------------------------------------------------- mutual TLS

#[test]
fn mutual_tls_with_file_keys_against_s_server() {
    let pki = Pki::shared();
    let devices = Devices::get();
    for (cert, key) in [
        (pki.path("device.pem"), pki.path("device.key")),
        (devices.path("ec256.pem"), devices.path("ec256.key")),
    ] {
        let server = mutual_tls_server();
        let negotiated = check(&policy_with_file_key(&cert, &key), server.port)
            .unwrap_or_else(|e| panic!("{cert}: {e:?}\n{}", server.log()));
        assert_eq!(negotiated.version, "TLSv1.2");
    }
}

#[test]
fn mutual_tls_with_external_signer_rsa_and_ec_against_s_server() {
    let pki = Pki::shared();
    let devices = Devices::get();
    for (cert, key) in [
        (pki.path("device.pem"), pki.path("device.key")),
        (devices.path("ec256.pem"), devices.path("ec256.key")),
        (devices.path("ec384.pem"), devices.path("ec384.key")),
    ] {
        let server = mutual_tls_server();
        check(&policy_with_signer(&cert, &key), server.port)
            .unwrap_or_else(|e| panic!("{cert}: {e:?}\n{}", server.log()));
    }
}

#[test]
fn without_a_client_certificate_s_server_refuses() {
    let server = mutual_tls_server();
    let e = check(&policy_with_test_ca(), server.port).unwrap_err();
    assert!(e.code().is_tls(), "{e:?}");
}

#[test]
fn mutual_tls_against_mosquitto_x509_listener_with_file_key_and_signer() {
    let pki = Pki::shared();
    let broker = Mosquitto::start(&Mosquitto::tls_listener(
        "{port}",
        pki,
        "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n",
    ));
    let username = "localhost/my-device/?api-version=2021-04-12";
    let cert = pki.path("device.pem");
    let key = pki.path("device.key");
    DeviceCertificate::from_file(&cert)
        .unwrap()
        .check_identity("my-device", None)
        .unwrap();
    let rc = mqtt_connect(
        &policy_with_file_key(&cert, &key),
        broker.port,
        "my-device",
        username,
        None,
    );
    assert_eq!(rc, 0, "{}", broker.log());
    let rc = mqtt_connect(
        &policy_with_signer(&cert, &key),
        broker.port,
        "my-device",
        username,
        None,
    );
    assert_eq!(rc, 0, "{}", broker.log());
}

// ---------------------------------------------------------------- refusals

#[test]
fn certificate_for_another_device_is_refused_with_its_cn() {
    Devices::get();
    let cert = DeviceCertificate::from_file(&Pki::shared().path("other.pem")).unwrap();
    let e = cert.check_identity("my-device", None).unwrap_err();
    assert_eq!(e.code(), Code::CertDeviceMismatch);
    assert_eq!(
        e.message(),
        "the certificate is for \"other-device\" (its CN), not for \"my-device\""
    );
    let e = cert
        .check_identity("other-device", Some("mod"))
        .unwrap_err();
    assert_eq!(e.code(), Code::CertDeviceMismatch);
}

#[test]
fn expired_client_certificate_is_refused_with_dates() {
    let devices = Devices::get();
    let cert = DeviceCertificate::from_file(&devices.path("expired-device.pem")).unwrap();
    let e = cert.check_validity(1_800_000_000).unwrap_err();
    assert_eq!(e.code(), Code::CertExpired);
    assert!(e.message().contains("expired on 2020-01-02"), "{e:?}");
    assert!(cert.expires_within(1_800_000_000, 30));
    // The server refuses it too, if a device sends it anyway.
    let server = mutual_tls_server();
    let policy = policy_with_file_key(
        &devices.path("expired-device.pem"),
        &devices.path("expired-device.key"),
    );
    assert!(check(&policy, server.port).is_err());
}

#[test]
fn key_that_does_not_match_the_certificate_is_refused() {
    let pki = Pki::shared();
    let devices = Devices::get();
    let mut policy = policy_with_test_ca();
    let e = policy
        .set_client_cert_files(&pki.path("device.pem"), &pki.path("other.key"))
        .unwrap_err();
    assert_eq!(e.code(), Code::KeyCertMismatch);
    let cert = DeviceCertificate::from_file(&pki.path("device.pem")).unwrap();
    let e = cert
        .with_private_key(&read(&pki.path("other.key")))
        .unwrap_err();
    assert_eq!(e.code(), Code::KeyCertMismatch);
    // An external signer holding another key is caught at registration.
    let e = cert
        .with_signer(Arc::new(OpensslSigner {
            key_path: pki.path("other.key"),
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::KeyCertMismatch, "{e:?}");
    let ec = DeviceCertificate::from_file(&devices.path("ec256.pem")).unwrap();
    let e = ec
        .with_signer(Arc::new(OpensslSigner {
            key_path: devices.path("ec384.key"),
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::KeyCertMismatch, "{e:?}");
}

// ---------------------------------------------------------------- C programs

const STRICT: &[&str] = &["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror"];

/// target/<profile>/libtether.a, built by `cargo build --lib` before the tests.
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().parent().unwrap().join("libtether.a");
    assert!(
        lib.exists(),
        "{} not found: `cargo test` builds only the rlib; run `cargo build --lib` first (.ci/test does)",
        lib.display()
    );
    lib
}

fn build_c(name: &str, source: &Path, extra: &[&str]) -> PathBuf {
    require("cc", "gcc");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = temp_dir(name).join(name);
    run(Command::new("cc")
        .args(STRICT)
        .arg("-D_POSIX_C_SOURCE=200809L")
        .arg(format!("-I{}", root.join("include").display()))
        .arg(source)
        .arg("-o")
        .arg(&out)
        .arg(static_lib())
        .args(extra)
        .args(common::STATIC_LIBS));
    out
}

#[test]
fn c_program_gets_published_vectors_and_distinct_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let program = build_c(
        "identity_checks",
        &root.join("tests/c/identity_checks.c"),
        &[],
    );
    let pki = Pki::shared();
    let out = Command::new(&program)
        .arg(pki.path("device.der"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    let tokens: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("TOKEN "))
        .collect();
    let sig = openssl_hmac_base64(
        VECTOR_KEY,
        b"myiothub.azure-devices.net%2Fdevices%2Fmy_device\n1578941692",
    );
    assert_eq!(
        tokens[0],
        format!(
            "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig={}&se=1578941692",
            sas::url_encode_string(&sig)
        )
    );
    let sig = openssl_hmac_base64(
        VECTOR_KEY,
        b"myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module\n1578941692",
    );
    assert!(tokens[1].contains(&format!("&sig={}&", sas::url_encode_string(&sig))));
    // An id with every character IoT Hub allows: signed as the embedded C SDK encodes it.
    let sr =
        "myiothub.azure-devices.net%2Fdevices%2Fa-%3A.%2B%25_%23%2A%3F%21%28%29%2C%3D%40%3B%24%27";
    let sig = openssl_hmac_base64(VECTOR_KEY, format!("{sr}\n1578941692").as_bytes());
    assert_eq!(
        tokens[2],
        format!(
            "SharedAccessSignature sr={sr}&sig={}&se=1578941692",
            sas::url_encode_string(&sig)
        )
    );
    let (_, cli, _) = tether_cli(&["thumbprint", &pki.path("device.der")]);
    for line in stdout.lines().filter(|l| l.starts_with("SHA")) {
        assert!(cli.contains(line), "{line} vs {cli}");
    }
}

#[test]
fn c_example_x509_signer_completes_mutual_tls_rsa_and_ec() {
    require("pkg-config", "pkg-config");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crypto = Command::new("pkg-config")
        .args(["--exists", "libcrypto"])
        .status()
        .unwrap();
    assert!(
        crypto.success(),
        "OpenSSL's libcrypto headers are missing: apt-get install -y libssl-dev"
    );
    let program = build_c(
        "x509_signer",
        &root.join("c-examples/x509_signer.c"),
        &["-lcrypto"],
    );
    let pki = Pki::shared();
    let devices = Devices::get();
    for (cert, key) in [
        (pki.path("device.pem"), pki.path("device.key")),
        (devices.path("ec256.pem"), devices.path("ec256.key")),
        (devices.path("ec384.pem"), devices.path("ec384.key")),
    ] {
        let server = mutual_tls_server();
        let out = Command::new(&program)
            .args([
                "localhost",
                &server.port.to_string(),
                &pki.path("ca.pem"),
                &cert,
                &key,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("OK TLSv1.2 "),
            "{cert}: {stdout}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        // Once to check the key at registration, once in the handshake.
        assert!(stdout.contains("signer called 2 times"), "{stdout}");
    }
    // A signer holding another key is refused at registration.
    let out = Command::new(&program)
        .args([
            "localhost",
            "1",
            &pki.path("ca.pem"),
            &pki.path("device.pem"),
            &pki.path("other.key"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("set_client_signer: TETHER_RESULT_KEY_CERT_MISMATCH"),
        "{stdout}"
    );
}
