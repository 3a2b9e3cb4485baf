//! IoT Hub names and topics for C: client ids, usernames, telemetry, cloud-to-device,
//! twin and direct-method topics, request ids.
//!
//! Builders write a NUL-terminated string into a caller buffer and never allocate; when the
//! buffer is too small they return `TETHER_RESULT_BUFFER_TOO_SMALL`, write nothing and set
//! `*out_len` to the length needed (without the NUL), like every text output of the library.
//! Parsers take a received topic as pointer + length (MQTT topics are not NUL-terminated)
//! and fill a struct of `tether_span`s that point into that topic: they stay valid as long
//! as the caller's topic buffer does.

use std::ffi::c_char;

use crate::error::{Code, Error, Result};
use crate::ffi::panic::guard;
use crate::ffi::{bytes_arg, out_arg, out_buf_arg, text_arg};
use crate::mqtt::properties::{Count, Sink, SliceSink};
use crate::mqtt::topics::{self, TwinTopic, UsernameOptions};

/// A borrowed piece of text: `len` bytes at `ptr`, not NUL-terminated. `ptr` is NULL (and
/// `len` 0) when the piece is absent. Spans returned by parsers point into the caller's
/// input and are valid while it is.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_span {
    /// The first byte, or NULL when absent.
    pub ptr: *const c_char,
    /// The length in bytes.
    pub len: usize,
}

impl tether_span {
    pub(crate) const NONE: tether_span = tether_span {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub(crate) fn of(s: &str) -> Self {
        tether_span {
            ptr: s.as_ptr().cast(),
            len: s.len(),
        }
    }

    pub(crate) fn of_opt(s: Option<&str>) -> Self {
        s.map_or(Self::NONE, Self::of)
    }
}

/// A received twin topic is a response to a GET or reported-properties PATCH.
pub const TETHER_TWIN_TOPIC_RESPONSE: u32 = 1;
/// A received twin topic is a desired-properties update.
pub const TETHER_TWIN_TOPIC_DESIRED: u32 = 2;

/// A parsed cloud-to-device topic (`devices/{d}/messages/devicebound/{bag}`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_c2d_topic {
    /// The device id.
    pub device_id: tether_span,
    /// The encoded property bag (validated; may be empty): iterate it with
    /// `tether_property_iter_init`.
    pub properties: tether_span,
}

/// A parsed twin topic.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_twin_topic {
    /// `TETHER_TWIN_TOPIC_RESPONSE` or `TETHER_TWIN_TOPIC_DESIRED`.
    pub kind: u32,
    /// Responses: the status (200 GET, 204 PATCH accepted, 4xx/5xx errors); 0 for desired.
    pub status: u16,
    /// Responses: `$rid`; absent (NULL) for desired updates.
    pub request_id: tether_span,
    /// `$version`; always present for desired updates, optional for responses.
    pub version: tether_span,
}

/// A parsed direct-method request topic (`$iothub/methods/POST/{name}/?$rid={rid}`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_method_request {
    /// The method name.
    pub name: tether_span,
    /// The request id to pass to `tether_method_response_topic`.
    pub request_id: tether_span,
}

/// Builds into a caller buffer: a counting pass, then the write. Same contract as
/// `write_text` (NUL-terminated, nothing written when too small, `*out_len` = length needed),
/// without allocating.
///
/// # Safety
/// `out` is NULL or valid for `cap` bytes; `out_len` is NULL or valid for a write.
pub(crate) unsafe fn write_built(
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
    build: impl Fn(&mut dyn Sink) -> Result<()>,
) -> Result<()> {
    // SAFETY: forwarded contract.
    let out_len = unsafe { out_arg(out_len, "out_len") }?;
    unsafe { out_buf_arg(out.cast(), cap, "out") }?;
    let mut count = Count::default();
    build(&mut count)?;
    let needed = count.0;
    if needed >= cap {
        *out_len = needed;
        return Err(Error::new(
            Code::BufferTooSmall,
            format!(
                "output needs {} bytes including its NUL terminator; the buffer holds {cap}",
                needed + 1
            ),
        ));
    }
    // SAFETY: `out` is valid for `cap > needed` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(out.cast::<u8>(), cap) };
    let mut sink = SliceSink::new(&mut buf[..needed]);
    build(&mut sink)?;
    debug_assert_eq!(sink.len(), needed);
    buf[needed] = 0;
    *out_len = needed;
    Ok(())
}

