//! The pod garbage collector (kube-controller-manager's podgc): every
//! `period`, while this master leads, it force-deletes
//!
//! - terminated pods (Succeeded / Failed) above `terminated_threshold`,
//!   evicted ones first, then the oldest (`--terminated-pod-gc-threshold`;
//!   0 turns this off);
//! - pods bound to a node that no longer exists: after the node has been
//!   missing from the cache for `quarantine` and the API confirms it is
//!   gone, the pod is marked Failed with a `DisruptionTarget` condition
//!   (reason `DeletionByPodGC`) and deleted;
//! - terminating pods on a node that is out of service (not Ready, with the
//!   `node.kubernetes.io/out-of-service` taint);
//! - terminating pods never scheduled (no node will ever finish them).
//!
//! Force-deleting is a delete with grace period 0: a pod held by a
//! finalizer (a Job's) still waits for it.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::{Api, Client, DeleteParams, Leadership, ObjectKey, Store};
use balsa_api::clock::Clock;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::time::Instant;

use crate::{pods, Error};

pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

#[derive(Debug, Clone)]
pub struct Config {
    /// Terminated pods kept before the oldest are deleted; 0: no limit.
    pub terminated_threshold: usize,
    pub period: Duration,
    /// How long a node must be missing before its pods are deleted.
    pub quarantine: Duration,
}

impl Default for Config {
    /// Upstream's: 12500 terminated pods, every 20 s, 40 s of quarantine.
    fn default() -> Self {
        Self {
            terminated_threshold: 12_500,
            period: Duration::from_secs(20),
            quarantine: Duration::from_secs(40),
        }
    }
}

fn is_terminated(p: &Pod) -> bool {
    matches!(pods::phase(p), "Succeeded" | "Failed")
}

