//! Device Provisioning Service for C: group-enrollment keys (`tether_dps_derive_key`), and
//! the MQTT names, topics and replies of provisioning.
//!
//! Connect to DPS with client id = registration id (`tether_dps_client_id`), the username
//! from `tether_dps_username`, subscribe to `$dps/registrations/res/#`, publish the body
//! from `tether_dps_register_payload` on `tether_dps_register_topic`, then poll with
//! `tether_dps_poll_topic` while replies say 202, waiting `retry_after_s`.

use std::ffi::c_char;

use crate::auth::dps::{derive_device_key_base64, DERIVED_KEY_BASE64_LEN};
use crate::auth::sas::SasKey;
use crate::ffi::panic::guard;
use crate::ffi::topics::{opt_text_arg, tether_span, topic_arg, write_built};
use crate::ffi::{bytes_arg, out_arg, text_arg, text_out, write_text, TextOut};
use crate::mqtt::dps;
use crate::Code;

/// Length of a derived key in base64 (without the NUL): 44.
pub const TETHER_DPS_DERIVED_KEY_LEN: usize = 44;

/// Derives a device's key for a DPS symmetric-key group enrollment:
/// `base64(HMAC-SHA256(base64decode(group_key), registration_id))`. Do this on the
/// production line, not on the device: the group key can make every device's key.
///
/// - `group_key_base64`: the enrollment group's key, standard base64. Never echoed.
/// - `registration_id`: 1 to 128 of `A-Za-z0-9-._:`.
/// - `out`, `out_cap`, `out_len`: receives the NUL-terminated base64 key (44 characters,
///   so 45 bytes are enough) and its length; when too small nothing is written and
///   `*out_len` is the length needed.
///
/// Does not allocate on success. Thread-safe.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_SAS_KEY_INVALID`, `TETHER_RESULT_ID_INVALID`,
/// `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_dps_derive_key(
    group_key_base64: *const c_char,
    registration_id: *const c_char,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: NULL or NUL-terminated per the contract above.
        let group_key = unsafe { text_arg(group_key_base64, "group_key_base64") }?;
        let registration_id = unsafe { text_arg(registration_id, "registration_id") }?;
        let key = SasKey::from_base64_named(group_key, "group_key_base64")?;
        let mut buf = zeroize::Zeroizing::new([0u8; DERIVED_KEY_BASE64_LEN]);
        let text = derive_device_key_base64(&key, registration_id, &mut buf)?;
        // SAFETY: buffer contract documented above.
        unsafe { write_text(text, out, out_cap, out_len) }
    })
}

/// A parsed DPS reply topic `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_dps_response {
    /// The status: 200 done (see the body), 202 in progress (poll), 429/5xx retry later.
    pub status: u16,
    /// The request id (span into the topic).
    pub request_id: tether_span,
    /// Whether `retry-after` was present.
    pub has_retry_after: bool,
    /// `retry-after` in seconds (0 when absent).
    pub retry_after_s: u32,
}

/// The fields of a DPS reply body (JSON) a device acts on, as spans into the body (the text
/// between the JSON quotes; absent fields have a NULL `ptr`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_dps_body {
    /// `operationId`: pass it to `tether_dps_poll_topic`.
    pub operation_id: tether_span,
    /// `status`: `assigning`, `assigned`, `failed`, `disabled` or `unassigned`.
    pub status: tether_span,
    /// `registrationState.assignedHub`: the IoT Hub host to connect to.
    pub assigned_hub: tether_span,
    /// `registrationState.deviceId`: the device id to use there.
    pub device_id: tether_span,
    /// `registrationState.errorMessage` or `message`.
    pub error_message: tether_span,
    /// Whether an error code was present.
    pub has_error_code: bool,
    /// `registrationState.errorCode` or `errorCode`.
    pub error_code: u64,
}

/// Writes the DPS client id (the registration id, validated).
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_ID_INVALID`, `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_dps_client_id(
    registration_id: *const c_char,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let reg = unsafe { text_arg(registration_id, "registration_id") }?;
        unsafe { write_built(out, cap, out_len, |s| dps::client_id_to(s, reg)) }
    })
}

