//! Certificate management on the wire (preview): the CSR fields of a DPS registration, and
//! certificate renewal through IoT Hub's `$iothub/credentials` topics. Pure functions: topics
//! and bodies to send, and parsers for what DPS and the hub answer (untrusted input: every
//! parser returns a named error, never panics).

use serde_json::Value;

use crate::auth::csr::decode_chain;
use crate::error::{Code, Error, Result};
use crate::mqtt::properties::{self, parse_bag};

/// The DPS api-version that issues certificates from a CSR.
pub const DPS_CSR_API_VERSION: &str = "2025-07-01-preview";
/// The IoT Hub api-version of the `$iothub/credentials` endpoint.
pub const HUB_CREDENTIALS_API_VERSION: &str = "2025-08-01-preview";
/// Subscription filter for renewal answers.
pub const CREDENTIALS_SUBSCRIBE_TOPIC: &str = "$iothub/credentials/res/#";
/// Prefix of renewal answers.
pub const CREDENTIALS_RESPONSE_PREFIX: &str = "$iothub/credentials/res/";
/// Longest JSON body accepted from DPS or the hub here.
const MAX_BODY: usize = 64 * 1024;

fn malformed(what: &str, why: impl std::fmt::Display) -> Error {
    Error::new(Code::MqttMalformed, format!("{what}: {why}"))
}

fn json(body: &[u8], what: &str) -> Result<Value> {
    if body.len() > MAX_BODY {
        return Err(malformed(what, format!("larger than {MAX_BODY} bytes")));
    }
    serde_json::from_slice(body).map_err(|e| {
        malformed(
            what,
            format!("not JSON (line {} column {})", e.line(), e.column()),
        )
    })
}

/// The DPS register body with a CSR: `{"registrationId":"{reg}","csr":"{b64}"}`.
pub fn dps_register_payload(registration_id: &str, csr_base64: &str) -> Result<String> {
    crate::mqtt::dps::validate_registration_id(registration_id)?;
    Ok(serde_json::json!({"registrationId": registration_id, "csr": csr_base64}).to_string())
}

/// What a DPS registration with a CSR returned besides the assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpsIssued {
    /// `registrationState.issuedCertificateChain`, decoded (DER, leaf first).
    pub chain: Vec<Vec<u8>>,
}

/// Reads `registrationState.issuedCertificateChain` and `connectionProfile` from a final
/// DPS reply. `Ok(None)` when DPS issued no certificate; `HubRequiresMqttV5` when the
/// assigned hub speaks MQTT v5 only.
pub fn parse_dps_issued(body: &[u8]) -> Result<Option<DpsIssued>> {
    let v = json(body, "the DPS reply")?;
    let state = &v["registrationState"];
    let profile = &state["connectionProfile"];
    let says_v5 = |s: &Value| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case("mqttV5"));
    let v5 = says_v5(profile) || profile.as_object().is_some_and(|o| o.values().any(says_v5));
    if v5 {
        return Err(Error::new(
            Code::HubRequiresMqttV5,
            format!(
                "DPS assigned {} to a hub that accepts MQTT v5 only (connectionProfile mqttV5); \
                 tether speaks MQTT 3.1.1",
                state["deviceId"].as_str().unwrap_or("the device")
            ),
        ));
    }
    match &state["issuedCertificateChain"] {
        Value::Null => Ok(None),
        Value::Array(items) => {
            let texts: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            let texts = texts.ok_or_else(|| {
                malformed("the DPS reply", "issuedCertificateChain holds a non-string")
            })?;
            Ok(Some(DpsIssued {
                chain: decode_chain(&texts)?,
            }))
        }
        _ => Err(malformed(
            "the DPS reply",
            "issuedCertificateChain is not an array",
        )),
    }
}

/// Checks a renewal request id: 4 to 36 characters from A-Z a-z 0-9 - _ . ~.
pub fn validate_rid(rid: &str) -> Result<()> {
    if !(4..=36).contains(&rid.len()) || !rid.bytes().all(properties::is_unreserved) {
        return Err(Error::new(
            Code::InvalidArgument,
            "a credentials request id must be 4 to 36 characters from A-Z a-z 0-9 - _ . ~",
        ));
    }
    Ok(())
}

/// `$iothub/credentials/POST/issueCertificate/?$rid={rid}`.
pub fn request_topic(rid: &str) -> Result<String> {
    validate_rid(rid)?;
    Ok(format!(
        "$iothub/credentials/POST/issueCertificate/?$rid={rid}"
    ))
}

/// `{"id": "{deviceId}", "csr": "{b64}", "replace": ...}`; `replace` is the request id of
/// an active request to replace, or `*` for any (omitted when `None`).
pub fn request_body(device_id: &str, csr_base64: &str, replace: Option<&str>) -> String {
    let mut v = serde_json::json!({"id": device_id, "csr": csr_base64});
    if let Some(r) = replace {
        v["replace"] = Value::from(r);
    }
    v.to_string()
}

