//! Certificate management in the stand-in: a DPS endpoint that issues device certificates
//! from CSRs (api-version `2025-07-01-preview`), and IoT Hub's `$iothub/credentials`
//! renewal endpoint, both signing with the stand-in's issuing CA.
//!
//! Enrollments live in the registry file's `dps` section, shaped like DPS's enrollment
//! resources:
//!
//! ```json
//! "dps": {"idScope": "0ne00000001",
//!   "enrollments": [{"registrationId": "r1", "deviceId": "d1", "provisioningStatus": "enabled",
//!     "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "...", "secondaryKey": "..."}},
//!     "clientCertificateIssuancePolicy": {"certificateAuthorityName": "stand-in"},
//!     "simulate": {"throttle": 1, "conflict": 1, "badCsr": 0, "refuseRenewed": false}}],
//!   "enrollmentGroups": [{"enrollmentGroupId": "g1", "provisioningStatus": "enabled",
//!     "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "..."}},
//!     "clientCertificateIssuancePolicy": {"certificateAuthorityName": "stand-in"}}]}
//! ```
//!
//! `simulate` (stand-in only) makes the credentials endpoint answer this device's first
//! `throttle` requests with 429002 (`retryAfter` 2), the next `conflict` ones with 409005 (a
//! phantom active request), the next `badCsr` ones with 400040, and, with `refuseRenewed`,
//! refuse connections made with a certificate issued by renewal (to test a rollback).
//!
//! A device provisioned here is a device of the hub (`certificateAuthority`, issued by the
//! issuing CA), as DPS creates it in IoT Hub.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use base64::Engine;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::{json, Value};
use tether::auth::dps::derive_device_key;
use tether::auth::sas::{self, Resource, SasKey};
use tether::auth::x509::thumbprint_sha256;
use tether::{Code, Error, Result};

use crate::decide::{Access, Session};
use crate::registry::{Auth, Identity, Registry, Status};

/// The kind of [`Session`] a DPS client gets.
pub const DPS_KIND: &str = "dps";
/// The DPS api-version that carries a CSR.
pub const CSR_API_VERSION: &str = "2025-07-01-preview";
/// How long after a renewal request the stand-in answers 200 (seconds).
pub const ISSUE_DELAY_S: u64 = 1;
/// `operationExpires`: how long a renewal request stays active (IoT Hub: up to 12 h).
pub const OPERATION_TTL_S: u64 = 3600;
/// The phantom active request a simulated 409005 names.
pub const PHANTOM_RID: &str = "stand-in-active";

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DpsFile {
    id_scope: String,
    #[serde(default)]
    enrollments: Vec<EnrollmentFile>,
    #[serde(default)]
    enrollment_groups: Vec<GroupFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnrollmentFile {
    registration_id: String,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default = "enabled")]
    provisioning_status: String,
    attestation: AttestationFile,
    #[serde(default)]
    client_certificate_issuance_policy: Option<Value>,
    #[serde(default)]
    simulate: Simulate,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupFile {
    enrollment_group_id: String,
    #[serde(default = "enabled")]
    provisioning_status: String,
    attestation: AttestationFile,
    #[serde(default)]
    client_certificate_issuance_policy: Option<Value>,
    #[serde(default)]
    simulate: Simulate,
}

