//! IoT Hub MQTT names: client ids, usernames, and the topics of telemetry,
//! cloud-to-device messages, device twins and direct methods.
//!
//! Builders write into a [`Sink`] (a `String`, a counter, or a caller buffer) and validate
//! every input before writing anything; the `String` variants are conveniences over them.
//! Parsers borrow from the received topic and never allocate. Device and module ids are
//! written as is (IoT Hub does not URL-encode them), so they are validated against the
//! characters IoT Hub allows.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::auth::{check_host, check_id, check_topic_id, IdKind};
use crate::error::{Code, Error, Result};
use crate::mqtt::properties::{self, parse_bag, Count, Properties, PropertyBag, Sink};

/// The api-version sent in usernames unless the caller chooses another one.
pub const DEFAULT_API_VERSION: &str = "2021-04-12";
/// The longest topic an MQTT 3.1.1 packet can carry (a 16-bit length prefix).
pub const MAX_TOPIC_LEN: usize = 65_535;
/// The largest device-to-cloud message IoT Hub accepts (256 KiB).
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;
/// The longest request id the builders accept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Subscription filter for twin responses.
pub const TWIN_RESPONSE_SUBSCRIBE_TOPIC: &str = "$iothub/twin/res/#";
/// Subscription filter for desired-property updates.
pub const TWIN_DESIRED_SUBSCRIBE_TOPIC: &str = "$iothub/twin/PATCH/properties/desired/#";
/// Subscription filter for direct-method requests.
pub const METHODS_SUBSCRIBE_TOPIC: &str = "$iothub/methods/POST/#";

/// Checks a device or module id: 1 to 128 characters from IoT Hub's set (ASCII
/// alphanumerics and `- : . + % _ # * ? ! ( ) , = @ ; $ '`), with the rules of
/// [`crate::auth`]. Topic builders also refuse `+` and `#` ([`check_topic_id`]).
/// `what` is "device id" or "module id".
pub fn validate_device_id(id: &str, what: &str) -> Result<()> {
    let kind = if what == "module id" {
        IdKind::Module
    } else {
        IdKind::Device
    };
    check_id(kind, id)
}

fn validate_module(module: Option<&str>) -> Result<()> {
    match module {
        Some(m) => validate_device_id(m, "module id"),
        None => Ok(()),
    }
}

/// Checks a host name (the rules of [`crate::auth::check_host`]).
pub fn validate_host(host: &str) -> Result<()> {
    check_host(host)
}

/// Checks a request id for a builder: 1 to 128 unreserved characters (`A-Z a-z 0-9 - _ . ~`),
/// so it needs no encoding and comes back unchanged in the reply topic.
pub fn validate_request_id(rid: &str) -> Result<()> {
    if rid.is_empty() || rid.len() > MAX_REQUEST_ID_LEN {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("request id must be 1 to {MAX_REQUEST_ID_LEN} characters"),
        ));
    }
    if let Some(c) = rid.bytes().find(|b| !properties::is_unreserved(*b)) {
        return Err(Error::new(
            Code::InvalidArgument,
            format!(
                "request id has {:?}; only A-Z a-z 0-9 - _ . ~ are allowed",
                c as char
            ),
        ));
    }
    Ok(())
}

fn check_topic_len(len: usize) -> Result<()> {
    if len > MAX_TOPIC_LEN {
        return Err(Error::new(
            Code::TopicInvalid,
            format!("the topic would be {len} bytes; MQTT allows at most {MAX_TOPIC_LEN}"),
        ));
    }
    Ok(())
}

/// Runs a builder into a new `String`.
pub fn build_string(build: impl FnOnce(&mut String) -> Result<()>) -> Result<String> {
    let mut s = String::new();
    build(&mut s)?;
    Ok(s)
}

/// Writes `v` in decimal without allocating.
pub fn put_u64(sink: &mut (impl Sink + ?Sized), mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    sink.put(std::str::from_utf8(&buf[i..]).expect("digits are ASCII"));
}

