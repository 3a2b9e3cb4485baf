//! X.509 device identity: certificate chains, thumbprints, the device id in the leaf CN,
//! validity against the clock, and signing through a caller-supplied signer so a private key
//! held in a TPM, HSM or secure element never enters the library.
//!
//! Loading reuses the TLS policy's loaders ([`crate::policy::load_certificates`] and
//! [`crate::policy::load_signing_key`]): PEM or DER, PKCS#8, SEC1 or PKCS#1 keys.

use std::fmt;
use std::sync::Arc;

use ring::digest;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::cert::{format_utc, CertFacts};
use crate::error::{Code, Error, Result};
use crate::policy::{certified_key, load_certificates};

/// Uppercase hex without separators, as the IoT Hub portal and CLI show thumbprints.
fn upper_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

/// SHA-1 thumbprint of a DER certificate: 40 uppercase hex digits.
pub fn thumbprint_sha1(der: &[u8]) -> String {
    upper_hex(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
}

/// SHA-256 thumbprint of a DER certificate: 64 uppercase hex digits.
pub fn thumbprint_sha256(der: &[u8]) -> String {
    upper_hex(digest::digest(&digest::SHA256, der).as_ref())
}

/// Both thumbprints of a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thumbprints {
    /// SHA-1, 40 uppercase hex digits.
    pub sha1: String,
    /// SHA-256, 64 uppercase hex digits.
    pub sha256: String,
}

/// The thumbprints of the first certificate in `bytes` (PEM or DER): the leaf of a chain.
pub fn thumbprints(bytes: &[u8]) -> Result<Thumbprints> {
    let certs = load_certificates(bytes)?;
    let leaf = &certs[0];
    Ok(Thumbprints {
        sha1: thumbprint_sha1(leaf),
        sha256: thumbprint_sha256(leaf),
    })
}

/// The kind of key a certificate carries, which decides the signature schemes offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA (PKCS#1 v1.5 and PSS, SHA-256 and SHA-384).
    Rsa,
    /// ECDSA on P-256 with SHA-256.
    EcP256,
    /// ECDSA on P-384 with SHA-384.
    EcP384,
}

impl KeyKind {
    /// The schemes this kind of key can sign, in the order we prefer them.
    pub fn schemes(self) -> &'static [SignatureScheme] {
        match self {
            KeyKind::Rsa => &[
                SignatureScheme::RSA_PSS_SHA256,
                SignatureScheme::RSA_PSS_SHA384,
                SignatureScheme::RSA_PKCS1_SHA256,
                SignatureScheme::RSA_PKCS1_SHA384,
            ],
            KeyKind::EcP256 => &[SignatureScheme::ECDSA_NISTP256_SHA256],
            KeyKind::EcP384 => &[SignatureScheme::ECDSA_NISTP384_SHA384],
        }
    }

    fn algorithm(self) -> SignatureAlgorithm {
        match self {
            KeyKind::Rsa => SignatureAlgorithm::RSA,
            _ => SignatureAlgorithm::ECDSA,
        }
    }
}

/// The digest a scheme signs: SHA-256 or SHA-384.
pub fn scheme_digest(scheme: SignatureScheme) -> Option<&'static digest::Algorithm> {
    match scheme {
        SignatureScheme::RSA_PKCS1_SHA256
        | SignatureScheme::RSA_PSS_SHA256
        | SignatureScheme::ECDSA_NISTP256_SHA256 => Some(&digest::SHA256),
        SignatureScheme::RSA_PKCS1_SHA384
        | SignatureScheme::RSA_PSS_SHA384
        | SignatureScheme::ECDSA_NISTP384_SHA384 => Some(&digest::SHA384),
        _ => None,
    }
}

/// One DER TLV: (tag, contents, whole encoding, what follows).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// Reads one DER TLV.
fn der_read(bytes: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let header = bytes.len() - rest.len();
    Some((tag, &rest[..len], &bytes[..header + len], &rest[len..]))
}

