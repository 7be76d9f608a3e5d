//! A Deployment at scale, as issue 7's benchmark asks: three masters, N
//! hollow nodes in one `balsa node --runtime sim` process, a Deployment of R
//! replicas; time from its create to all R Available, then a rolling update
//! (maxSurge 25%, maxUnavailable 25%) to completion, both read off a watch
//! of the Deployment's status. A watch of its pods on a follower shows where
//! the time goes (creates, binds, Ready per second), and the masters' CPU
//! and RSS, the Raft entries and the elections say what it cost.
//!
//! ```text
//!  up::start (3 masters) ─► balsa node --runtime sim --count N ─► N Nodes Ready
//!  watches (follower): deployment status, pods
//!  create Deployment ─► availableReplicas = R                      (phase 1)
//!  patch the template ─► updated = available = replicas = R,
//!                        old ReplicaSet at 0                       (phase 2)
//! ```

mod meter;
mod objects;
mod pods;
mod report;
mod sim_nodes;
mod stall;
mod watch;
mod writes;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use balsa_api::client::{Api, Patch, PatchParams};
use balsa_api::grpc::client::Client;
use k8s_openapi::api::apps::v1::Deployment;
use serde::Serialize;

use crate::balsa_cluster::{find_binary, BalsaSystem};
use crate::stats::{rate, Summary};
use crate::system::System;
use meter::{Meter, Usage};
use objects::{DEPLOYMENT, NAMESPACE};
use pods::{latencies, peak_live, per_second, PodTimes, PodWatch, Timeline};
use sim_nodes::SimNodes;
use watch::{DeployState, DeploymentWatch};
use writes::{WriteCount, Writes};

/// Issue 7's targets.
const AVAILABLE_TARGET_S: f64 = 10.0;
const ROLLOUT_TARGET_S: f64 = 30.0;
/// A phase fails when its watched progress stands still this long.
const STALL: Duration = Duration::from_secs(90);

pub struct Options {
    pub quick: bool,
    pub json: Option<PathBuf>,
    pub balsa_bin: Option<PathBuf>,
    pub keep_data: bool,
    pub server_args: Vec<String>,
    /// Overrides of the shape (default 1,000 x 10,000; quick 100 x 1,000).
    pub nodes: Option<usize>,
    pub replicas: Option<usize>,
    /// Where to write every pod's moments (see [`pods::write_csv`]).
    pub pods_csv: Option<PathBuf>,
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Create (or patch) sent → the status meeting the phase's condition.
    pub seconds: f64,
    pub target_s: f64,
    /// New pods Ready per second over the phase.
    pub pods_per_s: f64,
    /// Pods of the phase the pod watch saw appear / bound / Ready.
    pub pods_seen: usize,
    pub pods_bound: usize,
    pub pods_ready: usize,
    /// Pods marked for deletion during the phase.
    pub pods_deleted: usize,
    /// The best second of each: creates, binds, Ready.
    pub peak_created_per_s: usize,
    pub peak_bound_per_s: usize,
    pub peak_ready_per_s: usize,
    /// Pod seen by the watch → bound, and → Ready (kube's pod startup SLO
    /// is p99 <= 5 s, create to running).
    pub to_bound: Summary,
    pub to_ready: Summary,
    /// When the last pod of the phase appeared, was bound, turned Ready,
    /// in seconds from the phase's start.
    pub last_seen_s: f64,
    pub last_bound_s: f64,
    pub last_ready_s: f64,
    /// The Deployment's status.replicas at most and availableReplicas at
    /// least during the phase (the rolling update's bounds).
    pub most_replicas: i64,
    pub fewest_available: i64,
    /// The most pods alive at once (seen, not yet marked for deletion)
    /// during the phase, from the pod watch: what maxSurge bounds.
    pub most_live_pods: usize,
    pub usage: Usage,
    pub raft_entries_per_pod: Option<f64>,
    /// The writes of the phase, by what they were to.
    pub writes: Option<Writes>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub quick: bool,
    pub nodes: usize,
    pub replicas: usize,
    pub load_average: String,
    pub nodes_ready_s: f64,
    pub available: Option<Phase>,
    pub rollout: Option<Phase>,
    /// The old ReplicaSet's spec.replicas / status.replicas at the end.
    pub old_replicaset: Option<(i64, i64)>,
    pub error: Option<String>,
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let (nodes, replicas) = if opts.quick {
        (100, 1_000)
    } else {
        (1_000, 10_000)
    };
    let nodes = opts.nodes.unwrap_or(nodes);
    let replicas = opts.replicas.unwrap_or(replicas);
    let binary = find_binary(opts.balsa_bin.clone())?;
    let mut report = Report {
        quick: opts.quick,
        nodes,
        replicas,
        load_average: crate::procstat::load_average(),
        nodes_ready_s: 0.0,
        available: None,
        rollout: None,
        old_replicaset: None,
        error: None,
    };
    println!(
        "[deployment] {nodes} sim nodes, {replicas} replicas (load average {})",
        report.load_average
    );
    let sys = BalsaSystem::start(binary.clone(), &[NAMESPACE], opts.server_args.clone()).await?;
    let sim = SimNodes::start(&binary, sys.dir(), nodes);
    let outcome = match sim {
        Ok(mut sim) => {
            let r = run_on(&sys, &mut sim, &mut report, opts.pods_csv.as_deref()).await;
            sim.stop().await;
            r
        }
        Err(e) => Err(e),
    };
    sys.shutdown(opts.keep_data).await;
    if let Err(e) = &outcome {
        eprintln!("  run failed: {e:#}");
        report.error = Some(format!("{e:#}"));
    }

