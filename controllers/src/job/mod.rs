//! The Job controller: runs a Job's pods to `completions` successes (or one,
//! for a work queue), `parallelism` at a time, and finishes it Complete or
//! Failed, with the status `kubectl get jobs` and `kubectl wait` read.
//!
//! ```text
//!  job, pods in its namespace (cache)
//!    └─ claim: owned / adopt (+ tracking finalizer)
//!    └─ finished pods with the tracking finalizer are new: count them
//!    └─ spec.managedBy another controller? leave the job alone
//!    └─ finish?  SuccessCriteriaMet(CompletionsReached, SuccessPolicy) |
//!    │           FailureTarget(PodFailurePolicy, BackoffLimitExceeded,
//!    │           DeadlineExceeded, FailedIndexes, ...)  → delete active pods
//!    └─ else manage: suspended → delete active; too many → delete;
//!    │           too few → create (after the pod-failure backoff), Indexed
//!    │           pods take the first missing indexes
//!    └─ status, in order (nothing is counted twice or lost):
//!         1. new finished pod uids into status.uncountedTerminatedPods
//!         2. their tracking finalizers removed
//!         3. uids whose finalizer is gone move into succeeded / failed
//!         4. Complete / Failed once nothing is uncounted or terminating
//! ```
//!
//! Pods carry the `batch.kubernetes.io/job-tracking` finalizer until the job
//! has counted them, so a pod deleted early (by a user, pod GC or the
//! garbage collector) is still counted; `orphans` removes it from pods
//! whose job is gone or finished. Status writes carry the job's
//! resourceVersion: a reconcile on a stale cache fails and retries rather
//! than counting from old numbers.

pub mod indexes;
pub mod orphans;
pub mod per_index;
pub mod policy;
pub mod success;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balsa_api::client::events::{object_ref, EventType, Recorder};
use balsa_api::client::{Action, Api, Client, DeleteParams, ObjectKey, Patch, PatchParams, Store};
use balsa_api::clock::Clock;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use self::indexes::{Intervals, COMPLETION_INDEX};
use self::policy::Backoff;
use crate::own_writes::OwnWrites;
use crate::owners::{self, MANAGER};
use crate::replicaset::{self, Expectations};
use crate::{pods, Error};

/// Held on every pod a Job creates until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The `spec.managedBy` of the Jobs this controller syncs (or none).
pub const JOB_CONTROLLER: &str = "kubernetes.io/job-controller";
/// The env var an Indexed Job's containers read their index from.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Pods counted into `uncountedTerminatedPods` per reconcile (upstream's
/// MaxUncountedPods): keeps the status small and one big job from starving
/// others.
const MAX_UNCOUNTED: usize = 500;
/// Pods created or deleted per reconcile (upstream MaxPodCreateDeletePerSync).
const BURST: usize = replicaset::BURST;
/// The longest generateName prefix that leaves room for the random suffix.
const MAX_GENERATE_NAME: usize = 58;

pub struct Ctx {
    pub client: Client,
    pub pods: Store<Pod>,
    pub clock: Clock,
    /// The pod-failure backoff: first delay and the most it doubles to.
    pub backoff: (Duration, Duration),
    /// Records as `job-controller`.
    pub recorder: Recorder,
    expectations: Expectations,
    writes: OwnWrites,
    /// Per job, pod uids whose finalizer this controller removed and the
    /// cache may not show yet.
    removed: Mutex<HashMap<ObjectKey, HashSet<String>>>,
    backoffs: Mutex<HashMap<ObjectKey, Backoff>>,
}

impl Ctx {
    pub fn expectations(&self) -> &Expectations {
        &self.expectations
    }

    pub fn new(
        client: Client,
        pods: Store<Pod>,
        clock: Clock,
        backoff: (Duration, Duration),
        recorder: Recorder,
    ) -> Self {
        Self {
            client,
            pods,
            clock,
            backoff,
            recorder,
            expectations: Expectations::default(),
            writes: OwnWrites::default(),
            removed: Mutex::default(),
            backoffs: Mutex::default(),
        }
    }

    /// The removals the cache does not show yet (forgetting those it does).
    fn pending_removals(&self, key: &ObjectKey, owned: &[Arc<Pod>]) -> HashSet<String> {
        let mut map = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        let Some(set) = map.get_mut(key) else {
            return HashSet::new();
        };
        let still: HashSet<&str> = owned
            .iter()
            .filter(|p| has_finalizer(p))
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        set.retain(|uid| still.contains(uid.as_str()));
        let out = set.clone();
        if set.is_empty() {
            map.remove(key);
        }
        out
    }

    fn removed_now(&self, key: &ObjectKey, uids: impl IntoIterator<Item = String>) {
        let mut map = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone()).or_default().extend(uids);
    }

    fn backoff_of(&self, key: &ObjectKey) -> Backoff {
        let map = self.backoffs.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).copied().unwrap_or_default()
    }

    fn set_backoff(&self, key: &ObjectKey, b: Backoff) {
        let mut map = self.backoffs.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key.clone(), b);
    }

    fn forget(&self, key: &ObjectKey) {
        let mut map = self.backoffs.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

// ---- pure decisions ----------------------------------------------------

pub fn has_finalizer(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

/// The other controller a Job names in `spec.managedBy`, if any: such a Job
/// (and its pods) is that controller's alone.
pub fn managed_elsewhere(job: &Job) -> Option<&str> {
    let by = job.spec.as_ref()?.managed_by.as_deref()?;
    (by != JOB_CONTROLLER).then_some(by)
}

fn condition<'a>(status: &'a JobStatus, ty: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == ty && c.status == "True")
}

