//! IoT Hub device connection strings, and the primary/secondary key pair of an identity.
//!
//! `HostName=...;DeviceId=...;SharedAccessKey=...` with optional `ModuleId`,
//! `SharedAccessKeyName`, `SharedAccessSignature` (a ready token, in place of a key),
//! `x509=true` (certificate authentication) and `GatewayHostName`. Keys are case-sensitive;
//! unknown keys are ignored (and listed by [`ConnectionString::ignored_keys`]); values may
//! contain `=`. Every inconsistency is a `ConnectionStringInvalid` error that says what is
//! wrong; a bad key is `SasKeyInvalid`, a bad id `IdInvalid`, a bad token `TokenMalformed`.

use std::fmt;

use rustls::time_provider::TimeProvider;

use crate::auth::sas::{self, check_key_name, Expiry, Resource, SasKey, SasToken};
use crate::auth::{check_host, check_id, excerpt, IdKind};
use crate::error::{Code, Error, Result};

/// Longest connection string accepted.
pub const MAX_CONNECTION_STRING_LEN: usize = 4096;

/// Which of an identity's two keys is meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySlot {
    /// The primary key.
    Primary,
    /// The secondary key.
    Secondary,
}

impl KeySlot {
    /// `"primary"` or `"secondary"`.
    pub fn name(self) -> &'static str {
        match self {
            KeySlot::Primary => "primary",
            KeySlot::Secondary => "secondary",
        }
    }
}

/// An identity's symmetric keys: a primary, an optional secondary, and which one is in use.
///
/// Rotation: register the new key as the secondary in the hub, give it to the device with
/// [`KeyPair::set_secondary`], and on an authentication refusal with one key try the other
/// ([`KeyPair::switch`]); [`KeyPair::in_use`] says which one worked.
#[derive(Clone, Debug)]
pub struct KeyPair {
    primary: SasKey,
    secondary: Option<SasKey>,
    in_use: KeySlot,
}

impl KeyPair {
    /// A pair with only a primary key, in use.
    pub fn new(primary: SasKey) -> Self {
        KeyPair {
            primary,
            secondary: None,
            in_use: KeySlot::Primary,
        }
    }

    /// Sets (or replaces) the secondary key. Does not change which key is in use.
    pub fn set_secondary(&mut self, key: SasKey) {
        self.secondary = Some(key);
    }

    /// Replaces the primary key. Does not change which key is in use.
    pub fn set_primary(&mut self, key: SasKey) {
        self.primary = key;
    }

    /// The key in use.
    pub fn current(&self) -> &SasKey {
        match (self.in_use, &self.secondary) {
            (KeySlot::Secondary, Some(key)) => key,
            _ => &self.primary,
        }
    }

    /// Which key is in use.
    pub fn in_use(&self) -> KeySlot {
        self.in_use
    }

    /// Selects a key. Selecting the secondary when there is none is `NotFound`.
    pub fn select(&mut self, slot: KeySlot) -> Result<()> {
        if slot == KeySlot::Secondary && self.secondary.is_none() {
            return Err(Error::new(
                Code::NotFound,
                "this identity has no secondary key",
            ));
        }
        self.in_use = slot;
        Ok(())
    }

    /// Switches to the other key after an authentication refusal; returns the slot now in
    /// use, or `None` when there is no other key.
    pub fn switch(&mut self) -> Option<KeySlot> {
        let other = match self.in_use {
            KeySlot::Primary => KeySlot::Secondary,
            KeySlot::Secondary => KeySlot::Primary,
        };
        self.select(other).ok().map(|()| other)
    }

    /// Whether a secondary key is present.
    pub fn has_secondary(&self) -> bool {
        self.secondary.is_some()
    }
}

/// How a connection string authenticates.
#[derive(Clone, Debug)]
pub enum Credential {
    /// Symmetric keys (`SharedAccessKey`, with `SharedAccessKeyName` for a policy key).
    Keys {
        /// The keys; the connection string gives the primary.
        keys: Box<KeyPair>,
        /// `SharedAccessKeyName`, sent as `skn`.
        key_name: Option<String>,
    },
    /// A ready token (`SharedAccessSignature`).
    Token(SasToken),
    /// A client certificate (`x509=true`); configure it on the TLS policy.
    X509,
}

