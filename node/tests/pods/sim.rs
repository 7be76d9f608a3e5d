use std::sync::Arc;
use std::time::{Duration, Instant};

use balsa_node::events::Emitter;
use balsa_node::pods::HOLD;
use balsa_node::{PodWorker, SimRuntime, StaticObjects};
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_simulated_pods_become_running_and_ready() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = Arc::new(SimRuntime::new(dir.path(), Duration::from_millis(20)));
    let (emitter, mut events) = Emitter::channel(1024);
    // The agent loop would drain events; here they are discarded.
    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
    let worker = PodWorker::new(
        runtime.clone(),
        Arc::new(StaticObjects::new()),
        emitter,
        fast_config(),
    );
    let began = Instant::now();
    let handles: Vec<_> = (0..1000)
        .map(|i| {
            worker.spawn(pod(json!({
                "metadata": {"name": format!("p{i}"), "uid": format!("sim-{i}")},
                "spec": {"containers": [{"name": "c", "image": "x", "command": ["run"],
                    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}]}
            })))
        })
        .collect();
    for h in &handles {
        wait_for(h, Duration::from_secs(30), "Running and Ready", |s| {
            phase(s) == "Running" && condition(s, "Ready") == "True"
        })
        .await;
    }
    let took = began.elapsed();
    // A figure, not a check: speed is the benches' to judge.
    eprintln!("1000 simulated pods Running and Ready in {took:?}");
    assert_eq!(runtime.running(), 1000);
    // A simulated exit is seen as in a real runtime (restartPolicy Always: restart).
    assert_eq!(runtime.exit("sim-7", "c", 1), 1);
    wait_for(&handles[7], Duration::from_secs(10), "restart", |s| {
        container(s, "c").restart_count == 1
    })
    .await;
    for h in &handles {
        h.terminate(Some(Duration::from_secs(1)));
    }
    for h in handles {
        let st = h.finished().await;
        assert_eq!(
            phase(&st),
            "Failed",
            "a deleted always-restarting pod ends Failed (exit 143)"
        );
    }
    assert_eq!(runtime.running(), 0);
    drain.abort();
}

#[tokio::test]
async fn the_pod_manager_follows_the_desired_set() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = Arc::new(SimRuntime::new(dir.path(), Duration::ZERO));
    let (emitter, _events) = Emitter::channel(1024);
    let worker = PodWorker::new(
        runtime.clone(),
        Arc::new(StaticObjects::new()),
        emitter,
        fast_config(),
    );
    let mut manager = balsa_node::PodManager::new(worker);
    let mk = |name: &str| {
        Arc::new(pod(
            json!({"metadata": {"name": name, "uid": format!("u-{name}")},
                   "spec": {"containers": [{"name": "c", "image": "x", "command": ["run"]}]}}),
        ))
    };
    let (a, b, c) = (mk("a"), mk("b"), mk("c"));
    manager.sync(&[a.clone(), b.clone(), c.clone()]);
    manager.sync(&[a.clone(), b.clone(), c.clone()]);
    assert_eq!(manager.len(), 3);
    for uid in ["u-a", "u-b", "u-c"] {
        wait_phase(&manager, uid, "Running").await;
    }
    // b is being deleted gracefully, c was force-deleted (gone from the list).
    let mut deleting = (*b).clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(balsa_node::clock::now()),
    );
    deleting.metadata.deletion_grace_period_seconds = Some(1);
    manager.sync(&[a.clone(), Arc::new(deleting)]);
    wait_phase(&manager, "u-b", "Failed").await;
    manager.sync(std::slice::from_ref(&a));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut reaped = Vec::new();
    while reaped.len() < 2 && std::time::Instant::now() < deadline {
        reaped.extend(manager.reap().await.into_iter().map(|(k, _)| k.name));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reaped.sort();
    assert_eq!(reaped, vec!["b".to_string(), "c".to_string()]);
    assert_eq!(manager.len(), 1);
    assert_eq!(runtime.running(), 1);
    manager.shutdown(Some(Duration::from_secs(1))).await;
    assert_eq!(runtime.running(), 0);
}

