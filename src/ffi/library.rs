//! Library-wide functions: version and handle accounting.

use std::ffi::c_char;

use crate::ffi::handles::live_handles;
use crate::ffi::panic::guard_value;

/// Returns the library version as a static NUL-terminated string, e.g. `"0.1.0"`.
///
/// Owned by the library; never NULL; do not free. Thread-safe.
#[no_mangle]
pub extern "C" fn tether_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

/// Returns how many tether handles (of every type) are alive in this process: created by a
/// `_new` or `_build` function and not yet passed to their `_free`.
///
/// Meant for leak checks in tests and bindings. Thread-safe.
#[no_mangle]
pub extern "C" fn tether_live_handles() -> usize {
    guard_value(0, || Ok(live_handles()))
}