/// The SubjectPublicKeyInfo (whole DER) of a certificate.
pub(crate) fn spki_of(cert: &[u8]) -> Option<&[u8]> {
    let (_, cert, _, _) = der_read(cert)?;
    let (_, tbs, _, _) = der_read(cert)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der_read(rest)?.3; // version
    }
    for _ in 0..5 {
        rest = der_read(rest)?.3; // serial, signature, issuer, validity, subject
    }
    let (tag, _, whole, _) = der_read(rest)?;
    (tag == 0x30).then_some(whole)
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// The key kind and the raw public key (BIT STRING contents) of an SPKI.
pub(crate) fn spki_key(spki: &[u8]) -> Result<(KeyKind, &[u8])> {
    let unsupported = || {
        Error::new(
            Code::CertInvalid,
            "the certificate's public key is not RSA, EC P-256 or EC P-384",
        )
    };
    let (_, body, _, _) = der_read(spki).ok_or_else(unsupported)?;
    let (_, alg, _, rest) = der_read(body).ok_or_else(unsupported)?;
    let (_, bits, _, _) = der_read(rest).ok_or_else(unsupported)?;
    let (_, oid, _, params) = der_read(alg).ok_or_else(unsupported)?;
    let kind = if oid == OID_RSA {
        KeyKind::Rsa
    } else if oid == OID_EC {
        let (_, curve, _, _) = der_read(params).ok_or_else(unsupported)?;
        match curve {
            c if c == OID_P256 => KeyKind::EcP256,
            c if c == OID_P384 => KeyKind::EcP384,
            _ => return Err(unsupported()),
        }
    } else {
        return Err(unsupported());
    };
    let key = bits.strip_prefix(&[0u8]).ok_or_else(unsupported)?;
    Ok((kind, key))
}

/// A device's certificate chain (leaf first) and what the leaf says about itself.
#[derive(Clone)]
pub struct DeviceCertificate {
    chain: Vec<CertificateDer<'static>>,
    leaf: CertFacts,
}

impl fmt::Debug for DeviceCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceCertificate")
            .field("subject", &self.leaf.subject)
            .field("issuer", &self.leaf.issuer)
            .field("chain_len", &self.chain.len())
            .finish()
    }
}

