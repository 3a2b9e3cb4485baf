//! No secret is left in freed memory: a global allocator that, while armed, scans every
//! block handed back for known secrets (a SAS signature in its URL-encoded, base64 and raw
//! forms, a slice of a private key) and counts the blocks that still hold one. Armed around a
//! real connection to mosquitto configured like IoT Hub, and around loading a client key.
//!
//! What dependencies keep and free on their own is out of this test's reach by design: the
//! scan runs only around the calls named here (see docs/c-abi-contract.md, "Secrets").

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use zeroize::Zeroizing;

use common::{require, run, Mosquitto, Pki};
use tether::auth::connection_string::ConnectionString;
use tether::auth::sas::{write_token, Resource, SasKey, MAX_TOKEN_LEN};
use tether::client::{Client, ClientOptions};
use tether::mqtt::topics::{self, UsernameOptions};
use tether::policy::TlsPolicy;
use tether::session::{Event, SessionConfig};

const MAX_NEEDLES: usize = 8;
const NEEDLE_LEN: usize = 16;

/// The secrets looked for, written only while disarmed.
struct Needles(UnsafeCell<([[u8; NEEDLE_LEN]; MAX_NEEDLES], usize)>);
// SAFETY: written only while no scan runs (disarmed, under SERIAL), read only while armed.
unsafe impl Sync for Needles {}

static NEEDLES: Needles = Needles(UnsafeCell::new(([[0; NEEDLE_LEN]; MAX_NEEDLES], 0)));
static ARMED: AtomicBool = AtomicBool::new(false);
static HITS: AtomicUsize = AtomicUsize::new(0);
static HIT_SIZES: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];
static SERIAL: Mutex<()> = Mutex::new(());

struct Scanner;

unsafe impl GlobalAlloc for Scanner {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::Acquire) {
            // SAFETY: the block is still ours for `layout.size()` bytes.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            // SAFETY: needles are not written while armed.
            let (needles, count) = unsafe { &*NEEDLES.0.get() };
            if needles[..*count]
                .iter()
                .any(|n| block.windows(NEEDLE_LEN).any(|w| w == n))
            {
                let hit = HITS.fetch_add(1, Ordering::AcqRel);
                if let Some(slot) = HIT_SIZES.get(hit) {
                    slot.store(layout.size(), Ordering::Release);
                }
            }
        }
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
    // realloc is the default: alloc, copy, dealloc, so every block a buffer grows out of is
    // scanned too.
}

#[global_allocator]
static ALLOCATOR: Scanner = Scanner;

/// Arms the scan for `secrets` (each contributes its first NEEDLE_LEN bytes) while `body`
/// runs; returns the number of freed blocks that held one and their sizes.
fn freed_blocks_holding(secrets: &[&[u8]], body: impl FnOnce()) -> (usize, Vec<usize>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(secrets.len() <= MAX_NEEDLES);
    // SAFETY: disarmed and serialized: no scan reads the needles now.
    unsafe {
        let (needles, count) = &mut *NEEDLES.0.get();
        for (slot, secret) in needles.iter_mut().zip(secrets) {
            assert!(secret.len() >= NEEDLE_LEN, "a secret shorter than a needle");
            slot.copy_from_slice(&secret[..NEEDLE_LEN]);
        }
        *count = secrets.len();
    }
    HITS.store(0, Ordering::Release);
    ARMED.store(true, Ordering::Release);
    body();
    ARMED.store(false, Ordering::Release);
    let hits = HITS.load(Ordering::Acquire);
    let sizes = HIT_SIZES[..hits.min(HIT_SIZES.len())]
        .iter()
        .map(|s| s.load(Ordering::Acquire))
        .collect();
    (hits, sizes)
}

const DEVICE: &str = "secret-dev";
const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";

fn resource() -> Resource<'static> {
    Resource::Device {
        host: "localhost",
        device: DEVICE,
    }
}

fn token(expiry: u64) -> Zeroizing<String> {
    let mut buf = Zeroizing::new([0u8; MAX_TOKEN_LEN]);
    let key = SasKey::from_base64(KEY).unwrap();
    Zeroizing::new(
        write_token(&resource(), &key, None, expiry, &mut buf[..])
            .unwrap()
            .to_owned(),
    )
}

/// The forms a token's signature takes in memory: URL-encoded (in the token), base64 and
/// raw HMAC bytes.
fn signature_forms(token: &str) -> [Zeroizing<Vec<u8>>; 3] {
    let sig = token
        .split('&')
        .find_map(|f| f.strip_prefix("sig="))
        .expect("a token has sig=");
    let base64 = sig
        .replace("%2B", "+")
        .replace("%2F", "/")
        .replace("%3D", "=");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&base64)
        .unwrap();
    [
        Zeroizing::new(sig.as_bytes().to_vec()),
        Zeroizing::new(base64.into_bytes()),
        Zeroizing::new(raw),
    ]
}

fn username() -> String {
    topics::username(
        "localhost",
        DEVICE,
        None,
        &UsernameOptions {
            client_type: Some(&format!("tether/{}", tether::VERSION)),
            ..UsernameOptions::default()
        },
    )
    .unwrap()
}

/// Mosquitto configured like the hub's endpoint, accepting DEVICE with `token`.
fn broker(token: &str) -> Mosquitto {
    require("mosquitto_passwd", "mosquitto");
    let dir = common::temp_dir("secrets-auth");
    let passwords = dir.join("passwords");
    run(Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .arg(username())
        .arg(token));
    Mosquitto::start(&Mosquitto::tls_listener(
        "{port}",
        Pki::shared(),
        &format!(
            "allow_anonymous false\npassword_file {}\n",
            passwords.display()
        ),
    ))
}

