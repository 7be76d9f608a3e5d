//! Many small writes in few requests. A [`Batcher`] sends the writes its
//! callers hand it as one `Batch` request (see the Objects service) and
//! answers each caller with its own write's result. While a request is in
//! flight the writes that arrive wait and go together in the next one, so a
//! lone write goes at once and a burst shares one request.
//!
//! A node agent's writes are small and come in bursts: each pod it starts
//! has a status and Events (Pulled, Created, Started). Sent one request per
//! write, they cost the agent and the master more in HTTP/2 framing and
//! request handling than in the writes themselves.
//!
//! Writes that may wait ([`Batcher::write_soon`]: a node's Events) wait up
//! to [`LINGER`] for one that may not ([`Batcher::write`]: a pod's status)
//! and go in its request; a pod that starts sends its status and its
//! Events together. They never hold such a write back: a request of them
//! alone leaves only when nothing is in flight, and a write that may not
//! wait goes while one is.
//!
//! A master that does not serve `Batch` (one older than this client)
//! answers UNIMPLEMENTED; the batcher then sends each write as its own
//! request from then on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use balsa_proto::objects::{batch_op, batch_result, BatchOp, BatchRequest, ObjectReply};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::{Code, Status};

use super::endpoints::Client;
use crate::grpc::client::Client as Channel;
use crate::grpc::server::MAX_BATCH_OPS;
use crate::grpc::status::api_from_status;
use crate::registry::ApiError;

/// The most writes one request carries.
pub const MAX_OPS: usize = 100;
const _: () = assert!(MAX_OPS <= MAX_BATCH_OPS);
/// How long a write that may wait waits for company (see the module doc).
pub const LINGER: Duration = Duration::from_millis(20);
/// Writes waiting for a request; a caller past it waits for room.
const QUEUE: usize = 4 * MAX_OPS;

type Outcome = Result<ObjectReply, ApiError>;

struct Pending {
    op: BatchOp,
    reply: oneshot::Sender<Outcome>,
    /// May wait for company ([`Batcher::write_soon`]).
    lazy: bool,
    at: Instant,
}

/// Hands writes to a task that batches them; clones share the task, which
/// ends when the last clone is dropped.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// A batcher sending through `client` (to its current master, failing
    /// over as the client does). Spawns its task: call within a runtime.
    pub fn spawn(client: Client) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(client, rx));
        Self { tx }
    }

    /// Sends `op` (built by `Api::create_op`, `Api::patch_status_op`, ...)
    /// with whatever else is waiting, and answers what its own request would
    /// have: the reply, or the error. A write whose request failed in
    /// transport may or may not have been made, as for any request.
    pub async fn write(&self, op: BatchOp) -> Outcome {
        self.hand_over(op, false).await
    }

    /// As [`Batcher::write`], for a write that may wait up to [`LINGER`]
    /// to share the request of one that may not (see the module doc).
    pub async fn write_soon(&self, op: BatchOp) -> Outcome {
        self.hand_over(op, true).await
    }

    async fn hand_over(&self, op: BatchOp, lazy: bool) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let gone = || ApiError::internal("the batcher has stopped");
        let pending = Pending {
            op,
            reply,
            lazy,
            at: Instant::now(),
        };
        self.tx.send(pending).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The writes waiting for a request, in arrival order.
#[derive(Default)]
struct Queue {
    writes: VecDeque<Pending>,
    /// How many of them may not wait.
    urgent: usize,
}

impl Queue {
    fn push(&mut self, p: Pending) {
        self.urgent += usize::from(!p.lazy);
        self.writes.push_back(p);
    }

    /// The next request's writes (up to [`MAX_OPS`], oldest first) and
    /// whether any of them may not wait.
    fn take(&mut self) -> (Vec<Pending>, bool) {
        let n = self.writes.len().min(MAX_OPS);
        let batch: Vec<Pending> = self.writes.drain(..n).collect();
        let urgent = batch.iter().filter(|p| !p.lazy).count();
        self.urgent -= urgent;
        (batch, urgent > 0)
    }
}

