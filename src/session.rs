//! The device session: a sans-IO engine combining TLS (rustls, under the IoT Hub policy) and
//! IoT Hub MQTT into one state machine.
//!
//! The session owns no socket and reads no clock. The driver (the blocking [`crate::client`],
//! or a firmware's own socket loop through the C API) feeds it:
//! - [`Session::connect`] when a new transport connection is open,
//! - [`Session::handle_input`] with every chunk of bytes received,
//! - [`Session::handle_timeout`] when [`Session::next_deadline`] has passed,
//! - [`Session::connection_lost`] when the transport failed or closed,
//!
//! and takes from it bytes to send ([`Session::poll_output`]) and events
//! ([`Session::poll_event`]). Time is the caller's: every input carries `now_ms`, Unix
//! milliseconds.
//!
//! The session survives transport connections: subscriptions and unacknowledged QoS 1
//! messages are kept and restored on the next [`Session::connect`] (messages are re-sent
//! with the DUP flag), so reconnecting and SAS renewal lose nothing. The SAS token is
//! renewed by reconnecting before it expires: the session asks for it with
//! [`Disconnect::Renewal`].

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection};

use crate::auth::connection_string::{ConnectionString, Credential, KeySlot};
use crate::auth::sas::{renew_at, write_token, Resource, MAX_TOKEN_LEN};
use crate::error::{Code, Error, Result};
use crate::handshake::{self, HelloSniffer};
use crate::mqtt::codec::{
    self, encode_to_vec, Connect, Decoded, Packet, Publish, DEFAULT_MAX_PACKET_SIZE,
};
use crate::mqtt::properties::{parse_bag, PropertyBag};
use crate::mqtt::topics::{self, TwinTopic, UsernameOptions};
use crate::transport::Framing;
use crate::verify;

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
    /// Most bytes of output that may wait for [`Session::poll_output`] (default 1 MiB):
    /// while more is waiting, new messages (QoS 0 and 1, twin requests, method responses)
    /// are refused with `TETHER_RESULT_QUEUE_FULL`. A single message is always accepted
    /// when nothing is waiting. Re-sends and acknowledgements are not held back.
    pub max_unsent_bytes: usize,
    /// Time allowed for TLS + CONNACK after [`Session::connect`] (default 30 s).
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
pub const DEFAULT_MAX_UNSENT_BYTES: usize = 1 << 20;

