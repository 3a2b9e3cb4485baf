//! The IoT Hub stand-in's parsers (hub/): CONNECT user names, topic authorisation and the
//! registry file, on arbitrary text. Never panic; a user name that parses names valid ids;
//! registry errors never quote a key.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tether_hub::decide::{authenticate_sas, authorize, parse_username, Access, Session};
use tether_hub::registry::{Registry, Thumbprint};

const KEY: &str = "c2VjcmV0LWtleS0xMjM0NTY3ODkw";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(u) = parse_username(text) {
        tether::internal::check_host(u.host).unwrap();
        tether::internal::check_id(tether::internal::IdKind::Device, u.device).unwrap();
    }
    let _ = parse_username(&format!("hub.example/{text}/?api-version=2021-04-12"));
    let _ = Thumbprint::parse(text);
    // The registry with the input in the places a file could be broken, and a key nearby.
    for candidate in [
        text.to_owned(),
        format!(r#"{{"hostName": "h", "devices": [{text}]}}"#),
        format!(
            r#"{{"hostName": "h", "devices": [{{"deviceId": "d", "status": "enabled", "authentication": {{"type": "sas", "symmetricKey": {{"primaryKey": "{KEY}"{text}"#
        ),
    ] {
        match Registry::parse(&candidate, Path::new("/nonexistent")) {
            Ok(r) => {
                let _ = r.identity("d", None);
            }
            // (An error may name the entry: unless the input put the key text there itself.)
            Err(e) => assert!(text.contains(KEY) || !e.message().contains(KEY), "{e:?}"),
        }
    }
    // A SAS connection to a registry with one device: the input as the password (a token),
    // then as the client id; only the device's own key may let it in.
    let registry = Registry::parse(
        &format!(
            r#"{{"hostName": "hub.example", "devices": [{{"deviceId": "d", "status": "enabled", "authentication": {{"type": "sas", "symmetricKey": {{"primaryKey": "{KEY}"}}}}}}]}}"#
        ),
        Path::new("/nonexistent"),
    )
    .unwrap();
    let user = "hub.example/d/?api-version=2021-04-12";
    if let Err(e) = authenticate_sas(&registry, "d", Some(user), Some(text), 1_800_000_000) {
        assert!(!e.message().contains(KEY), "{e:?}");
    }
    let _ = authenticate_sas(&registry, text, Some(user), None, 1_800_000_000);
    // Topic authorisation for a device and for a module.
    for module in [None, Some("m".to_owned())] {
        let session = Session {
            device_id: "d".into(),
            module_id: module,
            method: "SAS".into(),
            expires_unix: None,
            kind: "sas",
        };
        for access in [
            Access::Read,
            Access::Write,
            Access::Subscribe,
            Access::Unsubscribe,
        ] {
            for qos in [0, 1, 2] {
                if authorize(&session, access, text, qos).is_ok() && access != Access::Unsubscribe {
                    assert!(
                        text.starts_with("$iothub/") || text.starts_with("devices/d/"),
                        "{text}"
                    );
                    assert!(access != Access::Write || qos <= 1);
                }
            }
        }
    }
});
