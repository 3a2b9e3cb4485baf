//! The IoT Hub TLS policy, as a rustls `ClientConfig` on the ring provider.
//!
//! What the policy guarantees, by construction:
//! - TLS 1.2 only, unless TLS 1.3 is explicitly enabled;
//! - the hub's ECDHE-RSA AES-GCM suites (plus the ECDHE-ECDSA pair for ECC hubs), nothing
//!   weaker: no RSA key exchange, no CBC, no TLS 1.0/1.1;
//! - SNI always sent and the host name always verified, against the embedded IoT Hub roots
//!   or CAs the caller supplies. There is no way to switch verification off: a test CA is
//!   added, never an "insecure mode".

use std::sync::Arc;

use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, RootCertStore, SupportedCipherSuite};
use zeroize::{Zeroize, Zeroizing};

use crate::cert::CertFacts;
use crate::error::{Code, Error, Result};
use crate::verify::PolicyVerifier;

/// DigiCert Global Root G2: the root IoT Hub's RSA server certificates chain to.
pub const DIGICERT_GLOBAL_ROOT_G2: &[u8] = include_bytes!("roots/DigiCert_Global_Root_G2.der");
/// Microsoft RSA Root CA 2017: trusted for an emergency root migration.
pub const MICROSOFT_RSA_ROOT_CA_2017: &[u8] =
    include_bytes!("roots/Microsoft_RSA_Root_Certificate_Authority_2017.der");
/// DigiCert Global Root G3: for hubs with an ECC server certificate.
pub const DIGICERT_GLOBAL_ROOT_G3: &[u8] = include_bytes!("roots/DigiCert_Global_Root_G3.der");
/// Microsoft ECC Root CA 2017: ECC counterpart of the Microsoft RSA root.
pub const MICROSOFT_ECC_ROOT_CA_2017: &[u8] =
    include_bytes!("roots/Microsoft_ECC_Root_Certificate_Authority_2017.der");

/// Which embedded root sets to trust (a bit set).
pub mod roots {
    /// No embedded roots: only CAs added by the caller are trusted.
    pub const NONE: u32 = 0;
    /// DigiCert Global Root G2 and Microsoft RSA Root CA 2017 (the default).
    pub const RSA: u32 = 1;
    /// DigiCert Global Root G3 and Microsoft ECC Root CA 2017 (enables the ECDSA suites).
    pub const ECC: u32 = 2;
    /// Every bit that has a meaning.
    pub const ALL: u32 = RSA | ECC;
}

/// The TLS 1.2 suites IoT Hub accepts that rustls implements, RSA certificates.
const RSA_SUITES: [SupportedCipherSuite; 2] = [
    ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
];
/// The same for ECC server certificates.
const ECDSA_SUITES: [SupportedCipherSuite; 2] = [
    ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
];
/// TLS 1.3 suites offered when TLS 1.3 is opted into.
const TLS13_SUITES: [SupportedCipherSuite; 2] = [
    ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
];

/// A description of the TLS policy, turned into a rustls `ClientConfig` by [`TlsPolicy::build`].
#[derive(Clone)]
pub struct TlsPolicy {
    tls13: bool,
    roots: u32,
    ecdsa_suites: bool,
    extra_cas: Vec<CertificateDer<'static>>,
    client_key: Option<Arc<CertifiedKey>>,
    clock: Option<Arc<dyn TimeProvider>>,
    resumption: bool,
}

impl std::fmt::Debug for TlsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPolicy")
            .field("tls13", &self.tls13)
            .field("roots", &self.roots)
            .field("ecdsa_suites", &self.ecdsa_suites)
            .field("extra_cas", &self.extra_cas.len())
            .field("client_cert", &self.client_key.is_some())
            .field("resumption", &self.resumption)
            .finish()
    }
}

impl Default for TlsPolicy {
    fn default() -> Self {
        TlsPolicy {
            tls13: false,
            roots: roots::RSA,
            ecdsa_suites: false,
            extra_cas: Vec::new(),
            client_key: None,
            clock: None,
            resumption: true,
        }
    }
}

impl TlsPolicy {
    /// The IoT Hub default: TLS 1.2, the RSA GCM suites, the embedded RSA roots.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also offer TLS 1.3 (IoT Hub's preview endpoints). Off by default.
    pub fn enable_tls13(&mut self, enable: bool) -> &mut Self {
        self.tls13 = enable;
        self
    }

