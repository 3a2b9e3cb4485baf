//! The blocking client: drives a [`Session`] over an OS socket on the caller's thread.
//!
//! [`Client::poll`] does all the work: it opens the TCP connection when one is due, moves
//! bytes between the socket and the session, fires the session's timers, reconnects with
//! exponential back-off and jitter after network failures, reconnects at once for SAS
//! renewal and key switches, and hands the application one event at a time. No thread is
//! started; nothing happens between calls.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backoff::Backoff;
use crate::defaults;
use crate::error::{Code, Error, Result};
use crate::handshake::{io_error, Dial};
use crate::log::Level;
use crate::mqtt::properties::PropertyBag;
use crate::session::{Disconnect, Event, InboundAck, Session, SessionConfig, Subscription};
use crate::transport::proxy::Proxy;
use crate::transport::{unreachable, Transport};

/// How the client reaches the hub and retries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// TCP port of MQTT (default [`defaults::PORT`], IoT Hub's MQTT port 8883).
    pub port: u16,
    /// TCP port of MQTT over WebSockets (default [`defaults::WEBSOCKET_PORT`], 443).
    pub websocket_port: u16,
    /// MQTT, WebSockets, or MQTT falling back to WebSockets (default MQTT).
    pub transport: Transport,
    /// The HTTP proxy to tunnel through with CONNECT (`None`: direct). See
    /// [`options_from_env`] for the environment's.
    pub proxy: Option<Proxy>,
    /// Timeout for resolving and the TCP connection (default
    /// [`defaults::CONNECT_TIMEOUT_MS`], 30 s).
    pub connect_timeout: Duration,
    /// Back-off: first delay is twice this (default [`defaults::RETRY_MIN_MS`], 500 ms).
    pub retry_min_ms: u32,
    /// Back-off cap (default [`defaults::RETRY_MAX_MS`], 60 s). A connection that stays up
    /// this long resets the back-off.
    pub retry_max_ms: u32,
    /// Random jitter added to each delay, at most (default [`defaults::RETRY_JITTER_MS`],
    /// 2 s).
    pub retry_jitter_ms: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            port: defaults::PORT,
            websocket_port: defaults::WEBSOCKET_PORT,
            transport: Transport::Mqtt,
            proxy: None,
            connect_timeout: defaults::ms(defaults::CONNECT_TIMEOUT_MS),
            retry_min_ms: defaults::RETRY_MIN_MS,
            retry_max_ms: defaults::RETRY_MAX_MS,
            retry_jitter_ms: defaults::RETRY_JITTER_MS,
        }
    }
}

impl ClientOptions {
    /// Options for `transport`, with `port` meaning the port of that transport (MQTT's for
    /// `mqtt` and `auto`, the WebSocket port for `websockets`) and `websocket_port` the port
    /// `auto` falls back to; `None` keeps IoT Hub's (8883, 443).
    pub fn route(
        transport: Transport,
        port: Option<u16>,
        websocket_port: Option<u16>,
        proxy: Option<Proxy>,
    ) -> ClientOptions {
        let defaults = ClientOptions::default();
        let (port, websocket_port) = match transport {
            Transport::WebSockets => (
                defaults.port,
                port.or(websocket_port).unwrap_or(defaults.websocket_port),
            ),
            _ => (
                port.unwrap_or(defaults.port),
                websocket_port.unwrap_or(defaults.websocket_port),
            ),
        };
        ClientOptions {
            port,
            websocket_port,
            transport,
            proxy,
            ..defaults
        }
    }
}

