//! X.509 device certificates for C: thumbprints, identity and validity checks, and the
//! raw-to-DER helper for ECDSA signatures from secure elements.

use std::ffi::c_char;

use crate::auth::x509::{self, DeviceCertificate};
use crate::error::{Code, Error};
use crate::ffi::panic::guard;
use crate::ffi::{bytes_arg, out_arg, out_buf_arg, text_arg, write_text};

/// `tether_x509_thumbprint`: SHA-1, 40 hex digits.
pub const TETHER_THUMBPRINT_SHA1: u32 = 1;
/// `tether_x509_thumbprint`: SHA-256, 64 hex digits.
pub const TETHER_THUMBPRINT_SHA256: u32 = 2;

/// Writes the thumbprint of the first certificate in `cert` (`cert_len` bytes of PEM or
/// DER: the leaf of a chain) as uppercase hex without separators, as the IoT Hub portal and
/// CLI show it. `algorithm` is `TETHER_THUMBPRINT_SHA1` or `TETHER_THUMBPRINT_SHA256`.
/// `out` receives the NUL-terminated text (41 or 65 bytes are enough); when too small
/// nothing is written and `*out_len` is the length needed.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
/// `TETHER_RESULT_INVALID_ARGUMENT` (unknown algorithm), `TETHER_RESULT_CERT_MALFORMED`,
/// `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_x509_thumbprint(
    cert: *const u8,
    cert_len: usize,
    algorithm: u32,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: `cert` valid for `cert_len` bytes; buffer contract documented above.
        let cert = unsafe { bytes_arg(cert, cert_len, "cert") }?;
        let prints = x509::thumbprints(cert)?;
        let text = match algorithm {
            TETHER_THUMBPRINT_SHA1 => prints.sha1,
            TETHER_THUMBPRINT_SHA256 => prints.sha256,
            other => {
                return Err(Error::new(
                    Code::InvalidArgument,
                    format!(
                    "thumbprint algorithm must be TETHER_THUMBPRINT_SHA1 or _SHA256, not {other}"
                ),
                ))
            }
        };
        unsafe { write_text(&text, out, out_cap, out_len) }
    })
}

/// Checks that the leaf certificate in `cert` (PEM or DER chain) is for `device_id` (its CN
/// equals the device id), or for `device_id/module_id` when `module_id` is not NULL. Call it
/// before connecting: IoT Hub refuses a certificate whose CN is not the device.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
/// `TETHER_RESULT_ID_INVALID`, `TETHER_RESULT_CERT_MALFORMED`,
/// `TETHER_RESULT_CERT_DEVICE_MISMATCH` (the message names the CN found).
#[no_mangle]
pub unsafe extern "C" fn tether_x509_check_identity(
    cert: *const u8,
    cert_len: usize,
    device_id: *const c_char,
    module_id: *const c_char,
) -> Code {
    guard(|| {
        // SAFETY: as documented above.
        let cert = unsafe { bytes_arg(cert, cert_len, "cert") }?;
        let device_id = unsafe { text_arg(device_id, "device_id") }?;
        let module_id = unsafe { crate::ffi::topics::opt_text_arg(module_id, "module_id") }?;
        DeviceCertificate::from_bytes(cert)?.check_identity(device_id, module_id)
    })
}

/// Checks the leaf certificate's validity at `now_unix` (seconds since 1970, from the
/// device's clock).
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
/// `TETHER_RESULT_CERT_MALFORMED`, `TETHER_RESULT_CERT_EXPIRED`,
/// `TETHER_RESULT_CERT_NOT_YET_VALID`, `TETHER_RESULT_CLOCK_NOT_SET` (`now_unix` before
/// 2025: set the clock first). The message gives the dates.
#[no_mangle]
pub unsafe extern "C" fn tether_x509_check_validity(
    cert: *const u8,
    cert_len: usize,
    now_unix: i64,
) -> Code {
    guard(|| {
        // SAFETY: as documented above.
        let cert = unsafe { bytes_arg(cert, cert_len, "cert") }?;
        DeviceCertificate::from_bytes(cert)?.check_validity(now_unix)
    })
}