fn enabled() -> String {
    "enabled".into()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttestationFile {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    symmetric_key: Option<KeysFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeysFile {
    #[serde(default)]
    primary_key: Option<String>,
    #[serde(default)]
    secondary_key: Option<String>,
}

/// Failures the credentials endpoint plays, for tests (stand-in only).
#[derive(Deserialize, Default, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Simulate {
    pub throttle: u32,
    pub conflict: u32,
    pub bad_csr: u32,
    pub refuse_renewed: bool,
}

/// An individual enrollment or a group, checked.
#[derive(Clone, Debug)]
pub struct Enrollment {
    /// Registration id (individual) or group id.
    pub id: String,
    /// The device id to create (individual; a group uses the registration id).
    pub device_id: Option<String>,
    pub enabled: bool,
    /// Symmetric keys (None: X.509 attestation).
    pub keys: Vec<Box<SasKey>>,
    pub group: bool,
    /// Whether DPS issues certificates for this enrollment.
    pub issues: bool,
    pub simulate: Simulate,
}

/// The registry's `dps` section, checked.
#[derive(Clone, Debug, Default)]
pub struct Dps {
    pub id_scope: String,
    pub enrollments: Vec<Enrollment>,
}

impl Dps {
    /// Checks the file's section; errors name the entry, never a key.
    pub fn parse(file: &DpsFile) -> Result<Dps> {
        tether::auth::check_id(tether::auth::IdKind::Scope, &file.id_scope)
            .map_err(|e| e.context("dps idScope"))?;
        let mut out = Vec::new();
        let mut add = |label: String,
                       id: &str,
                       device_id: Option<String>,
                       status: &str,
                       att: &AttestationFile,
                       policy: &Option<Value>,
                       simulate: &Simulate,
                       group: bool|
         -> Result<()> {
            let keys = match att.kind.as_str() {
                "symmetricKey" => {
                    let k = att.symmetric_key.as_ref().ok_or_else(|| {
                        Error::new(
                            Code::InvalidArgument,
                            format!("{label}: symmetricKey attestation without keys"),
                        )
                    })?;
                    let mut keys = Vec::new();
                    for (text, what) in [
                        (&k.primary_key, "primaryKey"),
                        (&k.secondary_key, "secondaryKey"),
                    ] {
                        if let Some(t) = text.as_deref().filter(|t| !t.is_empty()) {
                            keys.push(Box::new(
                                SasKey::from_base64_named(t, what)
                                    .map_err(|e| e.context(&label))?,
                            ));
                        }
                    }
                    keys
                }
                "x509" => Vec::new(),
                other => {
                    return Err(Error::new(
                        Code::InvalidArgument,
                        format!("{label}: attestation type {other:?} (symmetricKey or x509)"),
                    ))
                }
            };
            out.push(Enrollment {
                id: id.to_owned(),
                device_id,
                enabled: status.eq_ignore_ascii_case("enabled"),
                keys,
                group,
                issues: policy.is_some(),
                simulate: simulate.clone(),
            });
            Ok(())
        };
        for (n, e) in file.enrollments.iter().enumerate() {
            add(
                format!("dps enrollments[{n}] (\"{}\")", e.registration_id),
                &e.registration_id,
                e.device_id.clone(),
                &e.provisioning_status,
                &e.attestation,
                &e.client_certificate_issuance_policy,
                &e.simulate,
                false,
            )?;
        }
        for (n, g) in file.enrollment_groups.iter().enumerate() {
            add(
                format!("dps enrollmentGroups[{n}] (\"{}\")", g.enrollment_group_id),
                &g.enrollment_group_id,
                None,
                &g.provisioning_status,
                &g.attestation,
                &g.client_certificate_issuance_policy,
                &g.simulate,
                true,
            )?;
        }
        Ok(Dps {
            id_scope: file.id_scope.clone(),
            enrollments: out,
        })
    }

    fn individual(&self, reg: &str) -> Option<&Enrollment> {
        self.enrollments.iter().find(|e| !e.group && e.id == reg)
    }

    /// The enrollment a device id came from (for the simulation knobs).
    pub fn for_device(&self, device: &str) -> Option<&Enrollment> {
        self.enrollments
            .iter()
            .find(|e| !e.group && e.device_id.as_deref().unwrap_or(&e.id) == device)
            .or_else(|| self.enrollments.iter().find(|e| e.group))
    }
}

/// Reads a DPS user name `{idScope}/registrations/{registrationId}/api-version={v}[&...]`:
/// (scope, registration id, api-version).
pub fn parse_dps_username(username: &str) -> Option<(&str, &str, &str)> {
    let (scope, rest) = username.split_once('/')?;
    let rest = rest.strip_prefix("registrations/")?;
    let (reg, query) = rest.split_once('/')?;
    if scope.contains('.') || reg.is_empty() {
        return None;
    }
    let version = query
        .split('&')
        .find_map(|p| p.strip_prefix("api-version="))?;
    Some((scope, reg, version))
}

fn refuse(code: Code, message: impl Into<String>) -> Error {
    Error::new(code, message)
}

/// Authenticates a DPS client: scope, client id = registration id, an enabled enrollment,
/// and a SAS token for `{scope}/registrations/{reg}` signed with the enrollment's key (or,
/// for a group, the key derived from the group key).
pub fn authenticate_dps(
    registry: &Registry,
    client_id: &str,
    username: &str,
    password: Option<&str>,
    now_unix: u64,
) -> Result<Session> {
    let (scope, reg, version) = parse_dps_username(username)
        .ok_or_else(|| refuse(Code::NotAuthorized, "not a DPS user name"))?;
    let dps = registry
        .dps
        .as_ref()
        .ok_or_else(|| refuse(Code::NotAuthorized, "the registry has no dps section"))?;
    if scope != dps.id_scope {
        return Err(refuse(
            Code::NotAuthorized,
            format!(
                "id scope \"{scope}\" is not this DPS's \"{}\"",
                dps.id_scope
            ),
        ));
    }
    if client_id != reg {
        return Err(refuse(
            Code::NotAuthorized,
            format!("client id \"{client_id}\" is not the registration id \"{reg}\""),
        ));
    }
    let token = password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| refuse(Code::TokenMalformed, "no SAS token in the password"))?;
    let wanted = Resource::registration(scope, reg)?;
    let parsed = sas::parse(token)?;
    if parsed.resource_uri != wanted.uri() {
        return Err(refuse(
            Code::NotAuthorized,
            format!(
                "token is for \"{}\", not \"{}\"",
                parsed.resource_uri,
                wanted.uri()
            ),
        ));
    }
    let (enrollment, keys): (&Enrollment, Vec<SasKey>) = match dps.individual(reg) {
        Some(e) => (e, e.keys.iter().map(|k| (**k).clone()).collect()),
        None => {
            let g = dps
                .enrollments
                .iter()
                .find(|e| e.group && !e.keys.is_empty())
                .ok_or_else(|| {
                    refuse(Code::NotAuthorized, format!("\"{reg}\" has no enrollment"))
                })?;
            let derived = g
                .keys
                .iter()
                .map(|k| derive_device_key(k, reg))
                .collect::<Result<Vec<_>>>()?;
            (g, derived)
        }
    };
    if !enrollment.enabled {
        return Err(refuse(
            Code::DeviceDisabled,
            format!("enrollment \"{}\" is disabled", enrollment.id),
        ));
    }
    if keys.is_empty() {
        return Err(refuse(
            Code::NotAuthorized,
            format!(
                "enrollment \"{}\" attests with X.509, not a key",
                enrollment.id
            ),
        ));
    }
    let ok = keys.iter().any(|k| sas::verify(token, k, now_unix).is_ok());
    if !ok {
        return Err(refuse(
            Code::SignatureMismatch,
            "the registration token matches no enrollment key (or has expired)",
        ));
    }
    Ok(Session {
        device_id: reg.to_owned(),
        module_id: None,
        method: format!(
            "DPS, enrollment \"{}\", api-version {version}",
            enrollment.id
        ),
        expires_unix: Some(parsed.expiry_unix),
        kind: DPS_KIND,
    })
}

