//! One shape on a real three-master cluster: Node objects through the API,
//! then pods created through the leader's gRPC Objects service while a watch
//! on the leader notes when each pod's `spec.nodeName` appears (the binding
//! Balsa's scheduler made through the API).
//!
//! ```text
//!  nodes: create (64 in flight) ─► all masters applied ─► settle 1 s
//!  pods:  watch pods from the last node's revision ─┐
//!         create (CREATES_IN_FLIGHT, 4 connections) ─┴─► bound[i] = when the
//!         watch showed pod i with a nodeName; done when every pod is bound
//!         or no bind came for STALL
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use balsa_api::grpc::client::Client;
use balsa_proto::objects::{EventType, WatchRequest};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::objects::{self, Constraint, NAMESPACE};
use crate::balsa_cluster::BalsaSystem;
use crate::load::{closed_loop, Throughput};
use crate::procstat::{machine_busy_s, total_cpu_s, ProcStat};
use crate::stats::{rate, Summary};
use crate::system::System;

/// Node creates in flight.
const NODES_IN_FLIGHT: usize = 64;
/// Pod creates in flight: the scheduler binds 128 at once, and creates must
/// stay ahead of it.
pub const CREATES_IN_FLIGHT: usize = 256;
/// HTTP/2 connections to the leader for the creates.
const CONNECTIONS: usize = 4;
/// The run ends when no pod was bound for this long.
const STALL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
pub struct Master {
    pub id: u64,
    pub leader: bool,
    /// CPU seconds used from the first pod create to the last bind.
    pub cpu_s: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterRun {
    pub node_create_s: f64,
    pub creates: Throughput,
    pub bound: usize,
    /// First create issued → last bind seen by the watch.
    pub makespan_s: f64,
    pub pods_per_s: f64,
    /// Create issued → bound pod seen by the watch.
    pub create_to_bound: Summary,
    /// Pods whose bind the watch showed in each second from the first create.
    pub binds_per_second: Vec<usize>,
    pub placement_ok: bool,
    pub placement: String,
    pub elections: Option<u64>,
    /// CPU other processes on the machine used meanwhile, in cores.
    pub others_cores: Option<f64>,
    /// Leader first.
    pub masters: Vec<Master>,
}

/// When the watch showed a pod bound, and the index of its node.
type Bound = (Instant, usize);

#[derive(Deserialize)]
struct PodView {
    metadata: PodMeta,
    #[serde(default)]
    spec: Option<PodSpecView>,
}

#[derive(Deserialize)]
struct PodMeta {
    name: String,
}

#[derive(Deserialize)]
struct PodSpecView {
    #[serde(rename = "nodeName", default)]
    node_name: Option<String>,
}

async fn create_nodes(clients: &[Client], nodes: usize) -> anyhow::Result<(Throughput, u64)> {
    let last = Arc::new(AtomicU64::new(0));
    let l = last.clone();
    let t = closed_loop(clients, NODES_IN_FLIGHT, nodes, move |c: Client, i| {
        let l = l.clone();
        async move {
            let body = serde_json::to_vec(&objects::node(i))?;
            let (_, rev) = c.create(body.into()).await?;
            l.fetch_max(rev.0, Ordering::Relaxed);
            Ok(())
        }
    })
    .await?;
    anyhow::ensure!(
        t.errors == 0,
        "{} of {nodes} node creates failed (first: {})",
        t.errors,
        t.first_error.as_deref().unwrap_or("?")
    );
    Ok((t, last.load(Ordering::Relaxed)))
}

/// Waits until every master has applied what the leader had committed when
/// the wait began (a fixed target: the controllers keep writing meanwhile).
async fn all_applied(sys: &BalsaSystem, leader: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut target = None;
    loop {
        let s = leader.cluster_status().await?;
        let commit = s
            .members
            .iter()
            .find(|m| m.id == s.leader)
            .map(|m| m.commit_index);
        if target.is_none() {
            target = commit;
        }
        if let Some(t) = target {
            if s.members.len() == sys.members() && s.members.iter().all(|m| m.applied_index >= t) {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "masters did not apply the nodes within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(
    sys: &BalsaSystem,
    nodes: usize,
    pods: usize,
    constraint: Constraint,
) -> anyhow::Result<ClusterRun> {
    let leader_i = sys.leader().await?;
    let file = sys.file()?;
    let leader_addr = file.members[leader_i].api.clone();
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(Client::connect(&leader_addr).await?);
    }

    let (node_t, after) = create_nodes(&clients, nodes).await?;
    all_applied(sys, &clients[0]).await?;
    // The schedulers' node informers are fed by the same watch as ours;
    // give them a moment so no pod is tried against a partial node set.
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "  {nodes} nodes created in {:.1} s ({:.0}/s)",
        node_t.elapsed_s, node_t.ops_per_s
    );

    let pids: Vec<u32> = file.members.iter().map(|m| m.pid).collect();
    let ids: Vec<u64> = file.members.iter().map(|m| m.id).collect();
    let term = sys.term().await.ok();
    let me = [std::process::id()];
    let cpu_before: Vec<f64> = pids.iter().map(|&p| total_cpu_s(&[p])).collect();
    let (own_before, busy_before) = (total_cpu_s(&me), machine_busy_s());

    // The watch first, from before the first pod: it sees every bind.
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
    let starts: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..pods).map(|_| OnceLock::new()).collect());
    let bound: Arc<Mutex<Vec<Option<Bound>>>> = Arc::new(Mutex::new(vec![None; pods]));
    let t0 = Instant::now();
    let watcher = {
        let bound = bound.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut count = 0;
            while count < pods {
                let item = match tokio::time::timeout(STALL, stream.next()).await {
                    Err(_) => return Ok(count),
                    Ok(None) => return Err(anyhow!("the pod watch ended")),
                    Ok(Some(item)) => item.context("pod watch")?,
                };
                if item.r#type == EventType::Bookmark as i32 {
                    continue;
                }
                let now = Instant::now();
                let pod: PodView =
                    serde_json::from_slice(&item.object).context("decoding a pod")?;
                let Some(node) = pod.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty())
                else {
                    continue;
                };
                let (Some(i), Some(n)) = (
                    crate::system::object_index("pod", &pod.metadata.name),
                    crate::system::object_index("node", &node),
                ) else {
                    continue;
                };
                let mut b = bound.lock().map_err(|_| anyhow!("poisoned"))?;
                if i < pods && b[i].is_none() {
                    b[i] = Some((now, n));
                    count += 1;
                }
            }
            anyhow::Ok(count)
        })
    };

    let s = starts.clone();
    let creates = closed_loop(&clients, CREATES_IN_FLIGHT, pods, move |c: Client, i| {
        let s = s.clone();
        async move {
            let body = serde_json::to_vec(&objects::pod(i, constraint))?;
            let _ = s[i].set(Instant::now());
            c.create(body.into()).await?;
            Ok(())
        }
    })
    .await?;
    println!("  pods created: {creates}");
    let count = watcher.await.context("the watch task")??;

    let cpu_after: Vec<f64> = pids.iter().map(|&p| total_cpu_s(&[p])).collect();
    let elapsed_all = t0.elapsed();
    let cpu_masters: f64 = cpu_after.iter().sum::<f64>() - cpu_before.iter().sum::<f64>();
    let others_cores = machine_busy_s().zip(busy_before).map(|(after, before)| {
        let others = (after - before) - cpu_masters - (total_cpu_s(&me) - own_before);
        others.max(0.0) / elapsed_all.as_secs_f64()
    });
    let elections = match (term, sys.term().await.ok()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };

    let bound = bound.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let first = starts
        .iter()
        .filter_map(|s| s.get().copied())
        .min()
        .unwrap_or(t0);
    let last = bound
        .iter()
        .flatten()
        .map(|(t, _)| *t)
        .max()
        .unwrap_or(first);
    let makespan = last.saturating_duration_since(first);
    let mut latencies = Vec::with_capacity(count);
    let mut placed = Vec::with_capacity(count);
    let mut per_second = vec![0usize; makespan.as_secs() as usize + 1];
    for (i, b) in bound.iter().enumerate() {
        if let (Some((t, n)), Some(s)) = (b, starts[i].get()) {
            latencies.push(t.saturating_duration_since(*s));
            placed.push(*n);
            per_second[t.saturating_duration_since(first).as_secs() as usize] += 1;
        }
    }
    let (placement_ok, placement) = objects::check_placement(constraint, &placed, nodes);

    let mut masters: Vec<Master> = (0..pids.len())
        .map(|i| {
            let st = ProcStat::read(pids[i]).unwrap_or_default();
            Master {
                id: ids[i],
                leader: i == leader_i,
                cpu_s: cpu_after[i] - cpu_before[i],
                rss_mib: st.rss_mib,
                peak_rss_mib: st.peak_rss_mib,
            }
        })
        .collect();
    masters.sort_by_key(|m| !m.leader);
    Ok(ClusterRun {
        node_create_s: node_t.elapsed_s,
        creates,
        bound: count,
        makespan_s: makespan.as_secs_f64(),
        pods_per_s: rate(count, makespan),
        create_to_bound: Summary::of(&mut latencies),
        binds_per_second: per_second,
        placement_ok,
        placement,
        elections,
        others_cores,
        masters,
    })
}
