//! One watcher: a watch on the workload's namespace held on one replica,
//! recorded item by item as sessions. When a stream ends (the replica died,
//! or this watcher hangs up on purpose every `resume_every`), the next
//! session resumes from the last revision the previous one vouched for. A
//! start the replica no longer keeps (410 Expired) starts over from a fresh
//! list's revision, as a Kubernetes reflector does.

use std::time::Duration;

use balsa_api::grpc::client::Client;
use balsa_api::StoreError;
use balsa_proto::objects::{EventType as WireEventType, WatchReply, WatchRequest};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::objects::{self, NAMESPACE};
use crate::check::truth::RELIST_CLIENT;
use crate::history::{
    Call, EventKind, Failure, OpRecord, Outcome, Record, Recorder, Reply, WatchItem, WatchSession,
};

#[derive(Debug, Clone)]
pub struct WatcherSpec {
    pub watcher: u32,
    pub replica: u64,
    pub addr: String,
    /// Hang up and resume this often (None: hold the stream).
    pub resume_every: Option<Duration>,
    pub bookmark_ms: u32,
}

enum End {
    Stopped,
    HungUp,
    Failed(String),
}

fn item(reply: &WatchReply, at: u64) -> WatchItem {
    let rev = reply.revision;
    let kind = match WireEventType::try_from(reply.r#type) {
        Ok(WireEventType::Bookmark) => return WatchItem::Bookmark { rev, at },
        Ok(WireEventType::Added) => EventKind::Added,
        Ok(WireEventType::Deleted) => EventKind::Deleted,
        _ => EventKind::Modified,
    };
    let (key, value) = match objects::parse(&reply.object) {
        Some((name, seen)) => (name, seen.value),
        None => ("?".into(), "unparsable".into()),
    };
    WatchItem::Event {
        rev,
        kind,
        key,
        value,
        at,
    }
}

async fn connect(addr: &str) -> Result<Client, StoreError> {
    tokio::time::timeout(Duration::from_secs(1), Client::connect(addr))
        .await
        .map_err(|_| StoreError::Unavailable(format!("connecting to {addr}")))?
}

/// A linearizable list through this watcher's replica, recorded as an op
/// (of client `RELIST_CLIENT + watcher`): the snapshot the next session
/// starts after.
async fn relist(spec: &WatcherSpec, rec: &Recorder) -> Option<u64> {
    let id = rec.next_id();
    let invoke = rec.now();
    let attempt = async {
        let c = connect(&spec.addr).await?;
        let page = c.list("", "configmaps", Some(NAMESPACE), 0, None).await?;
        let items = page
            .items
            .iter()
            .filter_map(|b| objects::parse(b))
            .collect();
        Ok::<_, StoreError>(Reply::Listed {
            rev: page.revision.0,
            items,
        })
    };
    let outcome = match tokio::time::timeout(Duration::from_secs(6), attempt).await {
        Ok(Ok(reply)) => Outcome::Ok(reply),
        Ok(Err(e)) => Outcome::Fail {
            failure: Failure::Other,
            message: e.to_string(),
        },
        Err(_) => Outcome::Fail {
            failure: Failure::Other,
            message: "no answer within 6 s".into(),
        },
    };
    let rev = match &outcome {
        Outcome::Ok(Reply::Listed { rev, .. }) => Some(*rev),
        _ => None,
    };
    rec.record(Record::Op(OpRecord {
        id,
        client: RELIST_CLIENT + spec.watcher,
        replica: spec.replica,
        key: String::new(),
        call: Call::List,
        invoke,
        complete: rec.now(),
        outcome,
    }));
    rev
}

pub async fn run(spec: WatcherSpec, rec: Recorder, mut stop: watch::Receiver<bool>) {
    let mut after = 0u64;
    let mut resumed = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let request = WatchRequest {
            group: String::new(),
            resource: "configmaps".into(),
            namespace: NAMESPACE.into(),
            name: String::new(),
            after: Some(after),
            bookmark_interval_ms: spec.bookmark_ms,
        };
        let opened = async {
            let client = connect(&spec.addr).await?;
            let stream = client.watch(request).await?;
            Ok::<_, StoreError>((client, stream))
        };
        let (client, mut stream) = match tokio::time::timeout(Duration::from_secs(3), opened).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(StoreError::Expired { .. })) => {
                // Start over from a list, as a reflector would.
                if let Some(rev) = relist(&spec, &rec).await {
                    after = rev;
                    resumed = false;
                }
                continue;
            }
            _ => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        let mut session = WatchSession {
            id: rec.next_id(),
            watcher: spec.watcher,
            replica: spec.replica,
            after,
            resumed,
            start: rec.now(),
            end: 0,
            items: Vec::new(),
            ended: String::new(),
        };
        let hang_up_at = spec.resume_every.map(|d| Instant::now() + d);
        let end = loop {
            let hang_up = async {
                match hang_up_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                next = stream.next() => match next {
                    Some(Ok(reply)) => session.items.push(item(&reply, rec.now())),
                    Some(Err(e)) => break End::Failed(e.to_string()),
                    None => break End::Failed("the stream ended".into()),
                },
                _ = hang_up => break End::HungUp,
                _ = stop.changed() => break End::Stopped,
            }
        };
        drop(stream);
        drop(client);
        session.end = rec.now();
        session.ended = match &end {
            End::Stopped => "stopped".into(),
            End::HungUp => "hung up to resume".into(),
            End::Failed(e) => e.clone(),
        };
        after = session.covered_to();
        resumed = true;
        rec.record(Record::Watch(session));
        match end {
            End::Stopped => return,
            End::HungUp => {}
            End::Failed(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}
