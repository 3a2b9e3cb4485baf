//! Keys that never leave the hardware: a PKCS#11 token (HSM, TPM 2.0 through tpm2-pkcs11,
//! secure element, SoftHSM) signs the TLS handshake; the private key is never extracted.
//!
//! The module (a shared library) is loaded at run time with `cryptoki` and kept loaded for
//! the life of the process, initialised once per path. The key and its certificate are named
//! by an RFC 7512 URI ([`Pkcs11Uri`]: `pkcs11:token=...;object=...;id=...`). Signatures go
//! through the one external-signer mechanism of [`crate::auth::x509`]: [`TokenSigner`] is an
//! [`ExternalSigner`], so the probe that refuses a key that does not match the certificate,
//! the scheme choice and the DER checks are the same as for a C signing callback.
//!
//! The PIN is a secret: held in a zeroizing buffer (or asked of a callback at each log-in),
//! never logged, never in an error message, wiped when the signer is dropped. It is kept
//! while the signer lives so that a token that failed (removed, sessions closed) can be
//! logged in to again at the next connection: such a failure is
//! [`Code::Pkcs11TokenFailed`], which the session retries like a network failure.
//!
//! Mechanisms: ECDSA P-256 and P-384 with `CKM_ECDSA` over the digest (the raw r||s the token
//! returns is DER-encoded), RSA PKCS#1 v1.5 with `CKM_RSA_PKCS` over the DigestInfo, and
//! RSA-PSS with `CKM_RSA_PKCS_PSS` (MGF1 of the same hash, salt as long as the hash). Only
//! schemes whose mechanism the token lists are offered; none at all is
//! [`Code::Pkcs11MechanismUnsupported`].

use std::collections::HashMap;
use std::fmt;
use std::os::raw::c_ulong;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::AuthPin;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use zeroize::Zeroizing;

use crate::auth::x509::{
    ecdsa_raw_to_der, scheme_digest, DeviceCertificate, ExternalSigner, KeyKind,
};
use crate::error::{Code, Error, Result};

// ---------------------------------------------------------------------------------------
// RFC 7512 URIs

/// A PKCS#11 URI (RFC 7512) naming a token and an object on it.
///
/// Path attributes: `token`, `manufacturer`, `serial`, `model`, `slot-id`, `object`, `id`,
/// `type` (`private`, `cert` or `public`: the key and certificate are both looked up by the
/// same `object`/`id`), and vendor `x-...` attributes (ignored). Query attributes:
/// `pin-value` (a secret: zeroized, never printed), `module-path`; `pin-source` and
/// `module-name` are ignored. Values are percent-decoded; `id` is bytes (`%01%02`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// Token label.
    pub token: Option<String>,
    /// Token manufacturer id.
    pub manufacturer: Option<String>,
    /// Token serial number.
    pub serial: Option<String>,
    /// Token model.
    pub model: Option<String>,
    /// Slot id.
    pub slot_id: Option<u64>,
    /// Object label (`CKA_LABEL`).
    pub object: Option<String>,
    /// Object id (`CKA_ID`), bytes.
    pub id: Option<Vec<u8>>,
    /// `module-path` from the query.
    pub module_path: Option<String>,
    /// `pin-value` from the query: a secret.
    pin_value: Option<Zeroizing<String>>,
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the PIN.
        f.write_str(&self.describe())
    }
}

fn uri_error(message: impl Into<String>) -> Error {
    Error::new(Code::Pkcs11UriInvalid, message)
}

/// Percent-decodes `value` (RFC 3986) into bytes.
fn percent_decode(value: &str, name: &str) -> Result<Vec<u8>> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    uri_error(format!(
                        "PKCS#11 URI attribute `{name}` has a `%` not followed by two hex digits"
                    ))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn percent_decode_text(value: &str, name: &str) -> Result<String> {
    String::from_utf8(percent_decode(value, name)?).map_err(|_| {
        uri_error(format!(
            "PKCS#11 URI attribute `{name}` is not UTF-8 once decoded"
        ))
    })
}