fn client(port: u16, connection_string: &str) -> Client {
    let cs = ConnectionString::parse(connection_string).unwrap();
    let mut policy = TlsPolicy::new();
    policy.add_ca_file(&Pki::shared().path("ca.pem")).unwrap();
    let config =
        SessionConfig::from_connection_string(&cs, policy.build().unwrap(), false).unwrap();
    Client::new(
        config,
        ClientOptions {
            port,
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

/// Polls until the hub accepts or refuses the connection.
fn until_connected_or_refused(client: &mut Client) -> Event {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match client.poll(Duration::from_millis(200)) {
            Ok(Some(event @ (Event::Connected { .. } | Event::Disconnected(_)))) => return event,
            Ok(_) => {}
            Err(e) => panic!("poll failed: {e}"),
        }
    }
    panic!("no CONNECTED or DISCONNECTED event within 20 s");
}

#[test]
fn connecting_with_a_ready_made_token_leaves_no_copy_of_its_signature_in_freed_memory() {
    let expiry = tether::client::system_now_ms() / 1000 + 3600;
    let token = token(expiry);
    let broker = broker(&token);
    let forms = signature_forms(&token);
    let mut text = Zeroizing::new(String::with_capacity(256));
    text.push_str(&format!(
        "HostName=localhost;DeviceId={DEVICE};SharedAccessSignature="
    ));
    text.push_str(&token);
    let mut connected = false;
    let (hits, sizes) = freed_blocks_holding(&[&forms[0], &forms[1], &forms[2]], || {
        let mut client = client(broker.port, &text);
        client.connect(Duration::from_secs(20)).unwrap();
        connected = matches!(
            until_connected_or_refused(&mut client),
            Event::Connected { .. }
        );
        client.disconnect();
        drop(client);
    });
    assert!(
        connected,
        "the broker did not accept the token:\n{}",
        broker.log()
    );
    assert_eq!(
        hits, 0,
        "{hits} freed blocks still held the SAS signature (sizes {sizes:?})"
    );
}

#[test]
fn connecting_with_a_device_key_leaves_no_copy_of_the_token_signature_in_freed_memory() {
    // The broker knows another password: the client makes its own token from the key,
    // sends it in CONNECT and is refused, after the whole CONNECT path ran.
    let broker = broker("not-the-token");
    let mut text = Zeroizing::new(String::with_capacity(256));
    text.push_str(&format!(
        "HostName=localhost;DeviceId={DEVICE};SharedAccessKey={KEY}"
    ));
    let start = tether::client::system_now_ms() / 1000;
    // Every token the client can make in the next MAX_NEEDLES seconds (expiry = now + the
    // default 3600 s lifetime), in the URL-encoded form the token and CONNECT carry.
    let forms: Vec<_> = (start..start + MAX_NEEDLES as u64)
        .map(|t| signature_forms(&token(t + 3600)))
        .collect();
    let needles: Vec<&[u8]> = forms.iter().map(|f| &f[0][..]).collect();
    let mut refused = false;
    let mut end = start;
    let (hits, sizes) = freed_blocks_holding(&needles, || {
        let mut client = client(broker.port, &text);
        refused = matches!(
            client.connect(Duration::from_secs(5)),
            Err(e) if e.code() == tether::Code::NotAuthorized
        );
        end = tether::client::system_now_ms() / 1000;
        drop(client);
    });
    assert!(refused, "the broker did not refuse:\n{}", broker.log());
    assert!(
        end < start + MAX_NEEDLES as u64,
        "the connection took {} s: its token is outside the {MAX_NEEDLES} s scanned",
        end - start
    );
    assert_eq!(
        hits, 0,
        "{hits} freed blocks still held the SAS signature (sizes {sizes:?})"
    );
}

fn key_slice(der: &[u8]) -> Zeroizing<Vec<u8>> {
    // From the middle of the key: the private exponent of an RSA key, the scalar of an EC one.
    let mid = der.len() / 2;
    Zeroizing::new(der[mid..mid + NEEDLE_LEN].to_vec())
}

#[test]
fn loading_a_der_client_key_leaves_no_freed_copy_of_it() {
    let pki = Pki::shared();
    let chain = std::fs::read(pki.path("device.pem")).unwrap();
    let key = Zeroizing::new(std::fs::read(pki.path("device.key.der")).unwrap());
    let needle = key_slice(&key);
    let mut built = None;
    let (hits, sizes) = freed_blocks_holding(&[&needle], || {
        let mut policy = TlsPolicy::new();
        policy.set_client_cert(&chain, &key).unwrap();
        built = Some(policy.build().unwrap());
    });
    assert!(built.is_some());
    assert_eq!(
        hits, 0,
        "{hits} freed blocks still held the private key (sizes {sizes:?})"
    );
}

#[test]
fn loading_a_pem_client_key_from_a_file_leaves_no_freed_copy_of_it() {
    let pki = Pki::shared();
    let der = Zeroizing::new(std::fs::read(pki.path("device.key.der")).unwrap());
    let needle = key_slice(&der);
    let mut built = None;
    let (hits, sizes) = freed_blocks_holding(&[&needle], || {
        let mut policy = TlsPolicy::new();
        policy
            .set_client_cert_files(&pki.path("device.pem"), &pki.path("device.key"))
            .unwrap();
        built = Some(policy.build().unwrap());
    });
    assert!(built.is_some());
    assert_eq!(
        hits, 0,
        "{hits} freed blocks still held the private key (sizes {sizes:?})"
    );
}
