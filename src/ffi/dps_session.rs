//! DPS registration without I/O for C: `tether_dps_session`, for firmware with its own TCP
//! stack (the C face of `provisioning/session.rs`, whose blocking driver is
//! `tether_dps_provision`).
//!
//! The firmware owns the socket and the clock. Its loop: open TCP to the DPS endpoint (port
//! 8883), call `tether_dps_session_start`; send what `tether_dps_session_poll_output` gives;
//! feed what arrives to `tether_dps_session_handle_input`; call
//! `tether_dps_session_handle_timeout` when `tether_dps_session_next_deadline` passes; when
//! the socket reports end of stream or an error, call `tether_dps_session_connection_lost`.
//! After each call, check `tether_dps_session_status`: once it is not
//! `TETHER_DPS_STATUS_IN_PROGRESS`, send the output once more, close the socket and read
//! the outcome with `tether_dps_session_result`.

use std::ffi::c_char;

use crate::error::{Code, Error};
use crate::ffi::dps::{assignment_out, dps_request, dps_text_args};
use crate::ffi::handles::{free_handle, handle_mut, handle_ref, into_handle};
use crate::ffi::panic::{guard, guard_value};
use crate::ffi::tls_config::tether_tls_config;
use crate::ffi::{bytes_arg, out_arg, out_buf_arg, take_output};
use crate::provisioning::{DpsSession, DpsStatus};

/// The registration is not started, or under way.
pub const TETHER_DPS_STATUS_IN_PROGRESS: u32 = 0;
/// DPS assigned the device: `tether_dps_session_result` gives the hub and device id.
pub const TETHER_DPS_STATUS_ASSIGNED: u32 = 1;
/// The registration failed: `tether_dps_session_result` returns why.
pub const TETHER_DPS_STATUS_FAILED: u32 = 2;

/// A DPS registration without I/O: TLS (IoT Hub policy) and the DPS MQTT flow in one state
/// machine on the same link as `tether_session`, driven by the caller's socket and clock.
/// Under the hood a boxed `provisioning::DpsSession` with its output buffer; created by
/// `tether_dps_session_new`, owned by the caller, freed with `tether_dps_session_free`.
/// Times are Unix milliseconds from the caller. Not thread-safe: use from one thread at a
/// time.
pub struct tether_dps_session {
    pub(crate) session: DpsSession,
    output: Vec<u8>,
    /// The key of the CSR, when DPS issues the certificate (`src/ffi/certs.rs`).
    pub(crate) key: Option<crate::auth::csr::DeviceKey>,
}