/// A parsed, validated device (or module) connection string. `Debug` never shows a key or a
/// token.
#[derive(Clone, Debug)]
pub struct ConnectionString {
    host_name: String,
    device_id: String,
    module_id: Option<String>,
    gateway_host_name: Option<String>,
    credential: Credential,
    ignored: Vec<String>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(Code::ConnectionStringInvalid, message)
}

impl ConnectionString {
    /// Parses and validates a connection string. Surrounding whitespace is ignored, as is an
    /// empty segment (a trailing `;`).
    pub fn parse(text: &str) -> Result<ConnectionString> {
        if text.len() > MAX_CONNECTION_STRING_LEN {
            return Err(invalid(format!(
                "connection string is {} bytes long; the limit is {MAX_CONNECTION_STRING_LEN}",
                text.len()
            )));
        }
        let text = text.trim();
        if text.is_empty() {
            return Err(invalid("connection string is empty"));
        }
        const KNOWN: [&str; 8] = [
            "HostName",
            "DeviceId",
            "ModuleId",
            "SharedAccessKey",
            "SharedAccessKeyName",
            "SharedAccessSignature",
            "x509",
            "GatewayHostName",
        ];
        let mut values: [Option<&str>; 8] = [None; 8];
        let mut ignored = Vec::new();
        let mut previous = "";
        for (n, segment) in text.split(';').enumerate() {
            if segment.is_empty() {
                continue;
            }
            // Never echo a segment: it may hold a key.
            let (name, value) = segment.split_once('=').ok_or_else(|| {
                let hint = match previous {
                    "DeviceId" | "ModuleId" => format!(
                        "; if the {previous} contains ';': IoT Hub allows it in ids, but a \
                         connection string cannot hold ';' in a value"
                    ),
                    _ => String::new(),
                };
                invalid(format!(
                    "segment {} has no '=' (expected Name=value pairs separated by ';'){hint}",
                    n + 1
                ))
            })?;
            previous = name;
            match KNOWN.iter().position(|k| *k == name) {
                Some(i) => {
                    if values[i].is_some() {
                        return Err(invalid(format!("{name} appears more than once")));
                    }
                    if value.is_empty() {
                        return Err(invalid(format!("{name} is empty")));
                    }
                    values[i] = Some(value);
                }
                None => {
                    if let Some(k) = KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)) {
                        return Err(invalid(format!(
                            "\"{}\" is not a key; keys are case-sensitive: did you mean {k}?",
                            excerpt(name)
                        )));
                    }
                    ignored.push(excerpt(name));
                }
            }
        }
        let [host, device, module, key, key_name, signature, x509, gateway] = values;
        let host = host.ok_or_else(|| invalid("HostName is missing"))?;
        check_host(host).map_err(|e| e.context("HostName"))?;
        let device = device.ok_or_else(|| invalid("DeviceId is missing"))?;
        check_id(IdKind::Device, device)?;
        if let Some(module) = module {
            check_id(IdKind::Module, module)?;
        }
        if let Some(gateway) = gateway {
            check_host(gateway).map_err(|e| e.context("GatewayHostName"))?;
        }
        let x509 = match x509 {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                return Err(invalid(format!(
                    "x509 must be true or false, not \"{}\"",
                    excerpt(v)
                )))
            }
        };
        let credential = match (key, signature, x509) {
            (None, None, false) => {
                return Err(invalid(
                    "no credential: add SharedAccessKey, SharedAccessSignature or x509=true",
                ))
            }
            (Some(_), Some(_), _) => {
                return Err(invalid(
                    "SharedAccessKey and SharedAccessSignature are both given; keep one",
                ))
            }
            (Some(_), None, true) => {
                return Err(invalid(
                    "x509=true cannot be combined with SharedAccessKey: choose one authentication",
                ))
            }
            (None, Some(_), true) => {
                return Err(invalid(
                    "x509=true cannot be combined with SharedAccessSignature: choose one authentication",
                ))
            }
            (Some(key), None, false) => {
                let key = SasKey::from_base64_named(key, "SharedAccessKey")?;
                if let Some(name) = key_name {
                    check_key_name(name).map_err(|e| {
                        invalid(format!("SharedAccessKeyName: {}", e.message()))
                    })?;
                }
                Credential::Keys {
                    keys: Box::new(KeyPair::new(key)),
                    key_name: key_name.map(str::to_owned),
                }
            }
            (None, Some(token), false) => {
                let parsed = sas::parse(token).map_err(|e| e.context("SharedAccessSignature"))?;
                let wanted = match module {
                    Some(m) => format!("{host}/devices/{device}/modules/{m}"),
                    None => format!("{host}/devices/{device}"),
                };
                let granted = &parsed.resource_uri;
                let covers = sas::grants(granted, &wanted);
                if !covers {
                    return Err(invalid(format!(
                        "SharedAccessSignature is for \"{}\", not \"{wanted}\"",
                        excerpt(granted)
                    )));
                }
                Credential::Token(SasToken::from_text(token)?)
            }
            (None, None, true) => Credential::X509,
        };
        if key_name.is_some() && !matches!(credential, Credential::Keys { .. }) {
            return Err(invalid(
                "SharedAccessKeyName is only meaningful with SharedAccessKey",
            ));
        }
        Ok(ConnectionString {
            host_name: host.to_owned(),
            device_id: device.to_owned(),
            module_id: module.map(str::to_owned),
            gateway_host_name: gateway.map(str::to_owned),
            credential,
            ignored,
        })
    }

    /// `HostName`.
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    /// `DeviceId`.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// `ModuleId`, when present.
    pub fn module_id(&self) -> Option<&str> {
        self.module_id.as_deref()
    }

    /// `GatewayHostName`, when present (an IoT Edge gateway to connect through).
    pub fn gateway_host_name(&self) -> Option<&str> {
        self.gateway_host_name.as_deref()
    }

    /// The host to open the connection to: the gateway when there is one, else the hub.
    pub fn connect_host(&self) -> &str {
        self.gateway_host_name.as_deref().unwrap_or(&self.host_name)
    }

    /// `SharedAccessKeyName`, when present.
    pub fn key_name(&self) -> Option<&str> {
        match &self.credential {
            Credential::Keys { key_name, .. } => key_name.as_deref(),
            _ => None,
        }
    }

    /// How this connection string authenticates.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The keys, for rotation (`None` unless the credential is `SharedAccessKey`).
    pub fn keys_mut(&mut self) -> Option<&mut KeyPair> {
        match &mut self.credential {
            Credential::Keys { keys, .. } => Some(keys),
            _ => None,
        }
    }

    /// Whether certificate authentication was selected (`x509=true`).
    pub fn is_x509(&self) -> bool {
        matches!(self.credential, Credential::X509)
    }

    /// Keys that were present and ignored (not IoT Hub connection-string keys).
    pub fn ignored_keys(&self) -> &[String] {
        &self.ignored
    }

    /// The resource tokens for this identity grant: the device or the module.
    pub fn resource(&self) -> Resource<'_> {
        match &self.module_id {
            Some(module) => Resource::Module {
                host: &self.host_name,
                device: &self.device_id,
                module,
            },
            None => Resource::Device {
                host: &self.host_name,
                device: &self.device_id,
            },
        }
    }

    /// The MQTT client id: `deviceId` or `deviceId/moduleId`.
    pub fn client_id(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/{m}", self.device_id),
            None => self.device_id.clone(),
        }
    }

    /// A token for this identity: made with the key in use and `expiry`, or the ready
    /// `SharedAccessSignature` (refused with `TokenExpired` when it has expired by the
    /// clock). `InvalidState` for an X.509 identity.
    pub fn sas_token(&self, expiry: Expiry, clock: &dyn TimeProvider) -> Result<SasToken> {
        match &self.credential {
            Credential::Keys { keys, key_name } => SasToken::generate(
                &self.resource(),
                keys.current(),
                key_name.as_deref(),
                expiry,
                clock,
            ),
            Credential::Token(token) => {
                let now = crate::auth::now_unix(clock)?;
                if now >= token.expiry_unix() {
                    return Err(Error::new(
                        Code::TokenExpired,
                        format!(
                            "the connection string's SharedAccessSignature expired at {}",
                            crate::cert::format_utc(token.expiry_unix() as i64)
                        ),
                    ));
                }
                Ok(token.clone())
            }
            Credential::X509 => Err(Error::new(
                Code::InvalidState,
                "this connection string uses X.509 (x509=true): there is no SAS token to make",
            )),
        }
    }
}

