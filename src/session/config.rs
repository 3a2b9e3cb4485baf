//! What a session is configured with: who the device is ([`SessionConfig`]) and its
//! tunables ([`SessionOptions`]), validated once by [`super::Session::new`].

use std::sync::Arc;

use rustls::ClientConfig;

use crate::auth::connection_string::{ConnectionString, Credential};
use crate::defaults;
use crate::error::{Code, Error, Result};
use crate::handshake;
use crate::mqtt::codec::DEFAULT_MAX_PACKET_SIZE;
use crate::mqtt::topics;

/// Tunables of a session, with IoT Hub SDK-like defaults.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// MQTT keep-alive in seconds (default 60; IoT Hub allows at most 1177).
    pub keep_alive_secs: u16,
    /// Lifetime of the SAS tokens the session makes (default 3600 s). Tokens are renewed
    /// before expiry, at the larger of 120 s and 15 % of the lifetime.
    pub token_ttl_secs: u64,
    /// Most QoS 1 messages waiting for PUBACK (default 128); beyond it sending is refused
    /// with `TETHER_RESULT_QUEUE_FULL`.
    pub max_inflight: usize,
    /// Most bytes of output that may wait for [`Session::poll_output`](super::Session::poll_output) (default 1 MiB):
    /// while more is waiting, new messages (QoS 0 and 1, twin requests, method responses)
    /// are refused with `TETHER_RESULT_QUEUE_FULL`. A single message is always accepted
    /// when nothing is waiting. Re-sends and acknowledgements are not held back.
    pub max_unsent_bytes: usize,
    /// Time allowed for TLS + CONNACK after [`Session::connect`](super::Session::connect) (default 30 s).
    pub connect_timeout_ms: u64,
    /// The IoT Hub api-version (default `2021-04-12`).
    pub api_version: Option<String>,
    /// IoT Plug and Play model id, sent as `model-id`.
    pub model_id: Option<String>,
    /// `DeviceClientType` (default `tether/<version>`).
    pub client_type: Option<String>,
    /// Largest packet accepted from the hub (default: 256 KiB message + 64 KiB topic).
    pub max_packet_size: usize,
    /// When the device's client certificate expires (Unix seconds), so that each connection
    /// within [`CERT_EXPIRY_WARNING_DAYS`] of it logs a warning ahead of time.
    pub client_cert_not_after: Option<i64>,
    /// MQTT over WebSockets (`/$iothub/websocket`, subprotocol `mqtt`) inside TLS, for a
    /// transport opened to the WebSocket port (443) (default false: MQTT straight in TLS).
    pub websockets: bool,
}

/// Default [`SessionOptions::max_unsent_bytes`]: four messages of IoT Hub's largest size.
pub const DEFAULT_MAX_UNSENT_BYTES: usize = defaults::MAX_UNSENT_BYTES;

/// Connections made this many days or fewer before the client certificate expires warn.
pub const CERT_EXPIRY_WARNING_DAYS: i64 = 30;

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            keep_alive_secs: defaults::KEEP_ALIVE_SECS,
            token_ttl_secs: defaults::TOKEN_TTL_SECS.into(),
            max_inflight: defaults::MAX_INFLIGHT as usize,
            max_unsent_bytes: defaults::MAX_UNSENT_BYTES,
            connect_timeout_ms: defaults::CONNECT_TIMEOUT_MS.into(),
            api_version: None,
            model_id: None,
            client_type: Some(format!("tether/{}", crate::VERSION)),
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            client_cert_not_after: None,
            websockets: false,
        }
    }
}

/// Who the device is and how it reaches the hub.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The IoT Hub host name (`myhub.azure-devices.net`): user name and token resource.
    pub hub_host: String,
    /// The host the TLS connection is made to and verified against (the hub, or a gateway).
    pub server_name: String,
    /// The device id.
    pub device_id: String,
    /// The module id, for a module identity.
    pub module_id: Option<String>,
    /// SAS keys, a ready token, or X.509 (the certificate is in `tls`).
    pub credential: Credential,
    /// The TLS configuration (the IoT Hub policy).
    pub tls: Arc<ClientConfig>,
    /// Whether `tls` carries a client certificate.
    pub has_client_cert: bool,
    /// Tunables.
    pub options: SessionOptions,
}

impl SessionConfig {
    /// A configuration from a parsed connection string and a TLS policy.
    pub fn from_connection_string(
        cs: &ConnectionString,
        tls: Arc<ClientConfig>,
        has_client_cert: bool,
    ) -> Result<SessionConfig> {
        let config = SessionConfig {
            hub_host: cs.host_name().to_owned(),
            server_name: cs.connect_host().to_owned(),
            device_id: cs.device_id().to_owned(),
            module_id: cs.module_id().map(str::to_owned),
            credential: cs.credential().clone(),
            tls,
            has_client_cert,
            options: SessionOptions::default(),
        };
        config.validate()?;
        Ok(config)
    }

    pub(super) fn validate(&self) -> Result<()> {
        topics::client_id(&self.device_id, self.module_id.as_deref())?;
        handshake::server_name(&self.server_name)?;
        if matches!(self.credential, Credential::X509) && !self.has_client_cert {
            return Err(Error::new(
                Code::InvalidArgument,
                "the identity uses X.509 (x509=true) but the TLS configuration has no client \
                 certificate: set one on the TLS configuration builder",
            ));
        }
        if self.options.keep_alive_secs > defaults::MAX_KEEP_ALIVE_SECS {
            return Err(Error::new(
                Code::InvalidArgument,
                format!(
                    "keep-alive {} s is above IoT Hub's maximum of {} s",
                    self.options.keep_alive_secs,
                    defaults::MAX_KEEP_ALIVE_SECS
                ),
            ));
        }
        if self.options.max_inflight == 0 || self.options.max_inflight > 65_000 {
            return Err(Error::new(
                Code::InvalidArgument,
                "max_inflight must be between 1 and 65000",
            ));
        }
        if self.options.max_unsent_bytes == 0 {
            return Err(Error::new(
                Code::InvalidArgument,
                "max_unsent_bytes must not be 0",
            ));
        }
        if self.options.token_ttl_secs < defaults::MIN_TOKEN_TTL_SECS.into() {
            return Err(Error::new(
                Code::InvalidArgument,
                format!(
                    "token lifetime must be at least {} s",
                    defaults::MIN_TOKEN_TTL_SECS
                ),
            ));
        }
        Ok(())
    }
}
