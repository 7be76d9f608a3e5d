//! The controller manager: one shared informer per kind, every controller on
//! top of them, all running together until the future is dropped. Controllers
//! act only while `leadership` says this master leads; the caches are kept
//! on every master so a new leader starts warm.

use std::sync::Arc;

use balsa_api::client::{Api, Client, Controller, Informer, Leadership, ObjectKey, Resource};
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
    deployment, disruption, endpoint_slice, endpoints, namespace, node_lifecycle, replicaset,
    resource_quota, service_account, service_pods, taint_eviction,
};

/// What `balsa server` passes to the controllers (upstream's
/// kube-controller-manager flags).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub node_lifecycle: node_lifecycle::Options,
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
pub async fn run(client: Client, leadership: Leadership, opts: Options) {
    let mut tasks = JoinSet::new();
    let mut graphs: Vec<Arc<dyn Graph>> = Vec::new();
    let wake = Arc::new(Notify::new());

    let pods = informed::<Pod>(&client, &mut tasks, &mut graphs, &wake);
    let replicasets = informed::<ReplicaSet>(&client, &mut tasks, &mut graphs, &wake);
    let deployments = informed::<Deployment>(&client, &mut tasks, &mut graphs, &wake);
    // Kinds only the garbage collector follows (owners and dependents).
    informed::<DaemonSet>(&client, &mut tasks, &mut graphs, &wake);
    let statefulsets = informed::<StatefulSet>(&client, &mut tasks, &mut graphs, &wake);
    informed::<ControllerRevision>(&client, &mut tasks, &mut graphs, &wake);
    informed::<Job>(&client, &mut tasks, &mut graphs, &wake);
    informed::<CronJob>(&client, &mut tasks, &mut graphs, &wake);
    let configmaps = informed::<ConfigMap>(&client, &mut tasks, &mut graphs, &wake);
    let secrets = informed::<Secret>(&client, &mut tasks, &mut graphs, &wake);
    let services = informed::<Service>(&client, &mut tasks, &mut graphs, &wake);
    let endpoints = informed::<Endpoints>(&client, &mut tasks, &mut graphs, &wake);
    let slices = informed::<EndpointSlice>(&client, &mut tasks, &mut graphs, &wake);
    let accounts = informed::<ServiceAccount>(&client, &mut tasks, &mut graphs, &wake);
    let pvcs = informed::<PersistentVolumeClaim>(&client, &mut tasks, &mut graphs, &wake);

    let namespaces = Informer::new(Api::<Namespace>::all(client.clone()));
    let ns = namespaces.clone();
    tasks.spawn(async move { ns.run().await });

    let rs_ctx = Arc::new(replicaset::Ctx::new(client.clone(), pods.store()));
    let rs_controller = Controller::new("replicaset", &replicasets).owns(&pods);
    tasks.spawn(rs_controller.run(replicaset::reconcile, rs_ctx, leadership.clone()));

    let d_ctx = Arc::new(deployment::Ctx {
        client: client.clone(),
        replicasets: replicasets.store(),
        pods: pods.store(),
    });
    let rs_store = replicasets.store();
    let d_controller = Controller::new("deployment", &deployments)
        .owns(&replicasets)
        .watches(&pods, move |p| deployment::deployment_of_pod(&rs_store, p));
    tasks.spawn(d_controller.run(deployment::reconcile, d_ctx, leadership.clone()));

    let ns_ctx = Arc::new(namespace::Ctx {
        client: client.clone(),
    });
    let ns_controller = Controller::new("namespace", &namespaces);
    tasks.spawn(ns_controller.run(namespace::reconcile, ns_ctx, leadership.clone()));

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
        .watches(&pvcs, resource_quota::in_namespace(&qs));
    tasks.spawn(rq_controller.run(resource_quota::reconcile, rq_ctx, leadership.clone()));

    let nodes = Informer::new(Api::<Node>::all(client.clone()));
    let n = nodes.clone();
    tasks.spawn(async move { n.run().await });
    let leases = Informer::new(Api::<Lease>::namespaced(
        client.clone(),
        node_lifecycle::LEASE_NAMESPACE,
    ));
    let l = leases.clone();
    tasks.spawn(async move { l.run().await });
    let nl_ctx = Arc::new(node_lifecycle::Ctx::new(
        client.clone(),
        opts.node_lifecycle.clone(),
        nodes.store(),
        leases.store(),
        pods.store(),
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

    let te_ctx = Arc::new(taint_eviction::Ctx::new(client.clone(), nodes.store()));
    let pod_store = pods.store();
    let te_controller = Controller::new("taint-eviction", &pods)
        .watches(&nodes, move |n| taint_eviction::pods_on(&pod_store, n));
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
