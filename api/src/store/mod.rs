//! The storage port: what a Balsa object store promises, independent of how it
//! replicates.
//!
//! ```text
//!  write ─► Op batch ─► (replicate) ─► apply(map, rev, ops) ─► objects + events
//!                                                            └► WatchWindow ─► watch streams
//! ```
//!
//! A write's revision is the position of its batch in the store's history (for
//! the Raft store: the count of batches applied, see `Revision`). Every event
//! of one batch carries that
//! revision; revisions strictly increase but need not be contiguous.

pub mod apply;
mod canonical;
mod error;
pub mod fence;
#[cfg(test)]
pub mod hooked;
mod key;
pub mod list;
pub mod mem;
mod object;
mod port;
pub mod watch;
pub mod window;

pub use error::StoreError;
pub use fence::{Fence, FencedStore, Lease};
pub use key::{KeyPrefix, ResourceKey};
pub use object::{Event, EventType, Object, Revision, MAX_OBJECT_BYTES};
pub use port::{
    DeletePreconditions, ListOptions, ListResult, Op, OpResult, ReadMode, Store, WatchEvent,
    WatchOptions, WatchStream,
};
