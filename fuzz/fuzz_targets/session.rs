//! The device session fed arbitrary broker bytes after a real TLS 1.2 handshake (or, for
//! input starting with 0xFF, arbitrary plaintext in place of the server's handshake).
//!
//! An in-memory rustls server (test certificate for localhost, `fuzz/certs/`) completes the
//! handshake with the session under the IoT Hub policy, reads its CONNECT, accepts it with a
//! CONNACK, then encrypts the fuzz input as application data in chunks whose sizes the
//! input chooses. The session must never panic, and must turn anything malformed into an
//! error or an event; events and output are drained after every chunk, and time moves on.
#![no_main]

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection};
use tether::auth::connection_string::{Credential, KeyPair};
use tether::auth::sas::SasKey;
use tether::internal::FixedClock;
use tether::mqtt::properties::PropertyBag;
use tether::session::{Session, SessionConfig, SessionOptions, Subscription};

/// 2030-01-01: inside the test certificates' validity, after the clock floor.
const NOW_UNIX: u64 = 1_893_456_000;
const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";

fn configs() -> &'static (SessionConfig, Arc<ServerConfig>) {
    static CONFIGS: OnceLock<(SessionConfig, Arc<ServerConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let ca = include_bytes!("../certs/ca.der");
        let server = include_bytes!("../certs/server.der");
        let key = include_bytes!("../certs/server.key.der");
        let mut policy = tether::policy::TlsPolicy::new();
        policy.add_ca(ca).unwrap();
        policy.enable_ecdsa_suites(true);
        policy.set_clock(Arc::new(FixedClock(NOW_UNIX)));
        let client = SessionConfig {
            hub_host: "fuzz-hub.azure-devices.net".into(),
            server_name: "localhost".into(),
            device_id: "fuzz-device".into(),
            module_id: None,
            credential: Credential::Keys {
                keys: Box::new(KeyPair::new(SasKey::from_base64(KEY).unwrap())),
                key_name: None,
            },
            tls: policy.build().unwrap(),
            has_client_cert: false,
            options: SessionOptions::default(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(server.to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
            )
            .unwrap();
        (client, Arc::new(server))
    })
}

/// Moves the session's output to the server and the server's back; returns false when
/// the session failed.
fn pump(session: &mut Session, server: &mut ServerConnection, now_ms: u64) -> bool {
    let mut out = Vec::new();
    session.poll_output(&mut out);
    let mut rd = &out[..];
    while !rd.is_empty() {
        if server.read_tls(&mut rd).is_err() || server.process_new_packets().is_err() {
            return false;
        }
    }
    let mut back = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut back).unwrap();
    }
    back.is_empty() || session.handle_input(&back, now_ms).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let (client, server_config) = configs();
    let mut session = Session::new(client.clone()).unwrap();
    // Pending SUBACKs and a PUBACK to wait for, so those paths have something to match.
    session.subscribe(Subscription::C2d, 0).unwrap();
    session.subscribe(Subscription::Methods, 0).unwrap();
    session.subscribe(Subscription::Twin, 0).unwrap();
    let mut now_ms = NOW_UNIX * 1000;
    session
        .send_telemetry(b"{\"t\":1}", &PropertyBag::new(), 1, now_ms)
        .unwrap();
    session.connect(now_ms).unwrap();
    // Input starting with 0xFF: plaintext bytes from a hostile or downgraded server during
    // the handshake (the session's ServerHello sniffer and its naming of TLS refusals).
    if let Some(raw) = data.strip_prefix(&[0xFF]) {
        let mut out = Vec::new();
        session.poll_output(&mut out);
        for chunk in raw.chunks(97) {
            if session.handle_input(chunk, now_ms).is_err() {
                break;
            }
            session.poll_output(&mut out);
        }
        while session.poll_event().is_some() {}
        return;
    }
    let mut server = ServerConnection::new(server_config.clone()).unwrap();
    for _ in 0..8 {
        if !server.is_handshaking() {
            break;
        }
        assert!(pump(&mut session, &mut server, now_ms), "handshake failed");
    }
    assert!(!server.is_handshaking(), "handshake did not finish");
    // Take the CONNECT (and whatever follows it), then accept it.
    pump(&mut session, &mut server, now_ms);
    let mut plain = Vec::new();
    let _ = server.reader().read_to_end(&mut plain);
    assert_eq!(
        plain.first().map(|b| b >> 4),
        Some(1),
        "CONNECT comes first"
    );
    server
        .writer()
        .write_all(&[0x20, 0x02, 0x00, 0x00])
        .unwrap();
    assert!(pump(&mut session, &mut server, now_ms));

    // Then the fuzz input, in chunks: each chunk's first byte is its length.
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        server.writer().write_all(chunk).unwrap();
        now_ms += 250;
        if !pump(&mut session, &mut server, now_ms) {
            break;
        }
        while session.poll_event().is_some() {}
        if let Some(deadline) = session.next_deadline() {
            if deadline <= now_ms {
                session.handle_timeout(now_ms);
            }
        }
        // The server keeps reading what the session answers (PUBACKs, PINGREQs).
        let _ = server.reader().read_to_end(&mut plain);
        plain.clear();
    }
    while session.poll_event().is_some() {}
});
