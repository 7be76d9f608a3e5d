use std::time::{Duration, Instant};

use balsa_node::runtime::Runtime;

use serde_json::json;

use crate::common::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn init_container_runs_first_and_shares_an_empty_dir() {
    let h = Harness::new();
    let p = pod(json!({
        "metadata": {"name": "init-demo"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "work", "emptyDir": {}}],
            "initContainers": [{
                "name": "prepare", "image": "busybox",
                "command": ["sh", "-c", "sleep 0.3; echo hello from init > data/msg; echo init done"],
                "volumeMounts": [{"name": "work", "mountPath": "/data"}]
            }],
            "containers": [{
                "name": "main", "image": "busybox",
                "command": ["sh", "-c", "cat data/msg; echo to-stderr >&2"],
                "volumeMounts": [{"name": "work", "mountPath": "/data"}]
            }]
        }
    }));
    let handle = h.worker.spawn(p);
    let key = handle.key().clone();
    let first = handle.status().borrow().clone();
    assert_eq!(phase(&first), "Pending");
    assert_eq!(condition(&first, "Initialized"), "False");
    let st = wait_for(&handle, T, "Succeeded", |s| phase(s) == "Succeeded").await;
    let init = terminated(&st, "prepare").expect("init terminated");
    let main = terminated(&st, "main").expect("main terminated");
    assert_eq!(init.reason.as_deref(), Some("Completed"));
    assert_eq!(main.exit_code, 0);
    assert!(
        init.finished_at.unwrap().0 <= main.started_at.unwrap().0,
        "main started before init finished"
    );
    assert_eq!(condition(&st, "Initialized"), "True");
    // The main container saw the init container's file; stdout and stderr are
    // both in the CRI-format log.
    let raw = h.log(&key, "main", 0);
    assert!(
        raw.lines().any(|l| l.contains(" stdout F hello from init")),
        "{raw}"
    );
    assert!(
        raw.lines().any(|l| l.contains(" stderr F to-stderr")),
        "{raw}"
    );
    assert_eq!(log_contents(&h.log(&key, "prepare", 0)), vec!["init done"]);
    stop(handle).await;
}

#[tokio::test]
async fn never_fails_the_pod_and_on_failure_restarts_until_success() {
    let mut h = Harness::new();
    let never = h.worker.spawn(pod(json!({
        "metadata": {"name": "never"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "x", "command": ["sh", "-c", "echo failing; exit 3"]}]}
    })));
    let on_failure = h.worker.spawn(pod(json!({
        "metadata": {"name": "onfailure"},
        "spec": {"restartPolicy": "OnFailure", "containers": [{
            "name": "c", "image": "x",
            "command": ["sh", "-c", "if [ -f done ]; then echo second; exit 0; fi; touch done; echo first; exit 3"]}]}
    })));
    let st = wait_for(&never, T, "Failed", |s| phase(s) == "Failed").await;
    let t = terminated(&st, "c").expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    assert_eq!(container(&st, "c").restart_count, 0);

    let key = on_failure.key().clone();
    let st = wait_for(&on_failure, T, "Succeeded", |s| phase(s) == "Succeeded").await;
    let c = container(&st, "c");
    assert_eq!(c.restart_count, 1);
    let last = c
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .expect("lastState");
    assert_eq!(last.exit_code, 3);
    // Each instance has its own log; the previous one is kept.
    assert_eq!(log_contents(&h.log(&key, "c", 0)), vec!["first"]);
    assert_eq!(log_contents(&h.log(&key, "c", 1)), vec!["second"]);
    let events = h.drain_events();
    assert!(events.iter().any(|e| e.reason == "Started"));
    stop(never).await;
    stop(on_failure).await;
}

#[tokio::test]
async fn termination_runs_pre_stop_then_sigterm_then_sigkill_after_grace() {
    let h = Harness::new();
    let shared = h.host_dir("shared");
    let handle = h.worker.spawn(pod(json!({
        "metadata": {"name": "graceful"},
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "volumes": [{"name": "out", "hostPath": {"path": shared.display().to_string()}}],
            "containers": [
                {"name": "polite", "image": "x",
                 "command": ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.1; done"],
                 "volumeMounts": [{"name": "out", "mountPath": "/out"}],
                 "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo ran > out/prestop"]}}}},
                {"name": "stubborn", "image": "x",
                 "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]}
            ]
        }
    })));
    let key = handle.key().clone();
    wait_for(&handle, T, "Running", |s| {
        phase(s) == "Running" && condition(s, "Ready") == "True"
    })
    .await;
    // Let the shell install its trap before signalling.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = Instant::now();
    handle.terminate(Some(Duration::from_millis(1500)));
    let st = tokio::time::timeout(T, handle.finished())
        .await
        .expect("finished");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "stopped after {took:?}, before the grace period"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
    let polite = terminated(&st, "polite").expect("polite terminated");
    let stubborn = terminated(&st, "stubborn").expect("stubborn terminated");
    assert_eq!(polite.exit_code, 0, "the trapped SIGTERM ends it cleanly");
    assert_eq!(stubborn.exit_code, 137, "SIGKILL after the grace period");
    assert_eq!(
        std::fs::read_to_string(shared.join("prestop"))
            .expect("preStop ran")
            .trim(),
        "ran"
    );
    assert!(log_contents(&h.log(&key, "polite", 0)).contains(&"got TERM".to_string()));
    assert_eq!(phase(&st), "Failed");
}

