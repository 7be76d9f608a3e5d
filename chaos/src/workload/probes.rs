//! Liveness probes: per replica, a create of a fresh object every `every`,
//! each in its own task with its own timeout, so requests stuck on a lost
//! leader do not stop new ones from showing when the cluster commits again.
//! Their objects live outside the workload's namespace and are not checked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use balsa_api::grpc::client::Client;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::history::{ProbeRecord, Record, Recorder};

pub const NAMESPACE: &str = "chaos-probe";

pub async fn run(
    replica: u64,
    addr: String,
    every: Duration,
    timeout: Duration,
    rec: Recorder,
    mut stop: watch::Receiver<bool>,
) {
    let seq = Arc::new(AtomicU64::new(0));
    let mut client: Option<Client> = None;
    let mut inflight = JoinSet::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        while inflight.try_join_next().is_some() {}
        if inflight.len() >= 200 {
            continue;
        }
        if client.is_none() {
            let c = tokio::time::timeout(Duration::from_millis(300), Client::connect(&addr)).await;
            client = c.ok().and_then(Result::ok);
        }
        let Some(c) = client.clone() else { continue };
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let rec = rec.clone();
        let invoke = rec.now();
        inflight.spawn(async move {
            let v = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("p{replica}-{n}"), "namespace": NAMESPACE},
            });
            let ok = matches!(
                tokio::time::timeout(timeout, c.create(v.to_string().into())).await,
                Ok(Ok(_))
            );
            rec.record(Record::Probe(ProbeRecord {
                replica,
                invoke,
                complete: rec.now(),
                ok,
            }));
        });
    }
    inflight.abort_all();
}
