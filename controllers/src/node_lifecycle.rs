//! The node lifecycle controller (kube-controller-manager's
//! `node-lifecycle-controller`): a node whose agent stops renewing its Lease
//! (and stops posting status) for the grace period gets its conditions set to
//! `Unknown` and the `unreachable` taints; a node reporting Ready=False gets
//! the `not-ready` ones. Taints go when the node is Ready again.
//!
//! ```text
//!  Node, its Lease in kube-node-lease (cache)
//!    └─ observe: renewTime / Ready heartbeat changed? seen at = now (local clock)
//!    └─ now - seen > grace: conditions Unknown, NodeStatusUnknown; pods NotReady
//!    └─ taints from Ready:  False -> not-ready, Unknown -> unreachable
//!         NoSchedule: at once
//!         NoExecute:  per zone, rate limited (0.1 node/s; 0.01 or none when
//!                     the zone is >55% unhealthy; none, and removed, when
//!                     every zone is fully disrupted)
//!    └─ requeue every monitor period
//! ```
//!
//! Health is judged by when this master saw the heartbeat change, not by the
//! timestamps in it, so a skewed agent clock cannot fake or hide a failure.
//! Pods on a NoExecute-tainted node are evicted by `taint_eviction`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use balsa_api::client::events::{object_ref, EventType, Recorder};
use balsa_api::client::{Action, Api, Client, ObjectKey, PostParams, Store};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::taints::{self, NOT_READY, NO_EXECUTE, NO_SCHEDULE, UNREACHABLE};
use crate::{pods, Error};

/// The namespace node agents renew their Leases in.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The conditions a node agent posts, set to Unknown when it goes silent.
pub const CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
pub const REASON_UNKNOWN: &str = "NodeStatusUnknown";
pub const MESSAGE_UNKNOWN: &str = "Kubelet stopped posting node status.";
pub const REASON_NEVER: &str = "NodeStatusNeverUpdated";
pub const MESSAGE_NEVER: &str = "Kubelet never posted node status.";

/// Upstream's flags, with their defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--node-monitor-grace-period`.
    pub grace_period: Duration,
    /// `--node-monitor-period`: how often every node is looked at.
    pub monitor_period: Duration,
    /// `--node-eviction-rate`: nodes per second tainted NoExecute in a zone.
    pub eviction_rate: f64,
    /// `--secondary-node-eviction-rate`, for a partially disrupted zone.
    pub secondary_eviction_rate: f64,
    /// `--unhealthy-zone-threshold`.
    pub unhealthy_zone_threshold: f64,
    /// `--large-cluster-size-threshold`: smaller partially disrupted zones
    /// are not evicted at all.
    pub large_cluster_threshold: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(40),
            monitor_period: Duration::from_secs(5),
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_threshold: 50,
        }
    }
}

pub struct Ctx {
    pub client: Client,
    pub opts: Options,
    pub nodes: Store<Node>,
    pub leases: Store<Lease>,
    pub pods: Store<Pod>,
    pub recorder: Recorder,
    seen: Mutex<HashMap<String, Seen>>,
    limiters: Mutex<HashMap<String, TokenBucket>>,
}

impl Ctx {
    pub fn new(
        client: Client,
        opts: Options,
        nodes: Store<Node>,
        leases: Store<Lease>,
        pods: Store<Pod>,
        recorder: Recorder,
    ) -> Self {
        Self {
            client,
            opts,
            nodes,
            leases,
            pods,
            recorder,
            seen: Mutex::default(),
            limiters: Mutex::default(),
        }
    }
}

/// The last heartbeat seen from a node and when this master saw it change.
struct Seen {
    beat: (Option<String>, Option<String>),
    at: Instant,
}

