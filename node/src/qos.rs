//! Pod QoS classes (`Guaranteed`, `Burstable`, `BestEffort`) as the API
//! server computes `status.qosClass`: from cpu and memory requests/limits of
//! every container and init container.

use k8s_openapi::api::core::v1::Pod;

use crate::quantity;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QosClass {
    /// Evicted first.
    BestEffort,
    Burstable,
    Guaranteed,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::BestEffort => "BestEffort",
            QosClass::Burstable => "Burstable",
            QosClass::Guaranteed => "Guaranteed",
        }
    }
}

pub fn of(pod: &Pod) -> QosClass {
    let Some(spec) = &pod.spec else {
        return QosClass::BestEffort;
    };
    let mut any_set = false;
    let mut guaranteed = true;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let r = c.resources.as_ref();
        for res in ["cpu", "memory"] {
            let req = r
                .and_then(|r| r.requests.as_ref())
                .and_then(|m| m.get(res))
                .and_then(quantity::value)
                .filter(|v| *v > 0.0);
            let lim = r
                .and_then(|r| r.limits.as_ref())
                .and_then(|m| m.get(res))
                .and_then(quantity::value)
                .filter(|v| *v > 0.0);
            any_set |= req.is_some() || lim.is_some();
            // A request defaults to the limit when only the limit is set.
            match (req.or(lim), lim) {
                (Some(req), Some(lim)) if req == lim => {}
                _ => guaranteed = false,
            }
        }
    }
    match (any_set, guaranteed) {
        (false, _) => QosClass::BestEffort,
        (true, true) => QosClass::Guaranteed,
        (true, false) => QosClass::Burstable,
    }
}
