//! The DPS registration as a sans-IO machine on the session's link ([`crate::session`]'s
//! TLS + MQTT pump): it owns no socket and reads no clock, like [`crate::session::Session`].
//!
//! The driver (the blocking [`super::provision`], or a firmware's own socket loop through
//! `tether_dps_session_*`) opens a transport to the DPS endpoint and calls:
//! - [`DpsSession::start`] once the transport is open,
//! - [`DpsSession::handle_input`] with every chunk of bytes received,
//! - [`DpsSession::handle_timeout`] when [`DpsSession::next_deadline`] has passed,
//! - [`DpsSession::transport_closed`] or [`DpsSession::connection_lost`] when the transport
//!   ended,
//!
//! sends what [`DpsSession::poll_output`] gives after each of them, and stops when
//! [`DpsSession::outcome`] is set (sending the output once more: a DISCONNECT, an alert).
//!
//! The flow: CONNECT as the registration id, subscribe to `$dps/registrations/res/#`,
//! publish the registration, poll the operation as long as DPS answers 202 (waiting its
//! `retry-after`), and finish with the assigned hub and device id from the final 200.
//! Throttling (429) and server errors (5xx) are waited out the same way, all within
//! [`DpsRequest::timeout`] of [`DpsSession::start`].

use std::sync::Arc;

use crate::auth::sas::{write_token, Resource, MAX_TOKEN_LEN};
use crate::error::{Code, Error, Result};
use crate::handshake;
use crate::mqtt::codec::DEFAULT_MAX_PACKET_SIZE;
use crate::mqtt::codec::{self, encode_to_vec, Connect, Decoded, Packet, Publish};
use crate::mqtt::topics::build_string;
use crate::mqtt::{credentials, dps};
use crate::session::link::Link;
use crate::transport::Transport;

use super::{Assignment, DpsCredential, DpsRequest};

/// Where the registration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DpsStatus {
    /// Not started, or under way.
    InProgress,
    /// DPS assigned the device: [`DpsSession::outcome`] holds the assignment.
    Assigned,
    /// The registration failed: [`DpsSession::outcome`] holds the error.
    Failed,
}

/// What the machine waits for on a live link.
enum Step {
    /// CONNACK.
    Connack,
    /// SUBACK of the response subscription.
    Suback,
    /// The response to request `rid`.
    Response,
    /// DPS asked us to wait: publish `topic` (with the registration body when `register`)
    /// at `at_ms`.
    Retry {
        at_ms: u64,
        topic: String,
        register: bool,
    },
}

enum State {
    /// [`DpsSession::start`] not called yet.
    Idle,
    /// The transport is open.
    Live { link: Link, step: Step },
    /// Finished. `closed` keeps the link whose output (DISCONNECT, an alert) may still
    /// wait for [`DpsSession::poll_output`].
    Done {
        closed: Option<Link>,
        outcome: Result<Assignment>,
    },
}

/// A DPS registration without I/O. See the module documentation.
pub struct DpsSession {
    request: DpsRequest,
    state: State,
    /// The whole registration must finish by then (Unix ms).
    deadline_ms: u64,
    /// The request id of the last publish (also its packet id).
    rid: u16,
    /// A CSR (base64 DER) for DPS to issue the device certificate from (api-version
    /// `2025-07-01-preview`).
    csr: Option<String>,
    /// The chain DPS issued for the CSR (DER, leaf first; not yet verified).
    issued: Option<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for DpsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpsSession")
            .field("registration_id", &self.request.registration_id)
            .field("status", &self.status())
            .finish()
    }
}

impl DpsSession {
    /// A registration to perform; checks the request (an X.509 credential needs a client
    /// certificate in the TLS configuration). Not started yet.
    pub fn new(request: DpsRequest) -> Result<DpsSession> {
        if matches!(request.credential, DpsCredential::X509) && !request.has_client_cert {
            return Err(Error::new(
                Code::InvalidArgument,
                "X.509 provisioning needs a TLS configuration with the device certificate",
            ));
        }
        handshake::server_name(&request.endpoint)?;
        Ok(DpsSession {
            request,
            state: State::Idle,
            deadline_ms: 0,
            rid: 0,
            csr: None,
            issued: None,
        })
    }

