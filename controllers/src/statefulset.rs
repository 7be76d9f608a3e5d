//! The StatefulSet controller: pods with stable names `<set>-<ordinal>`,
//! stable storage (a PVC per volumeClaimTemplate and ordinal, made before the
//! pod), created and removed in order (OrderedReady) or all at once
//! (Parallel), rolled out through ControllerRevisions from the highest
//! ordinal down to the partition.
//!
//! ```text
//!  set, its pods, PVCs and revisions (cache)
//!    └─ update revision = revision of the template; current = status's
//!    └─ slots start..start+replicas, ordinal order:
//!    │    failed: delete; missing: PVCs, then the pod (below the partition
//!    │    at the current revision); OrderedReady waits for each to be
//!    │    Running and Ready before the next
//!    └─ condemned (outside the slots), highest first: delete (OrderedReady:
//!    │  one at a time, once the rest are healthy)
//!    └─ RollingUpdate: highest ordinal >= start+partition not at the update
//!    │  revision: delete it (recreated next pass); an unhealthy one: wait
//!    └─ status; rollout complete: currentRevision = updateRevision
//! ```
//!
//! Events on the set, as kube-controller-manager's `statefulset-controller`
//! words them (see [`pod_event`], [`claim_event`]): "create Pod web-0 in
//! StatefulSet web successful", "create Claim data-web-0 Pod web-0 in
//! StatefulSet web success", and the `Failed*` ones with the error.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::events::{object_ref, EventType, Recorder};
use balsa_api::client::{Action, Api, Client, DeleteParams, ObjectKey, Patch, PatchParams, Store};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use crate::history::{self, Current, HASH_LABEL};
use crate::owners::{self, MANAGER};
use crate::replicaset::{Expectations, BURST};
use crate::{pods, Error};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub struct Ctx {
    pub client: Client,
    pub pods: Store<Pod>,
    pub claims: Store<PersistentVolumeClaim>,
    pub revisions: Store<ControllerRevision>,
    pub expectations: Expectations,
    /// Records as `statefulset-controller`.
    pub recorder: Recorder,
}

// ---- pure decisions ----------------------------------------------------

/// Upstream's `Successful<Verb>` / `Failed<Verb>` reason for `verb`
/// ("create" -> "Create").
fn reason(verb: &str, failed: bool) -> String {
    let mut title = verb.to_string();
    if let Some(first) = title.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    format!("{}{title}", if failed { "Failed" } else { "Successful" })
}

/// The event upstream's recordPodEvent writes on the set after `verb`
/// ("create", "delete") of `pod`, failed with `err` or not.
pub fn pod_event(
    verb: &str,
    set: &str,
    pod: &str,
    err: Option<&str>,
) -> (EventType, String, String) {
    match err {
        None => (
            EventType::Normal,
            reason(verb, false),
            format!("{verb} Pod {pod} in StatefulSet {set} successful"),
        ),
        Some(e) => (
            EventType::Warning,
            reason(verb, true),
            format!("{verb} Pod {pod} in StatefulSet {set} failed error: {e}"),
        ),
    }
}

/// The event upstream's recordClaimEvent writes on the set after `verb` of
/// `claim` for `pod`.
pub fn claim_event(
    verb: &str,
    set: &str,
    pod: &str,
    claim: &str,
    err: Option<&str>,
) -> (EventType, String, String) {
    match err {
        None => (
            EventType::Normal,
            reason(verb, false),
            format!("{verb} Claim {claim} Pod {pod} in StatefulSet {set} success"),
        ),
        Some(e) => (
            EventType::Warning,
            reason(verb, true),
            format!("{verb} Claim {claim} for Pod {pod} in StatefulSet {set} failed error: {e}"),
        ),
    }
}

fn record(ctx: &Ctx, set: &StatefulSet, (type_, reason, message): (EventType, String, String)) {
    ctx.recorder.event(object_ref(set), type_, &reason, message);
}

