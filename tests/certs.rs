//! Certificate lifecycle against the stand-in (`tether hub --dps-port`): a certificate issued
//! by DPS from a CSR, checked independently with `openssl verify`, used to connect, renewed
//! through `$iothub/credentials` while telemetry flows (nothing lost), the protocol's
//! throttling and conflict answers, a refused certificate rolled back, and a credential
//! store that survives a crash in the middle of a write.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::hub::{now, Hub, HOST};
use common::{free_port, require, temp_dir};
use tether::auth::csr::{verify_issued, DeviceKey};
use tether::auth::sas::SasKey;
use tether::auth::store::{CredentialStore, FolderStore, StoredCredential};
use tether::client::{Client, ClientOptions};
use tether::mqtt::properties::PropertyBag;
use tether::policy::TlsPolicy;
use tether::provisioning::{provision_with_csr, DpsCredential, DpsRequest};
use tether::session::{CertificateEvent, Event, RenewalSettings, SessionConfig, SessionOptions};
use tether::Code;

const SCOPE: &str = "0ne0000CE27";
const KEY: &str = "Y2VydHMgdGVzdCBlbnJvbGxtZW50IGtleSwgdGVzdHMgb25seQ==";

fn enrollment(reg: &str, simulate: &str) -> String {
    format!(
        r#"{{"registrationId": "{reg}", "deviceId": "{reg}", "provisioningStatus": "enabled",
            "attestation": {{"type": "symmetricKey", "symmetricKey": {{"primaryKey": "{KEY}"}}}},
            "clientCertificateIssuancePolicy": {{"certificateAuthorityName": "stand-in"}},
            "simulate": {simulate}}}"#
    )
}

fn registry_for(host: &str, enrollments: &[String]) -> String {
    format!(
        r#"{{"hostName": "{host}", "devices": [],
            "dps": {{"idScope": "{SCOPE}", "enrollments": [{}]}}}}"#,
        enrollments.join(",")
    )
}

/// A stand-in with DPS whose certificates live `validity` seconds.
fn hub(enrollments: &[String], validity: u64) -> (Hub, u16) {
    hub_for(HOST, enrollments, validity)
}

fn hub_for(host: &str, enrollments: &[String], validity: u64) -> (Hub, u16) {
    let dps = free_port();
    let hub = Hub::start_full(
        &registry_for(host, enrollments),
        |_| {},
        &[
            "--dps-port",
            &dps.to_string(),
            "--issued-validity",
            &validity.to_string(),
        ],
    );
    assert!(
        hub.ready.ends_with(&format!(" dps={dps}")),
        "ready line {:?} names the DPS port",
        hub.ready
    );
    (hub, dps)
}

fn policy(hub: &Hub) -> TlsPolicy {
    let mut p = TlsPolicy::new();
    p.add_ca_file(&hub.ca()).unwrap();
    p
}

fn roots(hub: &Hub) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    tether::policy::load_certificates(&std::fs::read(hub.ca()).unwrap()).unwrap()
}

