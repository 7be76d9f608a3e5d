use super::{ResourceKey, Revision};

/// Why a store operation failed. Each variant maps to one HTTP status and one
/// gRPC code, in one place each (`grpc::status`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum StoreError {
    #[error("{key} not found")]
    NotFound { key: String },
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    /// A precondition (resourceVersion or uid) did not hold.
    #[error("conflict on {key}: {reason}")]
    Conflict { key: String, reason: String },
    /// The requested revision is older than the oldest one still kept: re-list.
    #[error("too old resource version: {requested} (oldest kept: {oldest})")]
    Expired { requested: u64, oldest: u64 },
    /// The request was bad: a malformed key, object or token.
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("object {key} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        key: String,
        size: usize,
        limit: usize,
    },
    /// This replica is not the leader; `leader` is the API address of the one it
    /// knows, if any.
    #[error("not the leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    /// The store cannot serve now (no quorum, shutting down); retry elsewhere.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A write made under a controller lease (see `fence`) that no longer
    /// holds: a deposed leader's write, refused.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A watcher fell too far behind and was cut off.
    #[error("watch cut off: {0}")]
    WatchCutOff(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn not_found(key: &ResourceKey) -> Self {
        Self::NotFound {
            key: key.to_string(),
        }
    }

    pub fn expired(requested: Revision, oldest: Revision) -> Self {
        Self::Expired {
            requested: requested.0,
            oldest: oldest.0,
        }
    }

    /// A stable short name, used on the wire so a client can rebuild the variant.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "NotFound",
            Self::AlreadyExists { .. } => "AlreadyExists",
            Self::Conflict { .. } => "Conflict",
            Self::Expired { .. } => "Expired",
            Self::Invalid(_) => "Invalid",
            Self::TooLarge { .. } => "TooLarge",
            Self::NotLeader { .. } => "NotLeader",
            Self::Unavailable(_) => "Unavailable",
            Self::Fenced(_) => "Fenced",
            Self::WatchCutOff(_) => "WatchCutOff",
            Self::Internal(_) => "Internal",
        }
    }
}