/// The OS wall clock, Unix milliseconds.
#[doc(hidden)] // re-exported by `tether::internal`
pub fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The OS monotonic clock, milliseconds since the first call in this process: the clock a
/// [`Session`] runs its timers on (keep-alive, CONNACK, PINGRESP, back-off). It never jumps
/// when the wall clock is set.
pub fn monotonic_now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A device client over a TCP socket. Not thread-safe: use it from one thread at a time.
pub struct Client {
    session: Session,
    options: ClientOptions,
    stream: Option<TcpStream>,
    /// A connection attempt under way (it may outlast one `poll`: a slow network gets the
    /// whole connect timeout, and `poll` still returns on time).
    dialing: Option<Dial>,
    backoff: Backoff,
    /// When the next connection attempt is due (`None`: no automatic attempt).
    retry_at_ms: Option<u64>,
    attempt_started_ms: u64,
    /// When the current connection was accepted by the hub.
    connected_at_ms: Option<u64>,
    /// Events for the application, each with the acknowledgement to send once it is taken.
    events: VecDeque<(Event, Option<InboundAck>)>,
    /// Output taken from the session that the socket has not accepted yet. New output is
    /// taken only when this is empty, so the session's bound applies
    /// ([`crate::session::SessionOptions::max_unsent_bytes`]).
    out: Vec<u8>,
    /// Monotonic milliseconds ([`monotonic_now_ms`]): timers and back-off. The wall clock
    /// (tokens, certificates) is the TLS configuration's `time_provider`, read by the session.
    clock: fn() -> u64,
    /// Where renewed certificates are kept (see [`Client::enable_certificate_renewal`]).
    store: Option<Box<dyn crate::auth::store::CredentialStore>>,
    /// Whether telemetry is held for coalescing ([`Client::hold_output`]).
    hold: bool,
    /// The read timeout last set on the socket (set again only when it changes).
    read_timeout: Option<Duration>,
    /// Whether connections use WebSockets now (with `auto`: after falling back).
    websockets: bool,
    /// Whether the connection being opened or used is the first of an `auto` client
    /// (MQTT on 8883, which may fall back).
    may_fall_back: bool,
}

/// Held telemetry is sent once this many bytes wait: a full TLS record.
const RECORD_BYTES: usize = 16 * 1024;

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session", &self.session)
            .field("port", &self.port())
            .field("websockets", &self.websockets)
            .finish()
    }
}

impl Client {
    /// A client for `config`; nothing is opened until [`Client::connect`] or [`Client::poll`].
    pub fn new(config: SessionConfig, options: ClientOptions) -> Result<Client> {
        if options.port == 0 || options.websocket_port == 0 {
            return Err(Error::new(Code::InvalidArgument, "port must not be 0"));
        }
        let websockets = options.transport == Transport::WebSockets;
        let seed = system_now_ms() ^ (u64::from(std::process::id()) << 32);
        Ok(Client {
            backoff: Backoff::new(
                options.retry_min_ms,
                options.retry_max_ms,
                options.retry_jitter_ms,
                seed,
            ),
            session: Session::new(config)?,
            stream: None,
            dialing: None,
            retry_at_ms: None,
            attempt_started_ms: 0,
            connected_at_ms: None,
            events: VecDeque::new(),
            out: Vec::new(),
            clock: monotonic_now_ms,
            store: None,
            hold: false,
            read_timeout: None,
            may_fall_back: options.transport == Transport::Auto,
            websockets,
            options,
        })
        .map(|mut client: Client| {
            client.session.set_websockets(client.websockets);
            client
        })
    }

    /// The port connections go to now.
    fn port(&self) -> u16 {
        if self.websockets {
            self.options.websocket_port
        } else {
            self.options.port
        }
    }

    /// Replaces the HTTP proxy (`None`: direct), from the next connection on.
    pub fn set_proxy(&mut self, proxy: Option<Proxy>) {
        self.options.proxy = proxy;
    }

    /// Whether connections use MQTT over WebSockets now (`auto` starts with MQTT and
    /// switches when 8883 cannot be reached).
    pub fn uses_websockets(&self) -> bool {
        self.websockets
    }

    /// The session (state, in-flight count, configuration).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Renews the client certificate through the hub (see
    /// [`Session::enable_certificate_renewal`]); each renewed certificate the hub accepts is
    /// saved to `store` as the next generation.
    pub fn enable_certificate_renewal(
        &mut self,
        settings: crate::session::RenewalSettings,
        key: crate::auth::csr::DeviceKey,
        chain: Vec<Vec<u8>>,
        store: Option<Box<dyn crate::auth::store::CredentialStore>>,
    ) -> Result<()> {
        let now = (self.clock)();
        self.session
            .enable_certificate_renewal(settings, key, chain, now)?;
        self.store = store;
        self.flush()
    }

    /// Renews the client certificate now (see [`Session::renew_certificate`]).
    pub fn renew_certificate(&mut self) -> Result<()> {
        let now = (self.clock)();
        self.session.renew_certificate(now)
    }

