//! One watch on pods per master, shared by every node stream the master
//! serves and dispatched by node, so a pod event is read and decoded once
//! however many agents are attached (with a watch per stream, each of N
//! streams scanned every pod event).
//!
//! ```text
//! store watch on pods ──► hub (one task; owns the subscriptions)
//!  (opened at the first    ├─ event at R: spec.nodeName of the object and of
//!   subscription)          │    the previous object ─► PodChange queued to the
//!                          │    streams of the node(s) concerned (node_changes)
//!                          ├─ bookmark: Progress to every stream
//!                          ├─ every 250 ms: Progress to the streams silent for
//!                          │    1 s while the hub read further
//!                          └─ watch ended: every subscription ends (Ended);
//!                               the next subscription opens a new watch
//! ```
//!
//! What must stay true:
//! - A subscription made with `after` gets, in revision order, exactly the
//!   changes of its node with a revision above `from = max(after, done)`,
//!   where `done` is the revision the hub had dispatched completely when it
//!   subscribed. The changes in `(after, from]` are the subscriber's to read
//!   from the store's window. A revision can hold several events (one write
//!   batch): `done` stays below a revision until the hub knows it has all of
//!   its events, and a subscription made in the middle of one is given the
//!   events of that revision already dispatched.
//! - Progress(R) is queued behind every change at or below R, so it says
//!   the node has nothing more up to R. It is sent only when the watch spoke
//!   (an event or a bookmark): a master cut off from the cluster goes
//!   silent and its agents move on.
//! - A subscriber whose queue fills (its agent reads too slowly) is dropped:
//!   its queue ends, it tells its agent, and the agent resumes from its last
//!   revision, on this master or another. The hub never waits for one
//!   stream. It starts a revision on a queue only with [`HEADROOM`] slots
//!   free, so a dropped queue ends between revisions (unless one revision
//!   holds more than that many changes for one node).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use balsa_proto::node::PodChange;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::node_changes::{changes, pods};
use crate::store::{Event, ReadMode, Revision, Store, StoreError, WatchEvent, WatchOptions};

/// How long a stream goes without a message before it is sent a `Progress`
/// (the agent gives a master up after 4 s of silence).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often the hub looks for streams owed a `Progress`.
const TICK: Duration = Duration::from_millis(250);
/// Items queued for one stream; a stream this far behind is dropped.
pub const QUEUE: usize = 1024;
/// Free slots a queue needs for the hub to start a new revision on it.
const HEADROOM: usize = 64;

/// What a subscription delivers.
#[derive(Debug, Clone)]
pub enum Item {
    Change(PodChange),
    /// The node has no change up to here beyond those already delivered.
    Progress(Revision),
    /// The hub's watch ended; nothing follows.
    Ended(StoreError),
}

#[derive(Debug)]
pub struct Subscription {
    /// Every change of the node above this revision comes through `items`
    /// (none at or below it).
    pub from: Revision,
    /// Ends after `Ended`, or without it when the hub dropped this
    /// subscription for falling behind.
    pub items: mpsc::Receiver<Item>,
}

struct Subscribe {
    node: String,
    after: Revision,
    reply: oneshot::Sender<Result<Subscription, StoreError>>,
}

/// A handle on the master's hub; the hub ends when the master stops or the
/// last handle is dropped.
#[derive(Clone)]
pub struct Fanout {
    cmds: mpsc::Sender<Subscribe>,
}

impl Fanout {
    /// Spawns the hub; it opens its watch at the first subscription.
    pub fn new(store: Arc<dyn Store>, stopping: watch::Receiver<bool>) -> Self {
        let (cmds, rx) = mpsc::channel(256);
        tokio::spawn(run(store, rx, stopping));
        Self { cmds }
    }