    println!();
    println!("{}", report::render(&report));
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    outcome
}

async fn run_on(
    sys: &BalsaSystem,
    sim: &mut SimNodes,
    report: &mut Report,
    pods_csv: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let replicas = report.replicas as i64;
    let leader_i = sys.leader().await?;
    let file = sys.file()?;
    let leader_addr = file.members[leader_i].api.clone();
    let follower_addr = file.members[(leader_i + 1) % file.members.len()]
        .api
        .clone();
    let leader = Client::connect(&leader_addr).await?;
    let follower = Client::connect(&follower_addr).await?;
    let typed = balsa_api::client::Client::new(vec![leader_addr.clone()])?;

    let took = sim.wait_ready(&leader).await?;
    report.nodes_ready_s = took.as_secs_f64();
    println!("  {} nodes Ready in {:.1} s", sim.count, took.as_secs_f64());
    // Let every master's scheduler and controller caches take in the nodes.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let meter = Meter {
        pids: file.members.iter().map(|m| m.pid).collect(),
        ids: file.members.iter().map(|m| m.id).collect(),
        leader: leader_i,
        agents: sim.pid(),
        client: leader.clone(),
    };
    let after = follower
        .list("apps", "deployments", Some(NAMESPACE), 1, None)
        .await?
        .revision
        .0;
    let pod_watch = PodWatch::start(&follower, NAMESPACE, after).await?;
    let mut deploy = DeploymentWatch::start(&follower, NAMESPACE, DEPLOYMENT, after).await?;
    let writes = WriteCount::start(&follower, NAMESPACE, after).await?;

    // Phase 1: create → all Available.
    let before = meter.read().await;
    let writes_before = writes.read(&leader).await;
    let t0 = Instant::now();
    let body = serde_json::to_vec(&objects::deployment(replicas))?;
    leader
        .create(body.into())
        .await
        .context("creating the deployment")?;
    let progress_line = |s: &DeployState| {
        let (seen, bound, ready) = pod_watch.counts();
        println!(
            "  {:>5.1} s: deployment replicas {} updated {} available {}; pods seen {seen} bound {bound} ready {ready}",
            t0.elapsed().as_secs_f64(),
            s.replicas,
            s.updated,
            s.available
        );
    };
    let done_at = deploy
        .wait_for(
            "all available",
            STALL,
            |s| s.observed_generation >= 1 && s.available >= replicas,
            |s| s.available + s.replicas,
            progress_line,
        )
        .await;
    let done_at = explain_stall(&typed, &deploy, done_at).await?;
    let after_1 = meter.read().await;
    let writes_after = writes.read(&leader).await;
    let timeline = pod_watch.snapshot()?;
    let mut phase = measure(
        &meter,
        (&before, &after_1),
        (t0, done_at),
        &timeline,
        &deploy.since(t0),
        AVAILABLE_TARGET_S,
    );
    phase.writes = writes_after.zip(writes_before).map(|(b, a)| b.since(&a));
    println!(
        "  all {replicas} available in {:.2} s ({:.0} pods/s)",
        phase.seconds, phase.pods_per_s
    );
    report.available = Some(phase);
    if let Some(path) = pods_csv {
        pod_watch.write_csv(path)?;
    }

    // Phase 2: a rolling update to completion.
    let api = Api::<Deployment>::namespaced(typed.clone(), NAMESPACE);
    let old_rs = current_replicasets(&follower).await?;
    let before = meter.read().await;
    let writes_before = writes.read(&leader).await;
    let t1 = Instant::now();
    api.patch(
        DEPLOYMENT,
        &PatchParams::default(),
        &Patch::Merge(objects::new_template()),
    )
    .await
    .context("changing the template")?;
    let progress_line = |s: &DeployState| {
        let (seen, bound, ready) = pod_watch.counts();
        println!(
            "  {:>5.1} s: deployment replicas {} updated {} available {}; pods seen {seen} bound {bound} ready {ready}",
            t1.elapsed().as_secs_f64(),
            s.replicas,
            s.updated,
            s.available
        );
    };
    let done_at = deploy
        .wait_for(
            "rollout complete",
            STALL,
            |s| {
                s.generation >= 2
                    && s.observed_generation >= s.generation
                    && s.updated == replicas
                    && s.available == replicas
                    && s.replicas == replicas
            },
            |s| s.updated * 3 + s.available * 2 + s.replicas,
            progress_line,
        )
        .await;
    let done_at = explain_stall(&typed, &deploy, done_at).await?;
    let after_2 = meter.read().await;
    let writes_after = writes.read(&leader).await;
    let timeline = pod_watch.snapshot()?;
    let mut phase = measure(
        &meter,
        (&before, &after_2),
        (t1, done_at),
        &timeline,
        &deploy.since(t1),
        ROLLOUT_TARGET_S,
    );
    phase.writes = writes_after.zip(writes_before).map(|(b, a)| b.since(&a));
    println!(
        "  rollout complete in {:.2} s ({:.0} new pods/s)",
        phase.seconds, phase.pods_per_s
    );
    report.rollout = Some(phase);
    if let Some(path) = pods_csv {
        pod_watch.write_csv(path)?;
    }
    report.old_replicaset = Some(old_at_zero(&follower, &old_rs).await?);
    Ok(())
}

