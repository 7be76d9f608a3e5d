//! What a pod event means to each node: the one rule the node streams share
//! (the per-master hub dispatching live events, and a stream's catch-up from
//! the store's window).
//!
//! A pod is announced to a node only while its `spec.nodeName` names it. An
//! event where a pod starts naming a node is an ADDED for that node; one
//! where it keeps naming it, a MODIFIED; one where it stops naming it (bound
//! elsewhere, unbound, or deleted), a DELETED carrying the pod's state at
//! that event. The previous object of the event says what the node held, so
//! no per-node state is needed.

use balsa_proto::node::{ChangeType, PodChange};
use serde::Deserialize;

use crate::store::{Event, EventType, KeyPrefix};

/// Every pod, in every namespace.
pub fn pods() -> KeyPrefix {
    KeyPrefix::resource("", "pods")
}

#[derive(Deserialize)]
struct PodNode {
    spec: Option<SpecNode>,
}

#[derive(Deserialize)]
struct SpecNode {
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
}

/// Finds `"nodeName"`: a pod whose JSON lacks it is bound to no node, which
/// spares parsing the pods not yet scheduled.
fn node_name_key() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    FINDER.get_or_init(|| memchr::memmem::Finder::new(b"\"nodeName\""))
}

/// The node a pod's JSON names, if any (an empty name is none).
pub fn node_of(json: &[u8]) -> Option<String> {
    node_name_key().find(json)?;
    serde_json::from_slice::<PodNode>(json)
        .ok()?
        .spec?
        .node_name
        .filter(|n| !n.is_empty())
}

/// The event as each node concerned sees it, at most two: the node the pod
/// stopped naming (DELETED) and the node it names now (ADDED or MODIFIED),
/// in that order.
pub fn changes(e: &Event) -> Vec<(String, PodChange)> {
    let now = match e.kind {
        EventType::Deleted => None,
        EventType::Added | EventType::Modified => node_of(&e.object.data),
    };
    let before = match e.kind {
        EventType::Added => None,
        EventType::Modified => e.prev.as_ref().and_then(|p| node_of(&p.data)),
        EventType::Deleted => node_of(&e.object.data),
    };
    let change = |ty: ChangeType| PodChange {
        r#type: ty as i32,
        revision: e.revision.0,
        pod: e.object.data.clone(),
    };
    let mut out = Vec::new();
    if let Some(b) = before.as_ref().filter(|b| now.as_ref() != Some(*b)) {
        out.push((b.clone(), change(ChangeType::Deleted)));
    }
    if let Some(n) = now {
        let ty = if before.as_ref() == Some(&n) {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        out.push((n, change(ty)));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{Object, ResourceKey, Revision};

    fn pod(node: Option<&str>) -> Arc<Object> {
        let spec = match node {
            Some(n) => serde_json::json!({"nodeName": n}),
            None => serde_json::json!({}),
        };
        let data = serde_json::json!({"metadata": {"name": "p"}, "spec": spec});
        Arc::new(Object {
            key: ResourceKey::new("", "pods", Some("default"), "p"),
            data: serde_json::to_vec(&data).expect("json").into(),
            revision: Revision(5),
            created: Revision(1),
        })
    }

    fn event(kind: EventType, prev: Option<&str>, now: Option<&str>) -> Event {
        Event {
            revision: Revision(5),
            kind,
            object: pod(now),
            prev: (kind == EventType::Modified).then(|| pod(prev)),
        }
    }

    fn seen(e: Event) -> Vec<(String, ChangeType)> {
        changes(&e)
            .into_iter()
            .map(|(n, c)| {
                assert_eq!(c.revision, 5);
                (n, ChangeType::try_from(c.r#type).expect("a change type"))
            })
            .collect()
    }

    fn one(node: &str, ty: ChangeType) -> Vec<(String, ChangeType)> {
        vec![(node.to_string(), ty)]
    }

    #[test]
    fn a_pod_is_a_nodes_only_while_it_names_it() {
        use EventType::*;
        assert_eq!(
            seen(event(Added, None, Some("n1"))),
            one("n1", ChangeType::Added)
        );
        assert!(seen(event(Added, None, None)).is_empty());
        // Bound now: the node hears of it for the first time.
        assert_eq!(
            seen(event(Modified, None, Some("n1"))),
            one("n1", ChangeType::Added)
        );
        assert_eq!(
            seen(event(Modified, Some("n1"), Some("n1"))),
            one("n1", ChangeType::Modified)
        );
        assert!(seen(event(Modified, Some("n2"), Some("n2")))
            .iter()
            .all(|(n, _)| n == "n2"));
        // Moved (the API refuses it, but the stream must hold): gone from
        // the old node first, then new to the other.
        assert_eq!(
            seen(event(Modified, Some("n1"), Some("n2"))),
            vec![
                ("n1".to_string(), ChangeType::Deleted),
                ("n2".to_string(), ChangeType::Added)
            ]
        );
        assert_eq!(
            seen(event(Modified, Some("n1"), None)),
            one("n1", ChangeType::Deleted)
        );
        assert_eq!(
            seen(event(Deleted, None, Some("n1"))),
            one("n1", ChangeType::Deleted)
        );
        assert!(seen(event(Deleted, None, None)).is_empty());
        assert!(seen(event(Modified, None, None)).is_empty());
    }

    #[test]
    fn a_node_is_named_exactly() {
        assert_eq!(node_of(&pod(Some("n1")).data).as_deref(), Some("n1"));
        assert_eq!(node_of(&pod(Some("")).data), None);
        assert_eq!(node_of(&pod(None).data), None);
        // The key must be the spec's: a label or an annotation with that
        // name does not bind the pod.
        let labelled = serde_json::json!({"metadata": {"labels": {"nodeName": "n1"}}, "spec": {}});
        assert_eq!(node_of(&serde_json::to_vec(&labelled).expect("json")), None);
        assert_eq!(node_of(b"not json \"nodeName\""), None);
    }
}