/// Percent-encodes `bytes` for a URI: unreserved characters stay, the rest become `%XX`.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Pkcs11Uri {
    /// Parses `pkcs11:path-attributes[?query-attributes]`. `Pkcs11UriInvalid` names the
    /// problem (never quoting a `pin-value`).
    pub fn parse(uri: &str) -> Result<Self> {
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| uri_error("a PKCS#11 URI starts with `pkcs11:` (RFC 7512)"))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut parsed = Pkcs11Uri::default();
        fn set<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<()> {
            if slot.is_some() {
                return Err(uri_error(format!(
                    "PKCS#11 URI attribute `{name}` appears twice"
                )));
            }
            *slot = Some(value);
            Ok(())
        }
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr.split_once('=').ok_or_else(|| {
                uri_error(format!(
                    "PKCS#11 URI path attribute `{}` has no `=`",
                    crate::auth::excerpt(attr)
                ))
            })?;
            match name {
                "token" => set(&mut parsed.token, percent_decode_text(value, name)?, name)?,
                "manufacturer" => set(
                    &mut parsed.manufacturer,
                    percent_decode_text(value, name)?,
                    name,
                )?,
                "serial" => set(&mut parsed.serial, percent_decode_text(value, name)?, name)?,
                "model" => set(&mut parsed.model, percent_decode_text(value, name)?, name)?,
                "object" => set(&mut parsed.object, percent_decode_text(value, name)?, name)?,
                "id" => set(&mut parsed.id, percent_decode(value, name)?, name)?,
                "slot-id" => {
                    let id = percent_decode_text(value, name)?
                        .parse::<u64>()
                        .map_err(|_| {
                            uri_error("PKCS#11 URI attribute `slot-id` is not a number")
                        })?;
                    set(&mut parsed.slot_id, id, name)?
                }
                "type" => match percent_decode_text(value, name)?.as_str() {
                    "private" | "cert" | "public" => {}
                    other => {
                        return Err(uri_error(format!(
                            "PKCS#11 URI `type={}`: tether looks up a private key and its \
                             certificate (type private, cert or public)",
                            crate::auth::excerpt(other)
                        )))
                    }
                },
                "library-description"
                | "library-manufacturer"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer" => {}
                n if n.starts_with("x-") => {}
                other => {
                    return Err(uri_error(format!(
                        "PKCS#11 URI path attribute `{}` is not one RFC 7512 defines",
                        crate::auth::excerpt(other)
                    )))
                }
            }
        }
        for attr in query.unwrap_or("").split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| uri_error("a PKCS#11 URI query attribute has no `=`".to_string()))?;
            match name {
                "pin-value" => {
                    let pin = Zeroizing::new(percent_decode(value, name)?);
                    let pin = std::str::from_utf8(&pin)
                        .map_err(|_| uri_error("PKCS#11 URI `pin-value` is not UTF-8"))?;
                    set(&mut parsed.pin_value, Zeroizing::new(pin.to_owned()), name)?
                }
                "module-path" => set(
                    &mut parsed.module_path,
                    percent_decode_text(value, name)?,
                    name,
                )?,
                "pin-source" | "module-name" => {}
                n if n.starts_with("x-") => {}
                other => {
                    return Err(uri_error(format!(
                        "PKCS#11 URI query attribute `{}` is not one RFC 7512 defines",
                        crate::auth::excerpt(other)
                    )))
                }
            }
        }
        if parsed.object.is_none() && parsed.id.is_none() {
            return Err(uri_error(
                "the PKCS#11 URI names no key: add `object=<label>` or `id=<%xx bytes>`",
            ));
        }
        Ok(parsed)
    }

    /// The URI without any PIN, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let text = [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("serial", &self.serial),
            ("model", &self.model),
        ];
        for (name, value) in text {
            if let Some(v) = value {
                parts.push(format!("{name}={}", percent_encode(v.as_bytes())));
            }
        }
        if let Some(slot) = self.slot_id {
            parts.push(format!("slot-id={slot}"));
        }
        if let Some(o) = &self.object {
            parts.push(format!("object={}", percent_encode(o.as_bytes())));
        }
        if let Some(id) = &self.id {
            let hex: String = id.iter().map(|b| format!("%{b:02X}")).collect();
            parts.push(format!("id={hex}"));
        }
        format!("pkcs11:{}", parts.join(";"))
    }

    fn matches_token(&self, slot: Slot, info: &TokenInfo) -> bool {
        let same = |want: &Option<String>, have: &str| {
            want.as_deref().map_or(true, |w| w == have.trim_end())
        };
        self.slot_id.map_or(true, |id| id == slot.id())
            && same(&self.token, info.label())
            && same(&self.manufacturer, info.manufacturer_id())
            && same(&self.serial, info.serial_number())
            && same(&self.model, info.model())
    }

    fn object_template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut template = vec![Attribute::Class(class)];
        if let Some(label) = &self.object {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &self.id {
            template.push(Attribute::Id(id.clone()));
        }
        template
    }
}

// ---------------------------------------------------------------------------------------
// PINs

/// Asks for the PIN at each log-in; returns it in a zeroizing buffer.
pub type PinCallback = dyn Fn() -> Result<Zeroizing<String>> + Send + Sync;

/// Where the PIN comes from.
#[derive(Clone)]
pub enum Pin {
    /// No PIN: the token logs in through a protected path (PIN pad), needs no log-in, or
    /// the URI carries `pin-value`.
    None,
    /// A PIN, kept zeroized while the signer lives (to log in again after a token failure).
    Value(Arc<Zeroizing<String>>),
    /// Asked at each log-in, so the library keeps no copy between log-ins.
    Callback(Arc<PinCallback>),
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pin::None => "Pin::None",
            Pin::Value(_) => "Pin::Value(<secret>)",
            Pin::Callback(_) => "Pin::Callback",
        })
    }
}