/// The names of the ReplicaSets in the namespace now.
/// A phase that stalled: before failing, print which layer stopped short
/// of the store (the watch, the Deployment or a ReplicaSet status).
async fn explain_stall<T>(
    client: &balsa_api::client::Client,
    deploy: &DeploymentWatch,
    waited: anyhow::Result<T>,
) -> anyhow::Result<T> {
    if waited.is_err() {
        if let Err(e) = stall::explain(client, &deploy.latest()).await {
            println!("  stalled: reading the store failed: {e:#}");
        }
    }
    waited
}

async fn current_replicasets(client: &Client) -> anyhow::Result<Vec<String>> {
    Ok(objects::replicasets(client)
        .await?
        .into_iter()
        .map(|r| r.0)
        .collect())
}

/// Waits (10 s at most) for the ReplicaSets named `old` to be scaled to
/// and report 0; returns their summed spec/status replicas.
async fn old_at_zero(client: &Client, old: &[String]) -> anyhow::Result<(i64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sets = objects::replicasets(client).await?;
        let (spec, status) = sets
            .iter()
            .filter(|r| old.contains(&r.0))
            .fold((0, 0), |(a, b), r| (a + r.1, b + r.2));
        if (spec == 0 && status == 0) || Instant::now() > deadline {
            if spec != 0 || status != 0 {
                bail!("the old ReplicaSet is not at 0: spec {spec}, status {status}");
            }
            return Ok((spec, status));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A phase's figures from its readings, window, pods and statuses.
fn measure(
    meter: &Meter,
    (before, after): (&meter::Reading, &meter::Reading),
    (start, end): (Instant, Instant),
    timeline: &Timeline,
    states: &[DeployState],
    target_s: f64,
) -> Phase {
    let elapsed = end.saturating_duration_since(start);
    // The phase's pods: those that appeared after it began.
    let mine: Timeline = timeline
        .iter()
        .filter(|(_, t)| t.seen.is_some_and(|s| s >= start))
        .map(|(n, t)| (n.clone(), *t))
        .collect();
    let deleted = timeline
        .values()
        .filter(|t| t.gone.is_some_and(|g| g >= start && g <= end))
        .count();
    let peak = |f: fn(&PodTimes) -> Option<Instant>| {
        per_second(mine.values().filter_map(f), start, end)
            .into_iter()
            .max()
            .unwrap_or(0)
    };
    let last = |f: fn(&PodTimes) -> Option<Instant>| {
        mine.values()
            .filter_map(f)
            .max()
            .map_or(0.0, |t| t.saturating_duration_since(start).as_secs_f64())
    };
    let ready = mine.values().filter(|t| t.ready.is_some()).count();
    let usage = meter.usage(before, after);
    let raft_entries_per_pod = usage
        .raft_entries
        .filter(|_| !mine.is_empty())
        .map(|e| e as f64 / mine.len() as f64);
    Phase {
        seconds: elapsed.as_secs_f64(),
        target_s,
        pods_per_s: rate(ready, elapsed),
        pods_seen: mine.len(),
        pods_bound: mine.values().filter(|t| t.bound.is_some()).count(),
        pods_ready: ready,
        pods_deleted: deleted,
        peak_created_per_s: peak(|t| t.seen),
        peak_bound_per_s: peak(|t| t.bound),
        peak_ready_per_s: peak(|t| t.ready),
        to_bound: Summary::of(&mut latencies(&mine, |t| t.seen, |t| t.bound)),
        to_ready: Summary::of(&mut latencies(&mine, |t| t.seen, |t| t.ready)),
        last_seen_s: last(|t| t.seen),
        last_bound_s: last(|t| t.bound),
        last_ready_s: last(|t| t.ready),
        most_replicas: states.iter().map(|s| s.replicas).max().unwrap_or(0),
        fewest_available: states.iter().map(|s| s.available).min().unwrap_or(0),
        most_live_pods: peak_live(timeline, start, end),
        usage,
        raft_entries_per_pod,
        writes: None,
    }
}
