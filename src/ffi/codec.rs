//! The MQTT 3.1.1 codec for C: encode packets into a caller buffer, decode what the server
//! sends from a caller buffer.
//!
//! Encoders write a complete packet or nothing: when `cap` is too small they return
//! `TETHER_RESULT_BUFFER_TOO_SMALL` and set `*out_len` to the packet's size. The decoder
//! takes whatever bytes have arrived; it answers `TETHER_RESULT_MQTT_NEED_MORE_DATA` with
//! the minimum number of extra bytes, or one packet and the bytes it used.

use std::ffi::c_char;

use crate::error::{Code, Error, Result};
use crate::ffi::panic::guard;
use crate::ffi::topics::{opt_text_arg, tether_span};
use crate::ffi::{array_arg, bytes_arg, opt_in_arg, out_arg, out_buf_arg, text_arg};
use crate::mqtt::codec::{self, ConnectReturnCode, Decoded, Packet};

/// The default bound on a received packet (327680 bytes: a 256 KiB message, a topic of up
/// to 64 KiB and headers). Pass 0 to `tether_mqtt_decode` to use it.
pub const TETHER_MQTT_DEFAULT_MAX_PACKET_SIZE: usize = 327_680;

/// Packet types reported by `tether_mqtt_decode` (the MQTT packet type numbers).
pub const TETHER_MQTT_PACKET_CONNACK: u8 = 2;
/// PUBLISH.
pub const TETHER_MQTT_PACKET_PUBLISH: u8 = 3;
/// PUBACK.
pub const TETHER_MQTT_PACKET_PUBACK: u8 = 4;
/// SUBACK.
pub const TETHER_MQTT_PACKET_SUBACK: u8 = 9;
/// UNSUBACK.
pub const TETHER_MQTT_PACKET_UNSUBACK: u8 = 11;
/// PINGRESP.
pub const TETHER_MQTT_PACKET_PINGRESP: u8 = 13;
/// A SUBACK return code meaning the subscription was refused.
pub const TETHER_MQTT_SUBACK_FAILURE: u8 = 0x80;

const _: () = assert!(TETHER_MQTT_DEFAULT_MAX_PACKET_SIZE == codec::DEFAULT_MAX_PACKET_SIZE);

/// A borrowed piece of binary data: `len` bytes at `ptr` (NULL when `len` is 0 or absent).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_bytes {
    /// The first byte, or NULL.
    pub ptr: *const u8,
    /// The length in bytes.
    pub len: usize,
}

impl tether_bytes {
    const NONE: tether_bytes = tether_bytes {
        ptr: std::ptr::null(),
        len: 0,
    };

    fn of(b: &[u8]) -> Self {
        tether_bytes {
            ptr: b.as_ptr(),
            len: b.len(),
        }
    }
}

/// CONNECT options. Zero-initialise it, then set what you need.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_mqtt_connect_options {
    /// The client id (NUL-terminated; `tether_mqtt_client_id` builds IoT Hub's). Not NULL.
    pub client_id: *const c_char,
    /// The user name (`tether_mqtt_username`), or NULL.
    pub username: *const c_char,
    /// The password (a SAS token), or NULL (X.509). Requires a user name.
    pub password: *const c_char,
    /// Keep-alive in seconds, sent as given (0 disables it; IoT Hub allows up to 1177).
    pub keep_alive_s: u16,
    /// The clean-session flag.
    pub clean_session: bool,
    /// The will topic, or NULL for no will.
    pub will_topic: *const c_char,
    /// The will message (may be NULL when `will_payload_len` is 0).
    pub will_payload: *const u8,
    /// The will message length (at most 65535).
    pub will_payload_len: usize,
    /// The will QoS (0 or 1).
    pub will_qos: u8,
    /// The will retain flag.
    pub will_retain: bool,
}

