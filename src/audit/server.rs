//! The audit listener's side of a connection: read the device's ClientHello, audit it, and
//! optionally complete the handshake like IoT Hub would (rustls server, TLS 1.2, the hub's
//! ECDHE-RSA GCM suites) to read the device's MQTT CONNECT.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection};

use super::connect::{parse_connect, ConnectFacts, MAX_CONNECT_LEN};
use super::{audit, read_client_hello, HelloError, Report};
use crate::policy::{load_certificates, load_private_key, TlsPolicy};
use crate::session::link::{take_in, TakeIn};
use crate::{Code, Error, Result};

/// A rustls server configuration with IoT Hub's policy: TLS 1.2 only and the suites tether's
/// own policy offers (rustls has no CBC suites, so the hub's two CBC suites are missing: a
/// device offering only those gets its audit but no completed handshake).
pub fn hub_server_config(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>> {
    let policy = TlsPolicy::default();
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: policy.suites(),
        ..rustls::crypto::ring::default_provider()
    };
    let chain = load_certificates(chain_pem)?;
    let key = load_private_key(key_pem)?;
    let config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(policy.protocol_versions())
        .map_err(|e| Error::new(Code::InvalidArgument, format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::new(Code::KeyCertMismatch, format!("server certificate: {e}")))?;
    Ok(Arc::new(config))
}

/// What the listener learned from one device.
#[derive(Debug)]
pub struct Session {
    /// The audit, or why the hello could not be read.
    pub report: std::result::Result<Report, HelloError>,
    /// With a server configuration: `Ok` with the CONNECT, or why the handshake or CONNECT
    /// failed.
    pub connect: Option<Result<ConnectFacts>>,
}

/// A TLS handshake_failure alert (TLS 1.2 record), sent to devices the listener does not
/// complete a handshake with.
const HANDSHAKE_FAILURE: [u8; 7] = [21, 3, 3, 0, 2, 2, 40];

/// Serves one device on `stream`: reads and audits its hello; with `config`, completes the
/// handshake and reads its MQTT CONNECT (answered with CONNACK accepted, then the connection
/// is drained for up to `timeout` and closed). `now_unix` is the audit machine's clock.
pub fn serve(
    mut stream: TcpStream,
    config: Option<Arc<ServerConfig>>,
    timeout: Duration,
    now_unix: u64,
) -> Session {
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let (hello, bytes) = read_client_hello(&mut stream);
    let report = hello.map(|h| audit(&h));
    let Some(config) = config.filter(|_| report.is_ok()) else {
        let _ = stream.write_all(&HANDSHAKE_FAILURE);
        return Session {
            report,
            connect: None,
        };
    };
    let connect = complete(&mut stream, config, &bytes, timeout, now_unix);
    Session {
        report,
        connect: Some(connect),
    }
}

fn complete(
    stream: &mut TcpStream,
    config: Arc<ServerConfig>,
    hello: &[u8],
    timeout: Duration,
    now_unix: u64,
) -> Result<ConnectFacts> {
    let tls = |e: rustls::Error| {
        Error::new(
            Code::TlsHandshakeFailed,
            format!("handshake as the hub failed: {e}"),
        )
    };
    let io = |e: std::io::Error| crate::handshake::io_error(e, "handshake as the hub");
    let mut conn = ServerConnection::new(config).map_err(tls)?;
    let mut first = hello;
    while !first.is_empty() {
        match take_in(&mut conn, &mut first) {
            Ok(()) => {}
            Err(TakeIn::Io(e)) => return Err(io(e)),
            Err(TakeIn::Tls(e)) => {
                let _ = conn.write_tls(stream);
                return Err(tls(e));
            }
        }
    }
    while conn.is_handshaking() {
        match conn.complete_io(stream) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let _ = conn.write_tls(stream);
                return Err(Error::new(
                    Code::TlsHandshakeFailed,
                    format!("handshake as the hub failed: {e}"),
                ));
            }
            Err(e) => return Err(io(e)),
        }
    }
    let mut tls_stream = rustls::Stream::new(&mut conn, stream);
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let facts = loop {
        if let Some(facts) = parse_connect(&received, now_unix)? {
            break facts;
        }
        if received.len() > MAX_CONNECT_LEN {
            break parse_connect(&received, now_unix)?.ok_or_else(|| {
                Error::new(
                    Code::MqttPacketTooLarge,
                    "the device's CONNECT is too large",
                )
            })?;
        }
        let n = tls_stream
            .read(&mut buf)
            .map_err(|e| crate::handshake::io_error(e, "waiting for the device's MQTT CONNECT"))?;
        if n == 0 {
            return Err(Error::new(
                Code::ConnectionClosed,
                "the device closed the connection before sending MQTT CONNECT",
            ));
        }
        received.extend_from_slice(&buf[..n]);
    };
    zeroize::Zeroize::zeroize(&mut received); // the CONNECT held the password
                                              // CONNACK accepted, so the device goes on to publish and disconnect by itself.
    let _ = tls_stream.write_all(&[0x20, 0x02, 0x00, 0x00]);
    let _ = tls_stream.flush();
    let _ = stream.set_read_timeout(Some(timeout.min(Duration::from_secs(2))));
    let mut tls_stream = rustls::Stream::new(&mut conn, stream);
    while matches!(tls_stream.read(&mut buf), Ok(n) if n > 0) {}
    conn.send_close_notify();
    let _ = conn.write_tls(stream);
    Ok(facts)
}
