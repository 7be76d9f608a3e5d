//! The controller manager: one shared informer per kind, every controller on
//! top of them, all running together while this master leads.
//!
//! As kube-controller-manager starts its informers only once it holds the
//! leader lease, a master that does not lead keeps no controller caches: it
//! would decode every change to every object twice over (the scheduler keeps
//! its own caches, warm, as kube-scheduler does) and hold a second copy of
//! every pod, for nothing until it leads. A new leader lists each kind before
//! its controllers act, and a lost lease drops everything, so each term
//! starts from what the store holds, never from a deposed leader's caches.

use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::events::Recorder;
use balsa_api::client::{
    Api, Client, Controller, Informer, Leadership, MetadataOnly, ObjectKey, Resource,
};
use balsa_api::clock::Clock;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, PersistentVolumeClaim, Pod, ResourceQuota, Secret,
    Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::garbage_collector::{self, Graph, Typed};
use crate::{
    cronjob, daemonset, deployment, disruption, endpoint_slice, endpoints, job, namespace,
    node_lifecycle, pod_gc, replicaset, resource_quota, service_account, service_pods, statefulset,
    taint_eviction, ttl_after_finished,
};

/// What `balsa server` passes to the controllers (upstream's
/// kube-controller-manager flags), and the clock tests move.
#[derive(Debug, Clone)]
pub struct Options {
    /// The time the Job, CronJob, TTL and pod GC controllers go by.
    pub clock: Clock,
    /// `--terminated-pod-gc-threshold`, the period and the orphan quarantine.
    pub pod_gc: pod_gc::Config,
    /// The Job pod-failure backoff: first delay and the most it doubles to
    /// (10 s and 10 min, kube-controller-manager's DefaultJobPodFailureBackOff
    /// and MaxJobPodFailureBackOff; the documentation still says 6 min).
    pub job_backoff: (Duration, Duration),
    pub node_lifecycle: node_lifecycle::Options,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Clock::real(),
            pod_gc: pod_gc::Config::default(),
            job_backoff: (Duration::from_secs(10), Duration::from_secs(600)),
            node_lifecycle: node_lifecycle::Options::default(),
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

/// Runs every controller while `leadership` says this master leads, from
/// fresh caches each term; never returns unless dropped (which stops them all).
pub async fn run(client: Client, leadership: Leadership, options: Options) {
    loop {
        leadership.wait_for(true).await;
        let Some(lease) = leadership.lease() else {
            continue;
        };
        tokio::select! {
            () = run_leading(client.clone(), leadership.clone(), options.clone()) => {}
            () = leadership.wait_lost(lease) => {
                tracing::info!(term = lease.term, "leadership lost: the controllers stop");
            }
        }
    }
}

/// Every informer and controller of one term of leadership.
async fn run_leading(client: Client, leadership: Leadership, options: Options) {
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
    // Kinds only the garbage collector follows (owners and dependents): their
    // metadata alone, as upstream's metadata informers.
    let configmaps = informed::<MetadataOnly<ConfigMap>>(&client, &mut tasks, &mut graphs, &wake);
    let secrets = informed::<MetadataOnly<Secret>>(&client, &mut tasks, &mut graphs, &wake);
    let services = informed::<Service>(&client, &mut tasks, &mut graphs, &wake);
    let endpoints = informed::<Endpoints>(&client, &mut tasks, &mut graphs, &wake);
    let slices = informed::<EndpointSlice>(&client, &mut tasks, &mut graphs, &wake);
    let accounts = informed::<ServiceAccount>(&client, &mut tasks, &mut graphs, &wake);

    let namespaces = Informer::new(Api::<Namespace>::all(client.clone()));
    let ns = namespaces.clone();
    tasks.spawn(async move { ns.run().await });
    // Where daemon pods run and which pods lost their node; cluster-scoped,
    // so not the collector's.
    let nodes = Informer::new(Api::<Node>::all(client.clone()));
    let n = nodes.clone();
    tasks.spawn(async move { n.run().await });
    let clock = options.clock.clone();

    // One writer of Events for every controller, each under its upstream
    // name; unfenced, as upstream's broadcaster (an Event is an observation).
    let (recorder, write_events) = Recorder::new(client.unfenced(), "controller-manager");
    tasks.spawn(write_events);

    let rs_ctx = Arc::new(replicaset::Ctx::new(
        client.clone(),
        pods.store(),
        recorder.named("replicaset-controller"),
    ));
    let c = rs_ctx.clone();
    let rs_controller = Controller::new("replicaset", &replicasets)
        .owns(&pods)
        .on_lease(move || c.expectations().clear());
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
        recorder: recorder.named("daemonset-controller"),
    });
    let node_changes = daemonset::NodeChanges::new(daemonsets.store(), nodes.store());
    let c = ds_ctx.clone();
    let ds_controller = Controller::new("daemonset", &daemonsets)
        .owns(&pods)
        .owns(&revisions)
        .on_lease(move || c.expectations.clear())
        .watches(&nodes, move |n| node_changes.map(n));
    tasks.spawn(ds_controller.run(daemonset::reconcile, ds_ctx, leadership.clone()));

    let sts_ctx = Arc::new(statefulset::Ctx {
        client: client.clone(),
        pods: pods.store(),
        claims: claims.store(),
        revisions: revisions.store(),
        expectations: Default::default(),
        recorder: recorder.named("statefulset-controller"),
    });
    let c = sts_ctx.clone();
    let sts_controller = Controller::new("statefulset", &statefulsets)
        .owns(&pods)
        .owns(&revisions)
        .on_lease(move || c.expectations.clear())
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
    let c = job_ctx.clone();
    let job_controller = Controller::new("job", &jobs)
        .owns(&pods)
        .on_lease(move || c.expectations().clear())
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

    let sa_ctx = Arc::new(service_account::Ctx {
        client: client.clone(),
        accounts: accounts.store(),
    });
    let sa_controller = Controller::new("serviceaccount", &namespaces)
        .watches(&accounts, service_account::namespace_of);
    tasks.spawn(sa_controller.run(service_account::reconcile, sa_ctx, leadership.clone()));

    let ep_ctx = Arc::new(endpoints::Ctx {
        client: client.clone(),
        pods: pods.store(),
        endpoints: endpoints.store(),
    });
    let svc_store = services.store();
    let ep_controller = Controller::new("endpoints", &services)
        .watches(&pods, move |p| service_pods::services_for(&svc_store, p))
        .watches(&endpoints, |e| vec![ObjectKey::of(e)]);
    tasks.spawn(ep_controller.run(endpoints::reconcile, ep_ctx, leadership.clone()));
    let orphan_ctx = Arc::new(endpoints::OrphanCtx {
        client: client.clone(),
        services: services.store(),
    });
    let orphan_controller = Controller::new("endpoints-cleanup", &endpoints)
        .watches(&services, |s| vec![ObjectKey::of(s)]);
    tasks.spawn(orphan_controller.run(endpoints::remove_orphan, orphan_ctx, leadership.clone()));

    let es_ctx = Arc::new(endpoint_slice::Ctx {
        client: client.clone(),
        pods: pods.store(),
        slices: slices.store(),
    });
    let svc_store = services.store();
    let es_controller = Controller::new("endpointslice", &services)
        .owns(&slices)
        .watches(&pods, move |p| service_pods::services_for(&svc_store, p));
    tasks.spawn(es_controller.run(endpoint_slice::reconcile, es_ctx, leadership.clone()));

    let pdbs = Informer::new(Api::<PodDisruptionBudget>::all(client.clone()));
    let p = pdbs.clone();
    tasks.spawn(async move { p.run().await });
    let dis_ctx = Arc::new(disruption::Ctx {
        client: client.clone(),
        pods: pods.store(),
        replicasets: replicasets.store(),
        deployments: deployments.store(),
        statefulsets: statefulsets.store(),
    });
    let pdb_store = pdbs.store();
    let dis_controller = Controller::new("disruption", &pdbs)
        .watches(&pods, move |p| disruption::budgets_for(&pdb_store, p))
        .reads(&replicasets.store())
        .reads(&deployments.store())
        .reads(&statefulsets.store());
    tasks.spawn(dis_controller.run(disruption::reconcile, dis_ctx, leadership.clone()));

    let quotas = Informer::new(Api::<ResourceQuota>::all(client.clone()));
    let q = quotas.clone();
    tasks.spawn(async move { q.run().await });
    let rq_ctx = Arc::new(resource_quota::Ctx {
        client: client.clone(),
    });
    let qs = quotas.store();
    let rq_controller = Controller::new("resourcequota", &quotas)
        .watches(&pods, resource_quota::in_namespace(&qs))
        .watches(&services, resource_quota::in_namespace(&qs))
        .watches(&configmaps, resource_quota::in_namespace(&qs))
        .watches(&secrets, resource_quota::in_namespace(&qs))
        .watches(&claims, resource_quota::in_namespace(&qs));
    tasks.spawn(rq_controller.run(resource_quota::reconcile, rq_ctx, leadership.clone()));

    let leases = Informer::new(Api::<Lease>::namespaced(
        client.clone(),
        node_lifecycle::LEASE_NAMESPACE,
    ));
    let l = leases.clone();
    tasks.spawn(async move { l.run().await });
    let nl_ctx = Arc::new(node_lifecycle::Ctx::new(
        client.clone(),
        options.node_lifecycle.clone(),
        nodes.store(),
        leases.store(),
        pods.store(),
        recorder.named("node-controller"),
    ));
    let nl_controller = Controller::new("node-lifecycle", &nodes)
        .watches(&leases, |l| {
            l.metadata
                .name
                .iter()
                .map(|n| ObjectKey::new(None, n))
                .collect()
        })
        .reads(&pods.store());
    tasks.spawn(nl_controller.run(node_lifecycle::reconcile, nl_ctx, leadership.clone()));

    let te_ctx = Arc::new(taint_eviction::Ctx::new(
        client.clone(),
        nodes.store(),
        recorder.named("taint-eviction-controller"),
    ));
    let node_changes = taint_eviction::NodeChanges::new(pods.store());
    let te_controller =
        Controller::new("taint-eviction", &pods).watches(&nodes, move |n| node_changes.map(n));
    tasks.spawn(te_controller.run(taint_eviction::reconcile, te_ctx, leadership.clone()));

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