    /// Selects the embedded root sets (a [`roots`] bit set). Selecting ECC also offers the
    /// ECDHE-ECDSA suites.
    pub fn set_embedded_roots(&mut self, set: u32) -> Result<&mut Self> {
        if set & !roots::ALL != 0 {
            return Err(Error::new(
                Code::InvalidArgument,
                format!("unknown root set bits 0x{:x}", set & !roots::ALL),
            ));
        }
        self.roots = set;
        Ok(self)
    }

    /// Offer the ECDHE-ECDSA GCM suites, for servers with an ECC certificate.
    pub fn enable_ecdsa_suites(&mut self, enable: bool) -> &mut Self {
        self.ecdsa_suites = enable;
        self
    }

    /// Trusts the CA certificates in `bytes` (PEM with one or more certificates, or one DER
    /// certificate) in addition to the embedded roots.
    pub fn add_ca(&mut self, bytes: &[u8]) -> Result<&mut Self> {
        let certs = load_certificates(bytes)?;
        for cert in &certs {
            CertFacts::from_der(cert)?;
        }
        self.extra_cas.extend(certs);
        Ok(self)
    }

    /// Reads CA certificates from a PEM or DER file; see [`TlsPolicy::add_ca`].
    pub fn add_ca_file(&mut self, path: &str) -> Result<&mut Self> {
        let bytes = read_file(path)?;
        self.add_ca(&bytes).map_err(|e| e.context(path))
    }

    /// Authenticates with a client certificate chain (leaf first) and its private key, each
    /// PEM or DER; the key may be PKCS#8, SEC1 (EC) or PKCS#1 (RSA).
    pub fn set_client_cert(&mut self, chain: &[u8], key: &[u8]) -> Result<&mut Self> {
        let chain = load_certificates(chain)?;
        self.client_key = Some(Arc::new(certified_key(chain, key)?));
        Ok(self)
    }

    /// Reads the client certificate chain and key from files; see [`TlsPolicy::set_client_cert`].
    pub fn set_client_cert_files(&mut self, chain_path: &str, key_path: &str) -> Result<&mut Self> {
        let chain = read_file(chain_path)?;
        let key = Zeroizing::new(read_file(key_path)?);
        load_certificates(&chain).map_err(|e| e.context(chain_path))?;
        self.set_client_cert(&chain, &key).map_err(|e| {
            if e.code() == Code::PrivateKeyMalformed {
                e.context(key_path)
            } else {
                e
            }
        })
    }

    /// Uses a certified key built elsewhere (for example one whose signer is a callback into
    /// a secure element).
    pub fn set_client_key(&mut self, key: Arc<CertifiedKey>) -> &mut Self {
        self.client_key = Some(key);
        self
    }

    /// Authenticates with a private key held by a PKCS#11 token (HSM, TPM, secure element)
    /// and the certificate stored beside it on the token: `module` is the token's PKCS#11
    /// module (`None`: the URI's `module-path`), `uri` an RFC 7512 URI naming the key
    /// (`pkcs11:token=...;object=...;id=...`). The key never leaves the token. See
    /// [`crate::auth::pkcs11`].
    #[cfg(all(feature = "pkcs11", target_os = "linux"))]
    pub fn set_client_pkcs11(
        &mut self,
        module: Option<&str>,
        uri: &str,
        pin: crate::auth::pkcs11::Pin,
    ) -> Result<&mut Self> {
        let key = crate::auth::pkcs11::TokenSigner::certified_key(module, uri, pin)?;
        self.client_key = Some(Arc::new(key));
        Ok(self)
    }

    /// When the client certificate (the leaf) expires, Unix seconds, if one is configured.
    pub fn client_cert_not_after(&self) -> Option<i64> {
        let key = self.client_key.as_ref()?;
        let leaf = key.cert.first()?;
        CertFacts::from_der(leaf).ok().map(|facts| facts.not_after)
    }

    /// Whether a client certificate is configured.
    pub fn has_client_cert(&self) -> bool {
        self.client_key.is_some()
    }

    /// The wall clock (default: the OS clock): certificate validity, and the SAS tokens,
    /// their renewal and the certificate expiry warnings of every session that uses the
    /// configuration. Timers (keep-alive, CONNACK, PINGRESP, back-off) do not read it: they
    /// run on the monotonic time the session is fed.
    pub fn set_clock(&mut self, clock: Arc<dyn TimeProvider>) -> &mut Self {
        self.clock = Some(clock);
        self
    }

