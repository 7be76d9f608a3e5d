//! The controller manager: one shared informer per kind, every controller on
//! top of them, all running together until the future is dropped. Controllers
//! act only while `leadership` says this master leads; the caches are kept
//! on every master so a new leader starts warm.

use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::events::Recorder;
use balsa_api::client::{Api, Client, Controller, Informer, Leadership, Resource};
use balsa_api::clock::Clock;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, PersistentVolumeClaim, Pod, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::garbage_collector::{self, Graph, Typed};
use crate::{
    cronjob, daemonset, deployment, job, namespace, pod_gc, replicaset, statefulset,
    ttl_after_finished,
};

/// What kube-controller-manager takes as flags, and the clock tests move.
#[derive(Debug, Clone)]
pub struct Options {
    /// The time the Job, CronJob, TTL and pod GC controllers go by.
    pub clock: Clock,
    /// `--terminated-pod-gc-threshold`, the period and the orphan quarantine.
    pub pod_gc: pod_gc::Config,
    /// The Job pod-failure backoff: first delay and the most it doubles to
    /// (10 s and 6 min, as the Kubernetes documentation states).
    pub job_backoff: (Duration, Duration),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Clock::real(),
            pod_gc: pod_gc::Config::default(),
            job_backoff: (Duration::from_secs(10), Duration::from_secs(360)),
        }
    }
}

