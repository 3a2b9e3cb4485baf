//! How the bytes reach the hub: the transport choice (MQTT on 8883, MQTT over WebSockets on
//! 443, or `auto`), HTTP CONNECT proxies ([`proxy`]) and the WebSocket framing ([`ws`]).

pub mod proxy;
pub mod ws;

use crate::error::{Code, Error, Result};

/// IoT Hub's MQTT port.
pub const MQTT_PORT: u16 = crate::defaults::PORT;
/// IoT Hub's MQTT-over-WebSockets port.
pub const WEBSOCKET_PORT: u16 = crate::defaults::WEBSOCKET_PORT;
/// The environment variable naming the transport (`mqtt`, `websockets`, `auto`).
pub const ENV_TRANSPORT: &str = "TETHER_TRANSPORT";

/// How a device reaches the hub.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// MQTT over TLS on 8883 (the default).
    #[default]
    Mqtt,
    /// MQTT over WebSockets over TLS on 443, path `/$iothub/websocket`.
    WebSockets,
    /// MQTT on 8883; when 8883 cannot be reached (refused, timed out, proxy refusal),
    /// WebSockets on 443 (logged), and from then on for this client.
    Auto,
}

impl Transport {
    /// All of them, with their names.
    pub const ALL: [Transport; 3] = [Transport::Mqtt, Transport::WebSockets, Transport::Auto];

    /// `mqtt`, `websockets` or `auto`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::WebSockets => "websockets",
            Transport::Auto => "auto",
        }
    }

    /// The transport named `text` (case-insensitive; `ws` and `wss` mean websockets).
    pub fn parse(text: &str) -> Result<Transport> {
        match text.trim().to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => Ok(Transport::Mqtt),
            "websockets" | "websocket" | "ws" | "wss" => Ok(Transport::WebSockets),
            "auto" => Ok(Transport::Auto),
            _ => Err(Error::new(
                Code::InvalidArgument,
                format!("transport \"{text}\": use mqtt, websockets or auto"),
            )),
        }
    }

    /// The transport `TETHER_TRANSPORT` names (`None` when unset or empty).
    pub fn from_env() -> Result<Option<Transport>> {
        match std::env::var(ENV_TRANSPORT) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => Transport::parse(&v)
                .map(Some)
                .map_err(|e| e.context(ENV_TRANSPORT)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::new(
                Code::InvalidUtf8,
                format!("{ENV_TRANSPORT} is not valid UTF-8"),
            )),
        }
    }
}

/// The request path of an MQTT-over-WebSockets connection: `/$iothub/websocket`, with
/// `?iothub-no-client-cert=true` when the device authenticates with SAS (no client
/// certificate), so that the hub does not ask for one.
pub fn websocket_path(has_client_cert: bool) -> String {
    if has_client_cert {
        ws::PATH.to_owned()
    } else {
        format!("{}{}", ws::PATH, ws::NO_CLIENT_CERT_QUERY)
    }
}

/// Whether a failure to open a connection means the port cannot be reached from here (what
/// `auto` falls back to WebSockets on): refused, timed out, reset before the hub answered,
/// or refused by the proxy.
pub fn unreachable(error: &Error) -> bool {
    matches!(
        error.code(),
        Code::ConnectFailed | Code::Timeout | Code::ConnectionClosed | Code::ProxyRefused
    )
}

/// The layer between TLS and MQTT on one connection: nothing (MQTT on 8883), or a
/// WebSocket ([`ws::WsClient`]). The session keeps one per transport connection.
#[derive(Debug)]
pub enum Framing {
    /// MQTT bytes go straight into TLS.
    Mqtt,
    /// MQTT bytes travel in WebSocket binary frames; `scratch` is reused for output frames.
    WebSocket {
        /// The WebSocket client.
        ws: ws::WsClient,
        /// Output frames being built.
        scratch: Vec<u8>,
    },
}

impl Framing {
    /// The framing of a new connection to `host`; for WebSockets, also the upgrade request
    /// to write into TLS once the handshake is complete.
    pub fn new(
        websocket: bool,
        host: &str,
        has_client_cert: bool,
        max_message: usize,
    ) -> Result<(Framing, Option<Vec<u8>>)> {
        if !websocket {
            return Ok((Framing::Mqtt, None));
        }
        let (ws, request) = ws::WsClient::new(host, &websocket_path(has_client_cert), max_message)?;
        Ok((
            Framing::WebSocket {
                ws,
                scratch: Vec::new(),
            },
            Some(request),
        ))
    }

    /// Whether MQTT may flow (WebSockets: the upgrade was accepted).
    pub fn is_ready(&self) -> bool {
        match self {
            Framing::Mqtt => true,
            Framing::WebSocket { ws, .. } => ws.is_open(),
        }
    }

    /// Whether this is a WebSocket connection.
    pub fn is_websocket(&self) -> bool {
        matches!(self, Framing::WebSocket { .. })
    }

    /// Takes plaintext from TLS: MQTT bytes are appended to `rx`, bytes to send back
    /// (WebSocket pongs, the close reply) to `reply`. A WebSocket close frame from the
    /// server is returned as a `ConnectionClosed` error after its reply.
    pub fn receive(&mut self, plain: &[u8], rx: &mut Vec<u8>, reply: &mut Vec<u8>) -> Result<bool> {
        match self {
            Framing::Mqtt => {
                rx.extend_from_slice(plain);
                Ok(false)
            }
            Framing::WebSocket { ws, .. } => {
                let seen = ws.receive(plain, rx, reply)?;
                if let Some((code, reason)) = seen.closed {
                    return Err(Error::new(
                        Code::ConnectionClosed,
                        format!(
                            "the server closed the WebSocket (status {}{}{reason})",
                            code.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
                            if reason.is_empty() { "" } else { ": " }
                        ),
                    ));
                }
                Ok(seen.upgraded)
            }
        }
    }

    /// Writes MQTT `bytes` to `out` (TLS's plaintext writer), framed as needed. With
    /// `secret` (the CONNECT with its SAS token) the frame is built in memory wiped after.
    pub fn write(
        &mut self,
        out: &mut impl std::io::Write,
        bytes: &[u8],
        secret: bool,
    ) -> Result<()> {
        let io = |e: std::io::Error| Error::new(Code::Io, format!("TLS buffer: {e}"));
        match self {
            Framing::Mqtt => out.write_all(bytes).map_err(io),
            Framing::WebSocket { ws, scratch } => {
                if secret {
                    let mut frame = zeroize::Zeroizing::new(Vec::with_capacity(bytes.len() + 14));
                    ws.encode(bytes, &mut frame)?;
                    return out.write_all(&frame).map_err(io);
                }
                scratch.clear();
                ws.encode(bytes, scratch)?;
                out.write_all(scratch).map_err(io)
            }
        }
    }

    /// Writes a WebSocket close frame (after MQTT's DISCONNECT); nothing for plain MQTT.
    pub fn close(&mut self, out: &mut impl std::io::Write) {
        if let Framing::WebSocket { ws, scratch } = self {
            scratch.clear();
            ws.close(scratch);
            let _ = out.write_all(scratch);
        }
    }
}
