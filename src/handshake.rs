//! The TLS handshake under the policy, and the words for every way it can fail.
//!
//! rustls' errors say what broke in protocol terms ("peer misbehaved: selected unoffered
//! cipher suite"). A firmware engineer needs the cause ("server chose
//! TLS_RSA_WITH_AES_128_GCM_SHA256, outside the IoT Hub policy"). Two sources of facts make
//! that possible: [`HelloSniffer`] reads the server's plaintext handshake (version, suite,
//! certificate request, alerts) from the raw bytes before rustls consumes them, and
//! [`crate::verify`] records the presented certificate chain. [`describe`] combines them.
//!
//! [`check`] is the blocking handshake behind `tether tls-check`, driven through the same
//! TLS pump as the device session and DPS (`crate::session::link`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig, PeerIncompatible};

use crate::cert::{format_utc, CertFacts};
use crate::error::{Code, Error, Result};
use crate::session::link::Link;
use crate::verify::{display_name, ChainRecord};

/// A device clock before this moment (2025-01-01) is taken as "not set".
pub const CLOCK_FLOOR_UNIX: i64 = 1_735_689_600;

/// Facts read from the server's plaintext handshake messages.
#[derive(Clone, Debug, Default)]
pub struct HelloSniffer {
    records: Vec<u8>,
    handshake: Vec<u8>,
    done: bool,
    /// The protocol version the server chose (from supported_versions when present).
    pub server_version: Option<u16>,
    /// The cipher suite the server chose.
    pub cipher_suite: Option<u16>,
    /// Whether the server asked for a client certificate.
    pub certificate_requested: bool,
    /// The first plaintext alert received: (level, description).
    pub alert: Option<(u8, u8)>,
    /// How many bytes the server sent in all.
    pub bytes_seen: usize,
}

const SNIFF_LIMIT: usize = 64 * 1024;

impl HelloSniffer {
    /// Reads bytes received from the server (call with every chunk, in order).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.bytes_seen = self.bytes_seen.saturating_add(bytes.len());
        if self.done {
            return;
        }
        self.records.extend_from_slice(bytes);
        while self.records.len() >= 5 {
            let len = u16::from_be_bytes([self.records[3], self.records[4]]) as usize;
            if self.records.len() < 5 + len {
                break;
            }
            let content_type = self.records[0];
            let body: Vec<u8> = self.records.drain(..5 + len).skip(5).collect();
            match content_type {
                22 => {
                    self.handshake.extend_from_slice(&body);
                    self.read_handshake();
                }
                21 if body.len() >= 2 && self.alert.is_none() => {
                    self.alert = Some((body[0], body[1]))
                }
                21 => {}
                _ => self.done = true, // change_cipher_spec or encrypted data: nothing more to see
            }
            if self.done || self.records.len() + self.handshake.len() > SNIFF_LIMIT {
                self.done = true;
                self.records = Vec::new();
                self.handshake = Vec::new();
                break;
            }
        }
    }

    fn read_handshake(&mut self) {
        while self.handshake.len() >= 4 {
            let len =
                u32::from_be_bytes([0, self.handshake[1], self.handshake[2], self.handshake[3]])
                    as usize;
            if self.handshake.len() < 4 + len {
                return;
            }
            let kind = self.handshake[0];
            let message: Vec<u8> = self.handshake.drain(..4 + len).skip(4).collect();
            match kind {
                2 => self.read_server_hello(&message),
                13 => self.certificate_requested = true,
                _ => {}
            }
        }
    }

    fn read_server_hello(&mut self, msg: &[u8]) {
        let Some(version) = msg.get(..2) else { return };
        self.server_version = Some(u16::from_be_bytes([version[0], version[1]]));
        let Some(&sid_len) = msg.get(34) else { return };
        let at = 35 + sid_len as usize;
        let Some(suite) = msg.get(at..at + 2) else {
            return;
        };
        self.cipher_suite = Some(u16::from_be_bytes([suite[0], suite[1]]));
        // compression method (1 byte), then extensions
        let mut ext = match msg.get(at + 5..) {
            Some(e) => e,
            None => return,
        };
        while ext.len() >= 4 {
            let kind = u16::from_be_bytes([ext[0], ext[1]]);
            let len = u16::from_be_bytes([ext[2], ext[3]]) as usize;
            let Some(data) = ext.get(4..4 + len) else {
                return;
            };
            if kind == 0x002b && data.len() == 2 {
                self.server_version = Some(u16::from_be_bytes([data[0], data[1]]));
            }
            ext = &ext[4 + len..];
        }
    }
}

