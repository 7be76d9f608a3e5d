//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the
//! selector, and reports them in the status subresource.
//!
//! ```text
//!  rs, pods in its namespace (cache)
//!    └─ claim: owned / adopt / release          (owners::claim)
//!    └─ diff = active owned - replicas
//!         < 0: create in slow-start batches 1, 2, 4, ... (burst <= 500)
//!         > 0: delete the lowest-ranked pods   (DeletionKey)
//!    └─ expectations: no new decision until the cache shows the last one
//!    └─ status: replicas, fullyLabeled, ready, available, observedGeneration
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use balsa_api::client::events::{object_ref, EventType, Recorder};
use balsa_api::client::{Action, Api, Client, DeleteParams, ObjectKey, Store};
use balsa_api::registry::{ApiError, Reason};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::owners::{self};
use crate::{pods, Error};

/// The most pods one reconcile creates or deletes (upstream's burstReplicas).
pub const BURST: usize = 500;
/// How long a controller waits for the cache to show its own writes before
/// deciding again anyway (upstream: 5 minutes).
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Ctx {
    pub client: Client,
    pub pods: Store<Pod>,
    /// Records as `replicaset-controller`.
    pub recorder: Recorder,
    expectations: Expectations,
}

impl Ctx {
    pub fn expectations(&self) -> &Expectations {
        &self.expectations
    }

    pub fn new(client: Client, pods: Store<Pod>, recorder: Recorder) -> Self {
        Self {
            client,
            pods,
            recorder,
            expectations: Expectations::default(),
        }
    }
}

/// Writes the cache has not shown yet, per owner: without them a reconcile
/// on a lagging cache would create or delete twice.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<ObjectKey, Expected>>,
}

struct Expected {
    created: HashSet<String>,
    deleted: HashSet<String>,
    at: Instant,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Expected>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether every expected write is visible in `pods`.
    pub fn satisfied(&self, owner: &ObjectKey, pods: &Store<Pod>) -> bool {
        let mut map = self.lock();
        let Some(e) = map.get(owner) else { return true };
        let ns = owner.namespace.as_deref();
        let seen = e
            .created
            .iter()
            .all(|n| pods.get(&ObjectKey::new(ns, n)).is_some());
        let gone = e.deleted.iter().all(|n| {
            pods.get(&ObjectKey::new(ns, n))
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
        });
        if (seen && gone) || e.at.elapsed() > EXPECTATIONS_TIMEOUT {
            map.remove(owner);
            return true;
        }
        false
    }

    pub fn expect(&self, owner: &ObjectKey, created: Vec<String>, deleted: Vec<String>) {
        self.lock().insert(
            owner.clone(),
            Expected {
                created: created.into_iter().collect(),
                deleted: deleted.into_iter().collect(),
                at: Instant::now(),
            },
        );
    }

    /// Adds pods created to what `owner` waits for (each slow-start batch
    /// as it ends, so a pass stopped midway, leadership lost, still leaves
    /// the creates it made expected).
    pub fn created(&self, owner: &ObjectKey, names: impl IntoIterator<Item = String>) {
        let mut map = self.lock();
        let e = map.entry(owner.clone()).or_insert_with(|| Expected {
            created: HashSet::new(),
            deleted: HashSet::new(),
            at: Instant::now(),
        });
        e.created.extend(names);
        e.at = Instant::now();
    }

    /// A delete that failed: the cache will never show it, so it is no
    /// longer waited for (upstream's DeletionObserved on a failed delete).
    pub fn delete_failed(&self, owner: &ObjectKey, name: &str) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.deleted.remove(name);
        }
    }

    /// Forgets every expected write (a new lease: its caches, synced to
    /// the revision it began at, show every write made before it).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How long until `owner`'s expectations lapse, if it has any: a pass
    /// that found them unmet looks again then, so an event lost or never
    /// coming cannot hold the ReplicaSet for good.
    pub fn lapse_in(&self, owner: &ObjectKey) -> Option<Duration> {
        self.lock()
            .get(owner)
            .map(|e| EXPECTATIONS_TIMEOUT.saturating_sub(e.at.elapsed()))
    }
}

