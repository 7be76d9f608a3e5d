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

use balsa_api::client::events::{object_ref, EventType, Recorder};
use balsa_api::client::{Action, Api, Client, DeleteParams, ObjectKey, Store};
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::jiff::Timestamp;

use crate::taints::{self, NO_EXECUTE};
use crate::{pods, Error};

pub struct Ctx {
    pub client: Client,
    pub nodes: Store<Node>,
    pub recorder: Recorder,
    /// When this master first saw a taint without timeAdded, per node and key.
    first_seen: Mutex<HashMap<(String, String), Timestamp>>,
}

impl Ctx {
    pub fn new(client: Client, nodes: Store<Node>, recorder: Recorder) -> Self {
        Self {
            client,
            nodes,
            recorder,
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

/// The pods bound to `node` in `pods`.
pub fn pods_on(pods: &Store<Pod>, node: &Node) -> Vec<ObjectKey> {
    let name = node.metadata.name.as_deref();
    pods.filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == name)
        .iter()
        .map(|p| ObjectKey::of(&**p))
        .collect()
}

/// Maps node changes to the pods to look at again: those on the node when
/// its NoExecute taints changed (upstream's taint manager compares the old
/// and new taints in handleNodeUpdate and does nothing when they are
/// equal); none for any other change, so the status and heartbeat writes of
/// many nodes do not scan every pod. A pod that arrives on a node is
/// reconciled by its own event.
pub struct NodeChanges {
    pods: Store<Pod>,
    seen: Mutex<HashMap<String, Vec<Taint>>>,
}

impl NodeChanges {
    pub fn new(pods: Store<Pod>) -> Self {
        Self {
            pods,
            seen: Mutex::default(),
        }
    }

    pub fn map(&self, node: &Node) -> Vec<ObjectKey> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let now = no_execute_taints(node);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            // Never seen: untainted is what its pods were judged by.
            let before = seen.get(&name).map(Vec::as_slice).unwrap_or_default();
            if before == now.as_slice() {
                return vec![];
            }
            seen.insert(name, now);
        }
        pods_on(&self.pods, node)
    }
}

fn no_execute_taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .filter(|t| t.effect == NO_EXECUTE)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
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
                Ok(_) => ctx.recorder.event(
                    object_ref(&*pod),
                    EventType::Normal,
                    "TaintManagerEviction",
                    format!("Marking for deletion Pod {ns}/{}", key.name),
                ),
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

    fn node(name: &str, taints: &[&str]) -> Node {
        Node {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::NodeSpec {
                taints: Some(taints.iter().map(|k| taint(k)).collect()),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn only_a_change_of_no_execute_taints_looks_at_the_nodes_pods_again() {
        let (pods, mut writer) = balsa_api::client::reflector::store::<Pod>();
        writer.apply(&balsa_api::client::Event::Apply(Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some("n1".into()),
                ..Default::default()
            }),
            status: None,
        }));
        let changes = NodeChanges::new(pods.clone());
        let p = vec![ObjectKey::new(Some("default"), "p")];
        // Untainted, and untainted again (a heartbeat): nothing to do.
        assert!(changes.map(&node("n1", &[])).is_empty());
        assert!(changes.map(&node("n1", &[])).is_empty());
        assert_eq!(changes.map(&node("n1", &[UNREACHABLE])), p);
        assert!(changes.map(&node("n1", &[UNREACHABLE])).is_empty());
        // A NoSchedule taint is not this controller's business.
        let mut no_schedule = node("n1", &[UNREACHABLE]);
        if let Some(ts) = no_schedule.spec.as_mut().and_then(|s| s.taints.as_mut()) {
            ts.push(Taint {
                key: NOT_READY.into(),
                effect: "NoSchedule".into(),
                value: None,
                time_added: None,
            });
        }
        assert!(changes.map(&no_schedule).is_empty());
        assert_eq!(changes.map(&node("n1", &[])), p);
        // First seen tainted (a master that just started): its pods are judged.
        let fresh = NodeChanges::new(pods);
        assert_eq!(fresh.map(&node("n1", &[NOT_READY])), p);
        // A node without pods maps to none.
        assert!(fresh.map(&node("n2", &[NOT_READY])).is_empty());
    }
}
