//! DPS group-enrollment keys for C: `tether_dps_derive_key`.

use std::ffi::c_char;

use crate::auth::dps::{derive_device_key_base64, DERIVED_KEY_BASE64_LEN};
use crate::auth::sas::SasKey;
use crate::ffi::panic::guard;
use crate::ffi::{text_arg, write_text};
use crate::Code;

/// Length of a derived key in base64 (without the NUL): 44.
pub const TETHER_DPS_DERIVED_KEY_LEN: usize = 44;

/// Derives a device's key for a DPS symmetric-key group enrollment:
/// `base64(HMAC-SHA256(base64decode(group_key), registration_id))`. Do this on the
/// production line, not on the device: the group key can make every device's key.
///
/// - `group_key_base64`: the enrollment group's key, standard base64. Never echoed.
/// - `registration_id`: 1 to 128 of `A-Za-z0-9-._:`.
/// - `out`, `out_cap`, `out_len`: receives the NUL-terminated base64 key (44 characters,
///   so 45 bytes are enough) and its length; when too small nothing is written and
///   `*out_len` is the length needed.
///
/// Does not allocate on success. Thread-safe.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_SAS_KEY_INVALID`, `TETHER_RESULT_ID_INVALID`,
/// `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_dps_derive_key(
    group_key_base64: *const c_char,
    registration_id: *const c_char,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: NULL or NUL-terminated per the contract above.
        let group_key = unsafe { text_arg(group_key_base64, "group_key_base64") }?;
        let registration_id = unsafe { text_arg(registration_id, "registration_id") }?;
        let key = SasKey::from_base64_named(group_key, "group_key_base64")?;
        let mut buf = zeroize::Zeroizing::new([0u8; DERIVED_KEY_BASE64_LEN]);
        let text = derive_device_key_base64(&key, registration_id, &mut buf)?;
        // SAFETY: buffer contract documented above.
        unsafe { write_text(text, out, out_cap, out_len) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn derives_the_published_vector() {
        assert_eq!(TETHER_DPS_DERIVED_KEY_LEN, DERIVED_KEY_BASE64_LEN);
        let mut buf = [0 as c_char; 45];
        let mut len = 0;
        let code = unsafe {
            tether_dps_derive_key(
                c"8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==".as_ptr(),
                c"sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6".as_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        };
        assert_eq!(code, Code::Ok);
        assert_eq!(
            unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(),
            "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
        );
        let code = unsafe {
            tether_dps_derive_key(
                c"AAAA".as_ptr(),
                c"a b".as_ptr(),
                buf.as_mut_ptr(),
                45,
                &mut len,
            )
        };
        assert_eq!(code, Code::IdInvalid);
    }
}
