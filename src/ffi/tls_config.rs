//! The TLS policy for C: `tether_tls_config_builder` -> `tether_tls_config`.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use rustls::pki_types::UnixTime;
use rustls::time_provider::TimeProvider;
use rustls::ClientConfig;

use crate::ffi::handles::{free_handle, handle_mut, handle_ref, into_handle};
use crate::ffi::panic::{guard, guard_value};
use crate::ffi::{bytes_arg, out_arg, text_arg, text_out};
use crate::handshake;
use crate::policy::TlsPolicy;
use crate::Code;

/// No embedded roots: only CAs added with `tether_tls_config_builder_add_ca*` are trusted.
pub const TETHER_ROOTS_NONE: u32 = 0;
/// DigiCert Global Root G2 and Microsoft RSA Root CA 2017 (the default).
pub const TETHER_ROOTS_RSA: u32 = 1;
/// DigiCert Global Root G3 and Microsoft ECC Root CA 2017; also offers the ECDHE-ECDSA suites.
pub const TETHER_ROOTS_ECC: u32 = 2;

/// A TLS policy under construction. Create with `tether_tls_config_builder_new`, free with
/// `tether_tls_config_builder_free`. Not thread-safe: use from one thread at a time.
pub struct tether_tls_config_builder {
    pub(crate) policy: TlsPolicy,
}

/// A finished, immutable TLS configuration following the IoT Hub policy. Under the hood this
/// holds an `Arc<rustls::ClientConfig>`. Safe to share between threads for reading. Free with
/// `tether_tls_config_free`.
pub struct tether_tls_config {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) has_client_cert: bool,
    pub(crate) client_cert_not_after: Option<i64>,
    /// The policy it was built from (a renewed certificate replaces its client key).
    pub(crate) policy: TlsPolicy,
}

/// A wall clock supplied by the application: returns the current time as Unix milliseconds
/// (UTC), read from an RTC, GNSS or the OS. `context` is the pointer given with it. Called on
/// the threads that use the configuration (certificate checks, SAS tokens), so it must be
/// safe to call from each of them; it must not call back into tether.
pub type tether_wall_clock = Option<unsafe extern "C" fn(context: *mut c_void) -> u64>;

/// A wall clock read through a C callback.
struct CallbackClock {
    clock: unsafe extern "C" fn(*mut c_void) -> u64,
    context: *mut c_void,
}

// SAFETY: the contract of `tether_tls_config_builder_set_clock` makes the callback and its
// context callable from every thread that uses the configuration.
unsafe impl Send for CallbackClock {}
// SAFETY: as above.
unsafe impl Sync for CallbackClock {}

impl std::fmt::Debug for CallbackClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackClock")
    }
}

impl TimeProvider for CallbackClock {
    fn current_time(&self) -> Option<UnixTime> {
        // SAFETY: the callback and its context per the contract of `_set_clock`.
        let ms = unsafe { (self.clock)(self.context) };
        Some(UnixTime::since_unix_epoch(
            std::time::Duration::from_millis(ms),
        ))
    }
}

