//! One error type for the whole library, and the stable result codes the C ABI returns.
//!
//! Every failure carries a [`Code`] (stable, numeric, grouped by area) and a message a
//! firmware engineer can act on. Messages never contain secrets: keys, tokens and private
//! keys are never formatted into them.

use std::fmt;

// This enum is the one table of result codes: a new code is one variant here, with its value
// and its description (the doc comment), and nothing else to write. cbindgen turns it into
// `enum tether_result` in include/tether.h; build.rs generates `Code::ALL`, `name()`,
// `c_name()`, `description()` and `from_u32()` from it (one variant per line, each with a
// doc comment); the bindings' tests check their mirrors against the header.

/// Stable result codes, grouped by area. Values are never renumbered; retired values stay
/// reserved.
///
/// - 0: success
/// - 1..99: general (arguments, buffers, panics)
/// - 100..199: TLS policy, certificates and handshake
/// - 200..299: device identity and authentication
/// - 300..399: MQTT and IoT Hub framing
/// - 400..499: I/O and network
/// - 500..599: keys held by a hardware token (PKCS#11)
/// - 600..699: certificate lifecycle (issuance through DPS, renewal through the hub)
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum Code {
    /// The call succeeded.
    Ok = 0,

    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// A text argument was not valid UTF-8.
    InvalidUtf8 = 2,
    /// An argument had a value outside what the function accepts.
    InvalidArgument = 3,
    /// The output buffer is too small; `*out_len` holds the size needed (without the NUL).
    BufferTooSmall = 4,
    /// A panic was caught at the library boundary: this is a bug in tether; please report it.
    Panic = 5,
    /// A file could not be read.
    FileNotReadable = 6,
    /// The object is not in a state that allows this call.
    InvalidState = 7,
    /// The requested item does not exist.
    NotFound = 8,

    /// The server only offers a TLS version older than the policy allows (TLS 1.0/1.1).
    TlsVersionRefused = 100,
    /// The server chose, or only offers, a cipher suite outside the IoT Hub policy.
    TlsCipherSuiteRefused = 101,
    /// A certificate in the chain has expired.
    CertExpired = 102,
    /// A certificate in the chain is not valid yet.
    CertNotYetValid = 103,
    /// The server certificate is for another host name.
    CertWrongHost = 104,
    /// The server chain does not end in a trusted root.
    CertUntrusted = 105,
    /// The server requires a client certificate (mutual TLS) and none is configured.
    ClientCertRequired = 106,
    /// Certificate input (PEM or DER) is malformed.
    CertMalformed = 107,
    /// Private key input is malformed or of an unsupported type.
    PrivateKeyMalformed = 108,
    /// The device clock is not set (it reads a date before 2025-01-01).
    ClockNotSet = 109,
    /// The TLS handshake failed for another reason (the message says which).
    TlsHandshakeFailed = 110,
    /// The server refused our client certificate.
    ClientCertRejected = 111,
    /// The private key does not match the certificate.
    KeyCertMismatch = 112,
    /// A caller-supplied signing callback failed.
    SignerFailed = 113,
    /// A certificate is otherwise invalid (bad signature, wrong usage, revoked...).
    CertInvalid = 114,

    /// A SAS key is not valid base64 or is empty.
    SasKeyInvalid = 200,
    /// A connection string is malformed or inconsistent.
    ConnectionStringInvalid = 201,
    /// A SAS token has expired.
    TokenExpired = 202,
    /// A SAS token is malformed.
    TokenMalformed = 203,
    /// A SAS token's signature does not match the key.
    SignatureMismatch = 204,
    /// A device, module or registration id is empty or has characters IoT Hub refuses.
    IdInvalid = 205,
    /// The certificate's common name is not the configured device id.
    CertDeviceMismatch = 206,
    /// The hub refused the credentials (bad user name or password, CONNACK 4/5).
    NotAuthorized = 207,
    /// The device identity is disabled.
    DeviceDisabled = 208,

    /// An MQTT packet is malformed.
    MqttMalformed = 300,
    /// More bytes are needed to decode a complete packet.
    MqttNeedMoreData = 301,
    /// A packet exceeds the size IoT Hub allows.
    MqttPacketTooLarge = 302,
    /// QoS 2 is not supported by IoT Hub.
    MqttQosUnsupported = 303,
    /// The broker refused the connection (CONNACK return code in the message).
    MqttConnectionRefused = 304,
    /// A topic is malformed or is not an IoT Hub topic of the expected kind.
    TopicInvalid = 305,
    /// A property bag is malformed.
    PropertyBagInvalid = 306,
    /// The bounded in-flight queue is full.
    QueueFull = 307,

    /// An operating-system I/O error.
    Io = 400,
    /// The operation timed out.
    Timeout = 401,
    /// The host name could not be resolved.
    DnsFailed = 402,
    /// The TCP connection was refused or could not be established.
    ConnectFailed = 403,
    /// The peer closed the connection.
    ConnectionClosed = 404,
    /// The HTTP proxy refused the CONNECT tunnel (403 and other 4xx refusals; the message
    /// holds its status line). A proxy that cannot reach the hub (5xx, such as 502) is
    /// reported as `ConnectFailed`, which is retried.
    ProxyRefused = 405,
    /// The HTTP proxy needs credentials, or refused the ones given (407).
    ProxyAuthRequired = 406,
    /// The server did not accept the WebSocket upgrade as IoT Hub does: an HTTP refusal, no
    /// `mqtt` subprotocol, or a wrong `Sec-WebSocket-Accept`.
    WebsocketUpgradeFailed = 407,
    /// The server broke the WebSocket protocol (text or masked frames, a frame over the size
    /// limit, bad fragments or opcodes).
    WebsocketProtocol = 408,

    /// The PKCS#11 module file does not exist.
    Pkcs11ModuleNotFound = 500,
    /// The file is not a PKCS#11 module (not a shared library, no `C_GetFunctionList`, or its
    /// `C_Initialize` failed).
    Pkcs11ModuleInvalid = 501,
    /// A PKCS#11 URI (RFC 7512) is malformed or names an attribute tether does not know.
    Pkcs11UriInvalid = 502,
    /// No token matching the URI is present.
    Pkcs11TokenAbsent = 503,
    /// The token refused the PIN.
    Pkcs11PinIncorrect = 504,
    /// The token's user PIN is locked (too many wrong PINs): unlock it with the SO PIN.
    Pkcs11PinLocked = 505,
    /// No private key on the token matches the URI.
    Pkcs11KeyNotFound = 506,
    /// More than one private key (or token) matches the URI: add `id=` or `object=`.
    Pkcs11KeyAmbiguous = 507,
    /// The token holds no certificate for the key.
    Pkcs11CertNotFound = 508,
    /// The token lacks the signing mechanism the key needs (CKM_ECDSA, CKM_RSA_PKCS or
    /// CKM_RSA_PKCS_PSS).
    Pkcs11MechanismUnsupported = 509,
    /// The token failed during a session (removed, closed sessions, device error): retried
    /// at the next connection.
    Pkcs11TokenFailed = 510,
    /// This build of tether has no PKCS#11 support (the `pkcs11` feature, Linux only).
    Pkcs11Unavailable = 511,

    /// DPS or the hub refused to issue a certificate (a bad CSR, 400040; no pending request
    /// matches, 412001; or the registration failed): the message names the error code. Not
    /// retried; the current credential stays in force.
    CertIssuanceRefused = 600,
    /// DPS assigned the device to a hub that speaks MQTT v5 only (`connectionProfile`
    /// `mqttV5`); tether speaks MQTT 3.1.1.
    HubRequiresMqttV5 = 601,
}

