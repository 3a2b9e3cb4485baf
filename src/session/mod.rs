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
//! ([`Session::poll_event`]).
//!
//! Two clocks. Every input carries `now_ms`: **monotonic** milliseconds from any origin
//! (never set, never jumps), which every timer runs on: CONNACK, keep-alive, PINGRESP,
//! stall. The **wall** clock (SAS token expiry and renewal, certificate validity and expiry
//! warnings) is the TLS configuration's `time_provider`
//! ([`crate::policy::TlsPolicy::set_clock`], default the OS clock). A token is renewed when
//! the wall clock reaches its renewal time or when its lifetime up to then has passed on the
//! monotonic clock, whichever is first: setting the wall clock (NTP) neither stalls the
//! keep-alive, nor fires it at once, nor postpones a renewal.
//!
//! Many sessions on one thread (a gateway): [`Session::wants_output`] and
//! [`Session::write_output`] (as much as a non-blocking socket takes, straight from the TLS
//! layer) and [`Session::poll_deadline`] (whether the next deadline moved) serve one event
//! loop with thousands of sessions; certificate diagnostics are kept per session (per link).
//!
//! The session survives transport connections: subscriptions and unacknowledged QoS 1
//! messages are kept and restored on the next [`Session::connect`] (messages are re-sent
//! with the DUP flag), so reconnecting and SAS renewal lose nothing. The SAS token is
//! renewed by reconnecting before it expires: the session asks for it with
//! [`Disconnect::Renewal`].
//!
//! Parts, after quinn-proto's `connection/`:
//! - this file: the API, and [`State`], which owns the [`link::Link`] of the current
//!   connection;
//! - `config`: [`SessionConfig`] and [`SessionOptions`];
//! - `link`: the TLS + MQTT pump, the one place that reads, decrypts, decodes, encodes and
//!   encrypts;
//! - `timers`: one table of deadlines (CONNACK, renewal, stall, PINGRESP, keep-alive), whose
//!   minimum is [`Session::next_deadline`];
//! - `outbox`: packet ids, QoS 1 messages in flight and their re-send order, pending
//!   subscriptions, the output bound;
//! - `inbound`: decoding what the hub sends into [`Event`]s, and the acknowledgements owed.
//!
//! Every way a connection ends goes through one verb, [`Session::end`], with its
//! [`Disconnect`]: the driver's [`Session::connection_lost`] and any failure while
//! connected ([`Disconnect::for_error`]), the application's [`Session::disconnect`]
//! ([`Disconnect::Requested`]), the renewal timer ([`Disconnect::Renewal`]) and a refusal
//! by the hub (`KeySwitched` or `Fatal`).

use std::sync::Arc;

use crate::auth::connection_string::{Credential, KeySlot};
use crate::auth::sas::{renew_at, write_token, Resource, MAX_TOKEN_LEN};
use crate::error::{Code, Error, Result};
use crate::handshake;
use crate::mqtt::codec::{self, encode_to_vec, Connect, Publish, PublishFrame};
use crate::mqtt::properties::PropertyBag;
use crate::mqtt::topics::{self, TelemetryTopic, UsernameOptions};

mod config;
mod inbound;
pub(crate) mod link;
mod outbox;
mod renewal;
mod timers;

pub use config::{
    SessionConfig, SessionOptions, CERT_EXPIRY_WARNING_DAYS, DEFAULT_MAX_UNSENT_BYTES,
};
pub use inbound::InboundAck;
pub use renewal::{
    CertificateEvent, KeyBytes, RenewalSettings, ANSWER_TIMEOUT_MS, DEFAULT_RENEW_FRACTION,
};

use inbound::Inbound;
use link::Link;
use outbox::{filters, Inflight, Outbox};
use timers::{Timer, Timers};

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
            | Code::HubRequiresMqttV5
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
    /// Certificate renewal progress: requested, issued, swapped (store the new chain and
    /// key), rolled back, failed.
    Certificate(CertificateEvent),
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
    /// Certificate renewal answers (`$iothub/credentials/res/#`; the session subscribes by
    /// itself when renewal is enabled).
    Credentials,
}

