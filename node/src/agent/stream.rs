//! The agent's end of the assignment stream: holds one `NodeAgent.Attach`
//! stream to some master, forwards what it hears, and moves to the next
//! master when the stream breaks or goes silent.
//!
//! What must stay true: updates reach the agent loop in revision order and
//! none is skipped (the channel is bounded and awaited, never dropped); after a
//! reconnect the stream resumes after the last revision it holds whole, so no
//! change is lost (the master answers with a full snapshot when that revision
//! has left its watch window). One revision may carry several changes (a
//! transaction writing several pods), and a stream can break between them:
//! the last revision of changes forwarded is whole only once a later
//! revision or a `Progress` says so, and until then a new stream resends it.
//! The agent holds pods by key, so a change forwarded twice changes nothing.

use std::time::Duration;

use balsa_api::client::backoff::Backoff;
use balsa_api::client::managed_fields::without_managed_fields;
use balsa_proto::node::node_agent_client::NodeAgentClient;
use balsa_proto::node::{
    agent_message, master_message, AgentMessage, ChangeType, Heartbeat, Hello, MasterMessage,
};
use balsa_proto::NODE_STREAM_VERSION;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, watch};
use tonic::transport::Endpoint;

/// What the masters said, decoded.
#[derive(Debug)]
pub enum Update {
    /// Every pod bound to the node: replaces what the agent held.
    Snapshot { revision: u64, pods: Vec<Pod> },
    /// One pod added to, changed on, or gone from the node.
    Change {
        deleted: bool,
        revision: u64,
        pod: Box<Pod>,
    },
    /// Nothing more up to here.
    Progress { revision: u64 },
}

/// Where the stream is, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    /// The master (API address) the stream is on; `None` while reconnecting.
    pub master: Option<String>,
    /// The last revision forwarded.
    pub revision: Option<u64>,
    /// Every change up to this revision was forwarded: a new stream resumes
    /// after it.
    pub whole: Option<u64>,
    /// Streams opened so far.
    pub attached: u64,
}

