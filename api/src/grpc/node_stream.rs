//! The NodeAgent service: each node agent's stream of the pods bound to it.
//!
//! ```text
//! agent ── Hello{node, after?} ──► master
//!          after unset, or older than the watch window (410):
//!             list every pod at one revision R, keep spec.nodeName == node
//!             ◄── Snapshot{R, pods}
//!          then the store's watch on pods after R (or after `after`):
//!             ◄── PodChange{ADDED|MODIFIED|DELETED, rev, pod}   in revision order
//!             ◄── Progress{rev}         after ~1 s with nothing sent: the watch's
//!                                       bookmark when idle, or the last revision
//!                                       seen when only other nodes' pods changed
//! agent ── Heartbeat{revision} ──► (logged; the stream's liveness)
//! ```
//!
//! Served from the store's watch window like any watch, so every master can
//! serve any agent and an agent that moves to another master resumes where it
//! left off. What must stay true: a pod is announced to a node only while its
//! `spec.nodeName` names it; an event where it stops naming it (or the pod is
//! deleted) is a DELETED with the pod's last state; revisions only grow. The
//! filter uses the event's previous object, so no per-stream state is needed
//! to know what the agent holds.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use balsa_proto::node::node_agent_server::{NodeAgent, NodeAgentServer};
use balsa_proto::node::{
    agent_message, master_message, AgentMessage, ChangeType, Hello, MasterMessage, PodChange,
    Progress, Snapshot,
};
use balsa_proto::NODE_STREAM_VERSION;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::status::to_status;
use crate::registry::Registry;
use crate::store::{
    Event, EventType, KeyPrefix, ListOptions, Revision, Store, StoreError, WatchEvent, WatchOptions,
};

/// How long a stream goes without a message before it gets a `Progress`
/// (the agent gives a master up after 4 s of silence).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long a new stream may take to say hello.
const HELLO_WITHIN: Duration = Duration::from_secs(10);
/// Messages queued for one agent; a slower agent holds back its own watch,
/// which the window cuts off when it falls too far behind.
const QUEUE: usize = 256;

pub struct NodeStreamService {
    store: Arc<dyn Store>,
    stopping: watch::Receiver<bool>,
}

/// The service; its streams end (UNAVAILABLE) when `stopping` turns true, so
/// agents move to another master at once rather than when this one goes quiet.
pub fn server(
    registry: Registry,
    stopping: watch::Receiver<bool>,
) -> NodeAgentServer<NodeStreamService> {
    NodeAgentServer::new(NodeStreamService {
        store: registry.store().clone(),
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

fn pods() -> KeyPrefix {
    KeyPrefix {
        group: String::new(),
        resource: "pods".into(),
        namespace: None,
        name: None,
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
    hello: Hello,
    mut inbound: In,
    tx: Tx,
    mut stopping: watch::Receiver<bool>,
) where
    In: Stream<Item = Result<AgentMessage, Status>> + Unpin,
{
    let node = Bound::new(&hello.node_name);
    let resumed = match hello.after {
        Some(after) => match watch(&store, Revision(after)).await {
            Ok(w) => Some(w),
            Err(StoreError::Expired { .. }) => None,
            Err(e) => {
                let _ = tx.send(Err(to_status(&e))).await;
                return;
            }
        },
        None => None,
    };
    let (mut events, start) = match resumed {
        Some(w) => (w, Revision(hello.after.unwrap_or_default())),
        None => {
            let (revision, pods) = match snapshot(&store, &node).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(to_status(&e))).await;
                    return;
                }
            };
            tracing::debug!(%revision, pods = pods.len(), "node stream snapshot");
            let snap = Snapshot {
                revision: revision.0,
                pods,
                version: NODE_STREAM_VERSION,
            };
            if !send(&tx, master_message::Message::Snapshot(snap)).await {
                return;
            }
            match watch(&store, revision).await {
                Ok(w) => (w, revision),
                Err(e) => {
                    let _ = tx.send(Err(to_status(&e))).await;
                    return;
                }
            }
        }
    };
    let mut progress = Keepalive::new(start);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(WatchEvent::Event(e))) => {
                    progress.seen(e.revision);
                    if let Some(change) = node.change(&e) {
                        if !send(&tx, master_message::Message::Change(change)).await {
                            return;
                        }
                        progress.sent();
                    }
                }
                Some(Ok(WatchEvent::Bookmark(rev))) => {
                    progress.seen(rev);
                    if !send_progress(&tx, &mut progress).await {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::info!(error = %e, "node stream's watch ended");
                    let _ = tx.send(Err(to_status(&e))).await;
                    return;
                }
                None => return,
            },
            // Other nodes' pods kept the watch busy (so it sends no
            // bookmarks) while nothing was for this node.
            _ = progress.due() => {
                if !send_progress(&tx, &mut progress).await {
                    return;
                }
            }
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
                let _ = tx.send(Err(Status::unavailable("this master is shutting down"))).await;
                return;
            }
        }
    }
}

