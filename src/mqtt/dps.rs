//! Device Provisioning Service (DPS) over MQTT: client id, username, register and
//! operation-status topics, the register payload, and parsing of replies (topic and JSON
//! body).

use crate::auth::{check_connection_string_id, check_host, check_id, IdKind};
use crate::error::{Code, Error, Result};
use crate::mqtt::properties::{self, parse_bag, Sink};
use crate::mqtt::topics::{validate_echoed_request_id, validate_request_id};

/// The api-version sent in DPS usernames unless the caller chooses another one.
pub const DEFAULT_DPS_API_VERSION: &str = "2019-03-31";
/// The global DPS endpoint.
pub const GLOBAL_ENDPOINT: &str = "global.azure-devices-provisioning.net";
/// Subscription filter for DPS replies.
pub const DPS_SUBSCRIBE_TOPIC: &str = "$dps/registrations/res/#";

/// Checks a registration id: 1 to 128 characters, ASCII letters, digits, `-`, `.`, `_`, `:`
/// (the rules of [`crate::auth::check_id`]).
pub fn validate_registration_id(id: &str) -> Result<()> {
    check_id(IdKind::Registration, id)
}

/// Checks an ID scope such as `0neFEEDC0DE`: 1 to 64 ASCII letters and digits.
pub fn validate_id_scope(scope: &str) -> Result<()> {
    check_id(IdKind::Scope, scope)
}

/// Checks what a DPS reply assigned before anything uses it: `assignedHub` must be a host
/// name and `deviceId` a device id that a connection string can carry (no `;`: the
/// assignment is handed on as `HostName=...;DeviceId=...`, so `;GatewayHostName=...` in a
/// reply must not become a field). The error (`IdInvalid`) names the field and the rule,
/// and shows the offending value shortened.
pub fn check_assignment(assigned_hub: &str, device_id: &str) -> Result<()> {
    check_host(assigned_hub).map_err(|e| e.context("DPS reply: assignedHub"))?;
    check_connection_string_id(IdKind::Device, device_id)
        .map_err(|e| e.context("DPS reply: deviceId"))
}

/// DPS client id: the registration id.
pub fn client_id_to(sink: &mut (impl Sink + ?Sized), registration_id: &str) -> Result<()> {
    validate_registration_id(registration_id)?;
    sink.put(registration_id);
    Ok(())
}

/// DPS username:
/// `{idScope}/registrations/{regId}/api-version={v}[&ClientVersion={userAgent}]`.
///
/// The client version is percent-encoded except for `/`, which is kept as DPS and the
/// embedded C SDK send it (`ClientVersion=c/1.2.3`).
pub fn username_to(
    sink: &mut (impl Sink + ?Sized),
    id_scope: &str,
    registration_id: &str,
    api_version: Option<&str>,
    client_version: Option<&str>,
) -> Result<()> {
    validate_id_scope(id_scope)?;
    validate_registration_id(registration_id)?;
    let api_version = api_version.unwrap_or(DEFAULT_DPS_API_VERSION);
    if api_version.is_empty() || !api_version.bytes().all(properties::is_unreserved) {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("api-version {api_version:?} must be non-empty and from A-Z a-z 0-9 - _ . ~"),
        ));
    }
    if let Some(v) = client_version {
        if v.is_empty() || v.len() > 1024 {
            return Err(Error::new(
                Code::InvalidArgument,
                "ClientVersion must be 1 to 1024 bytes (pass NULL/None to leave it out)",
            ));
        }
    }
    sink.put(id_scope);
    sink.put("/registrations/");
    sink.put(registration_id);
    sink.put("/api-version=");
    sink.put(api_version);
    if let Some(v) = client_version {
        sink.put("&ClientVersion=");
        properties::encode_keeping(sink, v, b"/");
    }
    Ok(())
}