/// `Complete` or `Failed`, if the job has finished.
pub fn finished(job: &Job) -> Option<&'static str> {
    let status = job.status.as_ref()?;
    if condition(status, "Complete").is_some() {
        Some("Complete")
    } else if condition(status, "Failed").is_some() {
        Some("Failed")
    } else {
        None
    }
}

fn new_condition(ty: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: ty.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets the condition of `ty` (upstream ensureJobConditionStatus): a new
/// one only if `status` is not False; true if anything changed.
fn ensure_condition(
    list: &mut Vec<JobCondition>,
    ty: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let mut c = new_condition(ty, reason, message, now);
    c.status = status.into();
    if let Some(old) = list.iter_mut().find(|c| c.type_ == ty) {
        let same = old.status == status
            && old.reason.as_deref() == Some(reason)
            && old.message.as_deref() == Some(message);
        if same {
            return false;
        }
        *old = c;
        return true;
    }
    if status == "False" {
        return false;
    }
    list.push(c);
    true
}

fn suspended(spec: &JobSpec) -> bool {
    spec.suspend == Some(true)
}

fn indexed(spec: &JobSpec) -> bool {
    spec.completion_mode.as_deref() == Some("Indexed")
}

/// How many pods should be running (upstream manageJob's wantActive).
pub fn want_active(spec: &JobSpec, active: i32, succeeded: i32) -> i32 {
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    match spec.completions {
        None if succeeded > 0 => active,
        None => parallelism,
        Some(c) => (c - succeeded).clamp(0, parallelism),
    }
}

/// restartPolicy OnFailure: the running pods' restarts reached backoffLimit.
fn past_backoff_limit_on_failure(spec: &JobSpec, owned: &[Arc<Pod>]) -> bool {
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i32 = owned
        .iter()
        .filter(|p| matches!(pods::phase(p), "Running" | "Pending"))
        .map(|p| {
            let s = p.status.as_ref();
            let sum = |cs: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
                cs.into_iter()
                    .flatten()
                    .map(|c| c.restart_count)
                    .sum::<i32>()
            };
            sum(s.and_then(|s| s.container_statuses.as_ref()))
                + sum(s.and_then(|s| s.init_container_statuses.as_ref()))
        })
        .sum();
    let limit = spec.backoff_limit.unwrap_or(6);
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// The active pods to delete: for an Indexed job first those without a
/// valid index and all but one per repeated index, then, up to
/// `at_least`, the least advanced (upstream activePodsForRemoval).
pub fn pods_for_removal(spec: &JobSpec, active: &[Arc<Pod>], at_least: usize) -> Vec<Arc<Pod>> {
    let mut rm: Vec<Arc<Pod>> = Vec::new();
    let mut left: Vec<Arc<Pod>> = Vec::new();
    if indexed(spec) {
        let completions = spec.completions.unwrap_or(0);
        let mut by_index: BTreeMap<u32, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in active {
            match indexes::valid(p, completions) {
                Some(i) => by_index.entry(i).or_default().push(p.clone()),
                None => rm.push(p.clone()),
            }
        }
        for (_, same) in by_index {
            // Keep the most advanced one: the last in deletion order.
            let mut order = replicaset::pods_to_delete(&same, same.len());
            if let Some(keep) = order.pop() {
                left.push(keep);
            }
            rm.extend(order);
        }
    } else {
        left = active.to_vec();
    }
    if rm.len() < at_least {
        let more = replicaset::pods_to_delete(&left, at_least - rm.len());
        rm.extend(more);
    }
    rm
}

fn truncated_prefix(job: &str, suffix: &str) -> String {
    let keep = MAX_GENERATE_NAME.saturating_sub(suffix.len());
    let mut base: String = job.chars().take(keep).collect();
    base.push_str(suffix);
    base
}

/// A pod from the job's template: the tracking finalizer, the controller
/// reference, and for an Indexed job its index (annotation, label,
/// `JOB_COMPLETION_INDEX` from the label, hostname `<job>-<index>`).
pub fn pod_for(job: &Job, index: Option<u32>) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let t = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tm = t.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    let mut finalizers = tm.finalizers.unwrap_or_default();
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.into());
    }
    let mut spec = t.spec.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            annotations.insert(COMPLETION_INDEX.into(), i.to_string());
            labels.insert(COMPLETION_INDEX.into(), i.to_string());
            spec.hostname = Some(format!("{name}-{i}"));
            let env = EnvVar {
                name: COMPLETION_INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.labels['{COMPLETION_INDEX}']"),
                        api_version: None,
                    }),
                    ..Default::default()
                }),
            };
            let containers = spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten());
            for c in containers {
                let vars = c.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
                    vars.push(env.clone());
                }
            }
            truncated_prefix(&name, &format!("-{i}-"))
        }
        None => truncated_prefix(&name, "-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![owners::controller_ref(job)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn name_of(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// Moves uids whose finalizer is gone (not in `with_finalizer`) from the
/// uncounted lists into the counters; true if anything moved.
fn count_uncounted(status: &mut JobStatus, with_finalizer: &HashSet<String>) -> bool {
    let u = status
        .uncounted_terminated_pods
        .get_or_insert_with(UncountedTerminatedPods::default);
    let mut changed = false;
    for (list, counter) in [
        (&mut u.succeeded, &mut status.succeeded),
        (&mut u.failed, &mut status.failed),
    ] {
        let Some(uids) = list.as_mut() else { continue };
        let before = uids.len();
        uids.retain(|uid| with_finalizer.contains(uid));
        let moved = before - uids.len();
        if moved > 0 {
            changed = true;
            *counter = Some(counter.unwrap_or(0) + moved as i32);
        }
        if uids.is_empty() {
            *list = None;
        }
    }
    changed
}

fn omit_zero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

// ---- reconcile ---------------------------------------------------------

/// What one reconcile saw of the job's pods.
struct Seen {
    owned: Vec<Arc<Pod>>,
    active: Vec<Arc<Pod>>,
    /// Uids of pods whose finalizer removal the cache does not show yet.
    removing: HashSet<String>,
    only_failed: bool,
    indexed: bool,
    completions: i32,
}

impl Seen {
    /// A pod this job still has to count: it has the finalizer, it is not
    /// being released by this controller, and (Indexed) has a valid index.
    fn tracked(&self, p: &Pod) -> bool {
        has_finalizer(p)
            && !self.removing.contains(&uid(p))
            && (!self.indexed || indexes::valid(p, self.completions).is_some())
    }
}

pub async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = ObjectKey::of(&*job);
    if let Some(other) = managed_elsewhere(&job) {
        tracing::debug!(job = %key, controller = other, "managed by another controller: not synced");
        return Ok(Action::await_change());
    }
    if finished(&job).is_some() {
        ctx.forget(&key);
        return Ok(Action::await_change());
    }
    if !ctx.writes.caught_up(&*job) {
        // Our last status write is on its way to the cache.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let Some(spec) = job.spec.clone() else {
        return Ok(Action::await_change());
    };
    let mode = spec.completion_mode.as_deref().unwrap_or("NonIndexed");
    if !matches!(mode, "NonIndexed" | "Indexed") || (indexed(&spec) && spec.completions.is_none()) {
        tracing::warn!(job = %key, mode, "unknown completion mode or Indexed without completions: not synced");
        return Ok(Action::await_change());
    }
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let pod_api = Api::<Pod>::namespaced(ctx.client.clone(), &ns);
    let now = ctx.clock.now_to_second();

    // Expectations before the pods: a pod created after this check is
    // simply seen on the next reconcile.
    let satisfied = ctx.expectations.satisfied(&key, &ctx.pods);
    let owned = claim(&job, &ctx, &pod_api).await?;
    let removing = ctx.pending_removals(&key, &owned);
    let seen = Seen {
        active: owned
            .iter()
            .filter(|p| pods::is_active(p))
            .cloned()
            .collect(),
        owned,
        removing,
        only_failed: policy::only_replace_failed(&spec),
        indexed: indexed(&spec),
        completions: spec.completions.unwrap_or(0),
    };

    let old_status = job.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let unc_succeeded: HashSet<String> = uncounted
        .succeeded
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let unc_failed: HashSet<String> = uncounted
        .failed
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    status.uncounted_terminated_pods = Some(uncounted);

    let new_succeeded: Vec<&Pod> = seen
        .owned
        .iter()
        .map(|p| &**p)
        .filter(|p| {
            seen.tracked(p) && !unc_succeeded.contains(&uid(p)) && pods::phase(p) == "Succeeded"
        })
        .collect();
    let new_failed: Vec<&Pod> = seen
        .owned
        .iter()
        .map(|p| &**p)
        .filter(|p| {
            seen.tracked(p)
                && !unc_failed.contains(&uid(p))
                && policy::is_failed(p, seen.only_failed)
        })
        .collect();
    let counted_new_failed = new_failed
        .iter()
        .filter(|p| policy::judge(spec.pod_failure_policy.as_ref(), p).counts)
        .count();
    // backoffLimitPerIndex: the indexes failed so far, with those the
    // failed pods not yet counted fail.
    let per_index = seen.indexed && per_index::enabled(&spec);
    let failed_indexes = if per_index {
        per_index::failed_indexes(
            &spec,
            status.failed_indexes.as_deref().unwrap_or_default(),
            seen.owned
                .iter()
                .map(|p| &**p)
                .filter(|p| has_finalizer(p) && policy::is_failed(p, seen.only_failed)),
        )
    } else {
        Intervals::default()
    };
    let mut succeeded =
        status.succeeded.unwrap_or(0) + (new_succeeded.len() + unc_succeeded.len()) as i32;
    let failed = status.failed.unwrap_or(0) + (counted_new_failed + unc_failed.len()) as i32;

    if status.start_time.is_none() && !suspended(&spec) {
        status.start_time = Some(Time(now));
    }
    let backoff = ctx.backoff_of(&key).after(&new_succeeded, &new_failed);

    let mut requeue: Option<Duration> = None;
    let mut soonest = |d: Duration| {
        let d = d.max(Duration::from_millis(100));
        requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));
    };

    // Whether the job is done, and how.
    let mut done: Option<JobCondition> = None;
    if let Some(c) = condition(&status, "SuccessCriteriaMet") {
        done = Some(c.clone());
    } else if let Some(c) = condition(&status, "FailureTarget") {
        done = Some(new_condition(
            "Failed",
            c.reason.as_deref().unwrap_or_default(),
            c.message.as_deref().unwrap_or_default(),
            now,
        ));
    } else if let Some(msg) = seen
        .owned
        .iter()
        .filter(|p| policy::is_failed(p, seen.only_failed))
        .find_map(|p| policy::judge(spec.pod_failure_policy.as_ref(), p).fail_job)
    {
        done = Some(new_condition(
            "FailureTarget",
            "PodFailurePolicy",
            &msg,
            now,
        ));
    }
    if done.is_none() {
        let limit = spec.backoff_limit.unwrap_or(6);
        let deadline = spec.active_deadline_seconds.filter(|_| !suspended(&spec));
        let elapsed = status
            .start_time
            .as_ref()
            .map(|s| now.as_second() - s.0.as_second());
        if failed > limit || past_backoff_limit_on_failure(&spec, &seen.owned) {
            done = Some(new_condition(
                "FailureTarget",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                now,
            ));
        } else if let (Some(dl), Some(el)) = (deadline, elapsed) {
            if el >= dl {
                done = Some(new_condition(
                    "FailureTarget",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                    now,
                ));
            } else {
                soonest(Duration::from_secs((dl - el) as u64));
            }
        }
    }

    let (prev_indexes, mut done_indexes) = if seen.indexed {
        let prev = Intervals::parse(
            status.completed_indexes.as_deref().unwrap_or_default(),
            seen.completions,
        );
        let new = seen
            .owned
            .iter()
            .filter(|p| has_finalizer(p) && pods::phase(p) == "Succeeded")
            .filter_map(|p| indexes::valid(p, seen.completions));
        let all = prev.with(new);
        succeeded = all.total() as i32;
        (prev, all)
    } else {
        (Intervals::default(), Intervals::default())
    };
    if done.is_none() {
        if let Some((reason, message)) =
            per_index::job_failure(&spec, &done_indexes, &failed_indexes)
        {
            done = Some(new_condition("FailureTarget", reason, message, now));
        }
    }
    if done.is_none() && seen.indexed {
        let policy = spec.success_policy.as_ref();
        if let Some(message) = success::matched(policy, seen.completions, &done_indexes) {
            done = Some(new_condition(
                "SuccessCriteriaMet",
                success::REASON,
                &message,
                now,
            ));
        }
    }
    // backoffLimitPerIndex: the failed pods held until their replacement.
    let awaiting = if per_index {
        let running: BTreeSet<u32> = seen.active.iter().filter_map(|p| indexes::of(p)).collect();
        let failed = seen
            .owned
            .iter()
            .filter(|p| seen.tracked(p) && policy::is_failed(p, seen.only_failed))
            .cloned();
        per_index::awaiting_replacement(
            failed,
            seen.completions,
            &done_indexes.union(&failed_indexes),
            &running,
        )
    } else {
        BTreeMap::new()
    };

    let mut active = seen.active.len() as i32;
    let mut ready = seen.active.iter().filter(|p| pods::is_ready(p)).count() as i32;
    let mut terminating = seen.owned.iter().filter(|p| is_terminating(p)).count() as i32;
    let mut failure = None;
    if done.is_some() {
        // Finishing: stop what still runs (finalizers kept: they are
        // counted as failed below).
        let (deleted, deleted_ready, err) = delete_pods(&pod_api, &seen.active, false).await;
        if deleted != active || !satisfied {
            done = None;
        }
        active -= deleted;
        terminating += deleted;
        ready -= deleted_ready;
        failure = err;
    } else {
        let mut managed = false;
        if satisfied && job.metadata.deletion_timestamp.is_none() {
            // Failed indexes are settled too: no pod runs for them again.
            let m = manage(
                &job,
                &spec,
                &seen,
                &ctx,
                &pod_api,
                succeeded + failed_indexes.total() as i32,
                terminating,
                &done_indexes.union(&failed_indexes),
                Pacing {
                    backoff,
                    awaiting: &awaiting,
                    now,
                },
            )
            .await;
            active = m.active;
            ready -= m.deleted_ready;
            terminating += m.deleted;
            failure = m.error;
            if let Some(d) = m.requeue {
                soonest(d);
            }
            managed = true;
        }
        let complete = match spec.completions {
            None => succeeded > 0 && active == 0,
            Some(c) => succeeded >= c && active == 0,
        };
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        if complete {
            done = Some(new_condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ));
        } else if managed && suspended(&spec) {
            ensure_condition(
                conditions,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            );
        } else if managed
            && ensure_condition(
                conditions,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
                now,
            )
        {
            // activeDeadlineSeconds counts time active: it starts over.
            status.start_time = Some(Time(now));
        }
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
    if !satisfied {
        soonest(Duration::from_secs(5));
    }
    status.active = omit_zero(active);
    status.ready = Some(ready);
    status.terminating = Some(terminating);

    // ---- counting, in the order that loses nothing ----
    let mut owned_sorted: Vec<&Arc<Pod>> = seen.owned.iter().collect();
    if seen.indexed {
        owned_sorted.sort_by_key(|p| indexes::of(p));
    }
    let mut with_finalizer: HashSet<String> = seen
        .owned
        .iter()
        .filter(|p| has_finalizer(p) && !seen.removing.contains(&uid(p)))
        .map(|p| uid(p))
        .collect();
    count_uncounted(&mut status, &with_finalizer);
    let failing = done
        .as_ref()
        .is_some_and(|c| c.type_ != "SuccessCriteriaMet");
    let mut release: Vec<Arc<Pod>> = Vec::new();
    let mut new_indexes = Vec::new();
    let mut capped = false;
    {
        let u = status
            .uncounted_terminated_pods
            .get_or_insert_with(UncountedTerminatedPods::default);
        for p in owned_sorted {
            if !has_finalizer(p) || seen.removing.contains(&uid(p)) {
                continue;
            }
            let considered_failed = policy::is_failed(p, seen.only_failed);
            let held = indexes::of(p)
                .and_then(|i| awaiting.get(&i))
                .is_some_and(|h| uid(h) == uid(p));
            let removable = job.metadata.deletion_timestamp.is_some()
                || done.is_some()
                || pods::phase(p) == "Succeeded"
                || (considered_failed && !held);
            if !removable {
                continue;
            }
            release.push(p.clone());
            let id = uid(p);
            if pods::phase(p) == "Succeeded" && !unc_failed.contains(&id) {
                if seen.indexed {
                    if let Some(ix) =
                        indexes::valid(p, seen.completions).filter(|i| !prev_indexes.has(*i))
                    {
                        new_indexes.push(ix);
                    }
                } else if !unc_succeeded.contains(&id) {
                    u.succeeded.get_or_insert_with(Vec::new).push(id);
                }
            } else if (considered_failed || failing)
                && !unc_failed.contains(&id)
                && (!seen.indexed || indexes::valid(p, seen.completions).is_some())
                && policy::judge(spec.pod_failure_policy.as_ref(), p).counts
            {
                u.failed.get_or_insert_with(Vec::new).push(id);
            }
            let held = new_indexes.len()
                + u.succeeded.as_ref().map_or(0, Vec::len)
                + u.failed.as_ref().map_or(0, Vec::len);
            if held >= MAX_UNCOUNTED {
                capped = true;
                break;
            }
        }
    }
    if seen.indexed {
        done_indexes = done_indexes.with(new_indexes);
        status.succeeded = omit_zero(done_indexes.total() as i32);
        let s = done_indexes.to_string();
        status.completed_indexes = (!s.is_empty()).then_some(s);
    }
    if per_index {
        status.failed_indexes = Some(failed_indexes.to_string());
    }
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match done.as_ref().map(|c| c.type_.as_str()) {
        Some("FailureTarget") => {
            let c = done.take().unwrap_or_default();
            conditions.push(c.clone());
            done = Some(new_condition(
                "Failed",
                c.reason.as_deref().unwrap_or_default(),
                c.message.as_deref().unwrap_or_default(),
                now,
            ));
        }
        Some("SuccessCriteriaMet") => {
            let c = done.take().unwrap_or_default();
            if !conditions.iter().any(|x| x.type_ == "SuccessCriteriaMet") {
                conditions.push(c.clone());
            }
            done = Some(new_condition(
                "Complete",
                c.reason.as_deref().unwrap_or_default(),
                c.message.as_deref().unwrap_or_default(),
                now,
            ));
        }
        _ => {}
    }
    if conditions.is_empty() {
        status.conditions = None;
    }

    // 1. Write what is about to be uncounted, before any finalizer goes.
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &ns);
    let mut current = (*job).clone();
    if status != old_status {
        current = write_status(&jobs, &current, &status).await?;
        ctx.writes.wrote(&current);
        ctx.set_backoff(&key, backoff);
    }
    // 2. Release the counted pods.
    let (released, rm_err) = remove_finalizers(&pod_api, &release).await;
    for id in &released {
        with_finalizer.remove(id);
    }
    ctx.removed_now(&key, released);
    // 3. Count them; 4. finish once nothing is left uncounted or running.
    let moved = count_uncounted(&mut status, &with_finalizer);
    if let Some(e) = rm_err {
        if moved {
            let written = write_status(&jobs, &current, &status).await?;
            ctx.writes.wrote(&written);
        }
        return Err(e);
    }
    let mut finishing = false;
    if let Some(c) = done.as_ref().filter(|_| !capped) {
        let u = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let nothing_uncounted =
            u.succeeded.is_none_or(|v| v.is_empty()) && u.failed.is_none_or(|v| v.is_empty());
        if nothing_uncounted && terminating == 0 {
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            let reason = c.reason.clone().unwrap_or_default();
            let message = c.message.clone().unwrap_or_default();
            ensure_condition(conditions, &c.type_, "True", &reason, &message, now);
            if c.type_ == "Complete" {
                status.completion_time = Some(Time(now));
            }
            finishing = true;
        }
    }
    if moved || finishing {
        let written = write_status(&jobs, &current, &status).await?;
        ctx.writes.wrote(&written);
    }
    if let Some(c) = done.as_ref().filter(|_| finishing) {
        // Upstream's words: "Completed" / "Job completed", or the failure's
        // reason and message (BackoffLimitExceeded, DeadlineExceeded, ...).
        if c.type_ == "Complete" {
            ctx.recorder.event(
                object_ref(&current),
                EventType::Normal,
                "Completed",
                "Job completed",
            );
        } else {
            ctx.recorder.event(
                object_ref(&current),
                EventType::Warning,
                c.reason.as_deref().unwrap_or("Failed"),
                c.message.clone().unwrap_or_default(),
            );
        }
    }
    if finishing {
        tracing::info!(job = %key, condition = %done.as_ref().map(|c| c.type_.as_str()).unwrap_or_default(),
            succeeded = status.succeeded.unwrap_or(0), failed = status.failed.unwrap_or(0), "job finished");
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

fn is_terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some() && !matches!(pods::phase(p), "Succeeded" | "Failed")
}

