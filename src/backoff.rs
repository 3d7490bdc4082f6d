//! Retry delays, in one place: the jittered exponential `Backoff` of the
//! watch and intake loops (0.8 s → 30 s, ±25 %), the full-jitter delay of
//! callback retries, and the growing redelivery delay of a queue message whose
//! Job could not be created yet. Pure: no clock, no I/O; randomness comes in as
//! a seed or a value in [0, 1].

use std::time::Duration;

/// `initial * 2^attempt`, capped at `max` (attempt 0 is `initial`).
pub fn capped_exponential(initial: Duration, max: Duration, attempt: u32) -> Duration {
    initial.saturating_mul(1u32 << attempt.min(31)).min(max)
}

/// Full jitter: `cap * r` for `r` in [0, 1] (a non-finite `r` counts as 1).
pub fn full_jitter(cap: Duration, r: f64) -> Duration {
    let r = if r.is_finite() {
        r.clamp(0.0, 1.0)
    } else {
        1.0
    };
    cap.mul_f64(r)
}

/// How long a message whose Job could not be created yet stays in the queue
/// before its next delivery: 5 s, doubling with each receive, at most 300 s.
pub fn redelivery_delay(receive_count: u32) -> Duration {
    let n = receive_count.clamp(1, 8) - 1;
    capped_exponential(Duration::from_secs(5), Duration::from_secs(300), n)
}

/// Exponential backoff 0.8 s → 30 s with ±25 % jitter; reset on success.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    seed: u64,
}

impl Backoff {
    pub const INITIAL: Duration = Duration::from_millis(800);
    pub const MAX: Duration = Duration::from_secs(30);

    pub fn new(seed: u64) -> Backoff {
        Backoff {
            attempt: 0,
            seed: seed | 1,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay (jittered); doubles the base up to MAX.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter only, no security role.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = capped_exponential(Self::INITIAL, Self::MAX, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let frac = (self.seed % 1000) as f64 / 1000.0; // [0,1)
        base.mul_f64(0.75 + 0.5 * frac).min(Self::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_thirty_seconds_with_jitter() {
        let mut b = Backoff::new(42);
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(
            delays[0] >= Duration::from_millis(600) && delays[0] <= Duration::from_millis(1000)
        );
        assert!(delays.iter().all(|d| *d <= Backoff::MAX));
        assert!(delays[11] >= Duration::from_millis(22_500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1000));
    }

    #[test]
    fn retry_delays_grow_and_cap() {
        assert_eq!(redelivery_delay(0), Duration::from_secs(5));
        assert_eq!(redelivery_delay(1), Duration::from_secs(5));
        assert_eq!(redelivery_delay(2), Duration::from_secs(10));
        assert_eq!(redelivery_delay(7), Duration::from_secs(300));
        assert_eq!(redelivery_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn full_jitter_stays_within_its_cap() {
        let cap = Duration::from_secs(8);
        assert_eq!(full_jitter(cap, 0.5), Duration::from_secs(4));
        assert_eq!(full_jitter(cap, 7.0), cap);
        assert_eq!(full_jitter(cap, f64::NAN), cap);
        assert_eq!(
            capped_exponential(Duration::from_secs(1), cap, 40),
            cap,
            "no overflow"
        );
    }
}
