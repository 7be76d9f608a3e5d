//! Exponential backoff with jitter, for reconnecting watches and retrying
//! failed reconciles.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The next delay: doubles up to the maximum, each with up to 10% jitter
    /// so that many clients failing together do not retry together.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = base.as_secs_f64() * 0.1 * rand::thread_rng().gen::<f64>();
        base + Duration::from_secs_f64(jitter)
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let d: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert!((100..=110).contains(&d[0]), "{d:?}");
        assert!((200..=220).contains(&d[1]), "{d:?}");
        assert!((350..=385).contains(&d[2]), "{d:?}");
        assert!((350..=385).contains(&d[3]), "{d:?}");
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(111));
    }
}
