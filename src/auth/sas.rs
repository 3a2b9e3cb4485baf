//! Shared access signature (SAS) keys and tokens, exactly as IoT Hub and DPS check them.
//!
//! A token is
//! `SharedAccessSignature sr={sr}&sig={sig}&se={expiry}[&skn={key name}]` where `sr` is the
//! URL-encoded resource URI, the signed string is `sr + "\n" + se` (with `sr` exactly as it
//! appears in the token) and `sig` is the URL-encoded base64 HMAC-SHA256 of it under the
//! decoded key. URL encoding keeps `A-Za-z0-9-_.~` and writes everything else as `%XX` with
//! uppercase hex, like the embedded C and Python SDKs (the service checks the string as
//! received, so the case of the escapes matters).
//!
//! - [`SasKey`]: a key decoded once from base64, held in memory that is zeroed on drop,
//!   never printed (`Debug` shows `***`).
//! - [`Resource`]: what a token grants: a hub, a device, a module or a DPS registration.
//! - [`write_token`] (no allocation, for the C path) and [`SasToken::generate`].
//! - [`parse`] and [`verify`] / [`verify_for`] (constant-time), for gateways and the local
//!   hub stand-in.
//! - [`renewal_margin`] and [`renew_at`]: when to make the next token.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use rustls::time_provider::TimeProvider;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::auth::{check_host, check_id, excerpt, IdKind};
use crate::defaults;
use crate::error::{Code, Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// Longest key accepted, in base64 characters (256 bytes decoded; IoT Hub keys are 16 to 64).
pub const MAX_KEY_BASE64_LEN: usize = 344;
/// Room for the decoded key: enough for any input of [`MAX_KEY_BASE64_LEN`] characters.
const KEY_CAP: usize = MAX_KEY_BASE64_LEN / 4 * 3;
/// Longest shared access policy name (`skn`).
pub const MAX_KEY_NAME_LEN: usize = 64;
/// Longest token [`write_token`] can produce from valid inputs; a buffer of this many bytes
/// (plus one for a NUL) always fits.
pub const MAX_TOKEN_LEN: usize = 2048;
/// Longest token [`parse`] reads (mosquitto passwords go up to 65535 bytes).
pub const MAX_PARSE_LEN: usize = 65_535;

/// Base64 as IoT Hub writes keys (standard alphabet); padding may be omitted on input.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A symmetric key: decoded once, zeroed on drop, never printed.
#[derive(Clone)]
pub struct SasKey {
    bytes: [u8; KEY_CAP],
    len: usize,
    /// How much of `bytes` may hold key material (the decoder may write a little past
    /// `len`): wiped on drop, so a short key does not pay for wiping the whole array.
    dirty: usize,
}

impl Drop for SasKey {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.bytes[..self.dirty].zeroize();
    }
}

impl fmt::Debug for SasKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SasKey(***)")
    }
}

/// Turns a base64 decoding failure into a message that names the position only (never the
/// key's characters).
fn base64_error(e: base64::DecodeError, what: &str) -> Error {
    use base64::DecodeError::*;
    let detail = match e {
        InvalidByte(at, _) => format!("a character that is not base64 at offset {at}"),
        InvalidLength(len) => format!("a length ({len} symbols) that no base64 text has"),
        InvalidLastSymbol { offset: at, .. } => {
            format!("a last symbol with stray bits at offset {at}")
        }
        InvalidPadding => "misplaced '=' padding".to_owned(),
    };
    Error::new(
        Code::SasKeyInvalid,
        format!("{what} is not valid base64: {detail}"),
    )
}

impl SasKey {
    /// Decodes a base64 key (standard alphabet, padding optional). Errors
    /// (`SasKeyInvalid`) name the offset of a bad character, never the key.
    pub fn from_base64(text: &str) -> Result<SasKey> {
        Self::from_base64_named(text, "key")
    }

    /// As [`SasKey::from_base64`], naming the key in errors (`"SharedAccessKey"`, ...).
    pub fn from_base64_named(text: &str, what: &str) -> Result<SasKey> {
        if text.is_empty() {
            return Err(Error::new(Code::SasKeyInvalid, format!("{what} is empty")));
        }
        if text.len() > MAX_KEY_BASE64_LEN {
            return Err(Error::new(
                Code::SasKeyInvalid,
                format!(
                    "{what} is {} characters long; keys are at most {MAX_KEY_BASE64_LEN} base64 characters",
                    text.len()
                ),
            ));
        }
        let mut key = SasKey {
            bytes: [0u8; KEY_CAP],
            len: 0,
            dirty: (text.len() / 4 * 3 + 3).min(KEY_CAP),
        };
        key.len = KEY_BASE64
            .decode_slice(text.as_bytes(), &mut key.bytes[..])
            .map_err(|e| match e {
                base64::DecodeSliceError::DecodeError(e) => base64_error(e, what),
                base64::DecodeSliceError::OutputSliceTooSmall => {
                    Error::new(Code::SasKeyInvalid, format!("{what} is too long"))
                }
            })?;
        if key.len == 0 {
            return Err(Error::new(
                Code::SasKeyInvalid,
                format!("{what} decodes to no bytes"),
            ));
        }
        Ok(key)
    }