/// A master dialled but not answering within this long is given up on.
const DIAL: Duration = Duration::from_secs(1);
/// Masters send a `Progress` about every second; this much silence means the
/// master lost touch with the cluster (or the network with the master).
const SILENCE: Duration = Duration::from_secs(4);
const HEARTBEAT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("dialling {0}: {1}")]
    Dial(String, #[source] tonic::transport::Error),
    #[error("the master refused the stream: {0}")]
    Refused(#[source] tonic::Status),
    #[error("the stream broke: {0}")]
    Broke(#[source] tonic::Status),
    #[error("the master ended the stream")]
    Ended,
    #[error("the master said nothing for {0:?}")]
    Silent(Duration),
    #[error("the master sent a pod this agent cannot read: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("the agent loop is gone")]
    Closed,
}

/// Runs until `stop` turns true or the agent loop goes away.
pub async fn run(
    masters: Vec<String>,
    node: String,
    updates: mpsc::Sender<Update>,
    state: watch::Sender<StreamState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut current = 0;
    // Masters tried since the last stream that delivered something.
    let mut failed_in_a_row = 0;
    loop {
        let master = masters[current % masters.len()].clone();
        let after = state.borrow().whole;
        let attempt = attach(&master, &node, after, &updates, &state);
        let outcome = tokio::select! {
            r = attempt => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        state.send_modify(|s| s.master = None);
        let (delivered, err) = outcome;
        if matches!(err, StreamError::Closed) {
            return;
        }
        tracing::info!(node.name = %node, %master, error = %err, "assignment stream lost; trying the next master");
        current += 1;
        if delivered {
            failed_in_a_row = 0;
            backoff.reset();
        } else {
            failed_in_a_row += 1;
        }
        // Go straight to the next master; wait only once every master has
        // failed in a row.
        if failed_in_a_row >= masters.len() {
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// One stream's life. Returns whether it delivered anything, and why it ended.
async fn attach(
    master: &str,
    node: &str,
    after: Option<u64>,
    updates: &mpsc::Sender<Update>,
    state: &watch::Sender<StreamState>,
) -> (bool, StreamError) {
    let endpoint = match Endpoint::from_shared(format!("http://{master}")) {
        Ok(e) => e.connect_timeout(DIAL).tcp_nodelay(true),
        Err(e) => return (false, StreamError::Dial(master.into(), e)),
    };
    let channel = match tokio::time::timeout(DIAL, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return (false, StreamError::Dial(master.into(), e)),
        Err(_) => return (false, StreamError::Silent(DIAL)),
    };
    let mut client = NodeAgentClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(16 << 20);
    let (out, out_rx) = mpsc::channel::<AgentMessage>(4);
    let hello = AgentMessage {
        message: Some(agent_message::Message::Hello(Hello {
            version: NODE_STREAM_VERSION,
            node_name: node.to_string(),
            after,
        })),
    };
    if out.send(hello).await.is_err() {
        return (false, StreamError::Ended);
    }
    let request = tokio_stream::wrappers::ReceiverStream::new(out_rx);
    let mut inbound = match tokio::time::timeout(SILENCE, client.attach(request)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return (false, StreamError::Refused(s)),
        Err(_) => return (false, StreamError::Silent(SILENCE)),
    };
    state.send_modify(|s| {
        s.master = Some(master.to_string());
        s.attached += 1;
    });
    tracing::info!(node.name = %node, %master, ?after, "assignment stream attached");
    let mut delivered = false;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    loop {
        let msg = tokio::select! {
            m = tokio::time::timeout(SILENCE, inbound.message()) => m,
            _ = heartbeat.tick() => {
                let revision = state.borrow().revision.unwrap_or(0);
                let hb = AgentMessage {
                    message: Some(agent_message::Message::Heartbeat(Heartbeat { revision })),
                };
                // A full queue means the master stopped reading: its silence
                // is caught below.
                let _ = out.try_send(hb);
                continue;
            }
        };
        let msg = match msg {
            Err(_) => return (delivered, StreamError::Silent(SILENCE)),
            Ok(Err(s)) => return (delivered, StreamError::Broke(s)),
            Ok(Ok(None)) => return (delivered, StreamError::Ended),
            Ok(Ok(Some(m))) => m,
        };
        let update = match decode(msg) {
            Ok(Some(u)) => u,
            Ok(None) => continue,
            Err(e) => return (delivered, e),
        };
        let (revision, whole) = match &update {
            Update::Snapshot { revision, .. } | Update::Progress { revision } => {
                (*revision, *revision)
            }
            // More changes of the same revision may follow.
            Update::Change { revision, .. } => (*revision, revision.saturating_sub(1)),
        };
        if updates.send(update).await.is_err() {
            return (delivered, StreamError::Closed);
        }
        delivered = true;
        state.send_if_modified(|s| {
            let newer = s.revision.is_none_or(|r| r < revision);
            if newer {
                s.revision = Some(revision);
            }
            let more_whole = s.whole.is_none_or(|w| w < whole);
            if more_whole {
                s.whole = Some(whole);
            }
            newer || more_whole
        });
    }
}

/// A pod as the agent holds it: without `metadata.managedFields`, which no
/// part of the agent reads (its status writes are merge patches, and the
/// registry keeps managedFields from the stored object), and which are a
/// good part of a pod's bytes and of its decoded size; its status lists
/// no longer than their items (see `compact`).
fn pod(json: &[u8]) -> Result<Pod, StreamError> {
    let mut pod: Pod =
        serde_json::from_slice(&without_managed_fields(json)).map_err(StreamError::Decode)?;
    compact(&mut pod);
    Ok(pod)
}

/// Gives back the room serde's lists leave past their last item: a list
/// decoded from JSON starts with room for 4, so one 752-byte container
/// status took 3 KB and five conditions room for eight. The agent holds a
/// pod's newest copy, and its worker the copy it started from, for as long
/// as the pod runs.
fn compact(pod: &mut Pod) {
    let Some(status) = pod.status.as_mut() else {
        return;
    };
    let lists = [
        status.container_statuses.as_mut(),
        status.init_container_statuses.as_mut(),
        status.ephemeral_container_statuses.as_mut(),
    ];
    for list in lists.into_iter().flatten() {
        list.shrink_to_fit();
    }
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.shrink_to_fit();
    }
}

fn decode(msg: MasterMessage) -> Result<Option<Update>, StreamError> {
    Ok(match msg.message {
        Some(master_message::Message::Snapshot(s)) => Some(Update::Snapshot {
            revision: s.revision,
            pods: s.pods.iter().map(|p| pod(p)).collect::<Result<_, _>>()?,
        }),
        Some(master_message::Message::Change(c)) => Some(Update::Change {
            deleted: c.r#type == ChangeType::Deleted as i32,
            revision: c.revision,
            pod: Box::new(pod(&c.pod)?),
        }),
        Some(master_message::Message::Progress(p)) => Some(Update::Progress {
            revision: p.revision,
        }),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use balsa_proto::node::node_agent_server::{NodeAgent, NodeAgentServer};
    use balsa_proto::node::{PodChange, Progress, Snapshot};
    use tokio_stream::Stream;
    use tonic::{Request, Response, Status, Streaming};

    use super::*;

    type Out = Pin<Box<dyn Stream<Item = Result<MasterMessage, Status>> + Send>>;

    #[test]
    fn a_decoded_pods_status_lists_hold_no_spare_room() {
        let json = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Initialized", "status": "True"},
                    {"type": "ContainersReady", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "PodReadyToStartContainers", "status": "True"}
                ],
                "containerStatuses": [{
                    "name": "c", "image": "busybox", "imageID": "",
                    "ready": true, "restartCount": 0
                }]
            }
        }))
        .unwrap();
        let decoded = pod(&json).unwrap();
        let status = decoded.status.as_ref().unwrap();
        let statuses = status.container_statuses.as_ref().unwrap();
        assert_eq!((statuses.len(), statuses.capacity()), (1, 1));
        let conditions = status.conditions.as_ref().unwrap();
        assert_eq!((conditions.len(), conditions.capacity()), (5, 5));
        // Nothing else changes.
        let plain: Pod = serde_json::from_slice(&json).unwrap();
        assert_eq!(decoded, plain);
    }

    #[test]
    fn pods_are_held_without_their_managed_fields() {
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u",
                "managedFields": [{"manager": "m", "operation": "Update",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]}
        });
        let change = MasterMessage {
            message: Some(master_message::Message::Change(PodChange {
                r#type: ChangeType::Added as i32,
                revision: 3,
                pod: serde_json::to_vec(&json).unwrap().into(),
            })),
        };
        let Ok(Some(Update::Change { pod, .. })) = decode(change) else {
            panic!("a change");
        };
        assert_eq!(pod.metadata.managed_fields, None);
        assert_eq!(pod.metadata.uid.as_deref(), Some("u"));
        assert_eq!(pod.spec.unwrap().containers[0].image.as_deref(), Some("i"));
    }

    /// A master that breaks the first stream between the two changes of
    /// revision 7 and records where each stream was asked to resume.
    #[derive(Clone, Default)]
    struct Master {
        afters: Arc<Mutex<Vec<Option<u64>>>>,
    }

    fn change(revision: u64, name: &str) -> Result<MasterMessage, Status> {
        let pod = serde_json::json!({"metadata": {"name": name, "namespace": "ns"}});
        Ok(MasterMessage {
            message: Some(master_message::Message::Change(PodChange {
                r#type: ChangeType::Added as i32,
                revision,
                pod: serde_json::to_vec(&pod).unwrap().into(),
            })),
        })
    }

    #[tonic::async_trait]
    impl NodeAgent for Master {
        type AttachStream = Out;

        async fn attach(
            &self,
            request: Request<Streaming<AgentMessage>>,
        ) -> Result<Response<Out>, Status> {
            let mut inbound = request.into_inner();
            let Some(agent_message::Message::Hello(hello)) =
                inbound.message().await?.and_then(|m| m.message)
            else {
                return Err(Status::invalid_argument("hello first"));
            };
            let first = {
                let mut afters = self.afters.lock().unwrap();
                afters.push(hello.after);
                afters.len() == 1
            };
            let (tx, rx) = mpsc::channel(8);
            tokio::spawn(async move {
                if first {
                    let snap = master_message::Message::Snapshot(Snapshot {
                        revision: 5,
                        pods: Vec::new(),
                        version: NODE_STREAM_VERSION,
                    });
                    let _ = tx
                        .send(Ok(MasterMessage {
                            message: Some(snap),
                        }))
                        .await;
                    let _ = tx.send(change(7, "a")).await;
                    let _ = tx.send(Err(Status::unavailable("gone mid-revision"))).await;
                    return;
                }
                // Everything after the agent's revision: both changes of 7.
                let _ = tx.send(change(7, "a")).await;
                let _ = tx.send(change(7, "b")).await;
                let progress = master_message::Message::Progress(Progress { revision: 8 });
                let _ = tx
                    .send(Ok(MasterMessage {
                        message: Some(progress),
                    }))
                    .await;
                tx.closed().await;
                drop(inbound);
            });
            Ok(Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
        }
    }

    #[tokio::test]
    async fn a_stream_broken_inside_a_revision_resumes_before_it() {
        let master = Master::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(NodeAgentServer::new(master.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let (updates, mut rx) = mpsc::channel(16);
        let (state, mut watch_state) = watch::channel(StreamState::default());
        let (stop, stopped) = watch::channel(false);
        let agent = tokio::spawn(run(vec![addr], "n1".into(), updates, state, stopped));
        let mut names = Vec::new();
        while names.len() < 3 {
            match rx.recv().await.expect("updates") {
                Update::Change { pod, .. } => names.push(pod.metadata.name.unwrap_or_default()),
                Update::Snapshot { .. } | Update::Progress { .. } => {}
            }
        }
        watch_state
            .wait_for(|s| s.whole == Some(8))
            .await
            .expect("state");
        // The second stream resumed after 6, not 7: "b" was not lost, and
        // "a" came again, which the agent's pods-by-key ignores.
        assert_eq!(*master.afters.lock().unwrap(), vec![None, Some(6)]);
        assert_eq!(names, vec!["a", "a", "b"]);
        let _ = stop.send(true);
        agent.await.unwrap();
        server.abort();
    }
}
