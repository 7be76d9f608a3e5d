//! One startup-latency run on a cluster with its agent already registered:
//! pods created through the leader's gRPC Objects service at a fixed rate
//! (open loop), the scheduler binds them, the agent runs them, and a watch on
//! the leader notes when each pod's status first says `Running`.
//!
//! ```text
//!  watch pods from the namespace's list revision ─────────────┐
//!  create pod i at start + i/rate (issued[i] = now) ──► API ──► scheduler ──► agent ──► status Running
//!                                                              └─► running[i] = when the watch showed it
//!  latency[i] = running[i] − issued[i]   (done when all are Running, or none came for STALL)
//! ```

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use balsa_api::grpc::client::Client;
use balsa_proto::objects::{EventType, WatchRequest};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::load::{open_loop, OpenLoop};
use crate::stats::{ms, rate, Summary};

pub const NAMESPACE: &str = "startup";
/// HTTP/2 connections to the leader for the creates.
const CONNECTIONS: usize = 4;
/// The run ends when no pod became Running for this long.
const STALL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub creates: OpenLoop,
    pub running: usize,
    /// Pods the watch showed Failed (an error, or an eviction).
    pub failed: usize,
    /// Create issued → Running seen by the watch.
    pub latency: Summary,
    /// The same path in steps, for the pods that reached Running: create
    /// issued → `spec.nodeName` seen (the scheduler's bind) ...
    pub to_bound: Summary,
    /// (of which create issued → its reply, the leader having applied it)
    pub to_created: Summary,
    /// ... → the agent's first status seen (`status.hostIP` set: the stream
    /// delivered the pod, its worker started and the status was written) ...
    pub bound_to_agent: Summary,
    /// ... → `Running` seen.
    pub agent_to_running: Summary,
    /// Each pod's times, to line up with the masters' debug logs.
    pub timeline: Vec<PodTimes>,
    /// Pods Running over first create → last Running.
    pub running_per_s: f64,
    /// Wall time of the whole run (creates, then waiting for Running).
    pub elapsed_s: f64,
}

/// One pod's path: when its create was issued (Unix time, ms) and each
/// later step in ms after that, where the step was seen.
#[derive(Debug, Clone, Serialize)]
pub struct PodTimes {
    pub name: String,
    pub issued_unix_ms: f64,
    pub created_ms: Option<f64>,
    /// The watch's first event of the pod.
    pub seen_ms: Option<f64>,
    pub bound_ms: Option<f64>,
    pub agent_ms: Option<f64>,
    pub running_ms: Option<f64>,
}

#[derive(Deserialize)]
struct PodView {
    metadata: Meta,
    #[serde(default)]
    spec: Option<SpecView>,
    #[serde(default)]
    status: Option<StatusView>,
}

#[derive(Deserialize)]
struct SpecView {
    #[serde(rename = "nodeName", default)]
    node_name: Option<String>,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
}

#[derive(Deserialize)]
struct StatusView {
    #[serde(default)]
    phase: Option<String>,
    #[serde(rename = "hostIP", default)]
    host_ip: Option<String>,
}

/// When the watch first showed a pod bound, and with the agent's status.
#[derive(Clone, Copy, Default)]
struct Steps {
    seen: Option<Instant>,
    bound: Option<Instant>,
    agent: Option<Instant>,
}

fn pod_name(i: usize) -> String {
    format!("pod-{i}")
}

/// A pod as a user would write it: one container, no requests (so the
/// scheduler packs it anywhere), `sleep` as its command.
fn pod(i: usize) -> Vec<u8> {
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name(i), "namespace": NAMESPACE},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "sleep",
                "image": "busybox:1.36",
                // Ends on its own, should anything outlive the bench.
                "command": ["sleep", "300"],
            }],
        },
    });
    v.to_string().into_bytes()
}

