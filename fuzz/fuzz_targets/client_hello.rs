//! The ClientHello analyser on arbitrary bytes: never panics; a hello that parses is
//! audited and rendered; feeding the same bytes in pieces gives the same result as at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::audit::{audit, parse_client_hello, HelloReader, Progress};

fuzz_target!(|data: &[u8]| {
    let whole = parse_client_hello(data);
    if let Ok(hello) = &whole {
        let report = audit(hello);
        let _ = report.to_json();
        let _ = report.to_text();
    }
    let mut reader = HelloReader::default();
    let mut done = None;
    for piece in data.chunks(7) {
        if let Progress::Done(result) = reader.feed(piece) {
            done = Some(result);
            break;
        }
    }
    if let (Some(result), true) = (done, data.len() <= tether::audit::MAX_HELLO_LEN) {
        if whole.is_ok() {
            assert_eq!(result, whole);
        }
    }
});
