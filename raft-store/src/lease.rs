//! The controller lease of this member, from its Raft metrics: `Some` while
//! it leads and has applied an entry of its own term (so its state machine,
//! and every cache fed from it, can hold every committed write), naming the
//! term and the revision applied at that moment; `None` otherwise, and for
//! good once Raft stops. Each term of leadership is a new lease, so a control
//! loop can tell "lost and won again" from "still leading" (see
//! `balsa_api::store::fence`).

use std::sync::Arc;

use balsa_api::store::window::WatchWindow;
use balsa_api::Lease;
use openraft::{RaftMetrics, ServerState};
use tokio::sync::watch;

use crate::types::{Member, NodeId};

/// The term this member leads in, once it has applied an entry of it.
pub fn leading_term(m: &RaftMetrics<NodeId, Member>) -> Option<u64> {
    let leading = m.running_state.is_ok()
        && m.state == ServerState::Leader
        && m.last_applied
            .is_some_and(|l| l.leader_id.term == m.current_term);
    leading.then_some(m.current_term)
}

/// Follows the metrics into the lease. The revision is read from the window
/// when the term first shows: everything applied by then (every entry of
/// earlier terms this leader holds) is at or below it. The receiver is woken
/// only when the lease changes.
pub fn follow(
    mut metrics: watch::Receiver<RaftMetrics<NodeId, Member>>,
    window: Arc<WatchWindow>,
) -> watch::Receiver<Option<Lease>> {
    let lease = move |term: Option<u64>| {
        term.map(|term| Lease {
            term,
            revision: window.current(),
        })
    };
    let first = leading_term(&metrics.borrow());
    let (tx, rx) = watch::channel(lease(first));
    tokio::spawn(async move {
        while metrics.changed().await.is_ok() {
            let term = leading_term(&metrics.borrow());
            tx.send_if_modified(|held| {
                if held.map(|l| l.term) == term {
                    return false;
                }
                *held = lease(term);
                true
            });
        }
        tx.send_replace(None);
    });
    rx
}
