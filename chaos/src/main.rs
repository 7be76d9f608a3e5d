//! `balsa-chaos`: run a chaos run against a real Balsa cluster, re-check a
//! recorded history, or remove what a killed harness left behind.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use balsa_chaos::check::{self, Budget};
use balsa_chaos::cluster::{self, netns};
use balsa_chaos::history::History;
use balsa_chaos::nemesis::Fault;
use balsa_chaos::run::{self, Network, RunOptions};
use balsa_chaos::workload::WorkloadOptions;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "balsa-chaos",
    about = "Break a real Balsa cluster on purpose and check nothing was lost"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster, run the workload under faults, check the history.
    Run(RunArgs),
    /// Run the checkers on a recorded history.jsonl.
    Check {
        history: PathBuf,
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        budget_per_key: Duration,
    },
    /// Remove network namespaces and links left by a harness that was killed.
    Cleanup,
}

#[derive(clap::Args)]
struct RunArgs {
    /// How long the workload and the faults run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Operations per second over all clients.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    #[arg(long, default_value_t = 9)]
    clients: usize,
    #[arg(long, default_value_t = 5)]
    keys: usize,
    #[arg(long, default_value_t = 3)]
    masters: usize,
    /// Faults to draw from (comma-separated); `none` for a quiet run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,kill-leader,pause,pause-leader,partition-leader,partition-halves,bridge,loss,restart-all,slow-disk,fsync-error,disk-full,replace-member"
    )]
    faults: Vec<String>,
    /// Quiet time before each fault.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How long each fault is held.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    hold: Duration,
    #[arg(long, value_enum, default_value = "auto")]
    network: Network,
    /// Where the history, report, logs and (on failure) data go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The `balsa` binary (default: the one beside this executable).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// A client gives up on a request after this long (a write is then unknown).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[arg(long)]
    seed: Option<u64>,
    /// Time the linearizability search may spend per key.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    budget_per_key: Duration,
    /// Keep the masters' data directories even when the run passes.
    #[arg(long)]
    keep_data: bool,
    /// A `balsa` built with `--features failpoints` for slow-disk and
    /// fsync-error (default: the harness builds one when they are asked for).
    #[arg(long)]
    failpoint_binary: Option<PathBuf>,
}

fn faults(names: &[String]) -> anyhow::Result<Vec<Fault>> {
    use clap::ValueEnum;
    names
        .iter()
        .filter(|n| n.as_str() != "none" && !n.is_empty())
        .map(|n| Fault::from_str(n, true).map_err(|e| anyhow::anyhow!("fault {n:?}: {e}")))
        .collect()
}

async fn run(a: RunArgs) -> anyhow::Result<bool> {
    let binary = match a.binary {
        Some(b) => b,
        None => cluster::default_binary()
            .context("no `balsa` binary beside balsa-chaos: run `cargo build -p balsa` first, or pass --binary")?,
    };
    let seed = a.seed.unwrap_or_else(rand::random);
    let out = a.out.unwrap_or_else(|| {
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', "");
        std::env::temp_dir().join("balsa-chaos").join(stamp)
    });
    let opts = RunOptions {
        out: out.clone(),
        binary,
        masters: a.masters,
        network: a.network,
        duration: a.duration,
        workload: WorkloadOptions {
            clients: a.clients,
            keys: a.keys,
            rate: a.rate,
            timeout: a.timeout,
            seed,
        },
        faults: faults(&a.faults)?,
        interval: a.interval,
        hold: a.hold,
        seed,
        budget: Budget {
            per_key: a.budget_per_key,
        },
        keep_data: a.keep_data,
        failpoint_binary: a.failpoint_binary,
    };
    println!("balsa-chaos: seed {seed}, output in {}", out.display());
    let report = run::run(opts).await?;
    print!("{}", report.summary());
    println!("history, report and timeline: {}", out.display());
    Ok(report.passed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,h2=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let passed = match Cli::parse().command {
        Cmd::Run(a) => run(a).await?,
        Cmd::Check {
            history,
            budget_per_key,
        } => {
            let h = History::read_jsonl(&history)?;
            let f = check::all(
                &h,
                Budget {
                    per_key: budget_per_key,
                },
            );
            for v in &f.violations {
                println!("{v}");
            }
            println!(
                "{} ops checked, {} watch events, {} violations, {} keys unknown",
                f.ops_checked,
                f.watch_events_checked,
                f.violations.len(),
                f.unknown_keys.len()
            );
            f.violations.is_empty()
        }
        Cmd::Cleanup => {
            for name in netns::cleanup_leftovers()? {
                println!("removed {name}");
            }
            true
        }
    };
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}
