//! Will this device survive IoT Hub's TLS enforcement? The ClientHello analyser.
//!
//! Since 31 August 2025 IoT Hub refuses TLS 1.0/1.1 and every cipher suite outside four
//! ECDHE-RSA ones. A device's ClientHello says, before any key is exchanged, whether it can
//! meet that policy. [`parse_client_hello`] reads the hello from the bytes of its TLS
//! record(s) (as a device sends them), [`audit`] weighs it against the hub's policy, and the
//! [`Report`] names each problem in plain words with the fix a firmware engineer can apply.
//!
//! Front ends: `tether_audit_client_hello` (C), `tether audit --listen/--pcap` (CLI, which
//! uses [`pcap`] for captures and [`connect`] for the MQTT CONNECT after a full handshake),
//! and `tether hub`, which audits every device that connects to the stand-in.
//!
//! Parsing follows [`crate::handshake::HelloSniffer`]: bounds-checked slices, no panics on
//! any input (fuzzed by `fuzz/fuzz_targets/client_hello.rs`), and named errors
//! ([`HelloError`]) for SSLv2-format, truncated, oversized and garbage input.

use std::fmt;
use std::io::Read;

use crate::handshake::{suite_name, version_name};

pub mod connect;
pub mod pcap;

/// The largest ClientHello handshake message accepted (64 KiB); larger is [`HelloError::Oversized`].
/// Real hellos are under 2 KiB (a TLS 1.3 hello with a post-quantum key share is ~1.8 KiB).
pub const MAX_HELLO_LEN: usize = 64 * 1024;
/// TLS record payloads are at most 2^14 bytes (plus expansion we do not expect in a hello).
const MAX_RECORD_LEN: usize = 16384 + 2048;

/// Why bytes could not be read as a ClientHello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloError {
    /// No bytes at all.
    Empty,
    /// An SSLv2-format (SSLv2-compatible) ClientHello, offering up to `version`.
    Sslv2 {
        /// The highest version in the SSLv2-format hello.
        version: u16,
    },
    /// The bytes are not a TLS handshake record (first byte shown).
    NotTls {
        /// The first byte received.
        first_byte: u8,
    },
    /// A TLS handshake message, but not a ClientHello (its handshake type shown).
    NotClientHello {
        /// The handshake message type (1 is ClientHello).
        kind: u8,
    },
    /// The hello stops early: `have` bytes, at least `need` bytes expected.
    Truncated {
        /// Bytes present.
        have: usize,
        /// Bytes the headers announce.
        need: usize,
    },
    /// A record or the hello announces a length beyond what TLS allows or we accept.
    Oversized {
        /// The length announced.
        len: usize,
    },
    /// A field inside the hello is inconsistent (what is wrong is said).
    Malformed(String),
}

impl HelloError {
    /// A short stable name, for JSON and logs (`sslv2`, `truncated`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            HelloError::Empty => "empty",
            HelloError::Sslv2 { .. } => "sslv2",
            HelloError::NotTls { .. } => "not-tls",
            HelloError::NotClientHello { .. } => "not-client-hello",
            HelloError::Truncated { .. } => "truncated",
            HelloError::Oversized { .. } => "oversized",
            HelloError::Malformed(_) => "malformed",
        }
    }
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::Empty => write!(f, "no bytes: the device sent nothing"),
            HelloError::Sslv2 { version } => write!(
                f,
                "an SSLv2-format ClientHello (offering up to {}): IoT Hub refuses it; disable \
                 SSLv2-compatible hellos in the TLS stack (OpenSSL: use TLS_client_method, not \
                 SSLv23 with SSLv2 enabled)",
                version_name(*version)
            ),
            HelloError::NotTls { first_byte: 0x10 } => write!(
                f,
                "plain MQTT (a CONNECT packet without TLS): IoT Hub accepts MQTT only over TLS \
                 on port 8883"
            ),
            HelloError::NotTls { first_byte } => write!(
                f,
                "not a TLS handshake record (first byte 0x{first_byte:02x}, expected 0x16)"
            ),
            HelloError::NotClientHello { kind } => write!(
                f,
                "a TLS handshake message of type {kind}, not a ClientHello (type 1)"
            ),
            HelloError::Truncated { have, need } => write!(
                f,
                "ClientHello truncated: {have} bytes, at least {need} expected"
            ),
            HelloError::Oversized { len } => write!(
                f,
                "ClientHello oversized: {len} bytes announced, the limit is {MAX_HELLO_LEN}"
            ),
            HelloError::Malformed(what) => write!(f, "ClientHello malformed: {what}"),
        }
    }
}

