//! The eviction monitor: kubelet's eviction manager loop around the pure
//! decisions of [`crate::eviction::Manager`].
//!
//! ```text
//!  every period: SignalSource ─► met thresholds ─► Pressure (watch) ─► registration (Node conditions)
//!                                     │ (some met, eviction on)
//!                                     ▼
//!         agent loop ◄── Running ── monitor ── usage per pod (runtime) ─► rank ─► one pod
//!         agent loop ◄── Fail(uid) ─┘  └─► Warning event `Evicted`
//! ```
//!
//! The loop owns the pods, so the monitor asks it for the running ones and
//! hands it the one to stop over a bounded channel; the monitor itself does
//! the slow reads (signals, `/proc`, directory sizes) off the loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::{mpsc, oneshot, watch};

use crate::events::{Emitter, EventType};
use crate::eviction::{manager, HardThresholds, Manager, PodUsage, Pressure, Signal, SignalSource};
use crate::runtime::{ContainerId, Runtime};
use crate::worker::Failure;

/// kubelet's `immediateEvictionGracePeriodSeconds`: what a pod gets to stop
/// when a hard threshold is crossed (its own grace period is not honoured).
pub const EVICTION_GRACE: Duration = Duration::from_secs(1);

/// How the monitor runs; the defaults are kubelet's.
/// The hard thresholds themselves are the agent's `thresholds.hard` (they
/// also lower allocatable).
#[derive(Clone)]
pub struct EvictionConfig {
    /// How often signals are read (kubelet: 10 s).
    pub period: Duration,
    /// How long a pressure condition stays true after the last pass that
    /// met its threshold (`--eviction-pressure-transition-period`, 5 min).
    pub transition: Duration,
    /// Whether pods are evicted (off for hollow nodes, whose pods use
    /// nothing); the conditions are reported either way.
    pub evict: bool,
    /// Where readings come from; the machine (and the node root's
    /// filesystem) when `None`.
    pub source: Option<Arc<dyn SignalSource>>,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(10),
            transition: manager::DEFAULT_TRANSITION,
            evict: true,
            source: None,
        }
    }
}

/// What the monitor asks of the agent loop.
pub enum Call {
    /// The pods running here (not stopping): the pod as bound, its status.
    Running(oneshot::Sender<Vec<(Pod, PodStatus)>>),
    /// Stop this pod as evicted.
    Fail {
        uid: String,
        failure: Failure,
        grace: Duration,
    },
}

pub struct Monitor {
    pub config: EvictionConfig,
    pub hard: HardThresholds,
    pub source: Arc<dyn SignalSource>,
    pub runtime: Arc<dyn Runtime>,
    pub calls: mpsc::Sender<Call>,
    pub events: Emitter,
    pub pressure: watch::Sender<Pressure>,
}

/// The running instances in a status: `(container name, id)`, the id with
/// its `runtime://` prefix removed.
fn running_containers(status: &PodStatus) -> Vec<(String, ContainerId)> {
    status
        .container_statuses
        .iter()
        .flatten()
        .filter(|cs| cs.state.as_ref().is_some_and(|s| s.running.is_some()))
        .filter_map(|cs| {
            let id = cs.container_id.as_deref()?;
            let id = id.split_once("://").map_or(id, |(_, id)| id);
            Some((cs.name.clone(), ContainerId(id.to_string())))
        })
        .collect()
}

