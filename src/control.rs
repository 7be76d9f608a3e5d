//! The control loops every master runs, each acting only while this master
//! leads (Raft leadership is the controller lease): the scheduler and the
//! controller manager. The only place they are wired. Each talks to its own
//! master's gRPC API through the typed client, like any other client, with
//! every write fenced by the lease it acts under: a write decided while this
//! master led is refused once it no longer does, never forwarded to the new
//! leader (see `balsa_api::store::fence`). Their calls go straight into this
//! master's gRPC services, not over a socket (`balsa_api::grpc::transport`).
//!
//! The scheduler runs on a thread of its own (as kube-scheduler is a process
//! of its own), with its own client of the API. On the API's runtime its
//! informer and its owner task were two tasks among the hundreds a burst of
//! writes wakes: each pod reached the scheduler 0.1-0.4 s after its create
//! was answered, and each yield of the owner task cost as much again. On its
//! own thread the kernel schedules it whatever the API is doing.

use balsa_api::client::{Client, Leadership};
use balsa_controllers::manager::Options;
use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// The running control loops; `stop` (or dropping it) ends them.
pub struct Control {
    controllers: Option<JoinHandle<()>>,
    /// The scheduler's own thread.
    scheduler: Option<Runtime>,
}

/// Runs the scheduler (`balsa_scheduler::driver`, on its own thread) and the
/// controller manager (`balsa_controllers::manager`, on the caller's runtime)
/// against the API `client` reaches.
pub fn spawn(
    member: u64,
    client: Client,
    leadership: Leadership,
    options: Options,
) -> std::io::Result<Control> {
    let scheduler = Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("scheduler-{member}"))
        .enable_all()
        .build()?;
    // Each `fenced_by` is a client of its own.
    scheduler.spawn(balsa_scheduler::driver::run(
        client.fenced_by(&leadership),
        leadership.clone(),
    ));
    let client = client.fenced_by(&leadership);
    let controllers = tokio::spawn(balsa_controllers::manager::run(client, leadership, options));
    Ok(Control {
        controllers: Some(controllers),
        scheduler: Some(scheduler),
    })
}

impl Control {
    /// Ends every loop at once: what they have in flight is dropped, not
    /// waited for (their writes are fenced by the lease anyway).
    pub fn stop(&mut self) {
        if let Some(c) = self.controllers.take() {
            c.abort();
        }
        if let Some(rt) = self.scheduler.take() {
            // Never blocks, so it may run inside the caller's runtime.
            rt.shutdown_background();
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use balsa_api::client::{Api, PostParams};
    use balsa_api::registry::Registry;
    use balsa_api::store::mem::MemStore;
    use balsa_api::store::window::WindowConfig;
    use balsa_api::store::{Fence, Lease};
    use balsa_api::{
        KeyPrefix, ListOptions, ListResult, Object, Op, OpResult, ReadMode, ResourceKey, Revision,
        Store, StoreError, WatchEvent, WatchOptions, WatchStream,
    };
    use futures::Stream;
    use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
    use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use tonic::service::Routes;

    use super::*;

    /// Threads of this process with this name (Linux: /proc/self/task).
    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count()
    }

    async fn eventually_threads(name: &str, want: usize) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let n = threads_named(name);
            if n == want || tokio::time::Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The in-memory store, counting the watch streams open on each
    /// resource: what the control loops keep caches of.
    #[derive(Clone)]
    struct Watched {
        real: Arc<MemStore>,
        open: Arc<Mutex<HashMap<String, usize>>>,
    }

    /// A watch stream that is counted while it is open.
    struct Counted {
        inner: WatchStream,
        resource: String,
        open: Arc<Mutex<HashMap<String, usize>>>,
    }

    impl Stream for Counted {
        type Item = Result<WatchEvent, StoreError>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.inner.as_mut().poll_next(cx)
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            let mut open = self.open.lock().expect("watch counts");
            *open.entry(self.resource.clone()).or_default() -= 1;
        }
    }

    impl Watched {
        fn new() -> Self {
            Self {
                real: MemStore::new(WindowConfig::default()),
                open: Arc::default(),
            }
        }

        fn open(&self, resource: &str) -> usize {
            let open = self.open.lock().expect("watch counts");
            open.get(resource).copied().unwrap_or(0)
        }
    }

