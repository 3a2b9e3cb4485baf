//! SAS tokens for C: `tether_sas_token`. Writes into the caller's buffer; no heap allocation
//! on success.

use std::ffi::c_char;

use zeroize::Zeroize;

use crate::auth::sas::{self, Resource, SasKey};
use crate::ffi::panic::guard;
use crate::ffi::{text_arg, write_text};
use crate::Code;

/// The longest token `tether_sas_token` produces from valid inputs: a buffer of
/// `TETHER_SAS_TOKEN_MAX_LEN + 1` bytes always fits (the `+ 1` is the NUL).
pub const TETHER_SAS_TOKEN_MAX_LEN: usize = 2048;

/// Makes a SAS token: `SharedAccessSignature sr=...&sig=...&se=...[&skn=...]`, the MQTT
/// password for IoT Hub (or DPS).
///
/// - `resource_uri`: the **unencoded** resource, `{host}/devices/{deviceId}`,
///   `{host}/devices/{deviceId}/modules/{moduleId}`, `{idScope}/registrations/{registrationId}`
///   (DPS), or `{host}` (hub-wide policy). tether URL-encodes it (keeps `A-Za-z0-9-_.~`,
///   everything else `%XX` with uppercase hex) and signs it exactly as written in the token.
/// - `key_base64`: the key, standard base64 (padding optional), e.g. the device's primary
///   key. It is decoded on the stack and wiped before returning; it never appears in an
///   error message.
/// - `key_name`: the shared access policy (`skn`), e.g. `"registration"` for a DPS group
///   enrollment; NULL for a device or module key.
/// - `expiry_unix`: when the token expires, seconds since 1970 (typically now + 3600).
/// - `out`, `out_cap`, `out_len`: receives the NUL-terminated token and its length. When
///   `out_cap` is too small nothing is written, `*out_len` is set to the length needed and
///   the result is `TETHER_RESULT_BUFFER_TOO_SMALL`. `out` may be NULL when `out_cap` is 0.
///
/// Does not allocate on success. Thread-safe; no state.
///
/// Results: `TETHER_RESULT_OK`; `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`;
/// `TETHER_RESULT_ID_INVALID` (resource not of the forms above, empty id, id with `/`, a
/// space or another character IoT Hub refuses, id over 128 characters);
/// `TETHER_RESULT_SAS_KEY_INVALID` (empty, not base64, longer than 344 characters);
/// `TETHER_RESULT_INVALID_ARGUMENT` (key name not 1 to 64 of `A-Za-z0-9-_.`);
/// `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_sas_token(
    resource_uri: *const c_char,
    key_base64: *const c_char,
    key_name: *const c_char,
    expiry_unix: u64,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: each pointer is NULL or NUL-terminated per the contract above.
        let resource_uri = unsafe { text_arg(resource_uri, "resource_uri") }?;
        let key_base64 = unsafe { text_arg(key_base64, "key_base64") }?;
        let key_name = unsafe { crate::ffi::topics::opt_text_arg(key_name, "key_name") }?;
        let resource = Resource::parse(resource_uri)?;
        let key = SasKey::from_base64_named(key_base64, "key_base64")?;
        let mut buf = [0u8; TETHER_SAS_TOKEN_MAX_LEN];
        let result = sas::write_token(&resource, &key, key_name, expiry_unix, &mut buf)
            // SAFETY: buffer contract documented above.
            .and_then(|token| unsafe { write_text(token, out, out_cap, out_len) });
        // The token is a credential until it expires: wipe the part that was written.
        let cap = buf.len();
        // SAFETY: on success `out_len` was checked and written by write_text.
        let written = result.as_ref().map_or(cap, |_| unsafe { *out_len });
        buf[..written.min(cap)].zeroize();
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn max_len_matches_the_core() {
        assert_eq!(TETHER_SAS_TOKEN_MAX_LEN, sas::MAX_TOKEN_LEN);
    }

    #[test]
    fn token_is_written_or_its_size_reported() {
        let mut len = 0usize;
        let code = unsafe {
            tether_sas_token(
                c"myiothub.azure-devices.net/devices/my_device".as_ptr(),
                c"NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=".as_ptr(),
                std::ptr::null(),
                1578941692,
                std::ptr::null_mut(),
                0,
                &mut len,
            )
        };
        assert_eq!(code, Code::BufferTooSmall);
        let mut buf = vec![0 as c_char; len + 1];
        let code = unsafe {
            tether_sas_token(
                c"myiothub.azure-devices.net/devices/my_device".as_ptr(),
                c"NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=".as_ptr(),
                std::ptr::null(),
                1578941692,
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        };
        assert_eq!(code, Code::Ok);
        let token = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
        let key = SasKey::from_base64("NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=").unwrap();
        sas::verify_for(
            token,
            &key,
            "myiothub.azure-devices.net/devices/my_device",
            0,
        )
        .unwrap();
    }

    #[test]
    fn each_bad_input_has_its_own_result() {
        let call = |r: *const c_char, k: *const c_char, n: *const c_char| {
            let mut buf = [0 as c_char; 512];
            let mut len = 0usize;
            unsafe { tether_sas_token(r, k, n, 1, buf.as_mut_ptr(), buf.len(), &mut len) }
        };
        let key = c"AAAA".as_ptr();
        let res = c"h/devices/d".as_ptr();
        assert_eq!(
            call(std::ptr::null(), key, std::ptr::null()),
            Code::NullArgument
        );
        assert_eq!(
            call(res, std::ptr::null(), std::ptr::null()),
            Code::NullArgument
        );
        assert_eq!(
            call(c"h/devices/\xff".as_ptr(), key, std::ptr::null()),
            Code::InvalidUtf8
        );
        assert_eq!(
            call(c"h/devices/".as_ptr(), key, std::ptr::null()),
            Code::IdInvalid
        );
        assert_eq!(
            call(c"h/devices/a b".as_ptr(), key, std::ptr::null()),
            Code::IdInvalid
        );
        assert_eq!(
            call(res, c"not base64!".as_ptr(), std::ptr::null()),
            Code::SasKeyInvalid
        );
        assert_eq!(call(res, key, c"bad name".as_ptr()), Code::InvalidArgument);
        assert_eq!(call(res, key, c"registration".as_ptr()), Code::Ok);
        let giant = std::ffi::CString::new("a".repeat(1 << 20)).unwrap();
        assert_eq!(call(giant.as_ptr(), key, std::ptr::null()), Code::IdInvalid);
        assert_eq!(
            call(res, giant.as_ptr(), std::ptr::null()),
            Code::SasKeyInvalid
        );
    }
}
