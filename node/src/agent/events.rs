//! Pod events out to the API as core/v1 Events, as kubelet's recorder writes
//! them: in the pod's namespace, `involvedObject` the pod (and the container's
//! field path), `source.component` kubelet and `source.host` the node.
//!
//! Best effort, like kubelet's: an event that cannot be written is logged
//! and dropped; the workers never wait for it.

use std::sync::atomic::{AtomicU64, Ordering};

use balsa_api::client::{Api, Client, PostParams};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use tokio::sync::{mpsc, watch};

use crate::events::PodEvent;

const CONCURRENCY: usize = 8;

pub async fn run(
    client: Client,
    node: String,
    events: mpsc::Receiver<PodEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let seq = AtomicU64::new(0);
    let write = tokio_stream::wrappers::ReceiverStream::new(events).for_each_concurrent(
        CONCURRENCY,
        |e| {
            let client = client.clone();
            let event = to_event(&e, &node, seq.fetch_add(1, Ordering::Relaxed));
            async move {
                let api: Api<Event> = Api::namespaced(client, &e.pod.namespace);
                if let Err(err) = api.create(&event, &PostParams::default()).await {
                    tracing::debug!(pod = %e.pod, reason = %e.reason, error = %err, "event not written");
                }
            }
        },
    );
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
