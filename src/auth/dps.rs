//! Device Provisioning Service: group-enrollment key derivation.
//!
//! A device in a symmetric-key group enrollment never holds the group key: it holds
//! `derived = base64(HMAC-SHA256(base64dec(groupKey), utf8(registrationId)))`, made on the
//! production line, and uses it as its own SAS key with the resource
//! `{idScope}/registrations/{registrationId}` and `skn=registration`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::auth::sas::SasKey;
use crate::auth::{check_id, IdKind};
use crate::error::Result;

/// Length of a derived key in base64 (32 bytes).
pub const DERIVED_KEY_BASE64_LEN: usize = 44;

/// Derives a device's key from the group key and its registration id (checked: 1 to 128 of
/// letters, digits, `-`, `.`, `_`, `:`).
pub fn derive_device_key(group_key: &SasKey, registration_id: &str) -> Result<SasKey> {
    check_id(IdKind::Registration, registration_id)?;
    let derived = zeroize::Zeroizing::new(group_key.sign(registration_id.as_bytes()));
    SasKey::from_bytes(&derived[..])
}

/// As [`derive_device_key`], as base64 written into `out` (no allocation); returns the
/// 44-character text.
pub fn derive_device_key_base64<'o>(
    group_key: &SasKey,
    registration_id: &str,
    out: &'o mut [u8; DERIVED_KEY_BASE64_LEN],
) -> Result<&'o str> {
    check_id(IdKind::Registration, registration_id)?;
    let derived = zeroize::Zeroizing::new(group_key.sign(registration_id.as_bytes()));
    STANDARD
        .encode_slice(&derived[..], &mut out[..])
        .expect("32 bytes are 44 base64 characters");
    Ok(std::str::from_utf8(&out[..]).expect("base64 is ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    const GROUP_KEY: &str =
        "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";

    #[test]
    fn derived_key_matches_published_vector() {
        let group = SasKey::from_base64(GROUP_KEY).unwrap();
        let mut out = [0u8; DERIVED_KEY_BASE64_LEN];
        let text =
            derive_device_key_base64(&group, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", &mut out)
                .unwrap();
        assert_eq!(text, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
        let key = derive_device_key(&group, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6").unwrap();
        assert_eq!(
            key.to_base64().as_str(),
            "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
        );
    }

    #[test]
    fn bad_registration_ids_are_refused() {
        let group = SasKey::from_base64(GROUP_KEY).unwrap();
        for id in ["", "a b", "a/b", "ü"] {
            assert_eq!(
                derive_device_key(&group, id).unwrap_err().code(),
                Code::IdInvalid,
                "{id:?}"
            );
        }
    }
}