/// What a DPS client may do: subscribe to and receive `$dps/registrations/res/...`, publish
/// registrations and status polls.
pub fn authorize_dps(access: Access, topic: &str) -> Result<()> {
    let ok = match access {
        Access::Unsubscribe => true,
        Access::Subscribe | Access::Read => topic.starts_with("$dps/registrations/res/"),
        Access::Write => {
            topic.starts_with("$dps/registrations/PUT/iotdps-register/")
                || topic.starts_with("$dps/registrations/GET/iotdps-get-operationstatus/")
        }
    };
    if ok {
        Ok(())
    } else {
        Err(refuse(
            Code::TopicInvalid,
            format!("a DPS client may not use \"{topic}\""),
        ))
    }
}

/// The stand-in's issuing CA.
pub struct Issuer {
    ca_der: Vec<u8>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    validity_s: u64,
    serial: u64,
}

/// Why a CSR was not signed: 400040 in both protocols.
#[derive(Debug)]
pub struct BadCsr(pub String);

fn common_name(dn: &rcgen::DistinguishedName) -> Option<String> {
    match dn.get(&rcgen::DnType::CommonName)? {
        rcgen::DnValue::Utf8String(s) => Some(s.clone()),
        rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_owned()),
        rcgen::DnValue::Ia5String(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

impl Issuer {
    /// Loads the CA certificate and key (PEM files); certificates live `validity_s`.
    pub fn load(cert: &Path, key: &Path, validity_s: u64) -> std::result::Result<Issuer, String> {
        let cert_pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
        let ca_der = tether::policy::load_certificates(&cert_pem)
            .map_err(|e| format!("{}: {e}", cert.display()))?
            .first()
            .map(|c| c.as_ref().to_vec())
            .ok_or_else(|| format!("{}: no certificate", cert.display()))?;
        let key_pem =
            std::fs::read_to_string(key).map_err(|e| format!("{}: {e}", key.display()))?;
        let key =
            rcgen::KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
        let issuer = rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(ca_der.clone()), key)
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        Ok(Issuer {
            ca_der,
            issuer,
            validity_s: validity_s.max(1),
            serial: 1,
        })
    }

    /// The CA certificate (DER).
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// Signs a CSR (DER) whose CN must be `expected_cn`: the chain, leaf first.
    pub fn issue(
        &mut self,
        csr_der: &[u8],
        expected_cn: &str,
        now_unix: u64,
    ) -> std::result::Result<Vec<Vec<u8>>, BadCsr> {
        let mut csr =
            rcgen::CertificateSigningRequestParams::from_der(&csr_der.into()).map_err(|e| {
                BadCsr(format!(
                    "the CSR is not a valid signed PKCS#10 request: {e}"
                ))
            })?;
        let cn = common_name(&csr.params.distinguished_name);
        if cn.as_deref() != Some(expected_cn) {
            return Err(BadCsr(format!(
                "the CSR's CN is {:?}; it must be \"{expected_cn}\"",
                cn.unwrap_or_default()
            )));
        }
        let start = time::OffsetDateTime::from_unix_timestamp(now_unix as i64)
            .map_err(|e| BadCsr(e.to_string()))?;
        let p = &mut csr.params;
        p.not_before = start;
        p.not_after = start + time::Duration::seconds(self.validity_s as i64);
        self.serial += 1;
        let serial = (now_unix << 20) | (self.serial & 0xfffff);
        p.serial_number = Some(rcgen::SerialNumber::from(serial));
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.subject_alt_names.clear();
        p.use_authority_key_identifier_extension = true;
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| BadCsr(format!("signing failed: {e}")))?;
        Ok(vec![cert.der().to_vec(), self.ca_der.clone()])
    }
}

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