impl Pin {
    /// A PIN given as text (copied into a zeroizing buffer).
    pub fn value(pin: &str) -> Pin {
        Pin::Value(Arc::new(Zeroizing::new(pin.to_owned())))
    }

    fn get(&self, uri: &Pkcs11Uri) -> Result<Option<Zeroizing<String>>> {
        match self {
            Pin::Value(pin) => Ok(Some(Zeroizing::new(pin.as_str().to_owned()))),
            Pin::Callback(ask) => ask().map(Some),
            Pin::None => Ok(uri.pin_value.clone()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Modules

fn rv_of(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// The function and return value of a failed call, as `C_Sign: DeviceRemoved`.
fn ck_text(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("{function}: CKR {rv:?}"),
        other => other.to_string(),
    }
}

/// Whether a failure means the token went away or its sessions were lost: worth logging in
/// again at the next connection.
fn is_token_failure(e: &CkError) -> bool {
    matches!(
        rv_of(e),
        Some(
            RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SessionClosed
                | RvError::SessionHandleInvalid
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::FunctionFailed
                | RvError::GeneralError
                | RvError::CryptokiNotInitialized
        )
    )
}

fn token_failed(what: &str, e: &CkError) -> Error {
    Error::new(
        Code::Pkcs11TokenFailed,
        format!("the PKCS#11 token failed {what} ({})", ck_text(e)),
    )
}

/// The module to load: the one given, else the URI's `module-path`.
fn module_of(module: Option<&str>, uri: &Pkcs11Uri) -> Result<String> {
    module
        .or(uri.module_path.as_deref())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::new(
                Code::Pkcs11ModuleNotFound,
                "no PKCS#11 module given: pass its path or add `?module-path=` to the URI",
            )
        })
}

/// Loads and initialises the module at `path`, once per process (modules stay loaded: a
/// second `C_Initialize` or a `C_Finalize` under another user of the same module would
/// break it).
fn load_module(path: &str) -> Result<Pkcs11> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    if !Path::new(path).is_file() {
        return Err(Error::new(
            Code::Pkcs11ModuleNotFound,
            format!("PKCS#11 module {path} does not exist (install the token's module, e.g. softhsm2, libtpm2-pkcs11-1 or the vendor's, and give its path)"),
        ));
    }
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        Error::new(
            Code::Pkcs11ModuleNotFound,
            format!("PKCS#11 module {path}: {e}"),
        )
    })?;
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = modules.get(&canonical) {
        return Ok(ctx.clone());
    }
    let not_a_module = |why: String| {
        Error::new(
            Code::Pkcs11ModuleInvalid,
            format!("{path} is not a usable PKCS#11 module: {why}"),
        )
    };
    let ctx = Pkcs11::new(&canonical).map_err(|e| match e {
        CkError::LibraryLoading(e) => not_a_module(format!("it cannot be loaded ({e})")),
        CkError::MissingSymbol(s) => not_a_module(format!("it has no {s}")),
        other => not_a_module(ck_text(&other)),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        Err(e) if rv_of(&e) == Some(RvError::CryptokiAlreadyInitialized) => {}
        Err(e) => return Err(not_a_module(ck_text(&e))),
    }
    crate::log!(crate::log::Level::Debug, "PKCS#11 module {path} loaded");
    modules.insert(canonical, ctx.clone());
    Ok(ctx)
}

// ---------------------------------------------------------------------------------------
// Tokens, sessions, keys

/// The one token the URI names.
fn find_token(ctx: &Pkcs11, module: &str, uri: &Pkcs11Uri) -> Result<(Slot, TokenInfo)> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| token_failed("listing its slots", &e))?;
    let mut present = Vec::new();
    let mut matching = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        present.push(format!("\"{}\"", info.label().trim_end()));
        if uri.matches_token(slot, &info) {
            matching.push((slot, info));
        }
    }
    match matching.len() {
        1 => Ok(matching.pop().expect("one")),
        0 => Err(Error::new(
            Code::Pkcs11TokenAbsent,
            if present.is_empty() {
                format!(
                    "no token is present in module {module} (wanted {})",
                    uri.describe()
                )
            } else {
                format!(
                    "no token matching {} is present in module {module} (tokens present: {})",
                    uri.describe(),
                    present.join(", ")
                )
            },
        )),
        n => Err(Error::new(
            Code::Pkcs11KeyAmbiguous,
            format!(
                "{n} tokens match {} in module {module} ({}): add token= or serial= to the URI",
                uri.describe(),
                present.join(", ")
            ),
        )),
    }
}

