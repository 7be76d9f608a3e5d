//! The scheduler's throughput, as kube-scheduler's scheduler_perf measures
//! it: Node objects, pods created through the API, each bound through the API
//! by Balsa's scheduler (inside the masters, acting on the leader), timed from
//! the first create to the last bind. Each shape runs on a fresh three-master
//! cluster. Beside it, the same shape through the scheduling algorithm alone
//! (`core_only`), so the algorithm's cost can be told from the writes'.

mod cluster;
mod core_only;
mod objects;

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::balsa_cluster::{find_binary, BalsaSystem};
use crate::system::System;
use crate::table::{markdown, thousands};
use cluster::ClusterRun;
use core_only::CoreRun;
use objects::Constraint;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// SchedulingBasic: 5,000 nodes x 10,000 pods (500 x 1,000 with --quick).
    Basic,
    /// SchedulingBasic's large case: 5,000 nodes x 50,000 pods (500 x 5,000).
    Basic50k,
    /// Required pod anti-affinity on the hostname: 5,000 nodes x 2,000 pods
    /// (500 x 300).
    AntiAffinity,
    /// Topology spread over 3 zones, maxSkew 5, DoNotSchedule: 5,000 nodes x
    /// 10,000 pods (500 x 1,000).
    Spread,
}

impl Shape {
    const DEFAULT: [Shape; 3] = [Shape::Basic, Shape::AntiAffinity, Shape::Spread];

    fn label(self) -> &'static str {
        match self {
            Shape::Basic | Shape::Basic50k => "basic",
            Shape::AntiAffinity => "anti-affinity",
            Shape::Spread => "topology spread",
        }
    }

    fn size(self, quick: bool) -> (usize, usize) {
        let (nodes, pods) = match self {
            Shape::Basic | Shape::Spread => (5_000, 10_000),
            Shape::Basic50k => (5_000, 50_000),
            Shape::AntiAffinity => (5_000, 2_000),
        };
        if quick {
            let pods = if self == Shape::AntiAffinity {
                300
            } else {
                pods / 10
            };
            (nodes / 10, pods)
        } else {
            (nodes, pods)
        }
    }

    fn constraint(self) -> Constraint {
        match self {
            Shape::Basic | Shape::Basic50k => Constraint::None,
            Shape::AntiAffinity => Constraint::AntiAffinity,
            Shape::Spread => Constraint::Spread,
        }
    }

    /// kube-scheduler's CI threshold for this shape (scheduler_perf
    /// SchedulingBasic, 5,000 nodes), in pods/s.
    fn kube_gate(self) -> Option<f64> {
        match self {
            Shape::Basic => Some(680.0),
            Shape::Basic50k => Some(810.0),
            _ => None,
        }
    }
}

pub struct Options {
    pub quick: bool,
    pub json: Option<PathBuf>,
    pub balsa_bin: Option<PathBuf>,
    pub keep_data: bool,
    pub server_args: Vec<String>,
    pub shapes: Vec<Shape>,
    pub core_only: bool,
}

#[derive(Debug, Serialize)]
struct ShapeReport {
    shape: Shape,
    nodes: usize,
    pods: usize,
    /// /proc/loadavg when the shape started.
    load_average: String,
    kube_gate_pods_per_s: Option<f64>,
    core: Option<CoreRun>,
    core_one_thread: Option<CoreRun>,
    cluster: Option<ClusterRun>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    quick: bool,
    creates_in_flight: usize,
    shapes: Vec<ShapeReport>,
}