fn query<'t>(topic: &'t str, key: &str) -> Option<&'t str> {
    let (_, q) = topic.split_once('?')?;
    q.split('&')
        .find_map(|p| p.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
}

fn utc(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// One message to one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub client: String,
    pub topic: String,
    pub payload: Vec<u8>,
}

fn publish(client: &str, topic: String, body: Value) -> Publish {
    Publish {
        client: client.to_owned(),
        topic,
        payload: body.to_string().into_bytes(),
    }
}

/// A renewal request held by the hub.
struct Pending {
    rid: String,
    chain: Vec<Vec<u8>>,
    due: u64,
    expires: u64,
}

/// The stand-in's certificate state.
#[derive(Default)]
pub struct Certs {
    issuer: Option<Issuer>,
    /// DPS operations: id -> final reply.
    operations: HashMap<String, Value>,
    /// Devices DPS created, as hub identities.
    provisioned: HashSet<String>,
    /// Renewal requests per device.
    pending: HashMap<String, Pending>,
    /// Clients subscribed to `$iothub/credentials/res/#`.
    subscribed: HashSet<String>,
    /// Renewal requests seen per device (for the simulation knobs).
    requests: HashMap<String, u32>,
    /// SHA-256 thumbprints of certificates issued by renewal, per device.
    renewed: HashMap<String, HashSet<String>>,
    next_op: u64,
}

impl Certs {
    /// With the issuing CA (None: DPS assigns without issuing, renewal answers 503001).
    pub fn new(issuer: Option<Issuer>) -> Certs {
        Certs {
            issuer,
            ..Certs::default()
        }
    }

    /// Adds what DPS created to a freshly loaded registry: the issuing CA as a registered
    /// authority and each provisioned device as a `certificateAuthority` identity.
    pub fn overlay(&self, registry: &mut Registry) {
        if let Some(i) = &self.issuer {
            registry.add_authority(Path::new("issuing CA (tether hub --dps-port)"), i.ca_der());
        }
        for d in &self.provisioned {
            registry.add_identity(Identity {
                device_id: d.clone(),
                module_id: None,
                status: Status::Enabled,
                auth: Auth::CertificateAuthority,
            });
        }
    }

    /// Why a connection with `cert_der` must be refused (the `refuseRenewed` knob).
    pub fn refuses(&self, registry: &Registry, device: &str, cert_der: &[u8]) -> Option<String> {
        let knob = registry
            .dps
            .as_ref()?
            .for_device(device)?
            .simulate
            .refuse_renewed;
        let thumb = thumbprint_sha256(cert_der);
        (knob && self.renewed.get(device).is_some_and(|s| s.contains(&thumb)))
            .then(|| "certificate issued by renewal refused (simulate.refuseRenewed)".to_owned())
    }

