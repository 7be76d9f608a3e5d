//! Write grouping on the leader: concurrent writes share one Raft entry (one
//! log append, one fsync, one replication round) instead of paying one each.
//!
//! ```text
//!  write ─┐                      owner task
//!  write ─┼─► bounded queue ─►   wait for a free proposal slot, take every
//!  write ─┘                      queued write (up to the limits) ─► ONE entry
//!                                ─► each write gets its own transaction's reply
//! ```
//!
//! openraft 0.9 appends one entry per `client_write` and waits for its fsync
//! before it takes the next message, so an entry per write caps the leader
//! at one write per fsync. Here a write goes out at once while fewer than
//! `in_flight` entries are pending; beyond that, writes wait and the next free
//! slot takes all of them. A lone write is never delayed; a busy leader's
//! entries grow with its load.
//!
//! What must stay true: each write is proposed at most once, in exactly one
//! entry, and its caller gets that entry's reply for its own transaction (the
//! transactions are independent: one failing does not affect the others).
//! Writes whose caller already gave up are not proposed. Concurrent writes
//! have no order between them, so entries in flight may commit in any order.
//!
//! Node liveness writes (a node's Lease and its Node object) go in a lane of
//! their own that every entry takes from first, like the API priority and
//! fairness levels `system` / `node-high` upstream: under a burst of
//! thousands of pod writes a node's Lease renewal must not wait behind them
//! for longer than the node lifecycle's grace, or healthy nodes are declared
//! lost and their pods evicted.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use balsa_api::{Object, Op, Revision, StoreError};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::Instrument;

use crate::route::Route;
use crate::types::Command;

/// How many writes may wait for a slot before further writes wait for room
/// in the queue.
const QUEUE: usize = 16_384;
/// The same for the node liveness lane.
const URGENT_QUEUE: usize = 4_096;

/// One transaction's outcome: its revision and objects, or where to go.
pub type Outcome = Route<(Revision, Vec<Object>)>;

/// How large entries grow and how many may be pending at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries proposed and not yet answered.
    pub in_flight: usize,
    /// Transactions in one entry.
    pub txns: usize,
    /// Bytes of values in one entry (a larger single write goes alone):
    /// entries are replicated whole, each AppendEntries within its deadline.
    pub bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            in_flight: 2,
            txns: 512,
            bytes: 256 << 10,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the write proposer has stopped (the replica is shutting down)")]
pub struct Stopped;

struct Waiting {
    ops: Vec<Op>,
    bytes: usize,
    /// Whether it goes in the node liveness lane.
    urgent: bool,
    reply: oneshot::Sender<Outcome>,
}

/// Roughly what a transaction adds to an entry.
fn size_of(ops: &[Op]) -> usize {
    ops.iter()
        .map(|op| match op {
            Op::Create { value, .. } | Op::Update { value, .. } => value.len() + 64,
            Op::Delete { .. } => 64,
        })
        .sum()
}

/// Whether a transaction keeps a node alive: it writes a Lease in
/// `coordination.k8s.io` or a Node. Those go ahead of every other write.
fn urgent(ops: &[Op]) -> bool {
    ops.iter().any(|op| {
        let key = op.key();
        matches!(
            (key.group.as_str(), key.resource.as_str()),
            ("coordination.k8s.io", "leases") | ("", "nodes")
        )
    })
}

/// A cheap handle to the owner task; it ends when the last handle is dropped.
pub struct Proposer {
    queue: mpsc::Sender<Waiting>,
    urgent: mpsc::Sender<Waiting>,
}

/// The owner's two lanes: node liveness writes first, then the rest. Writes
/// move from the channels into the lanes' fronts as entries need them.
struct Lanes {
    urgent_rx: mpsc::Receiver<Waiting>,
    normal_rx: mpsc::Receiver<Waiting>,
    urgent: VecDeque<Waiting>,
    normal: VecDeque<Waiting>,
}

impl Lanes {
    fn new(urgent_rx: mpsc::Receiver<Waiting>, normal_rx: mpsc::Receiver<Waiting>) -> Self {
        Self {
            urgent_rx,
            normal_rx,
            urgent: VecDeque::new(),
            normal: VecDeque::new(),
        }
    }

