//! Balsa's benchmarks, side by side with etcd.
//!
//! ```sh
//! cargo build --release --bin balsa -p balsa      # the masters the bench starts
//! cargo run --release -p balsa-benches -- store [--quick] [--json out.json]
//! cargo run --release -p balsa-benches -- rest [--quick] [--json out.json]
//! cargo run --release -p balsa-benches -- scheduler [--quick] [--core-only] [--json out.json]
//! cargo run --release -p balsa-benches -- deployment [--quick] [--json out.json]
//! cargo run --release -p balsa-benches -- startup [--quick] [--jobs process,sim] [--json out.json]
//! ```

mod balsa_cluster;
mod deployment;
mod etcd_pb;
mod load;
mod procstat;
mod rest;
mod scheduler;
mod startup;
mod stats;
mod store;
mod system;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "balsa-benches",
    about = "Balsa's benchmarks, side by side with etcd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The replicated store against etcd 3.4: writes, linearizable reads, watch
    /// fan-out and the write gap when the leader is SIGKILLed.
    Store {
        /// A short bounded run (small operation counts), for CI smoke tests.
        #[arg(long)]
        quick: bool,
        /// Also write the figures as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// The `balsa` binary (default: next to this binary; build it with
        /// `cargo build --release --bin balsa -p balsa`).
        #[arg(long, value_name = "PATH")]
        balsa_bin: Option<PathBuf>,
        /// The etcd 3.4 binary (Debian: `apt-get install etcd-server`).
        #[arg(long, value_name = "PATH", default_value = store::DEFAULT_ETCD_BINARY)]
        etcd_bin: PathBuf,
        /// Run one system only.
        #[arg(long, value_enum, default_value_t = store::Only::Both)]
        only: store::Only,
        /// Keep each cluster's data dir and logs (printed at the end).
        #[arg(long)]
        keep_data: bool,
        /// Print every write attempt around each leader kill.
        #[arg(long)]
        trace_failover: bool,
        /// A flag added to every `balsa server` (repeatable), e.g.
        /// `--server-arg=--proposals-in-flight=1`.
        #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
        server_args: Vec<String>,
    },
    /// The Kubernetes REST API (create, get, list, watch delivery, 1,000
    /// creates/s open loop) through the leader and a follower, beside the
    /// same jobs over gRPC.
    Rest {
        /// A short bounded run, for smoke tests (under a minute).
        #[arg(long)]
        quick: bool,
        /// Also write the figures as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// The `balsa` binary (default: next to this binary).
        #[arg(long, value_name = "PATH")]
        balsa_bin: Option<PathBuf>,
        /// Keep the cluster's data dir and logs (printed at the end).
        #[arg(long)]
        keep_data: bool,
        /// A flag added to every `balsa server` (repeatable), e.g.
        /// `--server-arg=--heartbeat-ms=100`.
        #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
        server_args: Vec<String>,
        /// Run only these jobs (comma-separated; default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        jobs: Vec<rest::Job>,
    },
    /// Scheduler throughput as kube-scheduler's scheduler_perf measures it:
    /// Node objects, pods created through the API and bound through the API
    /// by the masters' scheduler, first create to last bind; beside it, the
    /// scheduling algorithm alone on an in-memory snapshot.
    Scheduler {
        /// Small shapes (500 nodes), for smoke tests.
        #[arg(long)]
        quick: bool,
        /// Also write the figures as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// The `balsa` binary (default: next to this binary).
        #[arg(long, value_name = "PATH")]
        balsa_bin: Option<PathBuf>,
        /// Keep each cluster's data dir and logs (printed at the end).
        #[arg(long)]
        keep_data: bool,
        /// A flag added to every `balsa server` (repeatable).
        #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
        server_args: Vec<String>,
        /// Run only these shapes (comma-separated; default: basic,
        /// anti-affinity, spread; basic50k is 5,000 x 50,000).
        #[arg(long, value_enum, value_delimiter = ',')]
        shapes: Vec<scheduler::Shape>,
        /// Only the scheduling algorithm on an in-memory snapshot: no cluster.
        #[arg(long)]
        core_only: bool,
    },
    /// A Deployment of 10,000 replicas on 1,000 sim nodes (one `balsa node
    /// --runtime sim` process): create to all Available, then a rolling
    /// update to completion; pods/s, elections, masters' CPU and RSS.
    Deployment {
        /// 100 nodes x 1,000 replicas, under a minute.
        #[arg(long)]
        quick: bool,
        /// Also write the figures as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// The `balsa` binary (default: next to this binary).
        #[arg(long, value_name = "PATH")]
        balsa_bin: Option<PathBuf>,
        /// Keep the cluster's data dir and logs (printed at the end).
        #[arg(long)]
        keep_data: bool,
        /// A flag added to every `balsa server` (repeatable).
        #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
        server_args: Vec<String>,
        /// Sim nodes (overrides the shape's).
        #[arg(long)]
        nodes: Option<usize>,
        /// Replicas (overrides the shape's).
        #[arg(long)]
        replicas: Option<usize>,
        /// Write each pod's moments (seen, bound, Ready, gone; Unix ms) to
        /// this CSV, to line up with the agents' and masters' logs.
        #[arg(long, value_name = "PATH")]
        pods_csv: Option<PathBuf>,
    },
    /// Pod startup latency (create → Running seen by a watch): one agent on
    /// the process runtime at 30 pods/s, 1,000 sim nodes at 1,000 pods/s.
    Startup {
        /// Small runs (45 process pods; 200 sim nodes x 1,000 pods), under a minute.
        #[arg(long)]
        quick: bool,
        /// Also write the figures as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// The `balsa` binary (default: next to this binary).
        #[arg(long, value_name = "PATH")]
        balsa_bin: Option<PathBuf>,
        /// Keep each cluster's data dir and logs (printed at the end).
        #[arg(long)]
        keep_data: bool,
        /// A flag added to every `balsa server` (repeatable).
        #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
        server_args: Vec<String>,
        /// Run only these jobs (comma-separated; default: process,sim).
        #[arg(long, value_enum, value_delimiter = ',')]
        jobs: Vec<startup::Job>,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Deployment {
            quick,
            json,
            balsa_bin,
            keep_data,
            server_args,
            nodes,
            replicas,
            pods_csv,
        } => {
            let opts = deployment::Options {
                quick,
                json,
                balsa_bin,
                keep_data,
                server_args,
                nodes,
                replicas,
                pods_csv,
            };
            tokio::select! {
                r = deployment::run(opts) => r,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            }
        }
        Command::Rest {
            quick,
            json,
            balsa_bin,
            keep_data,
            server_args,
            jobs,
        } => {
            let opts = rest::Options {
                quick,
                json,
                balsa_bin,
                keep_data,
                server_args,
                jobs,
            };
            tokio::select! {
                r = rest::run(opts) => r,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            }
        }
        Command::Scheduler {
            quick,
            json,
            balsa_bin,
            keep_data,
            server_args,
            shapes,
            core_only,
        } => {
            let opts = scheduler::Options {
                quick,
                json,
                balsa_bin,
                keep_data,
                server_args,
                shapes,
                core_only,
            };
            tokio::select! {
                r = scheduler::run(opts) => r,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            }
        }
        Command::Store {
            quick,
            json,
            balsa_bin,
            etcd_bin,
            only,
            keep_data,
            trace_failover,
            server_args,
        } => {
            let opts = store::Options {
                quick,
                json,
                balsa_bin,
                etcd_bin,
                only,
                keep_data,
                trace_failover,
                server_args,
            };
            // On Ctrl-C the run is dropped: every process it started is killed
            // (kill_on_drop) and its temp dirs removed.
            tokio::select! {
                r = store::run(opts) => r,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            }
        }
        Command::Startup {
            quick,
            json,
            balsa_bin,
            keep_data,
            server_args,
            jobs,
        } => {
            let opts = startup::Options {
                quick,
                json,
                balsa_bin,
                keep_data,
                server_args,
                jobs,
            };
            tokio::select! {
                r = startup::run(opts) => r,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
