//! The state machine: objects in RocksDB plus the watch window. Applying a group
//! of entries is one RocksDB batch (objects, applied index, revision,
//! membership) written under the window's write lock, then the events are
//! pushed, so readers holding the read lock see storage and window at the same
//! revision.
//!
//! Revisions count the transactions applied: each successful transaction of a
//! command takes the next one (a failed one, a blank or membership entry takes
//! none). Every replica applies the same log, so every replica gives every
//! write the same revision. The applied log index is published separately
//! (`applied_index`): linearizable reads wait on it.
//!
//! The objects live in their own RocksDB (a generation, see
//! `snapshot::state_dir`). Snapshots are checkpoints of it, archived to one
//! file and streamed in chunks; installing one swaps in a new generation
//! under the window's write lock and resets the window, so a watch from
//! below the snapshot gets 410.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use balsa_api::store::apply::{self, ObjectSource};
use balsa_api::store::list::{self, OrderedSource};
use balsa_api::store::window::{self, WatchWindow, WindowConfig};
use balsa_api::{
    Event, KeyPrefix, ListOptions, ListResult, Object, ResourceKey, Revision, StoreError,
};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use crate::codec;
use crate::db::cf;
use crate::layout::{
    decode_object, encode_object, CF_OBJECTS, CF_SM, KEY_APPLIED, KEY_MEMBERSHIP, KEY_REVISION,
};
use crate::snapshot::migrate::Legacy;
use crate::snapshot::{Current, SmDb, SnapshotFile, StateDir, StateDirError};
use crate::types::{
    CommandReply, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The state machine's directory under the data dir.
const SM_DIR: &str = "sm";
/// Where the newest snapshot was kept before `sm/` (removed by `migrate`).
const LEGACY_SNAPSHOT_FILE: &str = "snapshot.bin";

/// The state every handle shares: the live generation, the window and the
/// snapshot directory.
pub struct SmShared {
    /// Replaced only by an install, under the window's write lock.
    db: RwLock<Arc<SmDb>>,
    window: Arc<WatchWindow>,
    dir: StateDir,
    /// Held by a build or install for its whole blocking run; `true` once
    /// closed. Blocking work outlives the runtime that spawned it, so a
    /// replica that stops waits here: a restart must not find the
    /// directory still being written.
    busy: Mutex<bool>,
    /// The index of the last entry applied (or installed).
    applied_index: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("the state machine is closed (the replica is stopping)")]
struct Closed;

#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<SmShared>,
}

fn sm_read(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn store_err(e: rocksdb::Error) -> StoreError {
    StoreError::Internal(format!("reading objects: {e}"))
}

fn snapshot_read(meta: Option<&SnapshotMeta>, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_snapshot(meta.map(|m| m.signature()), &e).into()
}

fn snapshot_write(
    meta: Option<&SnapshotMeta>,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), &e).into()
}

impl StateMachine {
    /// Opens the state machine under `data_dir` (`main` is the replica's main
    /// database, read only to move a state machine written before `sm/`).
    pub fn open(
        main: Arc<DB>,
        data_dir: PathBuf,
        window: WindowConfig,
    ) -> Result<Self, StorageError> {
        let legacy = Legacy {
            main: &main,
            snapshot_file: data_dir.join(LEGACY_SNAPSHOT_FILE),
        };
        let (dir, db) = StateDir::open(&data_dir.join(SM_DIR), legacy).map_err(sm_read)?;
        let (applied, start) = applied_revision(&db)?;
        Ok(Self {
            shared: Arc::new(SmShared {
                db: RwLock::new(db),
                window: WatchWindow::new(window, start),
                dir,
                busy: Mutex::new(false),
                applied_index: tokio::sync::watch::channel(applied).0,
            }),
        })
    }

    pub fn shared(&self) -> Arc<SmShared> {
        self.shared.clone()
    }
}

fn read_sm<T: serde::de::DeserializeOwned>(db: &DB, key: &[u8]) -> Result<Option<T>, StorageError> {
    match db.get_cf(cf(db, CF_SM), key).map_err(sm_read)? {
        Some(bytes) => codec::decode(&bytes).map(Some).map_err(sm_read),
        None => Ok(None),
    }
}

/// The applied index and revision a state machine database holds.
fn applied_revision(db: &DB) -> Result<(u64, Revision), StorageError> {
    let applied = read_sm::<Option<LogId>>(db, KEY_APPLIED)?
        .flatten()
        .map_or(0, |l| l.index);
    let revision = read_sm::<Revision>(db, KEY_REVISION)?.unwrap_or(Revision(applied));
    Ok((applied, revision))
}

