//! The DaemonSet controller: one pod per eligible node, rolled out through
//! ControllerRevisions (RollingUpdate with maxUnavailable / maxSurge, or
//! OnDelete), with the status `kubectl rollout status ds/x` reads.
//!
//! ```text
//!  ds, its pods and revisions, every node (cache)
//!    └─ revision for the template (history::current) -> hash
//!    └─ per node: should run / may keep running (node_fit: name, selector,
//!    │  required affinity, taints vs the template + daemon tolerations)
//!    │    run, no pod: create (pinned by matchFields metadata.name In [node])
//!    │    may not keep running: delete its pods; failed pods: delete
//!    │  pods on nodes that no longer exist: delete
//!    └─ nothing to create or delete: RollingUpdate step (unavailable budget,
//!    │  or surge: new pod first, old one once the new is available)
//!    └─ prune revisions, status
//! ```
//!
//! The scheduler, not this controller, binds the pods: the node affinity
//! leaves it one choice (upstream since 1.12).
//!
//! Events on the DaemonSet, as kube-controller-manager's
//! `daemonset-controller` words them: `SuccessfulCreate` "Created pod: X",
//! `SuccessfulDelete` "Deleted pod: X", `FailedCreate` "Error creating: ...",
//! `FailedDelete` "Error deleting: ...", and `FailedDaemonPod` for a failed
//! pod about to be replaced.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::events::{object_ref, EventType, Recorder};
use balsa_api::client::{Action, Api, Client, DeleteParams, ObjectKey, Store};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::history::{self, Current, HASH_LABEL};
use crate::owners::{self};
use crate::replicaset::{slow_start_batches, Expectations, BURST};
use crate::{deployment, node_fit, pods, Error};

/// The pod label carrying the DaemonSet's template generation.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// Where apps/v1 keeps the template generation (set by the registry).
pub const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

pub struct Ctx {
    pub client: Client,
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    pub revisions: Store<ControllerRevision>,
    pub expectations: Expectations,
    /// Records as `daemonset-controller`.
    pub recorder: Recorder,
}

// ---- pure decisions ----------------------------------------------------

/// The tolerations upstream adds to every daemon pod: it stays through node
/// problems the node lifecycle marks with taints, and lands on cordoned nodes.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        // Upstream adds or updates by key and effect, without tolerationSeconds.
        list.retain(|t| !(t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect)));
        list.push(Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        });
    }
}

/// Pins the pod to `node` through required node affinity: every term gets
/// the field requirement (none: one term with only it).
pub fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let field = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.into()]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let req = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: vec![],
        });
    if req.node_selector_terms.is_empty() {
        req.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for t in &mut req.node_selector_terms {
        t.match_fields = Some(vec![field.clone()]);
    }
}

/// The node a daemon pod is for: its nodeName, else its pinned affinity.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            let v = r.values.as_deref().unwrap_or_default();
            (r.key == "metadata.name" && r.operator == "In" && v.len() == 1).then(|| v[0].clone())
        })
    })
}

pub fn template(ds: &DaemonSet) -> PodTemplateSpec {
    ds.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

pub fn template_generation(ds: &DaemonSet) -> Option<i64> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_GENERATION)?
        .parse()
        .ok()
}

/// The template a pod for any node would get, with the daemon tolerations:
/// what eligibility is judged on.
fn eligibility_spec(ds: &DaemonSet) -> PodSpec {
    let mut spec = template(ds).spec.unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    spec
}

/// The daemon pod for `node`.
pub fn pod_for(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let t = template(ds);
    let tm = t.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    if let Some(g) = template_generation(ds) {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.to_string());
    }
    let mut spec = t.spec.unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    pin_to_node(&mut spec, node);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.metadata.name.clone().unwrap_or_default())),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owners::controller_ref(ds)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Upstream IsPodUpdated: the revision hash or the template generation matches.