impl Monitor {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut manager = Manager::new(self.hard.clone(), self.config.transition);
        let mut tick = tokio::time::interval(self.config.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.pass(&mut manager).await;
        }
    }

    /// One monitoring pass: read, set the conditions, evict at most one pod.
    async fn pass(&self, manager: &mut Manager) {
        let source = self.source.clone();
        let observation = match tokio::task::spawn_blocking(move || source.observe()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading eviction signals");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading eviction signals");
                return;
            }
        };
        let met = manager.met(&observation);
        let pressure = manager.pressure(&met, Instant::now());
        self.pressure.send_if_modified(|p| {
            let changed = *p != pressure;
            if changed {
                tracing::info!(
                    memory = pressure.memory,
                    disk = pressure.disk,
                    "node pressure changed"
                );
            }
            *p = pressure;
            changed
        });
        let Some(&signal) = met.first() else { return };
        tracing::debug!(
            signal = signal.as_str(),
            ?observation,
            "eviction threshold met"
        );
        if !self.config.evict {
            return;
        }
        let (tx, rx) = oneshot::channel();
        if self.calls.send(Call::Running(tx)).await.is_err() {
            return;
        }
        let Ok(running) = rx.await else { return };
        let mut usages = Vec::with_capacity(running.len());
        for (pod, status) in running {
            usages.push(self.usage(signal, pod, &status).await);
        }
        let Some(eviction) = manager.choose(signal, &observation, &usages) else {
            tracing::warn!(
                signal = signal.as_str(),
                "under an eviction threshold with no pod to evict"
            );
            return;
        };
        tracing::info!(
            pod = %eviction.pod,
            signal = eviction.signal.as_str(),
            message = %eviction.message,
            "evicting pod"
        );
        if let Some(u) = usages
            .iter()
            .find(|u| u.pod.metadata.uid.as_deref() == Some(&eviction.uid))
        {
            self.events.emit(
                &crate::worker::pod_key(&u.pod),
                None,
                EventType::Warning,
                manager::REASON,
                eviction.message.clone(),
            );
        }
        let call = Call::Fail {
            uid: eviction.uid,
            failure: Failure {
                reason: manager::REASON.into(),
                message: eviction.message,
            },
            grace: EVICTION_GRACE,
        };
        let _ = self.calls.send(call).await;
    }

    /// What one pod uses of the resource `signal` is about.
    async fn usage(&self, signal: Signal, pod: Pod, status: &PodStatus) -> PodUsage {
        let mut containers = Vec::new();
        let mut disk = 0;
        match signal {
            Signal::MemoryAvailable => {
                for (name, id) in running_containers(status) {
                    let bytes = self.runtime.memory_usage(&id).await.unwrap_or(0);
                    containers.push((name, bytes));
                }
            }
            Signal::NodefsAvailable => {
                disk = self
                    .runtime
                    .disk_usage(&crate::worker::pod_key(&pod))
                    .await
                    .unwrap_or(0);
            }
        }
        PodUsage {
            memory: containers.iter().map(|(_, b)| b).sum(),
            disk,
            containers,
            pod,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, ContainerStatus};

    use crate::eviction::{MachineSignals, Observation};
    use crate::machine::MachineError;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// Readings set by the test.
    struct Fake(Mutex<Observation>);

    impl SignalSource for Fake {
        fn observe(&self) -> Result<Observation, MachineError> {
            Ok(*self.0.lock().unwrap())
        }
    }

    fn pod(name: &str, memory_request: Option<&str>) -> Pod {
        let requests =
            memory_request.map(|m| BTreeMap::from([("memory".to_string(), Quantity(m.into()))]));
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    resources: Some(ResourceRequirements {
                        limits: requests.clone(),
                        requests,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    #[tokio::test]
    async fn evicts_one_pod_per_pass_and_clears_the_condition() {
        const MIB: u64 = 1 << 20;
        let fine = Observation {
            memory_available: 4096 * MIB,
            memory_capacity: 8192 * MIB,
            nodefs_available: 500 * MIB,
            nodefs_capacity: 1000 * MIB,
        };
        let fake = Arc::new(Fake(Mutex::new(Observation {
            memory_available: 10 * MIB,
            ..fine
        })));
        let dir = tempfile::tempdir().unwrap();
        let (calls_tx, mut calls) = mpsc::channel(4);
        let (events, mut events_rx) = Emitter::channel(16);
        let (pressure_tx, mut pressure) = watch::channel(Pressure::default());
        let monitor = Monitor {
            config: EvictionConfig {
                period: Duration::from_millis(20),
                transition: Duration::ZERO,
                evict: true,
                source: Some(fake.clone()),
            },
            hard: HardThresholds::default(),
            source: fake.clone(),
            runtime: Arc::new(crate::SimRuntime::new(dir.path(), Duration::ZERO)),
            calls: calls_tx,
            events,
            pressure: pressure_tx,
        };
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(monitor.run(stop));
        // The loop's side: two running pods until one is failed.
        let mut running = vec![pod("guaranteed", Some("64Mi")), pod("best-effort", None)];
        let mut failed = Vec::new();
        while failed.len() < 2 {
            match calls.recv().await.unwrap() {
                Call::Running(reply) => {
                    let list = running.iter().map(|p| (p.clone(), PodStatus::default()));
                    let _ = reply.send(list.collect());
                }
                Call::Fail {
                    uid,
                    failure,
                    grace,
                } => {
                    assert_eq!(grace, EVICTION_GRACE);
                    assert_eq!(failure.reason, "Evicted");
                    assert!(
                        failure.message.starts_with(
                            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 10Mi."
                        ),
                        "{}",
                        failure.message
                    );
                    running.retain(|p| p.metadata.uid.as_deref() != Some(&uid));
                    failed.push(uid);
                }
            }
        }
        assert_eq!(failed, ["uid-best-effort", "uid-guaranteed"]);
        // Nothing left to run from now on.
        tokio::spawn(async move {
            while let Some(call) = calls.recv().await {
                if let Call::Running(reply) = call {
                    let _ = reply.send(Vec::new());
                }
            }
        });
        assert!(pressure.borrow_and_update().memory);
        let event = events_rx.recv().await.unwrap();
        assert_eq!(
            (event.reason.as_str(), event.type_),
            ("Evicted", EventType::Warning)
        );
        assert_eq!(event.pod.name, "best-effort");
        // The pressure goes away: the condition follows (no transition period).
        *fake.0.lock().unwrap() = fine;
        tokio::time::timeout(Duration::from_secs(5), pressure.wait_for(|p| !p.memory))
            .await
            .expect("pressure cleared")
            .unwrap();
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        // The real source reads this machine.
        assert!(MachineSignals::new(dir.path()).observe().is_ok());
    }

    #[test]
    fn running_instances_from_a_status() {
        let cs = |name: &str, id: Option<&str>, running: bool| ContainerStatus {
            name: name.into(),
            container_id: id.map(String::from),
            state: Some(ContainerState {
                running: running.then(ContainerStateRunning::default),
                ..Default::default()
            }),
            ..Default::default()
        };
        let status = PodStatus {
            container_statuses: Some(vec![
                cs("a", Some("process://p-1"), true),
                cs("b", Some("process://p-2"), false),
                cs("c", None, true),
            ]),
            ..Default::default()
        };
        assert_eq!(
            running_containers(&status),
            vec![("a".to_string(), ContainerId("p-1".into()))]
        );
    }
}