fn set_name(set: &StatefulSet) -> &str {
    set.metadata.name.as_deref().unwrap_or_default()
}

/// The ordinal in a pod name `<set>-<ordinal>`, if it is one of the set's.
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let n = pod.strip_prefix(set)?.strip_prefix('-')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse().ok().filter(|o| *o >= 0)
}

pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

fn spec_i32(
    set: &StatefulSet,
    f: impl Fn(&k8s_openapi::api::apps::v1::StatefulSetSpec) -> Option<i32>,
) -> Option<i32> {
    set.spec.as_ref().and_then(f)
}

pub fn replicas(set: &StatefulSet) -> i32 {
    spec_i32(set, |s| s.replicas).unwrap_or(1).max(0)
}

pub fn start(set: &StatefulSet) -> i32 {
    spec_i32(set, |s| s.ordinals.as_ref().and_then(|o| o.start))
        .unwrap_or(0)
        .max(0)
}

fn parallel(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.pod_management_policy.as_deref())
        == Some("Parallel")
}

fn rolling(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

pub fn partition(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0)
}

fn min_ready(set: &StatefulSet) -> i64 {
    spec_i32(set, |s| s.min_ready_seconds).unwrap_or(0) as i64
}

fn retention(set: &StatefulSet) -> (String, String) {
    let p = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    (
        p.and_then(|p| p.when_deleted.clone())
            .unwrap_or_else(|| "Retain".into()),
        p.and_then(|p| p.when_scaled.clone())
            .unwrap_or_else(|| "Retain".into()),
    )
}

pub fn revision_of(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .map(String::as_str)
        .unwrap_or_default()
}

