//! The property-bag parser and the percent-decoder on arbitrary text: never panic; a bag
//! that validates iterates without errors; decode(encode(x)) == x.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::mqtt::properties::{self, parse_bag, PropertyBag};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if parse_bag(text).validate().is_ok() {
        let mut rebuilt = PropertyBag::new();
        for p in parse_bag(text) {
            let p = p.expect("validated");
            let key = p.decoded_key().expect("validated");
            let value = p.decoded_value().expect("validated");
            rebuilt
                .try_append(&key, value.as_deref())
                .expect("non-empty key");
        }
        // Re-encoding normalises escapes; parsing again gives the same properties.
        let again: Vec<_> = parse_bag(rebuilt.as_str())
            .map(|p| {
                let p = p.expect("built bags are valid");
                (p.decoded_key().unwrap(), p.decoded_value().unwrap())
            })
            .collect();
        let first: Vec<_> = parse_bag(text)
            .map(|p| {
                let p = p.unwrap();
                (p.decoded_key().unwrap(), p.decoded_value().unwrap())
            })
            .collect();
        assert_eq!(again, first);
    }
    let _ = properties::decode(text);
    let encoded = properties::encode(text);
    assert_eq!(properties::decode(&encoded).unwrap(), text);
    assert_eq!(encoded.len(), properties::encoded_len(text));
});
