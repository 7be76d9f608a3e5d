//! Where a leader-only request (a write, a leadership confirmation) must go.

use balsa_api::StoreError;
use openraft::error::ForwardToLeader;

use crate::types::{Member, NodeId};

#[derive(Debug, Clone)]
pub enum Route<T> {
    Done(Result<T, StoreError>),
    Leader(NodeId, Member),
    NoLeader,
}

pub fn forward_route<T>(f: &ForwardToLeader<NodeId, Member>) -> Route<T> {
    match (f.leader_id, &f.leader_node) {
        (Some(id), Some(node)) => Route::Leader(id, node.clone()),
        _ => Route::NoLeader,
    }
}

pub fn fatal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("raft has stopped: {e}"))
}
