//! What the machine and the cluster spent over a phase: each master's CPU
//! seconds, the agents' and everyone else's, the Raft entries committed and
//! the elections (the term's rise). Read at the start and the end of a phase
//! and subtracted.

use std::time::Instant;

use balsa_api::grpc::client::Client;
use serde::Serialize;

use crate::procstat::{machine_busy_s, total_cpu_s, ProcStat};

/// Readings at one moment.
#[derive(Debug, Clone)]
pub struct Reading {
    at: Instant,
    masters_cpu: Vec<f64>,
    agents_cpu: f64,
    own_cpu: f64,
    machine_busy: Option<f64>,
    commit: Option<u64>,
    term: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct MasterUse {
    pub id: u64,
    /// The leader when the phase began.
    pub leader: bool,
    pub cpu_s: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

/// The difference of two readings.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// Leader first.
    pub masters: Vec<MasterUse>,
    /// The one process holding every sim node.
    pub agents_cpu_s: f64,
    /// CPU other processes on the machine used meanwhile, in cores.
    pub others_cores: Option<f64>,
    pub raft_entries: Option<u64>,
    pub elections: Option<u64>,
}

pub struct Meter {
    pub pids: Vec<u32>,
    pub ids: Vec<u64>,
    pub leader: usize,
    pub agents: Option<u32>,
    pub client: Client,
}

impl Meter {
    pub async fn read(&self) -> Reading {
        let status = self.client.cluster_status().await.ok();
        let commit = status.as_ref().and_then(|s| {
            s.members
                .iter()
                .find(|m| m.id == s.leader)
                .map(|m| m.commit_index)
        });
        let term = status
            .as_ref()
            .map(|s| s.members.iter().map(|m| m.term).max().unwrap_or(0));
        Reading {
            at: Instant::now(),
            masters_cpu: self.pids.iter().map(|&p| total_cpu_s(&[p])).collect(),
            agents_cpu: self.agents.map_or(0.0, |p| total_cpu_s(&[p])),
            own_cpu: total_cpu_s(&[std::process::id()]),
            machine_busy: machine_busy_s(),
            commit,
            term,
        }
    }

    pub fn usage(&self, a: &Reading, b: &Reading) -> Usage {
        let mut masters: Vec<MasterUse> = (0..self.pids.len())
            .map(|i| {
                let st = ProcStat::read(self.pids[i]).unwrap_or_default();
                MasterUse {
                    id: self.ids[i],
                    leader: i == self.leader,
                    cpu_s: b.masters_cpu[i] - a.masters_cpu[i],
                    rss_mib: st.rss_mib,
                    peak_rss_mib: st.peak_rss_mib,
                }
            })
            .collect();
        masters.sort_by_key(|m| !m.leader);
        let masters_cpu: f64 = masters.iter().map(|m| m.cpu_s).sum();
        let agents_cpu_s = b.agents_cpu - a.agents_cpu;
        let secs = b.at.saturating_duration_since(a.at).as_secs_f64();
        let others_cores = b.machine_busy.zip(a.machine_busy).map(|(y, x)| {
            let others = (y - x) - masters_cpu - agents_cpu_s - (b.own_cpu - a.own_cpu);
            others.max(0.0) / secs.max(0.001)
        });
        Usage {
            masters,
            agents_cpu_s,
            others_cores,
            raft_entries: b.commit.zip(a.commit).map(|(y, x)| y.saturating_sub(x)),
            elections: b.term.zip(a.term).map(|(y, x)| y.saturating_sub(x)),
        }
    }
}