/// Connections made this many days or fewer before the client certificate expires warn.
pub const CERT_EXPIRY_WARNING_DAYS: i64 = 30;

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            keep_alive_secs: 60,
            token_ttl_secs: 3600,
            max_inflight: 128,
            max_unsent_bytes: DEFAULT_MAX_UNSENT_BYTES,
            connect_timeout_ms: 30_000,
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

    fn validate(&self) -> Result<()> {
        topics::client_id(&self.device_id, self.module_id.as_deref())?;
        handshake::server_name(&self.server_name)?;
        if matches!(self.credential, Credential::X509) && !self.has_client_cert {
            return Err(Error::new(
                Code::InvalidArgument,
                "the identity uses X.509 (x509=true) but the TLS configuration has no client \
                 certificate: set one on the TLS configuration builder",
            ));
        }
        if self.options.keep_alive_secs > 1177 {
            return Err(Error::new(
                Code::InvalidArgument,
                format!(
                    "keep-alive {} s is above IoT Hub's maximum of 1177 s",
                    self.options.keep_alive_secs
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
        if self.options.token_ttl_secs < 10 {
            return Err(Error::new(
                Code::InvalidArgument,
                "token lifetime must be at least 10 s",
            ));
        }
        Ok(())
    }
}

/// Why a transport connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// The SAS token is due for renewal: reconnect now (no back-off); nothing is lost.
    Renewal,
    /// The hub refused the credentials with one key; the other key is now selected:
    /// reconnect now.
    KeySwitched {
        /// The refusal.
        error: Error,
        /// The key now in use.
        now_using: KeySlot,
    },
    /// A failure worth retrying with back-off (network, timeout, server unavailable).
    Retriable(Error),
    /// A failure that retrying will not fix (TLS policy refusal, credentials refused,
    /// expired ready-made token): the application must act.
    Fatal(Error),
    /// The application asked to disconnect.
    Requested,
}

impl Disconnect {
    /// How a failed connection ends. The one place tether decides what is fatal: only a
    /// refusal that no retry can fix (see [`is_fatal`]); everything else — network and
    /// server failures, timeouts, a corrupted TLS record, a malformed or unsupported packet
    /// from the broker — is retried with back-off.
    pub fn for_error(error: Error) -> Disconnect {
        if is_fatal(error.code()) {
            Disconnect::Fatal(error)
        } else {
            Disconnect::Retriable(error)
        }
    }

    /// Whether the client reconnects by itself after this disconnection (the C face's
    /// `will_retry` reads this).
    pub fn will_retry(&self) -> bool {
        matches!(
            self,
            Disconnect::Renewal | Disconnect::KeySwitched { .. } | Disconnect::Retriable(_)
        )
    }

    /// The error behind this disconnection, if any.
    pub fn error(&self) -> Option<&Error> {
        match self {
            Disconnect::KeySwitched { error, .. }
            | Disconnect::Retriable(error)
            | Disconnect::Fatal(error) => Some(error),
            Disconnect::Renewal | Disconnect::Requested => None,
        }
    }
}

/// Whether a failure with `code` is a refusal that no retry can fix: TLS policy refusals,
/// certificate and key problems, credentials refused (with every key), an expired ready-made
/// token, the clock not set, configuration the application must change, and a hardware token
/// that refuses the PIN or no longer holds the key. Everything else (I/O, timeouts, closed
/// connections, name resolution, CONNACK 1-3, corrupted TLS records, malformed or QoS 2
/// packets from the broker, an unknown handshake failure, a token that failed and may come
/// back: `Pkcs11TokenFailed`) is retriable.
pub fn is_fatal(code: Code) -> bool {
    matches!(
        code,
        Code::TlsVersionRefused
            | Code::TlsCipherSuiteRefused
            | Code::CertExpired
            | Code::CertNotYetValid
            | Code::CertWrongHost
            | Code::CertUntrusted
            | Code::ClientCertRequired
            | Code::CertMalformed
            | Code::PrivateKeyMalformed
            | Code::ClockNotSet
            | Code::ClientCertRejected
            | Code::KeyCertMismatch
            | Code::CertInvalid
            | Code::CertDeviceMismatch
            | Code::NotAuthorized
            | Code::DeviceDisabled
            | Code::TokenExpired
            | Code::TokenMalformed
            | Code::SasKeyInvalid
            | Code::ConnectionStringInvalid
            | Code::IdInvalid
            | Code::InvalidArgument
            | Code::InvalidUtf8
            | Code::Pkcs11ModuleNotFound
            | Code::Pkcs11ModuleInvalid
            | Code::Pkcs11UriInvalid
            | Code::Pkcs11PinIncorrect
            | Code::Pkcs11PinLocked
            | Code::Pkcs11KeyNotFound
            | Code::Pkcs11KeyAmbiguous
            | Code::Pkcs11CertNotFound
            | Code::Pkcs11MechanismUnsupported
            | Code::Pkcs11Unavailable
            | Code::ProxyRefused
            | Code::ProxyAuthRequired
            | Code::WebsocketUpgradeFailed
    )
}

/// A property of a received message: decoded key, decoded value (`None` = bare key, null).
pub type Property = (String, Option<String>);

/// What the session tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The hub accepted the connection (CONNACK 0).
    Connected {
        /// Negotiated TLS version, e.g. `TLSv1.2`.
        tls_version: String,
        /// Negotiated cipher suite, IANA name.
        cipher_suite: String,
        /// The SAS key in use, when authenticating with keys.
        key: Option<KeySlot>,
        /// QoS 1 messages re-sent on this connection.
        resent: usize,
    },
    /// The hub acknowledged a QoS 1 telemetry message.
    TelemetryAcked {
        /// The id [`Session::send_telemetry`] returned.
        id: u64,
    },
    /// A cloud-to-device message.
    C2d {
        /// Its properties (system and application), decoded.
        properties: Vec<Property>,
        /// Its body.
        payload: Vec<u8>,
    },
    /// A direct method call; answer it with [`Session::respond_method`].
    MethodRequest {
        /// The method name.
        name: String,
        /// The request id to answer with.
        request_id: String,
        /// The request body (JSON).
        payload: Vec<u8>,
    },
    /// The answer to a twin GET or reported-properties PATCH.
    TwinResponse {
        /// The request id [`Session::twin_get`] or [`Session::twin_patch_reported`] returned.
        request_id: String,
        /// HTTP-like status (200 for GET, 204 for PATCH, 429/5xx retriable).
        status: u16,
        /// The twin version, when the hub sends one.
        version: Option<u64>,
        /// The twin document (GET) or empty.
        payload: Vec<u8>,
    },
    /// A desired-properties patch from the service.
    DesiredPatch {
        /// The desired-properties version.
        version: u64,
        /// The patch (JSON).
        payload: Vec<u8>,
    },
    /// The hub refused a subscription (SUBACK failure).
    SubscriptionRefused {
        /// The topic filter.
        filter: String,
    },
    /// The transport connection ended.
    Disconnected(Disconnect),
    /// A message from the hub whose topic or property bag could not be decoded. It is
    /// handed over as received (and acknowledged once taken, like any QoS 1 message); the
    /// connection stays up.
    Undecodable {
        /// The topic, as received.
        topic: String,
        /// The body, as received.
        payload: Vec<u8>,
        /// Why it could not be decoded.
        reason: Error,
    },
}

/// What the application subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subscription {
    /// Cloud-to-device messages.
    C2d,
    /// Direct methods.
    Methods,
    /// Twin responses and desired-property patches (two filters).
    Twin,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// No transport connection.
    Idle,
    /// TLS handshake and CONNECT sent, waiting for CONNACK.
    Connecting { deadline_ms: u64 },
    /// CONNACK 0 received.
    Connected,
}

struct Inflight {
    id: u64,
    topic: String,
    payload: Vec<u8>,
    /// When it was last written to a connection (`None`: queued while disconnected).
    sent_ms: Option<u64>,
}

struct Link {
    tls: ClientConnection,
    /// The encoded CONNECT (it holds the SAS token), written to `tls` once the handshake is
    /// complete: rustls would otherwise keep a plaintext copy it does not wipe until then.
    connect_packet: Option<zeroize::Zeroizing<Vec<u8>>>,
    sniffer: HelloSniffer,
    handshake_reported: bool,
    tls_version: String,
    cipher_suite: String,
    /// WebSockets between TLS and MQTT, or nothing.
    framing: Framing,
    /// The WebSocket upgrade request, written once the TLS handshake is complete.
    upgrade: Option<Vec<u8>>,
    rx: Vec<u8>,
    last_sent_ms: u64,
    ping_deadline_ms: Option<u64>,
    renew_at_ms: Option<u64>,
}

