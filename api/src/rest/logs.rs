//! `GET /api/v1/namespaces/NS/pods/NAME/log`: kube-apiserver's checks, then
//! the agent of the pod's node streams the text (kubelet's `/containerLogs`).
//!
//! ```text
//!  kubectl logs ─► any master: options, pod, container, node ─► Node's
//!    InternalIP + daemonEndpoints.kubeletEndpoint.Port ─NodeLogs.PodLog─► agent
//!    ◄──────────────── text/plain, chunked while following ◄────────────────┘
//! ```
//!
//! The agent is reached directly, not through the master holding its Attach
//! stream, so every master serves logs for every node (as kube-apiserver
//! dials the kubelet).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use balsa_proto::balsa::node::v1::node_logs_client::NodeLogsClient;
use balsa_proto::balsa::node::v1::PodLogRequest;
use futures::StreamExt;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::registry::kinds::by_resource;
use crate::registry::{ApiError, Cause, Reason, Registry, Subject};
use crate::store::ReadMode;

/// How long a master waits to connect to an agent.
const CONNECT: Duration = Duration::from_secs(5);

/// `PodLogOptions` as they come in the query.
#[derive(Debug, Default, PartialEq)]
struct Options {
    container: Option<String>,
    follow: bool,
    previous: bool,
    timestamps: bool,
    tail_lines: Option<i64>,
    since_seconds: Option<i64>,
    since_time: Option<Timestamp>,
    limit_bytes: Option<i64>,
}

fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("" | "false" | "0" | "False") => Ok(false),
        Some("true" | "1" | "True") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}: strconv.ParseBool: parsing {other:?}: invalid syntax"
        ))),
    }
}

fn int(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    q.get(name)
        .map(|v| {
            v.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "{name}: strconv.ParseInt: parsing {v:?}: invalid syntax"
                ))
            })
        })
        .transpose()
}

/// Parse and validate (kube's `ValidatePodLogOptions`: 422 Invalid).
fn options(name: &str, q: &HashMap<String, String>) -> Result<Options, ApiError> {
    let since_time = q
        .get("sinceTime")
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<Timestamp>()
                .map_err(|e| ApiError::bad_request(format!("sinceTime: parsing time {t:?}: {e}")))
        })
        .transpose()?;
    let o = Options {
        container: q.get("container").filter(|c| !c.is_empty()).cloned(),
        follow: flag(q, "follow")?,
        previous: flag(q, "previous")?,
        timestamps: flag(q, "timestamps")?,
        tail_lines: int(q, "tailLines")?,
        since_seconds: int(q, "sinceSeconds")?,
        since_time,
        limit_bytes: int(q, "limitBytes")?,
    };
    let mut causes = Vec::new();
    if let Some(n) = o.tail_lines.filter(|n| *n < 0) {
        causes.push(Cause::invalid(
            "tailLines",
            n,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(n) = o.limit_bytes.filter(|n| *n < 1) {
        causes.push(Cause::invalid("limitBytes", n, "must be greater than 0"));
    }
    if o.since_seconds.is_some() && o.since_time.is_some() {
        causes.push(Cause::forbidden(
            "",
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        ));
    }
    if let Some(n) = o.since_seconds.filter(|n| *n < 1) {
        causes.push(Cause::invalid("sinceSeconds", n, "must be greater than 0"));
    }
    if !causes.is_empty() {
        let subject = Subject {
            kind: "PodLogOptions".into(),
            name: name.into(),
            ..Default::default()
        };
        return Err(ApiError::invalid(subject, causes));
    }
    Ok(o)
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// kube-apiserver's `validateContainer`: the only container when none is
/// named; a named one must be one of the pod's (init containers included).
fn container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let containers = names(&pod["spec"]["containers"]);
    let init = names(&pod["spec"]["initContainers"]);
    match asked {
        None => match containers.as_slice() {
            [only] => Ok(only.to_string()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            _ => {
                let mut msg = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                );
                if !init.is_empty() {
                    msg.push_str(&format!(
                        " or one of the init containers: [{}]",
                        init.join(" ")
                    ));
                }
                Err(ApiError::bad_request(msg))
            }
        },
        Some(c) if containers.contains(&c) || init.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
    }
}

/// The agent's log endpoint from its Node, as kube-apiserver finds the
/// kubelet: the InternalIP (else the first address) and the kubelet port.
fn endpoint(node: &Value) -> Result<String, ApiError> {
    let name = node["metadata"]["name"].as_str().unwrap_or_default();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0 && *p <= u64::from(u16::MAX));
    let addresses = node["status"]["addresses"].as_array();
    let ip = addresses
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addresses.and_then(|a| a.first()))
        .and_then(|a| a["address"].as_str());
    match (ip, port) {
        (Some(ip), Some(port)) => {
            let host = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.to_string()
            };
            Ok(format!("http://{host}:{port}"))
        }
        _ => Err(ApiError::new(
            Reason::ServiceUnavailable,
            format!("node {name:?} does not publish a kubelet endpoint (status.addresses and status.daemonEndpoints.kubeletEndpoint.Port)"),
        )),
    }
}