/// Where the session is with its transport connection. The link of a connection lives in
/// the state, so only a connecting or connected session has one to write to.
enum State {
    /// No transport connection. `closed` is the link of the last one: its buffered output
    /// (a DISCONNECT, close_notify, an alert) stays readable by [`Session::poll_output`]
    /// until the next [`Session::connect`].
    Idle { closed: Option<Link> },
    /// TLS handshake and CONNECT sent, waiting for CONNACK.
    Connecting { link: Link },
    /// CONNACK 0 received.
    Connected { link: Link },
}

impl State {
    /// The link of a connection in use.
    fn live_link(&mut self) -> Option<&mut Link> {
        match self {
            State::Connecting { link } | State::Connected { link } => Some(link),
            State::Idle { .. } => None,
        }
    }

    /// Any link, including the closed one still holding output.
    fn any_link(&mut self) -> Option<&mut Link> {
        match self {
            State::Connecting { link } | State::Connected { link } => Some(link),
            State::Idle { closed } => closed.as_mut(),
        }
    }

    /// [`State::any_link`], to read.
    fn any_link_ref(&self) -> Option<&Link> {
        match self {
            State::Connecting { link } | State::Connected { link } => Some(link),
            State::Idle { closed } => closed.as_ref(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            State::Idle { .. } => "Idle",
            State::Connecting { .. } => "Connecting",
            State::Connected { .. } => "Connected",
        }
    }
}

/// The sans-IO device session. See the module documentation.
pub struct Session {
    config: SessionConfig,
    state: State,
    timers: Timers,
    outbox: Outbox,
    inbound: Inbound,
    subscriptions: Vec<Subscription>,
    /// The SAS token renewal time of the current connection on the monotonic clock (the
    /// token's lifetime up to its renewal, counted from the connection), armed at CONNACK.
    renew_at_ms: Option<u64>,
    /// The same moment on the wall clock, Unix ms: reached first when the wall clock is set
    /// forward.
    renew_at_wall_ms: Option<u64>,
    /// The next deadline [`Session::poll_deadline`] last reported.
    reported_deadline: Option<u64>,
    key_switches: u32,
    /// Transport connections started so far: inbound acknowledgements name theirs.
    generation: u64,
    /// Certificate renewal through the hub, when enabled.
    renewal: Option<renewal::Renewal>,
    /// The telemetry topic, built and validated once (the error for an id topics cannot carry).
    telemetry_topic: Result<TelemetryTopic>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("device_id", &self.config.device_id)
            .field("state", &self.state.name())
            .field("inflight", &self.outbox.inflight_len())
            .finish()
    }
}

impl Session {
    /// A session for `config`; validates ids and options. Not connected yet.
    pub fn new(config: SessionConfig) -> Result<Session> {
        config.validate()?;
        let keep_alive_ms = u64::from(config.options.keep_alive_secs) * 1000;
        // An id MQTT topics cannot carry ('+', '#') still connects: only what names the
        // device in a topic (telemetry, C2D) is refused, with this error.
        let telemetry_topic = TelemetryTopic::new(&config.device_id, config.module_id.as_deref());
        Ok(Session {
            telemetry_topic,
            config,
            state: State::Idle { closed: None },
            timers: Timers::new(keep_alive_ms),
            outbox: Outbox::default(),
            inbound: Inbound::default(),
            subscriptions: Vec::new(),
            renew_at_ms: None,
            renew_at_wall_ms: None,
            reported_deadline: None,
            key_switches: 0,
            generation: 0,
            renewal: None,
        })
    }

    /// Replaces the TLS configuration (a new client certificate and key, or a signer): used
    /// from the next [`Session::connect`] on; the current connection is not touched.
    pub fn set_tls_config(&mut self, tls: Arc<rustls::ClientConfig>, has_client_cert: bool) {
        self.config.tls = tls;
        self.config.has_client_cert = has_client_cert;
    }

    /// Renews the client certificate through the hub (`$iothub/credentials`) at
    /// `settings.fraction` of its validity, from then on: `key` and `chain` are the
    /// certificate in force (the one in the TLS configuration). Each renewal makes a fresh
    /// P-256 key; the session reconnects with the renewed certificate and keeps the old one
    /// until the hub accepts it. Progress comes as [`Event::Certificate`].
    pub fn enable_certificate_renewal(
        &mut self,
        settings: RenewalSettings,
        key: crate::auth::csr::DeviceKey,
        chain: Vec<Vec<u8>>,
        now_ms: u64,
    ) -> Result<()> {
        let renewal = renewal::Renewal::new(settings, &self.config.device_id, key, chain)?;
        self.config.options.client_cert_not_after = Some(renewal.not_after());
        self.renewal = Some(renewal);
        self.subscribe(Subscription::Credentials, now_ms)?;
        self.arm_cert_renewal(now_ms);
        Ok(())
    }

