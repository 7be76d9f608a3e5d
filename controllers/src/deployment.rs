//! The Deployment controller: rolls a Deployment's pod template out through
//! ReplicaSets (RollingUpdate or Recreate), keeps revision history in their
//! annotations, and reports progress so `kubectl rollout status|history|undo`
//! work.
//!
//! ```text
//!  deployment, its ReplicaSets (cache)
//!    └─ new RS = the one whose template equals the deployment's (ignoring
//!    │  pod-template-hash); none: create `<name>-<hash>`; an old one found
//!    │  (rollback): reuse it with the next revision
//!    └─ RollingUpdate: scale new up within maxSurge, then old down keeping
//!    │  maxUnavailable; Recreate: old to 0, wait for their pods, then new
//!    └─ complete: delete old RSs beyond revisionHistoryLimit
//!    └─ status + Available / Progressing (progressDeadlineSeconds)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::{Action, Api, Client, DeleteParams, ObjectKey, Patch, PatchParams, Store};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use balsa_api::client::events::{object_ref, EventType, Recorder};

use crate::owners::{self, MANAGER};
use crate::Error;

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Deployment annotations not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
];

pub struct Ctx {
    pub client: Client,
    pub replicasets: Store<ReplicaSet>,
    pub pods: Store<Pod>,
    /// Records as `deployment-controller`.
    pub recorder: Recorder,
}

// ---- pure decisions ----------------------------------------------------

/// An int, or a percent of `total` rounded up or down (upstream's
/// GetScaledValueFromIntOrPercent).
pub fn scaled(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, Error> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| Error::Invalid(format!("invalid value for IntOrString: {s:?}")))?;
            let x = pct * total as i64;
            Ok(if round_up { (x + 99) / 100 } else { x / 100 } as i32)
        }
    }
}

/// (maxSurge, maxUnavailable) for `replicas`: surge rounds up, unavailable
/// down; both zero would never progress, so unavailable becomes 1.
pub fn fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    replicas: i32,
) -> Result<(i32, i32), Error> {
    let quarter = IntOrString::String("25%".into());
    let s = scaled(surge.unwrap_or(&quarter), replicas, true)?;
    let u = scaled(unavailable.unwrap_or(&quarter), replicas, false)?;
    Ok(if s == 0 && u == 0 { (0, 1) } else { (s, u) })
}

/// The new ReplicaSet's replicas for this step (upstream NewRSNewReplicas):
/// up to `replicas + max_surge` pods in all.
pub fn new_rs_replicas(replicas: i32, max_surge: i32, new_rs: i32, all_rs: i32) -> i32 {
    if new_rs >= replicas {
        return replicas;
    }
    let max_total = replicas + max_surge;
    if all_rs >= max_total {
        return new_rs;
    }
    new_rs + (max_total - all_rs).min(replicas - new_rs)
}

/// One old ReplicaSet as the scale-down step sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Old {
    pub replicas: i32,
    pub available: i32,
}

/// New replicas for the old ReplicaSets (oldest first) so that at least
/// `replicas - max_unavailable` pods stay available: unhealthy old pods go
/// first, then available ones (upstream reconcileOldReplicaSets).
pub fn scale_down_old(replicas: i32, max_unavailable: i32, new: Old, old: &[Old]) -> Vec<i32> {
    let mut out: Vec<i32> = old.iter().map(|o| o.replicas).collect();
    let old_total: i32 = out.iter().sum();
    if old_total == 0 {
        return out;
    }
    let all = old_total + new.replicas;
    let min_available = replicas - max_unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return out;
    }
    // Unhealthy old pods cost no availability.
    for (i, o) in old.iter().enumerate() {
        if budget <= 0 {
            break;
        }
        let unhealthy = (out[i] - o.available).max(0);
        let cut = unhealthy.min(budget);
        out[i] -= cut;
        budget -= cut;
    }
    let available: i32 = new.available
        + old
            .iter()
            .zip(&out)
            .map(|(o, r)| o.available.min(*r))
            .sum::<i32>();
    if available <= min_available {
        return out;
    }
    let mut left = available - min_available;
    for r in out.iter_mut() {
        if left <= 0 {
            break;
        }
        let cut = (*r).min(left);
        *r -= cut;
        left -= cut;
    }
    out
}

/// One active ReplicaSet as proportional scaling sees it, in the order
/// `owned` keeps (oldest first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sized {
    pub replicas: i32,
    /// Its `max-replicas` annotation: the deployment's size plus surge when
    /// it was last scaled.
    pub max_replicas: Option<i32>,
}