    /// The session, for credential rotation ([`Session::set_credential`]).
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Connects and waits until the hub accepts the connection, retrying network failures
    /// with back-off within `timeout`. Refusals that a retry will not fix (TLS policy,
    /// credentials) are returned at once. Events, the CONNECTED one included, are kept for
    /// [`Client::poll`].
    pub fn connect(&mut self, timeout: Duration) -> Result<()> {
        if self.session.is_connected() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        if self.stream.is_none() && self.dialing.is_none() {
            self.retry_at_ms = Some((self.clock)());
        }
        let mut kept = VecDeque::new();
        let mut last_error = None;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(last_error.unwrap_or_else(|| {
                    Error::new(Code::Timeout, format!("not connected within {timeout:?}"))
                }));
            }
            match self.next_event(left)? {
                Some((connected @ Event::Connected { .. }, ack)) => {
                    // The application sees the connection too (TLS version, suite, key).
                    kept.push_back((connected, ack));
                    break Ok(());
                }
                Some((Event::Disconnected(Disconnect::Fatal(e)), _)) => break Err(e),
                Some((Event::Disconnected(why), _)) => {
                    if let Some(e) = why.error() {
                        last_error = Some(e.clone());
                    }
                }
                // Kept for `poll`, unacknowledged until the application takes it.
                Some(other) => kept.push_back(other),
                None => {}
            }
        };
        kept.append(&mut self.events);
        self.events = kept;
        result
    }

    /// Runs the connection for up to `timeout` and returns the next event, or `None` when
    /// nothing happened in time. Reconnects by itself after network failures (with
    /// back-off) and for SAS renewal; after a fatal refusal it waits for
    /// [`Client::connect`].
    ///
    /// A received QoS 1 message is acknowledged to the hub when this call hands it over
    /// (at-least-once: a message lost before the application has it is delivered again).
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<Event>> {
        // Held telemetry leaves before `poll` returns, even when an event is already queued.
        self.flush()?;
        let Some((event, ack)) = self.next_event(timeout)? else {
            return Ok(None);
        };
        if let Some(ack) = ack {
            self.session.acknowledge(ack);
            self.flush()?;
        }
        Ok(Some(event))
    }

    /// The next event and its pending acknowledgement, running the connection until
    /// `timeout`.
    fn next_event(&mut self, timeout: Duration) -> Result<Option<(Event, Option<InboundAck>)>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            self.step(deadline)?;
            if self.events.is_empty() && Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    fn step(&mut self, deadline: Instant) -> Result<()> {
        let now = (self.clock)();
        if self.stream.is_none() {
            if self.dialing.is_none() {
                match self.retry_at_ms {
                    Some(at) if now >= at => self.open(now),
                    _ => {}
                }
            }
            if let Some(dial) = &self.dialing {
                match dial.wait(deadline.saturating_duration_since(Instant::now())) {
                    // Still connecting when the caller's time is up: go on at the next call.
                    None => return Ok(()),
                    Some(opened) => {
                        self.dialing = None;
                        self.opened(opened, (self.clock)());
                    }
                }
            }
        }
        self.flush()?;
        self.collect_events();
        if !self.events.is_empty() {
            return Ok(());
        }
        // Wait for input, the session's next timer, the next retry, or the caller's deadline.
        let now = (self.clock)();
        let mut wait = deadline.saturating_duration_since(Instant::now());
        let next = match self.stream {
            Some(_) => self.session.next_deadline(),
            None => self.retry_at_ms,
        };
        if let Some(at) = next {
            wait = wait.min(Duration::from_millis(at.saturating_sub(now)));
        }
        if !self.out.is_empty() {
            // Output is waiting for the socket: come back soon to push it on.
            wait = wait.min(Duration::from_millis(10));
        }
        let Some(stream) = self.stream.as_mut() else {
            std::thread::sleep(wait);
            return Ok(());
        };
        // Whole milliseconds, set only when the value changes (a busy loop of `poll(0)` sets
        // it once, not before every read).
        let timeout = Some(Duration::from_millis(wait.as_millis().max(1) as u64));
        if self.read_timeout != timeout {
            stream
                .set_read_timeout(timeout)
                .map_err(|e| io_error(e, "socket"))?;
            self.read_timeout = timeout;
        }
        let mut buf = [0u8; 16 * 1024];
        match stream.read(&mut buf) {
            Ok(0) => self.session.connection_lost(Error::new(
                Code::ConnectionClosed,
                format!(
                    "{} closed the connection",
                    self.session.config().server_name
                ),
            )),
            Ok(n) => {
                let now = (self.clock)();
                let _ = self.session.handle_input(&buf[..n], now);
            }
            // A signal may interrupt a read with a timeout (EINTR even under SA_RESTART):
            // not a network failure.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => self.session.connection_lost(io_error(e, "receiving")),
        }
        self.session.handle_timeout((self.clock)());
        self.flush()?;
        self.collect_events();
        Ok(())
    }

    /// Starts opening the TCP connection (name resolution included) within the configured
    /// connect timeout; [`Client::step`] collects it, without blocking past its deadline.
    fn open(&mut self, now: u64) {
        self.retry_at_ms = None;
        self.read_timeout = None;
        self.attempt_started_ms = now;
        self.out.clear();
        let host = self.session.config().server_name.clone();
        let port = self.port();
        crate::log!(
            Level::Info,
            "connecting to {host}:{port}{}{}",
            if self.websockets {
                " (MQTT over WebSockets)"
            } else {
                ""
            },
            self.options
                .proxy
                .as_ref()
                .map(|p| format!(" through proxy {}", p.display()))
                .unwrap_or_default()
        );
        match Dial::start(
            &host,
            port,
            self.options.proxy.clone(),
            self.options.connect_timeout,
        ) {
            Ok(dial) => self.dialing = Some(dial),
            Err(e) => self.opened(Err(e), now),
        }
    }

    /// Starts the session on a newly opened connection, or reports why none was opened.
    fn opened(&mut self, opened: Result<TcpStream>, now: u64) {
        let opened = match opened {
            Err(e) if self.may_fall_back && !self.websockets && unreachable(&e) => {
                self.fall_back(&e, now);
                return;
            }
            other => other,
        };
        let opened = opened.and_then(|stream| {
            self.session.connect(now)?;
            Ok(stream)
        });
        match opened {
            Ok(stream) => {
                crate::log!(
                    Level::Debug,
                    "TCP connected to {}:{}",
                    self.session.config().server_name,
                    self.port()
                );
                self.stream = Some(stream);
            }
            Err(e) => {
                let why = Disconnect::for_error(e);
                self.after_disconnect(&why, now);
                self.events.push_back((Event::Disconnected(why), None));
            }
        }
    }

    /// `auto`: MQTT's port cannot be reached, so this and every later connection of this
    /// client use WebSockets on 443, starting now.
    fn fall_back(&mut self, error: &Error, now: u64) {
        crate::log!(
            Level::Warn,
            "{error}; port {} cannot be reached: falling back to MQTT over WebSockets on port {}",
            self.options.port,
            self.options.websocket_port
        );
        self.websockets = true;
        self.may_fall_back = false;
        self.session.set_websockets(true);
        self.retry_at_ms = Some(now);
    }

    /// Sends what the session has to send without blocking: everything written since the
    /// last flush leaves as one TLS record (per 16 KiB) in one `write`. What the socket does
    /// not accept now waits in `out` (and holds the session's output back). A write failure
    /// is a lost connection. [`Client::poll`] and every send except held telemetry flush by
    /// themselves.
    pub fn flush(&mut self) -> Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        if self.out.is_empty() {
            self.session.poll_output(&mut self.out);
        }
        if self.out.is_empty() {
            return Ok(());
        }
        if let Err(e) = write_available(stream, &mut self.out) {
            self.out.clear();
            self.session.connection_lost(io_error(e, "sending"));
        }
        Ok(())
    }

    /// Moves the session's events to the client's queue, handling disconnections.
    fn collect_events(&mut self) {
        while let Some((event, ack)) = self.session.take_event() {
            let now = (self.clock)();
            match &event {
                Event::Certificate(crate::session::CertificateEvent::Swapped {
                    chain,
                    key_pkcs8,
                    ..
                }) => {
                    if let Some(store) = self.store.as_mut() {
                        let config = self.session.config();
                        let credential = crate::auth::store::StoredCredential {
                            generation: 0,
                            hub: config.hub_host.clone(),
                            device_id: config.device_id.clone(),
                            chain: chain.clone(),
                            key_pkcs8: key_pkcs8.as_ref().map(|k| k.0.clone()),
                        };
                        if let Err(e) = store.save(&credential) {
                            crate::log!(
                                Level::Error,
                                "the renewed certificate is in use but could not be stored: {e}"
                            );
                        }
                    }
                }
                Event::Connected {
                    tls_version,
                    cipher_suite,
                    key,
                    resent,
                } => {
                    // `auto` keeps to the transport that worked.
                    self.may_fall_back = false;
                    crate::log!(
                        Level::Info,
                        "connected to {}{} ({tls_version} {cipher_suite}){}{}",
                        self.session.config().server_name,
                        if self.websockets {
                            " over WebSockets"
                        } else {
                            ""
                        },
                        key.map(|k| format!(", {} key", k.name()))
                            .unwrap_or_default(),
                        if *resent > 0 {
                            format!(", {resent} unacknowledged messages re-sent")
                        } else {
                            String::new()
                        }
                    );
                    self.connected_at_ms = Some(now);
                }
                Event::Disconnected(why) => {
                    // Send what is left (DISCONNECT, close_notify, an alert), then close.
                    let _ = self.flush();
                    self.out.clear();
                    if let Some(stream) = self.stream.take() {
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                    }
                    self.after_disconnect(why, now);
                }
                _ => {}
            }
            self.events.push_back((event, ack));
        }
    }

    /// Starts the back-off afresh after a connection that stayed up for at least the longest
    /// retry delay. A connection that the hub accepts and then loses at once (a broker that
    /// sends something we cannot take, a link that drops every record) keeps backing off
    /// instead of reconnecting at the shortest delay forever.
    fn reset_backoff_if_healthy(&mut self, now: u64) {
        if let Some(at) = self.connected_at_ms.take() {
            if now.saturating_sub(at) >= u64::from(self.options.retry_max_ms) {
                self.backoff.reset();
            }
        }
    }

    fn after_disconnect(&mut self, why: &Disconnect, now: u64) {
        match why {
            Disconnect::Renewal => {
                crate::log!(Level::Info, "renewing the SAS token: reconnecting");
                self.retry_at_ms = Some(now);
            }
            Disconnect::KeySwitched { error, now_using } => {
                crate::log!(
                    Level::Warn,
                    "{error}; retrying with the {} key",
                    now_using.name()
                );
                self.retry_at_ms = Some(now);
            }
            Disconnect::Retriable(error)
                if self.may_fall_back && !self.websockets && unreachable(error) =>
            {
                // 8883 answered TCP but the connection died before the hub accepted it (a
                // firewall that resets or swallows TLS): fall back as for a refused port.
                self.fall_back(error, now);
            }
            Disconnect::Retriable(error) => {
                self.reset_backoff_if_healthy(now);
                let took = now.saturating_sub(self.attempt_started_ms);
                let delay = self.backoff.next_delay_ms(took);
                crate::log!(
                    Level::Warn,
                    "{error}; retry {} in {delay} ms",
                    self.backoff.attempts()
                );
                self.retry_at_ms = Some(now + delay);
            }
            Disconnect::Fatal(error) => {
                crate::log!(Level::Error, "{error}; not retrying");
                self.retry_at_ms = None;
            }
            Disconnect::Requested => self.retry_at_ms = None,
        }
    }

    /// Sends telemetry (see [`Session::send_telemetry`]).
    ///
    /// When it leaves: a QoS 1 message is written to the socket before this call returns,
    /// unless output is held ([`Client::hold_output`]). QoS 0 messages, and QoS 1 messages
    /// while output is held, are coalesced: they leave together, as one TLS record per
    /// 16 KiB and one `write`, at the latest when the next [`Client::poll`] or
    /// [`Client::flush`] (or any other send, or `disconnect`) returns, or as soon as 16 KiB
    /// are waiting.
    pub fn send_telemetry(
        &mut self,
        payload: &[u8],
        properties: &PropertyBag,
        qos: u8,
    ) -> Result<u64> {
        let id = self
            .session
            .send_telemetry(payload, properties, qos, (self.clock)())?;
        if (qos == 1 && !self.hold) || self.session.unsent_bytes() >= RECORD_BYTES {
            self.flush()?;
        }
        Ok(id)
    }

    /// Holds QoS 1 telemetry for coalescing as QoS 0 always is (see
    /// [`Client::send_telemetry`] for when it leaves): for an application that sends bursts.
    /// `false` sends what is held and returns to writing each QoS 1 message at once.
    pub fn hold_output(&mut self, hold: bool) -> Result<()> {
        self.hold = hold;
        if hold {
            Ok(())
        } else {
            self.flush()
        }
    }

    /// Subscribes (see [`Session::subscribe`]).
    pub fn subscribe(&mut self, sub: Subscription) -> Result<()> {
        self.session.subscribe(sub, (self.clock)())?;
        self.flush()
    }

    /// Requests the twin (see [`Session::twin_get`]).
    pub fn twin_get(&mut self) -> Result<String> {
        let rid = self.session.twin_get((self.clock)())?;
        self.flush()?;
        Ok(rid)
    }

    /// Patches reported properties (see [`Session::twin_patch_reported`]).
    pub fn twin_patch_reported(&mut self, json: &[u8]) -> Result<String> {
        let rid = self.session.twin_patch_reported(json, (self.clock)())?;
        self.flush()?;
        Ok(rid)
    }

    /// Answers a method request (see [`Session::respond_method`]).
    pub fn respond_method(&mut self, request_id: &str, status: u16, json: &[u8]) -> Result<()> {
        self.session
            .respond_method(request_id, status, json, (self.clock)())?;
        self.flush()
    }

    /// Disconnects gracefully; no automatic reconnection follows.
    pub fn disconnect(&mut self) {
        self.session.disconnect((self.clock)());
        let _ = self.flush();
        if let (Some(stream), false) = (self.stream.as_mut(), self.out.is_empty()) {
            // The DISCONNECT and close_notify, given a short time to leave.
            let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
            let _ = stream.write_all(&self.out);
        }
        self.out.clear();
        self.collect_events();
        self.dialing = None;
        if let Some(stream) = self.stream.take() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        self.retry_at_ms = None;
    }
}

