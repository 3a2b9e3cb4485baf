//! IoT Hub MQTT framing: a guarded MQTT 3.1.1 codec and every IoT Hub name and topic,
//! as sans-IO primitives (no sockets, no clock, caller-chosen buffers).
//!
//! - [`codec`]: encode CONNECT/PUBLISH/PUBACK/SUBSCRIBE/UNSUBSCRIBE/PINGREQ/DISCONNECT,
//!   decode what a server sends, from partial and concatenated frames;
//! - [`topics`]: client ids, usernames, telemetry, cloud-to-device, twin and method topics;
//! - [`properties`]: property bags and their percent-encoding;
//! - [`dps`]: Device Provisioning Service names, topics and replies;
//! - [`credentials`]: certificate issuance (DPS with a CSR) and renewal through the hub.

pub mod codec;
pub mod credentials;
pub mod dps;
pub mod properties;
pub mod topics;