/// Borrows an optional NUL-terminated UTF-8 argument (NULL = absent).
///
/// # Safety
/// As `text_arg`.
pub(crate) unsafe fn opt_text_arg<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded.
        unsafe { text_arg(ptr, name) }.map(Some)
    }
}

/// Borrows a received topic (pointer + length, UTF-8).
///
/// # Safety
/// `ptr` is valid for `len` bytes.
pub(crate) unsafe fn topic_arg<'a>(ptr: *const c_char, len: usize, name: &str) -> Result<&'a str> {
    // SAFETY: forwarded.
    let bytes = unsafe { bytes_arg(ptr.cast(), len, name) }?;
    std::str::from_utf8(bytes).map_err(|e| {
        Error::new(
            Code::InvalidUtf8,
            format!(
                "`{name}` is not valid UTF-8 (bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Writes the MQTT client id `{device_id}` or `{device_id}/{module_id}`.
///
/// - `device_id`: NUL-terminated; 1 to 128 characters IoT Hub allows. Not NULL.
/// - `module_id`: NUL-terminated, or NULL for a device connection.
/// - `out`, `cap`, `out_len`: the output buffer, its capacity, and the length written
///   (without the NUL) or needed.
///
/// No allocation. Thread-safe.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_ID_INVALID`, `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_mqtt_client_id(
    device_id: *const c_char,
    module_id: *const c_char,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: NUL-terminated strings or NULL, per the contract.
        let device = unsafe { text_arg(device_id, "device_id") }?;
        let module = unsafe { opt_text_arg(module_id, "module_id") }?;
        unsafe {
            write_built(out, cap, out_len, |s| {
                topics::client_id_to(s, device, module)
            })
        }
    })
}

/// Writes the MQTT CONNECT username:
/// `{host}/{device_id}[/{module_id}]/?api-version={v}[&DeviceClientType={enc}][&model-id={enc}]`.
///
/// - `host`: the hub host name, e.g. `myhub.azure-devices.net`. Not NULL.
/// - `device_id`: not NULL. `module_id`: NULL for a device connection.
/// - `api_version`: NULL for the default `2021-04-12`.
/// - `client_type`: the `DeviceClientType` user agent (percent-encoded here), or NULL.
/// - `model_id`: the IoT Plug and Play model id (percent-encoded here), or NULL.
/// - `out`, `cap`, `out_len`: as for every text output.
///
/// No allocation. Thread-safe.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_ID_INVALID` (ids, host), `TETHER_RESULT_INVALID_ARGUMENT` (api-version, empty
/// option), `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_mqtt_username(
    host: *const c_char,
    device_id: *const c_char,
    module_id: *const c_char,
    api_version: *const c_char,
    client_type: *const c_char,
    model_id: *const c_char,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: NUL-terminated strings or NULL, per the contract.
        let host = unsafe { text_arg(host, "host") }?;
        let device = unsafe { text_arg(device_id, "device_id") }?;
        let module = unsafe { opt_text_arg(module_id, "module_id") }?;
        let options = UsernameOptions {
            api_version: unsafe { opt_text_arg(api_version, "api_version") }?,
            client_type: unsafe { opt_text_arg(client_type, "client_type") }?,
            model_id: unsafe { opt_text_arg(model_id, "model_id") }?,
        };
        unsafe {
            write_built(out, cap, out_len, |s| {
                topics::username_to(s, host, device, module, &options)
            })
        }
    })
}