/// Upstream's proportional scaling (DeploymentController.scale): when the
/// deployment is resized mid-rollout, every active ReplicaSet grows or
/// shrinks by its share of the change (`replicas * allowed / max-replicas`,
/// rounded), so neither the new nor the old pods absorb it all. The
/// largest ReplicaSets go first (the newest on a tie when growing, the
/// oldest when shrinking) and the rounding leftover goes to the first.
/// `current` is the deployment's status.replicas, the fallback for a
/// missing annotation.
pub fn proportional(want: i32, max_surge: i32, current: i32, active: &[Sized]) -> Vec<i32> {
    let allowed = want + max_surge;
    let total: i32 = active.iter().map(|a| a.replicas).sum();
    let to_add = allowed - total;
    let mut out: Vec<i32> = active.iter().map(|a| a.replicas).collect();
    if to_add == 0 || active.is_empty() {
        return out;
    }
    let mut order: Vec<usize> = (0..active.len()).collect();
    // `active` is oldest first: a later index is newer.
    if to_add > 0 {
        order.sort_by(|a, b| active[*b].replicas.cmp(&active[*a].replicas).then(b.cmp(a)));
    } else {
        order.sort_by(|a, b| active[*b].replicas.cmp(&active[*a].replicas).then(a.cmp(b)));
    }
    let mut added = 0;
    for &i in &order {
        let rs = active[i];
        if rs.replicas == 0 || added == to_add {
            continue;
        }
        let fraction = if want == 0 {
            -rs.replicas
        } else {
            let was = rs.max_replicas.unwrap_or(current).max(1);
            let size = (rs.replicas as f64 * allowed as f64 / was as f64).round() as i32;
            size - rs.replicas
        };
        let left = to_add - added;
        let share = if to_add > 0 {
            fraction.min(left)
        } else {
            fraction.max(left)
        };
        out[i] += share;
        added += share;
    }
    if added != to_add {
        let first = order[0];
        out[first] = (out[first] + to_add - added).max(0);
    }
    out
}

fn fnv1a(h: u32, bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ *b as u32).wrapping_mul(16_777_619))
}

/// A stable hash of the template (FNV-1a over its JSON, then the collision
/// count), spelt with upstream's SafeEncodeString alphabet.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let body = serde_json::to_vec(&without_hash(t)).unwrap_or_default();
    let mut h = fnv1a(2_166_136_261, &body);
    if let Some(c) = collision_count {
        h = fnv1a(h, c.to_string().as_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
    }
    t
}

