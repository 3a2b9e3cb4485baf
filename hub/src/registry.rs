//! The identity registry: a JSON file in the shape of IoT Hub's device identities, read
//! again whenever it changes on disk.
//!
//! ```json
//! {"hostName": "myhub.azure-devices.net",
//!  "certificateAuthorities": ["ca.pem"],
//!  "devices": [
//!    {"deviceId": "d1", "status": "enabled",
//!     "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "...", "secondaryKey": "..."}}},
//!    {"deviceId": "d2", "status": "enabled",
//!     "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": "..."}}},
//!    {"deviceId": "d3", "status": "disabled", "authentication": {"type": "certificateAuthority"}}]}
//! ```
//!
//! An entry with a `moduleId` is a module identity of that device (IoT Hub's module identity
//! JSON has both ids). Paths in `certificateAuthorities` are relative to the registry file.
//! Errors name the entry and the field, never a key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use tether::auth::sas::SasKey;
use tether::internal::{check_host, check_id, IdKind};
use tether::{Code, Error, Result};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegistryFile {
    host_name: String,
    #[serde(default)]
    certificate_authorities: Vec<String>,
    #[serde(default)]
    devices: Vec<DeviceFile>,
    #[serde(default)]
    authorization_policies: Vec<PolicyFile>,
    /// The DPS enrollments the stand-in's DPS endpoint serves (see [`crate::certs`]).
    #[serde(default)]
    dps: Option<crate::certs::DpsFile>,
}

/// A shared access policy as IoT Hub lists them:
/// `{"keyName": "service", "primaryKey": "...", "secondaryKey": "...", "rights": "ServiceConnect"}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyFile {
    key_name: String,
    #[serde(default)]
    primary_key: Option<String>,
    #[serde(default)]
    secondary_key: Option<String>,
    #[serde(default)]
    rights: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceFile {
    device_id: String,
    #[serde(default)]
    module_id: Option<String>,
    status: Status,
    authentication: AuthFile,
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum AuthFile {
    #[serde(rename = "sas")]
    Sas {
        #[serde(rename = "symmetricKey")]
        symmetric_key: KeysFile,
    },
    #[serde(rename = "selfSigned")]
    SelfSigned {
        #[serde(rename = "x509Thumbprint")]
        x509_thumbprint: ThumbprintsFile,
    },
    #[serde(rename = "certificateAuthority")]
    CertificateAuthority,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeysFile {
    #[serde(default)]
    primary_key: Option<String>,
    #[serde(default)]
    secondary_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThumbprintsFile {
    #[serde(default)]
    primary_thumbprint: Option<String>,
    #[serde(default)]
    secondary_thumbprint: Option<String>,
}

/// Whether an identity may connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Enabled,
    Disabled,
}

/// A registered thumbprint: SHA-1 (40) or SHA-256 (64) uppercase hex digits of the DER
/// certificate, as `tether::auth::x509` writes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thumbprint(pub String);

impl Thumbprint {
    /// Reads 40 or 64 hex digits, either case; `:` separators are ignored.
    pub fn parse(text: &str) -> Option<Thumbprint> {
        let hex: String = text.chars().filter(|&c| c != ':').collect();
        let ok = (hex.len() == 40 || hex.len() == 64) && hex.chars().all(|c| c.is_ascii_hexdigit());
        ok.then(|| Thumbprint(hex.to_ascii_uppercase()))
    }
}

/// How an identity authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// SAS tokens signed with the primary or the secondary key.
    Sas {
        primary: Option<Box<SasKey>>,
        secondary: Option<Box<SasKey>>,
    },
    /// A client certificate whose thumbprint is registered.
    SelfSigned {
        primary: Option<Thumbprint>,
        secondary: Option<Thumbprint>,
    },
    /// A client certificate issued by a registered CA, with CN = the device id.
    CertificateAuthority,
}

impl Auth {
    /// The registry's name for this kind of authentication.
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::Sas { .. } => "sas",
            Auth::SelfSigned { .. } => "selfSigned",
            Auth::CertificateAuthority => "certificateAuthority",
        }
    }
}

