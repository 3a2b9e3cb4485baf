//! Server certificate verification: rustls-webpki's verdict, plus the facts needed to
//! explain it.
//!
//! [`PolicyVerifier`] delegates every decision to `WebPkiServerVerifier` and records what the
//! server presented (its chain, the host name asked for, the device clock, the trust anchor
//! reached). The handshake code reads that record to turn a bare "unknown issuer" into
//! "chain not trusted: CN=... was issued by CN=Evil CA, which is not a trusted root".
//! Nothing is relaxed here.
//!
//! rustls calls the verifier from inside `process_new_packets`, on the caller's thread, with
//! no way to say which connection it verifies for. [`capture`] wraps one such call: the
//! record made during it is handed back to the caller, who keeps it with its connection (a
//! session keeps its own). So a thread that drives many handshakes at once (a gateway) never
//! reads another connection's chain.

use std::cell::RefCell;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::cert::CertFacts;

/// What a certificate verification saw.
#[derive(Clone, Debug, Default)]
pub struct ChainRecord {
    /// The presented chain, leaf first (certificates that could not be parsed are skipped).
    pub chain: Vec<CertFacts>,
    /// The server name that was checked.
    pub server_name: String,
    /// The device clock at verification, Unix seconds.
    pub now: i64,
    /// The trust anchor the chain ends in, when one matches by name.
    pub anchor: Option<String>,
    /// Names of every configured trust anchor.
    pub anchors: Vec<String>,
}

thread_local! {
    /// The hand-off slot between the verifier and [`capture`]: filled and emptied within one
    /// call on this thread, never kept across calls.
    static LAST: RefCell<Option<ChainRecord>> = const { RefCell::new(None) };
}

/// Runs `f` (a call that may verify a server certificate, such as rustls'
/// `process_new_packets`) and returns its result with the record of the verification made
/// during it, if one was.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Option<ChainRecord>) {
    clear_record();
    let result = f();
    (result, take_record())
}

fn clear_record() {
    LAST.with(|l| l.borrow_mut().take());
}

fn take_record() -> Option<ChainRecord> {
    LAST.with(|l| l.borrow_mut().take())
}

struct Anchor {
    subject_der: Vec<u8>,
    name: String,
}

/// A server certificate verifier that delegates to webpki and records diagnostics.
pub struct PolicyVerifier {
    inner: Arc<WebPkiServerVerifier>,
    anchors: Vec<Anchor>,
}

impl std::fmt::Debug for PolicyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyVerifier")
            .field("anchors", &self.anchors.len())
            .finish()
    }
}

impl PolicyVerifier {
    /// Wraps `inner`; `anchors` are the DER trust anchors it was built with.
    pub fn new(inner: Arc<WebPkiServerVerifier>, anchors: &[CertificateDer<'_>]) -> Self {
        let anchors = anchors
            .iter()
            .filter_map(|der| CertFacts::from_der(der).ok())
            .map(|facts| Anchor {
                name: display_name(&facts),
                subject_der: facts.subject_der,
            })
            .collect();
        PolicyVerifier { inner, anchors }
    }

    fn anchor_for(&self, chain: &[CertFacts]) -> Option<String> {
        let last = chain.last()?;
        self.anchors
            .iter()
            .find(|a| a.subject_der == last.issuer_der || a.subject_der == last.subject_der)
            .map(|a| a.name.clone())
    }
}

/// The common name of a certificate, or its whole subject when it has none.
pub fn display_name(facts: &CertFacts) -> String {
    facts
        .common_name
        .clone()
        .unwrap_or_else(|| facts.subject.clone())
}

impl ServerCertVerifier for PolicyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<CertFacts> = std::iter::once(end_entity)
            .chain(intermediates)
            .filter_map(|der| CertFacts::from_der(der).ok())
            .collect();
        let result = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let record = ChainRecord {
            anchor: result.as_ref().ok().and_then(|_| self.anchor_for(&chain)),
            anchors: self.anchors.iter().map(|a| a.name.clone()).collect(),
            chain,
            server_name: server_name.to_str().into_owned(),
            now: now.as_secs() as i64,
        };
        LAST.with(|l| *l.borrow_mut() = Some(record));
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