    /// Renews the certificate now (on demand), once connected.
    pub fn renew_certificate(&mut self, now_ms: u64) -> Result<()> {
        let wall_ms = self.wall_now_ms();
        let renewal = self.renewal.as_mut().ok_or_else(|| {
            Error::new(
                Code::InvalidState,
                "certificate renewal is not enabled on this session",
            )
        })?;
        renewal.renew_now(wall_ms);
        self.arm_cert_renewal(now_ms);
        Ok(())
    }

    /// Arms the certificate-renewal timer. The renewal machine keeps its deadlines on the
    /// wall clock (certificate validity, `operationExpires`); the timer table is monotonic, so
    /// the deadline is placed as far ahead of `now_ms` as it is ahead of the wall clock, and
    /// [`Session::timeout`] also fires it when the wall clock reaches it (a clock set forward).
    fn arm_cert_renewal(&mut self, now_ms: u64) {
        if self.is_connected() {
            let wall_ms = self.wall_now_ms();
            let due = self
                .renewal
                .as_ref()
                .and_then(|r| r.due_ms())
                .map(|at| now_ms.saturating_add(at.saturating_sub(wall_ms)));
            self.timers.set(Timer::CertRenewal, due);
        }
    }

    /// The wall clock in Unix milliseconds; 0 when it gives no time.
    fn wall_now_ms(&self) -> u64 {
        self.config
            .tls
            .time_provider
            .current_time()
            .map_or(0, |t| t.as_secs().saturating_mul(1000))
    }

    fn push_certificate_events(&mut self, events: Vec<CertificateEvent>) {
        for e in events {
            self.inbound.push(Event::Certificate(e));
        }
    }

    fn cert_renewal_due(&mut self, now_ms: u64) -> Result<()> {
        let wall_ms = self.wall_now_ms();
        let mut events = Vec::new();
        let action = match self.renewal.as_mut() {
            Some(r) => r.on_due(wall_ms, &mut events),
            None => renewal::Action::None,
        };
        self.push_certificate_events(events);
        self.renewal_action(action, now_ms)
    }

    fn on_credentials_answer(&mut self, topic: &str, payload: &[u8], now_ms: u64) -> Result<()> {
        let mut events = Vec::new();
        let tls = self.config.tls.clone();
        let wall_ms = self.wall_now_ms();
        let action = match self.renewal.as_mut() {
            Some(r) => r.on_answer(topic, payload, wall_ms, &tls, &mut events),
            None => renewal::Action::None,
        };
        self.push_certificate_events(events);
        self.renewal_action(action, now_ms)
    }

    fn renewal_action(&mut self, action: renewal::Action, now_ms: u64) -> Result<()> {
        match action {
            renewal::Action::None => {}
            renewal::Action::Send { topic, body } => {
                // QoS 1, tracked by the renewal machine (answer timeout), not the outbox.
                let pkid = self.outbox.allocate_pkid();
                self.write_untracked_publish(&topic, body.as_bytes(), 1, pkid, now_ms)?;
            }
            renewal::Action::Reconnect(tls) => {
                self.config.tls = tls;
                self.config.options.client_cert_not_after =
                    self.renewal.as_ref().map(|r| r.not_after());
                self.send_disconnect(now_ms);
                self.end(Disconnect::Renewal);
                return Ok(());
            }
        }
        self.arm_cert_renewal(now_ms);
        Ok(())
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
        matches!(self.state, State::Connected { .. })
    }

    /// Whether a transport connection is in use (connecting or connected).
    pub fn is_active(&self) -> bool {
        !matches!(self.state, State::Idle { .. })
    }

    /// QoS 1 messages sent or queued and not yet acknowledged.
    pub fn inflight(&self) -> usize {
        self.outbox.inflight_len()
    }

