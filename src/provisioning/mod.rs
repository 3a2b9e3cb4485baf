//! Device Provisioning Service: register a device and learn which IoT Hub it belongs to.
//!
//! The registration is a sans-IO machine, [`DpsSession`] (in `session.rs`), on the same
//! TLS + MQTT link as the device session: CONNECT as the registration id, subscribe to
//! `$dps/registrations/res/#`, publish the registration, poll the operation as long as DPS
//! answers 202 (waiting its `retry-after`), and finish with the assigned hub and device id
//! from the final 200. Throttling (429) and server errors (5xx) are waited out the same way
//! within the overall timeout. [`provision`] drives it over a TCP socket on the caller's
//! thread; firmware with its own socket drives it through `tether_dps_session_*`.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use crate::auth::sas::SasKey;
use crate::error::Result;
use crate::handshake::io_error;
use crate::transport::proxy::{connect, Proxy};
use crate::transport::{unreachable, Transport};

mod session;

pub use session::{DpsSession, DpsStatus};

/// How the device proves itself to DPS.
#[derive(Clone, Debug)]
pub enum DpsCredential {
    /// A symmetric key: the individual enrollment's key, or for a group enrollment the
    /// device key derived from the group key (`auth::dps::derive_device_key`), signed with
    /// `skn=registration`.
    SymmetricKey {
        /// The device's key.
        key: Box<SasKey>,
        /// Whether the enrollment is a group enrollment.
        group: bool,
    },
    /// The client certificate in the TLS configuration.
    X509,
}

/// A registration to perform.
#[derive(Clone, Debug)]
pub struct DpsRequest {
    /// The DPS endpoint (default `global.azure-devices-provisioning.net`).
    pub endpoint: String,
    /// Its port (default [`crate::defaults::PORT`], 8883).
    pub port: u16,
    /// The DPS instance's id scope (`0ne...`).
    pub id_scope: String,
    /// The registration id (for X.509: the certificate's CN).
    pub registration_id: String,
    /// The credential.
    pub credential: DpsCredential,
    /// The TLS configuration (the IoT Hub policy; with the certificate for X.509).
    pub tls: Arc<ClientConfig>,
    /// Whether `tls` carries a client certificate.
    pub has_client_cert: bool,
    /// The whole registration must finish within this (default
    /// [`crate::defaults::DPS_TIMEOUT_MS`], 60 s).
    pub timeout: Duration,
    /// MQTT on `port`, MQTT over WebSockets on `websocket_port` (`/$iothub/websocket`), or
    /// `auto` (`port`, then WebSockets when it cannot be reached).
    pub transport: Transport,
    /// The port of MQTT over WebSockets (443).
    pub websocket_port: u16,
    /// The HTTP proxy to tunnel through (`None`: direct).
    pub proxy: Option<Proxy>,
}

/// Where DPS assigned the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The IoT Hub host name to connect to.
    pub assigned_hub: String,
    /// The device id in that hub.
    pub device_id: String,
}

/// Registers the device with DPS; `now_unix` is the device clock (for the SAS token).
/// Blocks the calling thread: opens a TCP connection to the endpoint and drives a
/// [`DpsSession`] over it until it finishes, within the request's timeout.
pub fn provision(request: &DpsRequest, now_unix: u64) -> Result<Assignment> {
    let mut dps = DpsSession::new(request.clone())?;
    drive(&mut dps, now_unix)
}

/// Registers the device with DPS and has it issue a certificate for `csr_base64` (api-version
/// `2025-07-01-preview`): the assignment and the issued chain (DER, leaf first, not yet
/// verified: see [`crate::auth::csr::verify_issued`]). `HubRequiresMqttV5` when the assigned
/// hub speaks MQTT v5 only; `CertIssuanceRefused` when DPS assigned the device without a
/// certificate.
pub fn provision_with_csr(
    request: &DpsRequest,
    csr_base64: &str,
    now_unix: u64,
) -> Result<(Assignment, Vec<Vec<u8>>)> {
    let mut dps = DpsSession::new(request.clone())?;
    dps.set_csr(csr_base64)?;
    let assignment = drive(&mut dps, now_unix)?;
    let chain = dps.issued_chain().map(<[_]>::to_vec).ok_or_else(|| {
        crate::Error::new(
            crate::Code::CertIssuanceRefused,
            "DPS assigned the device but issued no certificate (does the enrollment have a \
             clientCertificateIssuancePolicy?)",
        )
    })?;
    crate::log!(
        crate::log::Level::Info,
        "DPS issued a certificate chain of {} to {}",
        chain.len(),
        assignment.device_id
    );
    Ok((assignment, chain))
}