/// The sans-IO device session. See the module documentation.
pub struct Session {
    config: SessionConfig,
    state: State,
    link: Option<Link>,
    events: VecDeque<Event>,
    subscriptions: Vec<Subscription>,
    pending_subacks: BTreeMap<u16, Vec<String>>,
    inflight: BTreeMap<u16, Inflight>,
    next_pkid: u16,
    next_message_id: u64,
    next_request_id: u64,
    key_switches: u32,
    /// Transport connections started so far: inbound acknowledgements name theirs.
    generation: u64,
    /// Events taken by the application so far (absolute index of `events[0]`).
    events_taken: u64,
    /// QoS 1 messages received and not yet acknowledged, oldest first.
    pending_acks: VecDeque<PendingAck>,
    /// Most bytes of output that may wait to be taken by [`Session::poll_output`].
    unsent: usize,
}

/// A received QoS 1 message waiting for the application: its PUBACK is sent when the
/// application has taken the event ([`Session::acknowledge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundAck {
    generation: u64,
    pkid: u16,
}

#[derive(Clone, Copy, Debug)]
struct PendingAck {
    /// Absolute index of the event that carries the message.
    event: u64,
    ack: InboundAck,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("device_id", &self.config.device_id)
            .field("state", &self.state)
            .field("inflight", &self.inflight.len())
            .finish()
    }
}

fn filters(sub: Subscription, device: &str) -> Result<Vec<String>> {
    Ok(match sub {
        Subscription::C2d => vec![topics::build_string(|s| {
            topics::c2d_subscribe_topic_to(s, device)
        })?],
        Subscription::Methods => vec![topics::METHODS_SUBSCRIBE_TOPIC.to_owned()],
        Subscription::Twin => vec![
            topics::TWIN_RESPONSE_SUBSCRIBE_TOPIC.to_owned(),
            topics::TWIN_DESIRED_SUBSCRIBE_TOPIC.to_owned(),
        ],
    })
}