    /// Asks DPS to issue the device certificate from `csr_base64` (a PKCS#10 request, base64
    /// DER, CN = the registration id): the registration uses api-version
    /// `2025-07-01-preview`, and [`DpsSession::issued_chain`] holds the chain once assigned.
    /// Call before [`DpsSession::start`].
    pub fn set_csr(&mut self, csr_base64: &str) -> Result<()> {
        if !matches!(self.state, State::Idle) {
            return Err(Error::new(
                Code::InvalidState,
                "the CSR must be set before the registration starts",
            ));
        }
        self.csr = Some(csr_base64.to_owned());
        Ok(())
    }

    /// The certificate chain DPS issued for the CSR (DER, leaf first), once assigned. Not
    /// verified here: see [`crate::auth::csr::verify_issued`].
    pub fn issued_chain(&self) -> Option<&[Vec<u8>]> {
        self.issued.as_deref()
    }

    /// Sets the transport of the connection the driver opened (`auto` resolved to MQTT or
    /// WebSockets), before [`DpsSession::start`].
    pub fn set_transport(&mut self, transport: Transport) -> Result<()> {
        if !matches!(self.state, State::Idle) {
            return Err(Error::new(
                Code::InvalidState,
                "the transport must be set before the registration starts",
            ));
        }
        self.request.transport = transport;
        Ok(())
    }

    /// The registration this machine performs.
    pub fn request(&self) -> &DpsRequest {
        &self.request
    }

    /// Starts the registration over a transport the driver has just opened to the DPS
    /// endpoint: queues the TLS handshake and the MQTT CONNECT (with a SAS token valid for
    /// an hour from `now_ms`, Unix ms). The registration must finish within the request's
    /// timeout from now.
    pub fn start(&mut self, now_ms: u64) -> Result<()> {
        if !matches!(self.state, State::Idle) {
            return Err(Error::new(
                Code::InvalidState,
                "the registration was already started",
            ));
        }
        let reg = &self.request.registration_id;
        let scope = &self.request.id_scope;
        let username = build_string(|s| {
            dps::username_to(
                s,
                scope,
                reg,
                self.csr.as_ref().map(|_| credentials::DPS_CSR_API_VERSION),
                Some(&format!("tether/{}", crate::VERSION)),
            )
        })?;
        let now_unix = now_ms / 1000;
        let password = match &self.request.credential {
            DpsCredential::SymmetricKey { key, group } => {
                if now_unix < handshake::CLOCK_FLOOR_UNIX as u64 {
                    return Err(Error::new(
                        Code::ClockNotSet,
                        "device clock is not set (before 2025): set the time before provisioning",
                    ));
                }
                let mut buf = zeroize::Zeroizing::new([0u8; MAX_TOKEN_LEN]);
                let resource = Resource::registration(scope, reg)?;
                let skn = group.then_some("registration");
                Some(zeroize::Zeroizing::new(
                    write_token(
                        &resource,
                        key.as_ref(),
                        skn,
                        now_unix + u64::from(crate::defaults::TOKEN_TTL_SECS),
                        &mut buf[..],
                    )?
                    .to_owned(),
                ))
            }
            DpsCredential::X509 => None,
        };
        let connect = Connect {
            client_id: reg,
            username: Some(&username),
            password: password.as_deref().map(|p| p.as_str()),
            keep_alive_s: crate::defaults::KEEP_ALIVE_SECS,
            clean_session: true,
            will: None,
        };
        let bytes =
            zeroize::Zeroizing::new(encode_to_vec(connect.encoded_len(), |b| connect.encode(b))?);
        let link = Link::new(
            Arc::clone(&self.request.tls),
            &self.request.endpoint,
            self.request.has_client_cert,
            Some(bytes),
            // MQTT over WebSockets on the DPS endpoint's `/$iothub/websocket`, as on the hub.
            (self.request.transport == Transport::WebSockets)
                .then_some(crate::mqtt::codec::DEFAULT_MAX_PACKET_SIZE),
        )?;
        let timeout_ms = u64::try_from(self.request.timeout.as_millis()).unwrap_or(u64::MAX);
        self.deadline_ms = now_ms.saturating_add(timeout_ms);
        self.state = State::Live {
            link,
            step: Step::Connack,
        };
        Ok(())
    }

