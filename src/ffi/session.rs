//! The sans-IO session for C: `tether_session`, for firmware with its own TCP stack.
//!
//! The firmware owns the socket and the clock. Its loop: open TCP, call
//! `tether_session_connect`; send what `tether_session_poll_output` gives; feed what arrives
//! to `tether_session_handle_input`; call `tether_session_handle_timeout` when
//! `tether_session_next_deadline` passes; take events with `tether_session_poll_event`; on a
//! DISCONNECTED event, flush the output, close the socket and (if `will_retry`) open a new
//! one and call `tether_session_connect` again.

use std::ffi::c_char;

use crate::error::{Code, Error};
use crate::ffi::client::{options_arg, session_config, subscriptions_arg, tether_client_options};
use crate::ffi::event::{properties_arg, tether_event, EventSlot};
use crate::ffi::handles::{free_handle, handle_mut, handle_ref, into_handle};
use crate::ffi::panic::{guard, guard_value};
use crate::ffi::tls_config::tether_tls_config;
use crate::ffi::{bytes_arg, opt_out_arg, out_arg, out_buf_arg, take_output, text_arg};
use crate::session::Session;

/// A device session without I/O: TLS (IoT Hub policy) and IoT Hub MQTT in one state
/// machine, driven by the caller's socket and clock. Times are Unix milliseconds from the
/// caller. Not thread-safe: use from one thread at a time.
pub struct tether_session {
    session: Session,
    output: Vec<u8>,
    event: EventSlot,
}