/// A decoded packet. Which fields are set depends on `packet_type`; the others are zero.
/// `topic`, `payload` and `suback_return_codes` point into the caller's input buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tether_mqtt_packet {
    /// One of `TETHER_MQTT_PACKET_*`.
    pub packet_type: u8,
    /// CONNACK: the session-present flag.
    pub session_present: bool,
    /// CONNACK: the return code (0 accepted, 1..5 refused; see `tether_mqtt_connack_check`).
    pub connack_return_code: u8,
    /// PUBLISH: QoS 0 or 1.
    pub qos: u8,
    /// PUBLISH: the DUP flag.
    pub dup: bool,
    /// PUBLISH: the retain flag.
    pub retain: bool,
    /// PUBLISH (QoS 1), PUBACK, SUBACK, UNSUBACK: the packet id.
    pub packet_id: u16,
    /// PUBLISH: the topic.
    pub topic: tether_span,
    /// PUBLISH: the payload.
    pub payload: tether_bytes,
    /// SUBACK: one byte per filter: the granted QoS or `TETHER_MQTT_SUBACK_FAILURE`.
    pub suback_return_codes: tether_bytes,
}

impl tether_mqtt_packet {
    fn empty(packet_type: u8) -> Self {
        tether_mqtt_packet {
            packet_type,
            session_present: false,
            connack_return_code: 0,
            qos: 0,
            dup: false,
            retain: false,
            packet_id: 0,
            topic: tether_span::NONE,
            payload: tether_bytes::NONE,
            suback_return_codes: tether_bytes::NONE,
        }
    }
}

/// Checks an output buffer for an encoder and returns it as a slice.
///
/// # Safety
/// `out` is NULL or valid for `cap` bytes.
unsafe fn out_buf<'a>(out: *mut u8, cap: usize) -> Result<&'a mut [u8]> {
    // SAFETY: forwarded.
    unsafe { out_buf_arg(out, cap, "out") }?;
    if cap == 0 {
        return Ok(&mut []);
    }
    // SAFETY: per the contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(out, cap) })
}

/// Runs an encoder: sizes first, so a too-small buffer gets the size needed.
///
/// # Safety
/// As `out_buf`; `out_len` NULL or valid for a write.
unsafe fn encode_into(
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
    len: impl FnOnce() -> Result<usize>,
    encode: impl FnOnce(&mut [u8]) -> Result<usize>,
) -> Result<()> {
    // SAFETY: forwarded.
    let out_len = unsafe { out_arg(out_len, "out_len") }?;
    let buf = unsafe { out_buf(out, cap) }?;
    let needed = len()?;
    if needed > cap {
        *out_len = needed;
        return Err(Error::new(
            Code::BufferTooSmall,
            format!("the packet needs {needed} bytes; the buffer holds {cap}"),
        ));
    }
    *out_len = encode(buf)?;
    Ok(())
}

/// Encodes a CONNECT (MQTT 3.1.1) into `out`.
///
/// - `options`: see `tether_mqtt_connect_options`. Not NULL. Nothing is taken over.
/// - `out`, `cap`: the output buffer (may be NULL when `cap` is 0, to ask for the size).
/// - `out_len`: receives the bytes written, or the size needed. Not NULL.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_INVALID_ARGUMENT` (string over 65535 bytes, password without user name,
/// empty user name or password), `TETHER_RESULT_MQTT_QOS_UNSUPPORTED` (will QoS 2),
/// `TETHER_RESULT_TOPIC_INVALID` (will topic with a wildcard),
/// `TETHER_RESULT_BUFFER_TOO_SMALL` (nothing written).
#[no_mangle]
pub unsafe extern "C" fn tether_mqtt_encode_connect(
    options: *const tether_mqtt_connect_options,
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let o = unsafe { opt_in_arg(options, "options") }?
            .ok_or_else(|| Error::new(Code::NullArgument, "`options` is NULL"))?;
        let client_id = unsafe { text_arg(o.client_id, "options->client_id") }?;
        let username = unsafe { opt_text_arg(o.username, "options->username") }?;
        let password = unsafe { opt_text_arg(o.password, "options->password") }?;
        let will = match unsafe { opt_text_arg(o.will_topic, "options->will_topic") }? {
            Some(topic) => Some(codec::Will {
                topic,
                payload: unsafe {
                    bytes_arg(o.will_payload, o.will_payload_len, "options->will_payload")
                }?,
                qos: o.will_qos,
                retain: o.will_retain,
            }),
            None => None,
        };
        let c = codec::Connect {
            client_id,
            username,
            password,
            keep_alive_s: o.keep_alive_s,
            clean_session: o.clean_session,
            will,
        };
        unsafe { encode_into(out, cap, out_len, || c.encoded_len(), |b| c.encode(b)) }
    })
}

