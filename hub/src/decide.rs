//! The stand-in's decisions, as plain functions of the registry, what the client sent and the
//! time: who may connect (SAS or X.509), until when, and which topics it may use. No FFI
//! here; the plugin shell in `plugin.rs` only gathers inputs and applies the answers.
//!
//! Refusals are `tether::Error`s whose messages are logged by the broker: they name the
//! reason and never contain a key or a token's signature.

use rustls_pki_types::{CertificateDer, UnixTime};
use tether::auth::sas::{self, Resource, SasKey};
use tether::auth::x509::{thumbprint_sha1, thumbprint_sha256, DeviceCertificate};
use tether::cert::CertFacts;
use tether::internal::{check_host, check_id, IdKind};
use tether::{Code, Error, Result};

use crate::registry::{Auth, Identity, Registry, Status, Thumbprint};

/// An authenticated connection: whose it is, how it proved it, and until when it may stay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub device_id: String,
    pub module_id: Option<String>,
    /// How the client authenticated, for the log ("SAS, secondary key").
    pub method: String,
    /// When the connection must end (SAS token expiry), Unix seconds.
    pub expires_unix: Option<u64>,
    /// The kind of authentication used (`sas`, `selfSigned`, `certificateAuthority`).
    pub kind: &'static str,
}

impl Session {
    /// `device` or `device/module`, as in client ids.
    pub fn name(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/{m}", self.device_id),
            None => self.device_id.clone(),
        }
    }

    /// The topic prefix this identity owns: `devices/{d}/` or `devices/{d}/modules/{m}/`.
    fn prefix(&self) -> String {
        match &self.module_id {
            Some(m) => format!("devices/{}/modules/{m}/", self.device_id),
            None => format!("devices/{}/", self.device_id),
        }
    }
}

fn refuse(code: Code, message: impl Into<String>) -> Error {
    Error::new(code, message)
}

/// The ids named by an IoT Hub MQTT user name.
#[derive(Debug, PartialEq, Eq)]
pub struct UserName<'a> {
    pub host: &'a str,
    pub device: &'a str,
    pub module: Option<&'a str>,
}

/// Reads `{host}/{deviceId}[/{moduleId}]/?api-version=...[&...]`.
pub fn parse_username(username: &str) -> Result<UserName<'_>> {
    let shape = "user name must be {hostName}/{deviceId}[/{moduleId}]/?api-version=...";
    // The last "/?": ids may contain '?' (never '/'), the percent-encoded query never "/?".
    let (path, query) = username
        .rsplit_once("/?")
        .ok_or_else(|| refuse(Code::NotAuthorized, format!("{shape} (no \"/?\")")))?;
    if !query.split('&').any(|p| {
        p.strip_prefix("api-version=")
            .is_some_and(|v| !v.is_empty())
    }) {
        return Err(refuse(
            Code::NotAuthorized,
            format!("{shape} (no api-version)"),
        ));
    }
    let parts: Vec<&str> = path.split('/').collect();
    let (host, device, module) = match parts.as_slice() {
        [h, d] => (*h, *d, None),
        [h, d, m] => (*h, *d, Some(*m)),
        _ => return Err(refuse(Code::NotAuthorized, shape)),
    };
    check_host(host)?;
    check_id(IdKind::Device, device)?;
    if let Some(m) = module {
        check_id(IdKind::Module, m)?;
    }
    Ok(UserName {
        host,
        device,
        module,
    })
}

/// The checks every connection goes through: user name shape and host, client id, and an
/// enabled identity in the registry.
fn common<'r>(
    registry: &'r Registry,
    client_id: &str,
    username: Option<&str>,
) -> Result<&'r Identity> {
    let username = username.ok_or_else(|| {
        refuse(
            Code::NotAuthorized,
            "no user name (IoT Hub needs {hostName}/{deviceId}/?api-version=...)",
        )
    })?;
    let user = parse_username(username)?;
    if !user.host.eq_ignore_ascii_case(&registry.host_name) {
        return Err(refuse(
            Code::NotAuthorized,
            format!(
                "user name is for host \"{}\"; this hub is \"{}\"",
                user.host, registry.host_name
            ),
        ));
    }
    let expected = match user.module {
        Some(m) => format!("{}/{m}", user.device),
        None => user.device.to_owned(),
    };
    if client_id != expected {
        return Err(refuse(
            Code::NotAuthorized,
            format!("client id \"{client_id}\" does not match the user name's \"{expected}\""),
        ));
    }
    let identity = registry.identity(user.device, user.module).ok_or_else(|| {
        refuse(
            Code::NotAuthorized,
            format!("\"{expected}\" is not in the registry"),
        )
    })?;
    if identity.status == Status::Disabled {
        return Err(refuse(
            Code::DeviceDisabled,
            format!("\"{expected}\" is disabled in the registry"),
        ));
    }
    Ok(identity)
}

