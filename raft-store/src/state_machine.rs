//! The state machine: objects in RocksDB plus the watch window. Applying a group
//! of entries is one RocksDB batch (objects, applied index, membership) written
//! under the window's write lock, then the events are pushed, so readers holding
//! the read lock see storage and window at the same revision.
//!
//! Snapshots are built from a RocksDB snapshot (a consistent point-in-time view:
//! objects and applied index come from one batch) and kept as the newest one,
//! in memory and in `snapshot.bin`, for lagging and new members.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use balsa_api::store::apply::{self, ObjectSource};
use balsa_api::store::list::{self, OrderedSource};
use balsa_api::store::window::{WatchWindow, WindowConfig};
use balsa_api::{
    Event, KeyPrefix, ListOptions, ListResult, Object, ResourceKey, Revision, StoreError,
};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::db::{cf, synced};
use crate::layout::{decode_object, encode_object, CF_OBJECTS, CF_SM, KEY_APPLIED, KEY_MEMBERSHIP};
use crate::types::{
    CommandReply, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
    COMMAND_VERSION,
};

const SNAPSHOT_FILE: &str = "snapshot.bin";

/// The state every handle shares: the database, the window and the newest snapshot.
pub struct SmShared {
    db: Arc<DB>,
    window: Arc<WatchWindow>,
    snapshot: Mutex<Option<StoredSnapshot>>,
    snapshot_path: PathBuf,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The body of a snapshot.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    applied: Option<LogId>,
    membership: StoredMembership,
    objects: Vec<(Vec<u8>, Vec<u8>)>,
}

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