/// Writes as much of `out` as the socket takes now, without blocking; removes it from `out`.
fn write_available(stream: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    stream.set_nonblocking(true)?;
    let mut written = 0;
    let result = loop {
        if written == out.len() {
            break Ok(());
        }
        match stream.write(&out[written..]) {
            Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    out.drain(..written);
    stream.set_nonblocking(false)?;
    result
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.session.is_active() {
            self.disconnect();
        }
    }
}

/// The environment variables every example, the CLI and the bindings honour.
pub mod env {
    /// The device connection string (`HostName=...;DeviceId=...;SharedAccessKey=...`).
    pub const CONNECTION_STRING: &str = "TETHER_CONNECTION_STRING";
    /// An extra trusted CA certificate (PEM or DER file), e.g. a local hub's test CA.
    pub const CA_FILE: &str = "TETHER_CA_FILE";
    /// The port (default 8883; with `TETHER_TRANSPORT=websockets`, the WebSocket port,
    /// default 443).
    pub const PORT: &str = "TETHER_PORT";
    /// The device certificate chain (PEM or DER file) for X.509 authentication.
    pub const CERT_FILE: &str = "TETHER_CERT_FILE";
    /// The device private key (PEM or DER file) for X.509 authentication.
    pub const KEY_FILE: &str = "TETHER_KEY_FILE";
    /// The transport: `mqtt` (default), `websockets` or `auto`.
    pub const TRANSPORT: &str = crate::transport::ENV_TRANSPORT;
    /// The HTTP proxy URL (`http://[user:password@]host:port`); `HTTPS_PROXY`,
    /// `https_proxy` and `NO_PROXY` are honoured too.
    pub const PROXY: &str = crate::transport::proxy::ENV_PROXY;
    /// The PKCS#11 module (shared library) of the token holding the device key.
    pub const PKCS11_MODULE: &str = "TETHER_PKCS11_MODULE";
    /// The RFC 7512 URI of the key on the token (`pkcs11:token=...;object=...`); its
    /// certificate is read from the token.
    pub const PKCS11_URI: &str = "TETHER_PKCS11_URI";
    /// The token's user PIN (a secret: prefer a PIN callback where the environment of a
    /// process can be read by others).
    pub const PKCS11_PIN: &str = "TETHER_PKCS11_PIN";
    /// All of them. An empty variable counts as unset.
    pub const ALL: [&str; 10] = [
        TRANSPORT,
        PROXY,
        CONNECTION_STRING,
        CA_FILE,
        PORT,
        CERT_FILE,
        KEY_FILE,
        PKCS11_MODULE,
        PKCS11_URI,
        PKCS11_PIN,
    ];
}

fn env_var(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::new(
            Code::InvalidUtf8,
            format!("{name} is not valid UTF-8"),
        )),
    }
}

