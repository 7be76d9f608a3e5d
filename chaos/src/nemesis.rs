//! Nemeses on a schedule: after a quiet interval, one fault drawn from the
//! enabled kinds is injected, held, and healed, and recorded with its start
//! and end. Process faults work everywhere; network faults use the run's
//! network namespaces, or on loopback the store's peer-transport seam;
//! storage faults need a `balsa` built with the `failpoints` feature (see
//! `failpoint_binary`), disk-full a tmpfs (root).

use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use balsa_api::grpc::client::Client;
use balsa_api::StoreError;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::history::{FaultRecord, Record, Recorder};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL a random master, restart it after the hold.
    Kill,
    /// SIGKILL the leader, restart it after the hold.
    KillLeader,
    /// SIGSTOP a random master for the hold (longer than an election timeout).
    Pause,
    /// SIGSTOP the leader for the hold.
    PauseLeader,
    /// SIGKILL every master, start them all again at once.
    RestartAll,
    /// Cut the leader off from every other master.
    PartitionLeader,
    /// Cut a random minority off from the majority.
    PartitionHalves,
    /// Two halves that each see only one middle master.
    Bridge,
    /// Drop 25% of the packets between masters.
    Loss,
    /// The leader's log sync sleeps 200 ms first (failpoint).
    SlowDisk,
    /// A random master's log sync fails (failpoint): it must stop, never
    /// acknowledge what it did not persist, and come back when restarted.
    FsyncError,
    /// Fill the small (tmpfs) disk of one master; free it at the heal.
    DiskFull,
    /// Remove a random master, wipe its data, add it back as a learner, promote it.
    ReplaceMember,
}

