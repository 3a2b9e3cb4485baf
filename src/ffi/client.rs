//! The blocking device client for C: `tether_client`.

use std::ffi::c_char;
use std::time::Duration;

use crate::auth::connection_string::{ConnectionString, Credential, KeyPair};
use crate::auth::sas::SasKey;
use crate::client::{client_from_env, Client, ClientOptions};
use crate::defaults;
use crate::error::{Code, Error};
use crate::ffi::event::{properties_arg, tether_event, EventSlot};
use crate::ffi::handles::{free_handle, handle_mut, handle_ref, into_handle};
use crate::ffi::panic::{guard, guard_value};
use crate::ffi::tls_config::{tether_tls_config, tls_or_default};
use crate::ffi::topics::opt_text_arg;
use crate::ffi::{bytes_arg, opt_in_arg, opt_out_arg, out_arg, text_arg, text_out, TextOut};
use crate::session::{SessionConfig, SessionOptions, Subscription};
use crate::transport::proxy::Proxy;
use crate::transport::Transport;

/// A buffer of this many bytes holds any twin request id with its NUL (a decimal `u64`).
pub const TETHER_REQUEST_ID_CAP: usize = 21;

/// Checks a request-id output before the request is sent: not NULL, room for any id, no
/// overlap.
///
/// # Safety
/// `out` is NULL or valid for `cap` bytes; `out_len` NULL or valid for a write.
pub(crate) unsafe fn request_id_out<'a>(
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Result<TextOut<'a>, Error> {
    // SAFETY: forwarded.
    let text = unsafe { text_out(out, cap, out_len, "request_id", "request_id_len") }?;
    if !text.fits(TETHER_REQUEST_ID_CAP - 1) {
        text.report_needed(TETHER_REQUEST_ID_CAP - 1);
        return Err(Error::new(
            Code::BufferTooSmall,
            format!("`request_id` holds {cap} bytes; TETHER_REQUEST_ID_CAP ({TETHER_REQUEST_ID_CAP}) are needed"),
        ));
    }
    Ok(text)
}

/// Subscribe to cloud-to-device messages (`tether_client_subscribe`).
pub const TETHER_SUBSCRIBE_C2D: u32 = 1;
/// Subscribe to direct-method requests.
pub const TETHER_SUBSCRIBE_METHODS: u32 = 2;
/// Subscribe to twin responses and desired-property patches.
pub const TETHER_SUBSCRIBE_TWIN: u32 = 4;

/// MQTT over TLS on `port` (8883): the default transport.
pub const TETHER_TRANSPORT_MQTT: u8 = 0;
/// MQTT over WebSockets over TLS on `websocket_port` (443), path `/$iothub/websocket`: for
/// networks that allow only 443.
pub const TETHER_TRANSPORT_WEBSOCKETS: u8 = 1;
/// MQTT on `port`, falling back to WebSockets on `websocket_port` when `port` cannot be
/// reached (refused, timed out, refused by the proxy); the fallback is logged. Blocking client
/// only (`tether_session_new` refuses it: the caller opens the connection).
pub const TETHER_TRANSPORT_AUTO: u8 = 2;

/// The transport a `TETHER_TRANSPORT_*` value names.
pub(crate) fn transport_arg(value: u8) -> Result<Transport, Error> {
    match value {
        TETHER_TRANSPORT_MQTT => Ok(Transport::Mqtt),
        TETHER_TRANSPORT_WEBSOCKETS => Ok(Transport::WebSockets),
        TETHER_TRANSPORT_AUTO => Ok(Transport::Auto),
        other => Err(Error::new(
            Code::InvalidArgument,
            format!("transport {other}: use TETHER_TRANSPORT_MQTT, _WEBSOCKETS or _AUTO"),
        )),
    }
}

