//! The EndpointSlice controller: a Service with a selector gets
//! EndpointSlices (named `<service>-xxxxx`, labelled
//! `kubernetes.io/service-name` and managed-by this controller, controlled
//! by the Service) holding the selected pods, at most 100 endpoints each,
//! one address type and one port set per slice. Each endpoint says
//! `ready` (serving and not terminating, or always with
//! publishNotReadyAddresses), `serving` (pod Ready) and `terminating`.
//!
//! ```text
//!  desired: pods -> endpoints grouped by (addressType, ports), chunks of 100
//!  existing slices of the service with the same group: updated in place
//!  extra chunks: created; slices left over: deleted
//!  no endpoints at all: one empty placeholder slice (as upstream)
//! ```

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use balsa_api::client::{Action, Api, Client, DeleteParams, ObjectKey, PostParams, Store};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::endpoints::labels_of;
use crate::owners::{self};
use crate::service_pods::{self as sp, publish_not_ready, selector};
use crate::{pods, Error};

pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER: &str = "endpointslice-controller.k8s.io";
pub const MAX_PER_SLICE: usize = 100;

pub struct Ctx {
    pub client: Client,
    pub pods: Store<Pod>,
    pub slices: Store<EndpointSlice>,
}

fn address_type(ip: &str) -> &'static str {
    if ip.parse::<Ipv6Addr>().is_ok() {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// One slice's content.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub address_type: String,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

/// The slices `pods` give `svc`, at most `max` endpoints each.
pub fn desired(svc: &Service, pods: &[Arc<Pod>], max: usize) -> Vec<Desired> {
    let publish = publish_not_ready(svc);
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    type Group = (String, Vec<(String, i32, String)>);
    let mut groups: BTreeMap<Group, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for pod in pods.iter().filter(|p| sp::should_be_in(p, true)) {
        let Some(ip) = sp::pod_ip(pod) else { continue };
        let mut eps: Vec<EndpointPort> = ports
            .iter()
            .filter_map(|p| {
                Some(EndpointPort {
                    name: Some(p.name.clone().unwrap_or_default()),
                    port: Some(sp::find_port(pod, p)?),
                    protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: p.app_protocol.clone(),
                })
            })
            .collect();
        if !ports.is_empty() && eps.is_empty() {
            continue;
        }
        eps.sort_by(|a, b| a.name.cmp(&b.name).then(a.port.cmp(&b.port)));
        let key = (
            address_type(ip).to_string(),
            eps.iter()
                .map(|p| {
                    (
                        p.name.clone().unwrap_or_default(),
                        p.port.unwrap_or_default(),
                        p.protocol.clone().unwrap_or_default(),
                    )
                })
                .collect(),
        );
        let serving = pods::is_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let endpoint = Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(publish || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: sp::hostname(pod, svc),
            node_name: sp::node_name(pod),
            target_ref: Some(sp::target_ref(pod)),
            ..Default::default()
        };
        groups
            .entry(key)
            .or_insert_with(|| (eps, Vec::new()))
            .1
            .push(endpoint);
    }
    let mut out = Vec::new();
    for ((address_type, _), (ports, mut endpoints)) in groups {
        endpoints.sort_by(|a, b| {
            a.addresses.cmp(&b.addresses).then_with(|| {
                let uid = |e: &Endpoint| e.target_ref.as_ref().and_then(|r| r.uid.clone());
                uid(a).cmp(&uid(b))
            })
        });
        for chunk in endpoints.chunks(max.max(1)) {
            out.push(Desired {
                address_type: address_type.clone(),
                ports: ports.clone(),
                endpoints: chunk.to_vec(),
            });
        }
    }
    if out.is_empty() {
        out.push(Desired {
            address_type: "IPv4".into(),
            ports: Vec::new(),
            endpoints: Vec::new(),
        });
    }
    out
}

fn content(s: &EndpointSlice) -> Desired {
    Desired {
        address_type: s.address_type.clone(),
        ports: s.ports.clone().unwrap_or_default(),
        endpoints: s.endpoints.clone(),
    }
}

fn same_group(a: &Desired, b: &Desired) -> bool {
    a.address_type == b.address_type && a.ports == b.ports
}

fn post() -> PostParams {
    owners::post_params()
}

pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(sel) = selector(&svc) else {
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = ObjectKey::of(&*svc);
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let api = Api::<EndpointSlice>::namespaced(ctx.client.clone(), &ns);
    let pods = sp::selected(&ctx.pods, &svc, sel);
    let want = desired(&svc, &pods, MAX_PER_SLICE);
    let mut labels = labels_of(&svc);
    labels.insert(SERVICE_NAME.into(), key.name.clone());
    labels.insert(MANAGED_BY.into(), CONTROLLER.into());
    let uid = svc.metadata.uid.clone();
    let mut existing: Vec<Arc<EndpointSlice>> = ctx.slices.filter(|s| {
        let l = s.metadata.labels.as_ref();
        s.metadata.namespace.as_deref() == Some(ns.as_str())
            && l.and_then(|l| l.get(SERVICE_NAME)) == Some(&key.name)
            && l.and_then(|l| l.get(MANAGED_BY)).map(String::as_str) == Some(CONTROLLER)
            && s.metadata.deletion_timestamp.is_none()
    });
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // A slice of an older Service of the same name: not ours to reuse.
    existing.retain(|s| owners::controller_of(&**s).is_none_or(|r| Some(&r.uid) == uid.as_ref()));

    let mut unused: Vec<Option<Arc<EndpointSlice>>> = existing.into_iter().map(Some).collect();
    let mut created = 0;
    for d in &want {
        // Prefer a slice that already holds exactly this, then any of the group.
        let pick = unused
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| content(s) == *d))
            .or_else(|| {
                unused
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|s| same_group(&content(s), d)))
            });
        let slice_labels = labels.clone();
        match pick.and_then(|i| unused[i].take()) {
            Some(old) => {
                if content(&old) == *d && old.metadata.labels.as_ref() == Some(&slice_labels) {
                    continue;
                }
                let mut new = (*old).clone();
                new.endpoints = d.endpoints.clone();
                new.ports = (!d.ports.is_empty()).then(|| d.ports.clone());
                new.metadata.labels = Some(slice_labels);
                api.replace(&new, &post())
                    .await
                    .map_err(Error::api("updating endpointslice for", key.to_string()))?;
            }
            None => {
                let new = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{}-", key.name)),
                        namespace: Some(ns.clone()),
                        labels: Some(slice_labels),
                        owner_references: Some(vec![owners::controller_ref(&*svc)]),
                        ..Default::default()
                    },
                    address_type: d.address_type.clone(),
                    endpoints: d.endpoints.clone(),
                    ports: (!d.ports.is_empty()).then(|| d.ports.clone()),
                };
                api.create(&new, &post())
                    .await
                    .map_err(Error::api("creating endpointslice for", key.to_string()))?;
                created += 1;
            }
        }
    }
    for old in unused.into_iter().flatten() {
        let name = old.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            uid: old.metadata.uid.clone(),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(e) if e.code() == 404 || e.code() == 409 => {}
            Err(e) => return Err(Error::api("deleting endpointslice", name)(e)),
        }
    }
    if created > 0 {
        tracing::debug!(service = %key, created, "endpointslices created");
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(n: usize) -> Vec<Arc<Pod>> {
        (0..n)
            .map(|i| {
                let mut p = (*crate::endpoints::tests::pod(
                    &format!("p{i:03}"),
                    Some(&format!("10.0.{}.{}", i / 250, i % 250 + 1)),
                    i % 2 == 0,
                    Some(("web", 8080)),
                ))
                .clone();
                if i == 1 {
                    p.metadata.deletion_timestamp =
                        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            k8s_openapi::jiff::Timestamp::from_second(1).unwrap(),
                        ));
                }
                Arc::new(p)
            })
            .collect()
    }

    #[test]
    fn slices_of_at_most_100_with_conditions() {
        let svc = crate::endpoints::tests::svc(false);
        let d = desired(&svc, &pods(250), MAX_PER_SLICE);
        assert_eq!(
            d.iter().map(|s| s.endpoints.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert!(d.iter().all(|s| s.address_type == "IPv4"));
        assert_eq!(d[0].ports[0].port, Some(8080));
        assert_eq!(d[0].ports[0].name.as_deref(), Some("http"));
        let by_name = |n: &str| {
            d.iter()
                .flat_map(|s| &s.endpoints)
                .find(|e| e.target_ref.as_ref().unwrap().name.as_deref() == Some(n))
                .unwrap()
                .conditions
                .clone()
                .unwrap()
        };
        let c = |r, s, t| EndpointConditions {
            ready: Some(r),
            serving: Some(s),
            terminating: Some(t),
        };
        assert_eq!(by_name("p000"), c(true, true, false));
        assert_eq!(by_name("p003"), c(false, false, false));
        // Terminating pods stay in slices, not ready.
        assert_eq!(by_name("p001"), c(false, false, true));
        // publishNotReadyAddresses: ready regardless.
        let d = desired(&crate::endpoints::tests::svc(true), &pods(4), 100);
        assert!(d[0]
            .endpoints
            .iter()
            .all(|e| e.conditions.as_ref().unwrap().ready == Some(true)));
        // No pods: one empty placeholder.
        let d = desired(&svc, &[], 100);
        assert_eq!(d.len(), 1);
        assert!(d[0].endpoints.is_empty());
    }
}
