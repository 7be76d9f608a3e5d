//! `rest`: the Kubernetes REST API of a three-master Balsa cluster, each job
//! through the leader's REST address and through a follower's, and the same
//! job through the gRPC Objects service (what the store benchmark measures) so
//! the REST layer's overhead shows as a ratio.
//!
//! ```text
//!  bench ─REST (HTTP/1.1, JSON)─┐
//!                               ├─► master (leader | follower ─forward─► leader) ─► Raft ─► store
//!  bench ─gRPC (HTTP/2)─────────┘
//! ```
//!
//! Jobs, in order: creates at 64 in flight; linearizable gets at 64 in flight
//! (of objects seeded beforehand); lists of a namespace holding 500 objects;
//! watch delivery to watchers spread over all masters; creates at a fixed
//! 1,000 a second, open loop (the target row: p99 <= 50 ms).

mod client;
mod list;
mod rate;
mod watch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use self::client::RestClient;
use self::watch::{Side, WatchPlan, WatchResult};
use crate::balsa_cluster::{find_binary, BalsaClient, BalsaSystem};
use crate::load::{OpenLoop, Throughput};
use crate::procstat::{machine_busy_s, total_cpu_s, ProcStat};
use crate::stats::Summary;
use crate::store::{reads, writes};
use crate::system::{Kv, System};
use crate::table;

/// The p99 the fixed-rate create row must stay under (Kubernetes' own SLO
/// for mutating calls is 1 s).
const TARGET_P99_MS: f64 = 50.0;

#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub json: Option<PathBuf>,
    pub balsa_bin: Option<PathBuf>,
    pub keep_data: bool,
    /// Added to every `balsa server` command line (e.g. Raft timings).
    pub server_args: Vec<String>,
    /// The jobs to run (all when empty).
    pub jobs: Vec<Job>,
}

/// The jobs, to run a subset with `--jobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Job {
    Create,
    Get,
    List,
    Watch,
    Rate,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub warmup: usize,
    pub creates: usize,
    /// Objects written before the get jobs, which read them back in turn.
    pub seeded: usize,
    pub gets: usize,
    pub list_objects: usize,
    pub lists: usize,
    pub list_in_flight: usize,
    #[serde(skip)]
    pub watch: WatchPlan,
    pub watchers: usize,
    pub watch_writes: usize,
    pub rate_per_s: f64,
    pub rate_duration_s: u64,
    /// HTTP/2 connections per master for the gRPC jobs.
    pub grpc_connections: usize,
}

impl Plan {
    pub fn full() -> Self {
        Self::new(500, 20_000, 2_000, 40_000, 2_000, 300, 1_000, 30)
    }