/// Templates equal once the pod-template-hash label is ignored.
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    serde_json::to_value(without_hash(a)).ok() == serde_json::to_value(without_hash(b)).ok()
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The ReplicaSet whose template is the deployment's (the oldest if several).
pub fn find_new<'a>(
    t: &PodTemplateSpec,
    owned: &'a [Arc<ReplicaSet>],
) -> Option<&'a Arc<ReplicaSet>> {
    owned
        .iter()
        .filter(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|rt| same_template(rt, t))
        })
        .min_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The old ReplicaSets to delete to keep `limit` of them (upstream
/// cleanupDeployment): oldest revisions first, only scaled-down ones.
pub fn history_to_delete(old: &[Arc<ReplicaSet>], limit: i32) -> Vec<Arc<ReplicaSet>> {
    let mut candidates: Vec<&Arc<ReplicaSet>> = old
        .iter()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let diff = candidates.len() as i64 - limit.max(0) as i64;
    if diff <= 0 {
        return vec![];
    }
    candidates.sort_by_key(|rs| revision(rs));
    candidates
        .into_iter()
        .take(diff as usize)
        .filter(|rs| {
            spec_replicas(rs) == 0
                && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
                && rs.status.as_ref().and_then(|s| s.observed_generation) >= rs.metadata.generation
        })
        .cloned()
        .collect()
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// The pods the ReplicaSets hold, the room maxSurge is counted against:
/// each ReplicaSet's spec, or the active pods the cache still shows it
/// owning when there are more. Upstream counts specs alone, so a
/// ReplicaSet scaled down whose pods are not deleted yet (its controller
/// not yet run: a new leader's first pass) leaves room the new ReplicaSet
/// fills at once, and the pods briefly exceed replicas + maxSurge.
fn pods_held(owned: &[Arc<ReplicaSet>], pods: &Store<Pod>, ns: &str) -> i32 {
    let mut active: HashMap<&str, i32> = owned
        .iter()
        .map(|rs| (rs.metadata.uid.as_deref().unwrap_or_default(), 0))
        .collect();
    pods.for_each(|p| {
        if p.metadata.namespace.as_deref() != Some(ns) {
            return;
        }
        let Some(r) = owners::controller_of(p) else {
            return;
        };
        if let Some(n) = active.get_mut(r.uid.as_str()) {
            if crate::pods::is_active(p) {
                *n += 1;
            }
        }
    });
    owned
        .iter()
        .map(|rs| {
            let uid = rs.metadata.uid.as_deref().unwrap_or_default();
            spec_replicas(rs).max(active.get(uid).copied().unwrap_or(0))
        })
        .sum()
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

fn condition(
    old: Option<&DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
    touch: bool,
) -> DeploymentCondition {
    let same = old.is_some_and(|o| o.status == status);
    let unchanged = same && old.is_some_and(|o| o.reason.as_deref() == Some(reason));
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: if same {
            old.and_then(|o| o.last_transition_time.clone())
        } else {
            Some(Time(now))
        },
        last_update_time: if unchanged && !touch {
            old.and_then(|o| o.last_update_time.clone())
        } else {
            Some(Time(now))
        },
    }
}

/// Inputs of the status the deployment's ReplicaSets give it.
pub struct StatusInput<'a> {
    pub d: &'a Deployment,
    pub owned: &'a [Arc<ReplicaSet>],
    pub new_rs: Option<&'a ReplicaSet>,
    pub created_new: bool,
    pub max_unavailable: i32,
    pub now: Timestamp,
}

/// Whether `latest` still has the spec this pass acted on (`acted`, the
/// cache's copy). When the spec moved on meanwhile (a template changed
/// while this pass ran), the pass writes no status: its ReplicaSets are the
/// old spec's, and a status stamped with the newer generation would show
/// the old ReplicaSet as updated and the rollout of the new template as
/// complete before it began (`kubectl rollout status` would return at
/// once). The newer generation has its own pass queued by its watch event;
/// upstream's status update fails on the stale resourceVersion instead.
pub fn same_spec_generation(acted: &Deployment, latest: &Deployment) -> bool {
    acted.metadata.generation == latest.metadata.generation
}

/// The status, and whether the rollout is complete.
pub fn status_of(i: &StatusInput<'_>) -> (DeploymentStatus, bool) {
    let d = i.d;
    let spec = d.spec.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1);
    let (mut replicas, mut ready, mut available) = (0, 0, 0);
    for rs in i.owned {
        let (r, re, a) = rs_status(rs);
        replicas += r;
        ready += re;
        available += a;
    }
    let updated = i.new_rs.map_or(0, |rs| rs_status(rs).0);
    let old = d.status.clone().unwrap_or_default();
    let old_conds = old.conditions.clone().unwrap_or_default();
    let find = |t: &str| old_conds.iter().find(|c| c.type_ == t);
    let mut conds: Vec<DeploymentCondition> = old_conds
        .iter()
        .filter(|c| c.type_ != "Available" && c.type_ != "Progressing")
        .cloned()
        .collect();
    conds.push(if available >= want - i.max_unavailable {
        condition(
            find("Available"),
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            i.now,
            false,
        )
    } else {
        condition(
            find("Available"),
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            i.now,
            false,
        )
    });
    let complete = updated == want && replicas == want && available == want;
    let rs_name = i
        .new_rs
        .and_then(|rs| rs.metadata.name.clone())
        .unwrap_or_default();
    let progressing = find("Progressing");
    let deadline = spec.progress_deadline_seconds;
    let prog = if spec.paused == Some(true) {
        Some(condition(
            progressing,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            i.now,
            false,
        ))
    } else if deadline.is_none() {
        None
    } else if complete {
        Some(condition(
            progressing,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            i.now,
            false,
        ))
    } else if i.created_new {
        Some(condition(
            progressing,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{rs_name}\""),
            i.now,
            true,
        ))
    } else if updated > old.updated_replicas.unwrap_or(0)
        || replicas < old.replicas.unwrap_or(0)
        || ready > old.ready_replicas.unwrap_or(0)
        || available > old.available_replicas.unwrap_or(0)
        || progressing.is_none_or(|c| {
            c.status == "Unknown" || c.reason.as_deref() == Some("NewReplicaSetAvailable")
        })
    {
        Some(condition(
            progressing,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
            i.now,
            true,
        ))
    } else {
        let since = progressing
            .and_then(|c| c.last_update_time.as_ref())
            .map(|t| t.0.as_second());
        let over = since
            .zip(deadline)
            .is_some_and(|(s, dl)| i.now.as_second() - s > dl as i64);
        if over {
            Some(condition(
                progressing,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                i.now,
                false,
            ))
        } else {
            progressing.cloned()
        }
    };
    conds.extend(prog);
    conds.sort_by(|a, b| b.type_.cmp(&a.type_));
    (
        DeploymentStatus {
            observed_generation: d.metadata.generation,
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            unavailable_replicas: Some((want - available).max(0)),
            conditions: Some(conds),
            collision_count: old.collision_count,
            terminating_replicas: old.terminating_replicas,
        },
        complete,
    )
}