impl DeviceCertificate {
    /// Loads a chain from PEM (one or more certificates) or DER (certificates back to back),
    /// leaf first.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let chain = load_certificates(bytes)?;
        let leaf = CertFacts::from_der(&chain[0])?;
        Ok(DeviceCertificate { chain, leaf })
    }

    /// Loads a chain from a PEM or DER file.
    pub fn from_file(path: &str) -> Result<Self> {
        let bytes = crate::policy::read_file(path)?;
        Self::from_bytes(&bytes).map_err(|e| e.context(path))
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// What the leaf certificate says.
    pub fn facts(&self) -> &CertFacts {
        &self.leaf
    }

    /// The leaf's thumbprints.
    pub fn thumbprints(&self) -> Thumbprints {
        Thumbprints {
            sha1: thumbprint_sha1(&self.chain[0]),
            sha256: thumbprint_sha256(&self.chain[0]),
        }
    }

    /// The identity in the leaf's CN: a device id, or `deviceId/moduleId`.
    pub fn common_name(&self) -> Result<&str> {
        self.leaf.common_name.as_deref().ok_or_else(|| {
            Error::new(
                Code::CertDeviceMismatch,
                format!(
                    "the certificate ({}) has no CN; IoT Hub reads the device id from it",
                    self.leaf.subject
                ),
            )
        })
    }

    /// Checks that the leaf CN names the configured identity: `device_id`, or
    /// `device_id/module_id` for a module. `CertDeviceMismatch` otherwise.
    pub fn check_identity(&self, device_id: &str, module_id: Option<&str>) -> Result<()> {
        crate::auth::check_id(crate::auth::IdKind::Device, device_id)?;
        let wanted = match module_id {
            Some(m) => {
                crate::auth::check_id(crate::auth::IdKind::Module, m)?;
                format!("{device_id}/{m}")
            }
            None => device_id.to_owned(),
        };
        let cn = self.common_name()?;
        if cn != wanted {
            return Err(Error::new(
                Code::CertDeviceMismatch,
                format!(
                    "the certificate is for \"{}\" (its CN), not for \"{wanted}\"",
                    crate::auth::excerpt(cn)
                ),
            ));
        }
        Ok(())
    }

    /// Checks the leaf's validity at `now_unix`: `CertExpired`, `CertNotYetValid`, or
    /// `ClockNotSet` when the clock reads before 2025 (and the certificate looks "not yet
    /// valid" only because of that).
    pub fn check_validity(&self, now_unix: i64) -> Result<()> {
        let subject = &self.leaf.subject;
        if now_unix < crate::handshake::CLOCK_FLOOR_UNIX {
            return Err(Error::new(
                Code::ClockNotSet,
                format!(
                    "device clock reads {}: set the time before checking the certificate ({subject})",
                    format_utc(now_unix)
                ),
            ));
        }
        if now_unix > self.leaf.not_after {
            return Err(Error::new(
                Code::CertExpired,
                format!(
                    "client certificate ({subject}) expired on {} (device clock says {})",
                    format_utc(self.leaf.not_after),
                    format_utc(now_unix)
                ),
            ));
        }
        if now_unix < self.leaf.not_before {
            return Err(Error::new(
                Code::CertNotYetValid,
                format!(
                    "client certificate ({subject}) is not valid before {} (device clock says {})",
                    format_utc(self.leaf.not_before),
                    format_utc(now_unix)
                ),
            ));
        }
        Ok(())
    }

    /// Seconds of validity left at `now_unix` (negative once expired; saturating for an
    /// extreme `now_unix`).
    pub fn seconds_left(&self, now_unix: i64) -> i64 {
        self.leaf.not_after.saturating_sub(now_unix)
    }

    /// Whether the leaf expires within `days` days of `now_unix` (or has expired): the
    /// question to ask at start-up and daily, to renew before it is too late.
    pub fn expires_within(&self, now_unix: i64, days: u32) -> bool {
        self.seconds_left(now_unix) <= i64::from(days) * 86_400
    }

    /// The kind of the leaf's public key.
    pub fn key_kind(&self) -> Result<KeyKind> {
        let spki = spki_of(&self.chain[0])
            .ok_or_else(|| Error::new(Code::CertMalformed, "certificate has no public key"))?;
        Ok(spki_key(spki)?.0)
    }

    /// A certified key from this chain and a private key (PEM or DER; PKCS#8, SEC1 or
    /// PKCS#1): `KeyCertMismatch` when the key is not the certificate's.
    pub fn with_private_key(&self, key: &[u8]) -> Result<CertifiedKey> {
        certified_key(self.chain.clone(), key).map_err(|e| {
            if e.code() == Code::KeyCertMismatch {
                Error::new(
                    Code::KeyCertMismatch,
                    format!(
                        "the private key does not match the client certificate ({})",
                        self.leaf.subject
                    ),
                )
            } else {
                e
            }
        })
    }

    /// A certified key whose signatures come from `signer` (a TPM, HSM, secure element):
    /// the private key never enters the library.
    ///
    /// The signer is called once here, to sign a probe, and the signature is verified with
    /// the certificate's public key: a signer holding another key is refused now
    /// (`KeyCertMismatch`), not at the server; a failing signer is `SignerFailed`.
    pub fn with_signer(&self, signer: Arc<dyn ExternalSigner>) -> Result<CertifiedKey> {
        let spki = spki_of(&self.chain[0])
            .ok_or_else(|| Error::new(Code::CertMalformed, "certificate has no public key"))?;
        let (kind, public) = spki_key(spki)?;
        if !kind.schemes().iter().any(|&s| signer.supports(s)) {
            return Err(Error::new(
                Code::SignerFailed,
                format!("the signer supports none of the schemes a {kind:?} key signs with"),
            ));
        }
        probe(kind, public, signer.as_ref())?;
        let key = ExternalKey {
            kind,
            spki: spki.to_vec(),
            signer,
        };
        Ok(CertifiedKey::new(self.chain.clone(), Arc::new(key)))
    }
}

