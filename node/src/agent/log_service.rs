//! The agent's log endpoint, kubelet's `/containerLogs`: `NodeLogs.PodLog`
//! (`proto/proto/balsa/node.proto`). Any master calls it to answer
//! `pods/NAME/log`; the address is published on the Node
//! (`status.daemonEndpoints.kubeletEndpoint.Port` and the InternalIP).
//!
//! ```text
//!  master ──PodLog──► directory (pods by namespace/name, from the agent loop)
//!                       └─ status watch ─► logs::instance (which attempt)
//!                            └─ runtime.log_path ─► logs::read | logs::follow ─► chunks
//! ```
//!
//! The pod's state is the worker's own (the status watch), not the API's:
//! it is what the node actually runs.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use balsa_proto::balsa::node::v1::node_logs_server::{NodeLogs, NodeLogsServer};
use balsa_proto::balsa::node::v1::{PodLogChunk, PodLogRequest};
use futures::Stream;
use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::logs::{self, LogOptions};
use crate::runtime::{PodKey, Runtime};

/// The pods this node runs, by `namespace/name`, as the agent loop last
/// published them.
pub type Directory = watch::Receiver<Arc<HashMap<String, LogTarget>>>;

#[derive(Clone)]
pub struct LogTarget {
    pub key: PodKey,
    pub status: watch::Receiver<PodStatus>,
}

/// The largest chunk sent in one message.
const CHUNK: usize = 64 * 1024;

pub struct LogService {
    pods: Directory,
    runtime: Arc<dyn Runtime>,
}

impl LogService {
    pub fn server(pods: Directory, runtime: Arc<dyn Runtime>) -> NodeLogsServer<Self> {
        NodeLogsServer::new(Self { pods, runtime })
    }
}

fn container_id(status: &PodStatus, container: &str) -> Option<String> {
    let find = |list: &Option<Vec<ContainerStatus>>| {
        list.iter()
            .flatten()
            .find(|c| c.name == container)
            .map(|c| (c.container_id.clone(), c.state.clone()))
    };
    let (id, state) =
        find(&status.container_statuses).or_else(|| find(&status.init_container_statuses))?;
    state.and_then(|s| s.running).and(id)
}

/// Resolves when `container` no longer runs the instance `id` (it exited,
/// or the pod's worker ended).
async fn exited(mut status: watch::Receiver<PodStatus>, container: String, id: Option<String>) {
    let _ = status.wait_for(|s| container_id(s, &container) != id).await;
}