    /// Waits until a write is queued; false once the handles are gone.
    async fn wait(&mut self) -> bool {
        if !self.urgent.is_empty() || !self.normal.is_empty() {
            return true;
        }
        let w = tokio::select! {
            biased;
            Some(w) = self.urgent_rx.recv() => w,
            w = self.normal_rx.recv() => match w {
                Some(w) => w,
                None => return false,
            },
        };
        self.lane(&w).push_back(w);
        true
    }

    fn lane(&mut self, w: &Waiting) -> &mut VecDeque<Waiting> {
        if w.urgent {
            &mut self.urgent
        } else {
            &mut self.normal
        }
    }

    /// Moves what the channels hold into the lanes, up to `up_to` a lane
    /// (the rest stays in the channels, which bound the queue).
    fn pull(&mut self, up_to: usize) {
        fn fill(rx: &mut mpsc::Receiver<Waiting>, lane: &mut VecDeque<Waiting>, up_to: usize) {
            while lane.len() < up_to {
                let Ok(w) = rx.try_recv() else { return };
                lane.push_back(w);
            }
        }
        fill(&mut self.urgent_rx, &mut self.urgent, up_to);
        fill(&mut self.normal_rx, &mut self.normal, up_to);
    }

    /// The next write in line: urgent ones first.
    fn front(&self) -> Option<&Waiting> {
        self.urgent.front().or_else(|| self.normal.front())
    }

    fn pop(&mut self) -> Option<Waiting> {
        self.urgent.pop_front().or_else(|| self.normal.pop_front())
    }
}

impl Proposer {
    /// Starts the owner task. `submit` proposes one entry and answers each of
    /// its transactions, in order.
    pub fn spawn<F, Fut>(limits: Limits, submit: F) -> Self
    where
        F: Fn(Command) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Outcome>> + Send + 'static,
    {
        let (queue, normal) = mpsc::channel(QUEUE);
        let (urgent, urgent_rx) = mpsc::channel(URGENT_QUEUE);
        let lanes = Lanes::new(urgent_rx, normal);
        tokio::spawn(own(limits, lanes, Arc::new(submit)));
        Self { queue, urgent }
    }