    /// Starts a connection over a transport the driver has just opened: TLS handshake,
    /// then CONNECT with a fresh SAS token (valid for the configured lifetime from now on the
    /// wall clock). Subscriptions and unacknowledged messages are restored after CONNACK.
    pub fn connect(&mut self, now_ms: u64) -> Result<()> {
        if self.is_active() {
            return Err(Error::new(
                Code::InvalidState,
                "the session already has a connection; report its loss first",
            ));
        }
        let now_unix = self.wall_now_unix();
        self.warn_if_certificate_expires(now_unix as i64);
        let (password, renew_at_wall_ms) = self.password(now_unix)?;
        let renew_at_ms = renew_at_wall_ms
            .map(|wall| now_ms.saturating_add(wall.saturating_sub(now_unix.saturating_mul(1000))));
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
        let connect_len = bytes.len();
        let link = Link::new(
            Arc::clone(&cfg.tls),
            &cfg.server_name,
            cfg.has_client_cert,
            Some(bytes),
            cfg.options
                .websockets
                .then_some(cfg.options.max_packet_size),
        )?;
        let connack_deadline = now_ms.saturating_add(cfg.options.connect_timeout_ms);
        self.generation += 1;
        self.outbox.unsent = connect_len;
        self.renew_at_ms = renew_at_ms;
        self.renew_at_wall_ms = renew_at_wall_ms;
        self.timers.connecting(now_ms, connack_deadline);
        self.state = State::Connecting { link };
        Ok(())
    }

