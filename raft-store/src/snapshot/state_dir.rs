//! The state machine's directory, `sm/`: which RocksDB generation holds the
//! objects and which file is the newest snapshot. One small manifest names
//! both and is replaced by an atomic rename, so that rename is the single
//! point where a snapshot install takes effect: a crash before it leaves the
//! old state, after it the new one, never a mix.
//!
//! ```text
//! sm/current          manifest { generation, snapshot }   (codec::encode_checked)
//! sm/gen-N/           RocksDB: objects, applied index, membership
//! sm/snap-M.snap      the newest snapshot (`archive` of a checkpoint of a generation)
//! sm/ckpt-*.tmp  gen-*.tmp  incoming-*.part  current.tmp   leftovers, removed at open
//! ```
//!
//! Build: checkpoint the live generation (hard links, after a memtable
//! flush), read its applied state read-only, write the archive, publish.
//! Install: check the received archive against the meta openraft gives,
//! unpack it as a new generation, open it, check its applied index, then
//! commit the manifest. The old generation's directory goes when the last
//! reader lets go of it (`SmDb`).

use std::io::{self, BufReader, BufWriter};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::DB;
use serde::{Deserialize, Serialize};

use super::archive::{self, sync_dir, ArchiveError, CHUNK};
use super::migrate::{self, Legacy};
use crate::codec::{self, CodecError};
use crate::db::{self, cf, OpenError};
use crate::layout::{CF_SM, KEY_APPLIED, KEY_MEMBERSHIP};
use crate::types::{LogId, SnapshotMeta, StoredMembership};

const MANIFEST: &str = "current";

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{step}: {source}")]
    Rocks {
        step: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("snapshot archive: {0}")]
    Archive(#[from] ArchiveError),
    #[error("{what}: {source}")]
    Codec {
        what: &'static str,
        #[source]
        source: CodecError,
    },
    #[error("the received snapshot does not match: expected {expected}, found {found}")]
    Mismatch { expected: String, found: String },
}

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateDirError {
    let path = path.to_path_buf();
    move |source| StateDirError::Io { step, path, source }
}

fn rocks(step: &'static str) -> impl FnOnce(rocksdb::Error) -> StateDirError {
    move |source| StateDirError::Rocks { step, source }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    generation: u64,
    snapshot: Option<u64>,
}

fn gen_name(n: u64) -> String {
    format!("gen-{n}")
}

fn snap_name(n: u64) -> String {
    format!("snap-{n}.snap")
}

/// One generation of the state machine, open. Once retired (replaced by an
/// install), its directory is removed when the last handle is dropped.
pub struct SmDb {
    // Declared first: the database closes before the directory goes.
    db: DB,
    dir: RetiredDir,
}

struct RetiredDir {
    path: PathBuf,
    retired: AtomicBool,
}

impl Drop for RetiredDir {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire) {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "removing a retired state machine");
            }
        }
    }
}

impl SmDb {
    fn open(path: PathBuf) -> Result<Self, StateDirError> {
        Ok(Self {
            db: db::open_state(&path)?,
            dir: RetiredDir {
                path,
                retired: AtomicBool::new(false),
            },
        })
    }

    /// This generation was replaced: remove it once nobody reads it.
    pub fn retire(&self) {
        self.dir.retired.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for SmDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmDb")
            .field("path", &self.dir.path)
            .finish()
    }
}

impl Deref for SmDb {
    type Target = DB;
    fn deref(&self) -> &DB {
        &self.db
    }
}

/// The newest snapshot: its meta and its archive.
#[derive(Clone)]
pub struct Current {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
    n: u64,
}

pub struct StateDir {
    root: PathBuf,
    state: Mutex<(Manifest, Option<Current>)>,
    next: AtomicU64,
}

