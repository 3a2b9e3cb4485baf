//! A sans-IO RFC 6455 WebSocket client, just what MQTT over WebSockets needs.
//!
//! IoT Hub and DPS take MQTT 3.1.1 over `wss://{host}:443/$iothub/websocket` with the
//! subprotocol `mqtt`: the MQTT byte stream travels in binary messages. [`WsClient`] writes
//! the upgrade request, checks the server's answer (status 101, `Upgrade: websocket`,
//! `Sec-WebSocket-Accept` derived from our key, subprotocol `mqtt`), then turns received
//! frames into MQTT bytes and MQTT bytes into masked binary frames. It owns no socket: the
//! session feeds it the plaintext TLS gives and writes what it returns into TLS.
//!
//! Received frames are checked before anything is buffered: a frame longer than the limit,
//! a text frame, a masked frame, reserved bits, unknown opcodes, control frames that are
//! fragmented or longer than 125 bytes, and fragments out of order are refused with
//! [`Code::WebsocketProtocol`]. Pings are answered with pongs; a close frame is answered
//! and reported. Fragments of a binary message are passed on as they arrive (MQTT is a
//! byte stream), so a fragmented message needs no more memory than an unfragmented one;
//! the whole message is still held to the limit.
//!
//! This is a minimal implementation of the client side only (no extensions, no text
//! messages): a general WebSocket crate such as `tungstenite` wants to own a `Read + Write`
//! stream and buffers the outgoing CONNECT (the SAS token) in memory it does not wipe.
//! `fuzz/fuzz_targets/websocket.rs` fuzzes [`WsClient::receive`].

use base64::Engine;
use zeroize::Zeroize;

use crate::error::{Code, Error, Result};

/// The path IoT Hub and DPS serve MQTT over WebSockets on.
pub const PATH: &str = "/$iothub/websocket";
/// The query that tells IoT Hub not to ask for a client certificate (SAS devices).
pub const NO_CLIENT_CERT_QUERY: &str = "?iothub-no-client-cert=true";
/// The WebSocket subprotocol of MQTT.
pub const SUBPROTOCOL: &str = "mqtt";
/// The longest upgrade answer (status line and headers) accepted.
pub const MAX_UPGRADE_RESPONSE: usize = 8 * 1024;
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// What [`WsClient::receive`] saw besides data.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Received {
    /// The upgrade was accepted during this call.
    pub upgraded: bool,
    /// The server sent a close frame: (status code, reason). The reply is in the output.
    pub closed: Option<(Option<u16>, String)>,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Upgrade request sent; reading the answer.
    Upgrading,
    /// Frames flow.
    Open,
    /// A close frame was received or sent.
    Closed,
}

/// The client end of one WebSocket connection. See the module documentation.
pub struct WsClient {
    state: State,
    host: String,
    accept: String,
    /// Bytes of a frame (or of the upgrade answer) not complete yet.
    rx: Vec<u8>,
    /// Bytes of the current fragmented message passed on so far (`None`: no message open).
    message: Option<usize>,
    max_message: usize,
    /// Random bytes for masking keys, refilled from the system generator.
    masks: Vec<u8>,
    masks_used: usize,
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("state", &self.state)
            .field("host", &self.host)
            .finish()
    }
}

