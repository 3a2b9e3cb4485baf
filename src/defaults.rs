//! The defaults of tether, decided once.
//!
//! Every front end reads these values from here and nowhere else: the Rust `Default` impls
//! ([`crate::session::SessionOptions`], [`crate::client::ClientOptions`]), the C face
//! (`tether_defaults()` and `tether_client_options_default()`), the CLI's `--help` and
//! `tether defaults`, and the Python and C# bindings (which ask the loaded library at run
//! time). `tests/defaults.rs` checks that all of them report the same values.
//!
//! The values follow IoT Hub's device SDKs where they have one (token lifetime, back-off,
//! the CONNACK timeout of azure-iot-sdk-c) and IoT Hub's limits (keep-alive).

/// TCP port of IoT Hub's and DPS's MQTT endpoints (MQTT over TLS).
pub const PORT: u16 = 8883;

/// IoT Hub's and DPS's port for MQTT over WebSockets (`wss://HOST:443/$iothub/websocket`).
pub const WEBSOCKET_PORT: u16 = 443;

/// MQTT keep-alive, seconds: a PINGREQ goes out after this long without traffic.
pub const KEEP_ALIVE_SECS: u16 = 60;

/// The largest keep-alive IoT Hub accepts, seconds (29 min 25 s, its idle timeout).
pub const MAX_KEEP_ALIVE_SECS: u16 = 1177;

/// Lifetime of the SAS tokens tether makes from a key, seconds (the SDKs' default).
pub const TOKEN_TTL_SECS: u32 = 3600;

/// The smallest lifetime a client accepts for the tokens it makes, seconds.
pub const MIN_TOKEN_TTL_SECS: u32 = 10;

/// A token is renewed this many seconds before it expires, at least ...
/// ([`crate::auth::sas::renewal_margin`] applies the rule)
pub const RENEWAL_MARGIN_MIN_SECS: u32 = 120;

/// ... or this percentage of its lifetime when that is larger (but never more than half
/// the lifetime, so a short-lived token is still used).
pub const RENEWAL_MARGIN_PERCENT: u32 = 15;

/// Most QoS 1 messages waiting for PUBACK; beyond it sending is refused with
/// `TETHER_RESULT_QUEUE_FULL`.
pub const MAX_INFLIGHT: u32 = 128;

/// Most bytes of output that may wait to be written (four messages of IoT Hub's largest
/// size); beyond it new messages are refused with `TETHER_RESULT_QUEUE_FULL`.
pub const MAX_UNSENT_BYTES: usize = 1 << 20;

/// Time allowed for each phase of a connection attempt, milliseconds: name resolution and
/// the TCP connection, then TLS and CONNACK. 30 s, azure-iot-sdk-c's CONNACK timeout:
/// generous for cellular and satellite links, where a TLS handshake can take 10 s. Applies
/// to C and Rust alike (before 0.2 C used 10 s and Rust 30 s).
pub const CONNECT_TIMEOUT_MS: u32 = 30_000;

/// Back-off after a failed connection: the first delay is twice this, milliseconds.
pub const RETRY_MIN_MS: u32 = 500;

/// Back-off cap, milliseconds. A connection that stays up this long resets the back-off.
pub const RETRY_MAX_MS: u32 = 60_000;

/// Most random jitter added to each back-off delay, milliseconds (spreads a fleet apart).
pub const RETRY_JITTER_MS: u32 = 2_000;

/// The whole DPS registration (connect, register, poll) must finish within this,
/// milliseconds.
pub const DPS_TIMEOUT_MS: u32 = 60_000;

/// How long to wait before polling DPS again when its answer carries no `retry-after`,
/// milliseconds.
pub const DPS_POLL_INTERVAL_MS: u32 = 3_000;

/// The longest wait between DPS polls, milliseconds: a larger `retry-after` is capped to it.
pub const DPS_POLL_MAX_MS: u32 = 60_000;

/// Time allowed for a TLS check (`tether tls-check`, `tether_tls_config_check`), milliseconds.
pub const TLS_CHECK_TIMEOUT_MS: u32 = 10_000;

/// Every default above by the name of its field in the C struct `tether_defaults`, in the
/// struct's order: what `tether defaults` prints and what the front ends are compared on.
pub const TABLE: &[(&str, u64)] = &[
    ("port", PORT as u64),
    ("keep_alive_secs", KEEP_ALIVE_SECS as u64),
    ("max_keep_alive_secs", MAX_KEEP_ALIVE_SECS as u64),
    ("token_ttl_secs", TOKEN_TTL_SECS as u64),
    ("min_token_ttl_secs", MIN_TOKEN_TTL_SECS as u64),
    ("renewal_margin_min_secs", RENEWAL_MARGIN_MIN_SECS as u64),
    ("renewal_margin_percent", RENEWAL_MARGIN_PERCENT as u64),
    ("max_inflight", MAX_INFLIGHT as u64),
    ("max_unsent_bytes", MAX_UNSENT_BYTES as u64),
    ("connect_timeout_ms", CONNECT_TIMEOUT_MS as u64),
    ("retry_min_ms", RETRY_MIN_MS as u64),
    ("retry_max_ms", RETRY_MAX_MS as u64),
    ("retry_jitter_ms", RETRY_JITTER_MS as u64),
    ("dps_timeout_ms", DPS_TIMEOUT_MS as u64),
    ("dps_poll_interval_ms", DPS_POLL_INTERVAL_MS as u64),
    ("dps_poll_max_ms", DPS_POLL_MAX_MS as u64),
    ("tls_check_timeout_ms", TLS_CHECK_TIMEOUT_MS as u64),
];

/// Milliseconds as a [`std::time::Duration`] (for the `*_MS` constants).
pub const fn ms(value: u32) -> std::time::Duration {
    std::time::Duration::from_millis(value as u64)
}

// The defaults respect their own limits (checked when the crate compiles).
const _: () = assert!(KEEP_ALIVE_SECS <= MAX_KEEP_ALIVE_SECS);
const _: () = assert!(TOKEN_TTL_SECS >= MIN_TOKEN_TTL_SECS);
const _: () = assert!(RETRY_MIN_MS < RETRY_MAX_MS);
const _: () = assert!(DPS_POLL_INTERVAL_MS <= DPS_POLL_MAX_MS);