/// Register topic: `$dps/registrations/PUT/iotdps-register/?$rid={rid}`.
pub fn register_topic_to(sink: &mut (impl Sink + ?Sized), rid: &str) -> Result<()> {
    validate_request_id(rid)?;
    sink.put("$dps/registrations/PUT/iotdps-register/?$rid=");
    sink.put(rid);
    Ok(())
}

/// Operation-status topic:
/// `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`
/// (the operation id percent-encoded; the ids DPS issues need no escaping).
pub fn poll_topic_to(sink: &mut (impl Sink + ?Sized), rid: &str, operation_id: &str) -> Result<()> {
    validate_request_id(rid)?;
    if operation_id.is_empty() || operation_id.len() > 1024 {
        return Err(Error::new(
            Code::InvalidArgument,
            "operation id must be 1 to 1024 bytes",
        ));
    }
    sink.put("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=");
    sink.put(rid);
    sink.put("&operationId=");
    properties::encode_to(sink, operation_id);
    Ok(())
}

/// Register request body: `{"registrationId":"{regId}"}` (registration ids need no JSON
/// escaping).
pub fn register_payload_to(sink: &mut (impl Sink + ?Sized), registration_id: &str) -> Result<()> {
    validate_registration_id(registration_id)?;
    sink.put("{\"registrationId\":\"");
    sink.put(registration_id);
    sink.put("\"}");
    Ok(())
}

/// A parsed DPS reply topic: `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`
/// (parameters in any order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseTopic<'a> {
    /// The status: 200 assigned or failed (see the body), 202 in progress, 429/5xx retry.
    pub status: u16,
    /// The request id, as received.
    pub request_id: &'a str,
    /// `retry-after`, in seconds, when present.
    pub retry_after_s: Option<u32>,
}

impl ResponseTopic<'_> {
    /// Whether the request should be retried (202 means poll, 429 and 5xx mean retry).
    pub fn should_retry(&self) -> bool {
        self.status == 202 || self.status == 429 || self.status >= 500
    }
}

fn topic_error(topic: &str, why: &str) -> Error {
    let shown: String = topic.chars().take(96).collect();
    Error::new(
        Code::TopicInvalid,
        format!("{shown:?} is not a DPS reply topic: {why}"),
    )
}

/// Parses a DPS reply topic.
pub fn parse_response_topic(topic: &str) -> Result<ResponseTopic<'_>> {
    let rest = topic
        .strip_prefix("$dps/registrations/res/")
        .ok_or_else(|| topic_error(topic, "it does not start with $dps/registrations/res/"))?;
    let (status, query) = rest
        .split_once("/?")
        .ok_or_else(|| topic_error(topic, "no /? after the status"))?;
    if status.is_empty() || status.len() > 5 || !status.bytes().all(|b| b.is_ascii_digit()) {
        return Err(topic_error(topic, "the status is not a number"));
    }
    let status: u16 = status
        .parse()
        .map_err(|_| topic_error(topic, "the status is larger than 65535"))?;
    let mut request_id = None;
    let mut retry_after_s = None;
    for p in parse_bag(query) {
        let p = p.map_err(|e| topic_error(topic, e.message()))?;
        if properties::decodes_to(p.key, "$rid") {
            match p.value {
                Some(v) if !v.is_empty() => request_id = Some(v),
                _ => return Err(topic_error(topic, "$rid has no value")),
            }
        } else if properties::decodes_to(p.key, "retry-after") {
            let v = p.value.unwrap_or("");
            if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(topic_error(topic, "retry-after is not a number of seconds"));
            }
            retry_after_s = Some(
                v.parse::<u32>()
                    .map_err(|_| topic_error(topic, "retry-after is too large"))?,
            );
        }
    }
    let request_id = request_id.ok_or_else(|| topic_error(topic, "no $rid"))?;
    validate_echoed_request_id(request_id).map_err(|e| topic_error(topic, e.message()))?;
    Ok(ResponseTopic {
        status,
        request_id,
        retry_after_s,
    })
}

