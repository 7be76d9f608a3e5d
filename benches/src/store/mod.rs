//! `store`: Balsa's replicated object store against etcd, three members each
//! on loopback, the same jobs and operation counts for both. Each system runs
//! alone (Balsa first, then etcd) so they never compete for the machine.
//!
//! Connections: the throughput jobs use their own HTTP/2 connections to the
//! leader (one for the sequential job, four shared round-robin by the workers
//! of the in-flight jobs, so no connection carries more than 64 streams); the
//! watch job spreads its watchers over all members, 100 streams per connection;
//! the failover job's writers start on different members and move on to the
//! next member whenever an attempt fails.

mod etcd_cluster;
mod failover;
pub(crate) mod reads;
pub(crate) mod watch;
pub(crate) mod writes;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use self::failover::{FailoverPlan, Round};
use self::watch::{WatchPlan, WatchResult};
use crate::load::Throughput;
use crate::procstat::{machine_busy_s, total_cpu_s};
use crate::system::{leader_clients, System};
use crate::table::{self, Better, Row, Unit};

pub use self::etcd_cluster::DEFAULT_BINARY as DEFAULT_ETCD_BINARY;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    Both,
    Balsa,
    Etcd,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub json: Option<PathBuf>,
    pub balsa_bin: Option<PathBuf>,
    pub etcd_bin: PathBuf,
    pub only: Only,
    pub keep_data: bool,
    pub trace_failover: bool,
    /// Flags added to every `balsa server`.
    pub server_args: Vec<String>,
}

/// A write attempt in the failover job that takes longer is abandoned and
/// retried on the next member. Both systems can hold a write sent to a follower
/// around a leader change (etcd until its 7 s request timeout, Balsa until its
/// 5 s one), so the measured gap can include up to one such wait; 500 ms is
/// well above either system's p99 write latency with 16 in flight.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// The namespaces Balsa's jobs write to (created before the jobs run).
const NAMESPACES: &[&str] = &["bench", "failover", "watch"];

/// Operation counts; the same for both systems.
#[derive(Debug, Clone)]
pub struct Plan {
    pub warmup: usize,
    pub sequential: usize,
    pub in_flight_writes: usize,
    pub reads: usize,
    pub connections: usize,
    pub watch: WatchPlan,
    pub failover: FailoverPlan,
}

impl Plan {
    pub fn full() -> Self {
        Self {
            warmup: 500,
            sequential: 2_000,
            in_flight_writes: 20_000,
            reads: 40_000,
            connections: 4,
            watch: WatchPlan {
                watchers: 1_000,
                writes: 1_000,
                streams_per_connection: 100,
                drain: Duration::from_secs(30),
            },
            failover: FailoverPlan {
                rounds: 5,
                writers: 16,
                before: Duration::from_secs(2),
                after: Duration::from_secs(4),
                recover_within: Duration::from_secs(30),
                attempt_timeout: ATTEMPT_TIMEOUT,
                rejoin_within: Duration::from_secs(60),
                trace: false,
            },
        }
    }

    pub fn quick() -> Self {
        Self {
            warmup: 50,
            sequential: 200,
            in_flight_writes: 1_000,
            reads: 2_000,
            connections: 4,
            watch: WatchPlan {
                watchers: 100,
                writes: 100,
                streams_per_connection: 100,
                drain: Duration::from_secs(5),
            },
            failover: FailoverPlan {
                rounds: 1,
                writers: 16,
                before: Duration::from_secs(1),
                after: Duration::from_secs(2),
                recover_within: Duration::from_secs(10),
                attempt_timeout: ATTEMPT_TIMEOUT,
                rejoin_within: Duration::from_secs(20),
                trace: false,
            },
        }
    }
}

/// What a throughput job cost the machine: the members' CPU time per
/// successful operation, and the cores other processes used meanwhile (the
/// machines these runs share are seldom idle, so ops/s alone misleads).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cost {
    pub cpu_us_per_op: f64,
    pub other_cores: f64,
}

/// What one system did; `None` where a job failed (see `errors`).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Per throughput job (by its label), what it cost.
    pub costs: std::collections::BTreeMap<String, Cost>,
    pub sequential: Option<Throughput>,
    pub writes_64: Option<Throughput>,
    pub writes_256: Option<Throughput>,
    pub reads_64: Option<Throughput>,
    pub watch: Option<WatchResult>,
    pub failover: Vec<Round>,
    pub errors: Vec<String>,
    pub elapsed_s: f64,
}