    /// `node`'s changes after `after` (see [`Subscription::from`]).
    pub async fn subscribe(&self, node: &str, after: Revision) -> Result<Subscription, StoreError> {
        let (reply, rx) = oneshot::channel();
        let gone = || StoreError::Unavailable("this master's node stream hub has stopped".into());
        let cmd = Subscribe {
            node: node.to_string(),
            after,
            reply,
        };
        self.cmds.send(cmd).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut cmds: mpsc::Receiver<Subscribe>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut live: Option<(Hub, crate::store::WatchStream)> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { return };
                if live.is_none() {
                    match open(&store).await {
                        Ok(l) => live = Some(l),
                        Err(e) => {
                            let _ = cmd.reply.send(Err(e));
                            continue;
                        }
                    }
                }
                if let Some((hub, _)) = live.as_mut() {
                    let sub = hub.subscribe(cmd.node, cmd.after, Instant::now());
                    let _ = cmd.reply.send(Ok(sub));
                }
            }
            item = next(&mut live) => {
                let Some((hub, _)) = live.as_mut() else { continue };
                let now = Instant::now();
                match item {
                    Some(Ok(WatchEvent::Event(e))) => hub.event(&e, now),
                    Some(Ok(WatchEvent::Bookmark(r))) => hub.bookmark(r, now),
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "the node streams' pod watch ended");
                        if let Some((hub, _)) = live.take() {
                            hub.end(e);
                        }
                    }
                    None => {
                        if let Some((hub, _)) = live.take() {
                            hub.end(StoreError::Unavailable("the pod watch ended".into()));
                        }
                    }
                }
            }
            _ = tick.tick() => {
                if let Some((hub, _)) = live.as_mut() {
                    hub.tick(Instant::now());
                }
            }
            // (The wait's guard is not Send: it is dropped inside.)
            _ = async { stopping.wait_for(|s| *s).await.map(|_| ()) } => {
                if let Some((hub, _)) = live.take() {
                    hub.end(StoreError::Unavailable("this master is shutting down".into()));
                }
                return;
            }
        }
    }
}

async fn open(store: &Arc<dyn Store>) -> Result<(Hub, crate::store::WatchStream), StoreError> {
    let at = store.revision(ReadMode::Local).await?;
    let opts = WatchOptions {
        after: at,
        bookmark_interval: Some(PROGRESS_EVERY),
    };
    let watch = store.watch(&pods(), opts).await?;
    Ok((Hub::new(at), watch))
}

async fn next(
    live: &mut Option<(Hub, crate::store::WatchStream)>,
) -> Option<Result<WatchEvent, StoreError>> {
    match live {
        Some((_, w)) => w.next().await,
        None => std::future::pending().await,
    }
}

/// The hub's state, driven by the task above (and directly by the tests).
struct Hub {
    /// Every pod event at or below this revision has been dispatched, and
    /// no more will come.
    done: Revision,
    /// The newest revision's changes dispatched so far; more events of it
    /// may follow until a newer revision or a bookmark shows up.
    open: Option<(Revision, Vec<(String, PodChange)>)>,
    nodes: HashMap<String, Vec<Sub>>,
}

struct Sub {
    tx: mpsc::Sender<Item>,
    /// Changes at or below this were for the subscriber to fetch.
    from: Revision,
    /// The newest revision queued to it (a change or a progress).
    told: Revision,
    last_sent: Instant,
}

impl Sub {
    /// Queues a change; false when the queue is too full (drop the stream).
    fn change(&mut self, change: &PodChange, now: Instant) -> bool {
        let revision = Revision(change.revision);
        let room = if revision > self.told { HEADROOM } else { 0 };
        if self.tx.capacity() <= room {
            return false;
        }
        if self.tx.try_send(Item::Change(change.clone())).is_err() {
            return false;
        }
        self.told = self.told.max(revision);
        self.last_sent = now;
        true
    }

    /// Queues a progress when there is room (a busy queue carries changes,
    /// which say as much).
    fn progress(&mut self, revision: Revision, now: Instant) {
        if self.tx.capacity() <= HEADROOM {
            return;
        }
        if self.tx.try_send(Item::Progress(revision)).is_ok() {
            self.told = revision;
            self.last_sent = now;
        }
    }
}

impl Hub {
    fn new(start: Revision) -> Self {
        Self {
            done: start,
            open: None,
            nodes: HashMap::new(),
        }
    }