/// One device or module identity.
#[derive(Clone, Debug)]
pub struct Identity {
    pub device_id: String,
    pub module_id: Option<String>,
    pub status: Status,
    pub auth: Auth,
}

/// A registered certificate authority: where it came from and its DER certificate.
#[derive(Clone, Debug)]
pub struct Authority {
    pub path: PathBuf,
    pub der: Vec<u8>,
}

/// A shared access policy (`authorizationPolicies`): a key name, its keys and its rights
/// (`ServiceConnect`, `RegistryRead`, ... as IoT Hub spells them, comma-separated).
#[derive(Clone, Debug)]
pub struct Policy {
    pub key_name: String,
    pub primary: Option<Box<SasKey>>,
    pub secondary: Option<Box<SasKey>>,
    pub rights: Vec<String>,
}

impl Policy {
    /// Whether the policy grants `right` (e.g. `ServiceConnect`).
    pub fn grants(&self, right: &str) -> bool {
        self.rights.iter().any(|r| r.eq_ignore_ascii_case(right))
    }
}

/// The registry, checked and ready for decisions.
#[derive(Clone, Debug)]
pub struct Registry {
    pub host_name: String,
    pub authorities: Vec<Authority>,
    identities: HashMap<(String, Option<String>), Identity>,
    /// The shared access policies, for the service API.
    pub policies: Vec<Policy>,
    /// The `dps` section: enrollments of the stand-in's DPS endpoint.
    pub dps: Option<crate::certs::Dps>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(Code::InvalidArgument, message)
}

/// A JSON error by position only: serde's own messages quote the offending value
/// (`invalid type: string "..."`), which may be a key, and this error is logged on every
/// reload. Only a missing field's name (from our schema) is kept.
fn json_error(e: serde_json::Error) -> Error {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "could not be read",
        Category::Syntax => "is not JSON",
        Category::Eof => "ends too early",
        Category::Data => {
            "does not match the registry format (a wrong type, an unknown name, or a missing field)"
        }
    };
    let text = e.to_string();
    let missing = text
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field)
        .filter(|f| f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .map(|f| format!(": missing field {f}"))
        .unwrap_or_default();
    invalid(format!(
        "registry is not valid: it {what} at line {} column {}{missing} (values are never shown: they may be keys)",
        e.line(),
        e.column()
    ))
}

fn key(text: &Option<String>, what: &str) -> Result<Option<Box<SasKey>>> {
    match text.as_deref() {
        None | Some("") => Ok(None),
        Some(t) => SasKey::from_base64_named(t, what).map(|k| Some(Box::new(k))),
    }
}

fn thumbprint(text: &Option<String>, what: &str) -> Result<Option<Thumbprint>> {
    match text.as_deref() {
        None | Some("") => Ok(None),
        Some(t) => Thumbprint::parse(t)
            .map(Some)
            .ok_or_else(|| invalid(format!("{what} is not 40 or 64 hex digits"))),
    }
}