// ---- applying them -----------------------------------------------------

async fn scale(
    api: &Api<ReplicaSet>,
    recorder: &Recorder,
    rs: &ReplicaSet,
    n: i32,
    d: &Deployment,
    max_surge: i32,
) -> Result<(), Error> {
    let name = rs.metadata.name.clone().unwrap_or_default();
    let before = spec_replicas(rs);
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let patch = json!({
        "metadata": {"annotations": {
            DESIRED_REPLICAS: want.to_string(),
            MAX_REPLICAS: (want + max_surge).to_string(),
        }},
        "spec": {"replicas": n},
    });
    api.patch(&name, &PatchParams::apply(MANAGER), &Patch::Merge(patch))
        .await
        .map_err(Error::api("scaling replicaset", name.clone()))?;
    tracing::info!(replicaset = %name, replicas = n, "scaled");
    if n != before {
        let way = if n > before { "up" } else { "down" };
        recorder.event(
            object_ref(d),
            EventType::Normal,
            "ScalingReplicaSet",
            format!("Scaled {way} replica set {name} to {n} from {before}"),
        );
    }
    Ok(())
}

fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Finds or creates the new ReplicaSet and gives it the next revision.
/// Returns it and whether it was created now.
async fn new_replicaset(
    d: &Deployment,
    owned: &[Arc<ReplicaSet>],
    api: &Api<ReplicaSet>,
    recorder: &Recorder,
    initial: impl Fn(i32) -> i32,
    max_surge: i32,
) -> Result<(Arc<ReplicaSet>, bool), Error> {
    let spec = d.spec.clone().unwrap_or_default();
    let template = spec.template.clone();
    let existing = find_new(&template, owned);
    let max_old = owned
        .iter()
        .filter(|rs| existing.is_none_or(|e| e.metadata.uid != rs.metadata.uid))
        .map(|rs| revision(rs))
        .max()
        .unwrap_or(0);
    let next = max_old + 1;
    let want = spec.replicas.unwrap_or(1);
    if let Some(rs) = existing {
        let current = revision(rs);
        let mut annotations = rs.metadata.annotations.clone().unwrap_or_default();
        let mut changed = false;
        if current < next {
            annotations.insert(REVISION.into(), next.to_string());
            if current > 0 {
                let mut hist: Vec<String> = annotations
                    .get(REVISION_HISTORY)
                    .map(|h| h.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                hist.push(current.to_string());
                annotations.insert(REVISION_HISTORY.into(), hist.join(","));
            }
            changed = true;
        }
        for (k, v) in copied_annotations(d) {
            if annotations.get(&k) != Some(&v) {
                annotations.insert(k, v);
                changed = true;
            }
        }
        if !changed {
            return Ok((rs.clone(), false));
        }
        let mut new = (**rs).clone();
        new.metadata.annotations = Some(annotations);
        let name = new.metadata.name.clone().unwrap_or_default();
        let written = api
            .replace(&new, &owners::post_params())
            .await
            .map_err(Error::api("updating revision of replicaset", name))?;
        return Ok((Arc::new(written), false));
    }

    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(&template, collision);
    let dname = d.metadata.name.clone().unwrap_or_default();
    let name = format!("{dname}-{hash}");
    let mut t = template.clone();
    let tm = t.metadata.get_or_insert_with(Default::default);
    let mut labels = tm.labels.clone().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.clone());
    tm.labels = Some(labels.clone());
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.clone());
    let mut annotations = copied_annotations(d);
    annotations.insert(REVISION.into(), next.to_string());
    annotations.insert(DESIRED_REPLICAS.into(), want.to_string());
    annotations.insert(MAX_REPLICAS.into(), (want + max_surge).to_string());
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: d.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owners::controller_ref(d)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(initial(0)),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(t),
        }),
        status: None,
    };
    match api.create(&rs, &owners::post_params()).await {
        Ok(created) => {
            tracing::info!(deployment = %dname, replicaset = %name, revision = next, "created new replicaset");
            let n = spec_replicas(&created);
            if n > 0 {
                recorder.event(
                    object_ref(d),
                    EventType::Normal,
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {name} to {n}"),
                );
            }
            Ok((Arc::new(created), true))
        }
        Err(e) if e.code() == 409 => {
            // Ours from an earlier reconcile the cache has not shown yet, or
            // a hash collision: the next reconcile sorts it out (a collision
            // bumps status.collisionCount so the next name differs).
            let other = api
                .get(&name)
                .await
                .map_err(Error::api("reading replicaset", name.clone()))?;
            let ours = owners::controller_of(&other)
                .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
            let same = other
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|rt| same_template(rt, &template));
            if ours && same {
                return Ok((Arc::new(other), false));
            }
            let dapi = Api::<Deployment>::namespaced(
                api.client().clone(),
                d.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let bump = json!({"status": {"collisionCount": collision.unwrap_or(0) + 1}});
            dapi.patch_status(&dname, &PatchParams::apply(MANAGER), &Patch::Merge(bump))
                .await
                .map_err(Error::api("bumping collisionCount of", dname.clone()))?;
            Err(Error::Invalid(format!(
                "replicaset {name} exists with another template: hash collision"
            )))
        }
        Err(e) => Err(Error::api("creating replicaset for", dname)(e)),
    }
}

