//! The C ABI: a thin, mechanical skin over each layer, one file per exported concept.
//!
//! Conventions (also in docs/api-conventions.md):
//! - every exported function runs inside [`panic::guard`] (or its pointer/void variants),
//!   so a panic becomes `TETHER_RESULT_PANIC` and never unwinds into C;
//! - pointer, length and UTF-8 checks go through the helpers in this file, so each error
//!   names the argument;
//! - text outputs go through [`write_text`]: NUL-terminated, nothing written unless it fits,
//!   `*out_len` set to the length needed when it does not;
//! - every argument is checked before the call has any side effect, and an output that
//!   overlaps another argument is refused (`claim`, the one overlap rule).

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)] // every exported function documents its contract in prose

pub mod audit;
pub mod client;
pub mod codec;
pub mod connection_string;
pub mod dps;
pub mod dps_session;
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

use std::cell::RefCell;
use std::ffi::{c_char, CStr};

use crate::error::{Code, Error, Result};

/// One memory range an exported function reads (`output == false`) or writes, claimed while
/// its arguments are checked.
struct Region {
    start: usize,
    len: usize,
    name: String,
    output: bool,
}

thread_local! {
    /// The ranges claimed by the exported call running on this thread.
    static CLAIMED: RefCell<Vec<Region>> = const { RefCell::new(Vec::new()) };
}

/// Runs one exported call with a fresh set of claimed ranges (called by [`panic::guard`], so
/// every exported function gets the overlap rule).
pub(crate) fn arg_scope<R>(body: impl FnOnce() -> R) -> R {
    let outer = CLAIMED.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let result = body();
    CLAIMED.with(|c| *c.borrow_mut() = outer);
    result
}

/// The overlap rule, the one place it is decided: an output (an out pointer, an output
/// buffer, a handle the call mutates) may not share a byte with any other argument, input or
/// output. Inputs may overlap each other (reading twice is harmless). Every argument helper
/// below claims its range here, so a conflict is found whatever order the arguments are
/// checked in, always before the call has any side effect. Claiming the same argument again
/// (same name and range) is a no-op.
fn claim(ptr: *const u8, len: usize, name: &str, output: bool) -> Result<()> {
    if ptr.is_null() || len == 0 {
        return Ok(());
    }
    let start = ptr as usize;
    let end = start.saturating_add(len);
    CLAIMED.with(|c| {
        let mut claimed = c.borrow_mut();
        for r in claimed.iter() {
            if r.start == start && r.len == len && r.name == name && r.output == output {
                return Ok(());
            }
            let overlaps = start < r.start.saturating_add(r.len) && r.start < end;
            if overlaps && (output || r.output) {
                return Err(Error::new(
                    Code::InvalidArgument,
                    format!(
                        "`{name}` overlaps `{}`: an output must not share memory with another argument",
                        r.name
                    ),
                ));
            }
        }
        claimed.push(Region {
            start,
            len,
            name: name.to_owned(),
            output,
        });
        Ok(())
    })
}

/// Claims the memory of a handle of type `T` the call reads (`output` false) or mutates.
pub(crate) fn claim_handle<T>(ptr: *const T, name: &str, output: bool) -> Result<()> {
    claim(ptr.cast(), std::mem::size_of::<T>().max(1), name, output)
}

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
    claim(ptr.cast(), bytes.len() + 1, name, false)?;
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
    claim(ptr, len, name, false)?;
    // SAFETY: non-NULL, length checked, valid per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrows an array of `count` elements (e.g. pointers to strings). A zero count accepts a
/// NULL pointer.
///
/// # Safety
/// `ptr` is NULL or valid for reads of `count` elements for `'a`.
pub(crate) unsafe fn array_arg<'a, T>(ptr: *const T, count: usize, name: &str) -> Result<&'a [T]> {
    let len = count.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
        Error::new(
            Code::InvalidArgument,
            format!("`{name}` count {count} is larger than any array can be"),
        )
    })?;
    // SAFETY: forwarded; the byte length covers the `count` elements.
    unsafe { bytes_arg(ptr.cast(), len, name) }?;
    if count == 0 {
        return Ok(&[]);
    }
    // SAFETY: non-NULL and valid for `count` elements, checked above.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
}

/// Checks an optional input struct (NULL allowed) and returns it.
///
/// # Safety
/// `ptr` is NULL or valid for reads of one `T`.
pub(crate) unsafe fn opt_in_arg<'a, T>(ptr: *const T, name: &str) -> Result<Option<&'a T>> {
    claim_handle(ptr, name, false)?;
    // SAFETY: per the caller's contract.
    Ok(unsafe { ptr.as_ref() })
}

