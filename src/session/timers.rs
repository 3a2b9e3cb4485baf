//! One table of deadlines (Unix ms), indexed by [`Timer`]: the earliest armed one is the
//! session's next deadline ([`super::Session::next_deadline`]).

/// What a deadline is for, in the order [`super::Session::handle_timeout`] acts on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// TLS + CONNACK must be done by then (while connecting).
    Connack,
    /// The SAS token is due for renewal: reconnect.
    Renewal,
    /// The oldest QoS 1 message written on this connection has been unacknowledged for a
    /// keep-alive period: the connection is stalled even while we keep sending (which
    /// holds the keep-alive ping back).
    Stall,
    /// A PINGREQ went unanswered for a keep-alive period.
    PingResp,
    /// Nothing was sent for a keep-alive period: send a PINGREQ.
    KeepAlive,
}

impl Timer {
    /// Every timer, in the order they are acted on.
    pub(crate) const ALL: [Timer; 5] = [
        Timer::Connack,
        Timer::Renewal,
        Timer::Stall,
        Timer::PingResp,
        Timer::KeepAlive,
    ];
}

/// The deadlines of one session.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timers {
    deadlines: [Option<u64>; Timer::ALL.len()],
    /// The MQTT keep-alive in ms (0: none).
    keep_alive_ms: u64,
    /// When the connection last carried a packet from us.
    last_sent_ms: u64,
}

impl Timers {
    pub(crate) fn new(keep_alive_ms: u64) -> Timers {
        Timers {
            keep_alive_ms,
            ..Timers::default()
        }
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<u64> {
        self.deadlines[timer as usize]
    }

    pub(crate) fn set(&mut self, timer: Timer, deadline: Option<u64>) {
        self.deadlines[timer as usize] = deadline;
    }

    /// The earliest deadline, if any: when `handle_timeout` is next due.
    pub(crate) fn next(&self) -> Option<u64> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// The first timer (in [`Timer::ALL`] order) whose deadline has passed at `now_ms`.
    pub(crate) fn expired(&self, now_ms: u64) -> Option<Timer> {
        Timer::ALL
            .into_iter()
            .find(|t| self.get(*t).is_some_and(|d| now_ms >= d))
    }

    /// A new transport connection started at `now_ms`: only the CONNACK deadline runs.
    pub(crate) fn connecting(&mut self, now_ms: u64, connack_deadline_ms: u64) {
        self.deadlines = Default::default();
        self.last_sent_ms = now_ms;
        self.set(Timer::Connack, Some(connack_deadline_ms));
    }

    /// The hub accepted the connection: keep-alive and renewal run.
    pub(crate) fn connected(&mut self, renew_at_ms: Option<u64>) {
        self.set(Timer::Connack, None);
        self.set(Timer::Renewal, renew_at_ms);
        self.arm_keep_alive();
    }

    /// The connection ended: nothing runs.
    pub(crate) fn stopped(&mut self) {
        self.deadlines = Default::default();
    }

    /// A packet was written at `now_ms`: the keep-alive period starts again (unless a ping
    /// is outstanding).
    pub(crate) fn sent(&mut self, now_ms: u64) {
        self.last_sent_ms = now_ms;
        if self.get(Timer::KeepAlive).is_some() {
            self.arm_keep_alive();
        }
    }

    /// A PINGREQ was sent at `now_ms`: its answer is due within the keep-alive.
    pub(crate) fn ping_sent(&mut self, now_ms: u64) {
        self.set(Timer::KeepAlive, None);
        self.set(
            Timer::PingResp,
            Some(now_ms.saturating_add(self.keep_alive_ms)),
        );
    }

    /// The PINGRESP arrived.
    pub(crate) fn ping_answered(&mut self) {
        if self.get(Timer::PingResp).is_some() {
            self.set(Timer::PingResp, None);
            self.arm_keep_alive();
        }
    }

    /// The stall deadline for the oldest QoS 1 message written on this connection at
    /// `oldest_sent_ms` (`None`: nothing is waiting for PUBACK).
    pub(crate) fn oldest_unacked(&mut self, oldest_sent_ms: Option<u64>) {
        let deadline = if self.keep_alive_ms == 0 {
            None
        } else {
            oldest_sent_ms.map(|t| t.saturating_add(self.keep_alive_ms))
        };
        self.set(Timer::Stall, deadline);
    }

    fn arm_keep_alive(&mut self) {
        let deadline =
            (self.keep_alive_ms > 0).then(|| self.last_sent_ms.saturating_add(self.keep_alive_ms));
        self.set(Timer::KeepAlive, deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_armed_deadline_is_next_and_acted_on_in_order() {
        let mut t = Timers::new(60_000);
        assert_eq!(t.next(), None);
        t.connecting(1_000, 31_000);
        assert_eq!(t.next(), Some(31_000));
        assert_eq!(t.expired(30_999), None);
        assert_eq!(t.expired(31_000), Some(Timer::Connack));
        t.connected(Some(50_000));
        assert_eq!(t.next(), Some(50_000));
        t.sent(2_000);
        assert_eq!(t.get(Timer::KeepAlive), Some(62_000));
        t.oldest_unacked(Some(1_500));
        assert_eq!(t.next(), Some(50_000));
        assert_eq!(t.expired(70_000), Some(Timer::Renewal));
        t.set(Timer::Renewal, None);
        assert_eq!(t.expired(70_000), Some(Timer::Stall));
        t.oldest_unacked(None);
        t.ping_sent(62_000);
        assert_eq!(t.get(Timer::KeepAlive), None);
        t.sent(63_000);
        assert_eq!(
            t.get(Timer::KeepAlive),
            None,
            "held back while a ping is out"
        );
        assert_eq!(t.next(), Some(122_000));
        t.ping_answered();
        assert_eq!(t.next(), Some(123_000));
        t.stopped();
        assert_eq!(t.next(), None);
    }

    #[test]
    fn no_keep_alive_arms_no_ping_and_no_stall() {
        let mut t = Timers::new(0);
        t.connecting(0, 10);
        t.connected(None);
        t.sent(5);
        t.oldest_unacked(Some(5));
        assert_eq!(t.next(), None);
    }
}