/// Batch sizes for creating `count` pods: 1, 2, 4, ... as upstream's
/// slowStartBatch, so a failing create (quota, admission) costs one call.
pub fn slow_start_batches(count: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut left, mut size) = (count, 1);
    while left > 0 {
        let b = size.min(left);
        out.push(b);
        left -= b;
        size *= 2;
    }
    out
}

fn phase_rank(p: &Pod) -> u8 {
    match pods::phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

/// A pod's place in upstream's ActivePodsWithRanks order, computed once
/// per pod (a scale-down of a ReplicaSet of thousands sorts by it): the
/// pods to delete first sort first. Fields compare in declaration order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DeletionKey {
    /// Unscheduled < scheduled.
    assigned: bool,
    /// Pending < Unknown < Running.
    phase: u8,
    /// Not ready < ready.
    ready: bool,
    /// Doubled-up pods first: how many of the owner's pods share its node.
    doubled_up: Reverse<usize>,
    /// Ready for less time first (no time first, as upstream's afterOrZero).
    ready_since: Recent,
    /// More restarts first.
    restarts: Reverse<i32>,
    /// Newer first (no time first).
    created: Recent,
}

/// A time in "newest first, none before all" order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Recent(bool, Reverse<Option<Timestamp>>);

impl Recent {
    fn of(t: Option<Timestamp>) -> Self {
        Recent(t.is_some(), Reverse(t))
    }
}

fn deletion_key(p: &Pod, rank: usize) -> DeletionKey {
    let ready_since = pods::ready_since(p);
    DeletionKey {
        assigned: pods::is_assigned(p),
        phase: phase_rank(p),
        ready: ready_since.is_some(),
        doubled_up: Reverse(rank),
        // Compared between two ready pods only: every pod before this
        // field is equal, readiness included.
        ready_since: Recent::of(ready_since.flatten()),
        restarts: Reverse(pods::restarts(p)),
        created: Recent::of(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
    }
}

/// The `n` pods to delete from `active`, first first. Each pod's key is
/// computed once, and only the `n` chosen are sorted.
pub fn pods_to_delete(active: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in active {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let rank = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| per_node.get(n).copied())
            .unwrap_or(0)
    };
    let mut keyed: Vec<(DeletionKey, &Arc<Pod>)> = active
        .iter()
        .map(|p| (deletion_key(p, rank(p)), p))
        .collect();
    if n < keyed.len() {
        if n == 0 {
            return Vec::new();
        }
        keyed.select_nth_unstable_by(n - 1, |a, b| a.0.cmp(&b.0));
        keyed.truncate(n);
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, p)| p.clone()).collect()
}

/// The status the pods give the ReplicaSet, and when to look again for a
/// pod that becomes available by minReadySeconds alone.
pub fn status_of(
    rs: &ReplicaSet,
    owned: &[Arc<Pod>],
    now: Timestamp,
) -> (ReplicaSetStatus, Option<Duration>) {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0) as i64;
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| pods::is_active(p)).collect();
    let fully = active
        .iter()
        .filter(|p| {
            let l = p.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| l.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| pods::is_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| pods::is_available(p, min_ready, now))
        .count();
    let recheck = active
        .iter()
        .filter(|p| !pods::is_available(p, min_ready, now))
        .filter_map(|p| pods::ready_since(p).flatten())
        .map(|t| min_ready - (now.as_second() - t.as_second()))
        .filter(|s| *s > 0)
        .min()
        .map(|s| Duration::from_secs(s as u64));
    let old = rs.status.clone().unwrap_or_default();
    (
        ReplicaSetStatus {
            replicas: active.len() as i32,
            fully_labeled_replicas: Some(fully as i32),
            ready_replicas: Some(ready as i32),
            available_replicas: Some(available as i32),
            observed_generation: rs.metadata.generation,
            conditions: old.conditions,
            terminating_replicas: old.terminating_replicas,
        },
        recheck,
    )
}

fn name_of(m: &ObjectMeta) -> String {
    m.name.clone().unwrap_or_default()
}

/// A pod from the ReplicaSet's template, named `<rs>-<random>` by the registry.
pub fn pod_for(rs: &ReplicaSet) -> Pod {
    let t = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tm = t.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", name_of(&rs.metadata))),
            namespace: rs.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owners::controller_ref(rs)]),
            ..Default::default()
        },
        spec: t.spec,
        status: None,
    }
}