    /// TLS session resumption: an abbreviated handshake (no certificate chain, no key
    /// exchange signature) when a connection resumes a session that an earlier connection
    /// made with the same built configuration. On by default.
    ///
    /// Across identities: sessions are kept per built configuration (rustls' in-memory
    /// store, and rustls resumes only under the same verifier and client-certificate
    /// resolver). So a gateway that shares one SAS configuration among its leaf identities
    /// resumes across them, which is sound: a SAS identity is in the MQTT CONNECT, not in
    /// TLS. An X.509 identity has a configuration of its own (its certificate), so its
    /// sessions are never resumed by another identity. `false` makes every handshake full.
    pub fn enable_resumption(&mut self, enable: bool) -> &mut Self {
        self.resumption = enable;
        self
    }

    /// The cipher suites this policy offers, in preference order.
    pub fn suites(&self) -> Vec<SupportedCipherSuite> {
        let mut suites = Vec::new();
        if self.tls13 {
            suites.extend(TLS13_SUITES);
        }
        if self.ecdsa_suites || self.roots & roots::ECC != 0 {
            suites.extend(ECDSA_SUITES);
        }
        suites.extend(RSA_SUITES);
        suites
    }

    /// The protocol versions this policy allows: TLS 1.2, and TLS 1.3 when opted into.
    pub fn protocol_versions(&self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        static TLS13_AND_12: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        if self.tls13 {
            &TLS13_AND_12
        } else {
            &TLS12_ONLY
        }
    }

    /// The trust anchors: embedded roots selected plus CAs added, as DER.
    pub fn trust_anchors(&self) -> Vec<CertificateDer<'static>> {
        let mut anchors = Vec::new();
        if self.roots & roots::RSA != 0 {
            anchors.push(CertificateDer::from(DIGICERT_GLOBAL_ROOT_G2));
            anchors.push(CertificateDer::from(MICROSOFT_RSA_ROOT_CA_2017));
        }
        if self.roots & roots::ECC != 0 {
            anchors.push(CertificateDer::from(DIGICERT_GLOBAL_ROOT_G3));
            anchors.push(CertificateDer::from(MICROSOFT_ECC_ROOT_CA_2017));
        }
        anchors.extend(self.extra_cas.iter().cloned());
        anchors
    }

    /// Builds the rustls configuration.
    pub fn build(&self) -> Result<Arc<ClientConfig>> {
        let anchors = self.trust_anchors();
        if anchors.is_empty() {
            return Err(Error::new(
                Code::InvalidArgument,
                "no trust anchors: select embedded roots or add a CA certificate",
            ));
        }
        let mut store = RootCertStore::empty();
        for anchor in &anchors {
            store.add(anchor.clone()).map_err(|e| {
                Error::new(
                    Code::CertInvalid,
                    format!("CA certificate cannot be used as a trust anchor: {e}"),
                )
            })?;
        }
        let provider = Arc::new(provider(self.suites()));
        let versions = self.protocol_versions();
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
            .build()
            .map_err(|e| Error::new(Code::CertInvalid, format!("trust store: {e}")))?;
        let verifier = Arc::new(PolicyVerifier::new(webpki, &anchors));
        let builder = match &self.clock {
            Some(clock) => ClientConfig::builder_with_details(provider, clock.clone()),
            None => ClientConfig::builder_with_provider(provider),
        };
        let builder = builder
            .with_protocol_versions(versions)
            .map_err(|e| Error::new(Code::InvalidArgument, format!("TLS versions: {e}")))?
            .dangerous() // a custom verifier that delegates to webpki and adds diagnostics
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client_key {
            Some(key) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
                CertifiedKey::clone(key),
            ))),
            None => builder.with_no_client_auth(),
        };
        config.enable_sni = true;
        if !self.resumption {
            config.resumption = Resumption::disabled();
        }
        Ok(Arc::new(config))
    }
}

/// The ring provider restricted to `suites`.
fn provider(suites: Vec<SupportedCipherSuite>) -> CryptoProvider {
    CryptoProvider {
        cipher_suites: suites,
        ..ring::default_provider()
    }
}