    /// A subscription by `client`.
    pub fn subscribe(&mut self, client: &str, filter: &str) {
        if filter.starts_with("$iothub/credentials/res/") {
            self.subscribed.insert(client.to_owned());
        }
    }

    /// `client` disconnected.
    pub fn disconnected(&mut self, client: &str) {
        self.subscribed.remove(client);
    }

    /// A DPS client's publish: a registration or a status poll.
    pub fn dps_publish(
        &mut self,
        registry: &Registry,
        session: &Session,
        api_version: &str,
        topic: &str,
        payload: &[u8],
        now: u64,
    ) -> Vec<Publish> {
        let client = &session.device_id;
        let reg = client.as_str();
        let Some(rid) = query(topic, "$rid") else {
            return Vec::new();
        };
        let reply = |status: u16, retry: Option<u32>, body: Value| {
            let topic = match retry {
                Some(r) => format!("$dps/registrations/res/{status}/?$rid={rid}&retry-after={r}"),
                None => format!("$dps/registrations/res/{status}/?$rid={rid}"),
            };
            vec![publish(client, topic, body)]
        };
        let error = |status: u16, code: u32, message: String| {
            reply(
                status,
                None,
                json!({"errorCode": code, "trackingId": "stand-in", "message": message,
                       "timestampUtc": utc(now)}),
            )
        };
        if topic.starts_with("$dps/registrations/GET/iotdps-get-operationstatus/") {
            let op = query(topic, "operationId").unwrap_or("");
            return match self.operations.get(op) {
                Some(result) => reply(200, None, result.clone()),
                None => error(404, 404_002, format!("no operation {op}")),
            };
        }
        let body: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        if body["registrationId"].as_str() != Some(reg) {
            return error(
                400,
                400_004,
                "the body's registrationId is not the registration id".into(),
            );
        }
        let Some(dps) = registry.dps.as_ref() else {
            return error(401, 401_002, "no dps section".into());
        };
        let enrollment = dps
            .individual(reg)
            .or_else(|| dps.enrollments.iter().find(|e| e.group));
        let device = enrollment
            .and_then(|e| e.device_id.clone())
            .unwrap_or_else(|| reg.to_owned());
        let mut state = json!({
            "registrationId": reg,
            "createdDateTimeUtc": utc(now),
            "assignedHub": registry.host_name,
            "deviceId": device,
            "status": "assigned",
            "substatus": "initialAssignment",
            "lastUpdatedDateTimeUtc": utc(now),
        });
        if let Some(csr) = body["csr"].as_str() {
            if api_version != CSR_API_VERSION {
                return error(
                    400,
                    400_004,
                    format!("a csr needs api-version={CSR_API_VERSION}"),
                );
            }
            if !enrollment.is_some_and(|e| e.issues) {
                return error(
                    400,
                    400_004,
                    "the enrollment has no clientCertificateIssuancePolicy".into(),
                );
            }
            let Some(issuer) = self.issuer.as_mut() else {
                return error(500, 500_001, "the stand-in has no issuing CA".into());
            };
            let issued = unb64(csr)
                .ok_or_else(|| BadCsr("the csr is not base64".into()))
                .and_then(|der| issuer.issue(&der, reg, now));
            match issued {
                Ok(chain) => {
                    state["issuedCertificateChain"] =
                        Value::from(chain.iter().map(|c| b64(c)).collect::<Vec<_>>());
                    self.provisioned.insert(device.clone());
                }
                Err(BadCsr(why)) => return error(400, 400_040, why),
            }
        }
        self.next_op += 1;
        let op = format!("4.stand-in.{}.{}", now, self.next_op);
        self.operations.insert(
            op.clone(),
            json!({"operationId": op, "status": "assigned", "registrationState": state}),
        );
        reply(
            202,
            Some(1),
            json!({"operationId": op, "status": "assigning"}),
        )
    }

