//! tether's defaults for C and the bindings: `tether_defaults_get`.

use crate::defaults as d;

/// tether's defaults, decided once in the library (src/defaults.rs) and read from here by C
/// programs and the Python and C# bindings. `tether_client_options_default()` is made of
/// the same values. Times are in the unit their name ends with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct tether_defaults {
    /// TCP port of IoT Hub's and DPS's MQTT endpoints: 8883.
    pub port: u16,
    /// MQTT keep-alive, seconds: 60.
    pub keep_alive_secs: u16,
    /// The largest keep-alive IoT Hub accepts, seconds: 1177.
    pub max_keep_alive_secs: u16,
    /// Lifetime of the SAS tokens tether makes from a key, seconds: 3600.
    pub token_ttl_secs: u32,
    /// The smallest token lifetime a client accepts, seconds: 10.
    pub min_token_ttl_secs: u32,
    /// A token is renewed at least this long before it expires, seconds: 120 ...
    pub renewal_margin_min_secs: u32,
    /// ... or this percentage of its lifetime when larger (at most half of it): 15.
    pub renewal_margin_percent: u32,
    /// Most QoS 1 messages waiting for PUBACK: 128.
    pub max_inflight: u32,
    /// Most bytes of output waiting to be written before sending is refused: 1048576 (1 MiB).
    pub max_unsent_bytes: usize,
    /// Time allowed for each phase of a connection attempt (TCP, then TLS + CONNACK),
    /// milliseconds: 30000.
    pub connect_timeout_ms: u32,
    /// Back-off after a failed connection: the first delay is twice this, milliseconds: 500.
    pub retry_min_ms: u32,
    /// Back-off cap, milliseconds: 60000.
    pub retry_max_ms: u32,
    /// Most random jitter added to each back-off delay, milliseconds: 2000.
    pub retry_jitter_ms: u32,
    /// Time allowed for a whole DPS registration, milliseconds: 60000.
    pub dps_timeout_ms: u32,
    /// Wait before polling DPS again when it names no retry-after, milliseconds: 3000.
    pub dps_poll_interval_ms: u32,
    /// The longest wait between DPS polls, milliseconds: 60000.
    pub dps_poll_max_ms: u32,
    /// Time allowed for each step of `tether_tls_config_check` (resolve, connect, handshake),
    /// milliseconds: 10000.
    pub tls_check_timeout_ms: u32,
}

static DEFAULTS: tether_defaults = tether_defaults {
    port: d::PORT,
    keep_alive_secs: d::KEEP_ALIVE_SECS,
    max_keep_alive_secs: d::MAX_KEEP_ALIVE_SECS,
    token_ttl_secs: d::TOKEN_TTL_SECS,
    min_token_ttl_secs: d::MIN_TOKEN_TTL_SECS,
    renewal_margin_min_secs: d::RENEWAL_MARGIN_MIN_SECS,
    renewal_margin_percent: d::RENEWAL_MARGIN_PERCENT,
    max_inflight: d::MAX_INFLIGHT,
    max_unsent_bytes: d::MAX_UNSENT_BYTES,
    connect_timeout_ms: d::CONNECT_TIMEOUT_MS,
    retry_min_ms: d::RETRY_MIN_MS,
    retry_max_ms: d::RETRY_MAX_MS,
    retry_jitter_ms: d::RETRY_JITTER_MS,
    dps_timeout_ms: d::DPS_TIMEOUT_MS,
    dps_poll_interval_ms: d::DPS_POLL_INTERVAL_MS,
    dps_poll_max_ms: d::DPS_POLL_MAX_MS,
    tls_check_timeout_ms: d::TLS_CHECK_TIMEOUT_MS,
};

/// Returns tether's defaults (`struct tether_defaults`).
///
/// Owned by the library, valid for the life of the process; never NULL; do not free.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn tether_defaults_get() -> *const tether_defaults {
    &DEFAULTS
}
