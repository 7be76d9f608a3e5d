//! The disruption controller: every PodDisruptionBudget's status says how
//! many of its pods are healthy, how many must be, and so how many may be
//! evicted now (`disruptionsAllowed`), which the eviction subresource and
//! the scheduler's preemption read.
//!
//! ```text
//!  pods matching the selector (an empty selector: every pod in the namespace)
//!    expected, desired:
//!      minAvailable N        -> len(pods), N
//!      minAvailable P%       -> scale, ceil(scale * P%)
//!      maxUnavailable N / P% -> scale, scale - N (or - ceil(scale * P%))
//!      (scale: the replicas of the pods' controllers: Deployment via its
//!       ReplicaSet, ReplicaSet, StatefulSet)
//!    currentHealthy: Ready, not being deleted, not just evicted
//!    disruptionsAllowed = max(0, currentHealthy - desiredHealthy)
//! ```
//!
//! `disruptedPods` (written by the eviction subresource) keeps a pod evicted
//! but not yet deleted out of the healthy count for 2 minutes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::{Action, Api, Client, ObjectKey, Store};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::{pods, selector, Error};

/// How long an evicted pod that is not being deleted yet counts as disrupted.
pub const DELETION_TIMEOUT: i64 = 120;

pub struct Ctx {
    pub client: Client,
    pub pods: Store<Pod>,
    pub replicasets: Store<ReplicaSet>,
    pub deployments: Store<Deployment>,
    pub statefulsets: Store<StatefulSet>,
}

/// The PDBs a pod change may concern: all in its namespace.
pub fn budgets_for(pdbs: &Store<PodDisruptionBudget>, pod: &Pod) -> Vec<ObjectKey> {
    let ns = pod.metadata.namespace.as_deref();
    pdbs.filter(|p| p.metadata.namespace.as_deref() == ns)
        .iter()
        .map(|p| ObjectKey::of(&**p))
        .collect()
}

fn selected(pdb: &PodDisruptionBudget, pods: &Store<Pod>) -> Vec<Arc<Pod>> {
    let ns = pdb.metadata.namespace.as_deref();
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Vec::new();
    };
    let everything = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty());
    pods.filter(|p| {
        p.metadata.namespace.as_deref() == ns
            && (everything || selector::matches(sel, p.metadata.labels.as_ref()))
    })
}

/// An int, or a percentage of `total` rounded up.
pub fn scaled(v: &IntOrString, total: i32) -> Result<i32, String> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            Ok(((p * total as i64 + 99) / 100) as i32)
        }
    }
}

/// The replicas the pods' controllers want, over distinct controllers.
fn expected_scale(ctx: &Ctx, pods: &[Arc<Pod>]) -> Result<i32, String> {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for p in pods {
        let ns = p.metadata.namespace.as_deref();
        let Some(r) = crate::owners::controller_of(&**p) else {
            return Err(format!(
                "found no controllers for pod {:?}",
                p.metadata.name.clone().unwrap_or_default()
            ));
        };
        let (kind, replicas) = match r.kind.as_str() {
            "ReplicaSet" => {
                let rs = ctx
                    .replicasets
                    .get(&ObjectKey::new(ns, &r.name))
                    .ok_or_else(|| format!("replicaset {:?} not found", r.name))?;
                let dep = crate::owners::controller_of(&*rs)
                    .filter(|d| d.kind == "Deployment")
                    .and_then(|d| ctx.deployments.get(&ObjectKey::new(ns, &d.name)));
                match dep {
                    Some(d) => (
                        ("Deployment", d.metadata.uid.clone()),
                        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    ),
                    None => (
                        ("ReplicaSet", rs.metadata.uid.clone()),
                        rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    ),
                }
            }
            "StatefulSet" => {
                let ss = ctx
                    .statefulsets
                    .get(&ObjectKey::new(ns, &r.name))
                    .ok_or_else(|| format!("statefulset {:?} not found", r.name))?;
                (
                    ("StatefulSet", ss.metadata.uid.clone()),
                    ss.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                )
            }
            other => {
                return Err(format!(
                    "found no controllers for pod {:?} ({other} has no scale)",
                    p.metadata.name.clone().unwrap_or_default()
                ))
            }
        };
        if seen.insert(kind) {
            total += replicas;
        }
    }
    Ok(total)
}

/// (expectedPods, desiredHealthy).
fn counts(ctx: &Ctx, pdb: &PodDisruptionBudget, pods: &[Arc<Pod>]) -> Result<(i32, i32), String> {
    let spec = pdb.spec.clone().unwrap_or_default();
    if let Some(mu) = &spec.max_unavailable {
        let expected = expected_scale(ctx, pods)?;
        let max = scaled(mu, expected)?;
        return Ok((expected, (expected - max).max(0)));
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => Ok((pods.len() as i32, *n)),
        Some(pct) => {
            let expected = expected_scale(ctx, pods)?;
            Ok((expected, scaled(pct, expected)?))
        }
        None => Ok((pods.len() as i32, 0)),
    }
}