async fn write_status(jobs: &Api<Job>, current: &Job, status: &JobStatus) -> Result<Job, Error> {
    let mut new = current.clone();
    new.status = Some(status.clone());
    let name = current.metadata.name.clone().unwrap_or_default();
    jobs.replace_status(&new, &owners::post_params())
        .await
        .map_err(Error::api("updating status of job", name))
}

/// The job's pods: those it controls and selects, and those it adopts
/// (selected, no controller), which get the tracking finalizer too.
async fn claim(job: &Job, ctx: &Ctx, pod_api: &Api<Pod>) -> Result<Vec<Arc<Pod>>, Error> {
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let selector = job
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let in_ns = ctx
        .pods
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()));
    let deleting = job.metadata.deletion_timestamp.is_some() || finished(job).is_some();
    let claim = owners::claim(&uid, &selector, deleting, in_ns);
    let mut owned = claim.owned;
    for p in &claim.release {
        owners::release(pod_api, p, &uid).await?;
    }
    for p in &claim.adopt {
        let mut refs = p.metadata.owner_references.clone().unwrap_or_default();
        refs.push(owners::controller_ref(job));
        let mut finalizers = p.metadata.finalizers.clone().unwrap_or_default();
        if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
            finalizers.push(TRACKING_FINALIZER.into());
        }
        let patch = json!({"metadata": {
            "ownerReferences": refs,
            "finalizers": finalizers,
            "resourceVersion": p.metadata.resource_version,
        }});
        let name = name_of(p);
        let adopted = pod_api
            .patch(&name, &PatchParams::apply(MANAGER), &Patch::Merge(patch))
            .await
            .map_err(Error::api("adopting pod", name))?;
        owned.push(Arc::new(adopted));
    }
    Ok(owned)
}