fn random(buf: &mut [u8]) -> Result<()> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| Error::new(Code::Io, "the system random number generator failed"))
}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)).
pub fn accept_for(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

fn protocol(message: impl Into<String>) -> Error {
    Error::new(Code::WebsocketProtocol, message)
}

impl WsClient {
    /// A client for `host` asking for `path_and_query`; returns it with the upgrade request
    /// to send. `max_message` bounds every received message (and so every frame).
    pub fn new(
        host: &str,
        path_and_query: &str,
        max_message: usize,
    ) -> Result<(WsClient, Vec<u8>)> {
        let mut nonce = [0u8; 16];
        random(&mut nonce)?;
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        Ok(WsClient::with_key(host, path_and_query, max_message, &key))
    }

    /// [`WsClient::new`] with a chosen key (tests, fuzzing).
    pub fn with_key(
        host: &str,
        path_and_query: &str,
        max_message: usize,
        key: &str,
    ) -> (WsClient, Vec<u8>) {
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\nUser-Agent: tether/{}\r\n\r\n",
            crate::VERSION
        );
        (
            WsClient {
                state: State::Upgrading,
                host: host.to_owned(),
                accept: accept_for(key),
                rx: Vec::new(),
                message: None,
                max_message,
                masks: Vec::new(),
                masks_used: 0,
            },
            request.into_bytes(),
        )
    }

    /// Whether the upgrade has been accepted and no close frame was seen.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Feeds bytes from the server: MQTT bytes are appended to `data`, replies (pongs, the
    /// close reply) to `reply`.
    pub fn receive(
        &mut self,
        input: &[u8],
        data: &mut Vec<u8>,
        reply: &mut Vec<u8>,
    ) -> Result<Received> {
        let mut seen = Received::default();
        let mut input = input;
        if self.state == State::Upgrading {
            self.rx.extend_from_slice(input);
            input = &[];
            let window = &self.rx[..self.rx.len().min(MAX_UPGRADE_RESPONSE)];
            let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.rx.len() >= MAX_UPGRADE_RESPONSE {
                    return Err(Error::new(
                        Code::WebsocketUpgradeFailed,
                        format!(
                            "{} answered the WebSocket upgrade with more than \
                             {MAX_UPGRADE_RESPONSE} bytes of headers",
                            self.host
                        ),
                    ));
                }
                return Ok(seen);
            };
            self.check_upgrade(&self.rx[..end + 4])?;
            // What followed the headers (frames) stays in `rx` for below.
            self.rx.drain(..end + 4);
            self.state = State::Open;
            seen.upgraded = true;
        }
        if self.state == State::Closed {
            return Ok(seen);
        }
        if self.rx.is_empty() {
            // The common case: whole frames in `input`, nothing copied twice.
            let used = self.frames(input, data, reply, &mut seen)?;
            self.rx.extend_from_slice(&input[used..]);
        } else {
            self.rx.extend_from_slice(input);
            let rx = std::mem::take(&mut self.rx);
            let used = self.frames(&rx, data, reply, &mut seen);
            self.rx = rx;
            self.rx.drain(..used?);
        }
        Ok(seen)
    }

    fn check_upgrade(&self, head: &[u8]) -> Result<()> {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let status_line: String = lines
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let fail = |why: String| Error::new(Code::WebsocketUpgradeFailed, why);
        let mut words = status_line.split(' ');
        let status = match (words.next(), words.next()) {
            (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
            _ => None,
        };
        match status {
            Some(101) => {}
            Some(500..=599) => {
                return Err(Error::new(
                    Code::ConnectFailed,
                    format!(
                        "{} refused the WebSocket upgrade for now: \"{status_line}\"",
                        self.host
                    ),
                ))
            }
            Some(_) => {
                return Err(fail(format!(
                    "{} refused the WebSocket upgrade: \"{status_line}\"",
                    self.host
                )))
            }
            None => {
                return Err(fail(format!(
                    "{} did not answer the WebSocket upgrade in HTTP: \"{status_line}\"",
                    self.host
                )))
            }
        }
        let mut upgrade = None;
        let mut connection = None;
        let mut accept = None;
        let mut subprotocol = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "upgrade" => upgrade = Some(value.to_owned()),
                "connection" => connection = Some(value.to_owned()),
                "sec-websocket-accept" => accept = Some(value.to_owned()),
                "sec-websocket-protocol" => subprotocol = Some(value.to_owned()),
                _ => {}
            }
        }
        if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            return Err(fail(format!(
                "{} answered 101 without `Upgrade: websocket`",
                self.host
            )));
        }
        if !connection.is_some_and(|c| {
            c.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        }) {
            return Err(fail(format!(
                "{} answered 101 without `Connection: Upgrade`",
                self.host
            )));
        }
        match accept {
            Some(a) if a == self.accept => {}
            Some(a) => {
                let shown: String = a.chars().filter(|c| !c.is_control()).take(64).collect();
                return Err(fail(format!(
                    "{} answered with a wrong Sec-WebSocket-Accept (\"{shown}\", expected \"{}\"): \
                     not a WebSocket server for this request, or something in between rewrote it",
                    self.host, self.accept
                )));
            }
            None => {
                return Err(fail(format!(
                    "{} answered 101 without Sec-WebSocket-Accept",
                    self.host
                )))
            }
        }
        match subprotocol {
            Some(p) if p.eq_ignore_ascii_case(SUBPROTOCOL) => Ok(()),
            Some(p) => {
                let shown: String = p.chars().filter(|c| !c.is_control()).take(64).collect();
                Err(fail(format!(
                    "{} chose the WebSocket subprotocol \"{shown}\", not \"{SUBPROTOCOL}\"",
                    self.host
                )))
            }
            None => Err(fail(format!(
                "{} accepted the WebSocket upgrade without the \"{SUBPROTOCOL}\" subprotocol: \
                 it does not speak MQTT over WebSockets (is the path {PATH} right?)",
                self.host
            ))),
        }
    }

    /// Handles the complete frames at the start of `buf`; returns the bytes used.
    fn frames(
        &mut self,
        buf: &[u8],
        data: &mut Vec<u8>,
        reply: &mut Vec<u8>,
        seen: &mut Received,
    ) -> Result<usize> {
        let mut at = 0;
        while self.state == State::Open {
            let rest = &buf[at..];
            if rest.len() < 2 {
                break;
            }
            let (b0, b1) = (rest[0], rest[1]);
            let fin = b0 & 0x80 != 0;
            let opcode = b0 & 0x0f;
            if b0 & 0x70 != 0 {
                return Err(protocol(format!(
                    "{} sent a frame with reserved bits set (no extension was agreed)",
                    self.host
                )));
            }
            if b1 & 0x80 != 0 {
                return Err(protocol(format!(
                    "{} sent a masked frame (servers must not mask)",
                    self.host
                )));
            }
            let (len, header) = match b1 & 0x7f {
                126 => {
                    let Some(b) = rest.get(2..4) else { break };
                    (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
                }
                127 => {
                    let Some(b) = rest.get(2..10) else { break };
                    let mut n = [0u8; 8];
                    n.copy_from_slice(b);
                    (u64::from_be_bytes(n), 10)
                }
                n => (u64::from(n), 2),
            };
            let is_control = opcode & 0x8 != 0;
            if is_control && (!fin || len > 125) {
                return Err(protocol(format!(
                    "{} sent a control frame (opcode {opcode}) that is fragmented or longer \
                     than 125 bytes",
                    self.host
                )));
            }
            // The limits apply before any payload is buffered.
            let so_far = self.message.unwrap_or(0) as u64;
            if !is_control && so_far.saturating_add(len) > self.max_message as u64 {
                return Err(protocol(format!(
                    "{} sent a WebSocket message of more than {} bytes (the limit)",
                    self.host, self.max_message
                )));
            }
            match opcode {
                OP_BINARY if self.message.is_some() => {
                    return Err(protocol(format!(
                        "{} started a new message before finishing a fragmented one",
                        self.host
                    )))
                }
                OP_CONTINUATION if self.message.is_none() => {
                    return Err(protocol(format!(
                        "{} sent a continuation frame with no message to continue",
                        self.host
                    )))
                }
                OP_TEXT => {
                    return Err(protocol(format!(
                        "{} sent a text frame: MQTT over WebSockets uses binary frames only",
                        self.host
                    )))
                }
                OP_BINARY | OP_CONTINUATION | OP_CLOSE | OP_PING | OP_PONG => {}
                other => {
                    return Err(protocol(format!(
                        "{} sent a frame with the unknown opcode {other}",
                        self.host
                    )))
                }
            }
            let len = len as usize; // bounded by max_message or 125 above
            let Some(payload) = rest.get(header..header + len) else {
                break;
            };
            at += header + len;
            match opcode {
                OP_BINARY | OP_CONTINUATION => {
                    data.extend_from_slice(payload);
                    self.message = if fin {
                        None
                    } else {
                        Some(so_far as usize + len)
                    };
                }
                OP_PING => self.frame(OP_PONG, payload, reply)?,
                OP_PONG => {}
                _ => {
                    // Close: echo its status code, then stop reading.
                    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    let reason: String = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]))
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(123)
                        .collect();
                    self.frame(OP_CLOSE, payload.get(..2).unwrap_or(&[]), reply)?;
                    self.state = State::Closed;
                    seen.closed = Some((code, reason));
                }
            }
        }
        Ok(at)
    }

    fn mask_key(&mut self) -> Result<[u8; 4]> {
        if self.masks_used + 4 > self.masks.len() {
            self.masks.resize(1024, 0);
            random(&mut self.masks)?;
            self.masks_used = 0;
        }
        let mut key = [0u8; 4];
        key.copy_from_slice(&self.masks[self.masks_used..self.masks_used + 4]);
        self.masks_used += 4;
        Ok(key)
    }

    fn frame(&mut self, opcode: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let key = self.mask_key()?;
        out.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&key);
        let start = out.len();
        out.extend_from_slice(payload);
        mask(&mut out[start..], key);
        Ok(())
    }

    /// Appends `payload` (MQTT bytes) as one masked binary frame to `out`.
    pub fn encode(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.state != State::Open {
            return Err(Error::new(Code::InvalidState, "the WebSocket is not open"));
        }
        self.frame(OP_BINARY, payload, out)
    }

    /// Appends a close frame (status 1000, normal closure) to `out`, once.
    pub fn close(&mut self, out: &mut Vec<u8>) {
        if self.state == State::Open && self.frame(OP_CLOSE, &1000u16.to_be_bytes(), out).is_ok() {
            self.state = State::Closed;
        }
    }

    /// Bytes of an incomplete frame or message held now (for tests of the limits).
    pub fn buffered(&self) -> usize {
        self.rx.len()
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        // Received data can hold MQTT payloads; masks are randomness.
        self.rx.zeroize();
        self.masks.zeroize();
    }
}