/// What proves a PIN logged in to a token in this process: an HMAC of it under a key made at
/// random for the process (never the PIN itself), keyed by module and token.
type PinProofs = HashMap<(String, String, String), ring::hmac::Tag>;

fn pin_proofs() -> (&'static ring::hmac::Key, &'static Mutex<PinProofs>) {
    static KEY: OnceLock<ring::hmac::Key> = OnceLock::new();
    static PROOFS: OnceLock<Mutex<PinProofs>> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .expect("the OS random generator works")
    });
    (key, PROOFS.get_or_init(Default::default))
}

/// Logs the user in on `session`; wrong and locked PINs are named.
///
/// PKCS#11 log-ins belong to the application, not to a session: once one configuration of
/// this process has logged in to a token, `C_Login` answers "already logged in" to any PIN.
/// A PIN is therefore checked against the one that logged in (an HMAC under a per-process
/// random key, compared in constant time), so a wrong PIN is refused even then.
fn log_in(
    ctx: &Pkcs11,
    module: &str,
    slot: Slot,
    info: &TokenInfo,
    session: &Session,
    pin: &Pin,
    uri: &Pkcs11Uri,
) -> Result<()> {
    let label = info.label().trim_end().to_owned();
    let locked = || {
        Error::new(
            Code::Pkcs11PinLocked,
            format!("the user PIN of token \"{label}\" is locked (too many wrong PINs): unlock it with the SO PIN"),
        )
    };
    if info.user_pin_locked() {
        return Err(locked());
    }
    if !info.login_required() {
        return Ok(());
    }
    let pin = pin.get(uri)?;
    // A separate zeroizing copy for cryptoki, dropped (wiped) as soon as the call returns.
    let secret = pin.as_deref().map(|p| AuthPin::from(p.as_str()));
    let (proof_key, proofs) = pin_proofs();
    let proof = pin
        .as_deref()
        .map(|p| ring::hmac::sign(proof_key, p.as_bytes()));
    let token_id = (
        module.to_owned(),
        info.serial_number().trim_end().to_owned(),
        label.clone(),
    );
    drop(pin);
    if secret.is_none() && !info.protected_authentication_path() {
        return Err(Error::new(
            Code::Pkcs11PinIncorrect,
            format!("token \"{label}\" needs a PIN and none was given"),
        ));
    }
    let result = session.login(UserType::User, secret.as_ref());
    drop(secret);
    let mut proofs = proofs.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(()) => {
            if let Some(proof) = proof {
                proofs.insert(token_id, proof);
            }
            Ok(())
        }
        Err(e) => match rv_of(&e) {
            Some(RvError::UserAlreadyLoggedIn) => match (proofs.get(&token_id), proof) {
                (Some(known), Some(given))
                    if !bool::from(subtle::ConstantTimeEq::ct_eq(
                        known.as_ref(),
                        given.as_ref(),
                    )) =>
                {
                    Err(Error::new(
                        Code::Pkcs11PinIncorrect,
                        format!("token \"{label}\" refused the PIN (it is not the PIN this process logged in with)"),
                    ))
                }
                _ => Ok(()),
            },
            Some(RvError::PinLocked) => Err(locked()),
            Some(RvError::PinIncorrect | RvError::PinLenRange | RvError::PinInvalid) => {
                let now_locked = ctx
                    .get_token_info(slot)
                    .map(|i| i.user_pin_locked())
                    .unwrap_or(false);
                if now_locked {
                    return Err(locked());
                }
                Err(Error::new(
                    Code::Pkcs11PinIncorrect,
                    format!("token \"{label}\" refused the PIN"),
                ))
            }
            _ => Err(token_failed("logging in", &e)),
        },
    }
}

fn find_all(session: &Session, template: &[Attribute]) -> Result<Vec<ObjectHandle>> {
    session
        .find_objects(template)
        .map_err(|e| token_failed("searching for objects", &e))
}

fn attribute_bytes(session: &Session, object: ObjectHandle, kind: AttributeType) -> Vec<u8> {
    let attrs = session.get_attributes(object, &[kind]).unwrap_or_default();
    attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Label(v)
            | Attribute::Id(v)
            | Attribute::Value(v)
            | Attribute::EcPoint(v) => Some(v),
            _ => None,
        })
        .unwrap_or_default()
}

/// A short description of an object for messages: label and id.
fn object_name(session: &Session, object: ObjectHandle) -> String {
    let label = attribute_bytes(session, object, AttributeType::Label);
    let id = attribute_bytes(session, object, AttributeType::Id);
    let hex: String = id.iter().map(|b| format!("%{b:02X}")).collect();
    format!("\"{}\" (id={hex})", String::from_utf8_lossy(&label))
}