/// Connection settings for `tether_client_new`. Start from
/// `tether_client_options_default()` and change what you need.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_client_options {
    /// TCP port (default 8883, IoT Hub's MQTT port).
    pub port: u16,
    /// MQTT keep-alive, seconds (default 60, at most 1177).
    pub keep_alive_secs: u16,
    /// Lifetime of the SAS tokens the client makes, seconds (default 3600; at least 10).
    /// Tokens are renewed by reconnecting before they expire.
    pub token_ttl_secs: u32,
    /// Most unacknowledged QoS 1 messages (default 128).
    pub max_inflight: u32,
    /// Timeout for TCP connect, and for TLS + CONNACK, milliseconds (default 30000; 0 is
    /// refused with `TETHER_RESULT_INVALID_ARGUMENT`).
    pub connect_timeout_ms: u32,
    /// Largest delay between reconnection attempts, milliseconds (default 60000).
    pub retry_max_ms: u32,
    /// TCP port of MQTT over WebSockets (IoT Hub: 443).
    pub websocket_port: u16,
    /// `TETHER_TRANSPORT_MQTT` (default), `TETHER_TRANSPORT_WEBSOCKETS` or
    /// `TETHER_TRANSPORT_AUTO`. For `tether_session_new`, WEBSOCKETS makes the session speak
    /// MQTT over WebSockets inside TLS on the connection the caller opened to port 443.
    pub transport: u8,
}

/// The session configuration for a connection string, a TLS configuration (NULL: the IoT
/// Hub defaults) and client options.
///
/// # Safety
/// `tls` is NULL or a live `tether_tls_config`.
pub(crate) unsafe fn session_config(
    connection_string: &str,
    tls: *const tether_tls_config,
    options: &tether_client_options,
) -> Result<SessionConfig, Error> {
    let cs = ConnectionString::parse(connection_string)?;
    // SAFETY: per the contract.
    let (config, has_cert, not_after) = unsafe { tls_or_default(tls) }?;
    let mut session = SessionConfig::from_connection_string(&cs, config, has_cert)?;
    session.options = session_options(options, not_after)?;
    Ok(session)
}

/// The session options for client options (`connect_timeout_ms` 0 refused).
pub(crate) fn session_options(
    options: &tether_client_options,
    client_cert_not_after: Option<i64>,
) -> Result<SessionOptions, Error> {
    if options.connect_timeout_ms == 0 {
        return Err(Error::new(
            Code::InvalidArgument,
            "connect_timeout_ms is 0: every attempt would time out at once",
        ));
    }
    let transport = transport_arg(options.transport)?;
    if options.websocket_port == 0 {
        return Err(Error::new(
            Code::InvalidArgument,
            "websocket_port must not be 0",
        ));
    }
    Ok(SessionOptions {
        websockets: transport == Transport::WebSockets,
        keep_alive_secs: options.keep_alive_secs,
        token_ttl_secs: u64::from(options.token_ttl_secs),
        max_inflight: options.max_inflight as usize,
        connect_timeout_ms: u64::from(options.connect_timeout_ms),
        client_cert_not_after,
        ..SessionOptions::default()
    })
}

/// The client options (NULL: `tether_client_options_default()`).
///
/// # Safety
/// `options` is NULL or valid for a read.
pub(crate) unsafe fn options_arg(
    options: *const tether_client_options,
) -> Result<tether_client_options, Error> {
    // SAFETY: forwarded.
    Ok(unsafe { opt_in_arg(options, "options") }?
        .copied()
        .unwrap_or_else(|| tether_client::tether_client_options_default()))
}

/// The subscriptions in a set of `TETHER_SUBSCRIBE_*` bits.
pub(crate) fn subscriptions_arg(bits: u32) -> Result<Vec<Subscription>, Error> {
    let all = TETHER_SUBSCRIBE_C2D | TETHER_SUBSCRIBE_METHODS | TETHER_SUBSCRIBE_TWIN;
    if bits == 0 || bits & !all != 0 {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("subscriptions 0x{bits:x}: use TETHER_SUBSCRIBE_* bits"),
        ));
    }
    Ok([
        (TETHER_SUBSCRIBE_C2D, Subscription::C2d),
        (TETHER_SUBSCRIBE_METHODS, Subscription::Methods),
        (TETHER_SUBSCRIBE_TWIN, Subscription::Twin),
    ]
    .into_iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, sub)| sub)
    .collect())
}