/// The TLS policy named by the environment: the IoT Hub defaults, plus `TETHER_CA_FILE`,
/// plus the client certificate of `TETHER_CERT_FILE`/`TETHER_KEY_FILE`, or the token key of
/// `TETHER_PKCS11_URI` (with `TETHER_PKCS11_MODULE` and `TETHER_PKCS11_PIN`).
pub fn policy_from_env() -> Result<crate::policy::TlsPolicy> {
    let mut policy = crate::policy::TlsPolicy::new();
    if let Some(ca) = env_var(env::CA_FILE)? {
        policy.add_ca_file(&ca)?;
    }
    match (env_var(env::CERT_FILE)?, env_var(env::KEY_FILE)?) {
        (Some(cert), Some(key)) => {
            policy.set_client_cert_files(&cert, &key)?;
        }
        (None, None) => {}
        _ => {
            return Err(Error::new(
                Code::InvalidArgument,
                format!("{} and {} go together", env::CERT_FILE, env::KEY_FILE),
            ))
        }
    }
    if let Some(uri) = env_var(env::PKCS11_URI)? {
        if policy.has_client_cert() {
            return Err(Error::new(
                Code::InvalidArgument,
                format!(
                    "{} and {} both name a client key: set one",
                    env::PKCS11_URI,
                    env::CERT_FILE
                ),
            ));
        }
        pkcs11_from_env(&mut policy, &uri)?;
    } else if env_var(env::PKCS11_MODULE)?.is_some() {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("{} is set without {}", env::PKCS11_MODULE, env::PKCS11_URI),
        ));
    }
    Ok(policy)
}