    pub fn quick() -> Self {
        Self::new(200, 1_000, 500, 2_000, 100, 30, 100, 3)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        warmup: usize,
        creates: usize,
        seeded: usize,
        gets: usize,
        lists: usize,
        watchers: usize,
        watch_writes: usize,
        rate_duration_s: u64,
    ) -> Self {
        Self {
            warmup,
            creates,
            seeded,
            gets,
            list_objects: 500,
            lists,
            list_in_flight: 8,
            watch: WatchPlan {
                watchers,
                writes: watch_writes,
                drain: Duration::from_secs(10),
            },
            watchers,
            watch_writes,
            rate_per_s: 1_000.0,
            rate_duration_s,
            grpc_connections: 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Api {
    #[serde(rename = "REST")]
    Rest,
    #[serde(rename = "gRPC")]
    Grpc,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Rest => "REST",
            Api::Grpc => "gRPC",
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub job: String,
    pub api: Api,
    /// "leader", "follower" or (watch) "followers".
    pub path: &'static str,
    pub ops: usize,
    /// Closed loop: successful ops over the run; open loop: the achieved rate;
    /// watch: none.
    pub ops_per_s: Option<f64>,
    pub latency: Summary,
    /// Failed operations (watch: missed deliveries).
    pub failed: usize,
    /// CPU time all three masters used during the job, per successful op.
    pub master_cpu_us_per_op: Option<f64>,
    /// Raft elections during the job (the rise of the highest term).
    pub elections: Option<u64>,
    /// CPU (in cores) that processes other than the masters and this bench
    /// used during the job: other work on the machine competing with it.
    pub others_cores: Option<f64>,
}

impl Row {
    fn throughput(job: &str, api: Api, path: &'static str, t: &Throughput, m: Measured) -> Self {
        Self {
            job: job.into(),
            api,
            path,
            ops: t.ops,
            ops_per_s: Some(t.ops_per_s),
            latency: t.latency,
            failed: t.errors,
            master_cpu_us_per_op: per_op(m.cpu_s, t.ops),
            elections: m.elections,
            others_cores: m.others_cores,
        }
    }

    fn open_loop(job: &str, api: Api, path: &'static str, o: &OpenLoop, m: Measured) -> Self {
        Self {
            job: job.into(),
            api,
            path,
            ops: o.ops,
            ops_per_s: Some(o.achieved_per_s),
            latency: o.latency,
            failed: o.errors,
            master_cpu_us_per_op: per_op(m.cpu_s, o.ops),
            elections: m.elections,
            others_cores: m.others_cores,
        }
    }

    fn watch(job: &str, api: Api, path: &'static str, s: &Side, m: Measured) -> Self {
        Self {
            job: job.into(),
            api,
            path,
            ops: s.delivered,
            ops_per_s: None,
            latency: s.from_issue,
            failed: s.missed,
            master_cpu_us_per_op: per_op(m.cpu_s, s.delivered),
            elections: m.elections,
            others_cores: m.others_cores,
        }
    }
}

fn per_op(cpu_s: f64, ops: usize) -> Option<f64> {
    (ops > 0 && cpu_s > 0.0).then(|| cpu_s * 1e6 / ops as f64)
}

/// Every figure of a run, for the JSON file.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub throughput: Vec<(String, Throughput)>,
    pub open_loop: Vec<(String, OpenLoop)>,
    pub watch: Vec<(String, WatchResult)>,
    pub masters: Vec<ProcStat>,
    pub errors: Vec<String>,
    pub elapsed_s: f64,
}

impl Report {
    fn failed(&mut self, job: &str, e: anyhow::Error) {
        println!("[rest {}] {job} FAILED: {e:#}", clock());
        self.errors.push(format!("{job}: {e:#}"));
    }
}

/// The clients of one path (the leader's or a follower's REST and gRPC).
struct Target {
    path: &'static str,
    rest: Vec<RestClient>,
    grpc: Vec<BalsaClient>,
}

/// What the masters (and the rest of the machine) did during one job.
#[derive(Debug, Clone, Copy)]
struct Measured {
    cpu_s: f64,
    elections: Option<u64>,
    others_cores: Option<f64>,
}

/// The wall-clock time of day (UTC), to match the bench's lines with the
/// masters' logs.
fn clock() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ms = now.as_millis() % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

struct Bench<'a> {
    sys: &'a BalsaSystem,
    jobs: Vec<Job>,
    plan: Plan,
    pids: Vec<u32>,
    report: Report,
}

impl Bench<'_> {
    /// Runs one job, noting the masters' CPU time and the Raft term around it.
    async fn measure<T>(
        &mut self,
        label: &str,
        job: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> Option<(T, Measured)> {
        println!("[rest {}] {label} ...", clock());
        let term = self.sys.term().await.ok();
        let me = [std::process::id()];
        let (cpu, own, busy, t) = (
            total_cpu_s(&self.pids),
            total_cpu_s(&me),
            machine_busy_s(),
            Instant::now(),
        );
        let out = job.await;
        let cpu_s = total_cpu_s(&self.pids) - cpu;
        let others_cores = machine_busy_s().zip(busy).map(|(after, before)| {
            let others = (after - before) - cpu_s - (total_cpu_s(&me) - own);
            others.max(0.0) / t.elapsed().as_secs_f64()
        });
        let elections = match (term, self.sys.term().await.ok()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        match out {
            Ok(t) => Some((
                t,
                Measured {
                    cpu_s,
                    elections,
                    others_cores,
                },
            )),
            Err(e) => {
                self.report.failed(label, e);
                None
            }
        }
    }

    async fn closed(
        &mut self,
        job: &str,
        api: Api,
        path: &'static str,
        run: impl std::future::Future<Output = anyhow::Result<Throughput>>,
    ) {
        let label = format!("{job}, {} via {path}", api.name());
        if let Some((t, m)) = self.measure(&label, run).await {
            println!("[rest {}] {label}: {t}", clock());
            self.report
                .rows
                .push(Row::throughput(job, api, path, &t, m));
            self.report.throughput.push((label, t));
        }
    }

    async fn fixed_rate<C: Kv>(&mut self, api: Api, path: &'static str, clients: &[C]) {
        let job = format!("creates at {:.0}/s, open loop", self.plan.rate_per_s);
        let label = format!("{job}, {} via {path}", api.name());
        let prefix = format!("r-{}-{path}", api.name().to_lowercase());
        let duration = Duration::from_secs(self.plan.rate_duration_s);
        let run = rate::fixed_rate(clients, self.plan.rate_per_s, duration, &prefix);
        if let Some((o, m)) = self.measure(&label, run).await {
            println!("[rest {}] {label}: {o}", clock());
            self.report
                .rows
                .push(Row::open_loop(&job, api, path, &o, m));
            self.report.open_loop.push((label, o));
        }
        // Let the store settle (compaction, queues) before the next job.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    async fn watch<C: Kv>(
        &mut self,
        api: Api,
        writer: &C,
        members: &[Vec<C>],
        leader: usize,
        prefix: &'static str,
    ) {
        let job = format!(
            "watch delivery, {} watchers x {} writes",
            self.plan.watchers, self.plan.watch_writes
        );
        let label = format!("{job}, {}", api.name());
        let plan = self.plan.watch.clone();
        let run = watch::delivery(writer, members, leader, "bench-watch", prefix, &plan);
        if let Some((w, m)) = self.measure(&label, run).await {
            println!("[rest {}] {label}: {w}", clock());
            let events = (w.leader.delivered + w.followers.delivered).max(1) as f64;
            let share = |s: &Side| Measured {
                cpu_s: m.cpu_s * s.delivered as f64 / events,
                ..m
            };
            self.report
                .rows
                .push(Row::watch(&job, api, "leader", &w.leader, share(&w.leader)));
            self.report.rows.push(Row::watch(
                &job,
                api,
                "followers",
                &w.followers,
                share(&w.followers),
            ));
            self.report.watch.push((label, w));
        }
    }
}

const NAMESPACES: &[&str] = &["bench", list::SPACE, "bench-watch"];

/// Creates the namespaces through the REST API (retrying while the cluster
/// settles).
async fn create_namespaces(rest: &RestClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for ns in NAMESPACES {
        loop {
            match rest.create_namespace(ns).await {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("creating namespace {ns}")))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}

async fn grpc_clients(sys: &BalsaSystem, i: usize, n: usize) -> anyhow::Result<Vec<BalsaClient>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(sys.client(i).await?);
    }
    Ok(out)
}

async fn run_jobs(bench: &mut Bench<'_>) -> anyhow::Result<()> {
    let sys = bench.sys;
    let plan = bench.plan.clone();
    let members = sys.file()?.members.clone();
    let leader = sys.leader().await?;
    let follower = (leader + 1) % members.len();
    println!(
        "== leader: master {} (REST {}), follower: master {} (REST {})",
        members[leader].id, members[leader].rest, members[follower].id, members[follower].rest
    );
    let rest: Vec<RestClient> = members.iter().map(|m| RestClient::new(&m.rest)).collect();
    create_namespaces(&rest[leader]).await?;
    let mut targets = Vec::new();
    for (path, i) in [("leader", leader), ("follower", follower)] {
        targets.push(Target {
            path,
            rest: vec![rest[i].clone()],
            grpc: grpc_clients(sys, i, plan.grpc_connections).await?,
        });
    }

    // Warm both APIs and both paths (connections, caches, the leader's queues).
    for t in &targets {
        let p = t.path;
        writes::writes(&t.rest, 64, plan.warmup, &format!("warm-rest-{p}")).await?;
        writes::writes(&t.grpc, 64, plan.warmup, &format!("warm-grpc-{p}")).await?;
    }
    // The objects the get jobs read, and the namespace the list jobs list.
    let seeded = writes::writes(&targets[0].grpc, 64, plan.seeded, writes::SEQUENTIAL).await?;
    anyhow::ensure!(seeded.errors == 0, "seeding the objects to read: {seeded}");
    list::seed(&targets[0].grpc, plan.list_objects).await?;
    let listed = rest[follower].count(list::SPACE).await?;
    anyhow::ensure!(
        listed == plan.list_objects,
        "a REST list of {} held {listed} objects, not {}",
        list::SPACE,
        plan.list_objects
    );

    let runs = |j: Job| bench.jobs.is_empty() || bench.jobs.contains(&j);
    let (create, get, list, watch, rate) = (
        runs(Job::Create),
        runs(Job::Get),
        runs(Job::List),
        runs(Job::Watch),
        runs(Job::Rate),
    );

    let job = "creates, 64 in flight";
    for t in targets.iter().filter(|_| create) {
        let prefix = format!("c-rest-{}", t.path);
        let run = writes::writes(&t.rest, 64, plan.creates, &prefix);
        bench.closed(job, Api::Rest, t.path, run).await;
    }
    for t in targets.iter().filter(|_| create) {
        let prefix = format!("c-grpc-{}", t.path);
        let run = writes::writes(&t.grpc, 64, plan.creates, &prefix);
        bench.closed(job, Api::Grpc, t.path, run).await;
    }

    let job = "gets (linearizable), 64 in flight";
    for t in targets.iter().filter(|_| get) {
        let run = reads::reads(&t.rest, 64, plan.gets, plan.seeded);
        bench.closed(job, Api::Rest, t.path, run).await;
    }
    for t in targets.iter().filter(|_| get) {
        let run = reads::reads(&t.grpc, 64, plan.gets, plan.seeded);
        bench.closed(job, Api::Grpc, t.path, run).await;
    }

    let job = format!(
        "lists of {} objects, {} in flight",
        plan.list_objects, plan.list_in_flight
    );
    for t in targets.iter().filter(|_| list) {
        let run = list::lists(&t.rest, plan.list_in_flight, plan.lists, plan.list_objects);
        bench.closed(&job, Api::Rest, t.path, run).await;
    }
    for t in targets.iter().filter(|_| list) {
        let run = list::lists(&t.grpc, plan.list_in_flight, plan.lists, plan.list_objects);
        bench.closed(&job, Api::Grpc, t.path, run).await;
    }

    if watch {
        watch_jobs(bench, &rest, &targets[0], leader).await?;
    }
    for t in targets.iter().filter(|_| rate) {
        bench.fixed_rate(Api::Rest, t.path, &t.rest).await;
    }
    for t in targets.iter().filter(|_| rate) {
        bench.fixed_rate(Api::Grpc, t.path, &t.grpc).await;
    }
    Ok(())
}

async fn watch_jobs(
    bench: &mut Bench<'_>,
    rest: &[RestClient],
    leader_target: &Target,
    leader: usize,
) -> anyhow::Result<()> {
    let sys = bench.sys;
    // REST watchers: one pooled client per master (a connection per watch).
    let rest_members: Vec<Vec<RestClient>> = rest.iter().map(|r| vec![r.clone()]).collect();
    bench
        .watch(Api::Rest, &rest[leader], &rest_members, leader, "wr")
        .await;
    // gRPC watchers: 100 streams per HTTP/2 connection, as the store bench.
    let per_member = bench
        .plan
        .watchers
        .div_ceil(rest.len())
        .div_ceil(100)
        .max(1);
    let mut grpc_members = Vec::new();
    for i in 0..rest.len() {
        grpc_members.push(grpc_clients(sys, i, per_member).await?);
    }
    bench
        .watch(
            Api::Grpc,
            &leader_target.grpc[0],
            &grpc_members,
            leader,
            "wg",
        )
        .await;
    Ok(())
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// The table: one line per (job, API, path); a REST line carries its ratio to
/// the gRPC line of the same job and path.
pub fn render(rows: &[Row]) -> String {
    let header = [
        "job",
        "API",
        "path",
        "ops",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "failed",
        "masters' CPU µs/op",
        "elections",
        "other procs' cores",
        "ops/s REST/gRPC",
        "p99 REST/gRPC",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let grpc = (r.api == Api::Rest)
                .then(|| {
                    rows.iter()
                        .find(|g| g.api == Api::Grpc && g.job == r.job && g.path == r.path)
                })
                .flatten();
            let ratio = |f: fn(&Row) -> Option<f64>| {
                let (a, b) = (f(r)?, f(grpc?)?);
                (b > 0.0).then(|| a / b)
            };
            vec![
                r.job.clone(),
                r.api.name().into(),
                r.path.into(),
                r.ops.to_string(),
                fmt_opt(r.ops_per_s, 1),
                format!("{:.2}", r.latency.p50_ms),
                format!("{:.2}", r.latency.p99_ms),
                format!("{:.2}", r.latency.max_ms),
                r.failed.to_string(),
                fmt_opt(r.master_cpu_us_per_op, 0),
                r.elections.map_or_else(|| "-".into(), |e| e.to_string()),
                fmt_opt(r.others_cores, 2),
                fmt_opt(ratio(|r| r.ops_per_s), 2),
                fmt_opt(ratio(|r| Some(r.latency.p99_ms)), 2),
            ]
        })
        .collect();
    table::markdown(&header, &body, 3)
}

/// Runs the REST benchmark; fails (after printing the table) if any job did.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = if opts.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    println!(
        "rest benchmark ({}): {}-byte values; {} creates and {} gets at 64 in flight, {} lists of {} objects \
         at {} in flight, {} watchers x {} writes, {:.0} creates/s for {}s open loop; each through the leader \
         and a follower, over REST and over gRPC",
        if opts.quick { "quick" } else { "full" },
        crate::system::VALUE_LEN,
        plan.creates,
        plan.gets,
        plan.lists,
        plan.list_objects,
        plan.list_in_flight,
        plan.watchers,
        plan.watch_writes,
        plan.rate_per_s,
        plan.rate_duration_s
    );
    let binary = find_binary(opts.balsa_bin.clone())?;
    println!("== Balsa ({}): starting 3 masters", binary.display());
    if !opts.server_args.is_empty() {
        println!("== masters' extra flags: {}", opts.server_args.join(" "));
    }
    let sys = BalsaSystem::start(binary, &[], opts.server_args.clone())
        .await
        .context("starting Balsa")?;
    let pids: Vec<u32> = sys.file()?.members.iter().map(|m| m.pid).collect();
    let mut bench = Bench {
        sys: &sys,
        jobs: opts.jobs.clone(),
        plan: plan.clone(),
        pids: pids.clone(),
        report: Report::default(),
    };
    if let Err(e) = run_jobs(&mut bench).await {
        bench.report.failed("setup", e);
    }
    let mut report = bench.report;
    report.masters = pids.iter().filter_map(|&p| ProcStat::read(p)).collect();
    sys.shutdown(opts.keep_data).await;
    report.elapsed_s = started.elapsed().as_secs_f64();

    println!();
    print!("{}", render(&report.rows));
    println!(
        "latency: closed loop from issue to answer; open loop from each create's intended start; \
         watch from just before the write is issued to its receipt (failed = missed deliveries)."
    );
    for m in &report.masters {
        println!(
            "master pid {}: RSS {:.0} MiB (peak {:.0} MiB), CPU {:.1} s",
            m.pid, m.rss_mib, m.peak_rss_mib, m.cpu_s
        );
    }
    for r in report
        .rows
        .iter()
        .filter(|r| r.api == Api::Rest && r.job.contains("open loop"))
    {
        println!(
            "target (REST creates at {:.0}/s via the {}): p99 {:.2} ms {} {TARGET_P99_MS} ms",
            plan.rate_per_s,
            r.path,
            r.latency.p99_ms,
            if r.latency.p99_ms <= TARGET_P99_MS {
                "<="
            } else {
                "> (missed)"
            }
        );
    }
    println!("total time: {:.1}s", report.elapsed_s);

    if let Some(path) = &opts.json {
        let doc = serde_json::json!({
            "benchmark": "rest",
            "quick": opts.quick,
            "value_bytes": crate::system::VALUE_LEN,
            "plan": plan,
            "target_p99_ms": TARGET_P99_MS,
            "report": report,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    if !report.errors.is_empty() {
        anyhow::bail!(
            "{} job(s) failed: {}",
            report.errors.len(),
            report.errors.join("; ")
        );
    }
    Ok(())
}
