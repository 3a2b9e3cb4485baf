//! Connection strings for C: `tether_connection_string` and its getters.

use std::ffi::c_char;

use rustls::time_provider::TimeProvider;

use crate::auth::connection_string::{ConnectionString, Credential, KeySlot};
use crate::auth::sas::{Expiry, SasKey};
use crate::auth::FixedClock;
use crate::error::{Code, Error, Result};
use crate::ffi::handles::{free_handle, handle_mut, handle_ref, into_handle};
use crate::ffi::panic::{guard, guard_value};
use crate::ffi::{out_arg, text_arg, text_out, write_text};

/// `tether_connection_string_auth`: symmetric key (`SharedAccessKey`).
pub const TETHER_AUTH_SAS_KEY: u32 = 1;
/// `tether_connection_string_auth`: a ready token (`SharedAccessSignature`).
pub const TETHER_AUTH_SAS_TOKEN: u32 = 2;
/// `tether_connection_string_auth`: X.509 client certificate (`x509=true`).
pub const TETHER_AUTH_X509: u32 = 3;

/// The primary key.
pub const TETHER_KEY_PRIMARY: u32 = 0;
/// The secondary key.
pub const TETHER_KEY_SECONDARY: u32 = 1;

/// A parsed, validated IoT Hub device or module connection string. Create with
/// `tether_connection_string_parse`, free with `tether_connection_string_free` (which wipes
/// the key). Not thread-safe for writing (`_set_secondary_key`, `_use_key`); concurrent
/// reads are fine.
pub struct tether_connection_string {
    inner: ConnectionString,
}

type Getter = fn(&ConnectionString) -> Option<&str>;

unsafe fn get_text(
    cs: *const tether_connection_string,
    getter: Getter,
    what: &str,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: NULL or a live handle; buffer contract of the calling function.
        let cs = unsafe { handle_ref(cs, "cs") }?;
        let out = unsafe { text_out(out, out_cap, out_len, "out", "out_len") }?;
        match getter(&cs.inner) {
            Some(text) => out.write(text),
            None => {
                out.report_needed(0);
                Err(Error::new(
                    Code::NotFound,
                    format!("the connection string has no {what}"),
                ))
            }
        }
    })
}

