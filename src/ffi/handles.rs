//! Ownership of opaque handles: every `_new`/`_build` goes through [`into_handle`], every
//! `_free` through [`free_handle`], so a live-handle count can prove that nothing leaks.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Code, Error, Result};
use crate::ffi::claim_handle;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Moves `value` to the heap and hands it to C; the caller owns it until its `_free`.
pub(crate) fn into_handle<T>(value: T) -> *mut T {
    LIVE.fetch_add(1, Ordering::Relaxed);
    Box::into_raw(Box::new(value))
}

/// Takes back and drops a handle from [`into_handle`]; NULL is a no-op.
///
/// # Safety
/// `ptr` is NULL or came from `into_handle::<T>` and was not freed yet.
pub(crate) unsafe fn free_handle<T>(ptr: *mut T) {
    if !ptr.is_null() {
        // SAFETY: per the contract, `ptr` is a live Box<T>.
        drop(unsafe { Box::from_raw(ptr) });
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Borrows a handle for reading.
///
/// # Safety
/// `ptr` is NULL or a live handle of type `T` not mutated concurrently.
pub(crate) unsafe fn handle_ref<'a, T>(ptr: *const T, name: &str) -> Result<&'a T> {
    claim_handle(ptr, name, false)?;
    // SAFETY: per the contract.
    unsafe { ptr.as_ref() }
        .ok_or_else(|| Error::new(Code::NullArgument, format!("`{name}` is NULL")))
}

/// Borrows a handle for writing (an output for the overlap rule: no other argument may
/// point into it).
///
/// # Safety
/// `ptr` is NULL or a live handle of type `T` not used concurrently.
pub(crate) unsafe fn handle_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T> {
    claim_handle(ptr, name, true)?;
    // SAFETY: per the contract.
    unsafe { ptr.as_mut() }
        .ok_or_else(|| Error::new(Code::NullArgument, format!("`{name}` is NULL")))
}

/// The number of handles created and not yet freed, process-wide.
pub(crate) fn live_handles() -> usize {
    LIVE.load(Ordering::Relaxed)
}