fn running_and_ready(p: &Pod) -> bool {
    pods::phase(p) == "Running" && pods::is_ready(p)
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// The PVCs for `ordinal`: each template named `<template>-<set>-<ordinal>`,
/// labelled with the set's matchLabels; owned by the set when whenDeleted is
/// Delete (the garbage collector then removes them with it).
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let templates = set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_default();
    let match_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    let owner = (retention(set).0 == "Delete").then(|| OwnerReference {
        controller: None,
        ..owners::controller_ref(set)
    });
    templates
        .into_iter()
        .map(|t| {
            let tname = t.metadata.name.clone().unwrap_or_default();
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(match_labels.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&tname, set_name(set), ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: owner.clone().map(|o| vec![o]),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// The pod for `ordinal` from `template` at `revision` (a revision name).
pub fn pod_for(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let name = format!("{}-{ordinal}", set_name(set));
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(HASH_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    if let Some(svc) = set.spec.as_ref().and_then(|s| s.service_name.clone()) {
        if !svc.is_empty() {
            spec.subdomain = Some(svc);
        }
    }
    // Each claim template becomes the volume of the same name.
    for claim in claims_for(set, ordinal) {
        let cname = claim.metadata.name.clone().unwrap_or_default();
        let vname = cname
            .strip_suffix(&format!("-{}-{ordinal}", set_name(set)))
            .unwrap_or(&cname)
            .to_string();
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != vname);
        volumes.push(Volume {
            name: vname,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: cname,
                read_only: None,
            }),
            ..Default::default()
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owners::controller_ref(set)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// One step's writes.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Ordinals to create, each at the current (true) or update revision.
    pub create: Vec<(i32, bool)>,
    /// Pods to delete, by name.
    pub delete: Vec<String>,
    /// Of `delete`, the ones being scaled away (whenScaled applies).
    pub condemned: Vec<String>,
}

/// Everything one decision reads.
pub struct View<'a> {
    pub set: &'a StatefulSet,
    /// The set's pods, with their ordinals.
    pub pods: &'a [(i32, Arc<Pod>)],
    pub current: &'a str,
    pub update: &'a str,
    pub now: Timestamp,
}

impl View<'_> {
    /// Upstream isHealthy: Running, Ready (for minReadySeconds) and not
    /// terminating; an unhealthy pod blocks OrderedReady and the rollout.
    fn healthy(&self, p: &Pod) -> bool {
        !terminating(p)
            && running_and_ready(p)
            && pods::is_available(p, min_ready(self.set), self.now)
    }

    /// Whether a new pod at `ordinal` takes the current revision: below
    /// the partition of a RollingUpdate (upstream newVersionedStatefulSetPod).
    fn at_current(&self, ordinal: i32) -> bool {
        rolling(self.set) && ordinal < start(self.set) + partition(self.set)
    }

    /// Upstream updateStatefulSet's pass over the slots, the condemned and
    /// the rolling update.
    pub fn plan(&self) -> Plan {
        let mut plan = Plan::default();
        let monotonic = !parallel(self.set);
        let (lo, hi) = (start(self.set), start(self.set) + replicas(self.set));
        let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
        let at = |o: i32| self.pods.iter().find(|(po, _)| *po == o).map(|(_, p)| p);
        for o in lo..hi {
            match at(o) {
                None => {
                    plan.create.push((o, self.at_current(o)));
                    if monotonic {
                        return plan;
                    }
                }
                Some(p) if matches!(pods::phase(p), "Failed" | "Succeeded") && !terminating(p) => {
                    plan.delete.push(name(p));
                    if monotonic {
                        return plan;
                    }
                }
                Some(p) => {
                    if monotonic && !self.healthy(p) {
                        return plan;
                    }
                }
            }
        }
        if !plan.create.is_empty() || !plan.delete.is_empty() {
            return plan;
        }
        let mut condemned: Vec<&(i32, Arc<Pod>)> = self
            .pods
            .iter()
            .filter(|(o, _)| *o < lo || *o >= hi)
            .collect();
        condemned.sort_by_key(|c| std::cmp::Reverse(c.0));
        for (_, p) in &condemned {
            if terminating(p) {
                if monotonic {
                    return plan;
                }
                continue;
            }
            plan.delete.push(name(p));
            plan.condemned.push(name(p));
            if monotonic {
                return plan;
            }
        }
        if !plan.delete.is_empty() || !rolling(self.set) {
            return plan;
        }
        let min = lo + partition(self.set);
        for o in (min.max(lo)..hi).rev() {
            let Some(p) = at(o) else { return plan };
            if revision_of(p) != self.update && !terminating(p) {
                plan.delete.push(name(p));
                return plan;
            }
            if !self.healthy(p) {
                return plan;
            }
        }
        plan
    }

    /// Upstream updateStatus over every pod of the set.
    pub fn status(&self, collision_count: Option<i32>) -> StatefulSetStatus {
        let (mut n, mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0, 0);
        for (_, p) in self.pods {
            n += 1;
            if running_and_ready(p) {
                ready += 1;
                if pods::is_available(p, min_ready(self.set), self.now) {
                    available += 1;
                }
            }
            if !terminating(p) {
                if revision_of(p) == self.current {
                    current += 1;
                }
                if revision_of(p) == self.update {
                    updated += 1;
                }
            }
        }
        let mut s = StatefulSetStatus {
            available_replicas: Some(available),
            collision_count,
            conditions: self.set.status.as_ref().and_then(|s| s.conditions.clone()),
            current_replicas: Some(current),
            current_revision: Some(self.current.to_string()),
            observed_generation: self.set.metadata.generation,
            ready_replicas: Some(ready),
            replicas: n,
            update_revision: Some(self.update.to_string()),
            updated_replicas: Some(updated),
        };
        // The rollout is complete: the update revision becomes current.
        let want = replicas(self.set);
        if rolling(self.set) && updated == want && ready == want && n == want {
            s.current_revision = s.update_revision.clone();
            s.current_replicas = Some(updated);
        }
        s
    }
}

// ---- reconcile -----------------------------------------------------------

pub async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = ObjectKey::of(&*set);
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = set.metadata.namespace.clone().unwrap_or_default();
    let selector = set
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let pod_api = Api::<Pod>::namespaced(ctx.client.clone(), &ns);
    let cr_api = Api::<ControllerRevision>::namespaced(ctx.client.clone(), &ns);
    let set_api = Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns);
    let in_ns = |m: &ObjectMeta| m.namespace.as_deref() == Some(ns.as_str());

    let revisions = owners::claim_and_write(
        &cr_api,
        &*set,
        &selector,
        false,
        ctx.revisions.filter(|r| in_ns(&r.metadata)),
    )
    .await?;
    let template = set
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let collisions = set.status.as_ref().and_then(|s| s.collision_count);
    let update = match history::current(&cr_api, &*set, &template, &revisions, collisions).await? {
        Current::Found(cr) => *cr,
        Current::Collision => {
            let mut new = (*set).clone();
            let status = new.status.get_or_insert_with(Default::default);
            status.collision_count = Some(collisions.unwrap_or(0) + 1);
            set_api
                .replace_status(&new, &owners::post_params())
                .await
                .map_err(Error::api("bumping collisionCount of", key.to_string()))?;
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
    };
    let update_name = update.metadata.name.clone().unwrap_or_default();
    let current = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_deref())
        .and_then(|n| {
            revisions
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(n))
        })
        .map(|r| (**r).clone())
        .unwrap_or_else(|| update.clone());
    let current_name = current.metadata.name.clone().unwrap_or_default();
    let current_template = history::template_of(&current).unwrap_or_else(|| template.clone());

    let owned = owners::claim_and_write(
        &pod_api,
        &*set,
        &selector,
        false,
        ctx.pods.filter(|p| in_ns(&p.metadata)),
    )
    .await?;
    let members: Vec<(i32, Arc<Pod>)> = owned
        .iter()
        .filter_map(|p| {
            Some((
                ordinal_of(set_name(&set), p.metadata.name.as_deref()?)?,
                p.clone(),
            ))
        })
        .collect();
    let view = View {
        set: &set,
        pods: &members,
        current: &current_name,
        update: &update_name,
        now: pods::now(),
    };

    if ctx.expectations.satisfied(&key, &ctx.pods) {
        let plan = view.plan();
        if !plan.create.is_empty() || !plan.delete.is_empty() {
            apply(
                &set,
                &key,
                &plan,
                &current_template,
                &current_name,
                &update_name,
                &ctx,
            )
            .await?;
        }
    }

    // Old revisions no pod uses, beyond the limit.
    let limit = set
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10);
    let used: HashSet<&str> = members.iter().map(|(_, p)| revision_of(p)).collect();
    for r in history::to_prune(
        &revisions,
        &[&current_name, &update_name],
        |r| used.contains(r.metadata.name.as_deref().unwrap_or_default()),
        limit,
    ) {
        history::delete(&cr_api, r).await?;
    }

    let status = view.status(collisions);
    if set.status.as_ref() != Some(&status) {
        let mut new = (*set).clone();
        new.status = Some(status);
        set_api
            .replace_status(&new, &owners::post_params())
            .await
            .map_err(Error::api("updating status of", key.to_string()))?;
    }
    // A pod waiting out minReadySeconds changes nothing we watch.
    if min_ready(&set) > 0
        && members
            .iter()
            .any(|(_, p)| running_and_ready(p) && !view.healthy(p))
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(Action::await_change())
}

