//! The Endpoints controller: a Service with a selector gets an Endpoints
//! object of the same name listing the selected pods' IPs, ready ones in
//! `addresses` and the others in `notReadyAddresses` (all in `addresses`
//! with `publishNotReadyAddresses`), grouped into subsets by the port
//! numbers each pod resolves the Service's ports to. Services without a
//! selector are left alone; an Endpoints this controller made goes with its
//! Service.

use std::collections::BTreeMap;
use std::sync::Arc;

use balsa_api::client::{Action, Api, Client, DeleteParams, ObjectKey, PostParams, Store};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::service_pods::{self as sp, publish_not_ready, selector};
use crate::Error;

/// Upstream's marker on controller-made Endpoints (the mirroring
/// controller skips them); also how this controller knows which it made.
pub const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
pub const HEADLESS: &str = "service.kubernetes.io/headless";

pub struct Ctx {
    pub client: Client,
    pub pods: Store<Pod>,
    pub endpoints: Store<Endpoints>,
}

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The labels of a Service's Endpoints or EndpointSlices: the Service's,
/// and the headless marker.
pub fn labels_of(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    l.remove(HEADLESS);
    if is_headless(svc) {
        l.insert(HEADLESS.into(), String::new());
    }
    l
}

/// The subsets the selected `pods` give `svc`.
pub fn subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let publish = publish_not_ready(svc);
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    // Port set -> (ready, not ready) addresses.
    type PortKey = Vec<(String, i32, String)>;
    type Addrs = (Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut groups: BTreeMap<PortKey, (Vec<EndpointPort>, Addrs)> = BTreeMap::new();
    for pod in pods.iter().filter(|p| sp::should_be_in(p, publish)) {
        let Some(ip) = sp::pod_ip(pod) else { continue };
        let addr = EndpointAddress {
            ip: ip.to_string(),
            hostname: sp::hostname(pod, svc),
            node_name: sp::node_name(pod),
            target_ref: Some(sp::target_ref(pod)),
        };
        let mut eps: Vec<EndpointPort> = ports
            .iter()
            .filter_map(|p| {
                Some(EndpointPort {
                    name: p.name.clone(),
                    port: sp::find_port(pod, p)?,
                    protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: p.app_protocol.clone(),
                })
            })
            .collect();
        if !ports.is_empty() && eps.is_empty() {
            continue;
        }
        eps.sort_by(|a, b| a.name.cmp(&b.name).then(a.port.cmp(&b.port)));
        let key = eps
            .iter()
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.port,
                    p.protocol.clone().unwrap_or_default(),
                )
            })
            .collect();
        let (_, (ready, not_ready)) = groups
            .entry(key)
            .or_insert_with(|| (eps, Default::default()));
        if publish || crate::pods::is_ready(pod) {
            ready.push(addr);
        } else {
            not_ready.push(addr);
        }
    }
    let by_ip = |a: &EndpointAddress, b: &EndpointAddress| {
        a.ip.cmp(&b.ip).then_with(|| {
            let uid = |x: &EndpointAddress| x.target_ref.as_ref().and_then(|r| r.uid.clone());
            uid(a).cmp(&uid(b))
        })
    };
    groups
        .into_values()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(by_ip);
            not_ready.sort_by(by_ip);
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

fn post() -> PostParams {
    crate::owners::post_params()
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
    let pods = sp::selected(&ctx.pods, &svc, sel);
    let subsets = subsets(&svc, &pods);
    let mut labels = labels_of(&svc);
    labels.insert(SKIP_MIRROR.into(), "true".into());
    let api = Api::<Endpoints>::namespaced(ctx.client.clone(), &ns);
    let subsets_opt = (!subsets.is_empty()).then_some(subsets);
    match ctx.endpoints.get(&key) {
        Some(old) => {
            if old.subsets == subsets_opt && old.metadata.labels.as_ref() == Some(&labels) {
                return Ok(Action::await_change());
            }
            let mut new = (*old).clone();
            new.subsets = subsets_opt;
            new.metadata.labels = Some(labels);
            api.replace(&new, &post())
                .await
                .map_err(Error::api("updating endpoints", key.to_string()))?;
        }
        None => {
            let new = Endpoints {
                metadata: ObjectMeta {
                    name: Some(key.name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    ..Default::default()
                },
                subsets: subsets_opt,
            };
            match api.create(&new, &post()).await {
                Ok(_) => {}
                // Made meanwhile (the cache lags): the change brings us back.
                Err(e) if e.code() == 409 => {}
                Err(e) => return Err(Error::api("creating endpoints", key.to_string())(e)),
            }
        }
    }
    Ok(Action::await_change())
}

/// Keyed by Endpoints: removes the ones this controller made whose Service
/// is gone or no longer has a selector.
pub struct OrphanCtx {
    pub client: Client,
    pub services: Store<Service>,
}

pub async fn remove_orphan(ep: Arc<Endpoints>, ctx: Arc<OrphanCtx>) -> Result<Action, Error> {
    let ours = ep
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SKIP_MIRROR))
        .is_some_and(|v| v == "true");
    if !ours || ep.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = ObjectKey::of(&*ep);
    if ctx
        .services
        .get(&key)
        .is_some_and(|s| selector(&s).is_some())
    {
        return Ok(Action::await_change());
    }
    let ns = ep.metadata.namespace.clone().unwrap_or_default();
    let dp = DeleteParams {
        uid: ep.metadata.uid.clone(),
        ..Default::default()
    };
    match Api::<Endpoints>::namespaced(ctx.client.clone(), &ns)
        .delete(&key.name, &dp)
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == 404 || e.code() == 409 => {}
        Err(e) => return Err(Error::api("deleting endpoints", key.to_string())(e)),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;

    pub fn pod(name: &str, ip: Option<&str>, ready: bool, port: Option<(&str, i32)>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: port.map(|(n, p)| {
                        vec![ContainerPort {
                            name: Some(n.into()),
                            container_port: p,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_string),
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    pub fn svc(publish: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                publish_not_ready_addresses: Some(publish),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("web".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ready_and_not_ready_by_port() {
        let pods = vec![
            pod("a", Some("10.0.0.2"), true, Some(("web", 8080))),
            pod("b", Some("10.0.0.1"), false, Some(("web", 8080))),
            pod("c", Some("10.0.0.3"), true, Some(("web", 9090))),
            pod("no-ip", None, true, Some(("web", 8080))),
            pod("no-port", Some("10.0.0.9"), true, Some(("other", 8080))),
        ];
        let s = subsets(&svc(false), &pods);
        assert_eq!(s.len(), 2);
        let ips = |a: &Option<Vec<EndpointAddress>>| {
            a.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
        };
        assert_eq!(s[0].ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(ips(&s[0].addresses), ["10.0.0.2"]);
        assert_eq!(ips(&s[0].not_ready_addresses), ["10.0.0.1"]);
        assert_eq!(s[1].ports.as_ref().unwrap()[0].port, 9090);
        assert_eq!(
            s[1].ports.as_ref().unwrap()[0].name.as_deref(),
            Some("http")
        );
        let a = &s[0].addresses.as_ref().unwrap()[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
        // publishNotReadyAddresses: every address is ready.
        let s = subsets(&svc(true), &pods[..2]);
        assert_eq!(ips(&s[0].addresses), ["10.0.0.1", "10.0.0.2"]);
        assert!(s[0].not_ready_addresses.is_none());
    }
}
