//! Pod startup latency, as Kubernetes' SLO defines it: from the pod's
//! create to its `Running` status observed by a watch (scheduling, the
//! assignment stream, the agent's start and its status write included),
//! for stateless pods whose image is present. Each job runs on a fresh
//! three-master cluster (`balsa::up::start`, as the other benches) with one
//! `balsa node` process:
//!
//! - `process`: one node on the process runtime, `sleep` pods at 30/s;
//! - `sim`: 1,000 hollow nodes in one agent (`--runtime sim --count 1000`,
//!   start delay 0), pods at 1,000/s.
//!
//! Kubernetes' SLO is p99 <= 5 s; Balsa's targets are p99 <= 1 s (process)
//! and <= 500 ms (sim).

mod agent;
mod job;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use balsa_api::grpc::client::Client;
use serde::Serialize;

use crate::balsa_cluster::{find_binary, BalsaSystem};
use crate::procstat::{machine_busy_s, total_cpu_s, ProcStat};
use crate::system::System;
use crate::table::markdown;
use agent::AgentProcess;
use job::Run;

/// Kubernetes' pod startup SLO: p99 create → Running observed.
const KUBE_SLO_P99_MS: f64 = 5_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Job {
    /// One agent on the process runtime, 30 pods/s.
    Process,
    /// 1,000 sim nodes in one agent, 1,000 pods/s.
    Sim,
}

impl Job {
    /// `(nodes, pods, pods/s, target p99 ms)`.
    fn shape(self, quick: bool) -> (usize, usize, f64, f64) {
        match (self, quick) {
            // kubelet's max-pods is 110: one node holds 100 sleeping pods.
            (Job::Process, false) => (1, 100, 30.0, 1_000.0),
            (Job::Process, true) => (1, 45, 30.0, 1_000.0),
            (Job::Sim, false) => (1_000, 10_000, 1_000.0, 500.0),
            (Job::Sim, true) => (200, 1_000, 1_000.0, 500.0),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Job::Process => "process",
            Job::Sim => "sim",
        }
    }
}

pub struct Options {
    pub quick: bool,
    pub json: Option<PathBuf>,
    pub balsa_bin: Option<PathBuf>,
    pub keep_data: bool,
    pub server_args: Vec<String>,
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, Serialize)]
struct Proc {
    cpu_s: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
}

#[derive(Debug, Serialize)]
struct JobReport {
    job: Job,
    nodes: usize,
    pods: usize,
    target_per_s: f64,
    target_p99_ms: f64,
    /// /proc/loadavg when the job started.
    load_average: String,
    /// How long the agent took to register every node.
    register_s: Option<f64>,
    run: Option<Run>,
    /// CPU over the run (first create to last Running), leader first.
    masters: Vec<Proc>,
    agent: Option<Proc>,
    /// Cores other processes on the machine used meanwhile.
    others_cores: Option<f64>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    quick: bool,
    kube_slo_p99_ms: f64,
    jobs: Vec<JobReport>,
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let jobs = if opts.jobs.is_empty() {
        vec![Job::Process, Job::Sim]
    } else {
        opts.jobs.clone()
    };
    let binary = find_binary(opts.balsa_bin.clone())?;
    let mut report = Report {
        quick: opts.quick,
        kube_slo_p99_ms: KUBE_SLO_P99_MS,
        jobs: Vec::new(),
    };
    let mut failed = false;
    for job in jobs {
        let (nodes, pods, per_s, target) = job.shape(opts.quick);
        let load = crate::procstat::load_average();
        println!(
            "[startup] {}: {nodes} node(s), {pods} pods at {per_s:.0}/s (load average {load})",
            job.label()
        );
        let mut r = JobReport {
            job,
            nodes,
            pods,
            target_per_s: per_s,
            target_p99_ms: target,
            load_average: load,
            register_s: None,
            run: None,
            masters: Vec::new(),
            agent: None,
            others_cores: None,
            error: None,
        };
        if let Err(e) = run_job(&binary, &opts, &mut r).await {
            eprintln!("  {} failed: {e:#}", job.label());
            r.error = Some(format!("{e:#}"));
            failed = true;
        }
        if let Some(run) = &r.run {
            println!(
                "  {} of {pods} Running ({} failed); create → Running p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (target p99 {target:.0} ms); creates {:.0}/s, Running {:.0}/s",
                run.running,
                run.failed,
                run.latency.p50_ms,
                run.latency.p99_ms,
                run.latency.max_ms,
                run.creates.achieved_per_s,
                run.running_per_s
            );
            println!(
                "  steps p50 / p99 ms: create → bound {:.0} / {:.0} (create's reply {:.0} / {:.0}), bound → agent's first status {:.0} / {:.0}, → Running {:.0} / {:.0}",
                run.to_bound.p50_ms,
                run.to_bound.p99_ms,
                run.to_created.p50_ms,
                run.to_created.p99_ms,
                run.bound_to_agent.p50_ms,
                run.bound_to_agent.p99_ms,
                run.agent_to_running.p50_ms,
                run.agent_to_running.p99_ms
            );
            failed |= run.running < pods;
        }
        report.jobs.push(r);
    }
    println!();
    println!("{}", render(&report));
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    anyhow::ensure!(!failed, "a job did not complete (see above)");
    Ok(())
}

async fn run_job(
    binary: &std::path::Path,
    opts: &Options,
    r: &mut JobReport,
) -> anyhow::Result<()> {
    let sys = BalsaSystem::start(
        binary.to_path_buf(),
        &[job::NAMESPACE],
        opts.server_args.clone(),
    )
    .await?;
    let out = with_cluster(binary, &sys, r).await;
    sys.shutdown(opts.keep_data).await;
    out
}