/// Something that signs with a key the library never sees.
///
/// `sign` receives the scheme and the **digest** of the message (SHA-256 or SHA-384, as the
/// scheme says; see [`scheme_digest`]) and writes the signature into `out`, returning its
/// length: for RSA PKCS#1 v1.5 the full signature over the DigestInfo of that digest, for
/// PSS a PSS signature with MGF1 of the same hash and a salt as long as the hash, for ECDSA
/// the DER-encoded `Ecdsa-Sig-Value` (see [`ecdsa_raw_to_der`] for signers that return raw
/// r||s).
pub trait ExternalSigner: Send + Sync {
    /// Signs `digest` with `scheme` into `out`; returns the signature length.
    fn sign(&self, scheme: SignatureScheme, digest: &[u8], out: &mut [u8]) -> Result<usize>;

    /// Whether this signer can sign with `scheme` (a token may lack RSA-PSS, say). Only
    /// schemes the key's kind allows are asked; the default is all of them.
    fn supports(&self, scheme: SignatureScheme) -> bool {
        let _ = scheme;
        true
    }
}

/// Room for any signature: RSA up to 8192 bits, DER ECDSA up to P-521.
pub const MAX_SIGNATURE_LEN: usize = 1024;

/// Prefix of the rustls error text for a signer failure, so the handshake can name it.
pub(crate) const SIGNER_ERROR_PREFIX: &str = "client signer: ";

fn sign_with(
    signer: &dyn ExternalSigner,
    scheme: SignatureScheme,
    message: &[u8],
) -> Result<Vec<u8>> {
    let alg = scheme_digest(scheme).ok_or_else(|| {
        Error::new(
            Code::SignerFailed,
            format!("scheme {scheme:?} is not one tether offers"),
        )
    })?;
    let digest = digest::digest(alg, message);
    let mut out = vec![0u8; MAX_SIGNATURE_LEN];
    let n = signer.sign(scheme, digest.as_ref(), &mut out)?;
    if n == 0 || n > out.len() {
        return Err(Error::new(
            Code::SignerFailed,
            format!(
                "the signer reported a {n}-byte signature for {scheme:?} (expected 1 to {})",
                out.len()
            ),
        ));
    }
    out.truncate(n);
    if matches!(
        scheme,
        SignatureScheme::ECDSA_NISTP256_SHA256 | SignatureScheme::ECDSA_NISTP384_SHA384
    ) && der_read(&out).map(|(t, _, whole, _)| (t, whole.len())) != Some((0x30, n))
    {
        return Err(Error::new(
            Code::SignerFailed,
            format!(
                "the signer returned {n} bytes that are not a DER ECDSA signature; convert a raw \
                 r||s signature with tether_ecdsa_raw_to_der"
            ),
        ));
    }
    Ok(out)
}

fn probe(kind: KeyKind, public: &[u8], signer: &dyn ExternalSigner) -> Result<()> {
    use ring::signature;
    let message = b"tether: does the signer hold the certificate's key?";
    let (scheme, alg): (_, &dyn signature::VerificationAlgorithm) = match kind {
        KeyKind::Rsa if !signer.supports(SignatureScheme::RSA_PKCS1_SHA256) => (
            SignatureScheme::RSA_PSS_SHA256,
            &signature::RSA_PSS_2048_8192_SHA256,
        ),
        KeyKind::Rsa => (
            SignatureScheme::RSA_PKCS1_SHA256,
            &signature::RSA_PKCS1_2048_8192_SHA256,
        ),
        KeyKind::EcP256 => (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &signature::ECDSA_P256_SHA256_ASN1,
        ),
        KeyKind::EcP384 => (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &signature::ECDSA_P384_SHA384_ASN1,
        ),
    };
    let sig = sign_with(signer, scheme, message)?;
    signature::UnparsedPublicKey::new(alg, public)
        .verify(message, &sig)
        .map_err(|_| {
            Error::new(
                Code::KeyCertMismatch,
                format!(
                    "the signer's key does not match the client certificate (a {scheme:?} \
                     signature from it does not verify with the certificate's public key)"
                ),
            )
        })
}