#[cfg(all(feature = "pkcs11", target_os = "linux"))]
fn pkcs11_from_env(policy: &mut crate::policy::TlsPolicy, uri: &str) -> Result<()> {
    use crate::auth::pkcs11::Pin;
    let module = env_var(env::PKCS11_MODULE)?;
    let pin = match env_var(env::PKCS11_PIN)? {
        Some(pin) => {
            let pin = zeroize::Zeroizing::new(pin);
            Pin::value(&pin)
        }
        None => Pin::None,
    };
    policy
        .set_client_pkcs11(module.as_deref(), uri, pin)
        .map(|_| ())
        .map_err(|e| e.context(env::PKCS11_URI))
}

#[cfg(not(all(feature = "pkcs11", target_os = "linux")))]
fn pkcs11_from_env(_: &mut crate::policy::TlsPolicy, _: &str) -> Result<()> {
    Err(crate::error::pkcs11_unavailable())
}

/// The port named by `TETHER_PORT` (default [`defaults::PORT`], 8883).
pub fn port_from_env() -> Result<u16> {
    match env_var(env::PORT)? {
        None => Ok(defaults::PORT),
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(Error::new(
                Code::InvalidArgument,
                format!("{} is \"{p}\", not a port number", env::PORT),
            )),
        },
    }
}