impl Session {
    /// A session for `config`; validates ids and options. Not connected yet.
    pub fn new(config: SessionConfig) -> Result<Session> {
        config.validate()?;
        Ok(Session {
            config,
            state: State::Idle,
            link: None,
            events: VecDeque::new(),
            subscriptions: Vec::new(),
            pending_subacks: BTreeMap::new(),
            inflight: BTreeMap::new(),
            next_pkid: 1,
            next_message_id: 1,
            next_request_id: 1,
            key_switches: 0,
            generation: 0,
            events_taken: 0,
            pending_acks: VecDeque::new(),
            unsent: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Replaces the credentials (key rotation, new token); used from the next
    /// [`Session::connect`] on.
    pub fn set_credential(&mut self, credential: Credential) -> Result<()> {
        if matches!(credential, Credential::X509) && !self.config.has_client_cert {
            return Err(Error::new(
                Code::InvalidArgument,
                "X.509 credentials need a TLS configuration with a client certificate",
            ));
        }
        self.config.credential = credential;
        Ok(())
    }

    /// Whether the next connections carry MQTT over WebSockets
    /// ([`SessionOptions::websockets`]); the blocking client's `auto` transport switches
    /// to it.
    pub fn set_websockets(&mut self, websockets: bool) {
        self.config.options.websockets = websockets;
    }

    /// Whether the hub has accepted the current connection.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Whether a transport connection is in use (connecting or connected).
    pub fn is_active(&self) -> bool {
        self.state != State::Idle
    }

    /// QoS 1 messages sent or queued and not yet acknowledged.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Starts a connection over a transport the driver has just opened: TLS handshake,
    /// then CONNECT with a fresh SAS token (valid for the configured lifetime from
    /// `now_ms`). Subscriptions and unacknowledged messages are restored after CONNACK.
    pub fn connect(&mut self, now_ms: u64) -> Result<()> {
        if self.state != State::Idle {
            return Err(Error::new(
                Code::InvalidState,
                "the session already has a connection; report its loss first",
            ));
        }
        let now_unix = now_ms / 1000;
        self.warn_if_certificate_expires(now_unix as i64);
        let (password, renew_at_ms) = self.password(now_unix)?;
        let name = handshake::server_name(&self.config.server_name)?;
        let mut tls = ClientConnection::new(self.config.tls.clone(), name)
            .map_err(|e| Error::new(Code::TlsHandshakeFailed, format!("TLS setup: {e}")))?;
        tls.set_buffer_limit(None);
        let cfg = &self.config;
        let client_id = topics::client_id(&cfg.device_id, cfg.module_id.as_deref())?;
        let username = topics::username(
            &cfg.hub_host,
            &cfg.device_id,
            cfg.module_id.as_deref(),
            &UsernameOptions {
                api_version: cfg.options.api_version.as_deref(),
                client_type: cfg.options.client_type.as_deref(),
                model_id: cfg.options.model_id.as_deref(),
            },
        )?;
        let connect = Connect {
            client_id: &client_id,
            username: Some(&username),
            password: password.as_deref().map(|p| p.as_str()),
            keep_alive_s: cfg.options.keep_alive_secs,
            clean_session: true,
            will: None,
        };
        let bytes =
            zeroize::Zeroizing::new(encode_to_vec(connect.encoded_len(), |b| connect.encode(b))?);
        let (framing, upgrade) = Framing::new(
            cfg.options.websockets,
            &cfg.server_name,
            cfg.has_client_cert,
            cfg.options.max_packet_size,
        )?;
        verify::clear_record();
        self.generation += 1;
        self.unsent = bytes.len();
        self.link = Some(Link {
            tls,
            connect_packet: Some(bytes),
            sniffer: HelloSniffer::default(),
            handshake_reported: false,
            tls_version: String::new(),
            cipher_suite: String::new(),
            framing,
            upgrade,
            rx: Vec::new(),
            last_sent_ms: now_ms,
            ping_deadline_ms: None,
            renew_at_ms,
        });
        self.state = State::Connecting {
            deadline_ms: now_ms.saturating_add(cfg.options.connect_timeout_ms),
        };
        Ok(())
    }

    fn warn_if_certificate_expires(&self, now_unix: i64) {
        let Some(not_after) = self.config.options.client_cert_not_after else {
            return;
        };
        let left = not_after - now_unix;
        if left <= 0 {
            crate::log!(
                crate::log::Level::Error,
                "the client certificate expired on {}: the hub will refuse it; install a new one",
                crate::cert::format_utc(not_after)
            );
        } else if left <= CERT_EXPIRY_WARNING_DAYS * 86_400 {
            crate::log!(
                crate::log::Level::Warn,
                "the client certificate expires on {} (in {} days): renew it before then",
                crate::cert::format_utc(not_after),
                left / 86_400
            );
        }
    }

    /// The MQTT password for a connection made at `now_unix`, and when to renew it.
    fn password(&self, now_unix: u64) -> Result<(Option<zeroize::Zeroizing<String>>, Option<u64>)> {
        let cfg = &self.config;
        let resource = match &cfg.module_id {
            Some(module) => Resource::Module {
                host: &cfg.hub_host,
                device: &cfg.device_id,
                module,
            },
            None => Resource::Device {
                host: &cfg.hub_host,
                device: &cfg.device_id,
            },
        };
        match &cfg.credential {
            Credential::Keys { keys, key_name } => {
                if now_unix < handshake::CLOCK_FLOOR_UNIX as u64 {
                    return Err(Error::new(
                        Code::ClockNotSet,
                        "device clock is not set (before 2025): a SAS token made now would be \
                         expired on arrival; set the time before connecting",
                    ));
                }
                let expiry = now_unix.saturating_add(cfg.options.token_ttl_secs);
                let mut buf = zeroize::Zeroizing::new([0u8; MAX_TOKEN_LEN]);
                let token = write_token(
                    &resource,
                    keys.current(),
                    key_name.as_deref(),
                    expiry,
                    &mut buf[..],
                )?;
                let renew = renew_at(now_unix, expiry).saturating_mul(1000);
                Ok((Some(zeroize::Zeroizing::new(token.to_owned())), Some(renew)))
            }
            Credential::Token(token) => {
                if now_unix >= token.expiry_unix() {
                    return Err(Error::new(
                        Code::TokenExpired,
                        "the ready-made SAS token (SharedAccessSignature) has expired; give the \
                         device a new one or its key",
                    ));
                }
                Ok((
                    Some(zeroize::Zeroizing::new(token.as_str().to_owned())),
                    None,
                ))
            }
            Credential::X509 => Ok((None, None)),
        }
    }

    /// Feeds bytes received from the transport. Errors are also reported as
    /// [`Event::Disconnected`]; after one, the transport must be closed.
    pub fn handle_input(&mut self, data: &[u8], now_ms: u64) -> Result<()> {
        let result = self.input(data, now_ms);
        if let Err(e) = &result {
            self.fail(e.clone());
        }
        result
    }

    fn input(&mut self, data: &[u8], now_ms: u64) -> Result<()> {
        let Some(link) = self.link.as_mut() else {
            return Err(Error::new(
                Code::InvalidState,
                "no connection to receive on",
            ));
        };
        if link.tls.is_handshaking() {
            link.sniffer.feed(data);
        }
        let mut rest = data;
        let mut peer_closed = false;
        while !rest.is_empty() && !peer_closed {
            link.tls
                .read_tls(&mut rest)
                .map_err(|e| Error::new(Code::Io, format!("TLS input: {e}")))?;
            if let Err(err) = link.tls.process_new_packets() {
                if link.handshake_reported {
                    // After the handshake: a corrupted or forged record, not a policy matter.
                    return Err(Error::new(
                        Code::Io,
                        format!(
                            "TLS record from {} rejected: {err}",
                            self.config.server_name
                        ),
                    ));
                }
                let ctx = handshake::Context {
                    host: self.config.server_name.clone(),
                    has_client_cert: self.config.has_client_cert,
                    sniffed: std::mem::take(&mut link.sniffer),
                    chain: verify::take_record(),
                };
                return Err(handshake::describe(&err, &ctx));
            }
            let mut buf = [0u8; 16 * 1024];
            loop {
                match link.tls.reader().read(&mut buf) {
                    Ok(0) => {
                        peer_closed = true;
                        break;
                    }
                    Ok(n) => {
                        let mut reply = Vec::new();
                        let received = link.framing.receive(&buf[..n], &mut link.rx, &mut reply);
                        // Pongs and the close reply go out even when the input ends here.
                        let _ = link.tls.writer().write_all(&reply);
                        received?;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(Error::new(Code::ConnectionClosed, format!("TLS: {e}"))),
                }
            }
        }
        if !link.handshake_reported && !link.tls.is_handshaking() {
            link.handshake_reported = true;
            link.tls_version = link
                .tls
                .protocol_version()
                .map(|v| handshake::version_name(u16::from(v)))
                .unwrap_or_default();
            link.cipher_suite = link
                .tls
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default();
            link.sniffer = HelloSniffer::default();
            if let Some(upgrade) = link.upgrade.take() {
                link.tls
                    .writer()
                    .write_all(&upgrade)
                    .map_err(|e| Error::new(Code::Io, format!("TLS buffer: {e}")))?;
            }
        }
        // The CONNECT goes once TLS (and the WebSocket upgrade, if any) is complete.
        if link.handshake_reported && link.framing.is_ready() {
            if let Some(connect) = link.connect_packet.take() {
                link.framing.write(&mut link.tls.writer(), &connect, true)?;
            }
        }
        // Packets that arrived before a close_notify (a CONNACK refusal, say) count first.
        self.read_packets(now_ms)?;
        if peer_closed && self.state != State::Idle {
            return Err(Error::new(
                Code::ConnectionClosed,
                "the hub closed the connection (TLS close_notify)",
            ));
        }
        Ok(())
    }

    fn read_packets(&mut self, now_ms: u64) -> Result<()> {
        loop {
            let Some(link) = self.link.as_mut() else {
                return Ok(());
            };
            let rx = std::mem::take(&mut link.rx);
            let consumed = match codec::decode(&rx, self.config.options.max_packet_size) {
                Ok(Decoded::Complete { packet, len }) => {
                    let result = self.handle_packet(packet, now_ms);
                    if let Some(link) = self.link.as_mut() {
                        link.rx = rx;
                        link.rx.drain(..len);
                    }
                    result?;
                    true
                }
                Ok(Decoded::Incomplete { .. }) => {
                    link.rx = rx;
                    false
                }
                Err(e) => return Err(e.context("malformed packet from the hub")),
            };
            if !consumed || self.state == State::Idle {
                return Ok(());
            }
        }
    }

    fn handle_packet(&mut self, packet: Packet<'_>, now_ms: u64) -> Result<()> {
        match packet {
            Packet::ConnAck { code, .. } => self.on_connack(code, now_ms),
            Packet::PubAck { pkid } => {
                if let Some(done) = self.inflight.remove(&pkid) {
                    self.events.push_back(Event::TelemetryAcked { id: done.id });
                }
                Ok(())
            }
            Packet::SubAck { pkid, return_codes } => {
                if let Some(filters) = self.pending_subacks.remove(&pkid) {
                    for (filter, code) in filters.into_iter().zip(return_codes) {
                        if *code == 0x80 {
                            self.events.push_back(Event::SubscriptionRefused { filter });
                        }
                    }
                }
                Ok(())
            }
            Packet::UnsubAck { .. } => Ok(()),
            Packet::PingResp => {
                if let Some(link) = self.link.as_mut() {
                    link.ping_deadline_ms = None;
                }
                Ok(())
            }
            Packet::Publish(publish) => {
                let topic = publish.topic;
                let payload = publish.payload.to_vec();
                let before = self.events.len();
                if let Err(reason) = self.on_publish(topic, payload.clone()) {
                    crate::log!(
                        crate::log::Level::Warn,
                        "undecodable message on {topic:?} handed over raw: {reason}"
                    );
                    self.events.push_back(Event::Undecodable {
                        topic: topic.to_owned(),
                        payload,
                        reason,
                    });
                }
                if publish.qos == 1 {
                    self.defer_ack(before, publish.pkid, now_ms)?;
                }
                Ok(())
            }
        }
    }

    fn on_connack(&mut self, code: codec::ConnectReturnCode, now_ms: u64) -> Result<()> {
        if let Err(refusal) = code.result() {
            let refusal = match &self.config.credential {
                Credential::X509 => refusal.context("X.509 device refused (check the thumbprint or CA registration and the device id)"),
                Credential::Token(_) => refusal.context("SAS token refused"),
                Credential::Keys { keys, .. } => refusal.context(format!(
                    "SAS token signed with the {} key refused (wrong key, disabled device, or \
                     device clock wrong)",
                    keys.in_use().name()
                )),
            };
            if refusal.code() == Code::NotAuthorized {
                if let Credential::Keys { keys, .. } = &mut self.config.credential {
                    if self.key_switches == 0 {
                        if let Some(now_using) = keys.switch() {
                            self.key_switches += 1;
                            self.close(Disconnect::KeySwitched {
                                error: refusal.clone(),
                                now_using,
                            });
                            return Ok(());
                        }
                    }
                }
                self.close(Disconnect::Fatal(refusal));
                return Ok(());
            }
            return Err(refusal);
        }
        self.key_switches = 0;
        self.state = State::Connected;
        // Restore subscriptions, then re-send what was not acknowledged, in order.
        let subs = self.subscriptions.clone();
        if !subs.is_empty() {
            self.send_subscribe(&subs, now_ms)?;
        }
        let resend = self.resend_order();
        for (pkid, topic, payload) in &resend {
            self.write_publish(topic, payload, 1, *pkid, true, now_ms)?;
            if let Some(m) = self.inflight.get_mut(pkid) {
                m.sent_ms = Some(now_ms);
            }
        }
        let link = self.link.as_ref().expect("connected sessions have a link");
        let key = match &self.config.credential {
            Credential::Keys { keys, .. } => Some(keys.in_use()),
            _ => None,
        };
        self.events.push_back(Event::Connected {
            tls_version: link.tls_version.clone(),
            cipher_suite: link.cipher_suite.clone(),
            key,
            resent: resend.len(),
        });
        Ok(())
    }

    /// The unacknowledged messages in the order the application sent them (message ids
    /// grow with each send; packet ids wrap at 65535).
    fn resend_order(&self) -> Vec<(u16, String, Vec<u8>)> {
        let mut resend: Vec<(u64, u16, String, Vec<u8>)> = self
            .inflight
            .iter()
            .map(|(pkid, m)| (m.id, *pkid, m.topic.clone(), m.payload.clone()))
            .collect();
        resend.sort_by_key(|(id, ..)| *id);
        resend
            .into_iter()
            .map(|(_, pkid, topic, payload)| (pkid, topic, payload))
            .collect()
    }

    fn on_publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<()> {
        if topic.starts_with("devices/") {
            let c2d = topics::parse_c2d_topic(topic)?;
            let mut properties = Vec::new();
            for p in parse_bag(c2d.properties) {
                let p = p?;
                properties.push((p.decoded_key()?, p.decoded_value()?));
            }
            self.events.push_back(Event::C2d {
                properties,
                payload,
            });
        } else if topic.starts_with("$iothub/methods/POST/") {
            let request = topics::parse_method_request_topic(topic)?;
            self.events.push_back(Event::MethodRequest {
                name: request.name.to_owned(),
                request_id: request.request_id.to_owned(),
                payload,
            });
        } else if topic.starts_with("$iothub/twin/") {
            match topics::parse_twin_topic(topic)? {
                TwinTopic::Response {
                    status,
                    request_id,
                    version,
                } => self.events.push_back(Event::TwinResponse {
                    request_id: request_id.to_owned(),
                    status,
                    version: version.and_then(|v| v.parse().ok()),
                    payload,
                }),
                TwinTopic::Desired { version } => self.events.push_back(Event::DesiredPatch {
                    version: version.parse().map_err(|_| {
                        Error::new(
                            Code::TopicInvalid,
                            format!("desired-properties version {version:?} is not a number"),
                        )
                    })?,
                    payload,
                }),
            }
        }
        // Anything else is not for this device: ignored.
        Ok(())
    }

    /// Moves due timers: CONNACK timeout, keep-alive ping, ping timeout, SAS renewal.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if let Err(e) = self.timeout(now_ms) {
            self.fail(e);
        }
    }

    fn timeout(&mut self, now_ms: u64) -> Result<()> {
        let keep_alive_ms = u64::from(self.config.options.keep_alive_secs) * 1000;
        match self.state {
            State::Idle => return Ok(()),
            State::Connecting { deadline_ms } if now_ms >= deadline_ms => {
                return Err(Error::new(
                    Code::Timeout,
                    format!(
                        "no CONNACK from {} within {} ms of connecting",
                        self.config.server_name, self.config.options.connect_timeout_ms
                    ),
                ));
            }
            State::Connecting { .. } => return Ok(()),
            State::Connected => {}
        }
        let link = self.link.as_mut().expect("connected sessions have a link");
        if let Some(renew) = link.renew_at_ms {
            if now_ms >= renew {
                self.send_disconnect(now_ms);
                self.close(Disconnect::Renewal);
                return Ok(());
            }
        }
        if let Some(deadline) = self.ack_deadline() {
            if now_ms >= deadline {
                return Err(Error::new(
                    Code::Timeout,
                    format!(
                        "no PUBACK from {} within the keep-alive: the connection is stalled",
                        self.config.server_name
                    ),
                ));
            }
        }
        let link = self.link.as_mut().expect("connected sessions have a link");
        if let Some(deadline) = link.ping_deadline_ms {
            if now_ms >= deadline {
                return Err(Error::new(
                    Code::Timeout,
                    format!(
                        "no PINGRESP from {} within the keep-alive",
                        self.config.server_name
                    ),
                ));
            }
        }
        if keep_alive_ms > 0
            && now_ms >= link.last_sent_ms.saturating_add(keep_alive_ms)
            && link.ping_deadline_ms.is_none()
        {
            link.ping_deadline_ms = Some(now_ms.saturating_add(keep_alive_ms));
            let ping = encode_to_vec(Ok(2), codec::encode_pingreq)?;
            self.write(&ping, now_ms)?;
        }
        Ok(())
    }

    /// When the oldest QoS 1 message written on this connection is overdue: unacknowledged
    /// for a keep-alive period means the connection is stalled even while we keep sending
    /// (which holds the keep-alive ping back).
    fn ack_deadline(&self) -> Option<u64> {
        let keep_alive_ms = u64::from(self.config.options.keep_alive_secs) * 1000;
        if keep_alive_ms == 0 || self.state != State::Connected {
            return None;
        }
        let oldest = self.inflight.values().filter_map(|m| m.sent_ms).min()?;
        Some(oldest.saturating_add(keep_alive_ms))
    }

    /// When [`Session::handle_timeout`] should next be called (Unix ms), if ever.
    pub fn next_deadline(&self) -> Option<u64> {
        match self.state {
            State::Idle => None,
            State::Connecting { deadline_ms } => Some(deadline_ms),
            State::Connected => {
                let link = self.link.as_ref()?;
                let keep_alive_ms = u64::from(self.config.options.keep_alive_secs) * 1000;
                let ping = (keep_alive_ms > 0 && link.ping_deadline_ms.is_none())
                    .then(|| link.last_sent_ms.saturating_add(keep_alive_ms));
                [
                    ping,
                    link.ping_deadline_ms,
                    link.renew_at_ms,
                    self.ack_deadline(),
                ]
                .into_iter()
                .flatten()
                .min()
            }
        }
    }

    /// Appends the bytes to send on the transport to `out`; returns how many.
    pub fn poll_output(&mut self, out: &mut Vec<u8>) -> usize {
        let Some(link) = self.link.as_mut() else {
            return 0;
        };
        let before = out.len();
        while link.tls.wants_write() {
            if link.tls.write_tls(out).is_err() {
                break;
            }
        }
        if !link.tls.wants_write() {
            self.unsent = 0;
        }
        out.len() - before
    }

    /// The next event for the application, if any. A received QoS 1 message is
    /// acknowledged to the hub now that the application has it (at-least-once): send the
    /// output afterwards.
    pub fn poll_event(&mut self) -> Option<Event> {
        let (event, ack) = self.take_event()?;
        if let Some(ack) = ack {
            self.acknowledge(ack);
        }
        Some(event)
    }

    /// The next event and, for a received QoS 1 message, the acknowledgement to pass to
    /// [`Session::acknowledge`] once the application has taken it (a driver that queues
    /// events, like [`crate::client::Client`], acknowledges when it hands the event over).
    pub fn take_event(&mut self) -> Option<(Event, Option<InboundAck>)> {
        let event = self.events.pop_front()?;
        let index = self.events_taken;
        self.events_taken += 1;
        let ack = match self.pending_acks.front() {
            Some(p) if p.event == index => self.pending_acks.pop_front().map(|p| p.ack),
            _ => None,
        };
        Some((event, ack))
    }

    /// Sends the PUBACK for a message the application has taken. Nothing is sent when the
    /// connection it arrived on has ended: the hub delivers it again.
    pub fn acknowledge(&mut self, ack: InboundAck) {
        if ack.generation != self.generation || self.state != State::Connected {
            return;
        }
        self.write_puback(ack.pkid);
    }

    /// Queues the acknowledgement of QoS 1 message `pkid`, whose event (if any) was pushed
    /// at relative index `first_event`: sent when that event is taken, or now if the
    /// message produced none (a topic not for this device).
    fn defer_ack(&mut self, first_event: usize, pkid: u16, _now_ms: u64) -> Result<()> {
        let ack = InboundAck {
            generation: self.generation,
            pkid,
        };
        if self.events.len() == first_event {
            self.acknowledge(ack);
        } else {
            self.pending_acks.push_back(PendingAck {
                event: self.events_taken + first_event as u64,
                ack,
            });
        }
        Ok(())
    }

    fn write_puback(&mut self, pkid: u16) {
        let Ok(ack) = encode_to_vec(Ok(4), |b| codec::encode_puback(pkid, b)) else {
            return;
        };
        if let Some(link) = self.link.as_mut() {
            // Control packets are not held back by the output bound.
            if link
                .framing
                .write(&mut link.tls.writer(), &ack, false)
                .is_ok()
            {
                self.unsent += ack.len();
            }
        }
    }

    /// Tells the session its transport failed or closed. Unacknowledged messages stay
    /// queued for the next connection.
    pub fn connection_lost(&mut self, error: Error) {
        if self.state != State::Idle {
            self.fail(error);
        }
    }

    /// Closes the connection gracefully (MQTT DISCONNECT, TLS close_notify): send the
    /// output, then close the transport.
    pub fn disconnect(&mut self, now_ms: u64) {
        if self.state != State::Idle {
            self.send_disconnect(now_ms);
            self.close(Disconnect::Requested);
        }
    }

    fn send_disconnect(&mut self, now_ms: u64) {
        if self.state == State::Connected {
            if let Ok(bytes) = encode_to_vec(Ok(2), codec::encode_disconnect) {
                let _ = self.write(&bytes, now_ms);
            }
        }
        if let Some(link) = self.link.as_mut() {
            link.framing.close(&mut link.tls.writer());
            link.tls.send_close_notify();
        }
    }

    fn fail(&mut self, error: Error) {
        self.close(Disconnect::for_error(error));
    }

    /// Ends the transport connection. The link's buffered output (a DISCONNECT, an alert)
    /// stays readable by [`Session::poll_output`] until the next [`Session::connect`].
    fn close(&mut self, why: Disconnect) {
        self.state = State::Idle;
        self.pending_subacks.clear();
        self.events.push_back(Event::Disconnected(why));
    }

    fn write(&mut self, bytes: &[u8], now_ms: u64) -> Result<()> {
        let link = self
            .link
            .as_mut()
            .ok_or_else(|| Error::new(Code::InvalidState, "not connected"))?;
        link.framing.write(&mut link.tls.writer(), bytes, false)?;
        link.last_sent_ms = now_ms;
        self.unsent += bytes.len();
        Ok(())
    }

    /// Refuses a new message of `len` bytes while the output bound is reached (back-pressure
    /// for QoS 0; see [`SessionOptions::max_unsent_bytes`]).
    fn reserve_output(&self, len: usize) -> Result<()> {
        let limit = self.config.options.max_unsent_bytes;
        if self.unsent > 0 && self.unsent.saturating_add(len) > limit {
            return Err(Error::new(
                Code::QueueFull,
                format!(
                    "{} bytes are waiting to be sent (limit {limit}); send the output and \
                     try again",
                    self.unsent
                ),
            ));
        }
        Ok(())
    }

    fn write_publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        pkid: u16,
        dup: bool,
        now_ms: u64,
    ) -> Result<()> {
        let publish = Publish {
            topic,
            payload,
            qos,
            pkid,
            dup,
        };
        let len = publish.encoded_len()?;
        if !dup {
            self.reserve_output(len)?;
        }
        let bytes = encode_to_vec(Ok(len), |b| publish.encode(b))?;
        self.write(&bytes, now_ms)
    }

    fn allocate_pkid(&mut self) -> u16 {
        loop {
            let pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&pkid) && !self.pending_subacks.contains_key(&pkid) {
                return pkid;
            }
        }
    }