/// Makes each missing PVC of `ordinal` (an existing one is kept as is),
/// for the pod `pod`.
async fn ensure_claims(set: &StatefulSet, ordinal: i32, pod: &str, ctx: &Ctx) -> Result<(), Error> {
    let ns = set.metadata.namespace.clone().unwrap_or_default();
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns);
    for c in claims_for(set, ordinal) {
        let name = c.metadata.name.clone().unwrap_or_default();
        if ctx.claims.get(&ObjectKey::new(Some(&ns), &name)).is_some() {
            continue;
        }
        match api.create(&c, &owners::post_params()).await {
            Ok(_) => {
                tracing::info!(claim = %name, "created claim");
                record(
                    ctx,
                    set,
                    claim_event("create", set_name(set), pod, &name, None),
                );
            }
            // Upstream stays silent when the claim is already there.
            Err(e) if e.code() == 409 => {}
            Err(e) => {
                let ev = claim_event("create", set_name(set), pod, &name, Some(&e.message));
                record(ctx, set, ev);
                return Err(Error::api("creating claim", name)(e));
            }
        }
    }
    Ok(())
}

/// whenScaled: Delete: the condemned pod's claims become its dependents (and
/// no longer the set's, which would keep them alive), so they go with it.
async fn hand_claims_to(
    set: &StatefulSet,
    pod: &Pod,
    ordinal: i32,
    ctx: &Ctx,
) -> Result<(), Error> {
    let ns = set.metadata.namespace.clone().unwrap_or_default();
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns);
    let owner = OwnerReference {
        controller: None,
        ..owners::controller_ref(pod)
    };
    for c in claims_for(set, ordinal) {
        let name = c.metadata.name.clone().unwrap_or_default();
        let Some(existing) = ctx.claims.get(&ObjectKey::new(Some(&ns), &name)) else {
            continue;
        };
        let mut refs = existing
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default();
        let set_uid = set.metadata.uid.as_deref().unwrap_or_default();
        if refs.iter().any(|r| r.uid == owner.uid) && !refs.iter().any(|r| r.uid == set_uid) {
            continue;
        }
        refs.retain(|r| r.uid != set_uid && r.uid != owner.uid);
        refs.push(owner.clone());
        let patch = json!({"metadata": {"ownerReferences": refs}});
        match api
            .patch(&name, &PatchParams::apply(MANAGER), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == 404 => {}
            Err(e) => return Err(Error::api("handing claim to pod", name)(e)),
        }
    }
    Ok(())
}