/// A parsed answer topic: `$iothub/credentials/res/{status}/?$rid={rid}[&...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseTopic {
    /// 202 accepted, 200 issued, 4xx/5xx an error.
    pub status: u16,
    /// The request id.
    pub rid: String,
}

/// Parses an answer topic.
pub fn parse_response_topic(topic: &str) -> Result<ResponseTopic> {
    let bad = |why: &str| {
        let shown: String = topic.chars().take(96).collect();
        Error::new(
            Code::TopicInvalid,
            format!("{shown:?} is not a credentials answer topic: {why}"),
        )
    };
    let rest = topic
        .strip_prefix(CREDENTIALS_RESPONSE_PREFIX)
        .ok_or_else(|| bad("wrong prefix"))?;
    let (status, query) = rest
        .split_once("/?")
        .ok_or_else(|| bad("no /? after the status"))?;
    if status.is_empty() || status.len() > 3 || !status.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the status is not a number"));
    }
    let status: u16 = status
        .parse()
        .map_err(|_| bad("the status is not a number"))?;
    let mut rid = None;
    for p in parse_bag(query) {
        let p = p.map_err(|e| bad(e.message()))?;
        if properties::decodes_to(p.key, "$rid") {
            rid = p.value.map(str::to_owned);
        }
    }
    let rid = rid
        .filter(|r| !r.is_empty())
        .ok_or_else(|| bad("no $rid"))?;
    Ok(ResponseTopic { status, rid })
}

/// What the hub answered to a renewal request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// 202: accepted; the certificate follows on the same request id.
    Accepted {
        /// `correlationId`.
        correlation_id: Option<String>,
        /// `operationExpires`, Unix seconds: the device stays reachable until then.
        operation_expires: Option<i64>,
    },
    /// 200: the issued chain, DER, leaf first.
    Issued(Vec<Vec<u8>>),
    /// An error answer.
    Failed(Failure),
}

/// An error answer: `errorCode`, `retryAfter`, `info.requestId`, `message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP-like status of the topic.
    pub status: u16,
    /// `errorCode` (400040, 409005, 412001, 429002, 429003, 503001, 500001, ...).
    pub error_code: u32,
    /// `retryAfter`, seconds.
    pub retry_after_s: Option<u64>,
    /// `info.requestId`: the active request (409005 names it).
    pub request_id: Option<String>,
    /// `message`, shortened.
    pub message: String,
}

/// What to do about a [`Failure`], as the protocol says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureAction {
    /// 409005: resend with `replace` set to the active request (or `*`).
    ResendReplacing,
    /// 429002/429003 (throttled), 503001/500001 (service): send again after the wait.
    RetryAfter(u64),
    /// 400040 (bad CSR), 412001 and anything else: named, not retried.
    GiveUp,
}

impl Failure {
    /// The protocol's answer to this failure; `backoff_s` is used when the hub gave no
    /// `retryAfter` for a retriable error.
    pub fn action(&self, backoff_s: u64) -> FailureAction {
        match self.error_code {
            409005 => FailureAction::ResendReplacing,
            429002 | 429003 | 503001 | 500001 => {
                FailureAction::RetryAfter(self.retry_after_s.unwrap_or(backoff_s))
            }
            _ if self.status == 429 || self.status >= 500 => {
                FailureAction::RetryAfter(self.retry_after_s.unwrap_or(backoff_s))
            }
            _ => FailureAction::GiveUp,
        }
    }

    /// The named error for a failure that is not retried.
    pub fn to_error(&self) -> Error {
        let why = match self.error_code {
            400040 => "the hub refused the CSR (400040)",
            412001 => "no pending request matches `replace` (412001)",
            _ => "the hub refused to issue a certificate",
        };
        Error::new(
            Code::CertIssuanceRefused,
            format!(
                "{why}: status {}, errorCode {}: {}",
                self.status, self.error_code, self.message
            ),
        )
    }
}

