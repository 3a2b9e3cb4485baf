//! SAS token parsing and verification on arbitrary text: never panics; a token that
//! parses has a resource that is one of the shapes IoT Hub uses or a clear error; a
//! token verified with the wrong key is refused; errors never quote the signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::auth::sas::{self, Resource, SasKey, SasToken};

const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = SasKey::from_base64(KEY).unwrap();
    // A real-looking signature next to the input: no error may quote it.
    const SIG: &str = "dIMMdDDBGFR8eqAfYkiMxoOphaFMPtMgj7Wg%2FYB1AvU%3D";
    for candidate in [
        text.to_owned(),
        format!("SharedAccessSignature {text}"),
        format!("SharedAccessSignature sr=h%2Fdevices%2Fd&sig={text}&se=1900000000"),
        format!("SharedAccessSignature sr={text}&sig={SIG}&se=1900000000"),
        format!("SharedAccessSignature sig={SIG}&{text}"),
    ] {
        match sas::parse(&candidate) {
            Ok(parsed) => {
                let _ = parsed.resource().map(|r| (r.uri(), r.encoded()));
            }
            Err(e) => assert!(text.contains(SIG) || !e.message().contains(SIG), "{e:?}"),
        }
        match sas::verify(&candidate, &key, 1_800_000_000) {
            Ok(v) => {
                let _ = v.resource();
            }
            Err(e) => assert!(text.contains(SIG) || !e.message().contains(SIG), "{e:?}"),
        }
        let _ = SasToken::from_text(&candidate);
    }
    let _ = Resource::parse(text).map(|r| {
        let encoded = r.encoded();
        assert!(encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
    });
    let _ = tether::internal::url_decode(text);
    let _ = SasKey::from_base64(text);
    let _ = tether::internal::check_key_name(text);
});
