//! Server-side printing: objects as a `meta.k8s.io/v1` Table, which is what
//! `kubectl get` renders. Each row carries the object's metadata (or the whole
//! object with `includeObject=Object`) so `-o name`, `-L` and `--show-labels`
//! work.

use serde_json::{json, Value};

use crate::registry::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Include {
    None,
    #[default]
    Metadata,
    Object,
}

impl Include {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

fn row(kind: &Kind, obj: &Value, include: Include) -> Value {
    let cells: Vec<Value> = kind.columns.iter().map(|c| (c.cell)(obj)).collect();
    let object = match include {
        Include::None => Value::Null,
        Include::Object => obj.clone(),
        Include::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        }),
    };
    json!({"cells": cells, "object": object})
}

/// A Table of `items`; `metadata` is the list's (resourceVersion, continue).
pub fn table(kind: &Kind, items: &[Value], metadata: Value, include: Include) -> Value {
    let columns: Vec<Value> = kind
        .columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": if c.name == "Name" { "name" } else { "" },
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = items.iter().map(|o| row(kind, o, include)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::kinds::by_kind;

    #[test]
    fn pods_print_like_kubectl() {
        let pods = by_kind("", "Pod").unwrap();
        let pod = json!({"metadata":{"name":"web-1","labels":{"app":"web"}},
            "spec":{"containers":[{"name":"c"}],"nodeName":"n1"},
            "status":{"phase":"Running","podIP":"10.0.0.5",
                "containerStatuses":[{"ready":true,"restartCount":0}]}});
        let t = table(
            pods,
            &[pod],
            json!({"resourceVersion":"9"}),
            Include::Metadata,
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(&names[..5], &["Name", "Ready", "Status", "Restarts", "Age"]);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web-1");
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[5], "10.0.0.5");
        assert_eq!(cells[6], "n1");
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["app"], "web");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
    }
}