/// Writes a telemetry topic: `devices/{d}[/modules/{m}]/messages/events/{properties}`.
///
/// - `device_id`: not NULL. `module_id`: NULL for a device.
/// - `properties`, `properties_len`: an encoded property bag (build it with
///   `tether_property_bag_append`); NULL with length 0 for none. It is validated.
/// - `out`, `cap`, `out_len`: as for every text output.
///
/// No allocation. Thread-safe.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_ID_INVALID`, `TETHER_RESULT_PROPERTY_BAG_INVALID`,
/// `TETHER_RESULT_TOPIC_INVALID` (longer than 65535 bytes), `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_telemetry_topic(
    device_id: *const c_char,
    module_id: *const c_char,
    properties: *const c_char,
    properties_len: usize,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let device = unsafe { text_arg(device_id, "device_id") }?;
        let module = unsafe { opt_text_arg(module_id, "module_id") }?;
        let bag = unsafe { topic_arg(properties, properties_len, "properties") }?;
        unsafe {
            write_built(out, cap, out_len, |s| {
                topics::telemetry_topic_to(s, device, module, bag)
            })
        }
    })
}

/// Writes the cloud-to-device subscription filter `devices/{device_id}/messages/devicebound/#`.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_ID_INVALID`, `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_c2d_subscribe_topic(
    device_id: *const c_char,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let device = unsafe { text_arg(device_id, "device_id") }?;
        unsafe {
            write_built(out, cap, out_len, |s| {
                topics::c2d_subscribe_topic_to(s, device)
            })
        }
    })
}

/// Parses a received cloud-to-device topic `devices/{d}/messages/devicebound/{bag}`.
///
/// - `topic`, `topic_len`: the topic as received (not NUL-terminated). Not NULL.
/// - `out`: receives spans into `topic`; written only on success. Not NULL.
///
/// No allocation. Thread-safe.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_TOPIC_INVALID` (not a cloud-to-device topic),
/// `TETHER_RESULT_PROPERTY_BAG_INVALID`.
#[no_mangle]
pub unsafe extern "C" fn tether_c2d_parse_topic(
    topic: *const c_char,
    topic_len: usize,
    out: *mut tether_c2d_topic,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let topic = unsafe { topic_arg(topic, topic_len, "topic") }?;
        let out = unsafe { out_arg(out, "out") }?;
        let t = topics::parse_c2d_topic(topic)?;
        *out = tether_c2d_topic {
            device_id: tether_span::of(t.device_id),
            properties: tether_span::of(t.properties),
        };
        Ok(())
    })
}

/// Writes the twin GET topic `$iothub/twin/GET/?$rid={request_id}`.
///
/// - `request_id`: 1 to 128 characters from `A-Z a-z 0-9 - _ . ~` (see
///   `tether_request_id_next`). Not NULL.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_INVALID_ARGUMENT`, `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_twin_get_topic(
    request_id: *const c_char,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let rid = unsafe { text_arg(request_id, "request_id") }?;
        unsafe { write_built(out, cap, out_len, |s| topics::twin_get_topic_to(s, rid)) }
    })
}

/// Writes the twin reported-properties topic
/// `$iothub/twin/PATCH/properties/reported/?$rid={request_id}`.
///
/// Results: as `tether_twin_get_topic`.
#[no_mangle]
pub unsafe extern "C" fn tether_twin_patch_reported_topic(
    request_id: *const c_char,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let rid = unsafe { text_arg(request_id, "request_id") }?;
        unsafe {
            write_built(out, cap, out_len, |s| {
                topics::twin_patch_reported_topic_to(s, rid)
            })
        }
    })
}

/// Parses a received twin topic: a response `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]`
/// or a desired-properties update `$iothub/twin/PATCH/properties/desired/?$version={v}`.
///
/// - `topic`, `topic_len`: the topic as received. Not NULL.
/// - `out`: receives the kind, status and spans into `topic`; written only on success.
///
/// No allocation. Thread-safe.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_TOPIC_INVALID` (not a twin topic, or no `$rid`/`$version`).
#[no_mangle]
pub unsafe extern "C" fn tether_twin_parse_topic(
    topic: *const c_char,
    topic_len: usize,
    out: *mut tether_twin_topic,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let topic = unsafe { topic_arg(topic, topic_len, "topic") }?;
        let out = unsafe { out_arg(out, "out") }?;
        *out = match topics::parse_twin_topic(topic)? {
            TwinTopic::Response {
                status,
                request_id,
                version,
            } => tether_twin_topic {
                kind: TETHER_TWIN_TOPIC_RESPONSE,
                status,
                request_id: tether_span::of(request_id),
                version: tether_span::of_opt(version),
            },
            TwinTopic::Desired { version } => tether_twin_topic {
                kind: TETHER_TWIN_TOPIC_DESIRED,
                status: 0,
                request_id: tether_span::NONE,
                version: tether_span::of(version),
            },
        };
        Ok(())
    })
}