async fn with_cluster(
    binary: &std::path::Path,
    sys: &BalsaSystem,
    r: &mut JobReport,
) -> anyhow::Result<()> {
    let leader_i = sys.leader().await?;
    let file = sys.file()?;
    let masters = file.api_addrs();
    let leader_addr = file.members[leader_i].api.clone();
    let client = Client::connect(&leader_addr).await?;
    let (name, args): (&str, Vec<String>) = match r.job {
        Job::Process => ("bench-node", vec!["--runtime".into(), "process".into()]),
        Job::Sim => (
            "sim",
            vec![
                "--runtime".into(),
                "sim".into(),
                "--count".into(),
                r.nodes.to_string(),
                "--sim-delay-ms".into(),
                "0".into(),
            ],
        ),
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = AgentProcess::spawn(binary, sys.dir(), name, &masters, &args)?;
    let out = measured(sys, leader_i, &client, &leader_addr, &mut agent, name, r).await;
    // Every pod of the process runtime is stopped by the agent itself.
    agent.stop(Duration::from_secs(30)).await;
    out
}

async fn measured(
    sys: &BalsaSystem,
    leader_i: usize,
    client: &Client,
    leader_addr: &str,
    agent: &mut AgentProcess,
    name: &str,
    r: &mut JobReport,
) -> anyhow::Result<()> {
    let took = agent
        .registered(client, name, r.nodes, Duration::from_secs(180))
        .await?;
    r.register_s = Some(took.as_secs_f64());
    println!(
        "  {} node(s) registered in {:.1} s",
        r.nodes,
        took.as_secs_f64()
    );
    // The scheduler's node informer and the agents' streams settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    agent.check()?;

    let file = sys.file()?;
    let pids: Vec<u32> = file.members.iter().map(|m| m.pid).collect();
    let me = [std::process::id()];
    let before: Vec<f64> = pids.iter().map(|&p| total_cpu_s(&[p])).collect();
    let agent_before = total_cpu_s(&[agent.pid]);
    let (own_before, busy_before) = (total_cpu_s(&me), machine_busy_s());
    let t0 = Instant::now();

    let run = job::run(leader_addr, r.pods, r.target_per_s).await?;

    let elapsed = t0.elapsed().as_secs_f64();
    let after: Vec<f64> = pids.iter().map(|&p| total_cpu_s(&[p])).collect();
    let agent_cpu = total_cpu_s(&[agent.pid]) - agent_before;
    let masters_cpu: f64 = after.iter().sum::<f64>() - before.iter().sum::<f64>();
    r.others_cores = machine_busy_s().zip(busy_before).map(|(a, b)| {
        let others = (a - b) - masters_cpu - agent_cpu - (total_cpu_s(&me) - own_before);
        others.max(0.0) / elapsed
    });
    let stat = |pid: u32, cpu_s: f64| {
        let s = ProcStat::read(pid).unwrap_or_default();
        Proc {
            cpu_s,
            rss_mib: s.rss_mib,
            peak_rss_mib: s.peak_rss_mib,
        }
    };
    let mut order: Vec<usize> = (0..pids.len()).collect();
    order.sort_by_key(|i| *i != leader_i);
    r.masters = order
        .into_iter()
        .map(|i| stat(pids[i], after[i] - before[i]))
        .collect();
    r.agent = Some(stat(agent.pid, agent_cpu));
    agent.check()?;
    r.run = Some(run);
    Ok(())
}

fn render(report: &Report) -> String {
    let header = [
        "job",
        "nodes",
        "pods",
        "target creates/s",
        "achieved creates/s",
        "Running",
        "create→Running p50 / p99 / max ms",
        "target p99 ms",
        "Running/s",
        "masters' CPU s (leader first)",
        "masters' RSS MiB",
        "agent CPU s",
        "agent RSS / peak MiB",
        "other cores",
        "load avg",
    ];
    let mut body = Vec::new();
    for j in &report.jobs {
        let mut row = vec![
            j.job.label().to_string(),
            j.nodes.to_string(),
            j.pods.to_string(),
            format!("{:.0}", j.target_per_s),
        ];
        match &j.run {
            Some(run) => row.extend([
                format!("{:.0}", run.creates.achieved_per_s),
                format!("{} ({} failed)", run.running, run.failed),
                format!(
                    "{:.0} / {:.0} / {:.0}",
                    run.latency.p50_ms, run.latency.p99_ms, run.latency.max_ms
                ),
                format!("{:.0}", j.target_p99_ms),
                format!("{:.0}", run.running_per_s),
            ]),
            None => row.extend(vec!["-".to_string(); 5]),
        }
        row.push(
            j.masters
                .iter()
                .map(|m| format!("{:.1}", m.cpu_s))
                .collect::<Vec<_>>()
                .join(" / "),
        );
        row.push(
            j.masters
                .iter()
                .map(|m| format!("{:.0}", m.rss_mib))
                .collect::<Vec<_>>()
                .join(" / "),
        );
        match &j.agent {
            Some(a) => row.extend([
                format!("{:.1}", a.cpu_s),
                format!("{:.0} / {:.0}", a.rss_mib, a.peak_rss_mib),
            ]),
            None => row.extend(vec!["-".to_string(); 2]),
        }
        row.push(j.others_cores.map_or("-".into(), |o| format!("{o:.2}")));
        row.push(j.load_average.clone());
        body.push(row);
    }
    markdown(&header, &body, 1)
}
