//! The controller runtime: changes to watched objects become keys in a work
//! queue; a reconciler is called for each key with the object from the cache
//! and answers what to do next. It runs only while this master leads.
//!
//! ```text
//!  informers ──changes──► triggers ──keys──► WorkQueue ──due key──► reconcile(obj, ctx)
//!     (main kind: the key itself;                ▲                      │
//!      owned kinds: the controlling owner;       └── requeue / backoff ─┘
//!      watched kinds: a mapper)
//! ```
//!
//! On gaining leadership it waits for every cache it reads to be listed and
//! to reflect every write up to the revision the lease began at (a new
//! leader's caches may still lag its log: acting on them could repeat what
//! the old leader did), then reconciles every object once; on losing the
//! lease (or on a new one: lost and won again), running reconciles are
//! cancelled and the queue is dropped. A key is never reconciled twice at
//! once. A reconciler's error is logged once here and retried with per-key
//! exponential backoff.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::BroadcastStream;
use tracing::Instrument;

use super::api::Resource;
use super::informer::{Change, Informer};
use super::leader::Leadership;
use super::queue::WorkQueue;
use super::reflector::{ObjectKey, Store};
use crate::store::Revision;

/// What the reconciler wants next for the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile again after `d` even if nothing changes.
    pub fn requeue(d: Duration) -> Self {
        Self {
            requeue_after: Some(d),
        }
    }

    /// Reconcile again only when something it watches changes.
    pub fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }
}

enum Trigger {
    Keys(Vec<ObjectKey>),
    All,
}

type Ready = Pin<Box<dyn Future<Output = ()> + Send>>;
/// Waits until a cache reflects everything up to the revision.
type ReadyFn = Box<dyn Fn(Revision) -> Ready + Send + Sync>;
/// Called when a lease begins, its caches synced.
type OnLease = Box<dyn Fn() + Send + Sync>;

pub struct Controller<K: Resource> {
    name: &'static str,
    store: Store<K>,
    triggers: Vec<BoxStream<'static, Trigger>>,
    /// Every cache the reconciler reads: all must be listed before it runs.
    ready: Vec<ReadyFn>,
    concurrency: usize,
    backoff: (Duration, Duration),
    on_lease: Vec<OnLease>,
}

fn ready_of<C: Resource>(store: Store<C>) -> ReadyFn {
    Box::new(move |rev| {
        let s = store.clone();
        Box::pin(async move {
            // A dropped writer never gets ready: then wait forever, like an
            // unlisted cache.
            if s.wait_until_synced(rev).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    })
}

fn changes<C: Resource>(
    informer: &Informer<C>,
    map: impl Fn(&C) -> Vec<ObjectKey> + Send + 'static,
) -> BoxStream<'static, Trigger> {
    BroadcastStream::new(informer.subscribe())
        .map(move |c| match c {
            Ok(Change::Applied(o) | Change::Deleted(o)) => Trigger::Keys(map(&o)),
            // A lagging subscriber lost changes: reconcile everything.
            Ok(Change::Resynced) | Err(_) => Trigger::All,
        })
        .boxed()
}

/// The object `owner_kind` that controls `obj`, if any.
pub fn controller_of<P: Resource, C: Resource>(obj: &C) -> Option<ObjectKey> {
    let meta = obj.metadata();
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| {
            r.controller == Some(true) && r.kind == P::KIND && r.api_version == P::API_VERSION
        })
        .map(|r| ObjectKey {
            namespace: meta.namespace.clone(),
            name: r.name.clone(),
        })
}

impl<K: Resource> Controller<K> {
    /// A controller of `main`'s objects: each change reconciles that object.
    pub fn new(name: &'static str, main: &Informer<K>) -> Self {
        Self {
            name,
            store: main.store(),
            triggers: vec![changes(main, |o| vec![ObjectKey::of(o)])],
            ready: vec![ready_of(main.store())],
            concurrency: 8,
            backoff: (Duration::from_millis(100), Duration::from_secs(60)),
            on_lease: Vec::new(),
        }
    }

    /// A change to an owned object reconciles its controlling owner (an
    /// ownerReference with `controller: true` naming kind K).
    pub fn owns<C: Resource>(mut self, owned: &Informer<C>) -> Self {
        self.triggers.push(changes(owned, |c| {
            controller_of::<K, C>(c).into_iter().collect()
        }));
        self.ready.push(ready_of(owned.store()));
        self
    }

    /// A change to another kind reconciles the objects `map` names.
    pub fn watches<C: Resource>(
        mut self,
        other: &Informer<C>,
        map: impl Fn(&C) -> Vec<ObjectKey> + Send + 'static,
    ) -> Self {
        self.triggers.push(changes(other, map));
        self.ready.push(ready_of(other.store()));
        self
    }

