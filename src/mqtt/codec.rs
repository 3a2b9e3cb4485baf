//! MQTT 3.1.1 packets for IoT Hub: mqttbytes (v4), wrapped and guarded.
//!
//! mqttbytes 0.6 does the byte work (except the PUBLISH writer, which writes straight into
//! the caller's buffer to avoid two allocations and two copies per message; its output is
//! tested byte for byte against mqttbytes'); this layer removes mqttbytes' traps:
//! - everything is validated before encoding (string lengths, packet ids, QoS, sizes), so
//!   its silent 16-bit length truncation and its "error after a partial write" on a QoS 1
//!   PUBLISH with packet id 0 can never happen;
//! - packets are encoded into a scratch buffer and copied to the caller's buffer only when
//!   complete and only when they fit: the output never holds half a packet;
//! - the byte count returned is the frame length we computed, checked against what was
//!   written (`Connect::write` returns the remaining length instead);
//! - the keep-alive is always the caller's (mqttbytes defaults to 10 s);
//! - decoding bounds the whole frame (mqttbytes' `max_size` covers the remaining length
//!   only), checks fixed-header flags and exact lengths, refuses QoS 2 and packets a
//!   server never sends, and returns views borrowed from the input.

use bytes::BytesMut;
use mqttbytes::v4;
use mqttbytes::QoS;

use crate::error::{Code, Error, Result};
use crate::mqtt::topics::MAX_MESSAGE_SIZE;

/// The longest string or binary field MQTT can carry (16-bit length prefix).
pub const MAX_STRING_LEN: usize = 65_535;
/// The default bound on a received packet (whole frame): a 256 KiB payload plus a topic
/// of up to 64 KiB and headers.
pub const DEFAULT_MAX_PACKET_SIZE: usize = MAX_MESSAGE_SIZE + 64 * 1024;
/// The largest remaining length MQTT can express.
const MAX_REMAINING_LEN: usize = 268_435_455;

/// CONNACK return codes (MQTT 3.1.1, 3.2.2.3).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectReturnCode {
    /// 0: connection accepted.
    Accepted = 0,
    /// 1: the server does not support MQTT 3.1.1.
    UnacceptableProtocolVersion = 1,
    /// 2: the client id was refused.
    IdentifierRejected = 2,
    /// 3: the service is unavailable.
    ServerUnavailable = 3,
    /// 4: bad user name or password (for IoT Hub: a bad or expired SAS token).
    BadUsernameOrPassword = 4,
    /// 5: not authorized (for IoT Hub: disabled device, wrong credentials).
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// The code for a CONNACK byte, if it is one of the six MQTT 3.1.1 defines.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Accepted,
            1 => Self::UnacceptableProtocolVersion,
            2 => Self::IdentifierRejected,
            3 => Self::ServerUnavailable,
            4 => Self::BadUsernameOrPassword,
            5 => Self::NotAuthorized,
            _ => return None,
        })
    }

    /// What the code means, in words.
    pub fn description(self) -> &'static str {
        match self {
            Self::Accepted => "connection accepted",
            Self::UnacceptableProtocolVersion => "unacceptable protocol version",
            Self::IdentifierRejected => "client identifier rejected",
            Self::ServerUnavailable => "server unavailable",
            Self::BadUsernameOrPassword => "bad user name or password",
            Self::NotAuthorized => "not authorized",
        }
    }

    /// `Ok` for an accepted connection, otherwise an error naming the code:
    /// `NotAuthorized` for 4 and 5, `MqttConnectionRefused` for 1 to 3.
    pub fn result(self) -> Result<()> {
        let code = match self {
            Self::Accepted => return Ok(()),
            Self::BadUsernameOrPassword | Self::NotAuthorized => Code::NotAuthorized,
            _ => Code::MqttConnectionRefused,
        };
        Err(Error::new(
            code,
            format!(
                "the server refused the connection: CONNACK {} ({})",
                self as u8,
                self.description()
            ),
        ))
    }
}

/// Encodes one packet into a new buffer: `len` is the packet's encoded size (from its
/// `encoded_len` or `*_len` function), `write` one of the encoders in this module.
pub fn encode_to_vec(
    len: Result<usize>,
    write: impl FnOnce(&mut [u8]) -> Result<usize>,
) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len?];
    let n = write(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// A last-will message for CONNECT.
#[derive(Clone, Copy, Debug)]
pub struct Will<'a> {
    /// The topic the will is published on.
    pub topic: &'a str,
    /// The message.
    pub payload: &'a [u8],
    /// QoS 0 or 1.
    pub qos: u8,
    /// The retain flag (IoT Hub does not support retain; leave false for the hub).
    pub retain: bool,
}

/// CONNECT options. Clean session, keep-alive and credentials are always explicit.
#[derive(Clone, Copy, Debug)]
pub struct Connect<'a> {
    /// The client id (for IoT Hub `{deviceId}` or `{deviceId}/{moduleId}`).
    pub client_id: &'a str,
    /// The user name (for IoT Hub see `topics::username`).
    pub username: Option<&'a str>,
    /// The password (a SAS token for IoT Hub; `None` with X.509). Requires a user name.
    pub password: Option<&'a str>,
    /// Keep-alive in seconds (0 turns it off; IoT Hub allows at most 1177).
    pub keep_alive_s: u16,
    /// The clean-session flag.
    pub clean_session: bool,
    /// An optional last will.
    pub will: Option<Will<'a>>,
}

/// A PUBLISH to send.
#[derive(Clone, Copy, Debug)]
pub struct Publish<'a> {
    /// The topic (no wildcards).
    pub topic: &'a str,
    /// The payload (at most 256 KiB, IoT Hub's message limit).
    pub payload: &'a [u8],
    /// QoS 0 or 1.
    pub qos: u8,
    /// The packet id: non-zero for QoS 1, ignored (must be 0) for QoS 0.
    pub pkid: u16,
    /// The DUP flag, for a QoS 1 re-send.
    pub dup: bool,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(Code::InvalidArgument, message)
}

