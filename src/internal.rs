//! Not part of the supported API (see the crate documentation): what the `tether` CLI, the
//! IoT Hub stand-in (hub/), the fuzz targets, benchmarks and tests need. No stability
//! promise; hidden from the documentation.

/// The C ABI's Rust face: the `extern "C"` functions and `#[repr(C)]` types of
/// include/tether.h (tests call them from Rust; applications use the header).
#[path = "ffi/mod.rs"]
pub mod ffi;

pub use crate::auth::sas::{check_key_name, url_decode, url_encode_string};
pub use crate::auth::{check_host, check_id, FixedClock, IdKind};
pub use crate::cert::format_utc;
pub use crate::client::system_now_ms;
pub use crate::policy::read_file;