    /// Where the registration is.
    pub fn status(&self) -> DpsStatus {
        match &self.state {
            State::Done { outcome: Ok(_), .. } => DpsStatus::Assigned,
            State::Done {
                outcome: Err(_), ..
            } => DpsStatus::Failed,
            _ => DpsStatus::InProgress,
        }
    }

    /// The outcome once finished: the assignment, or why the registration failed.
    pub fn outcome(&self) -> Option<&Result<Assignment>> {
        match &self.state {
            State::Done { outcome, .. } => Some(outcome),
            _ => None,
        }
    }

    /// Feeds bytes received from the transport. A failure ends the registration (see
    /// [`DpsSession::outcome`]) and is also returned; then send the output and close the
    /// transport.
    pub fn handle_input(&mut self, data: &[u8], now_ms: u64) -> Result<()> {
        let result = self.input(data, now_ms);
        if let Err(e) = &result {
            self.finish(Err(e.clone()));
        }
        result
    }

    fn input(&mut self, data: &[u8], now_ms: u64) -> Result<()> {
        let link = match &mut self.state {
            State::Live { link, .. } => link,
            State::Done {
                closed: Some(link), ..
            } => {
                // What arrives after the end (a close_notify) is taken and not acted on.
                let _ = link.receive(data);
                return Ok(());
            }
            _ => {
                return Err(Error::new(
                    Code::InvalidState,
                    "the registration has no transport to receive on",
                ))
            }
        };
        let received = link.receive(data)?;
        loop {
            let State::Live { link, .. } = &mut self.state else {
                return Ok(());
            };
            let rx = link.take_rx();
            match codec::decode(&rx, DEFAULT_MAX_PACKET_SIZE)
                .map_err(|e| e.context("malformed packet from DPS"))?
            {
                Decoded::Complete { packet, len } => {
                    let result = self.handle_packet(packet, now_ms);
                    if let State::Live { link, .. } = &mut self.state {
                        link.restore_rx(rx, len);
                    }
                    result?;
                }
                Decoded::Incomplete { .. } => {
                    link.restore_rx(rx, 0);
                    break;
                }
            }
        }
        if received.peer_closed {
            return Err(Error::new(
                Code::ConnectionClosed,
                "DPS closed the connection",
            ));
        }
        Ok(())
    }

    fn handle_packet(&mut self, packet: Packet<'_>, now_ms: u64) -> Result<()> {
        let State::Live { step, .. } = &self.state else {
            return Ok(());
        };
        match (step, packet) {
            (Step::Connack, Packet::ConnAck { code, .. }) => {
                code.result()
                    .map_err(|e| e.context("DPS refused the connection"))?;
                let filters = [(dps::DPS_SUBSCRIBE_TOPIC, 1u8)];
                let bytes = encode_to_vec(codec::subscribe_len(1, &filters), |b| {
                    codec::encode_subscribe(1, &filters, b)
                })?;
                self.write(&bytes)?;
                self.set_step(Step::Suback);
                Ok(())
            }
            (Step::Suback, Packet::SubAck { return_codes, .. }) => {
                if return_codes.first() == Some(&0x80) {
                    return Err(Error::new(
                        Code::NotAuthorized,
                        "DPS refused the response subscription",
                    ));
                }
                self.rid = 1;
                let topic = build_string(|s| dps::register_topic_to(s, "1"))?;
                self.publish(&topic, true)?;
                self.set_step(Step::Response);
                Ok(())
            }
            (Step::Response, Packet::Publish(p)) => {
                if p.qos == 1 {
                    let ack = encode_to_vec(Ok(4), |b| codec::encode_puback(p.pkid, b))?;
                    self.write(&ack)?;
                }
                self.on_response(p.topic, p.payload, now_ms)
            }
            // Anything else (PUBACKs of our requests, stray packets) is not waited for.
            _ => Ok(()),
        }
    }