    fn subscribe(&mut self, node: String, after: Revision, now: Instant) -> Subscription {
        let from = after.max(self.done);
        let (tx, items) = mpsc::channel(QUEUE);
        let mut sub = Sub {
            tx,
            from,
            told: from,
            last_sent: now,
        };
        // Joining in the middle of a revision: its changes so far.
        let mut kept = true;
        if let Some((_, dispatched)) = &self.open {
            for (_, change) in dispatched.iter().filter(|(n, _)| *n == node) {
                if change.revision > from.0 {
                    kept &= sub.change(change, now);
                }
            }
        }
        if kept {
            self.nodes.entry(node).or_default().push(sub);
        }
        Subscription { from, items }
    }

    fn event(&mut self, e: &Event, now: Instant) {
        let revision = e.revision;
        if self.open.as_ref().is_none_or(|(r, _)| *r != revision) {
            self.done = self.done.max(Revision(revision.0.saturating_sub(1)));
            self.open = Some((revision, Vec::new()));
        }
        for (node, change) in changes(e) {
            if let Some(subs) = self.nodes.get_mut(&node) {
                subs.retain_mut(|s| {
                    let kept = revision <= s.from || s.change(&change, now);
                    if !kept {
                        tracing::info!(node.name = %node, %revision, "a node stream fell behind; dropping it");
                    }
                    kept
                });
                if subs.is_empty() {
                    self.nodes.remove(&node);
                }
            }
            if let Some((_, dispatched)) = self.open.as_mut() {
                dispatched.push((node, change));
            }
        }
    }

    /// Every pod event up to `revision` has come: each stream hears so.
    fn bookmark(&mut self, revision: Revision, now: Instant) {
        self.done = self.done.max(revision);
        if self.open.as_ref().is_some_and(|(r, _)| *r <= revision) {
            self.open = None;
        }
        let done = self.done;
        for s in self.nodes.values_mut().flatten() {
            let at = done.max(s.told);
            s.progress(at, now);
        }
    }

    /// A Progress to each stream silent for [`PROGRESS_EVERY`] while the
    /// hub read further than it was told; forgets the ended streams.
    fn tick(&mut self, now: Instant) {
        let done = self.done;
        self.nodes.retain(|_, subs| {
            subs.retain_mut(|s| {
                if s.tx.is_closed() {
                    return false;
                }
                if done > s.told && now.duration_since(s.last_sent) >= PROGRESS_EVERY {
                    s.progress(done, now);
                }
                true
            });
            !subs.is_empty()
        });
    }

