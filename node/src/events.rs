//! Events a pod worker reports (kubelet's `Scheduled`… `Pulled`, `Created`,
//! `Started`, `Killing`, `Unhealthy`, `BackOff`, `Failed`, `FailedMount`),
//! for the agent loop to write as Event objects.
//!
//! They go through one bounded channel shared by all workers; when the agent
//! falls behind, events are dropped (and counted) rather than stalling pods,
//! as kubelet's recorder does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;

use crate::runtime::PodKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    pub pod: PodKey,
    /// `spec.containers{name}` or `spec.initContainers{name}` when the event
    /// is about one container (`involvedObject.fieldPath`).
    pub field_path: Option<String>,
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    pub time: Timestamp,
}

/// A cheap-clone sender of [`PodEvent`]s that never waits.
#[derive(Clone)]
pub struct Emitter {
    tx: mpsc::Sender<PodEvent>,
    dropped: Arc<AtomicU64>,
}

impl Emitter {
    /// An emitter and the receiving end the agent loop drains.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<PodEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    pub fn emit(
        &self,
        pod: &PodKey,
        field_path: Option<String>,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let event = PodEvent {
            pod: pod.clone(),
            field_path,
            type_,
            reason: reason.to_string(),
            message: message.into(),
            time: crate::clock::now(),
        };
        tracing::debug!(pod = %event.pod, reason = %event.reason, message = %event.message, "pod event");
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events lost because the channel was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