// `Code::ALL`, `name()`, `c_name()`, `description()` and `from_u32()`, generated by build.rs
// from the enum above: the one table of result codes.
include!(concat!(env!("OUT_DIR"), "/result_codes.rs"));

impl Code {
    /// Whether this code belongs to the TLS area (policy, certificates, handshake).
    pub fn is_tls(self) -> bool {
        (100..200).contains(&(self as u32))
    }

    /// Whether this code belongs to the certificate part of the TLS area.
    pub fn is_certificate(self) -> bool {
        matches!(
            self,
            Code::CertExpired
                | Code::CertNotYetValid
                | Code::CertWrongHost
                | Code::CertUntrusted
                | Code::CertMalformed
                | Code::CertInvalid
                | Code::ClockNotSet
        )
    }
}

/// A failure: a stable code and a message that names the cause.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    code: Code,
    /// Fixed messages (hot paths such as a full queue) are borrowed: making them allocates
    /// nothing.
    message: std::borrow::Cow<'static, str>,
}

impl Error {
    /// An error with `code` and a message naming the cause.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error {
            code,
            message: std::borrow::Cow::Owned(message.into()),
        }
    }

    /// An error with a fixed message; allocates nothing (for paths taken at message rate).
    pub const fn fixed(code: Code, message: &'static str) -> Self {
        Error {
            code,
            message: std::borrow::Cow::Borrowed(message),
        }
    }

    /// The stable result code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message: what went wrong, in words a person can act on.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context: ` in front of its message.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            code: self.code,
            message: std::borrow::Cow::Owned(format!("{context}: {}", self.message)),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code.name())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The error of a PKCS#11 call in a build without PKCS#11 support.
