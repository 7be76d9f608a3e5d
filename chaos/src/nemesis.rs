//! Nemeses on a schedule: after a quiet interval, one fault drawn from the
//! enabled kinds is injected, held, and healed, and recorded with its start
//! and end. Process faults work everywhere; network faults need the run's
//! network namespaces.

use std::time::Duration;

use anyhow::bail;
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
}

impl Fault {
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            Fault::PartitionLeader | Fault::PartitionHalves | Fault::Bridge | Fault::Loss
        )
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
            let Some(net) = cluster.net.as_mut() else {
                bail!("{} needs network namespaces", f.name());
            };
            net.cut(&cut)?;
            Ok(Injected { targets, note })
        }
        Fault::Loss => {
            let Some(net) = cluster.net.as_mut() else {
                bail!("loss needs network namespaces");
            };
            net.loss(0.25)?;
            Ok(Injected {
                targets: (0..n).collect(),
                note: "25% of packets between masters dropped".into(),
            })
        }
    }
}

async fn heal(cluster: &mut Cluster, f: Fault, targets: &[usize]) -> anyhow::Result<()> {
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
        Fault::RestartAll => Ok(()),
        _ => match cluster.net.as_mut() {
            Some(net) => net.heal(),
            None => Ok(()),
        },
    }
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
    if cluster.net.is_none() {
        faults.retain(|f| !f.needs_network());
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
                tracing::warn!(fault = f.name(), error = %e, "could not inject");
                rec.record(Record::Fault(FaultRecord {
                    kind: format!("{}-failed", f.name()),
                    targets: Vec::new(),
                    start,
                    end: rec.now(),
                    note: e.to_string(),
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
        if let Err(e) = heal(&mut cluster, f, &injected.targets).await {
            tracing::warn!(fault = f.name(), error = %e, "could not heal");
        }
        rec.record(Record::Fault(FaultRecord {
            kind: f.name().into(),
            targets: ids,
            start,
            end: rec.now(),
            note: injected.note,
        }));
    }
    if let Err(e) = cluster.heal_all() {
        tracing::warn!(error = %e, "healing at the end");
    }
    cluster
}