/// Removes the tracking finalizer; answers the uids it is gone from (a pod
/// already gone counts) and the first error.
async fn remove_finalizers(api: &Api<Pod>, pods: &[Arc<Pod>]) -> (Vec<String>, Option<Error>) {
    let mut set = tokio::task::JoinSet::new();
    for p in pods.iter().filter(|p| has_finalizer(p)) {
        let (api, p) = (api.clone(), p.clone());
        set.spawn(async move {
            let r = remove_finalizer(&api, &p).await;
            (uid(&p), r)
        });
    }
    let mut done = Vec::new();
    let mut err = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((id, Ok(()))) => done.push(id),
            Ok((_, Err(e))) => err = Some(e),
            Err(e) => err = Some(Error::Invalid(format!("finalizer task failed: {e}"))),
        }
    }
    (done, err)
}

/// A JSON patch that tests the finalizer is where the cache saw it: a
/// concurrent status write by the node agent does not conflict with it.
pub async fn remove_finalizer(api: &Api<Pod>, p: &Pod) -> Result<(), Error> {
    let name = name_of(p);
    let Some(i) = p
        .metadata
        .finalizers
        .iter()
        .flatten()
        .position(|f| f == TRACKING_FINALIZER)
    else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{i}");
    let patch = json!([
        {"op": "test", "path": "/metadata/uid", "value": p.metadata.uid},
        {"op": "test", "path": path, "value": TRACKING_FINALIZER},
        {"op": "remove", "path": path},
    ]);
    match api
        .patch(&name, &PatchParams::apply(MANAGER), &Patch::Json(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == 404 => Ok(()),
        Err(e) => Err(Error::api(
            "removing the job-tracking finalizer of pod",
            name,
        )(e)),
    }
}

/// Deletes `pods` (with `release`, their finalizer first: they are not
/// to be counted). Answers how many went, how many of them were ready, and
/// the first error.
async fn delete_pods(
    api: &Api<Pod>,
    pods: &[Arc<Pod>],
    release: bool,
) -> (i32, i32, Option<Error>) {
    let mut set = tokio::task::JoinSet::new();
    for p in pods {
        let (api, p) = (api.clone(), p.clone());
        set.spawn(async move {
            if release {
                remove_finalizer(&api, &p).await?;
            }
            let name = name_of(&p);
            let dp = DeleteParams {
                uid: p.metadata.uid.clone(),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => Ok(pods::is_ready(&p)),
                Err(e) if e.code() == 404 => Ok(pods::is_ready(&p)),
                Err(e) => Err(Error::api("deleting pod", name)(e)),
            }
        });
    }
    let (mut deleted, mut ready, mut err) = (0, 0, None);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(was_ready)) => {
                deleted += 1;
                ready += was_ready as i32;
            }
            Ok(Err(e)) => err = Some(e),
            Err(e) => err = Some(Error::Invalid(format!("pod delete task failed: {e}"))),
        }
    }
    (deleted, ready, err)
}