/// Encodes a PUBLISH into `out`.
///
/// - `topic`: NUL-terminated, no wildcards. Not NULL.
/// - `payload`, `payload_len`: the message (at most 256 KiB); NULL when the length is 0.
/// - `qos`: 0 or 1 (2 is refused). `packet_id`: non-zero for QoS 1, 0 for QoS 0.
/// - `dup`: set when re-sending a QoS 1 message.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_INVALID_ARGUMENT` (packet id), `TETHER_RESULT_MQTT_QOS_UNSUPPORTED`,
/// `TETHER_RESULT_TOPIC_INVALID`, `TETHER_RESULT_MQTT_PACKET_TOO_LARGE`,
/// `TETHER_RESULT_BUFFER_TOO_SMALL` (nothing written, `*out_len` = size needed).
#[no_mangle]
pub unsafe extern "C" fn tether_mqtt_encode_publish(
    topic: *const c_char,
    payload: *const u8,
    payload_len: usize,
    qos: u8,
    packet_id: u16,
    dup: bool,
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let topic = unsafe { text_arg(topic, "topic") }?;
        let payload = unsafe { bytes_arg(payload, payload_len, "payload") }?;
        let p = codec::Publish {
            topic,
            payload,
            qos,
            pkid: packet_id,
            dup,
        };
        unsafe { encode_into(out, cap, out_len, || p.encoded_len(), |b| p.encode(b)) }
    })
}

/// Encodes a PUBACK for `packet_id` (non-zero) into `out` (4 bytes).
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
/// `TETHER_RESULT_INVALID_ARGUMENT`, `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_mqtt_encode_puback(
    packet_id: u16,
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| unsafe {
        // SAFETY: per the contract.
        encode_into(
            out,
            cap,
            out_len,
            || Ok(4),
            |b| codec::encode_puback(packet_id, b),
        )
    })
}

/// Reads `count` NUL-terminated filters.
///
/// # Safety
/// `filters` valid for `count` pointers.
unsafe fn filters_arg<'a>(filters: *const *const c_char, count: usize) -> Result<Vec<&'a str>> {
    if count == 0 {
        return Err(Error::new(
            Code::InvalidArgument,
            "at least one topic filter is needed",
        ));
    }
    // SAFETY: per the contract.
    let ptrs = unsafe { array_arg(filters, count, "filters") }?;
    ptrs.iter()
        .enumerate()
        .map(|(i, p)| unsafe { text_arg(*p, &format!("filters[{i}]")) })
        .collect()
}

/// Encodes a SUBSCRIBE with `count` filters and their requested QoS (0 or 1).
///
/// - `filters`: `count` NUL-terminated topic filters (e.g. `$iothub/twin/res/#`). Not NULL.
/// - `qos`: `count` bytes. Not NULL.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_INVALID_ARGUMENT`, `TETHER_RESULT_MQTT_QOS_UNSUPPORTED`,
/// `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_mqtt_encode_subscribe(
    packet_id: u16,
    filters: *const *const c_char,
    qos: *const u8,
    count: usize,
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let names = unsafe { filters_arg(filters, count) }?;
        let qos = unsafe { bytes_arg(qos, count, "qos") }?;
        let pairs: Vec<(&str, u8)> = names.into_iter().zip(qos.iter().copied()).collect();
        unsafe {
            encode_into(
                out,
                cap,
                out_len,
                || codec::subscribe_len(packet_id, &pairs),
                |b| codec::encode_subscribe(packet_id, &pairs, b),
            )
        }
    })
}

/// Encodes an UNSUBSCRIBE with `count` filters.
///
/// Results: as `tether_mqtt_encode_subscribe`.
#[no_mangle]
pub unsafe extern "C" fn tether_mqtt_encode_unsubscribe(
    packet_id: u16,
    filters: *const *const c_char,
    count: usize,
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let names = unsafe { filters_arg(filters, count) }?;
        unsafe {
            encode_into(
                out,
                cap,
                out_len,
                || codec::unsubscribe_len(packet_id, &names),
                |b| codec::encode_unsubscribe(packet_id, &names, b),
            )
        }
    })
}

