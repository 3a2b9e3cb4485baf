//! What the session has sent and must see acknowledged: packet ids, the QoS 1 messages in
//! flight (kept for re-sending, in the order the application sent them), the
//! subscriptions waiting for SUBACK, and the bound on output not yet taken.

use std::collections::BTreeMap;

use crate::error::{Code, Error, Result};
use crate::mqtt::topics;

use super::Subscription;

/// A QoS 1 message waiting for PUBACK.
pub(crate) struct Inflight {
    /// The message id the application was given.
    pub id: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    /// When it was last written to a connection (`None`: queued while disconnected).
    pub sent_ms: Option<u64>,
}

/// Packet ids, in-flight messages and pending subscriptions.
pub(crate) struct Outbox {
    inflight: BTreeMap<u16, Inflight>,
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

    /// Keeps a QoS 1 message until its PUBACK.
    pub(crate) fn insert(&mut self, pkid: u16, message: Inflight) {
        self.inflight.insert(pkid, message);
    }

    /// PUBACK `pkid`: the message id it acknowledges, if it was in flight.
    pub(crate) fn acked(&mut self, pkid: u16) -> Option<u64> {
        self.inflight.remove(&pkid).map(|m| m.id)
    }

    /// Marks message `pkid` as written at `now_ms`.
    pub(crate) fn mark_sent(&mut self, pkid: u16, now_ms: u64) {
        if let Some(m) = self.inflight.get_mut(&pkid) {
            m.sent_ms = Some(now_ms);
        }
    }

    /// When the oldest message written to a connection was written.
    pub(crate) fn oldest_sent(&self) -> Option<u64> {
        self.inflight.values().filter_map(|m| m.sent_ms).min()
    }

    /// The unacknowledged messages in the order the application sent them (message ids
    /// grow with each send; packet ids wrap at 65535).
    pub(crate) fn resend_order(&self) -> Vec<(u16, String, Vec<u8>)> {
        let mut resend: Vec<(u64, u16, String, Vec<u8>)> = self
            .inflight
            .iter()
            .map(|(pkid, m)| (m.id, *pkid, m.topic.clone(), m.payload.clone()))
            .collect();
        resend.sort_by_key(|(id, ..)| *id);
        resend
            .into_iter()
            .map(|(_, pkid, topic, payload)| (pkid, topic, payload))
            .collect()
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
            return Err(Error::new(
                Code::QueueFull,
                format!(
                    "{} bytes are waiting to be sent (limit {limit}); send the output and \
                     try again",
                    self.unsent
                ),
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
    })
}
