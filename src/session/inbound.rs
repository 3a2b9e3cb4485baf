//! What the hub sends, decoded into [`Event`]s: the packets the link decrypted, the topics
//! and property bags of received messages, and the acknowledgements owed for QoS 1
//! messages once the application has taken them.

use std::collections::VecDeque;

use crate::error::{Code, Error, Result};
use crate::mqtt::codec::{self, Decoded, Packet};
use crate::mqtt::properties::parse_bag;
use crate::mqtt::topics::{self, TwinTopic};

use super::{Event, Session};

/// A received QoS 1 message waiting for the application: its PUBACK is sent when the
/// application has taken the event ([`Session::acknowledge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundAck {
    pub(super) generation: u64,
    pub(super) pkid: u16,
}

#[derive(Clone, Copy, Debug)]
struct PendingAck {
    /// Absolute index of the event that carries the message.
    event: u64,
    ack: InboundAck,
}

/// The events waiting for the application and the acknowledgements tied to them.
#[derive(Default)]
pub(crate) struct Inbound {
    events: VecDeque<Event>,
    /// Events taken by the application so far (absolute index of `events[0]`).
    events_taken: u64,
    /// QoS 1 messages received and not yet acknowledged, oldest first.
    pending_acks: VecDeque<PendingAck>,
}

impl Inbound {
    pub(crate) fn push(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Events waiting.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// The next event, with the acknowledgement of the message it carries, if any.
    pub(crate) fn take(&mut self) -> Option<(Event, Option<InboundAck>)> {
        let event = self.events.pop_front()?;
        let index = self.events_taken;
        self.events_taken += 1;
        let ack = match self.pending_acks.front() {
            Some(p) if p.event == index => self.pending_acks.pop_front().map(|p| p.ack),
            _ => None,
        };
        Some((event, ack))
    }

    /// Holds `ack` until the event pushed at relative index `first_event` is taken; returns
    /// it when the message produced no event (a topic not for this device): send it now.
    pub(crate) fn defer_ack(&mut self, first_event: usize, ack: InboundAck) -> Option<InboundAck> {
        if self.events.len() == first_event {
            return Some(ack);
        }
        self.pending_acks.push_back(PendingAck {
            event: self.events_taken + first_event as u64,
            ack,
        });
        None
    }
}

/// The event for a message received on `topic`; `None` for a topic not for this device.
fn decode_publish(topic: &str, payload: Vec<u8>) -> Result<Option<Event>> {
    if topic.starts_with("devices/") {
        let c2d = topics::parse_c2d_topic(topic)?;
        let mut properties = Vec::new();
        for p in parse_bag(c2d.properties) {
            let p = p?;
            properties.push((p.decoded_key()?, p.decoded_value()?));
        }
        Ok(Some(Event::C2d {
            properties,
            payload,
        }))
    } else if topic.starts_with("$iothub/methods/POST/") {
        let request = topics::parse_method_request_topic(topic)?;
        Ok(Some(Event::MethodRequest {
            name: request.name.to_owned(),
            request_id: request.request_id.to_owned(),
            payload,
        }))
    } else if topic.starts_with("$iothub/twin/") {
        Ok(Some(match topics::parse_twin_topic(topic)? {
            TwinTopic::Response {
                status,
                request_id,
                version,
            } => Event::TwinResponse {
                request_id: request_id.to_owned(),
                status,
                version: version.and_then(|v| v.parse().ok()),
                payload,
            },
            TwinTopic::Desired { version } => Event::DesiredPatch {
                version: version.parse().map_err(|_| {
                    Error::new(
                        Code::TopicInvalid,
                        format!("desired-properties version {version:?} is not a number"),
                    )
                })?,
                payload,
            },
        }))
    } else {
        // Anything else is not for this device: ignored.
        Ok(None)
    }
}

impl Session {
    /// Decodes and handles the complete packets the link has decrypted, until the
    /// connection ends.
    pub(super) fn read_packets(&mut self, now_ms: u64) -> Result<()> {
        loop {
            let Some(link) = self.state.live_link() else {
                return Ok(());
            };
            let rx = link.take_rx();
            let consumed = match codec::decode(&rx, self.config.options.max_packet_size) {
                Ok(Decoded::Complete { packet, len }) => {
                    let result = self.handle_packet(packet, now_ms);
                    if let Some(link) = self.state.any_link() {
                        link.restore_rx(rx, len);
                    }
                    result?;
                    true
                }
                Ok(Decoded::Incomplete { .. }) => {
                    link.restore_rx(rx, 0);
                    false
                }
                Err(e) => return Err(e.context("malformed packet from the hub")),
            };
            if !consumed {
                return Ok(());
            }
        }
    }

    fn handle_packet(&mut self, packet: Packet<'_>, now_ms: u64) -> Result<()> {
        match packet {
            Packet::ConnAck { code, .. } => self.on_connack(code, now_ms),
            Packet::PubAck { pkid } => {
                if let Some(id) = self.outbox.acked(pkid) {
                    self.inbound.push(Event::TelemetryAcked { id });
                    self.refresh_stall();
                }
                Ok(())
            }
            Packet::SubAck { pkid, return_codes } => {
                for filter in self.outbox.suback(pkid, return_codes) {
                    self.inbound.push(Event::SubscriptionRefused { filter });
                }
                Ok(())
            }
            Packet::UnsubAck { .. } => Ok(()),
            Packet::PingResp => {
                self.timers.ping_answered();
                Ok(())
            }
            Packet::Publish(publish) => {
                let topic = publish.topic;
                let payload = publish.payload.to_vec();
                let before = self.inbound.len();
                match decode_publish(topic, payload.clone()) {
                    Ok(Some(event)) => self.inbound.push(event),
                    Ok(None) => {}
                    Err(reason) => {
                        crate::log!(
                            crate::log::Level::Warn,
                            "undecodable message on {topic:?} handed over raw: {reason}"
                        );
                        self.inbound.push(Event::Undecodable {
                            topic: topic.to_owned(),
                            payload,
                            reason,
                        });
                    }
                }
                if publish.qos == 1 {
                    let ack = InboundAck {
                        generation: self.generation,
                        pkid: publish.pkid,
                    };
                    if let Some(now) = self.inbound.defer_ack(before, ack) {
                        self.acknowledge(now);
                    }
                }
                Ok(())
            }
        }
    }
}