    /// Sends a telemetry message with `properties` (system properties such as `$.ct` and
    /// application properties), QoS 0 or 1. Returns the message id that
    /// [`Event::TelemetryAcked`] will carry (QoS 1).
    ///
    /// QoS 1 messages may be queued while disconnected; they are sent on the next
    /// connection. QoS 0 messages need a connection (`InvalidState` otherwise).
    pub fn send_telemetry(
        &mut self,
        payload: &[u8],
        properties: &PropertyBag,
        qos: u8,
        now_ms: u64,
    ) -> Result<u64> {
        if qos > 1 {
            return Err(Error::new(
                Code::MqttQosUnsupported,
                format!("QoS {qos} is not supported by IoT Hub (use 0 or 1)"),
            ));
        }
        topics::check_message_size(properties.as_str().len(), payload.len())?;
        let topic = topics::telemetry_topic(
            &self.config.device_id,
            self.config.module_id.as_deref(),
            properties.as_str(),
        )?;
        if qos == 0 {
            if self.state != State::Connected {
                return Err(Error::new(
                    Code::InvalidState,
                    "QoS 0 telemetry needs a connection (QoS 1 messages are queued instead)",
                ));
            }
            self.write_publish(&topic, payload, 0, 0, false, now_ms)?;
            let id = self.next_message_id;
            self.next_message_id += 1;
            return Ok(id);
        }
        if self.inflight.len() >= self.config.options.max_inflight {
            return Err(Error::new(
                Code::QueueFull,
                format!(
                    "{} QoS 1 messages are waiting for acknowledgement (the limit); wait for \
                     TelemetryAcked events",
                    self.inflight.len()
                ),
            ));
        }
        let pkid = self.allocate_pkid();
        if self.state == State::Connected {
            self.write_publish(&topic, payload, 1, pkid, false, now_ms)?;
        }
        let id = self.next_message_id;
        self.next_message_id += 1;
        self.inflight.insert(
            pkid,
            Inflight {
                id,
                topic,
                payload: payload.to_vec(),
                sent_ms: (self.state == State::Connected).then_some(now_ms),
            },
        );
        Ok(id)
    }

