//! The ClientHello audit for C: `tether_audit_client_hello`. A legacy stack writes its own
//! ClientHello into a memory buffer (a memory BIO, a capture of its first send) and asks
//! whether IoT Hub's enforced TLS policy will accept it. The verdict and findings are
//! decided by the Rust core (`crate::audit`); this file only checks arguments and copies.

use std::ffi::c_char;

use crate::audit::{audit_bytes, Verdict};
use crate::error::Code;
use crate::ffi::panic::guard;
use crate::ffi::{bytes_arg, out_arg, text_out};

/// The audit's verdict on a ClientHello.
///
/// cbindgen:prefix-with-name=false
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum tether_audit_verdict {
    /// The hub will accept the device's TLS handshake.
    TETHER_AUDIT_VERDICT_OK = 0,
    /// The hub will accept it, but something is worth fixing (CBC suites only, no SNI, no
    /// extended master secret, ...): the report says what.
    TETHER_AUDIT_VERDICT_OK_WITH_WARNINGS = 1,
    /// The hub will refuse it (no TLS 1.2, none of its suites, no usable curve or RSA
    /// signature algorithm): the report says why and how to fix it.
    TETHER_AUDIT_VERDICT_WILL_FAIL = 2,
}

impl From<Verdict> for tether_audit_verdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Ok => tether_audit_verdict::TETHER_AUDIT_VERDICT_OK,
            Verdict::OkWithWarnings => tether_audit_verdict::TETHER_AUDIT_VERDICT_OK_WITH_WARNINGS,
            Verdict::WillFail => tether_audit_verdict::TETHER_AUDIT_VERDICT_WILL_FAIL,
        }
    }
}

/// Audits a ClientHello against IoT Hub's enforced TLS policy (since 31 August 2025: TLS 1.2,
/// ECDHE-RSA with AES-GCM preferred, ECDHE-RSA with AES-CBC-SHA256/384 still accepted,
/// everything else refused).
///
/// - `hello`, `hello_len` (in): the bytes the device sends first on the TCP connection: one
///   or more TLS handshake records holding the ClientHello. Not modified, not kept.
/// - `verdict_out` (out, not NULL): the verdict.
/// - `report`, `report_cap`, `report_len` (out): the report as one NUL-terminated JSON
///   object: `verdict`, `max_version`, `tls12_offered`, `versions`, `sni`, `suites` (each
///   with `code`, `name`, `class`: `preferred`/`accepted`/`refused`), `groups`,
///   `signature_algorithms`, `extended_master_secret`, `secure_renegotiation`, and
///   `findings` (each with `severity` `fail` or `warning`, a stable `id`, the `problem` in
///   plain words and the `fix`). When `report_cap` is too small nothing is written,
///   `*report_len` is set to the length needed (without the NUL) and the result is
///   `TETHER_RESULT_BUFFER_TOO_SMALL`. `report` may be NULL when `report_cap` is 0 (size
///   query). `report` must not overlap `hello`.
///
/// Outputs are written only on success. Thread-safe; no state; does not read the clock.
///
/// Results: `TETHER_RESULT_OK`; `TETHER_RESULT_NULL_ARGUMENT`;
/// `TETHER_RESULT_INVALID_ARGUMENT` (the bytes are not a readable ClientHello: empty,
/// an SSLv2-format hello (which the hub refuses), not a TLS handshake record, another
/// handshake message, truncated, oversized or malformed: `tether_last_error` names which;
/// or `report` overlaps `hello`); `TETHER_RESULT_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn tether_audit_client_hello(
    hello: *const u8,
    hello_len: usize,
    verdict_out: *mut tether_audit_verdict,
    report: *mut c_char,
    report_cap: usize,
    report_len: *mut usize,
) -> Code {
    guard(|| {
        // SAFETY: pointer contracts documented above.
        let bytes = unsafe { bytes_arg(hello, hello_len, "hello") }?;
        let verdict_out = unsafe { out_arg(verdict_out, "verdict_out") }?;
        // The shared overlap rule refuses a report (or length) that shares memory with the
        // hello or the verdict, before anything is written.
        let out = unsafe { text_out(report, report_cap, report_len, "report", "report_len") }?;
        let audited = audit_bytes(bytes)?;
        out.write(&audited.to_json())?;
        *verdict_out = audited.verdict.into();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::error::last_error_message;

    #[test]
    fn overlapping_buffers_and_bad_hellos_are_refused_before_any_write() {
        let mut buf = vec![22u8, 3, 1, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut verdict = tether_audit_verdict::TETHER_AUDIT_VERDICT_OK;
        let mut len = 7usize;
        let code = unsafe {
            tether_audit_client_hello(
                buf.as_ptr(),
                9,
                &mut verdict,
                buf.as_mut_ptr().add(4).cast(),
                8,
                &mut len,
            )
        };
        assert_eq!(code, Code::InvalidArgument);
        assert_eq!(len, 7);
        let code = unsafe {
            tether_audit_client_hello(
                b"\x80\x2e\x01\x03\x01".as_ptr(),
                5,
                &mut verdict,
                std::ptr::null_mut(),
                0,
                &mut len,
            )
        };
        assert_eq!(code, Code::InvalidArgument);
        assert!(last_error_message().unwrap().contains("SSLv2-format"));
        assert_eq!(verdict, tether_audit_verdict::TETHER_AUDIT_VERDICT_OK);
    }
}
