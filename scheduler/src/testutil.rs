//! Builders for hand-made nodes and pods in unit tests.

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

use crate::snapshot::Snapshot;

pub struct NodeB(Value);

pub fn node(name: &str) -> NodeB {
    NodeB(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))
}

impl NodeB {
    pub fn alloc(mut self, name: &str, q: &str) -> Self {
        self.0["status"]["allocatable"][name] = json!(q);
        self
    }
    pub fn cpu(self, q: &str) -> Self {
        self.alloc("cpu", q)
    }
    pub fn mem(self, q: &str) -> Self {
        self.alloc("memory", q)
    }
    pub fn pods(self, n: i64) -> Self {
        self.alloc("pods", &n.to_string())
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0["metadata"]["labels"][k] = json!(v);
        self
    }
    pub fn taint(mut self, k: &str, v: &str, effect: &str) -> Self {
        let t = json!({"key": k, "value": v, "effect": effect});
        match self.0["spec"]["taints"].as_array_mut() {
            Some(a) => a.push(t),
            None => self.0["spec"]["taints"] = json!([t]),
        }
        self
    }
    pub fn unschedulable(mut self) -> Self {
        self.0["spec"]["unschedulable"] = json!(true);
        self
    }
    pub fn ready(mut self, status: &str) -> Self {
        self.0["status"]["conditions"] = json!([{"type": "Ready", "status": status}]);
        self
    }
    pub fn image(mut self, name: &str, size: i64) -> Self {
        let i = json!({"names": [name], "sizeBytes": size});
        match self.0["status"]["images"].as_array_mut() {
            Some(a) => a.push(i),
            None => self.0["status"]["images"] = json!([i]),
        }
        self
    }
    pub fn build(self) -> Node {
        serde_json::from_value(self.0).expect("test node")
    }
}

pub struct PodB(Value);

pub fn pod(name: &str) -> PodB {
    PodB(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {}},
        "spec": {"containers": [{"name": "c", "image": "app:1", "resources": {"requests": {}}}]}
    }))
}

impl PodB {
    pub fn req(mut self, name: &str, q: &str) -> Self {
        self.0["spec"]["containers"][0]["resources"]["requests"][name] = json!(q);
        self
    }
    pub fn cpu(self, q: &str) -> Self {
        self.req("cpu", q)
    }
    pub fn mem(self, q: &str) -> Self {
        self.req("memory", q)
    }
    pub fn ns(mut self, ns: &str) -> Self {
        self.0["metadata"]["namespace"] = json!(ns);
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0["metadata"]["labels"][k] = json!(v);
        self
    }
    pub fn priority(mut self, p: i32) -> Self {
        self.0["spec"]["priority"] = json!(p);
        self
    }
    pub fn on(mut self, node: &str) -> Self {
        self.0["spec"]["nodeName"] = json!(node);
        self
    }
    pub fn image(mut self, image: &str) -> Self {
        self.0["spec"]["containers"][0]["image"] = json!(image);
        self
    }
    pub fn host_port(mut self, port: i32) -> Self {
        self.0["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": port, "hostPort": port}]);
        self
    }
    pub fn tolerate(mut self, key: &str, op: &str, value: &str, effect: &str) -> Self {
        let mut t = json!({"key": key, "operator": op});
        if !value.is_empty() {
            t["value"] = json!(value);
        }
        if !effect.is_empty() {
            t["effect"] = json!(effect);
        }
        match self.0["spec"]["tolerations"].as_array_mut() {
            Some(a) => a.push(t),
            None => self.0["spec"]["tolerations"] = json!([t]),
        }
        self
    }
    pub fn node_selector(mut self, k: &str, v: &str) -> Self {
        self.0["spec"]["nodeSelector"][k] = json!(v);
        self
    }
    pub fn spec(mut self, field: &str, v: Value) -> Self {
        self.0["spec"][field] = v;
        self
    }
    pub fn meta(mut self, field: &str, v: Value) -> Self {
        self.0["metadata"][field] = v;
        self
    }
    pub fn build(self) -> Pod {
        serde_json::from_value(self.0).expect("test pod")
    }
}

pub fn snapshot(nodes: Vec<Node>, pods: Vec<Pod>) -> Snapshot {
    Snapshot::build(nodes, pods).expect("test snapshot")
}
