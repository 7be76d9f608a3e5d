//! The Raft log in RocksDB. An append writes its entries at once and is
//! reported durable to openraft only after the write-ahead log is fsynced. One
//! flusher task does the fsyncs: every append that arrives while one sync runs
//! is covered by the next, so many writes share one fsync (group commit) while
//! each keeps its own entry and log index. Every entry carries a checksum,
//! checked on every read and over the log's tail at start, so a damaged log
//! stops the replica with a clear error.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use tokio::sync::mpsc;

use crate::codec;
use crate::db::{cf, synced};
use crate::layout::{log_index, log_key, CF_LOG, CF_RAFT, KEY_COMMITTED, KEY_PURGED, KEY_VOTE};
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// How many entries at the log's end are verified when the replica opens.
const VERIFY_TAIL: usize = 10_000;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// Appends written but not yet synced, in log order.
    unsynced: mpsc::Sender<LogFlushed<TypeConfig>>,
}

/// Syncs the write-ahead log for every queued append, then tells openraft, in
/// the order the appends were made.
async fn flush_loop(db: Arc<DB>, mut queue: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Some(first) = queue.recv().await {
        let mut waiting = vec![first];
        while let Ok(next) = queue.try_recv() {
            waiting.push(next);
        }
        let synced = match crate::failpoints::before_log_sync().await {
            Err(injected) => Err(injected.to_string()),
            Ok(()) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || db.flush_wal(true))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
        };
        for callback in waiting {
            let io = synced
                .clone()
                .map_err(|e| std::io::Error::other(format!("syncing the log: {e}")));
            callback.log_io_completed(io);
        }
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
    /// Must be called within a Tokio runtime (it starts the flusher task).
    pub fn open(db: Arc<DB>) -> Result<Self, LogError> {
        let (unsynced, queue) = mpsc::channel(16 * 1024);
        let store = Self {
            db: db.clone(),
            unsynced,
        };
        store.verify_tail()?;
        tokio::spawn(flush_loop(db, queue));
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
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mode = IteratorMode::From(&log_key(start), Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf(&self.db, CF_LOG), mode) {
            let (k, v) = item.map_err(io_read)?;
            let Some(index) = log_index(&k) else { break };
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = codec::decode_checked(&v)
                .map_err(|e| StorageError::from(StorageIOError::read_log_at_index(index, &e)))?;
            out.push(entry);
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

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        let log = cf(&self.db, CF_LOG);
        for entry in entries {
            let bytes = codec::encode_checked(&entry).map_err(io_write)?;
            batch.put_cf(log, log_key(entry.log_id.index), bytes);
        }
        // Written now, durable (and acknowledged to openraft) after the next sync.
        self.db.write(batch).map_err(io_write)?;
        self.unsynced
            .send(callback)
            .await
            .map_err(|_| io_write(std::io::Error::other("the log flusher has stopped")))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let log = cf(&self.db, CF_LOG);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(log, log_key(log_id.index), log_key(u64::MAX));
        self.db.write_opt(batch, &synced()).map_err(io_write)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put_meta(KEY_PURGED, &log_id, true)?;
        let log = cf(&self.db, CF_LOG);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(log, log_key(0), log_key(log_id.index + 1));
        self.db.write(batch).map_err(io_write)
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn write_entries(db: &DB, indexes: impl IntoIterator<Item = u64>) {
        for i in indexes {
            let bytes = codec::encode_checked(&entry(i)).unwrap();
            db.put_cf(cf(db, CF_LOG), log_key(i), bytes).unwrap();
        }
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
