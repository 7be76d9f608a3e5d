//! When a phase stalls: what the store holds, layer by layer, against what
//! the Deployment watch showed, so a stall names the layer that stopped
//! (issue 7: the watch, the ReplicaSet status, or the Deployment status).
//!
//! ```text
//!  pods (store) ─► ReplicaSet status ─► Deployment status ─► the bench's watch
//!   ready per RS     available            available             available
//! ```

use std::collections::HashMap;

use balsa_api::client::{Api, Client};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;

use super::objects::{DEPLOYMENT, NAMESPACE};
use super::watch::DeployState;

/// One ReplicaSet as the store holds it, with its pods counted from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsView {
    pub name: String,
    pub spec_replicas: i32,
    pub status_replicas: i32,
    pub status_ready: i32,
    pub status_available: i32,
    /// The pods the ReplicaSet controls, not being deleted.
    pub active_pods: i32,
    pub ready_pods: i32,
}

/// The first layer whose figures fall short of the one below it.
pub fn verdict(watched: &DeployState, stored: &DeployState, sets: &[RsView]) -> String {
    if let Some(rs) = sets
        .iter()
        .find(|r| r.status_replicas != r.active_pods || r.status_ready != r.ready_pods)
    {
        return format!(
            "ReplicaSet {} reports replicas {} ready {} but the store holds {} active pods, {} ready: \
             the ReplicaSet controller did not reconcile after the last pod change, or its pod cache lags",
            rs.name, rs.status_replicas, rs.status_ready, rs.active_pods, rs.ready_pods
        );
    }
    let available: i64 = sets.iter().map(|r| i64::from(r.status_available)).sum();
    let replicas: i64 = sets.iter().map(|r| i64::from(r.status_replicas)).sum();
    if stored.available != available || stored.replicas != replicas {
        return format!(
            "the Deployment reports replicas {} available {} but its ReplicaSets sum to {replicas} / {available}: \
             the Deployment controller did not re-read the ReplicaSets' status",
            stored.replicas, stored.available
        );
    }
    if watched != stored {
        return "the store's Deployment status is newer than the bench's watch: the watch missed an event"
            .into();
    }
    "every layer agrees with the store: the pods themselves are not all ready".into()
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn is_active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    p.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn controller_uid(p: &Pod) -> Option<&str> {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// Reads the Deployment, its ReplicaSets and the pods from the store and
/// prints each layer and the verdict.
pub async fn explain(client: &Client, watched: &DeployState) -> anyhow::Result<String> {
    let d = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get(DEPLOYMENT)
        .await?;
    let s = d.status.clone().unwrap_or_default();
    let stored = DeployState {
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: s.observed_generation.unwrap_or(0),
        replicas: s.replicas.unwrap_or(0).into(),
        updated: s.updated_replicas.unwrap_or(0).into(),
        ready: s.ready_replicas.unwrap_or(0).into(),
        available: s.available_replicas.unwrap_or(0).into(),
    };
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list()
        .await?;
    let mut per_uid: HashMap<String, (i32, i32)> = HashMap::new();
    for p in pods.items.iter().filter(|p| is_active(p)) {
        if let Some(uid) = controller_uid(p) {
            let e = per_uid.entry(uid.to_string()).or_default();
            e.0 += 1;
            e.1 += i32::from(is_ready(p));
        }
    }
    let sets: Vec<RsView> = Api::<ReplicaSet>::namespaced(client.clone(), NAMESPACE)
        .list()
        .await?
        .items
        .iter()
        .map(|rs| {
            let st = rs.status.clone().unwrap_or_default();
            let uid = rs.metadata.uid.clone().unwrap_or_default();
            let (active_pods, ready_pods) = per_uid.get(&uid).copied().unwrap_or_default();
            RsView {
                name: rs.metadata.name.clone().unwrap_or_default(),
                spec_replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                status_replicas: st.replicas,
                status_ready: st.ready_replicas.unwrap_or(0),
                status_available: st.available_replicas.unwrap_or(0),
                active_pods,
                ready_pods,
            }
        })
        .collect();
    println!("  stalled: the watch shows {watched:?}");
    println!(
        "  stalled: the store holds {stored:?} (revision {})",
        pods.revision
    );
    for rs in &sets {
        println!("  stalled: {rs:?}");
    }
    let v = verdict(watched, &stored, &sets);
    println!("  stalled: {v}");
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(replicas: i64, available: i64) -> DeployState {
        DeployState {
            generation: 2,
            observed_generation: 2,
            replicas,
            updated: replicas,
            ready: available,
            available,
        }
    }

    fn rs(status: (i32, i32), pods: (i32, i32)) -> RsView {
        RsView {
            name: "web-new".into(),
            spec_replicas: 10,
            status_replicas: status.0,
            status_ready: status.1,
            status_available: status.1,
            active_pods: pods.0,
            ready_pods: pods.1,
        }
    }

    #[test]
    fn a_stall_is_blamed_on_the_lowest_layer_that_fell_short() {
        let s = state(10, 8);
        let v = verdict(&s, &s, &[rs((10, 8), (10, 10))]);
        assert!(v.starts_with("ReplicaSet web-new"), "{v}");
        let v = verdict(&s, &s, &[rs((10, 10), (10, 10))]);
        assert!(v.starts_with("the Deployment reports"), "{v}");
        let v = verdict(&state(10, 8), &state(10, 10), &[rs((10, 10), (10, 10))]);
        assert!(v.contains("the watch missed an event"), "{v}");
        let v = verdict(&s, &s, &[rs((10, 8), (10, 8))]);
        assert!(v.starts_with("every layer agrees"), "{v}");
    }
}