impl std::error::Error for HelloError {}

impl From<HelloError> for crate::Error {
    fn from(e: HelloError) -> Self {
        crate::Error::new(crate::Code::InvalidArgument, e.to_string())
    }
}

/// What a ClientHello offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The version in the hello's legacy field (TLS 1.3 hellos say TLS 1.2 here).
    pub legacy_version: u16,
    /// The supported_versions extension, GREASE removed, when present.
    pub supported_versions: Option<Vec<u16>>,
    /// Offered cipher suites in order, GREASE and signalling values removed.
    pub cipher_suites: Vec<u16>,
    /// The TLS_EMPTY_RENEGOTIATION_INFO_SCSV signalling suite was offered.
    pub renegotiation_scsv: bool,
    /// The server name (SNI) when sent.
    pub sni: Option<String>,
    /// supported_groups, GREASE removed, when the extension is present.
    pub groups: Option<Vec<u16>>,
    /// signature_algorithms, when the extension is present.
    pub signature_algorithms: Option<Vec<u16>>,
    /// The extended_master_secret extension is present.
    pub extended_master_secret: bool,
    /// The renegotiation_info extension is present.
    pub renegotiation_info: bool,
}

fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

impl ClientHello {
    /// Every version the hello offers: supported_versions when present, else every version
    /// from TLS 1.0 up to the legacy version.
    pub fn versions(&self) -> Vec<u16> {
        match &self.supported_versions {
            Some(v) => v.clone(),
            None => (0x0301..=self.legacy_version.min(0x0303)).rev().collect(),
        }
    }

    /// The highest version offered.
    pub fn max_version(&self) -> u16 {
        self.versions()
            .into_iter()
            .max()
            .unwrap_or(self.legacy_version)
    }

    /// Whether TLS 1.2 is offered.
    pub fn offers_tls12(&self) -> bool {
        self.versions().contains(&0x0303)
    }

    /// Secure renegotiation is signalled (extension or SCSV).
    pub fn secure_renegotiation(&self) -> bool {
        self.renegotiation_info || self.renegotiation_scsv
    }
}

/// Where [`HelloReader::feed`] stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed.
    NeedMore,
    /// The hello was read, or cannot be.
    Done(Result<ClientHello, HelloError>),
}

/// Reads a ClientHello from TLS records fed in pieces (a socket, a TCP stream reassembled
/// from a capture).
#[derive(Clone, Debug, Default)]
pub struct HelloReader {
    buf: Vec<u8>,
}

impl HelloReader {
    /// Adds received bytes; says whether the hello is complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Progress {
        let room = (MAX_HELLO_LEN + 64 * 5 + 5).saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        match parse_client_hello(&self.buf) {
            Err(HelloError::Truncated { .. }) => Progress::NeedMore,
            other => Progress::Done(other),
        }
    }

    /// The bytes fed so far (up to the limit).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The result with the bytes seen so far (a truncated hello stays [`HelloError::Truncated`]).
    pub fn finish(&self) -> Result<ClientHello, HelloError> {
        parse_client_hello(&self.buf)
    }
}