type Chunks = Pin<Box<dyn Stream<Item = Result<PodLogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl NodeLogs for LogService {
    type PodLogStream = Chunks;

    async fn pod_log(
        &self,
        request: Request<PodLogRequest>,
    ) -> Result<Response<Self::PodLogStream>, Status> {
        let r = request.into_inner();
        let target = self
            .pods
            .borrow()
            .get(&format!("{}/{}", r.namespace, r.pod))
            .filter(|t| r.uid.is_empty() || t.key.uid == r.uid)
            .cloned()
            // kubelet's answer (HTTP 404) for a pod it does not run.
            .ok_or_else(|| Status::not_found(format!("pod {:?} does not exist", r.pod)))?;
        let status = target.status.borrow().clone();
        let instance = logs::instance(&r.pod, &status, &r.container, r.previous)
            .map_err(Status::invalid_argument)?;
        let mut path = self
            .runtime
            .log_path(&target.key, &r.container, instance.attempt);
        if let Some(other) = instance.fallback {
            if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
                path = self.runtime.log_path(&target.key, &r.container, other);
            }
        }
        let since_time = r
            .since_time
            .as_deref()
            .map(|t| {
                t.parse::<Timestamp>()
                    .map_err(|e| Status::invalid_argument(format!("sinceTime {t:?}: {e}")))
            })
            .transpose()?;
        let opts = LogOptions {
            tail_lines: r.tail_lines.map(|n| n as usize),
            timestamps: r.timestamps,
            since_time,
            limit_bytes: r.limit_bytes.map(|n| n as usize),
        };
        let to_chunk = |data: Vec<u8>| Ok(PodLogChunk { data: data.into() });
        if r.follow && instance.running {
            let (tx, rx) = mpsc::channel(16);
            let id = container_id(&status, &r.container);
            let done = exited(target.status.clone(), r.container.clone(), id);
            tokio::spawn(async move {
                if let Err(e) = logs::follow(&path, &opts, done, tx).await {
                    tracing::info!(log = %path.display(), error = %e, "following a container log");
                }
            });
            return Ok(Response::new(Box::pin(
                ReceiverStream::new(rx).map(to_chunk),
            )));
        }
        let data = logs::read(&path, &opts)
            .await
            .map_err(|e| Status::internal(format!("reading {}: {e}", path.display())))?;
        let chunks: Vec<Vec<u8>> = data.chunks(CHUNK).map(<[u8]>::to_vec).collect();
        Ok(Response::new(Box::pin(
            tokio_stream::iter(chunks).map(to_chunk),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cri_log::{format_line, Stream};
    use crate::SimRuntime;
    use std::time::Duration;

    fn service(runtime: Arc<dyn Runtime>, status: PodStatus) -> (LogService, PodKey) {
        let key = PodKey {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
        };
        let (_keep, status) = watch::channel(status);
        let target = LogTarget {
            key: key.clone(),
            status,
        };
        let map = HashMap::from([("default/web".to_string(), target)]);
        let (_tx, pods) = watch::channel(Arc::new(map));
        (LogService { pods, runtime }, key)
    }

    fn request(container: &str) -> PodLogRequest {
        PodLogRequest {
            namespace: "default".into(),
            pod: "web".into(),
            container: container.into(),
            ..Default::default()
        }
    }

    async fn text(s: &LogService, r: PodLogRequest) -> Result<String, Status> {
        let mut stream = s.pod_log(Request::new(r)).await?.into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?.data);
        }
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    fn status(running: bool) -> PodStatus {
        let mut cs = crate::status::initial("app", "busybox", "ContainerCreating");
        if running {
            cs.state = Some(crate::status::running(crate::clock::now()));
            cs.container_id = Some("sim://1".into());
        }
        PodStatus {
            container_statuses: Some(vec![cs]),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_sim_container_has_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let rt: Arc<dyn Runtime> = Arc::new(SimRuntime::new(dir.path(), Duration::ZERO));
        let (s, _) = service(rt, status(true));
        assert_eq!(text(&s, request("app")).await.unwrap(), "");
    }

    #[tokio::test]
    async fn reads_the_running_instance_and_refuses_as_kubelet_does() {
        let dir = tempfile::tempdir().unwrap();
        let rt: Arc<dyn Runtime> = Arc::new(SimRuntime::new(dir.path(), Duration::ZERO));
        let (s, key) = service(rt.clone(), status(true));
        let path = rt.log_path(&key, "app", 0);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut raw = format_line(crate::clock::now(), Stream::Stdout, false, b"a");
        raw.extend(format_line(
            crate::clock::now(),
            Stream::Stderr,
            false,
            b"b",
        ));
        std::fs::write(&path, raw).unwrap();
        assert_eq!(text(&s, request("app")).await.unwrap(), "a\nb\n");
        let mut tail = request("app");
        tail.tail_lines = Some(1);
        assert_eq!(text(&s, tail).await.unwrap(), "b\n");
        let e = text(&s, request("nope")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            e.message(),
            r#"container "nope" in pod "web" is not available"#
        );
        let mut other = request("app");
        other.pod = "gone".into();
        let e = text(&s, other).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);

        let (s, _) = service(rt, status(false));
        let e = text(&s, request("app")).await.unwrap_err();
        assert_eq!(
            e.message(),
            r#"container "app" in pod "web" is waiting to start: ContainerCreating"#
        );
    }
}
