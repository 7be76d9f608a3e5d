//! The fault seam of the peer transport: tests and the chaos harness use it to
//! drop, delay or partition messages between chosen replicas. Both directions
//! are checked: outgoing in the network client, incoming in the peer service.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::NodeId;

#[derive(Clone, Default)]
pub struct Faults(Arc<RwLock<Rules>>);

#[derive(Default, Debug, Clone)]
struct Rules {
    /// Peers this replica can neither reach nor hear.
    cut: HashSet<NodeId>,
    delay: HashMap<NodeId, Duration>,
    /// Probability in [0, 1] that a message to or from any peer is lost.
    loss: f64,
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Deliver(Option<Duration>),
    Drop,
}

impl Faults {
    fn rules(&self) -> Rules {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Rules)) {
        f(&mut self.0.write().unwrap_or_else(|e| e.into_inner()));
    }

    /// Cuts this replica off from `peers` (both directions).
    pub fn partition(&self, peers: impl IntoIterator<Item = NodeId>) {
        self.update(|r| r.cut.extend(peers));
    }

    pub fn delay(&self, peer: NodeId, by: Duration) {
        self.update(|r| {
            r.delay.insert(peer, by);
        });
    }

    pub fn set_loss(&self, probability: f64) {
        self.update(|r| r.loss = probability.clamp(0.0, 1.0));
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.update(|r| *r = Rules::default());
    }

    pub fn verdict(&self, peer: NodeId) -> Verdict {
        let r = self.rules();
        if r.cut.contains(&peer) || (r.loss > 0.0 && rand::random::<f64>() < r.loss) {
            return Verdict::Drop;
        }
        Verdict::Deliver(r.delay.get(&peer).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_and_heal() {
        let f = Faults::default();
        f.partition([2]);
        f.delay(3, Duration::from_millis(5));
        assert_eq!(f.verdict(2), Verdict::Drop);
        assert_eq!(
            f.verdict(3),
            Verdict::Deliver(Some(Duration::from_millis(5)))
        );
        f.heal();
        assert_eq!(f.verdict(2), Verdict::Deliver(None));
    }
}