impl Report {
    fn failed(&mut self, system: &str, job: &str, e: anyhow::Error) {
        let msg = format!("{job}: {e:#}");
        println!("[{system}] {job} FAILED: {e:#}");
        self.errors.push(msg);
    }

    fn gaps(&self) -> Vec<f64> {
        let mut g: Vec<f64> = self.failover.iter().map(|r| r.max_gap_ms).collect();
        g.sort_by(f64::total_cmp);
        g
    }

    fn throughput_errors(&self) -> Option<f64> {
        let jobs = [
            &self.sequential,
            &self.writes_64,
            &self.writes_256,
            &self.reads_64,
        ];
        if jobs.iter().all(|j| j.is_none()) {
            return None;
        }
        Some(
            jobs.iter()
                .filter_map(|j| j.as_ref())
                .map(|t| t.errors as f64)
                .sum(),
        )
    }
}

async fn throughput_job(
    report: &mut Report,
    system: &str,
    pids: &[u32],
    job: &str,
    run: impl std::future::Future<Output = anyhow::Result<Throughput>>,
) -> Option<Throughput> {
    let me = [std::process::id()];
    let (cpu, own, busy) = (total_cpu_s(pids), total_cpu_s(&me), machine_busy_s());
    let out = run.await;
    let cpu_s = total_cpu_s(pids) - cpu;
    let own_s = total_cpu_s(&me) - own;
    match out {
        Ok(t) => {
            let others = machine_busy_s().zip(busy).map_or(0.0, |(after, before)| {
                (after - before - cpu_s - own_s).max(0.0)
            });
            let ok = t.ops.saturating_sub(t.errors).max(1) as f64;
            let cost = Cost {
                cpu_us_per_op: cpu_s * 1e6 / ok,
                other_cores: others / t.elapsed_s.max(1e-9),
            };
            println!(
                "[{system}] {job}: {t}; members' CPU {:.0} µs/op (other processes {:.2} cores)",
                cost.cpu_us_per_op, cost.other_cores
            );
            report.costs.insert(job.to_string(), cost);
            Some(t)
        }
        Err(e) => {
            report.failed(system, job, e);
            None
        }
    }
}

/// Runs every job against a started system. A failed job is reported and the
/// next one runs.
async fn run_jobs<S: System>(sys: &mut S, plan: &Plan) -> Report {
    let started = Instant::now();
    let name = sys.name();
    let mut report = Report::default();
    let pids = sys.pids();

    let one = leader_clients(sys, 1).await;
    let many = leader_clients(sys, plan.connections).await;
    match (one, many) {
        (Ok(one), Ok(many)) => {
            if let Err(e) = writes::writes(&many, 16, plan.warmup, "warm").await {
                report.failed(name, "warm-up", e);
            }
            report.sequential = throughput_job(
                &mut report,
                name,
                &pids,
                "sequential writes (1 in flight)",
                writes::writes(&one, 1, plan.sequential, writes::SEQUENTIAL),
            )
            .await;
            let seq_written = report.sequential.as_ref().map_or(0, |t| t.ops);
            report.writes_64 = throughput_job(
                &mut report,
                name,
                &pids,
                "writes, 64 in flight",
                writes::writes(&many, 64, plan.in_flight_writes, "c64"),
            )
            .await;
            report.writes_256 = throughput_job(
                &mut report,
                name,
                &pids,
                "writes, 256 in flight",
                writes::writes(&many, 256, plan.in_flight_writes, "c256"),
            )
            .await;
            if seq_written == plan.sequential {
                report.reads_64 = throughput_job(
                    &mut report,
                    name,
                    &pids,
                    "linearizable reads, 64 in flight",
                    reads::reads(&many, 64, plan.reads, plan.sequential),
                )
                .await;
            } else {
                report.failed(
                    name,
                    "reads",
                    anyhow::anyhow!("skipped: the sequential writes did not all succeed"),
                );
            }
        }
        (Err(e), _) | (_, Err(e)) => report.failed(name, "connecting to the leader", e),
    }

    match watch::fanout(sys, &plan.watch).await {
        Ok(w) => {
            println!("[{name}] watch fan-out: {w}");
            report.watch = Some(w);
        }
        Err(e) => report.failed(name, "watch fan-out", e),
    }

    for r in 0..plan.failover.rounds {
        match failover::round(sys, &plan.failover, r).await {
            Ok(round) => {
                println!("[{name}] leader SIGKILL round {}: {round}", r + 1);
                report.failover.push(round);
                // Let the restarted member settle before the next round.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                report.failed(name, &format!("leader SIGKILL round {}", r + 1), e);
                break;
            }
        }
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    report
}

fn median(sorted: &[f64]) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    Some(if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    })
}

