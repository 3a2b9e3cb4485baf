//! What the session has sent and must see acknowledged: packet ids, the QoS 1 messages in
//! flight (kept for re-sending, in the order the application sent them), the
//! subscriptions waiting for SUBACK, and the bound on output not yet taken.

use std::collections::BTreeMap;

use crate::error::{Code, Error, Result};
use crate::mqtt::codec::PublishFrame;
use crate::mqtt::topics;

use super::Subscription;

/// A QoS 1 message waiting for PUBACK: its PUBLISH, encoded once.
pub(crate) struct Inflight {
    /// The message id the application was given.
    pub id: u64,
    /// The encoded PUBLISH; a re-send sets its DUP flag and writes it again.
    pub frame: PublishFrame,
    /// When it was last written to a connection (`None`: queued while disconnected).
    pub sent_ms: Option<u64>,
}

/// Buffers of acknowledged frames kept for the next messages (so a steady stream of
/// telemetry does not allocate per message): each at most [`SPARE_MAX_CAPACITY`] bytes,
/// [`SPARE_MAX_BYTES`] in all.
const SPARE_MAX_CAPACITY: usize = 4096;
const SPARE_MAX_BYTES: usize = 64 * 1024;

/// Packet ids, in-flight messages and pending subscriptions.
pub(crate) struct Outbox {
    inflight: BTreeMap<u16, Inflight>,
    /// Packet ids of the messages in flight by message id, so in the order the application
    /// sent them (re-send order; the first written is the oldest).
    order: BTreeMap<u64, u16>,
    spare: Vec<Vec<u8>>,
    /// The capacity of the buffers in `spare`.
    spare_bytes: usize,
    pending_subacks: BTreeMap<u16, Vec<String>>,
    next_pkid: u16,
    next_message_id: u64,
    next_request_id: u64,
    /// Bytes of output written and not yet taken by `poll_output`.
    pub unsent: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            inflight: BTreeMap::new(),
            order: BTreeMap::new(),
            spare: Vec::new(),
            spare_bytes: 0,
            pending_subacks: BTreeMap::new(),
            next_pkid: 1,
            next_message_id: 1,
            next_request_id: 1,
            unsent: 0,
        }
    }
}

impl Outbox {
    /// QoS 1 messages sent or queued and not yet acknowledged.
    pub(crate) fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// A packet id used by no message in flight and no pending subscription.
    pub(crate) fn allocate_pkid(&mut self) -> u16 {
        loop {
            let pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&pkid) && !self.pending_subacks.contains_key(&pkid) {
                return pkid;
            }
        }
    }

    /// The next message id handed to the application.
    pub(crate) fn next_message_id(&mut self) -> u64 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }

    /// The next twin request id.
    pub(crate) fn next_request_id(&mut self) -> String {
        let rid = self.next_request_id.to_string();
        self.next_request_id += 1;
        rid
    }

    /// A buffer for the next frame (one of an acknowledged frame when there is one).
    pub(crate) fn frame_buffer(&mut self) -> Vec<u8> {
        let buf = self.spare.pop().unwrap_or_default();
        self.spare_bytes -= buf.capacity();
        buf
    }

    /// Keeps a QoS 1 message until its PUBACK.
    pub(crate) fn insert(&mut self, pkid: u16, message: Inflight) {
        self.order.insert(message.id, pkid);
        self.inflight.insert(pkid, message);
    }

    /// PUBACK `pkid`: the message id it acknowledges, if it was in flight.
    pub(crate) fn acked(&mut self, pkid: u16) -> Option<u64> {
        let m = self.inflight.remove(&pkid)?;
        self.order.remove(&m.id);
        let buf = m.frame.into_buffer();
        let capacity = buf.capacity();
        if capacity <= SPARE_MAX_CAPACITY && self.spare_bytes + capacity <= SPARE_MAX_BYTES {
            self.spare_bytes += capacity;
            self.spare.push(buf);
        }
        Some(m.id)
    }

    /// When the oldest message written to a connection was written: messages are written in
    /// the order they were sent (re-sends too), so it is the first written one in send order
    /// (usually the very first: not a scan of every message in flight).
    pub(crate) fn oldest_sent(&self) -> Option<u64> {
        self.order
            .values()
            .find_map(|pkid| self.inflight.get(pkid).and_then(|m| m.sent_ms))
    }

    /// Re-sends every unacknowledged message in the order the application sent them
    /// (message ids grow with each send; packet ids wrap at 65535): sets its DUP flag, hands
    /// its frame to `write` and marks it written at `now_ms`. Returns how many.
    pub(crate) fn resend(
        &mut self,
        now_ms: u64,
        mut write: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<usize> {
        for pkid in self.order.values() {
            let m = self
                .inflight
                .get_mut(pkid)
                .expect("the order index and the in-flight map hold the same messages");
            m.frame.set_dup();
            write(m.frame.as_bytes())?;
            m.sent_ms = Some(now_ms);
        }
        Ok(self.order.len())
    }

    /// Remembers the filters of SUBSCRIBE `pkid` until its SUBACK.
    pub(crate) fn subscribed(&mut self, pkid: u16, filters: Vec<String>) {
        self.pending_subacks.insert(pkid, filters);
    }

    /// SUBACK `pkid`: the filters it refused.
    pub(crate) fn suback(&mut self, pkid: u16, return_codes: &[u8]) -> Vec<String> {
        let Some(filters) = self.pending_subacks.remove(&pkid) else {
            return Vec::new();
        };
        filters
            .into_iter()
            .zip(return_codes)
            .filter(|(_, code)| **code == 0x80)
            .map(|(filter, _)| filter)
            .collect()
    }

    /// The connection ended: its SUBACKs will not come (subscriptions are sent again on
    /// the next connection).
    pub(crate) fn connection_ended(&mut self) {
        self.pending_subacks.clear();
    }

    /// Refuses a new message of `len` bytes while `limit` bytes of output are reached
    /// (back-pressure; see [`super::SessionOptions::max_unsent_bytes`]).
    pub(crate) fn reserve_output(&self, len: usize, limit: usize) -> Result<()> {
        if self.unsent > 0 && self.unsent.saturating_add(len) > limit {
            // A fixed message: this path is taken at message rate by a fast sender.
            return Err(Error::fixed(
                Code::QueueFull,
                "the output waiting to be sent has reached its limit \
                 (SessionOptions::max_unsent_bytes); send the output and try again",
            ));
        }
        Ok(())
    }
}

/// The topic filters of a subscription.
pub(crate) fn filters(sub: Subscription, device: &str) -> Result<Vec<String>> {
    Ok(match sub {
        Subscription::C2d => vec![topics::build_string(|s| {
            topics::c2d_subscribe_topic_to(s, device)
        })?],
        Subscription::Methods => vec![topics::METHODS_SUBSCRIBE_TOPIC.to_owned()],
        Subscription::Twin => vec![
            topics::TWIN_RESPONSE_SUBSCRIBE_TOPIC.to_owned(),
            topics::TWIN_DESIRED_SUBSCRIBE_TOPIC.to_owned(),
        ],
        Subscription::Credentials => {
            vec![crate::mqtt::credentials::CREDENTIALS_SUBSCRIBE_TOPIC.to_owned()]
        }
    })
}
