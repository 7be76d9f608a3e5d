//! Whether this master leads, and under which lease: controllers and the
//! scheduler act only while it does, and each stretch of leadership is one
//! `Lease` (a Raft term). The master derives it from its Raft state; tests set
//! it by hand.

use std::sync::Arc;

use tokio::sync::watch;

use crate::store::{Lease, Revision};

#[derive(Clone)]
pub struct Leadership {
    rx: watch::Receiver<Option<Lease>>,
    /// Keeps the sender of a fixed leadership alive.
    _fixed: Option<Arc<watch::Sender<Option<Lease>>>>,
}

impl Leadership {
    pub fn new(rx: watch::Receiver<Option<Lease>>) -> Self {
        Self { rx, _fixed: None }
    }

    /// Always leading, under one lease from the start: a component running
    /// on its own.
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(Some(Lease {
            term: 0,
            revision: Revision(0),
        }));
        Self {
            rx,
            _fixed: Some(Arc::new(tx)),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// The lease held now, if leading.
    pub fn lease(&self) -> Option<Lease> {
        *self.rx.borrow()
    }

    /// Where a fenced client reads the lease (see `Client::fenced_by`).
    pub fn source(&self) -> watch::Receiver<Option<Lease>> {
        self.rx.clone()
    }

    /// Waits until leadership is `leading`. If the source is gone, leadership
    /// is lost for good: waiting for `true` never returns, waiting for `false`
    /// returns at once.
    pub async fn wait_for(&self, leading: bool) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|l| l.is_some() == leading).await.is_err() && leading {
            std::future::pending::<()>().await;
        }
    }

    /// Waits until `lease` is no longer the one held: leadership lost, or
    /// lost and won again in a later term (which a wait for "not leading"
    /// could miss). Returns at once when the source is gone.
    pub async fn wait_lost(&self, lease: Lease) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|l| *l != Some(lease)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lease(term: u64) -> Option<Lease> {
        Some(Lease {
            term,
            revision: Revision(term * 10),
        })
    }

    #[tokio::test]
    async fn a_lease_is_lost_when_the_term_moves_even_if_still_leading() {
        let (tx, rx) = watch::channel(lease(3));
        let l = Leadership::new(rx);
        let held = l.lease().unwrap();
        let waiting = tokio::spawn({
            let l = l.clone();
            async move { l.wait_lost(held).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        // Lost and won again before anyone looked: still a new lease.
        tx.send_replace(None);
        tx.send_replace(lease(5));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the lease of term 3 is gone")
            .unwrap();
        assert!(l.is_leader());
        assert_eq!(l.lease().map(|l| l.term), Some(5));
    }
}