pub fn is_updated(pod: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let l = pod.metadata.labels.as_ref();
    let label = |k: &str| l.and_then(|l| l.get(k)).map(String::as_str);
    let by_gen =
        generation.is_some_and(|g| label(TEMPLATE_GENERATION_LABEL) == Some(&g.to_string()));
    let by_hash = !hash.is_empty() && label(HASH_LABEL) == Some(hash);
    by_gen || by_hash
}

fn oldest_first(pods: &mut [Arc<Pod>]) {
    pods.sort_by(|a, b| {
        let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b)).then(a.metadata.name.cmp(&b.metadata.name))
    });
}

/// What one pass does to pods: nodes to create on, pods to delete.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<String>,
    pub delete: Vec<String>,
    /// The failed pods among `delete`, with their node: each is told in a
    /// `FailedDaemonPod` event before it goes.
    pub failed: Vec<(String, String)>,
}

/// Everything one decision reads.
pub struct View<'a> {
    pub ds: &'a DaemonSet,
    pub hash: &'a str,
    pub nodes: &'a [Arc<Node>],
    /// The set's pods not being deleted.
    pub pods: &'a [Arc<Pod>],
    pub now: Timestamp,
}

impl View<'_> {
    fn min_ready(&self) -> i64 {
        self.ds
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0) as i64
    }

    fn available(&self, p: &Pod) -> bool {
        pods::is_available(p, self.min_ready(), self.now)
    }

    fn by_node(&self) -> HashMap<String, Vec<Arc<Pod>>> {
        let mut out: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in self.pods {
            if let Some(n) = target_node(p) {
                out.entry(n).or_default().push(p.clone());
            }
        }
        for v in out.values_mut() {
            oldest_first(v);
        }
        out
    }

    fn surge_allowed(&self) -> bool {
        rolling(self.ds).is_some_and(|(s, _)| !is_zero(&s))
    }

    /// Upstream manage: create where a pod should run and none does, delete
    /// where none may keep running, failed pods, extras, and pods whose node
    /// is gone.
    pub fn manage(&self) -> Plan {
        let spec = eligibility_spec(self.ds);
        let by_node = self.by_node();
        let mut plan = Plan::default();
        let names = |v: &[Arc<Pod>]| -> Vec<String> {
            v.iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect()
        };
        let gen = template_generation(self.ds);
        for node in self.nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let (run, keep) = node_fit::should_run(&spec, node);
            let on = by_node.get(&name).cloned().unwrap_or_default();
            let (failed, running): (Vec<_>, Vec<_>) =
                on.into_iter().partition(|p| pods::phase(p) == "Failed");
            plan.delete.extend(names(&failed));
            plan.failed
                .extend(names(&failed).into_iter().map(|p| (p, name.clone())));
            if run && running.is_empty() {
                plan.create.push(name);
            } else if keep {
                if running.len() > 1 {
                    if self.surge_allowed() {
                        // Keep the oldest new and the oldest old pod.
                        let (new, old): (Vec<_>, Vec<_>) = running
                            .into_iter()
                            .partition(|p| is_updated(p, self.hash, gen));
                        plan.delete.extend(names(new.get(1..).unwrap_or_default()));
                        plan.delete.extend(names(old.get(1..).unwrap_or_default()));
                    } else {
                        plan.delete.extend(names(&running[1..]));
                    }
                }
            } else {
                plan.delete.extend(names(&running));
            }
        }
        let known: HashSet<&str> = self
            .nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        for (node, on) in &by_node {
            if !known.contains(node.as_str()) {
                plan.delete.extend(names(on));
            }
        }
        plan
    }

    /// One RollingUpdate step (upstream rollingUpdate), once `manage` has
    /// nothing left to do.
    pub fn rolling_update(&self) -> Result<Plan, Error> {
        let Some((surge, unavailable)) = rolling(self.ds) else {
            return Ok(Plan::default());
        };
        let spec = eligibility_spec(self.ds);
        let desired = self
            .nodes
            .iter()
            .filter(|n| node_fit::should_run(&spec, n).0)
            .count() as i32;
        let max_surge = deployment::scaled(&surge, desired, true)?;
        let mut max_unavailable = deployment::scaled(&unavailable, desired, true)?;
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        let gen = template_generation(self.ds);
        let mut by_node: Vec<(String, Vec<Arc<Pod>>)> = self.by_node().into_iter().collect();
        by_node.sort_by(|a, b| a.0.cmp(&b.0));
        let mut plan = Plan::default();
        let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
        if max_surge == 0 {
            let mut unavailable = 0;
            let (mut replace, mut candidates) = (vec![], vec![]);
            for (_, on) in &by_node {
                let (new, old): (Vec<_>, Vec<_>) =
                    on.iter().partition(|p| is_updated(p, self.hash, gen));
                if new.len() > 1 || old.len() > 1 {
                    unavailable += 1;
                    continue;
                }
                match (new.first(), old.first()) {
                    (None, None) | (Some(_), Some(_)) => unavailable += 1,
                    (Some(n), None) => {
                        if !self.available(n) {
                            unavailable += 1;
                        }
                    }
                    (None, Some(o)) => {
                        if !self.available(o) {
                            replace.push(name(o));
                        } else if unavailable < max_unavailable {
                            candidates.push(name(o));
                        }
                    }
                }
            }
            let room = (max_unavailable - unavailable).max(0) as usize;
            candidates.truncate(room);
            plan.delete = replace;
            plan.delete.extend(candidates);
        } else {
            let mut surging = 0;
            let (mut allowed, mut candidates) = (vec![], vec![]);
            for (node, on) in &by_node {
                let (new, old): (Vec<_>, Vec<_>) =
                    on.iter().partition(|p| is_updated(p, self.hash, gen));
                if new.len() > 1 || old.len() > 1 {
                    surging += 1;
                    continue;
                }
                match (new.first(), old.first()) {
                    (_, None) => {}
                    (None, Some(o)) => {
                        if !self.available(o) {
                            allowed.push(node.clone());
                        } else if surging < max_surge {
                            candidates.push(node.clone());
                        }
                    }
                    (Some(n), Some(o)) => {
                        if self.available(n) {
                            plan.delete.push(name(o));
                        } else {
                            surging += 1;
                        }
                    }
                }
            }
            candidates.truncate((max_surge - surging).max(0) as usize);
            plan.create = allowed;
            plan.create.extend(candidates);
        }
        Ok(plan)
    }

    /// Upstream updateDaemonSetStatus, and when to look again for a pod that
    /// becomes available by minReadySeconds alone.
    pub fn status(&self) -> (DaemonSetStatus, Option<Duration>) {
        let spec = eligibility_spec(self.ds);
        let by_node = self.by_node();
        let gen = template_generation(self.ds);
        let (mut desired, mut current, mut mis, mut ready, mut available, mut updated) =
            (0, 0, 0, 0, 0, 0);
        let mut recheck: Option<i64> = None;
        for node in self.nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let (run, _) = node_fit::should_run(&spec, node);
            let first = by_node.get(&name).and_then(|v| v.first());
            match (run, first) {
                (true, Some(p)) => {
                    desired += 1;
                    current += 1;
                    if pods::is_ready(p) {
                        ready += 1;
                        if self.available(p) {
                            available += 1;
                        } else if let Some(Some(t)) = pods::ready_since(p) {
                            let left = self.min_ready() - (self.now.as_second() - t.as_second());
                            recheck = Some(recheck.map_or(left, |r| r.min(left)));
                        }
                    }
                    if is_updated(p, self.hash, gen) {
                        updated += 1;
                    }
                }
                (true, None) => desired += 1,
                (false, Some(_)) => mis += 1,
                (false, None) => {}
            }
        }
        let old = self.ds.status.clone().unwrap_or_default();
        (
            DaemonSetStatus {
                collision_count: old.collision_count,
                conditions: old.conditions,
                current_number_scheduled: current,
                desired_number_scheduled: desired,
                number_available: Some(available),
                number_misscheduled: mis,
                number_ready: ready,
                number_unavailable: Some(desired - available),
                observed_generation: self.ds.metadata.generation,
                updated_number_scheduled: Some(updated),
            },
            recheck
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s as u64)),
        )
    }
}

