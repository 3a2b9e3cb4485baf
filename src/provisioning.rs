//! Device Provisioning Service: register a device and learn which IoT Hub it belongs to.
//!
//! A blocking flow over one TLS connection (the IoT Hub TLS policy) on the caller's thread:
//! CONNECT as the registration id, subscribe to `$dps/registrations/res/#`, publish the
//! registration, poll the operation as long as DPS answers 202 (waiting its `retry-after`),
//! and return the assigned hub and device id from the final 200. Throttling (429) and server
//! errors (5xx) are waited out the same way within the overall timeout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection};

use crate::auth::sas::{write_token, Resource, SasKey, MAX_TOKEN_LEN};
use crate::error::{Code, Error, Result};
use crate::handshake::{self, io_error};
use crate::mqtt::codec::{
    self, encode_to_vec, Connect, Decoded, Packet, Publish, DEFAULT_MAX_PACKET_SIZE,
};
use crate::mqtt::dps;
use crate::mqtt::topics::build_string;
use crate::transport::proxy::connect;
use crate::transport::proxy::Proxy;
use crate::transport::{unreachable, Framing, Transport};

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
    /// Its port (8883).
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
    /// The whole registration must finish within this.
    pub timeout: Duration,
    /// MQTT on `port`, MQTT over WebSockets on 443 (`/$iothub/websocket`), or `auto`
    /// (`port`, then WebSockets on 443 when it cannot be reached).
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

/// One MQTT connection over TLS over TCP, blocking.
struct Link {
    tls: ClientConnection,
    stream: TcpStream,
    rx: Vec<u8>,
    /// The layer between TLS and MQTT (WebSockets, or none).
    framing: Framing,
}

/// An owned copy of what the flow needs from a received packet.
enum Received {
    ConnAck(codec::ConnectReturnCode),
    SubAck(Vec<u8>),
    Publish { topic: String, payload: Vec<u8> },
    Other,
}

impl Link {
    /// Sends MQTT bytes (`secret`: the CONNECT, framed in wiped memory).
    fn send(&mut self, bytes: &[u8], secret: bool) -> Result<()> {
        self.framing.write(&mut self.tls.writer(), bytes, secret)?;
        self.flush()
    }

    /// Writes `bytes` into TLS as they are (the upgrade request, WebSocket replies).
    fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.tls
            .writer()
            .write_all(bytes)
            .map_err(|e| io_error(e, "TLS buffer"))?;
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        while self.tls.wants_write() {
            self.tls
                .write_tls(&mut self.stream)
                .map_err(|e| io_error(e, "sending to DPS"))?;
        }
        Ok(())
    }

    /// Sends the WebSocket upgrade request and waits for the server to accept it.
    fn upgrade(&mut self, request: &[u8], deadline: Instant) -> Result<()> {
        self.send_raw(request)?;
        while !self.framing.is_ready() {
            self.read_more(deadline)?;
        }
        Ok(())
    }

    fn receive(&mut self, deadline: Instant) -> Result<Received> {
        loop {
            match codec::decode(&self.rx, DEFAULT_MAX_PACKET_SIZE)? {
                Decoded::Complete { packet, len } => {
                    let received = match packet {
                        Packet::ConnAck { code, .. } => Received::ConnAck(code),
                        Packet::SubAck { return_codes, .. } => {
                            Received::SubAck(return_codes.to_vec())
                        }
                        Packet::Publish(p) => Received::Publish {
                            topic: p.topic.to_owned(),
                            payload: p.payload.to_vec(),
                        },
                        _ => Received::Other,
                    };
                    self.rx.drain(..len);
                    return Ok(received);
                }
                Decoded::Incomplete { .. } => {}
            }
            self.read_more(deadline)?;
        }
    }

    /// Reads from the socket once, and what TLS (and WebSockets) make of it into `rx`.
    fn read_more(&mut self, deadline: Instant) -> Result<()> {
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(Code::Timeout, "DPS did not answer in time"));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| io_error(e, "socket"))?;
            let mut buf = [0u8; 16 * 1024];
            let n = self
                .stream
                .read(&mut buf)
                .map_err(|e| io_error(e, "waiting for DPS"))?;
            if n == 0 {
                return Err(Error::new(
                    Code::ConnectionClosed,
                    "DPS closed the connection",
                ));
            }
            let mut chunk = &buf[..n];
            while !chunk.is_empty() {
                self.tls
                    .read_tls(&mut chunk)
                    .map_err(|e| io_error(e, "TLS input"))?;
                self.tls
                    .process_new_packets()
                    .map_err(|e| Error::new(Code::TlsHandshakeFailed, format!("TLS: {e}")))?;
            }
            let mut plain = [0u8; 16 * 1024];
            loop {
                match self.tls.reader().read(&mut plain) {
                    Ok(0) => {
                        return Err(Error::new(
                            Code::ConnectionClosed,
                            "DPS closed the connection",
                        ))
                    }
                    Ok(k) => {
                        let mut reply = Vec::new();
                        let received = self.framing.receive(&plain[..k], &mut self.rx, &mut reply);
                        if !reply.is_empty() {
                            self.send_raw(&reply)?;
                        }
                        received.map_err(|e| e.context("DPS"))?;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(io_error(e, "TLS")),
                }
            }
        }
        Ok(())
    }

    /// The next PUBLISH on `$dps/registrations/res/`, skipping anything else.
    fn response(&mut self, deadline: Instant) -> Result<(u16, Option<u32>, Vec<u8>)> {
        loop {
            if let Received::Publish { topic, payload } = self.receive(deadline)? {
                let parsed = dps::parse_response_topic(&topic)?;
                return Ok((parsed.status, parsed.retry_after_s, payload));
            }
        }
    }
}