impl Fault {
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            Fault::PartitionLeader | Fault::PartitionHalves | Fault::Bridge | Fault::Loss
        )
    }

    /// Needs a `balsa` built with the `failpoints` feature.
    pub fn needs_failpoints(self) -> bool {
        matches!(self, Fault::SlowDisk | Fault::FsyncError)
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::Pause => "pause",
            Fault::PauseLeader => "pause-leader",
            Fault::RestartAll => "restart-all",
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionHalves => "partition-halves",
            Fault::Bridge => "bridge",
            Fault::Loss => "loss",
            Fault::SlowDisk => "slow-disk",
            Fault::FsyncError => "fsync-error",
            Fault::DiskFull => "disk-full",
            Fault::ReplaceMember => "replace-member",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NemesisOptions {
    pub faults: Vec<Fault>,
    /// Quiet time before each fault.
    pub interval: Duration,
    /// How long each fault is held.
    pub hold: Duration,
    pub seed: u64,
}

/// Every pair across two groups.
fn across(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    a.iter()
        .flat_map(|&x| b.iter().map(move |&y| (x, y)))
        .collect()
}

struct Injected {
    targets: Vec<usize>,
    note: String,
}

async fn target(cluster: &Cluster, leader: bool, rng: &mut StdRng) -> (usize, String) {
    if leader {
        if let Some(i) = cluster.leader().await.and_then(|id| cluster.index_of(id)) {
            return (i, "the leader".into());
        }
    }
    let live: Vec<usize> = (0..cluster.len())
        .filter(|&i| cluster.is_running(i))
        .collect();
    let i = live
        .choose(rng)
        .copied()
        .unwrap_or_else(|| rng.gen_range(0..cluster.len()));
    let note = if leader {
        "no leader known; a random master".into()
    } else {
        "a random master".into()
    };
    (i, note)
}

async fn inject(cluster: &mut Cluster, f: Fault, rng: &mut StdRng) -> anyhow::Result<Injected> {
    let n = cluster.len();
    match f {
        Fault::Kill | Fault::KillLeader => {
            let (i, note) = target(cluster, f == Fault::KillLeader, rng).await;
            cluster.kill(i).await?;
            Ok(Injected {
                targets: vec![i],
                note,
            })
        }
        Fault::Pause | Fault::PauseLeader => {
            let (i, note) = target(cluster, f == Fault::PauseLeader, rng).await;
            cluster.pause(i, true)?;
            Ok(Injected {
                targets: vec![i],
                note,
            })
        }
        Fault::RestartAll => {
            for i in 0..n {
                cluster.kill(i).await?;
            }
            for i in 0..n {
                cluster.restart(i)?;
            }
            Ok(Injected {
                targets: (0..n).collect(),
                note: "killed and started again at once".into(),
            })
        }
        Fault::PartitionLeader | Fault::PartitionHalves | Fault::Bridge => {
            let (cut, targets, note) = match f {
                Fault::PartitionLeader => {
                    let (i, note) = target(cluster, true, rng).await;
                    let rest: Vec<usize> = (0..n).filter(|&j| j != i).collect();
                    (across(&[i], &rest), vec![i], note)
                }
                Fault::PartitionHalves => {
                    let mut all: Vec<usize> = (0..n).collect();
                    all.shuffle(rng);
                    let (minority, majority) = all.split_at((n - 1) / 2);
                    (
                        across(minority, majority),
                        minority.to_vec(),
                        "a random minority cut off".into(),
                    )
                }
                _ => {
                    let mut all: Vec<usize> = (0..n).collect();
                    all.shuffle(rng);
                    let middle = all[0];
                    let rest = &all[1..];
                    let (a, b) = rest.split_at(rest.len() / 2);
                    (
                        across(a, b),
                        vec![middle],
                        "the target is the middle master both halves see".into(),
                    )
                }
            };
            cluster.cut(&cut)?;
            Ok(Injected { targets, note })
        }
        Fault::Loss => {
            cluster.loss(0.25)?;
            Ok(Injected {
                targets: (0..n).collect(),
                note: "25% of packets between masters dropped".into(),
            })
        }
        Fault::SlowDisk => {
            let (i, note) = target(cluster, true, rng).await;
            cluster.set_seam(i, |s| s.log_sync_delay = Some(SLOW_SYNC))?;
            Ok(Injected {
                targets: vec![i],
                note: format!("{note}: {} ms before each log sync", SLOW_SYNC.as_millis()),
            })
        }
        Fault::FsyncError => {
            let (i, note) = target(cluster, false, rng).await;
            cluster.set_seam(i, |s| s.log_sync_error = true)?;
            Ok(Injected {
                targets: vec![i],
                note: format!("{note}: every log sync fails"),
            })
        }
        Fault::DiskFull => {
            let Some((i, disk)) = &cluster.disk else {
                bail!("disk-full needs the small disk (tmpfs; root)");
            };
            let i = *i;
            let filled = disk.fill()?;
            Ok(Injected {
                targets: vec![i],
                note: format!("its tmpfs filled ({} MB written)", filled >> 20),
            })
        }
        Fault::ReplaceMember => replace_member(cluster, rng).await,
    }
}

/// What a slow disk adds before each log sync.
const SLOW_SYNC: Duration = Duration::from_millis(200);

/// Asks the cluster (through any master, following redirects to the
/// leader) to change its membership, retrying until `within`.
async fn membership(
    cluster: &Cluster,
    within: Duration,
    change: impl Fn(Client) -> futures::future::BoxFuture<'static, Result<(), StoreError>>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        let mut targets: Vec<String> = cluster.file.api_addrs();
        if let Some(i) = cluster.leader().await.and_then(|id| cluster.index_of(id)) {
            targets.insert(0, cluster.api(i).to_string());
        }
        for addr in targets {
            let attempt = async {
                let c = Client::connect(&addr).await?;
                change(c).await
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".into(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("membership change not accepted: {last}")
}

/// Replaces a random follower while the workload runs: remove it, kill it,
/// wipe its data, start it empty, add it back as a learner, then promote
/// it to a voter (the steps `balsa cluster remove` / `add` take).
async fn replace_member(cluster: &mut Cluster, rng: &mut StdRng) -> anyhow::Result<Injected> {
    // Only from a whole cluster: replacing a member of one that already
    // lacks a voter (an earlier replacement that failed half-way) would take
    // it below a safe majority.
    let whole = async {
        let i = cluster.index_of(cluster.leader().await?)?;
        let c = Client::connect(cluster.api(i)).await.ok()?;
        let status = c.cluster_status().await.ok()?;
        Some(status.members.len() == cluster.len() && status.members.iter().all(|m| m.voter))
    };
    if tokio::time::timeout(Duration::from_secs(3), whole).await != Ok(Some(true)) {
        bail!("not every member is a voter (or no leader answered): not replacing one");
    }
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..cluster.len())
        .filter(|&i| Some(cluster.id(i)) != leader && cluster.is_running(i))
        .collect();
    let Some(&i) = followers.choose(rng) else {
        bail!("no running follower to replace");
    };
    let id = cluster.id(i);
    let started = tokio::time::Instant::now();
    membership(cluster, Duration::from_secs(20), move |c| {
        Box::pin(async move {
            match c.remove_member(id).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    })
    .await
    .context("removing the member")?;
    cluster.kill(i).await?;
    cluster.start_empty(i)?;
    let (peer, api) = {
        let m = &cluster.file.members[i];
        (m.peer.clone(), m.api.clone())
    };
    for promote in [false, true] {
        let (peer, api) = (peer.clone(), api.clone());
        membership(cluster, Duration::from_secs(60), move |c| {
            let (peer, api) = (peer.clone(), api.clone());
            Box::pin(async move { c.add_member(id, &peer, &api, promote).await.map(|_| ()) })
        })
        .await
        .with_context(|| {
            if promote {
                "promoting the learner"
            } else {
                "adding it back as a learner"
            }
        })?;
    }
    Ok(Injected {
        targets: vec![i],
        note: format!(
            "a follower removed, wiped, added as a learner and promoted in {} ms",
            started.elapsed().as_millis()
        ),
    })
}

/// Heals a storage fault. The storage error is fatal to the replica, so it
/// should have stopped: say whether it did, clear the fault (so it does not
/// stop again) and start it.
fn heal_storage(cluster: &mut Cluster, targets: &[usize]) -> anyhow::Result<String> {
    let mut verdict = Vec::new();
    for &i in targets {
        cluster.set_seam(i, |s| s.log_sync_error = false)?;
        if let Some((_, disk)) = &cluster.disk {
            disk.free()?;
        }
        verdict.push(match cluster.exited(i) {
            Some(status) => format!("{STOPPED} ({status}), restarted"),
            None => STILL_RUNNING.to_string(),
        });
        cluster.restart(i)?;
    }
    Ok(verdict.join("; "))
}

/// How a storage fault's note says whether its target stopped (the checker
/// reads it: a master whose log sync failed must not go on serving).
pub const STOPPED: &str = "stopped on the storage error";
pub const STILL_RUNNING: &str = "still running at the heal";

/// Heals `f`; returns what it found, for the fault's note.
async fn heal(cluster: &mut Cluster, f: Fault, targets: &[usize]) -> anyhow::Result<String> {
    if matches!(f, Fault::FsyncError | Fault::DiskFull) {
        return heal_storage(cluster, targets);
    }
    match f {
        Fault::Kill | Fault::KillLeader => {
            for &i in targets {
                cluster.restart(i)?;
            }
            Ok(())
        }
        Fault::Pause | Fault::PauseLeader => {
            for &i in targets {
                cluster.pause(i, false)?;
            }
            Ok(())
        }
        Fault::RestartAll | Fault::ReplaceMember => Ok(()),
        Fault::SlowDisk => {
            for &i in targets {
                cluster.set_seam(i, |s| s.log_sync_delay = None)?;
            }
            Ok(())
        }
        _ => cluster.heal_network(),
    }
    .map(|()| String::new())
}

/// Runs faults until `stop`, then heals everything and hands the cluster
/// back. A fault that cannot be injected is recorded with its error and the
/// schedule goes on.
pub async fn run(
    mut cluster: Cluster,
    opts: NemesisOptions,
    rec: Recorder,
    mut stop: watch::Receiver<bool>,
) -> Cluster {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut faults = opts.faults.clone();
    if cluster.disk.is_none() {
        faults.retain(|&f| f != Fault::DiskFull);
    }
    while !faults.is_empty() && !*stop.borrow() {
        tokio::select! {
            _ = tokio::time::sleep(opts.interval) => {}
            _ = stop.changed() => break,
        }
        for (id, status) in cluster.crashed() {
            tracing::warn!(member.id = id, %status, "a master exited on its own; restarting it");
            rec.record(Record::Fault(FaultRecord {
                kind: "crash".into(),
                targets: vec![id],
                start: rec.now(),
                end: rec.now(),
                note: format!("exited on its own: {status}"),
            }));
        }
        if let Err(e) = cluster.heal_all() {
            tracing::warn!(error = %e, "healing before the next fault");
        }
        let Some(&f) = faults.choose(&mut rng) else {
            break;
        };
        let start = rec.now();
        let injected = match inject(&mut cluster, f, &mut rng).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(fault = f.name(), error = %format_args!("{e:#}"), "could not inject");
                rec.record(Record::Fault(FaultRecord {
                    kind: format!("{}-failed", f.name()),
                    targets: Vec::new(),
                    start,
                    end: rec.now(),
                    note: format!("{e:#}"),
                }));
                continue;
            }
        };
        let ids: Vec<u64> = injected.targets.iter().map(|&i| cluster.id(i)).collect();
        tracing::info!(fault = f.name(), targets = ?ids, "fault injected");
        if f != Fault::RestartAll {
            tokio::select! {
                _ = tokio::time::sleep(opts.hold) => {}
                _ = stop.changed() => {}
            }
        }
        let mut note = injected.note;
        match heal(&mut cluster, f, &injected.targets).await {
            Ok(found) if !found.is_empty() => note = format!("{note}; {found}"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(fault = f.name(), error = %e, "could not heal");
                note = format!("{note}; healing failed: {e}");
            }
        }
        rec.record(Record::Fault(FaultRecord {
            kind: f.name().into(),
            targets: ids,
            start,
            end: rec.now(),
            note,
        }));
    }
    if let Err(e) = cluster.heal_all() {
        tracing::warn!(error = %e, "healing at the end");
    }
    cluster
}