    fn on_response(&mut self, topic: &str, body: &[u8], now_ms: u64) -> Result<()> {
        let reg = self.request.registration_id.clone();
        let topic = dps::parse_response_topic(topic)?;
        let parsed = dps::parse_response_body(body)?;
        match topic.status {
            200 => {
                if self.csr.is_some() {
                    // A hub that speaks MQTT v5 only is refused before anything else.
                    self.issued = credentials::parse_dps_issued(body)?.map(|i| i.chain);
                }
                if let Ok(bytes) = encode_to_vec(Ok(2), codec::encode_disconnect) {
                    let _ = self.write(&bytes);
                }
                let outcome = match (parsed.status, parsed.assigned_hub, parsed.device_id) {
                    (Some("assigned"), Some(hub), Some(device)) => {
                        dps::check_assignment(hub, device)?;
                        crate::log!(
                            crate::log::Level::Info,
                            "{reg} assigned to {hub} as {device}"
                        );
                        Ok(Assignment {
                            assigned_hub: hub.to_owned(),
                            device_id: device.to_owned(),
                        })
                    }
                    (status, ..) => Err(Error::new(
                        Code::NotAuthorized,
                        format!(
                            "DPS finished the registration with status {}: {}",
                            status.unwrap_or("(none)"),
                            parsed.error_message.unwrap_or("no hub was assigned")
                        ),
                    )),
                };
                self.finish(outcome);
                Ok(())
            }
            202 | 429 | 500..=599 => {
                let status = topic.status;
                let wait_s = topic.retry_after_s.map_or(
                    u64::from(crate::defaults::DPS_POLL_INTERVAL_MS / 1000),
                    u64::from,
                );
                let wait_s = wait_s.clamp(1, u64::from(crate::defaults::DPS_POLL_MAX_MS / 1000));
                let at_ms = now_ms.saturating_add(wait_s * 1000);
                if at_ms >= self.deadline_ms {
                    return Err(self.timed_out());
                }
                crate::log!(
                    crate::log::Level::Info,
                    "DPS answered {status}; polling again in {wait_s} s"
                );
                let rid = self.rid.wrapping_add(1).max(1).to_string();
                let (topic, register) = match (status, parsed.operation_id) {
                    (202, Some(op)) => (build_string(|s| dps::poll_topic_to(s, &rid, op))?, false),
                    // Throttled or failed before an operation existed: register again.
                    _ => (build_string(|s| dps::register_topic_to(s, &rid))?, true),
                };
                self.set_step(Step::Retry {
                    at_ms,
                    topic,
                    register,
                });
                Ok(())
            }
            other => Err(Error::new(
                if other == 401 || other == 403 {
                    Code::NotAuthorized
                } else {
                    Code::MqttConnectionRefused
                },
                format!(
                    "DPS refused the registration of {reg} with status {other}: {}",
                    parsed.error_message.unwrap_or("no message")
                ),
            )),
        }
    }