fn check_qos(qos: u8, what: &str) -> Result<QoS> {
    match qos {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Err(Error::new(
            Code::MqttQosUnsupported,
            format!("{what}: QoS 2 is not supported by IoT Hub (it closes the connection); use QoS 0 or 1"),
        )),
        q => Err(invalid(format!("{what}: QoS {q} does not exist; use 0 or 1"))),
    }
}

fn check_string(s: &str, what: &str, allow_empty: bool) -> Result<()> {
    if s.len() > MAX_STRING_LEN {
        return Err(invalid(format!(
            "{what} is {} bytes; MQTT strings are at most {MAX_STRING_LEN}",
            s.len()
        )));
    }
    if !allow_empty && s.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if s.contains('\0') {
        return Err(invalid(format!(
            "{what} contains a NUL character, which MQTT forbids"
        )));
    }
    Ok(())
}

fn check_topic_name(topic: &str, what: &str) -> Result<()> {
    check_string(topic, what, false)?;
    if topic.contains(['+', '#']) {
        return Err(Error::new(
            Code::TopicInvalid,
            format!("{what} {topic:?} contains a wildcard (+ or #), which a PUBLISH cannot carry"),
        ));
    }
    Ok(())
}

fn check_pkid(pkid: u16, what: &str) -> Result<()> {
    if pkid == 0 {
        return Err(invalid(format!("{what}: the packet id must not be 0")));
    }
    Ok(())
}

/// The bytes of the remaining-length field for `len`.
fn varint_len(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn frame_len(remaining: usize) -> Result<usize> {
    if remaining > MAX_REMAINING_LEN {
        return Err(Error::new(
            Code::MqttPacketTooLarge,
            format!("the packet would need a remaining length of {remaining}; MQTT allows {MAX_REMAINING_LEN}"),
        ));
    }
    Ok(1 + varint_len(remaining) + remaining)
}

fn check_room(needed: usize, out: &[u8]) -> Result<()> {
    if out.len() < needed {
        return Err(Error::new(
            Code::BufferTooSmall,
            format!(
                "the packet needs {needed} bytes; the buffer holds {}",
                out.len()
            ),
        ));
    }
    Ok(())
}

fn mqtt_error(e: mqttbytes::Error, what: &str) -> Error {
    Error::new(Code::MqttMalformed, format!("{what}: {e:?}"))
}

/// Runs an mqttbytes writer into a scratch buffer and copies the frame to `out` after
/// checking its length against `expected`.
fn finish(
    expected: usize,
    out: &mut [u8],
    what: &str,
    write: impl FnOnce(&mut BytesMut) -> std::result::Result<usize, mqttbytes::Error>,
) -> Result<usize> {
    check_room(expected, out)?;
    let mut scratch = BytesMut::with_capacity(expected);
    write(&mut scratch).map_err(|e| mqtt_error(e, what))?;
    if scratch.len() != expected {
        return Err(Error::new(
            Code::MqttMalformed,
            format!(
                "{what}: the encoder wrote {} bytes instead of {expected}; nothing was output",
                scratch.len()
            ),
        ));
    }
    out[..expected].copy_from_slice(&scratch);
    Ok(expected)
}

impl Connect<'_> {
    /// Validates; returns the remaining length.
    fn remaining_len(&self) -> Result<usize> {
        check_string(self.client_id, "client id", true)?;
        if self.client_id.is_empty() && !self.clean_session {
            return Err(invalid("an empty client id requires a clean session"));
        }
        let mut remaining = 10 + 2 + self.client_id.len();
        if let Some(w) = &self.will {
            check_topic_name(w.topic, "will topic")?;
            check_qos(w.qos, "will")?;
            if w.payload.len() > MAX_STRING_LEN {
                return Err(invalid(format!(
                    "the will message is {} bytes; MQTT allows at most {MAX_STRING_LEN}",
                    w.payload.len()
                )));
            }
            remaining += 2 + w.topic.len() + 2 + w.payload.len();
        }
        match (self.username, self.password) {
            (None, Some(_)) => {
                return Err(invalid("a password requires a user name in MQTT 3.1.1"))
            }
            (Some(u), p) => {
                check_string(u, "user name", false)?;
                remaining += 2 + u.len();
                if let Some(p) = p {
                    // Empty strings are dropped by mqttbytes: refuse rather than send
                    // something else than asked.
                    check_string(p, "password", false)?;
                    remaining += 2 + p.len();
                }
            }
            (None, None) => {}
        }
        Ok(remaining)
    }

    fn validate(&self) -> Result<usize> {
        frame_len(self.remaining_len()?)
    }

    /// The encoded size of this CONNECT, after validating it.
    pub fn encoded_len(&self) -> Result<usize> {
        self.validate()
    }

    /// Encodes the CONNECT into `out`; returns the bytes written. On any error nothing is
    /// written (`BufferTooSmall` when `out` is shorter than [`Connect::encoded_len`]).
    ///
    /// Written straight into `out`, with no intermediate buffer: the password (a SAS token)
    /// is copied nowhere else, so a caller that wipes `out` leaves no copy behind.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize> {
        let remaining = self.remaining_len()?;
        let len = frame_len(remaining)?;
        check_room(len, out)?;
        let will_qos = match &self.will {
            Some(w) => check_qos(w.qos, "will")? as u8,
            None => 0,
        };
        let mut flags = u8::from(self.clean_session) << 1;
        if let Some(w) = &self.will {
            flags |= 0b100 | will_qos << 3 | u8::from(w.retain) << 5;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        let mut w = Writer { out, at: 0 };
        w.byte(0x10);
        w.varint(remaining);
        w.string(b"MQTT");
        w.byte(4);
        w.byte(flags);
        w.bytes(&self.keep_alive_s.to_be_bytes());
        w.string(self.client_id.as_bytes());
        if let Some(will) = &self.will {
            w.string(will.topic.as_bytes());
            w.string(will.payload);
        }
        for field in [self.username, self.password].into_iter().flatten() {
            w.string(field.as_bytes());
        }
        debug_assert_eq!(w.at, len);
        Ok(w.at)
    }
}

