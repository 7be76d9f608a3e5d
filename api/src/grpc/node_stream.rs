//! The NodeAgent service: each node agent's stream of the pods bound to it.
//!
//! ```text
//! agent ── Hello{node, after?} ──► master
//!          after unset, or older than the watch window (410):
//!             list every pod at one revision R, keep spec.nodeName == node
//!             ◄── Snapshot{R, pods}            (then after = R)
//!          subscribe to the master's pod hub (node_fanout) after `after`;
//!          the hub follows from its own revision F >= after:
//!             ◄── PodChange ...  of (after, F], read from the store's window
//!             ◄── PodChange{ADDED|MODIFIED|DELETED, rev, pod}   from the hub,
//!                                                  in revision order
//!             ◄── Progress{rev}     after ~1 s with nothing sent: on the hub
//!                                   watch's bookmark when pods are idle, or
//!                                   the hub's revision when only other
//!                                   nodes' pods changed
//! agent ── Heartbeat{revision} ──► (logged; the stream's liveness)
//! ```
//!
//! Served from the store's watch window like any watch, so every master can
//! serve any agent and an agent that moves to another master resumes where it
//! left off. One watch per master serves every stream (`node_fanout`); what a
//! pod event means to a node is `node_changes`. What must stay true: a pod is
//! announced to a node only while its `spec.nodeName` names it; an event where
//! it stops naming it (or the pod is deleted) is a DELETED with the pod's last
//! state; a stream resumed after R gets exactly the node's changes after R,
//! none twice, in revision order; revisions only grow. A stream whose agent
//! reads too slowly ends (UNAVAILABLE) and the agent resumes.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use balsa_proto::node::node_agent_server::{NodeAgent, NodeAgentServer};
use balsa_proto::node::{
    agent_message, master_message, AgentMessage, Hello, MasterMessage, Progress, Snapshot,
};
use balsa_proto::NODE_STREAM_VERSION;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::node_changes::{changes, node_of, pods};
use super::node_fanout::{Fanout, Item, Subscription};
use super::status::to_status;
use crate::registry::Registry;
use crate::store::{Event, ListOptions, Revision, Store, StoreError, WatchEvent, WatchOptions};

/// How long a new stream may take to say hello.
const HELLO_WITHIN: Duration = Duration::from_secs(10);
/// Messages queued for one agent; behind them the hub queues more, and drops
/// the stream when those fill too.
const QUEUE: usize = 256;
/// The catch-up watch says it has read everything this soon after its last
/// event (its bookmark is how the catch-up knows it reached the hub).
const CATCH_UP_BOOKMARK: Duration = Duration::from_millis(5);

pub struct NodeStreamService {
    store: Arc<dyn Store>,
    fanout: Fanout,
    stopping: watch::Receiver<bool>,
}

/// The service; its streams end (UNAVAILABLE) when `stopping` turns true, so
/// agents move to another master at once rather than when this one goes quiet.
pub fn server(
    registry: Registry,
    stopping: watch::Receiver<bool>,
) -> NodeAgentServer<NodeStreamService> {
    let store = registry.store().clone();
    NodeAgentServer::new(NodeStreamService {
        fanout: Fanout::new(store.clone(), stopping.clone()),
        store,
        stopping,
    })
    .max_decoding_message_size(16 << 20)
    .max_encoding_message_size(256 << 20)
}

type ConnectStream = Pin<Box<dyn Stream<Item = Result<MasterMessage, Status>> + Send>>;

#[tonic::async_trait]
impl NodeAgent for NodeStreamService {
    type AttachStream = ConnectStream;

