//! Keys held by a PKCS#11 token for C: the client certificate's key stays in an HSM, a TPM
//! (through tpm2-pkcs11) or a secure element; the token signs the TLS handshake.

use std::ffi::{c_char, c_int, c_void};

use crate::error::{Code, Error};
use crate::ffi::handles::handle_mut;
use crate::ffi::panic::guard;
use crate::ffi::tls_config::tether_tls_config_builder;
use crate::ffi::{text_arg, text_out};

/// Longest PIN a `tether_pkcs11_pin_callback` may write, in bytes.
pub const TETHER_PKCS11_PIN_MAX_LEN: usize = 256;

/// A buffer of `TETHER_PKCS11_CSR_MAX_LEN + 1` bytes holds any CSR that
/// `tether_pkcs11_generate_csr` writes (PEM, NUL-terminated).
pub const TETHER_PKCS11_CSR_MAX_LEN: usize = 2048;

/// Supplies the token's user PIN when tether logs in: at registration, and again after a
/// token failure (removed and re-inserted, sessions closed) when the next connection logs in
/// anew. tether keeps no copy between log-ins.
///
/// - `user`: the pointer given at registration.
/// - `pin`, `pin_cap`, `pin_len`: write the PIN (UTF-8, no NUL needed, at most `pin_cap` =
///   `TETHER_PKCS11_PIN_MAX_LEN` bytes) and its length. tether wipes the buffer after use.
///
/// Return 0 on success, anything else to refuse (the log-in then fails with
/// `TETHER_RESULT_PKCS11_PIN_INCORRECT`). Called on the thread that runs the connection.
/// It must not call back into tether.
pub type tether_pkcs11_pin_callback = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        pin: *mut u8,
        pin_cap: usize,
        pin_len: *mut usize,
    ) -> c_int,
>;

/// Optional text argument: NULL is `None`.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string.
unsafe fn optional_text<'a>(ptr: *const c_char, name: &str) -> crate::Result<Option<&'a str>> {
    if ptr.is_null() {
        Ok(None)
    } else {
        // SAFETY: non-NULL and NUL-terminated per the caller's contract.
        unsafe { text_arg(ptr, name) }.map(Some)
    }
}

#[cfg(all(feature = "pkcs11", target_os = "linux"))]
mod imp {
    use super::*;
    use crate::auth::pkcs11::Pin;
    use std::sync::Arc;
    use zeroize::Zeroizing;

    type Callback = unsafe extern "C" fn(*mut c_void, *mut u8, usize, *mut usize) -> c_int;

    struct PinCallback {
        callback: Callback,
        user: *mut c_void,
    }

    // SAFETY: the registration contract requires the callback and `user` to be usable from
    // any thread that runs a connection with the configuration.
    unsafe impl Send for PinCallback {}
    // SAFETY: as above.
    unsafe impl Sync for PinCallback {}

    impl PinCallback {
        fn ask(&self) -> crate::Result<Zeroizing<String>> {
            let mut buf = Zeroizing::new([0u8; TETHER_PKCS11_PIN_MAX_LEN]);
            let mut len = 0usize;
            // SAFETY: the callback's contract; the buffer is valid for its length.
            let status =
                unsafe { (self.callback)(self.user, buf.as_mut_ptr(), buf.len(), &mut len) };
            let refused = |why: &str| Error::new(Code::Pkcs11PinIncorrect, why.to_string());
            if status != 0 {
                return Err(refused("the PIN callback refused to give a PIN"));
            }
            let pin = buf
                .get(..len)
                .ok_or_else(|| refused("the PIN callback reported a PIN longer than its buffer"))?;
            let pin = std::str::from_utf8(pin)
                .map_err(|_| refused("the PIN from the callback is not UTF-8"))?;
            Ok(Zeroizing::new(pin.to_owned()))
        }
    }

    pub(super) fn generate_csr(
        module: Option<&str>,
        uri: &str,
        pin: Option<&str>,
        common_name: &str,
    ) -> crate::Result<String> {
        let pin = pin.map_or(Pin::None, Pin::value);
        let key = crate::auth::pkcs11::generate_p256(module, uri, pin)?;
        key.csr_pem(common_name)
    }

    pub(super) fn set(
        builder: &mut tether_tls_config_builder,
        module: Option<&str>,
        uri: &str,
        pin: Option<&str>,
        callback: Option<(Callback, *mut c_void)>,
    ) -> crate::Result<()> {
        let pin = match (pin, callback) {
            (_, Some((callback, user))) => {
                let cb = PinCallback { callback, user };
                Pin::Callback(Arc::new(move || cb.ask()))
            }
            (Some(pin), None) => Pin::value(pin),
            (None, None) => Pin::None,
        };
        builder.policy.set_client_pkcs11(module, uri, pin)?;
        Ok(())
    }
}