/// Writes a packet into a buffer already checked to be large enough.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn byte(&mut self, b: u8) {
        self.out[self.at] = b;
        self.at += 1;
    }

    fn bytes(&mut self, b: &[u8]) {
        self.out[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }

    /// A length-prefixed MQTT string or binary field (length checked by validation).
    fn string(&mut self, b: &[u8]) {
        self.bytes(&(b.len() as u16).to_be_bytes());
        self.bytes(b);
    }

    fn varint(&mut self, mut n: usize) {
        loop {
            let digit = (n % 128) as u8;
            n /= 128;
            self.byte(if n > 0 { digit | 0x80 } else { digit });
            if n == 0 {
                break;
            }
        }
    }
}

impl Publish<'_> {
    /// Validates; returns the QoS, the remaining length and the frame length.
    fn validate(&self) -> Result<(QoS, usize, usize)> {
        check_topic_name(self.topic, "topic")?;
        let qos = check_publish(self.qos, self.pkid, self.dup, self.payload.len())?;
        let remaining =
            2 + self.topic.len() + if qos == QoS::AtLeastOnce { 2 } else { 0 } + self.payload.len();
        Ok((qos, remaining, frame_len(remaining)?))
    }

    /// The encoded size of this PUBLISH, after validating it.
    pub fn encoded_len(&self) -> Result<usize> {
        Ok(self.validate()?.2)
    }

    /// Encodes the PUBLISH into `out`; returns the bytes written. On any error nothing is
    /// written.
    ///
    /// PUBLISH is the one packet written here directly rather than through mqttbytes: its
    /// writer needs the payload copied into an owned `Bytes` and the frame built in a fresh
    /// `BytesMut`, two allocations and two extra copies per message that made 256 KiB
    /// messages 40 times slower to encode (see `benches/mqtt.rs`). The bytes are the same
    /// as mqttbytes' (checked by [`Publish::encode_with_mqttbytes`] in the tests).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize> {
        let (qos, remaining, len) = self.validate()?;
        check_room(len, out)?;
        let out = &mut out[..len];
        let (header, n) = publish_header(qos, self.dup, remaining, self.topic.len());
        out[..n].copy_from_slice(&header[..n]);
        let mut at = n;
        out[at..at + self.topic.len()].copy_from_slice(self.topic.as_bytes());
        at += self.topic.len();
        if qos == QoS::AtLeastOnce {
            out[at..at + 2].copy_from_slice(&self.pkid.to_be_bytes());
            at += 2;
        }
        out[at..].copy_from_slice(self.payload);
        debug_assert_eq!(at + self.payload.len(), len);
        Ok(len)
    }

    /// The same packet written by mqttbytes (the reference for [`Publish::encode`]).
    #[doc(hidden)]
    pub fn encode_with_mqttbytes(&self, out: &mut [u8]) -> Result<usize> {
        let (qos, _, len) = self.validate()?;
        check_room(len, out)?;
        let mut p =
            v4::Publish::from_bytes(self.topic, qos, bytes::Bytes::copy_from_slice(self.payload));
        p.pkid = self.pkid;
        p.dup = self.dup;
        finish(len, out, "PUBLISH", |b| p.write(b))
    }
}

/// Checks a PUBLISH's QoS, packet id, DUP flag and payload size; returns the QoS.
fn check_publish(qos: u8, pkid: u16, dup: bool, payload_len: usize) -> Result<QoS> {
    let qos = check_qos(qos, "PUBLISH")?;
    if qos == QoS::AtLeastOnce {
        check_pkid(pkid, "QoS 1 PUBLISH")?;
    } else if pkid != 0 || dup {
        return Err(invalid("a QoS 0 PUBLISH has no packet id and no DUP flag"));
    }
    if payload_len > MAX_MESSAGE_SIZE {
        return Err(Error::new(
            Code::MqttPacketTooLarge,
            format!(
                "the payload is {payload_len} bytes; IoT Hub accepts messages of at most {MAX_MESSAGE_SIZE}"
            ),
        ));
    }
    Ok(qos)
}

/// The fixed header and the topic length of a PUBLISH (validated: the topic is at most
/// 65535 bytes, the remaining length within MQTT's limit): the bytes and how many.
fn publish_header(qos: QoS, dup: bool, remaining: usize, topic_len: usize) -> ([u8; 7], usize) {
    let mut h = [0u8; 7];
    h[0] = 0x30 | (u8::from(dup) << 3) | ((qos as u8) << 1);
    let mut at = 1;
    let mut x = remaining;
    loop {
        let mut b = (x % 128) as u8;
        x /= 128;
        if x > 0 {
            b |= 0x80;
        }
        h[at] = b;
        at += 1;
        if x == 0 {
            break;
        }
    }
    h[at..at + 2].copy_from_slice(&(topic_len as u16).to_be_bytes());
    (h, at + 2)
}

/// Appends one PUBLISH (no DUP flag) to `out`; returns its length. Its topic is given in
/// parts that the caller built from validated pieces and that together form a valid topic
/// name (see [`crate::mqtt::topics::TelemetryTopic`]): only the total length is checked here,
/// the characters are not scanned again. QoS, packet id and payload size are checked as by
/// [`Publish::encode`]; on any error nothing is appended.
pub fn append_publish(
    out: &mut Vec<u8>,
    topic: &[&str],
    payload: &[u8],
    qos: u8,
    pkid: u16,
) -> Result<usize> {
    let qos = check_publish(qos, pkid, false, payload.len())?;
    let topic_len: usize = topic.iter().map(|p| p.len()).sum();
    if topic_len == 0 || topic_len > MAX_STRING_LEN {
        return Err(Error::new(
            Code::TopicInvalid,
            "a PUBLISH topic is 1 to 65535 bytes",
        ));
    }
    let id_len = if qos == QoS::AtLeastOnce { 2 } else { 0 };
    let remaining = 2 + topic_len + id_len + payload.len();
    let len = frame_len(remaining)?;
    let (header, n) = publish_header(qos, false, remaining, topic_len);
    out.reserve(len);
    out.extend_from_slice(&header[..n]);
    for part in topic {
        out.extend_from_slice(part.as_bytes());
    }
    if qos == QoS::AtLeastOnce {
        out.extend_from_slice(&pkid.to_be_bytes());
    }
    out.extend_from_slice(payload);
    Ok(len)
}

