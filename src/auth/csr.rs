//! Keys and certificate signing requests for certificates issued by DPS or the hub, and the
//! checks an issued chain must pass before it replaces the credential in force.
//!
//! - [`DeviceKey`]: a fresh P-256 key made with ring (its PKCS#8 is wiped when dropped), or
//!   a key held elsewhere (a signing callback, a PKCS#11 token) that the library never sees;
//! - [`DeviceKey::csr_der`]: a PKCS#10 request built by rcgen, CN = the registration id or
//!   device id, signed by that key;
//! - [`verify_issued`]: the chain DPS or the hub returned matches the CSR's key, is valid
//!   now, and chains to a trusted root; otherwise a named error, and the caller keeps the
//!   credential it has.

use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use zeroize::Zeroizing;

use crate::auth::x509::{spki_key, DeviceCertificate, ExternalSigner};
use crate::cert::{format_utc, CertFacts};
use crate::error::{Code, Error, Result};

/// Most certificates accepted in an issued chain (leaf first), as the Azure IoT SDKs do.
pub const MAX_ISSUED_CHAIN: usize = 3;

/// A device key for a CSR: made here, or held by a signer.
pub struct DeviceKey {
    inner: Inner,
}

enum Inner {
    Software {
        pkcs8: Zeroizing<Vec<u8>>,
        pair: Box<EcdsaKeyPair>,
    },
    External {
        signer: Arc<dyn ExternalSigner>,
        /// The uncompressed P-256 point.
        public: Vec<u8>,
    },
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Software { .. } => "software P-256",
            Inner::External { .. } => "external P-256",
        };
        f.debug_struct("DeviceKey").field("kind", &kind).finish()
    }
}

fn key_error(e: impl std::fmt::Display) -> Error {
    Error::new(
        Code::PrivateKeyMalformed,
        format!("the device key is not a P-256 PKCS#8 key: {e}"),
    )
}

impl DeviceKey {
    /// A fresh P-256 key from the operating system's random source.
    pub fn generate() -> Result<DeviceKey> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| Error::new(Code::Io, "the system random source failed"))?;
        DeviceKey::from_pkcs8(pkcs8.as_ref())
    }

    /// A P-256 key from its PKCS#8 DER (as [`DeviceKey::pkcs8_der`] gives it).
    pub fn from_pkcs8(der: &[u8]) -> Result<DeviceKey> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &SystemRandom::new())
                .map_err(key_error)?;
        Ok(DeviceKey {
            inner: Inner::Software {
                pkcs8: Zeroizing::new(der.to_vec()),
                pair: Box::new(pair),
            },
        })
    }

    /// A P-256 key held by `signer` (callback, TPM, HSM, PKCS#11 token); `public` is its
    /// uncompressed point (65 bytes, `04 || X || Y`) or its SubjectPublicKeyInfo DER. The
    /// signer must sign `ECDSA_NISTP256_SHA256`.
    pub fn external(signer: Arc<dyn ExternalSigner>, public: &[u8]) -> Result<DeviceKey> {
        let point = if public.len() == 65 && public[0] == 4 {
            public.to_vec()
        } else {
            let (kind, point) = spki_key(public)?;
            if kind != crate::auth::x509::KeyKind::EcP256 {
                return Err(Error::new(
                    Code::InvalidArgument,
                    "certificate issuance needs a P-256 key",
                ));
            }
            point.to_vec()
        };
        if !signer.supports(SignatureScheme::ECDSA_NISTP256_SHA256) {
            return Err(Error::new(
                Code::SignerFailed,
                "the signer does not sign ECDSA P-256 with SHA-256",
            ));
        }
        Ok(DeviceKey {
            inner: Inner::External {
                signer,
                public: point,
            },
        })
    }

    /// The uncompressed public point.
    pub fn public_key(&self) -> &[u8] {
        match &self.inner {
            Inner::Software { pair, .. } => pair.public_key().as_ref(),
            Inner::External { public, .. } => public,
        }
    }

    /// The PKCS#8 DER of a key made here (wiped when dropped); `None` for a signer's key.
    pub fn pkcs8_der(&self) -> Option<Zeroizing<Vec<u8>>> {
        match &self.inner {
            Inner::Software { pkcs8, .. } => Some(pkcs8.clone()),
            Inner::External { .. } => None,
        }
    }

    /// A PKCS#10 certificate signing request (DER) with subject `CN={common_name}`, signed
    /// by this key. `common_name` is the registration id (DPS) or the device id (renewal).
    pub fn csr_der(&self, common_name: &str) -> Result<Vec<u8>> {
        crate::auth::check_id(crate::auth::IdKind::Registration, common_name)?;
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let csr = params
            .serialize_request(self)
            .map_err(|e| Error::new(Code::SignerFailed, format!("building the CSR failed: {e}")))?;
        Ok(csr.der().to_vec())
    }

    /// The CSR of [`DeviceKey::csr_der`] in base64, as DPS and the hub take it (no PEM
    /// armour).
    pub fn csr_base64(&self, common_name: &str) -> Result<String> {
        use base64::Engine;
        Ok(base64::engine::general_purpose::STANDARD.encode(self.csr_der(common_name)?))
    }

    /// A rustls certified key: `chain` (leaf first) with this key.
    pub fn certified_key(&self, chain: &[Vec<u8>]) -> Result<Arc<CertifiedKey>> {
        let certs: Vec<CertificateDer<'static>> = chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let key = match &self.inner {
            Inner::Software { pkcs8, .. } => crate::policy::certified_key(certs, pkcs8)?,
            Inner::External { signer, .. } => {
                let mut der = Vec::new();
                for c in chain {
                    der.extend_from_slice(c);
                }
                DeviceCertificate::from_bytes(&der)?.with_signer(signer.clone())?
            }
        };
        Ok(Arc::new(key))
    }
}

