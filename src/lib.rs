//! tether: connect legacy device stacks to Azure IoT Hub the way the hub demands: TLS 1.2
//! with its strong ECDHE suites only, SAS or X.509 device authentication, and IoT Hub's
//! MQTT 3.1.1 conventions, through a C ABI (`include/tether.h`).
//!
//! Layers (see `DESIGN` in the repository's README):
//! - [`policy`]: the IoT Hub TLS policy as a rustls `ClientConfig` (ring provider);
//! - [`verify`] and [`handshake`]: certificate verification diagnostics and a handshake
//!   driver whose every refusal names its cause;
//! - [`auth`]: device identity: SAS keys and tokens, connection strings, DPS derived keys,
//!   X.509 identity checks and hardware-held keys;
//! - [`audit`]: will a device survive IoT Hub's TLS enforcement? Its ClientHello audited,
//!   from bytes, a listener or a capture;
//! - [`cert`]: facts read from X.509 certificates;
//! - [`error`]: the one error type and its stable result codes;
//! - [`defaults`]: every default (port, keep-alive, token lifetime, timeouts, back-off),
//!   decided once and read by Rust, C, the CLI and the bindings;
//! - `ffi`: the C ABI, one file per exported concept.
//!
//! # Not the API: `tether::internal`
//!
//! `tether::internal` (hidden from these docs) holds what only the `tether` CLI, the local
//! IoT Hub stand-in (the `tether-hub` crate), the fuzz targets, the benchmarks and the tests
//! need: the C ABI's Rust face (`internal::ffi`: call it from C through include/tether.h),
//! input checks, URL coding, file and time helpers, a fixed test clock. It has no stability
//! promise and may change in any release; items re-exported there are hidden where they are
//! defined. Everything else public is the supported Rust API.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod audit;
pub mod auth;
pub mod backoff;
pub mod cert;
pub mod client;
pub mod defaults;
pub mod error;
pub mod handshake;
pub mod log;
pub mod mqtt;
pub mod policy;
pub mod provisioning;
pub mod session;
pub mod transport;
pub mod verify;

pub use error::{Code, Error, Result};

#[doc(hidden)]
pub mod internal;

pub(crate) use internal::ffi;

/// rustls-ffi's C API, re-exported so its `rustls_*` symbols are part of our libraries.
#[cfg(feature = "rustls-ffi")]
pub use rustls_ffi;

/// The library version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
