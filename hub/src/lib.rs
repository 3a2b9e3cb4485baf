//! tether-hub: a local Azure IoT Hub stand-in, as a mosquitto 2.0 auth plugin (API v5).
//!
//! mosquitto loads this library (`plugin /path/libtether_hub.so`,
//! `plugin_opt_registry /path/registry.json`); `tether hub` writes that configuration and
//! starts the broker. The plugin enforces what IoT Hub enforces at the door:
//!
//! - SAS: user name `{host}/{deviceId}[/{moduleId}]/?api-version=...`, client id matching,
//!   token for exactly that device or module, signed with its primary or secondary key, not
//!   expired; a connection is closed when its token expires;
//! - X.509: the client certificate's SHA-1 or SHA-256 thumbprint registered (`selfSigned`),
//!   or issued by a registered CA with CN = device id (`certificateAuthority`);
//! - disabled identities are refused, and disconnected when disabled while connected;
//! - a device publishes and subscribes only on its own `devices/{id}/...` topics and the
//!   `$iothub/...` topics IoT Hub serves; a refused publish (QoS 2, retained, too large,
//!   another topic) closes the connection;
//! - behind `$iothub/...` the plugin acts as the hub ([`service`]): twins, cloud-to-device
//!   messages and direct methods, driven through a control socket ([`control`]);
//! - DPS registrations (`tether hub --dps-port`) and `$iothub/credentials` renewals issue
//!   certificates from CSRs with the stand-in's issuing CA ([`certs`]).
//!
//! The decisions are plain functions ([`decide`]) over the registry ([`registry`]); the FFI
//! shell (`plugin`) only gathers inputs, logs, and applies answers.

pub mod certs;
pub mod control;
pub mod decide;
pub mod registry;
pub mod service;
pub mod trust;

// Left out of unit tests and of fuzz builds (cargo-fuzz sets `--cfg fuzzing`): it needs the
// broker's symbols.
#[cfg(not(any(test, fuzzing)))]
mod plugin;