fn is_zero(v: &IntOrString) -> bool {
    matches!(v, IntOrString::Int(0)) || matches!(v, IntOrString::String(s) if s == "0%" || s == "0")
}

/// (maxSurge, maxUnavailable) when the strategy is RollingUpdate.
fn rolling(ds: &DaemonSet) -> Option<(IntOrString, IntOrString)> {
    let s = ds.spec.as_ref()?.update_strategy.as_ref();
    if s.and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        != "RollingUpdate"
    {
        return None;
    }
    let ru = s.and_then(|s| s.rolling_update.as_ref());
    Some((
        ru.and_then(|r| r.max_surge.clone())
            .unwrap_or(IntOrString::Int(0)),
        ru.and_then(|r| r.max_unavailable.clone())
            .unwrap_or(IntOrString::Int(1)),
    ))
}

// ---- reconcile -----------------------------------------------------------

pub async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = ObjectKey::of(&*ds);
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let selector = ds
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let pod_api = Api::<Pod>::namespaced(ctx.client.clone(), &ns);
    let cr_api = Api::<ControllerRevision>::namespaced(ctx.client.clone(), &ns);
    let ds_api = Api::<DaemonSet>::namespaced(ctx.client.clone(), &ns);
    let in_ns = |m: &ObjectMeta| m.namespace.as_deref() == Some(ns.as_str());

    // Revisions first: the hash names what an up-to-date pod is.
    let revisions = owners::claim_and_write(
        &cr_api,
        &*ds,
        &selector,
        false,
        ctx.revisions.filter(|r| in_ns(&r.metadata)),
    )
    .await?;
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    let cur = match history::current(&cr_api, &*ds, &template(&ds), &revisions, collisions).await? {
        Current::Found(cr) => *cr,
        Current::Collision => {
            let mut new = (*ds).clone();
            let status = new.status.get_or_insert_with(Default::default);
            status.collision_count = Some(collisions.unwrap_or(0) + 1);
            ds_api
                .replace_status(&new, &owners::post_params())
                .await
                .map_err(Error::api("bumping collisionCount of", key.to_string()))?;
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
    };
    let hash = history::hash_of(&cur);

    let owned = owners::claim_and_write(
        &pod_api,
        &*ds,
        &selector,
        false,
        ctx.pods.filter(|p| in_ns(&p.metadata)),
    )
    .await?;
    let live: Vec<Arc<Pod>> = owned
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    let nodes = ctx.nodes.state();
    let view = View {
        ds: &ds,
        hash: &hash,
        nodes: &nodes,
        pods: &live,
        now: pods::now(),
    };

    let mut action = Action::await_change();
    if ctx.expectations.satisfied(&key, &ctx.pods) {
        let mut plan = view.manage();
        if plan.create.is_empty() && plan.delete.is_empty() {
            plan = view.rolling_update()?;
        }
        if !plan.create.is_empty() || !plan.delete.is_empty() {
            sync_nodes(&ds, &key, &hash, &plan, &pod_api, &ctx).await?;
        }
    }

    // History beyond the limit that no live pod uses goes.
    let limit = ds
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10);
    let used: HashSet<String> = owned
        .iter()
        .filter_map(|p| p.metadata.labels.as_ref()?.get(HASH_LABEL).cloned())
        .collect();
    let cur_name = cur.metadata.name.clone().unwrap_or_default();
    for r in history::to_prune(
        &revisions,
        &[&cur_name],
        |r| used.contains(&history::hash_of(r)),
        limit,
    ) {
        history::delete(&cr_api, r).await?;
    }

    let (status, recheck) = view.status();
    if ds.status.as_ref() != Some(&status) {
        let mut new = (*ds).clone();
        new.status = Some(status);
        ds_api
            .replace_status(&new, &owners::post_params())
            .await
            .map_err(Error::api("updating status of", key.to_string()))?;
    }
    if let Some(d) = recheck {
        action = Action::requeue(d);
    }
    Ok(action)
}