/// Parses a received direct-method request topic `$iothub/methods/POST/{name}/?$rid={rid}`.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_TOPIC_INVALID`.
#[no_mangle]
pub unsafe extern "C" fn tether_method_parse_request_topic(
    topic: *const c_char,
    topic_len: usize,
    out: *mut tether_method_request,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let topic = unsafe { topic_arg(topic, topic_len, "topic") }?;
        let out = unsafe { out_arg(out, "out") }?;
        let m = topics::parse_method_request_topic(topic)?;
        *out = tether_method_request {
            name: tether_span::of(m.name),
            request_id: tether_span::of(m.request_id),
        };
        Ok(())
    })
}

/// Writes a direct-method response topic `$iothub/methods/res/{status}/?$rid={request_id}`.
///
/// - `status`: the method's status code (0 to 65535).
/// - `request_id`, `request_id_len`: the request id from `tether_method_parse_request_topic`
///   (a span is accepted as is). Must not contain `&`, `#`, `+`, `/` or spaces.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_INVALID_ARGUMENT`, `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_method_response_topic(
    status: u16,
    request_id: *const c_char,
    request_id_len: usize,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let rid = unsafe { topic_arg(request_id, request_id_len, "request_id") }?;
        unsafe {
            write_built(out, cap, out_len, |s| {
                topics::method_response_topic_to(s, status, rid)
            })
        }
    })
}