/// Reads records from `stream` until a ClientHello is complete (or cannot be); returns the
/// outcome and every byte read, so a relay can forward them.
pub fn read_client_hello<R: Read>(stream: &mut R) -> (Result<ClientHello, HelloError>, Vec<u8>) {
    let mut reader = HelloReader::default();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if n == 0 {
            let result = reader.finish();
            return (result, reader.buf);
        }
        if let Progress::Done(result) = reader.feed(&buf[..n]) {
            return (result, reader.buf);
        }
    }
}

/// Reads a ClientHello from the bytes of its TLS record(s), as sent on the wire. The
/// handshake message may span several records. [`HelloError::Truncated`] means more bytes
/// would help.
pub fn parse_client_hello(bytes: &[u8]) -> Result<ClientHello, HelloError> {
    let first = *bytes.first().ok_or(HelloError::Empty)?;
    if first & 0x80 != 0 {
        // SSLv2 record header: 2-byte length with the top bit set, then msg type 1.
        return match bytes.get(2) {
            Some(1) => Err(HelloError::Sslv2 {
                version: bytes
                    .get(3..5)
                    .map_or(0x0002, |v| u16::from_be_bytes([v[0], v[1]])),
            }),
            Some(_) => Err(HelloError::NotTls { first_byte: first }),
            None => Err(HelloError::Truncated {
                have: bytes.len(),
                need: 3,
            }),
        };
    }
    if first != 22 {
        return Err(HelloError::NotTls { first_byte: first });
    }
    // Gather the handshake message across records.
    let mut message = Vec::new();
    let mut rest = bytes;
    let mut need_total: Option<usize> = None;
    loop {
        if let Some(total) = need_total {
            if message.len() >= total {
                break;
            }
        }
        if rest.is_empty() {
            return Err(HelloError::Truncated {
                have: bytes.len(),
                need: bytes.len() + need_total.map_or(4, |t| t.saturating_sub(message.len())),
            });
        }
        if rest.len() < 5 {
            return Err(HelloError::Truncated {
                have: bytes.len(),
                need: bytes.len() - rest.len() + 5,
            });
        }
        if rest[0] != 22 {
            return Err(HelloError::Malformed(format!(
                "a record of content type {} interrupts the ClientHello",
                rest[0]
            )));
        }
        if rest[1] != 3 {
            return Err(HelloError::Malformed(format!(
                "record version {}.{} is not TLS",
                rest[1], rest[2]
            )));
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len > MAX_RECORD_LEN {
            return Err(HelloError::Oversized { len });
        }
        if len == 0 {
            return Err(HelloError::Malformed("an empty handshake record".into()));
        }
        let Some(body) = rest.get(5..5 + len) else {
            return Err(HelloError::Truncated {
                have: bytes.len(),
                need: bytes.len() - rest.len() + 5 + len,
            });
        };
        message.extend_from_slice(body);
        rest = &rest[5 + len..];
        if need_total.is_none() && message.len() >= 4 {
            if message[0] != 1 {
                return Err(HelloError::NotClientHello { kind: message[0] });
            }
            let len = u32::from_be_bytes([0, message[1], message[2], message[3]]) as usize;
            if len > MAX_HELLO_LEN {
                return Err(HelloError::Oversized { len });
            }
            need_total = Some(4 + len);
        }
    }
    let total = need_total.unwrap_or(4);
    parse_hello_body(&message[4..total])
}

/// A bounds-checked reader over a hello's fields.
struct Fields<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], HelloError> {
        if self.data.len() < n {
            return Err(HelloError::Malformed(format!(
                "{field} runs past the end of the {} ({} bytes left, {n} needed)",
                self.what,
                self.data.len()
            )));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }
    fn u8(&mut self, field: &str) -> Result<u8, HelloError> {
        Ok(self.take(1, field)?[0])
    }
    fn u16(&mut self, field: &str) -> Result<u16, HelloError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self, field: &str) -> Result<&'a [u8], HelloError> {
        let n = usize::from(self.u8(field)?);
        self.take(n, field)
    }
    fn vec16(&mut self, field: &str) -> Result<&'a [u8], HelloError> {
        let n = usize::from(self.u16(field)?);
        self.take(n, field)
    }
}