async fn run(client: Client, mut rx: mpsc::Receiver<Pending>) {
    let batching = Arc::new(AtomicBool::new(true));
    // Each answers whether its request carried a write that may not wait.
    let mut in_flight = FuturesUnordered::new();
    let mut urgent_in_flight = 0usize;
    let mut queue = Queue::default();
    let mut open = true;
    loop {
        // A write that may not wait goes unless one such is in flight; the
        // others only when nothing is in flight and the oldest has waited
        // long enough (or no more writes will come).
        let oldest = queue.writes.front().map(|p| p.at);
        let send = if queue.urgent > 0 {
            urgent_in_flight == 0
        } else {
            // A full request has all the company it can get.
            let full = queue.writes.len() >= MAX_OPS;
            in_flight.is_empty()
                && oldest.is_some_and(|at| !open || full || at + LINGER <= Instant::now())
        };
        if send {
            let (batch, urgent) = queue.take();
            urgent_in_flight += usize::from(urgent);
            let sent = answer(client.clone(), batch, batching.clone());
            in_flight.push(async move {
                sent.await;
                urgent
            });
            continue;
        }
        if !open && queue.writes.is_empty() && in_flight.is_empty() {
            return;
        }
        let linger_until = oldest
            .filter(|_| queue.urgent == 0 && in_flight.is_empty())
            .map(|at| at + LINGER);
        let linger = async move {
            match linger_until {
                Some(until) => tokio::time::sleep_until(until).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            first = rx.recv(), if open && queue.writes.len() < MAX_OPS => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                queue.push(first);
                while queue.writes.len() < MAX_OPS {
                    match rx.try_recv() {
                        Ok(p) => queue.push(p),
                        Err(_) => break,
                    }
                }
            }
            Some(urgent) = in_flight.next(), if !in_flight.is_empty() => {
                urgent_in_flight -= usize::from(urgent);
            }
            () = linger => {}
        }
    }
}

/// Sends `batch` and hands each caller its outcome.
async fn answer(client: Client, batch: Vec<Pending>, batching: Arc<AtomicBool>) {
    let (ops, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
    let outcomes = send(&client, ops, &batching).await;
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // A caller that stopped waiting has no use for the answer.
        let _ = reply.send(outcome);
    }
}

/// One outcome per op, in order.
async fn send(client: &Client, ops: Vec<BatchOp>, batching: &AtomicBool) -> Vec<Outcome> {
    let n = ops.len();
    let channel = match client.channel().await {
        Ok(c) => c,
        Err(e) => return vec![Err(e); n],
    };
    if !batching.load(Ordering::Relaxed) {
        return one_by_one(client, &channel, ops).await;
    }
    let outcome = channel.send_batch(BatchRequest { ops: ops.clone() }).await;
    match outcome {
        Ok(reply) if reply.results.len() == n => {
            reply.results.into_iter().map(outcome_of).collect()
        }
        Ok(reply) => {
            let e = ApiError::internal(format!(
                "the master answered {} results for a batch of {n} writes",
                reply.results.len()
            ));
            vec![Err(e); n]
        }
        Err(s) if s.code() == Code::Unimplemented => {
            tracing::info!("this master does not batch writes; sending them one by one");
            batching.store(false, Ordering::Relaxed);
            one_by_one(client, &channel, ops).await
        }
        Err(s) => {
            client.failed(&s);
            vec![Err(api_from_status(&s)); n]
        }
    }
}

fn outcome_of(r: balsa_proto::objects::BatchResult) -> Outcome {
    match r.result {
        Some(batch_result::Result::Ok(reply)) => Ok(reply),
        Some(batch_result::Result::Error(e)) => Err(api_from_status(&Status::with_details(
            Code::from_i32(e.code),
            e.message,
            e.details,
        ))),
        None => Err(ApiError::internal(
            "the master answered a batch op with nothing",
        )),
    }
}

