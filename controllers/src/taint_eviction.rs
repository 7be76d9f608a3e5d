//! Taint-based eviction (upstream's NoExecuteTaintManager): a pod bound to a
//! node with `NoExecute` taints it does not tolerate is deleted at once; one
//! that tolerates them all for a while (`tolerationSeconds`) is deleted when
//! the shortest such while has passed since the taint was added; one that
//! tolerates them for ever stays.
//!
//! The clock starts at the taint's `timeAdded` (set by whoever added it; the
//! node lifecycle controller always does), so a new leader keeps the same
//! deadlines. A taint without one starts the clock when this master first
//! saw it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balsa_api::client::{Action, Api, Client, DeleteParams, ObjectKey, Store};
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::jiff::Timestamp;

use crate::taints::{self, NO_EXECUTE};
use crate::{pods, Error};

pub struct Ctx {
    pub client: Client,
    pub nodes: Store<Node>,
    /// When this master first saw a taint without timeAdded, per node and key.
    first_seen: Mutex<HashMap<(String, String), Timestamp>>,
}

impl Ctx {
    pub fn new(client: Client, nodes: Store<Node>) -> Self {
        Self {
            client,
            nodes,
            first_seen: Mutex::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Stay,
    EvictNow,
    EvictIn(Duration),
}

/// What the node's NoExecute `taints` (each with the time it was added)
/// mean for a pod with `tolerations` at `now`.
pub fn verdict(
    tolerations: &[Toleration],
    taints: &[(Taint, Timestamp)],
    now: Timestamp,
) -> Verdict {
    let mut deadline: Option<i64> = None;
    for (taint, added) in taints.iter().filter(|(t, _)| t.effect == NO_EXECUTE) {
        let matching: Vec<&Toleration> = tolerations
            .iter()
            .filter(|t| taints::tolerates(t, taint))
            .collect();
        if matching.is_empty() {
            return Verdict::EvictNow;
        }
        // A toleration without tolerationSeconds tolerates for ever; the
        // shortest bounded one wins (upstream getMinTolerationTime).
        let Some(secs) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        let at = added.as_second() + secs.max(0);
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    match deadline {
        None => Verdict::Stay,
        Some(at) if at <= now.as_second() => Verdict::EvictNow,
        Some(at) => Verdict::EvictIn(Duration::from_secs((at - now.as_second()) as u64)),
    }
}

/// The pods bound to `node` in `pods`, for the node's changes.
pub fn pods_on(pods: &Store<Pod>, node: &Node) -> Vec<ObjectKey> {
    let name = node.metadata.name.as_deref();
    pods.filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == name)
        .iter()
        .map(|p| ObjectKey::of(&**p))
        .collect()
}

pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(Action::await_change());
    };
    let Some(node) = ctx.nodes.get(&ObjectKey::new(None, &node_name)) else {
        return Ok(Action::await_change());
    };
    let now = pods::now();
    let taints: Vec<(Taint, Timestamp)> = {
        let mut first = ctx.first_seen.lock().unwrap_or_else(|p| p.into_inner());
        node.spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.effect == NO_EXECUTE)
            .map(|t| {
                let added = match &t.time_added {
                    Some(a) => a.0,
                    None => *first
                        .entry((node_name.clone(), t.key.clone()))
                        .or_insert(now),
                };
                (t, added)
            })
            .collect()
    };
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    match verdict(&tolerations, &taints, now) {
        Verdict::Stay => Ok(Action::await_change()),
        Verdict::EvictIn(d) => Ok(Action::requeue(d)),
        Verdict::EvictNow => {
            let key = ObjectKey::of(&*pod);
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let api = Api::<Pod>::namespaced(ctx.client.clone(), &ns);
            let dp = DeleteParams {
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            };
            match api.delete(key.name.as_str(), &dp).await {
                Ok(_) => {}
                Err(e) if e.code() == 404 || e.code() == 409 => {}
                Err(e) => return Err(Error::api("evicting pod", key.to_string())(e)),
            }
            let keys: Vec<&str> = taints.iter().map(|(t, _)| t.key.as_str()).collect();
            tracing::info!(pod = %key, node = %node_name, taints = ?keys, "evicted by NoExecute taint");
            Ok(Action::await_change())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taints::{NOT_READY, UNREACHABLE};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: NO_EXECUTE.into(),
            value: None,
            time_added: None,
        }
    }

    fn tol(key: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(NO_EXECUTE.into()),
            value: None,
            toleration_seconds: secs,
        }
    }

    #[test]
    fn tolerations_decide_when() {
        let unreachable = [(taint(UNREACHABLE), t(100))];
        assert_eq!(verdict(&[], &unreachable, t(100)), Verdict::EvictNow);
        assert_eq!(
            verdict(&[tol(NOT_READY, Some(300))], &unreachable, t(100)),
            Verdict::EvictNow
        );
        assert_eq!(
            verdict(&[tol(UNREACHABLE, Some(30))], &unreachable, t(110)),
            Verdict::EvictIn(Duration::from_secs(20))
        );
        assert_eq!(
            verdict(&[tol(UNREACHABLE, Some(30))], &unreachable, t(130)),
            Verdict::EvictNow
        );
        // Unbounded toleration: stays; the shortest bounded one wins.
        assert_eq!(
            verdict(&[tol(UNREACHABLE, None)], &unreachable, t(999)),
            Verdict::Stay
        );
        assert_eq!(
            verdict(
                &[tol(UNREACHABLE, Some(300)), tol(UNREACHABLE, Some(60))],
                &unreachable,
                t(100)
            ),
            Verdict::EvictIn(Duration::from_secs(60))
        );
        // Both taints must be tolerated.
        let both = [(taint(UNREACHABLE), t(100)), (taint(NOT_READY), t(100))];
        assert_eq!(
            verdict(&[tol(UNREACHABLE, None)], &both, t(100)),
            Verdict::EvictNow
        );
        // No NoExecute taints: stays.
        assert_eq!(verdict(&[], &[], t(0)), Verdict::Stay);
    }
}
