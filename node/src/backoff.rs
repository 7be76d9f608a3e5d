//! kubelet's crash-loop back-off for one container: after a restart the next
//! one waits 10 s, then 20 s, 40 s, ... up to 5 min; a container that ran
//! for 10 min (twice the cap) before it exited starts over. The first restart
//! is immediate, as in kubelet, where the back-off entry only exists after the
//! first exit. The durations are [`BackoffConfig`] so tests can shrink them.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long resets the back-off.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

impl BackoffConfig {
    /// Everything divided by `factor` (tests).
    pub fn scaled_down(factor: u32) -> Self {
        let d = Self::default();
        Self {
            initial: d.initial / factor,
            max: d.max / factor,
            reset_after: d.reset_after / factor,
        }
    }
}

/// One container's back-off state.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    /// The delay before the next restart; `None` before the first exit.
    next: Option<Duration>,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, next: None }
    }

    /// The instance that started at `started` has exited at `exited`: how
    /// long to wait before starting the next one.
    pub fn on_exit(&mut self, started: Option<Instant>, exited: Instant) -> Duration {
        let ran = started
            .map(|s| exited.saturating_duration_since(s))
            .unwrap_or_default();
        if ran >= self.config.reset_after {
            self.next = None;
        }
        match self.next {
            None => {
                self.next = Some(self.config.initial);
                Duration::ZERO
            }
            Some(delay) => {
                self.next = Some((delay * 2).min(self.config.max));
                delay
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_after_a_long_run() {
        let mut b = Backoff::new(BackoffConfig::default());
        let t = Instant::now();
        let delays: Vec<u64> = (0..8).map(|_| b.on_exit(Some(t), t).as_secs()).collect();
        assert_eq!(delays, vec![0, 10, 20, 40, 80, 160, 300, 300]);
        let later = t + Duration::from_secs(601);
        assert_eq!(b.on_exit(Some(t), later), Duration::ZERO);
        assert_eq!(b.on_exit(Some(later), later), Duration::from_secs(10));
    }
}