/// When the deployment was resized while more than one ReplicaSet is active
/// (an active one's `desired-replicas` annotation is not `want`): each
/// active ReplicaSet and its proportional size. Every one is written, so
/// the annotations record the new size even where the count stays.
fn resized(
    d: &Deployment,
    owned: &[Arc<ReplicaSet>],
    want: i32,
    max_surge: i32,
) -> Option<Vec<(Arc<ReplicaSet>, i32)>> {
    let active: Vec<&Arc<ReplicaSet>> = owned.iter().filter(|rs| spec_replicas(rs) > 0).collect();
    let annotated = |rs: &ReplicaSet, key: &str| {
        rs.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .and_then(|v| v.parse::<i32>().ok())
    };
    let stale = active
        .iter()
        .any(|rs| annotated(rs, DESIRED_REPLICAS).is_some_and(|n| n != want));
    if active.len() < 2 || !stale {
        return None;
    }
    let sized: Vec<Sized> = active
        .iter()
        .map(|rs| Sized {
            replicas: spec_replicas(rs),
            max_replicas: annotated(rs, MAX_REPLICAS),
        })
        .collect();
    let current = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let sizes = proportional(want, max_surge, current, &sized);
    Some(active.into_iter().cloned().zip(sizes).collect())
}

pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = ObjectKey::of(&*d);
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let rs_api = Api::<ReplicaSet>::namespaced(ctx.client.clone(), &ns);
    let d_api = Api::<Deployment>::namespaced(ctx.client.clone(), &ns);
    let deleting = d.metadata.deletion_timestamp.is_some();
    let in_ns = ctx
        .replicasets
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(ns.as_str()));
    let mut owned = owners::claim_and_write(&rs_api, &*d, &spec.selector, deleting, in_ns).await?;
    owned.sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));

    let want = spec.replicas.unwrap_or(1);
    let rolling = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let (max_surge, max_unavailable) = if recreate {
        (0, 0)
    } else {
        fenceposts(
            rolling.and_then(|r| r.max_surge.as_ref()),
            rolling.and_then(|r| r.max_unavailable.as_ref()),
            want,
        )?
    };

    let mut new_rs = find_new(&spec.template, &owned).cloned();
    let mut created_new = false;
    let paused = spec.paused == Some(true);
    let mut step_done = false;
    if !deleting && !paused {
        let olds: Vec<Arc<ReplicaSet>> = owned
            .iter()
            .filter(|rs| {
                new_rs
                    .as_ref()
                    .is_none_or(|n| n.metadata.uid != rs.metadata.uid)
            })
            .cloned()
            .collect();
        if recreate {
            let mut waiting = false;
            for rs in &olds {
                if spec_replicas(rs) > 0 {
                    scale(&rs_api, &ctx.recorder, rs, 0, &d, 0).await?;
                    waiting = true;
                }
            }
            let old_uids: Vec<&str> = olds
                .iter()
                .filter_map(|rs| rs.metadata.uid.as_deref())
                .collect();
            let old_pods = ctx.pods.filter(|p| {
                p.metadata.namespace.as_deref() == Some(ns.as_str())
                    && owners::controller_of(p).is_some_and(|r| old_uids.contains(&r.uid.as_str()))
            });
            waiting |= !old_pods.is_empty() || olds.iter().any(|rs| rs_status(rs).0 > 0);
            if !waiting {
                let (rs, created) =
                    new_replicaset(&d, &owned, &rs_api, &ctx.recorder, |_| want, 0).await?;
                created_new = created;
                if spec_replicas(&rs) != want {
                    scale(&rs_api, &ctx.recorder, &rs, want, &d, 0).await?;
                }
                new_rs = Some(rs);
            }
        } else if let Some(resized) = resized(&d, &owned, want, max_surge) {
            // A resize mid-rollout: this pass only shares it out.
            for (rs, n) in resized {
                scale(&rs_api, &ctx.recorder, &rs, n, &d, max_surge).await?;
            }
        } else {
            let all = pods_held(&owned, &ctx.pods, &ns);
            let (rs, created) = new_replicaset(
                &d,
                &owned,
                &rs_api,
                &ctx.recorder,
                |n| new_rs_replicas(want, max_surge, n, all),
                max_surge,
            )
            .await?;
            created_new = created;
            if !created {
                let target = new_rs_replicas(want, max_surge, spec_replicas(&rs), all);
                if target != spec_replicas(&rs) {
                    scale(&rs_api, &ctx.recorder, &rs, target, &d, max_surge).await?;
                    step_done = true;
                }
            } else {
                step_done = true;
            }
            if !step_done {
                let new = Old {
                    replicas: spec_replicas(&rs),
                    available: rs_status(&rs).2,
                };
                let old: Vec<Old> = olds
                    .iter()
                    .map(|o| Old {
                        replicas: spec_replicas(o),
                        available: rs_status(o).2,
                    })
                    .collect();
                let targets = scale_down_old(want, max_unavailable, new, &old);
                for (o, t) in olds.iter().zip(targets) {
                    if t != spec_replicas(o) {
                        scale(&rs_api, &ctx.recorder, o, t, &d, max_surge).await?;
                    }
                }
            }
            new_rs = Some(rs);
        }
        // The revision the deployment shows is its new ReplicaSet's.
        if let Some(rs) = &new_rs {
            let rev = revision(rs).to_string();
            let has = d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION));
            if has != Some(&rev) {
                let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
                d_api
                    .patch(
                        &key.name,
                        &PatchParams::apply(MANAGER),
                        &Patch::Merge(patch),
                    )
                    .await
                    .map_err(Error::api("setting revision of", key.to_string()))?;
            }
        }
    } else if paused && !deleting {
        // Paused: only scaling, of a deployment not mid-rollout.
        if let Some(rs) = &new_rs {
            let others_active = owned
                .iter()
                .any(|o| o.metadata.uid != rs.metadata.uid && spec_replicas(o) > 0);
            if !others_active && spec_replicas(rs) != want {
                scale(&rs_api, &ctx.recorder, rs, want, &d, max_surge).await?;
            }
        }
    }

    // Status, read from the latest deployment (our annotation write moved it).
    let latest = d_api
        .get(&key.name)
        .await
        .map_err(Error::api("reading", key.to_string()))?;
    if latest.metadata.uid != d.metadata.uid || !same_spec_generation(&d, &latest) {
        return Ok(Action::await_change());
    }
    let now = crate::pods::now();
    let (status, complete) = status_of(&StatusInput {
        d: &latest,
        owned: &owned,
        new_rs: new_rs.as_deref(),
        created_new,
        max_unavailable,
        now,
    });
    if complete && !deleting {
        let olds: Vec<Arc<ReplicaSet>> = owned
            .iter()
            .filter(|rs| {
                new_rs
                    .as_ref()
                    .is_none_or(|n| n.metadata.uid != rs.metadata.uid)
            })
            .cloned()
            .collect();
        for rs in history_to_delete(&olds, spec.revision_history_limit.unwrap_or(10)) {
            let name = rs.metadata.name.clone().unwrap_or_default();
            let dp = DeleteParams {
                uid: rs.metadata.uid.clone(),
                ..Default::default()
            };
            match rs_api.delete(&name, &dp).await {
                Ok(_) => tracing::info!(replicaset = %name, "deleted beyond revisionHistoryLimit"),
                Err(e) if e.code() == 404 => {}
                Err(e) => return Err(Error::api("deleting old replicaset", name)(e)),
            }
        }
    }
    if latest.status.as_ref() != Some(&status) {
        let mut new = latest.clone();
        new.status = Some(status.clone());
        d_api
            .replace_status(&new, &owners::post_params())
            .await
            .map_err(Error::api("updating status of", key.to_string()))?;
    }
    // Look again when the progress deadline could pass.
    let timed_out = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Progressing" && c.status == "False");
    match spec.progress_deadline_seconds {
        Some(dl) if !complete && !paused && !timed_out && !deleting => {
            Ok(Action::requeue(Duration::from_secs(dl.max(1) as u64 + 1)))
        }
        _ => Ok(Action::await_change()),
    }
}

