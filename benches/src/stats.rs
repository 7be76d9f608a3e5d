//! Latency samples and their percentiles (nearest rank over a sorted vector).

use std::time::Duration;

use serde::Serialize;

/// The `p`th percentile (0 < p <= 100) of `sorted` (ascending), by nearest
/// rank: the smallest sample with at least p% of the samples at or below it.
/// `None` when there are no samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What the table and the JSON report of a set of latencies.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    /// Sorts `samples` and summarises them (all zero when empty).
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let count = samples.len();
        if count == 0 {
            return Self::default();
        }
        let total: Duration = samples.iter().sum();
        let at = |p| percentile(samples, p).map_or(0.0, ms);
        Self {
            count,
            p50_ms: at(50.0),
            p99_ms: at(99.0),
            max_ms: at(100.0),
            mean_ms: ms(total) / count as f64,
        }
    }
}

/// Operations a second, or 0 for an empty interval.
pub fn rate(ops: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        ops as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted = millis(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&sorted, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&sorted, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&sorted, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&sorted, 0.1), Some(Duration::from_millis(1)));
        let four = millis(&[10, 20, 30, 40]);
        assert_eq!(percentile(&four, 50.0), Some(Duration::from_millis(20)));
        assert_eq!(percentile(&four, 99.0), Some(Duration::from_millis(40)));
        assert_eq!(
            percentile(&millis(&[7]), 99.0),
            Some(Duration::from_millis(7))
        );
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_first() {
        let mut samples = millis(&[30, 10, 20, 40]);
        let s = Summary::of(&mut samples);
        assert_eq!(s.count, 4);
        assert!((s.p50_ms - 20.0).abs() < 1e-9);
        assert!((s.p99_ms - 40.0).abs() < 1e-9);
        assert!((s.max_ms - 40.0).abs() < 1e-9);
        assert!((s.mean_ms - 25.0).abs() < 1e-9);
        assert_eq!(Summary::of(&mut []), Summary::default());
    }

    #[test]
    fn rates() {
        assert!((rate(500, Duration::from_millis(250)) - 2000.0).abs() < 1e-9);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
    }
}