/// Waits (10 s at most) until the pod's worker reports phase `want`.
async fn wait_phase(manager: &balsa_node::PodManager, uid: &str, want: &str) {
    let mut rx = manager.watch(uid).expect("tracked");
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| phase(s) == want))
        .await
        .unwrap_or_else(|_| panic!("{uid} not {want} within 10 s"))
        .expect("worker alive");
}

fn sim_manager(dir: &std::path::Path, start_delay: Duration) -> balsa_node::PodManager {
    let runtime = Arc::new(SimRuntime::new(dir, start_delay));
    let (emitter, _events) = Emitter::channel(1024);
    balsa_node::PodManager::new(PodWorker::new(
        runtime,
        Arc::new(StaticObjects::new()),
        emitter,
        fast_config(),
    ))
}

fn sim_pod(name: &str) -> Arc<k8s_openapi::api::core::v1::Pod> {
    Arc::new(pod(
        json!({"metadata": {"name": name, "uid": format!("u-{name}")},
               "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    ))
}

/// The agent writes what `changed_statuses` reports: a pod that starts at
/// once goes out Running in one write, not Pending then Running.
#[tokio::test]
async fn a_pod_that_starts_at_once_is_first_reported_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut manager = sim_manager(dir.path(), Duration::ZERO);
    manager.sync(&[sim_pod("a")]);
    let t0 = Instant::now();
    // The worker has not run yet (this runtime is single-threaded): its
    // spawn-time status is held, and due when the hold ends.
    let held = manager.changed_statuses(t0);
    assert!(held.statuses.is_empty());
    assert_eq!(held.due, Some(t0 + HOLD));
    // Every change the worker makes wakes the loop's `changes`.
    let changes = manager.changes();
    tokio::time::timeout(Duration::from_secs(10), changes.notified())
        .await
        .expect("the worker's status change wakes `changes`");
    wait_phase(&manager, "u-a", "Running").await;
    let reported = manager.changed_statuses(t0);
    assert_eq!(reported.statuses.len(), 1);
    assert_eq!(phase(&reported.statuses[0].1), "Running");
    assert_eq!(condition(&reported.statuses[0].1, "Ready"), "True");
    assert_eq!(reported.due, None);
    assert!(manager.changed_statuses(t0).statuses.is_empty());
    manager.shutdown(Some(Duration::ZERO)).await;
}

/// The hold lasts `HOLD` from the read that first saw the change: a pod
/// still starting is reported Pending then, and nothing held is lost.
#[tokio::test]
async fn a_pod_still_starting_is_reported_pending_when_its_hold_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut manager = sim_manager(dir.path(), Duration::from_millis(500));
    manager.sync(&[sim_pod("a")]);
    let t0 = Instant::now();
    assert!(manager.changed_statuses(t0).statuses.is_empty());
    let early = manager.changed_statuses(t0 + HOLD / 2);
    assert!(early.statuses.is_empty());
    assert_eq!(early.due, Some(t0 + HOLD));
    let reported = manager.changed_statuses(t0 + HOLD).statuses;
    assert_eq!(reported.len(), 1);
    assert_eq!(phase(&reported[0].1), "Pending");
    assert_eq!(
        waiting_reason(&reported[0].1, "c"),
        Some("ContainerCreating")
    );
    // A second pod arriving later is held from its own first read.
    manager.sync(&[sim_pod("a"), sim_pod("b")]);
    let t1 = t0 + 2 * HOLD;
    assert!(manager.changed_statuses(t1).statuses.is_empty());
    let reported = manager.changed_statuses(t1 + HOLD).statuses;
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].0.name, "b");
    manager.shutdown(Some(Duration::ZERO)).await;
}