    /// Reconciles every object each time `ticks` yields: a clock the
    /// reconciler reads moved (`Clock::moves`), or a periodic resync.
    pub fn reconcile_all_on(mut self, ticks: BoxStream<'static, ()>) -> Self {
        self.triggers.push(ticks.map(|_| Trigger::All).boxed());
        self
    }

    /// The reconciler reads this cache: wait for it before reconciling.
    pub fn reads<C: Resource>(mut self, cache: &Store<C>) -> Self {
        self.ready.push(ready_of(cache.clone()));
        self
    }

    /// Runs `f` each time a lease begins, once the caches reflect every
    /// write before it and before any reconcile: where the reconciler keeps
    /// state of its own about writes not yet seen (expectations), a lease
    /// makes it moot, and state left by a lease cut short (a reconcile
    /// aborted mid-write) would otherwise hold objects until it lapses.
    pub fn on_lease(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_lease.push(Box::new(f));
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The delay after a first failure and the most it doubles to.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff = (base, max);
        self
    }

    /// The main kind's cache.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Runs until the future is dropped. The informers it was built from
    /// must be running (`Informer::run`).
    pub async fn run<Ctx, F, Fut, E>(self, reconcile: F, ctx: Arc<Ctx>, leadership: Leadership)
    where
        Ctx: Send + Sync + 'static,
        F: Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let reconcile = Arc::new(reconcile);
        let mut triggers = stream::select_all(self.triggers);
        let mut queue: WorkQueue<ObjectKey> = WorkQueue::new(self.backoff.0, self.backoff.1);
        let mut running: JoinSet<Result<Action, String>> = JoinSet::new();
        let mut keys_of: HashMap<tokio::task::Id, ObjectKey> = HashMap::new();
        loop {
            leadership.wait_for(true).await;
            let Some(lease) = leadership.lease() else {
                continue;
            };
            let began = Instant::now();
            for ready in &self.ready {
                tokio::select! {
                    _ = ready(lease.revision) => {}
                    _ = leadership.wait_lost(lease) => {}
                }
            }
            if leadership.lease() != Some(lease) {
                continue;
            }
            for f in &self.on_lease {
                f();
            }
            tracing::info!(
                controller = self.name,
                objects = self.store.len(),
                raft.term = lease.term,
                caught_up_in = ?began.elapsed(),
                "leading: reconciling"
            );
            let now = Instant::now();
            for o in self.store.state() {
                queue.add(ObjectKey::of(&*o), now);
            }
            loop {
                // Start what is due, up to the concurrency limit.
                let now = Instant::now();
                while running.len() < self.concurrency {
                    let Some(key) = queue.pop(now) else { break };
                    let Some(obj) = self.store.get(&key) else {
                        // Gone: nothing to reconcile (clean-up is finalizers'
                        // and the garbage collector's job).
                        queue.done(&key);
                        queue.forget(&key);
                        continue;
                    };
                    let (r, ctx) = (reconcile.clone(), ctx.clone());
                    let span = tracing::debug_span!("reconcile", controller = self.name, object.key = %key);
                    let task = running.spawn(
                        async move { r(obj, ctx).await.map_err(|e| e.to_string()) }
                            .instrument(span),
                    );
                    keys_of.insert(task.id(), key);
                }
                let due = queue.next_due();
                let wait_due = async {
                    match due {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = leadership.wait_lost(lease) => {
                        tracing::info!(controller = self.name, raft.term = lease.term, "lease lost: stopping");
                        running.abort_all();
                        while running.join_next().await.is_some() {}
                        keys_of.clear();
                        queue.clear();
                        break;
                    }
                    Some(t) = triggers.next() => {
                        let now = Instant::now();
                        match t {
                            Trigger::Keys(keys) => {
                                for k in keys {
                                    queue.add(k, now);
                                }
                            }
                            Trigger::All => {
                                let keys: HashSet<ObjectKey> = self.store.state().iter().map(|o| ObjectKey::of(&**o)).collect();
                                for k in keys {
                                    queue.add(k, now);
                                }
                            }
                        }
                    }
                    Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                        let (id, out) = match done {
                            Ok((id, out)) => (id, out),
                            Err(e) => (e.id(), Err(format!("the reconciler panicked: {e}"))),
                        };
                        let Some(key) = keys_of.remove(&id) else { continue };
                        queue.done(&key);
                        let now = Instant::now();
                        match out {
                            Ok(action) => {
                                queue.forget(&key);
                                if let Some(d) = action.requeue_after {
                                    queue.add(key, now + d);
                                }
                            }
                            Err(e) => {
                                let delay = queue.fail(&key);
                                tracing::warn!(controller = self.name, object.key = %key, error = %e, retry_in = ?delay, "reconcile failed");
                                queue.add(key, now + delay);
                            }
                        }
                    }
                    _ = wait_due, if running.len() < self.concurrency => {}
                }
            }
        }
    }
}