/// The one private key the URI names.
fn find_key(session: &Session, label: &str, uri: &Pkcs11Uri) -> Result<ObjectHandle> {
    let mut keys = find_all(session, &uri.object_template(ObjectClass::PRIVATE_KEY))?;
    match keys.len() {
        1 => Ok(keys.pop().expect("one")),
        0 => {
            let all = find_all(session, &[Attribute::Class(ObjectClass::PRIVATE_KEY)])?;
            let names: Vec<String> = all.iter().map(|&k| object_name(session, k)).collect();
            Err(Error::new(
                Code::Pkcs11KeyNotFound,
                format!(
                    "no private key on token \"{label}\" matches {} (private keys there: {})",
                    uri.describe(),
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ),
            ))
        }
        n => {
            let names: Vec<String> = keys.iter().map(|&k| object_name(session, k)).collect();
            Err(Error::new(
                Code::Pkcs11KeyAmbiguous,
                format!(
                    "{n} private keys on token \"{label}\" match {}: {}; add id= or object= to the URI",
                    uri.describe(),
                    names.join(", ")
                ),
            ))
        }
    }
}

/// The certificate for `key`: the one with the key's `CKA_ID` (the PKCS#11 convention), or
/// with the URI's label when the key has no id.
fn find_certificate(
    session: &Session,
    label: &str,
    key: ObjectHandle,
    uri: &Pkcs11Uri,
) -> Result<DeviceCertificate> {
    let id = attribute_bytes(session, key, AttributeType::Id);
    let template = if id.is_empty() {
        uri.object_template(ObjectClass::CERTIFICATE)
    } else {
        vec![
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(id),
        ]
    };
    let certs = find_all(session, &template)?;
    let Some(&cert) = certs.first() else {
        return Err(Error::new(
            Code::Pkcs11CertNotFound,
            format!(
                "token \"{label}\" holds no certificate for the key {} (import one with the key's id, e.g. `pkcs11-tool --write-object cert.der --type cert --id ...`)",
                object_name(session, key)
            ),
        ));
    };
    let der = attribute_bytes(session, cert, AttributeType::Value);
    DeviceCertificate::from_bytes(&der)
        .map_err(|e| e.context(format!("certificate on token \"{label}\"")))
}

/// An open, logged-in session and the key in it.
struct Open {
    session: Session,
    key: ObjectHandle,
}

fn open_session(
    ctx: &Pkcs11,
    module: &str,
    uri: &Pkcs11Uri,
    pin: &Pin,
    read_write: bool,
) -> Result<(Slot, TokenInfo, Session)> {
    let (slot, info) = find_token(ctx, module, uri)?;
    let session = if read_write {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .map_err(|e| token_failed("opening a session", &e))?;
    log_in(ctx, module, slot, &info, &session, pin, uri)?;
    Ok((slot, info, session))
}

const DIGEST_INFO_SHA256: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const DIGEST_INFO_SHA384: &[u8] = &[
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];

/// The mechanism a scheme needs.
fn mechanism_type(scheme: SignatureScheme) -> Option<MechanismType> {
    match scheme {
        SignatureScheme::ECDSA_NISTP256_SHA256 | SignatureScheme::ECDSA_NISTP384_SHA384 => {
            Some(MechanismType::ECDSA)
        }
        SignatureScheme::RSA_PKCS1_SHA256 | SignatureScheme::RSA_PKCS1_SHA384 => {
            Some(MechanismType::RSA_PKCS)
        }
        SignatureScheme::RSA_PSS_SHA256 | SignatureScheme::RSA_PSS_SHA384 => {
            Some(MechanismType::RSA_PKCS_PSS)
        }
        _ => None,
    }
}

/// Signs `digest` (already hashed for `scheme`) with the token; the result is what TLS
/// wants (DER for ECDSA).
fn token_sign(
    open: &Open,
    scheme: SignatureScheme,
    digest: &[u8],
) -> std::result::Result<Vec<u8>, CkError> {
    let sha384 = digest.len() == 48;
    let pss = |hash, mgf| {
        Mechanism::RsaPkcsPss(PkcsPssParams {
            hash_alg: hash,
            mgf,
            s_len: (digest.len() as c_ulong).into(),
        })
    };
    match scheme {
        SignatureScheme::ECDSA_NISTP256_SHA256 | SignatureScheme::ECDSA_NISTP384_SHA384 => {
            let raw = open.session.sign(&Mechanism::Ecdsa, open.key, digest)?;
            let mut der = vec![0u8; raw.len() + 9];
            let n = ecdsa_raw_to_der(&raw, &mut der).map_err(|_| CkError::InvalidValue)?;
            der.truncate(n);
            Ok(der)
        }
        SignatureScheme::RSA_PKCS1_SHA256 | SignatureScheme::RSA_PKCS1_SHA384 => {
            let prefix = if sha384 {
                DIGEST_INFO_SHA384
            } else {
                DIGEST_INFO_SHA256
            };
            let mut info = prefix.to_vec();
            info.extend_from_slice(digest);
            open.session.sign(&Mechanism::RsaPkcs, open.key, &info)
        }
        SignatureScheme::RSA_PSS_SHA256 => open.session.sign(
            &pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            open.key,
            digest,
        ),
        SignatureScheme::RSA_PSS_SHA384 => open.session.sign(
            &pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
            open.key,
            digest,
        ),
        _ => Err(CkError::NotSupported),
    }
}

// ---------------------------------------------------------------------------------------
// The signer

/// A private key on a PKCS#11 token, used through [`ExternalSigner`]. The key never leaves
/// the token; the session is reopened (and the user logged in again) after a token failure.
pub struct TokenSigner {
    ctx: Pkcs11,
    module: String,
    uri: Pkcs11Uri,
    pin: Pin,
    label: String,
    schemes: Vec<SignatureScheme>,
    open: Mutex<Option<Open>>,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TokenSigner({} on \"{}\" in {})",
            self.uri.describe(),
            self.label,
            self.module
        )
    }
}