    /// A device's publish on `$iothub/credentials/POST/issueCertificate/?$rid=...`.
    pub fn credentials_publish(
        &mut self,
        registry: &Registry,
        session: &Session,
        topic: &str,
        payload: &[u8],
        now: u64,
    ) -> Vec<Publish> {
        let client = session.name();
        let device = session.device_id.clone();
        let Some(rid) = query(topic, "$rid").map(str::to_owned) else {
            return Vec::new();
        };
        let reply = |status: u16, body: Value| {
            vec![publish(
                &client,
                format!("$iothub/credentials/res/{status}/?$rid={rid}"),
                body,
            )]
        };
        let error =
            |status: u16, code: u32, retry: Option<u64>, message: &str, active: Option<&str>| {
                let mut v = json!({"errorCode": code, "message": message,
                               "info": {"requestId": active.unwrap_or(&rid)}});
                if let Some(r) = retry {
                    v["retryAfter"] = Value::from(r);
                }
                reply(status, v)
            };
        if !topic.starts_with("$iothub/credentials/POST/issueCertificate/") {
            return error(404, 404_001, None, "unknown credentials operation", None);
        }
        let n = {
            let c = self.requests.entry(device.clone()).or_insert(0);
            *c += 1;
            *c
        };
        let knobs = registry
            .dps
            .as_ref()
            .and_then(|d| d.for_device(&device))
            .map(|e| e.simulate.clone())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        let replace = body["replace"].as_str();
        if n <= knobs.throttle {
            return error(429, 429_002, Some(2), "throttled (simulated)", None);
        }
        if n <= knobs.throttle + knobs.conflict && replace.is_none() {
            return error(
                409,
                409_005,
                None,
                "a certificate request is already active (simulated)",
                Some(PHANTOM_RID),
            );
        }
        if body["id"].as_str() != Some(device.as_str()) {
            return error(
                400,
                400_004,
                None,
                "the body's id is not the device id",
                None,
            );
        }
        // An active request: only `replace` = its rid (or `*`) may take its place.
        let active = self
            .pending
            .get(&device)
            .filter(|p| p.expires > now)
            .map(|p| p.rid.clone());
        match (replace, &active) {
            (None, Some(a)) => {
                return error(
                    409,
                    409_005,
                    None,
                    "a certificate request is already active",
                    Some(a),
                )
            }
            (Some(r), None) if r != "*" && r != PHANTOM_RID => {
                return error(
                    412,
                    412_001,
                    None,
                    "no pending request matches replace",
                    None,
                )
            }
            (Some(r), Some(a)) if r != "*" && r != a => {
                return error(
                    412,
                    412_001,
                    None,
                    "no pending request matches replace",
                    None,
                )
            }
            _ => {}
        }
        if n <= knobs.throttle + knobs.conflict + knobs.bad_csr {
            return error(400, 400_040, None, "the CSR is not valid (simulated)", None);
        }
        let Some(issuer) = self.issuer.as_mut() else {
            return error(
                503,
                503_001,
                Some(5),
                "the stand-in has no issuing CA",
                None,
            );
        };
        let issued = body["csr"]
            .as_str()
            .and_then(unb64)
            .ok_or_else(|| BadCsr("no base64 csr".into()))
            .and_then(|der| issuer.issue(&der, &device, now));
        let chain = match issued {
            Ok(c) => c,
            Err(BadCsr(why)) => return error(400, 400_040, None, &why, None),
        };
        self.renewed
            .entry(device.clone())
            .or_default()
            .insert(thumbprint_sha256(&chain[0]));
        let expires = now + OPERATION_TTL_S;
        self.pending.insert(
            device,
            Pending {
                rid: rid.clone(),
                chain,
                due: now + ISSUE_DELAY_S,
                expires,
            },
        );
        reply(
            202,
            json!({"correlationId": format!("stand-in-{rid}"), "operationExpires": utc(expires)}),
        )
    }

    /// Answers 200 to due requests of connected, subscribed devices; drops expired ones.
    pub fn tick(&mut self, now: u64) -> Vec<Publish> {
        self.pending.retain(|_, p| p.expires > now);
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(d, p)| p.due <= now && self.subscribed.contains(*d))
            .map(|(d, _)| d.clone())
            .collect();
        due.into_iter()
            .filter_map(|d| {
                let p = self.pending.remove(&d)?;
                let certs: Vec<String> = p.chain.iter().map(|c| b64(c)).collect();
                Some(publish(
                    &d,
                    format!("$iothub/credentials/res/200/?$rid={}", p.rid),
                    Value::from(certs),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dps_user_names() {
        assert_eq!(
            parse_dps_username(
                "0ne1/registrations/r-1/api-version=2025-07-01-preview&ClientVersion=x"
            ),
            Some(("0ne1", "r-1", "2025-07-01-preview"))
        );
        assert_eq!(
            parse_dps_username("hub.example/d1/?api-version=2021-04-12"),
            None
        );
        assert_eq!(
            parse_dps_username("0ne1/registrations//api-version=1"),
            None
        );
        assert!(authorize_dps(Access::Write, "devices/x/messages/events/").is_err());
        assert!(authorize_dps(Access::Subscribe, "$dps/registrations/res/#").is_ok());
    }
}