impl fmt::Display for ConnectionString {
    /// The connection string with its secret replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostName={};DeviceId={}", self.host_name, self.device_id)?;
        if let Some(m) = &self.module_id {
            write!(f, ";ModuleId={m}")?;
        }
        match &self.credential {
            Credential::Keys { key_name, .. } => {
                if let Some(n) = key_name {
                    write!(f, ";SharedAccessKeyName={n}")?;
                }
                f.write_str(";SharedAccessKey=***")?;
            }
            Credential::Token(_) => f.write_str(";SharedAccessSignature=***")?,
            Credential::X509 => f.write_str(";x509=true")?,
        }
        if let Some(g) = &self.gateway_host_name {
            write!(f, ";GatewayHostName={g}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::FixedClock;

    const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";

    fn err(text: &str) -> Error {
        ConnectionString::parse(text).unwrap_err()
    }

    #[test]
    fn device_connection_string_with_key() {
        let cs = ConnectionString::parse(&format!(
            "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey={KEY};Foo=bar;"
        ))
        .unwrap();
        assert_eq!(cs.host_name(), "myhub.azure-devices.net");
        assert_eq!(cs.device_id(), "dev1");
        assert_eq!(cs.module_id(), None);
        assert_eq!(cs.ignored_keys(), ["Foo"]);
        assert_eq!(cs.client_id(), "dev1");
        assert!(!format!("{cs:?}{cs}").contains(KEY));
        assert!(!format!("{cs:?}").contains("NMgJ"));
        assert_eq!(
            cs.to_string(),
            "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=***"
        );
        let token = cs
            .sas_token(Expiry::In { ttl_secs: 60 }, &FixedClock(1_800_000_000))
            .unwrap();
        let key = SasKey::from_base64(KEY).unwrap();
        sas::verify_for(
            token.as_str(),
            &key,
            "myhub.azure-devices.net/devices/dev1",
            1_800_000_059,
        )
        .unwrap();
    }

    #[test]
    fn module_policy_gateway_and_x509() {
        let cs = ConnectionString::parse(&format!(
            "HostName=h.net;DeviceId=d;ModuleId=m;SharedAccessKeyName=owner;SharedAccessKey={KEY};GatewayHostName=edge.local"
        ))
        .unwrap();
        assert_eq!(cs.module_id(), Some("m"));
        assert_eq!(cs.key_name(), Some("owner"));
        assert_eq!(cs.connect_host(), "edge.local");
        assert_eq!(cs.client_id(), "d/m");
        assert_eq!(cs.resource().uri(), "h.net/devices/d/modules/m");
        let t = cs
            .sas_token(Expiry::At(2_000_000_000), &FixedClock(0))
            .unwrap();
        assert!(t.as_str().ends_with("&skn=owner"));
        let cs = ConnectionString::parse("HostName=h.net;DeviceId=d;x509=true").unwrap();
        assert!(cs.is_x509());
        assert_eq!(
            cs.sas_token(Expiry::At(1), &FixedClock(0))
                .unwrap_err()
                .code(),
            Code::InvalidState
        );
    }

    #[test]
    fn ready_signature_is_accepted_and_checked() {
        let key = SasKey::from_base64(KEY).unwrap();
        let mut buf = [0u8; sas::MAX_TOKEN_LEN];
        let token = sas::write_token(
            &Resource::device("h.net", "d").unwrap(),
            &key,
            None,
            1_800_000_000,
            &mut buf,
        )
        .unwrap()
        .to_owned();
        let cs = ConnectionString::parse(&format!(
            "HostName=h.net;DeviceId=d;SharedAccessSignature={token}"
        ))
        .unwrap();
        assert_eq!(
            cs.sas_token(Expiry::At(1), &FixedClock(1_799_999_999))
                .unwrap()
                .as_str(),
            token
        );
        assert_eq!(
            cs.sas_token(Expiry::At(1), &FixedClock(1_800_000_000))
                .unwrap_err()
                .code(),
            Code::TokenExpired
        );
        let e = err(&format!(
            "HostName=h.net;DeviceId=other;SharedAccessSignature={token}"
        ));
        assert!(e.message().contains("is for \"h.net/devices/d\""), "{e:?}");
        let e = err("HostName=h.net;DeviceId=d;SharedAccessSignature=garbage");
        assert_eq!(e.code(), Code::TokenMalformed);
    }

    #[test]
    fn inconsistent_or_missing_parts_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("DeviceId=d;SharedAccessKey=AAAA", "HostName is missing"),
            ("HostName=h;SharedAccessKey=AAAA", "DeviceId is missing"),
            ("HostName=h;DeviceId=d", "no credential"),
            (
                "HostName=h;DeviceId=d;x509=true;SharedAccessKey=AAAA",
                "x509=true cannot",
            ),
            ("HostName=h;DeviceId=d;x509=yes", "true or false"),
            (
                "HostName=h;DeviceId=d;HostName=h;x509=true",
                "more than once",
            ),
            ("HostName=h;DeviceId=;x509=true", "DeviceId is empty"),
            (
                "HostName=h;DeviceId=d;x509=true;SharedAccessKeyName=n",
                "only meaningful",
            ),
            (
                "HostName=h;DeviceId=d;junk;x509=true",
                "segment 3 has no '='",
            ),
            ("hostname=h;DeviceId=d;x509=true", "case-sensitive"),
            (
                "HostName=h;DeviceId=d;SharedAccessKey=AAAA;SharedAccessSignature=x",
                "both",
            ),
        ];
        for (text, needle) in cases {
            let e = err(text);
            assert_eq!(e.code(), Code::ConnectionStringInvalid, "{text}: {e:?}");
            assert!(e.message().contains(needle), "{text}: {e:?}");
        }
        assert_eq!(
            err("HostName=h;DeviceId=d;SharedAccessKey=not*base64").code(),
            Code::SasKeyInvalid
        );
        let e = err("HostName=h;DeviceId=d;SharedAccessKey=not*base64secret");
        assert!(!e.message().contains("secret"), "{e:?}");
        assert!(e.message().contains("SharedAccessKey"), "{e:?}");
        assert_eq!(
            err("HostName=h;DeviceId=a/b;x509=true").code(),
            Code::IdInvalid
        );
        assert_eq!(
            err("HostName=h;DeviceId=a b;x509=true").code(),
            Code::IdInvalid
        );
        assert_eq!(
            err("HostName=h h;DeviceId=d;x509=true").code(),
            Code::IdInvalid
        );
        let giant = format!("HostName=h;DeviceId=d;x509=true;{}", "A=b;".repeat(2000));
        assert!(err(&giant).message().contains("limit"));
    }