    async fn attach(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_WITHIN, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10 s"))??;
        let hello = match first.and_then(|m| m.message) {
            Some(agent_message::Message::Hello(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ))
            }
        };
        if hello.version != NODE_STREAM_VERSION {
            return Err(Status::failed_precondition(format!(
                "this master speaks node stream version {NODE_STREAM_VERSION}, not {}",
                hello.version
            )));
        }
        if hello.node_name.is_empty() {
            return Err(Status::invalid_argument("hello.node_name is required"));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let span =
            tracing::info_span!("node_stream", node.name = %hello.node_name, after = ?hello.after);
        tokio::spawn(
            serve(
                self.store.clone(),
                self.fanout.clone(),
                hello,
                inbound,
                tx,
                self.stopping.clone(),
            )
            .instrument(span),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

type Tx = mpsc::Sender<Result<MasterMessage, Status>>;

async fn send(tx: &Tx, m: master_message::Message) -> bool {
    tx.send(Ok(MasterMessage { message: Some(m) }))
        .await
        .is_ok()
}

async fn serve<In>(
    store: Arc<dyn Store>,
    fanout: Fanout,
    hello: Hello,
    mut inbound: In,
    tx: Tx,
    mut stopping: watch::Receiver<bool>,
) where
    In: Stream<Item = Result<AgentMessage, Status>> + Unpin,
{
    let node = Bound::new(&hello.node_name);
    let shutting_down = || Status::unavailable("this master is shutting down");
    let started = tokio::select! {
        s = start(&store, &fanout, &node, hello.after.map(Revision), &tx) => s,
        _ = tx.closed() => return,
        _ = async { stopping.wait_for(|s| *s).await.map(|_| ()) } => {
            let _ = tx.send(Err(shutting_down())).await;
            return;
        }
    };
    let mut sub = match started {
        Ok(Some(sub)) => sub,
        // The agent hung up.
        Ok(None) => return,
        Err(e) => {
            let _ = tx.send(Err(to_status(&e))).await;
            return;
        }
    };
    loop {
        tokio::select! {
            item = sub.items.recv() => match item {
                Some(Item::Change(change)) => {
                    if !send(&tx, master_message::Message::Change(change)).await {
                        return;
                    }
                }
                Some(Item::Progress(revision)) => {
                    let p = Progress { revision: revision.0 };
                    if !send(&tx, master_message::Message::Progress(p)).await {
                        return;
                    }
                }
                Some(Item::Ended(e)) => {
                    tracing::info!(error = %e, "node stream's watch ended");
                    let _ = tx.send(Err(to_status(&e))).await;
                    return;
                }
                None => {
                    let why = "this node stream fell behind; resume from the last revision received";
                    tracing::info!(why);
                    let _ = tx.send(Err(Status::unavailable(why))).await;
                    return;
                }
            },
            msg = inbound.next() => match msg {
                Some(Ok(AgentMessage { message: Some(agent_message::Message::Heartbeat(h)) })) => {
                    tracing::trace!(revision = h.revision, "node heartbeat");
                }
                Some(Ok(_)) => {
                    let _ = tx.send(Err(Status::invalid_argument("only heartbeats follow the hello"))).await;
                    return;
                }
                // The agent hung up.
                None | Some(Err(_)) => return,
            },
            _ = tx.closed() => return,
            // (The wait's guard is not Send: drop it before the send below.)
            _ = async { stopping.wait_for(|s| *s).await.map(|_| ()) } => {
                let _ = tx.send(Err(shutting_down())).await;
                return;
            }
        }
    }
}

/// Brings the agent to where the hub is: a snapshot (no `after`, or one
/// older than the window), then the node's changes between that revision
/// and the hub's, read from the window. The subscription follows on from
/// there; `None` when the agent went away meanwhile.
async fn start(
    store: &Arc<dyn Store>,
    fanout: &Fanout,
    node: &Bound,
    after: Option<Revision>,
    tx: &Tx,
) -> Result<Option<Subscription>, StoreError> {
    let mut resume = after;
    loop {
        let after = match resume {
            Some(after) => after,
            None => {
                let (revision, pods) = snapshot(store, node).await?;
                tracing::debug!(%revision, pods = pods.len(), "node stream snapshot");
                let snap = Snapshot {
                    revision: revision.0,
                    pods,
                    version: NODE_STREAM_VERSION,
                };
                if !send(tx, master_message::Message::Snapshot(snap)).await {
                    return Ok(None);
                }
                revision
            }
        };
        let sub = fanout.subscribe(&node.name, after).await?;
        if sub.from <= after {
            return Ok(Some(sub));
        }
        match catch_up(store, node, after, sub.from, tx).await {
            Ok(true) => return Ok(Some(sub)),
            Ok(false) => return Ok(None),
            // Nothing was sent: the window refuses the start at once.
            Err(StoreError::Expired { .. }) if resume.is_some() => {
                tracing::debug!(%after, "node stream's revision left the window; snapshot");
                resume = None;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sends the node's changes with a revision in `(after, upto]`, from the
/// store's window; false when the agent went away. `Expired` before sending
/// anything when `after` has left the window.
async fn catch_up(
    store: &Arc<dyn Store>,
    node: &Bound,
    after: Revision,
    upto: Revision,
    tx: &Tx,
) -> Result<bool, StoreError> {
    let opts = WatchOptions {
        after,
        bookmark_interval: Some(CATCH_UP_BOOKMARK),
    };
    let mut events = store.watch(&pods(), opts).await?;
    while let Some(item) = events.next().await {
        match item? {
            WatchEvent::Event(e) if e.revision > upto => return Ok(true),
            WatchEvent::Event(e) => {
                if !node.mentioned(&e) {
                    continue;
                }
                for (n, change) in changes(&e) {
                    if n == node.name && !send(tx, master_message::Message::Change(change)).await {
                        return Ok(false);
                    }
                }
            }
            WatchEvent::Bookmark(r) if r >= upto => return Ok(true),
            WatchEvent::Bookmark(_) => {}
        }
    }
    Err(StoreError::Unavailable(
        "the store's watch ended during a node stream's catch-up".into(),
    ))
}

/// Every pod bound to the node, at one revision.
async fn snapshot(
    store: &Arc<dyn Store>,
    node: &Bound,
) -> Result<(Revision, Vec<Bytes>), StoreError> {
    let mut pods = Vec::new();
    let mut opts = ListOptions {
        limit: Some(1000),
        ..Default::default()
    };
    loop {
        let page = store.list(&self::pods(), opts.clone()).await?;
        pods.extend(
            page.items
                .into_iter()
                .filter(|o| node.holds(&o.data))
                .map(|o| o.data),
        );
        match page.continue_token {
            Some(t) => opts.continue_token = Some(t),
            None => return Ok((page.revision, pods)),
        }
    }
}

/// One node, for the reads of every pod that one stream makes alone (its
/// snapshot, its catch-up).
struct Bound {
    name: String,
    /// Finds `"<name>"`: a pod whose JSON lacks it cannot name the node,
    /// which spares parsing most other nodes' pods.
    quoted: memchr::memmem::Finder<'static>,
}

impl Bound {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            quoted: memchr::memmem::Finder::new(format!("\"{name}\"").as_bytes()).into_owned(),
        }
    }

    fn holds(&self, json: &[u8]) -> bool {
        self.quoted.find(json).is_some() && node_of(json).is_some_and(|n| n == self.name)
    }

    /// Whether the event may concern the node at all.
    fn mentioned(&self, e: &Event) -> bool {
        self.quoted.find(&e.object.data).is_some()
            || e.prev
                .as_ref()
                .is_some_and(|p| self.quoted.find(&p.data).is_some())
    }
}

#[cfg(test)]
mod tests {
    use balsa_proto::node::ChangeType;

    use super::super::node_fanout::PROGRESS_EVERY;
    use super::*;
    use crate::store::mem::MemStore;
    use crate::store::window::WindowConfig;
    use crate::store::{Op, ReadMode, ResourceKey};

    /// A message, simplified: (kind, revision, pod names).
    type Seen = (&'static str, u64, Vec<String>);

    fn name_of(json: &[u8]) -> String {
        let pod: serde_json::Value = serde_json::from_slice(json).expect("json");
        pod["metadata"]["name"].as_str().unwrap_or("").to_string()
    }

    fn simplify(m: MasterMessage) -> Seen {
        match m.message.expect("a message") {
            master_message::Message::Snapshot(s) => (
                "SNAPSHOT",
                s.revision,
                s.pods.iter().map(|p| name_of(p)).collect(),
            ),
            master_message::Message::Change(c) => {
                let ty = ChangeType::try_from(c.r#type).expect("a change type");
                (ty.as_str_name(), c.revision, vec![name_of(&c.pod)])
            }
            master_message::Message::Progress(p) => ("PROGRESS", p.revision, vec![]),
        }
    }

    struct Agent {
        rx: mpsc::Receiver<Result<MasterMessage, Status>>,
        /// Held: dropping it hangs the stream up.
        _out: mpsc::Sender<Result<AgentMessage, Status>>,
    }

    impl Agent {
        fn attach(
            store: &Arc<dyn Store>,
            fanout: &Fanout,
            node: &str,
            after: Option<u64>,
            stopping: &watch::Receiver<bool>,
        ) -> Self {
            let (tx, rx) = mpsc::channel(QUEUE);
            let (out, inbound) = mpsc::channel(1);
            let hello = Hello {
                version: NODE_STREAM_VERSION,
                node_name: node.into(),
                after,
            };
            let inbound = tokio_stream::wrappers::ReceiverStream::new(inbound);
            tokio::spawn(serve(
                store.clone(),
                fanout.clone(),
                hello,
                inbound,
                tx,
                stopping.clone(),
            ));
            Self { rx, _out: out }
        }

        async fn next(&mut self) -> Result<Seen, Status> {
            let m = tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
                .await
                .expect("a message within 5 s")
                .expect("the stream open");
            m.map(simplify)
        }

        /// Changes up to and including the one at `last`, skipping progress.
        async fn changes_until(&mut self, last: u64) -> Vec<Seen> {
            let mut out = Vec::new();
            loop {
                let m = self.next().await.expect("no error");
                if m.0 == "PROGRESS" {
                    continue;
                }
                assert_ne!(m.0, "SNAPSHOT", "{m:?}");
                let rev = m.1;
                out.push(m);
                if rev >= last {
                    return out;
                }
            }
        }
    }

    /// A pod; each one differs (a rewrite of the same pod is never a no-op).
    fn pod_json(name: &str, node: Option<&str>) -> Bytes {
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let spec = match node {
            Some(n) => serde_json::json!({"nodeName": n}),
            None => serde_json::json!({}),
        };
        let pod = serde_json::json!({"metadata": {"name": name, "annotations": {"write": write.to_string()}},
            "spec": spec});
        serde_json::to_vec(&pod).expect("json").into()
    }

    fn key(name: &str) -> ResourceKey {
        ResourceKey::new("", "pods", Some("default"), name)
    }

    /// Creates or replaces pods, all at one revision; that revision.
    async fn put(store: &Arc<dyn Store>, pods: &[(&str, Option<&str>)]) -> u64 {
        let mut ops = Vec::new();
        for (name, node) in pods {
            let value = pod_json(name, *node);
            ops.push(match store.get(&key(name), ReadMode::Local).await {
                Ok(_) => Op::Update {
                    key: key(name),
                    value,
                    expected: None,
                },
                Err(_) => Op::Create {
                    key: key(name),
                    value,
                },
            });
        }
        store.txn(ops).await.expect("write").0 .0
    }

    async fn delete(store: &Arc<dyn Store>, name: &str) -> u64 {
        store
            .delete(key(name), Default::default())
            .await
            .expect("delete")
            .revision
            .0
    }

    fn change(ty: &'static str, rev: u64, name: &str) -> Seen {
        (ty, rev, vec![name.to_string()])
    }

    fn mem(config: WindowConfig) -> (Arc<dyn Store>, Fanout, watch::Sender<bool>) {
        let store: Arc<dyn Store> = MemStore::new(config);
        let (stop, stopping) = watch::channel(false);
        let fanout = Fanout::new(store.clone(), stopping);
        (store, fanout, stop)
    }

    /// One node's history through moves, a batch and a delete; then a
    /// stream resumed after each of its revisions (and between them) gets
    /// exactly the changes after that revision, in order, none twice: the
    /// part the hub had already passed from the window, the rest from the
    /// hub.
    #[tokio::test]
    async fn a_resumed_stream_gets_exactly_the_changes_after_its_revision() {
        let (store, fanout, stop) = mem(WindowConfig::default());
        let stopping = stop.subscribe();
        let mut first = Agent::attach(&store, &fanout, "n1", None, &stopping);
        let snap = first.next().await.expect("snapshot");
        assert_eq!(snap.0, "SNAPSHOT");
        let r0 = snap.1;
        let a = put(&store, &[("a", Some("n1"))]).await;
        put(&store, &[("b", Some("n2")), ("x", None)]).await;
        let cd = put(&store, &[("c", Some("n1")), ("d", Some("n1"))]).await;
        let a2 = put(&store, &[("a", Some("n1"))]).await;
        // Moved here from n2, and away to n2 (the API refuses a move; the
        // stream must still hold).
        let b = put(&store, &[("b", Some("n1"))]).await;
        let a3 = put(&store, &[("a", Some("n2"))]).await;
        let c = delete(&store, "c").await;
        let end = put(&store, &[("z", Some("n1"))]).await;
        let want = vec![
            change("ADDED", a, "a"),
            change("ADDED", cd, "c"),
            change("ADDED", cd, "d"),
            change("MODIFIED", a2, "a"),
            change("ADDED", b, "b"),
            change("DELETED", a3, "a"),
            change("DELETED", c, "c"),
            change("ADDED", end, "z"),
        ];
        assert_eq!(first.changes_until(end).await, want);
        let mut resume_at: Vec<u64> = want.iter().map(|w| w.1).collect();
        resume_at.extend([r0, a + 1, cd - 1]);
        resume_at.retain(|r| *r < end);
        for after in resume_at {
            let mut again = Agent::attach(&store, &fanout, "n1", Some(after), &stopping);
            let rest: Vec<Seen> = want.iter().filter(|w| w.1 > after).cloned().collect();
            assert_eq!(again.changes_until(end).await, rest, "after {after}");
        }
        // ...and on with what comes next.
        let next = put(&store, &[("d", None)]).await;
        assert_eq!(
            first.changes_until(next).await,
            vec![change("DELETED", next, "d")]
        );
    }

    /// A stream joining while pods are being bound meets the hub in the
    /// middle: snapshot, then every change after it, none twice.
    #[tokio::test]
    async fn a_stream_joining_during_churn_misses_nothing_and_repeats_nothing() {
        let (store, fanout, stop) = mem(WindowConfig::default());
        let stopping = stop.subscribe();
        let _other = Agent::attach(&store, &fanout, "n2", None, &stopping);
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut last = 0;
                for i in 0..300 {
                    let name = format!("p{i}");
                    let node = if i % 3 == 0 { "n1" } else { "n2" };
                    last = put(&store, &[(&name, Some(node))]).await;
                    if i % 20 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                last
            })
        };
        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut late = Agent::attach(&store, &fanout, "n1", None, &stopping);
        let (kind, _, mut names) = late.next().await.expect("snapshot");
        assert_eq!(kind, "SNAPSHOT");
        let last = writer.await.expect("writer");
        let end = put(&store, &[("end", Some("n1"))]).await;
        assert!(end > last);
        for (kind, _, pod) in late.changes_until(end).await {
            assert_eq!(kind, "ADDED");
            names.extend(pod);
        }
        let mut want: Vec<String> = (0..300)
            .filter(|i| i % 3 == 0)
            .map(|i| format!("p{i}"))
            .collect();
        want.push("end".into());
        names.sort();
        want.sort();
        assert_eq!(names, want);
    }

    /// Many nodes on one master: each stream gets its own pods only.
    #[tokio::test]
    async fn many_streams_each_get_their_own_pods() {
        let (store, fanout, stop) = mem(WindowConfig::default());
        let stopping = stop.subscribe();
        let nodes: Vec<String> = (0..200).map(|i| format!("node-{i}")).collect();
        let mut agents = Vec::new();
        for n in &nodes {
            let mut a = Agent::attach(&store, &fanout, n, None, &stopping);
            assert_eq!(a.next().await.expect("snapshot").0, "SNAPSHOT");
            agents.push(a);
        }
        let mut revs = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            revs.push(put(&store, &[(&format!("p{i}"), Some(n))]).await);
        }
        for (i, a) in agents.iter_mut().enumerate() {
            let got = a.changes_until(revs[i]).await;
            assert_eq!(got, vec![change("ADDED", revs[i], &format!("p{i}"))]);
        }
    }

    /// An agent that stops reading does not hold the others back: its
    /// stream ends (UNAVAILABLE, to resume) after what was queued, while
    /// another stream of the same node gets every change.
    #[tokio::test]
    async fn a_stream_that_does_not_keep_up_ends_and_holds_no_one_back() {
        let (store, fanout, stop) = mem(WindowConfig::default());
        let stopping = stop.subscribe();
        let mut slow = Agent::attach(&store, &fanout, "n1", None, &stopping);
        let mut fast = Agent::attach(&store, &fanout, "n1", None, &stopping);
        assert_eq!(slow.next().await.expect("snapshot").0, "SNAPSHOT");
        assert_eq!(fast.next().await.expect("snapshot").0, "SNAPSHOT");
        let n = QUEUE + super::super::node_fanout::QUEUE + 200;
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut last = 0;
                for i in 0..n {
                    last = put(&store, &[(&format!("p{i}"), Some("n1"))]).await;
                }
                last
            })
        };
        let mut got = Vec::new();
        while got.len() < n {
            let m = fast.next().await.expect("no error");
            if m.0 != "PROGRESS" {
                got.push(m);
            }
        }
        let last = writer.await.expect("writer");
        assert_eq!(got.last().map(|m| m.1), Some(last));
        let mut queued = Vec::new();
        let end = loop {
            match slow.next().await {
                Ok(m) if m.0 == "PROGRESS" => {}
                Ok(m) => queued.push(m),
                Err(status) => break status,
            }
        };
        assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
        assert!(queued.len() < n, "{}", queued.len());
        assert_eq!(queued[..], got[..queued.len()], "a prefix, in order");
    }

    /// A revision that left the window (410) gets a snapshot instead.
    #[tokio::test]
    async fn a_resume_older_than_the_window_gets_a_snapshot() {
        let (store, fanout, stop) = mem(WindowConfig::events(4));
        let stopping = stop.subscribe();
        let first = put(&store, &[("p0", Some("n1"))]).await;
        for i in 1..10 {
            put(&store, &[(&format!("p{i}"), Some("n1"))]).await;
        }
        let mut agent = Agent::attach(&store, &fanout, "n1", Some(first), &stopping);
        let (kind, rev, mut names) = agent.next().await.expect("snapshot");
        assert_eq!(kind, "SNAPSHOT");
        let now = store.revision(ReadMode::Local).await.expect("revision").0;
        assert_eq!(rev, now);
        names.sort();
        let mut want: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
        want.sort();
        assert_eq!(names, want);
        let next = put(&store, &[("p10", Some("n1"))]).await;
        assert_eq!(
            agent.changes_until(next).await,
            vec![change("ADDED", next, "p10")]
        );
    }

    /// A master that stops ends its streams at once, so agents move on.
    #[tokio::test]
    async fn streams_end_when_the_master_stops() {
        let (store, fanout, stop) = mem(WindowConfig::default());
        let stopping = stop.subscribe();
        let mut agent = Agent::attach(&store, &fanout, "n1", None, &stopping);
        assert_eq!(agent.next().await.expect("snapshot").0, "SNAPSHOT");
        stop.send_replace(true);
        let end = loop {
            match agent.next().await {
                Ok(_) => {}
                Err(status) => break status,
            }
        };
        assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    }

    /// With nothing changing, a stream hears a `Progress` about every
    /// second (the hub watch's bookmark): the agent's sign that its master
    /// is in touch.
    #[tokio::test]
    async fn an_idle_stream_hears_progress_every_second() {
        let (store, fanout, stop) = mem(WindowConfig::default());
        let stopping = stop.subscribe();
        let mut agent = Agent::attach(&store, &fanout, "n1", None, &stopping);
        let (_, snap, _) = agent.next().await.expect("snapshot");
        for _ in 0..3 {
            let m = tokio::time::timeout(2 * PROGRESS_EVERY, agent.next())
                .await
                .expect("a message within 2 s")
                .expect("no error");
            assert_eq!(m, ("PROGRESS", snap, vec![]));
        }
    }

    /// Pods of other nodes change all the time, so the store's watch is
    /// never idle and sends no bookmarks; for longer than an agent waits in
    /// silence (4 s) the stream still hears a `Progress` about every
    /// second, with the revision it has read to, and no change.
    #[tokio::test]
    async fn a_stream_hears_progress_while_only_other_nodes_pods_change() {
        let (store, fanout, stop) = mem(WindowConfig::default());
        let stopping = stop.subscribe();
        let mut agent = Agent::attach(&store, &fanout, "n1", None, &stopping);
        assert_eq!(agent.next().await.expect("snapshot").0, "SNAPSHOT");
        let churn = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    put(&store, &[(&format!("p{i}"), Some("n2"))]).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let start = tokio::time::Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < Duration::from_millis(4500) {
            let m = tokio::time::timeout(2 * PROGRESS_EVERY, agent.next())
                .await
                .expect("a message at least every 2 s")
                .expect("no error");
            match m {
                ("PROGRESS", revision, _) => seen.push(revision),
                other => panic!("only progress is for n1, got {other:?}"),
            }
        }
        churn.abort();
        assert!(seen.len() >= 3, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        let now = store.revision(ReadMode::Local).await.expect("revision").0;
        assert!(
            seen.last().is_some_and(|r| *r + 50 > now),
            "{seen:?} vs {now}"
        );
    }

    #[test]
    fn a_snapshot_holds_the_pods_naming_the_node_exactly() {
        let b = Bound::new("n1");
        assert!(b.holds(&pod_json("p", Some("n1"))));
        assert!(!b.holds(&pod_json("p", Some("n2"))));
        assert!(!b.holds(&pod_json("n1", None)), "named like the node");
        // A prefix of another node's name is not that node.
        assert!(!Bound::new("n").holds(&pod_json("p", Some("n1"))));
    }
}