    /// A key from raw bytes (1 to 258 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<SasKey> {
        if bytes.is_empty() || bytes.len() > KEY_CAP {
            return Err(Error::new(
                Code::SasKeyInvalid,
                format!("key must be 1 to {KEY_CAP} bytes, not {}", bytes.len()),
            ));
        }
        let mut key = SasKey {
            bytes: [0u8; KEY_CAP],
            len: bytes.len(),
            dirty: bytes.len(),
        };
        key.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(key)
    }

    /// The decoded key bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The HMAC-SHA256 state keyed with this key.
    pub(crate) fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.bytes()).expect("HMAC accepts keys of any length")
    }

    /// HMAC-SHA256 of `message` under this key.
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// The key as base64 (for storing a derived key). The caller owns the secret it returns.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes()))
    }

    /// Whether two keys are the same (constant time in the key bytes).
    pub fn ct_eq(&self, other: &SasKey) -> bool {
        use subtle::ConstantTimeEq;
        self.len == other.len && bool::from(self.bytes().ct_eq(other.bytes()))
    }
}

/// Where encoded token text goes: a buffer, a string, or the HMAC being computed.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for HmacSha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Writes into a fixed buffer, counting what did not fit.
struct Fixed<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Sink for Fixed<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if end <= self.buf.len() {
            self.buf[self.len..end].copy_from_slice(bytes);
        }
        self.len = end;
    }
}

/// Which bytes URL encoding keeps as they are: `A-Za-z0-9-_.~`.
const UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        i += 1;
    }
    table
};

#[inline]
fn is_unreserved(b: u8) -> bool {
    UNRESERVED[usize::from(b)]
}

/// URL-encodes `text` into `sink`: unreserved runs as they are, every other byte `%XX`.
fn url_encode(sink: &mut impl Sink, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        if !is_unreserved(b) {
            if start < i {
                sink.put(&text[start..i]);
            }
            sink.put(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            start = i + 1;
        }
    }
    if start < text.len() {
        sink.put(&text[start..]);
    }
}

/// URL-encodes `text` the way `sr` is encoded: keep `A-Za-z0-9-_.~`, else `%XX` uppercase.
#[doc(hidden)] // re-exported by `tether::internal`
pub fn url_encode_string(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    url_encode(&mut out, text.as_bytes());
    String::from_utf8(out).expect("the encoding is ASCII")
}