async fn send_progress(tx: &Tx, progress: &mut Keepalive) -> bool {
    let p = Progress {
        revision: progress.revision.0,
    };
    let ok = send(tx, master_message::Message::Progress(p)).await;
    progress.sent();
    ok
}

/// When a stream owes its agent a `Progress`. The watch's bookmarks come
/// only when the watch is idle (and, on a Raft replica, only while it is
/// in touch with the cluster); events for other nodes are a sign of life
/// too, but they are filtered out, so a stream that saw some and sent
/// nothing for [`PROGRESS_EVERY`] says how far it has read. A stream that
/// sees nothing at all stays silent, so that an agent on a master cut off
/// from the cluster still notices and moves.
struct Keepalive {
    /// Every event up to here was seen (and sent when it was this node's).
    revision: Revision,
    /// When the agent was last sent something.
    last_sent: tokio::time::Instant,
    /// Whether `revision` moved since then.
    unsent: bool,
}

impl Keepalive {
    fn new(start: Revision) -> Self {
        Self {
            revision: start,
            last_sent: tokio::time::Instant::now(),
            unsent: false,
        }
    }

    fn seen(&mut self, revision: Revision) {
        if revision > self.revision {
            self.revision = revision;
            self.unsent = true;
        }
    }

    fn sent(&mut self) {
        self.last_sent = tokio::time::Instant::now();
        self.unsent = false;
    }