impl rcgen::PublicKeyData for DeviceKey {
    fn der_bytes(&self) -> &[u8] {
        self.public_key()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for DeviceKey {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        match &self.inner {
            Inner::Software { pair, .. } => pair
                .sign(&SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| rcgen::Error::RingUnspecified),
            Inner::External { signer, .. } => {
                let digest = ring::digest::digest(&ring::digest::SHA256, msg);
                let mut out = [0u8; 80];
                let n = signer
                    .sign(
                        SignatureScheme::ECDSA_NISTP256_SHA256,
                        digest.as_ref(),
                        &mut out,
                    )
                    .map_err(|_| rcgen::Error::RemoteKeyError)?;
                out.get(..n)
                    .map(<[u8]>::to_vec)
                    .ok_or(rcgen::Error::RemoteKeyError)
            }
        }
    }
}

/// What an issued chain says, once [`verify_issued`] accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's subject CN.
    pub common_name: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

impl Issued {
    /// When a renewal is due: `fraction` (0 to 1, e.g. 0.8) of the way from `not_before`
    /// to `not_after`.
    pub fn renew_at(&self, fraction: f64) -> i64 {
        let f = fraction.clamp(0.0, 1.0);
        self.not_before + ((self.not_after - self.not_before) as f64 * f) as i64
    }
}

/// Decodes base64 DER certificates as DPS (`issuedCertificateChain`) and the hub (the 200
/// answer) send them.
pub fn decode_chain(b64: &[&str]) -> Result<Vec<Vec<u8>>> {
    use base64::Engine;
    if b64.is_empty() || b64.len() > MAX_ISSUED_CHAIN {
        return Err(Error::new(
            Code::CertMalformed,
            format!(
                "the issued chain has {} certificates (1 to {MAX_ISSUED_CHAIN} accepted)",
                b64.len()
            ),
        ));
    }
    b64.iter()
        .enumerate()
        .map(|(i, c)| {
            base64::engine::general_purpose::STANDARD
                .decode(c)
                .map_err(|_| {
                    Error::new(
                        Code::CertMalformed,
                        format!("issued certificate {i} is not base64"),
                    )
                })
        })
        .collect()
}

/// Checks an issued chain (DER, leaf first) before it is used or stored: the leaf is for
/// `key` (`KeyCertMismatch`), valid at `now_unix` (`CertNotYetValid`, `CertExpired`), for
/// client authentication and chained through the rest of the chain to one of `roots`
/// (`CertUntrusted`, `CertInvalid`).
pub fn verify_issued(
    chain: &[Vec<u8>],
    key: &DeviceKey,
    roots: &[CertificateDer<'_>],
    now_unix: i64,
) -> Result<Issued> {
    if chain.is_empty() || chain.len() > MAX_ISSUED_CHAIN {
        return Err(Error::new(
            Code::CertMalformed,
            format!(
                "the issued chain has {} certificates (1 to {MAX_ISSUED_CHAIN} accepted)",
                chain.len()
            ),
        ));
    }
    let facts = CertFacts::from_der(&chain[0]).map_err(|e| e.context("the issued certificate"))?;
    let spki = crate::auth::x509::spki_of(&chain[0]).ok_or_else(|| {
        Error::new(
            Code::CertMalformed,
            "the issued certificate has no public key",
        )
    })?;
    let (_, public) = spki_key(spki)?;
    if public != key.public_key() {
        return Err(Error::new(
            Code::KeyCertMismatch,
            format!(
                "the issued certificate ({}) is not for the key of the CSR",
                facts.subject
            ),
        ));
    }
    if now_unix < facts.not_before {
        return Err(Error::new(
            Code::CertNotYetValid,
            format!(
                "the issued certificate is not valid before {} (device clock says {})",
                format_utc(facts.not_before),
                format_utc(now_unix)
            ),
        ));
    }
    if now_unix >= facts.not_after {
        return Err(Error::new(
            Code::CertExpired,
            format!(
                "the issued certificate expired on {} (device clock says {})",
                format_utc(facts.not_after),
                format_utc(now_unix)
            ),
        ));
    }
    let anchors: Vec<_> = roots
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect();
    if anchors.is_empty() {
        return Err(Error::new(
            Code::CertUntrusted,
            "no trusted root to check the issued certificate against",
        ));
    }
    let leaf = CertificateDer::from(chain[0].as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| Error::new(Code::CertMalformed, format!("the issued certificate: {e}")))?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_unix.max(0) as u64));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        time,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| {
        let code = match e {
            webpki::Error::UnknownIssuer => Code::CertUntrusted,
            webpki::Error::CertExpired { .. } => Code::CertExpired,
            webpki::Error::CertNotValidYet { .. } => Code::CertNotYetValid,
            _ => Code::CertInvalid,
        };
        Error::new(
            code,
            format!(
                "the issued certificate ({}, issued by {}) does not chain to a trusted root: {e}",
                facts.subject, facts.issuer
            ),
        )
    })?;
    Ok(Issued {
        chain: chain.to_vec(),
        common_name: facts.common_name.clone().unwrap_or_default(),
        not_before: facts.not_before,
        not_after: facts.not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_carries_the_common_name_and_the_key() {
        let key = DeviceKey::generate().unwrap();
        let csr = key.csr_der("reg-1").unwrap();
        // The CN and the public point are inside the request.
        assert!(csr.windows(5).any(|w| w == b"reg-1"));
        assert!(csr.windows(65).any(|w| w == key.public_key()));
        // A fresh key each time.
        let other = DeviceKey::generate().unwrap();
        assert_ne!(other.public_key(), key.public_key());
        // The PKCS#8 round-trips.
        let again = DeviceKey::from_pkcs8(&key.pkcs8_der().unwrap()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert!(key.csr_der("bad id/with slash").is_err());
    }

    #[test]
    fn chains_are_decoded_with_limits() {
        assert_eq!(decode_chain(&[]).unwrap_err().code(), Code::CertMalformed);
        assert_eq!(
            decode_chain(&["AA==", "AA==", "AA==", "AA=="])
                .unwrap_err()
                .code(),
            Code::CertMalformed
        );
        assert_eq!(
            decode_chain(&["!!"]).unwrap_err().code(),
            Code::CertMalformed
        );
        assert_eq!(decode_chain(&["AAE="]).unwrap(), vec![vec![0u8, 1]]);
    }

    /// A CA (its DER) and a leaf for `leaf_key` it issued, valid 2025-01-01 to 2030-01-01.
    fn issued_by_a_ca(leaf_key: &DeviceKey, ca_name: &str) -> (Vec<u8>, Vec<u8>) {
        let ca_key = DeviceKey::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        ca.serial_number = Some(rcgen::SerialNumber::from(1u64));
        let ca_cert = ca.clone().self_signed(&ca_key).unwrap();
        let mut leaf = rcgen::CertificateParams::default();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "device-1");
        leaf.not_before = rcgen::date_time_ymd(2025, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2030, 1, 1);
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        leaf.serial_number = Some(rcgen::SerialNumber::from(2u64));
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let leaf_cert = leaf.signed_by(leaf_key, &issuer).unwrap();
        (ca_cert.der().to_vec(), leaf_cert.der().to_vec())
    }

    #[test]
    fn issued_chains_are_checked_for_key_validity_and_trust() {
        let key = DeviceKey::generate().unwrap();
        let (ca, leaf) = issued_by_a_ca(&key, "test issuing CA");
        let roots = [CertificateDer::from(ca.clone())];
        let mid_2026 = 1_780_272_000;
        let ok = verify_issued(&[leaf.clone(), ca.clone()], &key, &roots, mid_2026).unwrap();
        assert_eq!(ok.common_name, "device-1");
        assert_eq!(ok.not_after, 1_893_456_000);
        // Leaf alone, root trusted: fine too.
        verify_issued(std::slice::from_ref(&leaf), &key, &roots, mid_2026).unwrap();
        let code = |r: Result<Issued>| r.unwrap_err().code();
        let other = DeviceKey::generate().unwrap();
        assert_eq!(
            code(verify_issued(
                std::slice::from_ref(&leaf),
                &other,
                &roots,
                mid_2026
            )),
            Code::KeyCertMismatch
        );
        assert_eq!(
            code(verify_issued(
                std::slice::from_ref(&leaf),
                &key,
                &roots,
                1_700_000_000
            )),
            Code::CertNotYetValid
        );
        assert_eq!(
            code(verify_issued(
                std::slice::from_ref(&leaf),
                &key,
                &roots,
                1_900_000_000
            )),
            Code::CertExpired
        );
        // Another CA: unknown issuer; another CA of the same name: a bad signature.
        let (impostor, _) = issued_by_a_ca(&key, "test issuing CA");
        assert_eq!(
            code(verify_issued(
                std::slice::from_ref(&leaf),
                &key,
                &[CertificateDer::from(impostor)],
                mid_2026
            )),
            Code::CertInvalid
        );
        let (stranger, _) = issued_by_a_ca(&key, "another CA");
        assert_eq!(
            code(verify_issued(
                std::slice::from_ref(&leaf),
                &key,
                &[CertificateDer::from(stranger)],
                mid_2026
            )),
            Code::CertUntrusted
        );
        assert_eq!(
            code(verify_issued(
                std::slice::from_ref(&leaf),
                &key,
                &[],
                mid_2026
            )),
            Code::CertUntrusted
        );
        assert_eq!(
            code(verify_issued(
                &[vec![0x30, 0x03, 1, 2, 3]],
                &key,
                &roots,
                mid_2026
            )),
            Code::CertMalformed
        );
    }

    #[test]
    fn renew_at_is_a_fraction_of_the_validity() {
        let i = Issued {
            chain: vec![],
            common_name: "d".into(),
            not_before: 1000,
            not_after: 2000,
        };
        assert_eq!(i.renew_at(0.8), 1800);
        assert_eq!(i.renew_at(2.0), 2000);
    }
}