/// Decodes `%XX` escapes (either case). Refuses a malformed escape or a result that is not
/// UTF-8. `+` stays `+`.
#[doc(hidden)] // re-exported by `tether::internal`
pub fn url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Decimal digits of `n` without allocating.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn new(mut n: u64) -> Self {
        let mut buf = [0u8; 20];
        let mut start = 20;
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Digits { buf, start }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// What a token grants access to. Built from ids with the constructors, or parsed from an
/// unencoded resource URI with [`Resource::parse`]; every id is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A whole hub (policy tokens): `{host}`.
    Hub { host: &'a str },
    /// A device: `{host}/devices/{device}`.
    Device { host: &'a str, device: &'a str },
    /// A module: `{host}/devices/{device}/modules/{module}`.
    Module {
        host: &'a str,
        device: &'a str,
        module: &'a str,
    },
    /// A DPS registration: `{scope}/registrations/{registration}`.
    Registration {
        scope: &'a str,
        registration: &'a str,
    },
}

impl<'a> Resource<'a> {
    /// A device resource; checks the host and id.
    pub fn device(host: &'a str, device: &'a str) -> Result<Self> {
        check_host(host)?;
        check_id(IdKind::Device, device)?;
        Ok(Resource::Device { host, device })
    }

    /// A module resource; checks the host and ids.
    pub fn module(host: &'a str, device: &'a str, module: &'a str) -> Result<Self> {
        check_host(host)?;
        check_id(IdKind::Device, device)?;
        check_id(IdKind::Module, module)?;
        Ok(Resource::Module {
            host,
            device,
            module,
        })
    }

    /// A DPS registration resource; checks the scope and registration id.
    pub fn registration(scope: &'a str, registration: &'a str) -> Result<Self> {
        check_id(IdKind::Scope, scope)?;
        check_id(IdKind::Registration, registration)?;
        Ok(Resource::Registration {
            scope,
            registration,
        })
    }

    /// Parses an unencoded resource URI: `host`, `host/devices/ID`,
    /// `host/devices/ID/modules/ID` or `SCOPE/registrations/ID`. Errors are `IdInvalid` and
    /// say which part is wrong.
    pub fn parse(uri: &'a str) -> Result<Self> {
        if uri.len() > 1024 {
            return Err(Error::new(
                Code::IdInvalid,
                format!(
                    "resource URI is {} bytes long; the limit is 1024",
                    uri.len()
                ),
            ));
        }
        let mut parts = [""; 6];
        let mut n = 0;
        for part in uri.split('/') {
            if n == parts.len() {
                n += 1;
                break;
            }
            parts[n] = part;
            n += 1;
        }
        match (n, parts) {
            (1, [host, ..]) => {
                check_host(host)?;
                Ok(Resource::Hub { host })
            }
            (3, [host, "devices", device, ..]) => Self::device(host, device),
            (5, [host, "devices", device, "modules", module, ..]) => {
                Self::module(host, device, module)
            }
            (3, [scope, "registrations", registration, ..]) => {
                Self::registration(scope, registration)
            }
            _ => Err(Error::new(
                Code::IdInvalid,
                format!(
                    "resource \"{}\" is not HOST/devices/ID, HOST/devices/ID/modules/ID or \
                     SCOPE/registrations/ID (an id cannot contain '/')",
                    excerpt(uri)
                ),
            )),
        }
    }

    fn write(&self, sink: &mut impl Sink) {
        match *self {
            Resource::Hub { host } => sink.put(host.as_bytes()),
            Resource::Device { host, device } => {
                for part in [host, "/devices/", device] {
                    sink.put(part.as_bytes());
                }
            }
            Resource::Module {
                host,
                device,
                module,
            } => {
                for part in [host, "/devices/", device, "/modules/", module] {
                    sink.put(part.as_bytes());
                }
            }
            Resource::Registration {
                scope,
                registration,
            } => {
                for part in [scope, "/registrations/", registration] {
                    sink.put(part.as_bytes());
                }
            }
        }
    }

    /// Writes the URL-encoded resource (`sr`) into `sink`.
    fn write_encoded(&self, sink: &mut impl Sink) {
        struct Encode<'s, S: Sink>(&'s mut S);
        impl<S: Sink> Sink for Encode<'_, S> {
            fn put(&mut self, bytes: &[u8]) {
                url_encode(self.0, bytes);
            }
        }
        self.write(&mut Encode(sink));
    }

    /// The unencoded resource URI.
    pub fn uri(&self) -> String {
        let mut out = Vec::new();
        self.write(&mut out);
        String::from_utf8(out).expect("ids are ASCII")
    }

    /// The URL-encoded resource, as it appears after `sr=`.
    pub fn encoded(&self) -> String {
        let mut out = Vec::new();
        self.write_encoded(&mut out);
        String::from_utf8(out).expect("the encoding is ASCII")
    }
}

/// Checks a shared access policy name (`skn`): 1 to 64 letters, digits, `-`, `_`, `.`.
#[doc(hidden)] // re-exported by `tether::internal`
pub fn check_key_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_KEY_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            Code::InvalidArgument,
            format!(
                "key name \"{}\" must be 1 to {MAX_KEY_NAME_LEN} letters, digits, '-', '_' or '.'",
                excerpt(name)
            ),
        ))
    }
}

/// Room for the encoded `sr` on the stack: every resource of usual length fits, so it is
/// encoded once, hashed in one piece and copied into the token (URL-encoding straight into
/// the HMAC hashes it a few bytes at a time, which cost more than the hash itself).
const SR_INLINE: usize = 512;

/// The encoded `sr` when it fits in `buf`.
fn encoded_sr<'b>(resource: &Resource<'_>, buf: &'b mut [u8; SR_INLINE]) -> Option<&'b [u8]> {
    let mut sink = Fixed { buf, len: 0 };
    resource.write_encoded(&mut sink);
    let len = sink.len;
    (len <= SR_INLINE).then(|| &buf[..len])
}

/// The base64 signature of a token, as 44 ASCII bytes. `sr` is the encoded resource when
/// already at hand.
fn signature(
    resource: &Resource<'_>,
    sr: Option<&[u8]>,
    key: &SasKey,
    expiry: &Digits,
) -> [u8; 44] {
    let mut mac = key.mac();
    match sr {
        Some(sr) => mac.update(sr),
        None => resource.write_encoded(&mut mac),
    }
    mac.update(b"\n");
    mac.update(expiry.as_bytes());
    let raw = mac.finalize().into_bytes();
    let mut sig = [0u8; 44];
    let n = STANDARD
        .encode_slice(raw, &mut sig)
        .expect("32 bytes are 44 base64 characters");
    debug_assert_eq!(n, 44);
    sig
}

fn emit_token(
    sink: &mut impl Sink,
    resource: &Resource<'_>,
    sr: Option<&[u8]>,
    sig: &[u8; 44],
    expiry: &Digits,
    key_name: Option<&str>,
) {
    sink.put(b"SharedAccessSignature sr=");
    match sr {
        Some(sr) => sink.put(sr),
        None => resource.write_encoded(sink),
    }
    sink.put(b"&sig=");
    url_encode(sink, sig);
    sink.put(b"&se=");
    sink.put(expiry.as_bytes());
    if let Some(name) = key_name {
        sink.put(b"&skn=");
        url_encode(sink, name.as_bytes());
    }
}

