use std::sync::Arc;
use std::time::{Duration, Instant};

use balsa_node::events::Emitter;
use balsa_node::{PodWorker, SimRuntime, StaticObjects};
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_simulated_pods_become_running_quickly() {
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
    eprintln!("1000 simulated pods Running and Ready in {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
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
