//! Device identity: SAS keys and tokens, connection strings, DPS derived keys, X.509.
//!
//! - [`sas`]: keys (decoded once, zeroized, never printed), tokens (generate, parse,
//!   verify), renewal times;
//! - [`connection_string`]: `HostName=...;DeviceId=...;SharedAccessKey=...` and friends, with
//!   primary and secondary keys;
//! - [`dps`]: group-enrollment key derivation;
//! - [`x509`]: certificate chains, thumbprints, device-id and validity checks, and a
//!   signing callback so a hardware-held key never enters the library;
//! - `pkcs11` (feature `pkcs11`, Linux): keys held by a PKCS#11 token (HSM, TPM, secure
//!   element) signing through that same mechanism, key generation on the token and CSRs;
//! - [`csr`]: keys and CSRs for certificates issued by DPS or the hub, and the checks an
//!   issued chain passes before it is used;
//! - [`store`]: the credential store (a folder written atomically, or the firmware's own
//!   load/save callbacks).
//!
//! Time comes from the caller: functions take `now_unix` or a rustls `TimeProvider` (the
//! same clock seam the TLS policy uses), never the wall clock behind the caller's back.

pub mod connection_string;
pub mod csr;
pub mod dps;
#[cfg(all(feature = "pkcs11", target_os = "linux"))]
pub mod pkcs11;
pub mod sas;
pub mod store;
pub mod x509;

use rustls::time_provider::TimeProvider;

use crate::error::{Code, Error, Result};
use crate::handshake::CLOCK_FLOOR_UNIX;

/// Longest device, module or registration id IoT Hub and DPS accept.
pub const MAX_ID_LEN: usize = 128;
/// Longest host name (DNS limit).
pub const MAX_HOST_LEN: usize = 253;

/// The characters besides ASCII letters and digits that IoT Hub allows in device and module
/// ids. Not every transport can carry all of them: see [`check_topic_id`] (`+`, `#`) and
/// the connection string (`;`).
pub const DEVICE_ID_SYMBOLS: &str = "-:.+%_#*?!(),=@;$'";

/// Shortens untrusted text for an error message (giant inputs stay readable).
pub(crate) fn excerpt(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        return text.to_owned();
    }
    let head: String = text.chars().take(MAX).collect();
    format!("{head}... ({} bytes)", text.len())
}

/// The kind of id being checked, for messages and for the character set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)] // re-exported by `tether::internal`
pub enum IdKind {
    /// An IoT Hub device id.
    Device,
    /// An IoT Hub module id.
    Module,
    /// A DPS registration id.
    Registration,
    /// A DPS id scope.
    Scope,
}

impl IdKind {
    fn label(self) -> &'static str {
        match self {
            IdKind::Device => "device id",
            IdKind::Module => "module id",
            IdKind::Registration => "registration id",
            IdKind::Scope => "id scope",
        }
    }

    fn allows(self, c: char) -> bool {
        if c.is_ascii_alphanumeric() {
            return true;
        }
        match self {
            // IoT Hub: ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ '
            IdKind::Device | IdKind::Module => DEVICE_ID_SYMBOLS.contains(c),
            // DPS: letters, digits and - . _ :
            IdKind::Registration => "-._:".contains(c),
            IdKind::Scope => false,
        }
    }

    fn max_len(self) -> usize {
        match self {
            IdKind::Scope => 64,
            _ => MAX_ID_LEN,
        }
    }
}