    /// Moves due timers: the registration's deadline, and the next poll after a
    /// `retry-after`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if let Err(e) = self.timeout(now_ms) {
            self.finish(Err(e));
        }
    }

    fn timeout(&mut self, now_ms: u64) -> Result<()> {
        let State::Live { step, .. } = &mut self.state else {
            return Ok(());
        };
        if now_ms >= self.deadline_ms {
            return Err(self.timed_out());
        }
        if let Step::Retry {
            at_ms,
            topic,
            register,
        } = step
        {
            if now_ms >= *at_ms {
                let topic = std::mem::take(topic);
                let register = *register;
                self.rid = self.rid.wrapping_add(1).max(1);
                self.publish(&topic, register)?;
                self.set_step(Step::Response);
            }
        }
        Ok(())
    }

    /// When [`DpsSession::handle_timeout`] should next be called (Unix ms), if ever.
    pub fn next_deadline(&self) -> Option<u64> {
        match &self.state {
            State::Live {
                step: Step::Retry { at_ms, .. },
                ..
            } => Some((*at_ms).min(self.deadline_ms)),
            State::Live { .. } => Some(self.deadline_ms),
            _ => None,
        }
    }

    /// Appends the bytes to send on the transport to `out`; returns how many.
    pub fn poll_output(&mut self, out: &mut Vec<u8>) -> usize {
        match &mut self.state {
            State::Live { link, .. }
            | State::Done {
                closed: Some(link), ..
            } => link.poll_output(out),
            _ => 0,
        }
    }

    /// Tells the machine the peer closed the transport (end of stream). During the TLS
    /// handshake the failure names what the server's messages suggest (no TLS on this port,
    /// a client certificate required).
    pub fn transport_closed(&mut self) {
        if let State::Live { link, .. } = &mut self.state {
            let error = if link.is_handshaking() {
                link.transport_closed()
            } else {
                Error::new(Code::ConnectionClosed, "DPS closed the connection")
            };
            self.finish(Err(error));
        }
    }

    /// Tells the machine the transport failed: the registration ends with `error`.
    pub fn connection_lost(&mut self, error: Error) {
        if matches!(self.state, State::Live { .. }) {
            self.finish(Err(error));
        }
    }

    fn timed_out(&self) -> Error {
        let handshaking = matches!(&self.state, State::Live { link, .. } if link.is_handshaking());
        if handshaking {
            Error::new(
                Code::Timeout,
                format!(
                    "TLS handshake with {} did not finish in time",
                    self.request.endpoint
                ),
            )
        } else {
            Error::new(
                Code::Timeout,
                format!(
                    "DPS registration of {} did not finish within {:?}",
                    self.request.registration_id, self.request.timeout
                ),
            )
        }
    }

    /// Ends a started registration: the one way it ends, with its outcome.
    fn finish(&mut self, outcome: Result<Assignment>) {
        let closed = match std::mem::replace(&mut self.state, State::Idle) {
            State::Live { link, .. } => Some(link),
            State::Done { closed, outcome } => {
                // Already finished: the first outcome stands.
                self.state = State::Done { closed, outcome };
                return;
            }
            // Not started: a misuse (input before start) does not end it.
            State::Idle => return,
        };
        self.state = State::Done { closed, outcome };
    }

    fn set_step(&mut self, next: Step) {
        if let State::Live { step, .. } = &mut self.state {
            *step = next;
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.state {
            State::Live { link, .. } => link.write(bytes),
            _ => Err(Error::new(Code::InvalidState, "no transport to send on")),
        }
    }

    /// Publishes request `self.rid` on `topic`, with the registration body when `register`.
    fn publish(&mut self, topic: &str, register: bool) -> Result<()> {
        let body = if register {
            match &self.csr {
                Some(csr) => credentials::dps_register_payload(&self.request.registration_id, csr)?,
                None => {
                    build_string(|s| dps::register_payload_to(s, &self.request.registration_id))?
                }
            }
        } else {
            String::new()
        };
        let p = Publish {
            topic,
            payload: body.as_bytes(),
            qos: 1,
            pkid: self.rid,
            dup: false,
        };
        let bytes = encode_to_vec(p.encoded_len(), |b| p.encode(b))?;
        self.write(&bytes)
    }
}