fn u16_list(data: &[u8], field: &str) -> Result<Vec<u16>, HelloError> {
    if data.len() % 2 != 0 {
        return Err(HelloError::Malformed(format!(
            "{field} has an odd length ({})",
            data.len()
        )));
    }
    Ok(data
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .filter(|v| !is_grease(*v))
        .collect())
}

fn parse_hello_body(body: &[u8]) -> Result<ClientHello, HelloError> {
    let mut f = Fields {
        data: body,
        what: "ClientHello",
    };
    let mut hello = ClientHello {
        legacy_version: f.u16("the version")?,
        ..ClientHello::default()
    };
    f.take(32, "the random")?;
    let session_id = f.vec8("the session id")?;
    if session_id.len() > 32 {
        return Err(HelloError::Malformed(format!(
            "session id of {} bytes (at most 32)",
            session_id.len()
        )));
    }
    let suites = f.vec16("the cipher suite list")?;
    for suite in u16_list(suites, "the cipher suite list")? {
        match suite {
            0x00ff => hello.renegotiation_scsv = true,
            0x5600 => {} // TLS_FALLBACK_SCSV
            s => hello.cipher_suites.push(s),
        }
    }
    f.vec8("the compression methods")?;
    if f.data.is_empty() {
        return Ok(hello); // no extensions (TLS 1.0-era stacks)
    }
    let mut ext = Fields {
        data: f.vec16("the extension list")?,
        what: "extension list",
    };
    while !ext.data.is_empty() {
        let kind = ext.u16("an extension type")?;
        let data = ext.vec16("an extension")?;
        let mut e = Fields {
            data,
            what: "extension",
        };
        match kind {
            0x0000 => {
                // server_name: list of (type, name)
                let mut list = Fields {
                    data: e.vec16("the server name list")?,
                    what: "server name list",
                };
                while !list.data.is_empty() {
                    let name_type = list.u8("a server name type")?;
                    let name = list.vec16("a server name")?;
                    if name_type == 0 && hello.sni.is_none() {
                        hello.sni = Some(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
            0x000a => {
                hello.groups = Some(u16_list(e.vec16("supported_groups")?, "supported_groups")?)
            }
            0x000d => {
                hello.signature_algorithms = Some(u16_list(
                    e.vec16("signature_algorithms")?,
                    "signature_algorithms",
                )?)
            }
            0x0017 => hello.extended_master_secret = true,
            0x002b => {
                hello.supported_versions = Some(u16_list(
                    e.vec8("supported_versions")?,
                    "supported_versions",
                )?)
            }
            0xff01 => hello.renegotiation_info = true,
            _ => {}
        }
    }
    Ok(hello)
}

// ---------------------------------------------------------------------------------------
// The hub's policy and the verdict.

/// How IoT Hub treats an offered cipher suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuiteClass {
    /// One of the two ECDHE-RSA GCM suites IoT Hub prefers.
    Preferred,
    /// ECDHE-RSA CBC-SHA256/384: still accepted by the hub, but weaker.
    Accepted,
    /// Refused by the hub.
    Refused,
}

impl SuiteClass {
    /// `preferred`, `accepted` or `refused`.
    pub fn name(self) -> &'static str {
        match self {
            SuiteClass::Preferred => "preferred",
            SuiteClass::Accepted => "accepted",
            SuiteClass::Refused => "refused",
        }
    }
}

/// The suites IoT Hub prefers (ECDHE-RSA with AES-GCM).
pub const HUB_PREFERRED_SUITES: [u16; 2] = [0xc02f, 0xc030];
/// The suites IoT Hub still accepts (ECDHE-RSA with AES-CBC and SHA-256/384).
pub const HUB_ACCEPTED_SUITES: [u16; 2] = [0xc027, 0xc028];
/// The key exchange groups IoT Hub's ECDHE uses (secp256r1, secp384r1).
pub const HUB_GROUPS: [u16; 2] = [23, 24];
/// Signature schemes that verify the hub's RSA chain and its RSA key exchange signature
/// (PKCS#1 v1.5 with SHA-256/384/512, RSA-PSS with SHA-256/384/512).
pub const HUB_SIGNATURE_SCHEMES: [u16; 6] = [0x0401, 0x0501, 0x0601, 0x0804, 0x0805, 0x0806];

/// Classifies an offered suite against IoT Hub's list.
pub fn classify_suite(suite: u16) -> SuiteClass {
    if HUB_PREFERRED_SUITES.contains(&suite) {
        SuiteClass::Preferred
    } else if HUB_ACCEPTED_SUITES.contains(&suite) {
        SuiteClass::Accepted
    } else {
        SuiteClass::Refused
    }
}

/// The audit's conclusion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// The device will connect under the enforced policy.
    Ok,
    /// It will connect, with something worth fixing.
    OkWithWarnings,
    /// The hub will refuse it.
    WillFail,
}

impl Verdict {
    /// `ok`, `ok-with-warnings` or `will-fail`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::OkWithWarnings => "ok-with-warnings",
            Verdict::WillFail => "will-fail",
        }
    }
}

