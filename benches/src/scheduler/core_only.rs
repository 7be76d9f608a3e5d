//! The scheduling algorithm alone: `balsa_scheduler::Scheduler` over an
//! in-memory `Snapshot` of the shape's nodes, each pod assumed onto its node
//! before the next is scheduled (as the driver does), with no API, Raft or
//! watch in the way. Separates the algorithm's cost from the writes'.

use std::time::{Duration, Instant};

use anyhow::Context;
use balsa_scheduler::{Scheduler, SchedulerConfig, Snapshot};
use k8s_openapi::api::core::v1::{Node, Pod};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::objects::{self, Constraint};
use crate::stats::{rate, Summary};

#[derive(Debug, Clone, Serialize)]
pub struct CoreRun {
    pub threads: usize,
    pub scheduled: usize,
    pub unschedulable: usize,
    pub elapsed_s: f64,
    pub pods_per_s: f64,
    /// One `schedule` + `assume`.
    pub cycle: Summary,
    /// Mean nodes the filters looked at per pod (percentageOfNodesToScore).
    pub mean_evaluated_nodes: f64,
    pub placement_ok: bool,
    pub placement: String,
}

/// Schedules `pods` pods onto `nodes` nodes with `threads` filter/score
/// threads (0 = the scheduler's default: every core).
pub fn run(
    nodes: usize,
    pods: usize,
    constraint: Constraint,
    threads: usize,
) -> anyhow::Result<CoreRun> {
    let mut snapshot = Snapshot::default();
    for i in 0..nodes {
        let node: Node = serde_json::from_value(objects::node(i)).context("node template")?;
        snapshot.upsert_node(node)?;
    }
    let mut config = SchedulerConfig::default();
    if threads > 0 {
        config.parallelism = threads;
    }
    let threads = config.parallelism;
    let mut scheduler = Scheduler::new(config);
    let mut rng = StdRng::seed_from_u64(1);
    let pods: Vec<Pod> = (0..pods)
        .map(|i| {
            let mut p: Pod = serde_json::from_value(objects::pod(i, constraint))?;
            p.metadata.uid = Some(format!("uid-{i}"));
            Ok(p)
        })
        .collect::<anyhow::Result<_>>()
        .context("pod template")?;
    let mut cycles: Vec<Duration> = Vec::with_capacity(pods.len());
    let mut placed = Vec::with_capacity(pods.len());
    let mut unschedulable = 0;
    let mut evaluated = 0usize;
    let started = Instant::now();
    for pod in &pods {
        let t = Instant::now();
        balsa_scheduler::plugins::ensure_counted(&mut snapshot, pod);
        match scheduler.schedule(&snapshot, pod, &mut rng) {
            Ok(r) => {
                snapshot.assume(pod, &r.node)?;
                evaluated += r.evaluated_nodes;
                placed.push(crate::system::object_index("node", &r.node).unwrap_or(0));
            }
            Err(_) => unschedulable += 1,
        }
        cycles.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    let scheduled = placed.len();
    let (placement_ok, placement) = objects::check_placement(constraint, &placed, nodes);
    Ok(CoreRun {
        threads,
        scheduled,
        unschedulable,
        elapsed_s: elapsed.as_secs_f64(),
        pods_per_s: rate(scheduled, elapsed),
        cycle: Summary::of(&mut cycles),
        mean_evaluated_nodes: evaluated as f64 / scheduled.max(1) as f64,
        placement_ok,
        placement,
    })
}
