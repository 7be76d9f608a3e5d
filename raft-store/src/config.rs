use std::path::PathBuf;
use std::time::Duration;

use balsa_api::store::window::WindowConfig;

use crate::proposer::Limits;
use crate::NodeId;

/// How one replica runs.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// Build a snapshot every this many applied entries, at points staggered
    /// per member (see `snapshot_schedule`): never more than this many
    /// entries after the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the last snapshot, for slow followers.
    pub keep_after_snapshot: u64,
    /// The most bytes of a snapshot one InstallSnapshot RPC carries (and so
    /// the most either end holds of it in memory at once).
    pub snapshot_chunk: u64,
    pub window: WindowConfig,
    /// How long a write or a linearizable read may wait before Unavailable.
    pub request_timeout: Duration,
    /// How the leader groups concurrent writes into entries.
    pub proposals: Limits,
}

impl ReplicaConfig {
    pub fn new(id: NodeId, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            id,
            data_dir: data_dir.into(),
            // openraft 0.9 lets a follower that has a leader campaign only after
            // `election_timeout_max` (the leader lease) plus a random election
            // timeout: 200-240 ms here, the bulk of the write gap after a leader
            // dies (etcd's defaults give 1-2 s).
            heartbeat: Duration::from_millis(40),
            election_timeout: (Duration::from_millis(80), Duration::from_millis(120)),
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
            snapshot_chunk: 1 << 20,
            window: WindowConfig::default(),
            request_timeout: Duration::from_secs(5),
            proposals: Limits::default(),
        }
    }
}
