//! NodeName: a pod with `spec.nodeName` fits only that node.

use crate::pod_info::PodInfo;
use crate::snapshot::NodeInfo;
use crate::status::{FilterResult, Plugin, Status};

pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

pub fn filter(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    match pod.node_name() {
        Some(name) if name != node.name => Err(Status::unresolvable(Plugin::NodeName, ERR_REASON)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::sync::Arc;

    #[test]
    fn only_the_named_node() {
        let s = snapshot(vec![node("a").build(), node("b").build()], vec![]);
        let p = PodInfo::new(Arc::new(pod("p").spec("nodeName", "a".into()).build())).unwrap();
        assert!(filter(&p, s.node("a").unwrap()).is_ok());
        let st = filter(&p, s.node("b").unwrap()).unwrap_err();
        assert_eq!(st.reasons, vec![ERR_REASON.to_string()]);
        let free = PodInfo::new(Arc::new(pod("q").build())).unwrap();
        assert!(filter(&free, s.node("b").unwrap()).is_ok());
    }
}