/// A device client over a TCP socket: connects, sends, receives, renews its SAS token and
/// reconnects with back-off, all on the calling thread inside `tether_client_poll`.
/// Not thread-safe: use one client from one thread at a time (it may move between threads).
pub struct tether_client {
    pub(crate) client: Client,
    pub(crate) event: EventSlot,
}

impl tether_client {
    /// Returns the default client options, the values of `tether_defaults_get()`: port
    /// 8883, keep-alive 60 s, token lifetime 3600 s, 128 messages in flight, 30 s connect
    /// timeout, back-off up to 60 s.
    #[no_mangle]
    pub extern "C" fn tether_client_options_default() -> tether_client_options {
        tether_client_options {
            port: defaults::PORT,
            keep_alive_secs: defaults::KEEP_ALIVE_SECS,
            token_ttl_secs: defaults::TOKEN_TTL_SECS,
            max_inflight: defaults::MAX_INFLIGHT,
            connect_timeout_ms: defaults::CONNECT_TIMEOUT_MS,
            retry_max_ms: defaults::RETRY_MAX_MS,
            websocket_port: defaults::WEBSOCKET_PORT,
            transport: TETHER_TRANSPORT_MQTT,
        }
    }

    /// Creates a client for the device in `connection_string`
    /// (`HostName=...;DeviceId=...;SharedAccessKey=...`, or with `SharedAccessSignature=`, or
    /// `x509=true`). Nothing is opened yet.
    ///
    /// - `tls`: the TLS policy to use (it must carry the client certificate for X.509), or
    ///   NULL for the IoT Hub defaults. The client keeps its own reference; `tls` may be freed
    ///   afterwards.
    /// - `options`: NULL for `tether_client_options_default()`.
    /// - `client_out`: receives the new client, owned by the caller (free it with
    ///   `tether_client_free`); not written on failure.
    ///
    /// The client reaches the hub through the HTTP proxy the environment names, like curl:
    /// `TETHER_PROXY`, else `HTTPS_PROXY` / `https_proxy`, unless `NO_PROXY` lists the host
    /// (`tether_client_set_proxy` replaces it).
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
    /// `TETHER_RESULT_CONNECTION_STRING_INVALID`, `TETHER_RESULT_SAS_KEY_INVALID`,
    /// `TETHER_RESULT_ID_INVALID`, `TETHER_RESULT_INVALID_ARGUMENT` (options out of range, an
    /// unknown transport, X.509 without a client certificate, or a malformed proxy URL in the
    /// environment).
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_new(
        connection_string: *const c_char,
        tls: *const tether_tls_config,
        options: *const tether_client_options,
        client_out: *mut *mut tether_client,
    ) -> Code {
        guard(|| {
            // SAFETY: arguments per the contract above.
            let text = unsafe { text_arg(connection_string, "connection_string") }?;
            let out = unsafe { out_arg(client_out, "client_out") }?;
            let options = unsafe { options_arg(options) }?;
            let session = unsafe { session_config(text, tls, &options) }?;
            let proxy = Proxy::from_env(&session.server_name)?;
            let client = Client::new(
                session,
                ClientOptions {
                    port: options.port,
                    websocket_port: options.websocket_port,
                    transport: transport_arg(options.transport)?,
                    proxy,
                    connect_timeout: Duration::from_millis(options.connect_timeout_ms.into()),
                    retry_max_ms: options.retry_max_ms,
                    ..ClientOptions::default()
                },
            )?;
            *out = into_handle(tether_client {
                client,
                event: EventSlot::default(),
            });
            Ok(())
        })
    }