/// Provisions `reg` through the stand-in's DPS with a CSR: the key and the issued chain.
fn provision(hub: &Hub, dps: u16, reg: &str) -> (DeviceKey, Vec<Vec<u8>>, String) {
    let key = DeviceKey::generate().unwrap();
    let request = DpsRequest {
        endpoint: "localhost".into(),
        port: dps,
        id_scope: SCOPE.into(),
        registration_id: reg.into(),
        credential: DpsCredential::SymmetricKey {
            key: Box::new(SasKey::from_base64(KEY).unwrap()),
            group: false,
        },
        tls: policy(hub).build().unwrap(),
        has_client_cert: false,
        timeout: Duration::from_secs(30),
        transport: tether::transport::Transport::Mqtt,
        websocket_port: tether::defaults::WEBSOCKET_PORT,
        proxy: None,
    };
    let (assignment, chain) = provision_with_csr(&request, &key.csr_base64(reg).unwrap(), now())
        .unwrap_or_else(|e| {
            panic!("provisioning {reg} failed: {e}\n{}", hub.log());
        });
    assert_eq!(assignment.assigned_hub, HOST);
    assert_eq!(assignment.device_id, reg);
    (key, chain, assignment.device_id)
}

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// `openssl verify` of `chain` (leaf first) against the stand-in's root: its output.
fn openssl_verify(hub: &Hub, chain: &[Vec<u8>], dir: &Path) -> String {
    require("openssl", "openssl");
    let leaf = dir.join("leaf.pem");
    let untrusted = dir.join("intermediates.pem");
    std::fs::write(&leaf, pem(&chain[0])).unwrap();
    let rest: String = chain[1..].iter().map(|c| pem(c)).collect();
    std::fs::write(&untrusted, rest).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(hub.ca())
        .arg("-untrusted")
        .arg(&untrusted)
        .arg(&leaf)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A client for the device with `key` and `chain`, renewing through the hub.
fn client(
    hub: &Hub,
    device: &str,
    key: DeviceKey,
    chain: Vec<Vec<u8>>,
    store: Option<Box<dyn CredentialStore>>,
) -> Client {
    let mut p = policy(hub);
    p.set_client_key(key.certified_key(&chain).unwrap());
    let config = SessionConfig {
        hub_host: HOST.into(),
        server_name: "localhost".into(),
        device_id: device.into(),
        module_id: None,
        credential: tether::auth::connection_string::Credential::X509,
        tls: p.build().unwrap(),
        has_client_cert: true,
        options: SessionOptions::default(),
    };
    let mut c = Client::new(
        config,
        ClientOptions {
            port: hub.x509,
            retry_min_ms: 100,
            retry_max_ms: 1000,
            retry_jitter_ms: 100,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let settings = RenewalSettings {
        fraction: tether::session::DEFAULT_RENEW_FRACTION,
        roots: roots(hub),
        policy: policy(hub),
    };
    c.enable_certificate_renewal(settings, key, chain, store)
        .unwrap();
    c
}

#[test]
fn a_certificate_issued_by_dps_connects_and_is_renewed_twice_while_telemetry_flows() {
    const REG: &str = "cert-device-1";
    let validity = 15;
    let (hub, dps) = hub(&[enrollment(REG, "{}")], validity);
    let (key, chain, device) = provision(&hub, dps, REG);
    assert_eq!(chain.len(), 2, "leaf and issuing CA");

    // The chain is for the CSR's key, valid now, and chains to the stand-in's root: checked by
    // tether and, independently, by openssl.
    let issued = verify_issued(&chain, &key, &roots(&hub), now() as i64).unwrap();
    assert_eq!(issued.common_name, REG);
    assert!(issued.not_after - issued.not_before <= validity as i64);
    let dir = temp_dir("certs-verify");
    let verdict = openssl_verify(&hub, &chain, &dir);
    assert!(
        verdict.trim_end().ends_with(": OK"),
        "openssl verify: {verdict}"
    );

    // Another key does not match the chain: refused by name.
    let other = DeviceKey::generate().unwrap();
    assert_eq!(
        verify_issued(&chain, &other, &roots(&hub), now() as i64)
            .unwrap_err()
            .code(),
        Code::KeyCertMismatch
    );

    let store_dir = temp_dir("certs-store");
    let mut store = FolderStore::open(&store_dir).unwrap();
    let first = StoredCredential {
        generation: 0,
        hub: HOST.into(),
        device_id: device.clone(),
        chain: chain.clone(),
        key_pkcs8: key.pkcs8_der(),
    };
    assert_eq!(store.save(&first).unwrap(), 1);

    let mut c = client(&hub, &device, key, chain, Some(Box::new(store.clone())));
    c.connect(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("connect with the issued certificate: {e}\n{}", hub.log()));

    // Telemetry every 100 ms until two renewals are in force.
    let mut sent = Vec::new();
    let mut acked = std::collections::BTreeSet::new();
    let mut swapped = Vec::new();
    let mut connections = 0;
    let deadline = Instant::now() + Duration::from_secs(3 * validity + 20);
    let mut next_send = Instant::now();
    while swapped.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "two renewals within {}s; swapped {swapped:?}\n{}",
            3 * validity + 20,
            hub.log()
        );
        if Instant::now() >= next_send {
            let body = format!("reading {}", sent.len());
            sent.push(
                c.send_telemetry(body.as_bytes(), &PropertyBag::new(), 1)
                    .unwrap(),
            );
            next_send += Duration::from_millis(100);
        }
        match c.poll(Duration::from_millis(50)).unwrap() {
            Some(Event::TelemetryAcked { id }) => {
                acked.insert(id);
            }
            Some(Event::Connected { .. }) => connections += 1,
            Some(Event::Certificate(CertificateEvent::Swapped { not_after, .. })) => {
                swapped.push(not_after)
            }
            Some(Event::Certificate(
                e @ (CertificateEvent::RolledBack { .. } | CertificateEvent::RenewalFailed { .. }),
            )) => panic!("renewal failed: {e:?}\n{}", hub.log()),
            _ => {}
        }
    }
    assert!(swapped[1] > swapped[0], "each renewal extends validity");
    // Every QoS 1 message sent across both swaps is acknowledged.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.len() < sent.len() && Instant::now() < deadline {
        if let Some(Event::TelemetryAcked { id }) = c.poll(Duration::from_millis(100)).unwrap() {
            acked.insert(id);
        }
    }
    let lost: Vec<_> = sent.iter().filter(|id| !acked.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} QoS 1 messages lost: {lost:?}",
        lost.len(),
        sent.len()
    );
    assert!(
        connections >= 2,
        "the swaps reconnected ({connections} connections)"
    );
    assert!(
        sent.len() > 50,
        "telemetry flowed ({} messages)",
        sent.len()
    );

    // The store holds the last two generations; the newest is the certificate in force, and
    // it verifies with openssl too.
    let stored = FolderStore::open(&store_dir)
        .unwrap()
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(stored.generation, 3);
    let key = DeviceKey::from_pkcs8(stored.key_pkcs8.as_ref().unwrap()).unwrap();
    let now_issued = verify_issued(&stored.chain, &key, &roots(&hub), now() as i64).unwrap();
    assert_eq!(now_issued.not_after, swapped[1]);
    let verdict = openssl_verify(&hub, &stored.chain, &dir);
    assert!(
        verdict.trim_end().ends_with(": OK"),
        "openssl verify: {verdict}"
    );
    assert!(hub
        .log()
        .contains(&format!("issued a renewed certificate to \"{device}\"")));
    c.disconnect();
}