/// Writes a token for `resource` signed with `key`, expiring at `expiry_unix`, into `out`;
/// returns the token text (a prefix of `out`). Does not allocate on success.
///
/// `key_name` is the shared access policy (`skn`), for policy keys and DPS group
/// enrollments (`registration`); `None` for device and module keys.
///
/// Errors: `InvalidArgument` (bad key name), `BufferTooSmall` when `out` is shorter than the
/// token (a buffer of [`MAX_TOKEN_LEN`] always fits). `out` may be partly written on failure.
pub fn write_token<'o>(
    resource: &Resource<'_>,
    key: &SasKey,
    key_name: Option<&str>,
    expiry_unix: u64,
    out: &'o mut [u8],
) -> Result<&'o str> {
    if let Some(name) = key_name {
        check_key_name(name)?;
    }
    let expiry = Digits::new(expiry_unix);
    let mut sr_buf = [0u8; SR_INLINE];
    let sr = encoded_sr(resource, &mut sr_buf);
    let sig = signature(resource, sr, key, &expiry);
    let mut sink = Fixed { buf: out, len: 0 };
    emit_token(&mut sink, resource, sr, &sig, &expiry, key_name);
    let len = sink.len;
    if len > sink.buf.len() {
        return Err(Error::new(
            Code::BufferTooSmall,
            format!(
                "the token needs {len} bytes; the buffer holds {}",
                sink.buf.len()
            ),
        ));
    }
    let out = &sink.buf[..len];
    Ok(std::str::from_utf8(out).expect("tokens are ASCII"))
}

/// When a token should expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// At this Unix time, exactly.
    At(u64),
    /// `ttl_secs` after the clock's current time (the clock must be set).
    In { ttl_secs: u64 },
}

/// A SAS token: its text is a secret for as long as it is valid, so it is zeroed on drop and
/// `Debug` hides the signature.
#[derive(Clone)]
pub struct SasToken {
    text: Zeroizing<String>,
    expiry_unix: u64,
}

impl fmt::Debug for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasToken")
            .field("expiry_unix", &self.expiry_unix)
            .field("text", &"***")
            .finish()
    }
}

impl SasToken {
    /// Makes a token for `resource`. With [`Expiry::In`], the expiry is the clock's time plus
    /// the lifetime; a clock before 2025 is refused (`ClockNotSet`), as a token made from it
    /// would be expired on arrival.
    pub fn generate(
        resource: &Resource<'_>,
        key: &SasKey,
        key_name: Option<&str>,
        expiry: Expiry,
        clock: &dyn TimeProvider,
    ) -> Result<SasToken> {
        let expiry_unix = match expiry {
            Expiry::At(t) => t,
            Expiry::In { ttl_secs } => {
                if ttl_secs == 0 {
                    return Err(Error::new(
                        Code::InvalidArgument,
                        "token lifetime must not be 0",
                    ));
                }
                crate::auth::now_unix(clock)?.saturating_add(ttl_secs)
            }
        };
        let mut buf = Zeroizing::new([0u8; MAX_TOKEN_LEN]);
        let text = write_token(resource, key, key_name, expiry_unix, &mut buf[..])?;
        Ok(SasToken {
            text: Zeroizing::new(text.to_owned()),
            expiry_unix,
        })
    }

    /// A ready token (for example from a connection string's `SharedAccessSignature`),
    /// checked to be well formed.
    pub fn from_text(text: &str) -> Result<SasToken> {
        let parsed = parse(text)?;
        Ok(SasToken {
            text: Zeroizing::new(text.to_owned()),
            expiry_unix: parsed.expiry_unix,
        })
    }

    /// The token text, to send as the MQTT password.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// When the token expires, Unix seconds.
    pub fn expiry_unix(&self) -> u64 {
        self.expiry_unix
    }
}

/// The fields of a token, as read by [`parse`].
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedToken {
    /// `sr` exactly as in the token (URL-encoded): the string that was signed.
    pub sr_encoded: String,
    /// `sr` decoded: the resource URI.
    pub resource_uri: String,
    /// The signature, URL-decoded: 32 bytes.
    pub signature: [u8; 32],
    /// `se`: the expiry, Unix seconds.
    pub expiry_unix: u64,
    /// `skn`, URL-decoded, when present.
    pub key_name: Option<String>,
    /// `se` exactly as in the token: signed as received.
    se_text: String,
}

impl fmt::Debug for ParsedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedToken")
            .field("resource_uri", &self.resource_uri)
            .field("expiry_unix", &self.expiry_unix)
            .field("key_name", &self.key_name)
            .field("signature", &"***")
            .finish()
    }
}