impl TokenSigner {
    /// Opens `module`, finds the token and key `uri` names, logs in with `pin`, and checks the
    /// token has a mechanism for the certificate's key. Returns the signer and the
    /// certificate found on the token beside the key.
    ///
    /// `module` may be `None` when the URI carries `module-path=`.
    pub fn open(
        module: Option<&str>,
        uri: &str,
        pin: Pin,
    ) -> Result<(TokenSigner, DeviceCertificate)> {
        let uri = Pkcs11Uri::parse(uri)?;
        let module = module_of(module, &uri)?;
        let ctx = load_module(&module)?;
        let module = module.as_str();
        let (slot, info, session) = open_session(&ctx, module, &uri, &pin, false)?;
        let label = info.label().trim_end().to_owned();
        let key = find_key(&session, &label, &uri)?;
        let cert = find_certificate(&session, &label, key, &uri)?;
        let kind = cert.key_kind()?;
        let mechanisms = ctx
            .get_mechanism_list(slot)
            .map_err(|e| token_failed("listing its mechanisms", &e))?;
        let schemes: Vec<SignatureScheme> = kind
            .schemes()
            .iter()
            .copied()
            .filter(|&s| mechanism_type(s).is_some_and(|m| mechanisms.contains(&m)))
            .collect();
        if schemes.is_empty() {
            let needs = match kind {
                KeyKind::Rsa => "CKM_RSA_PKCS or CKM_RSA_PKCS_PSS",
                _ => "CKM_ECDSA",
            };
            return Err(Error::new(
                Code::Pkcs11MechanismUnsupported,
                format!("token \"{label}\" does not offer {needs}, which TLS needs to sign with its {kind:?} key"),
            ));
        }
        crate::log!(
            crate::log::Level::Info,
            "PKCS#11: key {} on token \"{label}\" ({kind:?}; schemes {schemes:?})",
            object_name(&session, key)
        );
        let signer = TokenSigner {
            ctx,
            module: module.to_owned(),
            uri,
            pin,
            label,
            schemes,
            open: Mutex::new(Some(Open { session, key })),
        };
        Ok((signer, cert))
    }

    /// A certified key for TLS: the token's certificate with this signer. The signer signs a
    /// probe that is verified with the certificate's key (`KeyCertMismatch` otherwise).
    pub fn certified_key(module: Option<&str>, uri: &str, pin: Pin) -> Result<CertifiedKey> {
        let (signer, cert) = TokenSigner::open(module, uri, pin)?;
        cert.with_signer(Arc::new(signer))
    }

    fn reopen(&self) -> Result<Open> {
        // Another user of the module in this process may have finalised it (as a token
        // daemon restart or a `C_Finalize` does): initialise it again. On a module still
        // initialised this is a no-op.
        match self
            .ctx
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        {
            Ok(()) => {}
            Err(e) if rv_of(&e) == Some(RvError::CryptokiAlreadyInitialized) => {}
            Err(e) => return Err(token_failed("initialising again", &e)),
        }
        let (_, _, session) = open_session(&self.ctx, &self.module, &self.uri, &self.pin, false)
            .map_err(|e| match e.code() {
                // The token may come back: a retriable failure, not a configuration error.
                Code::Pkcs11TokenAbsent => Error::new(Code::Pkcs11TokenFailed, e.message()),
                _ => e,
            })?;
        let key = find_key(&session, &self.label, &self.uri)?;
        crate::log!(
            crate::log::Level::Info,
            "PKCS#11: session with token \"{}\" reopened",
            self.label
        );
        Ok(Open { session, key })
    }
}