    /// Creates a client from the environment: `TETHER_CONNECTION_STRING` (required),
    /// `TETHER_CA_FILE` (an extra trusted CA), `TETHER_PORT` (default 8883),
    /// `TETHER_CERT_FILE` and `TETHER_KEY_FILE` (X.509), or `TETHER_PKCS11_MODULE`,
    /// `TETHER_PKCS11_URI` and `TETHER_PKCS11_PIN` (X.509 with the key on a PKCS#11 token; see
    /// `tether_tls_config_builder_set_client_pkcs11`). The same variables the examples, the
    /// CLI and the bindings use. Ownership and results as `tether_client_new`, plus
    /// `TETHER_RESULT_FILE_NOT_READABLE` and certificate results for the files, and the
    /// `TETHER_RESULT_PKCS11_*` results for a token.
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_new_from_env(
        client_out: *mut *mut tether_client,
    ) -> Code {
        guard(|| {
            // SAFETY: `client_out` NULL or writable.
            let out = unsafe { out_arg(client_out, "client_out") }?;
            let client = client_from_env()?;
            *out = into_handle(tether_client {
                client,
                event: EventSlot::default(),
            });
            Ok(())
        })
    }

    /// Sets the HTTP proxy the client tunnels through with CONNECT, from the next connection
    /// on: `http://[user:password@]host[:port]` (port 80 when absent; user and password
    /// %-encoded), or NULL to connect directly (the environment's proxy is then ignored).
    /// The credentials are a secret: kept in wiped memory, never logged, never in messages.
    ///
    /// A proxy's refusal surfaces as `TETHER_RESULT_PROXY_AUTH_REQUIRED` (401/407, not
    /// retried), `TETHER_RESULT_PROXY_REFUSED` (403 and other refusals, not retried) or
    /// `TETHER_RESULT_CONNECT_FAILED` (the proxy cannot reach the hub: 5xx, retried), each
    /// message holding the proxy's status line.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT` (client),
    /// `TETHER_RESULT_INVALID_UTF8`, `TETHER_RESULT_INVALID_ARGUMENT` (a malformed URL, or an
    /// `https://` proxy).
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_set_proxy(
        client: *mut tether_client,
        proxy_url: *const c_char,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live client; `proxy_url` NULL or a NUL-terminated string.
            let c = unsafe { handle_mut(client, "client") }?;
            let url = unsafe { opt_text_arg(proxy_url, "proxy_url") }?;
            let proxy = url.map(Proxy::parse).transpose()?;
            c.client.set_proxy(proxy);
            Ok(())
        })
    }

    /// Frees a client, disconnecting it gracefully first. NULL is a no-op.
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_free(client: *mut tether_client) {
        guard_value((), || {
            // SAFETY: NULL or a live client, per the contract.
            unsafe { free_handle(client) };
            Ok(())
        })
    }

    /// Connects and waits up to `timeout_ms` until the hub accepts the connection, retrying
    /// network failures with back-off. Blocks the calling thread. Refusals a retry cannot fix
    /// return at once: TLS policy results (100-199), `TETHER_RESULT_NOT_AUTHORIZED`
    /// (credentials refused, after trying the secondary key if there is one),
    /// `TETHER_RESULT_TOKEN_EXPIRED`, `TETHER_RESULT_CLOCK_NOT_SET`. Otherwise the last network
    /// result (400-499) when time runs out. Events, the CONNECTED one included, are kept for
    /// `tether_client_poll`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_connect(
        client: *mut tether_client,
        timeout_ms: u32,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live client.
            let c = unsafe { handle_mut(client, "client") }?;
            c.client.connect(Duration::from_millis(timeout_ms.into()))
        })
    }

    /// Sends a telemetry message: `payload` (`payload_len` bytes, may be NULL when 0), with
    /// `property_count` properties given as parallel arrays of NUL-terminated UTF-8 `keys`
    /// and `values` (a NULL value sends the bare key; system properties use their names,
    /// e.g. `$.ct` = `application/json`, `$.ce` = `utf-8`), at QoS 0 or 1.
    ///
    /// QoS 1 messages are queued while disconnected and re-sent until acknowledged;
    /// `*message_id_out` (may be NULL) receives the id the TELEMETRY_ACKED event will carry.
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
    /// `TETHER_RESULT_MQTT_QOS_UNSUPPORTED`, `TETHER_RESULT_MQTT_PACKET_TOO_LARGE` (over 256 KiB),
    /// `TETHER_RESULT_QUEUE_FULL` (`max_inflight` QoS 1 messages unacknowledged, or more than
    /// 1 MiB of output waiting for a slow network: back-pressure, try again after a poll),
    /// `TETHER_RESULT_INVALID_STATE` (QoS 0 while disconnected),
    /// `TETHER_RESULT_PROPERTY_BAG_INVALID` (empty key).
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_send_telemetry(
        client: *mut tether_client,
        payload: *const u8,
        payload_len: usize,
        keys: *const *const c_char,
        values: *const *const c_char,
        property_count: usize,
        qos: u8,
        message_id_out: *mut u64,
    ) -> Code {
        guard(|| {
            // SAFETY: arguments per the contract above.
            let c = unsafe { handle_mut(client, "client") }?;
            let payload = unsafe { bytes_arg(payload, payload_len, "payload") }?;
            let bag = unsafe { properties_arg(keys, values, property_count) }?;
            let id_out = unsafe { opt_out_arg(message_id_out, "message_id_out") }?;
            let id = c.client.send_telemetry(payload, &bag, qos)?;
            if let Some(out) = id_out {
                *out = id;
            }
            Ok(())
        })
    }

    /// Subscribes to a set of `TETHER_SUBSCRIBE_*` bits, now if connected and again on every
    /// reconnection. Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_INVALID_ARGUMENT` (no or unknown bits).
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_subscribe(
        client: *mut tether_client,
        subscriptions: u32,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live client.
            let c = unsafe { handle_mut(client, "client") }?;
            for sub in subscriptions_arg(subscriptions)? {
                c.client.subscribe(sub)?;
            }
            Ok(())
        })
    }

    /// Runs the connection for up to `timeout_ms` and writes the next event to `*event_out`
    /// (`TETHER_EVENT_NONE` when nothing happened in time). This is where the client sends,
    /// receives, pings, renews its token and reconnects: call it regularly. Blocks the
    /// calling thread. The event's pointers stay valid until the next call or
    /// `tether_client_free`.
    ///
    /// Results: `TETHER_RESULT_OK` (also when a DISCONNECTED event is returned: see its
    /// `error`), `TETHER_RESULT_NULL_ARGUMENT`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_poll(
        client: *mut tether_client,
        timeout_ms: u32,
        event_out: *mut tether_event,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live client; `event_out` NULL or writable.
            let c = unsafe { handle_mut(client, "client") }?;
            let out = unsafe { out_arg(event_out, "event_out") }?;
            let event = c.client.poll(Duration::from_millis(timeout_ms.into()))?;
            c.event.store(event, out);
            Ok(())
        })
    }

    /// Reads property `index` of the last C2D event: `*key` and `*value` receive
    /// NUL-terminated strings owned by the client (valid until the next poll); `*value` is
    /// NULL for a property sent without a value. Results: `TETHER_RESULT_OK`,
    /// `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_NOT_FOUND` (index out of range).
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_event_property(
        client: *const tether_client,
        index: usize,
        key: *mut *const c_char,
        value: *mut *const c_char,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live client; out pointers NULL or writable.
            let c = unsafe { handle_ref(client, "client") }?;
            let key = unsafe { out_arg(key, "key") }?;
            let value = unsafe { out_arg(value, "value") }?;
            let (k, v) = c.event.property(index)?;
            *key = k;
            *value = v;
            Ok(())
        })
    }

    /// Requests the twin document; the TWIN_RESPONSE event with the request id written to
    /// `request_id` (NUL-terminated, capacity `cap`, length in `*request_id_len`) carries it.
    /// Subscribes to twin topics if needed. `cap` must be at least `TETHER_REQUEST_ID_CAP`:
    /// the buffer is checked before anything is sent. Results: `TETHER_RESULT_OK`,
    /// `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_ARGUMENT` (buffers overlap),
    /// `TETHER_RESULT_INVALID_STATE` (not connected), `TETHER_RESULT_BUFFER_TOO_SMALL`
    /// (nothing sent; `*request_id_len` = `TETHER_REQUEST_ID_CAP - 1`).
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_twin_get(
        client: *mut tether_client,
        request_id: *mut c_char,
        cap: usize,
        request_id_len: *mut usize,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live client; buffer contract.
            let c = unsafe { handle_mut(client, "client") }?;
            let out = unsafe { request_id_out(request_id, cap, request_id_len) }?;
            out.write(&c.client.twin_get()?)
        })
    }

    /// Sends a reported-properties patch (`json`, `json_len` bytes); answered by a
    /// TWIN_RESPONSE event (status 204, new version) with the request id written to
    /// `request_id`. Results as `tether_client_twin_get`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_twin_patch_reported(
        client: *mut tether_client,
        json: *const u8,
        json_len: usize,
        request_id: *mut c_char,
        cap: usize,
        request_id_len: *mut usize,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live client; buffers per the contract.
            let c = unsafe { handle_mut(client, "client") }?;
            let json = unsafe { bytes_arg(json, json_len, "json") }?;
            let out = unsafe { request_id_out(request_id, cap, request_id_len) }?;
            out.write(&c.client.twin_patch_reported(json)?)
        })
    }

    /// Answers a direct-method request with `status` (e.g. 200) and a JSON body (`json`,
    /// `json_len` bytes; may be NULL when 0). Results: `TETHER_RESULT_OK`,
    /// `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
    /// `TETHER_RESULT_INVALID_STATE` (not connected), `TETHER_RESULT_TOPIC_INVALID` (bad
    /// request id).
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_respond_method(
        client: *mut tether_client,
        request_id: *const c_char,
        status: u16,
        json: *const u8,
        json_len: usize,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live client; text and buffer per the contract.
            let c = unsafe { handle_mut(client, "client") }?;
            let rid = unsafe { text_arg(request_id, "request_id") }?;
            let json = unsafe { bytes_arg(json, json_len, "json") }?;
            c.client.respond_method(rid, status, json)
        })
    }

    /// Replaces the device's SAS keys (base64, NUL-terminated; `secondary_key` may be NULL),
    /// for key rotation without a restart: the next connection (renewal or reconnect) uses
    /// the primary, and falls back to the secondary if the hub refuses it. The keys are
    /// copied into memory the library zeroes. Results: `TETHER_RESULT_OK`,
    /// `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
    /// `TETHER_RESULT_SAS_KEY_INVALID`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_set_keys(
        client: *mut tether_client,
        primary_key: *const c_char,
        secondary_key: *const c_char,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live client; keys NULL or NUL-terminated.
            let c = unsafe { handle_mut(client, "client") }?;
            let primary = unsafe { text_arg(primary_key, "primary_key") }?;
            let secondary = unsafe { opt_text_arg(secondary_key, "secondary_key") }?;
            let mut keys = KeyPair::new(SasKey::from_base64(primary)?);
            if let Some(secondary) = secondary {
                keys.set_secondary(SasKey::from_base64(secondary)?);
            }
            let key_name = match &c.client.session().config().credential {
                Credential::Keys { key_name, .. } => key_name.clone(),
                _ => None,
            };
            c.client.session_mut().set_credential(Credential::Keys {
                keys: Box::new(keys),
                key_name,
            })
        })
    }

    /// Disconnects gracefully (MQTT DISCONNECT, TLS close_notify). The client does not
    /// reconnect until `tether_client_connect`. NULL is a no-op.
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_disconnect(client: *mut tether_client) {
        guard_value((), || {
            // SAFETY: NULL or a live client.
            if let Some(c) = unsafe { client.as_mut() } {
                c.client.disconnect();
            }
            Ok(())
        })
    }

    /// How many QoS 1 messages wait for acknowledgement (0 for NULL).
    #[no_mangle]
    pub unsafe extern "C" fn tether_client_inflight(client: *const tether_client) -> usize {
        guard_value(0, || {
            // SAFETY: NULL or a live client.
            Ok(unsafe { handle_ref(client, "client") }?
                .client
                .session()
                .inflight())
        })
    }
}