    /// Subscribes to `sub` now if connected, and on every later connection.
    pub fn subscribe(&mut self, sub: Subscription, now_ms: u64) -> Result<()> {
        if self.subscriptions.contains(&sub) {
            return Ok(());
        }
        filters(sub, &self.config.device_id)?;
        self.subscriptions.push(sub);
        self.subscriptions.sort();
        if self.state == State::Connected {
            self.send_subscribe(&[sub], now_ms)?;
        }
        Ok(())
    }

    fn send_subscribe(&mut self, subs: &[Subscription], now_ms: u64) -> Result<()> {
        let mut all = Vec::new();
        for sub in subs {
            all.extend(filters(*sub, &self.config.device_id)?);
        }
        let pkid = self.allocate_pkid();
        let with_qos: Vec<(&str, u8)> = all.iter().map(|f| (f.as_str(), 1u8)).collect();
        let bytes = encode_to_vec(codec::subscribe_len(pkid, &with_qos), |b| {
            codec::encode_subscribe(pkid, &with_qos, b)
        })?;
        self.write(&bytes, now_ms)?;
        self.pending_subacks.insert(pkid, all);
        Ok(())
    }

    fn next_rid(&mut self) -> String {
        let rid = self.next_request_id.to_string();
        self.next_request_id += 1;
        rid
    }

