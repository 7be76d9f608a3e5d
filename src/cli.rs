//! The client verbs: `apply`, `get`, `delete`, `watch`, `cluster status`. They
//! talk to the Objects and Cluster services of any master.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use balsa_api::grpc::client::Client;
use balsa_api::registry::{columns, kinds, print};
use balsa_api::resource::{ClientObject, ResourceType};
use balsa_api::StoreError;
use balsa_proto::objects::{EventType, WatchRequest};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

use crate::cluster_file::ClusterFile;

/// Connects to `--server`, or to the first master of the cluster file that answers.
pub async fn connect(server: Option<&str>, dir: &Path) -> anyhow::Result<Client> {
    if let Some(addr) = server {
        return Ok(Client::connect(addr).await?);
    }
    let file = ClusterFile::read(dir)?;
    let mut errors = Vec::new();
    for addr in file.api_addrs() {
        match Client::connect(&addr).await {
            Ok(c) => return Ok(c),
            Err(e) => errors.push(e.to_string()),
        }
    }
    bail!(
        "no master of {} answered: {}",
        ClusterFile::path(dir).display(),
        errors.join("; ")
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Json,
    Yaml,
    Name,
    Wide,
}

/// Reads YAML or JSON documents (`-` for stdin).
pub fn read_documents(file: &str) -> anyhow::Result<Vec<Value>> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    parse_documents(&text).with_context(|| format!("parsing {file}"))
}

pub fn parse_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let trimmed = text.trim_start();
    let docs: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut out = Vec::new();
        for doc in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            out.push(doc?);
        }
        out
    } else {
        serde_saphyr::from_multiple(text)?
    };
    // A `kind: List` expands to its items, as kubectl does.
    let mut out = Vec::new();
    for doc in docs {
        match doc {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                out.extend(
                    m.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            Value::Array(items) => out.extend(items),
            other => out.push(other),
        }
    }
    Ok(out)
}

