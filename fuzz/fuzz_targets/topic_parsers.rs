//! Every received-topic parser on arbitrary text: never panics, and whatever it returns is
//! a slice of its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::mqtt::{dps, topics};

fn inside(outer: &str, inner: &str) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Prefixes steer the input towards each parser's deeper paths.
    for prefix in [
        "",
        "devices/d/messages/devicebound/",
        "$iothub/twin/res/",
        "$iothub/twin/PATCH/properties/desired/?",
        "$iothub/methods/POST/",
        "$dps/registrations/res/",
    ] {
        let topic = format!("{prefix}{text}");
        if let Ok(t) = topics::parse_c2d_topic(&topic) {
            assert!(inside(&topic, t.device_id) && inside(&topic, t.properties));
            for p in t.properties() {
                let p = p.expect("a validated bag iterates without errors");
                let _ = p.decoded_key().expect("validated");
            }
        }
        if let Ok(topics::TwinTopic::Response { request_id, .. }) = topics::parse_twin_topic(&topic)
        {
            assert!(inside(&topic, request_id));
        }
        if let Ok(m) = topics::parse_method_request_topic(&topic) {
            assert!(inside(&topic, m.name) && inside(&topic, m.request_id));
        }
        if let Ok(r) = dps::parse_response_topic(&topic) {
            assert!(inside(&topic, r.request_id));
        }
    }
    let _ = dps::parse_response_body(data);
});