/// An agent's refusal, as kube-apiserver passes on kubelet's status and text.
fn from_agent(s: tonic::Status) -> ApiError {
    let reason = match s.code() {
        tonic::Code::InvalidArgument => Reason::BadRequest,
        tonic::Code::NotFound => Reason::NotFound,
        tonic::Code::Unavailable => Reason::ServiceUnavailable,
        _ => Reason::InternalError,
    };
    ApiError::new(reason, s.message().to_string())
}

pub(super) async fn serve(
    reg: &Registry,
    ns: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let opts = options(name, q)?;
    let pods = by_resource("", "pods").ok_or_else(|| ApiError::internal("no pods kind"))?;
    let nodes = by_resource("", "nodes").ok_or_else(|| ApiError::internal("no nodes kind"))?;
    let pod = reg
        .get(pods, Some(ns), name, ReadMode::Linearizable)
        .await?;
    let container = container(&pod, name, opts.container.as_deref())?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let node = reg.get(nodes, None, node_name, ReadMode::Local).await?;
    let address = endpoint(&node)?;
    let since_time = match (opts.since_time, opts.since_seconds) {
        (Some(t), _) => Some(t),
        (None, Some(secs)) => crate::clock::now()
            .checked_sub(SignedDuration::from_secs(secs))
            .ok(),
        _ => None,
    };
    let request = PodLogRequest {
        namespace: ns.to_string(),
        pod: name.to_string(),
        uid: pod["metadata"]["uid"].as_str().unwrap_or_default().into(),
        container,
        follow: opts.follow,
        previous: opts.previous,
        tail_lines: opts.tail_lines.map(|n| n as u64),
        timestamps: opts.timestamps,
        since_time: since_time.map(|t| t.to_string()),
        limit_bytes: opts.limit_bytes.map(|n| n as u64),
    };
    let channel = tonic::transport::Endpoint::from_shared(address.clone())
        .map_err(|e| ApiError::internal(format!("node address {address}: {e}")))?
        .connect_timeout(CONNECT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "connecting to node {node_name:?} at {address}: {e}"
            ))
        })?;
    let chunks = NodeLogsClient::new(channel)
        .pod_log(request)
        .await
        .map_err(from_agent)?
        .into_inner();
    let body = chunks.map(|c| c.map(|c| c.data));
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_are_validated_as_kube_does() {
        let o = options("web", &q(&[("follow", "true"), ("tailLines", "3")])).unwrap();
        assert!(o.follow && o.tail_lines == Some(3));
        let e = options("web", &q(&[("tailLines", "-1")])).unwrap_err();
        assert_eq!(e.code(), 422);
        assert_eq!(
            e.message,
            "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        let e = options(
            "web",
            &q(&[("sinceSeconds", "5"), ("sinceTime", "2024-01-01T00:00:00Z")]),
        )
        .unwrap_err();
        assert_eq!(e.code(), 422);
        assert_eq!(
            options("web", &q(&[("tailLines", "x")]))
                .unwrap_err()
                .code(),
            400
        );
    }

    #[test]
    fn containers_are_chosen_as_kube_apiserver_does() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(
            container(&pod, "web", None).unwrap_err().message,
            "a container name must be specified for pod web, choose one of: [a b]"
        );
        assert_eq!(container(&pod, "web", Some("b")).unwrap(), "b");
        assert_eq!(
            container(&pod, "web", Some("c")).unwrap_err().message,
            "container c is not valid for pod web"
        );
        let pod = json!({"spec": {"initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(
            container(&pod, "web", None).unwrap_err().message,
            "a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(container(&pod, "web", Some("i")).unwrap(), "i");
        let pod = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(container(&pod, "web", None).unwrap(), "a");
    }

    #[test]
    fn the_endpoint_is_the_internal_ip_and_kubelet_port() {
        let node = json!({"metadata": {"name": "n"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "10.0.0.7"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(endpoint(&node).unwrap(), "http://10.0.0.7:10250");
        let node = json!({"metadata": {"name": "n"}, "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}]}});
        assert_eq!(endpoint(&node).unwrap_err().code(), 503);
    }
}