/// Writes a new request id (`$rid`): a decimal number from a process-wide 64-bit counter,
/// so ids never repeat within the process. Thread-safe. A call that fails with
/// `TETHER_RESULT_BUFFER_TOO_SMALL` still uses up one id (ids need not be contiguous); 21
/// bytes always suffice.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_request_id_next(
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        let id = topics::REQUEST_IDS.next_value();
        // SAFETY: per the contract.
        unsafe {
            write_built(out, cap, out_len, |s| {
                topics::put_u64(s, id);
                Ok(())
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn text(buf: &[c_char]) -> &str {
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap()
    }

    fn span(s: tether_span) -> &'static str {
        let bytes = unsafe { std::slice::from_raw_parts(s.ptr.cast::<u8>(), s.len) };
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn username_into_a_buffer_and_size_query() {
        let mut len = 0usize;
        let r = unsafe {
            tether_mqtt_username(
                c"myiothub.azure-devices.net".as_ptr(),
                c"my_device".as_ptr(),
                c"my_module_id".as_ptr(),
                c"2020-09-30".as_ptr(),
                c"azrtos".as_ptr(),
                std::ptr::null(),
                std::ptr::null_mut(),
                0,
                &mut len,
            )
        };
        assert_eq!(r, Code::BufferTooSmall);
        let want = "myiothub.azure-devices.net/my_device/my_module_id/?api-version=2020-09-30&DeviceClientType=azrtos";
        assert_eq!(len, want.len());
        let mut buf = vec![0x55 as c_char; len];
        let r = unsafe {
            tether_mqtt_username(
                c"myiothub.azure-devices.net".as_ptr(),
                c"my_device".as_ptr(),
                c"my_module_id".as_ptr(),
                c"2020-09-30".as_ptr(),
                c"azrtos".as_ptr(),
                std::ptr::null(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        };
        assert_eq!(r, Code::BufferTooSmall, "no room for the NUL");
        assert!(
            buf.iter().all(|c| *c == 0x55),
            "nothing written when too small"
        );
        buf.push(0);
        let r = unsafe {
            tether_mqtt_username(
                c"myiothub.azure-devices.net".as_ptr(),
                c"my_device".as_ptr(),
                c"my_module_id".as_ptr(),
                c"2020-09-30".as_ptr(),
                c"azrtos".as_ptr(),
                std::ptr::null(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        };
        assert_eq!(r, Code::Ok);
        assert_eq!(text(&buf), want);
    }

    #[test]
    fn parsers_return_spans_into_the_callers_topic() {
        let topic = "$iothub/twin/res/204/?$rid=id_one&$version=16";
        let mut t = tether_twin_topic {
            kind: 0,
            status: 0,
            request_id: tether_span::NONE,
            version: tether_span::NONE,
        };
        let r = unsafe { tether_twin_parse_topic(topic.as_ptr().cast(), topic.len(), &mut t) };
        assert_eq!(r, Code::Ok);
        assert_eq!((t.kind, t.status), (TETHER_TWIN_TOPIC_RESPONSE, 204));
        assert_eq!(t.request_id.ptr, unsafe { topic.as_ptr().add(27) }.cast());
        assert_eq!(span(t.request_id), "id_one");
        assert_eq!(span(t.version), "16");
        let desired = "$iothub/twin/PATCH/properties/desired/?$version=id_one";
        let r = unsafe { tether_twin_parse_topic(desired.as_ptr().cast(), desired.len(), &mut t) };
        assert_eq!(r, Code::Ok);
        assert_eq!(t.kind, TETHER_TWIN_TOPIC_DESIRED);
        assert!(t.request_id.ptr.is_null());
        let m = "$iothub/methods/POST/TestMethod/?$rid=1";
        let mut mr = tether_method_request {
            name: tether_span::NONE,
            request_id: tether_span::NONE,
        };
        assert_eq!(
            unsafe { tether_method_parse_request_topic(m.as_ptr().cast(), m.len(), &mut mr) },
            Code::Ok
        );
        assert_eq!((span(mr.name), span(mr.request_id)), ("TestMethod", "1"));
        let mut buf = [0 as c_char; 64];
        let mut len = 0;
        let r = unsafe {
            tether_method_response_topic(
                200,
                mr.request_id.ptr,
                mr.request_id.len,
                buf.as_mut_ptr(),
                64,
                &mut len,
            )
        };
        assert_eq!(r, Code::Ok);
        assert_eq!(text(&buf), "$iothub/methods/res/200/?$rid=1");
    }

    #[test]
    fn bad_input_is_reported_not_panicked() {
        let bad = [0xffu8, b'a'];
        let mut c = tether_c2d_topic {
            device_id: tether_span::NONE,
            properties: tether_span::NONE,
        };
        assert_eq!(
            unsafe { tether_c2d_parse_topic(bad.as_ptr().cast(), 2, &mut c) },
            Code::InvalidUtf8
        );
        assert_eq!(
            unsafe { tether_c2d_parse_topic(std::ptr::null(), 3, &mut c) },
            Code::NullArgument
        );
        let t = "devices/d/messages/events/";
        assert_eq!(
            unsafe { tether_c2d_parse_topic(t.as_ptr().cast(), t.len(), &mut c) },
            Code::TopicInvalid
        );
        let mut len = 0;
        assert_eq!(
            unsafe {
                tether_mqtt_client_id(
                    c"a/b".as_ptr(),
                    std::ptr::null(),
                    std::ptr::null_mut(),
                    0,
                    &mut len,
                )
            },
            Code::IdInvalid
        );
    }

    #[test]
    fn request_ids_differ() {
        let mut a = [0 as c_char; 21];
        let mut b = [0 as c_char; 21];
        let mut len = 0;
        assert_eq!(
            unsafe { tether_request_id_next(a.as_mut_ptr(), 21, &mut len) },
            Code::Ok
        );
        assert_eq!(
            unsafe { tether_request_id_next(b.as_mut_ptr(), 21, &mut len) },
            Code::Ok
        );
        assert_ne!(text(&a), text(&b));
        assert!(text(&a).parse::<u64>().unwrap() > 0);
    }
}