/// A QoS 1 PUBLISH encoded once and kept until its PUBACK: a re-send writes the same bytes
/// with the DUP flag set in place, so the topic and payload are never copied again.
#[derive(Debug)]
pub struct PublishFrame {
    bytes: Vec<u8>,
}

impl PublishFrame {
    /// Encodes a QoS 1 PUBLISH (see [`append_publish`] for the topic parts) into `buf`,
    /// which is cleared first (pass a buffer of an acknowledged frame to reuse it).
    pub fn encode(mut buf: Vec<u8>, topic: &[&str], payload: &[u8], pkid: u16) -> Result<Self> {
        buf.clear();
        append_publish(&mut buf, topic, payload, 1, pkid)?;
        Ok(PublishFrame { bytes: buf })
    }

    /// Sets the DUP flag, for a re-send.
    pub fn set_dup(&mut self) {
        self.bytes[0] |= 0x08;
    }

    /// The encoded packet.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The buffer, for the next frame.
    pub fn into_buffer(self) -> Vec<u8> {
        self.bytes
    }
}

/// Encodes a PUBACK for `pkid` (non-zero).
pub fn encode_puback(pkid: u16, out: &mut [u8]) -> Result<usize> {
    check_pkid(pkid, "PUBACK")?;
    finish(4, out, "PUBACK", |b| v4::PubAck::new(pkid).write(b))
}

/// The encoded size of a SUBSCRIBE, after validating it.
pub fn subscribe_len(pkid: u16, filters: &[(&str, u8)]) -> Result<usize> {
    check_pkid(pkid, "SUBSCRIBE")?;
    if filters.is_empty() {
        return Err(invalid("SUBSCRIBE needs at least one topic filter"));
    }
    let mut remaining = 2usize;
    for (f, q) in filters {
        check_string(f, "topic filter", false)?;
        check_qos(*q, "SUBSCRIBE")?;
        remaining += 2 + f.len() + 1;
    }
    frame_len(remaining)
}

/// Encodes a SUBSCRIBE with `(filter, qos)` pairs (QoS 0 or 1).
pub fn encode_subscribe(pkid: u16, filters: &[(&str, u8)], out: &mut [u8]) -> Result<usize> {
    let len = subscribe_len(pkid, filters)?;
    check_room(len, out)?;
    let mut s = v4::Subscribe::empty_subscribe();
    s.pkid = pkid;
    for (f, q) in filters {
        s.add((*f).to_owned(), check_qos(*q, "SUBSCRIBE")?);
    }
    finish(len, out, "SUBSCRIBE", |b| s.write(b))
}

/// The encoded size of an UNSUBSCRIBE, after validating it.
pub fn unsubscribe_len(pkid: u16, filters: &[&str]) -> Result<usize> {
    check_pkid(pkid, "UNSUBSCRIBE")?;
    if filters.is_empty() {
        return Err(invalid("UNSUBSCRIBE needs at least one topic filter"));
    }
    let mut remaining = 2usize;
    for f in filters {
        check_string(f, "topic filter", false)?;
        remaining += 2 + f.len();
    }
    frame_len(remaining)
}

/// Encodes an UNSUBSCRIBE.
pub fn encode_unsubscribe(pkid: u16, filters: &[&str], out: &mut [u8]) -> Result<usize> {
    let len = unsubscribe_len(pkid, filters)?;
    check_room(len, out)?;
    let mut u = v4::Unsubscribe::new(filters[0]);
    u.pkid = pkid;
    u.topics = filters.iter().map(|f| (*f).to_owned()).collect();
    finish(len, out, "UNSUBSCRIBE", |b| u.write(b))
}

/// Encodes a PINGREQ (2 bytes).
pub fn encode_pingreq(out: &mut [u8]) -> Result<usize> {
    finish(2, out, "PINGREQ", |b| v4::PingReq.write(b))
}

/// Encodes a DISCONNECT (2 bytes).
pub fn encode_disconnect(out: &mut [u8]) -> Result<usize> {
    finish(2, out, "DISCONNECT", |b| v4::Disconnect.write(b))
}

/// A received PUBLISH, borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceivedPublish<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The payload.
    pub payload: &'a [u8],
    /// QoS 0 or 1.
    pub qos: u8,
    /// The packet id (0 for QoS 0); answer QoS 1 with a PUBACK carrying it.
    pub pkid: u16,
    /// The DUP flag.
    pub dup: bool,
    /// The retain flag.
    pub retain: bool,
}

/// A packet a server sends to a client, borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// CONNACK.
    ConnAck {
        /// The session-present flag.
        session_present: bool,
        /// The return code (check it with [`ConnectReturnCode::result`]).
        code: ConnectReturnCode,
    },
    /// PUBLISH.
    Publish(ReceivedPublish<'a>),
    /// PUBACK.
    PubAck {
        /// The acknowledged packet id.
        pkid: u16,
    },
    /// SUBACK.
    SubAck {
        /// The packet id of the SUBSCRIBE.
        pkid: u16,
        /// One byte per filter: the granted QoS (0 or 1) or 0x80 for a failure.
        return_codes: &'a [u8],
    },
    /// UNSUBACK.
    UnsubAck {
        /// The packet id of the UNSUBSCRIBE.
        pkid: u16,
    },
    /// PINGRESP.
    PingResp,
}