pub async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = ObjectKey::of(&*rs);
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let pod_api = Api::<Pod>::namespaced(ctx.client.clone(), &ns);
    let selector = rs
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let in_ns = ctx.pods.filter(|p| {
        p.metadata.namespace.as_deref() == Some(ns.as_str()) && owners::claimable(p, uid)
    });
    let owned = owners::claim_and_write(&pod_api, &*rs, &selector, deleting, in_ns).await?;

    let mut action = Action::await_change();
    let satisfied = ctx.expectations.satisfied(&key, &ctx.pods);
    if !satisfied && !deleting {
        if let Some(d) = ctx.expectations.lapse_in(&key) {
            action = Action::requeue(d + Duration::from_millis(100));
        }
    }
    if !deleting && satisfied {
        let active: Vec<Arc<Pod>> = owned
            .iter()
            .filter(|p| pods::is_active(p))
            .cloned()
            .collect();
        let want = rs
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as usize;
        if active.len() < want {
            let n = (want - active.len()).min(BURST);
            let err = create_pods(&rs, &pod_api, &ctx, &key, n).await;
            if let Some(e) = err {
                return Err(e);
            }
            if want - active.len() > BURST {
                action = Action::requeue(Duration::from_millis(100));
            }
        } else if active.len() > want {
            let n = (active.len() - want).min(BURST);
            let victims = pods_to_delete(&active, n);
            let names: Vec<String> = victims.iter().map(|p| name_of(&p.metadata)).collect();
            ctx.expectations.expect(&key, vec![], names);
            if let Some(e) = delete_pods(&rs, &pod_api, &ctx, &key, &victims).await {
                return Err(e);
            }
            tracing::info!(replicaset = %key, deleted = n, "scaled down");
        }
    }

    let (status, recheck) = status_of(&rs, &owned, crate::pods::now());
    if rs.status.as_ref() != Some(&status) {
        let api = Api::<ReplicaSet>::namespaced(ctx.client.clone(), &ns);
        write_status(&api, &rs, status)
            .await
            .map_err(Error::api("updating status of", key.to_string()))?;
    }
    if let Some(d) = recheck {
        action = Action::requeue(d);
    }
    Ok(action)
}

/// Writes `status` (computed from `rs` as the cache held it) and returns
/// the ReplicaSet as stored; when the
/// ReplicaSet moved meanwhile (the Deployment controller scaling it), onto
/// a fresh copy once more, as upstream's updateReplicaSetStatus: the
/// counts are the pods', and observedGeneration stays the generation acted
/// on, so a spec change made since is not reported as seen.
pub async fn write_status(
    api: &Api<ReplicaSet>,
    rs: &ReplicaSet,
    status: ReplicaSetStatus,
) -> Result<ReplicaSet, ApiError> {
    let mut new = rs.clone();
    new.status = Some(status.clone());
    match api.replace_status(&new, &owners::post_params()).await {
        Err(e) if e.reason == Reason::Conflict => {
            let mut fresh = api.get(&name_of(&rs.metadata)).await?;
            if fresh.metadata.uid != rs.metadata.uid {
                return Err(e);
            }
            fresh.status = Some(status);
            api.replace_status(&fresh, &owners::post_params()).await
        }
        done => done,
    }
}