/// Deletes the pods `plan` names, then creates the others (slow-start
/// batches, at most BURST each), recording both as expectations. Deleting
/// first keeps a surge within its budget: the old pod of a node whose new
/// one is available goes before the next node's new pod comes.
async fn sync_nodes(
    ds: &DaemonSet,
    key: &ObjectKey,
    hash: &str,
    plan: &Plan,
    api: &Api<Pod>,
    ctx: &Ctx,
) -> Result<(), Error> {
    let me = || object_ref(ds);
    let ns = ds.metadata.namespace.as_deref().unwrap_or_default();
    for (pod, node) in &plan.failed {
        ctx.recorder.event(
            me(),
            EventType::Warning,
            "FailedDaemonPod",
            format!("Found failed daemon pod {ns}/{pod} on node {node}, will try to kill it"),
        );
    }
    let mut deleted = Vec::new();
    for name in plan.delete.iter().take(BURST) {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.recorder.event(
                    me(),
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                );
                deleted.push(name.clone())
            }
            Err(e) if e.code() == 404 => deleted.push(name.clone()),
            Err(e) => {
                ctx.recorder.event(
                    me(),
                    EventType::Warning,
                    "FailedDelete",
                    format!("Error deleting: {}", e.message),
                );
                ctx.expectations.expect(key, vec![], deleted);
                return Err(Error::api("deleting daemon pod", name.clone())(e));
            }
        }
    }
    let create: Vec<&String> = plan.create.iter().take(BURST).collect();
    let mut created = Vec::new();
    let mut err = None;
    let mut next = 0;
    for batch in slow_start_batches(create.len()) {
        let mut set = tokio::task::JoinSet::new();
        for node in &create[next..next + batch] {
            let (api, pod) = (api.clone(), pod_for(ds, node, hash));
            set.spawn(async move { api.create(&pod, &owners::post_params()).await });
        }
        next += batch;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(p)) => {
                    let name = p.metadata.name.unwrap_or_default();
                    ctx.recorder.event(
                        me(),
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                    );
                    created.push(name)
                }
                Ok(Err(e)) => {
                    ctx.recorder.event(
                        me(),
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {}", e.message),
                    );
                    err = Some(Error::api("creating daemon pod for", key.to_string())(e))
                }
                Err(e) => err = Some(Error::Invalid(format!("pod create task failed: {e}"))),
            }
        }
        if err.is_some() {
            break;
        }
    }
    tracing::info!(daemonset = %key, created = created.len(), deleted = deleted.len(), "synced nodes");
    ctx.expectations.expect(key, created, deleted);
    err.map_or(Ok(()), Err)
}