/// Runs the client until `want` certificate events happened (or fails after `secs`).
fn certificate_events(
    c: &mut Client,
    hub: &Hub,
    secs: u64,
    done: impl Fn(&[CertificateEvent]) -> bool,
) -> (Vec<CertificateEvent>, usize) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut events = Vec::new();
    let mut connections = 0;
    while !done(&events) {
        assert!(
            Instant::now() < deadline,
            "certificate events so far: {events:?}\n{}",
            hub.log()
        );
        match c.poll(Duration::from_millis(100)).unwrap() {
            Some(Event::Certificate(e)) => events.push(e),
            Some(Event::Connected { .. }) => connections += 1,
            _ => {}
        }
    }
    (events, connections)
}

#[test]
fn throttling_and_an_active_request_are_handled_as_the_protocol_says() {
    const REG: &str = "cert-device-knobs";
    let (hub, dps) = hub(
        &[enrollment(REG, r#"{"throttle": 1, "conflict": 1}"#)],
        3600,
    );
    let (key, chain, device) = provision(&hub, dps, REG);
    let mut c = client(&hub, &device, key, chain, None);
    c.connect(Duration::from_secs(20)).unwrap();
    let started = Instant::now();
    c.renew_certificate().unwrap();
    let (events, _) = certificate_events(&mut c, &hub, 40, |e| {
        e.iter()
            .any(|e| matches!(e, CertificateEvent::Swapped { .. }))
    });
    // 429002 with retryAfter 2: one failure that will be retried, and the wait honoured.
    let throttled = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                CertificateEvent::RenewalFailed {
                    will_retry: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(throttled, 1, "{events:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "retryAfter 2 s honoured"
    );
    // Three requests: throttled, 409005 (then sent again with replace), accepted.
    let requests: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            CertificateEvent::RenewalRequested { request_id } => Some(request_id),
            _ => None,
        })
        .collect();
    assert_eq!(requests.len(), 3, "{events:?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, CertificateEvent::Issued { .. })));
    c.disconnect();
}

#[test]
fn a_renewed_certificate_the_hub_refuses_is_rolled_back() {
    const REG: &str = "cert-device-refused";
    let (hub, dps) = hub(&[enrollment(REG, r#"{"refuseRenewed": true}"#)], 3600);
    let (key, chain, device) = provision(&hub, dps, REG);
    let mut c = client(&hub, &device, key, chain, None);
    c.connect(Duration::from_secs(20)).unwrap();
    c.renew_certificate().unwrap();
    let (events, _) = certificate_events(&mut c, &hub, 40, |e| {
        e.iter()
            .any(|e| matches!(e, CertificateEvent::RolledBack { .. }))
    });
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, CertificateEvent::Swapped { .. })),
        "{events:?}"
    );
    // The previous certificate connects again, and telemetry goes through.
    let id = c
        .send_telemetry(b"after rollback", &PropertyBag::new(), 1)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "no ack after rollback\n{}",
            hub.log()
        );
        if let Some(Event::TelemetryAcked { id: acked }) =
            c.poll(Duration::from_millis(100)).unwrap()
        {
            if acked == id {
                break;
            }
        }
    }
    assert!(hub
        .log()
        .contains("certificate issued by renewal refused (simulate.refuseRenewed)"));
    c.disconnect();
}