impl tether_session {
    /// Creates a session for the device in `connection_string` (see `tether_client_new`;
    /// `options->port` is not used: the caller opens the connection; `options->transport`
    /// `TETHER_TRANSPORT_WEBSOCKETS` makes the session speak MQTT over WebSockets inside TLS,
    /// for a connection opened to port 443, and `TETHER_TRANSPORT_AUTO` is refused with
    /// `TETHER_RESULT_INVALID_ARGUMENT`). `tls` NULL means the
    /// IoT Hub defaults. `*session_out` receives a session owned by the caller (free it with
    /// `tether_session_free`); not written on failure. Results as `tether_client_new`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_new(
        connection_string: *const c_char,
        tls: *const tether_tls_config,
        options: *const tether_client_options,
        session_out: *mut *mut tether_session,
    ) -> Code {
        guard(|| {
            // SAFETY: arguments per the contract above.
            let text = unsafe { text_arg(connection_string, "connection_string") }?;
            let out = unsafe { out_arg(session_out, "session_out") }?;
            let options = unsafe { options_arg(options) }?;
            if options.transport == crate::ffi::client::TETHER_TRANSPORT_AUTO {
                return Err(crate::Error::new(
                    Code::InvalidArgument,
                    "TETHER_TRANSPORT_AUTO needs the blocking client: a session speaks the \
                     transport of the connection its caller opened (MQTT or WEBSOCKETS)",
                ));
            }
            let session = unsafe { session_config(text, tls, &options) }?;
            *out = into_handle(tether_session {
                session: Session::new(session)?,
                output: Vec::new(),
                event: EventSlot::default(),
            });
            Ok(())
        })
    }

    /// Frees a session. NULL is a no-op. Close the socket yourself.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_free(session: *mut tether_session) {
        guard_value((), || {
            // SAFETY: NULL or a live session.
            unsafe { free_handle(session) };
            Ok(())
        })
    }

    /// Starts a connection over a TCP connection the caller has just opened to the hub:
    /// queues the TLS handshake and MQTT CONNECT (with a fresh SAS token valid from `now_ms`).
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_INVALID_STATE` (already connected), `TETHER_RESULT_CLOCK_NOT_SET`,
    /// `TETHER_RESULT_TOKEN_EXPIRED`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_connect(
        session: *mut tether_session,
        now_ms: u64,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live session.
            unsafe { handle_mut(session, "session") }?
                .session
                .connect(now_ms)
        })
    }

    /// Feeds `len` bytes received from the socket. A protocol or TLS failure returns its
    /// result and also produces a DISCONNECTED event; then close the socket.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_handle_input(
        session: *mut tether_session,
        data: *const u8,
        len: usize,
        now_ms: u64,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live session; `data` valid for `len` bytes.
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
    pub unsafe extern "C" fn tether_session_poll_output(
        session: *mut tether_session,
        buf: *mut u8,
        cap: usize,
        out_len: *mut usize,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live session; `buf` valid for `cap` bytes.
            let s = unsafe { handle_mut(session, "session") }?;
            let out_len = unsafe { out_arg(out_len, "out_len") }?;
            unsafe { out_buf_arg(buf, cap, "buf") }?;
            s.session.poll_output(&mut s.output);
            // SAFETY: `buf` checked above.
            *out_len = unsafe { take_output(&mut s.output, buf, cap) };
            Ok(())
        })
    }

    /// Fires due timers (keep-alive ping, ping and CONNACK timeouts, SAS renewal).
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_handle_timeout(
        session: *mut tether_session,
        now_ms: u64,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live session.
            unsafe { handle_mut(session, "session") }?
                .session
                .handle_timeout(now_ms);
            Ok(())
        })
    }

    /// Writes when `tether_session_handle_timeout` should next be called (Unix ms) to
    /// `*deadline_ms`. Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NOT_FOUND` (no timer: not
    /// connected), `TETHER_RESULT_NULL_ARGUMENT`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_next_deadline(
        session: *const tether_session,
        deadline_ms: *mut u64,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live session; out pointer NULL or writable.
            let s = unsafe { handle_ref(session, "session") }?;
            let out = unsafe { out_arg(deadline_ms, "deadline_ms") }?;
            *out = s
                .session
                .next_deadline()
                .ok_or_else(|| Error::new(Code::NotFound, "no timer is running"))?;
            Ok(())
        })
    }

    /// Tells the session the socket failed or was closed by the peer. Unacknowledged QoS 1
    /// messages stay queued for the next connection.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_connection_lost(session: *mut tether_session) -> Code {
        guard(|| {
            // SAFETY: NULL or a live session.
            unsafe { handle_mut(session, "session") }?
                .session
                .connection_lost(Error::new(
                    Code::ConnectionClosed,
                    "the connection was lost",
                ));
            Ok(())
        })
    }

    /// Writes the next event to `*event_out` (`TETHER_EVENT_NONE` when there is none). The
    /// event's pointers stay valid until the next call or `tether_session_free`. A received
    /// QoS 1 message is acknowledged to the hub by this call (at-least-once): send the
    /// session's output afterwards.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_poll_event(
        session: *mut tether_session,
        event_out: *mut tether_event,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live session; out pointer NULL or writable.
            let s = unsafe { handle_mut(session, "session") }?;
            let out = unsafe { out_arg(event_out, "event_out") }?;
            let event = s.session.poll_event();
            s.event.store(event, out);
            Ok(())
        })
    }

    /// Reads property `index` of the last C2D event; see `tether_client_event_property`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_event_property(
        session: *const tether_session,
        index: usize,
        key: *mut *const c_char,
        value: *mut *const c_char,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live session; out pointers NULL or writable.
            let s = unsafe { handle_ref(session, "session") }?;
            let key = unsafe { out_arg(key, "key") }?;
            let value = unsafe { out_arg(value, "value") }?;
            (*key, *value) = s.event.property(index)?;
            Ok(())
        })
    }

    /// Sends telemetry; arguments and results as `tether_client_send_telemetry`. QoS 1
    /// messages are queued while disconnected. While more than 1 MiB of output waits to be
    /// taken with `tether_session_poll_output`, new messages are refused with
    /// `TETHER_RESULT_QUEUE_FULL` (back-pressure).
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_send_telemetry(
        session: *mut tether_session,
        payload: *const u8,
        payload_len: usize,
        keys: *const *const c_char,
        values: *const *const c_char,
        property_count: usize,
        qos: u8,
        now_ms: u64,
        message_id_out: *mut u64,
    ) -> Code {
        guard(|| {
            // SAFETY: arguments per `tether_client_send_telemetry`.
            let s = unsafe { handle_mut(session, "session") }?;
            let payload = unsafe { bytes_arg(payload, payload_len, "payload") }?;
            let bag = unsafe { properties_arg(keys, values, property_count) }?;
            let id_out = unsafe { opt_out_arg(message_id_out, "message_id_out") }?;
            let id = s.session.send_telemetry(payload, &bag, qos, now_ms)?;
            if let Some(out) = id_out {
                *out = id;
            }
            Ok(())
        })
    }

    /// Subscribes to `TETHER_SUBSCRIBE_*` bits, now if connected and on every connection.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_subscribe(
        session: *mut tether_session,
        subscriptions: u32,
        now_ms: u64,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live session.
            let s = unsafe { handle_mut(session, "session") }?;
            for sub in subscriptions_arg(subscriptions)? {
                s.session.subscribe(sub, now_ms)?;
            }
            Ok(())
        })
    }

    /// Answers a direct-method request; see `tether_client_respond_method`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_respond_method(
        session: *mut tether_session,
        request_id: *const c_char,
        status: u16,
        json: *const u8,
        json_len: usize,
        now_ms: u64,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live session; text and buffer per the contract.
            let s = unsafe { handle_mut(session, "session") }?;
            let rid = unsafe { text_arg(request_id, "request_id") }?;
            let json = unsafe { bytes_arg(json, json_len, "json") }?;
            s.session.respond_method(rid, status, json, now_ms)
        })
    }

    /// Starts a graceful disconnection (MQTT DISCONNECT, TLS close_notify): send the output,
    /// then close the socket.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_disconnect(
        session: *mut tether_session,
        now_ms: u64,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live session.
            unsafe { handle_mut(session, "session") }?
                .session
                .disconnect(now_ms);
            Ok(())
        })
    }
}