impl ParsedToken {
    /// The resource the token grants, checked.
    pub fn resource(&self) -> Result<Resource<'_>> {
        Resource::parse(&self.resource_uri)
    }
}

fn malformed(message: impl Into<String>) -> Error {
    Error::new(Code::TokenMalformed, message)
}

/// Reads a token's fields. Refuses (`TokenMalformed`, naming the problem) a missing
/// `SharedAccessSignature ` prefix, a missing, empty, repeated or unknown field, a bad
/// escape, a signature that is not base64 of 32 bytes, or an expiry that is not a number.
/// Field order is free. Never puts the signature in a message.
pub fn parse(token: &str) -> Result<ParsedToken> {
    if token.len() > MAX_PARSE_LEN {
        return Err(malformed(format!(
            "token is {} bytes long; the limit is {MAX_PARSE_LEN}",
            token.len()
        )));
    }
    let fields = token
        .strip_prefix("SharedAccessSignature ")
        .ok_or_else(|| malformed("token does not start with \"SharedAccessSignature \""))?;
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for field in fields.split('&') {
        let (name, value) = field.split_once('=').ok_or_else(|| {
            malformed(format!(
                "token field \"{}\" has no '='",
                excerpt(field.get(..8).unwrap_or("?"))
            ))
        })?;
        let slot = match name {
            "sr" => &mut sr,
            "sig" => &mut sig,
            "se" => &mut se,
            "skn" => &mut skn,
            other => {
                return Err(malformed(format!(
                    "token has an unknown field \"{}\"",
                    excerpt(other)
                )))
            }
        };
        if slot.is_some() {
            return Err(malformed(format!("token has field \"{name}\" twice")));
        }
        if value.is_empty() {
            return Err(malformed(format!("token field \"{name}\" is empty")));
        }
        *slot = Some(value);
    }
    let sr = sr.ok_or_else(|| malformed("token has no \"sr\" (resource) field"))?;
    let sig = sig.ok_or_else(|| malformed("token has no \"sig\" (signature) field"))?;
    let se = se.ok_or_else(|| malformed("token has no \"se\" (expiry) field"))?;
    let resource_uri =
        url_decode(sr).ok_or_else(|| malformed("token field \"sr\" has a malformed %-escape"))?;
    // The signature is a credential while the token is valid: every copy made here is wiped.
    let sig_b64 = Zeroizing::new(
        url_decode(sig).ok_or_else(|| malformed("token field \"sig\" has a malformed %-escape"))?,
    );
    let mut signature = [0u8; 32];
    let mut raw = Zeroizing::new([0u8; 48]);
    let n = STANDARD
        .decode_slice(sig_b64.as_bytes(), &mut raw[..])
        .map_err(|_| malformed("token signature is not base64 of an HMAC-SHA256 (32 bytes)"))?;
    if n != 32 {
        return Err(malformed(format!(
            "token signature is {n} bytes; HMAC-SHA256 gives 32"
        )));
    }
    signature.copy_from_slice(&raw[..32]);
    if !se.bytes().all(|b| b.is_ascii_digit()) || se.len() > 20 {
        return Err(malformed(format!(
            "token expiry \"{}\" is not Unix seconds",
            excerpt(se)
        )));
    }
    let expiry_unix = se
        .parse()
        .map_err(|_| malformed("token expiry is out of range"))?;
    let key_name = match skn {
        Some(s) => Some(
            url_decode(s)
                .ok_or_else(|| malformed("token field \"skn\" has a malformed %-escape"))?,
        ),
        None => None,
    };
    Ok(ParsedToken {
        sr_encoded: sr.to_owned(),
        resource_uri,
        signature,
        expiry_unix,
        key_name,
        se_text: se.to_owned(),
    })
}

/// Verifies a token against `key` at time `now_unix` and returns its fields.
///
/// Checks, in this order, each with its own result code:
/// 1. well formed (`TokenMalformed`);
/// 2. signed with `key` (`SignatureMismatch`): HMAC-SHA256 over `sr` exactly as received,
///    `"\n"` and `se`, compared in constant time;
/// 3. not expired (`TokenExpired`): valid while `now_unix < se`.
///
/// An expiry refusal is therefore only given for a token the key really signed. Pure: no
/// clock, no I/O. Use [`verify_for`] to also check the resource.
pub fn verify(token: &str, key: &SasKey, now_unix: u64) -> Result<ParsedToken> {
    let parsed = parse(token)?;
    let mut mac = key.mac();
    mac.update(parsed.sr_encoded.as_bytes());
    mac.update(b"\n");
    mac.update(parsed.se_text.as_bytes());
    if mac.verify_slice(&parsed.signature).is_err() {
        return Err(Error::new(
            Code::SignatureMismatch,
            "token signature does not match the key (wrong key, or the token was altered)",
        ));
    }
    if now_unix >= parsed.expiry_unix {
        return Err(Error::new(
            Code::TokenExpired,
            format!(
                "token expired at {} ({} s ago; clock says {})",
                crate::cert::format_utc(parsed.expiry_unix as i64),
                now_unix - parsed.expiry_unix,
                crate::cert::format_utc(now_unix as i64)
            ),
        ));
    }
    Ok(parsed)
}