/// The child of the crash test: saves generations in a loop until killed. Run by
/// `a_crash_in_the_middle_of_a_store_write_leaves_a_whole_credential` only.
#[test]
#[ignore = "run as a child process by the crash test"]
fn store_writer_child() {
    let dir = std::env::var("TETHER_STORE_CHILD_DIR").expect("run by the crash test");
    let mut store = FolderStore::open(dir).unwrap();
    let key = DeviceKey::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["crash-device".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "crash-device");
    params.serial_number = Some(rcgen::SerialNumber::from(7u64));
    let cert = params.self_signed(&key).unwrap();
    let credential = StoredCredential {
        generation: 0,
        hub: HOST.into(),
        device_id: "crash-device".into(),
        chain: vec![cert.der().to_vec(); 3],
        key_pkcs8: key.pkcs8_der(),
    };
    loop {
        store.save(&credential).unwrap();
    }
}

#[test]
fn a_crash_in_the_middle_of_a_store_write_leaves_a_whole_credential() {
    let dir = temp_dir("certs-crash");
    let mut last = 0;
    for round in 0..12u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "store_writer_child", "--nocapture"])
            .env("TETHER_STORE_CHILD_DIR", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Killed (SIGKILL) at a different point of its write loop each round.
        std::thread::sleep(Duration::from_millis(150 + 37 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        let loaded = FolderStore::open(&dir).unwrap().load().unwrap();
        let Some(credential) = loaded else {
            continue; // killed before its first save finished
        };
        assert!(credential.generation >= last, "generations never go back");
        last = credential.generation;
        assert_eq!(credential.device_id, "crash-device");
        assert_eq!(credential.chain.len(), 3, "the whole chain");
        let key = DeviceKey::from_pkcs8(credential.key_pkcs8.as_ref().unwrap()).unwrap();
        key.certified_key(&credential.chain)
            .expect("the stored key is the stored certificate's");
    }
    assert!(last > 12, "the writer made progress ({last} generations)");
}

fn cli(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    for name in tether::client::env::ALL {
        cmd.env_remove(name);
    }
    cmd.args(args).output().unwrap()
}

#[test]
fn cli_provision_with_a_csr_then_send_with_the_stored_credentials() {
    const REG: &str = "cli-device";
    // The hub's host name is localhost, so the stored credentials reach it as they are.
    let (hub, dps) = hub_for("localhost", &[enrollment(REG, "{}")], 3600);
    let dir = temp_dir("certs-cli").join("creds");
    let dir_s = dir.to_string_lossy().into_owned();
    let ca = hub.ca();
    let out = cli(&[
        "provision",
        "--id-scope",
        SCOPE,
        "--registration-id",
        REG,
        "--sas-key",
        KEY,
        "--csr",
        "--out",
        &dir_s,
        "--endpoint",
        "localhost",
        "--port",
        &dps.to_string(),
        "--ca",
        &ca,
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "provision: {stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        hub.log()
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["assignedHub"], "localhost");
    assert_eq!(v["deviceId"], REG);
    assert_eq!(v["generation"], 1);
    // The stored chain verifies with openssl; the key is the owner's only.
    let gen = dir.join("gen-1");
    let chain = tether::policy::load_certificates(&std::fs::read(gen.join("chain.pem")).unwrap())
        .unwrap()
        .into_iter()
        .map(|c| c.as_ref().to_vec())
        .collect::<Vec<_>>();
    let verdict = openssl_verify(&hub, &chain, &temp_dir("certs-cli-verify"));
    assert!(
        verdict.trim_end().ends_with(": OK"),
        "openssl verify: {verdict}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(gen.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = cli(&[
        "send",
        "--credentials",
        &dir_s,
        "--port",
        &hub.x509.to_string(),
        "--ca",
        &ca,
        "--count",
        "3",
        "reading",
    ]);
    assert!(
        out.status.success(),
        "send: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        hub.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sent 3 acked 3"
    );
    assert!(hub.log().contains(&format!("accepted \"{REG}\"")));
}

#[test]
fn a_certificate_set_on_a_live_client_is_used_from_the_next_connection() {
    const REG: &str = "cert-device-swap";
    let (hub, dps) = hub(&[enrollment(REG, "{}")], 3600);
    let (key, chain, device) = provision(&hub, dps, REG);
    let mut p = policy(&hub);
    p.set_client_key(key.certified_key(&chain).unwrap());
    let good = p.build().unwrap();
    let mut c = client(&hub, &device, key, chain, None);
    c.connect(Duration::from_secs(20)).unwrap();

    // A certificate for the device that no registered CA issued.
    let stranger = DeviceKey::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, device.as_str());
    params.serial_number = Some(rcgen::SerialNumber::from(9u64));
    let self_signed = params.self_signed(&stranger).unwrap();
    let mut p = policy(&hub);
    p.set_client_key(
        stranger
            .certified_key(&[self_signed.der().to_vec()])
            .unwrap(),
    );
    c.session_mut().set_tls_config(p.build().unwrap(), true);

    // The connection in use is not touched...
    let id = c
        .send_telemetry(b"still on the old certificate", &PropertyBag::new(), 1)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no ack\n{}", hub.log());
        if let Some(Event::TelemetryAcked { id: acked }) =
            c.poll(Duration::from_millis(100)).unwrap()
        {
            if acked == id {
                break;
            }
        }
    }
    // ...the next one uses the new certificate (refused: no registered CA issued it)...
    c.disconnect();
    let refused = c.connect(Duration::from_secs(10)).unwrap_err();
    assert!(
        matches!(
            refused.code(),
            Code::ClientCertRejected
                | Code::NotAuthorized
                | Code::CertUntrusted
                | Code::TlsHandshakeFailed
        ),
        "refused with {refused}"
    );
    // ...and setting the issued one back connects again.
    c.session_mut().set_tls_config(good, true);
    c.connect(Duration::from_secs(20)).unwrap();
    c.disconnect();
}