/// The result of [`decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete packet taking the first `len` bytes of the input.
    Complete {
        /// The packet.
        packet: Packet<'a>,
        /// Its frame length: drop that many bytes before decoding the next one.
        len: usize,
    },
    /// The input holds the start of a packet; at least `needed` more bytes are required.
    Incomplete {
        /// The minimum number of extra bytes before the next call can make progress.
        needed: usize,
    },
}

fn malformed(message: impl Into<String>) -> Error {
    Error::new(Code::MqttMalformed, message)
}

fn packet_name(kind: u8) -> &'static str {
    [
        "reserved (0)",
        "CONNECT",
        "CONNACK",
        "PUBLISH",
        "PUBACK",
        "PUBREC",
        "PUBREL",
        "PUBCOMP",
        "SUBSCRIBE",
        "SUBACK",
        "UNSUBSCRIBE",
        "UNSUBACK",
        "PINGREQ",
        "PINGRESP",
        "DISCONNECT",
        "reserved (15)",
    ][usize::from(kind & 15)]
}

/// Decodes the first packet in `input`, which may hold a partial packet or several.
///
/// `max_packet_size` bounds the whole frame (fixed header included); a larger packet is
/// refused with `MqttPacketTooLarge` as soon as its header is readable, before its body is
/// waited for. Errors: `MqttMalformed` (bad header, flags, lengths, UTF-8, packet a server
/// never sends), `MqttQosUnsupported` (QoS 2 PUBLISH, PUBREC/PUBREL/PUBCOMP),
/// `MqttPacketTooLarge`. After an error the stream cannot be resynchronised: close the
/// connection.
pub fn decode(input: &[u8], max_packet_size: usize) -> Result<Decoded<'_>> {
    let header = match mqttbytes::check(input.iter(), max_packet_size) {
        Ok(h) => h,
        Err(mqttbytes::Error::InsufficientBytes(n)) => {
            let total = input.len().saturating_add(n);
            // Only meaningful once the length field is complete; earlier, `n` is a lower
            // bound on the header alone.
            if header_complete(input) && total > max_packet_size {
                return Err(too_large(total, max_packet_size));
            }
            return Ok(Decoded::Incomplete { needed: n });
        }
        Err(mqttbytes::Error::PayloadSizeLimitExceeded(rem)) => {
            return Err(too_large(rem.saturating_add(2), max_packet_size));
        }
        Err(mqttbytes::Error::MalformedRemainingLength) => {
            return Err(malformed(
                "the remaining-length field is longer than 4 bytes",
            ))
        }
        Err(e) => return Err(mqtt_error(e, "fixed header")),
    };
    let len = header.frame_length();
    if len > max_packet_size {
        return Err(too_large(len, max_packet_size));
    }
    let frame = &input[..len];
    let byte1 = frame[0];
    let kind = byte1 >> 4;
    let flags = byte1 & 0x0F;
    let hdr = len - remaining_of(frame);
    let body = &frame[hdr..];
    let name = packet_name(kind);
    let expect_flags = |want: u8| -> Result<()> {
        if flags != want {
            return Err(malformed(format!(
                "{name} has fixed-header flags {flags:#06b}; MQTT 3.1.1 requires {want:#06b}"
            )));
        }
        Ok(())
    };
    let expect_len = |want: usize| -> Result<()> {
        if body.len() != want {
            return Err(malformed(format!(
                "{name} has a remaining length of {}; it must be {want}",
                body.len()
            )));
        }
        Ok(())
    };
    let packet = match kind {
        2 => {
            expect_flags(0)?;
            expect_len(2)?;
            if body[0] & 0xFE != 0 {
                return Err(malformed("CONNACK has reserved acknowledge flags set"));
            }
            let v = mqtt_read(frame, name)?;
            let v4::Packet::ConnAck(ack) = v else {
                return Err(malformed("CONNACK decoded as another packet"));
            };
            let code = ConnectReturnCode::from_u8(ack.code as u8)
                .ok_or_else(|| malformed("CONNACK has an unknown return code"))?;
            if ack.session_present && code != ConnectReturnCode::Accepted {
                return Err(malformed(
                    "CONNACK refuses the connection but says a session is present",
                ));
            }
            Packet::ConnAck {
                session_present: ack.session_present,
                code,
            }
        }
        3 => {
            let qos_bits = (flags >> 1) & 3;
            match qos_bits {
                0 | 1 => {}
                2 => {
                    return Err(Error::new(
                        Code::MqttQosUnsupported,
                        "the server sent a QoS 2 PUBLISH; IoT Hub framing supports QoS 0 and 1 only",
                    ))
                }
                _ => return Err(malformed("PUBLISH has QoS bits 3, which MQTT forbids")),
            }
            if qos_bits == 0 && flags & 0b1000 != 0 {
                return Err(malformed("a QoS 0 PUBLISH has the DUP flag set"));
            }
            let v = mqtt_read(frame, name)?;
            let v4::Packet::Publish(p) = v else {
                return Err(malformed("PUBLISH decoded as another packet"));
            };
            let topic_start = hdr + 2;
            let topic_end = topic_start + p.topic.len();
            let topic = std::str::from_utf8(&frame[topic_start..topic_end])
                .map_err(|_| malformed("PUBLISH topic is not UTF-8"))?;
            if topic != p.topic {
                return Err(malformed("PUBLISH topic offsets disagree with the decoder"));
            }
            if topic.is_empty() {
                return Err(malformed("PUBLISH has an empty topic"));
            }
            if topic.contains(['+', '#', '\0']) {
                return Err(malformed("PUBLISH topic contains a wildcard or NUL"));
            }
            let payload = &frame[len - p.payload.len()..];
            Packet::Publish(ReceivedPublish {
                topic,
                payload,
                qos: qos_bits,
                pkid: p.pkid,
                dup: p.dup,
                retain: p.retain,
            })
        }
        4 => {
            expect_flags(0)?;
            expect_len(2)?;
            let pkid = u16::from_be_bytes([body[0], body[1]]);
            check_pkid(pkid, "PUBACK").map_err(|e| malformed(e.message()))?;
            Packet::PubAck { pkid }
        }
        9 => {
            expect_flags(0)?;
            if body.len() < 3 {
                return Err(malformed("SUBACK needs a packet id and at least one return code"));
            }
            let v = mqtt_read(frame, name)?;
            let v4::Packet::SubAck(ack) = v else {
                return Err(malformed("SUBACK decoded as another packet"));
            };
            check_pkid(ack.pkid, "SUBACK").map_err(|e| malformed(e.message()))?;
            let return_codes = &body[2..];
            if let Some(c) = return_codes.iter().find(|c| !matches!(c, 0 | 1 | 0x80)) {
                return Err(malformed(format!(
                    "SUBACK return code {c:#04x}: only QoS 0 or 1 (as requested) or 0x80 (failure) can appear"
                )));
            }
            Packet::SubAck {
                pkid: ack.pkid,
                return_codes,
            }
        }
        11 => {
            expect_flags(0)?;
            expect_len(2)?;
            let pkid = u16::from_be_bytes([body[0], body[1]]);
            check_pkid(pkid, "UNSUBACK").map_err(|e| malformed(e.message()))?;
            Packet::UnsubAck { pkid }
        }
        13 => {
            expect_flags(0)?;
            expect_len(0)?;
            Packet::PingResp
        }
        5..=7 => {
            return Err(Error::new(
                Code::MqttQosUnsupported,
                format!("the server sent {name}, which belongs to QoS 2; IoT Hub framing supports QoS 0 and 1 only"),
            ))
        }
        _ => {
            return Err(malformed(format!(
                "the server sent {name}, which a server never sends to a client"
            )))
        }
    };
    Ok(Decoded::Complete { packet, len })
}

