//! The typed client the scheduler, the controllers and the node agent use,
//! over the gRPC Objects service, and the runtime they are built on.
//!
//! ```text
//!  Client (any master, fails over)
//!    ├─ Batcher           many small writes in few requests
//!    └─ Api<K>            typed CRUD, status, patch, binding, eviction
//!         └─ watcher      list, then watch from the list's revision; resumes
//!              │          after a failover, re-lists on 410 Expired
//!              └─ reflector::Store<K>   the cache reconcilers read
//!                   └─ controller       work queue (dedup, backoff), runs
//!                                       reconcilers only while leading
//! ```
//!
//! Errors are `ApiError`s: the same reason, code and causes the REST API
//! answers, read back from the gRPC status.

mod api;
pub mod backoff;
mod batch;
pub mod controller;
mod endpoints;
pub mod events;
pub mod informer;
pub mod leader;
pub mod managed_fields;
mod metadata_only;
pub mod queue;
pub mod reflector;
pub mod token_bucket;
pub mod watcher;

pub use api::{Api, DeleteParams, ObjectList, Patch, PatchParams, PostParams, Resource};
pub use batch::Batcher;
pub use controller::{Action, Controller};
pub use endpoints::Client;
pub use informer::{Change, Informer};
pub use leader::Leadership;
pub use metadata_only::MetadataOnly;
pub use reflector::{ObjectKey, Store};
pub use watcher::{watcher, Event};
