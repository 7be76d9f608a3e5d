//! What the Endpoints and EndpointSlice controllers share: which pods back a
//! Service and on which port numbers (upstream `ShouldPodBeInEndpoints`,
//! `FindPort`).

use std::collections::BTreeMap;
use std::sync::Arc;

use balsa_api::client::{ObjectKey, Store};
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::pods;

/// The Service's selector; `None` for a Service without one (its
/// endpoints are the user's to write).
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

pub fn selects(sel: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    sel.iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

pub fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

pub fn pod_ip(pod: &Pod) -> Option<&str> {
    let st = pod.status.as_ref()?;
    st.pod_ip
        .as_deref()
        .or_else(|| st.pod_ips.as_ref()?.first().map(|i| i.ip.as_str()))
        .filter(|ip| !ip.is_empty())
}

/// Whether a pod belongs in a Service's endpoints at all: it has an IP, it
/// will not run again, and (unless `terminating` ones are wanted) it is not
/// being deleted.
pub fn should_be_in(pod: &Pod, include_terminating: bool) -> bool {
    if pod_ip(pod).is_none() {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let restart = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    !matches!(
        (pods::phase(pod), restart),
        ("Failed" | "Succeeded", "Never") | ("Succeeded", "OnFailure")
    )
}

/// The pods a Service with selector `sel` selects in its namespace.
pub fn selected(pods: &Store<Pod>, svc: &Service, sel: &BTreeMap<String, String>) -> Vec<Arc<Pod>> {
    let ns = svc.metadata.namespace.as_deref();
    let mut out = pods.filter(|p| p.metadata.namespace.as_deref() == ns && selects(sel, p));
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

/// The container port a Service port reaches on `pod`: `targetPort` as a
/// number, or the container port of that name and protocol; the Service
/// port itself when no targetPort is given. `None`: the pod has no such
/// named port, and is left out of this port.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let protocol = sp.protocol.as_deref().unwrap_or("TCP");
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

pub fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

pub fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
}

/// The Services in the pod's namespace that have a selector: those a pod
/// change may concern (its old labels are not known here, so all of them).
pub fn services_for(services: &Store<Service>, pod: &Pod) -> Vec<ObjectKey> {
    let ns = pod.metadata.namespace.as_deref();
    services
        .filter(|s| s.metadata.namespace.as_deref() == ns && selector(s).is_some())
        .iter()
        .map(|s| ObjectKey::of(&**s))
        .collect()
}

/// A pod's hostname within the Service, when the pod asks for one under
/// it (`hostname` with `subdomain` = the Service's name).
pub fn hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let h = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()).then(|| h.to_string())
}