impl Registry {
    /// Reads and checks the registry text. `base` is the folder that relative CA paths are
    /// resolved against.
    pub fn parse(text: &str, base: &Path) -> Result<Registry> {
        let file: RegistryFile = serde_json::from_str(text).map_err(json_error)?;
        check_host(&file.host_name).map_err(|e| e.context("registry hostName"))?;
        let mut authorities = Vec::new();
        for ca in &file.certificate_authorities {
            let path = base.join(ca);
            let bytes = tether::internal::read_file(&path.to_string_lossy())
                .map_err(|e| e.context("registry certificateAuthorities"))?;
            let certs = tether::policy::load_certificates(&bytes)
                .map_err(|e| e.context(format!("certificate authority {}", path.display())))?;
            for cert in certs {
                authorities.push(Authority {
                    path: path.clone(),
                    der: cert.as_ref().to_vec(),
                });
            }
        }
        let mut identities = HashMap::new();
        for (n, d) in file.devices.iter().enumerate() {
            let label = match &d.module_id {
                Some(m) => format!("devices[{n}] (\"{}/{m}\")", d.device_id),
                None => format!("devices[{n}] (\"{}\")", d.device_id),
            };
            check_id(IdKind::Device, &d.device_id).map_err(|e| e.context(&label))?;
            if let Some(m) = &d.module_id {
                check_id(IdKind::Module, m).map_err(|e| e.context(&label))?;
            }
            let auth = match &d.authentication {
                AuthFile::Sas { symmetric_key: k } => {
                    let primary =
                        key(&k.primary_key, "primaryKey").map_err(|e| e.context(&label))?;
                    let secondary =
                        key(&k.secondary_key, "secondaryKey").map_err(|e| e.context(&label))?;
                    if primary.is_none() && secondary.is_none() {
                        return Err(invalid(format!("{label}: symmetricKey has no key")));
                    }
                    Auth::Sas { primary, secondary }
                }
                AuthFile::SelfSigned { x509_thumbprint: t } => {
                    let primary = thumbprint(&t.primary_thumbprint, "primaryThumbprint")
                        .map_err(|e| e.context(&label))?;
                    let secondary = thumbprint(&t.secondary_thumbprint, "secondaryThumbprint")
                        .map_err(|e| e.context(&label))?;
                    if primary.is_none() && secondary.is_none() {
                        return Err(invalid(format!(
                            "{label}: x509Thumbprint has no thumbprint"
                        )));
                    }
                    Auth::SelfSigned { primary, secondary }
                }
                AuthFile::CertificateAuthority => Auth::CertificateAuthority,
            };
            let id = (d.device_id.clone(), d.module_id.clone());
            if identities.contains_key(&id) {
                return Err(invalid(format!("{label}: this identity is listed twice")));
            }
            identities.insert(
                id,
                Identity {
                    device_id: d.device_id.clone(),
                    module_id: d.module_id.clone(),
                    status: d.status,
                    auth,
                },
            );
        }
        let mut policies = Vec::new();
        for (n, p) in file.authorization_policies.iter().enumerate() {
            let label = format!("authorizationPolicies[{n}] (\"{}\")", p.key_name);
            tether::internal::check_key_name(&p.key_name).map_err(|e| e.context(&label))?;
            let primary = key(&p.primary_key, "primaryKey").map_err(|e| e.context(&label))?;
            let secondary = key(&p.secondary_key, "secondaryKey").map_err(|e| e.context(&label))?;
            if primary.is_none() && secondary.is_none() {
                return Err(invalid(format!("{label}: the policy has no key")));
            }
            policies.push(Policy {
                key_name: p.key_name.clone(),
                primary,
                secondary,
                rights: p
                    .rights
                    .split(',')
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty())
                    .collect(),
            });
        }
        let dps = file
            .dps
            .as_ref()
            .map(crate::certs::Dps::parse)
            .transpose()?;
        Ok(Registry {
            host_name: file.host_name,
            authorities,
            identities,
            policies,
            dps,
        })
    }

    /// Reads and checks the registry file at `path`.
    pub fn load(path: &Path) -> Result<Registry> {
        let bytes = tether::internal::read_file(&path.to_string_lossy())?;
        let text = String::from_utf8(bytes)
            .map_err(|_| invalid(format!("{} is not UTF-8", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Registry::parse(&text, base).map_err(|e| e.context(path.display()))
    }

    /// The identity of a device (`module` None) or of one of its modules.
    /// Every identity, in no particular order.
    pub fn identities(&self) -> impl Iterator<Item = &Identity> {
        self.identities.values()
    }

    /// Adds a certificate authority (the stand-in's issuing CA) unless it is there.
    pub fn add_authority(&mut self, path: &Path, der: &[u8]) {
        if !self.authorities.iter().any(|a| a.der == der) {
            self.authorities.push(Authority {
                path: path.to_owned(),
                der: der.to_vec(),
            });
        }
    }

    /// Adds an identity (one DPS created) unless the file lists it.
    pub fn add_identity(&mut self, identity: Identity) {
        self.identities
            .entry((identity.device_id.clone(), identity.module_id.clone()))
            .or_insert(identity);
    }

    pub fn identity(&self, device: &str, module: Option<&str>) -> Option<&Identity> {
        self.identities
            .get(&(device.to_owned(), module.map(str::to_owned)))
    }
}

/// What identifies one version of a file on disk.
type Stamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// The registry file and its last good contents, re-read when the file changes.
pub struct Watched {
    path: PathBuf,
    seen: Option<Stamp>,
    pub current: Registry,
}

impl Watched {
    /// Loads the registry; fails if the first version is not valid.
    pub fn open(path: &Path) -> Result<Watched> {
        let seen = stamp(path);
        let current = Registry::load(path)?;
        Ok(Watched {
            path: path.to_path_buf(),
            seen,
            current,
        })
    }

    /// Re-reads the file if it changed since the last look. `Ok(true)` when a new version
    /// was loaded; `Err` when the new version is not valid (the last good one stays in
    /// force, and the same version is not reported twice).
    pub fn refresh(&mut self) -> Result<bool> {
        let now = stamp(&self.path);
        if now == self.seen {
            return Ok(false);
        }
        self.seen = now;
        let registry = Registry::load(&self.path)?;
        self.current = registry;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";

    fn registry(devices: &str) -> Result<Registry> {
        Registry::parse(
            &format!(r#"{{"hostName": "hub.example", "devices": [{devices}]}}"#),
            Path::new("."),
        )
    }

    #[test]
    fn reads_every_kind_of_identity() {
        let r = registry(&format!(
            r#"{{"deviceId": "d1", "status": "enabled",
                 "authentication": {{"type": "sas", "symmetricKey": {{"primaryKey": "{KEY}", "secondaryKey": ""}}}}}},
               {{"deviceId": "d1", "moduleId": "m", "status": "disabled",
                 "authentication": {{"type": "sas", "symmetricKey": {{"secondaryKey": "{KEY}"}}}}}},
               {{"deviceId": "d2", "status": "enabled",
                 "authentication": {{"type": "selfSigned", "x509Thumbprint": {{"primaryThumbprint": "{}"}}}}}},
               {{"deviceId": "d3", "status": "enabled", "authentication": {{"type": "certificateAuthority"}}}}"#,
            "ab".repeat(32)
        ))
        .unwrap();
        assert_eq!(r.host_name, "hub.example");
        let d1 = r.identity("d1", None).unwrap();
        assert!(matches!(
            d1.auth,
            Auth::Sas {
                primary: Some(_),
                secondary: None
            }
        ));
        assert_eq!(
            r.identity("d1", Some("m")).unwrap().status,
            Status::Disabled
        );
        match &r.identity("d2", None).unwrap().auth {
            Auth::SelfSigned {
                primary: Some(t), ..
            } => assert_eq!(t.0, "AB".repeat(32)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.identity("d3", None).unwrap().auth.kind(),
            "certificateAuthority"
        );
        assert!(r.identity("d4", None).is_none());
    }

    #[test]
    fn errors_name_the_entry_and_never_the_key() {
        let e = registry(
            r#"{"deviceId": "d1", "status": "enabled",
                "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "sec*ret"}}}"#,
        )
        .unwrap_err();
        assert!(e.message().contains("devices[0] (\"d1\")"), "{e:?}");
        assert!(e.message().contains("primaryKey"), "{e:?}");
        assert!(!e.message().contains("sec"), "{e:?}");
        let e = registry(r#"{"deviceId": "a/b", "status": "enabled", "authentication": {"type": "certificateAuthority"}}"#)
            .unwrap_err();
        assert_eq!(e.code(), Code::IdInvalid);
        let e = registry(r#"{"deviceId": "d", "status": "on", "authentication": {"type": "certificateAuthority"}}"#)
            .unwrap_err();
        assert!(e.message().contains("registry is not valid"), "{e:?}");
        let e = registry(r#"{"deviceId": "d", "status": "enabled", "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": "12"}}}"#)
            .unwrap_err();
        assert!(e.message().contains("40 or 64 hex"), "{e:?}");
        let twice = r#"{"deviceId": "d", "status": "enabled", "authentication": {"type": "certificateAuthority"}}"#;
        let e = registry(&format!("{twice},{twice}")).unwrap_err();
        assert!(e.message().contains("twice"), "{e:?}");
    }

    #[test]
    fn malformed_json_errors_give_the_position_and_never_a_value() {
        const SECRET: &str = "c2VjcmV0LWtleS0xMjM0NTY3ODkw";
        let cases = [
            // symmetricKey as a string instead of an object
            format!(
                r#"{{"deviceId": "d", "status": "enabled", "authentication": {{"type": "sas", "symmetricKey": "{SECRET}"}}}}"#
            ),
            // a key that is not a string
            format!(
                r#"{{"deviceId": "d", "status": "enabled", "authentication": {{"type": "sas", "symmetricKey": {{"primaryKey": ["{SECRET}"]}}}}}}"#
            ),
            // broken JSON right after a key
            format!(
                r#"{{"deviceId": "d", "status": "enabled", "authentication": {{"type": "sas", "symmetricKey": {{"primaryKey": "{SECRET}" "x"}}}}}}"#
            ),
            // a key in place of the type
            format!(
                r#"{{"deviceId": "d", "status": "enabled", "authentication": {{"type": "{SECRET}"}}}}"#
            ),
            // a key where a thumbprint object belongs
            format!(
                r#"{{"deviceId": "d", "status": "enabled", "authentication": {{"type": "selfSigned", "x509Thumbprint": "{SECRET}"}}}}"#
            ),
            // a key as the status
            format!(
                r#"{{"deviceId": "d", "status": "{SECRET}", "authentication": {{"type": "certificateAuthority"}}}}"#
            ),
        ];
        for case in &cases {
            let e = registry(case).unwrap_err();
            assert!(!e.message().contains("c2VjcmV0"), "{e:?}");
            assert!(e.message().contains("registry is not valid"), "{e:?}");
            assert!(e.message().contains(" at line 1 column "), "{e:?}");
        }
        let e = registry(
            r#"{"status": "enabled", "authentication": {"type": "certificateAuthority"}}"#,
        )
        .unwrap_err();
        assert!(e.message().contains("missing field deviceId"), "{e:?}");
        let e = Registry::parse(
            "{\n  \"hostName\": \"h\",\n  \"devices\": [",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.message().contains("ends too early at line 3"), "{e:?}");
    }

    #[test]
    fn thumbprints_accept_either_case_and_colons() {
        let upper = Thumbprint::parse(&"AB".repeat(20)).unwrap();
        let lower = Thumbprint::parse(&"ab".repeat(20)).unwrap();
        let colons = Thumbprint::parse(&vec!["aB"; 20].join(":")).unwrap();
        assert_eq!(upper, lower);
        assert_eq!(upper, colons);
        assert!(Thumbprint::parse(&"zz".repeat(20)).is_none());
        assert!(Thumbprint::parse("abcd").is_none());
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_last_good() {
        let dir = std::env::temp_dir().join(format!("tether-hub-reg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("registry.json");
        let write = |status: &str| {
            let text = format!(
                r#"{{"hostName": "h", "devices": [{{"deviceId": "d", "status": "{status}", "authentication": {{"type": "certificateAuthority"}}}}]}}"#
            );
            let tmp = dir.join("registry.tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        write("enabled");
        let mut w = Watched::open(&path).unwrap();
        assert!(!w.refresh().unwrap());
        write("disabled");
        assert!(w.refresh().unwrap());
        assert_eq!(
            w.current.identity("d", None).unwrap().status,
            Status::Disabled
        );
        std::fs::write(&path, "{").unwrap();
        assert!(w.refresh().is_err());
        assert!(
            !w.refresh().unwrap(),
            "the same broken version is reported once"
        );
        assert_eq!(
            w.current.identity("d", None).unwrap().status,
            Status::Disabled
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
