//! Data dirs written before the state machine had its own database kept the
//! objects and the applied state in the main database's `objects` and `sm`
//! families, and the newest snapshot in `snapshot.bin`. The first open under
//! the new layout copies them into the first generation (in bounded
//! batches, before the manifest names it, so an interrupted copy is simply
//! redone) and then clears them. The old snapshot file is dropped: openraft
//! builds a new snapshot at start when its log was purged and none exists.

use std::path::PathBuf;

use rocksdb::{IteratorMode, WriteBatch, DB};

use crate::db::{cf, synced};
use crate::layout::{CF_OBJECTS, CF_SM};

/// Entries per write batch while copying.
const BATCH: usize = 4_096;

/// Where a pre-generation state machine may be.
pub struct Legacy<'a> {
    pub main: &'a DB,
    pub snapshot_file: PathBuf,
}

/// Copies the legacy families into `into`; returns the entries copied.
pub fn copy(legacy: &Legacy<'_>, into: &DB) -> Result<u64, rocksdb::Error> {
    let main = legacy.main;
    let view = main.snapshot();
    let mut copied = 0;
    for family in [CF_OBJECTS, CF_SM] {
        let mut batch = WriteBatch::default();
        for item in view.iterator_cf(cf(main, family), IteratorMode::Start) {
            let (k, v) = item?;
            batch.put_cf(cf(into, family), k, v);
            copied += 1;
            if batch.len() >= BATCH {
                into.write(std::mem::take(&mut batch))?;
            }
        }
        into.write(batch)?;
    }
    Ok(copied)
}

/// Empties the legacy families and removes the legacy snapshot file.
pub fn clear(legacy: &Legacy<'_>) -> Result<(), rocksdb::Error> {
    let main = legacy.main;
    let mut batch = WriteBatch::default();
    for family in [CF_OBJECTS, CF_SM] {
        let first = main
            .iterator_cf(cf(main, family), IteratorMode::Start)
            .next();
        let last = main.iterator_cf(cf(main, family), IteratorMode::End).next();
        if let (Some(first), Some(last)) = (first, last) {
            let (first, _) = first?;
            let (last, _) = last?;
            batch.delete_range_cf(cf(main, family), &first, &last);
            batch.delete_cf(cf(main, family), &last);
        }
    }
    main.write_opt(batch, &synced())?;
    let _ = std::fs::remove_file(&legacy.snapshot_file);
    Ok(())
}