/// MQTT client id: `{deviceId}` or `{deviceId}/{moduleId}`.
pub fn client_id_to(
    sink: &mut (impl Sink + ?Sized),
    device: &str,
    module: Option<&str>,
) -> Result<()> {
    validate_device_id(device, "device id")?;
    validate_module(module)?;
    sink.put(device);
    if let Some(m) = module {
        sink.put("/");
        sink.put(m);
    }
    Ok(())
}

/// MQTT client id as a `String`. See [`client_id_to`].
pub fn client_id(device: &str, module: Option<&str>) -> Result<String> {
    build_string(|s| client_id_to(s, device, module))
}

/// Optional parts of the CONNECT username.
#[derive(Clone, Copy, Debug, Default)]
pub struct UsernameOptions<'a> {
    /// The api-version; [`DEFAULT_API_VERSION`] when `None`.
    pub api_version: Option<&'a str>,
    /// `DeviceClientType` (a user agent such as `azsdk-c/1.6.0`), percent-encoded.
    pub client_type: Option<&'a str>,
    /// `model-id` (an IoT Plug and Play DTDL id such as `dtmi:com:example:x;1`),
    /// percent-encoded.
    pub model_id: Option<&'a str>,
}

fn validate_api_version(v: &str) -> Result<()> {
    if v.is_empty() || v.len() > 64 || !v.bytes().all(properties::is_unreserved) {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("api-version {v:?} must be 1 to 64 characters from A-Z a-z 0-9 - _ . ~ (e.g. 2021-04-12)"),
        ));
    }
    Ok(())
}

fn validate_text_option(v: &str, what: &str) -> Result<()> {
    if v.is_empty() {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("{what} is empty (pass NULL/None to leave it out)"),
        ));
    }
    if v.len() > 1024 {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("{what} is {} bytes; at most 1024 are accepted", v.len()),
        ));
    }
    Ok(())
}

/// CONNECT username:
/// `{host}/{deviceId}[/{moduleId}]/?api-version={v}[&DeviceClientType={enc}][&model-id={enc}]`.
pub fn username_to(
    sink: &mut (impl Sink + ?Sized),
    host: &str,
    device: &str,
    module: Option<&str>,
    options: &UsernameOptions<'_>,
) -> Result<()> {
    validate_host(host)?;
    validate_device_id(device, "device id")?;
    validate_module(module)?;
    let api_version = options.api_version.unwrap_or(DEFAULT_API_VERSION);
    validate_api_version(api_version)?;
    if let Some(t) = options.client_type {
        validate_text_option(t, "DeviceClientType")?;
    }
    if let Some(m) = options.model_id {
        validate_text_option(m, "model id")?;
    }
    sink.put(host);
    sink.put("/");
    sink.put(device);
    if let Some(m) = module {
        sink.put("/");
        sink.put(m);
    }
    sink.put("/?api-version=");
    sink.put(api_version);
    if let Some(t) = options.client_type {
        sink.put("&DeviceClientType=");
        properties::encode_to(sink, t);
    }
    if let Some(m) = options.model_id {
        sink.put("&model-id=");
        properties::encode_to(sink, m);
    }
    Ok(())
}

/// CONNECT username as a `String`. See [`username_to`].
pub fn username(
    host: &str,
    device: &str,
    module: Option<&str>,
    options: &UsernameOptions<'_>,
) -> Result<String> {
    build_string(|s| username_to(s, host, device, module, options))
}

/// Telemetry topic: `devices/{d}[/modules/{m}]/messages/events/{bag}` where `bag` is an
/// already encoded property bag (see [`properties::PropertyBag`]); it is validated.
pub fn telemetry_topic_to(
    sink: &mut (impl Sink + ?Sized),
    device: &str,
    module: Option<&str>,
    bag: &str,
) -> Result<()> {
    check_topic_id(IdKind::Device, device)?;
    if let Some(m) = module {
        check_topic_id(IdKind::Module, m)?;
    }
    parse_bag(bag).validate()?;
    let len = "devices/".len()
        + device.len()
        + module.map_or(0, |m| "/modules/".len() + m.len())
        + "/messages/events/".len()
        + bag.len();
    check_topic_len(len)?;
    if bag.len() > MAX_MESSAGE_SIZE {
        return Err(Error::new(
            Code::PropertyBagInvalid,
            format!(
                "the property bag is {} bytes; IoT Hub messages (properties and body) are at most {MAX_MESSAGE_SIZE}",
                bag.len()
            ),
        ));
    }
    sink.put("devices/");
    sink.put(device);
    if let Some(m) = module {
        sink.put("/modules/");
        sink.put(m);
    }
    sink.put("/messages/events/");
    sink.put(bag);
    Ok(())
}