/// What about a node decides where daemon pods run: name, labels, taints
/// and unschedulable. Heartbeats change none of it.
fn placement_of(node: &Node) -> String {
    let spec = node.spec.as_ref();
    serde_json::to_string(&(
        &node.metadata.labels,
        spec.and_then(|s| s.taints.as_ref()),
        spec.and_then(|s| s.unschedulable),
    ))
    .unwrap_or_default()
}

/// Maps node changes to DaemonSets to reconcile: every one of them when a
/// node appears, goes, or changes its placement; none for a status-only
/// change (upstream shouldIgnoreNodeUpdate), so heartbeats of many nodes do
/// not rescan every set.
pub struct NodeChanges {
    sets: Store<DaemonSet>,
    nodes: Store<Node>,
    seen: std::sync::Mutex<HashMap<String, String>>,
}

impl NodeChanges {
    pub fn new(sets: Store<DaemonSet>, nodes: Store<Node>) -> Self {
        Self {
            sets,
            nodes,
            seen: Default::default(),
        }
    }

    pub fn map(&self, node: &Node) -> Vec<ObjectKey> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // The cache is written before subscribers hear: gone from it, deleted.
        let changed = if self.nodes.get(&ObjectKey::new(None, &name)).is_none() {
            seen.remove(&name);
            true
        } else {
            let now = placement_of(node);
            seen.insert(name, now.clone()).as_ref() != Some(&now)
        };
        if !changed {
            return vec![];
        }
        self.sets
            .state()
            .iter()
            .map(|d| ObjectKey::of(&**d))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;