impl ExternalSigner for TokenSigner {
    fn sign(&self, scheme: SignatureScheme, digest: &[u8], out: &mut [u8]) -> Result<usize> {
        if scheme_digest(scheme).map(|d| d.output_len()) != Some(digest.len()) {
            return Err(Error::new(
                Code::SignerFailed,
                format!("{scheme:?} signs a digest of another length"),
            ));
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.is_none() {
            *open = Some(self.reopen()?);
        }
        let session = open.as_ref().expect("opened above");
        let sig = match token_sign(session, scheme, digest) {
            Ok(sig) => sig,
            Err(e) if is_token_failure(&e) => {
                // Drop the session; the next connection opens a new one and logs in again.
                *open = None;
                crate::log!(
                    crate::log::Level::Warn,
                    "PKCS#11: token \"{}\" failed while signing ({}); retrying at the next connection",
                    self.label,
                    ck_text(&e)
                );
                return Err(token_failed(
                    &format!("while signing with \"{}\"", self.label),
                    &e,
                ));
            }
            Err(e) if rv_of(&e) == Some(RvError::MechanismInvalid) => {
                return Err(Error::new(
                    Code::Pkcs11MechanismUnsupported,
                    format!(
                        "token \"{}\" refused the mechanism for {scheme:?}",
                        self.label
                    ),
                ))
            }
            Err(e) => {
                return Err(Error::new(
                    Code::SignerFailed,
                    format!("token \"{}\" could not sign: {}", self.label, ck_text(&e)),
                ))
            }
        };
        let Some(dest) = out.get_mut(..sig.len()) else {
            return Err(Error::new(
                Code::SignerFailed,
                format!("the token's {}-byte signature is too long", sig.len()),
            ));
        };
        dest.copy_from_slice(&sig);
        Ok(sig.len())
    }

    fn supports(&self, scheme: SignatureScheme) -> bool {
        self.schemes.contains(&scheme)
    }
}

// ---------------------------------------------------------------------------------------
// Key generation and CSRs

/// DER of the named curve P-256 (`prime256v1`), for `CKA_EC_PARAMS`.
const EC_PARAMS_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A key pair generated on a token: the private key is sensitive and non-extractable.
pub struct GeneratedKey {
    signer: TokenSigner,
    /// The uncompressed public point, `04 || x || y`.
    public: Vec<u8>,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GeneratedKey({:?})", self.signer)
    }
}

/// Generates a P-256 key pair on the token `uri` names, labelled with its `object` and `id`
/// (both required, and no key may already carry them): the private key is `CKA_TOKEN`,
/// `CKA_PRIVATE`, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, and `CKA_SIGN` (other usages are
/// left to the token: a TPM decides them itself).
pub fn generate_p256(module: Option<&str>, uri: &str, pin: Pin) -> Result<GeneratedKey> {
    let uri = Pkcs11Uri::parse(uri)?;
    let module = module_of(module, &uri)?;
    let module = module.as_str();
    let (Some(label), Some(id)) = (uri.object.clone(), uri.id.clone()) else {
        return Err(uri_error(
            "to generate a key, the PKCS#11 URI must give both object= and id=",
        ));
    };
    let ctx = load_module(module)?;
    let (slot, info, session) = open_session(&ctx, module, &uri, &pin, true)?;
    let token = info.label().trim_end().to_owned();
    let existing = find_all(&session, &uri.object_template(ObjectClass::PRIVATE_KEY))?;
    if !existing.is_empty() {
        return Err(Error::new(
            Code::Pkcs11KeyAmbiguous,
            format!(
                "token \"{token}\" already holds a private key matching {}",
                uri.describe()
            ),
        ));
    }
    let mechanisms = ctx
        .get_mechanism_list(slot)
        .map_err(|e| token_failed("listing its mechanisms", &e))?;
    for needed in [MechanismType::ECC_KEY_PAIR_GEN, MechanismType::ECDSA] {
        if !mechanisms.contains(&needed) {
            return Err(Error::new(
                Code::Pkcs11MechanismUnsupported,
                format!("token \"{token}\" does not offer {needed}, needed to generate and use a P-256 key"),
            ));
        }
    }
    let public_template = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(EC_PARAMS_P256.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    let (public_key, private_key) = session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &public_template,
            &private_template,
        )
        .map_err(|e| match rv_of(&e) {
            Some(RvError::MechanismInvalid | RvError::TemplateInconsistent) => Error::new(
                Code::Pkcs11MechanismUnsupported,
                format!(
                    "token \"{token}\" cannot generate a P-256 key pair ({})",
                    ck_text(&e)
                ),
            ),
            _ => token_failed("generating a key pair", &e),
        })?;
    let point = attribute_bytes(&session, public_key, AttributeType::EcPoint);
    // CKA_EC_POINT is a DER OCTET STRING around the point; some tokens give the bare point.
    let public = match point.as_slice() {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest.to_vec(),
        [0x04, ..] if point.len() == 65 => point.clone(),
        _ => {
            return Err(Error::new(
                Code::Pkcs11TokenFailed,
                format!(
                    "token \"{token}\" returned a {}-byte CKA_EC_POINT, not a P-256 point",
                    point.len()
                ),
            ))
        }
    };
    crate::log!(
        crate::log::Level::Info,
        "PKCS#11: generated a P-256 key pair {} on token \"{token}\"",
        object_name(&session, private_key)
    );
    let signer = TokenSigner {
        ctx,
        module: module.to_owned(),
        uri,
        pin,
        label: token,
        schemes: vec![SignatureScheme::ECDSA_NISTP256_SHA256],
        open: Mutex::new(Some(Open {
            session,
            key: private_key,
        })),
    };
    Ok(GeneratedKey { signer, public })
}