/// Deletes `victims` all at once (as upstream's ReplicaSet controller does,
/// up to its burst): one at a time, a scale-down of hundreds of pods lags
/// behind the Deployment, which bounds only the ReplicaSets' specs, and the
/// old pods outlive the surge. The first error, after every delete ended.
async fn delete_pods(
    rs: &ReplicaSet,
    api: &Api<Pod>,
    ctx: &Ctx,
    key: &ObjectKey,
    victims: &[Arc<Pod>],
) -> Option<Error> {
    let recorder = &ctx.recorder;
    let mut set = tokio::task::JoinSet::new();
    for p in victims {
        let (api, name) = (api.clone(), name_of(&p.metadata));
        let dp = DeleteParams {
            uid: p.metadata.uid.clone(),
            ..Default::default()
        };
        set.spawn(async move { (api.delete(&name, &dp).await, name) });
    }
    let mut err = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((Ok(_), name)) => recorder.event(
                object_ref(rs),
                EventType::Normal,
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
            ),
            Ok((Err(e), _)) if e.code() == 404 => {}
            Ok((Err(e), name)) => {
                ctx.expectations.delete_failed(key, &name);
                recorder.event(
                    object_ref(rs),
                    EventType::Warning,
                    "FailedDelete",
                    format!("Error deleting: {}", e.message),
                );
                err.get_or_insert(Error::api("deleting pod", name)(e));
            }
            Err(e) => {
                err.get_or_insert(Error::Invalid(format!("pod delete task failed: {e}")));
            }
        }
    }
    err
}
/// Creates `n` pods in slow-start batches, each batch's pods expected as
/// it ends; stops after a batch with a failure. Returns the first error.
async fn create_pods(
    rs: &ReplicaSet,
    api: &Api<Pod>,
    ctx: &Ctx,
    key: &ObjectKey,
    n: usize,
) -> Option<Error> {
    let recorder = &ctx.recorder;
    let pod = pod_for(rs);
    let pp = owners::post_params();
    let mut total = 0;
    for batch in slow_start_batches(n) {
        let mut created = Vec::new();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let (api, pod, pp) = (api.clone(), pod.clone(), pp.clone());
            set.spawn(async move { api.create(&pod, &pp).await });
        }
        let mut err = None;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(p)) => {
                    let name = name_of(&p.metadata);
                    recorder.event(
                        object_ref(rs),
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                    );
                    created.push(name);
                }
                Ok(Err(e)) => {
                    recorder.event(
                        object_ref(rs),
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {}", e.message),
                    );
                    err = Some(Error::api("creating pod for", name_of(&rs.metadata))(e))
                }
                Err(e) => err = Some(Error::Invalid(format!("pod create task failed: {e}"))),
            }
        }
        total += created.len();
        ctx.expectations.created(key, created);
        if err.is_some() {
            return err;
        }
    }
    tracing::info!(replicaset = %name_of(&rs.metadata), created = total, "scaled up");
    None
}