/// The table's rows, Balsa against etcd.
fn rows(plan: &Plan, balsa: &Report, etcd: &Report) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut tput = |label: &str, pick: fn(&Report) -> &Option<Throughput>, p50: bool| {
        let get = |r: &Report, f: fn(&Throughput) -> f64| pick(r).as_ref().map(f);
        rows.push(Row::new(
            format!("{label}: throughput"),
            Unit::OpsPerSec,
            Better::Higher,
            get(balsa, |t| t.ops_per_s),
            get(etcd, |t| t.ops_per_s),
        ));
        if p50 {
            rows.push(Row::new(
                format!("{label}: p50 latency"),
                Unit::Millis,
                Better::Lower,
                get(balsa, |t| t.latency.p50_ms),
                get(etcd, |t| t.latency.p50_ms),
            ));
        }
        rows.push(Row::new(
            format!("{label}: p99 latency"),
            Unit::Millis,
            Better::Lower,
            get(balsa, |t| t.latency.p99_ms),
            get(etcd, |t| t.latency.p99_ms),
        ));
        let cost = |r: &Report| r.costs.get(label).map(|c| c.cpu_us_per_op);
        rows.push(Row::new(
            format!("{label}: members' CPU per op"),
            Unit::Micros,
            Better::Lower,
            cost(balsa),
            cost(etcd),
        ));
    };
    tput("sequential writes (1 in flight)", |r| &r.sequential, true);
    tput("writes, 64 in flight", |r| &r.writes_64, false);
    tput("writes, 256 in flight", |r| &r.writes_256, false);
    tput("linearizable reads, 64 in flight", |r| &r.reads_64, false);
    rows.push(Row::new(
        "failed ops in the jobs above",
        Unit::Count,
        Better::Lower,
        balsa.throughput_errors(),
        etcd.throughput_errors(),
    ));

    let w = &plan.watch;
    let label = format!("watch, {} watchers x {} writes", w.watchers, w.writes);
    let watch = |r: &Report, f: fn(&WatchResult) -> f64| r.watch.as_ref().map(f);
    rows.push(Row::new(
        format!("{label}: delivery p50 (from issue)"),
        Unit::Millis,
        Better::Lower,
        watch(balsa, |w| w.from_issue.p50_ms),
        watch(etcd, |w| w.from_issue.p50_ms),
    ));
    rows.push(Row::new(
        format!("{label}: delivery p99 (from issue)"),
        Unit::Millis,
        Better::Lower,
        watch(balsa, |w| w.from_issue.p99_ms),
        watch(etcd, |w| w.from_issue.p99_ms),
    ));
    rows.push(Row::new(
        format!("{label}: missed of {}", w.watchers * w.writes),
        Unit::Count,
        Better::Lower,
        watch(balsa, |w| w.missed as f64),
        watch(etcd, |w| w.missed as f64),
    ));

    let f = &plan.failover;
    let gaps = |r: &Report| r.gaps();
    let (bg, eg) = (gaps(balsa), gaps(etcd));
    rows.push(Row::new(
        format!(
            "write gap at leader SIGKILL ({} writers): worst of {}",
            f.writers, f.rounds
        ),
        Unit::Millis,
        Better::Lower,
        bg.last().copied(),
        eg.last().copied(),
    ));
    rows.push(Row::new(
        format!(
            "write gap at leader SIGKILL ({} writers): median of {}",
            f.writers, f.rounds
        ),
        Unit::Millis,
        Better::Lower,
        median(&bg),
        median(&eg),
    ));
    rows
}

