//! The Raft log in RocksDB, with its newest entries also in memory
//! (`log_tail`) for replication and apply to read.
//!
//! An append is written and fsynced before `append` returns, on the Raft
//! thread, and reported durable at once. openraft 0.9 waits for each append's
//! durability before it handles the next message (`append_to_log` awaits the
//! callback), so a sync on another thread grouped nothing: it only let the
//! other consensus tasks (replication, the peer server) run while it lasted,
//! at the cost of two thread wake-ups per client write. Here they run when an
//! append yields: the core appends every queued client write before it
//! yields on its own, so that a long queue on a slow disk does not starve
//! replication (whose AppendEntries are what followers hear from a busy
//! leader), an append yields once `YIELD_EVERY` has passed since it last did.
//! Each client write keeps its own entry and log index. Every entry
//! carries a checksum, checked on every read from RocksDB and over the log's
//! tail at start, so a damaged log stops the replica with a clear error.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use crate::codec;
use crate::db::{cf, synced};
use crate::layout::{log_index, log_key, CF_LOG, CF_RAFT, KEY_COMMITTED, KEY_PURGED, KEY_VOTE};
use crate::log_tail::LogTail;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// How many entries at the log's end are verified when the replica opens.
const VERIFY_TAIL: usize = 10_000;

/// The longest the log's appends hold the Raft thread without letting the
/// other consensus tasks run (a few heartbeat-free milliseconds, far below
/// the election timeout).
const YIELD_EVERY: Duration = Duration::from_millis(2);

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// The newest entries, shared with the log readers.
    tail: Arc<Mutex<LogTail>>,
    /// When this handle's appends last let other tasks run.
    yielded: Instant,
    /// Where appends encode each entry before RocksDB copies it.
    scratch: Scratch,
}

/// A buffer of this handle's own: a clone (a log reader) starts empty.
#[derive(Default)]
struct Scratch(Vec<u8>);

