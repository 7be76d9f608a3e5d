//! Wall-clock timestamps for statuses, events and conditions, for every
//! component, and the `Clock` controllers read so tests can move time.
//!
//! This is the one place that reads the system clock for them (not jiff's
//! `Timestamp::now`, which k8s-openapi's build of jiff does not have unless
//! another crate turns `std` on).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

/// The current time (the epoch if the clock is before it, which only a broken
/// machine reports).
pub fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::new(since.as_secs() as i64, since.subsec_nanos() as i32)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Now, to the second: what Kubernetes' `Time` carries, so a value compares
/// equal to itself after a round trip through the API.
pub fn now_to_second() -> Timestamp {
    to_second(now())
}

fn to_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The time a controller goes by: the system clock, or a fake one that only
/// moves when a test sets it (so a CronJob's minutes pass in milliseconds).
/// Cheap to clone; clones of a fake clock share its time.
///
/// A controller that waits on this clock also reconciles everything when it
/// moves (`moves`), since its timers run in real time.
#[derive(Clone, Default)]
pub struct Clock {
    fake: Option<Arc<watch::Sender<Timestamp>>>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fake {
            None => f.write_str("Clock::real"),
            Some(t) => write!(f, "Clock::fake({})", *t.borrow()),
        }
    }
}

impl Clock {
    pub fn real() -> Self {
        Self { fake: None }
    }

    /// A clock stopped at `start` until `set` or `advance` moves it.
    pub fn fake(start: Timestamp) -> Self {
        let (tx, _) = watch::channel(start);
        Self {
            fake: Some(Arc::new(tx)),
        }
    }

    pub fn is_fake(&self) -> bool {
        self.fake.is_some()
    }

    pub fn now(&self) -> Timestamp {
        match &self.fake {
            None => now(),
            Some(t) => *t.borrow(),
        }
    }

    /// Now to the second (see `now_to_second`).
    pub fn now_to_second(&self) -> Timestamp {
        to_second(self.now())
    }

    /// Sets a fake clock (a real one cannot be set: ignored).
    pub fn set(&self, t: Timestamp) {
        if let Some(tx) = &self.fake {
            tx.send_replace(t);
        }
    }

    /// Moves a fake clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        if let Some(tx) = &self.fake {
            tx.send_modify(|t| {
                let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
                *t = t.checked_add(d).unwrap_or(Timestamp::MAX);
            });
        }
    }

    /// Yields each time a fake clock is moved; never for the real clock.
    pub fn moves(&self) -> BoxStream<'static, ()> {
        match &self.fake {
            None => stream::pending().boxed(),
            Some(tx) => WatchStream::from_changes(tx.subscribe())
                .map(|_| ())
                .boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2020_and_whole_seconds_drop_the_fraction() {
        assert!(now().as_second() > 1_577_836_800);
        assert_eq!(now_to_second().subsec_nanosecond(), 0);
        assert!(Clock::real().now().as_second() > 1_577_836_800);
    }

    #[tokio::test]
    async fn a_fake_clock_moves_only_when_told_and_says_so() {
        let start = Timestamp::from_second(1_700_000_000).unwrap();
        let clock = Clock::fake(start);
        let shared = clock.clone();
        let mut moves = clock.moves();
        assert_eq!(clock.now(), start);
        shared.advance(Duration::from_secs(90));
        assert_eq!(clock.now().as_second(), 1_700_000_090);
        tokio::time::timeout(Duration::from_secs(1), moves.next())
            .await
            .expect("a move is reported")
            .expect("the stream goes on");
        clock.set(Timestamp::from_second(1_800_000_000).unwrap());
        assert_eq!(shared.now().as_second(), 1_800_000_000);
        let mut real = Clock::real().moves();
        let quiet = tokio::time::timeout(Duration::from_millis(50), real.next()).await;
        assert!(quiet.is_err(), "the real clock never reports a move");
    }
}