/// Encodes a PINGREQ (2 bytes).
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_mqtt_encode_pingreq(
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    // SAFETY: per the contract.
    guard(|| unsafe { encode_into(out, cap, out_len, || Ok(2), codec::encode_pingreq) })
}

/// Encodes a DISCONNECT (2 bytes).
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_mqtt_encode_disconnect(
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    // SAFETY: per the contract.
    guard(|| unsafe { encode_into(out, cap, out_len, || Ok(2), codec::encode_disconnect) })
}

/// Decodes the first packet in `input` (`input_len` bytes received so far, which may hold
/// part of a packet or several packets).
///
/// - `max_packet_size`: the largest whole packet accepted; 0 for
///   `TETHER_MQTT_DEFAULT_MAX_PACKET_SIZE`. A larger one is refused as soon as its header is
///   readable.
/// - `out`: receives the packet (spans into `input`). Written only on `TETHER_RESULT_OK`.
/// - `out_consumed`: receives the packet's length: drop that many bytes before the next
///   call. Set only on `TETHER_RESULT_OK`.
/// - `out_needed`: on `TETHER_RESULT_MQTT_NEED_MORE_DATA`, receives the minimum number of
///   extra bytes to read before calling again. Not NULL.
///
/// No allocation for the caller to free; the packet borrows `input`. Thread-safe.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_MQTT_NEED_MORE_DATA`,
/// `TETHER_RESULT_MQTT_MALFORMED`, `TETHER_RESULT_MQTT_PACKET_TOO_LARGE`,
/// `TETHER_RESULT_MQTT_QOS_UNSUPPORTED` (QoS 2 traffic), `TETHER_RESULT_NULL_ARGUMENT`.
/// After an error other than NEED_MORE_DATA the stream cannot be resynchronised: close the
/// connection.
#[no_mangle]
pub unsafe extern "C" fn tether_mqtt_decode(
    input: *const u8,
    input_len: usize,
    max_packet_size: usize,
    out: *mut tether_mqtt_packet,
    out_consumed: *mut usize,
    out_needed: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: per the contract.
        let input = unsafe { bytes_arg(input, input_len, "input") }?;
        let out = unsafe { out_arg(out, "out") }?;
        let consumed = unsafe { out_arg(out_consumed, "out_consumed") }?;
        let needed_out = unsafe { out_arg(out_needed, "out_needed") }?;
        let max = if max_packet_size == 0 {
            codec::DEFAULT_MAX_PACKET_SIZE
        } else {
            max_packet_size
        };
        match codec::decode(input, max)? {
            Decoded::Incomplete { needed } => {
                *needed_out = needed;
                Err(Error::new(
                    Code::MqttNeedMoreData,
                    format!("the packet is incomplete: at least {needed} more bytes are needed"),
                ))
            }
            Decoded::Complete { packet, len } => {
                *out = packet_out(packet);
                *consumed = len;
                Ok(())
            }
        }
    })
}

fn packet_out(packet: Packet<'_>) -> tether_mqtt_packet {
    match packet {
        Packet::ConnAck {
            session_present,
            code,
        } => tether_mqtt_packet {
            session_present,
            connack_return_code: code as u8,
            ..tether_mqtt_packet::empty(TETHER_MQTT_PACKET_CONNACK)
        },
        Packet::Publish(p) => tether_mqtt_packet {
            qos: p.qos,
            dup: p.dup,
            retain: p.retain,
            packet_id: p.pkid,
            topic: tether_span::of(p.topic),
            payload: tether_bytes::of(p.payload),
            ..tether_mqtt_packet::empty(TETHER_MQTT_PACKET_PUBLISH)
        },
        Packet::PubAck { pkid } => tether_mqtt_packet {
            packet_id: pkid,
            ..tether_mqtt_packet::empty(TETHER_MQTT_PACKET_PUBACK)
        },
        Packet::SubAck { pkid, return_codes } => tether_mqtt_packet {
            packet_id: pkid,
            suback_return_codes: tether_bytes::of(return_codes),
            ..tether_mqtt_packet::empty(TETHER_MQTT_PACKET_SUBACK)
        },
        Packet::UnsubAck { pkid } => tether_mqtt_packet {
            packet_id: pkid,
            ..tether_mqtt_packet::empty(TETHER_MQTT_PACKET_UNSUBACK)
        },
        Packet::PingResp => tether_mqtt_packet::empty(TETHER_MQTT_PACKET_PINGRESP),
    }
}

