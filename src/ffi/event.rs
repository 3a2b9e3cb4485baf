//! Events for C: what `tether_client_poll` and `tether_session_poll_event` hand out, and the
//! property arrays both accept for telemetry.

use std::ffi::{c_char, CString};

use crate::error::{Code, Error, Result};
use crate::ffi::text_arg;
use crate::mqtt::properties::PropertyBag;
use crate::session::Event;

/// What a polled event is.
///
/// cbindgen:prefix-with-name=false
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum tether_event_kind {
    /// Nothing happened within the timeout.
    TETHER_EVENT_NONE = 0,
    /// The hub accepted the connection. `name`: TLS version and cipher suite.
    TETHER_EVENT_CONNECTED = 1,
    /// A QoS 1 message was acknowledged. `message_id`.
    TETHER_EVENT_TELEMETRY_ACKED = 2,
    /// A cloud-to-device message. `payload`, `property_count` (see
    /// `tether_client_event_property`).
    TETHER_EVENT_C2D = 3,
    /// A direct-method request. `name`, `request_id`, `payload`; answer with
    /// `tether_client_respond_method`.
    TETHER_EVENT_METHOD_REQUEST = 4,
    /// A twin GET or PATCH answer. `request_id`, `status`, `version` (0 if none), `payload`.
    TETHER_EVENT_TWIN_RESPONSE = 5,
    /// A desired-properties patch. `version`, `payload`.
    TETHER_EVENT_DESIRED_PATCH = 6,
    /// The hub refused a subscription. `name`: the topic filter.
    TETHER_EVENT_SUBSCRIPTION_REFUSED = 7,
    /// The connection ended. `error`: why (`TETHER_RESULT_OK` when requested or for a
    /// token renewal); `will_retry`: whether the client reconnects by itself.
    /// `tether_last_error` gives the message.
    TETHER_EVENT_DISCONNECTED = 8,
    /// A message from the hub whose topic or properties could not be decoded, handed over
    /// as received instead of being dropped; the connection stays up, and a QoS 1 message
    /// is acknowledged once polled. `name`: the topic; `payload`; `error`: why
    /// (`TETHER_RESULT_TOPIC_INVALID`, `TETHER_RESULT_PROPERTY_BAG_INVALID`...);
    /// `tether_last_error` gives the message.
    TETHER_EVENT_UNDECODABLE = 9,
    /// Certificate renewal progress: `name` is `renewal_requested` (`request_id` set),
    /// `issued` (a renewed certificate passed the checks; the client reconnects with it),
    /// `swapped` (the hub accepted it: it is in force), `rolled_back` (the hub refused it;
    /// the previous one is back; `error` says why) or `renewal_failed` (`error`,
    /// `will_retry`). `version` carries the new certificate's end of validity (Unix
    /// seconds) for `issued` and `swapped`.
    TETHER_EVENT_CERTIFICATE = 10,
}

/// One event from `tether_client_poll`. Pointers are owned by the client and stay valid
/// until the next `tether_client_poll` or `tether_client_free`; fields an event kind does not
/// use are zero or NULL.
#[repr(C)]
#[derive(Debug)]
pub struct tether_event {
    /// The kind of event.
    pub kind: tether_event_kind,
    /// TELEMETRY_ACKED: the id `tether_client_send_telemetry` returned.
    pub message_id: u64,
    /// METHOD_REQUEST: the method; CONNECTED: `TLSv1.2 <suite>`; SUBSCRIPTION_REFUSED: the
    /// filter; UNDECODABLE: the topic. NUL-terminated.
    pub name: *const c_char,
    /// METHOD_REQUEST, TWIN_RESPONSE: the request id. NUL-terminated.
    pub request_id: *const c_char,
    /// TWIN_RESPONSE: the status (200, 204, 429...).
    pub status: u16,
    /// TWIN_RESPONSE, DESIRED_PATCH: the twin version.
    pub version: u64,
    /// The message body.
    pub payload: *const u8,
    /// Its length.
    pub payload_len: usize,
    /// C2D: how many properties `tether_client_event_property` can read.
    pub property_count: usize,
    /// DISCONNECTED, UNDECODABLE: why.
    pub error: Code,
    /// DISCONNECTED: whether the client reconnects by itself on later polls (tether decides
    /// once: only refusals no retry can fix are final; see docs/reliability.md).
    pub will_retry: bool,
}

fn empty_event() -> tether_event {
    tether_event {
        kind: tether_event_kind::TETHER_EVENT_NONE,
        message_id: 0,
        name: std::ptr::null(),
        request_id: std::ptr::null(),
        status: 0,
        version: 0,
        payload: std::ptr::null(),
        payload_len: 0,
        property_count: 0,
        error: Code::Ok,
        will_retry: false,
    }
}

fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "\u{FFFD}")).expect("NULs replaced")
}

/// The last event handed to C and the C strings its fields point to.
#[derive(Default)]
pub(crate) struct EventSlot {
    current: Option<Event>,
    strings: Vec<CString>,
    properties: Vec<(CString, Option<CString>)>,
}