/// The disrupted pods still worth remembering, and when the next expires.
pub fn live_disruptions(
    disrupted: &BTreeMap<String, Time>,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Duration>) {
    let mut keep = BTreeMap::new();
    let mut next: Option<i64> = None;
    for (name, at) in disrupted {
        let pod = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name.as_str()));
        let Some(pod) = pod else { continue };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let expires = at.0.as_second() + DELETION_TIMEOUT;
        if expires <= now.as_second() {
            continue;
        }
        next = Some(next.map_or(expires, |n| n.min(expires)));
        keep.insert(name.clone(), at.clone());
    }
    let wait = next.map(|e| Duration::from_secs((e - now.as_second()).max(1) as u64));
    (keep, wait)
}

fn condition(
    old: Option<&PodDisruptionBudgetStatus>,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let prev = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"));
    let since = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// The status the pods give the budget, and when to look again.
pub fn status_of(
    ctx: &Ctx,
    pdb: &PodDisruptionBudget,
    now: Timestamp,
) -> (PodDisruptionBudgetStatus, Option<Duration>) {
    let pods = selected(pdb, &ctx.pods);
    let old = pdb.status.as_ref();
    let generation = pdb.metadata.generation;
    let (disrupted, recheck) = live_disruptions(
        &old.and_then(|s| s.disrupted_pods.clone())
            .unwrap_or_default(),
        &pods,
        now,
    );
    match counts(ctx, pdb, &pods) {
        Ok((expected, desired)) => {
            let healthy = pods
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && pods::is_ready(p)
                        && !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default())
                })
                .count() as i32;
            let allowed = (healthy - desired).max(0);
            let cond = if allowed > 0 {
                condition(
                    old,
                    "True",
                    "SufficientPods",
                    String::new(),
                    generation,
                    now,
                )
            } else {
                condition(
                    old,
                    "False",
                    "InsufficientPods",
                    String::new(),
                    generation,
                    now,
                )
            };
            (
                PodDisruptionBudgetStatus {
                    current_healthy: healthy,
                    desired_healthy: desired,
                    expected_pods: expected,
                    disruptions_allowed: allowed,
                    disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
                    observed_generation: generation,
                    conditions: Some(vec![cond]),
                },
                recheck,
            )
        }
        // Fail safe: nothing may be evicted while the budget cannot be read.
        Err(why) => (
            PodDisruptionBudgetStatus {
                disruptions_allowed: 0,
                disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
                observed_generation: generation,
                conditions: Some(vec![condition(
                    old,
                    "False",
                    "SyncFailed",
                    why,
                    generation,
                    now,
                )]),
                ..old.cloned().unwrap_or_default()
            },
            recheck,
        ),
    }
}

pub async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = ObjectKey::of(&*pdb);
    let (status, recheck) = status_of(&ctx, &pdb, pods::now());
    if pdb.status.as_ref() != Some(&status) {
        let mut new = (*pdb).clone();
        new.status = Some(status);
        let ns = pdb.metadata.namespace.clone().unwrap_or_default();
        Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &ns)
            .replace_status(&new, &crate::owners::post_params())
            .await
            .map_err(Error::api("updating status of", key.to_string()))?;
    }
    Ok(recheck.map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), Ok(2));
        assert_eq!(scaled(&IntOrString::String("10%".into()), 5), Ok(1));
        assert_eq!(scaled(&IntOrString::String("100%".into()), 4), Ok(4));
        assert_eq!(scaled(&IntOrString::Int(2), 9), Ok(2));
        assert!(scaled(&IntOrString::String("half".into()), 4).is_err());
    }

    #[test]
    fn disruptions_expire() {
        let pod = |name: &str, deleting: bool| {
            let mut p = Pod::default();
            p.metadata.name = Some(name.into());
            if deleting {
                p.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(5).unwrap()));
            }
            Arc::new(p)
        };
        let at = |s| Time(Timestamp::from_second(s).unwrap());
        let d = BTreeMap::from([
            ("fresh".to_string(), at(100)),
            ("old".to_string(), at(0)),
            ("gone".to_string(), at(100)),
            ("deleting".to_string(), at(100)),
        ]);
        let pods = vec![
            pod("fresh", false),
            pod("old", false),
            pod("deleting", true),
        ];
        let (keep, wait) = live_disruptions(&d, &pods, Timestamp::from_second(150).unwrap());
        assert_eq!(keep.keys().collect::<Vec<_>>(), ["fresh"]);
        assert_eq!(wait, Some(Duration::from_secs(70)));
    }
}