/// One finding: what is wrong, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// [`Verdict::WillFail`] for a refusal, [`Verdict::OkWithWarnings`] for a warning.
    pub severity: Verdict,
    /// A stable short name (`no-tls12`, `no-hub-suite`, ...), for scripts and tests.
    pub id: &'static str,
    /// The problem in plain words.
    pub problem: String,
    /// The fix a firmware engineer can apply.
    pub fix: String,
}

/// The audit of one ClientHello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// What the hello offered.
    pub hello: ClientHello,
    /// The overall verdict (the worst finding).
    pub verdict: Verdict,
    /// Findings, refusals first.
    pub findings: Vec<Finding>,
}

/// The name of a named group, as people write it.
pub fn group_name(group: u16) -> String {
    match group {
        23 => "secp256r1".into(),
        24 => "secp384r1".into(),
        25 => "secp521r1".into(),
        29 => "x25519".into(),
        30 => "x448".into(),
        256 => "ffdhe2048".into(),
        257 => "ffdhe3072".into(),
        0x11ec => "X25519MLKEM768".into(),
        other => format!("group 0x{other:04x}"),
    }
}

/// The name of a signature scheme, as in RFC 8446.
pub fn signature_scheme_name(scheme: u16) -> String {
    let name = match scheme {
        0x0201 => "rsa_pkcs1_sha1",
        0x0203 => "ecdsa_sha1",
        0x0401 => "rsa_pkcs1_sha256",
        0x0501 => "rsa_pkcs1_sha384",
        0x0601 => "rsa_pkcs1_sha512",
        0x0403 => "ecdsa_secp256r1_sha256",
        0x0503 => "ecdsa_secp384r1_sha384",
        0x0603 => "ecdsa_secp521r1_sha512",
        0x0804 => "rsa_pss_rsae_sha256",
        0x0805 => "rsa_pss_rsae_sha384",
        0x0806 => "rsa_pss_rsae_sha512",
        0x0807 => "ed25519",
        0x0808 => "ed448",
        0x0809 => "rsa_pss_pss_sha256",
        0x080a => "rsa_pss_pss_sha384",
        0x080b => "rsa_pss_pss_sha512",
        _ => return format!("scheme 0x{scheme:04x}"),
    };
    name.into()
}