fn same_resource(token: &Resource<'_>, wanted: &Resource<'_>) -> bool {
    match (token, wanted) {
        (
            Resource::Device {
                host: h1,
                device: d1,
            },
            Resource::Device {
                host: h2,
                device: d2,
            },
        ) => h1.eq_ignore_ascii_case(h2) && d1 == d2,
        (
            Resource::Module {
                host: h1,
                device: d1,
                module: m1,
            },
            Resource::Module {
                host: h2,
                device: d2,
                module: m2,
            },
        ) => h1.eq_ignore_ascii_case(h2) && d1 == d2 && m1 == m2,
        _ => false,
    }
}

/// Authenticates a SAS connection: user name, client id, identity enabled, token for exactly
/// this device (or module), signed with its primary or secondary key, not expired.
pub fn authenticate_sas(
    registry: &Registry,
    client_id: &str,
    username: Option<&str>,
    password: Option<&str>,
    now_unix: u64,
) -> Result<Session> {
    let identity = common(registry, client_id, username)?;
    let (primary, secondary) = match &identity.auth {
        Auth::Sas { primary, secondary } => (primary, secondary),
        other => {
            return Err(refuse(
                Code::NotAuthorized,
                format!(
                    "\"{client_id}\" authenticates with X.509 ({}): connect on the X.509 port with its certificate",
                    other.kind()
                ),
            ))
        }
    };
    let token = match password {
        Some(p) if !p.is_empty() => p,
        _ => return Err(refuse(Code::TokenMalformed, "no SAS token in the password")),
    };
    let parsed = sas::parse(token)?;
    let wanted = match &identity.module_id {
        Some(m) => Resource::module(&registry.host_name, &identity.device_id, m)?,
        None => Resource::device(&registry.host_name, &identity.device_id)?,
    };
    let granted = parsed.resource();
    if !granted.as_ref().is_ok_and(|g| same_resource(g, &wanted)) {
        return Err(refuse(
            Code::NotAuthorized,
            format!(
                "token is for \"{}\", not \"{}\"",
                parsed.resource_uri,
                wanted.uri()
            ),
        ));
    }
    if parsed.key_name.is_some() {
        return Err(refuse(
            Code::NotAuthorized,
            "token names a shared access policy (skn); devices sign with their own key",
        ));
    }
    let try_key = |key: &Option<Box<SasKey>>| key.as_ref().map(|k| sas::verify(token, k, now_unix));
    let (result, which) = match (try_key(primary), try_key(secondary)) {
        (Some(Ok(p)), _) => (Ok(p), "primary"),
        (_, Some(Ok(p))) => (Ok(p), "secondary"),
        // A token really signed by one key but expired says so.
        (Some(Err(e)), _) if e.code() == Code::TokenExpired => (Err(e), "primary"),
        (_, Some(Err(e))) if e.code() == Code::TokenExpired => (Err(e), "secondary"),
        (Some(Err(_)), None) => (
            Err(refuse(
                Code::SignatureMismatch,
                "token signature does not match the primary key",
            )),
            "",
        ),
        (None, Some(Err(_))) => (
            Err(refuse(
                Code::SignatureMismatch,
                "token signature does not match the secondary key",
            )),
            "",
        ),
        _ => (
            Err(refuse(
                Code::SignatureMismatch,
                "token signature matches neither the primary nor the secondary key",
            )),
            "",
        ),
    };
    let parsed = result?;
    Ok(Session {
        device_id: identity.device_id.clone(),
        module_id: identity.module_id.clone(),
        method: format!(
            "SAS, {which} key, token expires at {}",
            tether::internal::format_utc(parsed.expiry_unix as i64)
        ),
        expires_unix: Some(parsed.expiry_unix),
        kind: "sas",
    })
}

