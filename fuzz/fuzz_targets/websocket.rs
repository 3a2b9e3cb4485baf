//! The WebSocket client framing (`src/transport/ws.rs`) on arbitrary server bytes, after an
//! upgrade answer that is good or taken from the input, fed in chunks the input sizes: never
//! panics; the data passed on never exceeds what was received, nor the message limit per
//! message; nothing incomplete is held beyond what one frame header and the limit allow;
//! chunking never changes the data or the outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::transport::ws::{WsClient, PATH};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const GOOD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

fn run(input: &[u8], chunk: usize, limit: usize) -> (Vec<u8>, Result<(), tether::Code>, bool) {
    let (mut ws, _) = WsClient::with_key("hub", PATH, limit, KEY);
    let (mut data, mut reply) = (Vec::new(), Vec::new());
    for piece in input.chunks(chunk.max(1)) {
        match ws.receive(piece, &mut data, &mut reply) {
            Ok(_) => {}
            Err(e) => return (data, Err(e.code()), ws.is_open()),
        }
        assert!(ws.buffered() <= input.len());
    }
    (data, Ok(()), ws.is_open())
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&control, rest)) = bytes.split_first() else {
        return;
    };
    let limit = 16 + usize::from(control & 0x3f) * 64;
    let chunk = usize::from(control >> 6) * 7 + 1;
    // Bit 7 of the first byte set: the upgrade answer is the server's bytes too.
    let input = if control & 0x80 == 0 {
        [GOOD, rest].concat()
    } else {
        rest.to_vec()
    };
    let whole = run(&input, input.len(), limit);
    let pieces = run(&input, chunk, limit);
    assert!(whole.0.len() <= input.len());
    assert_eq!(whole.1, pieces.1, "chunking changed the outcome");
    assert_eq!(whole.0, pieces.0, "chunking changed the data");
    assert_eq!(whole.2, pieces.2);
});