impl tether_tls_config_builder {
    /// Sets the wall clock (default: the OS clock, `CLOCK_REALTIME`): used for certificate
    /// validity and, by every session using the configuration, for SAS token expiry and
    /// renewal. Session timers (keep-alive, CONNACK, PINGRESP) never read it: they run on the
    /// monotonic time the caller feeds. `clock` NULL restores the OS clock. See
    /// `tether_wall_clock` for the callback's contract.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT` (`builder`).
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_set_clock(
        builder: *mut tether_tls_config_builder,
        clock: tether_wall_clock,
        context: *mut c_void,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live builder.
            let builder = unsafe { handle_mut(builder, "builder") }?;
            let clock: Arc<dyn TimeProvider> = match clock {
                Some(clock) => Arc::new(CallbackClock { clock, context }),
                None => Arc::new(rustls::time_provider::DefaultTimeProvider),
            };
            builder.policy.set_clock(clock);
            Ok(())
        })
    }

    /// Enables (true, the default) or disables TLS session resumption: an abbreviated
    /// handshake when a connection resumes a session an earlier connection made with the
    /// same configuration. Sessions sharing one SAS configuration (a gateway's leaf
    /// identities) resume each other's sessions: the identity is in the MQTT CONNECT, not in
    /// TLS. A configuration with a client certificate is one X.509 identity, so its
    /// sessions are never resumed by another identity.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_enable_resumption(
        builder: *mut tether_tls_config_builder,
        enable: bool,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live builder.
            unsafe { handle_mut(builder, "builder") }?
                .policy
                .enable_resumption(enable);
            Ok(())
        })
    }

    /// Creates a builder with the IoT Hub defaults: TLS 1.2 only; suites
    /// TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 and TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384; trust
    /// anchors DigiCert Global Root G2 and Microsoft RSA Root CA 2017; SNI and host name
    /// verification always on (there is no way to turn verification off); no client
    /// certificate.
    ///
    /// Returns a new builder owned by the caller (free it with
    /// `tether_tls_config_builder_free`), or NULL if it could not be created (see
    /// `tether_last_error`).
    #[no_mangle]
    pub extern "C" fn tether_tls_config_builder_new() -> *mut tether_tls_config_builder {
        guard_value(std::ptr::null_mut(), || {
            Ok(into_handle(tether_tls_config_builder {
                policy: TlsPolicy::new(),
            }))
        })
    }

    /// Frees a builder. NULL is a no-op. The builder must not be used afterwards; configs
    /// built from it stay valid.
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_free(
        builder: *mut tether_tls_config_builder,
    ) {
        guard_value((), || {
            // SAFETY: NULL or a live builder, per the contract.
            unsafe { free_handle(builder) };
            Ok(())
        })
    }

    /// Enables (true) or disables (false, the default) TLS 1.3 in addition to TLS 1.2. IoT Hub
    /// offers TLS 1.3 only on its `{hub}.device.azure-devices.net` preview endpoints.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_enable_tls13(
        builder: *mut tether_tls_config_builder,
        enable: bool,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live builder.
            unsafe { handle_mut(builder, "builder") }?
                .policy
                .enable_tls13(enable);
            Ok(())
        })
    }

    /// Selects which embedded roots are trusted: a bit set of `TETHER_ROOTS_RSA` (default),
    /// `TETHER_ROOTS_ECC`, or `TETHER_ROOTS_NONE` to trust only CAs you add.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_INVALID_ARGUMENT` (unknown bits).
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_set_embedded_roots(
        builder: *mut tether_tls_config_builder,
        roots: u32,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live builder.
            let builder = unsafe { handle_mut(builder, "builder") }?;
            builder.policy.set_embedded_roots(roots)?;
            Ok(())
        })
    }

    /// Also offers the ECDHE-ECDSA AES-GCM suites (for a server with an ECC certificate, for
    /// example a local test broker). Implied by `TETHER_ROOTS_ECC`.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_enable_ecdsa_suites(
        builder: *mut tether_tls_config_builder,
        enable: bool,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live builder.
            unsafe { handle_mut(builder, "builder") }?
                .policy
                .enable_ecdsa_suites(enable);
            Ok(())
        })
    }

    /// Trusts the CA certificates in `ca` (`ca_len` bytes): PEM with one or more
    /// certificates, or DER. Added to the embedded roots (see
    /// `tether_tls_config_builder_set_embedded_roots` to replace them). The bytes are copied.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_CERT_MALFORMED`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_add_ca(
        builder: *mut tether_tls_config_builder,
        ca: *const u8,
        ca_len: usize,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live builder; `ca` valid for `ca_len` bytes.
            let builder = unsafe { handle_mut(builder, "builder") }?;
            let ca = unsafe { bytes_arg(ca, ca_len, "ca") }?;
            builder.policy.add_ca(ca)?;
            Ok(())
        })
    }

    /// Trusts the CA certificates in the PEM or DER file at `path` (NUL-terminated UTF-8).
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
    /// `TETHER_RESULT_FILE_NOT_READABLE`, `TETHER_RESULT_CERT_MALFORMED`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_add_ca_file(
        builder: *mut tether_tls_config_builder,
        path: *const c_char,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live builder; `path` NULL or NUL-terminated.
            let builder = unsafe { handle_mut(builder, "builder") }?;
            let path = unsafe { text_arg(path, "path") }?;
            builder.policy.add_ca_file(path)?;
            Ok(())
        })
    }

    /// Authenticates the device with a client certificate (mutual TLS). `chain` holds the
    /// leaf certificate first, then any intermediates (PEM, or DER certificates back to
    /// back); `key` is its private key (PEM or DER; PKCS#8, SEC1 or PKCS#1). The caller may
    /// wipe its copy after the call. tether makes no copy of a DER key and wipes the buffer
    /// it decodes a PEM key into; the parsed key then lives inside ring's key pair until the
    /// configuration is freed, and ring frees it without wiping (a dependency's copy tether
    /// cannot reach; use `tether_tls_config_builder_set_client_signer` to keep the key out
    /// of process memory).
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_CERT_MALFORMED`, `TETHER_RESULT_PRIVATE_KEY_MALFORMED`,
    /// `TETHER_RESULT_KEY_CERT_MISMATCH`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_set_client_cert(
        builder: *mut tether_tls_config_builder,
        chain: *const u8,
        chain_len: usize,
        key: *const u8,
        key_len: usize,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live builder; buffers valid for their lengths.
            let builder = unsafe { handle_mut(builder, "builder") }?;
            let chain = unsafe { bytes_arg(chain, chain_len, "chain") }?;
            let key = unsafe { bytes_arg(key, key_len, "key") }?;
            builder.policy.set_client_cert(chain, key)?;
            Ok(())
        })
    }

    /// As `tether_tls_config_builder_set_client_cert`, reading the chain and key from files.
    ///
    /// Results: as `tether_tls_config_builder_set_client_cert`, plus
    /// `TETHER_RESULT_INVALID_UTF8` and `TETHER_RESULT_FILE_NOT_READABLE`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_set_client_cert_files(
        builder: *mut tether_tls_config_builder,
        chain_path: *const c_char,
        key_path: *const c_char,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live builder; paths NULL or NUL-terminated.
            let builder = unsafe { handle_mut(builder, "builder") }?;
            let chain_path = unsafe { text_arg(chain_path, "chain_path") }?;
            let key_path = unsafe { text_arg(key_path, "key_path") }?;
            builder.policy.set_client_cert_files(chain_path, key_path)?;
            Ok(())
        })
    }

    /// Builds an immutable configuration from the builder. The builder is not consumed: it
    /// stays owned by the caller (free it with `tether_tls_config_builder_free`) and can
    /// build again.
    ///
    /// On success `*config_out` receives a new configuration owned by the caller (free it
    /// with `tether_tls_config_free`); on failure it is not written.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`,
    /// `TETHER_RESULT_INVALID_ARGUMENT` (no trust anchor), `TETHER_RESULT_CERT_INVALID`.
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_builder_build(
        builder: *const tether_tls_config_builder,
        config_out: *mut *mut tether_tls_config,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live builder; `config_out` NULL or writable.
            let builder = unsafe { handle_ref(builder, "builder") }?;
            let out = unsafe { out_arg(config_out, "config_out") }?;
            let config = builder.policy.build()?;
            *out = into_handle(tether_tls_config {
                config,
                has_client_cert: builder.policy.has_client_cert(),
                client_cert_not_after: builder.policy.client_cert_not_after(),
                policy: builder.policy.clone(),
            });
            Ok(())
        })
    }
}