/// A token bucket of burst 1 (upstream's eviction limiter).
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, now: Instant) -> Self {
        Self {
            rate,
            tokens: 1.0,
            at: now,
        }
    }

    /// Takes a token, or says how long until one is there (`None`: never).
    pub fn take(&mut self, rate: f64, now: Instant) -> Result<(), Option<Duration>> {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(1.0);
        self.at = now;
        self.rate = rate;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if rate <= 0.0 {
            return Err(None);
        }
        Err(Some(Duration::from_secs_f64((1.0 - self.tokens) / rate)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// Upstream's zone key: region and zone labels.
pub fn zone_of(node: &Node) -> String {
    let l = node.metadata.labels.as_ref();
    let get = |k: &str| l.and_then(|l| l.get(k)).cloned().unwrap_or_default();
    format!(
        "{}:\0:{}",
        get("topology.kubernetes.io/region"),
        get("topology.kubernetes.io/zone")
    )
}

pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// A zone is fully disrupted when none of its nodes is Ready, partially when
/// more than 2 and at least `threshold` of them are not.
pub fn zone_state(ready: &[bool], threshold: f64) -> ZoneState {
    let up = ready.iter().filter(|r| **r).count();
    let down = ready.len() - up;
    if up == 0 && down > 0 {
        ZoneState::FullDisruption
    } else if down > 2 && down as f64 / ready.len() as f64 >= threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// Every zone's state, from the Ready conditions in `nodes`.
pub fn zone_states(nodes: &[Arc<Node>], threshold: f64) -> BTreeMap<String, (ZoneState, usize)> {
    let mut by_zone: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for n in nodes {
        by_zone
            .entry(zone_of(n))
            .or_default()
            .push(ready_status(n) == Some("True"));
    }
    by_zone
        .into_iter()
        .map(|(z, r)| (z, (zone_state(&r, threshold), r.len())))
        .collect()
}

/// The NoExecute eviction rate of a zone in `state` (upstream
/// `setLimiterInZone`; a fully disrupted zone among healthy ones keeps the
/// primary rate).
pub fn zone_rate(state: ZoneState, size: usize, opts: &Options) -> f64 {
    match state {
        ZoneState::Normal | ZoneState::FullDisruption => opts.eviction_rate,
        ZoneState::PartialDisruption if size > opts.large_cluster_threshold => {
            opts.secondary_eviction_rate
        }
        ZoneState::PartialDisruption => 0.0,
    }
}

/// The node's conditions once its agent has been silent past the grace
/// period: the ones it posted become Unknown (their heartbeat kept), the
/// ones it never posted appear as Unknown. `None` when nothing changes.
pub fn silenced(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conds = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in CONDITIONS {
        match conds.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some(REASON_UNKNOWN.into());
                c.message = Some(MESSAGE_UNKNOWN.into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conds.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some(REASON_NEVER.into()),
                    message: Some(MESSAGE_NEVER.into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conds)
}

/// The taint key Ready's status calls for: not-ready for False,
/// unreachable for Unknown, none for True.
pub fn wanted_key(ready: Option<&str>) -> Option<&'static str> {
    match ready {
        Some("True") => None,
        Some("False") => Some(NOT_READY),
        Some(_) => Some(UNREACHABLE),
        None => None,
    }
}

/// `taints` with this controller's taints of `effect` replaced by `key`'s
/// (none when `key` is None); a taint already there keeps its timeAdded.
pub fn set_taint(taints: &[Taint], effect: &str, key: Option<&str>, now: Timestamp) -> Vec<Taint> {
    let ours = |t: &Taint| t.effect == effect && (t.key == NOT_READY || t.key == UNREACHABLE);
    let mut out: Vec<Taint> = taints
        .iter()
        .filter(|t| !ours(t) || Some(t.key.as_str()) == key)
        .cloned()
        .collect();
    if let Some(k) = key {
        if !out.iter().any(|t| taints::is(t, k, effect)) {
            out.push(Taint {
                key: k.into(),
                effect: effect.into(),
                value: None,
                time_added: Some(Time(now)),
            });
        }
    }
    out
}

fn taints_of(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

fn has_no_execute(taints: &[Taint], key: &str) -> bool {
    taints.iter().any(|t| taints::is(t, key, NO_EXECUTE))
}

/// Whether the node's heartbeat (Lease renewal or Ready heartbeat) has been
/// seen to change within the grace period.
fn observe(ctx: &Ctx, node: &Node, name: &str) -> bool {
    let lease = ctx
        .leases
        .get(&ObjectKey::new(Some(LEASE_NAMESPACE), name))
        .and_then(|l| {
            l.spec
                .as_ref()?
                .renew_time
                .as_ref()
                .map(|t| t.0.to_string())
        });
    let beat = condition(node, "Ready")
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0.to_string());
    let now = Instant::now();
    let mut seen = ctx.seen.lock().unwrap_or_else(|p| p.into_inner());
    let s = seen.entry(name.to_string()).or_insert(Seen {
        beat: (lease.clone(), beat.clone()),
        at: now,
    });
    if s.beat != (lease.clone(), beat.clone()) {
        *s = Seen {
            beat: (lease, beat),
            at: now,
        };
    }
    now.duration_since(s.at) <= ctx.opts.grace_period
}

/// The pods on a node that just went silent are not ready any more
/// (upstream `MarkPodsNotReady`), so Services stop sending them traffic.
async fn mark_pods_not_ready(ctx: &Ctx, node: &str) {
    let on_node = ctx.pods.filter(|p| {
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node) && pods::is_ready(p)
    });
    for p in on_node {
        let mut new = (*p).clone();
        let now = pods::now();
        if let Some(conds) = new.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            for c in conds.iter_mut().filter(|c| c.type_ == "Ready") {
                c.status = "False".into();
                c.last_transition_time = Some(Time(now));
            }
        }
        let ns = new.metadata.namespace.clone().unwrap_or_default();
        let api = Api::<Pod>::namespaced(ctx.client.clone(), &ns);
        match api.replace_status(&new, &post()).await {
            Ok(_) => ctx.recorder.event(
                object_ref(&*p),
                EventType::Warning,
                "NodeNotReady",
                "Node is not ready",
            ),
            // The next silent pass does not retry; the pod's own agent is
            // gone, so only a later change would race us. Log and go on.
            Err(e) => {
                tracing::warn!(pod = %ObjectKey::of(&*p), error = %e, "marking pod not ready")
            }
        }
    }
}

fn post() -> PostParams {
    crate::owners::post_params()
}

pub async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let api = Api::<Node>::all(ctx.client.clone());
    let healthy = observe(&ctx, &node, &name);
    let cached_ready = ready_status(&node).map(str::to_string);
    let mut node = (*node).clone();
    let now = pods::now();
    if !healthy {
        if let Some(conds) = silenced(&node, now) {
            let was_ready = ready_status(&node) == Some("True");
            node.status.get_or_insert_with(Default::default).conditions = Some(conds);
            node = api
                .replace_status(&node, &post())
                .await
                .map_err(Error::api("marking unknown", name.clone()))?;
            tracing::warn!(node = %name, grace = ?ctx.opts.grace_period, "node stopped posting status: conditions Unknown");
            if was_ready {
                // Upstream's RecordNodeStatusChange.
                ctx.recorder.event(
                    object_ref(&node),
                    EventType::Normal,
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                );
                mark_pods_not_ready(&ctx, &name).await;
            }
        }
    }

    let key = wanted_key(ready_status(&node));
    let old = taints_of(&node);
    let mut new = set_taint(&old, NO_SCHEDULE, key, now);
    let mut next = ctx.opts.monitor_period;
    // Zones as they are with this node's new conditions: only a node that is
    // not Ready needs them (O(nodes) each time, and every healthy node is
    // looked at every monitor period and at each Lease renewal).
    let states = key.map(|_| {
        let mut all = ctx.nodes.state();
        all.retain(|n| n.metadata.name.as_deref() != Some(name.as_str()));
        all.push(Arc::new(node.clone()));
        zone_states(&all, ctx.opts.unhealthy_zone_threshold)
    });
    let states = states.unwrap_or_default();
    let all_down = !states.is_empty()
        && states
            .values()
            .all(|(s, _)| *s == ZoneState::FullDisruption);
    match key {
        // Every zone is down: more likely the masters are cut off than every
        // node dead, so nothing is evicted and the taints go.
        _ if all_down => new = set_taint(&new, NO_EXECUTE, None, now),
        None => new = set_taint(&new, NO_EXECUTE, None, now),
        Some(k) if has_no_execute(&old, k) => {}
        // Swapping not-ready for unreachable (or back) is not a new eviction.
        Some(k) if has_no_execute(&old, NOT_READY) || has_no_execute(&old, UNREACHABLE) => {
            new = set_taint(&new, NO_EXECUTE, Some(k), now)
        }
        // Just marked: wait one monitor period before evicting, so nodes
        // that went silent together are all counted in their zone's state.
        Some(_) if cached_ready.as_deref() != ready_status(&node) => {}
        Some(k) => {
            let zone = zone_of(&node);
            let (state, size) = states.get(&zone).copied().unwrap_or((ZoneState::Normal, 1));
            let rate = zone_rate(state, size, &ctx.opts);
            let taken = {
                let mut limiters = ctx.limiters.lock().unwrap_or_else(|p| p.into_inner());
                limiters
                    .entry(zone)
                    .or_insert_with(|| TokenBucket::new(rate, Instant::now()))
                    .take(rate, Instant::now())
            };
            match taken {
                Ok(()) => new = set_taint(&new, NO_EXECUTE, Some(k), now),
                Err(Some(wait)) => next = next.min(wait),
                Err(None) => {}
            }
        }
    }
    if new != old {
        node.spec.get_or_insert_with(Default::default).taints =
            (!new.is_empty()).then_some(new.clone());
        api.replace(&node, &post())
            .await
            .map_err(Error::api("tainting", name.clone()))?;
        let keys: Vec<String> = new
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect();
        tracing::info!(node = %name, taints = ?keys, "node taints updated");
    }
    Ok(Action::requeue(next))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::NodeStatus;

    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn node(ready: Option<&str>) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: ready.map(|r| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status: r.into(),
                        reason: Some("KubeletReady".into()),
                        last_heartbeat_time: Some(Time(t(10))),
                        last_transition_time: Some(Time(t(5))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn silent_node_conditions_become_unknown() {
        let conds = silenced(&node(Some("True")), t(100)).unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_heartbeat_time, Some(Time(t(10))));
        assert_eq!(ready.last_transition_time, Some(Time(t(100))));
        // Conditions never posted appear as Unknown too.
        let mem = conds.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!(mem.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(conds.len(), 4);
        // Already Unknown: nothing to write.
        let mut n = node(None);
        n.status.as_mut().unwrap().conditions = Some(conds);
        assert!(silenced(&n, t(200)).is_none());
    }

    #[test]
    fn taints_follow_ready() {
        assert_eq!(wanted_key(Some("True")), None);
        assert_eq!(wanted_key(Some("False")), Some(NOT_READY));
        assert_eq!(wanted_key(Some("Unknown")), Some(UNREACHABLE));
        let user = Taint {
            key: "dedicated".into(),
            effect: NO_EXECUTE.into(),
            value: Some("x".into()),
            time_added: None,
        };
        let a = set_taint(
            std::slice::from_ref(&user),
            NO_EXECUTE,
            Some(UNREACHABLE),
            t(50),
        );
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].time_added, Some(Time(t(50))));
        // Idempotent: the taint keeps its first timeAdded.
        assert_eq!(set_taint(&a, NO_EXECUTE, Some(UNREACHABLE), t(60)), a);
        // Swapped, then removed; the user's taint stays.
        let b = set_taint(&a, NO_EXECUTE, Some(NOT_READY), t(70));
        assert_eq!(b[1].key, NOT_READY);
        assert_eq!(set_taint(&b, NO_EXECUTE, None, t(80)), vec![user]);
    }

    #[test]
    fn zones_and_rates_as_upstream() {
        use ZoneState::*;
        assert_eq!(zone_state(&[true, true, false], 0.55), Normal);
        assert_eq!(zone_state(&[false, false], 0.55), FullDisruption);
        // Two of three down is not "more than 2".
        assert_eq!(zone_state(&[true, false, false], 0.55), Normal);
        assert_eq!(
            zone_state(&[true, false, false, false], 0.55),
            PartialDisruption
        );
        assert_eq!(
            zone_state(&[true, true, false, false, false, true, true], 0.55),
            Normal
        );
        let o = Options::default();
        assert_eq!(zone_rate(Normal, 3, &o), 0.1);
        assert_eq!(zone_rate(FullDisruption, 3, &o), 0.1);
        assert_eq!(zone_rate(PartialDisruption, 10, &o), 0.0);
        assert_eq!(zone_rate(PartialDisruption, 51, &o), 0.01);
    }

    #[test]
    fn limiter_allows_one_then_waits() {
        let start = Instant::now();
        let mut b = TokenBucket::new(0.1, start);
        assert_eq!(b.take(0.1, start), Ok(()));
        let wait = b.take(0.1, start).unwrap_err().unwrap();
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10));
        assert_eq!(b.take(0.1, start + Duration::from_secs(10)), Ok(()));
        assert_eq!(b.take(0.0, start + Duration::from_secs(11)), Err(None));
    }
}