impl Clone for Scratch {
    fn clone(&self) -> Self {
        Self::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log entry at index {index} is damaged: {source}")]
    Corrupt {
        index: u64,
        #[source]
        source: codec::CodecError,
    },
    #[error("log entry stored under index {key} says it is index {entry}")]
    Misplaced { key: u64, entry: u64 },
    #[error("log has a gap: index {after} is followed by {next}")]
    Gap { after: u64, next: u64 },
    #[error("reading the log: {0}")]
    Read(#[from] rocksdb::Error),
}

fn io_read(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn io_write(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    /// Opens the log and verifies its tail: checksums, indexes, no gaps.
    pub fn open(db: Arc<DB>) -> Result<Self, LogError> {
        let store = Self {
            db,
            tail: Arc::new(Mutex::new(LogTail::default())),
            yielded: Instant::now(),
            scratch: Scratch::default(),
        };
        store.verify_tail()?;
        Ok(store)
    }

    fn verify_tail(&self) -> Result<(), LogError> {
        let iter = self
            .db
            .iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End)
            .take(VERIFY_TAIL);
        let mut next: Option<u64> = None;
        for item in iter {
            let (k, v) = item?;
            let key = log_index(&k).unwrap_or(u64::MAX);
            let entry: Entry = codec::decode_checked(&v)
                .map_err(|source| LogError::Corrupt { index: key, source })?;
            if entry.log_id.index != key {
                return Err(LogError::Misplaced {
                    key,
                    entry: entry.log_id.index,
                });
            }
            if let Some(n) = next {
                if key + 1 != n {
                    return Err(LogError::Gap {
                        after: key,
                        next: n,
                    });
                }
            }
            next = Some(key);
        }
        Ok(())
    }

    fn tail(&self) -> MutexGuard<'_, LogTail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entries of `start..end` from RocksDB.
    fn read_stored(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let mode = IteratorMode::From(&log_key(start), Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf(&self.db, CF_LOG), mode) {
            let (k, v) = item.map_err(io_read)?;
            let Some(index) = log_index(&k) else { break };
            if index >= end {
                break;
            }
            let entry: Entry = codec::decode_checked(&v)
                .map_err(|e| StorageError::from(StorageIOError::read_log_at_index(index, &e)))?;
            out.push(entry);
        }
        Ok(out)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let Some(bytes) = self
            .db
            .get_cf(cf(&self.db, CF_RAFT), key)
            .map_err(io_read)?
        else {
            return Ok(None);
        };
        codec::decode(&bytes).map(Some).map_err(io_read)
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(io_write)?;
        let opts = if sync { synced() } else { Default::default() };
        self.db
            .put_cf_opt(cf(&self.db, CF_RAFT), key, bytes, &opts)
            .map_err(io_write)
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        if let Some(last) = self.tail().last() {
            return Ok(Some(last));
        }
        let mut iter = self.db.iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_, v) = item.map_err(io_read)?;
                let entry: Entry = codec::decode_checked(&v).map_err(io_read)?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        // The tail holds the newest entries; anything below its first one is
        // only in RocksDB (and anything past its last one, were a read to
        // race an append, is read there too).
        let held = self.tail().read(start, end);
        let Some((first, held)) = held else {
            return self.read_stored(start, end);
        };
        let mut out = if start < first {
            self.read_stored(start, first.min(end))?
        } else {
            Vec::new()
        };
        let after = held.last().map_or(start.max(first), |e| e.log_id.index + 1);
        out.extend(held);
        if after < end {
            out.extend(self.read_stored(after, end)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last = self.last_entry_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: losing it only means re-learning the commit index from the leader.
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    /// Written and synced before the callback and the return (see the
    /// module's note on why here, on the Raft thread).
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut batch = WriteBatch::default();
        let log = cf(&self.db, CF_LOG);
        for entry in &entries {
            codec::encode_checked_into(entry, &mut self.scratch.0).map_err(io_write)?;
            batch.put_cf(log, log_key(entry.log_id.index), &self.scratch.0);
        }
        let synced_write = match crate::failpoints::before_log_sync().await {
            Err(injected) => Err(injected),
            Ok(()) => self
                .db
                .write_opt(batch, &synced())
                .map_err(std::io::Error::other),
        };
        if synced_write.is_ok() {
            self.tail().append(&entries);
        }
        callback.log_io_completed(
            synced_write.map_err(|e| std::io::Error::other(format!("syncing the log: {e}"))),
        );
        if self.yielded.elapsed() >= YIELD_EVERY {
            tokio::task::yield_now().await;
            self.yielded = Instant::now();
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.tail().truncate(log_id.index);
        let log = cf(&self.db, CF_LOG);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(log, log_key(log_id.index), log_key(u64::MAX));
        self.db.write_opt(batch, &synced()).map_err(io_write)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.tail().purge(log_id.index);
        self.put_meta(KEY_PURGED, &log_id, true)?;
        let log = cf(&self.db, CF_LOG);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(log, log_key(0), log_key(log_id.index + 1));
        self.db.write(batch).map_err(io_write)
    }
}

#[cfg(test)]
mod tests {
    use balsa_api::store::window::WindowConfig;

    use super::*;
    use crate::log_tail::tests::entry;
    use crate::state_machine::StateMachine;

    fn write_entries(db: &DB, indexes: impl IntoIterator<Item = u64>) {
        for i in indexes {
            let bytes = codec::encode_checked(&entry(i)).unwrap();
            db.put_cf(cf(db, CF_LOG), log_key(i), bytes).unwrap();
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test]
    async fn reads_join_rocksdb_and_the_tail_and_follow_truncate_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        write_entries(&db, 1..=105);
        let mut store = LogStore::open(db.clone()).unwrap();
        // The tail holds 50..=100; 101..=105 are only in RocksDB, as for a
        // read that races an append.
        store
            .tail()
            .append(&(50..=100).map(entry).collect::<Vec<_>>());
        let all = store.try_get_log_entries(1..106).await.unwrap();
        assert_eq!(indexes(&all), (1..=105).collect::<Vec<_>>());
        let some = store.try_get_log_entries(60..=70).await.unwrap();
        assert_eq!(indexes(&some), (60..=70).collect::<Vec<_>>());
        let below = store.try_get_log_entries(10..20).await.unwrap();
        assert_eq!(indexes(&below), (10..20).collect::<Vec<_>>());

        store.truncate(entry(90).log_id).await.unwrap();
        let after = store.try_get_log_entries(80..).await.unwrap();
        assert_eq!(indexes(&after), (80..90).collect::<Vec<_>>());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(89));

        store.purge(entry(60).log_id).await.unwrap();
        let kept = store.try_get_log_entries(0..).await.unwrap();
        assert_eq!(indexes(&kept), (61..90).collect::<Vec<_>>());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(60));
    }

    struct Builder;

    impl openraft::testing::StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir>
        for Builder
    {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().map_err(io_write)?;
            let db = crate::db::open(&dir.path().join("db")).map_err(io_write)?;
            let log = LogStore::open(db.clone()).map_err(io_write)?;
            let sm = StateMachine::open(db, dir.path().to_path_buf(), WindowConfig::default())?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own suite for log stores and state machines.
    #[test]
    fn passes_the_openraft_storage_suite() {
        openraft::testing::Suite::test_all(Builder).unwrap();
    }

    #[tokio::test]
    async fn a_damaged_or_truncated_tail_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        write_entries(&db, 1..=5);
        assert!(LogStore::open(db.clone()).is_ok());

        let mut damaged = codec::encode_checked(&entry(5)).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x5a;
        db.put_cf(cf(&db, CF_LOG), log_key(5), &damaged).unwrap();
        let err = LogStore::open(db.clone())
            .err()
            .expect("corruption detected");
        assert!(matches!(err, LogError::Corrupt { index: 5, .. }), "{err}");

        db.put_cf(cf(&db, CF_LOG), log_key(5), &damaged[..3])
            .unwrap();
        let err = LogStore::open(db.clone())
            .err()
            .expect("truncation detected");
        assert!(matches!(err, LogError::Corrupt { index: 5, .. }), "{err}");

        write_entries(&db, [5]);
        db.delete_cf(cf(&db, CF_LOG), log_key(3)).unwrap();
        let err = LogStore::open(db.clone()).err().expect("gap detected");
        assert!(matches!(err, LogError::Gap { after: 2, next: 4 }), "{err}");
    }
}