/// The name of a TLS protocol version as people write it (`TLSv1.2`).
pub fn version_name(version: u16) -> String {
    match version {
        0x0300 => "SSLv3".into(),
        0x0301 => "TLSv1.0".into(),
        0x0302 => "TLSv1.1".into(),
        0x0303 => "TLSv1.2".into(),
        0x0304 => "TLSv1.3".into(),
        other => format!("unknown version 0x{other:04x}"),
    }
}

/// IANA names of the suites a device is likely to meet, for messages.
const SUITE_NAMES: &[(u16, &str)] = &[
    (0x0005, "TLS_RSA_WITH_RC4_128_SHA"),
    (0x000a, "TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA"),
    (0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA"),
    (0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA"),
    (0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA"),
    (0x003c, "TLS_RSA_WITH_AES_128_CBC_SHA256"),
    (0x003d, "TLS_RSA_WITH_AES_256_CBC_SHA256"),
    (0x009c, "TLS_RSA_WITH_AES_128_GCM_SHA256"),
    (0x009d, "TLS_RSA_WITH_AES_256_GCM_SHA384"),
    (0x009e, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0x009f, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0x1301, "TLS_AES_128_GCM_SHA256"),
    (0x1302, "TLS_AES_256_GCM_SHA384"),
    (0x1303, "TLS_CHACHA20_POLY1305_SHA256"),
    (0xc009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
    (0xc00a, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"),
    (0xc013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    (0xc014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"),
    (0xc023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"),
    (0xc024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384"),
    (0xc027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0xc028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384"),
    (0xc02b, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    (0xc02c, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    (0xc02f, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0xc030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0xcca8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xcca9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
];

/// The IANA name of a cipher suite with its code, e.g. `TLS_RSA_WITH_AES_128_GCM_SHA256 (0x009c)`.
pub fn suite_name(suite: u16) -> String {
    match SUITE_NAMES.iter().find(|(code, _)| *code == suite) {
        Some((_, name)) => format!("{name} (0x{suite:04x})"),
        None => format!("cipher suite 0x{suite:04x}"),
    }
}

fn alert_name(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::HandshakeFailure => "handshake_failure".into(),
        AlertDescription::ProtocolVersion => "protocol_version".into(),
        AlertDescription::InsufficientSecurity => "insufficient_security".into(),
        AlertDescription::BadCertificate => "bad_certificate".into(),
        AlertDescription::UnknownCA => "unknown_ca".into(),
        AlertDescription::CertificateUnknown => "certificate_unknown".into(),
        AlertDescription::CertificateRequired => "certificate_required".into(),
        AlertDescription::DecryptError => "decrypt_error".into(),
        AlertDescription::CertificateExpired => "certificate_expired".into(),
        other => format!("{other:?}"),
    }
}

fn policy_suites_text() -> &'static str {
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 \
     (and the ECDHE_ECDSA GCM pair for ECC hubs)"
}

/// What we know about a handshake when it fails.
#[derive(Debug, Default)]
pub struct Context {
    /// The host name we asked for.
    pub host: String,
    /// Whether a client certificate was configured.
    pub has_client_cert: bool,
    /// Plaintext facts from the server.
    pub sniffed: HelloSniffer,
    /// The certificate chain record, when verification ran.
    pub chain: Option<ChainRecord>,
}

/// Turns a rustls error during a handshake into a tether error that names the cause.
pub fn describe(err: &rustls::Error, ctx: &Context) -> Error {
    use rustls::Error as E;
    let sniffed = &ctx.sniffed;
    match err {
        E::PeerIncompatible(PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig)
        | E::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13)
        | E::AlertReceived(AlertDescription::ProtocolVersion) => version_refused(sniffed),
        E::PeerMisbehaved(rustls::PeerMisbehaved::SelectedUnofferedCipherSuite) => {
            let chosen = sniffed
                .cipher_suite
                .map(suite_name)
                .unwrap_or_else(|| "a suite we did not offer".into());
            Error::new(
                Code::TlsCipherSuiteRefused,
                format!(
                    "server chose the cipher suite {chosen}, outside the IoT Hub policy \
                     (allowed: {})",
                    policy_suites_text()
                ),
            )
        }
        E::AlertReceived(alert) => alert_received(*alert, ctx),
        E::InvalidCertificate(cert_err) => certificate(cert_err, ctx),
        E::NoCertificatesPresented => {
            Error::new(Code::CertInvalid, "server presented no certificate")
        }
        E::Other(other) if other.0.downcast_ref::<Error>().is_some() => {
            let e = other.0.downcast_ref::<Error>().expect("checked above");
            Error::new(
                e.code(),
                format!(
                    "TLS handshake with {} failed: {}{}",
                    ctx.host,
                    crate::auth::x509::SIGNER_ERROR_PREFIX,
                    e.message()
                ),
            )
        }
        other => Error::new(
            Code::TlsHandshakeFailed,
            format!("TLS handshake with {} failed: {other}", ctx.host),
        ),
    }
}

fn version_refused(sniffed: &HelloSniffer) -> Error {
    let offered = match sniffed.server_version {
        Some(v) if v < 0x0303 => format!("server offered {}", version_name(v)),
        _ => "server does not accept TLS 1.2 (protocol_version alert)".into(),
    };
    Error::new(
        Code::TlsVersionRefused,
        format!("{offered}; IoT Hub policy requires TLS 1.2"),
    )
}

fn alert_received(alert: AlertDescription, ctx: &Context) -> Error {
    let sniffed = &ctx.sniffed;
    let name = alert_name(alert);
    if alert == AlertDescription::CertificateRequired
        || (sniffed.certificate_requested && !ctx.has_client_cert)
    {
        return Error::new(
            Code::ClientCertRequired,
            format!(
                "server requires a client certificate (mutual TLS) and none is configured \
                 (alert {name}); configure the device certificate and key"
            ),
        );
    }
    if sniffed.certificate_requested && ctx.has_client_cert {
        return Error::new(
            Code::ClientCertRejected,
            format!(
                "server refused our client certificate (alert {name}): check that the server \
                 trusts its issuer and that it has not expired"
            ),
        );
    }
    if sniffed.server_version.is_none()
        && matches!(
            alert,
            AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity
        )
    {
        return Error::new(
            Code::TlsCipherSuiteRefused,
            format!(
                "server refused the handshake (alert {name}): it accepts none of the IoT Hub \
                 policy's cipher suites ({}); a server limited to RSA key exchange or CBC \
                 suites is outside the policy",
                policy_suites_text()
            ),
        );
    }
    Error::new(
        Code::TlsHandshakeFailed,
        format!(
            "server {} ended the TLS handshake with alert {name}",
            ctx.host
        ),
    )
}

fn which_cert(
    record: Option<&ChainRecord>,
    pick: impl Fn(&CertFacts) -> bool,
) -> Option<&CertFacts> {
    record.and_then(|r| r.chain.iter().find(|c| pick(c)))
}

fn clock_not_set(now: i64) -> Error {
    let date = format_utc(now);
    let day = date.split(' ').next().unwrap_or(&date).to_owned();
    Error::new(
        Code::ClockNotSet,
        format!("device clock is {day}: set the time (NTP or RTC) before connecting"),
    )
}

fn certificate(err: &CertificateError, ctx: &Context) -> Error {
    let record = ctx.chain.as_ref();
    let now = record.map(|r| r.now);
    match err {
        CertificateError::ExpiredContext { time, not_after } => {
            let now = time.as_secs() as i64;
            if now < CLOCK_FLOOR_UNIX {
                return clock_not_set(now);
            }
            let not_after = not_after.as_secs() as i64;
            let who = which_cert(record, |c| c.not_after == not_after)
                .map(|c| format!("certificate {}", display_name(c)))
                .unwrap_or_else(|| "a certificate in the server chain".into());
            Error::new(
                Code::CertExpired,
                format!(
                    "{who} expired on {} (device clock says {})",
                    format_utc(not_after),
                    format_utc(now)
                ),
            )
        }
        CertificateError::NotValidYetContext { time, not_before } => {
            let now = time.as_secs() as i64;
            if now < CLOCK_FLOOR_UNIX {
                return clock_not_set(now);
            }
            let not_before = not_before.as_secs() as i64;
            let who = which_cert(record, |c| c.not_before == not_before)
                .map(|c| format!("certificate {}", display_name(c)))
                .unwrap_or_else(|| "a certificate in the server chain".into());
            Error::new(
                Code::CertNotYetValid,
                format!(
                    "{who} is not valid until {} (device clock says {}); check the device clock",
                    format_utc(not_before),
                    format_utc(now)
                ),
            )
        }
        CertificateError::Expired | CertificateError::NotValidYet => match now {
            Some(now) if now < CLOCK_FLOOR_UNIX => clock_not_set(now),
            _ => Error::new(
                if matches!(err, CertificateError::Expired) {
                    Code::CertExpired
                } else {
                    Code::CertNotYetValid
                },
                format!("server certificate is outside its validity period: {err:?}"),
            ),
        },
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let presented = record
                .and_then(|r| r.chain.first())
                .map(|c| c.host_names().join(", "))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "another host".into());
            Error::new(
                Code::CertWrongHost,
                format!("certificate is for {presented}, not {}", ctx.host),
            )
        }
        CertificateError::UnknownIssuer => untrusted(record),
        // A lone self-signed certificate that says it is a CA (as `openssl req -x509` makes).
        CertificateError::Other(other)
            if format!("{other:?}").contains("CaUsedAsEndEntity")
                && record.is_some_and(|r| r.chain.len() == 1 && r.chain[0].is_self_issued()) =>
        {
            untrusted(record)
        }
        other => Error::new(
            Code::CertInvalid,
            format!("server certificate refused: {other:?}"),
        ),
    }
}

/// The chain does not end in a trusted root: name what it ends in and what is trusted.
fn untrusted(record: Option<&ChainRecord>) -> Error {
    let anchors = record.map(|r| r.anchors.join(", ")).unwrap_or_default();
    let detail = match record.and_then(|r| r.chain.last()) {
        Some(last) if last.is_self_issued() => format!(
            "server certificate {} is self-signed and is not a trusted root",
            display_name(last)
        ),
        Some(last) => format!(
            "chain not trusted: {} was issued by \"{}\", which is not a trusted root",
            display_name(last),
            last.issuer
        ),
        None => "chain not trusted: it does not end in a trusted root".into(),
    };
    Error::new(
        Code::CertUntrusted,
        format!("{detail} (trusted: {anchors}); add the CA that issued it"),
    )
}

pub(crate) fn closed_early(ctx: &Context) -> Error {
    let sniffed = &ctx.sniffed;
    if sniffed.bytes_seen == 0 {
        return Error::new(
            Code::ConnectionClosed,
            format!(
                "{} closed the connection without answering our TLS 1.2 ClientHello: it may \
                 not speak TLS on this port, or it refuses TLS 1.2 with the IoT Hub suites",
                ctx.host
            ),
        );
    }
    if sniffed.certificate_requested && !ctx.has_client_cert {
        return Error::new(
            Code::ClientCertRequired,
            "server requires a client certificate (mutual TLS) and none is configured; it \
             closed the connection",
        );
    }
    Error::new(
        Code::ConnectionClosed,
        format!(
            "{} closed the connection during the TLS handshake",
            ctx.host
        ),
    )
}

/// An I/O error during the handshake, as a tether error.
pub fn io_error(err: std::io::Error, what: &str) -> Error {
    use std::io::ErrorKind as K;
    match err.kind() {
        K::WouldBlock | K::TimedOut => Error::new(Code::Timeout, format!("{what}: timed out")),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => Error::new(
            Code::ConnectionClosed,
            format!("{what}: connection closed ({err})"),
        ),
        _ => Error::new(Code::Io, format!("{what}: {err}")),
    }
}

/// The outcome of a completed handshake.
#[derive(Clone, Debug)]
pub struct Negotiated {
    /// e.g. `TLSv1.2`.
    pub version: String,
    /// IANA suite name, e.g. `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`.
    pub suite: String,
    /// The server chain, leaf first.
    pub chain: Vec<CertFacts>,
    /// The trust anchor the chain ended in.
    pub anchor: Option<String>,
}

/// Resolves `host:port` within `timeout`. The system resolver cannot be interrupted, so
/// a lookup that overruns is left to finish on its own thread and its answer dropped.
fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<std::net::SocketAddr>> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![std::net::SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("tether-resolve".into())
        .spawn(move || {
            let _ = tx.send(
                (name.as_str(), port)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>()),
            );
        })
        .map_err(|e| Error::new(Code::Io, format!("cannot start name resolution: {e}")))?;
    let addrs = match rx.recv_timeout(timeout) {
        Ok(result) => result
            .map_err(|e| Error::new(Code::DnsFailed, format!("cannot resolve {host}: {e}")))?,
        Err(_) => {
            return Err(Error::new(
                Code::Timeout,
                format!("resolving {host} took longer than {timeout:?}"),
            ))
        }
    };
    if addrs.is_empty() {
        return Err(Error::new(
            Code::DnsFailed,
            format!("{host} has no address"),
        ));
    }
    Ok(addrs)
}

/// Opens a TCP connection to `host:port` within `timeout`, name resolution included: the
/// addresses share what is left of it.
pub fn connect_tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let deadline = std::time::Instant::now() + timeout;
    let addrs = resolve(host, port, timeout)?;
    let mut last = None;
    for addr in &addrs {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(timeout))
                    .and_then(|_| stream.set_write_timeout(Some(timeout)))
                    .and_then(|_| stream.set_nodelay(true))
                    .map_err(|e| io_error(e, "configuring the socket"))?;
                return Ok(stream);
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    let Some((addr, e)) = last else {
        return Err(Error::new(
            Code::Timeout,
            format!("TCP connection to {host}:{port} timed out after {timeout:?}"),
        ));
    };
    Err(match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Error::new(
            Code::Timeout,
            format!("TCP connection to {host}:{port} ({addr}) timed out"),
        ),
        _ => Error::new(
            Code::ConnectFailed,
            format!("cannot connect to {host}:{port} ({addr}): {e}"),
        ),
    })
}

/// A TCP connection being opened (name resolution included) while its caller goes on.
///
/// The system resolver and `connect` both block, so a driver that must return from each
/// call on time (the blocking client's `poll`) cannot run them itself without cutting a
/// slow network's attempt short. A `Dial` runs [`connect_tcp`] with the whole connect
/// timeout on one short-lived thread and hands the result over through [`Dial::wait`],
/// which never waits longer than it is asked. Dropping a `Dial` drops its result (an opened
/// socket is closed) when the thread finishes, at the latest after the timeout.
#[derive(Debug)]
pub struct Dial {
    rx: std::sync::mpsc::Receiver<Result<TcpStream>>,
}

impl Dial {
    /// Starts opening a connection to `host:port` within `timeout`, through `proxy` (HTTP
    /// CONNECT) when one is given.
    pub fn start(
        host: &str,
        port: u16,
        proxy: Option<crate::transport::proxy::Proxy>,
        timeout: Duration,
    ) -> Result<Dial> {
        let (tx, rx) = std::sync::mpsc::channel();
        let host = host.to_owned();
        std::thread::Builder::new()
            .name("tether-dial".into())
            .spawn(move || {
                let _ = tx.send(crate::transport::proxy::connect(
                    &host,
                    port,
                    proxy.as_ref(),
                    timeout,
                ));
            })
            .map_err(|e| Error::new(Code::Io, format!("cannot start connecting: {e}")))?;
        Ok(Dial { rx })
    }

    /// The outcome, waiting up to `wait` for it; `None` while the attempt goes on.
    pub fn wait(&self, wait: Duration) -> Option<Result<TcpStream>> {
        match self.rx.recv_timeout(wait) {
            Ok(result) => Some(result),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Some(Err(Error::new(
                Code::Io,
                "the connection attempt ended without a result",
            ))),
        }
    }
}

/// A server name for SNI and verification, from a host name or IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).map_err(|_| {
        Error::new(
            Code::InvalidArgument,
            format!("\"{host}\" is not a valid host name or IP address"),
        )
    })
}

/// Connects to `host:port` and completes a TLS handshake under `config` within `timeout`,
/// through the session's TLS pump ([`crate::session`]'s link), so a refusal is named the
/// same way as when a device connects: each read waits at most what is left, so a peer that
/// dribbles bytes cannot stretch the handshake.
pub fn check(
    host: &str,
    port: u16,
    config: Arc<ClientConfig>,
    has_client_cert: bool,
    timeout: Duration,
) -> Result<Negotiated> {
    check_via(host, port, None, config, has_client_cert, timeout)
}

/// [`check`] through an HTTP CONNECT proxy when `proxy` is given.
pub fn check_via(
    host: &str,
    port: u16,
    proxy: Option<&crate::transport::proxy::Proxy>,
    config: Arc<ClientConfig>,
    has_client_cert: bool,
    timeout: Duration,
) -> Result<Negotiated> {
    let deadline = std::time::Instant::now() + timeout;
    let mut link = Link::new(config, host, has_client_cert, None, None)?;
    let mut stream = crate::transport::proxy::connect(host, port, proxy, timeout)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let send = |link: &mut Link, stream: &mut TcpStream, out: &mut Vec<u8>| {
        out.clear();
        link.poll_output(out);
        stream
            .write_all(out)
            .map_err(|e| io_error(e, "sending TLS handshake"))
    };
    while link.is_handshaking() {
        send(&mut link, &mut stream, &mut out)?;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(Error::new(
                Code::Timeout,
                format!("TLS handshake with {host} did not finish in time"),
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .and_then(|_| stream.set_write_timeout(Some(left)))
            .map_err(|e| io_error(e, "socket"))?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(io_error(e, "waiting for the server's TLS handshake")),
        };
        if n == 0 {
            return Err(link.transport_closed());
        }
        if let Err(e) = link.receive(&buf[..n]) {
            let _ = send(&mut link, &mut stream, &mut out); // our alert, best effort
            return Err(e);
        }
    }
    let chain = link
        .peer_certificates()
        .iter()
        .filter_map(|c| CertFacts::from_der(c).ok())
        .collect();
    let negotiated = Negotiated {
        version: link.tls_version().to_owned(),
        suite: link.cipher_suite().to_owned(),
        chain,
        anchor: link.anchor().map(str::to_owned),
    };
    link.send_close_notify();
    let _ = send(&mut link, &mut stream, &mut out);
    Ok(negotiated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_hello(version: u16, suite: u16, supported_version: Option<u16>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&version.to_be_bytes());
        body.extend_from_slice(&[0u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&suite.to_be_bytes());
        body.push(0); // compression
        if let Some(v) = supported_version {
            body.extend_from_slice(&6u16.to_be_bytes());
            body.extend_from_slice(&[0x00, 0x2b, 0x00, 0x02]);
            body.extend_from_slice(&v.to_be_bytes());
        }
        let mut hs = vec![2, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend(body);
        hs.extend_from_slice(&[13, 0, 0, 0]); // an empty CertificateRequest
        let mut record = vec![22, 3, 3, (hs.len() >> 8) as u8, hs.len() as u8];
        record.extend(hs);
        record
    }

    #[test]
    fn sniffer_reads_version_suite_and_certificate_request_across_chunks() {
        let bytes = server_hello(0x0302, 0x009c, None);
        let mut sniffer = HelloSniffer::default();
        for chunk in bytes.chunks(3) {
            sniffer.feed(chunk);
        }
        assert_eq!(sniffer.server_version, Some(0x0302));
        assert_eq!(sniffer.cipher_suite, Some(0x009c));
        assert!(sniffer.certificate_requested);
    }

    #[test]
    fn sniffer_prefers_supported_versions_and_reads_alerts() {
        let mut bytes = server_hello(0x0303, 0x1301, Some(0x0304));
        bytes.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
        let mut sniffer = HelloSniffer::default();
        sniffer.feed(&bytes);
        assert_eq!(sniffer.server_version, Some(0x0304));
        assert_eq!(sniffer.alert, Some((2, 40)));
    }

    #[test]
    fn sniffer_survives_garbage() {
        // A handshake message claiming 16 MiB: waited for up to the limit, then given up.
        let mut sniffer = HelloSniffer::default();
        sniffer.feed(&[22, 3, 3, 0, 4, 2, 0xff, 0xff, 0xff]);
        let mut record = vec![22, 3, 3, 0x40, 0x00];
        record.resize(5 + 0x4000, 0);
        for _ in 0..20 {
            sniffer.feed(&record);
        }
        assert!(sniffer.done);
        assert_eq!(sniffer.server_version, None);
        // A ServerHello cut after its version.
        let mut sniffer = HelloSniffer::default();
        sniffer.feed(&[22, 3, 3, 0, 6, 2, 0, 0, 2, 3, 3]);
        assert_eq!(sniffer.server_version, Some(0x0303));
        assert_eq!(sniffer.cipher_suite, None);
    }

    #[test]
    fn names_versions_and_suites() {
        assert_eq!(version_name(0x0302), "TLSv1.1");
        assert_eq!(
            suite_name(0x009c),
            "TLS_RSA_WITH_AES_128_GCM_SHA256 (0x009c)"
        );
        assert_eq!(
            suite_name(0xc013),
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA (0xc013)"
        );
        assert_eq!(suite_name(0x1234), "cipher suite 0x1234");
    }

    #[test]
    fn a_1970_clock_is_named_as_such() {
        let err = rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(10)),
            not_before: rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
                1_700_000_000,
            )),
        });
        let e = describe(&err, &Context::default());
        assert_eq!(e.code(), Code::ClockNotSet);
        assert_eq!(
            e.message(),
            "device clock is 1970-01-01: set the time (NTP or RTC) before connecting"
        );
    }
}