/// Telemetry topic as a `String`. See [`telemetry_topic_to`].
pub fn telemetry_topic(device: &str, module: Option<&str>, bag: &str) -> Result<String> {
    build_string(|s| telemetry_topic_to(s, device, module, bag))
}

/// The telemetry topic of one device or module, `devices/{d}[/modules/{m}]/messages/events/`,
/// built and validated once (a session holds one); each message adds its property bag,
/// which [`PropertyBag`] keeps percent-encoded and so valid, without the topic being
/// assembled into a `String` or scanned again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryTopic {
    prefix: String,
}

impl TelemetryTopic {
    /// The topic prefix for `device` (and `module`), validated as [`telemetry_topic_to`] does.
    pub fn new(device: &str, module: Option<&str>) -> Result<TelemetryTopic> {
        Ok(TelemetryTopic {
            prefix: build_string(|s| telemetry_topic_to(s, device, module, ""))?,
        })
    }

    /// The topic of a message with `bag`, as the parts [`crate::mqtt::codec::append_publish`]
    /// writes one after the other. Checks the total length (MQTT's topic limit) and that
    /// the bag and `payload_len` fit IoT Hub's message size.
    pub fn parts<'a>(&'a self, bag: &'a PropertyBag, payload_len: usize) -> Result<[&'a str; 2]> {
        check_message_size(bag.as_str().len(), payload_len)?;
        check_topic_len(self.prefix.len() + bag.as_str().len())?;
        Ok([&self.prefix, bag.as_str()])
    }
}

/// Checks that a telemetry message (its property bag and body) fits IoT Hub's 256 KiB.
pub fn check_message_size(bag_len: usize, payload_len: usize) -> Result<()> {
    let total = bag_len.saturating_add(payload_len);
    if total > MAX_MESSAGE_SIZE {
        return Err(Error::new(
            Code::MqttPacketTooLarge,
            format!(
                "the message is {total} bytes (properties {bag_len} + body {payload_len}); IoT Hub accepts at most {MAX_MESSAGE_SIZE}"
            ),
        ));
    }
    Ok(())
}

/// Cloud-to-device subscription filter: `devices/{d}/messages/devicebound/#`.
pub fn c2d_subscribe_topic_to(sink: &mut (impl Sink + ?Sized), device: &str) -> Result<()> {
    check_topic_id(IdKind::Device, device)?;
    sink.put("devices/");
    sink.put(device);
    sink.put("/messages/devicebound/#");
    Ok(())
}

/// A received cloud-to-device topic, borrowed from the topic text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct C2dTopic<'a> {
    /// The device id, as received.
    pub device_id: &'a str,
    /// The encoded property bag (validated); may be empty.
    pub properties: &'a str,
}

impl<'a> C2dTopic<'a> {
    /// The properties, for iteration or [`Properties::find`].
    pub fn properties(&self) -> Properties<'a> {
        parse_bag(self.properties)
    }
}

fn topic_error(kind: &str, topic: &str, why: &str) -> Error {
    const SHOWN: usize = 96;
    let shown: String = topic.chars().take(SHOWN).collect();
    let more = if topic.chars().nth(SHOWN).is_some() {
        "..."
    } else {
        ""
    };
    Error::new(
        Code::TopicInvalid,
        format!("{shown:?}{more} is not a {kind} topic: {why}"),
    )
}

