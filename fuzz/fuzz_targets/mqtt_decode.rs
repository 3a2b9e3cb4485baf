//! The MQTT decoder on arbitrary bytes: never panics; a complete packet never claims more
//! bytes than it was given; decoding a stream packet by packet always makes progress.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::mqtt::codec::{decode, Decoded, Packet};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a small packet-size bound to reach the size checks too.
    let (max, input) = match data.split_first() {
        Some((b, rest)) if b & 1 == 1 => (usize::from(*b) * 16, rest),
        _ => (tether::mqtt::codec::DEFAULT_MAX_PACKET_SIZE, data),
    };
    let mut rest = input;
    while !rest.is_empty() {
        match decode(rest, max) {
            Ok(Decoded::Complete { packet, len }) => {
                assert!(len >= 2 && len <= rest.len() && len <= max);
                if let Packet::Publish(p) = packet {
                    assert!(p.qos <= 1);
                    assert!(p.payload.len() + p.topic.len() < len);
                }
                rest = &rest[len..];
            }
            Ok(Decoded::Incomplete { needed }) => {
                assert!(needed >= 1);
                break;
            }
            Err(_) => break,
        }
    }
});