/// The objects as they are mid-batch: this batch's earlier writes, then the
/// window's newest events (the same objects RocksDB holds, already in
/// memory), then RocksDB.
struct Pending<'a> {
    db: &'a DB,
    writes: &'a HashMap<ResourceKey, Option<Arc<Object>>>,
    recent: &'a window::Inner,
    /// A storage failure is not a reply: replicas must not diverge on it.
    io_error: RefCell<Option<rocksdb::Error>>,
}

impl ObjectSource for Pending<'_> {
    fn get_object(&self, key: &ResourceKey) -> Result<Option<Arc<Object>>, StoreError> {
        if let Some(w) = self.writes.get(key) {
            return Ok(w.clone());
        }
        if let Some(o) = self.recent.latest(key) {
            return Ok(Some(o.clone()));
        }
        let encoded = key.encode();
        match self.db.get_pinned_cf(cf(self.db, CF_OBJECTS), &encoded) {
            Ok(Some(v)) => decode_object(&encoded, &v).map(|o| Some(Arc::new(o))),
            Ok(None) => Ok(None),
            Err(e) => {
                let msg = e.to_string();
                *self.io_error.borrow_mut() = Some(e);
                Err(StoreError::Internal(msg))
            }
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let db = self.shared.db();
        let applied = read_sm::<Option<LogId>>(&db, KEY_APPLIED)?.flatten();
        let membership = read_sm(&db, KEY_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    #[tracing::instrument(level = "trace", skip_all)]
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let db = self.shared.db();
        let db = &**db;
        let objects = cf(db, CF_OBJECTS);
        let mut writes = HashMap::new();
        let mut batch = WriteBatch::default();
        let mut replies = Vec::new();
        let mut pushes: Vec<(Revision, Vec<Event>)> = Vec::new();
        // Held while the batch is worked out: only this worker pushes, and
        // it takes the write lock below, after dropping this.
        let recent = self.shared.window.read();
        let mut rev = recent.current();
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m);
                    batch.put_cf(
                        cf(db, CF_SM),
                        KEY_MEMBERSHIP,
                        codec::encode(&stored).map_err(sm_write)?,
                    );
                    Vec::new()
                }
                EntryPayload::Normal(cmd) => {
                    let mut results = Vec::with_capacity(cmd.txns.len());
                    for ops in &cmd.txns {
                        let source = Pending {
                            db,
                            writes: &writes,
                            recent: &recent,
                            io_error: RefCell::new(None),
                        };
                        let next = Revision(rev.0 + 1);
                        let result = apply::apply(&source, next, ops);
                        if let Some(e) = source.io_error.into_inner() {
                            return Err(StorageIOError::apply(entry.log_id, &e).into());
                        }
                        results.push(result.map(|applied| {
                            for (key, obj) in applied.writes {
                                match &obj {
                                    Some(o) => {
                                        batch.put_cf(objects, key.encode(), encode_object(o))
                                    }
                                    None => batch.delete_cf(objects, key.encode()),
                                }
                                writes.insert(key, obj);
                            }
                            rev = next;
                            pushes.push((next, applied.events));
                            (next, applied.results)
                        }));
                    }
                    results
                }
            };
            replies.push(CommandReply(reply));
        }
        let Some(last) = last else { return Ok(replies) };
        let sm = cf(db, CF_SM);
        batch.put_cf(
            sm,
            KEY_APPLIED,
            codec::encode(&Some(last)).map_err(sm_write)?,
        );
        batch.put_cf(sm, KEY_REVISION, codec::encode(&rev).map_err(sm_write)?);
        drop(recent);
        let mut window = self.shared.window.write();
        db.write(batch).map_err(sm_write)?;
        for (rev, events) in pushes {
            window.push(rev, events);
        }
        drop(window);
        self.shared.applied_index.send_replace(last.index);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let path = self.shared.dir.incoming_path();
        let file = SnapshotFile::create(&path).map_err(|e| snapshot_write(None, e))?;
        Ok(Box::new(file))
    }

    /// Verifying, unpacking and opening the new generation take long: done
    /// on the blocking pool (the state machine's worker waits; it has nothing
    /// else to apply until the snapshot is in).
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let received = snapshot
            .into_received()
            .await
            .map_err(|e| snapshot_write(Some(meta), e))?;
        let shared = self.shared.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || shared.install(&meta, &received))
            .await
            .map_err(sm_write)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.shared.current_snapshot()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    /// The checkpoint flushes the memtable and the archive copies the files:
    /// done on the blocking pool, never on a runtime worker.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.build_snapshot())
            .await
            .map_err(sm_write)?
    }
}

fn open_snapshot(current: Current) -> Result<Snapshot<TypeConfig>, StorageError> {
    let file =
        SnapshotFile::open(&current.path).map_err(|e| snapshot_read(Some(&current.meta), e))?;
    Ok(Snapshot {
        meta: current.meta,
        snapshot: Box::new(file),
    })
}

