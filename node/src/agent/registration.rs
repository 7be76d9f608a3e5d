//! The node as the API sees it: the Node object (labels, capacity and
//! allocatable, addresses, nodeInfo, conditions) created at start, and the
//! node's `coordination.k8s.io/v1` Lease in `kube-node-lease` renewed every
//! heartbeat (created when missing), as kubelet does every 10 s. The status
//! is computed on the same beat but written through the status subresource
//! only when it differs from the API's copy or the report period (5 min)
//! has passed, as kubelet does (`status_report`).
//!
//! A beat that fails is logged and the next one tries again; a Node deleted
//! behind the agent's back is created again. The memory and disk pressure
//! conditions are the eviction monitor's ([`Pressure`], a watch); a change
//! of them is written at once rather than at the next beat.

use std::path::PathBuf;
use std::time::Duration;

use balsa_api::client::{Api, Client, Patch, PatchParams, PostParams};
use balsa_api::registry::{ApiError, Reason};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{DaemonEndpoint, Node, NodeDaemonEndpoints, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use serde_json::json;
use tokio::sync::watch;

use super::status_report::Cadence;
use super::statuses::FIELD_MANAGER;
use crate::eviction::Pressure;
use crate::machine::{self, MachineInfo, NodePressure, Signals, Thresholds};

pub const KUBELET_VERSION: &str = "v1.32.0-balsa";
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// kubelet's default `leaseDurationSeconds`.
const LEASE_SECONDS: i32 = 40;

pub struct Registration {
    pub client: Client,
    pub node: String,
    pub host_ip: String,
    pub info: MachineInfo,
    /// Where the node's pods live (the disk whose space is nodefs).
    pub root: PathBuf,
    pub thresholds: Thresholds,
    pub every: Duration,
    /// How often an unchanged status is written anyway (kubelet's
    /// `nodeStatusReportFrequency`).
    pub report_every: Duration,
    /// The log endpoint's port, published as the kubelet endpoint.
    pub log_port: Option<u16>,
    /// The eviction monitor's pressure conditions.
    pub pressure: watch::Receiver<Pressure>,
}

impl Registration {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut pressure = self.pressure.clone();
        let mut monitor = true;
        let mut beat = Beat {
            cadence: Cadence::new(self.report_every),
            r: self,
            uid: None,
        };
        let mut tick = tokio::time::interval(beat.r.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = pressure.changed(), if monitor => {
                    if changed.is_err() {
                        // The monitor is gone (the agent is stopping).
                        monitor = false;
                        continue;
                    }
                }
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = beat.node().await {
                tracing::warn!(node.name = %beat.r.node, error = %e, "node status not written");
            }
            if let Err(e) = beat.lease().await {
                tracing::warn!(node.name = %beat.r.node, error = %e, "node lease not renewed");
            }
        }
    }
}

struct Beat {
    r: Registration,
    /// The Node's uid once it is known to exist.
    uid: Option<String>,
    cadence: Cadence,
}

fn pp() -> PatchParams {
    PatchParams {
        field_manager: FIELD_MANAGER.into(),
        ..Default::default()
    }
}

impl Beat {
    /// The status to report; `previous` (the API's) keeps conditions'
    /// `lastTransitionTime` while their status holds.
    fn status(&self, previous: Option<&NodeStatus>) -> NodeStatus {
        let r = &self.r;
        let pid = match Signals::read(&r.root) {
            Ok(signals) => NodePressure::pid_pressure(&signals, &r.thresholds),
            Err(e) => {
                tracing::debug!(error = %e, "reading PID signals; reporting no pressure");
                false
            }
        };
        let from_monitor = *r.pressure.borrow();
        let pressure = NodePressure {
            memory: from_monitor.memory,
            disk: from_monitor.disk,
            pid,
        };
        let mut status = machine::node_status(
            &r.info,
            &pressure,
            &r.thresholds,
            &r.host_ip,
            KUBELET_VERSION,
            previous,
            crate::clock::now(),
        );
        // Where masters reach this node's log endpoint (with the InternalIP).
        status.daemon_endpoints = r.log_port.map(|port| NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(port),
            }),
        });
        status
    }

    async fn node(&mut self) -> Result<(), ApiError> {
        let r = &self.r;
        let nodes: Api<Node> = Api::all(r.client.clone());
        // The Node as the API holds it: this replica's copy will do, as
        // kubelet reads it from the apiserver's cache.
        let current = match &self.uid {
            Some(_) => match nodes.get_local(&r.node).await {
                Ok(n) => Some(n),
                Err(e) if e.reason == Reason::NotFound => {
                    self.uid = None;
                    None
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        let current = match current {
            Some(n) => n,
            None => {
                let n = self.register().await?;
                self.uid = n.metadata.uid.clone();
                n
            }
        };
        let before = current.status.as_ref();
        let status = self.status(before);
        let at = std::time::Instant::now();
        if !self.cadence.due(before, &status, at) {
            return Ok(());
        }
        let patch = Patch::Merge(json!({ "status": status }));
        match nodes
            .patch_status_revision(&self.r.node, &pp(), &patch)
            .await
        {
            Ok(_) => {
                self.cadence.reported(at);
                Ok(())
            }
            Err(e) => {
                if e.reason == Reason::NotFound {
                    self.uid = None;
                }
                Err(e)
            }
        }
    }

    /// Creates the Node (with its status), or takes over the one there,
    /// setting the labels this agent owns.
    async fn register(&self) -> Result<Node, ApiError> {
        let r = &self.r;
        let nodes: Api<Node> = Api::all(r.client.clone());
        let labels = machine::node_labels(&r.node, &r.info);
        let node = match nodes.get_opt(&r.node).await? {
            None => {
                let node = Node {
                    metadata: ObjectMeta {
                        name: Some(r.node.clone()),
                        labels: Some(labels),
                        ..Default::default()
                    },
                    spec: Some(NodeSpec::default()),
                    status: Some(self.status(None)),
                };
                let pp = PostParams {
                    field_manager: FIELD_MANAGER.into(),
                    ..Default::default()
                };
                match nodes.create(&node, &pp).await {
                    Ok(n) => n,
                    Err(e) if e.reason == Reason::AlreadyExists => nodes.get(&r.node).await?,
                    Err(e) => return Err(e),
                }
            }
            Some(_) => {
                let patch = Patch::Merge(json!({ "metadata": { "labels": labels } }));
                nodes.patch(&r.node, &pp(), &patch).await?
            }
        };
        tracing::info!(node.name = %r.node, "node registered");
        Ok(node)
    }

    async fn lease(&self) -> Result<(), ApiError> {
        let r = &self.r;
        let leases: Api<Lease> = Api::namespaced(r.client.clone(), LEASE_NAMESPACE);
        let spec = LeaseSpec {
            holder_identity: Some(r.node.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(crate::clock::now())),
            ..Default::default()
        };
        let patch = Patch::Merge(json!({ "spec": spec }));
        match leases.patch_revision(&r.node, &pp(), &patch).await {
            Ok(_) => Ok(()),
            Err(e) if e.reason == Reason::NotFound => {
                let owner = self.uid.as_ref().map(|uid| {
                    vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: r.node.clone(),
                        uid: uid.clone(),
                        ..Default::default()
                    }]
                });
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(r.node.clone()),
                        namespace: Some(LEASE_NAMESPACE.into()),
                        owner_references: owner,
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                let pp = PostParams {
                    field_manager: FIELD_MANAGER.into(),
                    ..Default::default()
                };
                leases.create(&lease, &pp).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }
}