fn is_evicted(p: &Pod) -> bool {
    pods::phase(p) == "Failed"
        && p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Already deleted with no grace left: another delete changes nothing.
fn forced(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some() && p.metadata.deletion_grace_period_seconds == Some(0)
}

/// The terminated pods to delete to keep `threshold` (evicted first, then
/// oldest, then by name).
pub fn over_threshold(all: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    if threshold == 0 {
        return vec![];
    }
    let mut done: Vec<Arc<Pod>> = all
        .iter()
        .filter(|p| is_terminated(p) && p.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    let Some(excess) = done.len().checked_sub(threshold).filter(|n| *n > 0) else {
        return vec![];
    };
    done.sort_by(|a, b| {
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        is_evicted(b)
            .cmp(&is_evicted(a))
            .then_with(|| match (created(a), created(b)) {
                (Some(x), Some(y)) if x != y => x.cmp(&y),
                _ => Ordering::Equal,
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    done.truncate(excess);
    done
}

fn out_of_service(n: &Node) -> bool {
    let tainted = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == OUT_OF_SERVICE));
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    tainted && !ready
}

/// Terminating pods no node will finish: unscheduled, or on an
/// out-of-service node.
pub fn stuck_terminating(all: &[Arc<Pod>], nodes: &Store<Node>) -> Vec<Arc<Pod>> {
    all.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && !forced(p))
        .filter(|p| match node_of(p) {
            None => true,
            Some(n) => nodes
                .get(&ObjectKey::new(None, n))
                .is_some_and(|node| out_of_service(&node)),
        })
        .cloned()
        .collect()
}

pub struct PodGc {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    config: Config,
    clock: Clock,
    /// Nodes pods are bound to that the cache does not have, since when.
    missing: HashMap<String, Instant>,
}

impl PodGc {
    pub fn new(
        client: Client,
        pods: Store<Pod>,
        nodes: Store<Node>,
        config: Config,
        clock: Clock,
    ) -> Self {
        Self {
            client,
            pods,
            nodes,
            config,
            clock,
            missing: HashMap::new(),
        }
    }

    /// Runs passes every period while leading, until dropped.
    pub async fn run(mut self, leadership: Leadership) {
        loop {
            leadership.wait_for(true).await;
            tokio::select! {
                r = async { tokio::join!(self.pods.wait_until_ready(), self.nodes.wait_until_ready()) } => {
                    if r.0.is_err() || r.1.is_err() {
                        return;
                    }
                }
                _ = leadership.wait_for(false) => continue,
            }
            self.missing.clear();
            tracing::info!(period = ?self.config.period, threshold = self.config.terminated_threshold, "pod gc: leading");
            loop {
                if let Err(e) = self.pass().await {
                    tracing::warn!(error = %e, "pod gc pass failed");
                }
                tokio::select! {
                    _ = leadership.wait_for(false) => break,
                    _ = tokio::time::sleep(self.config.period) => {}
                }
            }
        }
    }

    /// One pass over the caches; the first error, after trying every pod.
    pub async fn pass(&mut self) -> Result<(), Error> {
        let all = self.pods.state();
        let mut first_err = None;
        let mut note = |r: Result<(), Error>| {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        };
        for p in over_threshold(&all, self.config.terminated_threshold) {
            note(self.force_delete(&p).await);
        }
        for p in stuck_terminating(&all, &self.nodes) {
            note(self.force_delete(&p).await);
        }
        for p in self.on_deleted_nodes(&all).await? {
            let r = self.fail_and_delete(&p).await;
            note(r);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Pods on nodes gone for longer than the quarantine (checked on the
    /// API, not only the cache).
    async fn on_deleted_nodes(&mut self, all: &[Arc<Pod>]) -> Result<Vec<Arc<Pod>>, Error> {
        let now = Instant::now();
        let bound: HashSet<&str> = all.iter().filter_map(|p| node_of(p)).collect();
        let absent: HashSet<&str> = bound
            .into_iter()
            .filter(|n| self.nodes.get(&ObjectKey::new(None, n)).is_none())
            .collect();
        self.missing.retain(|n, _| absent.contains(n.as_str()));
        let mut gone = HashSet::new();
        let api = Api::<Node>::all(self.client.clone());
        for n in absent {
            let since = *self.missing.entry(n.to_string()).or_insert(now);
            if now.duration_since(since) < self.config.quarantine {
                continue;
            }
            let live = api
                .get_opt(n)
                .await
                .map_err(Error::api("reading node", n.to_string()))?;
            if live.is_none() {
                gone.insert(n.to_string());
            }
        }
        Ok(all
            .iter()
            .filter(|p| node_of(p).is_some_and(|n| gone.contains(n)) && !forced(p))
            .cloned()
            .collect())
    }

    async fn force_delete(&self, p: &Pod) -> Result<(), Error> {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            uid: p.metadata.uid.clone(),
            ..Default::default()
        };
        match Api::<Pod>::namespaced(self.client.clone(), &ns)
            .delete(&name, &dp)
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %ObjectKey::of(p), "pod gc: deleted");
                Ok(())
            }
            Err(e) if e.code() == 404 || e.code() == 409 => Ok(()),
            Err(e) => Err(Error::api("deleting pod", format!("{ns}/{name}"))(e)),
        }
    }

    /// A pod whose node is gone: Failed, with the DisruptionTarget
    /// condition saying why, then force-deleted.
    async fn fail_and_delete(&self, p: &Pod) -> Result<(), Error> {
        if !is_terminated(p) {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let mut failed = p.clone();
            let status = failed.status.get_or_insert_with(Default::default);
            status.phase = Some("Failed".into());
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            conditions.retain(|c| c.type_ != "DisruptionTarget");
            conditions.push(PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some("DeletionByPodGC".into()),
                message: Some("PodGC: node no longer exists".into()),
                last_transition_time: Some(Time(self.clock.now_to_second())),
                ..Default::default()
            });
            let pp = crate::owners::post_params();
            match Api::<Pod>::namespaced(self.client.clone(), &ns)
                .replace_status(&failed, &pp)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == 404 => return Ok(()),
                // Changed meanwhile: the next pass sees the new version.
                Err(e) if e.code() == 409 => return Ok(()),
                Err(e) => {
                    return Err(Error::api(
                        "marking pod failed",
                        ObjectKey::of(p).to_string(),
                    )(e))
                }
            }
        }
        self.force_delete(p).await
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn pod(name: &str, phase: &str, created: i64, reason: Option<&str>) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            reason: reason.map(str::to_string),
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn the_oldest_terminated_pods_go_first_evicted_before_all() {
        let all = vec![
            pod("new", "Succeeded", 300, None),
            pod("old", "Failed", 100, None),
            pod("running", "Running", 50, None),
            pod("evicted", "Failed", 400, Some("Evicted")),
            pod("mid", "Succeeded", 200, None),
        ];
        let names = |v: Vec<Arc<Pod>>| -> Vec<String> {
            v.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
        };
        assert_eq!(names(over_threshold(&all, 2)), ["evicted", "old"]);
        assert_eq!(names(over_threshold(&all, 4)), Vec::<String>::new());
        assert_eq!(
            names(over_threshold(&all, 0)),
            Vec::<String>::new(),
            "0 turns it off"
        );
        assert_eq!(over_threshold(&all, 1).len(), 3);
    }
}