/// As [`verify`], and also checks that the token grants `resource_uri` (unencoded, e.g.
/// `host/devices/dev1`): the token's resource must be the same or a path prefix of it (a
/// hub-wide policy token grants every device), host names compared without case. A
/// mismatch is `NotAuthorized` and is reported before the signature is checked, since
/// it names what the token is for (which the token shows anyway).
pub fn verify_for(
    token: &str,
    key: &SasKey,
    resource_uri: &str,
    now_unix: u64,
) -> Result<ParsedToken> {
    let parsed = parse(token)?;
    if !grants(&parsed.resource_uri, resource_uri) {
        return Err(Error::new(
            Code::NotAuthorized,
            format!(
                "token is for \"{}\", not \"{}\"",
                excerpt(&parsed.resource_uri),
                excerpt(resource_uri)
            ),
        ));
    }
    verify(token, key, now_unix)
}

/// Whether a token for `granted` covers `wanted`: equal or a path prefix, first segment
/// (the host) compared without case.
pub(crate) fn grants(granted: &str, wanted: &str) -> bool {
    let mut g = granted.trim_end_matches('/').split('/');
    let mut w = wanted.split('/');
    match (g.next(), w.next()) {
        (Some(gh), Some(wh)) if gh.eq_ignore_ascii_case(wh) => {}
        _ => return false,
    }
    for part in g {
        if w.next() != Some(part) {
            return false;
        }
    }
    true
}

/// How long before expiry a token of this lifetime is renewed: the larger of
/// [`defaults::RENEWAL_MARGIN_MIN_SECS`] (120 s) and [`defaults::RENEWAL_MARGIN_PERCENT`]
/// (15 %) of the lifetime, but at most half the lifetime (so a short-lived token is still
/// used).
pub fn renewal_margin(lifetime_secs: u64) -> u64 {
    let percent = u64::from(defaults::RENEWAL_MARGIN_PERCENT);
    let margin = u64::from(defaults::RENEWAL_MARGIN_MIN_SECS)
        .max(lifetime_secs.saturating_mul(percent) / 100);
    margin.min(lifetime_secs / 2)
}

