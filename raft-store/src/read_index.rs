//! Read-index batching: concurrent linearizable reads share one round (one
//! leadership confirmation on the leader, one forwarded ReadIndex call on a
//! follower) instead of paying one each.
//!
//! ```text
//!  read ─┐                     owner task
//!  read ─┼─► bounded queue ─►  take every queued read ─► run ONE round ─► answer those reads
//!  read ─┘                     (reads queued meanwhile wait for the next round)
//! ```
//!
//! What must stay true for reads to stay linearizable: a read is answered only
//! by a round that **started after the read arrived** (was queued). A round's
//! answer (a commit index) covers every write acknowledged before the round
//! started; a write acknowledged after a round started but before a late read
//! arrived might not be covered, so such a read waits for the next round. The
//! owner task takes the waiting reads off the queue *before* it starts the
//! round, and runs at most one round at a time, which gives exactly that rule.
//! Reads that give up (their caller dropped them) are skipped.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// How many reads may wait for the next round before further reads wait for
/// room in the queue (they then simply join a later round).
const QUEUE: usize = 4096;

/// Why a read got no answer from its batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The owner task has ended (the replica is shutting down).
    #[error("the {0} read-index batcher has stopped")]
    Stopped(&'static str),
}

/// A cheap handle to one batcher's owner task. Rounds produce a `T` that every
/// read of the round receives a clone of.
pub struct ReadIndexBatch<T> {
    name: &'static str,
    queue: mpsc::Sender<oneshot::Sender<T>>,
}

impl<T: Clone + Send + 'static> ReadIndexBatch<T> {
    /// Starts the owner task. `round` is run once per batch; the task ends
    /// when the last handle is dropped.
    pub fn spawn<F, Fut>(name: &'static str, round: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(own(name, rx, round));
        Self { name, queue }
    }

    /// The answer of the first round that starts after this call: waits for
    /// the round in flight, if any, to end first.
    pub async fn join(&self) -> Result<T, BatchError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(tx)
            .await
            .map_err(|_| BatchError::Stopped(self.name))?;
        rx.await.map_err(|_| BatchError::Stopped(self.name))
    }

    /// Reads queued for the next round (tests only: to know a read has arrived).
    #[cfg(test)]
    fn queued(&self) -> usize {
        QUEUE - self.queue.capacity()
    }
}

async fn own<T, F, Fut>(
    name: &'static str,
    mut rx: mpsc::Receiver<oneshot::Sender<T>>,
    mut round: F,
) where
    T: Clone,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let mut rounds: u64 = 0;
    let mut reads = Vec::new();
    while let Some(first) = rx.recv().await {
        reads.push(first);
        while let Ok(more) = rx.try_recv() {
            reads.push(more);
        }
        reads.retain(|r| !r.is_closed());
        if reads.is_empty() {
            continue;
        }
        rounds += 1;
        let span = tracing::debug_span!(
            "read_index.round",
            batch = name,
            round = rounds,
            reads = reads.len()
        );
        // Every read in `reads` was queued before this line: the round starts
        // after each of them arrived.
        let answer = round().instrument(span).await;
        for read in reads.drain(..) {
            // A read whose caller went away no longer wants its answer.
            let _ = read.send(answer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    /// A batcher whose rounds answer their own number (1, 2, ...), announce
    /// that they started, and end only when the test releases them.
    struct Gated {
        batch: Arc<ReadIndexBatch<u64>>,
        started: mpsc::Receiver<u64>,
        release: Arc<Semaphore>,
        in_flight_max: Arc<AtomicU64>,
    }

    fn gated() -> Gated {
        let (started_tx, started) = mpsc::channel(16);
        let release = Arc::new(Semaphore::new(0));
        let count = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(AtomicU64::new(0));
        let in_flight_max = Arc::new(AtomicU64::new(0));
        let (gate, max) = (release.clone(), in_flight_max.clone());
        let batch = ReadIndexBatch::spawn("test", move || {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let (started_tx, gate, in_flight, max) = (
                started_tx.clone(),
                gate.clone(),
                in_flight.clone(),
                max.clone(),
            );
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                started_tx.send(n).await.expect("test alive");
                gate.acquire().await.expect("open").forget();
                in_flight.fetch_sub(1, Ordering::SeqCst);
                n
            }
        });
        Gated {
            batch: Arc::new(batch),
            started,
            release,
            in_flight_max,
        }
    }

    fn read(batch: &Arc<ReadIndexBatch<u64>>) -> tokio::task::JoinHandle<u64> {
        let batch = batch.clone();
        tokio::spawn(async move { batch.join().await.expect("batcher runs") })
    }

    /// The number of the next round to start (None if none starts in 5 s).
    async fn started(g: &mut Gated) -> Option<u64> {
        tokio::time::timeout(Duration::from_secs(5), g.started.recv())
            .await
            .ok()
            .flatten()
    }

    async fn until_queued(batch: &ReadIndexBatch<u64>, n: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while batch.queued() < n {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("reads queued");
    }

    #[tokio::test]
    async fn a_read_arriving_during_a_round_waits_for_the_next_one() {
        let mut g = gated();
        let first = read(&g.batch);
        assert_eq!(started(&mut g).await, Some(1));
        // Round 1 is in flight; this read arrives now.
        let late = read(&g.batch);
        until_queued(&g.batch, 1).await;
        g.release.add_permits(1);
        assert_eq!(first.await.expect("first read"), 1);
        // Round 1 must not answer the late read: round 2 starts for it.
        assert_eq!(started(&mut g).await, Some(2));
        assert!(!late.is_finished());
        g.release.add_permits(1);
        assert_eq!(late.await.expect("late read"), 2);
        assert_eq!(g.in_flight_max.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn reads_waiting_together_share_one_round() {
        let mut g = gated();
        let first = read(&g.batch);
        assert_eq!(started(&mut g).await, Some(1));
        let waiting: Vec<_> = (0..50).map(|_| read(&g.batch)).collect();
        until_queued(&g.batch, 50).await;
        g.release.add_permits(1);
        assert_eq!(first.await.expect("first read"), 1);
        assert_eq!(started(&mut g).await, Some(2));
        g.release.add_permits(1);
        for r in waiting {
            assert_eq!(r.await.expect("read"), 2);
        }
        // Nothing is waiting, so no third round starts.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), g.started.recv())
                .await
                .is_err()
        );
        assert_eq!(g.in_flight_max.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_dropped_read_does_not_stop_the_others() {
        let mut g = gated();
        let first = read(&g.batch);
        assert_eq!(started(&mut g).await, Some(1));
        let gone = read(&g.batch);
        let kept = read(&g.batch);
        until_queued(&g.batch, 2).await;
        gone.abort();
        g.release.add_permits(2);
        assert_eq!(first.await.expect("first read"), 1);
        assert_eq!(kept.await.expect("kept read"), 2);
    }

    #[tokio::test]
    async fn a_batcher_whose_task_ended_says_so() {
        let (queue, rx) = mpsc::channel::<oneshot::Sender<u64>>(1);
        drop(rx);
        let batch = ReadIndexBatch {
            name: "gone",
            queue,
        };
        assert_eq!(batch.join().await, Err(BatchError::Stopped("gone")));
    }
}