impl tether_connection_string {
    /// Parses and validates a connection string:
    /// `HostName=...;DeviceId=...;SharedAccessKey=...` with optional `ModuleId`,
    /// `SharedAccessKeyName`, `SharedAccessSignature` (a ready token instead of a key),
    /// `x509=true` and `GatewayHostName`. Keys are case-sensitive; unknown keys are ignored;
    /// values may contain `=`.
    ///
    /// On success `*cs_out` receives a new handle owned by the caller (free it with
    /// `tether_connection_string_free`); on failure it is not written and
    /// `tether_last_error` says what is missing or inconsistent (never the key).
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
    /// `TETHER_RESULT_CONNECTION_STRING_INVALID`, `TETHER_RESULT_SAS_KEY_INVALID`,
    /// `TETHER_RESULT_ID_INVALID`, `TETHER_RESULT_TOKEN_MALFORMED`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_connection_string_parse(
        text: *const c_char,
        cs_out: *mut *mut tether_connection_string,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or NUL-terminated; `cs_out` NULL or writable.
            let text = unsafe { text_arg(text, "text") }?;
            let out = unsafe { out_arg(cs_out, "cs_out") }?;
            let inner = ConnectionString::parse(text)?;
            *out = into_handle(tether_connection_string { inner });
            Ok(())
        })
    }

    /// Frees a connection string and wipes its key. NULL is a no-op.
    #[no_mangle]
    pub unsafe extern "C" fn tether_connection_string_free(cs: *mut tether_connection_string) {
        guard_value((), || {
            // SAFETY: NULL or a live handle, per the contract.
            unsafe { free_handle(cs) };
            Ok(())
        })
    }

    /// Copies `HostName` into `out` (NUL-terminated). Buffer rules as everywhere: when too
    /// small nothing is written and `*out_len` is the length needed.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_BUFFER_TOO_SMALL`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_connection_string_host_name(
        cs: *const tether_connection_string,
        out: *mut c_char,
        out_cap: usize,
        out_len: *mut usize,
    ) -> Code {
        unsafe {
            get_text(
                cs,
                |c| Some(c.host_name()),
                "HostName",
                out,
                out_cap,
                out_len,
            )
        }
    }

    /// Copies `DeviceId` into `out`. Results as `tether_connection_string_host_name`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_connection_string_device_id(
        cs: *const tether_connection_string,
        out: *mut c_char,
        out_cap: usize,
        out_len: *mut usize,
    ) -> Code {
        unsafe {
            get_text(
                cs,
                |c| Some(c.device_id()),
                "DeviceId",
                out,
                out_cap,
                out_len,
            )
        }
    }

    /// Copies `ModuleId` into `out`. Results as `tether_connection_string_host_name`, plus
    /// `TETHER_RESULT_NOT_FOUND` (and `*out_len` = 0) when there is none.
    #[no_mangle]
    pub unsafe extern "C" fn tether_connection_string_module_id(
        cs: *const tether_connection_string,
        out: *mut c_char,
        out_cap: usize,
        out_len: *mut usize,
    ) -> Code {
        unsafe { get_text(cs, |c| c.module_id(), "ModuleId", out, out_cap, out_len) }
    }

    /// Copies `GatewayHostName` into `out`. Results as
    /// `tether_connection_string_module_id`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_connection_string_gateway_host_name(
        cs: *const tether_connection_string,
        out: *mut c_char,
        out_cap: usize,
        out_len: *mut usize,
    ) -> Code {
        unsafe {
            get_text(
                cs,
                |c| c.gateway_host_name(),
                "GatewayHostName",
                out,
                out_cap,
                out_len,
            )
        }
    }

    /// Copies `SharedAccessKeyName` into `out`. Results as
    /// `tether_connection_string_module_id`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_connection_string_key_name(
        cs: *const tether_connection_string,
        out: *mut c_char,
        out_cap: usize,
        out_len: *mut usize,
    ) -> Code {
        unsafe {
            get_text(
                cs,
                |c| c.key_name(),
                "SharedAccessKeyName",
                out,
                out_cap,
                out_len,
            )
        }
    }

    /// How the connection string authenticates: `TETHER_AUTH_SAS_KEY`,
    /// `TETHER_AUTH_SAS_TOKEN` or `TETHER_AUTH_X509`; 0 when `cs` is NULL.
    #[no_mangle]
    pub unsafe extern "C" fn tether_connection_string_auth(
        cs: *const tether_connection_string,
    ) -> u32 {
        guard_value(0, || {
            // SAFETY: NULL or a live handle.
            let cs = unsafe { handle_ref(cs, "cs") }?;
            Ok(match cs.inner.credential() {
                Credential::Keys { .. } => TETHER_AUTH_SAS_KEY,
                Credential::Token(_) => TETHER_AUTH_SAS_TOKEN,
                Credential::X509 => TETHER_AUTH_X509,
            })
        })
    }

    /// Makes the SAS token for this identity, as of `now_unix` (seconds since 1970, from the
    /// device's clock): with the key in use, expiring at `now_unix + ttl_secs` (and `skn`
    /// when the string has `SharedAccessKeyName`); or the ready `SharedAccessSignature`
    /// when the string has one. Buffer rules as `tether_sas_token`.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_BUFFER_TOO_SMALL`; `TETHER_RESULT_CLOCK_NOT_SET` (`now_unix` before
    /// 2025); `TETHER_RESULT_INVALID_ARGUMENT` (`ttl_secs` 0); `TETHER_RESULT_TOKEN_EXPIRED`
    /// (the ready token has expired); `TETHER_RESULT_INVALID_STATE` (X.509 identity).
    #[no_mangle]
    pub unsafe extern "C" fn tether_connection_string_sas_token(
        cs: *const tether_connection_string,
        now_unix: u64,
        ttl_secs: u64,
        out: *mut c_char,
        out_cap: usize,
        out_len: *mut usize,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live handle; buffer contract documented above.
            let cs = unsafe { handle_ref(cs, "cs") }?;
            let clock: &dyn TimeProvider = &FixedClock(now_unix);
            let token = cs.inner.sas_token(Expiry::In { ttl_secs }, clock)?;
            unsafe { write_text(token.as_str(), out, out_cap, out_len) }
        })
    }

    /// Gives the identity its secondary key (base64), for rotation. The key in use does not
    /// change (see `tether_connection_string_use_key`). The key is copied and decoded; the
    /// caller may wipe its copy.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
    /// `TETHER_RESULT_SAS_KEY_INVALID`, `TETHER_RESULT_INVALID_STATE` (not a key identity).
    #[no_mangle]
    pub unsafe extern "C" fn tether_connection_string_set_secondary_key(
        cs: *mut tether_connection_string,
        key_base64: *const c_char,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live handle; NULL or NUL-terminated.
            let cs = unsafe { handle_mut(cs, "cs") }?;
            let key = unsafe { text_arg(key_base64, "key_base64") }?;
            let key = SasKey::from_base64_named(key, "key_base64")?;
            keys(&mut cs.inner)?.set_secondary(key);
            Ok(())
        })
    }

    /// Selects the key used for tokens: `TETHER_KEY_PRIMARY` or `TETHER_KEY_SECONDARY`.
    /// After an authentication refusal with one key, select the other and retry.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_INVALID_ARGUMENT` (another value), `TETHER_RESULT_NOT_FOUND` (no
    /// secondary key set), `TETHER_RESULT_INVALID_STATE` (not a key identity).
    #[no_mangle]
    pub unsafe extern "C" fn tether_connection_string_use_key(
        cs: *mut tether_connection_string,
        slot: u32,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live handle.
            let cs = unsafe { handle_mut(cs, "cs") }?;
            let slot = match slot {
                TETHER_KEY_PRIMARY => KeySlot::Primary,
                TETHER_KEY_SECONDARY => KeySlot::Secondary,
                other => {
                    return Err(Error::new(
                        Code::InvalidArgument,
                        format!(
                        "key slot must be TETHER_KEY_PRIMARY or TETHER_KEY_SECONDARY, not {other}"
                    ),
                    ))
                }
            };
            keys(&mut cs.inner)?.select(slot)
        })
    }

    /// Which key is in use: `TETHER_KEY_PRIMARY` or `TETHER_KEY_SECONDARY` (also
    /// `TETHER_KEY_PRIMARY` for a NULL handle or a non-key identity).
    #[no_mangle]
    pub unsafe extern "C" fn tether_connection_string_key_in_use(
        cs: *const tether_connection_string,
    ) -> u32 {
        guard_value(TETHER_KEY_PRIMARY, || {
            // SAFETY: NULL or a live handle.
            let cs = unsafe { handle_ref(cs, "cs") }?;
            Ok(match cs.inner.credential() {
                Credential::Keys { keys, .. } if keys.in_use() == KeySlot::Secondary => {
                    TETHER_KEY_SECONDARY
                }
                _ => TETHER_KEY_PRIMARY,
            })
        })
    }
}