impl tether_tls_config {
    /// Frees a configuration. NULL is a no-op. Connections already created from it (through
    /// rustls-ffi) keep their own reference and stay valid.
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_free(config: *mut tether_tls_config) {
        guard_value((), || {
            // SAFETY: NULL or a live config, per the contract.
            unsafe { free_handle(config) };
            Ok(())
        })
    }

    /// Connects to `host:port` over TCP, completes a TLS handshake under this configuration
    /// and closes the connection: the one-call answer to "can this device reach that server
    /// under the IoT Hub policy?". Blocks the calling thread for up to about `timeout_ms`
    /// per step (resolve, connect, handshake).
    ///
    /// On success `report` receives a NUL-terminated line such as
    /// `TLSv1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` and `*report_len` its length.
    /// On a refusal the result names the cause (for example
    /// `TETHER_RESULT_TLS_VERSION_REFUSED`, `TETHER_RESULT_CERT_EXPIRED`,
    /// `TETHER_RESULT_CERT_WRONG_HOST`) and `tether_last_error` gives the details.
    ///
    /// Results: `TETHER_RESULT_OK`; `TETHER_RESULT_NULL_ARGUMENT`, `TETHER_RESULT_INVALID_UTF8`,
    /// `TETHER_RESULT_INVALID_ARGUMENT` (port 0 or timeout 0); `TETHER_RESULT_BUFFER_TOO_SMALL`
    /// (`*report_len` = length needed); any TLS (100-199) or I/O (400-499) result.
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_check(
        config: *const tether_tls_config,
        host: *const c_char,
        port: u16,
        timeout_ms: u32,
        report: *mut c_char,
        report_cap: usize,
        report_len: *mut usize,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live config; `host` NULL or NUL-terminated; buffer contract.
            let config = unsafe { handle_ref(config, "config") }?;
            let host = unsafe { text_arg(host, "host") }?;
            let report =
                unsafe { text_out(report, report_cap, report_len, "report", "report_len") }?;
            if port == 0 || timeout_ms == 0 {
                return Err(crate::Error::new(
                    Code::InvalidArgument,
                    "port and timeout_ms must not be 0",
                ));
            }
            let negotiated = handshake::check(
                host,
                port,
                config.config.clone(),
                config.has_client_cert,
                std::time::Duration::from_millis(timeout_ms.into()),
            )?;
            report.write(&format!("{} {}", negotiated.version, negotiated.suite))
        })
    }

    /// Hands out the configuration as a rustls-ffi `rustls_client_config`, so a stack with
    /// its own socket loop can use rustls-ffi's connection API (`rustls_client_connection_new`
    /// and friends) under the IoT Hub policy.
    ///
    /// Declared only when `rustls.h` (installed beside this header) is included before
    /// `tether.h`. On success `*rustls_config_out` receives a new reference owned by the
    /// caller: release it with `rustls_client_config_free`. It stays valid after
    /// `tether_tls_config_free`. On failure it is not written.
    ///
    /// Results: `TETHER_RESULT_OK`, `TETHER_RESULT_NULL_ARGUMENT`.
    #[cfg(feature = "rustls-ffi")]
    #[no_mangle]
    pub unsafe extern "C" fn tether_tls_config_rustls(
        config: *const tether_tls_config,
        rustls_config_out: *mut *const rustls_ffi::client::rustls_client_config,
    ) -> Code {
        guard(|| {
            // SAFETY: NULL or a live config; the out pointer NULL or writable.
            let config = unsafe { handle_ref(config, "config") }?;
            let out = unsafe { out_arg(rustls_config_out, "rustls_config_out") }?;
            // rustls-ffi documents rustls_client_config as an Arc<ClientConfig> handed out
            // with Arc::into_raw; rustls_client_config_free takes it back with Arc::from_raw.
            *out = Arc::into_raw(config.config.clone()).cast();
            Ok(())
        })
    }
}