    #[async_trait::async_trait]
    impl Store for Watched {
        async fn get(&self, key: &ResourceKey, read: ReadMode) -> Result<Object, StoreError> {
            self.real.get(key, read).await
        }
        async fn list(&self, p: &KeyPrefix, o: ListOptions) -> Result<ListResult, StoreError> {
            self.real.list(p, o).await
        }
        async fn txn(&self, ops: Vec<Op>) -> Result<(Revision, Vec<OpResult>), StoreError> {
            self.real.txn(ops).await
        }
        async fn txn_fenced(
            &self,
            ops: Vec<Op>,
            fence: Fence,
        ) -> Result<(Revision, Vec<OpResult>), StoreError> {
            self.real.txn_fenced(ops, fence).await
        }
        async fn watch(&self, p: &KeyPrefix, o: WatchOptions) -> Result<WatchStream, StoreError> {
            let inner = self.real.watch(p, o).await?;
            *self
                .open
                .lock()
                .expect("watch counts")
                .entry(p.resource.clone())
                .or_default() += 1;
            Ok(Box::pin(Counted {
                inner,
                resource: p.resource.clone(),
                open: self.open.clone(),
            }))
        }
        async fn revision(&self, read: ReadMode) -> Result<Revision, StoreError> {
            self.real.revision(read).await
        }
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn replicaset(replicas: i32) -> ReplicaSet {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some("busybox".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// As kube-controller-manager starts its informers only once it leads,
    /// and kube-scheduler keeps its own warm: a master that does not lead
    /// watches nothing for its controllers, only for its scheduler; leading,
    /// the controllers list, watch and act; losing the lease closes every
    /// one of their watches.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn controllers_keep_caches_only_while_leading_the_scheduler_always() {
        let watched = Watched::new();
        let store: Arc<dyn Store> = Arc::new(watched.clone());
        let routes = Routes::new(balsa_api::grpc::server::server(Registry::new(store)));
        let client = Client::local(routes, "in-process".into());
        let (lease, leading) = tokio::sync::watch::channel(None);
        let mut control = spawn(
            98,
            client.clone(),
            Leadership::new(leading),
            Options::default(),
        )
        .expect("control loops");

        eventually(
            "the scheduler watches pods and nodes while not leading",
            || watched.open("pods") == 1 && watched.open("nodes") == 1,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        for kind in ["replicasets", "deployments", "jobs", "services", "leases"] {
            assert_eq!(watched.open(kind), 0, "a {kind} watch while not leading");
        }
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&ns, &PostParams::default())
            .await
            .expect("namespace created");
        let rss = Api::<ReplicaSet>::namespaced(client.clone(), "default");
        rss.create(&replicaset(2), &PostParams::default())
            .await
            .expect("replicaset created");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pods = Api::<Pod>::namespaced(client.clone(), "default");
        let count = || async { pods.list().await.expect("pods").items.len() };
        assert_eq!(count().await, 0, "a controller acted while not leading");

        lease
            .send(Some(Lease {
                term: 1,
                revision: Revision(0),
            }))
            .expect("leading");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while count().await != 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no pods when leading"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            watched.open("replicasets") >= 1,
            "leading without a replicaset cache"
        );
        // The scheduler's informers and the controllers' pod informer.
        assert!(watched.open("pods") >= 2);

        lease.send(None).expect("deposed");
        eventually(
            "every controller watch closes once the lease is lost",
            || {
                ["replicasets", "deployments", "jobs", "services", "leases"]
                    .iter()
                    .all(|kind| watched.open(kind) == 0)
                    && watched.open("pods") == 1
            },
        )
        .await;
        control.stop();
    }

    #[tokio::test]
    async fn the_scheduler_has_a_thread_of_its_own_until_stopped() {
        // No master listens there: the loops only retry their connections.
        let client = Client::new(vec!["127.0.0.1:1".into()]).expect("client");
        let mut control =
            spawn(97, client, Leadership::always(), Options::default()).expect("control loops");
        assert_eq!(eventually_threads("scheduler-97", 1).await, 1);
        control.stop();
        assert_eq!(eventually_threads("scheduler-97", 0).await, 0);
    }
}
