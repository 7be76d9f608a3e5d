//! `kubectl logs` against a real cluster (three masters, `node-1` on the
//! process runtime, as `balsa up` runs them): the text, `-c`, `--tail`,
//! `--timestamps`, `--previous` after a restart, `-f` seeing a line written
//! after it started, and the errors kube-apiserver and kubelet give.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use balsa::node::RuntimeKind;
use balsa::up::{self, UpOptions};

use crate::Kube;

const WAIT: Duration = Duration::from_secs(60);

impl Kube {
    /// Runs kubectl; (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.kubectl_raw(args, None);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// Polls `kubectl args` until its stdout satisfies `ok`; returns it.
    async fn until(&self, args: &[&str], ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let (success, out, err) = self.run(args);
            if success && ok(&out) {
                return out;
            }
            assert!(
                start.elapsed() < WAIT,
                "kubectl {} never gave what was expected; last: {out}{err}",
                args.join(" ")
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Polls until kubectl fails with `want` in its stderr.
    async fn until_error(&self, args: &[&str], want: &str) {
        let start = Instant::now();
        loop {
            let (success, out, err) = self.run(args);
            if !success && err.contains(want) {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "kubectl {} never failed with {want:?}; last: {out}{err}",
                args.join(" ")
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn apply(&self, yaml: &str) {
        let out = self.kubectl_raw(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  restartPolicy: Never
  containers:
  - name: talker
    image: busybox
    command: [sh, -c, 'echo one; echo two; echo three; while [ ! -e go ]; do sleep 0.2; done; echo late; sleep 1000']
---
apiVersion: v1
kind: Pod
metadata: {name: pair}
spec:
  containers:
  - {name: a, image: busybox, command: [sh, -c, 'echo from-a; sleep 1000']}
  - {name: b, image: busybox, command: [sh, -c, 'echo from-b; sleep 1000']}
---
apiVersion: v1
kind: Pod
metadata: {name: crashy}
spec:
  restartPolicy: Always
  containers:
  - name: crashy
    image: busybox
    command: [sh, -c, 'if [ -e ran ]; then echo second; sleep 1000; else touch ran; echo first; exit 1; fi']
---
apiVersion: v1
kind: Pod
metadata: {name: unconfigured}
spec:
  containers:
  - name: app
    image: busybox
    command: [sleep, '1000']
    env:
    - name: X
      valueFrom: {configMapKeyRef: {name: missing, key: k}}
---
apiVersion: v1
kind: Pod
metadata: {name: unscheduled}
spec:
  nodeSelector: {no-such-label: x}
  containers:
  - {name: app, image: busybox, command: [sleep, '1000']}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs() {
    let k = Kube::start().await;
    let opts = UpOptions {
        dir: k.dir.path().to_path_buf(),
        masters: 3,
        binary: env!("CARGO_BIN_EXE_balsa").into(),
        server_args: Vec::new(),
        // No pressure eviction: this machine's disk may be under kubelet's
        // default nodefs.available<10%, and the test is about logs.
        node_args: vec!["--eviction-hard".into(), String::new()],
    };
    let agents = up::start_agents(
        &opts,
        1,
        RuntimeKind::Process,
        std::path::Path::new(balsa_node::runtime::cri::DEFAULT_SOCKET),
    )
    .expect("node-1");
    k.until(&["get", "node", "node-1", "-o", "name"], |o| {
        o.contains("node/node-1")
    })
    .await;
    k.apply(PODS);

    // The whole log, then --tail and --timestamps.
    k.until(&["logs", "talker"], |o| o == "one\ntwo\nthree\n")
        .await;
    assert_eq!(k.run(&["logs", "talker", "--tail=1"]).1, "three\n");
    assert_eq!(k.run(&["logs", "pod/talker", "--tail=2"]).1, "two\nthree\n");
    let stamped = k.run(&["logs", "talker", "--timestamps"]).1;
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 3, "{stamped}");
    for (line, word) in lines.iter().zip(["one", "two", "three"]) {
        let (time, text) = line.split_once(' ').expect("a timestamp, a space");
        assert_eq!(text, word);
        assert!(
            time.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
            "an RFC 3339 time: {line}"
        );
    }
    assert_eq!(k.run(&["logs", "talker", "--limit-bytes=6"]).1, "one\ntw");
    assert_eq!(
        k.run(&["logs", "talker", "--since=1h"]).1,
        "one\ntwo\nthree\n"
    );
    let future = "--since-time=2099-01-01T00:00:00Z";
    assert_eq!(k.run(&["logs", "talker", future]).1, "");
    // kubectl refuses a --tail below -1 itself; the API's own check:
    let (ok, _, err) = k.run(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/talker/log?tailLines=-2",
    ]);
    assert!(!ok);
    assert!(
        err.contains("tailLines: Invalid value: -2: must be greater than or equal to 0"),
        "{err}"
    );
    let (ok, _, err) = k.run(&["logs", "talker", "--previous"]);
    assert!(!ok);
    assert!(
        err.contains(r#"previous terminated container "talker" in pod "talker" not found"#),
        "{err}"
    );

    // -f sees a line written after the request started.
    let uid = k
        .run(&["get", "pod", "talker", "-o", "jsonpath={.metadata.uid}"])
        .1;
    let go: PathBuf = k
        .dir
        .path()
        .join("node-1/pods")
        .join(uid.trim())
        .join("containers/talker/root/go");
    let mut follow = Command::new("kubectl")
        .args(["logs", "-f", "talker"])
        .env("KUBECONFIG", &k.kubeconfig)
        .env("HOME", k.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = follow.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let read = async {
        while let Some(line) = lines_rx.recv().await {
            seen.push(line.clone());
            if line == "three" {
                std::fs::write(&go, b"").expect("write the go file");
            }
            if line == "late" {
                return;
            }
        }
    };
    let timed = tokio::time::timeout(WAIT, read).await;
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(timed.is_ok(), "kubectl logs -f saw only {seen:?}");
    assert_eq!(seen, ["one", "two", "three", "late"]);

    // Several containers: kubectl picks the first itself and says so; the
    // API wants one named.
    k.until(&["logs", "pair", "-c", "b"], |o| o == "from-b\n")
        .await;
    let (ok, out, err) = k.run(&["logs", "pair"]);
    assert!(ok && out == "from-a\n", "{out}{err}");
    assert!(
        err.contains("Defaulted container \"a\" out of: a, b"),
        "{err}"
    );
    let (ok, _, err) = k.run(&["get", "--raw", "/api/v1/namespaces/default/pods/pair/log"]);
    assert!(!ok);
    assert!(
        err.contains("a container name must be specified for pod pair, choose one of: [a b]"),
        "{err}"
    );
    let (ok, _, err) = k.run(&["logs", "pair", "-c", "nope"]);
    assert!(
        !ok && err.contains("container nope is not valid for pod pair"),
        "{err}"
    );

    // --previous after a restart: the instance before, and the current one.
    k.until(&["logs", "crashy"], |o| o == "second\n").await;
    assert_eq!(k.run(&["logs", "crashy", "--previous"]).1, "first\n");
    assert_eq!(
        k.run(&[
            "get",
            "pod",
            "crashy",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}"
        ])
        .1,
        "1"
    );

    // Not started, not scheduled, not there.
    k.until_error(
        &["logs", "unconfigured"],
        r#"container "app" in pod "unconfigured" is waiting to start: CreateContainerConfigError"#,
    )
    .await;
    let (ok, _, err) = k.run(&["logs", "unscheduled"]);
    assert!(
        !ok && err.contains("pod unscheduled does not have a host assigned"),
        "{err}"
    );
    let (ok, _, err) = k.run(&["logs", "nope"]);
    assert!(!ok && err.contains(r#"pods "nope" not found"#), "{err}");

    agents.stop(Duration::from_secs(10)).await;
    k.stop().await;
}