pub fn pkcs11_unavailable() -> Error {
    Error::new(
        Code::Pkcs11Unavailable,
        "this build of tether has no PKCS#11 support (the `pkcs11` cargo feature, Linux only)",
    )
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_sorted_and_named_for_their_value() {
        let mut last = None;
        for &code in Code::ALL {
            let value = code as u32;
            if let Some(prev) = last {
                assert!(value > prev, "{} is out of order", code.name());
            }
            last = Some(value);
            assert!(code.name().starts_with("TETHER_RESULT_"));
        }
        assert_eq!(Code::ALL.len(), 64);
    }

    #[test]
    fn the_generated_table_round_trips_every_code() {
        for &code in Code::ALL {
            assert_eq!(Code::from_u32(code as u32), Some(code));
            assert_eq!(code.c_name().to_str().unwrap(), code.name());
            assert!(!code.description().is_empty(), "{}", code.name());
        }
        assert_eq!(Code::from_u32(9), None);
        assert_eq!(
            Code::Pkcs11ModuleNotFound.name(),
            "TETHER_RESULT_PKCS11_MODULE_NOT_FOUND"
        );
        assert_eq!(
            Code::BufferTooSmall.description(),
            "The output buffer is too small; `*out_len` holds the size needed (without the NUL)."
        );
    }

    #[test]
    fn code_values_are_stable() {
        assert_eq!(Code::BufferTooSmall as u32, 4);
        assert_eq!(Code::Panic as u32, 5);
        assert_eq!(Code::TlsVersionRefused as u32, 100);
        assert_eq!(Code::CertExpired as u32, 102);
        assert_eq!(Code::SasKeyInvalid as u32, 200);
        assert_eq!(Code::MqttMalformed as u32, 300);
        assert_eq!(Code::Io as u32, 400);
        assert_eq!(Code::CertIssuanceRefused as u32, 600);
        assert_eq!(Code::HubRequiresMqttV5 as u32, 601);
    }

    #[test]
    fn context_keeps_code_and_prefixes_message() {
        let e = Error::new(Code::CertMalformed, "no certificate found").context("ca.pem");
        assert_eq!(e.code(), Code::CertMalformed);
        assert_eq!(e.message(), "ca.pem: no certificate found");
    }
}