fn clock() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let shapes = if opts.shapes.is_empty() {
        Shape::DEFAULT.to_vec()
    } else {
        opts.shapes.clone()
    };
    let binary = if opts.core_only {
        None
    } else {
        Some(find_binary(opts.balsa_bin.clone())?)
    };
    let mut report = Report {
        quick: opts.quick,
        creates_in_flight: cluster::CREATES_IN_FLIGHT,
        shapes: Vec::new(),
    };
    let mut failed = false;
    for shape in shapes {
        let (nodes, pods) = shape.size(opts.quick);
        let constraint = shape.constraint();
        let load = crate::procstat::load_average();
        println!(
            "[scheduler {}] {} {nodes} nodes x {pods} pods (load average {load})",
            clock(),
            shape.label()
        );
        let mut r = ShapeReport {
            shape,
            nodes,
            pods,
            load_average: load,
            kube_gate_pods_per_s: shape.kube_gate(),
            core: None,
            core_one_thread: None,
            cluster: None,
            error: None,
        };
        // The algorithm alone, on the default thread count and on one.
        let core = tokio::task::spawn_blocking(move || {
            let all = core_only::run(nodes, pods, constraint, 0)?;
            let one = core_only::run(nodes, pods, constraint, 1)?;
            anyhow::Ok((all, one))
        })
        .await?;
        match core {
            Ok((all, one)) => {
                println!(
                    "  core only: {:.0} pods/s on {} threads, {:.0} on 1 (cycle p50 {:.3} ms, p99 {:.3} ms; {:.0} nodes looked at a pod; {})",
                    all.pods_per_s,
                    all.threads,
                    one.pods_per_s,
                    all.cycle.p50_ms,
                    all.cycle.p99_ms,
                    all.mean_evaluated_nodes,
                    all.placement
                );
                r.core = Some(all);
                r.core_one_thread = Some(one);
            }
            Err(e) => {
                eprintln!("  core only failed: {e:#}");
                r.error = Some(format!("core only: {e:#}"));
                failed = true;
            }
        }
        if let Some(binary) = &binary {
            match run_cluster(binary.clone(), &opts, nodes, pods, constraint).await {
                Ok(c) => {
                    println!(
                        "  cluster: {} of {pods} bound in {:.2} s: {:.0} pods/s ({})",
                        c.bound, c.makespan_s, c.pods_per_s, c.placement
                    );
                    if c.bound < pods || !c.placement_ok {
                        failed = true;
                    }
                    r.cluster = Some(c);
                }
                Err(e) => {
                    eprintln!("  cluster run failed: {e:#}");
                    r.error = Some(format!("cluster: {e:#}"));
                    failed = true;
                }
            }
        }
        report.shapes.push(r);
    }

    println!();
    println!("{}", render(&report));
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    anyhow::ensure!(
        !failed,
        "a shape did not complete (see above); its figures are partial"
    );
    Ok(())
}

async fn run_cluster(
    binary: PathBuf,
    opts: &Options,
    nodes: usize,
    pods: usize,
    constraint: Constraint,
) -> anyhow::Result<ClusterRun> {
    let sys = BalsaSystem::start(binary, &[objects::NAMESPACE], opts.server_args.clone()).await?;
    let out = cluster::run(&sys, nodes, pods, constraint).await;
    sys.shutdown(opts.keep_data).await;
    out
}

fn render(report: &Report) -> String {
    let header = [
        "shape",
        "nodes x pods",
        "bound",
        "first create → last bind s",
        "pods/s",
        "kube gate",
        "Balsa/kube",
        "creates/s",
        "create→bound p50 / p99 / max ms",
        "peak binds/s",
        "core only pods/s (all / 1 thread)",
        "placement",
        "elections",
        "masters' CPU s (leader first)",
        "masters' RSS / peak MiB",
        "other cores",
        "load avg",
    ];
    let mut body = Vec::new();
    for s in &report.shapes {
        let core = match (&s.core, &s.core_one_thread) {
            (Some(a), Some(o)) => {
                format!("{} / {}", thousands(a.pods_per_s), thousands(o.pods_per_s))
            }
            _ => "-".into(),
        };
        let mut row = vec![
            s.shape.label().to_string(),
            format!(
                "{} x {}",
                thousands(s.nodes as f64),
                thousands(s.pods as f64)
            ),
        ];
        match &s.cluster {
            Some(c) => {
                row.extend([
                    thousands(c.bound as f64),
                    format!("{:.2}", c.makespan_s),
                    thousands(c.pods_per_s),
                    s.kube_gate_pods_per_s.map_or("-".into(), thousands),
                    s.kube_gate_pods_per_s
                        .map_or("-".into(), |g| format!("{:.2}", c.pods_per_s / g)),
                    thousands(c.creates.ops_per_s),
                    format!(
                        "{} / {} / {}",
                        thousands(c.create_to_bound.p50_ms),
                        thousands(c.create_to_bound.p99_ms),
                        thousands(c.create_to_bound.max_ms)
                    ),
                    thousands(c.binds_per_second.iter().copied().max().unwrap_or(0) as f64),
                    core,
                    format!(
                        "{} {}",
                        if c.placement_ok { "ok" } else { "WRONG" },
                        c.placement
                    ),
                    c.elections.map_or("-".into(), |e| e.to_string()),
                    c.masters
                        .iter()
                        .map(|m| format!("{:.1}", m.cpu_s))
                        .collect::<Vec<_>>()
                        .join(" / "),
                    c.masters
                        .iter()
                        .map(|m| {
                            format!("{} / {}", thousands(m.rss_mib), thousands(m.peak_rss_mib))
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    c.others_cores.map_or("-".into(), |o| format!("{o:.2}")),
                ]);
            }
            None => {
                let mut rest = vec!["-".to_string(); 8];
                rest.push(core);
                rest.push(
                    s.core
                        .as_ref()
                        .map_or("-".into(), |c| format!("{} (core)", c.placement)),
                );
                rest.extend(vec!["-".to_string(); 4]);
                row.extend(rest);
            }
        }
        row.push(s.load_average.clone());
        body.push(row);
    }
    markdown(&header, &body, 1)
}