/// Turns a CONNACK return code into a result whose `tether_last_error` message names it
/// ("CONNACK 5 (not authorized)").
///
/// Results: `TETHER_RESULT_OK` (0, accepted), `TETHER_RESULT_NOT_AUTHORIZED` (4 bad user
/// name or password, 5 not authorized), `TETHER_RESULT_MQTT_CONNECTION_REFUSED` (1 protocol
/// version, 2 client id rejected, 3 server unavailable), `TETHER_RESULT_MQTT_MALFORMED`
/// (not a 3.1.1 return code).
#[no_mangle]
pub extern "C" fn tether_mqtt_connack_check(return_code: u8) -> Code {
    guard(|| match ConnectReturnCode::from_u8(return_code) {
        Some(code) => code.result(),
        None => Err(Error::new(
            Code::MqttMalformed,
            format!("CONNACK return code {return_code} is not defined by MQTT 3.1.1"),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_publish_size_query_then_decode() {
        let mut len = 0usize;
        let r = unsafe {
            tether_mqtt_encode_publish(
                c"a/b".as_ptr(),
                b"hi".as_ptr(),
                2,
                1,
                7,
                false,
                std::ptr::null_mut(),
                0,
                &mut len,
            )
        };
        assert_eq!(r, Code::BufferTooSmall);
        assert_eq!(len, 2 + 2 + 3 + 2 + 2);
        let mut buf = vec![0u8; len];
        let r = unsafe {
            tether_mqtt_encode_publish(
                c"a/b".as_ptr(),
                b"hi".as_ptr(),
                2,
                1,
                7,
                false,
                buf.as_mut_ptr(),
                len,
                &mut len,
            )
        };
        assert_eq!(r, Code::Ok);
        let mut p = tether_mqtt_packet::empty(0);
        let (mut used, mut need) = (0usize, 0usize);
        let r = unsafe { tether_mqtt_decode(buf.as_ptr(), 3, 0, &mut p, &mut used, &mut need) };
        assert_eq!(r, Code::MqttNeedMoreData);
        assert_eq!(need, len - 3);
        let r = unsafe { tether_mqtt_decode(buf.as_ptr(), len, 0, &mut p, &mut used, &mut need) };
        assert_eq!(r, Code::Ok);
        assert_eq!(
            (p.packet_type, p.qos, p.packet_id, used),
            (TETHER_MQTT_PACKET_PUBLISH, 1, 7, len)
        );
        assert_eq!(p.payload.ptr, unsafe { buf.as_ptr().add(len - 2) });
    }

    #[test]
    fn connack_check_names_codes() {
        assert_eq!(tether_mqtt_connack_check(0), Code::Ok);
        assert_eq!(tether_mqtt_connack_check(5), Code::NotAuthorized);
        assert_eq!(tether_mqtt_connack_check(2), Code::MqttConnectionRefused);
        assert_eq!(tether_mqtt_connack_check(9), Code::MqttMalformed);
    }

    #[test]
    fn connect_options_from_c() {
        let o = tether_mqtt_connect_options {
            client_id: c"d".as_ptr(),
            username: c"u".as_ptr(),
            password: std::ptr::null(),
            keep_alive_s: 60,
            clean_session: true,
            will_topic: std::ptr::null(),
            will_payload: std::ptr::null(),
            will_payload_len: 0,
            will_qos: 0,
            will_retain: false,
        };
        let mut buf = [0u8; 64];
        let mut len = 0;
        assert_eq!(
            unsafe { tether_mqtt_encode_connect(&o, buf.as_mut_ptr(), 64, &mut len) },
            Code::Ok
        );
        assert_eq!(len, 2 + 10 + 3 + 3);
        let o = tether_mqtt_connect_options {
            username: std::ptr::null(),
            password: c"p".as_ptr(),
            ..o
        };
        assert_eq!(
            unsafe { tether_mqtt_encode_connect(&o, buf.as_mut_ptr(), 64, &mut len) },
            Code::InvalidArgument
        );
    }
}
