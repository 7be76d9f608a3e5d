//! The newest Raft log entries, in memory, beside RocksDB. Replication (one
//! read per follower per AppendEntries) and apply read the entries they need
//! from here, without a RocksDB iterator and a checksum-and-decode per entry;
//! older entries are read from RocksDB.
//!
//! What must stay true: the tail holds a contiguous run of the log's last
//! entries, each exactly as written to RocksDB (an append adds them after its
//! write, a truncate or purge drops them with theirs), so a read may take the
//! part of a range at or above the tail's first index from here and the rest
//! from RocksDB.

use std::collections::VecDeque;

use crate::types::{Entry, LogId};

/// How many entries the tail keeps (a follower one round trip behind, the
/// state machine about to apply), and how many bytes of values at most: a few
/// large objects must not pin much memory.
const KEEP_ENTRIES: usize = 4096;
const KEEP_BYTES: usize = 32 << 20;

#[derive(Default)]
pub struct LogTail {
    /// Contiguous: the entry at position `i` has index `first + i`.
    entries: VecDeque<(usize, Entry)>,
    bytes: usize,
}

/// Roughly what an entry holds: its values' sizes.
pub(crate) fn size_of(entry: &Entry) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(cmd) => cmd
            .ops()
            .map(|op| match op {
                balsa_api::Op::Create { value, .. } | balsa_api::Op::Update { value, .. } => {
                    value.len()
                }
                balsa_api::Op::Delete { .. } => 0,
            })
            .sum::<usize>()
            .saturating_add(64),
        _ => 64,
    }
}

impl LogTail {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(_, e)| e.log_id.index)
    }

    /// Holds entries just written. Entries that do not follow the tail's last
    /// one (the log was truncated or purged to make room for them) replace
    /// the whole tail.
    pub fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            let follows = self
                .last()
                .is_none_or(|last| last.index + 1 == entry.log_id.index);
            if !follows {
                self.clear();
            }
            let bytes = size_of(entry);
            self.bytes += bytes;
            self.entries.push_back((bytes, entry.clone()));
        }
        while self.entries.len() > KEEP_ENTRIES || self.bytes > KEEP_BYTES {
            match self.entries.pop_front() {
                Some((bytes, _)) => self.bytes -= bytes,
                None => break,
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Drops the entries from `since` on (a truncated log).
    pub fn truncate(&mut self, since: u64) {
        let Some(first) = self.first() else { return };
        let keep = since.saturating_sub(first) as usize;
        while self.entries.len() > keep {
            if let Some((bytes, _)) = self.entries.pop_back() {
                self.bytes -= bytes;
            }
        }
    }

    /// Drops the entries up to `upto` (a purged log).
    pub fn purge(&mut self, upto: u64) {
        while self.first().is_some_and(|first| first <= upto) {
            if let Some((bytes, _)) = self.entries.pop_front() {
                self.bytes -= bytes;
            }
        }
    }

    /// The entries of `start..end` held here, and the tail's first index
    /// (the part of the range below it is only in RocksDB). `None` when empty.
    pub fn read(&self, start: u64, end: u64) -> Option<(u64, Vec<Entry>)> {
        let first = self.first()?;
        let from = start.max(first);
        let skip = (from - first) as usize;
        let take = end.saturating_sub(from) as usize;
        let out = self
            .entries
            .iter()
            .skip(skip)
            .take(take)
            .map(|(_, e)| e.clone())
            .collect();
        Some((first, out))
    }

    pub fn last(&self) -> Option<LogId> {
        self.entries.back().map(|(_, e)| e.log_id)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    /// A blank entry at `index` (term 1, node 1); the log store's tests use
    /// it too.
    pub(crate) fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn entries(indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        indexes.map(entry).collect()
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn keeps_the_newest_entries_up_to_its_limit() {
        let mut tail = LogTail::default();
        tail.append(&entries(1..=20));
        tail.append(&entries(21..=KEEP_ENTRIES as u64 + 10));
        let (first, held) = tail.read(1, u64::MAX).expect("not empty");
        assert_eq!(first, 11);
        assert_eq!(held.len(), KEEP_ENTRIES);
        let (_, held) = tail.read(100, 103).expect("not empty");
        assert_eq!(indexes(&held), vec![100, 101, 102]);
    }

    #[test]
    fn truncate_purge_and_a_gap_drop_what_the_log_dropped() {
        let mut tail = LogTail::default();
        tail.append(&entries(1..=10));
        tail.truncate(8);
        assert_eq!(tail.last().map(|l| l.index), Some(7));
        tail.append(&entries(8..=9));
        tail.purge(3);
        let (first, held) = tail.read(0, 100).expect("not empty");
        assert_eq!(first, 4);
        assert_eq!(indexes(&held), vec![4, 5, 6, 7, 8, 9]);
        let (_, held) = tail.read(5, 7).expect("not empty");
        assert_eq!(indexes(&held), vec![5, 6]);
        // After a snapshot install the log restarts further on.
        tail.append(&entries(50..=51));
        let (first, held) = tail.read(0, 100).expect("not empty");
        assert_eq!((first, indexes(&held)), (50, vec![50, 51]));
        tail.purge(51);
        assert!(tail.read(0, 100).is_none());
        assert_eq!(tail.bytes, 0);
    }
}