/// Sets `*expiring` to true when the leaf certificate expires within `days` days of
/// `now_unix` (or has expired): ask at start-up and daily, and renew in time.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
/// `TETHER_RESULT_CERT_MALFORMED`.
#[no_mangle]
pub unsafe extern "C" fn tether_x509_expires_within(
    cert: *const u8,
    cert_len: usize,
    now_unix: i64,
    days: u32,
    expiring: *mut bool,
) -> Code {
    guard(|| {
        // SAFETY: as documented above.
        let cert = unsafe { bytes_arg(cert, cert_len, "cert") }?;
        let expiring = unsafe { out_arg(expiring, "expiring") }?;
        *expiring = DeviceCertificate::from_bytes(cert)?.expires_within(now_unix, days);
        Ok(())
    })
}

/// Converts a raw ECDSA signature `r || s` (two big-endian integers of equal length, as
/// most secure elements return them: 64 bytes for P-256, 96 for P-384) into the DER form a
/// `tether_sign_callback` must return. Writes `*out_len` bytes into `out`; when `out_cap` is
/// too small nothing is written and `*out_len` is the size needed (at most `raw_len + 9`).
/// Does not allocate.
///
/// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
/// `TETHER_RESULT_INVALID_ARGUMENT` (empty, odd length or over 132 bytes),
/// `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_ecdsa_raw_to_der(
    raw: *const u8,
    raw_len: usize,
    out: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: as documented above.
        let raw = unsafe { bytes_arg(raw, raw_len, "raw") }?;
        let out_len = unsafe { out_arg(out_len, "out_len") }?;
        unsafe { out_buf_arg(out, out_cap, "out") }?;
        let mut der = [0u8; 141];
        let n = x509::ecdsa_raw_to_der(raw, &mut der)?;
        if n > out_cap {
            *out_len = n;
            return Err(Error::new(
                Code::BufferTooSmall,
                format!("the DER signature needs {n} bytes; the buffer holds {out_cap}"),
            ));
        }
        // SAFETY: `out` is valid for `out_cap >= n` bytes (checked by `out_buf_arg`).
        unsafe { std::ptr::copy_nonoverlapping(der.as_ptr(), out, n) };
        *out_len = n;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const G2: &[u8] = include_bytes!("../roots/DigiCert_Global_Root_G2.der");

    #[test]
    fn thumbprint_and_checks() {
        let mut buf = [0 as c_char; 65];
        let mut len = 0;
        let code = unsafe {
            tether_x509_thumbprint(
                G2.as_ptr(),
                G2.len(),
                TETHER_THUMBPRINT_SHA256,
                buf.as_mut_ptr(),
                65,
                &mut len,
            )
        };
        assert_eq!((code, len), (Code::Ok, 64));
        let code = unsafe {
            tether_x509_thumbprint(
                G2.as_ptr(),
                G2.len(),
                TETHER_THUMBPRINT_SHA1,
                buf.as_mut_ptr(),
                40,
                &mut len,
            )
        };
        assert_eq!((code, len), (Code::BufferTooSmall, 40));
        let code = unsafe {
            tether_x509_thumbprint(G2.as_ptr(), G2.len(), 7, buf.as_mut_ptr(), 65, &mut len)
        };
        assert_eq!(code, Code::InvalidArgument);
        let code = unsafe {
            tether_x509_check_identity(G2.as_ptr(), G2.len(), c"dev".as_ptr(), std::ptr::null())
        };
        assert_eq!(code, Code::CertDeviceMismatch);
        let code = unsafe { tether_x509_check_validity(G2.as_ptr(), G2.len(), 3_000_000_000) };
        assert_eq!(code, Code::CertExpired);
        let mut expiring = false;
        let code = unsafe {
            tether_x509_expires_within(G2.as_ptr(), G2.len(), 2_000_000_000, 30, &mut expiring)
        };
        assert_eq!((code, expiring), (Code::Ok, false));
        let code = unsafe { tether_x509_check_validity(std::ptr::null(), 5, 0) };
        assert_eq!(code, Code::NullArgument);
    }

    #[test]
    fn raw_to_der_reports_the_size_needed() {
        let raw = [1u8; 64];
        let mut len = 0;
        let code =
            unsafe { tether_ecdsa_raw_to_der(raw.as_ptr(), 64, std::ptr::null_mut(), 0, &mut len) };
        assert_eq!((code, len), (Code::BufferTooSmall, 70));
        let mut out = [0u8; 72];
        let code =
            unsafe { tether_ecdsa_raw_to_der(raw.as_ptr(), 64, out.as_mut_ptr(), 72, &mut len) };
        assert_eq!((code, len, out[0]), (Code::Ok, 70, 0x30));
    }
}