    fn end(self, e: StoreError) {
        for s in self.nodes.into_values().flatten() {
            let _ = s.tx.try_send(Item::Ended(e.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use balsa_proto::node::ChangeType;

    use super::*;
    use crate::store::{EventType, Object, ResourceKey};

    fn pod(name: &str, node: Option<&str>, revision: u64) -> Arc<Object> {
        let spec = match node {
            Some(n) => serde_json::json!({"nodeName": n}),
            None => serde_json::json!({}),
        };
        let data = serde_json::json!({"metadata": {"name": name}, "spec": spec});
        Arc::new(Object {
            key: ResourceKey::new("", "pods", Some("default"), name),
            data: serde_json::to_vec(&data).expect("json").into(),
            revision: Revision(revision),
            created: Revision(1),
        })
    }

    /// `name` moves from `prev` to `now` at `revision` (None: unbound).
    fn moved(name: &str, prev: Option<&str>, now: Option<&str>, revision: u64) -> Event {
        Event {
            revision: Revision(revision),
            kind: EventType::Modified,
            object: pod(name, now, revision),
            prev: Some(pod(name, prev, revision - 1)),
        }
    }

    fn drain(s: &mut Subscription) -> Vec<(&'static str, u64, String)> {
        let mut out = Vec::new();
        while let Ok(item) = s.items.try_recv() {
            out.push(match item {
                Item::Change(c) => {
                    let ty = ChangeType::try_from(c.r#type).expect("a change type");
                    let pod: serde_json::Value = serde_json::from_slice(&c.pod).expect("json");
                    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
                    (ty.as_str_name(), c.revision, name)
                }
                Item::Progress(r) => ("PROGRESS", r.0, String::new()),
                Item::Ended(e) => ("ENDED", 0, e.to_string()),
            });
        }
        out
    }

    fn c(ty: &'static str, rev: u64, name: &str) -> (&'static str, u64, String) {
        (ty, rev, name.to_string())
    }

    #[test]
    fn each_node_gets_its_changes_and_a_moved_pod_leaves_one_for_the_other() {
        let now = Instant::now();
        let mut hub = Hub::new(Revision(10));
        let mut n1 = hub.subscribe("n1".into(), Revision(10), now);
        let mut n2 = hub.subscribe("n2".into(), Revision(10), now);
        let mut n1_again = hub.subscribe("n1".into(), Revision(10), now);
        assert_eq!(n1.from, Revision(10));
        hub.event(&moved("a", None, Some("n1"), 11), now);
        hub.event(&moved("b", None, Some("n2"), 12), now);
        hub.event(&moved("a", Some("n1"), Some("n2"), 13), now);
        hub.event(&moved("c", None, Some("n3"), 14), now);
        let n1_saw = vec![c("ADDED", 11, "a"), c("DELETED", 13, "a")];
        assert_eq!(drain(&mut n1), n1_saw);
        assert_eq!(drain(&mut n1_again), n1_saw);
        assert_eq!(
            drain(&mut n2),
            vec![c("ADDED", 12, "b"), c("ADDED", 13, "a")]
        );
    }

    /// Thousands of nodes, each with its own pods: every stream gets exactly
    /// its node's changes, in order, whatever the others do.
    #[test]
    fn many_nodes_each_get_only_their_own() {
        let now = Instant::now();
        let mut hub = Hub::new(Revision(0));
        let nodes: Vec<String> = (0..1000).map(|i| format!("node-{i}")).collect();
        let mut subs: Vec<Subscription> = nodes
            .iter()
            .map(|n| hub.subscribe(n.clone(), Revision(0), now))
            .collect();
        let mut rev = 0;
        for round in 0..3 {
            for (i, n) in nodes.iter().enumerate() {
                rev += 1;
                let prev = (round > 0).then_some(n.as_str());
                hub.event(&moved(&format!("p{i}"), prev, Some(n), rev), now);
            }
        }
        for (i, s) in subs.iter_mut().enumerate() {
            let want: Vec<_> = (0..3)
                .map(|round| {
                    let ty = if round == 0 { "ADDED" } else { "MODIFIED" };
                    c(ty, (round * 1000 + i + 1) as u64, &format!("p{i}"))
                })
                .collect();
            assert_eq!(drain(s), want, "node-{i}");
        }
    }

    /// A batch puts several events at one revision. A stream that joins
    /// between two of them must get the whole revision from the hub: the
    /// hub's `done` stays below it until a newer revision shows it complete.
    #[test]
    fn a_stream_joining_in_the_middle_of_a_revision_gets_all_of_it() {
        let now = Instant::now();
        let mut hub = Hub::new(Revision(10));
        hub.event(&moved("a", None, Some("n1"), 11), now);
        hub.event(&moved("b", None, Some("n1"), 12), now);
        let mut early = hub.subscribe("n1".into(), Revision(12), now);
        assert_eq!(early.from, Revision(12), "ahead of the hub: its own start");
        let mut mid = hub.subscribe("n1".into(), Revision(5), now);
        assert_eq!(mid.from, Revision(11), "12 may have more events to come");
        hub.event(&moved("c", None, Some("n1"), 12), now);
        hub.event(&moved("d", None, Some("n1"), 13), now);
        let late = hub.subscribe("n1".into(), Revision(5), now);
        assert_eq!(late.from, Revision(12));
        assert_eq!(
            drain(&mut mid),
            vec![
                c("ADDED", 12, "b"),
                c("ADDED", 12, "c"),
                c("ADDED", 13, "d")
            ]
        );
        assert_eq!(drain(&mut early), vec![c("ADDED", 13, "d")]);
        // A bookmark closes the revision: later subscribers start after it.
        hub.bookmark(Revision(20), now);
        assert_eq!(
            hub.subscribe("n1".into(), Revision(5), now).from,
            Revision(20)
        );
    }

    /// A subscriber resuming from a revision the hub has not reached yet
    /// gets nothing at or below it.
    #[test]
    fn a_stream_ahead_of_the_hub_gets_only_what_follows_its_revision() {
        let now = Instant::now();
        let mut hub = Hub::new(Revision(10));
        let mut s = hub.subscribe("n1".into(), Revision(15), now);
        assert_eq!(s.from, Revision(15));
        for rev in 11..=17 {
            hub.event(&moved(&format!("p{rev}"), None, Some("n1"), rev), now);
        }
        assert_eq!(
            drain(&mut s),
            vec![c("ADDED", 16, "p16"), c("ADDED", 17, "p17")]
        );
    }

    #[test]
    fn progress_goes_to_silent_streams_while_the_hub_reads_on() {
        let t0 = Instant::now();
        let mut hub = Hub::new(Revision(10));
        let mut quiet = hub.subscribe("n1".into(), Revision(10), t0);
        let mut busy = hub.subscribe("n2".into(), Revision(10), t0);
        hub.event(&moved("a", None, Some("n2"), 11), t0);
        hub.event(&moved("b", None, Some("n2"), 12), t0 + PROGRESS_EVERY / 2);
        // Under a second: nobody is owed anything.
        hub.tick(t0 + PROGRESS_EVERY / 2);
        assert_eq!(drain(&mut quiet), vec![]);
        // n1 has been silent a second and the hub read to 11 (12 may
        // still have events to come); n2 was sent a change half a second ago.
        hub.tick(t0 + PROGRESS_EVERY);
        assert_eq!(drain(&mut quiet), vec![c("PROGRESS", 11, "")]);
        assert_eq!(drain(&mut busy).len(), 2);
        // Nothing read since: no repeat from the ticks...
        hub.tick(t0 + 3 * PROGRESS_EVERY);
        assert_eq!(drain(&mut quiet), vec![]);
        // ...but the watch's bookmark vouches for the revision again.
        hub.bookmark(Revision(12), t0 + 3 * PROGRESS_EVERY);
        assert_eq!(drain(&mut quiet), vec![c("PROGRESS", 12, "")]);
        assert_eq!(drain(&mut busy), vec![c("PROGRESS", 12, "")]);
    }

    /// A stream whose agent does not read is dropped at a revision
    /// boundary once its queue is nearly full; the others are served on.
    #[test]
    fn a_stream_that_does_not_keep_up_is_dropped_not_waited_for() {
        let now = Instant::now();
        let mut hub = Hub::new(Revision(0));
        let mut slow = hub.subscribe("n1".into(), Revision(0), now);
        let mut fast = hub.subscribe("n1".into(), Revision(0), now);
        let mut other = hub.subscribe("n2".into(), Revision(0), now);
        let mut got = Vec::new();
        let mut rev = 0;
        for i in 0..QUEUE {
            // Two changes per revision for n1, one for n2.
            rev += 1;
            hub.event(&moved(&format!("a{i}"), None, Some("n1"), rev), now);
            hub.event(&moved(&format!("b{i}"), None, Some("n1"), rev), now);
            hub.event(&moved(&format!("c{i}"), None, Some("n2"), rev), now);
            got.extend(drain(&mut fast));
            assert_eq!(drain(&mut other).len(), 1);
        }
        assert_eq!(got.len(), 2 * QUEUE, "the reading stream got everything");
        let queued = drain(&mut slow);
        assert!(queued.len() < QUEUE, "{}", queued.len());
        assert_eq!(queued.len() % 2, 0, "whole revisions: {}", queued.len());
        assert!(
            matches!(
                slow.items.try_recv(),
                Err(mpsc::error::TryRecvError::Disconnected)
            ),
            "the slow stream's queue ended"
        );
        assert_eq!(hub.nodes["n1"].len(), 1);
    }

    #[test]
    fn ended_watch_ends_every_stream_with_its_reason() {
        let now = Instant::now();
        let mut hub = Hub::new(Revision(0));
        let mut a = hub.subscribe("n1".into(), Revision(0), now);
        let mut b = hub.subscribe("n2".into(), Revision(0), now);
        hub.end(StoreError::Unavailable("gone".into()));
        for s in [&mut a, &mut b] {
            let items = drain(s);
            assert_eq!(items.len(), 1);
            assert_eq!(items[0].0, "ENDED");
            assert!(matches!(
                s.items.try_recv(),
                Err(mpsc::error::TryRecvError::Disconnected)
            ));
        }
    }
}