/// Parses an answer body for `status`.
pub fn parse_response(status: u16, body: &[u8]) -> Result<Response> {
    let what = "the hub's credentials answer";
    let v = json(body, what)?;
    match status {
        200 => {
            let list = match &v {
                Value::Array(a) => a,
                Value::Object(o) => match o.get("certificates") {
                    Some(Value::Array(a)) => a,
                    _ => return Err(malformed(what, "200 without a certificate array")),
                },
                _ => return Err(malformed(what, "200 without a certificate array")),
            };
            let texts: Option<Vec<&str>> = list.iter().map(Value::as_str).collect();
            let texts = texts.ok_or_else(|| malformed(what, "a certificate is not a string"))?;
            Ok(Response::Issued(decode_chain(&texts)?))
        }
        202 => Ok(Response::Accepted {
            correlation_id: v["correlationId"].as_str().map(str::to_owned),
            operation_expires: v["operationExpires"].as_str().and_then(parse_utc),
        }),
        _ => {
            let code = v["errorCode"]
                .as_u64()
                .or_else(|| v["errorCode"].as_str().and_then(|s| s.parse::<u64>().ok()));
            let retry = v["retryAfter"]
                .as_u64()
                .or_else(|| v["retryAfter"].as_str().and_then(|s| s.parse().ok()));
            Ok(Response::Failed(Failure {
                status,
                error_code: code.unwrap_or(u64::from(status) * 1000) as u32,
                retry_after_s: retry,
                request_id: v["info"]["requestId"].as_str().map(str::to_owned),
                message: v["message"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect(),
            }))
        }
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)` into Unix seconds.
pub fn parse_utc(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_bodies() {
        assert_eq!(
            request_topic("r-0001").unwrap(),
            "$iothub/credentials/POST/issueCertificate/?$rid=r-0001"
        );
        assert!(request_topic("abc").is_err());
        assert!(request_topic(&"x".repeat(37)).is_err());
        assert!(request_topic("a b c d").is_err());
        let v: Value = serde_json::from_str(&request_body("d1", "QUJD", Some("*"))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "d1", "csr": "QUJD", "replace": "*"})
        );
        let v: Value = serde_json::from_str(&request_body("d1", "QUJD", None)).unwrap();
        assert!(v.get("replace").is_none());
        let t = parse_response_topic("$iothub/credentials/res/202/?$rid=r-0001").unwrap();
        assert_eq!((t.status, t.rid.as_str()), (202, "r-0001"));
        assert!(parse_response_topic("$iothub/credentials/res/abc/?$rid=1").is_err());
        assert!(parse_response_topic("$iothub/credentials/res/200/?x=1").is_err());
        assert!(parse_response_topic("$iothub/twin/res/200/?$rid=1").is_err());
    }

    #[test]
    fn answers_and_what_to_do() {
        let a = parse_response(
            202,
            br#"{"correlationId":"c1","operationExpires":"2026-12-01T20:00:00.123Z"}"#,
        )
        .unwrap();
        assert_eq!(
            a,
            Response::Accepted {
                correlation_id: Some("c1".into()),
                operation_expires: Some(1_796_155_200),
            }
        );
        assert_eq!(
            parse_response(200, br#"["AAE=","AgM="]"#).unwrap(),
            Response::Issued(vec![vec![0, 1], vec![2, 3]])
        );
        assert_eq!(
            parse_response(200, br#"{"certificates":["AAE="]}"#).unwrap(),
            Response::Issued(vec![vec![0, 1]])
        );
        let f = |status, body: &str| match parse_response(status, body.as_bytes()).unwrap() {
            Response::Failed(f) => f,
            other => panic!("{other:?}"),
        };
        let busy = f(409, r#"{"errorCode":409005,"info":{"requestId":"r-0001"}}"#);
        assert_eq!(busy.action(5), FailureAction::ResendReplacing);
        assert_eq!(busy.request_id.as_deref(), Some("r-0001"));
        let slow = f(429, r#"{"errorCode":429002,"retryAfter":7}"#);
        assert_eq!(slow.action(5), FailureAction::RetryAfter(7));
        assert_eq!(f(503, "{}").action(5), FailureAction::RetryAfter(5));
        let bad = f(400, r#"{"errorCode":400040,"message":"bad CSR"}"#);
        assert_eq!(bad.action(5), FailureAction::GiveUp);
        assert_eq!(bad.to_error().code(), Code::CertIssuanceRefused);
        // Malformed input is a named error, never a panic.
        for junk in [&b"{"[..], b"[1,2]", b"\"x\"", b"", b"{\"certificates\":7}"] {
            assert!(parse_response(200, junk).is_err());
        }
        assert!(parse_response(202, b"nope").is_err());
    }

    #[test]
    fn dps_fields() {
        assert_eq!(parse_dps_issued(br#"{"status":"assigned"}"#).unwrap(), None);
        let issued = parse_dps_issued(
            br#"{"registrationState":{"issuedCertificateChain":["AAE="],"connectionProfile":"mqtt"}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(issued.chain, vec![vec![0, 1]]);
        let v5 = parse_dps_issued(
            br#"{"registrationState":{"deviceId":"d","connectionProfile":"mqttV5"}}"#,
        )
        .unwrap_err();
        assert_eq!(v5.code(), Code::HubRequiresMqttV5);
        assert!(
            parse_dps_issued(br#"{"registrationState":{"issuedCertificateChain":[1]}}"#).is_err()
        );
        let body = dps_register_payload("reg-1", "QUJD").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["csr"], "QUJD");
        assert_eq!(parse_utc("1970-01-01T00:00:10Z"), Some(10));
        assert_eq!(parse_utc("garbage"), None);
    }
}