/// When new pods may start: the Job-wide pod-failure backoff, or with
/// backoffLimitPerIndex each index's own from the failed pod it replaces.
struct Pacing<'a> {
    backoff: Backoff,
    awaiting: &'a BTreeMap<u32, Arc<Pod>>,
    now: Timestamp,
}

struct Managed {
    active: i32,
    deleted: i32,
    deleted_ready: i32,
    requeue: Option<Duration>,
    error: Option<Error>,
}

/// Brings the active pods to what the job wants now (upstream manageJob).
#[allow(clippy::too_many_arguments)]
async fn manage(
    job: &Job,
    spec: &JobSpec,
    seen: &Seen,
    ctx: &Ctx,
    api: &Api<Pod>,
    succeeded: i32,
    terminating: i32,
    done_indexes: &Intervals,
    pacing: Pacing<'_>,
) -> Managed {
    let key = ObjectKey::of(job);
    let active = seen.active.len() as i32;
    let mut out = Managed {
        active,
        deleted: 0,
        deleted_ready: 0,
        requeue: None,
        error: None,
    };
    let victims = if suspended(spec) {
        pods_for_removal(spec, &seen.active, seen.active.len())
    } else {
        let want = want_active(spec, active, succeeded);
        let mut v = pods_for_removal(spec, &seen.active, (active - want).max(0) as usize);
        v.truncate(BURST);
        v
    };
    if !victims.is_empty() {
        ctx.expectations
            .expect(&key, vec![], victims.iter().map(|p| name_of(p)).collect());
        let (deleted, ready, err) = delete_pods(api, &victims, true).await;
        out.active -= deleted;
        out.deleted = deleted;
        out.deleted_ready = ready;
        out.error = err;
        tracing::info!(job = %key, deleted, "deleted active pods");
        return out;
    }
    if suspended(spec) {
        return out;
    }
    let want = want_active(spec, active, succeeded);
    let blocked = if seen.only_failed { terminating } else { 0 };
    let mut diff = (want - blocked - active).max(0) as usize;
    if diff == 0 {
        return out;
    }
    let (base, max) = ctx.backoff;
    let per_index = seen.indexed && per_index::enabled(spec);
    if !per_index {
        let wait = pacing.backoff.remaining(pacing.now, base, max);
        if !wait.is_zero() {
            out.requeue = Some(wait);
            return out;
        }
    }
    diff = diff.min(BURST);
    let mut slots: Vec<Option<u32>> = if seen.indexed {
        let running: BTreeSet<u32> = seen.active.iter().filter_map(|p| indexes::of(p)).collect();
        let mut taken = running;
        if seen.only_failed {
            taken.extend(
                seen.owned
                    .iter()
                    .filter(|p| is_terminating(p))
                    .filter_map(|p| indexes::of(p)),
            );
        }
        done_indexes
            .first_missing(&taken, diff, seen.completions)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None; diff]
    };
    let replaced = |i: u32| pacing.awaiting.get(&i).map(|p| &**p);
    if per_index {
        // Indexes still in their backoff wait; the rest start now.
        slots.retain(|slot| {
            let wait = slot.map_or(Duration::ZERO, |i| {
                per_index::backoff_remaining(replaced(i), pacing.now, base, max)
            });
            if !wait.is_zero() {
                out.requeue = Some(out.requeue.map_or(wait, |r| r.min(wait)));
            }
            wait.is_zero()
        });
        if slots.is_empty() {
            return out;
        }
    }
    let counts: Option<BTreeMap<u32, (i32, i32)>> = per_index.then(|| {
        slots
            .iter()
            .flatten()
            .map(|i| (*i, per_index::counts_for_replacement(spec, replaced(*i))))
            .collect()
    });
    let (created, err) = create_pods(job, api, &slots, counts.as_ref()).await;
    for name in &created {
        ctx.recorder.event(
            object_ref(job),
            EventType::Normal,
            "SuccessfulCreate",
            format!("Created pod: {name}"),
        );
    }
    if let Some(e) = &err {
        ctx.recorder.event(
            object_ref(job),
            EventType::Warning,
            "FailedCreate",
            format!("Error creating: {e}"),
        );
    }
    out.active += created.len() as i32;
    ctx.expectations.expect(&key, created, vec![]);
    out.error = err;
    out
}