impl tether_dps_session {
    /// Creates a registration (not started).
    ///
    /// - `endpoint`: the DPS host the socket connects to (SNI and verification), NULL for
    ///   `global.azure-devices-provisioning.net`.
    /// - `id_scope`, `registration_id`: the enrollment's scope and registration id.
    /// - `device_key_base64`: the individual enrollment's key, or for a group enrollment the
    ///   device key derived with `tether_dps_derive_key` (and `group_enrollment` true); NULL
    ///   to authenticate with the client certificate in `tls` (X.509). Never echoed.
    /// - `tls`: NULL for the IoT Hub defaults; not taken over (free it yourself).
    /// - `timeout_ms`: the whole registration must finish within this of
    ///   `tether_dps_session_start`; not 0.
    /// - `session_out`: receives a registration owned by the caller; not written on failure.
    ///
    /// Results: `TETHER_RESULT_OK`; `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_INVALID_UTF8`, `TETHER_RESULT_INVALID_ARGUMENT` (`timeout_ms` 0, an
    /// endpoint that is not a host name, X.509 without a client certificate),
    /// `TETHER_RESULT_SAS_KEY_INVALID`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_dps_session_new(
        endpoint: *const c_char,
        id_scope: *const c_char,
        registration_id: *const c_char,
        device_key_base64: *const c_char,
        group_enrollment: bool,
        tls: *const tether_tls_config,
        timeout_ms: u32,
        session_out: *mut *mut tether_dps_session,
    ) -> Code {
        guard(|| {
            // SAFETY: arguments per the contract above.
            let (endpoint, id_scope, registration_id, key) =
                unsafe { dps_text_args(endpoint, id_scope, registration_id, device_key_base64) }?;
            let out = unsafe { out_arg(session_out, "session_out") }?;
            if timeout_ms == 0 {
                return Err(Error::new(
                    Code::InvalidArgument,
                    "timeout_ms must not be 0",
                ));
            }
            let request = unsafe {
                dps_request(
                    endpoint,
                    crate::defaults::PORT,
                    id_scope,
                    registration_id,
                    key,
                    group_enrollment,
                    tls,
                    timeout_ms,
                )
            }?;
            *out = into_handle(tether_dps_session {
                session: DpsSession::new(request)?,
                output: Vec::new(),
                key: None,
            });
            Ok(())
        })
    }

    /// Frees a registration. NULL is a no-op. Close the socket yourself.
    #[no_mangle]
    pub unsafe extern "C" fn tether_dps_session_free(session: *mut tether_dps_session) {
        guard_value((), || {
            // SAFETY: NULL or a live registration.
            unsafe { free_handle(session) };
            Ok(())
        })
    }

    /// Starts the registration over a TCP connection the caller has just opened to the
    /// endpoint: queues the TLS handshake and MQTT CONNECT (with a SAS token valid from
    /// `now_ms`). Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_INVALID_STATE` (already started), `TETHER_RESULT_CLOCK_NOT_SET`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_dps_session_start(
        session: *mut tether_dps_session,
        now_ms: u64,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live registration.
            unsafe { handle_mut(session, "session") }?
                .session
                .start(now_ms)
        })
    }

    /// Feeds `len` bytes received from the socket. A protocol or TLS failure returns its
    /// result (named as `tether_session_handle_input` names it) and ends the registration
    /// with it; then send the output and close the socket.
    #[no_mangle]
    pub unsafe extern "C" fn tether_dps_session_handle_input(
        session: *mut tether_dps_session,
        data: *const u8,
        len: usize,
        now_ms: u64,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live registration; `data` valid for `len` bytes.
            let s = unsafe { handle_mut(session, "session") }?;
            let data = unsafe { bytes_arg(data, len, "data") }?;
            s.session.handle_input(data, now_ms)
        })
    }

    /// Copies up to `cap` bytes that must be sent on the socket into `buf`, and their count
    /// into `*out_len` (0 when there is nothing to send). Bytes not copied stay queued, in
    /// order: call again until `*out_len` is 0. Results: `TETHER_RESULT_OK`,
    /// `TETHER_RESULT_NULL_ARGUMENT`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_dps_session_poll_output(
        session: *mut tether_dps_session,
        buf: *mut u8,
        cap: usize,
        out_len: *mut usize,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live registration; `buf` valid for `cap` bytes.
            let s = unsafe { handle_mut(session, "session") }?;
            let out_len = unsafe { out_arg(out_len, "out_len") }?;
            unsafe { out_buf_arg(buf, cap, "buf") }?;
            s.session.poll_output(&mut s.output);
            // SAFETY: `buf` checked above.
            *out_len = unsafe { take_output(&mut s.output, buf, cap) };
            Ok(())
        })
    }

    /// Fires due timers: the registration's deadline (`TETHER_RESULT_TIMEOUT` outcome) and
    /// the next poll after DPS's `retry-after`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_dps_session_handle_timeout(
        session: *mut tether_dps_session,
        now_ms: u64,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live registration.
            unsafe { handle_mut(session, "session") }?
                .session
                .handle_timeout(now_ms);
            Ok(())
        })
    }

    /// Writes when `tether_dps_session_handle_timeout` should next be called (Unix ms) to
    /// `*deadline_ms`. Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NOT_FOUND` (no timer: not
    /// started or finished), `TETHER_RESULT_NULL_ARGUMENT`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_dps_session_next_deadline(
        session: *const tether_dps_session,
        deadline_ms: *mut u64,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live registration; out pointer NULL or writable.
            let s = unsafe { handle_ref(session, "session") }?;
            let out = unsafe { out_arg(deadline_ms, "deadline_ms") }?;
            *out = s
                .session
                .next_deadline()
                .ok_or_else(|| Error::new(Code::NotFound, "no timer is running"))?;
            Ok(())
        })
    }

    /// Tells the registration the socket reached end of stream or failed: it ends, with a
    /// cause named from what the server sent so far when this happens during the TLS
    /// handshake (e.g. `TETHER_RESULT_CLIENT_CERT_REQUIRED`), else
    /// `TETHER_RESULT_CONNECTION_CLOSED`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_dps_session_connection_lost(
        session: *mut tether_dps_session,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live registration.
            unsafe { handle_mut(session, "session") }?
                .session
                .transport_closed();
            Ok(())
        })
    }

    /// Writes where the registration is to `*status_out`: `TETHER_DPS_STATUS_IN_PROGRESS`,
    /// `TETHER_DPS_STATUS_ASSIGNED` or `TETHER_DPS_STATUS_FAILED`. Results:
    /// `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_dps_session_status(
        session: *const tether_dps_session,
        status_out: *mut u32,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live registration; out pointer NULL or writable.
            let s = unsafe { handle_ref(session, "session") }?;
            let out = unsafe { out_arg(status_out, "status_out") }?;
            *out = match s.session.status() {
                DpsStatus::InProgress => TETHER_DPS_STATUS_IN_PROGRESS,
                DpsStatus::Assigned => TETHER_DPS_STATUS_ASSIGNED,
                DpsStatus::Failed => TETHER_DPS_STATUS_FAILED,
            };
            Ok(())
        })
    }

    /// The outcome of a finished registration.
    ///
    /// - Assigned: writes the IoT Hub host (`hub_out`) and the device id there
    ///   (`device_id_out`), NUL-terminated, with their lengths, and returns
    ///   `TETHER_RESULT_OK`. When either buffer is too small nothing is written, both
    ///   lengths receive what is needed (without the NUL; `TETHER_DPS_HUB_CAP` and
    ///   `TETHER_DPS_DEVICE_ID_CAP` always suffice) and the result is
    ///   `TETHER_RESULT_BUFFER_TOO_SMALL`.
    /// - Failed: returns the failure's result (e.g. `TETHER_RESULT_NOT_AUTHORIZED`,
    ///   `TETHER_RESULT_TIMEOUT`, a TLS result), its message readable with
    ///   `tether_last_error_message`; nothing is written.
    /// - In progress: `TETHER_RESULT_INVALID_STATE`; nothing is written.
    ///
    /// Argument results (`TETHER_RESULT_NULL_ARGUMENT`, overlapping outputs) come first.
    #[no_mangle]
    pub unsafe extern "C" fn tether_dps_session_result(
        session: *const tether_dps_session,
        hub_out: *mut c_char,
        hub_cap: usize,
        hub_len: *mut usize,
        device_id_out: *mut c_char,
        device_id_cap: usize,
        device_id_len: *mut usize,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live registration; outputs per the contract above.
            let s = unsafe { handle_ref(session, "session") }?;
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
            let assignment = match s.session.outcome() {
                None => {
                    return Err(Error::new(
                        Code::InvalidState,
                        "the registration has not finished",
                    ))
                }
                Some(Err(e)) => return Err(e.clone()),
                Some(Ok(a)) => a,
            };
            let (hub_needed, device_needed) =
                (assignment.assigned_hub.len(), assignment.device_id.len());
            if !hub.fits(hub_needed) || !device.fits(device_needed) {
                hub.report_needed(hub_needed);
                device.report_needed(device_needed);
                return Err(Error::new(
                    Code::BufferTooSmall,
                    format!(
                        "the outputs need {} and {} bytes including their NUL terminators",
                        hub_needed + 1,
                        device_needed + 1
                    ),
                ));
            }
            hub.write(&assignment.assigned_hub)?;
            device.write(&assignment.device_id)
        })
    }
}