/// When to renew a token issued at `issued_unix` that expires at `expiry_unix`.
pub fn renew_at(issued_unix: u64, expiry_unix: u64) -> u64 {
    let lifetime = expiry_unix.saturating_sub(issued_unix);
    expiry_unix - renewal_margin(lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::FixedClock;

    const VECTOR_KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
    const HOST: &str = "myiothub.azure-devices.net";

    fn token(resource: &Resource<'_>, key: &SasKey, skn: Option<&str>, se: u64) -> String {
        let mut buf = [0u8; MAX_TOKEN_LEN];
        write_token(resource, key, skn, se, &mut buf)
            .unwrap()
            .to_owned()
    }

    #[test]
    fn hmac_matches_published_vector() {
        let key = SasKey::from_base64(VECTOR_KEY).unwrap();
        let sig = STANDARD.encode(key.sign(b"sign this message"));
        assert_eq!(sig, "8NJRMT83CcplGrAGaUVIUM/md5914KpWVNngSVoF9/M=");
    }

    #[test]
    fn sr_encoding_matches_published_strings_to_sign() {
        let device = Resource::device(HOST, "my_device").unwrap();
        assert_eq!(
            device.encoded(),
            "myiothub.azure-devices.net%2Fdevices%2Fmy_device"
        );
        let module = Resource::module(HOST, "my_device", "my_module").unwrap();
        assert_eq!(
            module.encoded(),
            "myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module"
        );
        assert_eq!(url_encode_string("a b:c~d*"), "a%20b%3Ac~d%2A");
    }

    #[test]
    fn token_signs_the_published_string_and_verifies() {
        let key = SasKey::from_base64(VECTOR_KEY).unwrap();
        let device = Resource::device(HOST, "my_device").unwrap();
        let text = token(&device, &key, None, 1578941692);
        let expected_sig = STANDARD
            .encode(key.sign(b"myiothub.azure-devices.net%2Fdevices%2Fmy_device\n1578941692"));
        let expected = format!(
            "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig={}&se=1578941692",
            url_encode_string(&expected_sig)
        );
        assert_eq!(text, expected);
        let parsed = verify(&text, &key, 1578941691).unwrap();
        assert_eq!(
            parsed.resource_uri,
            "myiothub.azure-devices.net/devices/my_device"
        );
        assert_eq!(parsed.resource().unwrap(), device);
        assert_eq!(parsed.key_name, None);
    }

    #[test]
    fn module_and_policy_and_dps_tokens() {
        let key = SasKey::from_base64(VECTOR_KEY).unwrap();
        let module =
            Resource::parse("myiothub.azure-devices.net/devices/my_device/modules/my_module")
                .unwrap();
        let text = token(&module, &key, None, 1578941692);
        assert!(text.starts_with(
            "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module&sig="
        ));
        let hub = Resource::parse(HOST).unwrap();
        let text = token(&hub, &key, Some("iothubowner"), 2_000_000_000);
        assert!(text.ends_with("&se=2000000000&skn=iothubowner"), "{text}");
        let parsed = verify_for(&text, &key, "MyIotHub.azure-devices.net/devices/x", 1).unwrap();
        assert_eq!(parsed.key_name.as_deref(), Some("iothubowner"));
        let dps = Resource::parse("0ne00000A0A/registrations/my-reg").unwrap();
        let text = token(&dps, &key, Some("registration"), 2_000_000_000);
        assert!(text.starts_with("SharedAccessSignature sr=0ne00000A0A%2Fregistrations%2Fmy-reg&"));
        verify_for(&text, &key, "0ne00000A0A/registrations/my-reg", 1).unwrap();
    }

    #[test]
    fn verify_names_each_failure() {
        let key = SasKey::from_base64(VECTOR_KEY).unwrap();
        let other = SasKey::from_bytes(b"another key").unwrap();
        let device = Resource::device(HOST, "my_device").unwrap();
        let text = token(&device, &key, None, 1_800_000_000);
        assert_eq!(
            verify(&text, &other, 0).unwrap_err().code(),
            Code::SignatureMismatch
        );
        let e = verify(&text, &key, 1_800_000_000).unwrap_err();
        assert_eq!(e.code(), Code::TokenExpired);
        assert!(e.message().contains("2027-01-15"), "{e:?}");
        let e = verify_for(&text, &key, "myiothub.azure-devices.net/devices/other", 0).unwrap_err();
        assert_eq!(e.code(), Code::NotAuthorized);
        let e = verify_for(
            &text,
            &key,
            "myiothub.azure-devices.net/devices/my_devic",
            0,
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::NotAuthorized);
        // Altering se breaks the signature.
        let altered = text.replace("&se=1800000000", "&se=1900000000");
        assert_eq!(
            verify(&altered, &key, 0).unwrap_err().code(),
            Code::SignatureMismatch
        );
        // The case of an escape matters: the service signs sr as received.
        let lower = text.replace("%2F", "%2f");
        assert_eq!(
            verify(&lower, &key, 0).unwrap_err().code(),
            Code::SignatureMismatch
        );
    }

    #[test]
    fn parse_refuses_malformed_tokens_with_a_reason() {
        let cases = [
            ("sr=a&sig=b&se=1", "does not start"),
            ("SharedAccessSignature sr=a&se=1", "no \"sig\""),
            ("SharedAccessSignature sig=AAAA&se=1", "no \"sr\""),
            ("SharedAccessSignature sr=a&sig=AAAA", "no \"se\""),
            ("SharedAccessSignature sr=a&sr=b&sig=AAAA&se=1", "twice"),
            (
                "SharedAccessSignature sr=a&sig=AAAA&se=1&x=2",
                "unknown field",
            ),
            ("SharedAccessSignature sr=a&sig=AAAA&se=", "empty"),
            ("SharedAccessSignature sr=%2&sig=AAAA&se=1", "escape"),
            ("SharedAccessSignature sr=a&sig=AAAA&se=1", "32"),
            ("SharedAccessSignature sr=a&sig=!!!!&se=1", "not base64"),
            ("SharedAccessSignature sr=a&sig=AAAA&sex", "no '='"),
        ];
        for (text, needle) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.code(), Code::TokenMalformed, "{text}");
            assert!(e.message().contains(needle), "{text}: {e:?}");
        }
        let sig = url_encode_string(&STANDARD.encode([7u8; 32]));
        let e = parse(&format!("SharedAccessSignature sr=a&sig={sig}&se=12x")).unwrap_err();
        assert!(e.message().contains("Unix seconds"), "{e:?}");
        let e = parse(&format!(
            "SharedAccessSignature sr=a&sig={sig}&se=99999999999999999999"
        ))
        .unwrap_err();
        assert!(e.message().contains("range"), "{e:?}");
        let giant = "x".repeat(MAX_PARSE_LEN + 1);
        assert!(parse(&giant).unwrap_err().message().contains("limit"));
    }

    #[test]
    fn keys_decode_once_and_never_print() {
        let key = SasKey::from_base64(VECTOR_KEY).unwrap();
        assert_eq!(format!("{key:?}"), "SasKey(***)");
        assert_eq!(key.to_base64().as_str(), VECTOR_KEY);
        // Padding may be left out.
        let unpadded = SasKey::from_base64(VECTOR_KEY.trim_end_matches('=')).unwrap();
        assert!(key.ct_eq(&unpadded));
        let e = SasKey::from_base64("NMgJ-vdK").unwrap_err();
        assert_eq!(e.code(), Code::SasKeyInvalid);
        assert_eq!(
            e.message(),
            "key is not valid base64: a character that is not base64 at offset 4"
        );
        assert_eq!(
            SasKey::from_base64("").unwrap_err().code(),
            Code::SasKeyInvalid
        );
        assert_eq!(
            SasKey::from_base64("A").unwrap_err().code(),
            Code::SasKeyInvalid
        );
        let giant = "A".repeat(100_000);
        let e = SasKey::from_base64(&giant).unwrap_err();
        assert!(e.message().contains("at most 344"), "{e:?}");
        let e = SasKey::from_base64("AAAAA*AA").unwrap_err();
        assert!(
            !e.message().contains("AAAA") && !e.message().contains('*'),
            "{e:?}"
        );
        assert!(
            !e.message().contains("42"),
            "the bad byte's value is not shown: {e:?}"
        );
    }

    #[test]
    fn token_debug_hides_the_signature() {
        let key = SasKey::from_base64(VECTOR_KEY).unwrap();
        let device = Resource::device(HOST, "d").unwrap();
        let t = SasToken::generate(
            &device,
            &key,
            None,
            Expiry::At(1_900_000_000),
            &FixedClock(0),
        )
        .unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("sig"), "{shown}");
        let parsed = parse(t.as_str()).unwrap();
        assert!(!format!("{parsed:?}").contains(&STANDARD.encode(parsed.signature)));
    }

    #[test]
    fn expiry_comes_from_the_injected_clock_and_1970_is_refused() {
        let key = SasKey::from_base64(VECTOR_KEY).unwrap();
        let device = Resource::device(HOST, "d").unwrap();
        let t = SasToken::generate(
            &device,
            &key,
            None,
            Expiry::In { ttl_secs: 3600 },
            &FixedClock(1_800_000_000),
        )
        .unwrap();
        assert_eq!(t.expiry_unix(), 1_800_003_600);
        assert!(t.as_str().ends_with("&se=1800003600"));
        let e = SasToken::generate(
            &device,
            &key,
            None,
            Expiry::In { ttl_secs: 60 },
            &FixedClock(5),
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::ClockNotSet);
        let e = SasToken::generate(
            &device,
            &key,
            None,
            Expiry::In { ttl_secs: 0 },
            &FixedClock(5),
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    #[test]
    fn write_token_reports_the_size_needed() {
        let key = SasKey::from_base64(VECTOR_KEY).unwrap();
        let device = Resource::device(HOST, "my_device").unwrap();
        let full = token(&device, &key, None, 1578941692);
        let mut small = [0u8; 10];
        let e = write_token(&device, &key, None, 1578941692, &mut small).unwrap_err();
        assert_eq!(e.code(), Code::BufferTooSmall);
        assert!(e.message().contains(&format!("needs {} bytes", full.len())));
        let mut exact = vec![0u8; full.len()];
        assert_eq!(
            write_token(&device, &key, None, 1578941692, &mut exact).unwrap(),
            full
        );
        let e = write_token(&device, &key, Some("bad name"), 1, &mut exact).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    #[test]
    fn largest_valid_inputs_fit_max_token_len() {
        let key = SasKey::from_base64(VECTOR_KEY).unwrap();
        let host = "h".repeat(crate::auth::MAX_HOST_LEN);
        let id = "%".repeat(crate::auth::MAX_ID_LEN);
        let module = Resource::module(&host, &id, &id).unwrap();
        let name = "n".repeat(MAX_KEY_NAME_LEN);
        let mut buf = [0u8; MAX_TOKEN_LEN];
        let text = write_token(&module, &key, Some(&name), u64::MAX, &mut buf).unwrap();
        assert!(text.len() <= MAX_TOKEN_LEN);
        verify(text, &key, 0).unwrap();
    }

    #[test]
    fn resource_parse_names_the_bad_part() {
        assert_eq!(
            Resource::parse("h/devices/a/b").unwrap_err().code(),
            Code::IdInvalid
        );
        let e = Resource::parse("h/devices/my dev").unwrap_err();
        assert!(e.message().contains("space"), "{e:?}");
        let e = Resource::parse("h/devices/").unwrap_err();
        assert_eq!(e.message(), "device id is empty");
        assert!(Resource::parse("h/things/x").is_err());
        assert!(Resource::parse(&"h/".repeat(5000)).is_err());
        assert_eq!(Resource::parse("h/devices/d").unwrap().uri(), "h/devices/d");
    }

    #[test]
    fn renewal_uses_the_larger_of_120s_and_15_percent() {
        assert_eq!(renewal_margin(3600), 540);
        assert_eq!(renewal_margin(600), 120);
        assert_eq!(renewal_margin(100), 50);
        assert_eq!(renew_at(1000, 4600), 4060);
        assert_eq!(renew_at(1000, 1000), 1000);
    }
}
