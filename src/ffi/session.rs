//! The sans-IO session for C: `tether_session`, for firmware with its own TCP stack.
//!
//! The firmware owns the socket and the clocks. Its loop: open TCP, call
//! `tether_session_connect`; send what `tether_session_poll_output` gives; feed what arrives
//! to `tether_session_handle_input`; call `tether_session_handle_timeout` when
//! `tether_session_next_deadline` passes; take events with `tether_session_poll_event`; on a
//! DISCONNECTED event, flush the output, close the socket and (if `will_retry`) open a new
//! one and call `tether_session_connect` again.
//!
//! Two clocks: every `now_ms` argument is monotonic milliseconds (any origin, such as boot;
//! it must never jump), which the timers run on. The wall clock (SAS tokens, certificate
//! validity) is the TLS configuration's (`tether_tls_config_builder_set_clock`, default the
//! OS clock), so setting the time by NTP neither stalls nor rushes the keep-alive.
//!
//! Many sessions on one thread (a gateway): `tether_session_output_pending` says whether a
//! session has bytes to send, `tether_session_poll_output` takes as much as the socket
//! accepts straight from the TLS layer (the rest stays queued, in order), and
//! `tether_session_poll_deadline` says when a session's next deadline changed, so a
//! timer wheel is updated only then.

use std::ffi::c_char;

use crate::error::{Code, Error};
use crate::ffi::client::subscriptions_arg;
use crate::ffi::event::{properties_arg, tether_event, EventSlot};
use crate::ffi::handles::{free_handle, handle_mut, handle_ref, into_handle};
use crate::ffi::panic::{guard, guard_value};
use crate::ffi::tls_config::{tether_tls_config, tls_or_default};
use crate::ffi::{bytes_arg, opt_in_arg, opt_out_arg, out_arg, out_buf_arg, text_arg};
use crate::session::{Session, SessionConfig, SessionOptions};
use crate::transport::Transport;

/// `tether_session_poll_deadline` writes this when the session has no deadline (no
/// connection).
pub const TETHER_NO_DEADLINE: u64 = u64::MAX;

/// Tunables of a `tether_session`. Start from `tether_session_options_default()` and change
/// what you need.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_session_options {
    /// MQTT keep-alive, seconds (at most 1177).
    pub keep_alive_secs: u16,
    /// Lifetime of the SAS tokens the session makes, seconds (at least 10). Tokens are
    /// renewed before they expire (a DISCONNECTED event with `will_retry`: reconnect).
    pub token_ttl_secs: u32,
    /// Most unacknowledged QoS 1 messages.
    pub max_inflight: u32,
    /// Time allowed for TLS + CONNACK after `tether_session_connect`, milliseconds (not 0).
    pub connect_timeout_ms: u32,
    /// Most bytes of output that may wait for `tether_session_poll_output` before new
    /// messages are refused with `TETHER_RESULT_QUEUE_FULL` (not 0).
    pub max_unsent_bytes: usize,
    /// `TETHER_TRANSPORT_MQTT` (default) or `TETHER_TRANSPORT_WEBSOCKETS` (the caller's
    /// connection goes to port 443; the session speaks MQTT over WebSockets inside TLS).
    /// `TETHER_TRANSPORT_AUTO` is refused: falling back needs the blocking client.
    pub transport: u8,
}

impl tether_session_options {
    fn apply(&self, options: &mut SessionOptions) -> Result<(), Error> {
        if self.connect_timeout_ms == 0 {
            return Err(Error::new(
                Code::InvalidArgument,
                "connect_timeout_ms is 0: every attempt would time out at once",
            ));
        }
        options.keep_alive_secs = self.keep_alive_secs;
        options.token_ttl_secs = u64::from(self.token_ttl_secs);
        options.max_inflight = self.max_inflight as usize;
        options.connect_timeout_ms = u64::from(self.connect_timeout_ms);
        options.max_unsent_bytes = self.max_unsent_bytes;
        options.websockets = match crate::ffi::client::transport_arg(self.transport)? {
            Transport::Mqtt => false,
            Transport::WebSockets => true,
            Transport::Auto => {
                return Err(Error::new(
                    Code::InvalidArgument,
                    "TETHER_TRANSPORT_AUTO needs the blocking client: a session speaks the \
                     transport of the connection its caller opened (MQTT or WEBSOCKETS)",
                ))
            }
        };
        Ok(())
    }
}

/// A device session without I/O: TLS (IoT Hub policy) and IoT Hub MQTT in one state
/// machine, driven by the caller's socket and monotonic clock. Not thread-safe: use from
/// one thread at a time.
pub struct tether_session {
    session: Session,
    event: EventSlot,
}