/// Parses `devices/{d}/messages/devicebound/{bag}`.
pub fn parse_c2d_topic(topic: &str) -> Result<C2dTopic<'_>> {
    const KIND: &str = "cloud-to-device";
    let rest = topic
        .strip_prefix("devices/")
        .ok_or_else(|| topic_error(KIND, topic, "it does not start with devices/"))?;
    let slash = rest
        .find('/')
        .ok_or_else(|| topic_error(KIND, topic, "no /messages/devicebound/ after the device id"))?;
    let device_id = &rest[..slash];
    if device_id.is_empty() {
        return Err(topic_error(KIND, topic, "the device id is empty"));
    }
    let bag = rest[slash..]
        .strip_prefix("/messages/devicebound/")
        .ok_or_else(|| topic_error(KIND, topic, "no /messages/devicebound/ after the device id"))?;
    parse_bag(bag)
        .validate()
        .map_err(|e| e.context(format!("cloud-to-device topic for {device_id}")))?;
    Ok(C2dTopic {
        device_id,
        properties: bag,
    })
}

/// Twin GET request topic: `$iothub/twin/GET/?$rid={rid}`.
pub fn twin_get_topic_to(sink: &mut (impl Sink + ?Sized), rid: &str) -> Result<()> {
    validate_request_id(rid)?;
    sink.put("$iothub/twin/GET/?$rid=");
    sink.put(rid);
    Ok(())
}

/// Twin reported-properties PATCH topic: `$iothub/twin/PATCH/properties/reported/?$rid={rid}`.
pub fn twin_patch_reported_topic_to(sink: &mut (impl Sink + ?Sized), rid: &str) -> Result<()> {
    validate_request_id(rid)?;
    sink.put("$iothub/twin/PATCH/properties/reported/?$rid=");
    sink.put(rid);
    Ok(())
}

/// A received twin topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwinTopic<'a> {
    /// A response to a GET (status 200) or to a reported-properties PATCH (204), or an
    /// error status, on `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]`.
    Response {
        /// The status code.
        status: u16,
        /// The request id, as received.
        request_id: &'a str,
        /// `$version` when present (the new reported version after a PATCH).
        version: Option<&'a str>,
    },
    /// A desired-properties update on `$iothub/twin/PATCH/properties/desired/?$version={v}`.
    Desired {
        /// `$version`, as received.
        version: &'a str,
    },
}

fn parse_status(text: &str, kind: &str, topic: &str) -> Result<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(topic_error(kind, topic, "the status is not a number"));
    }
    text.parse::<u16>()
        .map_err(|_| topic_error(kind, topic, "the status is larger than 65535"))
}

/// Finds `$key` in a query bag; errors on a malformed bag.
fn query_value<'a>(query: &'a str, key: &str, kind: &str, topic: &str) -> Result<Option<&'a str>> {
    match parse_bag(query).find(key) {
        Ok(Some(p)) => match p.value {
            Some(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(topic_error(kind, topic, &format!("{key} has no value"))),
        },
        Ok(None) => Ok(None),
        Err(e) => Err(topic_error(kind, topic, e.message())),
    }
}

/// Splits `{status}/?{query}` (the part after a response prefix).
fn split_status_query<'a>(rest: &'a str, kind: &str, topic: &str) -> Result<(u16, &'a str)> {
    let (status, query) = rest
        .split_once("/?")
        .ok_or_else(|| topic_error(kind, topic, "no /? after the status"))?;
    Ok((parse_status(status, kind, topic)?, query))
}

/// Parses a received twin topic (a response or a desired-properties update).
pub fn parse_twin_topic(topic: &str) -> Result<TwinTopic<'_>> {
    const KIND: &str = "twin";
    if let Some(rest) = topic.strip_prefix("$iothub/twin/res/") {
        let (status, query) = split_status_query(rest, KIND, topic)?;
        let request_id = query_value(query, "$rid", KIND, topic)?
            .ok_or_else(|| topic_error(KIND, topic, "no $rid"))?;
        let version = query_value(query, "$version", KIND, topic)?;
        Ok(TwinTopic::Response {
            status,
            request_id,
            version,
        })
    } else if let Some(query) = topic.strip_prefix("$iothub/twin/PATCH/properties/desired/?") {
        let version = query_value(query, "$version", KIND, topic)?
            .ok_or_else(|| topic_error(KIND, topic, "no $version"))?;
        Ok(TwinTopic::Desired { version })
    } else {
        Err(topic_error(
            KIND,
            topic,
            "it starts with neither $iothub/twin/res/ nor $iothub/twin/PATCH/properties/desired/?",
        ))
    }
}