/// Starts the informer and wakes the garbage collector on its changes.
fn informed<K: Resource>(
    client: &Client,
    tasks: &mut JoinSet<()>,
    graphs: &mut Vec<Arc<dyn Graph>>,
    wake: &Arc<Notify>,
) -> Informer<K> {
    let informer = Informer::new(Api::<K>::all(client.clone()));
    graphs.push(Arc::new(Typed::new(
        &informer,
        Api::<K>::all(client.clone()),
    )));
    let i = informer.clone();
    tasks.spawn(async move { i.run().await });
    let mut changes = informer.subscribe();
    let wake = wake.clone();
    tasks.spawn(async move {
        loop {
            match changes.recv().await {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    wake.notify_one()
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    informer
}

/// Runs every controller; never returns unless dropped (which stops them all).
pub async fn run(client: Client, leadership: Leadership, options: Options) {
    let mut tasks = JoinSet::new();
    let mut graphs: Vec<Arc<dyn Graph>> = Vec::new();
    let wake = Arc::new(Notify::new());

    let pods = informed::<Pod>(&client, &mut tasks, &mut graphs, &wake);
    let replicasets = informed::<ReplicaSet>(&client, &mut tasks, &mut graphs, &wake);
    let deployments = informed::<Deployment>(&client, &mut tasks, &mut graphs, &wake);
    let daemonsets = informed::<DaemonSet>(&client, &mut tasks, &mut graphs, &wake);
    let statefulsets = informed::<StatefulSet>(&client, &mut tasks, &mut graphs, &wake);
    let revisions = informed::<ControllerRevision>(&client, &mut tasks, &mut graphs, &wake);
    let claims = informed::<PersistentVolumeClaim>(&client, &mut tasks, &mut graphs, &wake);
    let jobs = informed::<Job>(&client, &mut tasks, &mut graphs, &wake);
    let cronjobs = informed::<CronJob>(&client, &mut tasks, &mut graphs, &wake);
    // Kinds only the garbage collector follows (owners and dependents).
    informed::<ConfigMap>(&client, &mut tasks, &mut graphs, &wake);
    informed::<Secret>(&client, &mut tasks, &mut graphs, &wake);
    informed::<Service>(&client, &mut tasks, &mut graphs, &wake);
    informed::<Endpoints>(&client, &mut tasks, &mut graphs, &wake);
    informed::<EndpointSlice>(&client, &mut tasks, &mut graphs, &wake);
    informed::<ServiceAccount>(&client, &mut tasks, &mut graphs, &wake);

    let namespaces = Informer::new(Api::<Namespace>::all(client.clone()));
    let ns = namespaces.clone();
    tasks.spawn(async move { ns.run().await });
    // Where daemon pods run and which pods lost their node; cluster-scoped,
    // so not the collector's.
    let nodes = Informer::new(Api::<Node>::all(client.clone()));
    let n = nodes.clone();
    tasks.spawn(async move { n.run().await });
    let clock = options.clock.clone();

    // One writer of Events for every controller, each under its upstream name.
    let (recorder, write_events) = Recorder::new(client.clone(), "controller-manager");
    tasks.spawn(write_events);

    let rs_ctx = Arc::new(replicaset::Ctx::new(
        client.clone(),
        pods.store(),
        recorder.named("replicaset-controller"),
    ));
    let rs_controller = Controller::new("replicaset", &replicasets).owns(&pods);
    tasks.spawn(rs_controller.run(replicaset::reconcile, rs_ctx, leadership.clone()));

    let d_ctx = Arc::new(deployment::Ctx {
        client: client.clone(),
        replicasets: replicasets.store(),
        pods: pods.store(),
        recorder: recorder.named("deployment-controller"),
    });
    let rs_store = replicasets.store();
    let d_controller = Controller::new("deployment", &deployments)
        .owns(&replicasets)
        .watches(&pods, move |p| deployment::deployment_of_pod(&rs_store, p));
    tasks.spawn(d_controller.run(deployment::reconcile, d_ctx, leadership.clone()));

    let ds_ctx = Arc::new(daemonset::Ctx {
        client: client.clone(),
        pods: pods.store(),
        nodes: nodes.store(),
        revisions: revisions.store(),
        expectations: Default::default(),
    });
    let node_changes = daemonset::NodeChanges::new(daemonsets.store(), nodes.store());
    let ds_controller = Controller::new("daemonset", &daemonsets)
        .owns(&pods)
        .owns(&revisions)
        .watches(&nodes, move |n| node_changes.map(n));
    tasks.spawn(ds_controller.run(daemonset::reconcile, ds_ctx, leadership.clone()));

    let sts_ctx = Arc::new(statefulset::Ctx {
        client: client.clone(),
        pods: pods.store(),
        claims: claims.store(),
        revisions: revisions.store(),
        expectations: Default::default(),
    });
    let sts_controller = Controller::new("statefulset", &statefulsets)
        .owns(&pods)
        .owns(&revisions)
        .reads(&claims.store());
    tasks.spawn(sts_controller.run(statefulset::reconcile, sts_ctx, leadership.clone()));

    let ns_ctx = Arc::new(namespace::Ctx {
        client: client.clone(),
    });
    let ns_controller = Controller::new("namespace", &namespaces);
    tasks.spawn(ns_controller.run(namespace::reconcile, ns_ctx, leadership.clone()));

    let job_ctx = Arc::new(job::Ctx::new(
        client.clone(),
        pods.store(),
        clock.clone(),
        options.job_backoff,
        recorder.named("job-controller"),
    ));
    let job_controller = Controller::new("job", &jobs)
        .owns(&pods)
        .reconcile_all_on(clock.moves());
    tasks.spawn(job_controller.run(job::reconcile, job_ctx, leadership.clone()));

    let orphans_ctx = Arc::new(job::orphans::Ctx {
        client: client.clone(),
        jobs: jobs.store(),
    });
    let pod_store = pods.store();
    let orphans = Controller::new("job-orphan-pods", &pods)
        .watches(&jobs, move |j| job::orphans::pods_of(&pod_store, j));
    tasks.spawn(orphans.run(job::orphans::reconcile, orphans_ctx, leadership.clone()));

    let cj_ctx = Arc::new(cronjob::Ctx {
        client: client.clone(),
        jobs: jobs.store(),
        clock: clock.clone(),
        writes: Default::default(),
        recorder: recorder.named("cronjob-controller"),
    });
    let cj_controller = Controller::new("cronjob", &cronjobs)
        .owns(&jobs)
        .reconcile_all_on(clock.moves());
    tasks.spawn(cj_controller.run(cronjob::reconcile, cj_ctx, leadership.clone()));

    let ttl_ctx = Arc::new(ttl_after_finished::Ctx {
        client: client.clone(),
        clock: clock.clone(),
    });
    let ttl_controller =
        Controller::new("ttl-after-finished", &jobs).reconcile_all_on(clock.moves());
    tasks.spawn(ttl_controller.run(ttl_after_finished::reconcile, ttl_ctx, leadership.clone()));

    let gc = pod_gc::PodGc::new(
        client.clone(),
        pods.store(),
        nodes.store(),
        options.pod_gc.clone(),
        clock,
    );
    tasks.spawn(gc.run(leadership.clone()));

    tasks.spawn(garbage_collector::run(graphs, wake, leadership));

    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            if e.is_panic() {
                // A half-alive manager is worse than none: take the process down.
                std::panic::resume_unwind(e.into_panic());
            }
        }
        tracing::error!("a controller manager task ended unexpectedly");
    }
}