fn keys(cs: &mut ConnectionString) -> Result<&mut crate::auth::connection_string::KeyPair> {
    cs.keys_mut().ok_or_else(|| {
        Error::new(
            Code::InvalidState,
            "this connection string does not authenticate with SharedAccessKey",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn parse_get_and_free() {
        unsafe {
            let mut cs = std::ptr::null_mut();
            let code = tether_connection_string::tether_connection_string_parse(
                c"HostName=h.net;DeviceId=d;ModuleId=m;SharedAccessKey=AAAA".as_ptr(),
                &mut cs,
            );
            assert_eq!(code, Code::Ok);
            let mut buf = [0 as c_char; 16];
            let mut len = 0;
            assert_eq!(
                tether_connection_string::tether_connection_string_module_id(
                    cs,
                    buf.as_mut_ptr(),
                    16,
                    &mut len
                ),
                Code::Ok
            );
            assert_eq!(CStr::from_ptr(buf.as_ptr()).to_str().unwrap(), "m");
            assert_eq!(
                tether_connection_string::tether_connection_string_gateway_host_name(
                    cs,
                    buf.as_mut_ptr(),
                    16,
                    &mut len
                ),
                Code::NotFound
            );
            assert_eq!(
                tether_connection_string::tether_connection_string_auth(cs),
                TETHER_AUTH_SAS_KEY
            );
            assert_eq!(
                tether_connection_string::tether_connection_string_use_key(
                    cs,
                    TETHER_KEY_SECONDARY
                ),
                Code::NotFound
            );
            assert_eq!(
                tether_connection_string::tether_connection_string_set_secondary_key(
                    cs,
                    c"BBBB".as_ptr()
                ),
                Code::Ok
            );
            assert_eq!(
                tether_connection_string::tether_connection_string_use_key(
                    cs,
                    TETHER_KEY_SECONDARY
                ),
                Code::Ok
            );
            assert_eq!(
                tether_connection_string::tether_connection_string_key_in_use(cs),
                TETHER_KEY_SECONDARY
            );
            let mut token = [0 as c_char; 512];
            assert_eq!(
                tether_connection_string::tether_connection_string_sas_token(
                    cs,
                    5,
                    60,
                    token.as_mut_ptr(),
                    512,
                    &mut len
                ),
                Code::ClockNotSet
            );
            assert_eq!(
                tether_connection_string::tether_connection_string_sas_token(
                    cs,
                    1_800_000_000,
                    60,
                    token.as_mut_ptr(),
                    512,
                    &mut len
                ),
                Code::Ok
            );
            tether_connection_string::tether_connection_string_free(cs);
            tether_connection_string::tether_connection_string_free(std::ptr::null_mut());
            let mut cs = std::ptr::null_mut();
            assert_eq!(
                tether_connection_string::tether_connection_string_parse(
                    c"HostName=h".as_ptr(),
                    &mut cs
                ),
                Code::ConnectionStringInvalid
            );
            assert!(cs.is_null());
        }
    }
}