/// A received direct-method request topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodRequest<'a> {
    /// The method name, as received.
    pub name: &'a str,
    /// The request id to answer with.
    pub request_id: &'a str,
}

/// Parses `$iothub/methods/POST/{name}/?$rid={rid}`.
pub fn parse_method_request_topic(topic: &str) -> Result<MethodRequest<'_>> {
    const KIND: &str = "direct-method request";
    let rest = topic
        .strip_prefix("$iothub/methods/POST/")
        .ok_or_else(|| topic_error(KIND, topic, "it does not start with $iothub/methods/POST/"))?;
    let (name, query) = rest
        .split_once("/?")
        .ok_or_else(|| topic_error(KIND, topic, "no /? after the method name"))?;
    if name.is_empty() || name.contains('/') {
        return Err(topic_error(
            KIND,
            topic,
            "the method name is empty or has a /",
        ));
    }
    let request_id = query_value(query, "$rid", KIND, topic)?
        .ok_or_else(|| topic_error(KIND, topic, "no $rid"))?;
    Ok(MethodRequest { name, request_id })
}

/// Direct-method response topic: `$iothub/methods/res/{status}/?$rid={rid}`. The request
/// id is the one received with the request; it is written as received after checking that
/// it is non-empty and holds no `&`, `#`, `+`, `/` or NUL.
pub fn method_response_topic_to(
    sink: &mut (impl Sink + ?Sized),
    status: u16,
    rid: &str,
) -> Result<()> {
    validate_echoed_request_id(rid)?;
    sink.put("$iothub/methods/res/");
    put_u64(sink, u64::from(status));
    sink.put("/?$rid=");
    sink.put(rid);
    Ok(())
}

/// Checks a request id that came from the hub and goes back in a reply topic.
pub fn validate_echoed_request_id(rid: &str) -> Result<()> {
    if rid.is_empty() || rid.len() > MAX_TOPIC_LEN / 2 {
        return Err(Error::new(
            Code::InvalidArgument,
            "request id must not be empty",
        ));
    }
    if let Some(c) = rid
        .chars()
        .find(|c| matches!(c, '&' | '#' | '+' | '/' | '\0') || c.is_whitespace())
    {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("request id has {c:?}, which cannot appear in a reply topic"),
        ));
    }
    Ok(())
}