/// Checks an id against IoT Hub's (or DPS's) rules: not empty, at most 128 characters,
/// and only the characters the service accepts. The error (`IdInvalid`) says which rule.
#[doc(hidden)] // re-exported by `tether::internal`
pub fn check_id(kind: IdKind, id: &str) -> Result<()> {
    let label = kind.label();
    if id.is_empty() {
        return Err(Error::new(Code::IdInvalid, format!("{label} is empty")));
    }
    if id.len() > kind.max_len() {
        return Err(Error::new(
            Code::IdInvalid,
            format!(
                "{label} is {} bytes long; the limit is {}",
                id.len(),
                kind.max_len()
            ),
        ));
    }
    if let Some((at, c)) = id.char_indices().find(|&(_, c)| !kind.allows(c)) {
        let what = match c {
            '/' => "'/' (ids cannot contain a slash; a module is given separately)".to_owned(),
            ' ' => "a space".to_owned(),
            c if c.is_control() => format!("control character U+{:04X}", c as u32),
            c => format!("'{c}'"),
        };
        return Err(Error::new(
            Code::IdInvalid,
            format!("{label} \"{}\" contains {what} at offset {at}", excerpt(id)),
        ));
    }
    Ok(())
}

/// Checks that a (valid) device or module id can be written into an MQTT topic name: MQTT
/// 3.1.1 (4.7.1) reserves `+` and `#` as wildcards, so an id holding one can connect, but
/// cannot send telemetry or receive cloud-to-device messages over MQTT.
pub fn check_topic_id(kind: IdKind, id: &str) -> Result<()> {
    check_id(kind, id)?;
    if let Some((at, c)) = id.char_indices().find(|&(_, c)| c == '+' || c == '#') {
        return Err(Error::new(
            Code::IdInvalid,
            format!(
                "{} \"{}\" contains '{c}' at offset {at}: MQTT topic names cannot contain '+' or '#' \
                 (MQTT 3.1.1, 4.7.1), so this id cannot send or receive on devices/... topics over MQTT",
                kind.label(),
                excerpt(id)
            ),
        ));
    }
    Ok(())
}

/// Checks that a (valid) device or module id can be written into a connection string, whose
/// fields are separated by `;`: an id holding `;` cannot be carried by one.
pub fn check_connection_string_id(kind: IdKind, id: &str) -> Result<()> {
    check_id(kind, id)?;
    if let Some(at) = id.find(';') {
        return Err(Error::new(
            Code::IdInvalid,
            format!(
                "{} \"{}\" contains ';' at offset {at}: a connection string cannot hold ';' in a value \
                 (it separates the fields)",
                kind.label(),
                excerpt(id)
            ),
        ));
    }
    Ok(())
}

/// Checks a host name: 1 to 253 characters of letters, digits, `-`, `.` and `_`.
#[doc(hidden)] // re-exported by `tether::internal`
pub fn check_host(host: &str) -> Result<()> {
    if host.is_empty() {
        return Err(Error::new(Code::IdInvalid, "host name is empty"));
    }
    if host.len() > MAX_HOST_LEN {
        return Err(Error::new(
            Code::IdInvalid,
            format!(
                "host name is {} bytes long; the limit is {MAX_HOST_LEN}",
                host.len()
            ),
        ));
    }
    if let Some((at, c)) = host
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        let hint = if c == '%' {
            " (pass the resource unencoded: tether encodes it)"
        } else {
            ""
        };
        return Err(Error::new(
            Code::IdInvalid,
            format!(
                "host name \"{}\" contains {c:?} at offset {at}{hint}",
                excerpt(host)
            ),
        ));
    }
    Ok(())
}

/// Reads the current time from `clock` as Unix seconds, refusing a clock that is not set
/// (before 2025-01-01): a token made from such a clock would be expired on arrival.
pub fn now_unix(clock: &dyn TimeProvider) -> Result<u64> {
    let now = clock
        .current_time()
        .ok_or_else(|| Error::new(Code::ClockNotSet, "the clock gives no time"))?
        .as_secs();
    if (now as i64) < CLOCK_FLOOR_UNIX {
        return Err(Error::new(
            Code::ClockNotSet,
            format!(
                "device clock reads {}: set the time (NTP) before making tokens or checking certificates",
                crate::cert::format_utc(now as i64)
            ),
        ));
    }
    Ok(now)
}