/// Each op as its own request, all at once.
async fn one_by_one(client: &Client, channel: &Channel, ops: Vec<BatchOp>) -> Vec<Outcome> {
    let calls = ops.into_iter().map(|op| async move {
        let outcome = match op.op {
            Some(batch_op::Op::Create(w)) => channel.send_create(w).await,
            Some(batch_op::Op::Update(w)) => channel.send_update(w).await,
            Some(batch_op::Op::Patch(p)) => channel.send_patch(p).await,
            None => Err(Status::invalid_argument(
                "a batch op must be create, update or patch",
            )),
        };
        outcome.map_err(|s| {
            client.failed(&s);
            api_from_status(&s)
        })
    });
    futures::future::join_all(calls).await
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::task::{Context, Poll};

    use balsa_proto::objects::objects_server::ObjectsServer;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
    use serde_json::json;
    use tonic::body::Body;
    use tonic::codegen::http;
    use tonic::codegen::Service;
    use tonic::server::NamedService;
    use tonic::service::Routes;

    use super::*;
    use crate::client::{Api, Patch, PatchParams, PostParams};
    use crate::grpc::server::{server, ObjectsService};
    use crate::grpc::transport::Transport;
    use crate::registry::{Reason, Registry};
    use crate::store::mem::MemStore;
    use crate::store::window::WindowConfig;
    use crate::store::Store;

    /// A master's Objects service that records the methods called and, as
    /// an older master would, may not know `Batch`.
    #[derive(Clone)]
    struct Master {
        inner: ObjectsServer<ObjectsService>,
        batches: bool,
        calls: Arc<Mutex<Vec<String>>>,
        /// Each `Batch` call (recorded first) waits for a permit.
        gate: Option<Arc<tokio::sync::Semaphore>>,
    }

    impl Service<http::Request<Body>> for Master {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = tonic::codegen::BoxFuture<Self::Response, Infallible>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<Body>) -> Self::Future {
            let method = req.uri().path().rsplit('/').next().unwrap_or_default();
            self.calls.lock().unwrap().push(method.to_string());
            if method == "Batch" && !self.batches {
                return Box::pin(async { Ok(Status::unimplemented("no Batch here").into_http()) });
            }
            let mut inner = self.inner.clone();
            let gate = self.gate.clone().filter(|_| method == "Batch");
            Box::pin(async move {
                if let Some(gate) = gate {
                    gate.acquire().await.expect("open").forget();
                }
                inner.call(req).await
            })
        }
    }

    impl NamedService for Master {
        const NAME: &'static str = <ObjectsServer<ObjectsService> as NamedService>::NAME;
    }

    struct Cluster {
        client: Client,
        routes: Routes,
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl Cluster {
        /// A master with namespace `ns1`, pod `p` and ConfigMap `taken` in it.
        async fn start(batches: bool) -> Self {
            Self::start_gated(batches, None).await
        }

        async fn start_gated(batches: bool, gate: Option<Arc<tokio::sync::Semaphore>>) -> Self {
            let store: Arc<dyn Store> = MemStore::new(WindowConfig::default());
            let calls = Arc::new(Mutex::new(Vec::new()));
            let master = Master {
                inner: server(Registry::new(store)),
                batches,
                calls: calls.clone(),
                gate,
            };
            let routes = Routes::new(master);
            let client = Client::local(routes.clone(), "in-process".into());
            let ns: Namespace =
                serde_json::from_value(json!({"metadata": {"name": "ns1"}})).unwrap();
            Api::<Namespace>::all(client.clone())
                .create(&ns, &PostParams::default())
                .await
                .unwrap();
            let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
            .unwrap();
            Api::<Pod>::namespaced(client.clone(), "ns1")
                .create(&pod, &PostParams::default())
                .await
                .unwrap();
            let taken: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": "taken"}})).unwrap();
            Api::<ConfigMap>::namespaced(client.clone(), "ns1")
                .create(&taken, &PostParams::default())
                .await
                .unwrap();
            calls.lock().unwrap().clear();
            Self {
                client,
                routes,
                calls,
            }
        }

        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }

        /// Ten ConfigMap creates, a create of the existing ConfigMap `taken`,
        /// a status patch of pod `p` and one of a pod that does not exist,
        /// all handed over at once.
        async fn writes(&self, batcher: &Batcher) -> Vec<Outcome> {
            let mut ops: Vec<BatchOp> = (0..10)
                .map(|i| config_map_op(&self.client, &format!("cm-{i}")))
                .collect();
            ops.push(config_map_op(&self.client, "taken"));
            ops.push(status_op(&self.client, "p"));
            ops.push(status_op(&self.client, "missing"));
            futures::future::join_all(ops.into_iter().map(|op| batcher.write(op))).await
        }

        /// Checks what `writes` answered against what was stored.
        async fn check(&self, outcomes: &[Outcome]) {
            let cms = Api::<ConfigMap>::namespaced(self.client.clone(), "ns1");
            for (i, outcome) in outcomes[..10].iter().enumerate() {
                let reply = outcome.as_ref().expect("a create succeeds");
                let stored = cms.get(&format!("cm-{i}")).await.unwrap();
                assert_eq!(
                    stored.metadata.resource_version,
                    Some(reply.revision.to_string())
                );
                assert!(reply.object.is_empty(), "asked for the revision only");
            }
            let taken = outcomes[10].as_ref().unwrap_err();
            assert_eq!(taken.reason, Reason::AlreadyExists, "{taken}");
            let patched = outcomes[11].as_ref().expect("the status patch succeeds");
            let p = Api::<Pod>::namespaced(self.client.clone(), "ns1")
                .get("p")
                .await
                .unwrap();
            assert_eq!(
                p.metadata.resource_version,
                Some(patched.revision.to_string())
            );
            assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
            let missing = outcomes[12].as_ref().unwrap_err();
            assert_eq!(missing.reason, Reason::NotFound, "{missing}");
        }
    }

    /// Writes handed over together go in one request (or two: the first may
    /// leave alone), and each caller gets its own write's answer: one
    /// refused write does not stop the others.
    #[tokio::test]
    async fn writes_handed_over_together_share_a_request_and_each_gets_its_own_answer() {
        let cluster = Cluster::start(true).await;
        let batcher = Batcher::spawn(cluster.client.clone());
        let outcomes = cluster.writes(&batcher).await;
        let calls = cluster.calls();
        cluster.check(&outcomes).await;
        assert!(
            !calls.is_empty() && calls.len() <= 2 && calls.iter().all(|c| c == "Batch"),
            "13 writes should take one or two Batch requests: {calls:?}"
        );
    }

    /// A create of ConfigMap `name` in `ns1`.
    fn config_map_op(client: &Client, name: &str) -> BatchOp {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<ConfigMap>::namespaced(client.clone(), "ns1")
            .create_op(&cm, &PostParams::default())
            .unwrap()
    }

    /// A status patch (phase Running) of pod `name` in `ns1`.
    fn status_op(client: &Client, name: &str) -> BatchOp {
        let running = Patch::Merge(json!({"status": {"phase": "Running"}}));
        Api::<Pod>::namespaced(client.clone(), "ns1")
            .patch_status_op(name, &PatchParams::default(), &running)
            .unwrap()
    }

    /// A write that may wait goes in the request of the next one that may
    /// not; alone, it waits `LINGER` for company first.
    #[tokio::test]
    async fn a_write_that_may_wait_rides_with_the_next_that_may_not() {
        let cluster = Cluster::start(true).await;
        let batcher = Batcher::spawn(cluster.client.clone());
        let (event, status) = tokio::join!(
            batcher.write_soon(config_map_op(&cluster.client, "soon")),
            batcher.write(status_op(&cluster.client, "p")),
        );
        event.expect("created");
        status.expect("patched");
        assert_eq!(cluster.calls(), vec!["Batch".to_string()]);

        let alone = Instant::now();
        batcher
            .write_soon(config_map_op(&cluster.client, "alone"))
            .await
            .expect("created");
        assert!(alone.elapsed() >= LINGER, "sent before waiting for company");
        assert_eq!(cluster.calls(), vec!["Batch".to_string()]);
    }

    /// A request of writes that may wait, in flight, does not hold back a
    /// write that may not: it goes in a request of its own meanwhile.
    #[tokio::test]
    async fn writes_that_may_wait_in_flight_do_not_hold_back_one_that_may_not() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let cluster = Cluster::start_gated(true, Some(gate.clone())).await;
        let batcher = Batcher::spawn(cluster.client.clone());
        let event = tokio::spawn({
            let (b, op) = (batcher.clone(), config_map_op(&cluster.client, "held"));
            async move { b.write_soon(op).await }
        });
        let until = |n: usize| {
            let calls = cluster.calls.clone();
            async move {
                while calls.lock().unwrap().len() < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), until(1))
            .await
            .expect("the lone write goes after LINGER");
        let status = tokio::spawn({
            let (b, op) = (batcher.clone(), status_op(&cluster.client, "p"));
            async move { b.write(op).await }
        });
        tokio::time::timeout(Duration::from_secs(10), until(2))
            .await
            .expect("the status goes while the first request is held");
        gate.add_permits(2);
        event.await.unwrap().expect("created");
        status.await.unwrap().expect("patched");
        assert_eq!(cluster.calls(), vec!["Batch".to_string(); 2]);
    }

    /// Against a master that does not serve Batch, every write is still
    /// made, each in its own request, and Batch is not asked again.
    #[tokio::test]
    async fn a_master_without_batch_gets_the_writes_one_by_one() {
        let cluster = Cluster::start(false).await;
        let batcher = Batcher::spawn(cluster.client.clone());
        let outcomes = cluster.writes(&batcher).await;
        let calls = cluster.calls();
        cluster.check(&outcomes).await;
        cluster.calls();
        assert_eq!(
            calls.iter().filter(|c| *c == "Batch").count(),
            1,
            "{calls:?}"
        );
        assert_eq!(
            calls.iter().filter(|c| *c == "Create").count(),
            11,
            "{calls:?}"
        );
        assert_eq!(
            calls.iter().filter(|c| *c == "Patch").count(),
            2,
            "{calls:?}"
        );

        let op = config_map_op(&cluster.client, "later");
        batcher.write(op).await.expect("created");
        assert_eq!(cluster.calls(), vec!["Create".to_string()]);
    }

    /// The service's own rules: a batch over the limit is refused whole; an
    /// op without a write, or one the batch's metadata makes invalid (a
    /// malformed fence), is refused in its own slot.
    #[tokio::test]
    async fn the_service_refuses_an_oversized_batch_and_answers_each_op() {
        use balsa_proto::objects::WriteRequest;

        let cluster = Cluster::start(true).await;
        let raw = cluster.client.raw().await.unwrap();
        let create = |name: &str| BatchOp {
            op: Some(batch_op::Op::Create(WriteRequest {
                object: serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "ns1"}}))
                .unwrap()
                .into(),
                ..Default::default()
            })),
        };
        let too_many = BatchRequest {
            ops: (0..=MAX_BATCH_OPS)
                .map(|i| create(&format!("c{i}")))
                .collect(),
        };
        let refused = raw.send_batch(too_many).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

        let reply = raw
            .send_batch(BatchRequest {
                ops: vec![create("a"), BatchOp { op: None }, create("b")],
            })
            .await
            .unwrap();
        let outcomes: Vec<Outcome> = reply.results.into_iter().map(outcome_of).collect();
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert_eq!(outcomes[1].as_ref().unwrap_err().reason, Reason::BadRequest);

        let mut fenced = tonic::Request::new(BatchRequest {
            ops: vec![create("c"), create("d")],
        });
        fenced
            .metadata_mut()
            .insert(crate::grpc::fence::HEADER, "not-a-term".parse().unwrap());
        let mut objects = balsa_proto::objects::objects_client::ObjectsClient::new(
            Transport::Local(cluster.routes),
        );
        let reply = objects.batch(fenced).await.unwrap().into_inner();
        for r in reply.results {
            let e = outcome_of(r).unwrap_err();
            assert_eq!(e.reason, Reason::BadRequest, "{e}");
            assert!(e.message.contains("balsa-fence-term"), "{e}");
        }
    }
}