#[test]
fn a_renewal_answered_while_the_device_is_away_arrives_after_it_reconnects() {
    const REG: &str = "cert-device-away";
    let (hub, dps) = hub(&[enrollment(REG, "{}")], 3600);
    let (key, chain, device) = provision(&hub, dps, REG);
    let mut c = client(&hub, &device, key, chain, None);
    c.connect(Duration::from_secs(20)).unwrap();
    c.renew_certificate().unwrap();
    // The request goes out; the device leaves before the hub has the certificate ready.
    certificate_events(&mut c, &hub, 20, |e| {
        e.iter()
            .any(|e| matches!(e, CertificateEvent::RenewalRequested { .. }))
    });
    c.disconnect();
    // The stand-in answers 200 one second after the request, to a subscribed device only.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !hub.log()
            .contains(&format!("issued a renewed certificate to \"{device}\"")),
        "the certificate waited for the device\n{}",
        hub.log()
    );
    c.connect(Duration::from_secs(20)).unwrap();
    let (events, _) = certificate_events(&mut c, &hub, 30, |e| {
        e.iter()
            .any(|e| matches!(e, CertificateEvent::Swapped { .. }))
    });
    // One request only: the answer to it arrived on the new connection.
    let requests = events
        .iter()
        .filter(|e| matches!(e, CertificateEvent::RenewalRequested { .. }))
        .count();
    assert_eq!(requests, 0, "no new request after reconnecting: {events:?}");
    c.disconnect();
}
