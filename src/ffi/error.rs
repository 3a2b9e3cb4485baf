//! Result codes and the thread's last error, for C.

use std::cell::RefCell;
use std::ffi::c_char;

use crate::error::{Code, Error};
use crate::ffi::panic::{guard, guard_value};
use crate::ffi::text_out;

thread_local! {
    static LAST_ERROR: RefCell<Option<Error>> = const { RefCell::new(None) };
}

pub(crate) fn set_last_error(error: Error) {
    LAST_ERROR.with(|l| *l.borrow_mut() = Some(error));
}

#[cfg(test)]
pub(crate) fn last_error_message() -> Option<String> {
    LAST_ERROR.with(|l| l.borrow().as_ref().map(|e| e.message().to_owned()))
}

/// Returns the name of a result code as a static NUL-terminated string, e.g.
/// `"TETHER_RESULT_CERT_EXPIRED"`; `"TETHER_RESULT_UNKNOWN"` for a value that is not a code.
///
/// The string is owned by the library and valid for the life of the process; do not free it.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn tether_result_name(result: u32) -> *const c_char {
    let unknown = c"TETHER_RESULT_UNKNOWN";
    guard_value(unknown.as_ptr(), || {
        Ok(Code::from_u32(result)
            .map_or(unknown, Code::c_name)
            .as_ptr())
    })
}

/// Copies the message of the last failure on the calling thread into `buf`.
///
/// The message names the cause in words a person can act on and never contains a secret.
/// It stays until the next failure on this thread (a success does not clear it).
///
/// - `buf`: receives the NUL-terminated message; may be NULL when `cap` is 0 (size query).
/// - `cap`: capacity of `buf` in bytes.
/// - `out_len`: receives the message length without the NUL (also when the buffer is too
///   small). Must not be NULL.
///
/// Results: `TETHER_RESULT_OK`; `TETHER_RESULT_NOT_FOUND` when this thread has no failure
/// recorded (`*out_len` is set to 0); `TETHER_RESULT_BUFFER_TOO_SMALL` (nothing written,
/// `*out_len` = length needed); `TETHER_RESULT_NULL_ARGUMENT`. Calling this function does not
/// replace the recorded message, even when it fails.
#[no_mangle]
pub unsafe extern "C" fn tether_last_error(
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Code {
    let saved = LAST_ERROR.with(|l| l.borrow().clone());
    let code = guard(|| {
        // SAFETY: buffer contract documented above.
        let out = unsafe { text_out(buf, cap, out_len, "buf", "out_len") }?;
        match saved.as_ref() {
            Some(error) => out.write(error.message()),
            None => {
                out.report_needed(0);
                Err(Error::new(
                    Code::NotFound,
                    "no failure recorded on this thread",
                ))
            }
        }
    });
    // Reading the last error must not replace it.
    LAST_ERROR.with(|l| *l.borrow_mut() = saved);
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn result_names_are_static_strings() {
        let name = unsafe { CStr::from_ptr(tether_result_name(102)) };
        assert_eq!(name.to_str().unwrap(), "TETHER_RESULT_CERT_EXPIRED");
        let name = unsafe { CStr::from_ptr(tether_result_name(9999)) };
        assert_eq!(name.to_str().unwrap(), "TETHER_RESULT_UNKNOWN");
    }

    #[test]
    fn last_error_survives_a_too_small_read() {
        set_last_error(Error::new(Code::InvalidArgument, "port must not be 0"));
        let mut len = 0;
        let code = unsafe { tether_last_error(std::ptr::null_mut(), 0, &mut len) };
        assert_eq!((code, len), (Code::BufferTooSmall, 18));
        let mut buf = vec![0 as c_char; len + 1];
        let code = unsafe { tether_last_error(buf.as_mut_ptr(), buf.len(), &mut len) };
        assert_eq!(code, Code::Ok);
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(text.to_str().unwrap(), "port must not be 0");
    }
}
