//! NodePorts: a pod's host ports must be free on the node.

use crate::pod_info::PodInfo;
use crate::snapshot::NodeInfo;
use crate::status::{FilterResult, Plugin, Status};

pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

pub fn filter(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    let conflict = pod
        .host_ports
        .iter()
        .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
    if conflict {
        Err(Status::unschedulable(Plugin::NodePorts, ERR_REASON))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn host_port_conflicts() {
        let s = snapshot(
            vec![node("a").build(), node("b").build()],
            vec![pod("web").host_port(80).on("a").build()],
        );
        let p = PodInfo::new(Arc::new(pod("p").host_port(80).build())).unwrap();
        assert_eq!(
            filter(&p, s.node("a").unwrap()).unwrap_err().reasons,
            vec![ERR_REASON.to_string()]
        );
        assert!(filter(&p, s.node("b").unwrap()).is_ok());
        let other = PodInfo::new(Arc::new(pod("q").host_port(81).build())).unwrap();
        assert!(filter(&other, s.node("a").unwrap()).is_ok());
        // Same port over UDP does not conflict with TCP.
        let udp = pod("u")
            .spec(
                "containers",
                json!([{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80, "protocol": "UDP"}]}]),
            )
            .build();
        assert!(filter(&PodInfo::new(Arc::new(udp)).unwrap(), s.node("a").unwrap()).is_ok());
    }

    #[test]
    fn specific_addresses() {
        let s = snapshot(
            vec![node("a").build()],
            vec![pod("web")
                .spec("containers", json!([{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80, "hostIP": "10.0.0.1"}]}]))
                .on("a")
                .build()],
        );
        let on = |ip: &str| {
            PodInfo::new(Arc::new(
                pod("p")
                    .spec("containers", json!([{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80, "hostIP": ip}]}]))
                    .build(),
            ))
            .unwrap()
        };
        assert!(filter(&on("10.0.0.2"), s.node("a").unwrap()).is_ok());
        assert!(filter(&on("10.0.0.1"), s.node("a").unwrap()).is_err());
        assert!(filter(&on("0.0.0.0"), s.node("a").unwrap()).is_err());
    }
}
