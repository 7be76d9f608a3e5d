//! Whether this master leads: controllers and the scheduler act only while it
//! does. The master derives it from its Raft state; tests flip it by hand.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
    /// Keeps the sender of a fixed leadership alive.
    _fixed: Option<Arc<watch::Sender<bool>>>,
}

impl Leadership {
    pub fn new(rx: watch::Receiver<bool>) -> Self {
        Self { rx, _fixed: None }
    }

    /// Always leading: a component running on its own.
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        Self {
            rx,
            _fixed: Some(Arc::new(tx)),
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until leadership is `leading`. If the source is gone, leadership
    /// is lost for good: waiting for `true` never returns, waiting for `false`
    /// returns at once.
    pub async fn wait_for(&self, leading: bool) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|l| *l == leading).await.is_err() && leading {
            std::future::pending::<()>().await;
        }
    }
}
