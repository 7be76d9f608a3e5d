//! When this member builds a snapshot: every `every` applied entries, at
//! points staggered per member id.
//!
//! Why: with openraft's `LogsSinceLast(n)` every member of a cluster snapshots
//! at the same log indexes (they apply the same log), so on a small machine
//! all of them stall building a snapshot at the same moment, heartbeats go
//! late and elections follow. Here member `id` snapshots at the indexes
//! `k * every + offset(id)`, where `offset(id)` is the fractional part of
//! `id * 0.618...` (Fibonacci hashing) times `every`. Consecutive ids land far
//! apart: ids 1, 2, 3 at 0.618, 0.236 and 0.854 of the period, so any two of
//! them are at least 0.236 x `every` entries apart (2,360 with the default
//! 10,000). The points are a function of the member and the index only, so
//! they stay apart after a restart and after a member installs the leader's
//! snapshot (a member that caught up through a snapshot at the leader's point
//! builds its next one at its own).
//!
//! What stays true: a member never goes more than `every` applied entries
//! past its last snapshot without triggering the next one (so logs are still
//! purged: openraft purges after every snapshot it builds, whatever triggered
//! it), and the first snapshot comes no later than `every`.

use openraft::RaftMetrics;

use crate::types::{Member, NodeId, Raft};

/// 2^64 / golden ratio: multiplying by it maps consecutive integers to
/// well-spread fractions of 2^64.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

/// Where in each period of `every` entries member `id` snapshots, in `[0, every)`.
pub fn offset(id: NodeId, every: u64) -> u64 {
    let fraction = id.wrapping_mul(FIBONACCI);
    ((u128::from(fraction) * u128::from(every)) >> 64) as u64
}

/// The first snapshot point of member `id` after index `after`.
pub fn next_point(id: NodeId, every: u64, after: u64) -> u64 {
    let every = every.max(1);
    let off = offset(id, every);
    if after < off {
        return off;
    }
    // The next k * every + off strictly above `after`.
    let k = (after - off) / every + 1;
    off.saturating_add(k.saturating_mul(every))
}

/// What to do on one metrics update: trigger a snapshot, or not.
#[derive(Debug, Default)]
struct Schedule {
    /// The point last triggered for; its snapshot may still be building.
    triggered: Option<u64>,
}

impl Schedule {
    fn decide(&mut self, id: NodeId, every: u64, snapshot: u64, applied: u64) -> bool {
        let due = next_point(id, every, snapshot);
        if applied < due {
            return false;
        }
        match self.triggered {
            // Already asked for this point; ask again only if a whole period
            // went by without the snapshot (a failed build).
            Some(t) if t == due && applied < due.saturating_add(every) => false,
            Some(t) if t == due => {
                self.triggered = Some(due.saturating_add(every));
                true
            }
            _ => {
                self.triggered = Some(due);
                true
            }
        }
    }
}

/// Follows the Raft metrics and triggers snapshots at this member's points,
/// until Raft stops.
pub fn spawn(raft: Raft, id: NodeId, every: u64) {
    let mut metrics = raft.metrics();
    tokio::spawn(async move {
        let mut schedule = Schedule::default();
        loop {
            let (snapshot, applied) = {
                let m: &RaftMetrics<NodeId, Member> = &metrics.borrow_and_update();
                if m.running_state.is_err() {
                    return;
                }
                (
                    m.snapshot.map_or(0, |l| l.index),
                    m.last_applied.map_or(0, |l| l.index),
                )
            };
            if schedule.decide(id, every, snapshot, applied) {
                tracing::debug!(raft.id = id, snapshot, applied, "triggering a snapshot");
                if raft.trigger().snapshot().await.is_err() {
                    return;
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_snapshot_at_different_points() {
        let every = 10_000;
        let offsets: Vec<u64> = (1..=5).map(|id| offset(id, every)).collect();
        for (i, a) in offsets.iter().enumerate() {
            assert!(*a < every);
            for b in &offsets[i + 1..] {
                let gap = a.abs_diff(*b).min(every - a.abs_diff(*b));
                assert!(gap >= every / 20, "offsets {offsets:?} too close");
            }
        }
        // Ids 1..=3 (a `balsa up` cluster) are at least 0.236 of a period apart.
        for a in 1..=3u64 {
            for b in a + 1..=3 {
                let d = offset(a, every).abs_diff(offset(b, every));
                assert!(d.min(every - d) >= 2_300, "ids {a} and {b}: {d}");
            }
        }
    }

    #[test]
    fn points_are_every_entries_apart_and_never_late() {
        for id in 1..=7 {
            for every in [1, 7, 40, 10_000] {
                let mut at = 0;
                for _ in 0..20 {
                    let next = next_point(id, every, at);
                    assert!(next > at, "id {id} every {every}: {at} -> {next}");
                    assert!(next <= at + every, "id {id} every {every}: {at} -> {next}");
                    assert_eq!(next % every, offset(id, every) % every);
                    at = next.max(at + 1);
                }
            }
        }
    }

    #[test]
    fn triggers_once_per_point_and_retries_a_failed_build() {
        let (id, every) = (1, 100);
        let first = next_point(id, every, 0);
        let mut s = Schedule::default();
        assert!(!s.decide(id, every, 0, first - 1));
        assert!(s.decide(id, every, 0, first));
        // Building: no second trigger for the same point.
        assert!(!s.decide(id, every, 0, first + 10));
        // The build failed and a whole period went by: ask again.
        assert!(s.decide(id, every, 0, first + every));
        // Built at `first + every + 3`: the next point is this member's own.
        let built = first + every + 3;
        let next = next_point(id, every, built);
        assert!(!s.decide(id, every, built, next - 1));
        assert!(s.decide(id, every, built, next));
    }
}