    /// Requests the twin document; the answer is an [`Event::TwinResponse`] with the
    /// returned request id. Subscribes to twin topics first if needed.
    pub fn twin_get(&mut self, now_ms: u64) -> Result<String> {
        self.require_connected("a twin request")?;
        self.subscribe(Subscription::Twin, now_ms)?;
        let rid = self.next_rid();
        let topic = topics::build_string(|s| topics::twin_get_topic_to(s, &rid))?;
        self.write_publish(&topic, b"", 0, 0, false, now_ms)?;
        Ok(rid)
    }

    /// Sends a reported-properties patch (JSON); answered by an [`Event::TwinResponse`]
    /// (status 204 and the new version).
    pub fn twin_patch_reported(&mut self, json: &[u8], now_ms: u64) -> Result<String> {
        self.require_connected("a reported-properties patch")?;
        self.subscribe(Subscription::Twin, now_ms)?;
        let rid = self.next_rid();
        let topic = topics::build_string(|s| topics::twin_patch_reported_topic_to(s, &rid))?;
        self.write_publish(&topic, json, 0, 0, false, now_ms)?;
        Ok(rid)
    }

    /// Answers a direct method request with `status` and a JSON body.
    pub fn respond_method(
        &mut self,
        request_id: &str,
        status: u16,
        json: &[u8],
        now_ms: u64,
    ) -> Result<()> {
        self.require_connected("a method response")?;
        let topic =
            topics::build_string(|s| topics::method_response_topic_to(s, status, request_id))?;
        self.write_publish(&topic, json, 0, 0, false, now_ms)
    }

    fn require_connected(&self, what: &str) -> Result<()> {
        if self.state == State::Connected {
            Ok(())
        } else {
            Err(Error::new(
                Code::InvalidState,
                format!("{what} needs a connection to the hub"),
            ))
        }
    }
}