/// A rustls signing key backed by an [`ExternalSigner`].
struct ExternalKey {
    kind: KeyKind,
    spki: Vec<u8>,
    signer: Arc<dyn ExternalSigner>,
}

impl fmt::Debug for ExternalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExternalKey({:?})", self.kind)
    }
}

impl SigningKey for ExternalKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self
            .kind
            .schemes()
            .iter()
            .find(|s| offered.contains(s) && self.signer.supports(**s))
            .copied()?;
        Some(Box::new(ExternalSchemeSigner {
            scheme,
            signer: self.signer.clone(),
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.kind.algorithm()
    }
}

struct ExternalSchemeSigner {
    scheme: SignatureScheme,
    signer: Arc<dyn ExternalSigner>,
}

impl fmt::Debug for ExternalSchemeSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExternalSchemeSigner({:?})", self.scheme)
    }
}

impl Signer for ExternalSchemeSigner {
    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, rustls::Error> {
        // The error travels through rustls whole, so its code (a token that failed and may
        // come back is retriable) reaches the handshake's caller.
        sign_with(self.signer.as_ref(), self.scheme, message)
            .map_err(|e| rustls::Error::Other(rustls::OtherError(Arc::new(e))))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Converts a raw ECDSA signature `r || s` (two big-endian integers of equal length, as
/// secure elements return them) into the DER `Ecdsa-Sig-Value` TLS needs, written into
/// `out`; returns its length. No allocation.
///
/// Errors: `InvalidArgument` when `raw` is empty, of odd length or longer than 132 bytes
/// (P-521); `BufferTooSmall` when `out` is shorter than the result (at most
/// `raw.len() + 9` bytes).
pub fn ecdsa_raw_to_der(raw: &[u8], out: &mut [u8]) -> Result<usize> {
    if raw.is_empty() || raw.len() % 2 != 0 || raw.len() > 132 {
        return Err(Error::new(
            Code::InvalidArgument,
            format!(
                "a raw ECDSA signature is r||s of equal halves (64 bytes for P-256, 96 for P-384), not {} bytes",
                raw.len()
            ),
        ));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    fn trim(x: &[u8]) -> (&[u8], bool) {
        let start = x.iter().position(|&b| b != 0).unwrap_or(x.len() - 1);
        let x = &x[start..];
        (x, x[0] & 0x80 != 0)
    }
    let (r, r_pad) = trim(r);
    let (s, s_pad) = trim(s);
    let r_len = r.len() + usize::from(r_pad);
    let s_len = s.len() + usize::from(s_pad);
    let body = 2 + r_len + 2 + s_len;
    let header = if body < 0x80 { 2 } else { 3 };
    let total = header + body;
    if out.len() < total {
        return Err(Error::new(
            Code::BufferTooSmall,
            format!(
                "the DER signature needs {total} bytes; the buffer holds {}",
                out.len()
            ),
        ));
    }
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    if body < 0x80 {
        put(&[0x30, body as u8]);
    } else {
        put(&[0x30, 0x81, body as u8]);
    }
    for (x, pad, len) in [(r, r_pad, r_len), (s, s_pad, s_len)] {
        put(&[0x02, len as u8]);
        if pad {
            put(&[0]);
        }
        put(x);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G2: &[u8] = include_bytes!("../roots/DigiCert_Global_Root_G2.der");
    const G3: &[u8] = include_bytes!("../roots/DigiCert_Global_Root_G3.der");

    #[test]
    fn thumbprints_match_the_published_root_fingerprint() {
        let t = thumbprints(G2).unwrap();
        assert_eq!(
            t.sha256,
            "CB3CCBB76031E5E0138F8DD39A23F9DE47FFC35E43C1144CEA27D46A5AB1CB5F"
        );
        assert_eq!(t.sha1.len(), 40);
        assert!(t
            .sha1
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
        assert_eq!(
            thumbprints(b"junk").unwrap_err().code(),
            Code::CertMalformed
        );
    }

    #[test]
    fn key_kinds_come_from_the_certificate() {
        assert_eq!(
            DeviceCertificate::from_bytes(G2)
                .unwrap()
                .key_kind()
                .unwrap(),
            KeyKind::Rsa
        );
        assert_eq!(
            DeviceCertificate::from_bytes(G3)
                .unwrap()
                .key_kind()
                .unwrap(),
            KeyKind::EcP384
        );
    }

    #[test]
    fn identity_and_validity_checks_name_the_problem() {
        let cert = DeviceCertificate::from_bytes(G2).unwrap();
        let e = cert.check_identity("my-device", None).unwrap_err();
        assert_eq!(e.code(), Code::CertDeviceMismatch);
        assert!(e.message().contains("DigiCert Global Root G2"), "{e:?}");
        assert_eq!(
            cert.check_identity("a b", None).unwrap_err().code(),
            Code::IdInvalid
        );
        let not_after = cert.facts().not_after;
        cert.check_validity(not_after - 10).unwrap();
        let e = cert.check_validity(not_after + 1).unwrap_err();
        assert_eq!(e.code(), Code::CertExpired);
        assert!(e.message().contains("2038-01-15"), "{e:?}");
        assert_eq!(
            cert.check_validity(0).unwrap_err().code(),
            Code::ClockNotSet
        );
        assert!(cert.expires_within(not_after - 86_400, 1));
        assert!(!cert.expires_within(not_after - 2 * 86_400 - 1, 2));
    }

    #[test]
    fn raw_ecdsa_becomes_der() {
        let mut raw = [0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[31] = 1;
        raw[63] = 5; // s is 5
        let mut out = [0u8; 80];
        let n = ecdsa_raw_to_der(&raw, &mut out).unwrap();
        let mut expected = vec![0x30, 0x26, 0x02, 0x21, 0x00];
        expected.extend_from_slice(&raw[..32]);
        expected.extend_from_slice(&[0x02, 0x01, 0x05]);
        assert_eq!(&out[..n], &expected[..]);
        let mut small = [0u8; 8];
        assert_eq!(
            ecdsa_raw_to_der(&raw, &mut small).unwrap_err().code(),
            Code::BufferTooSmall
        );
        assert_eq!(
            ecdsa_raw_to_der(&raw[..63], &mut out).unwrap_err().code(),
            Code::InvalidArgument
        );
        let raw = [0xffu8; 132];
        let mut out = [0u8; 141];
        let n = ecdsa_raw_to_der(&raw, &mut out).unwrap();
        assert_eq!((n, &out[..3]), (141, &[0x30, 0x81, 138][..]));
    }

    #[test]
    fn a_signer_with_another_key_is_refused_before_any_connection() {
        struct Garbage;
        impl ExternalSigner for Garbage {
            fn sign(&self, _: SignatureScheme, _: &[u8], out: &mut [u8]) -> Result<usize> {
                out[..256].fill(7);
                Ok(256)
            }
        }
        let cert = DeviceCertificate::from_bytes(G2).unwrap();
        let e = cert.with_signer(Arc::new(Garbage)).unwrap_err();
        assert_eq!(e.code(), Code::KeyCertMismatch, "{e:?}");
        let ec = DeviceCertificate::from_bytes(G3).unwrap();
        let e = ec.with_signer(Arc::new(Garbage)).unwrap_err();
        assert_eq!(e.code(), Code::SignerFailed, "{e:?}");
        assert!(e.message().contains("tether_ecdsa_raw_to_der"), "{e:?}");
    }
}
