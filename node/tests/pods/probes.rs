use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

const T: Duration = Duration::from_secs(20);

/// A tiny HTTP server answering 200 while `healthy`, else 503.
async fn health_server(healthy: Arc<AtomicBool>) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let healthy = healthy.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let answer: &[u8] = if healthy.load(Ordering::SeqCst) {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                } else {
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                };
                let _ = sock.write_all(answer).await;
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn readiness_by_exec_and_http_get_gates_the_ready_condition() {
    let h = Harness::new();
    let healthy = Arc::new(AtomicBool::new(true));
    let (port, server) = health_server(healthy.clone()).await;
    let handle = h.worker.spawn(pod(json!({
        "metadata": {"name": "ready"},
        "spec": {"containers": [
            {"name": "slow", "image": "x",
             "command": ["sh", "-c", "sleep 1; touch ready; exec sleep 100"],
             "readinessProbe": {"exec": {"command": ["cat", "ready"]}, "periodSeconds": 1}},
            {"name": "web", "image": "x", "command": ["sleep", "100"],
             "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 1, "failureThreshold": 2}}
        ]}
    })));
    let st = wait_for(&handle, T, "Running", |s| phase(s) == "Running").await;
    assert_eq!(
        condition(&st, "Ready"),
        "False",
        "not ready before the probes pass"
    );
    let st = wait_for(&handle, T, "Ready", |s| condition(s, "Ready") == "True").await;
    assert!(container(&st, "slow").ready && container(&st, "web").ready);
    healthy.store(false, Ordering::SeqCst);
    let st = wait_for(&handle, T, "web unready", |s| !container(s, "web").ready).await;
    assert_eq!(condition(&st, "Ready"), "False");
    assert_eq!(condition(&st, "ContainersReady"), "False");
    assert!(container(&st, "slow").ready);
    healthy.store(true, Ordering::SeqCst);
    wait_for(&handle, T, "Ready again", |s| {
        condition(s, "Ready") == "True"
    })
    .await;
    stop(handle).await;
    server.abort();
}

#[tokio::test]
async fn failing_liveness_restarts_with_crash_loop_back_off() {
    let mut h = Harness::new();
    let handle = h.worker.spawn(pod(json!({
        "metadata": {"name": "live"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": "x",
            "command": ["sh", "-c", "touch alive; sleep 0.3; rm alive; exec sleep 100"],
            "livenessProbe": {"exec": {"command": ["cat", "alive"]}, "periodSeconds": 1, "failureThreshold": 2},
            "startupProbe": {"tcpSocket": {"port": 1}, "failureThreshold": 1000, "periodSeconds": 1, "timeoutSeconds": 1,
                             "initialDelaySeconds": 0}
        }]}
    })));
    // The startup probe against a closed port never succeeds: liveness never
    // runs and nothing restarts while it keeps failing.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let st = handle.status().borrow().clone();
    assert_eq!(container(&st, "c").restart_count, 0);
    assert_eq!(container(&st, "c").started, Some(false));
    stop(handle).await;

    let handle = h.worker.spawn(pod(json!({
        "metadata": {"name": "live2"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": "x",
            "command": ["sh", "-c", "touch alive; sleep 0.3; rm alive; exec sleep 100"],
            "livenessProbe": {"exec": {"command": ["cat", "alive"]}, "periodSeconds": 1, "failureThreshold": 2}
        }]}
    })));
    let st = wait_for(&handle, T, "CrashLoopBackOff", |s| {
        waiting_reason(s, "c") == Some("CrashLoopBackOff")
    })
    .await;
    let c = container(&st, "c");
    assert!(
        c.restart_count >= 2,
        "back-off starts at the second restart: {c:?}"
    );
    let last = c
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .expect("lastState");
    assert_eq!(last.exit_code, 143, "killed by SIGTERM: {last:?}");
    let msg = c
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap_or_default();
    assert!(
        msg.starts_with("back-off 300ms restarting failed container=c pod=live2_default("),
        "{msg}"
    );
    wait_for(&handle, T, "restart 3", |s| {
        container(s, "c").restart_count >= 3
    })
    .await;
    let events: Vec<_> = h
        .drain_events()
        .into_iter()
        .filter(|e| e.pod.name == "live2")
        .collect();
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    for want in ["Unhealthy", "Killing", "BackOff", "Started"] {
        assert!(reasons.contains(&want), "no {want} event in {reasons:?}");
    }
    let unhealthy = events.iter().find(|e| e.reason == "Unhealthy").unwrap();
    assert!(
        unhealthy.message.starts_with("Liveness probe failed:"),
        "{}",
        unhealthy.message
    );
    assert_eq!(unhealthy.field_path.as_deref(), Some("spec.containers{c}"));
    stop(handle).await;
}
