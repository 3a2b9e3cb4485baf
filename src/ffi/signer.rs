//! Hardware-held keys for C: a signing callback used for the client certificate, so the
//! private key never enters the library.

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use rustls::SignatureScheme;

use crate::auth::x509::{DeviceCertificate, ExternalSigner};
use crate::error::{Code, Error, Result};
use crate::ffi::bytes_arg;
use crate::ffi::handles::handle_mut;
use crate::ffi::panic::guard;
use crate::ffi::tls_config::tether_tls_config_builder;

/// Signature scheme (TLS code point): RSA PKCS#1 v1.5 over a SHA-256 digest.
pub const TETHER_SIGN_RSA_PKCS1_SHA256: u16 = 0x0401;
/// RSA PKCS#1 v1.5 over a SHA-384 digest.
pub const TETHER_SIGN_RSA_PKCS1_SHA384: u16 = 0x0501;
/// RSA-PSS (MGF1 with SHA-256, salt length 32) over a SHA-256 digest.
pub const TETHER_SIGN_RSA_PSS_SHA256: u16 = 0x0804;
/// RSA-PSS (MGF1 with SHA-384, salt length 48) over a SHA-384 digest.
pub const TETHER_SIGN_RSA_PSS_SHA384: u16 = 0x0805;
/// ECDSA on P-256 over a SHA-256 digest.
pub const TETHER_SIGN_ECDSA_P256_SHA256: u16 = 0x0403;
/// ECDSA on P-384 over a SHA-384 digest.
pub const TETHER_SIGN_ECDSA_P384_SHA384: u16 = 0x0503;

/// A signing callback for a private key the library never sees (TPM, HSM, secure element).
///
/// - `user`: the pointer given at registration.
/// - `scheme`: one of `TETHER_SIGN_*`; only schemes the certificate's key allows are asked
///   for (RSA: PSS or PKCS#1 with SHA-256/384; EC P-256: ECDSA SHA-256; EC P-384: ECDSA
///   SHA-384).
/// - `digest`, `digest_len`: the **digest** to sign (32 bytes for SHA-256, 48 for SHA-384),
///   already computed by tether over the TLS handshake message. Sign it as a digest: for RSA
///   PKCS#1 v1.5 the DigestInfo prefix of the hash must be added (OpenSSL's `EVP_PKEY_sign`
///   with `EVP_PKEY_CTX_set_signature_md` does this; so do PKCS#11 mechanisms such as
///   `CKM_RSA_PKCS` with a DigestInfo); for PSS use MGF1 with the same hash and a salt as
///   long as the hash.
/// - `sig`, `sig_cap`, `sig_len`: write the signature (at most `sig_cap` bytes, 1024) and
///   its length. ECDSA signatures must be DER (`SEQUENCE { INTEGER r, INTEGER s }`): convert a
///   raw r||s with `tether_ecdsa_raw_to_der`.
///
/// Return 0 on success, anything else on failure (the handshake then fails with
/// `TETHER_RESULT_SIGNER_FAILED`). Called on the thread that runs the TLS handshake, once
/// per handshake with a client certificate, and once at registration to check the key. It
/// must not call back into tether.
pub type tether_sign_callback = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        scheme: u16,
        digest: *const u8,
        digest_len: usize,
        sig: *mut u8,
        sig_cap: usize,
        sig_len: *mut usize,
    ) -> c_int,
>;

struct CallbackSigner {
    callback: unsafe extern "C" fn(
        *mut c_void,
        u16,
        *const u8,
        usize,
        *mut u8,
        usize,
        *mut usize,
    ) -> c_int,
    user: *mut c_void,
}

// SAFETY: the registration contract requires the callback and `user` to be usable from any
// thread that runs a handshake with the configuration.
unsafe impl Send for CallbackSigner {}
// SAFETY: as above.
unsafe impl Sync for CallbackSigner {}

impl ExternalSigner for CallbackSigner {
    fn sign(&self, scheme: SignatureScheme, digest: &[u8], out: &mut [u8]) -> Result<usize> {
        let mut len = 0usize;
        // SAFETY: the callback's contract; buffers are valid for their lengths. A panic
        // cannot unwind out of C, and a C callback cannot unwind into us.
        let status = unsafe {
            (self.callback)(
                self.user,
                u16::from(scheme),
                digest.as_ptr(),
                digest.len(),
                out.as_mut_ptr(),
                out.len(),
                &mut len,
            )
        };
        if status != 0 {
            return Err(Error::new(
                Code::SignerFailed,
                format!("the signing callback failed with status {status} for {scheme:?}"),
            ));
        }
        Ok(len)
    }
}

