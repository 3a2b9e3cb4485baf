//! The C ABI: a thin, mechanical skin over each layer, one file per exported concept.
//!
//! Conventions (also in docs/api-conventions.md):
//! - every exported function runs inside [`panic::guard`] (or its pointer/void variants),
//!   so a panic becomes `TETHER_RESULT_PANIC` and never unwinds into C;
//! - pointer, length and UTF-8 checks go through the helpers in this file, so each error
//!   names the argument;
//! - text outputs go through [`write_text`]: NUL-terminated, nothing written unless it fits,
//!   `*out_len` set to the length needed when it does not.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)] // every exported function documents its contract in prose

pub mod client;
pub mod codec;
pub mod connection_string;
pub mod dps;
pub mod error;
pub mod event;
pub mod handles;
pub mod library;
pub mod log;
pub mod panic;
pub mod pkcs11;
pub mod property_bag;
pub mod sas;
pub mod session;
pub mod signer;
pub mod tls_config;
pub mod topics;
pub mod x509;

use std::ffi::{c_char, CStr};

use crate::error::{Code, Error, Result};

/// Borrows a NUL-terminated UTF-8 argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn text_arg<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::new(Code::NullArgument, format!("`{name}` is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    std::str::from_utf8(bytes).map_err(|e| {
        Error::new(
            Code::InvalidUtf8,
            format!(
                "`{name}` is not valid UTF-8 (bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Borrows a pointer + length byte argument. A zero length accepts a NULL pointer.
///
/// # Safety
/// `ptr` is NULL or valid for reads of `len` bytes for `'a`.
pub(crate) unsafe fn bytes_arg<'a>(ptr: *const u8, len: usize, name: &str) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Error::new(
            Code::NullArgument,
            format!("`{name}` is NULL but its length is {len}"),
        ));
    }
    if len > isize::MAX as usize {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("`{name}` length {len} is larger than any buffer can be"),
        ));
    }
    // SAFETY: non-NULL, length checked, valid per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Checks an output pointer and returns it as a mutable reference.
///
/// # Safety
/// `ptr` is NULL or valid for writes of one `T`.
pub(crate) unsafe fn out_arg<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T> {
    // SAFETY: per the caller's contract.
    unsafe { ptr.as_mut() }
        .ok_or_else(|| Error::new(Code::NullArgument, format!("`{name}` is NULL")))
}

/// Writes `text` NUL-terminated into `out` (capacity `cap`) and its length into `*out_len`.
///
/// When `cap` is too small nothing is written to `out`, `*out_len` receives the length
/// needed (without the NUL) and the result is `BufferTooSmall`. `out` may be NULL when `cap`
/// is 0, to ask for the size.
///
/// # Safety
/// `out` is NULL or valid for writes of `cap` bytes; `out_len` is NULL or valid for a write.
pub(crate) unsafe fn write_text(
    text: &str,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Result<()> {
    // SAFETY: forwarded contract.
    let out_len = unsafe { out_arg(out_len, "out_len") }?;
    if out.is_null() && cap != 0 {
        return Err(Error::new(
            Code::NullArgument,
            format!("`out` is NULL but its capacity is {cap}"),
        ));
    }
    let needed = text.len();
    if needed >= cap {
        *out_len = needed;
        return Err(Error::new(
            Code::BufferTooSmall,
            format!(
                "output needs {} bytes including its NUL terminator; the buffer holds {cap}",
                needed + 1
            ),
        ));
    }
    // SAFETY: `out` is valid for `cap > needed` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), out.cast::<u8>(), needed);
        *out.add(needed) = 0;
    }
    *out_len = needed;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_text_reports_size_needed_and_writes_nothing_when_too_small() {
        let mut buf = [b'x' as c_char; 4];
        let mut len = 99usize;
        let err =
            unsafe { write_text("hello", buf.as_mut_ptr(), buf.len(), &mut len) }.unwrap_err();
        assert_eq!(err.code(), Code::BufferTooSmall);
        assert_eq!(len, 5);
        assert!(buf.iter().all(|&c| c == b'x' as c_char));
        let mut buf = [0 as c_char; 6];
        unsafe { write_text("hello", buf.as_mut_ptr(), buf.len(), &mut len) }.unwrap();
        assert_eq!(len, 5);
        assert_eq!(
            unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(),
            "hello"
        );
    }

    #[test]
    fn write_text_size_query_and_null_checks() {
        let mut len = 0usize;
        let err = unsafe { write_text("abc", std::ptr::null_mut(), 0, &mut len) }.unwrap_err();
        assert_eq!((err.code(), len), (Code::BufferTooSmall, 3));
        let err = unsafe { write_text("abc", std::ptr::null_mut(), 8, &mut len) }.unwrap_err();
        assert_eq!(err.code(), Code::NullArgument);
        let mut buf = [0 as c_char; 8];
        let err =
            unsafe { write_text("abc", buf.as_mut_ptr(), 8, std::ptr::null_mut()) }.unwrap_err();
        assert_eq!(err.code(), Code::NullArgument);
    }

    #[test]
    fn text_and_bytes_arguments_are_checked() {
        let err = unsafe { text_arg(std::ptr::null(), "host") }.unwrap_err();
        assert_eq!(err.message(), "`host` is NULL");
        let bad = b"ab\xffc\0";
        let err = unsafe { text_arg(bad.as_ptr().cast(), "host") }.unwrap_err();
        assert_eq!(err.code(), Code::InvalidUtf8);
        assert!(err.message().contains("offset 2"));
        assert_eq!(unsafe { bytes_arg(std::ptr::null(), 0, "b") }.unwrap(), b"");
        let err = unsafe { bytes_arg(std::ptr::null(), 3, "b") }.unwrap_err();
        assert_eq!(err.code(), Code::NullArgument);
    }
}
