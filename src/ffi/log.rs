//! The diagnostics hook for C: `tether_set_log_callback`.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use crate::error::{Code, Error};
use crate::ffi::panic::guard;
use crate::log::{set_sink, Level};

/// Failures.
pub const TETHER_LOG_ERROR: u32 = 1;
/// Refusals, retries with their delay, things that need attention.
pub const TETHER_LOG_WARN: u32 = 2;
/// Connection milestones: connecting, TLS version and suite, token renewals.
pub const TETHER_LOG_INFO: u32 = 3;
/// More detail.
pub const TETHER_LOG_DEBUG: u32 = 4;

/// Receives one log line: `level` is a `TETHER_LOG_*` value, `message` a NUL-terminated
/// UTF-8 line of `message_len` bytes, valid only during the call. Lines never contain keys,
/// tokens or private keys.
pub type tether_log_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: u32,
        message: *const c_char,
        message_len: usize,
    ),
>;

struct UserData(*mut c_void);
// SAFETY: the pointer is only handed back to the caller's callback, which the caller
// declared safe to call from the threads that use the library.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

impl UserData {
    fn get(&self) -> *mut c_void {
        self.0
    }
}

/// Installs `callback` for lines up to `max_level` (`TETHER_LOG_ERROR` ..
/// `TETHER_LOG_DEBUG`), process-wide, replacing any previous one; NULL removes it.
///
/// The callback runs on the thread that called into the library (for example inside
/// `tether_client_poll`), possibly on several threads at once if several use the library;
/// it must not call back into tether (lines logged from inside it are dropped).
/// `user_data` is passed back unchanged.
///
/// Replacing or removing the callback waits until every call of the old one that is under
/// way on other threads has returned, and no call of the old one starts afterwards: once
/// this function returns, the old `user_data` may be freed.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_INVALID_ARGUMENT` (level out of range),
/// `TETHER_RESULT_INVALID_STATE` (called from inside the log callback, where waiting for
/// the callback to return would never end; nothing changed).
#[no_mangle]
pub unsafe extern "C" fn tether_set_log_callback(
    max_level: u32,
    callback: tether_log_callback,
    user_data: *mut c_void,
) -> Code {
    guard(|| {
        let level = match max_level {
            TETHER_LOG_ERROR => Level::Error,
            TETHER_LOG_WARN => Level::Warn,
            TETHER_LOG_INFO => Level::Info,
            TETHER_LOG_DEBUG => Level::Debug,
            other => {
                return Err(Error::new(
                    Code::InvalidArgument,
                    format!("log level {other} is not one of TETHER_LOG_ERROR..TETHER_LOG_DEBUG"),
                ))
            }
        };
        let sink = callback.map(|callback| -> crate::log::Sink {
            let user = UserData(user_data);
            Arc::new(move |level: Level, message: &str| {
                let line =
                    std::ffi::CString::new(message.replace('\0', " ")).expect("NULs replaced");
                // SAFETY: the caller's callback with its own user data, per the contract.
                unsafe {
                    callback(
                        user.get(),
                        level as u32,
                        line.as_ptr(),
                        line.as_bytes().len(),
                    )
                };
            })
        });
        if set_sink(level, sink) {
            Ok(())
        } else {
            Err(Error::new(
                Code::InvalidState,
                "tether_set_log_callback was called from inside the log callback",
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static LINES: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());

    unsafe extern "C" fn collect(_: *mut c_void, level: u32, message: *const c_char, len: usize) {
        // SAFETY: the library passes a valid line of `len` bytes.
        let text = unsafe { std::slice::from_raw_parts(message.cast::<u8>(), len) };
        LINES
            .lock()
            .unwrap()
            .push((level, String::from_utf8_lossy(text).into_owned()));
    }

    #[test]
    fn callback_receives_lines_up_to_its_level_and_can_be_removed() {
        let _serial = crate::log::TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        unsafe {
            assert_eq!(
                tether_set_log_callback(9, Some(collect), std::ptr::null_mut()),
                Code::InvalidArgument
            );
            assert_eq!(
                tether_set_log_callback(TETHER_LOG_WARN, Some(collect), std::ptr::null_mut()),
                Code::Ok
            );
        }
        crate::log!(Level::Warn, "retry 1 in {} ms", 1000);
        crate::log!(Level::Info, "connected");
        let removed =
            unsafe { tether_set_log_callback(TETHER_LOG_DEBUG, None, std::ptr::null_mut()) };
        assert_eq!(removed, Code::Ok);
        crate::log!(Level::Error, "after removal");
        assert_eq!(
            *LINES.lock().unwrap(),
            [(TETHER_LOG_WARN, "retry 1 in 1000 ms".to_owned())]
        );
    }
}
