//! Opening the replica's RocksDB.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DBRecoveryMode, Options, WriteOptions, DB};

use crate::layout::ALL_CFS;

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
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_wal_recovery_mode(DBRecoveryMode::AbsoluteConsistency);
    opts.set_max_background_jobs(2);
    let cfs = ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|source| OpenError::Open {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Arc::new(db))
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
