//! One chaos run, start to verdict:
//!
//! ```text
//! network (netns or loopback) ─► masters ─► watchers + clients ─► nemesis schedule
//!   ─► heal everything ─► stop clients ─► barrier write, wait until every replica
//!   applied it ─► each replica's final state (local list) ─► stop watchers
//!   ─► checkers ─► history.jsonl, report.json, timeline.html ─► stop masters
//! ```
//!
//! Ctrl-C ends the schedule early and goes through the same steps, so the
//! history is still checked and every process and namespace is removed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use balsa_api::grpc::client::Client;
use balsa_api::StoreError;
use balsa_proto::objects::objects_client::ObjectsClient;
use balsa_proto::objects::ListRequest;
use tokio::sync::watch;

use crate::check::{self, Budget};
use crate::cluster::{self, netns, Cluster, ClusterOptions};
use crate::history::{FinalState, Record, Recorder};
use crate::nemesis::{self, Fault, NemesisOptions};
use crate::report::{self, Report};
use crate::workload::{objects, probes, Workload, WorkloadOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Network {
    /// Network namespaces when the machine allows them, else loopback.
    Auto,
    Netns,
    Loopback,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out: PathBuf,
    pub binary: PathBuf,
    pub masters: usize,
    pub network: Network,
    pub duration: Duration,
    pub workload: WorkloadOptions,
    pub faults: Vec<Fault>,
    pub interval: Duration,
    pub hold: Duration,
    pub seed: u64,
    pub budget: Budget,
    /// Keep the replicas' data directories even when the run passes.
    pub keep_data: bool,
    /// A `balsa` built with the `failpoints` feature, for the storage
    /// faults; built by the harness when they are asked for and this is None.
    pub failpoint_binary: Option<PathBuf>,
}

/// Size of the tmpfs the disk-full fault fills.
const SMALL_DISK_MB: u64 = 256;

fn run_id(seed: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = (std::process::id() as u64) ^ (nanos as u64) ^ seed.rotate_left(17);
    format!("{:04x}", mixed & 0xffff)
}

/// Runs one chaos run and writes its report. Returns the report; the caller
/// decides the exit code from `report.passed()`.
pub async fn run(opts: RunOptions) -> anyhow::Result<Report> {
    let id = run_id(opts.seed);
    let use_netns = match opts.network {
        Network::Loopback => false,
        Network::Netns => {
            if !netns::available() {
                bail!("network namespaces are not available here (needs root and `ip netns`)");
            }
            true
        }
        Network::Auto => netns::available(),
    };
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let started = Instant::now();
    let rec = Recorder::new(started);
    tracing::info!(run.id = %id, netns = use_netns, out = %opts.out.display(), "starting the cluster");
    let binary = if opts.faults.iter().any(|f| f.needs_failpoints()) {
        match &opts.failpoint_binary {
            Some(b) => b.clone(),
            None => cluster::build_failpoint_binary(&opts.binary)?,
        }
    } else {
        opts.binary.clone()
    };
    // The last master gets the small disk (a tmpfs; without root the
    // mount fails and disk-full is skipped).
    let small_disk = opts
        .faults
        .contains(&Fault::DiskFull)
        .then(|| (opts.masters - 1, SMALL_DISK_MB));
    let cluster = Cluster::start(ClusterOptions {
        dir: opts.out.clone(),
        masters: opts.masters,
        binary,
        server_args: Vec::new(),
        netns: use_netns,
        run_id: id.clone(),
        seed: opts.seed as u32,
        small_disk,
    })
    .await?;
    let replicas: Vec<(u64, String)> = (0..cluster.len())
        .map(|i| (cluster.id(i), cluster.api(i).to_string()))
        .collect();
    ensure_namespaces(&replicas).await?;
    let ready_after = started.elapsed();

    let mut workload = Workload::start(&opts.workload, &replicas, &rec);
    let (stop_nemesis, stop_rx) = watch::channel(false);
    let nemesis_opts = NemesisOptions {
        faults: opts.faults.clone(),
        interval: opts.interval,
        hold: opts.hold,
        seed: opts.seed,
    };
    let skipped: Vec<Fault> = opts
        .faults
        .iter()
        .copied()
        .filter(|&f| f == Fault::DiskFull && cluster.disk.is_none())
        .collect();
    let firewall = cluster.net.as_ref().map(|n| n.firewall());
    if firewall == Some(netns::Firewall::Routes) && opts.faults.contains(&Fault::Loss) {
        tracing::warn!("no iptables: partitions use blackhole routes and packet loss will fail");
    }
    let nemesis = tokio::spawn(nemesis::run(cluster, nemesis_opts, rec.clone(), stop_rx));

    let interrupted = tokio::select! {
        _ = tokio::time::sleep(opts.duration) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    if interrupted {
        tracing::warn!("interrupted: healing, checking what was recorded, cleaning up");
    }
    let _ = stop_nemesis.send(true);
    let mut cluster = nemesis.await.context("the nemesis task failed")?;
    workload.stop_clients().await;
    let converge = converge(&cluster, &replicas, &rec).await;
    if let Err(e) = &converge {
        tracing::error!(error = %e, "the cluster did not converge after healing");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    workload.stop_watchers().await;
    // From the cluster being ready (building a failpoint binary and starting
    // the masters are not workload).
    let workload_time = started.elapsed().saturating_sub(ready_after);

    let history = rec.snapshot();
    history.write_jsonl(&opts.out.join("history.jsonl"))?;
    let check_started = Instant::now();
    let findings = check::all(&history, opts.budget);
    let check_time = check_started.elapsed();
    let crashed = cluster.crashed();
    cluster.stop(Duration::from_secs(5)).await;
    drop(cluster);

    let report = Report::build(report::Inputs {
        run_id: id,
        netns: use_netns,
        firewall: firewall.map(|f| format!("{f:?}")),
        ready_after,
        duration: workload_time,
        check_time,
        skipped_faults: skipped,
        interrupted,
        converge_error: converge.err().map(|e| e.to_string()),
        crashed,
        history: &history,
        findings,
    });
    report.write(&opts.out)?;
    if report.passed() && !opts.keep_data {
        for i in 1..=opts.masters {
            let _ = std::fs::remove_dir_all(opts.out.join(format!("master-{i}")));
        }
    }
    Ok(report)
}

/// After healing: commit one write, wait until every replica has applied it,
/// and record each replica's own (local) view of the workload's objects.
async fn converge(
    cluster: &Cluster,
    replicas: &[(u64, String)],
    rec: &Recorder,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let barrier = loop {
        if let Some(rev) = barrier_write(replicas).await {
            break rev;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no write committed within 60 s of healing");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (id, addr) in replicas {
        let state = loop {
            match local_list(addr).await {
                Ok(state) if state.rev >= barrier => break state,
                _ if tokio::time::Instant::now() > deadline => {
                    bail!("member {id} did not apply revision {barrier} within 60 s of healing")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        rec.record(Record::Final(FinalState {
            replica: *id,
            ..state
        }));
    }
    let _ = cluster;
    Ok(())
}

/// Creates the namespaces the run writes into (a Kubernetes API refuses
/// objects in a namespace that does not exist).
async fn ensure_namespaces(replicas: &[(u64, String)]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for ns in [objects::NAMESPACE, probes::NAMESPACE, META_NAMESPACE] {
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
        });
        let mut last = String::new();
        'replicas: loop {
            for (_, addr) in replicas {
                let attempt = async {
                    let c = Client::connect(addr).await?;
                    c.create(bytes::Bytes::from(body.to_string())).await
                };
                match tokio::time::timeout(Duration::from_secs(6), attempt).await {
                    Ok(Ok(_)) | Ok(Err(StoreError::AlreadyExists { .. })) => break 'replicas,
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "timed out".into(),
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("creating namespace {ns}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Where the barrier writes go.
const META_NAMESPACE: &str = "chaos-meta";

/// A write outside the workload's namespace; its revision is one every
/// replica must reach.
async fn barrier_write(replicas: &[(u64, String)]) -> Option<u64> {
    for (_, addr) in replicas {
        let attempt = async {
            let c = Client::connect(addr).await.ok()?;
            let v = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("barrier-{}", std::process::id()), "namespace": META_NAMESPACE},
                "data": {"at": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()},
            });
            let body = bytes::Bytes::from(v.to_string());
            match c.create(body.clone()).await {
                Ok((_, rev)) => Some(rev.0),
                Err(_) => c.update(body).await.ok().map(|(_, rev)| rev.0),
            }
        };
        if let Ok(Some(rev)) = tokio::time::timeout(Duration::from_secs(6), attempt).await {
            return Some(rev);
        }
    }
    None
}

async fn local_list(addr: &str) -> anyhow::Result<FinalState> {
    let mut c = ObjectsClient::connect(format!("http://{addr}")).await?;
    let reply = c
        .list(ListRequest {
            group: String::new(),
            resource: "configmaps".into(),
            namespace: objects::NAMESPACE.into(),
            limit: 0,
            continue_token: String::new(),
            revision: 0,
            local: true,
        })
        .await?
        .into_inner();
    let items = reply
        .items
        .iter()
        .filter_map(|b| objects::parse(b))
        .collect();
    Ok(FinalState {
        replica: 0,
        rev: reply.revision,
        items,
    })
}