fn too_large(total: usize, max: usize) -> Error {
    Error::new(
        Code::MqttPacketTooLarge,
        format!("an incoming packet of {total} bytes exceeds the limit of {max} bytes"),
    )
}

/// Whether the remaining-length field at `input[1..]` is complete.
fn header_complete(input: &[u8]) -> bool {
    input.iter().skip(1).take(4).any(|b| b & 0x80 == 0)
}

/// The remaining length of a complete frame (its header was checked).
fn remaining_of(frame: &[u8]) -> usize {
    let mut len = 0usize;
    for (i, b) in frame[1..].iter().take(4).enumerate() {
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    len
}

fn mqtt_read(frame: &[u8], name: &str) -> Result<v4::Packet> {
    let mut buf = BytesMut::from(frame);
    v4::read(&mut buf, frame.len()).map_err(|e| mqtt_error(e, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect() -> Connect<'static> {
        Connect {
            client_id: "my_device",
            username: Some("hub/my_device/?api-version=2021-04-12"),
            password: Some("SharedAccessSignature sr=x&sig=y&se=1"),
            keep_alive_s: 240,
            clean_session: true,
            will: None,
        }
    }

    #[test]
    fn connect_reports_frame_length_not_remaining_length() {
        let c = connect();
        let mut out = [0u8; 256];
        let n = c.encode(&mut out).unwrap();
        assert_eq!(n, c.encoded_len().unwrap());
        assert_eq!(out[0], 0x10);
        assert_eq!(usize::from(out[1]) + 2, n);
        // protocol name, level 4, flags: user+password+clean, keep-alive 240
        assert_eq!(
            &out[2..12],
            &[0, 4, b'M', b'Q', b'T', b'T', 4, 0b1100_0010, 0, 240]
        );
        assert!(out[n..].iter().all(|b| *b == 0));
    }

    #[test]
    fn connect_keeps_keep_alive_and_will() {
        let mut c = connect();
        c.keep_alive_s = 0;
        c.will = Some(Will {
            topic: "devices/d/messages/events/",
            payload: b"gone",
            qos: 1,
            retain: false,
        });
        let mut out = vec![0u8; c.encoded_len().unwrap()];
        c.encode(&mut out).unwrap();
        let hdr = out.len() - remaining_of(&out);
        assert_eq!(hdr, 3); // the frame is longer than 127 bytes: 2-byte length
        assert_eq!(out[hdr + 7], 0b1100_1110); // user, password, will QoS 1, will, clean
        assert_eq!(&out[hdr + 8..hdr + 10], &[0, 0]);
        let mut buf = BytesMut::from(&out[..]);
        let v4::Packet::Connect(back) = v4::read(&mut buf, 1 << 20).unwrap() else {
            panic!("not a CONNECT")
        };
        assert_eq!(back.keep_alive, 0);
        assert_eq!(back.last_will.unwrap().message.as_ref(), b"gone");
    }

    #[test]
    fn connect_validation_refuses_what_mqttbytes_would_mangle() {
        let long = "u".repeat(65_536);
        let mut c = connect();
        c.username = Some(&long);
        assert_eq!(c.encoded_len().unwrap_err().code(), Code::InvalidArgument);
        let mut c = connect();
        c.username = None;
        assert!(c
            .encoded_len()
            .unwrap_err()
            .message()
            .contains("requires a user name"));
        let mut c = connect();
        c.password = Some("");
        assert_eq!(c.encoded_len().unwrap_err().code(), Code::InvalidArgument);
        let mut c = connect();
        c.will = Some(Will {
            topic: "t",
            payload: b"",
            qos: 2,
            retain: false,
        });
        assert_eq!(
            c.encoded_len().unwrap_err().code(),
            Code::MqttQosUnsupported
        );
    }

    #[test]
    fn too_small_buffer_is_left_untouched() {
        let c = connect();
        let n = c.encoded_len().unwrap();
        let mut out = vec![0xAAu8; n - 1];
        let e = c.encode(&mut out).unwrap_err();
        assert_eq!(e.code(), Code::BufferTooSmall);
        assert!(out.iter().all(|b| *b == 0xAA));
    }

    #[test]
    fn qos1_publish_with_packet_id_zero_writes_nothing() {
        let p = Publish {
            topic: "t",
            payload: b"x",
            qos: 1,
            pkid: 0,
            dup: false,
        };
        let mut out = [0xAAu8; 64];
        assert_eq!(
            p.encode(&mut out).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert!(out.iter().all(|b| *b == 0xAA));
        let p = Publish {
            qos: 2,
            pkid: 1,
            ..p
        };
        assert_eq!(
            p.encode(&mut out).unwrap_err().code(),
            Code::MqttQosUnsupported
        );
        let p = Publish {
            qos: 0,
            pkid: 0,
            topic: "a/#",
            ..p
        };
        assert_eq!(p.encode(&mut out).unwrap_err().code(), Code::TopicInvalid);
        let big = vec![0u8; MAX_MESSAGE_SIZE + 1];
        let p = Publish {
            topic: "t",
            payload: &big,
            qos: 0,
            pkid: 0,
            dup: false,
        };
        assert_eq!(
            p.encoded_len().unwrap_err().code(),
            Code::MqttPacketTooLarge
        );
    }

    #[test]
    fn publish_round_trips_through_decode() {
        let payload = vec![7u8; 300];
        let p = Publish {
            topic: "devices/d/messages/devicebound/a=1",
            payload: &payload,
            qos: 1,
            pkid: 9,
            dup: true,
        };
        let mut out = vec![0u8; p.encoded_len().unwrap()];
        let n = p.encode(&mut out).unwrap();
        let Decoded::Complete {
            packet: Packet::Publish(r),
            len,
        } = decode(&out, DEFAULT_MAX_PACKET_SIZE).unwrap()
        else {
            panic!("not a publish")
        };
        assert_eq!(len, n);
        assert_eq!(
            (r.topic, r.payload, r.qos, r.pkid, r.dup, r.retain),
            (p.topic, &payload[..], 1, 9, true, false)
        );
    }

    #[test]
    fn direct_publish_writer_matches_mqttbytes_at_every_length_boundary() {
        let big = vec![0x5Au8; MAX_MESSAGE_SIZE];
        for size in [
            0usize,
            1,
            120,
            121,
            122,
            16_370,
            16_371,
            16_372,
            MAX_MESSAGE_SIZE,
        ] {
            for (qos, pkid) in [(0u8, 0u16), (1, 513)] {
                let p = Publish {
                    topic: "a/b",
                    payload: &big[..size],
                    qos,
                    pkid,
                    dup: qos == 1,
                };
                let n = p.encoded_len().unwrap();
                let (mut ours, mut theirs) = (vec![0u8; n], vec![0u8; n]);
                assert_eq!(p.encode(&mut ours).unwrap(), n);
                assert_eq!(p.encode_with_mqttbytes(&mut theirs).unwrap(), n);
                assert!(ours == theirs, "payload {size}, QoS {qos}");
            }
        }
    }

    #[test]
    fn frames_in_parts_match_the_reference_and_set_dup_in_place() {
        let payload = vec![7u8; 300];
        let topic = "devices/d1/messages/events/a=1";
        for qos in [0u8, 1] {
            let pkid = u16::from(qos) * 513;
            let reference = Publish {
                topic,
                payload: &payload,
                qos,
                pkid,
                dup: false,
            };
            let want = encode_to_vec(reference.encoded_len(), |b| reference.encode(b)).unwrap();
            let mut out = b"before".to_vec();
            let parts = ["devices/d1/messages/events/", "a=1"];
            let n = append_publish(&mut out, &parts, &payload, qos, pkid).unwrap();
            assert_eq!(n, want.len());
            assert_eq!(&out[6..], &want[..]);
            if qos == 1 {
                let mut frame = PublishFrame::encode(out, &parts, &payload, pkid).unwrap();
                assert_eq!(frame.as_bytes(), &want[..]);
                frame.set_dup();
                let dup = Publish {
                    dup: true,
                    ..reference
                };
                let want = encode_to_vec(dup.encoded_len(), |b| dup.encode(b)).unwrap();
                assert_eq!(frame.as_bytes(), &want[..]);
            }
        }
        let mut out = Vec::new();
        assert!(append_publish(&mut out, &["t"], b"x", 1, 0).is_err());
        assert!(append_publish(&mut out, &["t"], b"x", 0, 3).is_err());
        assert!(append_publish(&mut out, &["t"], b"x", 2, 3).is_err());
        assert!(append_publish(&mut out, &[""], b"x", 0, 0).is_err());
        let big = vec![0u8; MAX_MESSAGE_SIZE + 1];
        assert!(append_publish(&mut out, &["t"], &big, 0, 0).is_err());
        assert!(out.is_empty(), "a refused PUBLISH appended bytes");
    }

    #[test]
    fn small_packets_encode_exactly() {
        let mut out = [0u8; 64];
        assert_eq!(encode_puback(0x1234, &mut out).unwrap(), 4);
        assert_eq!(&out[..4], &[0x40, 2, 0x12, 0x34]);
        assert_eq!(encode_pingreq(&mut out).unwrap(), 2);
        assert_eq!(&out[..2], &[0xC0, 0]);
        assert_eq!(encode_disconnect(&mut out).unwrap(), 2);
        assert_eq!(&out[..2], &[0xE0, 0]);
        let n = encode_subscribe(1, &[("a/#", 1), ("b", 0)], &mut out).unwrap();
        assert_eq!(
            &out[..n],
            &[0x82, 12, 0, 1, 0, 3, b'a', b'/', b'#', 1, 0, 1, b'b', 0]
        );
        let n = encode_unsubscribe(2, &["a/#"], &mut out).unwrap();
        assert_eq!(&out[..n], &[0xA2, 7, 0, 2, 0, 3, b'a', b'/', b'#']);
        assert_eq!(
            encode_puback(0, &mut out).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            encode_subscribe(1, &[("a", 2)], &mut out)
                .unwrap_err()
                .code(),
            Code::MqttQosUnsupported
        );
        assert_eq!(
            encode_subscribe(1, &[], &mut out).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            encode_pingreq(&mut out[..1]).unwrap_err().code(),
            Code::BufferTooSmall
        );
    }

    #[test]
    fn decodes_partial_and_concatenated_frames() {
        let mut stream = vec![0x20, 2, 0, 0]; // CONNACK accepted
        stream.extend_from_slice(&[0x90, 4, 0, 1, 1, 0x80]); // SUBACK granted 1, failure
        stream.extend_from_slice(&[0x40, 2, 0, 5]); // PUBACK 5
        stream.extend_from_slice(&[0xB0, 2, 0, 2]); // UNSUBACK 2
        stream.extend_from_slice(&[0xD0, 0]); // PINGRESP
        stream.extend_from_slice(&[0x30, 5, 0, 1, b't', b'h', b'i']); // PUBLISH QoS 0
        let mut got = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            match decode(&stream[at..], DEFAULT_MAX_PACKET_SIZE).unwrap() {
                Decoded::Complete { packet, len } => {
                    got.push(packet);
                    at += len;
                }
                Decoded::Incomplete { .. } => panic!("complete stream reported incomplete"),
            }
        }
        assert_eq!(got.len(), 6);
        assert_eq!(
            got[0],
            Packet::ConnAck {
                session_present: false,
                code: ConnectReturnCode::Accepted
            }
        );
        assert_eq!(
            got[1],
            Packet::SubAck {
                pkid: 1,
                return_codes: &[1, 0x80]
            }
        );
        assert_eq!(got[2], Packet::PubAck { pkid: 5 });
        assert_eq!(got[3], Packet::UnsubAck { pkid: 2 });
        assert_eq!(got[4], Packet::PingResp);
        let Packet::Publish(p) = got[5] else { panic!() };
        assert_eq!((p.topic, p.payload), ("t", &b"hi"[..]));
        // Every strict prefix of the PUBLISH is incomplete, with a sensible lower bound.
        let publish = &stream[stream.len() - 7..];
        for cut in 0..publish.len() {
            match decode(&publish[..cut], DEFAULT_MAX_PACKET_SIZE).unwrap() {
                Decoded::Incomplete { needed } => {
                    assert!(needed >= 1 && cut + needed <= 7, "cut {cut}")
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn connack_codes_are_named() {
        for (byte, code) in [
            (4u8, Code::NotAuthorized),
            (5, Code::NotAuthorized),
            (3, Code::MqttConnectionRefused),
        ] {
            let Decoded::Complete {
                packet: Packet::ConnAck { code: rc, .. },
                ..
            } = decode(&[0x20, 2, 0, byte], 64).unwrap()
            else {
                panic!()
            };
            let e = rc.result().unwrap_err();
            assert_eq!(e.code(), code);
            assert!(e.message().contains(&format!("CONNACK {byte}")));
        }
        assert!(ConnectReturnCode::Accepted.result().is_ok());
        assert_eq!(
            decode(&[0x20, 2, 0, 6], 64).unwrap_err().code(),
            Code::MqttMalformed
        );
    }

    #[test]
    fn malformed_and_refused_input() {
        let cases: &[(&[u8], Code)] = &[
            (&[0x20, 3, 0, 0, 0], Code::MqttMalformed), // CONNACK too long
            (&[0x21, 2, 0, 0], Code::MqttMalformed),    // bad flags
            (&[0x20, 2, 2, 0], Code::MqttMalformed),    // reserved ack flags
            (&[0x40, 2, 0, 0], Code::MqttMalformed),    // PUBACK pkid 0
            (&[0x34, 5, 0, 1, b't', 0, 1], Code::MqttQosUnsupported), // QoS 2 publish
            (&[0x36, 5, 0, 1, b't', 0, 1], Code::MqttMalformed), // QoS 3
            (&[0x50, 2, 0, 1], Code::MqttQosUnsupported), // PUBREC
            (&[0x10, 0], Code::MqttMalformed),          // CONNECT from a server
            (&[0x00, 0], Code::MqttMalformed),          // reserved type
            (&[0x90, 3, 0, 1, 2], Code::MqttMalformed), // SUBACK QoS 2 granted
            (&[0x90, 2, 0, 1], Code::MqttMalformed),    // SUBACK without codes
            (&[0x30, 3, 0, 1, 0xFF], Code::MqttMalformed), // topic not UTF-8
            (&[0x30, 3, 0, 1, b'#'], Code::MqttMalformed), // wildcard
            (&[0x30, 2, 0, 0], Code::MqttMalformed),    // empty topic
            (&[0x30, 2, 0, 5], Code::MqttMalformed),    // topic crosses the frame
            (&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], Code::MqttMalformed), // 5-byte length
        ];
        for (bytes, code) in cases {
            assert_eq!(decode(bytes, 1024).unwrap_err().code(), *code, "{bytes:x?}");
        }
    }

    #[test]
    fn oversized_packets_are_refused_before_their_body_arrives() {
        // A PUBLISH announcing 300000 bytes; only its header has arrived.
        let mut hdr = vec![0x30];
        let mut n = 300_000usize;
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            hdr.push(b);
            if n == 0 {
                break;
            }
        }
        assert_eq!(
            decode(&hdr, 1024).unwrap_err().code(),
            Code::MqttPacketTooLarge
        );
        // The bound covers the whole frame: remaining 1022 + 3 header bytes > 1024.
        let e = decode(&[0x30, 0xFE, 0x07], 1024).unwrap_err();
        assert_eq!(e.code(), Code::MqttPacketTooLarge);
        assert!(matches!(
            decode(&[0x30, 0xFD, 0x07], 1024).unwrap(),
            Decoded::Incomplete { needed: 1021 }
        ));
    }
}