impl tether_session {
    /// Returns the default session options, the ones the Rust `SessionOptions::default()`
    /// has (keep-alive 60 s, token lifetime 3600 s, 128 messages in flight, 30 s for TLS +
    /// CONNACK, 1 MiB of unsent output).
    #[no_mangle]
    pub extern "C" fn tether_session_options_default() -> tether_session_options {
        let d = SessionOptions::default();
        tether_session_options {
            keep_alive_secs: d.keep_alive_secs,
            token_ttl_secs: d.token_ttl_secs.try_into().unwrap_or(u32::MAX),
            max_inflight: d.max_inflight.try_into().unwrap_or(u32::MAX),
            connect_timeout_ms: d.connect_timeout_ms.try_into().unwrap_or(u32::MAX),
            max_unsent_bytes: d.max_unsent_bytes,
            transport: crate::ffi::client::TETHER_TRANSPORT_MQTT,
        }
    }

    /// Creates a session for the device in `connection_string` (see `tether_client_new`).
    /// The caller opens the connection: to port 8883 for `TETHER_TRANSPORT_MQTT`, to 443 for
    /// `TETHER_TRANSPORT_WEBSOCKETS` (MQTT over WebSockets inside TLS); `options->transport`
    /// `TETHER_TRANSPORT_AUTO` is refused with `TETHER_RESULT_INVALID_ARGUMENT` (falling back
    /// needs the blocking client). `tls` NULL means the IoT Hub defaults; `options` NULL means
    /// `tether_session_options_default()`. `*session_out` receives a session owned by the
    /// caller (free it with `tether_session_free`); not written on failure. Results as
    /// `tether_client_new`; `TETHER_RESULT_INVALID_ARGUMENT` for an option out of range.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_new(
        connection_string: *const c_char,
        tls: *const tether_tls_config,
        options: *const tether_session_options,
        session_out: *mut *mut tether_session,
    ) -> Code {
        guard(|| {
            // SAFETY: arguments per the contract above.
            let text = unsafe { text_arg(connection_string, "connection_string") }?;
            let out = unsafe { out_arg(session_out, "session_out") }?;
            let options = unsafe { opt_in_arg(options, "options") }?
                .copied()
                .unwrap_or_else(|| tether_session::tether_session_options_default());
            let cs = crate::auth::connection_string::ConnectionString::parse(text)?;
            // SAFETY: `tls` NULL or a live configuration, per the contract.
            let (tls, has_cert, not_after) = unsafe { tls_or_default(tls) }?;
            let mut config = SessionConfig::from_connection_string(&cs, tls, has_cert)?;
            config.options.client_cert_not_after = not_after;
            options.apply(&mut config.options)?;
            *out = into_handle(tether_session {
                session: Session::new(config)?,
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
    /// queues the TLS handshake and MQTT CONNECT (with a fresh SAS token made from the wall
    /// clock). `now_ms` is monotonic, as in every `tether_session_*` call.
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_INVALID_STATE` (already connected), `TETHER_RESULT_CLOCK_NOT_SET` (the
    /// wall clock is before 2025), `TETHER_RESULT_TOKEN_EXPIRED`.
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
    /// order: call again until `*out_len` is 0. The bytes come straight from the TLS layer's
    /// queue: pass as `cap` what the socket accepts now (a slow socket takes part, the rest
    /// waits without another copy). Results: `TETHER_RESULT_OK`,
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
            let mut out: &mut [u8] = if cap == 0 {
                &mut []
            } else {
                // SAFETY: `buf` is valid for `cap` bytes and overlaps no other argument.
                unsafe { std::slice::from_raw_parts_mut(buf, cap) }
            };
            let n = s
                .session
                .write_output(&mut out)
                .map_err(|e| Error::new(Code::Io, format!("output: {e}")))?;
            *out_len = n;
            Ok(())
        })
    }

    /// Writes to `*pending` whether the session has bytes to send (take them with
    /// `tether_session_poll_output`). A gateway watches a socket for writability only while
    /// this is true. Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_output_pending(
        session: *const tether_session,
        pending: *mut bool,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live session; out pointer NULL or writable.
            let s = unsafe { handle_ref(session, "session") }?;
            let out = unsafe { out_arg(pending, "pending") }?;
            *out = s.session.wants_output();
            Ok(())
        })
    }

    /// Says whether the session's next deadline changed since the last call: `*changed`
    /// receives true or false, and when true `*deadline_ms` receives the new deadline
    /// (monotonic ms, as `tether_session_next_deadline`) or `TETHER_NO_DEADLINE`; when
    /// false `*deadline_ms` is not written. Call it after each call that feeds the session
    /// (input, timeout, send, connect) to keep one timer per session up to date.
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_session_poll_deadline(
        session: *mut tether_session,
        changed: *mut bool,
        deadline_ms: *mut u64,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live session; out pointers NULL or writable.
            let s = unsafe { handle_mut(session, "session") }?;
            let changed = unsafe { out_arg(changed, "changed") }?;
            let deadline_ms = unsafe { out_arg(deadline_ms, "deadline_ms") }?;
            match s.session.poll_deadline() {
                Some(next) => {
                    *deadline_ms = next.unwrap_or(TETHER_NO_DEADLINE);
                    *changed = true;
                }
                None => *changed = false,
            }
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

    /// Writes when `tether_session_handle_timeout` should next be called (monotonic ms) to
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