fn versions_text(versions: &[u16]) -> String {
    let mut v: Vec<u16> = versions.to_vec();
    v.sort_unstable();
    v.dedup();
    let names: Vec<String> = v
        .iter()
        .map(|v| version_name(*v).replace("v", " "))
        .collect();
    match names.len() {
        0 => "no TLS version".into(),
        1 => names[0].clone(),
        n => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

fn is_rsa_key_exchange(suite: u16) -> bool {
    matches!(
        suite,
        0x0001..=0x000a | 0x002f | 0x0035 | 0x003c | 0x003d | 0x009c | 0x009d
    )
}

/// Weighs a ClientHello against IoT Hub's enforced TLS policy.
pub fn audit(hello: &ClientHello) -> Report {
    let mut findings = Vec::new();
    let mut fail = |id, problem: String, fix: &str| {
        findings.push(Finding {
            severity: Verdict::WillFail,
            id,
            problem,
            fix: fix.into(),
        })
    };
    let versions = hello.versions();
    if !hello.offers_tls12() {
        if hello.max_version() < 0x0303 {
            let offered = if hello.supported_versions.is_some() {
                format!("offers {} only", versions_text(&versions))
            } else {
                format!("offers {} at most", versions_text(&[hello.max_version()]))
            };
            fail(
                "no-tls12",
                format!("{offered}; IoT Hub requires TLS 1.2"),
                "enable TLS 1.2 in the device's TLS stack (OpenSSL 1.0.1 or later: do not cap \
                 the version at TLS 1.1; mbed TLS: MBEDTLS_SSL_PROTO_TLS1_2; wolfSSL: \
                 wolfTLSv1_2_client_method)",
            );
        } else {
            fail(
                "no-tls12",
                format!(
                    "offers {} only; IoT Hub's MQTT endpoint speaks TLS 1.2 (TLS 1.3 is a \
                     preview on other endpoints)",
                    versions_text(&versions)
                ),
                "allow TLS 1.2 as well (OpenSSL: MinProtocol = TLSv1.2, or \
                 SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))",
            );
        }
    }
    let preferred = hello
        .cipher_suites
        .iter()
        .any(|s| classify_suite(*s) == SuiteClass::Preferred);
    let accepted = hello
        .cipher_suites
        .iter()
        .any(|s| classify_suite(*s) == SuiteClass::Accepted);
    let tls12_suites: Vec<u16> = hello
        .cipher_suites
        .iter()
        .copied()
        .filter(|s| !(0x1301..=0x1305).contains(s))
        .collect();
    if !preferred && !accepted {
        let only_rsa =
            !tls12_suites.is_empty() && tls12_suites.iter().all(|s| is_rsa_key_exchange(*s));
        let offered = if tls12_suites.is_empty() {
            "only TLS 1.3 cipher suites".to_owned()
        } else {
            let names: Vec<String> = tls12_suites
                .iter()
                .take(6)
                .map(|s| suite_name(*s))
                .collect();
            let more = tls12_suites.len().saturating_sub(6);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("{}{more}", names.join(", "))
        };
        let problem = if only_rsa {
            format!("offers RSA key exchange only ({offered}); IoT Hub requires ECDHE key exchange")
        } else {
            format!("offers none of IoT Hub's cipher suites (it offers {offered})")
        };
        fail(
            "no-hub-suite",
            problem,
            "enable TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 and TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 \
             (OpenSSL: -cipher ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384; mbed TLS: \
             MBEDTLS_KEY_EXCHANGE_ECDHE_RSA_ENABLED with MBEDTLS_GCM_C)",
        );
    }
    if let Some(groups) = &hello.groups {
        if !groups.iter().any(|g| HUB_GROUPS.contains(g)) && (preferred || accepted) {
            let names: Vec<String> = groups.iter().map(|g| group_name(*g)).collect();
            fail(
                "no-hub-group",
                format!(
                    "offers no curve the hub's ECDHE uses (it offers {}; the hub uses secp256r1 \
                     or secp384r1)",
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ),
                "enable secp256r1 (P-256) for ECDHE (OpenSSL: -groups P-256:P-384 or \
                 SSL_CTX_set1_groups_list; mbed TLS: MBEDTLS_ECP_DP_SECP256R1_ENABLED)",
            );
        }
    }
    if let Some(schemes) = &hello.signature_algorithms {
        if !schemes.iter().any(|s| HUB_SIGNATURE_SCHEMES.contains(s)) && hello.offers_tls12() {
            let names: Vec<String> = schemes.iter().map(|s| signature_scheme_name(*s)).collect();
            fail(
                "no-rsa-signature",
                format!(
                    "cannot verify the hub's RSA certificate chain: its signature algorithms \
                     ({}) include no RSA with SHA-256 or stronger",
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ),
                "enable rsa_pkcs1_sha256 (and RSA-PSS) signature verification (mbed TLS: \
                 MBEDTLS_RSA_C, MBEDTLS_SHA256_C; OpenSSL: -sigalgs RSA+SHA256:RSA-PSS+SHA256)",
            );
        }
    }
    let mut warn = |id, problem: String, fix: &str| {
        findings.push(Finding {
            severity: Verdict::OkWithWarnings,
            id,
            problem,
            fix: fix.into(),
        })
    };
    if accepted && !preferred {
        let names: Vec<String> = hello
            .cipher_suites
            .iter()
            .filter(|s| classify_suite(**s) == SuiteClass::Accepted)
            .map(|s| suite_name(*s))
            .collect();
        warn(
            "cbc-only",
            format!(
                "offers only the hub's CBC suites ({}); they are still accepted but weaker than \
                 the GCM ones",
                names.join(", ")
            ),
            "enable TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 (OpenSSL name \
             ECDHE-RSA-AES128-GCM-SHA256; mbed TLS: MBEDTLS_GCM_C)",
        );
    }
    if hello.sni.is_none() {
        warn(
            "no-sni",
            "sends no server name (SNI)".into(),
            "set the server name to the hub's host name (OpenSSL: SSL_set_tlsext_host_name; \
             mbed TLS: mbedtls_ssl_set_hostname): IoT Hub's TLS 1.3 and regional endpoints \
             need it",
        );
    }
    if hello.groups.is_none() && (preferred || accepted) {
        warn(
            "no-groups-extension",
            "sends no supported_groups extension; the hub will assume secp256r1".into(),
            "send supported_groups with secp256r1 (most stacks do once ECDHE is enabled)",
        );
    }
    if hello.signature_algorithms.is_none() && hello.offers_tls12() {
        warn(
            "no-signature-algorithms",
            "sends no signature_algorithms extension; a TLS 1.2 server then assumes SHA-1".into(),
            "send signature_algorithms with rsa_pkcs1_sha256 (any TLS 1.2 stack configured \
             for TLS 1.2 does)",
        );
    }
    if !hello.extended_master_secret && hello.offers_tls12() {
        warn(
            "no-extended-master-secret",
            "does not offer the extended master secret (RFC 7627)".into(),
            "enable it (mbed TLS: MBEDTLS_SSL_EXTENDED_MASTER_SECRET; OpenSSL 1.1.0 and later \
             send it)",
        );
    }
    if !hello.secure_renegotiation() {
        warn(
            "no-secure-renegotiation",
            "signals no secure renegotiation (RFC 5746)".into(),
            "update the TLS stack or enable renegotiation_info (mbed TLS: \
             MBEDTLS_SSL_RENEGOTIATION or the SCSV)",
        );
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let verdict = findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Verdict::Ok);
    Report {
        hello: hello.clone(),
        verdict,
        findings,
    }
}

/// Parses and audits the bytes of a ClientHello in one step.
pub fn audit_bytes(bytes: &[u8]) -> Result<Report, HelloError> {
    parse_client_hello(bytes).map(|h| audit(&h))
}

// ---------------------------------------------------------------------------------------
// Output.

/// A JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt_string(text: Option<&str>) -> String {
    text.map_or_else(|| "null".into(), json_string)
}

fn json_named_list(list: Option<&Vec<u16>>, name: impl Fn(u16) -> String) -> String {
    match list {
        None => "null".into(),
        Some(l) => {
            let items: Vec<String> = l.iter().map(|v| json_string(&name(*v))).collect();
            format!("[{}]", items.join(","))
        }
    }
}

impl Report {
    /// The report as one JSON object (no trailing newline). Fields: `verdict`,
    /// `max_version`, `tls12_offered`, `versions`, `sni`, `suites` (each with `code`, `name`,
    /// `class`), `groups`, `signature_algorithms` (null when the extension is absent),
    /// `extended_master_secret`, `secure_renegotiation`, `findings` (each with `severity`,
    /// `id`, `problem`, `fix`).
    pub fn to_json(&self) -> String {
        let h = &self.hello;
        let versions: Vec<String> = h
            .versions()
            .iter()
            .map(|v| json_string(&version_name(*v)))
            .collect();
        let suites: Vec<String> = h
            .cipher_suites
            .iter()
            .map(|s| {
                format!(
                    "{{\"code\":\"0x{s:04x}\",\"name\":{},\"class\":\"{}\"}}",
                    json_string(&suite_name(*s)),
                    classify_suite(*s).name()
                )
            })
            .collect();
        let findings: Vec<String> = self
            .findings
            .iter()
            .map(|f| {
                format!(
                    "{{\"severity\":\"{}\",\"id\":\"{}\",\"problem\":{},\"fix\":{}}}",
                    if f.severity == Verdict::WillFail {
                        "fail"
                    } else {
                        "warning"
                    },
                    f.id,
                    json_string(&f.problem),
                    json_string(&f.fix)
                )
            })
            .collect();
        format!(
            "{{\"verdict\":\"{}\",\"max_version\":{},\"tls12_offered\":{},\"versions\":[{}],\
             \"sni\":{},\"suites\":[{}],\"groups\":{},\"signature_algorithms\":{},\
             \"extended_master_secret\":{},\"secure_renegotiation\":{},\"findings\":[{}]}}",
            self.verdict.name(),
            json_string(&version_name(h.max_version())),
            h.offers_tls12(),
            versions.join(","),
            json_opt_string(h.sni.as_deref()),
            suites.join(","),
            json_named_list(h.groups.as_ref(), group_name),
            json_named_list(h.signature_algorithms.as_ref(), signature_scheme_name),
            h.extended_master_secret,
            h.secure_renegotiation(),
            findings.join(",")
        )
    }

    /// The report for people: a summary line, then one line per finding with its fix.
    pub fn to_text(&self) -> String {
        let h = &self.hello;
        let mut out = format!(
            "{} (up to {}, {} suites, sni {})\n",
            self.verdict.name(),
            version_name(h.max_version()),
            h.cipher_suites.len(),
            h.sni.as_deref().unwrap_or("none")
        );
        for f in &self.findings {
            let tag = if f.severity == Verdict::WillFail {
                "FAIL"
            } else {
                "warn"
            };
            out.push_str(&format!("  {tag} {}\n       fix: {}\n", f.problem, f.fix));
        }
        out
    }
}

/// A JSON object for a hello that could not be read: `{"verdict":"unreadable",...}`.
pub fn error_json(err: &HelloError) -> String {
    format!(
        "{{\"verdict\":\"{}\",\"error\":\"{}\",\"message\":{}}}",
        if matches!(err, HelloError::Sslv2 { .. }) {
            "will-fail"
        } else {
            "unreadable"
        },
        err.name(),
        json_string(&err.to_string())
    )
}

#[cfg(test)]
mod tests;

pub mod server;