impl SmShared {
    /// The live generation.
    fn db(&self) -> Arc<SmDb> {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for a build or install in progress and refuses later ones.
    pub async fn close(self: &Arc<Self>) {
        let shared = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            *shared.busy.lock().unwrap_or_else(|e| e.into_inner()) = true;
        })
        .await;
    }

    /// Runs blocking snapshot work unless closed, holding `busy`.
    fn exclusive<T>(
        &self,
        work: impl FnOnce() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let closed = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if *closed {
            return Err(snapshot_write(None, Closed));
        }
        let out = work();
        drop(closed);
        out
    }

    fn build_snapshot(&self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.exclusive(|| self.build_snapshot_now())
    }

    fn build_snapshot_now(&self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let db = self.db();
        let started = std::time::Instant::now();
        let built = self.dir.build(&db).map_err(|e| snapshot_write(None, e))?;
        drop(db);
        // Opened before publishing: a newer snapshot published meanwhile
        // removes this file, and the open handle still reads it.
        let snapshot = open_snapshot(built.clone())?;
        let published = self
            .dir
            .publish(&built)
            .map_err(|e| snapshot_write(Some(&built.meta), e))?;
        let bytes = std::fs::metadata(&built.path).map_or(0, |m| m.len());
        tracing::info!(
            snapshot = %built.meta.snapshot_id,
            bytes,
            published,
            ms = started.elapsed().as_millis() as u64,
            "built snapshot"
        );
        Ok(snapshot)
    }

    fn install(&self, meta: &SnapshotMeta, received: &std::path::Path) -> Result<(), StorageError> {
        self.exclusive(|| self.install_now(meta, received))
    }

    fn install_now(
        &self,
        meta: &SnapshotMeta,
        received: &std::path::Path,
    ) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let db = self
            .dir
            .install(meta, received)
            .map_err(|e: StateDirError| snapshot_write(Some(meta), e))?;
        let (_, revision) = applied_revision(&db)?;
        let applied = meta.last_log_id.map_or(0, |l| l.index);
        {
            let mut window = self.window.write();
            let old = std::mem::replace(
                &mut *self.db.write().unwrap_or_else(|e| e.into_inner()),
                Arc::new(db),
            );
            old.retire();
            window.reset(revision);
        }
        self.applied_index.send_replace(applied);
        tracing::info!(
            snapshot = %meta.snapshot_id,
            ms = started.elapsed().as_millis() as u64,
            "installed snapshot"
        );
        Ok(())
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // A snapshot published between reading `current` and opening it
        // removed the file: the newer one is then current.
        for _ in 0..3 {
            let Some(current) = self.dir.current() else {
                return Ok(None);
            };
            match open_snapshot(current.clone()) {
                Ok(s) => return Ok(Some(s)),
                Err(_) if !current.path.exists() => continue,
                Err(e) => return Err(e),
            }
        }
        self.dir.current().map(open_snapshot).transpose()
    }

    pub fn window(&self) -> Arc<WatchWindow> {
        self.window.clone()
    }

    /// Follows the index of the last entry applied.
    pub fn applied_index(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied_index.subscribe()
    }

    /// The object as this replica has applied it.
    pub fn get(&self, key: &ResourceKey) -> Result<Option<Object>, StoreError> {
        key.validate()?;
        let encoded = key.encode();
        let db = self.db();
        let value = db
            .get_pinned_cf(cf(&db, CF_OBJECTS), &encoded)
            .map_err(store_err)?;
        value.map(|v| decode_object(&encoded, &v)).transpose()
    }

    pub fn list(&self, prefix: &KeyPrefix, opts: &ListOptions) -> Result<ListResult, StoreError> {
        // The view is taken under the window's lock (apply writes and an
        // install swaps generations under it), so both are at one revision.
        let window = self.window.read();
        let plan = list::plan(&window, prefix, opts)?;
        let db = self.db();
        let view = db.snapshot();
        drop(window);
        list::run(
            &View {
                db: &db,
                view: &view,
            },
            plan,
            prefix,
            opts.limit,
        )
    }
}

struct View<'a> {
    db: &'a DB,
    view: &'a rocksdb::Snapshot<'a>,
}

impl OrderedSource for View<'_> {
    fn scan<'a>(
        &'a self,
        prefix: &[u8],
        from: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Object, StoreError>> + 'a> {
        let prefix = prefix.to_vec();
        let iter = self.view.iterator_cf(
            cf(self.db, CF_OBJECTS),
            IteratorMode::From(from, Direction::Forward),
        );
        Box::new(
            iter.map(|item| item.map_err(store_err))
                .take_while(move |item| match item {
                    Ok((k, _)) => k.starts_with(&prefix),
                    Err(_) => true,
                })
                .map(|item| item.and_then(|(k, v)| decode_object(&k, &v))),
        )
    }
}