/// Creates `pods` pods at `per_s` through `leader_addr`; returns when every
/// one is Running, or none became Running for [`STALL`].
pub async fn run(leader_addr: &str, pods: usize, per_s: f64) -> anyhow::Result<Run> {
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(Client::connect(leader_addr).await?);
    }
    let after = clients[0]
        .list("", "pods", Some(NAMESPACE), 1, None)
        .await
        .context("listing pods")?
        .revision
        .0;
    let stream = clients[0]
        .watch(WatchRequest {
            group: String::new(),
            resource: "pods".into(),
            namespace: NAMESPACE.into(),
            name: String::new(),
            after: Some(after),
            bookmark_interval_ms: 0,
        })
        .await
        .context("watching pods")?;
    let issued: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..pods).map(|_| OnceLock::new()).collect());
    let created: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..pods).map(|_| OnceLock::new()).collect());
    let running: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; pods]));
    let failed = Arc::new(Mutex::new(vec![false; pods]));
    let steps = Arc::new(Mutex::new(vec![Steps::default(); pods]));
    let t0 = Instant::now();
    let t0_unix = SystemTime::now();
    let watcher = {
        let (running, failed, steps) = (running.clone(), failed.clone(), steps.clone());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut done = 0;
            while done < pods {
                let item = match tokio::time::timeout(STALL, stream.next()).await {
                    Err(_) => return Ok(()),
                    Ok(None) => return Err(anyhow!("the pod watch ended")),
                    Ok(Some(item)) => item.context("pod watch")?,
                };
                if item.r#type == EventType::Bookmark as i32 {
                    continue;
                }
                let now = Instant::now();
                let pod: PodView =
                    serde_json::from_slice(&item.object).context("decoding a pod")?;
                let Some(i) = crate::system::object_index("pod", &pod.metadata.name) else {
                    continue;
                };
                if i >= pods {
                    continue;
                }
                {
                    let mut st = steps.lock().map_err(|_| anyhow!("poisoned"))?;
                    st[i].seen.get_or_insert(now);
                    let bound = pod
                        .spec
                        .and_then(|s| s.node_name)
                        .is_some_and(|n| !n.is_empty());
                    if bound && st[i].bound.is_none() {
                        st[i].bound = Some(now);
                    }
                    let agent = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.host_ip.as_ref())
                        .is_some();
                    if agent && st[i].agent.is_none() {
                        st[i].agent = Some(now);
                    }
                }
                let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
                let mut r = running.lock().map_err(|_| anyhow!("poisoned"))?;
                match phase.as_str() {
                    "Running" if r[i].is_none() => {
                        r[i] = Some(now);
                        done += 1;
                    }
                    "Failed" => {
                        let mut f = failed.lock().map_err(|_| anyhow!("poisoned"))?;
                        if !f[i] && r[i].is_none() {
                            f[i] = true;
                            done += 1;
                        }
                    }
                    _ => {}
                }
            }
            anyhow::Ok(())
        })
    };

    let (stamps, acks) = (issued.clone(), created.clone());
    let duration = Duration::from_secs_f64(pods as f64 / per_s);
    let creates = open_loop(&clients, per_s, duration, move |c: Client, i| {
        let (stamps, acks) = (stamps.clone(), acks.clone());
        async move {
            let _ = stamps[i].set(Instant::now());
            c.create(pod(i).into()).await?;
            let _ = acks[i].set(Instant::now());
            Ok(())
        }
    })
    .await?;
    watcher.await.context("the watch task")??;
    let elapsed = t0.elapsed();

    let running = running.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let failed = failed
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .iter()
        .filter(|f| **f)
        .count();
    let steps = steps.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let mut latencies = Vec::with_capacity(pods);
    let (mut to_bound, mut to_created, mut bound_to_agent, mut agent_to_running) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut timeline = Vec::with_capacity(pods);
    for (i, r) in running.iter().enumerate() {
        let Some(s) = issued[i].get() else {
            continue;
        };
        let after = |t: Option<Instant>| t.map(|t| ms(t.saturating_duration_since(*s)));
        let unix = t0_unix + s.saturating_duration_since(t0);
        timeline.push(PodTimes {
            name: pod_name(i),
            issued_unix_ms: unix
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            created_ms: after(created[i].get().copied()),
            seen_ms: after(steps[i].seen),
            bound_ms: after(steps[i].bound),
            agent_ms: after(steps[i].agent),
            running_ms: after(*r),
        });
        if let Some(r) = r {
            latencies.push(r.saturating_duration_since(*s));
            if let Some(c) = created[i].get() {
                to_created.push(c.saturating_duration_since(*s));
            }
            // A step the watch skipped (two changes in one event) counts as
            // taking no time.
            let bound = steps[i].bound.unwrap_or(*r);
            let agent = steps[i].agent.unwrap_or(*r).max(bound);
            to_bound.push(bound.saturating_duration_since(*s));
            bound_to_agent.push(agent.saturating_duration_since(bound));
            agent_to_running.push(r.saturating_duration_since(agent));
        }
    }
    let first = issued
        .iter()
        .filter_map(|s| s.get().copied())
        .min()
        .unwrap_or(t0);
    let last = running.iter().flatten().max().copied().unwrap_or(first);
    Ok(Run {
        creates,
        running: latencies.len(),
        failed,
        running_per_s: rate(latencies.len(), last.saturating_duration_since(first)),
        latency: Summary::of(&mut latencies),
        to_bound: Summary::of(&mut to_bound),
        to_created: Summary::of(&mut to_created),
        bound_to_agent: Summary::of(&mut bound_to_agent),
        agent_to_running: Summary::of(&mut agent_to_running),
        elapsed_s: elapsed.as_secs_f64(),
        timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_named_for_the_watch() {
        let p: serde_json::Value = serde_json::from_slice(&pod(7)).unwrap();
        let name = p["metadata"]["name"].as_str().unwrap();
        assert_eq!(crate::system::object_index("pod", name), Some(7));
        assert_eq!(p["spec"]["containers"][0]["command"][0], "sleep");
    }
}