/// Pods map to the deployment controlling their ReplicaSet (Recreate waits
/// for old pods to be gone).
pub fn deployment_of_pod(replicasets: &Store<ReplicaSet>, pod: &Pod) -> Vec<ObjectKey> {
    let Some(r) = owners::controller_of(pod).filter(|r| r.kind == "ReplicaSet") else {
        return vec![];
    };
    let ns = pod.metadata.namespace.as_deref();
    replicasets
        .get(&ObjectKey::new(ns, &r.name))
        .and_then(|rs| balsa_api::client::controller::controller_of::<Deployment, ReplicaSet>(&rs))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::ReplicaSetStatus;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn fenceposts_round_as_upstream() {
        // 25% of 10: surge rounds up to 3, unavailable down to 2.
        assert_eq!(fenceposts(None, None, 10).unwrap(), (3, 2));
        assert_eq!(fenceposts(None, None, 3).unwrap(), (1, 0));
        assert_eq!(fenceposts(None, None, 1).unwrap(), (1, 0));
        // Both zero: one may be unavailable so the rollout can move.
        assert_eq!(
            fenceposts(Some(&IntOrString::Int(0)), Some(&pct("10%")), 5).unwrap(),
            (0, 1)
        );
        assert_eq!(
            fenceposts(Some(&pct("50%")), Some(&IntOrString::Int(2)), 5).unwrap(),
            (3, 2)
        );
        assert!(fenceposts(Some(&pct("x%")), None, 5).is_err());
    }

    #[test]
    fn new_rs_grows_within_surge() {
        // 3 replicas, surge 1: new RS goes 0 -> 1 while the old has 3.
        assert_eq!(new_rs_replicas(3, 1, 0, 3), 1);
        // Already at replicas + surge in total: no growth.
        assert_eq!(new_rs_replicas(3, 1, 1, 4), 1);
        // Old scaled down to 2: new may grow to 2.
        assert_eq!(new_rs_replicas(3, 1, 1, 3), 2);
        // Never beyond replicas, and scales down when above.
        assert_eq!(new_rs_replicas(3, 5, 0, 0), 3);
        assert_eq!(new_rs_replicas(3, 1, 5, 5), 3);
    }

    #[test]
    fn a_resize_mid_rollout_is_shared_out_as_upstream() {
        let s = |replicas, max| Sized {
            replicas,
            max_replicas: Some(max),
        };
        // 10 replicas, surge 3, mid-rollout old 8 + new 5; resized to 15
        // (surge 4): 19 allowed, 6 to add; the larger (old) goes first.
        // old: round(8 * 19 / 13) = 12 (+4), new: round(5 * 19 / 13) = 7 (+2).
        assert_eq!(proportional(15, 4, 13, &[s(8, 13), s(5, 13)]), [12, 7]);
        // Back down to 5 (surge 2): 7 allowed, 6 to remove.
        // old: round(8 * 7 / 13) = 4 (-4), new: round(5 * 7 / 13) = 3 (-2).
        assert_eq!(proportional(5, 2, 13, &[s(8, 13), s(5, 13)]), [4, 3]);
        // A tie when growing: the newer grows first.
        assert_eq!(proportional(4, 1, 4, &[s(2, 4), s(2, 4)]), [2, 3]);
        // To zero: everything goes.
        assert_eq!(proportional(0, 0, 13, &[s(8, 13), s(5, 13)]), [0, 0]);
        // Nothing to share: unchanged.
        assert_eq!(proportional(10, 3, 13, &[s(8, 13), s(5, 13)]), [8, 5]);
    }

    #[test]
    fn old_scale_down_keeps_min_available() {
        let o = |replicas, available| Old {
            replicas,
            available,
        };
        // 3 replicas, maxUnavailable 0, new has 1 not yet available: nothing.
        assert_eq!(scale_down_old(3, 0, o(1, 0), &[o(3, 3)]), [3]);
        // New pod available: one old may go.
        assert_eq!(scale_down_old(3, 0, o(1, 1), &[o(3, 3)]), [2]);
        // Unhealthy old pods go first, without counting against availability.
        assert_eq!(scale_down_old(4, 1, o(0, 0), &[o(2, 0), o(4, 4)]), [0, 3]);
        // Everything new is available: old goes to zero.
        assert_eq!(scale_down_old(3, 0, o(3, 3), &[o(1, 1)]), [0]);
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn rs(name: &str, t: PodTemplateSpec, rev: i64, created: i64) -> Arc<ReplicaSet> {
        let mut t = t;
        t.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), "x".into());
        Arc::new(ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(name.into()),
                generation: Some(1),
                annotations: Some(BTreeMap::from([(REVISION.to_string(), rev.to_string())])),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                template: Some(t),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: 0,
                observed_generation: Some(1),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn hash_is_stable_and_template_sensitive() {
        let a = template_hash(&template("a"), None);
        assert_eq!(a, template_hash(&template("a"), None));
        assert_ne!(a, template_hash(&template("b"), None));
        assert_ne!(a, template_hash(&template("a"), Some(1)));
        assert!(a
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
        // The hash label itself does not change the hash.
        let mut labelled = template("a");
        labelled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), a.clone());
        assert_eq!(template_hash(&labelled, None), a);
    }

    #[test]
    fn pods_held_count_a_replicasets_live_pods_beyond_its_spec() {
        use balsa_api::client::reflector::store;
        use balsa_api::client::watcher::Event;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

        let with_spec = |name: &str, n: i32| {
            let mut r = (*rs(name, template(name), 1, 10)).clone();
            r.spec.as_mut().unwrap().replicas = Some(n);
            Arc::new(r)
        };
        // The old ReplicaSet scaled down to 2 still has 3 active pods (and
        // one deleting); the new one at 3 has created 1 so far.
        let owned = vec![with_spec("old", 2), with_spec("new", 3)];
        let (pods, mut cache) = store::<Pod>();
        let pod = |name: &str, owner: &str, deleting: bool| Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                deletion_timestamp: deleting.then(|| Time(Timestamp::from_second(5).unwrap())),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: owner.into(),
                    uid: owner.into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        };
        for (name, owner, deleting) in [
            ("o1", "old", false),
            ("o2", "old", false),
            ("o3", "old", false),
            ("o4", "old", true),
            ("n1", "new", false),
        ] {
            cache.apply(&Event::Apply(pod(name, owner, deleting)));
        }
        assert_eq!(pods_held(&owned, &pods, "ns"), 3 + 3);
        assert_eq!(pods_held(&owned, &pods, "elsewhere"), 2 + 3, "specs alone");
    }

    #[test]
    fn rollback_finds_the_old_replicaset() {
        let owned = vec![
            rs("web-a", template("a"), 1, 10),
            rs("web-b", template("b"), 2, 20),
        ];
        assert_eq!(
            find_new(&template("a"), &owned)
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("web-a")
        );
        assert_eq!(
            find_new(&template("b"), &owned)
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("web-b")
        );
        assert!(find_new(&template("c"), &owned).is_none());
    }

    #[test]
    fn a_pass_on_an_older_spec_writes_no_status_for_the_newer_one() {
        // The cache held generation 1 (template a, its ReplicaSet complete)
        // when the pass began; the template changed to b meanwhile.
        let mut acted = Deployment::default();
        acted.metadata.generation = Some(1);
        acted.spec = Some(k8s_openapi::api::apps::v1::DeploymentSpec {
            replicas: Some(3),
            template: template("a"),
            ..Default::default()
        });
        let mut latest = acted.clone();
        latest.metadata.generation = Some(2);
        latest.spec.as_mut().unwrap().template = template("b");
        assert!(!same_spec_generation(&acted, &latest));
        assert!(same_spec_generation(&latest, &latest.clone()));

        // What the pass would have written: the old ReplicaSet, complete,
        // counted as the new one under the newer generation.
        let mut old = (*rs("web-a", template("a"), 1, 10)).clone();
        old.status = Some(ReplicaSetStatus {
            replicas: 3,
            ready_replicas: Some(3),
            available_replicas: Some(3),
            ..Default::default()
        });
        let owned = vec![Arc::new(old)];
        let (status, complete) = status_of(&StatusInput {
            d: &latest,
            owned: &owned,
            new_rs: find_new(&template("a"), &owned).map(|r| &**r),
            created_new: false,
            max_unavailable: 0,
            now: Timestamp::from_second(100).unwrap(),
        });
        assert!(complete && status.observed_generation == Some(2));
        // The status that matters for generation 2 names b's ReplicaSet,
        // which does not exist yet: nothing is updated.
        assert!(find_new(&template("b"), &owned).is_none());
    }

    #[test]
    fn history_keeps_the_newest_revisions() {
        let old: Vec<_> = (1..=5)
            .map(|i| rs(&format!("r{i}"), template(&i.to_string()), i, i))
            .collect();
        let gone: Vec<_> = history_to_delete(&old, 2)
            .iter()
            .map(|r| revision(r))
            .collect();
        assert_eq!(gone, [1, 2, 3]);
        assert!(history_to_delete(&old, 10).is_empty());
        // A replicaset still scaled up is kept even beyond the limit.
        let mut busy = old.clone();
        let mut r1 = (*busy[0]).clone();
        r1.spec.as_mut().unwrap().replicas = Some(1);
        busy[0] = Arc::new(r1);
        let gone: Vec<_> = history_to_delete(&busy, 2)
            .iter()
            .map(|r| revision(r))
            .collect();
        assert_eq!(gone, [2, 3]);
    }
}