#[tokio::test]
async fn exceeding_the_memory_limit_is_oom_killed() {
    let h = Harness::new();
    if !h.runtime.enforces_limits() {
        eprintln!("SKIPPED: no writable cgroup hierarchy on this machine (needs root and cgroup v2, or v1 memory)");
        return;
    }
    let handle = h.worker.spawn(pod(json!({
        "metadata": {"name": "hog"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "hog", "image": "x",
            // tail buffers a "line" of /dev/zero forever.
            "command": ["tail", "/dev/zero"],
            "resources": {"limits": {"memory": "32Mi", "cpu": "500m"}}}]}
    })));
    let st = wait_for(&handle, T, "Failed", |s| phase(s) == "Failed").await;
    let t = terminated(&st, "hog").expect("terminated");
    assert_eq!(t.reason.as_deref(), Some("OOMKilled"), "{t:?}");
    assert_eq!(t.exit_code, 137);
    stop(handle).await;
}

#[tokio::test]
async fn missing_executable_and_missing_command_are_run_errors() {
    let h = Harness::new();
    let missing = h.worker.spawn(pod(json!({
        "metadata": {"name": "missing-binary"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "x", "command": ["no-such-binary-xyz", "arg"]}]}
    })));
    let no_command = h.worker.spawn(pod(json!({
        "metadata": {"name": "no-command"},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}
    })));
    let st = wait_for(&missing, T, "Failed", |s| phase(s) == "Failed").await;
    let t = terminated(&st, "c").expect("terminated");
    assert_eq!(
        (t.exit_code, t.reason.as_deref()),
        (128, Some("StartError"))
    );
    assert!(
        t.message
            .as_deref()
            .unwrap_or("")
            .contains(r#"exec: "no-such-binary-xyz": executable file not found in $PATH"#),
        "{t:?}"
    );
    let st = wait_for(&no_command, T, "RunContainerError", |s| {
        waiting_reason(s, "c") == Some("RunContainerError")
    })
    .await;
    let msg = container(&st, "c")
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap_or_default();
    assert!(msg.contains("has no command"), "{msg}");
    assert_eq!(phase(&st), "Pending");
    stop(missing).await;
    stop(no_command).await;
}

#[tokio::test]
async fn post_start_hook_runs_and_its_failure_kills_the_container() {
    let mut h = Harness::new();
    let ok = h.worker.spawn(pod(json!({
        "metadata": {"name": "hook-ok"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "x",
            "command": ["sh", "-c", "i=0; while [ ! -f started ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; cat started"],
            "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo hooked > started"]}}}}]}
    })));
    let bad = h.worker.spawn(pod(json!({
        "metadata": {"name": "hook-bad"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": "x", "command": ["sleep", "100"],
            "lifecycle": {"postStart": {"exec": {"command": ["false"]}}}}]}
    })));
    let key = ok.key().clone();
    wait_for(&ok, T, "Succeeded", |s| phase(s) == "Succeeded").await;
    assert_eq!(log_contents(&h.log(&key, "c", 0)), vec!["hooked"]);
    // kubectl logs --tail=1 --timestamps, from the same file.
    let opts = balsa_node::logs::LogOptions {
        tail_lines: Some(1),
        timestamps: true,
        ..Default::default()
    };
    let path = h.runtime.log_path(&key, "c", 0);
    let shown = String::from_utf8(
        balsa_node::logs::read(&path, &opts)
            .await
            .expect("read log"),
    )
    .expect("utf8");
    assert!(
        shown.ends_with("Z hooked\n") && shown.starts_with("20"),
        "{shown:?}"
    );
    let st = wait_for(&bad, T, "Failed", |s| phase(s) == "Failed").await;
    assert_eq!(terminated(&st, "c").expect("terminated").exit_code, 143);
    let events = h.drain_events();
    assert!(
        events
            .iter()
            .any(|e| e.pod.name == "hook-bad" && e.reason == "FailedPostStartHook"),
        "{events:?}"
    );
    stop(ok).await;
    stop(bad).await;
}

#[tokio::test]
async fn active_deadline_stops_the_pod_as_failed() {
    let h = Harness::new();
    let began = Instant::now();
    let handle = h.worker.spawn(pod(json!({
        "metadata": {"name": "deadline"},
        "spec": {"activeDeadlineSeconds": 1, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "x", "command": ["sleep", "100"]}]}
    })));
    wait_for(&handle, T, "Running", |s| phase(s) == "Running").await;
    let st = tokio::time::timeout(T, handle.finished())
        .await
        .expect("finished");
    assert!(began.elapsed() >= Duration::from_secs(1));
    assert_eq!(phase(&st), "Failed");
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(terminated(&st, "c").expect("terminated").exit_code, 143);
}

#[tokio::test]
async fn an_evicted_pod_ends_failed_with_kubelets_reason() {
    let h = Harness::new();
    let handle = h.worker.spawn(pod(json!({
        "metadata": {"name": "evicted"},
        "spec": {"terminationGracePeriodSeconds": 30,
                 "containers": [{"name": "c", "image": "x", "command": ["sleep", "100"]}]}
    })));
    wait_for(&handle, T, "Running", |s| phase(s) == "Running").await;
    assert!(!handle.stopping());
    let message =
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 1Ki. ";
    let began = Instant::now();
    handle.fail(
        balsa_node::worker::Failure {
            reason: "Evicted".into(),
            message: message.into(),
        },
        Duration::from_secs(1),
    );
    assert!(handle.stopping());
    let st = tokio::time::timeout(T, handle.finished())
        .await
        .expect("finished");
    // The eviction's grace, not the pod's 30 s.
    assert!(began.elapsed() < Duration::from_secs(10));
    assert_eq!(phase(&st), "Failed");
    assert_eq!(st.reason.as_deref(), Some("Evicted"));
    assert_eq!(st.message.as_deref(), Some(message));
    assert_eq!(condition(&st, "DisruptionTarget"), "True");
    let t = terminated(&st, "c").expect("terminated");
    assert_eq!(t.exit_code, 143, "stopped with SIGTERM");
}