fn matches(registered: &Option<Thumbprint>, sha1: &str, sha256: &str) -> bool {
    match registered {
        Some(t) if t.0.len() == 40 => t.0 == sha1,
        Some(t) => t.0 == sha256,
        None => false,
    }
}

/// Authenticates an X.509 connection: user name, client id, identity enabled, and the
/// client certificate (DER) matching a registered thumbprint (`selfSigned`) or issued by a
/// registered CA with CN = the device id (`certificateAuthority`; for a module,
/// CN = `{deviceId}/{moduleId}`). The TLS layer has already checked that the client holds
/// the certificate's key.
pub fn authenticate_x509(
    registry: &Registry,
    client_id: &str,
    username: Option<&str>,
    cert_der: &[u8],
    now_unix: u64,
) -> Result<Session> {
    let identity = common(registry, client_id, username)?;
    let session = |method: String, kind| Session {
        device_id: identity.device_id.clone(),
        module_id: identity.module_id.clone(),
        method,
        expires_unix: None,
        kind,
    };
    match &identity.auth {
        Auth::Sas { .. } => Err(refuse(
            Code::NotAuthorized,
            format!("\"{client_id}\" authenticates with SAS: connect on the SAS port with a token"),
        )),
        Auth::SelfSigned { primary, secondary } => {
            let (sha1, sha256) = (thumbprint_sha1(cert_der), thumbprint_sha256(cert_der));
            if matches(primary, &sha1, &sha256) {
                Ok(session("X.509, primary thumbprint".into(), "selfSigned"))
            } else if matches(secondary, &sha1, &sha256) {
                Ok(session("X.509, secondary thumbprint".into(), "selfSigned"))
            } else {
                Err(refuse(
                    Code::ClientCertRejected,
                    format!(
                        "certificate thumbprint (SHA-256 {}, SHA-1 {}) matches neither registered thumbprint",
                        sha256, sha1
                    ),
                ))
            }
        }
        Auth::CertificateAuthority => {
            DeviceCertificate::from_bytes(cert_der)?
                .check_identity(&identity.device_id, identity.module_id.as_deref())?;
            let ca = chained_to(registry, cert_der, now_unix)?;
            Ok(session(
                format!("X.509, issued by {}", ca),
                "certificateAuthority",
            ))
        }
    }
}

/// Which registered CA issued `cert_der` (checked with rustls-webpki: signature, validity at
/// `now_unix`, client-auth usage). Intermediates are not available from the broker, so the
/// device certificate must be issued by a registered CA directly.
fn chained_to(registry: &Registry, cert_der: &[u8], now_unix: u64) -> Result<String> {
    if registry.authorities.is_empty() {
        return Err(refuse(
            Code::CertUntrusted,
            "the registry has no certificateAuthorities",
        ));
    }
    let leaf = CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| refuse(Code::CertMalformed, format!("client certificate: {e}")))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_unix));
    let mut last = None;
    for ca in &registry.authorities {
        let ca_der = CertificateDer::from(ca.der.as_slice());
        let anchor = match webpki::anchor_from_trusted_cert(&ca_der) {
            Ok(a) => a,
            Err(e) => {
                last = Some(format!("{}: {e}", ca.path.display()));
                continue;
            }
        };
        match ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            time,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        ) {
            Ok(_) => {
                let name = CertFacts::from_der(&ca.der)
                    .map(|f| f.subject)
                    .unwrap_or_else(|_| ca.path.display().to_string());
                return Ok(name);
            }
            Err(e) => last = Some(format!("{e:?}")),
        }
    }
    Err(refuse(
        Code::CertUntrusted,
        format!(
            "certificate is not issued by a registered certificate authority ({})",
            last.unwrap_or_default()
        ),
    ))
}