/// The client options the environment names: `TETHER_PORT`, `TETHER_TRANSPORT`, and the
/// proxy of `TETHER_PROXY` / `HTTPS_PROXY` / `https_proxy` unless `NO_PROXY` lists
/// `host`.
pub fn options_from_env(host: &str) -> Result<ClientOptions> {
    let port = match env_var(env::PORT)? {
        Some(_) => Some(port_from_env()?),
        None => None,
    };
    Ok(ClientOptions::route(
        Transport::from_env()?.unwrap_or_default(),
        port,
        None,
        Proxy::from_env(host)?,
    ))
}

/// A client configured entirely from the environment (see [`env`]).
pub fn client_from_env() -> Result<Client> {
    let cs = env_var(env::CONNECTION_STRING)?.ok_or_else(|| {
        Error::new(
            Code::ConnectionStringInvalid,
            format!(
                "{} is not set: export the device connection string \
                 (HostName=...;DeviceId=...;SharedAccessKey=...)",
                env::CONNECTION_STRING
            ),
        )
    })?;
    let cs = crate::auth::connection_string::ConnectionString::parse(&cs)?;
    let policy = policy_from_env()?;
    let mut config =
        SessionConfig::from_connection_string(&cs, policy.build()?, policy.has_client_cert())?;
    config.options.client_cert_not_after = policy.client_cert_not_after();
    let options = options_from_env(&config.server_name)?;
    Client::new(config, options)
}
