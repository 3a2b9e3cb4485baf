//! Certificate renewal through IoT Hub's `$iothub/credentials` endpoint (preview), and the
//! swap to the renewed certificate without downtime.
//!
//! At a fraction of the certificate's validity (default 80 %), or on demand, the session
//! makes a fresh P-256 key, publishes a CSR for the device id, and follows the hub's
//! answers: `202` (accepted; the answer survives dropped connections until
//! `operationExpires`), `200` (the chain), `409005` (resend with `replace`), `429`/`5xx`
//! (wait `retryAfter`), `400040`/`412001` (named, not retried). A received chain is checked
//! ([`crate::auth::csr::verify_issued`]); then the session reconnects with it, keeping the
//! old certificate until the hub accepts the new connection, and puts it back (rollback)
//! if the hub refuses it. Unacknowledged QoS 1 messages are re-sent on the new connection
//! as on any reconnection.
//!
//! Every time here (`now_ms`, the due time) is on the **wall** clock, Unix milliseconds:
//! certificate validity and `operationExpires` are wall-clock facts. The session places the
//! due time on its monotonic timer table and also fires it when the wall clock reaches it.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;

use crate::auth::csr::{verify_issued, DeviceKey, Issued};
use crate::error::{Code, Error, Result};
use crate::mqtt::credentials::{self, FailureAction, Response};
use crate::policy::TlsPolicy;

/// Default fraction of the validity at which a certificate is renewed.
pub const DEFAULT_RENEW_FRACTION: f64 = 0.8;
/// How long to wait for the hub's first answer before sending again (with `replace`).
pub const ANSWER_TIMEOUT_MS: u64 = 30_000;
/// The wait after a failure the hub gave no `retryAfter` for, and before retrying a chain
/// that failed its checks.
pub const RETRY_MS: u64 = 10_000;

/// How a session renews its certificate.
#[derive(Clone)]
pub struct RenewalSettings {
    /// Renew at this fraction (0 to 1) of the validity (default 0.8).
    pub fraction: f64,
    /// The roots an issued chain must chain to.
    pub roots: Vec<CertificateDer<'static>>,
    /// The TLS policy; the renewed certificate and key replace its client certificate.
    pub policy: TlsPolicy,
}

impl std::fmt::Debug for RenewalSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenewalSettings")
            .field("fraction", &self.fraction)
            .field("roots", &self.roots.len())
            .finish()
    }
}

/// A private key's bytes in an event: never printed, wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyBytes(pub zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBytes(<redacted>)")
    }
}

/// What happened to the device certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateEvent {
    /// A renewal request was sent (`request_id`).
    RenewalRequested {
        /// The request id.
        request_id: String,
    },
    /// The hub issued a certificate and it passed the checks; the session reconnects with it.
    Issued {
        /// Its end of validity, Unix seconds.
        not_after: i64,
    },
    /// The hub accepted the connection made with the renewed certificate: it is now the one
    /// in force (store it: chain and key).
    Swapped {
        /// The chain, DER, leaf first.
        chain: Vec<Vec<u8>>,
        /// The new key's PKCS#8 (None for a key held by a signer).
        key_pkcs8: Option<KeyBytes>,
        /// Its end of validity, Unix seconds.
        not_after: i64,
    },
    /// The hub refused the renewed certificate: the previous one is back in force.
    RolledBack {
        /// Why the new one was refused.
        error: Error,
    },
    /// A renewal failed: a named refusal by the hub, or a chain that failed the checks. The
    /// certificate in force stays.
    RenewalFailed {
        /// Why.
        error: Error,
        /// Whether the session tries again by itself.
        will_retry: bool,
    },
}

enum Phase {
    /// Waiting for the renewal time.
    Idle,
    /// A request is out; `rid` names it.
    Requested {
        rid: String,
        key: DeviceKey,
        accepted: bool,
    },
    /// A named refusal: nothing more until asked.
    Stopped,
}

/// A renewed certificate on trial: the new connection decides.
struct Swap {
    old_tls: Arc<ClientConfig>,
    old_key: DeviceKey,
    old_issued: Issued,
}

/// What the session must do after the renewal machine moved.
pub(crate) enum Action {
    /// Publish `body` (QoS 1) on `topic`.
    Send { topic: String, body: String },
    /// Reconnect with this TLS configuration (the renewed certificate).
    Reconnect(Arc<ClientConfig>),
    /// Nothing to send.
    None,
}

/// The renewal machine of one session.
pub(crate) struct Renewal {
    settings: RenewalSettings,
    device_id: String,
    key: DeviceKey,
    issued: Issued,
    phase: Phase,
    /// When the machine must act next (Unix ms): send, resend or give up waiting.
    due_ms: Option<u64>,
    swap: Option<Swap>,
    requests: u64,
}

