//! Retry timing: exponential back-off with jitter, as IoT Hub's device SDKs do it.
//!
//! [`retry_delay_ms`] is the embedded C SDK's `az_iot_calculate_retry_delay`, checked against
//! its published vectors; [`Backoff`] keeps the attempt count and draws the jitter from a
//! seed the caller supplies (the library reads no clock and no entropy source by itself, so
//! tests are deterministic).

/// The delay before retry number `attempt` (1 = first retry), in milliseconds.
///
/// The base delay `min_ms * 2^attempt` is capped at `max_ms`; `jitter_ms` is added while it
/// still fits under `max_ms` (otherwise the delay is `max_ms`); the time the failed
/// operation already took, `operation_ms`, is subtracted; the result is never negative.
pub fn retry_delay_ms(
    operation_ms: i64,
    attempt: u32,
    min_ms: i64,
    max_ms: i64,
    jitter_ms: i64,
) -> i64 {
    let exponential = if attempt <= 30 {
        min_ms.saturating_mul(1i64 << attempt)
    } else {
        i64::MAX
    };
    let mut delay = exponential.min(max_ms);
    if max_ms - delay > jitter_ms {
        delay += jitter_ms;
    } else {
        delay = max_ms;
    }
    (delay - operation_ms).max(0)
}

/// Whether an IoT Hub or DPS status code is worth retrying (throttled or a server error).
pub fn is_retriable_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

/// Back-off state across consecutive failures of one operation (such as connecting).
#[derive(Clone, Debug)]
pub struct Backoff {
    attempt: u32,
    min_ms: i64,
    max_ms: i64,
    max_jitter_ms: i64,
    rng: u64,
}

impl Backoff {
    /// Delays start at `min_ms * 2`, are capped at `max_ms`, and get up to `max_jitter_ms` of
    /// random jitter drawn from `seed`.
    pub fn new(min_ms: u32, max_ms: u32, max_jitter_ms: u32, seed: u64) -> Self {
        Backoff {
            attempt: 0,
            min_ms: i64::from(min_ms),
            max_ms: i64::from(max_ms.max(min_ms)),
            max_jitter_ms: i64::from(max_jitter_ms),
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt, given how long the failed one took.
    pub fn next_delay_ms(&mut self, operation_ms: u64) -> u64 {
        self.attempt = self.attempt.saturating_add(1);
        let jitter = if self.max_jitter_ms > 0 {
            (self.next_random() % (self.max_jitter_ms as u64 + 1)) as i64
        } else {
            0
        };
        let operation = i64::try_from(operation_ms).unwrap_or(i64::MAX);
        retry_delay_ms(operation, self.attempt, self.min_ms, self.max_ms, jitter) as u64
    }

    /// How many delays were handed out since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: enough to spread devices apart; not for cryptography.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_matches_the_embedded_sdk_vectors() {
        assert_eq!(retry_delay_ms(5, 1, 500, 100_000, 1234), 2229);
        assert_eq!(retry_delay_ms(5000, 1, 500, 100_000, 4321), 321);
        assert_eq!(retry_delay_ms(10_000, 1, 500, 100_000, 4321), 0);
        assert_eq!(retry_delay_ms(5, 5, 500, 10_000, 4321), 9995);
        assert_eq!(retry_delay_ms(0, 40, 500, 10_000, 0), 10_000);
    }

    #[test]
    fn backoff_grows_is_capped_and_resets() {
        let mut b = Backoff::new(500, 8_000, 0, 7);
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay_ms(0)).collect();
        assert_eq!(delays, [1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!(b.next_delay_ms(0), 1000);
    }

    #[test]
    fn jitter_stays_within_bounds_and_depends_on_the_seed() {
        let mut a = Backoff::new(500, 60_000, 1000, 1);
        let mut b = Backoff::new(500, 60_000, 1000, 2);
        let da = a.next_delay_ms(0);
        let db = b.next_delay_ms(0);
        assert!((1000..=2000).contains(&da) && (1000..=2000).contains(&db));
        let spread: std::collections::HashSet<u64> = (1..50u64)
            .map(|seed| Backoff::new(500, 60_000, 1000, seed).next_delay_ms(0))
            .collect();
        assert!(spread.len() > 10, "jitter should spread devices apart");
    }

    #[test]
    fn retriable_statuses() {
        assert!(is_retriable_status(429) && is_retriable_status(503));
        assert!(
            !is_retriable_status(400) && !is_retriable_status(401) && !is_retriable_status(200)
        );
    }
}
