//! A token bucket (JOB_CREATE_RATE): `rate` tokens per second, holding at most
//! `burst`. `reserve` takes one token now or in the future and says how long
//! the caller must wait for it, so waiters queue up in order instead of
//! polling. Pure: the caller passes the time (tests inject it) and sleeps.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens at `at`; negative when tokens are promised ahead.
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// `rate` per second (> 0); the burst is the same size (at least 1). It
    /// starts full.
    pub fn new(rate: f64, now: Instant) -> TokenBucket {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let burst = rate.max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes one token; returns how long to wait before using it (zero when
    /// one was there).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        if now > self.at {
            let earned = now.duration_since(self.at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + earned).min(self.burst);
            self.at = now;
        }
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn a_burst_then_one_token_per_period() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, t0);
        // (offset ms from t0, expected wait ms)
        let steps: &[(u64, u128)] = &[
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),   // the burst of 5
            (0, 200), // the 6th waits one period
            (0, 400), // and the 7th two: waiters queue up
            (100, 500),
            (1000, 0), // idle refills, at most to the burst
        ];
        for (i, (at, want)) in steps.iter().enumerate() {
            let got = b.reserve(t0 + Duration::from_millis(*at));
            assert_eq!(ms(got), *want, "step {i}");
        }
    }

    #[test]
    fn fifty_tokens_at_five_per_second_take_nine_seconds() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, t0);
        let last = (0..50).map(|_| b.reserve(t0)).max().unwrap();
        assert_eq!(ms(last), 9000);
    }

    #[test]
    fn idle_time_never_saves_more_than_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, t0);
        let later = t0 + Duration::from_secs(3600);
        let waits: Vec<u128> = (0..4).map(|_| ms(b.reserve(later))).collect();
        assert_eq!(waits, vec![0, 0, 500, 1000]);
    }

    #[test]
    fn slow_rates_have_a_burst_of_one() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.5, t0);
        assert_eq!(ms(b.reserve(t0)), 0);
        assert_eq!(ms(b.reserve(t0)), 2000);
        // Nonsense rates are refused by config; here they fall back to 1/s.
        let mut b = TokenBucket::new(f64::NAN, t0);
        assert_eq!((ms(b.reserve(t0)), ms(b.reserve(t0))), (0, 1000));
    }
}