impl StateMachine {
    pub fn open(
        db: Arc<DB>,
        data_dir: PathBuf,
        window: WindowConfig,
    ) -> Result<Self, StorageError> {
        let applied: Option<LogId> = read_sm(&db, KEY_APPLIED)?.flatten();
        let snapshot_path = data_dir.join(SNAPSHOT_FILE);
        let snapshot = match std::fs::read(&snapshot_path) {
            Ok(bytes) => Some(codec::decode_checked::<StoredSnapshot>(&bytes).map_err(sm_read)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(sm_read(e)),
        };
        let start = Revision(applied.map_or(0, |l| l.index));
        Ok(Self {
            shared: Arc::new(SmShared {
                db,
                window: WatchWindow::new(window, start),
                snapshot: Mutex::new(snapshot),
                snapshot_path,
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

/// The objects as they are mid-batch: RocksDB plus this batch's earlier writes.
struct Pending<'a> {
    db: &'a DB,
    writes: &'a HashMap<ResourceKey, Option<Arc<Object>>>,
    /// A storage failure is not a reply: replicas must not diverge on it.
    io_error: RefCell<Option<rocksdb::Error>>,
}

impl ObjectSource for Pending<'_> {
    fn get_object(&self, key: &ResourceKey) -> Result<Option<Object>, StoreError> {
        if let Some(w) = self.writes.get(key) {
            return Ok(w.as_ref().map(|o| (**o).clone()));
        }
        let encoded = key.encode();
        match self.db.get_pinned_cf(cf(self.db, CF_OBJECTS), &encoded) {
            Ok(Some(v)) => decode_object(&encoded, &v).map(Some),
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
        let db = &self.shared.db;
        let applied = read_sm::<Option<LogId>>(db, KEY_APPLIED)?.flatten();
        let membership = read_sm(db, KEY_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    #[tracing::instrument(level = "trace", skip_all)]
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let db = &*self.shared.db;
        let objects = cf(db, CF_OBJECTS);
        let mut writes = HashMap::new();
        let mut batch = WriteBatch::default();
        let mut replies = Vec::new();
        let mut pushes: Vec<(Revision, Vec<Event>)> = Vec::new();
        let mut last = None;
        for entry in entries {
            let rev = Revision(entry.log_id.index);
            last = Some(entry.log_id);
            let mut events = Vec::new();
            let reply = match entry.payload {
                EntryPayload::Blank => Ok(Vec::new()),
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m);
                    batch.put_cf(
                        cf(db, CF_SM),
                        KEY_MEMBERSHIP,
                        codec::encode(&stored).map_err(sm_write)?,
                    );
                    Ok(Vec::new())
                }
                EntryPayload::Normal(cmd) if cmd.version != COMMAND_VERSION => {
                    Err(StoreError::Internal(format!(
                        "command version {} is unknown to this replica",
                        cmd.version
                    )))
                }
                // An empty command is a read barrier: it only proves leadership.
                EntryPayload::Normal(cmd) if cmd.ops.is_empty() => Ok(Vec::new()),
                EntryPayload::Normal(cmd) => {
                    let source = Pending {
                        db,
                        writes: &writes,
                        io_error: RefCell::new(None),
                    };
                    let result = apply::apply(&source, rev, &cmd.ops);
                    if let Some(e) = source.io_error.into_inner() {
                        return Err(StorageIOError::apply(entry.log_id, &e).into());
                    }
                    result.map(|applied| {
                        for (key, obj) in applied.writes {
                            match &obj {
                                Some(o) => batch.put_cf(objects, key.encode(), encode_object(o)),
                                None => batch.delete_cf(objects, key.encode()),
                            }
                            writes.insert(key, obj);
                        }
                        events = applied.events;
                        applied.results
                    })
                }
            };
            replies.push(CommandReply(reply));
            pushes.push((rev, events));
        }
        let Some(last) = last else { return Ok(replies) };
        batch.put_cf(
            cf(db, CF_SM),
            KEY_APPLIED,
            codec::encode(&Some(last)).map_err(sm_write)?,
        );
        let mut window = self.shared.window.write();
        db.write(batch).map_err(sm_write)?;
        for (rev, events) in pushes {
            window.push(rev, events);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = codec::decode(&data).map_err(sm_read)?;
        let db = &*self.shared.db;
        let objects = cf(db, CF_OBJECTS);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(objects, [0u8].as_slice(), [0xffu8; 8].as_slice());
        for (k, v) in &body.objects {
            batch.put_cf(objects, k, v);
        }
        batch.put_cf(
            cf(db, CF_SM),
            KEY_APPLIED,
            codec::encode(&body.applied).map_err(sm_write)?,
        );
        batch.put_cf(
            cf(db, CF_SM),
            KEY_MEMBERSHIP,
            codec::encode(&body.membership).map_err(sm_write)?,
        );
        {
            let mut window = self.shared.window.write();
            db.write_opt(batch, &synced()).map_err(sm_write)?;
            window.reset(Revision(body.applied.map_or(0, |l| l.index)));
        }
        tracing::info!(snapshot = %meta.snapshot_id, objects = body.objects.len(), "installed snapshot");
        self.shared.save_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(current.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    /// Reading every object, encoding and fsyncing take long enough to starve
    /// a runtime worker (and so heartbeats) on a small machine: done on the
    /// blocking pool.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.build_snapshot())
            .await
            .map_err(sm_write)?
    }
}

impl SmShared {
    fn build_snapshot(&self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let db = &*self.db;
        let view = db.snapshot();
        let read = |key: &[u8]| -> Result<Option<Vec<u8>>, StorageError> {
            view.get_cf(cf(db, CF_SM), key).map_err(sm_read)
        };
        let applied: Option<LogId> = match read(KEY_APPLIED)? {
            Some(b) => codec::decode(&b).map_err(sm_read)?,
            None => None,
        };
        let membership: StoredMembership = match read(KEY_MEMBERSHIP)? {
            Some(b) => codec::decode(&b).map_err(sm_read)?,
            None => StoredMembership::default(),
        };
        let mut objects = Vec::new();
        for item in view.iterator_cf(cf(db, CF_OBJECTS), IteratorMode::Start) {
            let (k, v) = item.map_err(sm_read)?;
            objects.push((k.to_vec(), v.to_vec()));
        }
        drop(view);
        let count = objects.len();
        let body = SnapshotBody {
            applied,
            membership: membership.clone(),
            objects,
        };
        let data = codec::encode(&body).map_err(sm_write)?;
        drop(body);
        let snapshot_id = match applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, rand::random::<u32>()),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        tracing::info!(snapshot = %meta.snapshot_id, objects = count, bytes = data.len(), "built snapshot");
        self.save_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }

    fn save_snapshot(&self, snap: StoredSnapshot) -> Result<(), StorageError> {
        let bytes = codec::encode_checked(&snap).map_err(sm_write)?;
        let tmp = self.snapshot_path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.snapshot_path)
        };
        write().map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(snap.meta.signature()),
                &e,
            ))
        })?;
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(snap);
        Ok(())
    }

    pub fn window(&self) -> Arc<WatchWindow> {
        self.window.clone()
    }

    /// The object as this replica has applied it.
    pub fn get(&self, key: &ResourceKey) -> Result<Option<Object>, StoreError> {
        key.validate()?;
        let encoded = key.encode();
        match self
            .db
            .get_pinned_cf(cf(&self.db, CF_OBJECTS), &encoded)
            .map_err(store_err)?
        {
            Some(v) => decode_object(&encoded, &v).map(Some),
            None => Ok(None),
        }
    }

    pub fn list(&self, prefix: &KeyPrefix, opts: &ListOptions) -> Result<ListResult, StoreError> {
        let (plan, view) = {
            let window = self.window.read();
            (list::plan(&window, prefix, opts)?, self.db.snapshot())
        };
        list::run(
            &View {
                db: &self.db,
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