#[cfg(not(all(feature = "pkcs11", target_os = "linux")))]
mod imp {
    use super::*;
    pub(super) fn generate_csr(
        _: Option<&str>,
        _: &str,
        _: Option<&str>,
        _: &str,
    ) -> crate::Result<String> {
        Err(crate::error::pkcs11_unavailable())
    }
    type Callback = unsafe extern "C" fn(*mut c_void, *mut u8, usize, *mut usize) -> c_int;
    pub(super) fn set(
        _: &mut tether_tls_config_builder,
        _: Option<&str>,
        _: &str,
        _: Option<&str>,
        _: Option<(Callback, *mut c_void)>,
    ) -> crate::Result<()> {
        Err(crate::error::pkcs11_unavailable())
    }
}

impl tether_tls_config_builder {
    /// Authenticates the device with a private key held by a PKCS#11 token (an HSM, a TPM 2.0
    /// through tpm2-pkcs11, a secure element, SoftHSM) and the certificate stored on the
    /// token beside it (same `CKA_ID`). The key never leaves the token: the token signs the
    /// TLS handshake (ECDSA P-256/P-384, RSA PKCS#1 v1.5 or PSS).
    ///
    /// - `module_path`: the token's PKCS#11 module (shared library), e.g.
    ///   `/usr/lib/softhsm/libsofthsm2.so`; NULL to use the URI's `module-path`. The module
    ///   is loaded once per process and stays loaded.
    /// - `uri`: RFC 7512 URI naming the token and key, e.g.
    ///   `pkcs11:token=device;object=device-key` or `...;id=%01` (percent-encoded). Must not
    ///   be NULL.
    /// - `pin`: the token's user PIN, NULL when the token needs none (protected path) or the
    ///   URI carries `pin-value`. Copied into memory that is wiped when the configuration
    ///   is freed (it is kept to log in again after a token failure); the caller may wipe its
    ///   copy after the call. To keep no copy at all, use
    ///   `tether_tls_config_builder_set_client_pkcs11_pin_callback`.
    ///
    /// During this call tether loads the module, logs in, finds the key and certificate,
    /// and signs a probe that is verified with the certificate. A token that fails later
    /// (removed, sessions lost) fails the handshake with `TETHER_RESULT_PKCS11_TOKEN_FAILED`,
    /// which the client retries; the next attempt logs in again. Replaces any client
    /// certificate set before. Not thread-safe on the same builder.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_INVALID_UTF8`, `TETHER_RESULT_PKCS11_URI_INVALID`,
    /// `TETHER_RESULT_PKCS11_MODULE_NOT_FOUND`, `TETHER_RESULT_PKCS11_MODULE_INVALID`,
    /// `TETHER_RESULT_PKCS11_TOKEN_ABSENT`, `TETHER_RESULT_PKCS11_PIN_INCORRECT`,
    /// `TETHER_RESULT_PKCS11_PIN_LOCKED`, `TETHER_RESULT_PKCS11_KEY_NOT_FOUND`,
    /// `TETHER_RESULT_PKCS11_KEY_AMBIGUOUS`, `TETHER_RESULT_PKCS11_CERT_NOT_FOUND`,
    /// `TETHER_RESULT_PKCS11_MECHANISM_UNSUPPORTED`, `TETHER_RESULT_PKCS11_TOKEN_FAILED`,
    /// `TETHER_RESULT_KEY_CERT_MISMATCH`, `TETHER_RESULT_CERT_MALFORMED`,
    /// `TETHER_RESULT_PKCS11_UNAVAILABLE` (a build without the `pkcs11` feature).
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_set_client_pkcs11(
        builder: *mut tether_tls_config_builder,
        module_path: *const c_char,
        uri: *const c_char,
        pin: *const c_char,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live builder; text arguments NULL or NUL-terminated.
            let builder = unsafe { handle_mut(builder, "builder") }?;
            let module = unsafe { optional_text(module_path, "module_path") }?;
            let uri = unsafe { text_arg(uri, "uri") }?;
            let pin = unsafe { optional_text(pin, "pin") }?;
            imp::set(builder, module, uri, pin, None)
        })
    }

    /// As `tether_tls_config_builder_set_client_pkcs11`, with the PIN asked of `callback`
    /// at each log-in (see `tether_pkcs11_pin_callback`) instead of kept by tether.
    ///
    /// - `callback`: must not be NULL.
    /// - `user`: passed to every call; may be NULL. It, and the callback, must stay valid
    ///   until the builder and every configuration built from it are freed, and be usable
    ///   from whichever thread runs a connection.
    ///
    /// Results: as `tether_tls_config_builder_set_client_pkcs11`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_set_client_pkcs11_pin_callback(
        builder: *mut tether_tls_config_builder,
        module_path: *const c_char,
        uri: *const c_char,
        callback: tether_pkcs11_pin_callback,
        user: *mut c_void,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live builder; text arguments NULL or NUL-terminated.
            let builder = unsafe { handle_mut(builder, "builder") }?;
            let module = unsafe { optional_text(module_path, "module_path") }?;
            let uri = unsafe { text_arg(uri, "uri") }?;
            let callback =
                callback.ok_or_else(|| Error::new(Code::NullArgument, "`callback` is NULL"))?;
            imp::set(builder, module, uri, None, Some((callback, user)))
        })
    }
}

