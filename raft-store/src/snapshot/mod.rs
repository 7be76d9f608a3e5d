//! Snapshots of the state machine, built from a RocksDB checkpoint and
//! streamed to lagging or new members in chunks.
//!
//! ```text
//!  leader                                           follower
//!  gen-N ─checkpoint─► ckpt ─archive─► snap-M.snap
//!                                        │ openraft reads chunks (snapshot_max_chunk_size)
//!                                        ▼
//!                        peer InstallSnapshot RPCs ───► incoming-K.part (written at offsets)
//!                                                          │ verify, unpack
//!                                                          ▼
//!                                                     gen-K/ ─manifest rename─► live
//! ```
//!
//! `archive` is the byte format, `file` the handle openraft streams,
//! `state_dir` the directory and its atomic switch, `migrate` the move from
//! the layout before generations.

pub mod archive;
pub mod file;
pub mod migrate;
pub mod state_dir;

pub use file::SnapshotFile;
pub use state_dir::{Current, SmDb, StateDir, StateDirError};