fn publish(topic: &str, payload: &[u8], pkid: u16) -> Result<Vec<u8>> {
    let p = Publish {
        topic,
        payload,
        qos: 1,
        pkid,
        dup: false,
    };
    encode_to_vec(p.encoded_len(), |b| p.encode(b))
}

/// Registers the device with DPS; `now_unix` is the device clock (for the SAS token).
pub fn provision(request: &DpsRequest, now_unix: u64) -> Result<Assignment> {
    let deadline = Instant::now() + request.timeout;
    let reg = &request.registration_id;
    let scope = &request.id_scope;
    let username = build_string(|s| {
        dps::username_to(
            s,
            scope,
            reg,
            None,
            Some(&format!("tether/{}", crate::VERSION)),
        )
    })?;
    let password = match &request.credential {
        DpsCredential::SymmetricKey { key, group } => {
            if now_unix < handshake::CLOCK_FLOOR_UNIX as u64 {
                return Err(Error::new(
                    Code::ClockNotSet,
                    "device clock is not set (before 2025): set the time before provisioning",
                ));
            }
            let mut buf = zeroize::Zeroizing::new([0u8; MAX_TOKEN_LEN]);
            let resource = Resource::registration(scope, reg)?;
            let skn = group.then_some("registration");
            Some(zeroize::Zeroizing::new(
                write_token(&resource, key.as_ref(), skn, now_unix + 3600, &mut buf[..])?
                    .to_owned(),
            ))
        }
        DpsCredential::X509 => {
            if !request.has_client_cert {
                return Err(Error::new(
                    Code::InvalidArgument,
                    "X.509 provisioning needs a TLS configuration with the device certificate",
                ));
            }
            None
        }
    };
    let mut websockets = request.transport == Transport::WebSockets;
    let mut port = if websockets {
        request.websocket_port
    } else {
        request.port
    };
    crate::log!(
        crate::log::Level::Info,
        "provisioning {reg} through {}:{port}{}{}",
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
    let proxy = request.proxy.as_ref();
    let left = deadline.saturating_duration_since(Instant::now());
    let mut stream = match connect(&request.endpoint, port, proxy, left) {
        Err(e) if request.transport == Transport::Auto && unreachable(&e) => {
            crate::log!(
                crate::log::Level::Warn,
                "{e}; port {port} cannot be reached: falling back to MQTT over WebSockets on \
                 port {}",
                request.websocket_port
            );
            websockets = true;
            port = request.websocket_port;
            let left = deadline.saturating_duration_since(Instant::now());
            connect(&request.endpoint, port, proxy, left)?
        }
        other => other?,
    };
    let mut tls = ClientConnection::new(
        request.tls.clone(),
        handshake::server_name(&request.endpoint)?,
    )
    .map_err(|e| Error::new(Code::TlsHandshakeFailed, format!("TLS setup: {e}")))?;
    handshake::drive_by(
        &mut tls,
        &mut stream,
        &request.endpoint,
        request.has_client_cert,
        deadline,
    )?;
    let (framing, upgrade) = Framing::new(
        websockets,
        &request.endpoint,
        request.has_client_cert,
        DEFAULT_MAX_PACKET_SIZE,
    )?;
    let mut link = Link {
        tls,
        stream,
        rx: Vec::new(),
        framing,
    };
    if let Some(upgrade) = upgrade {
        link.upgrade(&upgrade, deadline)?;
    }

    let connect = Connect {
        client_id: reg,
        username: Some(&username),
        password: password.as_deref().map(|p| p.as_str()),
        keep_alive_s: 60,
        clean_session: true,
        will: None,
    };
    let bytes =
        zeroize::Zeroizing::new(encode_to_vec(connect.encoded_len(), |b| connect.encode(b))?);
    link.send(&bytes, true)?;
    loop {
        if let Received::ConnAck(code) = link.receive(deadline)? {
            code.result()
                .map_err(|e| e.context("DPS refused the connection"))?;
            break;
        }
    }
    let filters = [(dps::DPS_SUBSCRIBE_TOPIC, 1u8)];
    link.send(
        &encode_to_vec(codec::subscribe_len(1, &filters), |b| {
            codec::encode_subscribe(1, &filters, b)
        })?,
        false,
    )?;
    loop {
        if let Received::SubAck(codes) = link.receive(deadline)? {
            if codes.first() == Some(&0x80) {
                return Err(Error::new(
                    Code::NotAuthorized,
                    "DPS refused the response subscription",
                ));
            }
            break;
        }
    }

    let mut rid = 1u16;
    let payload = build_string(|s| dps::register_payload_to(s, reg))?;
    let topic = build_string(|s| dps::register_topic_to(s, &rid.to_string()))?;
    link.send(&publish(&topic, payload.as_bytes(), rid)?, false)?;
    loop {
        let (status, retry_after, body) = link.response(deadline)?;
        let parsed = dps::parse_response_body(&body)?;
        match status {
            200 => {
                if let Ok(bytes) = encode_to_vec(Ok(2), codec::encode_disconnect) {
                    let _ = link.send(&bytes, false);
                }
                return match (parsed.status, parsed.assigned_hub, parsed.device_id) {
                    (Some("assigned"), Some(hub), Some(device)) => {
                        dps::check_assignment(hub, device)?;
                        crate::log!(
                            crate::log::Level::Info,
                            "{reg} assigned to {hub} as {device}"
                        );
                        Ok(Assignment {
                            assigned_hub: hub.to_owned(),
                            device_id: device.to_owned(),
                        })
                    }
                    (status, ..) => Err(Error::new(
                        Code::NotAuthorized,
                        format!(
                            "DPS finished the registration with status {}: {}",
                            status.unwrap_or("(none)"),
                            parsed.error_message.unwrap_or("no hub was assigned")
                        ),
                    )),
                };
            }
            202 | 429 | 500..=599 => {
                let wait = Duration::from_secs(u64::from(retry_after.unwrap_or(3)).clamp(1, 60));
                if Instant::now() + wait >= deadline {
                    return Err(Error::new(
                        Code::Timeout,
                        format!(
                            "DPS registration of {reg} did not finish within {:?}",
                            request.timeout
                        ),
                    ));
                }
                crate::log!(
                    crate::log::Level::Info,
                    "DPS answered {status}; polling again in {} s",
                    wait.as_secs()
                );
                std::thread::sleep(wait);
                rid = rid.wrapping_add(1).max(1);
                let topic = match (status, parsed.operation_id) {
                    (202, Some(op)) => {
                        build_string(|s| dps::poll_topic_to(s, &rid.to_string(), op))?
                    }
                    // Throttled or failed before an operation existed: register again.
                    _ => build_string(|s| dps::register_topic_to(s, &rid.to_string()))?,
                };
                let body: &[u8] = if topic.contains("iotdps-register") {
                    payload.as_bytes()
                } else {
                    b""
                };
                link.send(&publish(&topic, body, rid)?, false)?;
            }
            other => {
                return Err(Error::new(
                    if other == 401 || other == 403 {
                        Code::NotAuthorized
                    } else {
                        Code::MqttConnectionRefused
                    },
                    format!(
                        "DPS refused the registration of {reg} with status {other}: {}",
                        parsed.error_message.unwrap_or("no message")
                    ),
                ))
            }
        }
    }
}