/// Writes the DPS username
/// `{id_scope}/registrations/{registration_id}/api-version={v}[&ClientVersion={client_version}]`.
///
/// - `api_version`: NULL for `2019-03-31`. `client_version`: a user agent, or NULL.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_ID_INVALID`, `TETHER_RESULT_INVALID_ARGUMENT`,
/// `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_dps_username(
    id_scope: *const c_char,
    registration_id: *const c_char,
    api_version: *const c_char,
    client_version: *const c_char,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let scope = unsafe { text_arg(id_scope, "id_scope") }?;
        let reg = unsafe { text_arg(registration_id, "registration_id") }?;
        let api = unsafe { opt_text_arg(api_version, "api_version") }?;
        let client = unsafe { opt_text_arg(client_version, "client_version") }?;
        unsafe {
            write_built(out, cap, out_len, |s| {
                dps::username_to(s, scope, reg, api, client)
            })
        }
    })
}

/// Writes the register topic `$dps/registrations/PUT/iotdps-register/?$rid={request_id}`.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_INVALID_ARGUMENT`, `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_dps_register_topic(
    request_id: *const c_char,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let rid = unsafe { text_arg(request_id, "request_id") }?;
        unsafe { write_built(out, cap, out_len, |s| dps::register_topic_to(s, rid)) }
    })
}

/// Writes the operation-status topic
/// `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={request_id}&operationId={id}`.
///
/// - `operation_id`, `operation_id_len`: from `tether_dps_parse_body` (a span is accepted
///   as is).
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_INVALID_ARGUMENT`, `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_dps_poll_topic(
    request_id: *const c_char,
    operation_id: *const c_char,
    operation_id_len: usize,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let rid = unsafe { text_arg(request_id, "request_id") }?;
        let op = unsafe { topic_arg(operation_id, operation_id_len, "operation_id") }?;
        unsafe { write_built(out, cap, out_len, |s| dps::poll_topic_to(s, rid, op)) }
    })
}

/// Writes the register request body `{"registrationId":"{registration_id}"}`.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_ID_INVALID`, `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_dps_register_payload(
    registration_id: *const c_char,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let reg = unsafe { text_arg(registration_id, "registration_id") }?;
        unsafe { write_built(out, cap, out_len, |s| dps::register_payload_to(s, reg)) }
    })
}

