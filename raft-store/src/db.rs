//! Opening the replica's RocksDB.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DBRecoveryMode, Options, WriteOptions, DB};

use crate::layout::{ALL_CFS, SM_CFS};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("opening RocksDB at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
}

/// Opens (creating if needed) the database with every column family. Recovery
/// refuses a damaged write-ahead log rather than silently dropping its tail:
/// what was synced was acknowledged and must not vanish.
pub fn open(path: &Path) -> Result<Arc<DB>, OpenError> {
    open_with(path, &ALL_CFS, DBRecoveryMode::AbsoluteConsistency).map(Arc::new)
}

/// Opens (creating if needed) one generation of the state machine (see
/// `snapshot::state_dir`). Its writes are not synced, the log is the record:
/// after a crash it recovers to its last consistent point and the entries
/// after that are applied again from the log.
pub fn open_state(path: &Path) -> Result<DB, OpenError> {
    open_with(path, &SM_CFS, DBRecoveryMode::PointInTime)
}

/// Opens a state-machine checkpoint read-only, to read its applied state.
pub fn open_state_read_only(path: &Path) -> Result<DB, OpenError> {
    DB::open_cf_for_read_only(&Options::default(), path, SM_CFS, false).map_err(|source| {
        OpenError::Open {
            path: path.display().to_string(),
            source,
        }
    })
}

fn open_with(path: &Path, families: &[&str], recovery: DBRecoveryMode) -> Result<DB, OpenError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_wal_recovery_mode(recovery);
    opts.set_max_background_jobs(2);
    let cfs = families
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    DB::open_cf_descriptors(&opts, path, cfs).map_err(|source| OpenError::Open {
        path: path.display().to_string(),
        source,
    })
}

pub fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    // Every family in ALL_CFS is created at open, so this cannot be missing.
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} exists since open"))
}

pub fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}