/// The fields of a DPS reply body that a device acts on. Strings are borrowed from the
/// body as they appear between the JSON quotes (escapes are not processed; ids, host
/// names and statuses DPS sends never contain any).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseBody<'a> {
    /// `operationId`: pass it to [`poll_topic_to`] while the status is `assigning`.
    pub operation_id: Option<&'a str>,
    /// `status`: `unassigned`, `assigning`, `assigned`, `failed` or `disabled`.
    pub status: Option<&'a str>,
    /// `registrationState.assignedHub`.
    pub assigned_hub: Option<&'a str>,
    /// `registrationState.deviceId`.
    pub device_id: Option<&'a str>,
    /// `registrationState.errorMessage` (or a top-level `message` in an error reply).
    pub error_message: Option<&'a str>,
    /// `registrationState.errorCode` (or a top-level `errorCode`).
    pub error_code: Option<u64>,
}

/// Parses a DPS reply body (JSON). The whole document is validated (depth at most 32);
/// unknown members are skipped.
pub fn parse_response_body(body: &[u8]) -> Result<ResponseBody<'_>> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::new(Code::MqttMalformed, "the DPS reply body is not UTF-8"))?;
    let mut p = Json {
        s: text,
        b: body,
        i: 0,
        out: ResponseBody::default(),
    };
    p.ws();
    p.value(0, Path::Root)?;
    p.ws();
    if p.i != body.len() {
        return Err(p.err("trailing data after the JSON document"));
    }
    Ok(p.out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Root,
    Top,
    State,
    Other,
}

struct Json<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    out: ResponseBody<'a>,
}

