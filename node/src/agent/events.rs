//! Pod events out to the API as core/v1 Events, as kubelet's recorder writes
//! them: in the pod's namespace, `involvedObject` the pod (and the container's
//! field path), `source.component` kubelet and `source.host` the node.
//!
//! Best effort, like kubelet's: an event that cannot be written is logged
//! and dropped; the workers never wait for it.
//!
//! Held to kubelet's event rate (`eventRecordQPS` 50, `eventBurst` 100).
//! The events waiting when a write starts go together, the next ones only
//! when those are answered: kubelet's broadcaster writes from one
//! goroutine, one event at a time. Meanwhile events wait in the workers'
//! bounded channel and are dropped once it is full. They go through the
//! node's `Batcher` as writes that may wait: up to its `LINGER` for a pod
//! status write to share a request with (a pod that starts sends its
//! status and its Pulled / Created / Started together), and never ahead
//! of one.

use balsa_api::client::token_bucket::{Rate, TokenBucket};
use balsa_api::client::{Api, Batcher, Client, PostParams};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use tokio::sync::{mpsc, watch};

use crate::events::PodEvent;

/// kubelet's defaults for `eventRecordQPS` and `eventBurst`.
pub const RATE: Rate = Rate {
    qps: 50.0,
    burst: 100,
};

/// The most events written together.
const GROUP: usize = 50;

pub async fn run(
    client: Client,
    batcher: Batcher,
    node: String,
    mut events: mpsc::Receiver<PodEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let write = async {
        let mut limit = TokenBucket::new(RATE, tokio::time::Instant::now());
        let mut seq = 0u64;
        while let Some(first) = events.recv().await {
            let mut group = vec![first];
            while group.len() < GROUP {
                match events.try_recv() {
                    Ok(e) => group.push(e),
                    Err(_) => break,
                }
            }
            let mut writes = Vec::with_capacity(group.len());
            for e in &group {
                let event = to_event(e, &node, seq);
                seq = seq.wrapping_add(1);
                limit.wait().await;
                let api: Api<Event> = Api::namespaced(client.clone(), &e.pod.namespace);
                let batcher = &batcher;
                writes.push(async move {
                    let op = api.create_op(&event, &PostParams::default())?;
                    batcher.write_soon(op).await
                });
            }
            let outcomes = futures::future::join_all(writes).await;
            for (e, outcome) in group.iter().zip(outcomes) {
                if let Err(err) = outcome {
                    tracing::debug!(pod = %e.pod, reason = %e.reason, error = %err, "event not written");
                }
            }
        }
    };
    tokio::select! {
        _ = write => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

pub fn to_event(e: &PodEvent, node: &str, seq: u64) -> Event {
    // kubelet names events `<pod>.<unique hex>`.
    let nanos = e.time.as_nanosecond();
    let name = format!("{}.{:x}{:04x}", e.pod.name, nanos, seq & 0xffff);
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(e.pod.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(e.pod.namespace.clone()),
            name: Some(e.pod.name.clone()),
            uid: Some(e.pod.uid.clone()),
            field_path: e.field_path.clone(),
            ..Default::default()
        },
        reason: Some(e.reason.clone()),
        message: Some(e.message.clone()),
        type_: Some(e.type_.as_str().into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.to_string()),
        }),
        first_timestamp: Some(Time(e.time)),
        last_timestamp: Some(Time(e.time)),
        // Unset, as kubelet's (core/v1) recorder leaves it: with it set, the API
        // would require the events.k8s.io fields (action, reportingController).
        event_time: None,
        count: Some(1),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.to_string()),
        action: None,
        related: None,
        series: None,
    }
}