/// Creates a pod per slot in slow-start batches (1, 2, 4, ...), stopping
/// after a batch with a failure.
async fn create_pods(
    job: &Job,
    api: &Api<Pod>,
    slots: &[Option<u32>],
    // backoffLimitPerIndex: each index's failures so far.
    failure_counts: Option<&BTreeMap<u32, (i32, i32)>>,
) -> (Vec<String>, Option<Error>) {
    let pp = owners::post_params();
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let mut created = Vec::new();
    let mut rest = slots;
    for batch in replicaset::slow_start_batches(slots.len()) {
        let (now, later) = rest.split_at(batch);
        rest = later;
        let mut set = tokio::task::JoinSet::new();
        for slot in now {
            let mut pod = pod_for(job, *slot);
            if let (Some(counts), Some(i)) = (failure_counts, slot) {
                let (failures, ignored) = counts.get(i).copied().unwrap_or_default();
                let a = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
                a.insert(per_index::FAILURE_COUNT.into(), failures.to_string());
                if ignored > 0 {
                    a.insert(per_index::IGNORED_FAILURE_COUNT.into(), ignored.to_string());
                }
            }
            let (api, pp) = (api.clone(), pp.clone());
            set.spawn(async move { api.create(&pod, &pp).await });
        }
        let mut err = None;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(p)) => created.push(name_of(&p)),
                Ok(Err(e)) => err = Some(Error::api("creating pod for job", job_name.clone())(e)),
                Err(e) => err = Some(Error::Invalid(format!("pod create task failed: {e}"))),
            }
        }
        if err.is_some() {
            return (created, err);
        }
    }
    tracing::info!(job = %job_name, created = created.len(), "created pods");
    (created, None)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

    use super::*;

    fn job(mode: &str, completions: Option<i32>, parallelism: i32) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                completion_mode: Some(mode.into()),
                completions,
                parallelism: Some(parallelism),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([("app".into(), "pi".into())])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some("busybox".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn indexed_pod(name: &str, index: &str) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.annotations = Some(BTreeMap::from([(COMPLETION_INDEX.into(), index.into())]));
        Arc::new(p)
    }

    #[test]
    fn only_jobs_of_this_controller_are_synced() {
        let mut j = job("NonIndexed", Some(1), 1);
        assert_eq!(managed_elsewhere(&j), None);
        j.spec.as_mut().unwrap().managed_by = Some(JOB_CONTROLLER.into());
        assert_eq!(managed_elsewhere(&j), None);
        j.spec.as_mut().unwrap().managed_by = Some("example.com/queue".into());
        assert_eq!(managed_elsewhere(&j), Some("example.com/queue"));
    }

    #[test]
    fn active_pods_wanted() {
        let spec = job("NonIndexed", Some(5), 2).spec.unwrap();
        assert_eq!(want_active(&spec, 0, 0), 2);
        assert_eq!(want_active(&spec, 2, 4), 1, "one completion left");
        assert_eq!(want_active(&spec, 0, 7), 0);
        let queue = job("NonIndexed", None, 3).spec.unwrap();
        assert_eq!(want_active(&queue, 0, 0), 3);
        assert_eq!(want_active(&queue, 2, 1), 2, "after a success: no new pods");
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let j = job("Indexed", Some(3), 3);
        let p = pod_for(&j, Some(2));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(
            p.metadata.annotations.as_ref().unwrap()[COMPLETION_INDEX],
            "2"
        );
        assert_eq!(p.metadata.labels.as_ref().unwrap()[COMPLETION_INDEX], "2");
        assert_eq!(p.metadata.labels.as_ref().unwrap()["app"], "pi");
        assert_eq!(
            p.metadata.finalizers.as_deref(),
            Some(&[TRACKING_FINALIZER.to_string()][..])
        );
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, COMPLETION_INDEX_ENV);
        assert_eq!(
            env.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.labels['batch.kubernetes.io/job-completion-index']"
        );
        let r = &p.metadata.owner_references.unwrap()[0];
        assert_eq!((r.kind.as_str(), r.controller), ("Job", Some(true)));
        let plain = pod_for(&job("NonIndexed", Some(1), 1), None);
        assert_eq!(plain.metadata.generate_name.as_deref(), Some("pi-"));
        assert!(plain.spec.unwrap().hostname.is_none());
        let long = "j".repeat(63);
        let mut j = job("Indexed", Some(3), 3);
        j.metadata.name = Some(long);
        let p = pod_for(&j, Some(12));
        assert_eq!(
            p.metadata.generate_name.as_deref().map(str::len),
            Some(MAX_GENERATE_NAME)
        );
        assert!(p.metadata.generate_name.unwrap().ends_with("-12-"));
    }

    #[test]
    fn indexed_removal_takes_duplicates_and_strays_first() {
        let spec = job("Indexed", Some(3), 3).spec.unwrap();
        let active = vec![
            indexed_pod("a0", "0"),
            indexed_pod("b0", "0"),
            indexed_pod("c1", "1"),
            indexed_pod("d9", "9"),
            indexed_pod("e", "x"),
        ];
        let mut rm: Vec<String> = pods_for_removal(&spec, &active, 0)
            .iter()
            .map(|p| name_of(p))
            .collect();
        rm.sort();
        assert_eq!(rm.len(), 3, "{rm:?}");
        assert!(rm.contains(&"d9".to_string()) && rm.contains(&"e".to_string()));
        assert!(rm.iter().filter(|n| n.ends_with('0')).count() == 1);
        assert_eq!(pods_for_removal(&spec, &active, 4).len(), 4);
    }

    #[test]
    fn uncounted_pods_move_to_counters_once_released() {
        let mut s = JobStatus {
            succeeded: Some(1),
            uncounted_terminated_pods: Some(UncountedTerminatedPods {
                succeeded: Some(vec!["a".into(), "b".into()]),
                failed: Some(vec!["c".into()]),
            }),
            ..Default::default()
        };
        let held = HashSet::from(["b".to_string()]);
        assert!(count_uncounted(&mut s, &held));
        assert_eq!((s.succeeded, s.failed), (Some(2), Some(1)));
        let u = s.uncounted_terminated_pods.clone().unwrap();
        assert_eq!((u.succeeded, u.failed), (Some(vec!["b".to_string()]), None));
        assert!(!count_uncounted(&mut s, &held), "nothing more to move");
    }

    #[test]
    fn conditions_change_only_when_they_differ() {
        let t0 = Timestamp::from_second(100).unwrap();
        let t1 = Timestamp::from_second(200).unwrap();
        let mut list = Vec::new();
        assert!(!ensure_condition(
            &mut list,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            t0
        ));
        assert!(ensure_condition(
            &mut list,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            t0
        ));
        assert!(!ensure_condition(
            &mut list,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            t1
        ));
        assert!(ensure_condition(
            &mut list,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            t1
        ));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_transition_time, Some(Time(t1)));
    }
}