impl Renewal {
    pub(crate) fn new(
        settings: RenewalSettings,
        device_id: &str,
        key: DeviceKey,
        chain: Vec<Vec<u8>>,
    ) -> Result<Renewal> {
        if !(settings.fraction > 0.0 && settings.fraction <= 1.0) {
            return Err(Error::new(
                Code::InvalidArgument,
                "the renewal fraction must be above 0 and at most 1",
            ));
        }
        let facts = crate::cert::CertFacts::from_der(
            chain
                .first()
                .ok_or_else(|| Error::new(Code::InvalidArgument, "no certificate to renew"))?,
        )?;
        let issued = Issued {
            chain,
            common_name: facts.common_name.unwrap_or_default(),
            not_before: facts.not_before,
            not_after: facts.not_after,
        };
        let due = issued.renew_at(settings.fraction).max(0) as u64 * 1000;
        Ok(Renewal {
            settings,
            device_id: device_id.to_owned(),
            key,
            issued,
            phase: Phase::Idle,
            due_ms: Some(due),
            swap: None,
            requests: 0,
        })
    }

    /// When the machine must act next.
    pub(crate) fn due_ms(&self) -> Option<u64> {
        self.due_ms
    }

    /// The certificate in force ends then (Unix seconds).
    pub(crate) fn not_after(&self) -> i64 {
        self.issued.not_after
    }

    /// Renew now (on demand), unless a request is already out.
    pub(crate) fn renew_now(&mut self, now_ms: u64) {
        if !matches!(self.phase, Phase::Requested { .. }) {
            self.phase = Phase::Idle;
        }
        self.due_ms = Some(now_ms);
    }

    fn request(
        &mut self,
        key: DeviceKey,
        replace: Option<&str>,
    ) -> Result<(String, String, String)> {
        self.requests += 1;
        let rid = format!("tether-renew-{}", self.requests);
        let csr = key.csr_base64(&self.device_id)?;
        let body = credentials::request_body(&self.device_id, &csr, replace);
        let topic = credentials::request_topic(&rid)?;
        self.phase = Phase::Requested {
            rid: rid.clone(),
            key,
            accepted: false,
        };
        Ok((rid, topic, body))
    }