/// Checks an output pointer and returns it as a mutable reference.
///
/// # Safety
/// `ptr` is NULL or valid for writes of one `T`.
pub(crate) unsafe fn out_arg<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T> {
    if ptr.is_null() {
        return Err(Error::new(Code::NullArgument, format!("`{name}` is NULL")));
    }
    claim_handle(ptr, name, true)?;
    // SAFETY: per the caller's contract.
    Ok(unsafe { &mut *ptr })
}

/// Checks an optional output pointer (NULL: the caller does not want the value).
///
/// # Safety
/// `ptr` is NULL or valid for writes of one `T`.
pub(crate) unsafe fn opt_out_arg<'a, T>(ptr: *mut T, name: &str) -> Result<Option<&'a mut T>> {
    claim_handle(ptr, name, true)?;
    // SAFETY: per the caller's contract.
    Ok(unsafe { ptr.as_mut() })
}

/// Checks an output buffer of `cap` bytes: NULL only when `cap` is 0 (a size query).
///
/// # Safety
/// `ptr` is NULL or valid for writes of `cap` bytes.
pub(crate) unsafe fn out_buf_arg(ptr: *mut u8, cap: usize, name: &str) -> Result<()> {
    if ptr.is_null() && cap != 0 {
        return Err(Error::new(
            Code::NullArgument,
            format!("`{name}` is NULL but its capacity is {cap}"),
        ));
    }
    if cap > isize::MAX as usize {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("`{name}` capacity {cap} is larger than any buffer can be"),
        ));
    }
    claim(ptr, cap, name, true)
}

/// Moves up to `cap` bytes from the front of `pending` (output a sans-IO machine queued)
/// into `buf`; returns how many. What does not fit stays queued, in order.
///
/// # Safety
/// `buf` was checked with [`out_buf_arg`] for `cap` bytes.
pub(crate) unsafe fn take_output(pending: &mut Vec<u8>, buf: *mut u8, cap: usize) -> usize {
    let n = pending.len().min(cap);
    if n > 0 {
        // SAFETY: `buf` holds at least `cap >= n` bytes.
        unsafe { std::ptr::copy_nonoverlapping(pending.as_ptr(), buf, n) };
        pending.drain(..n);
    }
    n
}

/// A checked text output (buffer, capacity, length): check it with [`text_out`] before the
/// call has any side effect, write it with [`TextOut::write`] after.
pub(crate) struct TextOut<'a> {
    out: *mut c_char,
    cap: usize,
    out_len: &'a mut usize,
}

/// Checks a text output: `out_len` not NULL, `out` NULL only when `cap` is 0, and neither
/// overlapping another argument.
///
/// # Safety
/// `out` is NULL or valid for writes of `cap` bytes; `out_len` is NULL or valid for a write.
pub(crate) unsafe fn text_out<'a>(
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
    name: &str,
    len_name: &str,
) -> Result<TextOut<'a>> {
    // SAFETY: forwarded contract.
    let out_len = unsafe { out_arg(out_len, len_name) }?;
    unsafe { out_buf_arg(out.cast(), cap, name) }?;
    Ok(TextOut { out, cap, out_len })
}

impl TextOut<'_> {
    /// Whether `len` bytes of text and the NUL fit.
    pub(crate) fn fits(&self, len: usize) -> bool {
        len < self.cap
    }

    /// Writes `text` NUL-terminated, or only the length needed when it does not fit
    /// (`BufferTooSmall`).
    pub(crate) fn write(self, text: &str) -> Result<()> {
        let needed = text.len();
        *self.out_len = needed;
        if !self.fits(needed) {
            return Err(Error::new(
                Code::BufferTooSmall,
                format!(
                    "output needs {} bytes including its NUL terminator; the buffer holds {}",
                    needed + 1,
                    self.cap
                ),
            ));
        }
        // SAFETY: `out` is valid for `cap > needed` bytes, checked by `text_out`.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), self.out.cast::<u8>(), needed);
            *self.out.add(needed) = 0;
        }
        Ok(())
    }

    /// Sets only the length (for a too-small report covering several outputs).
    pub(crate) fn report_needed(self, len: usize) {
        *self.out_len = len;
    }
}

/// Writes `text` NUL-terminated into `out` (capacity `cap`) and its length into `*out_len`.
///
/// When `cap` is too small nothing is written to `out`, `*out_len` receives the length
/// needed (without the NUL) and the result is `BufferTooSmall`. `out` may be NULL when `cap`
/// is 0, to ask for the size. For a call with side effects, check with [`text_out`] first.
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
    unsafe { text_out(out, cap, out_len, "out", "out_len") }?.write(text)
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