async fn run_balsa(opts: &Options, plan: &Plan) -> anyhow::Result<Report> {
    let binary = crate::balsa_cluster::find_binary(opts.balsa_bin.clone())?;
    println!("== Balsa ({}): starting 3 masters", binary.display());
    let t = Instant::now();
    let mut sys =
        crate::balsa_cluster::BalsaSystem::start(binary, NAMESPACES, opts.server_args.clone())
            .await?;
    println!(
        "== Balsa: ready in {:.2}s, data in {}",
        t.elapsed().as_secs_f64(),
        sys.dir().display()
    );
    let report = run_jobs(&mut sys, plan).await;
    sys.shutdown(opts.keep_data).await;
    Ok(report)
}

async fn run_etcd(opts: &Options, plan: &Plan) -> anyhow::Result<Report> {
    etcd_cluster::check_binary(&opts.etcd_bin)?;
    let version = std::process::Command::new(&opts.etcd_bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "version unknown".into());
    println!(
        "== etcd ({}, {version}): starting 3 members",
        opts.etcd_bin.display()
    );
    let t = Instant::now();
    let mut sys = etcd_cluster::EtcdSystem::start(opts.etcd_bin.clone()).await?;
    println!(
        "== etcd: ready in {:.2}s, data in {}",
        t.elapsed().as_secs_f64(),
        sys.dir().display()
    );
    let report = run_jobs(&mut sys, plan).await;
    sys.shutdown(opts.keep_data).await;
    Ok(report)
}

fn settle(result: anyhow::Result<Report>, system: &str) -> Report {
    result.unwrap_or_else(|e| {
        println!("[{system}] could not run: {e:#}");
        Report {
            errors: vec![format!("{e:#}")],
            ..Report::default()
        }
    })
}

/// Runs the store benchmark; fails (after printing the table) if any job did.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut plan = if opts.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    plan.failover.trace = opts.trace_failover;
    println!(
        "store benchmark ({}): {}-byte values; {} sequential writes, {} writes at 64 and at 256 in flight, \
         {} reads at 64 in flight, {} watchers x {} writes, {} leader kill round(s)",
        if opts.quick { "quick" } else { "full" },
        crate::system::VALUE_LEN,
        plan.sequential,
        plan.in_flight_writes,
        plan.reads,
        plan.watch.watchers,
        plan.watch.writes,
        plan.failover.rounds
    );
    let skipped = || Report {
        errors: vec!["not run (--only)".into()],
        ..Report::default()
    };
    let balsa = if opts.only == Only::Etcd {
        skipped()
    } else {
        settle(run_balsa(&opts, &plan).await, "Balsa")
    };
    let etcd = if opts.only == Only::Balsa {
        skipped()
    } else {
        settle(run_etcd(&opts, &plan).await, "etcd")
    };

    let rows = rows(&plan, &balsa, &etcd);
    let elapsed = started.elapsed();
    println!();
    println!("Balsa/etcd is Balsa's figure over etcd's on every row; `better` says which direction wins.");
    print!("{}", table::render(&rows));
    println!(
        "total time: {:.1}s (Balsa jobs {:.1}s, etcd jobs {:.1}s)",
        elapsed.as_secs_f64(),
        balsa.elapsed_s,
        etcd.elapsed_s
    );

    if let Some(path) = &opts.json {
        let doc = serde_json::json!({
            "benchmark": "store",
            "quick": opts.quick,
            "value_bytes": crate::system::VALUE_LEN,
            "elapsed_s": elapsed.as_secs_f64(),
            "rows": rows,
            "balsa": balsa,
            "etcd": etcd,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    let failures: Vec<&String> = balsa
        .errors
        .iter()
        .chain(&etcd.errors)
        .filter(|e| e.as_str() != "not run (--only)")
        .collect();
    if !failures.is_empty() {
        anyhow::bail!(
            "{} job(s) failed: {}",
            failures.len(),
            failures
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[1.0, 2.0, 10.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 10.0]), Some(3.0));
    }

    #[test]
    fn a_table_even_when_nothing_ran() {
        let text = table::render(&rows(
            &Plan::quick(),
            &Report::default(),
            &Report::default(),
        ));
        assert_eq!(text.lines().count(), 2 + 19);
        assert!(text.contains("n/a"));
    }
}