    /// Proposes `ops` as one transaction and waits for its outcome.
    pub async fn propose(&self, ops: Vec<Op>) -> Result<Outcome, Stopped> {
        let (reply, answer) = oneshot::channel();
        let bytes = size_of(&ops);
        let urgent = urgent(&ops);
        let lane = if urgent { &self.urgent } else { &self.queue };
        lane.send(Waiting {
            ops,
            bytes,
            urgent,
            reply,
        })
        .await
        .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

async fn own<F, Fut>(limits: Limits, mut lanes: Lanes, submit: Arc<F>)
where
    F: Fn(Command) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Outcome>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.in_flight.max(1)));
    let mut entries: u64 = 0;
    loop {
        // Writes that arrive while every slot is taken queue up: the slot
        // that frees takes them all, urgent ones first.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if !lanes.wait().await {
            return;
        }
        lanes.pull(limits.txns);
        let mut bytes = 0;
        let mut batch = Vec::new();
        while batch.len() < limits.txns {
            // The first write goes whatever its size.
            let fits = lanes
                .front()
                .is_some_and(|w| batch.is_empty() || bytes + w.bytes <= limits.bytes);
            if !fits {
                break;
            }
            let Some(w) = lanes.pop() else {
                break;
            };
            bytes += w.bytes;
            batch.push(w);
        }
        batch.retain(|w| !w.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        entries += 1;
        let (txns, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|w| (w.ops, w.reply)).unzip();
        let span = tracing::debug_span!("propose", entry = entries, txns = txns.len(), bytes);
        let submit = submit.clone();
        tokio::spawn(
            async move {
                let expected = txns.len();
                let outcomes = submit(Command { txns }).await;
                drop(slot);
                if outcomes.len() != expected {
                    let e = StoreError::Internal(format!(
                        "an entry of {expected} transactions got {} replies",
                        outcomes.len()
                    ));
                    for reply in replies {
                        let _ = reply.send(Route::Done(Err(e.clone())));
                    }
                    return;
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A caller that went away no longer wants its answer.
                    let _ = reply.send(outcome);
                }
            }
            .instrument(span),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use balsa_api::ResourceKey;
    use bytes::Bytes;

    use super::*;

    fn create(name: &str, size: usize) -> Vec<Op> {
        vec![Op::Create {
            key: ResourceKey::new("", "configmaps", Some("default"), name),
            value: Bytes::from(vec![b'x'; size]),
        }]
    }

    fn name(ops: &[Op]) -> String {
        ops[0].key().name.clone()
    }

    /// A proposer whose entries are recorded and held until the test
    /// releases them; each transaction is answered with its position in the
    /// order of all transactions proposed (1, 2, ...), or Conflict when its
    /// name starts with "bad".
    struct Gated {
        proposer: Proposer,
        entries: Arc<Mutex<Vec<Vec<String>>>>,
        release: Arc<Semaphore>,
    }

    fn gated(limits: Limits) -> Gated {
        let entries = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Semaphore::new(0));
        let (seen, gate) = (entries.clone(), release.clone());
        let proposer = Proposer::spawn(limits, move |cmd: Command| {
            let names: Vec<String> = cmd.txns.iter().map(|t| name(t)).collect();
            let first = {
                let mut seen = seen.lock().unwrap();
                let before: usize = seen.iter().map(Vec::len).sum();
                seen.push(names.clone());
                before as u64
            };
            let gate = gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        if n.starts_with("bad") {
                            Route::Done(Err(StoreError::Conflict {
                                key: n.clone(),
                                reason: "stale".into(),
                            }))
                        } else {
                            Route::Done(Ok((Revision(first + i as u64 + 1), Vec::new())))
                        }
                    })
                    .collect()
            }
        });
        Gated {
            proposer,
            entries,
            release,
        }
    }

    /// Proposes a create of `name` from a task of its own.
    fn spawn(
        g: &Arc<Gated>,
        name: &'static str,
        size: usize,
    ) -> tokio::task::JoinHandle<Result<Outcome, Stopped>> {
        let g = g.clone();
        tokio::spawn(async move { g.proposer.propose(create(name, size)).await })
    }

    async fn until(entries: &Mutex<Vec<Vec<String>>>, n: usize) {
        while entries.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn revision(outcome: Outcome) -> Result<u64, StoreError> {
        match outcome {
            Route::Done(r) => r.map(|(rev, _)| rev.0),
            _ => panic!("routed elsewhere"),
        }
    }

    type Proposed = tokio::task::JoinHandle<Result<Outcome, Stopped>>;

    /// Lets every entry through, waits for every write, and returns the
    /// entries as proposed.
    async fn release_all(g: &Gated, blocker: Proposed, waiting: Vec<Proposed>) -> Vec<Vec<String>> {
        g.release.add_permits(100);
        blocker.await.unwrap().unwrap();
        for w in waiting {
            revision(w.await.unwrap().unwrap()).unwrap();
        }
        g.entries.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn writes_wait_for_a_slot_and_then_share_one_entry() {
        let g = Arc::new(gated(Limits {
            in_flight: 1,
            ..Limits::default()
        }));
        // The first write takes the only slot alone, at once.
        let first = spawn(&g, "a", 10);
        until(&g.entries, 1).await;
        // Five more arrive while it is pending: they wait, then go together.
        let mut rest = Vec::new();
        for n in ["b", "c", "bad-d", "e", "f"] {
            rest.push(spawn(&g, n, 10));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            g.entries.lock().unwrap().len(),
            1,
            "no second entry while the slot is taken"
        );
        g.release.add_permits(2);
        assert_eq!(revision(first.await.unwrap().unwrap()).unwrap(), 1);
        let mut got = Vec::new();
        for r in rest {
            got.push(revision(r.await.unwrap().unwrap()));
        }
        assert_eq!(
            *g.entries.lock().unwrap(),
            vec![vec!["a"], vec!["b", "c", "bad-d", "e", "f"]]
        );
        // Each caller got its own transaction's reply; the failed one did
        // not affect the others.
        assert_eq!(got[0].as_ref().unwrap(), &2);
        assert_eq!(got[1].as_ref().unwrap(), &3);
        assert!(matches!(got[2], Err(StoreError::Conflict { .. })));
        assert_eq!(got[3].as_ref().unwrap(), &5);
        assert_eq!(got[4].as_ref().unwrap(), &6);
    }

    #[tokio::test]
    async fn entries_stop_at_the_transaction_and_byte_limits() {
        let g = Arc::new(gated(Limits {
            in_flight: 1,
            txns: 3,
            bytes: 1000,
        }));
        let blocker = spawn(&g, "blocker", 10);
        until(&g.entries, 1).await;
        let mut waiting = Vec::new();
        // Four small ones (the limit of 3 splits them), then two of 600
        // bytes: either alone fits, both together do not.
        for (n, size) in [
            ("a", 10),
            ("b", 10),
            ("c", 10),
            ("d", 10),
            ("big1", 600),
            ("big2", 600),
        ] {
            waiting.push(spawn(&g, n, size));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            release_all(&g, blocker, waiting).await,
            vec![
                vec!["blocker"],
                vec!["a", "b", "c"],
                vec!["d", "big1"],
                vec!["big2"]
            ]
        );
    }

    #[tokio::test]
    async fn a_write_whose_caller_gave_up_is_not_proposed() {
        let g = Arc::new(gated(Limits {
            in_flight: 1,
            ..Limits::default()
        }));
        let first = spawn(&g, "a", 10);
        until(&g.entries, 1).await;
        let gave_up = spawn(&g, "gone", 10);
        let kept = spawn(&g, "kept", 10);
        tokio::time::sleep(Duration::from_millis(20)).await;
        gave_up.abort();
        tokio::time::sleep(Duration::from_millis(20)).await;
        g.release.add_permits(2);
        first.await.unwrap().unwrap();
        kept.await.unwrap().unwrap();
        assert_eq!(*g.entries.lock().unwrap(), vec![vec!["a"], vec!["kept"]]);
    }

    /// A node's liveness writes, proposed from a task of its own.
    fn spawn_liveness(
        g: &Arc<Gated>,
        group: &'static str,
        resource: &'static str,
        name: &'static str,
    ) -> tokio::task::JoinHandle<Result<Outcome, Stopped>> {
        let g = g.clone();
        let namespace = (resource == "leases").then_some("kube-node-lease");
        let ops = vec![Op::Update {
            key: ResourceKey::new(group, resource, namespace, name),
            value: Bytes::from_static(b"{}"),
            expected: None,
        }];
        tokio::spawn(async move { g.proposer.propose(ops).await })
    }

    #[tokio::test]
    async fn node_leases_and_nodes_go_ahead_of_queued_writes() {
        let g = Arc::new(gated(Limits {
            in_flight: 1,
            txns: 2,
            ..Limits::default()
        }));
        let blocker = spawn(&g, "blocker", 10);
        until(&g.entries, 1).await;
        let mut waiting = Vec::new();
        for n in ["a", "b", "c", "d"] {
            waiting.push(spawn(&g, n, 10));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Queued after four pod-sized writes, with room for two an entry:
        // without a lane of their own they would go in the third entry.
        waiting.push(spawn_liveness(
            &g,
            "coordination.k8s.io",
            "leases",
            "node-1",
        ));
        waiting.push(spawn_liveness(&g, "", "nodes", "node-2"));
        // A Lease outside coordination.k8s.io is an ordinary write.
        waiting.push(spawn_liveness(&g, "other.example.com", "leases", "x"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            release_all(&g, blocker, waiting).await,
            vec![
                vec!["blocker"],
                vec!["node-1", "node-2"],
                vec!["a", "b"],
                vec!["c", "d"],
                vec!["x"]
            ]
        );
    }

    #[tokio::test]
    async fn a_lone_write_goes_at_once_with_slots_free() {
        let g = gated(Limits::default());
        g.release.add_permits(10);
        for n in ["a", "b", "c"] {
            revision(g.proposer.propose(create(n, 10)).await.unwrap()).unwrap();
        }
        assert_eq!(
            *g.entries.lock().unwrap(),
            vec![vec!["a"], vec!["b"], vec!["c"]]
        );
    }
}