/// Checks a service call's `Authorization` header: a SAS token naming (`skn`) a shared
/// access policy of the registry with the `ServiceConnect` right, for the hub (or this
/// device), signed with the policy's primary or secondary key (constant time), not expired.
/// Answers the policy's name.
pub fn authenticate_service(
    registry: &Registry,
    token: &str,
    device: &str,
    now_unix: u64,
) -> Result<String> {
    let parsed = sas::parse(token)?;
    let Some(name) = parsed.key_name.as_deref() else {
        return Err(refuse(
            Code::NotAuthorized,
            "token names no shared access policy (skn): the service API needs a policy token",
        ));
    };
    let policy = registry
        .policies
        .iter()
        .find(|p| p.key_name == name)
        .ok_or_else(|| {
            refuse(
                Code::NotAuthorized,
                format!("no shared access policy \"{name}\" in the registry"),
            )
        })?;
    if !policy.grants("ServiceConnect") {
        return Err(refuse(
            Code::NotAuthorized,
            format!("policy \"{name}\" does not have the ServiceConnect right"),
        ));
    }
    let resource = format!("{}/devices/{device}", registry.host_name);
    let mut last = None;
    for key in [&policy.primary, &policy.secondary].into_iter().flatten() {
        match sas::verify_for(token, key, &resource, now_unix) {
            Ok(_) => return Ok(name.to_owned()),
            Err(e) if e.code() == Code::SignatureMismatch && last.is_some() => {}
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| refuse(Code::SignatureMismatch, "token signature does not match")))
}

/// What a client asks to do with a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A message is about to be delivered to the client.
    Read,
    /// The client publishes.
    Write,
    /// The client subscribes (the topic is a filter).
    Subscribe,
    /// The client unsubscribes.
    Unsubscribe,
}

/// The largest device-to-cloud message IoT Hub accepts over MQTT: 256 KB, payload and the
/// properties in the topic together.
pub const MAX_D2C_BYTES: usize = 256 * 1024;

/// The `$iothub/...` filters a device may subscribe to (IoT Hub's MQTT support page):
/// twin responses, desired-property patches and direct-method calls.
const IOTHUB_SUBSCRIBE: [&str; 4] = [
    "$iothub/twin/res/",
    "$iothub/twin/PATCH/properties/desired/",
    "$iothub/methods/POST/",
    "$iothub/credentials/res/",
];

/// The `$iothub/...` topics a device may publish to: a twin GET, a reported-properties
/// PATCH, a direct-method response.
const IOTHUB_PUBLISH: [&str; 4] = [
    "$iothub/twin/GET/",
    "$iothub/twin/PATCH/properties/reported/",
    "$iothub/methods/res/",
    "$iothub/credentials/POST/",
];

/// Whether `filter` is `prefix` followed by `#` or by a single level (`+` or text) and `#`.
fn iothub_filter(filter: &str) -> bool {
    IOTHUB_SUBSCRIBE.iter().any(|p| {
        filter.strip_prefix(p).is_some_and(|rest| {
            rest == "#" || rest.strip_suffix("/#").is_some_and(|l| !l.contains('/'))
        }) || filter
            .strip_suffix('/')
            .is_some_and(|f| p.strip_suffix('/') == Some(f))
    })
}

/// Whether `session` may do `access` on `topic` (a filter for subscriptions): only its own
/// `devices/{id}/...` topics (a device does not get its modules' topics) and the `$iothub/...`
/// topics IoT Hub serves to devices; publishes are checked by [`publish`].
pub fn authorize(session: &Session, access: Access, topic: &str, qos: u8) -> Result<()> {
    if session.kind == crate::certs::DPS_KIND {
        return crate::certs::authorize_dps(access, topic);
    }
    match access {
        Access::Unsubscribe => return Ok(()),
        Access::Write => return publish(session, topic, qos, false, 0),
        Access::Subscribe if topic.starts_with("$iothub/") => {
            return if iothub_filter(topic) {
                Ok(())
            } else {
                Err(refuse(
                    Code::TopicInvalid,
                    format!(
                        "\"{}\" may not subscribe to \"{topic}\": devices subscribe to $iothub/twin/res/#, \
                         $iothub/twin/PATCH/properties/desired/# and $iothub/methods/POST/#",
                        session.name()
                    ),
                ))
            };
        }
        Access::Read if topic.starts_with("$iothub/") => return Ok(()),
        _ => {}
    }
    own(session, access, topic)
}