/// Generates a P-256 key pair on a PKCS#11 token and writes a PKCS#10 certificate signing
/// request for it, signed by the token, as NUL-terminated PEM into `csr`: the first step of
/// provisioning (or renewing) a device whose key never leaves its hardware. Send the CSR to
/// your CA; write the issued certificate onto the token beside the key (same `CKA_ID`), then
/// use `tether_tls_config_builder_set_client_pkcs11` with the same URI.
///
/// - `module_path`: the token's PKCS#11 module; NULL to use the URI's `module-path`.
/// - `uri`: RFC 7512 URI naming the token and the new key; must give both `object=` (the
///   label) and `id=` (the `CKA_ID`), and no private key may already match it.
/// - `pin`: the token's user PIN; NULL when the token needs none or the URI carries it.
/// - `common_name`: the CSR's CN, the device id IoT Hub will read.
/// - `csr`, `csr_cap`, `csr_len`: the output; `csr_cap` must be at least
///   `TETHER_PKCS11_CSR_MAX_LEN + 1`, checked before anything is generated (otherwise
///   `TETHER_RESULT_BUFFER_TOO_SMALL` with `*csr_len` set to `TETHER_PKCS11_CSR_MAX_LEN`).
///
/// The private key is created `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE` and not
/// `CKA_EXTRACTABLE`.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
/// `TETHER_RESULT_INVALID_UTF8`, `TETHER_RESULT_BUFFER_TOO_SMALL`, the `TETHER_RESULT_PKCS11_*`
/// results of `tether_tls_config_builder_set_client_pkcs11` (`..._KEY_AMBIGUOUS` when a key
/// already matches the URI), `TETHER_RESULT_SIGNER_FAILED`.
#[no_mangle]
pub unsafe extern "C" fn tether_pkcs11_generate_csr(
    module_path: *const c_char,
    uri: *const c_char,
    pin: *const c_char,
    common_name: *const c_char,
    csr: *mut c_char,
    csr_cap: usize,
    csr_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: text arguments NULL or NUL-terminated; `csr` valid for `csr_cap` bytes;
        // `csr_len` NULL or writable.
        let module = unsafe { optional_text(module_path, "module_path") }?;
        let uri = unsafe { text_arg(uri, "uri") }?;
        let pin = unsafe { optional_text(pin, "pin") }?;
        let common_name = unsafe { text_arg(common_name, "common_name") }?;
        let out = unsafe { text_out(csr, csr_cap, csr_len, "csr", "csr_len") }?;
        if csr.is_null() {
            return Err(Error::new(Code::NullArgument, "`csr` is NULL"));
        }
        if !out.fits(TETHER_PKCS11_CSR_MAX_LEN) {
            out.report_needed(TETHER_PKCS11_CSR_MAX_LEN);
            return Err(Error::new(
                Code::BufferTooSmall,
                format!(
                    "`csr` must hold TETHER_PKCS11_CSR_MAX_LEN + 1 = {} bytes before a key is generated; it holds {csr_cap}",
                    TETHER_PKCS11_CSR_MAX_LEN + 1
                ),
            ));
        }
        let pem = imp::generate_csr(module, uri, pin, common_name)?;
        out.write(&pem)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_bad_arguments_are_refused_before_anything_is_loaded() {
        unsafe {
            let b = tether_tls_config_builder::tether_tls_config_builder_new();
            let uri = c"pkcs11:object=k";
            let code = tether_tls_config_builder::tether_tls_config_builder_set_client_pkcs11(
                b,
                c"/nonexistent.so".as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
            );
            assert_eq!(code, Code::NullArgument);
            let code = tether_tls_config_builder::tether_tls_config_builder_set_client_pkcs11(
                std::ptr::null_mut(),
                c"/nonexistent.so".as_ptr(),
                uri.as_ptr(),
                std::ptr::null(),
            );
            assert_eq!(code, Code::NullArgument);
            let bad = [0xffu8, 0];
            let code = tether_tls_config_builder::tether_tls_config_builder_set_client_pkcs11(
                b,
                bad.as_ptr().cast(),
                uri.as_ptr(),
                std::ptr::null(),
            );
            assert_eq!(code, Code::InvalidUtf8);
            let code =
                tether_tls_config_builder::tether_tls_config_builder_set_client_pkcs11_pin_callback(
                    b,
                    c"/nonexistent.so".as_ptr(),
                    uri.as_ptr(),
                    None,
                    std::ptr::null_mut(),
                );
            assert_eq!(code, Code::NullArgument);
            tether_tls_config_builder::tether_tls_config_builder_free(b);
        }
    }
}