/// Reads a whole file, with an error that names it.
#[doc(hidden)] // re-exported by `tether::internal`
pub fn read_file(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::new(Code::FileNotReadable, format!("cannot read {path}: {e}")))
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Loads certificates from PEM (one or more `CERTIFICATE` blocks) or from one DER certificate.
pub fn load_certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    if bytes.is_empty() {
        return Err(Error::new(
            Code::CertMalformed,
            "certificate input is empty",
        ));
    }
    if looks_like_pem(bytes) {
        let certs = CertificateDer::pem_slice_iter(bytes)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::new(Code::CertMalformed, format!("malformed PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::new(
                Code::CertMalformed,
                "PEM input holds no CERTIFICATE block",
            ));
        }
        for cert in &certs {
            CertFacts::from_der(cert)?;
        }
        Ok(certs)
    } else {
        // A DER file may hold a chain of certificates back to back.
        let mut certs = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let len = der_element_len(rest).ok_or_else(|| {
                Error::new(
                    Code::CertMalformed,
                    "input is neither PEM nor a DER certificate",
                )
            })?;
            let (one, tail) = rest.split_at(len);
            CertFacts::from_der(one)?;
            certs.push(CertificateDer::from(one.to_vec()));
            rest = tail;
        }
        Ok(certs)
    }
}

/// Length of the first DER element (SEQUENCE) in `bytes`, if it is complete.
fn der_element_len(bytes: &[u8]) -> Option<usize> {
    let (header, len) = der_header(bytes)?;
    let total = header.checked_add(len)?;
    (total <= bytes.len()).then_some(total)
}

/// The header length and content length of a DER SEQUENCE at the start of `bytes`.
fn der_header(bytes: &[u8]) -> Option<(usize, usize)> {
    if bytes.len() < 2 || bytes[0] != 0x30 {
        return None;
    }
    let first = bytes[1] as usize;
    if first < 0x80 {
        return Some((2, first));
    }
    let n = first & 0x7f;
    if n == 0 || n > 4 || bytes.len() < 2 + n {
        return None;
    }
    let len = bytes[2..2 + n]
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | b as usize);
    Some((2 + n, len))
}

/// Loads a private key from PEM (PKCS#8, SEC1 or PKCS#1) or DER (any of the three) into a
/// signing key.
///
/// Wiping: DER input is read in place (no copy); PEM input is decoded into a buffer wiped
/// here. The key then lives inside ring's key pair (held by the returned key, and by any
/// configuration built from it), which ring frees without wiping: see docs/c-abi-contract.md.
pub fn load_signing_key(bytes: &[u8]) -> Result<Arc<dyn SigningKey>> {
    with_private_key_der(bytes, load_signing_key_der)
}

/// Loads and checks a private key as [`load_signing_key`] does, and returns an owned copy of
/// its DER (for a server configuration, in tests and tools): the caller owns that copy and
/// should zeroize it. Device code uses [`load_signing_key`], which makes no copy.
pub fn load_private_key(bytes: &[u8]) -> Result<PrivateKeyDer<'static>> {
    with_private_key_der(bytes, |key| {
        load_signing_key_der(key)?;
        Ok(key.clone_key())
    })
}

fn load_signing_key_der(key: &PrivateKeyDer<'_>) -> Result<Arc<dyn SigningKey>> {
    ring::sign::any_supported_type(key).map_err(|e| {
        Error::new(
            Code::PrivateKeyMalformed,
            format!("private key is not usable: {e}"),
        )
    })
}

/// Runs `use_key` on the DER private key in `bytes` (PEM or DER), wiping any decoded copy.
fn with_private_key_der<R>(
    bytes: &[u8],
    use_key: impl FnOnce(&PrivateKeyDer<'_>) -> Result<R>,
) -> Result<R> {
    if bytes.is_empty() {
        return Err(Error::new(
            Code::PrivateKeyMalformed,
            "private key input is empty",
        ));
    }
    if looks_like_pem(bytes) {
        if bytes.windows(20).any(|w| w == b"-----BEGIN ENCRYPTED") {
            return Err(Error::new(
                Code::PrivateKeyMalformed,
                "private key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)",
            ));
        }
        let mut key = PrivateKeyDer::from_pem_slice(bytes).map_err(|_| {
            Error::new(
                Code::PrivateKeyMalformed,
                "PEM input holds no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block",
            )
        })?;
        let result = use_key(&key);
        key.zeroize();
        return result;
    }
    let key = der_private_key(bytes).ok_or_else(|| {
        Error::new(
            Code::PrivateKeyMalformed,
            "private key is neither PEM nor a DER PKCS#8, SEC1 or PKCS#1 key",
        )
    })?;
    use_key(&key)
}

/// A certified key from a chain and a private key in any form [`load_signing_key`] reads:
/// `KeyCertMismatch` when the key is not the certificate's.
pub fn certified_key(chain: Vec<CertificateDer<'static>>, key: &[u8]) -> Result<CertifiedKey> {
    let certified = CertifiedKey::new(chain, load_signing_key(key)?);
    certified.keys_match().map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => Error::new(
            Code::KeyCertMismatch,
            "the private key does not match the client certificate",
        ),
        other => Error::new(
            Code::PrivateKeyMalformed,
            format!("private key is not usable: {other}"),
        ),
    })?;
    Ok(certified)
}