/// A clock that always reads the same time: for tests, and for callers that keep their own
/// time and pass it in.
#[derive(Clone, Copy, Debug)]
#[doc(hidden)] // re-exported by `tether::internal`
pub struct FixedClock(pub u64);

impl TimeProvider for FixedClock {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(rustls::pki_types::UnixTime::since_unix_epoch(
            std::time::Duration::from_secs(self.0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_hub_rules_and_each_failure_says_why() {
        check_id(IdKind::Device, "my_device").unwrap();
        check_id(IdKind::Device, "a-b.c%d_e*f?g!h(i)j,k:l=m@n$o'p").unwrap();
        check_id(IdKind::Device, "a+b#c;d").unwrap();
        for c in DEVICE_ID_SYMBOLS.chars() {
            check_id(IdKind::Module, &format!("m{c}")).unwrap();
        }
        for c in [
            '/', ' ', '&', '"', '<', '{', '[', '\\', '^', '`', '|', '~', 'é',
        ] {
            let e = check_id(IdKind::Device, &format!("d{c}")).unwrap_err();
            assert_eq!(e.code(), Code::IdInvalid, "{c:?}");
        }
        let e = check_id(IdKind::Device, "").unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::IdInvalid, "device id is empty")
        );
        let e = check_id(IdKind::Module, "a/b").unwrap_err();
        assert!(e.message().contains("'/'"), "{e:?}");
        let e = check_id(IdKind::Device, "my device").unwrap_err();
        assert!(e.message().contains("a space at offset 2"), "{e:?}");
        let e = check_id(IdKind::Device, &"x".repeat(100_000)).unwrap_err();
        assert!(e.message().contains("100000 bytes"), "{e:?}");
        assert!(e.message().len() < 200);
        let e = check_id(IdKind::Registration, "reg$1").unwrap_err();
        assert_eq!(e.code(), Code::IdInvalid);
        check_id(IdKind::Registration, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6").unwrap();
    }

    #[test]
    fn ids_a_transport_cannot_carry_are_refused_with_that_reason() {
        check_topic_id(IdKind::Device, "a;b$c").unwrap();
        for (id, c) in [("a+b", '+'), ("dev#1", '#')] {
            let e = check_topic_id(IdKind::Device, id).unwrap_err();
            assert_eq!(e.code(), Code::IdInvalid);
            assert!(e.message().contains(&format!("contains '{c}'")), "{e:?}");
            assert!(
                e.message()
                    .contains("MQTT topic names cannot contain '+' or '#'"),
                "{e:?}"
            );
        }
        check_connection_string_id(IdKind::Device, "a+b#c").unwrap();
        let e = check_connection_string_id(IdKind::Module, "m;GatewayHostName=x").unwrap_err();
        assert!(
            e.message().contains("module id")
                && e.message().contains("a connection string cannot hold ';'"),
            "{e:?}"
        );
        // Ids that break the general rules keep the general message.
        let e = check_topic_id(IdKind::Device, "a/b").unwrap_err();
        assert!(e.message().contains("'/'"), "{e:?}");
    }

    #[test]
    fn hosts_are_checked_and_encoded_input_gets_a_hint() {
        check_host("myiothub.azure-devices.net").unwrap();
        let e = check_host("myhub%2Fdevices").unwrap_err();
        assert!(e.message().contains("unencoded"), "{e:?}");
        assert_eq!(check_host("").unwrap_err().code(), Code::IdInvalid);
    }

    #[test]
    fn a_clock_at_1970_is_refused() {
        let e = now_unix(&FixedClock(0)).unwrap_err();
        assert_eq!(e.code(), Code::ClockNotSet);
        assert!(e.message().contains("1970-01-01"), "{e:?}");
        assert_eq!(now_unix(&FixedClock(1_800_000_000)).unwrap(), 1_800_000_000);
    }
}