async fn apply(
    set: &StatefulSet,
    key: &ObjectKey,
    plan: &Plan,
    current_template: &PodTemplateSpec,
    current: &str,
    update: &str,
    ctx: &Ctx,
) -> Result<(), Error> {
    let ns = set.metadata.namespace.clone().unwrap_or_default();
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &ns);
    let template = set
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut created = Vec::new();
    for (ordinal, at_current) in plan.create.iter().take(BURST) {
        let pod = if *at_current {
            pod_for(set, current_template, *ordinal, current)
        } else {
            pod_for(set, &template, *ordinal, update)
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        ensure_claims(set, *ordinal, &name, ctx).await?;
        match api.create(&pod, &owners::post_params()).await {
            Ok(_) => {
                tracing::info!(statefulset = %key, pod = %name, "created pod");
                record(ctx, set, pod_event("create", set_name(set), &name, None));
                created.push(name);
            }
            // Our earlier create the cache has not shown, or a pod still
            // terminating under the name: wait for the cache (no event, as
            // upstream).
            Err(e) if e.code() == 409 => created.push(name),
            Err(e) => {
                let ev = pod_event("create", set_name(set), &name, Some(&e.message));
                record(ctx, set, ev);
                ctx.expectations.expect(key, created, vec![]);
                return Err(Error::api("creating pod", name)(e));
            }
        }
    }
    let deleted: Vec<String> = plan.delete.iter().take(BURST).cloned().collect();
    ctx.expectations.expect(key, created, deleted.clone());
    let (_, when_scaled) = retention(set);
    for name in &deleted {
        let pod = ctx.pods.get(&ObjectKey::new(Some(&ns), name));
        if plan.condemned.contains(name) && when_scaled == "Delete" {
            if let Some((p, o)) = pod
                .as_ref()
                .and_then(|p| Some((p, ordinal_of(set_name(set), name)?)))
            {
                hand_claims_to(set, p, o, ctx).await?;
            }
        }
        let dp = DeleteParams {
            uid: pod.and_then(|p| p.metadata.uid.clone()),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {
                tracing::info!(statefulset = %key, pod = %name, "deleted pod");
                record(ctx, set, pod_event("delete", set_name(set), name, None));
            }
            // Gone already, or another pod under the name now: not ours to tell.
            Err(e) if e.code() == 404 || e.code() == 409 => {}
            Err(e) => {
                let ev = pod_event("delete", set_name(set), name, Some(&e.message));
                record(ctx, set, ev);
                return Err(Error::api("deleting pod", name.clone())(e));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn set(extra: serde_json::Value) -> StatefulSet {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {
                "replicas": 3,
                "serviceName": "svc",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c"}],
                        "volumes": [{"name": "data", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"t": "1"}}}],
            },
        });
        if let (Some(s), Some(e)) = (v["spec"].as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(
        s: &StatefulSet,
        ordinal: i32,
        rev: &str,
        ready: bool,
        deleting: bool,
    ) -> (i32, Arc<Pod>) {
        let t = s.spec.as_ref().unwrap().template.clone();
        let mut p = pod_for(s, &t, ordinal, rev);
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        if deleting {
            p.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        }
        (ordinal, Arc::new(p))
    }

    fn plan(s: &StatefulSet, pods: &[(i32, Arc<Pod>)]) -> Plan {
        View {
            set: s,
            pods,
            current: "old",
            update: "new",
            now: Timestamp::from_second(1000).unwrap(),
        }
        .plan()
    }

    #[test]
    fn events_are_worded_as_upstream() {
        assert_eq!(
            pod_event("create", "web", "web-0", None),
            (
                EventType::Normal,
                "SuccessfulCreate".into(),
                "create Pod web-0 in StatefulSet web successful".into()
            )
        );
        assert_eq!(
            pod_event("delete", "web", "web-2", Some("boom")),
            (
                EventType::Warning,
                "FailedDelete".into(),
                "delete Pod web-2 in StatefulSet web failed error: boom".into()
            )
        );
        assert_eq!(
            claim_event("create", "web", "web-1", "data-web-1", None).2,
            "create Claim data-web-1 Pod web-1 in StatefulSet web success"
        );
        let (t, r, m) = claim_event("create", "web", "web-1", "data-web-1", Some("quota"));
        assert_eq!((t, r.as_str()), (EventType::Warning, "FailedCreate"));
        assert_eq!(
            m,
            "create Claim data-web-1 for Pod web-1 in StatefulSet web failed error: quota"
        );
    }

    #[test]
    fn names_labels_identity_and_claims() {
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-012"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        let s = set(json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"}}));
        let (_, p) = pod(&s, 4, "rev", false, false);
        let l = p.metadata.labels.as_ref().unwrap();
        assert_eq!(l[POD_NAME_LABEL], "web-4");
        assert_eq!(l[POD_INDEX_LABEL], "4");
        assert_eq!(l[HASH_LABEL], "rev");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(
            (spec.hostname.as_deref(), spec.subdomain.as_deref()),
            (Some("web-4"), Some("svc"))
        );
        // The claim replaces the template's volume of the same name.
        let vols = spec.volumes.as_ref().unwrap();
        assert_eq!(vols.len(), 1);
        assert_eq!(
            vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-web-4"
        );
        let c = &claims_for(&s, 4)[0];
        assert_eq!(c.metadata.name.as_deref(), Some("data-web-4"));
        let labels = c.metadata.labels.as_ref().unwrap();
        assert_eq!((labels["t"].as_str(), labels["app"].as_str()), ("1", "web"));
        let owner = &c.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("StatefulSet", None)
        );
        assert!(claims_for(&set(json!({})), 0)[0]
            .metadata
            .owner_references
            .is_none());
    }

    #[test]
    fn ordered_ready_one_at_a_time() {
        let s = set(json!({}));
        assert_eq!(plan(&s, &[]).create, [(0, false)]);
        let p0 = pod(&s, 0, "new", false, false);
        assert_eq!(plan(&s, &[p0]), Plan::default(), "waits for web-0");
        let p0 = pod(&s, 0, "new", true, false);
        assert_eq!(plan(&s, std::slice::from_ref(&p0)).create, [(1, false)]);
        // Scale down from 5: web-4 first, and web-3 only once it is gone.
        let s3 = set(json!({"replicas": 3}));
        let all: Vec<_> = (0..5).map(|o| pod(&s3, o, "new", true, false)).collect();
        assert_eq!(plan(&s3, &all).delete, ["web-4"]);
        let mut going = all.clone();
        going[4] = pod(&s3, 4, "new", true, true);
        assert_eq!(plan(&s3, &going), Plan::default());
        assert_eq!(plan(&s3, &all[..4]).delete, ["web-3"]);
    }

    #[test]
    fn parallel_all_at_once_and_start_ordinal() {
        let s = set(json!({"podManagementPolicy": "Parallel", "ordinals": {"start": 5}}));
        assert_eq!(plan(&s, &[]).create, [(5, false), (6, false), (7, false)]);
        let s1 = set(json!({"podManagementPolicy": "Parallel", "replicas": 1}));
        let all: Vec<_> = (0..3).map(|o| pod(&s1, o, "new", false, false)).collect();
        assert_eq!(plan(&s1, &all).delete, ["web-2", "web-1"]);
    }

    #[test]
    fn partitioned_update_from_the_top_waiting_for_health() {
        let s = set(json!({"updateStrategy": {"type": "RollingUpdate",
            "rollingUpdate": {"partition": 1}}}));
        // A missing pod below the partition comes back at the current revision.
        let p1 = pod(&s, 1, "old", true, false);
        let p2 = pod(&s, 2, "old", true, false);
        assert_eq!(plan(&s, &[p1.clone(), p2.clone()]).create, [(0, true)]);
        let p0 = pod(&s, 0, "old", true, false);
        assert_eq!(plan(&s, &[p0.clone(), p1.clone(), p2]).delete, ["web-2"]);
        let new2 = pod(&s, 2, "new", false, false);
        assert_eq!(plan(&s, &[p0.clone(), p1.clone(), new2]), Plan::default());
        let new2 = pod(&s, 2, "new", true, false);
        assert_eq!(plan(&s, &[p0.clone(), p1, new2.clone()]).delete, ["web-1"]);
        let new1 = pod(&s, 1, "new", true, false);
        assert_eq!(
            plan(&s, &[p0.clone(), new1, new2.clone()]),
            Plan::default(),
            "web-0 is below the partition"
        );
        let on_delete = set(json!({"updateStrategy": {"type": "OnDelete"}}));
        let old: Vec<_> = (0..3)
            .map(|o| pod(&on_delete, o, "old", true, false))
            .collect();
        assert_eq!(plan(&on_delete, &old), Plan::default());
    }

    #[test]
    fn status_completes_the_rollout() {
        let s = set(json!({}));
        let view = |pods: &[(i32, Arc<Pod>)]| {
            View {
                set: &s,
                pods,
                current: "old",
                update: "new",
                now: Timestamp::from_second(1000).unwrap(),
            }
            .status(None)
        };
        let mixed = [
            pod(&s, 0, "old", true, false),
            pod(&s, 1, "new", true, false),
            pod(&s, 2, "new", false, false),
        ];
        let st = view(&mixed);
        assert_eq!(
            (
                st.replicas,
                st.ready_replicas,
                st.current_replicas,
                st.updated_replicas
            ),
            (3, Some(2), Some(1), Some(2))
        );
        assert_eq!(st.current_revision.as_deref(), Some("old"));
        let done: Vec<_> = (0..3).map(|o| pod(&s, o, "new", true, false)).collect();
        let st = view(&done);
        assert_eq!(st.current_revision.as_deref(), Some("new"));
        assert_eq!(st.current_replicas, Some(3));
    }
}