/// Tells a DER private key's form by its structure, borrowing `bytes` (no copy to wipe):
/// PKCS#8 is `SEQUENCE { INTEGER 0|1, SEQUENCE ...}`, PKCS#1 `SEQUENCE { INTEGER 0,
/// INTEGER ...}`, SEC1 `SEQUENCE { INTEGER 1, OCTET STRING ...}`.
fn der_private_key(bytes: &[u8]) -> Option<PrivateKeyDer<'_>> {
    let (header, len) = der_header(bytes)?;
    if header + len != bytes.len() {
        return None;
    }
    match bytes.get(header..header + 4)? {
        [0x02, 0x01, 0 | 1, 0x30] => Some(PrivateKeyDer::Pkcs8(bytes.into())),
        [0x02, 0x01, 0, 0x02] => Some(PrivateKeyDer::Pkcs1(bytes.into())),
        [0x02, 0x01, 1, 0x04] => Some(PrivateKeyDer::Sec1(bytes.into())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite_names(policy: &TlsPolicy) -> Vec<String> {
        policy
            .suites()
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect()
    }

    #[test]
    fn default_policy_offers_only_the_hub_rsa_gcm_suites_on_tls12() {
        let policy = TlsPolicy::new();
        assert_eq!(
            suite_names(&policy),
            [
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
            ]
        );
        assert_eq!(policy.protocol_versions(), [&rustls::version::TLS12]);
        assert!(policy.build().unwrap().enable_sni);
    }

    #[test]
    fn tls13_is_opt_in_and_ecc_roots_add_ecdsa_suites() {
        let mut policy = TlsPolicy::new();
        policy.enable_tls13(true);
        policy.set_embedded_roots(roots::ALL).unwrap();
        let names = suite_names(&policy);
        assert_eq!(names.len(), 6);
        assert!(names.contains(&"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".to_string()));
        assert_eq!(policy.protocol_versions().len(), 2);
        policy.build().unwrap();
    }

    #[test]
    fn no_trust_anchor_is_an_error() {
        let mut policy = TlsPolicy::new();
        policy.set_embedded_roots(roots::NONE).unwrap();
        assert_eq!(policy.build().unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(
            policy.set_embedded_roots(8).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn ca_input_is_parsed_from_der_or_pem_and_garbage_is_refused() {
        let mut policy = TlsPolicy::new();
        policy.add_ca(DIGICERT_GLOBAL_ROOT_G3).unwrap();
        assert_eq!(policy.trust_anchors().len(), 3);
        let err = policy.add_ca(b"hello").unwrap_err();
        assert_eq!(err.code(), Code::CertMalformed);
        let err = policy
            .add_ca(b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert_eq!(err.code(), Code::CertMalformed);
        assert_eq!(policy.add_ca(b"").unwrap_err().code(), Code::CertMalformed);
        assert_eq!(
            policy
                .add_ca_file("/nonexistent/ca.pem")
                .unwrap_err()
                .code(),
            Code::FileNotReadable
        );
    }

    #[test]
    fn key_input_errors_name_the_problem() {
        assert_eq!(
            load_signing_key(b"").unwrap_err().code(),
            Code::PrivateKeyMalformed
        );
        assert_eq!(
            load_signing_key(&[0x30, 0x03, 0x02, 0x01, 0x00])
                .unwrap_err()
                .code(),
            Code::PrivateKeyMalformed
        );
        let enc = load_signing_key(
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(enc.message().contains("encrypted"), "{enc:?}");
    }
}