    fn ds(strategy: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "ns", "uid": "u",
                "annotations": {TEMPLATE_GENERATION: "2"}},
            "spec": {
                "selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "c"}]}},
                "updateStrategy": strategy,
            },
        }))
        .unwrap()
    }

    fn node(name: &str) -> Arc<Node> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name}})).unwrap())
    }

    /// A pod on `node` at template generation `gen`, ready or not.
    fn pod(name: &str, node: &str, gen: i64, ready: bool, phase: &str) -> Arc<Pod> {
        let d = ds(json!(null));
        let mut p = pod_for(&d, node, "h");
        p.metadata.name = Some(name.into());
        let labels = p.metadata.labels.as_mut().unwrap();
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), gen.to_string());
        labels.insert(HASH_LABEL.into(), format!("h{gen}"));
        p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(gen * 10).unwrap()));
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        Arc::new(p)
    }

    fn view<'a>(d: &'a DaemonSet, nodes: &'a [Arc<Node>], pods: &'a [Arc<Pod>]) -> View<'a> {
        View {
            ds: d,
            hash: "h2",
            nodes,
            pods,
            now: Timestamp::from_second(1000).unwrap(),
        }
    }

    #[test]
    fn daemon_pod_is_pinned_and_tolerant() {
        let mut d = ds(json!(null));
        d.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .host_network = Some(true);
        let p = pod_for(&d, "n1", "abc");
        assert_eq!(target_node(&p).as_deref(), Some("n1"));
        let l = p.metadata.labels.as_ref().unwrap();
        assert_eq!(l[HASH_LABEL], "abc");
        assert_eq!(l[TEMPLATE_GENERATION_LABEL], "2");
        let keys: Vec<_> = p
            .spec
            .as_ref()
            .unwrap()
            .tolerations
            .iter()
            .flatten()
            .filter_map(|t| t.key.clone())
            .collect();
        assert_eq!(keys.len(), 7, "{keys:?}");
        assert!(keys.contains(&"node.kubernetes.io/network-unavailable".to_string()));
    }

    #[test]
    fn manage_creates_missing_and_deletes_failed_extra_and_orphaned() {
        let d = ds(json!({"type": "RollingUpdate"}));
        let nodes = [node("a"), node("b"), node("c")];
        let pods = [
            pod("on-a", "a", 2, true, "Running"),
            pod("failed-b", "b", 2, false, "Failed"),
            pod("old-c", "c", 1, true, "Running"),
            pod("new-c", "c", 2, true, "Running"),
            pod("gone", "x", 2, true, "Running"),
        ];
        let mut plan = view(&d, &nodes, &pods).manage();
        plan.delete.sort();
        // b's only pod failed: replaced; c keeps its oldest; x is no node.
        assert_eq!(plan.create, ["b"]);
        assert_eq!(plan.delete, ["failed-b", "gone", "new-c"]);
        // The failed one is told (FailedDaemonPod) with its node.
        assert_eq!(plan.failed, [("failed-b".to_string(), "b".to_string())]);
    }

    #[test]
    fn rolling_update_spends_max_unavailable() {
        let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}));
        let nodes = [node("a"), node("b"), node("c")];
        let pods = [
            pod("a1", "a", 1, true, "Running"),
            pod("b1", "b", 1, true, "Running"),
            pod("c1", "c", 1, true, "Running"),
        ];
        assert_eq!(
            view(&d, &nodes, &pods).rolling_update().unwrap().delete,
            ["a1"]
        );
        // One node already down (new pod not ready): no more budget, but an
        // old pod that is not available is always replaced.
        let pods = [
            pod("a2", "a", 2, false, "Running"),
            pod("b1", "b", 1, true, "Running"),
            pod("c1", "c", 1, false, "Running"),
        ];
        assert_eq!(
            view(&d, &nodes, &pods).rolling_update().unwrap().delete,
            ["c1"]
        );
        let on_delete = ds(json!({"type": "OnDelete"}));
        assert_eq!(
            view(&on_delete, &nodes, &pods).rolling_update().unwrap(),
            Plan::default()
        );
    }

    #[test]
    fn rolling_update_surges_new_pods_first() {
        let d = ds(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}));
        let nodes = [node("a"), node("b"), node("c")];
        let pods = [
            pod("a1", "a", 1, true, "Running"),
            pod("b1", "b", 1, true, "Running"),
            pod("c1", "c", 1, true, "Running"),
        ];
        let plan = view(&d, &nodes, &pods).rolling_update().unwrap();
        assert_eq!((plan.create, plan.delete), (vec!["a".to_string()], vec![]));
        // a's new pod is up: its old one goes, and the surge moves on.
        let pods = [
            pod("a1", "a", 1, true, "Running"),
            pod("a2", "a", 2, true, "Running"),
            pod("b1", "b", 1, true, "Running"),
            pod("c1", "c", 1, true, "Running"),
        ];
        let plan = view(&d, &nodes, &pods).rolling_update().unwrap();
        assert_eq!(plan.delete, ["a1"]);
        assert_eq!(plan.create, ["b"]);
        // Surged but not ready yet: wait.
        let pods = [
            pod("a1", "a", 1, true, "Running"),
            pod("a2", "a", 2, false, "Running"),
            pod("b1", "b", 1, true, "Running"),
        ];
        assert_eq!(
            view(&d, &nodes, &pods).rolling_update().unwrap(),
            Plan::default()
        );
    }

    #[test]
    fn only_placement_changes_of_nodes_wake_the_sets() {
        let (sets, mut sets_w) = balsa_api::client::reflector::store::<DaemonSet>();
        let (nodes, mut nodes_w) = balsa_api::client::reflector::store::<Node>();
        use balsa_api::client::Event;
        sets_w.apply(&Event::Apply(ds(json!(null))));
        let n = |labels: serde_json::Value, ready: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "a", "labels": labels},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}}))
            .unwrap()
        };
        let changes = NodeChanges::new(sets, nodes);
        let first = n(json!({"x": "1"}), "True");
        nodes_w.apply(&Event::Apply(first.clone()));
        assert_eq!(changes.map(&first).len(), 1, "a new node");
        let heartbeat = n(json!({"x": "1"}), "False");
        nodes_w.apply(&Event::Apply(heartbeat.clone()));
        assert!(changes.map(&heartbeat).is_empty(), "status only");
        let relabelled = n(json!({"x": "2"}), "False");
        nodes_w.apply(&Event::Apply(relabelled.clone()));
        assert_eq!(changes.map(&relabelled).len(), 1, "labels changed");
        nodes_w.apply(&Event::Delete(relabelled.clone()));
        assert_eq!(changes.map(&relabelled).len(), 1, "deleted");
    }

    #[test]
    fn status_counts_like_upstream() {
        let d = ds(json!(null));
        let nodes = [node("a"), node("b"), node("c")];
        let pods = [
            pod("a2", "a", 2, true, "Running"),
            pod("b1", "b", 1, false, "Running"),
            pod("x", "elsewhere", 2, true, "Running"),
        ];
        let (s, _) = view(&d, &nodes, &pods).status();
        assert_eq!(s.desired_number_scheduled, 3);
        assert_eq!(s.current_number_scheduled, 2);
        assert_eq!(s.number_ready, 1);
        assert_eq!(s.number_available, Some(1));
        assert_eq!(s.number_unavailable, Some(2));
        assert_eq!(s.updated_number_scheduled, Some(1));
        assert_eq!(s.number_misscheduled, 0);
    }
}
