//! Fast failover after a leader's process dies.
//!
//! openraft 0.9 lets a follower campaign only after the leader lease
//! (`election_timeout_max`) plus its own election timeout have passed since
//! the leader last spoke, and checks that on a tick every 1.5 heartbeats:
//! 200-300 ms with Balsa's timings, the bulk of the write gap when a leader is
//! killed. Shorter timeouts would shorten it, at the price of elections
//! whenever a loaded machine delays a heartbeat.
//!
//! This keeps the timeouts and asks a different question. When the leader has
//! been silent for two heartbeats, a follower tries a TCP connection to the
//! leader's peer port. A refused connection means no process listens there:
//! the leader is gone, not slow (a stopped, overloaded or partitioned leader
//! accepts the connection or lets it time out, and then nothing changes).
//! The follower then campaigns as soon as its peers' leader lease allows a
//! vote: the lease runs from the same last message on every follower, so it
//! expires about when this one's does (give or take the heartbeat a dying
//! leader still sent to one follower and not to another). Followers take
//! turns in id order, a heartbeat apart, and one whose turn comes after
//! another's campaign moved its term stands aside, so that they do not split
//! the vote. If a campaign still meets an unexpired lease, the voter refuses
//! it without moving its term, and openraft's own election timeout decides,
//! as it would have without the probe.
//!
//! Only liveness changes here: an election is always safe in Raft, and this
//! one starts only once the lease that protects the old leader has expired.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;

use crate::types::Raft;
use crate::NodeId;

/// When this member last heard from a leader (an AppendEntries or an
/// InstallSnapshot that passed the fault seam and the identity check), and
/// how often it campaigned because the leader's port refused.
#[derive(Debug, Default)]
pub struct Contact {
    last: Mutex<Option<Instant>>,
    campaigns: AtomicU64,
}

impl Contact {
    pub fn heard(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    pub fn last(&self) -> Option<Instant> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Campaigns started here because the leader's process was gone.
    pub fn campaigns(&self) -> u64 {
        self.campaigns.load(Ordering::Relaxed)
    }
}

/// Whether nothing listens at `addr`: the connection was refused within
/// `within`. A connection made, a timeout or any other error is not proof.
pub async fn refused(addr: &str, within: Duration) -> bool {
    matches!(
        tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// When the leader went silent and how long its lease and one turn last.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub lease: Duration,
}

/// When follower `me` campaigns after the leader `leader` went silent at
/// `last`: once the lease has expired and a quarter heartbeat more (the
/// voters' leases run from their own, slightly later, receipt of the same
/// message), plus one turn (a heartbeat) per voter before it in id order
/// (the leader left out). None if `me` does not vote.
pub fn campaign_at(
    me: NodeId,
    leader: NodeId,
    voters: impl IntoIterator<Item = NodeId>,
    last: Instant,
    timing: Timing,
) -> Option<Instant> {
    let mut others: Vec<NodeId> = voters.into_iter().filter(|v| *v != leader).collect();
    others.sort_unstable();
    let rank = others.iter().position(|v| *v == me)?;
    Some(last + timing.lease + timing.heartbeat / 4 + timing.heartbeat * rank as u32)
}

/// The follower's side: watches the silence of its leader until Raft stops.
pub fn spawn(raft: Raft, me: NodeId, contact: Arc<Contact>, timing: Timing) {
    let heartbeat = timing.heartbeat;
    tokio::spawn(async move {
        let mut probed: Option<Instant> = None;
        let metrics = raft.metrics();
        loop {
            tokio::time::sleep(heartbeat / 2).await;
            // Read in place: this runs every half heartbeat.
            let (state, leader, term) = {
                let m = metrics.borrow();
                if m.running_state.is_err() {
                    return;
                }
                (m.state, m.current_leader, m.current_term)
            };
            let (Some(leader), Some(last)) = (leader, contact.last()) else {
                continue;
            };
            // One probe per silence: the next comes after the leader spoke.
            if state != ServerState::Follower
                || leader == me
                || last.elapsed() < heartbeat * 2
                || probed == Some(last)
            {
                continue;
            }
            probed = Some(last);
            let target = {
                let m = metrics.borrow();
                let membership = m.membership_config.membership();
                membership
                    .get_node(&leader)
                    .map(|n| n.peer_addr.clone())
                    .zip(campaign_at(
                        me,
                        leader,
                        membership.voter_ids(),
                        last,
                        timing,
                    ))
            };
            let Some((addr, at)) = target else {
                continue;
            };
            if !refused(&addr, heartbeat).await {
                continue;
            }
            tokio::time::sleep_until(at).await;
            // Another follower's campaign (granted here: the term moved) or a
            // word from any leader ends this one.
            let moved = {
                let now = metrics.borrow();
                now.state != ServerState::Follower || now.current_term != term
            };
            if moved || contact.last() != Some(last) {
                continue;
            }
            tracing::info!(
                leader,
                leader.peer_addr = %addr,
                silent_ms = last.elapsed().as_millis() as u64,
                "the leader's peer port refuses connections: campaigning"
            );
            contact.campaigns.fetch_add(1, Ordering::Relaxed);
            if raft.trigger().elect().await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_refused_and_a_listening_one_is_not() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_addr = open.local_addr().unwrap().to_string();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let within = Duration::from_secs(1);
        assert!(refused(&closed_addr, within).await);
        assert!(!refused(&open_addr, within).await);
        // A name that does not resolve is no proof either.
        assert!(!refused("no-such-host.invalid:1", within).await);
    }

    #[test]
    fn followers_campaign_in_id_order_after_the_lease() {
        let last = Instant::now();
        let timing = Timing {
            heartbeat: Duration::from_millis(40),
            lease: Duration::from_millis(120),
        };
        let at = |me| campaign_at(me, 2, [1, 2, 3], last, timing);
        assert_eq!(at(1), Some(last + Duration::from_millis(130)));
        assert_eq!(at(3), Some(last + Duration::from_millis(170)));
        // The leader itself and a non-voter never campaign this way.
        assert_eq!(at(2), None);
        assert_eq!(at(4), None);
    }
}