impl EventSlot {
    /// Keeps `event` and describes it in `out`; pointers refer to the slot.
    pub(crate) fn store(&mut self, event: Option<Event>, out: &mut tether_event) {
        self.current = event;
        *out = empty_event();
        self.strings.clear();
        self.properties.clear();
        let Some(event) = self.current.as_ref() else {
            return;
        };
        let mut payload: &[u8] = &[];
        let mut name = None;
        let mut request_id = None;
        match event {
            Event::Connected {
                tls_version,
                cipher_suite,
                ..
            } => {
                out.kind = tether_event_kind::TETHER_EVENT_CONNECTED;
                name = Some(format!("{tls_version} {cipher_suite}"));
            }
            Event::TelemetryAcked { id } => {
                out.kind = tether_event_kind::TETHER_EVENT_TELEMETRY_ACKED;
                out.message_id = *id;
            }
            Event::C2d {
                properties,
                payload: body,
            } => {
                out.kind = tether_event_kind::TETHER_EVENT_C2D;
                payload = body;
                self.properties = properties
                    .iter()
                    .map(|(k, v)| (c_string(k), v.as_deref().map(c_string)))
                    .collect();
                out.property_count = self.properties.len();
            }
            Event::MethodRequest {
                name: method,
                request_id: rid,
                payload: body,
            } => {
                out.kind = tether_event_kind::TETHER_EVENT_METHOD_REQUEST;
                name = Some(method.clone());
                request_id = Some(rid.clone());
                payload = body;
            }
            Event::TwinResponse {
                request_id: rid,
                status,
                version,
                payload: body,
            } => {
                out.kind = tether_event_kind::TETHER_EVENT_TWIN_RESPONSE;
                request_id = Some(rid.clone());
                out.status = *status;
                out.version = version.unwrap_or(0);
                payload = body;
            }
            Event::DesiredPatch {
                version,
                payload: body,
            } => {
                out.kind = tether_event_kind::TETHER_EVENT_DESIRED_PATCH;
                out.version = *version;
                payload = body;
            }
            Event::SubscriptionRefused { filter } => {
                out.kind = tether_event_kind::TETHER_EVENT_SUBSCRIPTION_REFUSED;
                name = Some(filter.clone());
            }
            Event::Disconnected(why) => {
                out.kind = tether_event_kind::TETHER_EVENT_DISCONNECTED;
                out.will_retry = why.will_retry();
                if let Some(e) = why.error() {
                    out.error = e.code();
                    crate::ffi::error::set_last_error(e.clone());
                }
            }
            Event::Certificate(c) => {
                use crate::session::CertificateEvent as C;
                out.kind = tether_event_kind::TETHER_EVENT_CERTIFICATE;
                let kind = match c {
                    C::RenewalRequested { request_id: rid } => {
                        request_id = Some(rid.clone());
                        "renewal_requested"
                    }
                    C::Issued { not_after } => {
                        out.version = (*not_after).max(0) as u64;
                        "issued"
                    }
                    C::Swapped { not_after, .. } => {
                        out.version = (*not_after).max(0) as u64;
                        "swapped"
                    }
                    C::RolledBack { error } => {
                        out.error = error.code();
                        crate::ffi::error::set_last_error(error.clone());
                        "rolled_back"
                    }
                    C::RenewalFailed { error, will_retry } => {
                        out.error = error.code();
                        out.will_retry = *will_retry;
                        crate::ffi::error::set_last_error(error.clone());
                        "renewal_failed"
                    }
                };
                name = Some(kind.to_owned());
            }
            Event::Undecodable {
                topic,
                payload: body,
                reason,
            } => {
                out.kind = tether_event_kind::TETHER_EVENT_UNDECODABLE;
                name = Some(topic.clone());
                payload = body;
                out.error = reason.code();
                crate::ffi::error::set_last_error(reason.clone());
            }
        }
        if !payload.is_empty() {
            out.payload = payload.as_ptr();
            out.payload_len = payload.len();
        }
        if let Some(name) = name {
            self.strings.push(c_string(&name));
            out.name = self.strings.last().expect("just pushed").as_ptr();
        }
        if let Some(rid) = request_id {
            self.strings.push(c_string(&rid));
            out.request_id = self.strings.last().expect("just pushed").as_ptr();
        }
    }

    /// Property `index` of the stored C2D event, as pointers into the slot.
    pub(crate) fn property(&self, index: usize) -> Result<(*const c_char, *const c_char)> {
        let (k, v) = self.properties.get(index).ok_or_else(|| {
            Error::new(
                Code::NotFound,
                format!(
                    "property {index} does not exist (the event has {})",
                    self.properties.len()
                ),
            )
        })?;
        Ok((
            k.as_ptr(),
            v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
        ))
    }
}

/// Telemetry properties from parallel C arrays of keys and values (a NULL value is a bare
/// key).
///
/// # Safety
/// `keys` and `values` are NULL or valid for `count` pointers, each NULL or NUL-terminated.
pub(crate) unsafe fn properties_arg(
    keys: *const *const c_char,
    values: *const *const c_char,
    count: usize,
) -> Result<PropertyBag> {
    let mut bag = PropertyBag::new();
    if count == 0 {
        return Ok(bag);
    }
    // SAFETY: both arrays hold `count` pointers per the contract.
    let keys = unsafe { crate::ffi::array_arg(keys, count, "keys") }?;
    let values = unsafe { crate::ffi::array_arg(values, count, "values") }?;
    for (key, value) in keys.iter().zip(values) {
        // SAFETY: NUL-terminated (values: or NULL) per the contract.
        let key = unsafe { text_arg(*key, "keys[i]") }?;
        let value = unsafe { crate::ffi::topics::opt_text_arg(*value, "values[i]") }?;
        bag.try_append(key, value)?;
    }
    Ok(bag)
}