    #[test]
    fn values_may_contain_equals_signs() {
        let cs = ConnectionString::parse(&format!(
            "  HostName=h.net;DeviceId=d;SharedAccessKey={KEY}\n"
        ))
        .unwrap();
        let Credential::Keys { keys, .. } = cs.credential() else {
            panic!("keys expected")
        };
        assert!(keys.current().ct_eq(&SasKey::from_base64(KEY).unwrap()));
    }

    #[test]
    fn primary_and_secondary_keys_say_which_is_in_use() {
        let mut cs =
            ConnectionString::parse(&format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}"))
                .unwrap();
        let keys = cs.keys_mut().unwrap();
        assert_eq!(keys.in_use(), KeySlot::Primary);
        assert_eq!(keys.switch(), None);
        assert_eq!(
            keys.select(KeySlot::Secondary).unwrap_err().code(),
            Code::NotFound
        );
        keys.set_secondary(SasKey::from_bytes(b"second").unwrap());
        assert_eq!(keys.switch(), Some(KeySlot::Secondary));
        assert!(keys
            .current()
            .ct_eq(&SasKey::from_bytes(b"second").unwrap()));
        assert_eq!(keys.in_use().name(), "secondary");
        assert_eq!(keys.switch(), Some(KeySlot::Primary));
        let t = cs
            .sas_token(Expiry::At(2_000_000_000), &FixedClock(0))
            .unwrap();
        sas::verify(t.as_str(), &SasKey::from_base64(KEY).unwrap(), 0).unwrap();
    }
}