/// Drives `dps` over a TCP socket to its end.
fn drive(dps: &mut DpsSession, now_unix: u64) -> Result<Assignment> {
    let request = dps.request().clone();
    let request = &request;
    // The machine's clock: the device's wall clock at the start (for the token), advanced
    // by a monotonic clock (for the deadlines).
    let began = Instant::now();
    let start_ms = now_unix.saturating_mul(1000);
    let now = || start_ms.saturating_add(began.elapsed().as_millis() as u64);
    let (mut stream, opened) = open(request)?;
    dps.set_transport(opened.transport)?;
    dps.start(now())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        out.clear();
        dps.poll_output(&mut out);
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out) {
                dps.connection_lost(io_error(e, "sending to DPS"));
            }
        }
        if let Some(outcome) = dps.outcome() {
            return outcome.clone();
        }
        let Some(deadline) = dps.next_deadline() else {
            // A live registration always has a deadline.
            return Err(crate::Error::new(
                crate::Code::InvalidState,
                "the registration stopped without an outcome",
            ));
        };
        let left = deadline.saturating_sub(now());
        if left == 0 {
            dps.handle_timeout(now());
            continue;
        }
        if let Err(e) = stream.set_read_timeout(Some(Duration::from_millis(left))) {
            dps.connection_lost(io_error(e, "socket"));
            continue;
        }
        match stream.read(&mut buf) {
            Ok(0) => dps.transport_closed(),
            Ok(n) => {
                let _ = dps.handle_input(&buf[..n], now());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                dps.handle_timeout(now())
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => dps.transport_closed(),
            Err(e) => dps.connection_lost(io_error(e, "waiting for DPS")),
        }
    }
}

/// Opens the connection for `request` (through its proxy; `auto`: MQTT's port, then the
/// WebSocket port when it cannot be reached) and returns it with the request naming the
/// transport it uses.
fn open(request: &DpsRequest) -> Result<(std::net::TcpStream, DpsRequest)> {
    let began = Instant::now();
    let mut request = request.clone();
    let websockets = request.transport == Transport::WebSockets;
    let port = if websockets {
        request.websocket_port
    } else {
        request.port
    };
    crate::log!(
        crate::log::Level::Info,
        "provisioning {} through {}:{port}{}{}",
        request.registration_id,
        request.endpoint,
        if websockets {
            " (MQTT over WebSockets)"
        } else {
            ""
        },
        request
            .proxy
            .as_ref()
            .map(|p| format!(" via proxy {}", p.display()))
            .unwrap_or_default()
    );
    let proxy = request.proxy.clone();
    let opened = match connect(&request.endpoint, port, proxy.as_ref(), request.timeout) {
        Ok(stream) => {
            if request.transport == Transport::Auto {
                request.transport = Transport::Mqtt;
            }
            Ok((stream, request))
        }
        Err(e) if request.transport == Transport::Auto && unreachable(&e) => {
            crate::log!(
                crate::log::Level::Warn,
                "{e}; port {port} cannot be reached: falling back to MQTT over WebSockets on \
                 port {}",
                request.websocket_port
            );
            let left = request.timeout.saturating_sub(began.elapsed());
            let stream = connect(
                &request.endpoint,
                request.websocket_port,
                proxy.as_ref(),
                left,
            )?;
            request.transport = Transport::WebSockets;
            Ok((stream, request))
        }
        Err(e) => Err(e),
    };
    // The registration's time includes the connection's.
    opened.map(|(stream, mut request)| {
        request.timeout = request.timeout.saturating_sub(began.elapsed());
        (stream, request)
    })
}