/// XORs `buf` with the repeating 4-byte `key`, eight bytes at a time.
fn mask(buf: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// The server's side of framing, for test peers and the stand-in's WebSocket front: one
/// unmasked frame with `opcode` and `fin`.
pub fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// A frame a client sent, unmasked: what [`read_client_frame`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFrame {
    /// The opcode (2 binary, 8 close, 9 ping, 10 pong, 0 continuation, 1 text).
    pub opcode: u8,
    /// Whether this is the message's last frame.
    pub fin: bool,
    /// The payload, unmasked.
    pub payload: Vec<u8>,
}

/// The server's side of reading, for the stand-in's WebSocket front and test peers: the
/// first complete client frame in `buf` and the bytes it used, `Ok(None)` while incomplete.
/// Unmasked frames and frames over `max` bytes are refused before their payload is read.
pub fn read_client_frame(buf: &[u8], max: usize) -> Result<Option<(ClientFrame, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b1 & 0x80 == 0 {
        return Err(protocol("the client sent an unmasked frame"));
    }
    let (len, at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                (u64::from_be_bytes(n), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > max as u64 {
        return Err(protocol(format!(
            "the client sent a frame of {len} bytes (limit {max})"
        )));
    }
    let len = len as usize;
    let Some(key) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let key = [key[0], key[1], key[2], key[3]];
    let Some(payload) = buf.get(at + 4..at + 4 + len) else {
        return Ok(None);
    };
    let mut payload = payload.to_vec();
    mask(&mut payload, key);
    Ok(Some((
        ClientFrame {
            opcode: b0 & 0x0f,
            fin: b0 & 0x80 != 0,
            payload,
        },
        at + 4 + len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn open() -> WsClient {
        let (mut ws, request) = WsClient::with_key("hub", PATH, 1000, KEY);
        let text = String::from_utf8(request).unwrap();
        assert!(text.starts_with("GET /$iothub/websocket HTTP/1.1\r\nHost: hub\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        let answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
        let mut bytes = answer.as_bytes().to_vec();
        bytes.extend(server_frame(OP_BINARY, true, b"\x20\x02\x00\x00"));
        let (mut data, mut reply) = (Vec::new(), Vec::new());
        // Byte by byte: the answer and the frame after it may arrive in any pieces.
        let mut upgraded = false;
        for b in &bytes {
            upgraded |= ws.receive(&[*b], &mut data, &mut reply).unwrap().upgraded;
        }
        assert!(upgraded && ws.is_open());
        assert_eq!(data, b"\x20\x02\x00\x00");
        ws
    }

    #[test]
    fn rfc_accept_example() {
        assert_eq!(accept_for(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn frames_fragments_ping_and_close() {
        let mut ws = open();
        let (mut data, mut reply) = (Vec::new(), Vec::new());
        let mut input = server_frame(OP_BINARY, false, b"ab");
        input.extend(server_frame(OP_PING, true, b"hi"));
        input.extend(server_frame(OP_CONTINUATION, true, b"cd"));
        ws.receive(&input, &mut data, &mut reply).unwrap();
        assert_eq!(data, b"abcd");
        // The pong: masked, payload "hi" once unmasked.
        assert_eq!(reply[0], 0x8A);
        assert_eq!(reply[1], 0x82);
        let key = [reply[2], reply[3], reply[4], reply[5]];
        let mut body = reply[6..].to_vec();
        mask(&mut body, key);
        assert_eq!(body, b"hi");
        let mut out = Vec::new();
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        ws.encode(&payload, &mut out).unwrap();
        assert_eq!(&out[..4], &[0x82, 0x80 | 126, 1, 44]);
        let key = [out[4], out[5], out[6], out[7]];
        let mut body = out[8..].to_vec();
        mask(&mut body, key);
        assert_eq!(body, payload);
        // The server side reads it back, in any pieces.
        assert_eq!(read_client_frame(&out[..100], 1000).unwrap(), None);
        let (frame, used) = read_client_frame(&out, 1000).unwrap().unwrap();
        assert_eq!(
            (frame.opcode, frame.fin, used),
            (OP_BINARY, true, out.len())
        );
        assert_eq!(frame.payload, payload);
        assert!(read_client_frame(&out, 299).is_err());
        reply.clear();
        let seen = ws
            .receive(
                &server_frame(OP_CLOSE, true, b"\x03\xe8bye"),
                &mut data,
                &mut reply,
            )
            .unwrap();
        assert_eq!(seen.closed, Some((Some(1000), "bye".into())));
        assert!(!ws.is_open());
        assert_eq!(reply[0], 0x88);
    }

    #[test]
    fn refuses_what_the_protocol_forbids_before_buffering() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (server_frame(OP_TEXT, true, b"x"), "text frame"),
            (
                vec![0x82, 127, 0, 0, 0, 0, 0x7f, 0, 0, 0],
                "more than 1000 bytes",
            ),
            (vec![0x82, 0x81, 1, 2, 3, 4, 5], "masked"),
            (vec![0xC2, 0], "reserved bits"),
            (
                server_frame(OP_CONTINUATION, true, b"x"),
                "no message to continue",
            ),
            (server_frame(0x3, true, b""), "unknown opcode 3"),
            (server_frame(OP_PING, false, b""), "fragmented"),
            (
                [
                    server_frame(OP_BINARY, false, &[0; 600]),
                    server_frame(OP_CONTINUATION, true, &[0; 600]),
                ]
                .concat(),
                "more than 1000",
            ),
            (
                [
                    server_frame(OP_BINARY, false, b"a"),
                    server_frame(OP_BINARY, true, b"b"),
                ]
                .concat(),
                "new message",
            ),
        ];
        for (input, needle) in cases {
            let mut ws = open();
            let (mut data, mut reply) = (Vec::new(), Vec::new());
            // Only the header of the oversized frame arrives: refused without its payload.
            let e = ws.receive(&input, &mut data, &mut reply).unwrap_err();
            assert_eq!(e.code(), Code::WebsocketProtocol, "{needle}");
            assert!(e.message().contains(needle), "{needle}: {}", e.message());
            assert!(ws.buffered() <= input.len());
        }
    }

    #[test]
    fn names_bad_upgrades() {
        let good_accept = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
        let cases = [
            (format!("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{good_accept}\r\n"), Code::WebsocketUpgradeFailed, "without the \"mqtt\" subprotocol"),
            ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n".to_owned(), Code::WebsocketUpgradeFailed, "wrong Sec-WebSocket-Accept"),
            (format!("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{good_accept}Sec-WebSocket-Protocol: amqp\r\n\r\n"), Code::WebsocketUpgradeFailed, "\"amqp\""),
            ("HTTP/1.1 404 Not Found\r\n\r\n".to_owned(), Code::WebsocketUpgradeFailed, "\"HTTP/1.1 404 Not Found\""),
            ("HTTP/1.1 503 Busy\r\n\r\n".to_owned(), Code::ConnectFailed, "503 Busy"),
            ("SSH-2.0\r\n\r\n".to_owned(), Code::WebsocketUpgradeFailed, "not answer"),
        ];
        for (answer, code, needle) in cases {
            let (mut ws, _) = WsClient::with_key("hub", PATH, 1000, KEY);
            let e = ws
                .receive(answer.as_bytes(), &mut Vec::new(), &mut Vec::new())
                .unwrap_err();
            assert_eq!(e.code(), code, "{answer}");
            assert!(e.message().contains(needle), "{}", e.message());
        }
        let (mut ws, _) = WsClient::with_key("hub", PATH, 1000, KEY);
        let e = ws
            .receive(&vec![b'a'; 20_000], &mut Vec::new(), &mut Vec::new())
            .unwrap_err();
        assert_eq!(e.code(), Code::WebsocketUpgradeFailed);
    }
}