    /// The deadline passed at `now_ms` (the session is connected): what to send.
    pub(crate) fn on_due(&mut self, now_ms: u64, events: &mut Vec<CertificateEvent>) -> Action {
        self.due_ms = None;
        let (key, replace) = match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Stopped => {
                self.phase = Phase::Stopped;
                return Action::None;
            }
            // A new renewal: a fresh key.
            Phase::Idle => match DeviceKey::generate() {
                Ok(k) => (k, None),
                Err(e) => {
                    self.due_ms = Some(now_ms + RETRY_MS);
                    events.push(CertificateEvent::RenewalFailed {
                        error: e,
                        will_retry: true,
                    });
                    return Action::None;
                }
            },
            // No answer in time, or the accepted operation expired: ask again, replacing it.
            Phase::Requested { rid, key, .. } => (key, Some(rid)),
        };
        match self.request(key, replace.as_deref()) {
            Ok((rid, topic, body)) => {
                self.due_ms = Some(now_ms + ANSWER_TIMEOUT_MS);
                crate::log!(
                    crate::log::Level::Info,
                    "certificate renewal requested ({rid}); the current one ends {}",
                    crate::cert::format_utc(self.issued.not_after)
                );
                events.push(CertificateEvent::RenewalRequested { request_id: rid });
                Action::Send { topic, body }
            }
            Err(e) => {
                self.phase = Phase::Stopped;
                events.push(CertificateEvent::RenewalFailed {
                    error: e,
                    will_retry: false,
                });
                Action::None
            }
        }
    }

    /// An answer on `$iothub/credentials/res/...`.
    pub(crate) fn on_answer(
        &mut self,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
        current_tls: &Arc<ClientConfig>,
        events: &mut Vec<CertificateEvent>,
    ) -> Action {
        let parsed = match credentials::parse_response_topic(topic) {
            Ok(t) => t,
            Err(e) => {
                crate::log!(crate::log::Level::Warn, "credentials answer ignored: {e}");
                return Action::None;
            }
        };
        let Phase::Requested { rid, .. } = &self.phase else {
            return Action::None;
        };
        if parsed.rid != *rid {
            return Action::None;
        }
        let response = match credentials::parse_response(parsed.status, payload) {
            Ok(r) => r,
            Err(e) => {
                // Malformed: wait for the answer timeout, then ask again.
                crate::log!(crate::log::Level::Warn, "credentials answer ignored: {e}");
                return Action::None;
            }
        };
        match response {
            Response::Accepted {
                operation_expires, ..
            } => {
                if let Phase::Requested { accepted, .. } = &mut self.phase {
                    *accepted = true;
                }
                let until = operation_expires
                    .map(|s| s.max(0) as u64 * 1000)
                    .unwrap_or(now_ms + 12 * 3600 * 1000);
                self.due_ms = Some(until.max(now_ms + 1000));
                crate::log!(
                    crate::log::Level::Info,
                    "certificate renewal {} accepted by the hub",
                    parsed.rid
                );
                Action::None
            }
            Response::Failed(f) => match f.action(RETRY_MS / 1000) {
                FailureAction::ResendReplacing => {
                    let Phase::Requested { key, .. } =
                        std::mem::replace(&mut self.phase, Phase::Idle)
                    else {
                        return Action::None;
                    };
                    let replace = f.request_id.clone().unwrap_or_else(|| "*".to_owned());
                    crate::log!(
                        crate::log::Level::Info,
                        "a certificate request is already active ({replace}): sending again, replacing it"
                    );
                    match self.request(key, Some(&replace)) {
                        Ok((rid, topic, body)) => {
                            self.due_ms = Some(now_ms + ANSWER_TIMEOUT_MS);
                            events.push(CertificateEvent::RenewalRequested { request_id: rid });
                            Action::Send { topic, body }
                        }
                        Err(e) => {
                            self.phase = Phase::Stopped;
                            events.push(CertificateEvent::RenewalFailed {
                                error: e,
                                will_retry: false,
                            });
                            Action::None
                        }
                    }
                }
                FailureAction::RetryAfter(s) => {
                    // The same key is used again; the next request is a new one.
                    if let Phase::Requested { key, .. } =
                        std::mem::replace(&mut self.phase, Phase::Idle)
                    {
                        drop(key);
                    }
                    self.due_ms = Some(now_ms + s.max(1) * 1000);
                    crate::log!(
                        crate::log::Level::Info,
                        "certificate renewal throttled or failed ({}): trying again in {s} s",
                        f.error_code
                    );
                    events.push(CertificateEvent::RenewalFailed {
                        error: Error::new(
                            Code::CertIssuanceRefused,
                            format!(
                                "the hub answered {} (errorCode {}); retrying in {s} s",
                                f.status, f.error_code
                            ),
                        ),
                        will_retry: true,
                    });
                    Action::None
                }
                FailureAction::GiveUp => {
                    self.phase = Phase::Stopped;
                    self.due_ms = None;
                    let error = f.to_error();
                    crate::log!(
                        crate::log::Level::Error,
                        "certificate renewal failed: {error}"
                    );
                    events.push(CertificateEvent::RenewalFailed {
                        error,
                        will_retry: false,
                    });
                    Action::None
                }
            },
            Response::Issued(chain) => {
                let Phase::Requested { key, .. } = std::mem::replace(&mut self.phase, Phase::Idle)
                else {
                    return Action::None;
                };
                let now_s = (now_ms / 1000) as i64;
                let checked =
                    verify_issued(&chain, &key, &self.settings.roots, now_s).and_then(|issued| {
                        let certified = key.certified_key(&issued.chain)?;
                        let mut policy = self.settings.policy.clone();
                        policy.set_client_key(certified);
                        Ok((issued, policy.build()?))
                    });
                match checked {
                    Ok((issued, tls)) => {
                        crate::log!(
                            crate::log::Level::Info,
                            "certificate issued for {} (valid until {}): reconnecting with it",
                            issued.common_name,
                            crate::cert::format_utc(issued.not_after)
                        );
                        events.push(CertificateEvent::Issued {
                            not_after: issued.not_after,
                        });
                        let old_key = std::mem::replace(&mut self.key, key);
                        let old_issued = std::mem::replace(&mut self.issued, issued);
                        self.swap = Some(Swap {
                            old_tls: current_tls.clone(),
                            old_key,
                            old_issued,
                        });
                        self.due_ms = None;
                        Action::Reconnect(tls)
                    }
                    Err(error) => {
                        crate::log!(
                            crate::log::Level::Error,
                            "issued certificate refused, the current one stays: {error}"
                        );
                        self.due_ms = Some(now_ms + RETRY_MS);
                        events.push(CertificateEvent::RenewalFailed {
                            error,
                            will_retry: true,
                        });
                        Action::None
                    }
                }
            }
        }
    }

    /// The hub accepted a connection: a certificate on trial is now the one in force.
    pub(crate) fn on_accepted(&mut self, events: &mut Vec<CertificateEvent>) {
        if self.swap.take().is_some() {
            crate::log!(
                crate::log::Level::Info,
                "renewed certificate in force (valid until {})",
                crate::cert::format_utc(self.issued.not_after)
            );
            events.push(CertificateEvent::Swapped {
                chain: self.issued.chain.clone(),
                key_pkcs8: self.key.pkcs8_der().map(KeyBytes),
                not_after: self.issued.not_after,
            });
            self.due_ms = Some(self.issued.renew_at(self.settings.fraction).max(0) as u64 * 1000);
        }
    }

    /// A connection with a certificate on trial failed with `error` before the hub accepted
    /// it: the old TLS configuration to go back to, when the hub refused the certificate.
    pub(crate) fn on_refused(
        &mut self,
        error: &Error,
        now_ms: u64,
        events: &mut Vec<CertificateEvent>,
    ) -> Option<Arc<ClientConfig>> {
        if !crate::session::is_fatal(error.code()) {
            return None;
        }
        let swap = self.swap.take()?;
        self.key = swap.old_key;
        self.issued = swap.old_issued;
        self.phase = Phase::Idle;
        self.due_ms = Some(now_ms + RETRY_MS);
        crate::log!(
            crate::log::Level::Error,
            "the hub refused the renewed certificate ({error}): rolled back to the previous one"
        );
        events.push(CertificateEvent::RolledBack {
            error: error.clone(),
        });
        Some(swap.old_tls)
    }
}