/// The configuration behind `tls`, or the IoT Hub defaults for NULL, with whether it
/// carries a client certificate and when that certificate expires.
///
/// # Safety
/// `tls` is NULL or a live `tether_tls_config`.
pub(crate) unsafe fn tls_or_default(
    tls: *const tether_tls_config,
) -> crate::Result<(Arc<ClientConfig>, bool, Option<i64>)> {
    // SAFETY: per the contract.
    Ok(match unsafe { crate::ffi::opt_in_arg(tls, "tls") }? {
        Some(tls) => (
            tls.config.clone(),
            tls.has_client_cert,
            tls.client_cert_not_after,
        ),
        None => (TlsPolicy::new().build()?, false, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::roots;

    #[test]
    fn root_constants_match_the_policy() {
        assert_eq!(TETHER_ROOTS_NONE, roots::NONE);
        assert_eq!(TETHER_ROOTS_RSA, roots::RSA);
        assert_eq!(TETHER_ROOTS_ECC, roots::ECC);
    }

    #[test]
    fn builder_checks_its_arguments_and_builds() {
        unsafe {
            let b = tether_tls_config_builder::tether_tls_config_builder_new();
            assert!(!b.is_null());
            assert_eq!(
                tether_tls_config_builder::tether_tls_config_builder_add_ca(b, std::ptr::null(), 4),
                Code::NullArgument
            );
            assert_eq!(
                tether_tls_config_builder::tether_tls_config_builder_add_ca(b, b"junk".as_ptr(), 4),
                Code::CertMalformed
            );
            let mut config = std::ptr::null_mut();
            assert_eq!(
                tether_tls_config_builder::tether_tls_config_builder_build(b, &mut config),
                Code::Ok
            );
            assert!(!config.is_null());
            tether_tls_config::tether_tls_config_free(config);
            tether_tls_config_builder::tether_tls_config_builder_free(b);
            tether_tls_config_builder::tether_tls_config_builder_free(std::ptr::null_mut());
        }
    }
}
