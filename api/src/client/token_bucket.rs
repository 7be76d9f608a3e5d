//! A token bucket, as client-go's rate limiter for a client's requests
//! (`flowcontrol.NewTokenBucketRateLimiter`): `burst` calls may go at once,
//! then `qps` per second. Event recorders wait on one before each write, as
//! upstream's event sinks wait on their client's limiter; what arrives
//! meanwhile queues in the recorder's bounded channel and is dropped once
//! that is full.

use std::time::Duration;

use tokio::time::Instant;

/// A request rate: `qps` per second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub qps: f64,
    pub burst: u32,
}

#[derive(Debug)]
pub struct TokenBucket {
    rate: Rate,
    /// May go below zero: tokens already promised to waiting calls.
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            tokens: f64::from(rate.burst.max(1)),
            at: now,
        }
    }

    /// Takes a token at `now`: how long the call must wait for it.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let burst = f64::from(self.rate.burst.max(1));
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate.qps).min(burst);
        self.at = now.max(self.at);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 || self.rate.qps <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / self.rate.qps)
    }

    /// Waits for a token.
    pub async fn wait(&mut self) {
        let delay = self.reserve(Instant::now());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            Rate {
                qps: 50.0,
                burst: 100,
            },
            t0,
        );
        for _ in 0..100 {
            assert_eq!(b.reserve(t0), Duration::ZERO);
        }
        // The 101st waits one token's time (20 ms), the 102nd two.
        assert_eq!(b.reserve(t0), Duration::from_millis(20));
        assert_eq!(b.reserve(t0), Duration::from_millis(40));
        // A second later 50 tokens have come back, two of them promised.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..48 {
            assert_eq!(b.reserve(t1), Duration::ZERO);
        }
        assert!(b.reserve(t1) > Duration::ZERO);
    }

    #[test]
    fn an_idle_bucket_refills_to_its_burst_only() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            Rate {
                qps: 10.0,
                burst: 2,
            },
            t0,
        );
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.reserve(later), Duration::ZERO);
        assert_eq!(b.reserve(later), Duration::ZERO);
        assert_eq!(b.reserve(later), Duration::from_millis(100));
    }
}