/// The applied log id and membership a state-machine database holds.
pub fn applied_state(db: &DB) -> Result<(Option<LogId>, StoredMembership), StateDirError> {
    let read = |key: &[u8]| {
        db.get_cf(cf(db, CF_SM), key)
            .map_err(rocks("reading applied state"))
    };
    let decode = |what| move |source| StateDirError::Codec { what, source };
    let applied: Option<LogId> = match read(KEY_APPLIED)? {
        Some(b) => codec::decode(&b).map_err(decode("applied index"))?,
        None => None,
    };
    let membership = match read(KEY_MEMBERSHIP)? {
        Some(b) => codec::decode(&b).map_err(decode("membership"))?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

fn read_manifest(root: &Path) -> Result<Option<Manifest>, StateDirError> {
    let path = root.join(MANIFEST);
    match std::fs::read(&path) {
        Ok(bytes) => {
            codec::decode_checked(&bytes)
                .map(Some)
                .map_err(|source| StateDirError::Codec {
                    what: "state machine manifest",
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", &path)(e)),
    }
}

/// Replaces the manifest: write aside, fsync, rename, fsync the directory.
fn write_manifest(root: &Path, m: &Manifest) -> Result<(), StateDirError> {
    let bytes = codec::encode_checked(m).map_err(|source| StateDirError::Codec {
        what: "state machine manifest",
        source,
    })?;
    let tmp = root.join(format!("{MANIFEST}.tmp"));
    let write = || -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, root.join(MANIFEST))?;
        sync_dir(root)
    };
    write().map_err(io_err("writing the manifest in", root))
}

fn remove_any(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// The meta in an archive's header.
fn read_archive_meta(path: &Path) -> Result<SnapshotMeta, StateDirError> {
    let file = std::fs::File::open(path).map_err(io_err("opening", path))?;
    let header = archive::read_meta(&mut BufReader::new(file))?;
    codec::decode(&header).map_err(|source| StateDirError::Codec {
        what: "snapshot meta",
        source,
    })
}

fn snapshot_id(applied: Option<LogId>) -> String {
    match applied {
        Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, rand::random::<u32>()),
        None => format!("empty-{}", rand::random::<u32>()),
    }
}

impl StateDir {
    /// Opens `root`, creating it (and moving a legacy state machine into its
    /// first generation) when new, and removes whatever an interrupted build
    /// or install left. Returns the live generation.
    pub fn open(root: &Path, legacy: Legacy<'_>) -> Result<(Self, Arc<SmDb>), StateDirError> {
        std::fs::create_dir_all(root).map_err(io_err("creating", root))?;
        let manifest = match read_manifest(root)? {
            Some(m) => m,
            None => {
                let first = Manifest {
                    generation: 1,
                    snapshot: None,
                };
                let path = root.join(gen_name(first.generation));
                if path.exists() {
                    // A first open that crashed before its manifest.
                    remove_any(&path).map_err(io_err("removing", &path))?;
                }
                let db = db::open_state(&path)?;
                let moved = migrate::copy(&legacy, &db)
                    .map_err(rocks("moving the legacy state machine"))?;
                db.flush()
                    .map_err(rocks("flushing the first state machine"))?;
                drop(db);
                write_manifest(root, &first)?;
                if moved > 0 {
                    tracing::info!(
                        entries = moved,
                        "moved the state machine out of the main database"
                    );
                }
                migrate::clear(&legacy).map_err(rocks("clearing the legacy state machine"))?;
                first
            }
        };
        let keep = [
            MANIFEST.to_string(),
            gen_name(manifest.generation),
            manifest.snapshot.map(snap_name).unwrap_or_default(),
        ];
        for entry in std::fs::read_dir(root).map_err(io_err("listing", root))? {
            let entry = entry.map_err(io_err("listing", root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                tracing::info!(file = %name, "removing a leftover of an interrupted snapshot");
                remove_any(&entry.path()).map_err(io_err("removing", &entry.path()))?;
            }
        }
        let db = Arc::new(SmDb::open(root.join(gen_name(manifest.generation)))?);
        let current = match manifest.snapshot {
            None => None,
            Some(n) => {
                let path = root.join(snap_name(n));
                match read_archive_meta(&path) {
                    Ok(meta) => Some(Current { meta, path, n }),
                    // Not fatal: openraft builds a new one when it needs one.
                    Err(e) => {
                        tracing::warn!(error = %e, "the newest snapshot is unreadable; dropping it");
                        None
                    }
                }
            }
        };
        let next = manifest.generation.max(manifest.snapshot.unwrap_or(0)) + 1;
        let dir = Self {
            root: root.to_path_buf(),
            state: Mutex::new((manifest, current)),
            next: AtomicU64::new(next),
        };
        Ok((dir, db))
    }

    fn alloc(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Manifest, Option<Current>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn current(&self) -> Option<Current> {
        self.lock().1.clone()
    }

    /// A fresh path to receive a snapshot into.
    pub fn incoming_path(&self) -> PathBuf {
        self.root.join(format!("incoming-{}.part", self.alloc()))
    }

    /// Builds a snapshot of `db` (not yet published). Blocking: run it off
    /// the runtime's workers.
    pub fn build(&self, db: &DB) -> Result<Current, StateDirError> {
        let n = self.alloc();
        let ckpt = self.root.join(format!("ckpt-{n}.tmp"));
        let path = self.root.join(snap_name(n));
        let built = (|| {
            Checkpoint::new(db)
                .and_then(|c| c.create_checkpoint(&ckpt))
                .map_err(rocks("checkpointing the state machine"))?;
            let (applied, membership) = applied_state(&db::open_state_read_only(&ckpt)?)?;
            let meta = SnapshotMeta {
                last_log_id: applied,
                last_membership: membership,
                snapshot_id: snapshot_id(applied),
            };
            self.write_archive(&ckpt, &meta, &path)?;
            Ok(Current {
                meta,
                path: path.clone(),
                n,
            })
        })();
        let _ = std::fs::remove_dir_all(&ckpt);
        if built.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        built
    }

    fn write_archive(
        &self,
        ckpt: &Path,
        meta: &SnapshotMeta,
        path: &Path,
    ) -> Result<(), StateDirError> {
        let header = codec::encode(meta).map_err(|source| StateDirError::Codec {
            what: "snapshot meta",
            source,
        })?;
        let part = path.with_extension("part");
        let file = std::fs::File::create(&part).map_err(io_err("creating", &part))?;
        let mut out = BufWriter::with_capacity(CHUNK, file);
        archive::write(ckpt, &header, &mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| io_err("writing", &part)(e.into_error()))?;
        file.sync_all().map_err(io_err("syncing", &part))?;
        std::fs::rename(&part, path).map_err(io_err("renaming", &part))?;
        sync_dir(&self.root).map_err(io_err("syncing", &self.root))
    }

    /// Makes `snap` the newest snapshot unless a newer one already is (then
    /// its file is removed). Returns whether it was published.
    pub fn publish(&self, snap: &Current) -> Result<bool, StateDirError> {
        let mut state = self.lock();
        let index = |c: &Current| c.meta.last_log_id.map(|l| l.index);
        if state.1.as_ref().is_some_and(|c| index(c) >= index(snap)) {
            let _ = std::fs::remove_file(&snap.path);
            return Ok(false);
        }
        let manifest = Manifest {
            generation: state.0.generation,
            snapshot: Some(snap.n),
        };
        write_manifest(&self.root, &manifest)?;
        let old = state.1.replace(snap.clone());
        state.0 = manifest;
        if let Some(old) = old {
            let _ = std::fs::remove_file(&old.path);
        }
        Ok(true)
    }

    /// Installs the archive received at `received` for `meta` as the new
    /// generation and newest snapshot, returning the generation; the caller
    /// swaps it in and retires the old one. On error nothing changed and the
    /// received file is gone. Blocking.
    pub fn install(&self, meta: &SnapshotMeta, received: &Path) -> Result<SmDb, StateDirError> {
        let n = self.alloc();
        let tmp = self.root.join(format!("gen-{n}.tmp"));
        let gen = self.root.join(gen_name(n));
        let snap = Current {
            meta: meta.clone(),
            path: self.root.join(snap_name(n)),
            n,
        };
        let installed = (|| {
            let file = std::fs::File::open(received).map_err(io_err("opening", received))?;
            let mut input = BufReader::with_capacity(CHUNK, file);
            let header = archive::read_meta(&mut input)?;
            let theirs: SnapshotMeta =
                codec::decode(&header).map_err(|source| StateDirError::Codec {
                    what: "snapshot meta",
                    source,
                })?;
            if theirs.snapshot_id != meta.snapshot_id || theirs.last_log_id != meta.last_log_id {
                return Err(StateDirError::Mismatch {
                    expected: format!("{} at {:?}", meta.snapshot_id, meta.last_log_id),
                    found: format!("{} at {:?}", theirs.snapshot_id, theirs.last_log_id),
                });
            }
            archive::unpack(&mut input, &tmp)?;
            std::fs::rename(&tmp, &gen).map_err(io_err("renaming", &tmp))?;
            let db = SmDb::open(gen.clone())?;
            let (applied, _) = applied_state(&db)?;
            if applied != meta.last_log_id {
                return Err(StateDirError::Mismatch {
                    expected: format!("applied {:?}", meta.last_log_id),
                    found: format!("applied {applied:?}"),
                });
            }
            std::fs::rename(received, &snap.path).map_err(io_err("renaming", received))?;
            sync_dir(&self.root).map_err(io_err("syncing", &self.root))?;
            Ok(db)
        })();
        let cleanup = || {
            for p in [&tmp, &gen, &snap.path] {
                let _ = remove_any(p);
            }
            let _ = std::fs::remove_file(received);
        };
        let db = match installed {
            Ok(db) => db,
            Err(e) => {
                cleanup();
                return Err(e);
            }
        };
        let mut state = self.lock();
        let manifest = Manifest {
            generation: n,
            snapshot: Some(n),
        };
        if let Err(e) = write_manifest(&self.root, &manifest) {
            drop(db);
            cleanup();
            return Err(e);
        }
        let old = state.1.replace(snap);
        state.0 = manifest;
        if let Some(old) = old {
            let _ = std::fs::remove_file(&old.path);
        }
        Ok(db)
    }
}

#[cfg(test)]
mod tests {
    use rocksdb::IteratorMode;

    use super::*;
    use crate::layout::CF_OBJECTS;

    struct Member {
        _tmp: tempfile::TempDir,
        data: PathBuf,
        main: Arc<DB>,
    }

    fn member() -> Member {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().to_path_buf();
        let main = db::open(&data.join("db")).unwrap();
        Member {
            _tmp: tmp,
            data,
            main,
        }
    }

    impl Member {
        fn open(&self) -> (StateDir, Arc<SmDb>) {
            let legacy = Legacy {
                main: &self.main,
                snapshot_file: self.data.join("snapshot.bin"),
            };
            StateDir::open(&self.data.join("sm"), legacy).unwrap()
        }

        fn sm_entries(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.data.join("sm"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    fn log_id(index: u64) -> LogId {
        LogId::new(openraft::CommittedLeaderId::new(3, 1), index)
    }

    /// Writes `n` objects and an applied index, as apply does.
    fn fill(db: &DB, n: usize, applied: u64) {
        let mut batch = rocksdb::WriteBatch::default();
        for i in 0..n {
            let value = vec![(i % 251) as u8; 300];
            batch.put_cf(cf(db, CF_OBJECTS), format!("obj/{i:06}"), value);
        }
        let applied = codec::encode(&Some(log_id(applied))).unwrap();
        batch.put_cf(cf(db, CF_SM), KEY_APPLIED, applied);
        db.write(batch).unwrap();
    }

    /// Every object entry, key and value concatenated.
    fn objects(db: &DB) -> Vec<Vec<u8>> {
        db.iterator_cf(cf(db, CF_OBJECTS), IteratorMode::Start)
            .map(|r| {
                let (k, v) = r.unwrap();
                [&k[..], b"=", &v[..]].concat()
            })
            .collect()
    }

    /// Copies a built snapshot where a follower receives it.
    fn receive(snap: &Current, at: &StateDir) -> PathBuf {
        let path = at.incoming_path();
        std::fs::copy(&snap.path, &path).unwrap();
        path
    }

    #[test]
    fn a_built_snapshot_installs_identically_and_survives_a_restart() {
        let leader = member();
        let (ldir, ldb) = leader.open();
        fill(&ldb, 3_000, 42);
        let snap = ldir.build(&ldb).unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(42)));
        // Writes after the checkpoint are not in it.
        fill(&ldb, 3_001, 43);
        assert!(ldir.publish(&snap).unwrap());
        assert_eq!(
            ldir.current().unwrap().meta.snapshot_id,
            snap.meta.snapshot_id
        );

        let follower = member();
        let (fdir, fdb) = follower.open();
        fill(&fdb, 10, 7);
        let received = receive(&snap, &fdir);
        let new = fdir.install(&snap.meta, &received).unwrap();
        fdb.retire();
        drop(fdb);
        assert_eq!(objects(&new).len(), 3_000);
        assert_eq!(objects(&new), objects(&ldb)[..3_000].to_vec());
        assert_eq!(applied_state(&new).unwrap().0, Some(log_id(42)));
        drop(new);
        drop(fdir);
        // Only the manifest, the new generation and its snapshot remain.
        let left = follower.sm_entries();
        assert_eq!(left.len(), 3, "{left:?}");

        let (fdir, fdb) = follower.open();
        assert_eq!(applied_state(&fdb).unwrap().0, Some(log_id(42)));
        assert_eq!(objects(&fdb).len(), 3_000);
        let current = fdir.current().expect("the installed snapshot is current");
        assert_eq!(current.meta.snapshot_id, snap.meta.snapshot_id);
        assert_eq!(current.meta.last_log_id, Some(log_id(42)));
    }

    #[test]
    fn a_damaged_or_foreign_snapshot_changes_nothing() {
        let leader = member();
        let (ldir, ldb) = leader.open();
        fill(&ldb, 500, 20);
        let snap = ldir.build(&ldb).unwrap();

        let follower = member();
        let (fdir, fdb) = follower.open();
        fill(&fdb, 10, 7);
        let before = follower.sm_entries();

        // Received only halfway (the leader died mid-transfer).
        let half = receive(&snap, &fdir);
        let len = std::fs::metadata(&half).unwrap().len();
        std::fs::File::options()
            .write(true)
            .open(&half)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        assert!(fdir.install(&snap.meta, &half).is_err());
        // Complete, but for another snapshot id than openraft announced.
        let other = receive(&snap, &fdir);
        let mut meta = snap.meta.clone();
        meta.snapshot_id = "someone-else".into();
        let err = fdir.install(&meta, &other).unwrap_err();
        assert!(matches!(err, StateDirError::Mismatch { .. }), "{err}");

        assert_eq!(objects(&fdb).len(), 10);
        assert_eq!(applied_state(&fdb).unwrap().0, Some(log_id(7)));
        assert_eq!(
            follower.sm_entries(),
            before,
            "failed installs leave nothing"
        );
        assert!(fdir.current().is_none());
    }

    #[test]
    fn leftovers_of_a_crash_mid_install_are_removed_at_open() {
        let m = member();
        {
            let (_dir, db) = m.open();
            fill(&db, 100, 9);
        }
        let sm = m.data.join("sm");
        // What a crash leaves: a half-received file, a half-unpacked
        // generation, a renamed but uncommitted one and its snapshot.
        std::fs::write(sm.join("incoming-7.part"), b"BALSASNP half").unwrap();
        std::fs::create_dir(sm.join("gen-8.tmp")).unwrap();
        std::fs::write(sm.join("gen-8.tmp").join("000009.sst"), b"junk").unwrap();
        std::fs::create_dir(sm.join("gen-9")).unwrap();
        std::fs::write(sm.join("snap-9.snap"), b"junk").unwrap();
        std::fs::write(sm.join("current.tmp"), b"junk").unwrap();
        let (dir, db) = m.open();
        assert_eq!(objects(&db).len(), 100);
        assert_eq!(applied_state(&db).unwrap().0, Some(log_id(9)));
        assert_eq!(m.sm_entries(), vec!["current".to_string(), "gen-1".into()]);
        // And it still builds.
        let snap = dir.build(&db).unwrap();
        assert!(dir.publish(&snap).unwrap());
    }

    #[test]
    fn a_state_machine_in_the_main_database_moves_into_the_first_generation() {
        let m = member();
        fill(&m.main, 5_000, 77);
        std::fs::write(m.data.join("snapshot.bin"), b"old format").unwrap();
        let (_dir, db) = m.open();
        assert_eq!(objects(&db).len(), 5_000);
        assert_eq!(applied_state(&db).unwrap().0, Some(log_id(77)));
        assert!(
            objects(&m.main).is_empty(),
            "the legacy families are emptied"
        );
        assert!(applied_state(&m.main).unwrap().0.is_none());
        assert!(!m.data.join("snapshot.bin").exists());
    }

    #[test]
    fn an_older_build_does_not_replace_a_newer_snapshot() {
        let m = member();
        let (dir, db) = m.open();
        fill(&db, 10, 5);
        let old = dir.build(&db).unwrap();
        fill(&db, 10, 6);
        let new = dir.build(&db).unwrap();
        assert!(dir.publish(&new).unwrap());
        assert!(!dir.publish(&old).unwrap());
        assert_eq!(dir.current().unwrap().meta.last_log_id, Some(log_id(6)));
        assert!(!old.path.exists());
    }
}