impl tether_tls_config_builder {
    /// Authenticates the device with a client certificate whose private key stays outside the
    /// library: every signature is made by `callback` (see `tether_sign_callback`).
    ///
    /// - `chain`, `chain_len`: the certificate chain, leaf first (PEM, or DER certificates
    ///   back to back); copied. The leaf's public key decides the schemes used (RSA, EC
    ///   P-256 or EC P-384).
    /// - `callback`: must not be NULL.
    /// - `user`: passed to every call; may be NULL. It, and the callback, must stay valid
    ///   until the builder and every configuration built from it are freed, and be usable
    ///   from whichever thread runs a handshake.
    ///
    /// The callback is called once during this function to sign a probe, which is verified
    /// with the certificate's public key: a signer that holds another key is refused now.
    /// Replaces any client certificate set before.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_CERT_MALFORMED`, `TETHER_RESULT_CERT_INVALID` (a key type other than
    /// RSA, P-256, P-384), `TETHER_RESULT_SIGNER_FAILED` (the callback failed or returned
    /// something that is not a signature), `TETHER_RESULT_KEY_CERT_MISMATCH`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_set_client_signer(
        builder: *mut tether_tls_config_builder,
        chain: *const u8,
        chain_len: usize,
        callback: tether_sign_callback,
        user: *mut c_void,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live builder; `chain` valid for `chain_len` bytes.
            let builder = unsafe { handle_mut(builder, "builder") }?;
            let chain = unsafe { bytes_arg(chain, chain_len, "chain") }?;
            let callback =
                callback.ok_or_else(|| Error::new(Code::NullArgument, "`callback` is NULL"))?;
            let cert = DeviceCertificate::from_bytes(chain)?;
            let key = cert.with_signer(Arc::new(CallbackSigner { callback, user }))?;
            builder.policy.set_client_key(Arc::new(key));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_constants_are_the_tls_code_points() {
        assert_eq!(
            TETHER_SIGN_RSA_PKCS1_SHA256,
            u16::from(SignatureScheme::RSA_PKCS1_SHA256)
        );
        assert_eq!(
            TETHER_SIGN_RSA_PKCS1_SHA384,
            u16::from(SignatureScheme::RSA_PKCS1_SHA384)
        );
        assert_eq!(
            TETHER_SIGN_RSA_PSS_SHA256,
            u16::from(SignatureScheme::RSA_PSS_SHA256)
        );
        assert_eq!(
            TETHER_SIGN_RSA_PSS_SHA384,
            u16::from(SignatureScheme::RSA_PSS_SHA384)
        );
        assert_eq!(
            TETHER_SIGN_ECDSA_P256_SHA256,
            u16::from(SignatureScheme::ECDSA_NISTP256_SHA256)
        );
        assert_eq!(
            TETHER_SIGN_ECDSA_P384_SHA384,
            u16::from(SignatureScheme::ECDSA_NISTP384_SHA384)
        );
    }

    unsafe extern "C" fn failing(
        _: *mut c_void,
        _: u16,
        _: *const u8,
        _: usize,
        _: *mut u8,
        _: usize,
        _: *mut usize,
    ) -> c_int {
        -1
    }

    #[test]
    fn a_failing_or_null_callback_is_refused() {
        let g2 = include_bytes!("../roots/DigiCert_Global_Root_G2.der");
        unsafe {
            let b = tether_tls_config_builder::tether_tls_config_builder_new();
            let code = tether_tls_config_builder::tether_tls_config_builder_set_client_signer(
                b,
                g2.as_ptr(),
                g2.len(),
                None,
                std::ptr::null_mut(),
            );
            assert_eq!(code, Code::NullArgument);
            let code = tether_tls_config_builder::tether_tls_config_builder_set_client_signer(
                b,
                g2.as_ptr(),
                g2.len(),
                Some(failing),
                std::ptr::null_mut(),
            );
            assert_eq!(code, Code::SignerFailed);
            tether_tls_config_builder::tether_tls_config_builder_free(b);
        }
    }
}