/// Generates request ids (`$rid`) that never repeat for the life of the generator: a
/// 64-bit counter, formatted in decimal. Thread-safe.
#[derive(Debug)]
pub struct RequestIds {
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIds {
    /// A generator whose first id is `1`.
    pub const fn new() -> Self {
        RequestIds {
            next: AtomicU64::new(1),
        }
    }

    /// The next id as a number (never 0, never repeated: 2^64 ids before wrapping).
    pub fn next_value(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The next id as text.
    pub fn next_id(&self) -> String {
        self.next_value().to_string()
    }
}

/// The process-wide generator used by the C API.
pub static REQUEST_IDS: RequestIds = RequestIds::new();

/// The length of a built name, by running the builder into a counter.
pub fn built_len(build: impl FnOnce(&mut Count) -> Result<()>) -> Result<usize> {
    let mut c = Count::default();
    build(&mut c)?;
    Ok(c.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::properties::PropertyBag;

    const HOST: &str = "myiothub.azure-devices.net";

    #[test]
    fn published_usernames_are_produced_byte_for_byte() {
        let agent = UsernameOptions {
            api_version: Some("2020-09-30"),
            client_type: Some("azsdk-c/1.6.0-beta.1"),
            model_id: None,
        };
        assert_eq!(
            username(HOST, "my_device", None, &agent).unwrap(),
            "myiothub.azure-devices.net/my_device/?api-version=2020-09-30&DeviceClientType=azsdk-c%2F1.6.0-beta.1"
        );
        let model = UsernameOptions {
            model_id: Some("dtmi:YOUR_COMPANY_NAME_HERE:sample_device;1"),
            ..agent
        };
        assert_eq!(
            username(HOST, "my_device", None, &model).unwrap(),
            "myiothub.azure-devices.net/my_device/?api-version=2020-09-30&DeviceClientType=azsdk-c%2F1.6.0-beta.1&model-id=dtmi%3AYOUR_COMPANY_NAME_HERE%3Asample_device%3B1"
        );
        let rtos = UsernameOptions {
            api_version: Some("2020-09-30"),
            client_type: Some("azrtos"),
            model_id: None,
        };
        assert_eq!(
            username(HOST, "my_device", Some("my_module_id"), &rtos).unwrap(),
            "myiothub.azure-devices.net/my_device/my_module_id/?api-version=2020-09-30&DeviceClientType=azrtos"
        );
        assert_eq!(
            username(HOST, "d", None, &UsernameOptions::default()).unwrap(),
            "myiothub.azure-devices.net/d/?api-version=2021-04-12"
        );
    }

    #[test]
    fn published_client_ids() {
        assert_eq!(client_id("my_device", None).unwrap(), "my_device");
        assert_eq!(
            client_id("my_device", Some("my_module_id")).unwrap(),
            "my_device/my_module_id"
        );
    }

    #[test]
    fn bad_ids_are_refused_with_id_invalid() {
        for bad in ["", "a/b", "a b", "a&", "é", &"x".repeat(129)] {
            let e = client_id(bad, None).unwrap_err();
            assert_eq!(e.code(), Code::IdInvalid, "{bad:?}");
        }
        // IoT Hub's whole set is accepted where MQTT can carry it: client id, user name.
        let id = "a-:.+%_#*?!(),=@;$'";
        assert_eq!(client_id(id, Some(id)).unwrap(), format!("{id}/{id}"));
        assert_eq!(
            username("h.example", id, None, &UsernameOptions::default()).unwrap(),
            format!("h.example/{id}/?api-version={DEFAULT_API_VERSION}")
        );
        // Topic names cannot carry '+' or '#': refused, with that reason.
        for (device, module) in [
            ("a+", None),
            ("a#", None),
            ("d", Some("m+")),
            ("d", Some("#")),
        ] {
            let e = telemetry_topic(device, module, "").unwrap_err();
            assert_eq!(e.code(), Code::IdInvalid);
            assert!(
                e.message()
                    .contains("MQTT topic names cannot contain '+' or '#'"),
                "{e:?}"
            );
        }
        let e = build_string(|s| c2d_subscribe_topic_to(s, "dev#1")).unwrap_err();
        assert!(e.message().contains("contains '#' at offset 3"), "{e:?}");
        assert_eq!(
            telemetry_topic("a;b$c'=(1)", Some("m@!"), "").unwrap(),
            "devices/a;b$c'=(1)/modules/m@!/messages/events/"
        );
        assert_eq!(
            client_id("d", Some("m/x")).unwrap_err().code(),
            Code::IdInvalid
        );
        assert!(client_id(&"x".repeat(128), None).is_ok());
        assert_eq!(
            username("bad/host", "d", None, &UsernameOptions::default())
                .unwrap_err()
                .code(),
            Code::IdInvalid
        );
    }

    #[test]
    fn published_telemetry_topics() {
        assert_eq!(
            telemetry_topic("my_device", None, "").unwrap(),
            "devices/my_device/messages/events/"
        );
        let mut bag = PropertyBag::new();
        bag.append("key", Some("value"))
            .append("key_two", Some("value2"));
        assert_eq!(
            telemetry_topic("my_device", Some("my_module_id"), bag.as_str()).unwrap(),
            "devices/my_device/modules/my_module_id/messages/events/key=value&key_two=value2"
        );
        assert_eq!(
            telemetry_topic("d", None, "a=%zz").unwrap_err().code(),
            Code::PropertyBagInvalid
        );
    }

    #[test]
    fn telemetry_topic_parts_join_into_the_published_topic() {
        let mut bag = PropertyBag::new();
        bag.append("$.ct", Some("application/json"))
            .append("k", Some("a b"));
        for module in [None, Some("m1")] {
            let topic = TelemetryTopic::new("d1", module).unwrap();
            let joined = topic.parts(&bag, 10).unwrap().concat();
            assert_eq!(joined, telemetry_topic("d1", module, bag.as_str()).unwrap());
        }
        assert!(TelemetryTopic::new("d+1", None).is_err());
        let topic = TelemetryTopic::new("d1", None).unwrap();
        let mut long = PropertyBag::new();
        long.append("k", Some(&"v".repeat(MAX_TOPIC_LEN)));
        assert_eq!(
            topic.parts(&long, 0).unwrap_err().code(),
            Code::TopicInvalid
        );
        assert_eq!(
            topic.parts(&bag, MAX_MESSAGE_SIZE).unwrap_err().code(),
            Code::MqttPacketTooLarge
        );
    }

    #[test]
    fn telemetry_topic_longer_than_mqtt_allows_is_refused() {
        let mut bag = PropertyBag::new();
        bag.append("k", Some(&"v".repeat(MAX_TOPIC_LEN)));
        let e = telemetry_topic("d", None, bag.as_str()).unwrap_err();
        assert_eq!(e.code(), Code::TopicInvalid);
        assert!(e.message().contains("65535"), "{}", e.message());
        assert!(check_message_size(10, MAX_MESSAGE_SIZE - 10).is_ok());
        assert_eq!(
            check_message_size(11, MAX_MESSAGE_SIZE - 10)
                .unwrap_err()
                .code(),
            Code::MqttPacketTooLarge
        );
    }

    #[test]
    fn published_c2d_topic_parses() {
        let t = parse_c2d_topic("devices/useragent_c/messages/devicebound/%24.to=%2Fdevices%2Fuseragent_c%2Fmessages%2FdeviceBound&abc=123&ghi=%2Fsome%2Fthing&jkl=%2Fsome%2Fthing%2F%3Fbla%3Dbla").unwrap();
        assert_eq!(t.device_id, "useragent_c");
        let props: Vec<(String, Option<String>)> = t
            .properties()
            .map(|p| {
                let p = p.unwrap();
                (p.decoded_key().unwrap(), p.decoded_value().unwrap())
            })
            .collect();
        let want = [
            ("$.to", "/devices/useragent_c/messages/deviceBound"),
            ("abc", "123"),
            ("ghi", "/some/thing"),
            ("jkl", "/some/thing/?bla=bla"),
        ];
        assert_eq!(props.len(), want.len());
        for ((k, v), (wk, wv)) in props.iter().zip(want) {
            assert_eq!((k.as_str(), v.as_deref()), (wk, Some(wv)));
        }
        let mut s = String::new();
        c2d_subscribe_topic_to(&mut s, "useragent_c").unwrap();
        assert_eq!(s, "devices/useragent_c/messages/devicebound/#");
    }

    #[test]
    fn c2d_null_and_empty_values_and_bad_topics() {
        let t = parse_c2d_topic("devices/d/messages/devicebound/a&b=").unwrap();
        let p: Vec<_> = t.properties().map(|p| p.unwrap()).collect();
        assert_eq!(p[0].value, None);
        assert_eq!(p[1].value, Some(""));
        assert!(parse_c2d_topic("devices/d/messages/devicebound/")
            .unwrap()
            .properties
            .is_empty());
        for bad in [
            "devices//messages/devicebound/",
            "devices/d/messages/events/",
            "device/d/messages/devicebound/",
            "devices/d",
        ] {
            assert_eq!(
                parse_c2d_topic(bad).unwrap_err().code(),
                Code::TopicInvalid,
                "{bad}"
            );
        }
        assert_eq!(
            parse_c2d_topic("devices/d/messages/devicebound/a=%g")
                .unwrap_err()
                .code(),
            Code::PropertyBagInvalid
        );
    }

    #[test]
    fn published_twin_topics() {
        let mut s = String::new();
        twin_get_topic_to(&mut s, "id_one").unwrap();
        assert_eq!(s, "$iothub/twin/GET/?$rid=id_one");
        let mut s = String::new();
        twin_patch_reported_topic_to(&mut s, "id_one").unwrap();
        assert_eq!(s, "$iothub/twin/PATCH/properties/reported/?$rid=id_one");
        assert_eq!(
            parse_twin_topic("$iothub/twin/res/200/?$rid=id_one").unwrap(),
            TwinTopic::Response {
                status: 200,
                request_id: "id_one",
                version: None
            }
        );
        assert_eq!(
            parse_twin_topic("$iothub/twin/res/204/?$rid=id_one&$version=16").unwrap(),
            TwinTopic::Response {
                status: 204,
                request_id: "id_one",
                version: Some("16")
            }
        );
        assert_eq!(
            parse_twin_topic("$iothub/twin/res/400/?$rid=id_one").unwrap(),
            TwinTopic::Response {
                status: 400,
                request_id: "id_one",
                version: None
            }
        );
        assert_eq!(
            parse_twin_topic("$iothub/twin/PATCH/properties/desired/?$version=id_one").unwrap(),
            TwinTopic::Desired { version: "id_one" }
        );
    }

    #[test]
    fn bad_twin_topics_are_refused() {
        for bad in [
            "$iothub/twin/res/200/",
            "$iothub/twin/res/200/?$version=1",
            "$iothub/twin/res/abc/?$rid=1",
            "$iothub/twin/res/70000/?$rid=1",
            "$iothub/twin/res//?$rid=1",
            "$iothub/twin/res/200/?$rid=",
            "$iothub/twin/res/200/?$rid",
            "$iothub/twin/PATCH/properties/desired/?",
            "$iothub/twin/PATCH/properties/reported/?$rid=1",
            "$iothub/methods/POST/x/?$rid=1",
        ] {
            assert_eq!(
                parse_twin_topic(bad).unwrap_err().code(),
                Code::TopicInvalid,
                "{bad}"
            );
        }
        assert_eq!(
            twin_get_topic_to(&mut String::new(), "a b")
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn published_method_topics() {
        let m = parse_method_request_topic("$iothub/methods/POST/TestMethod/?$rid=1").unwrap();
        assert_eq!(
            m,
            MethodRequest {
                name: "TestMethod",
                request_id: "1"
            }
        );
        let mut s = String::new();
        method_response_topic_to(&mut s, 200, "2").unwrap();
        assert_eq!(s, "$iothub/methods/res/200/?$rid=2");
        let mut s = String::new();
        method_response_topic_to(&mut s, 65535, "2").unwrap();
        assert_eq!(s, "$iothub/methods/res/65535/?$rid=2");
        let mut s = String::new();
        method_response_topic_to(&mut s, 0, "2").unwrap();
        assert_eq!(s, "$iothub/methods/res/0/?$rid=2");
        for bad in [
            "$iothub/methods/POST//?$rid=1",
            "$iothub/methods/POST/a/b/?$rid=1",
            "$iothub/methods/POST/a/?x=1",
            "$iothub/methods/POST/a",
            "$iothub/methods/res/200/?$rid=1",
        ] {
            assert_eq!(
                parse_method_request_topic(bad).unwrap_err().code(),
                Code::TopicInvalid,
                "{bad}"
            );
        }
        assert_eq!(
            method_response_topic_to(&mut String::new(), 200, "a&b")
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn request_ids_never_repeat_across_threads() {
        let ids = std::sync::Arc::new(RequestIds::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let ids = ids.clone();
                std::thread::spawn(move || (0..1000).map(|_| ids.next_value()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(n, 4000);
        assert!(!all.contains(&0));
    }

    #[test]
    fn a_failed_build_writes_nothing() {
        let mut s = String::from("kept");
        assert!(telemetry_topic_to(&mut s, "d", None, "&").is_err());
        assert!(username_to(&mut s, HOST, "d", Some(""), &UsernameOptions::default()).is_err());
        assert_eq!(s, "kept");
        assert_eq!(
            built_len(|c| telemetry_topic_to(c, "d", None, "a=b")).unwrap(),
            "devices/d/messages/events/a=b".len()
        );
    }
}