impl GeneratedKey {
    /// The public key as a DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(self)
    }

    /// A PKCS#10 certificate signing request for `common_name` (the device id), signed by
    /// the token, in PEM.
    pub fn csr_pem(&self, common_name: &str) -> Result<String> {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let csr = params
            .serialize_request(self)
            .map_err(|e| Error::new(Code::SignerFailed, format!("building the CSR failed: {e}")))?;
        Ok(pem_encode("CERTIFICATE REQUEST", csr.der()))
    }

    /// The signer, to use the key once a certificate for it is on the token (or with
    /// [`DeviceCertificate::with_signer`]).
    pub fn into_signer(self) -> TokenSigner {
        self.signer
    }
}

impl rcgen::PublicKeyData for GeneratedKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for GeneratedKey {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, msg);
        let mut out = [0u8; 80];
        let n = self
            .signer
            .sign(
                SignatureScheme::ECDSA_NISTP256_SHA256,
                digest.as_ref(),
                &mut out,
            )
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        Ok(out[..n].to_vec())
    }
}

/// PEM armour around DER.
fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_with_percent_decoding() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=My%20Token;object=dev;id=%01%AB;type=private;x-vendor=1?pin-value=12%334&module-path=/usr/lib/m.so",
        )
        .unwrap();
        assert_eq!(uri.token.as_deref(), Some("My Token"));
        assert_eq!(uri.object.as_deref(), Some("dev"));
        assert_eq!(uri.id.as_deref(), Some(&[0x01, 0xab][..]));
        assert_eq!(uri.module_path.as_deref(), Some("/usr/lib/m.so"));
        assert_eq!(uri.pin_value.as_deref().map(|p| p.as_str()), Some("1234"));
        let shown = format!("{uri:?}");
        assert_eq!(shown, "pkcs11:token=My%20Token;object=dev;id=%01%AB");
        assert!(!shown.contains("1234"));
    }

    #[test]
    fn bad_uris_name_the_problem() {
        for (uri, needle) in [
            ("token=t;object=k", "starts with `pkcs11:`"),
            ("pkcs11:token=t", "names no key"),
            ("pkcs11:object=k;colour=red", "`colour`"),
            ("pkcs11:object=k;object=j", "appears twice"),
            ("pkcs11:id=%0", "two hex digits"),
            ("pkcs11:object=k;type=secret-key", "type=secret-key"),
            ("pkcs11:object=k;slot-id=x", "not a number"),
            ("pkcs11:object=%ff", "not UTF-8"),
        ] {
            let e = Pkcs11Uri::parse(uri).unwrap_err();
            assert_eq!(e.code(), Code::Pkcs11UriInvalid, "{uri}");
            assert!(e.message().contains(needle), "{uri}: {e:?}");
        }
        let e = Pkcs11Uri::parse("pkcs11:object=k?pin-value=secret%zz").unwrap_err();
        assert!(!e.message().contains("secret"), "{e:?}");
    }

    #[test]
    fn missing_and_non_module_files_are_named() {
        let e = load_module("/nonexistent/libnothing.so").unwrap_err();
        assert_eq!(e.code(), Code::Pkcs11ModuleNotFound, "{e:?}");
        let dir = std::env::temp_dir().join(format!("tether-p11-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.so");
        std::fs::write(&junk, b"not an ELF file").unwrap();
        let e = load_module(junk.to_str().unwrap()).unwrap_err();
        assert_eq!(e.code(), Code::Pkcs11ModuleInvalid, "{e:?}");
        // A real shared library that is not a PKCS#11 module: the C library this test uses.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let libc = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/libc.so"))
            .expect("the C library is mapped");
        let e = load_module(libc).unwrap_err();
        assert_eq!(e.code(), Code::Pkcs11ModuleInvalid, "{e:?}");
        assert!(e.message().contains("C_GetFunctionList"), "{e:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pem_lines_are_64_characters() {
        let pem = pem_encode("X", &[0u8; 100]);
        assert!(pem.starts_with("-----BEGIN X-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
    }
}