    /// The wall clock (the TLS configuration's), Unix seconds; 0 when it gives no time.
    fn wall_now_unix(&self) -> u64 {
        self.config
            .tls
            .time_provider
            .current_time()
            .map_or(0, |t| t.as_secs())
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
        let live = self.is_active();
        let Some(link) = self.state.any_link() else {
            return Err(Error::new(
                Code::InvalidState,
                "no connection to receive on",
            ));
        };
        let received = link.receive(data)?;
        if !live {
            // What arrives after the connection ended (its close_notify, say) is taken
            // by its link and not acted on.
            return Ok(());
        }
        // Packets that arrived before a close_notify (a CONNACK refusal, say) count first.
        self.read_packets(now_ms)?;
        if received.peer_closed && self.is_active() {
            return Err(Error::new(
                Code::ConnectionClosed,
                "the hub closed the connection (TLS close_notify)",
            ));
        }
        Ok(())
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
                            self.end(Disconnect::KeySwitched {
                                error: refusal.clone(),
                                now_using,
                            });
                            return Ok(());
                        }
                    }
                }
                self.end(Disconnect::Fatal(refusal));
                return Ok(());
            }
            return Err(refusal);
        }
        let link = match std::mem::replace(&mut self.state, State::Idle { closed: None }) {
            State::Connecting { link } => link,
            other => {
                // A CONNACK on a connection already accepted (or ended): nothing to do.
                self.state = other;
                return Ok(());
            }
        };
        let connected = Event::Connected {
            tls_version: link.tls_version().to_owned(),
            cipher_suite: link.cipher_suite().to_owned(),
            key: match &self.config.credential {
                Credential::Keys { keys, .. } => Some(keys.in_use()),
                _ => None,
            },
            resent: self.outbox.inflight_len(),
        };
        self.key_switches = 0;
        self.state = State::Connected { link };
        self.timers.connected(self.renew_at_ms);
        if let Some(r) = self.renewal.as_mut() {
            let mut events = Vec::new();
            r.on_accepted(&mut events);
            self.push_certificate_events(events);
        }
        self.arm_cert_renewal(now_ms);
        // Restore subscriptions, then re-send what was not acknowledged, in order.
        let subs = self.subscriptions.clone();
        if !subs.is_empty() {
            self.send_subscribe(&subs, now_ms)?;
        }
        // Re-sends are not held back by the output bound (they were accepted before).
        if let State::Connected { link } = &mut self.state {
            let mut written = 0;
            let resent = self.outbox.resend(now_ms, |frame| {
                written += frame.len();
                link.write(frame)
            })?;
            if resent > 0 {
                self.timers.sent(now_ms);
                self.outbox.unsent += written;
            }
        }
        self.refresh_stall();
        self.inbound.push(connected);
        Ok(())
    }

    /// Moves every due timer: CONNACK timeout, SAS renewal (due on either clock), stalled
    /// acknowledgements, ping timeout, keep-alive ping. Afterwards the next deadline is
    /// later than `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        for _ in Timer::ALL {
            match self.timeout(now_ms) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => return self.fail(e),
            }
        }
    }

    /// Acts on the first due timer; `false` when none is due.
    fn timeout(&mut self, now_ms: u64) -> Result<bool> {
        let wall_due = self.is_connected()
            && self
                .renew_at_wall_ms
                .is_some_and(|at| self.wall_now_unix().saturating_mul(1000) >= at);
        let cert_wall_due = self.is_connected()
            && self
                .renewal
                .as_ref()
                .and_then(|r| r.due_ms())
                .is_some_and(|at| self.wall_now_ms() >= at);
        let timer = if wall_due {
            Timer::Renewal
        } else if cert_wall_due {
            Timer::CertRenewal
        } else {
            match self.timers.expired(now_ms) {
                Some(timer) => timer,
                None => return Ok(false),
            }
        };
        let server = &self.config.server_name;
        match timer {
            Timer::Connack => Err(Error::new(
                Code::Timeout,
                format!(
                    "no CONNACK from {server} within {} ms of connecting",
                    self.config.options.connect_timeout_ms
                ),
            )),
            Timer::Renewal => {
                self.send_disconnect(now_ms);
                self.end(Disconnect::Renewal);
                Ok(true)
            }
            Timer::Stall => Err(Error::new(
                Code::Timeout,
                format!("no PUBACK from {server} within the keep-alive: the connection is stalled"),
            )),
            Timer::PingResp => Err(Error::new(
                Code::Timeout,
                format!("no PINGRESP from {server} within the keep-alive"),
            )),
            Timer::KeepAlive => {
                self.timers.ping_sent(now_ms);
                let ping = encode_to_vec(Ok(2), codec::encode_pingreq)?;
                self.write(&ping, now_ms)?;
                Ok(true)
            }
            Timer::CertRenewal => {
                self.timers.set(Timer::CertRenewal, None);
                self.cert_renewal_due(now_ms)?;
                Ok(true)
            }
        }
    }

    /// Re-arms the stall timer from the oldest QoS 1 message written on this connection.
    fn refresh_stall(&mut self) {
        if self.is_connected() {
            self.timers.oldest_unacked(self.outbox.oldest_sent());
        }
    }

    /// When [`Session::handle_timeout`] should next be called (monotonic ms), if ever.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.next()
    }

    /// Whether the next deadline changed since this was last called: `Some(new)` (the new
    /// [`Session::next_deadline`], `None` inside when there is none) or `None` when it is
    /// unchanged. A loop driving many sessions calls it after feeding a session and moves
    /// that session's timer only when it changed.
    pub fn poll_deadline(&mut self) -> Option<Option<u64>> {
        let next = self.next_deadline();
        if next == self.reported_deadline {
            return None;
        }
        self.reported_deadline = next;
        Some(next)
    }

    /// Whether there are bytes to send on the transport ([`Session::write_output`] or
    /// [`Session::poll_output`]).
    pub fn wants_output(&self) -> bool {
        self.state.any_link_ref().is_some_and(|l| l.wants_write())
    }

    /// Writes the bytes to send to `out`, straight from the TLS layer's queue, until it is
    /// empty or `out` takes no more (`WouldBlock` from a non-blocking socket, or a full
    /// slice): what is not taken stays queued, in order, for the next call. Returns how many
    /// bytes were written. Errors other than `WouldBlock` and `Interrupted` are returned: the
    /// transport has failed.
    pub fn write_output(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<usize> {
        let Some(link) = self.state.any_link() else {
            return Ok(0);
        };
        let n = link.write_output(out)?;
        if !link.wants_write() {
            self.outbox.unsent = 0;
        }
        Ok(n)
    }

    /// Whether the current connection's TLS session was resumed (an abbreviated handshake;
    /// see [`crate::policy::TlsPolicy::enable_resumption`]).
    pub fn tls_resumed(&self) -> bool {
        self.state.any_link_ref().is_some_and(|l| l.resumed())
    }

    /// Bytes of packets written since the last [`Session::poll_output`] (a driver that
    /// coalesces decides from this when a record's worth is waiting).
    pub fn unsent_bytes(&self) -> usize {
        self.outbox.unsent
    }

    /// Appends the bytes to send on the transport to `out`; returns how many. This is the
    /// flush point: everything written since the last call (a burst of telemetry, PUBACKs)
    /// is encrypted as one TLS record per 16 KiB, ready for one transport write.
    pub fn poll_output(&mut self, out: &mut Vec<u8>) -> usize {
        let Some(link) = self.state.any_link() else {
            return 0;
        };
        let n = link.poll_output(out);
        if !link.wants_write() {
            self.outbox.unsent = 0;
        }
        n
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
        self.inbound.take()
    }

    /// Sends the PUBACK for a message the application has taken. Nothing is sent when the
    /// connection it arrived on has ended: the hub delivers it again.
    pub fn acknowledge(&mut self, ack: InboundAck) {
        if ack.generation != self.generation {
            return;
        }
        let State::Connected { link } = &mut self.state else {
            return;
        };
        let Ok(bytes) = encode_to_vec(Ok(4), |b| codec::encode_puback(ack.pkid, b)) else {
            return;
        };
        // Control packets are not held back by the output bound.
        if link.write(&bytes).is_ok() {
            self.outbox.unsent += bytes.len();
        }
    }

    /// Tells the session its transport failed or closed. Unacknowledged messages stay
    /// queued for the next connection.
    pub fn connection_lost(&mut self, error: Error) {
        if self.is_active() {
            self.fail(error);
        }
    }

    /// Closes the connection gracefully (MQTT DISCONNECT, TLS close_notify): send the
    /// output, then close the transport.
    pub fn disconnect(&mut self, now_ms: u64) {
        if self.is_active() {
            self.send_disconnect(now_ms);
            self.end(Disconnect::Requested);
        }
    }

    fn send_disconnect(&mut self, now_ms: u64) {
        if self.is_connected() {
            if let Ok(bytes) = encode_to_vec(Ok(2), codec::encode_disconnect) {
                let _ = self.write(&bytes, now_ms);
            }
        }
        if let Some(link) = self.state.any_link() {
            link.send_close_notify();
        }
    }

    fn fail(&mut self, error: Error) {
        self.end(Disconnect::for_error(error));
    }

    /// Ends the transport connection, for the reason `why`: the one way every connection
    /// ends. The link's buffered output (a DISCONNECT, an alert) stays readable by
    /// [`Session::poll_output`] until the next [`Session::connect`].
    fn end(&mut self, mut why: Disconnect) {
        // A renewed certificate the hub refused before accepting the connection: back to the
        // previous one, and reconnect with it.
        if matches!(self.state, State::Connecting { .. }) {
            let wall_ms = self.wall_now_ms();
            if let (Some(r), Some(error)) = (self.renewal.as_mut(), why.error().cloned()) {
                let mut events = Vec::new();
                if let Some(old) = r.on_refused(&error, wall_ms, &mut events) {
                    self.config.tls = old;
                    self.config.options.client_cert_not_after = Some(r.not_after());
                    self.push_certificate_events(events);
                    why = Disconnect::Retriable(error);
                }
            }
        }
        let closed = match std::mem::replace(&mut self.state, State::Idle { closed: None }) {
            State::Connecting { link } | State::Connected { link } => Some(link),
            State::Idle { closed } => closed,
        };
        self.state = State::Idle { closed };
        self.timers.stopped();
        self.outbox.connection_ended();
        self.inbound.push(Event::Disconnected(why));
    }

    fn write(&mut self, bytes: &[u8], now_ms: u64) -> Result<()> {
        let link = self
            .state
            .live_link()
            .ok_or_else(|| Error::new(Code::InvalidState, "not connected"))?;
        link.write(bytes)?;
        self.timers.sent(now_ms);
        self.outbox.unsent += bytes.len();
        Ok(())
    }

    /// Writes a QoS 0 PUBLISH (twin requests, method responses), encoded straight into the
    /// link's queue.
    fn write_publish(&mut self, topic: &str, payload: &[u8], now_ms: u64) -> Result<()> {
        self.write_untracked_publish(topic, payload, 0, 0, now_ms)
    }

    /// Writes a PUBLISH the outbox does not keep for re-sending (QoS 0, or a QoS 1 request
    /// whose own machine times out and asks again, such as certificate renewal).
    fn write_untracked_publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        pkid: u16,
        now_ms: u64,
    ) -> Result<()> {
        let publish = Publish {
            topic,
            payload,
            qos,
            pkid,
            dup: false,
        };
        let len = publish.encoded_len()?;
        self.outbox
            .reserve_output(len, self.config.options.max_unsent_bytes)?;
        let link = self
            .state
            .live_link()
            .ok_or_else(|| Error::fixed(Code::InvalidState, "not connected"))?;
        let queue = link.pending_mut();
        let at = queue.len();
        queue.resize(at + len, 0);
        if let Err(e) = publish.encode(&mut queue[at..]) {
            queue.truncate(at);
            return Err(e);
        }
        self.timers.sent(now_ms);
        self.outbox.unsent += len;
        Ok(())
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
        // The topic: the prefix built once, the bag (valid by construction); lengths checked.
        let topic = self
            .telemetry_topic
            .as_ref()
            .map_err(Clone::clone)?
            .parts(properties, payload.len())?;
        // A bound on the frame's size for the output limit (header at most 7 bytes).
        let len = topic[0].len() + topic[1].len() + payload.len() + 9;
        let limit = self.config.options.max_unsent_bytes;
        if qos == 0 {
            let State::Connected { link } = &mut self.state else {
                return Err(Error::new(
                    Code::InvalidState,
                    "QoS 0 telemetry needs a connection (QoS 1 messages are queued instead)",
                ));
            };
            self.outbox.reserve_output(len, limit)?;
            // Encoded straight into the link's queue: no frame of its own, no copy.
            let n = codec::append_publish(link.pending_mut(), &topic, payload, 0, 0)?;
            self.timers.sent(now_ms);
            self.outbox.unsent += n;
            return Ok(self.outbox.next_message_id());
        }
        if self.outbox.inflight_len() >= self.config.options.max_inflight {
            // A fixed message: a fast sender meets this at message rate.
            return Err(Error::fixed(
                Code::QueueFull,
                "the QoS 1 messages waiting for acknowledgement have reached the limit \
                 (SessionOptions::max_inflight); wait for TelemetryAcked events",
            ));
        }
        let connected = self.is_connected();
        if connected {
            self.outbox.reserve_output(len, limit)?;
        }
        let pkid = self.outbox.allocate_pkid();
        // Encoded once, into a buffer of an acknowledged frame when there is one; kept for
        // re-sending with the DUP flag set in place.
        let frame = PublishFrame::encode(self.outbox.frame_buffer(), &topic, payload, pkid)?;
        if connected {
            self.write(frame.as_bytes(), now_ms)?;
        }
        let id = self.outbox.next_message_id();
        self.outbox.insert(
            pkid,
            Inflight {
                id,
                frame,
                sent_ms: connected.then_some(now_ms),
            },
        );
        self.refresh_stall();
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
        if self.is_connected() {
            self.send_subscribe(&[sub], now_ms)?;
        }
        Ok(())
    }

    fn send_subscribe(&mut self, subs: &[Subscription], now_ms: u64) -> Result<()> {
        let mut all = Vec::new();
        for sub in subs {
            all.extend(filters(*sub, &self.config.device_id)?);
        }
        let pkid = self.outbox.allocate_pkid();
        let with_qos: Vec<(&str, u8)> = all.iter().map(|f| (f.as_str(), 1u8)).collect();
        let bytes = encode_to_vec(codec::subscribe_len(pkid, &with_qos), |b| {
            codec::encode_subscribe(pkid, &with_qos, b)
        })?;
        self.write(&bytes, now_ms)?;
        self.outbox.subscribed(pkid, all);
        Ok(())
    }

    /// Requests the twin document; the answer is an [`Event::TwinResponse`] with the
    /// returned request id. Subscribes to twin topics first if needed.
    pub fn twin_get(&mut self, now_ms: u64) -> Result<String> {
        self.require_connected("a twin request")?;
        self.subscribe(Subscription::Twin, now_ms)?;
        let rid = self.outbox.next_request_id();
        let topic = topics::build_string(|s| topics::twin_get_topic_to(s, &rid))?;
        self.write_publish(&topic, b"", now_ms)?;
        Ok(rid)
    }

    /// Sends a reported-properties patch (JSON); answered by an [`Event::TwinResponse`]
    /// (status 204 and the new version).
    pub fn twin_patch_reported(&mut self, json: &[u8], now_ms: u64) -> Result<String> {
        self.require_connected("a reported-properties patch")?;
        self.subscribe(Subscription::Twin, now_ms)?;
        let rid = self.outbox.next_request_id();
        let topic = topics::build_string(|s| topics::twin_patch_reported_topic_to(s, &rid))?;
        self.write_publish(&topic, json, now_ms)?;
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
        self.write_publish(&topic, json, now_ms)
    }

    fn require_connected(&self, what: &str) -> Result<()> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(Error::new(
                Code::InvalidState,
                format!("{what} needs a connection to the hub"),
            ))
        }
    }
}