/// The labels a pod template gives, for tests and the deployment controller.
pub fn template_labels(rs: &ReplicaSet) -> BTreeMap<String, String> {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(Timestamp::from_second(created + 10).unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn names(v: &[Arc<Pod>]) -> Vec<String> {
        v.iter().map(|p| name_of(&p.metadata)).collect()
    }

    #[test]
    fn expectations_gather_batches_and_let_go_of_failed_deletes() {
        use balsa_api::client::reflector::store;
        use balsa_api::client::watcher::Event;

        let (pods, mut cache) = store::<Pod>();
        let owner = ObjectKey::new(Some("ns"), "rs");
        let named = |n: &str| Pod {
            metadata: ObjectMeta {
                name: Some(n.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = Expectations::default();
        assert!(e.satisfied(&owner, &pods), "nothing expected");
        assert_eq!(e.lapse_in(&owner), None);

        // Two slow-start batches, the second stopped midway (leadership
        // lost): both batches' pods stay expected.
        e.created(&owner, ["a".to_string()]);
        e.created(&owner, ["b".to_string(), "c".to_string()]);
        cache.apply(&Event::Apply(named("a")));
        cache.apply(&Event::Apply(named("b")));
        assert!(!e.satisfied(&owner, &pods), "c not seen yet");
        let lapse = e.lapse_in(&owner).expect("pending");
        assert!(lapse <= EXPECTATIONS_TIMEOUT && lapse > EXPECTATIONS_TIMEOUT / 2);
        cache.apply(&Event::Apply(named("c")));
        assert!(e.satisfied(&owner, &pods));
        assert_eq!(e.lapse_in(&owner), None, "met expectations are dropped");

        // A delete that failed is not waited for; one that went through is
        // until the cache shows the pod gone.
        e.expect(&owner, vec![], vec!["a".into(), "b".into()]);
        e.delete_failed(&owner, "a");
        assert!(!e.satisfied(&owner, &pods), "b still listed");
        cache.apply(&Event::Delete(named("b")));
        assert!(e.satisfied(&owner, &pods));

        // A lease ends with deletes expected that never ran (the reconcile
        // aborted): the next lease forgets them instead of waiting out the
        // timeout.
        e.expect(&owner, vec![], vec!["c".into()]);
        assert!(!e.satisfied(&owner, &pods), "c still listed");
        e.clear();
        assert!(e.satisfied(&owner, &pods));
        assert_eq!(e.lapse_in(&owner), None);
    }

    #[test]
    fn slow_start_doubles() {
        assert_eq!(slow_start_batches(0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1), [1]);
        assert_eq!(slow_start_batches(10), [1, 2, 4, 3]);
        assert_eq!(slow_start_batches(15), [1, 2, 4, 8]);
        assert_eq!(slow_start_batches(500).iter().sum::<usize>(), 500);
    }

    #[test]
    fn deletion_ranks_as_upstream() {
        let active = vec![
            pod("ready-old", Some("n1"), "Running", true, 100),
            pod("unscheduled", None, "Pending", false, 300),
            pod("pending", Some("n2"), "Pending", false, 300),
            pod("running-not-ready", Some("n3"), "Running", false, 300),
            pod("ready-new", Some("n4"), "Running", true, 200),
            pod("unknown", Some("n5"), "Unknown", false, 300),
        ];
        assert_eq!(
            names(&pods_to_delete(&active, 6)),
            [
                "unscheduled",
                "pending",
                "unknown",
                "running-not-ready",
                "ready-new",
                "ready-old"
            ]
        );
        assert_eq!(names(&pods_to_delete(&active, 1)), ["unscheduled"]);
        // Two ready pods on one node go before an equally ready lone one.
        let doubled = vec![
            pod("alone", Some("a"), "Running", true, 100),
            pod("twin1", Some("b"), "Running", true, 100),
            pod("twin2", Some("b"), "Running", true, 100),
        ];
        let first = names(&pods_to_delete(&doubled, 1));
        assert!(first[0].starts_with("twin"), "{first:?}");
    }

    #[test]
    fn the_few_to_delete_are_the_first_of_the_whole_order() {
        // Distinct creation times: the whole order is unique.
        let nodes = [None, Some("a"), Some("b"), Some("a"), Some("c")];
        let phases = ["Running", "Pending", "Unknown"];
        let active: Vec<Arc<Pod>> = (0..40)
            .map(|i| {
                let created = (i * 17 % 40) as i64;
                pod(
                    &format!("p{i}"),
                    nodes[i % 5],
                    phases[i % 3],
                    i % 4 != 0,
                    created,
                )
            })
            .collect();
        let all = names(&pods_to_delete(&active, active.len()));
        assert_eq!(all.len(), 40);
        for n in 0..=40 {
            assert_eq!(names(&pods_to_delete(&active, n)), all[..n], "n = {n}");
        }
        assert_eq!(pods_to_delete(&active, 50).len(), 40);
        // A ready pod with no transition time goes before ready ones with
        // one (upstream's afterOrZero), whatever its age.
        let mut timeless = (*pod("timeless", Some("x"), "Running", true, 0)).clone();
        for c in timeless
            .status
            .as_mut()
            .unwrap()
            .conditions
            .iter_mut()
            .flatten()
        {
            c.last_transition_time = None;
        }
        let ready = vec![
            pod("older", Some("y"), "Running", true, 1),
            Arc::new(timeless),
            pod("newer", Some("z"), "Running", true, 2),
        ];
        assert_eq!(
            names(&pods_to_delete(&ready, 3)),
            ["timeless", "newer", "older"]
        );
    }

    #[test]
    fn status_counts_available_after_min_ready_seconds() {
        let mut rs = ReplicaSet::default();
        rs.metadata.generation = Some(4);
        rs.spec = Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
            min_ready_seconds: Some(30),
            ..Default::default()
        });
        let owned = vec![
            pod("a", Some("n"), "Running", true, 0),    // ready at 10
            pod("b", Some("n"), "Running", true, 1000), // ready at 1010
            pod("c", None, "Pending", false, 1000),
        ];
        let now = Timestamp::from_second(1020).unwrap();
        let (s, recheck) = status_of(&rs, &owned, now);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(recheck, Some(Duration::from_secs(20)));
    }
}