/// Parses a DPS reply topic (parameters in any order).
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_TOPIC_INVALID`.
#[no_mangle]
pub unsafe extern "C" fn tether_dps_parse_response_topic(
    topic: *const c_char,
    topic_len: usize,
    out: *mut tether_dps_response,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let topic = unsafe { topic_arg(topic, topic_len, "topic") }?;
        let out = unsafe { out_arg(out, "out") }?;
        let r = dps::parse_response_topic(topic)?;
        *out = tether_dps_response {
            status: r.status,
            request_id: tether_span::of(r.request_id),
            has_retry_after: r.retry_after_s.is_some(),
            retry_after_s: r.retry_after_s.unwrap_or(0),
        };
        Ok(())
    })
}

/// Parses a DPS reply body (JSON, `body_len` bytes) into spans pointing into it. The whole
/// document is validated.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
/// `TETHER_RESULT_MQTT_MALFORMED` (not JSON, not UTF-8, nested deeper than 32).
#[no_mangle]
pub unsafe extern "C" fn tether_dps_parse_body(
    body: *const u8,
    body_len: usize,
    out: *mut tether_dps_body,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let body = unsafe { bytes_arg(body, body_len, "body") }?;
        let out = unsafe { out_arg(out, "out") }?;
        let b = dps::parse_response_body(body)?;
        *out = tether_dps_body {
            operation_id: tether_span::of_opt(b.operation_id),
            status: tether_span::of_opt(b.status),
            assigned_hub: tether_span::of_opt(b.assigned_hub),
            device_id: tether_span::of_opt(b.device_id),
            error_message: tether_span::of_opt(b.error_message),
            has_error_code: b.error_code.is_some(),
            error_code: b.error_code.unwrap_or(0),
        };
        Ok(())
    })
}

/// A buffer of this many bytes holds any assigned IoT Hub host name with its NUL.
pub const TETHER_DPS_HUB_CAP: usize = 254;
/// A buffer of this many bytes holds any device id with its NUL.
pub const TETHER_DPS_DEVICE_ID_CAP: usize = 129;

/// Registers the device with the Device Provisioning Service and writes the IoT Hub it was
/// assigned to (`hub_out`) and its device id there (`device_id_out`). Blocks the calling
/// thread for the whole flow: TLS under the IoT Hub policy, MQTT CONNECT, register, poll while
/// DPS answers 202 (waiting its retry-after), within `timeout_ms`. Uses the OS clock for the
/// SAS token.
///
/// - `endpoint`: the DPS host, NULL for `global.azure-devices-provisioning.net`; `port`
///   usually 8883 and `timeout_ms` 60000 (`port` and `dps_timeout_ms` of
///   `tether_defaults_get()`).
/// - `id_scope`, `registration_id`: the enrollment's scope and registration id.
/// - `device_key_base64`: the individual enrollment's key, or for a group enrollment the
///   device key derived with `tether_dps_derive_key` (and `group_enrollment` true); NULL to
///   authenticate with the client certificate in `tls` (X.509).
/// - `tls`: NULL for the IoT Hub defaults.
/// - the transport and proxy come from the environment: `TETHER_TRANSPORT` (`mqtt`, the
///   default, on `port`; `websockets` on 443; `auto`), and `TETHER_PROXY`, `HTTPS_PROXY`,
///   `https_proxy` (HTTP CONNECT; `NO_PROXY` lists hosts reached directly).
/// - outputs: NUL-terminated; `hub_cap` must be at least `TETHER_DPS_HUB_CAP` (254, any
///   host name) and `device_id_cap` at least `TETHER_DPS_DEVICE_ID_CAP` (129, any device
///   id). Every argument, these capacities included, is checked before anything is sent:
///   a smaller buffer gives `TETHER_RESULT_BUFFER_TOO_SMALL` with both lengths set to those
///   sizes minus the NUL, and the device is not registered.
///
/// Results: `TETHER_RESULT_OK`; argument results; `TETHER_RESULT_SAS_KEY_INVALID`,
/// `TETHER_RESULT_ID_INVALID` (also for a DPS reply whose `assignedHub` is not a host name or
/// whose `deviceId` is not a device id a connection string can carry, e.g. one holding
/// `;GatewayHostName=...`); `TETHER_RESULT_NOT_AUTHORIZED` (DPS refused the credentials or
/// the registration: the message gives DPS's status and text); `TETHER_RESULT_TIMEOUT`; TLS
/// (100-199) and network (400-499, proxy and WebSocket refusals included) results.
#[no_mangle]
pub unsafe extern "C" fn tether_dps_provision(
    endpoint: *const c_char,
    port: u16,
    id_scope: *const c_char,
    registration_id: *const c_char,
    device_key_base64: *const c_char,
    group_enrollment: bool,
    tls: *const crate::ffi::tls_config::tether_tls_config,
    timeout_ms: u32,
    hub_out: *mut c_char,
    hub_cap: usize,
    hub_len: *mut usize,
    device_id_out: *mut c_char,
    device_id_cap: usize,
    device_id_len: *mut usize,
) -> Code {
    guard(|| {
        use crate::provisioning::provision;
        // SAFETY: arguments per the contract above.
        let (endpoint, id_scope, registration_id, key) =
            unsafe { dps_text_args(endpoint, id_scope, registration_id, device_key_base64) }?;
        let (hub, device) = unsafe {
            assignment_out(
                hub_out,
                hub_cap,
                hub_len,
                device_id_out,
                device_id_cap,
                device_id_len,
            )
        }?;
        if port == 0 || timeout_ms == 0 {
            return Err(crate::Error::new(
                Code::InvalidArgument,
                "port and timeout_ms must not be 0",
            ));
        }
        if !hub.fits(TETHER_DPS_HUB_CAP - 1) || !device.fits(TETHER_DPS_DEVICE_ID_CAP - 1) {
            // Refused before registering: nothing written, both sizes reported.
            hub.report_needed(TETHER_DPS_HUB_CAP - 1);
            device.report_needed(TETHER_DPS_DEVICE_ID_CAP - 1);
            return Err(crate::Error::new(
                Code::BufferTooSmall,
                format!(
                    "the outputs need TETHER_DPS_HUB_CAP ({TETHER_DPS_HUB_CAP}) and \
                     TETHER_DPS_DEVICE_ID_CAP ({TETHER_DPS_DEVICE_ID_CAP}) bytes"
                ),
            ));
        }
        // SAFETY: `tls` per the contract above.
        let request = unsafe {
            dps_request(
                endpoint,
                port,
                id_scope,
                registration_id,
                key,
                group_enrollment,
                tls,
                timeout_ms,
            )
        }?;
        let assignment = provision(&request, crate::client::system_now_ms() / 1000)?;
        hub.write(&assignment.assigned_hub)?;
        device.write(&assignment.device_id)
    })
}

/// Checks the two outputs of an assignment (`hub_out`, `device_id_out`) before any side
/// effect.
///
/// # Safety
/// Each buffer is NULL or valid for its capacity; each length pointer NULL or writable.
pub(crate) unsafe fn assignment_out<'a>(
    hub_out: *mut c_char,
    hub_cap: usize,
    hub_len: *mut usize,
    device_id_out: *mut c_char,
    device_id_cap: usize,
    device_id_len: *mut usize,
) -> crate::Result<(TextOut<'a>, TextOut<'a>)> {
    // SAFETY: forwarded contract.
    let hub = unsafe { text_out(hub_out, hub_cap, hub_len, "hub_out", "hub_len") }?;
    let device = unsafe {
        text_out(
            device_id_out,
            device_id_cap,
            device_id_len,
            "device_id_out",
            "device_id_len",
        )
    }?;
    Ok((hub, device))
}

/// The text arguments every DPS entry point takes, checked in this order (NULL, UTF-8):
/// `endpoint` (NULL: the global endpoint), `id_scope`, `registration_id` and the optional
/// `device_key_base64`. Shared by `tether_dps_provision`, `tether_dps_provision_with_csr`
/// and `tether_dps_session_new`.
///
/// # Safety
/// Each pointer is NULL or a NUL-terminated string that outlives the returned slices.
pub(crate) unsafe fn dps_text_args<'a>(
    endpoint: *const c_char,
    id_scope: *const c_char,
    registration_id: *const c_char,
    device_key_base64: *const c_char,
) -> crate::Result<(&'a str, &'a str, &'a str, Option<&'a str>)> {
    // SAFETY: forwarded contract.
    unsafe {
        Ok((
            opt_text_arg(endpoint, "endpoint")?.unwrap_or(dps::GLOBAL_ENDPOINT),
            text_arg(id_scope, "id_scope")?,
            text_arg(registration_id, "registration_id")?,
            opt_text_arg(device_key_base64, "device_key_base64")?,
        ))
    }
}

/// The registration the C arguments describe (shared by `tether_dps_provision` and
/// `tether_dps_session_new`); the text arguments are already checked.
///
/// # Safety
/// `tls` is NULL or a live `tether_tls_config`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn dps_request(
    endpoint: &str,
    port: u16,
    id_scope: &str,
    registration_id: &str,
    device_key_base64: Option<&str>,
    group_enrollment: bool,
    tls: *const crate::ffi::tls_config::tether_tls_config,
    timeout_ms: u32,
) -> crate::Result<crate::provisioning::DpsRequest> {
    use crate::provisioning::{DpsCredential, DpsRequest};
    // SAFETY: forwarded contract.
    let (config, has_client_cert, _) = unsafe { crate::ffi::tls_config::tls_or_default(tls) }?;
    let credential = match device_key_base64 {
        Some(key) => DpsCredential::SymmetricKey {
            key: Box::new(SasKey::from_base64(key)?),
            group: group_enrollment,
        },
        None => DpsCredential::X509,
    };
    Ok(DpsRequest {
        endpoint: endpoint.to_owned(),
        port,
        id_scope: id_scope.to_owned(),
        registration_id: registration_id.to_owned(),
        credential,
        tls: config,
        has_client_cert,
        timeout: std::time::Duration::from_millis(timeout_ms.into()),
        transport: crate::transport::Transport::from_env()?.unwrap_or_default(),
        websocket_port: crate::transport::WEBSOCKET_PORT,
        proxy: crate::transport::proxy::Proxy::from_env(endpoint)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn derives_the_published_vector() {
        assert_eq!(TETHER_DPS_DERIVED_KEY_LEN, DERIVED_KEY_BASE64_LEN);
        let mut buf = [0 as c_char; 45];
        let mut len = 0;
        let code = unsafe {
            tether_dps_derive_key(
                c"8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==".as_ptr(),
                c"sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6".as_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        };
        assert_eq!(code, Code::Ok);
        assert_eq!(
            unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(),
            "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
        );
        let code = unsafe {
            tether_dps_derive_key(
                c"AAAA".as_ptr(),
                c"a b".as_ptr(),
                buf.as_mut_ptr(),
                45,
                &mut len,
            )
        };
        assert_eq!(code, Code::IdInvalid);
    }
}