fn own(session: &Session, access: Access, topic: &str) -> Result<()> {
    let prefix = session.prefix();
    let own = topic
        .strip_prefix(&prefix)
        .is_some_and(|rest| session.module_id.is_some() || !rest.starts_with("modules/"));
    if own {
        return Ok(());
    }
    let verb = match access {
        Access::Read => "receive on",
        Access::Write => "publish on",
        _ => "subscribe to",
    };
    Err(refuse(
        Code::TopicInvalid,
        format!(
            "\"{}\" may not {verb} \"{topic}\": a device may only use {prefix}... and $iothub/...",
            session.name()
        ),
    ))
}

/// Whether `session` may publish `len` bytes on `topic` with `qos` and `retain`. IoT Hub
/// closes the connection of a device whose publish it refuses; the plugin does the same with
/// every refusal here: QoS 2, a topic other than its own
/// `devices/{id}/messages/events/...` (or a module's) and the `$iothub/...` topics devices
/// publish to, and a message over [`MAX_D2C_BYTES`].
///
/// The retain flag is allowed: IoT Hub passes such a message on with an `mqtt-retain`
/// property and keeps nothing, and so does the plugin.
pub fn publish(session: &Session, topic: &str, qos: u8, _retain: bool, len: usize) -> Result<()> {
    let who = session.name();
    if session.kind == crate::certs::DPS_KIND && qos <= 1 {
        return crate::certs::authorize_dps(Access::Write, topic);
    }
    if qos > 1 {
        return Err(refuse(
            Code::MqttQosUnsupported,
            format!("QoS {qos} publish on \"{topic}\" refused: IoT Hub supports QoS 0 and 1"),
        ));
    }
    if topic.starts_with("$iothub/") {
        if IOTHUB_PUBLISH.iter().any(|p| topic.starts_with(p)) {
            return Ok(());
        }
        return Err(refuse(
            Code::TopicInvalid,
            format!(
                "\"{who}\" may not publish on \"{topic}\": devices publish twin GETs, reported \
                 patches and method responses only"
            ),
        ));
    }
    own(session, Access::Write, topic)?;
    let rest = &topic[session.prefix().len()..];
    if !rest.starts_with("messages/events/") && rest != "messages/events" {
        return Err(refuse(
            Code::TopicInvalid,
            format!(
                "\"{who}\" may not publish on \"{topic}\": a device publishes only on {}messages/events/",
                session.prefix()
            ),
        ));
    }
    if len + topic.len() > MAX_D2C_BYTES {
        return Err(refuse(
            Code::MqttPacketTooLarge,
            format!(
                "\"{who}\" published {} bytes on \"{topic}\": IoT Hub accepts at most {MAX_D2C_BYTES} (256 KB)",
                len + topic.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tether::auth::sas::write_token;

    const PRIMARY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
    const SECONDARY: &str =
        "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
    const OTHER: &str = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=";
    const HOST: &str = "hub.example";
    const NOW: u64 = 1_800_000_000;

    fn registry() -> Registry {
        Registry::parse(
            &format!(
                r#"{{"hostName": "{HOST}", "devices": [
                {{"deviceId": "d1", "status": "enabled",
                  "authentication": {{"type": "sas", "symmetricKey": {{"primaryKey": "{PRIMARY}", "secondaryKey": "{SECONDARY}"}}}}}},
                {{"deviceId": "d1", "moduleId": "m1", "status": "enabled",
                  "authentication": {{"type": "sas", "symmetricKey": {{"primaryKey": "{OTHER}"}}}}}},
                {{"deviceId": "off", "status": "disabled",
                  "authentication": {{"type": "sas", "symmetricKey": {{"primaryKey": "{PRIMARY}"}}}}}},
                {{"deviceId": "x1", "status": "enabled", "authentication": {{"type": "certificateAuthority"}}}}]}}"#
            ),
            Path::new("."),
        )
        .unwrap()
    }

    fn token(resource: &Resource<'_>, key: &str, skn: Option<&str>, se: u64) -> String {
        let key = SasKey::from_base64(key).unwrap();
        let mut buf = [0u8; sas::MAX_TOKEN_LEN];
        write_token(resource, &key, skn, se, &mut buf)
            .unwrap()
            .to_owned()
    }

    fn device_token(device: &str, key: &str, se: u64) -> String {
        token(&Resource::device(HOST, device).unwrap(), key, None, se)
    }

    fn user(id: &str) -> String {
        format!("{HOST}/{id}/?api-version=2021-04-12")
    }

    fn sas(client: &str, username: &str, token: &str) -> Result<Session> {
        authenticate_sas(&registry(), client, Some(username), Some(token), NOW)
    }

    #[test]
    fn sas_device_is_accepted_with_either_key_until_expiry() {
        let s = sas("d1", &user("d1"), &device_token("d1", PRIMARY, NOW + 60)).unwrap();
        assert_eq!(s.expires_unix, Some(NOW + 60));
        assert!(s.method.contains("primary key"), "{}", s.method);
        let s = sas("d1", &user("d1"), &device_token("d1", SECONDARY, NOW + 60)).unwrap();
        assert!(s.method.contains("secondary key"), "{}", s.method);
        // Host names compare without case; extra query parameters are fine.
        let username = format!(
            "{}/d1/?api-version=2020-09-30&DeviceClientType=x",
            HOST.to_uppercase()
        );
        sas("d1", &username, &device_token("d1", PRIMARY, NOW + 60)).unwrap();
    }

    #[test]
    fn sas_refusals_name_their_reason() {
        let good = device_token("d1", PRIMARY, NOW + 60);
        let cases: Vec<(&str, String, String, Code, &str)> = vec![
            (
                "d1",
                user("d1"),
                device_token("d1", OTHER, NOW + 60),
                Code::SignatureMismatch,
                "neither",
            ),
            (
                "d1",
                user("d1"),
                device_token("d1", PRIMARY, NOW),
                Code::TokenExpired,
                "expired",
            ),
            (
                "d1",
                user("d1"),
                device_token("d2", PRIMARY, NOW + 60),
                Code::NotAuthorized,
                "token is for \"hub.example/devices/d2\"",
            ),
            (
                "d2",
                user("d1"),
                good.clone(),
                Code::NotAuthorized,
                "client id \"d2\"",
            ),
            (
                "off",
                user("off"),
                device_token("off", PRIMARY, NOW + 60),
                Code::DeviceDisabled,
                "disabled",
            ),
            (
                "nobody",
                user("nobody"),
                good.clone(),
                Code::NotAuthorized,
                "not in the registry",
            ),
            ("x1", user("x1"), good.clone(), Code::NotAuthorized, "X.509"),
            (
                "d1",
                "other.example/d1/?api-version=1".into(),
                good.clone(),
                Code::NotAuthorized,
                "this hub is",
            ),
            (
                "d1",
                format!("{HOST}/d1"),
                good.clone(),
                Code::NotAuthorized,
                "user name must be",
            ),
            (
                "d1",
                format!("{HOST}/d1/?x=1"),
                good.clone(),
                Code::NotAuthorized,
                "api-version",
            ),
            (
                "d1",
                user("d1"),
                "SharedAccessSignature sr=x".into(),
                Code::TokenMalformed,
                "sig",
            ),
            (
                "d1",
                user("d1"),
                token(&Resource::parse(HOST).unwrap(), PRIMARY, None, NOW + 60),
                Code::NotAuthorized,
                "token is for \"hub.example\"",
            ),
            (
                "d1",
                user("d1"),
                token(
                    &Resource::device(HOST, "d1").unwrap(),
                    PRIMARY,
                    Some("iothubowner"),
                    NOW + 60,
                ),
                Code::NotAuthorized,
                "skn",
            ),
        ];
        for (client, username, token, code, needle) in cases {
            let e = sas(client, &username, &token).unwrap_err();
            assert_eq!(e.code(), code, "{client} {username}: {e:?}");
            assert!(e.message().contains(needle), "{client} {username}: {e:?}");
            assert!(
                !e.message().contains(PRIMARY) && !e.message().contains("sig="),
                "{e:?}"
            );
        }
        let e = authenticate_sas(&registry(), "d1", None, Some(&good), NOW).unwrap_err();
        assert!(e.message().contains("no user name"), "{e:?}");
        let e = authenticate_sas(&registry(), "d1", Some(&user("d1")), None, NOW).unwrap_err();
        assert_eq!(e.code(), Code::TokenMalformed);
    }

    #[test]
    fn modules_use_their_own_identity_and_key() {
        let module = Resource::module(HOST, "d1", "m1").unwrap();
        let s = sas(
            "d1/m1",
            &user("d1/m1"),
            &token(&module, OTHER, None, NOW + 5),
        )
        .unwrap();
        assert_eq!(s.name(), "d1/m1");
        // The device's token does not open the module, nor its key.
        let e = sas(
            "d1/m1",
            &user("d1/m1"),
            &device_token("d1", PRIMARY, NOW + 5),
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::NotAuthorized);
        let e = sas(
            "d1/m1",
            &user("d1/m1"),
            &token(&module, PRIMARY, None, NOW + 5),
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::SignatureMismatch);
    }

    fn session(device: &str, module: Option<&str>) -> Session {
        Session {
            device_id: device.into(),
            module_id: module.map(Into::into),
            method: String::new(),
            expires_unix: None,
            kind: "sas",
        }
    }

    #[test]
    fn a_device_uses_only_its_own_topics_and_iothub() {
        let d1 = session("d1", None);
        for (access, topic) in [
            (Access::Write, "devices/d1/messages/events/"),
            (Access::Write, "devices/d1/messages/events/a=b"),
            (Access::Subscribe, "devices/d1/messages/devicebound/#"),
            (Access::Subscribe, "$iothub/twin/res/#"),
            (Access::Write, "$iothub/twin/GET/?$rid=1"),
            (Access::Read, "devices/d1/messages/devicebound/x"),
            (Access::Unsubscribe, "#"),
        ] {
            authorize(&d1, access, topic, 1).unwrap_or_else(|e| panic!("{topic}: {e:?}"));
        }
        for (access, topic) in [
            (Access::Write, "devices/d2/messages/events/"),
            (Access::Subscribe, "devices/d2/messages/devicebound/#"),
            (Access::Subscribe, "devices/+/messages/devicebound/#"),
            (Access::Subscribe, "#"),
            (Access::Subscribe, "devices/d1"),
            (Access::Read, "devices/d10/messages/events/"),
            (Access::Write, "devices/d1/modules/m1/messages/events/"),
            (Access::Write, "$SYS/x"),
        ] {
            let e = authorize(&d1, access, topic, 0).unwrap_err();
            assert!(e.message().contains("may not"), "{topic}: {e:?}");
        }
        let e = authorize(&d1, Access::Write, "devices/d1/messages/events/", 2).unwrap_err();
        assert_eq!(e.code(), Code::MqttQosUnsupported);
        let m1 = session("d1", Some("m1"));
        authorize(
            &m1,
            Access::Write,
            "devices/d1/modules/m1/messages/events/",
            1,
        )
        .unwrap();
        assert!(authorize(&m1, Access::Write, "devices/d1/messages/events/", 1).is_err());
    }

    #[test]
    fn publishes_follow_iot_hubs_rules() {
        let d1 = session("d1", None);
        publish(
            &d1,
            "devices/d1/messages/events/a=1",
            1,
            false,
            MAX_D2C_BYTES - 100,
        )
        .unwrap();
        for topic in [
            "$iothub/twin/GET/?$rid=1",
            "$iothub/twin/PATCH/properties/reported/?$rid=2",
            "$iothub/methods/res/200/?$rid=3",
        ] {
            publish(&d1, topic, 0, false, 10).unwrap_or_else(|e| panic!("{topic}: {e:?}"));
        }
        let refused = [
            (
                "devices/d1/messages/devicebound/x",
                1,
                false,
                1,
                "publishes only on",
            ),
            (
                "devices/d2/messages/events/",
                1,
                false,
                1,
                "may not publish",
            ),
            ("devices/d1/messages/events/", 2, false, 1, "QoS 2"),
            (
                "devices/d1/messages/events/",
                1,
                false,
                MAX_D2C_BYTES,
                "256 KB",
            ),
            (
                "$iothub/methods/POST/x/?$rid=1",
                0,
                false,
                1,
                "method responses only",
            ),
            (
                "$iothub/twin/res/200/?$rid=1",
                0,
                false,
                1,
                "method responses only",
            ),
            (
                "$iothub/twin/PATCH/properties/desired/?$version=1",
                0,
                false,
                1,
                "only",
            ),
        ];
        for (topic, qos, retain, len, needle) in refused {
            let e = publish(&d1, topic, qos, retain, len).unwrap_err();
            assert!(e.message().contains(needle), "{topic}: {e:?}");
        }
        for filter in [
            "$iothub/#",
            "$iothub/twin/GET/#",
            "$iothub/methods/res/#",
            "$iothub/twin/#",
        ] {
            assert!(
                authorize(&d1, Access::Subscribe, filter, 1).is_err(),
                "{filter}"
            );
        }
        for filter in [
            "$iothub/twin/res/#",
            "$iothub/methods/POST/#",
            "$iothub/methods/POST/reboot/#",
            "$iothub/twin/PATCH/properties/desired/#",
        ] {
            authorize(&d1, Access::Subscribe, filter, 1)
                .unwrap_or_else(|e| panic!("{filter}: {e:?}"));
        }
    }

    #[test]
    fn service_calls_need_a_service_connect_policy_token() {
        let registry = Registry::parse(
            &format!(
                r#"{{"hostName": "{HOST}", "devices": [],
                "authorizationPolicies": [
                  {{"keyName": "service", "primaryKey": "{PRIMARY}", "secondaryKey": "{SECONDARY}", "rights": "ServiceConnect"}},
                  {{"keyName": "registryRead", "primaryKey": "{OTHER}", "rights": "RegistryRead"}}]}}"#
            ),
            Path::new("."),
        )
        .unwrap();
        let hub = Resource::parse(HOST).unwrap();
        let t = |key: &str, skn: Option<&str>, se: u64| token(&hub, key, skn, se);
        assert_eq!(
            authenticate_service(&registry, &t(PRIMARY, Some("service"), NOW + 60), "d1", NOW)
                .unwrap(),
            "service"
        );
        authenticate_service(
            &registry,
            &t(SECONDARY, Some("service"), NOW + 60),
            "d1",
            NOW,
        )
        .unwrap();
        // A device-scoped policy token grants that device only.
        let dev = token(
            &Resource::device(HOST, "d1").unwrap(),
            PRIMARY,
            Some("service"),
            NOW + 60,
        );
        authenticate_service(&registry, &dev, "d1", NOW).unwrap();
        let cases = [
            (t(PRIMARY, None, NOW + 60), "d1", "skn"),
            (
                t(PRIMARY, Some("nobody"), NOW + 60),
                "d1",
                "no shared access policy",
            ),
            (
                t(OTHER, Some("registryRead"), NOW + 60),
                "d1",
                "ServiceConnect",
            ),
            (t(OTHER, Some("service"), NOW + 60), "d1", "signature"),
            (t(PRIMARY, Some("service"), NOW), "d1", "expired"),
            (dev.clone(), "d2", "not"),
        ];
        // A policy with a key that is not base64 names the policy, never the key.
        let bad = "not/base64!!key";
        let e = Registry::parse(
            &format!(
                r#"{{"hostName": "{HOST}", "authorizationPolicies": [
                  {{"keyName": "service", "primaryKey": "{bad}", "rights": "ServiceConnect"}}]}}"#
            ),
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e.message().contains("authorizationPolicies[0]") && !e.message().contains(bad),
            "{e:?}"
        );
        for (tok, device, needle) in cases {
            let e = authenticate_service(&registry, &tok, device, NOW).unwrap_err();
            assert!(e.message().contains(needle), "{needle}: {e:?}");
            assert!(!e.message().contains("sig="), "{e:?}");
        }
    }

    #[test]
    fn usernames_are_read_with_their_ids() {
        assert_eq!(
            parse_username("h/d/m/?api-version=1").unwrap(),
            UserName {
                host: "h",
                device: "d",
                module: Some("m")
            }
        );
        assert!(parse_username("h/d/m/x/?api-version=1").is_err());
        assert!(parse_username("h/d d/?api-version=1").is_err());
        // Every character IoT Hub allows in ids, '?' included (even first).
        assert_eq!(
            parse_username("h/?d#+;$'(1)/m?:%/?api-version=1&DeviceClientType=a%2Fb").unwrap(),
            UserName {
                host: "h",
                device: "?d#+;$'(1)",
                module: Some("m?:%")
            }
        );
        assert!(parse_username("h/d/?api-version=").is_err());
    }
}
