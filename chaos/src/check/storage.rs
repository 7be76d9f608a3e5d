//! Storage faults: a master whose log sync failed must stop (openraft stops
//! the Raft node on a storage error, and `balsa server` then exits) rather
//! than stay up answering local reads from a state that no longer advances.
//! The nemesis notes, at each heal, whether the target had stopped; a
//! `fsync-error` whose target was still running is a violation. (A full disk
//! need not stop a master at once: RocksDB may still have preallocated log
//! space, and a write that fits is persisted; what matters there is that no
//! acknowledged write is lost, which the durability checker covers.)

use super::Violation;
use crate::history::History;
use crate::nemesis::STILL_RUNNING;

pub fn check(h: &History) -> Vec<Violation> {
    h.faults
        .iter()
        .filter(|f| f.kind == "fsync-error" && f.note.contains(STILL_RUNNING))
        .map(|f| {
            Violation::new(
                "storage",
                "served-after-failed-sync",
                format!(
                    "member(s) {:?} still ran {:.1} s after their log sync started failing ({})",
                    f.targets,
                    (f.end - f.start) as f64 / 1e9,
                    f.note
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::FaultRecord;
    use crate::nemesis::STOPPED;

    fn fault(kind: &str, note: String) -> FaultRecord {
        FaultRecord {
            kind: kind.into(),
            targets: vec![2],
            start: 0,
            end: 2_000_000_000,
            note,
        }
    }

    #[test]
    fn a_master_that_kept_running_after_a_failed_sync_is_a_violation() {
        let mut h = History::default();
        h.faults.push(fault(
            "fsync-error",
            format!("x; {STOPPED} (signal 6), restarted"),
        ));
        h.faults
            .push(fault("disk-full", format!("x; {STILL_RUNNING}")));
        assert!(check(&h).is_empty());
        h.faults
            .push(fault("fsync-error", format!("x; {STILL_RUNNING}")));
        let v = check(&h);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, "served-after-failed-sync");
    }
}