enum Scalar<'a> {
    Str(&'a str),
    Num(&'a str),
    Other,
}

impl<'a> Json<'a> {
    fn err(&self, why: &str) -> Error {
        Error::new(
            Code::MqttMalformed,
            format!(
                "the DPS reply body is not valid JSON at offset {}: {why}",
                self.i
            ),
        )
    }

    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn string(&mut self) -> Result<&'a str> {
        if !self.eat(b'"') {
            return Err(self.err("expected a string"));
        }
        let start = self.i;
        loop {
            match self.b.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => match self.b.get(self.i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                    Some(b'u') => {
                        let hex = self.b.get(self.i + 2..self.i + 6);
                        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                            return Err(self.err("bad \\u escape"));
                        }
                        self.i += 6;
                    }
                    _ => return Err(self.err("bad escape")),
                },
                Some(c) if *c < 0x20 => return Err(self.err("control character in a string")),
                Some(_) => self.i += 1,
            }
        }
        let s = &self.s[start..self.i];
        self.i += 1;
        Ok(s)
    }

    fn number(&mut self) -> Result<&'a str> {
        let start = self.i;
        self.eat(b'-');
        let digits = |p: &mut Self| {
            let st = p.i;
            while p.i < p.b.len() && p.b[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i - st
        };
        if digits(self) == 0 {
            return Err(self.err("expected a value"));
        }
        if self.eat(b'.') && digits(self) == 0 {
            return Err(self.err("bad number"));
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            if digits(self) == 0 {
                return Err(self.err("bad number"));
            }
        }
        Ok(&self.s[start..self.i])
    }

    fn literal(&mut self, word: &str) -> Result<()> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("expected a value"))
        }
    }

    fn value(&mut self, depth: usize, path: Path) -> Result<Scalar<'a>> {
        if depth > 32 {
            return Err(self.err("nested deeper than 32 levels"));
        }
        match self.b.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                self.ws();
                if self.eat(b'}') {
                    return Ok(Scalar::Other);
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.ws();
                    if !self.eat(b':') {
                        return Err(self.err("expected ':'"));
                    }
                    self.ws();
                    let child = match (path, key) {
                        (Path::Root, "registrationState") => Path::State,
                        (Path::Root, _) => Path::Top,
                        _ => Path::Other,
                    };
                    let v = self.value(depth + 1, child)?;
                    self.record(path, key, v);
                    self.ws();
                    if self.eat(b',') {
                        continue;
                    }
                    if self.eat(b'}') {
                        return Ok(Scalar::Other);
                    }
                    return Err(self.err("expected ',' or '}'"));
                }
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.eat(b']') {
                    return Ok(Scalar::Other);
                }
                loop {
                    self.ws();
                    self.value(depth + 1, Path::Other)?;
                    self.ws();
                    if self.eat(b',') {
                        continue;
                    }
                    if self.eat(b']') {
                        return Ok(Scalar::Other);
                    }
                    return Err(self.err("expected ',' or ']'"));
                }
            }
            Some(b'"') => Ok(Scalar::Str(self.string()?)),
            Some(b't') => self.literal("true").map(|()| Scalar::Other),
            Some(b'f') => self.literal("false").map(|()| Scalar::Other),
            Some(b'n') => self.literal("null").map(|()| Scalar::Other),
            Some(_) => Ok(Scalar::Num(self.number()?)),
            None => Err(self.err("unexpected end")),
        }
    }

    fn record(&mut self, path: Path, key: &str, v: Scalar<'a>) {
        let o = &mut self.out;
        match (path, key, v) {
            (Path::Root, "operationId", Scalar::Str(s)) => o.operation_id = Some(s),
            (Path::Root, "status", Scalar::Str(s)) => o.status = Some(s),
            (Path::Root, "message", Scalar::Str(s)) if o.error_message.is_none() => {
                o.error_message = Some(s)
            }
            (Path::Root, "errorCode", Scalar::Num(n)) if o.error_code.is_none() => {
                o.error_code = n.parse().ok()
            }
            (Path::State, "assignedHub", Scalar::Str(s)) => o.assigned_hub = Some(s),
            (Path::State, "deviceId", Scalar::Str(s)) => o.device_id = Some(s),
            (Path::State, "errorMessage", Scalar::Str(s)) => o.error_message = Some(s),
            (Path::State, "errorCode", Scalar::Num(n)) => o.error_code = n.parse().ok(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::topics::build_string;

    #[test]
    fn published_dps_names_are_produced_byte_for_byte() {
        assert_eq!(
            build_string(|s| username_to(s, "0neFEEDC0DE", "myRegistrationId", None, Some("c/1.2.3"))).unwrap(),
            "0neFEEDC0DE/registrations/myRegistrationId/api-version=2019-03-31&ClientVersion=c/1.2.3"
        );
        assert_eq!(
            build_string(|s| register_topic_to(s, "1")).unwrap(),
            "$dps/registrations/PUT/iotdps-register/?$rid=1"
        );
        assert_eq!(
            build_string(|s| poll_topic_to(s, "1", "4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d")).unwrap(),
            "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1&operationId=4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d"
        );
        assert_eq!(
            build_string(|s| register_payload_to(s, "myRegistrationId")).unwrap(),
            "{\"registrationId\":\"myRegistrationId\"}"
        );
        assert_eq!(
            build_string(|s| client_id_to(s, "myRegistrationId")).unwrap(),
            "myRegistrationId"
        );
    }

    #[test]
    fn published_dps_replies_parse() {
        let r = parse_response_topic("$dps/registrations/res/202/?$rid=1&retry-after=3").unwrap();
        assert_eq!(
            (r.status, r.request_id, r.retry_after_s),
            (202, "1", Some(3))
        );
        assert!(r.should_retry());
        let r = parse_response_topic("$dps/registrations/res/202/?retry-after=120&$rid=1").unwrap();
        assert_eq!(
            (r.status, r.request_id, r.retry_after_s),
            (202, "1", Some(120))
        );
        let r = parse_response_topic("$dps/registrations/res/200/?$rid=1").unwrap();
        assert_eq!((r.status, r.request_id, r.retry_after_s), (200, "1", None));
        assert!(!r.should_retry());
        for bad in [
            "$dps/registrations/res/200/?",
            "$dps/registrations/res/x/?$rid=1",
            "$dps/registrations/res/202/?$rid=1&retry-after=soon",
            "$dps/registrations/res/202/?$rid=1&retry-after=99999999999",
            "$dps/registrations/PUT/iotdps-register/?$rid=1",
        ] {
            assert_eq!(
                parse_response_topic(bad).unwrap_err().code(),
                Code::TopicInvalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn reply_bodies_give_operation_and_assignment() {
        let b = br#"{"operationId":"4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d","status":"assigning"}"#;
        let r = parse_response_body(b).unwrap();
        assert_eq!(
            r.operation_id,
            Some("4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d")
        );
        assert_eq!(r.status, Some("assigning"));
        let b = br#"{ "operationId":"x","status":"assigned","registrationState":{"registrationId":"r","assignedHub":"hub.azure-devices.net","deviceId":"dev","status":"assigned","substatus":"initialAssignment","etag":"e","lastUpdatedDateTimeUtc":"2020","createdDateTimeUtc":"2020","payload":{"a":[1,2.5e3,true,null]}} }"#;
        let r = parse_response_body(b).unwrap();
        assert_eq!(r.assigned_hub, Some("hub.azure-devices.net"));
        assert_eq!(r.device_id, Some("dev"));
        assert_eq!(r.status, Some("assigned"));
        let b =
            br#"{"errorCode":401002,"trackingId":"t","message":"Unauthorized","timestampUtc":"x"}"#;
        let r = parse_response_body(b).unwrap();
        assert_eq!(r.error_code, Some(401002));
        assert_eq!(r.error_message, Some("Unauthorized"));
        for bad in [
            &b"{"[..],
            b"{\"a\"}",
            b"{\"a\":}",
            b"[1,]",
            b"{} x",
            b"\"\\q\"",
            b"",
            b"-",
            b"\xff",
        ] {
            assert_eq!(
                parse_response_body(bad).unwrap_err().code(),
                Code::MqttMalformed
            );
        }
        let deep = "[".repeat(40) + &"]".repeat(40);
        assert!(parse_response_body(deep.as_bytes()).is_err());
    }

    #[test]
    fn bad_dps_inputs_are_refused() {
        assert_eq!(
            validate_registration_id("a b").unwrap_err().code(),
            Code::IdInvalid
        );
        assert_eq!(
            validate_registration_id("").unwrap_err().code(),
            Code::IdInvalid
        );
        assert_eq!(
            validate_id_scope("0ne/x").unwrap_err().code(),
            Code::IdInvalid
        );
        assert!(build_string(|s| poll_topic_to(s, "1", "")).is_err());
    }

    #[test]
    fn an_assignment_is_a_host_name_and_a_device_id_a_connection_string_can_carry() {
        check_assignment("hub-7.azure-devices.net", "sn-007").unwrap();
        check_assignment("hub.azure-devices.net", "a+b#c(1)!@$'*,=%").unwrap();
        let e = check_assignment("hub.example;GatewayHostName=evil.example", "dev").unwrap_err();
        assert_eq!(e.code(), Code::IdInvalid);
        assert!(
            e.message().starts_with("DPS reply: assignedHub: host name"),
            "{e:?}"
        );
        assert!(e.message().contains("';' at offset 11"), "{e:?}");
        let e = check_assignment("hub.example", "dev;GatewayHostName=evil.example").unwrap_err();
        assert!(
            e.message().starts_with("DPS reply: deviceId: device id"),
            "{e:?}"
        );
        assert!(
            e.message().contains("a connection string cannot hold ';'"),
            "{e:?}"
        );
        for (hub, dev) in [
            ("", "d"),
            ("h", ""),
            ("h/x", "d"),
            ("h", "d/e"),
            ("h", "d\n"),
        ] {
            assert_eq!(
                check_assignment(hub, dev).unwrap_err().code(),
                Code::IdInvalid
            );
        }
    }
}
