//! The ServerHello sniffer (reads the server's plaintext handshake records to name TLS
//! policy refusals) on arbitrary bytes, fed in chunks the input chooses: never panics,
//! and chunking does not change what it finds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::handshake::{suite_name, version_name, HelloSniffer};

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let mut whole = HelloSniffer::default();
    whole.feed(input);
    let mut chunked = HelloSniffer::default();
    for chunk in input.chunks(usize::from(step).max(1)) {
        chunked.feed(chunk);
    }
    assert_eq!(whole.server_version, chunked.server_version);
    assert_eq!(whole.cipher_suite, chunked.cipher_suite);
    assert_eq!(whole.certificate_requested, chunked.certificate_requested);
    assert_eq!(whole.alert, chunked.alert);
    assert_eq!(whole.bytes_seen, input.len());
    if let Some(v) = whole.server_version {
        let _ = version_name(v);
    }
    if let Some(s) = whole.cipher_suite {
        let _ = suite_name(s);
    }
});