fn display_name(rtype: &ResourceType, value: &Value) -> String {
    let kind = rtype.kind.to_ascii_lowercase();
    let kind = if rtype.group.is_empty() {
        kind
    } else {
        format!("{kind}.{}", rtype.group)
    };
    format!(
        "{kind}/{}",
        value["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Creates each object, or replaces it when it exists. Prints what happened.
pub async fn apply(client: &Client, docs: Vec<Value>) -> anyhow::Result<()> {
    for doc in docs {
        let bytes = Bytes::from(serde_json::to_vec(&doc)?);
        let parsed = ClientObject::parse(&bytes)?;
        let rtype = parsed.rtype.clone();
        match client.create(bytes.clone()).await {
            Ok((obj, _)) => {
                let v: Value = serde_json::from_slice(&obj)?;
                println!("{} created", display_name(&rtype, &v));
            }
            Err(StoreError::AlreadyExists { .. }) => {
                let outcome = replace(client, &rtype, doc).await?;
                println!("{outcome}");
            }
            Err(e) => bail!("{}: {e}", display_name(&rtype, &doc)),
        }
    }
    Ok(())
}

/// Replaces an existing object with `doc`, keeping its identity (uid,
/// creationTimestamp) and retrying on a concurrent change.
async fn replace(client: &Client, rtype: &ResourceType, doc: Value) -> anyhow::Result<String> {
    let ns = doc["metadata"]["namespace"].as_str();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let key = rtype.key(ns, name);
    for _ in 0..5 {
        let (current, rev) = client.get(&key, false).await?;
        let current: Value = serde_json::from_slice(&current)?;
        let mut next = doc.clone();
        for field in ["uid", "creationTimestamp", "resourceVersion", "namespace"] {
            if let Some(v) = current["metadata"].get(field) {
                next["metadata"][field] = v.clone();
            }
        }
        match client.update(Bytes::from(serde_json::to_vec(&next)?)).await {
            Ok((_, new_rev)) if new_rev == rev => {
                return Ok(format!("{} unchanged", display_name(rtype, &doc)))
            }
            Ok(_) => return Ok(format!("{} configured", display_name(rtype, &doc))),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => bail!("{}: {e}", display_name(rtype, &doc)),
        }
    }
    bail!(
        "{}: kept changing under us; try again",
        display_name(rtype, &doc)
    )
}

fn print_objects(
    rtype: &ResourceType,
    items: &[Value],
    output: Option<Output>,
    all_namespaces: bool,
) -> anyhow::Result<()> {
    match output {
        Some(Output::Json) | Some(Output::Yaml) => {
            let doc = if items.len() == 1 {
                items[0].clone()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
            };
            if output == Some(Output::Json) {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", serde_saphyr::to_string(&doc)?);
            }
        }
        Some(Output::Name) => {
            for v in items {
                println!("{}", display_name(rtype, v));
            }
        }
        None | Some(Output::Wide) => {
            if items.is_empty() {
                eprintln!("No resources found");
                return Ok(());
            }
            // The kind's printer columns, as kubectl shows them.
            let columns = kinds::by_resource(&rtype.group, &rtype.plural)
                .map_or(columns::DEFAULT, |k| k.columns);
            let show_ns = all_namespaces && rtype.namespaced;
            print!(
                "{}",
                print::table(columns, items, output == Some(Output::Wide), show_ns)
            );
        }
    }
    Ok(())
}

pub async fn get(
    client: &Client,
    resource: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    all_namespaces: bool,
    output: Option<Output>,
) -> anyhow::Result<()> {
    let rtype = ResourceType::by_name(resource)?;
    let items = match name {
        Some(name) => {
            let (bytes, _) = client.get(&rtype.key(namespace, name), false).await?;
            vec![serde_json::from_slice::<Value>(&bytes)?]
        }
        None => {
            let ns = if all_namespaces || !rtype.namespaced {
                None
            } else {
                Some(namespace.unwrap_or("default"))
            };
            let mut items = Vec::new();
            let mut token = None;
            loop {
                let page = client
                    .list(&rtype.group, &rtype.plural, ns, 500, token)
                    .await?;
                for b in &page.items {
                    items.push(serde_json::from_slice::<Value>(b)?);
                }
                match page.continue_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            items
        }
    };
    if name.is_some() && output.is_none() {
        return print_objects(&rtype, &items, None, false);
    }
    print_objects(&rtype, &items, output, all_namespaces)
}

pub async fn delete(
    client: &Client,
    resource: &str,
    names: &[String],
    namespace: Option<&str>,
) -> anyhow::Result<()> {
    let rtype = ResourceType::by_name(resource)?;
    let mut failed = false;
    for name in names {
        match client.delete(&rtype.key(namespace, name), None, None).await {
            Ok((bytes, _)) => {
                let v: Value = serde_json::from_slice(&bytes)?;
                println!("{} deleted", display_name(&rtype, &v));
            }
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("some objects were not deleted");
    }
    Ok(())
}

pub async fn watch(
    client: &Client,
    resource: &str,
    namespace: Option<&str>,
    all_namespaces: bool,
    after: Option<u64>,
    output: Option<Output>,
) -> anyhow::Result<()> {
    let rtype = ResourceType::by_name(resource)?;
    let ns = if all_namespaces || !rtype.namespaced {
        None
    } else {
        Some(namespace.unwrap_or("default"))
    };
    let req = WatchRequest {
        group: rtype.group.clone(),
        resource: rtype.plural.clone(),
        namespace: ns.unwrap_or_default().into(),
        name: String::new(),
        after,
        bookmark_interval_ms: 0,
    };
    let mut stream = Box::pin(client.watch(req).await?);
    while let Some(event) = stream.next().await {
        let event = event?;
        let kind = EventType::try_from(event.r#type).unwrap_or(EventType::Unspecified);
        let value: Value = serde_json::from_slice(&event.object).unwrap_or(Value::Null);
        match output {
            Some(Output::Json) => println!(
                "{}",
                serde_json::json!({"type": kind.as_str_name(), "revision": event.revision, "object": value})
            ),
            _ => println!(
                "{:<9} {:<10} {}/{}",
                kind.as_str_name(),
                event.revision,
                value["metadata"]["namespace"].as_str().unwrap_or("-"),
                value["metadata"]["name"].as_str().unwrap_or_default()
            ),
        }
    }
    bail!("the watch ended")
}

pub async fn cluster_status(client: &Client, output: Option<Output>) -> anyhow::Result<()> {
    let status = client.cluster_status().await?;
    if output == Some(Output::Json) {
        let members: Vec<Value> = status
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id, "role": m.role, "term": m.term, "leader": m.leader,
                    "commitIndex": m.commit_index, "appliedIndex": m.applied_index,
                    "lastLogIndex": m.last_log_index, "voter": m.voter,
                    "peer": m.peer_addr, "api": m.api_addr, "error": m.error,
                    "clusterId": m.cluster_id, "clusterMismatch": m.cluster_mismatch,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"leader": status.leader, "members": members})
            )?
        );
        return Ok(());
    }
    println!(
        "{:<4} {:<12} {:<6} {:<7} {:<10} {:<10} {:<10} {:<22} {:<22} ERROR",
        "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST-LOG", "API", "PEER"
    );
    for m in &status.members {
        println!(
            "{:<4} {:<12} {:<6} {:<7} {:<10} {:<10} {:<10} {:<22} {:<22} {}",
            m.id,
            m.role,
            m.term,
            m.leader,
            m.commit_index,
            m.applied_index,
            m.last_log_index,
            m.api_addr,
            m.peer_addr,
            if m.error.is_empty() {
                &m.cluster_mismatch
            } else {
                &m.error
            }
        );
    }
    // Every member should name the same cluster; say so when one does not.
    let mut ids: Vec<&str> = status
        .members
        .iter()
        .map(|m| m.cluster_id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    match ids[..] {
        [one] => println!("cluster {one}"),
        [] => {}
        _ => println!("members disagree on the cluster id: {}", ids.join(", ")),
    }
    Ok(())
}