    /// Ready when a `Progress` is owed; pending for ever otherwise.
    async fn due(&self) {
        if self.unsent {
            tokio::time::sleep_until(self.last_sent + PROGRESS_EVERY).await;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

async fn watch(
    store: &Arc<dyn Store>,
    after: Revision,
) -> Result<crate::store::WatchStream, StoreError> {
    store
        .watch(
            &pods(),
            WatchOptions {
                after,
                bookmark_interval: Some(PROGRESS_EVERY),
            },
        )
        .await
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

/// Which pods are bound to one node.
struct Bound {
    name: String,
    /// Finds `"<name>"`: a pod whose JSON lacks it cannot name the node,
    /// which spares parsing most other nodes' pods. (A searcher, not a
    /// comparison at every offset: every stream scans every pod event.)
    quoted: memchr::memmem::Finder<'static>,
}

#[derive(Deserialize)]
struct PodNode {
    spec: Option<SpecNode>,
}

#[derive(Deserialize)]
struct SpecNode {
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
}

impl Bound {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            quoted: memchr::memmem::Finder::new(format!("\"{name}\"").as_bytes()).into_owned(),
        }
    }

    fn holds(&self, json: &[u8]) -> bool {
        if self.quoted.find(json).is_none() {
            return false;
        }
        serde_json::from_slice::<PodNode>(json)
            .ok()
            .and_then(|p| p.spec?.node_name)
            .is_some_and(|n| n == self.name)
    }

    /// The event as this node sees it, if it concerns the node at all.
    fn change(&self, e: &Event) -> Option<PodChange> {
        let now = e.kind != EventType::Deleted && self.holds(&e.object.data);
        let before = match e.kind {
            EventType::Added => false,
            EventType::Modified => e.prev.as_ref().is_some_and(|p| self.holds(&p.data)),
            EventType::Deleted => self.holds(&e.object.data),
        };
        let ty = match (before, now) {
            (false, true) => ChangeType::Added,
            (true, true) => ChangeType::Modified,
            (true, false) => ChangeType::Deleted,
            (false, false) => return None,
        };
        Some(PodChange {
            r#type: ty as i32,
            revision: e.revision.0,
            pod: e.object.data.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Object, ReadMode, ResourceKey};

    fn pod(node: Option<&str>) -> Arc<Object> {
        let spec = match node {
            Some(n) => serde_json::json!({"nodeName": n}),
            None => serde_json::json!({}),
        };
        let data = serde_json::json!({"metadata": {"name": "p"}, "spec": spec});
        Arc::new(Object {
            key: ResourceKey::new("", "pods", Some("default"), "p"),
            data: serde_json::to_vec(&data).expect("json").into(),
            revision: Revision(5),
            created: Revision(1),
        })
    }

    fn event(kind: EventType, prev: Option<&str>, now: Option<&str>) -> Event {
        Event {
            revision: Revision(5),
            kind,
            object: pod(now),
            prev: (kind == EventType::Modified).then(|| pod(prev)),
        }
    }

    fn ty(c: Option<PodChange>) -> Option<ChangeType> {
        c.map(|c| ChangeType::try_from(c.r#type).expect("a change type"))
    }

    /// Pods of other nodes change all the time, so the store's watch is
    /// never idle and sends no bookmarks; for longer than an agent waits in
    /// silence (4 s) the stream still hears a `Progress` about every
    /// second, with the revision it has read to, and no change.
    #[tokio::test]
    async fn a_stream_hears_progress_while_only_other_nodes_pods_change() {
        let store: Arc<dyn Store> = crate::store::mem::MemStore::new(Default::default());
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let (_agent, inbound) = mpsc::channel::<Result<AgentMessage, Status>>(1);
        let (_stop, stopping) = watch::channel(false);
        let hello = Hello {
            version: NODE_STREAM_VERSION,
            node_name: "n1".into(),
            after: None,
        };
        let inbound = tokio_stream::wrappers::ReceiverStream::new(inbound);
        tokio::spawn(serve(store.clone(), hello, inbound, tx, stopping));
        let first = rx.recv().await.expect("a message").expect("no error");
        assert!(matches!(
            first.message,
            Some(master_message::Message::Snapshot(_))
        ));
        let churn = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let pod = serde_json::json!({"metadata": {"name": format!("p{i}")},
                        "spec": {"nodeName": "n2"}});
                    let key = ResourceKey::new("", "pods", Some("default"), format!("p{i}"));
                    let data = serde_json::to_vec(&pod).expect("json");
                    store.create(key, data.into()).await.expect("create");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let start = tokio::time::Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < Duration::from_millis(4500) {
            let m = tokio::time::timeout(2 * PROGRESS_EVERY, rx.recv())
                .await
                .expect("a message at least every 2 s")
                .expect("stream open")
                .expect("no error");
            match m.message {
                Some(master_message::Message::Progress(p)) => seen.push(p.revision),
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
    fn a_pod_is_the_nodes_only_while_it_names_it() {
        let b = Bound::new("n1");
        use EventType::*;
        assert_eq!(
            ty(b.change(&event(Added, None, Some("n1")))),
            Some(ChangeType::Added)
        );
        assert_eq!(ty(b.change(&event(Added, None, Some("n2")))), None);
        assert_eq!(ty(b.change(&event(Added, None, None))), None);
        // Bound now: the node hears of it for the first time.
        assert_eq!(
            ty(b.change(&event(Modified, None, Some("n1")))),
            Some(ChangeType::Added)
        );
        assert_eq!(
            ty(b.change(&event(Modified, Some("n1"), Some("n1")))),
            Some(ChangeType::Modified)
        );
        assert_eq!(
            ty(b.change(&event(Modified, Some("n1"), Some("n2")))),
            Some(ChangeType::Deleted)
        );
        assert_eq!(ty(b.change(&event(Modified, Some("n2"), Some("n2")))), None);
        assert_eq!(
            ty(b.change(&event(Deleted, None, Some("n1")))),
            Some(ChangeType::Deleted)
        );
        assert_eq!(ty(b.change(&event(Deleted, None, Some("n2")))), None);
        // A prefix of another node's name is not that node.
        assert!(!Bound::new("n").holds(&pod(Some("n1")).data));
    }
}
