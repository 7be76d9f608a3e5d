//! The kubectl scenario: each step runs the real kubectl against the cluster
//! and checks what it printed and what the API then holds.

use std::time::Duration;

use crate::{kubectl_in, Kube};

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: scenario
  labels: {app: api}
spec:
  replicas: 2
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: app
        image: busybox:1.36
        command: [sleep, '3600']
        env:
        - {name: A, value: '1'}
";

const APPLIED_CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: applied
  namespace: scenario
data:
  mode: slow
";

impl Kube {
    /// Runs kubectl, expects success, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None, &[])
    }

    fn ok_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> String {
        let out = kubectl_in(&self.kubeconfig, self.dir.path(), args, stdin, env);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "kubectl {} failed:\nstdout: {stdout}\nstderr: {stderr}",
            args.join(" ")
        );
        stdout
    }

    /// Runs kubectl, expects failure, returns stderr.
    fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = kubectl_in(&self.kubeconfig, self.dir.path(), args, stdin, &[]);
        assert!(
            !out.status.success(),
            "kubectl {} succeeded",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    fn jsonpath(&self, what: &[&str], path: &str) -> String {
        let arg = format!("jsonpath={path}");
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", &arg]);
        self.ok(&args)
    }
}

fn contains(out: &str, want: &str) {
    assert!(out.contains(want), "expected {want:?} in:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scenario() {
    let k = Kube::start().await;
    let ns = ["-n", "scenario"];

    // version and discovery
    let out = k.ok(&["version"]);
    contains(&out, "Server Version: v1.32");
    let out = k.ok(&["api-resources"]);
    for line in [
        "deployments",
        "apps/v1",
        "pods",
        "leases",
        "horizontalpodautoscalers",
    ] {
        contains(&out, line);
    }

    // imperative creates (protobuf bodies)
    contains(
        &k.ok(&["create", "namespace", "scenario"]),
        "namespace/scenario created",
    );
    contains(
        &k.ok(&[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
            "-n",
            "scenario",
        ]),
        "configmap/settings created",
    );
    contains(
        &k.ok(&[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.25",
            "-n",
            "scenario",
        ]),
        "deployment.apps/web created",
    );
    contains(
        &k.ok(&[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=pw=s3cr3t",
            "-n",
            "scenario",
        ]),
        "secret/creds created",
    );
    assert_eq!(
        k.jsonpath(&["secret", "creds", "-n", "scenario"], "{.data.pw}"),
        "czNjcjN0"
    );
    assert_eq!(
        k.jsonpath(
            &["deploy", "web", "-n", "scenario"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "nginx:1.25"
    );
    let err = k.fails(&["create", "namespace", "Bad_Name"], None);
    contains(&err, "is invalid");

    // client-side apply, then a change re-applied
    contains(
        &k.ok_with(&["apply", "-f", "-"], Some(DEPLOYMENT), &[]),
        "deployment.apps/api created",
    );
    let changed = DEPLOYMENT
        .replace("replicas: 2", "replicas: 3")
        .replace("value: '1'", "value: '2'");
    contains(
        &k.ok_with(&["apply", "-f", "-"], Some(&changed), &[]),
        "deployment.apps/api configured",
    );
    assert_eq!(
        k.jsonpath(&["deploy", "api", "-n", "scenario"], "{.spec.replicas}"),
        "3"
    );
    assert_eq!(
        k.jsonpath(
            &["deploy", "api", "-n", "scenario"],
            "{.spec.template.spec.containers[0].env[0].value}"
        ),
        "2"
    );
    assert_eq!(
        k.jsonpath(
            &["deploy", "api", "-n", "scenario"],
            "{.metadata.generation}"
        ),
        "2"
    );
    // Re-applying the same thing changes nothing, not even resourceVersion.
    // (Checked on a ConfigMap: the Deployment's controller writes its status
    // at any moment, which moves its resourceVersion.)
    contains(
        &k.ok_with(&["apply", "-f", "-"], Some(&changed), &[]),
        "deployment.apps/api unchanged",
    );
    contains(
        &k.ok_with(&["apply", "-f", "-"], Some(APPLIED_CONFIGMAP), &[]),
        "configmap/applied created",
    );
    let rv = k.jsonpath(
        &["configmap", "applied", "-n", "scenario"],
        "{.metadata.resourceVersion}",
    );
    contains(
        &k.ok_with(&["apply", "-f", "-"], Some(APPLIED_CONFIGMAP), &[]),
        "configmap/applied unchanged",
    );
    assert_eq!(
        k.jsonpath(
            &["configmap", "applied", "-n", "scenario"],
            "{.metadata.resourceVersion}"
        ),
        rv
    );

    // server-side apply: a conflict with the client-side manager, then forced
    let ssa = changed.replace("replicas: 3", "replicas: 4");
    let err = k.fails(&["apply", "--server-side", "-f", "-"], Some(&ssa));
    contains(&err, "conflict");
    contains(
        &k.ok_with(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(&ssa),
            &[],
        ),
        "deployment.apps/api serverside-applied",
    );
    assert_eq!(
        k.jsonpath(&["deploy", "api", "-n", "scenario"], "{.spec.replicas}"),
        "4"
    );

    // get in every output format, selectors
    let mut args = vec!["get", "deploy", "-o", "wide"];
    args.extend_from_slice(&ns);
    let out = k.ok(&args);
    for col in [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
        "busybox:1.36",
    ] {
        contains(&out, col);
    }
    contains(
        &k.ok(&["get", "deploy", "api", "-n", "scenario", "-o", "yaml"]),
        "kind: Deployment",
    );
    let json: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "deploy", "api", "-n", "scenario", "-o", "json"]))
            .expect("json");
    assert_eq!(json["metadata"]["name"], "api");
    assert_eq!(
        k.ok(&["get", "deploy", "-n", "scenario", "-o", "name"]),
        "deployment.apps/api\ndeployment.apps/web\n"
    );
    assert_eq!(
        k.ok(&["get", "deploy", "-n", "scenario", "-l", "app=api", "-o", "name"]),
        "deployment.apps/api\n"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "ns",
            "--field-selector",
            "metadata.name=scenario",
            "-o",
            "name"
        ]),
        "namespace/scenario\n"
    );
    let err = k.fails(
        &[
            "get",
            "deploy",
            "-n",
            "scenario",
            "--field-selector",
            "spec.replicas=1",
        ],
        None,
    );
    contains(&err, "field label not supported");

    // watch: sees a configmap created while it runs, then times out
    let kubeconfig = k.kubeconfig.clone();
    let dir = k.dir.path().to_path_buf();
    let watcher = std::thread::spawn(move || {
        kubectl_in(
            &kubeconfig,
            &dir,
            &["get", "cm", "-n", "scenario", "-w", "--request-timeout=4s"],
            None,
            &[],
        )
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    k.ok(&[
        "create",
        "configmap",
        "watched",
        "--from-literal=a=b",
        "-n",
        "scenario",
    ]);
    let out = watcher.join().expect("watcher");
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    contains(&out, "settings");
    contains(&out, "watched");

    // describe, edit, label, annotate, scale, patch
    let out = k.ok(&["describe", "deploy", "api", "-n", "scenario"]);
    contains(&out, "Replicas:");
    contains(&out, "busybox:1.36");
    let editor = k.dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/mode: fast/mode: slow/' \"$1\"\n",
    )
    .expect("editor");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .expect("chmod");
    let editor = editor.to_string_lossy().to_string();
    contains(
        &k.ok_with(
            &["edit", "configmap", "settings", "-n", "scenario"],
            None,
            &[("KUBE_EDITOR", &editor)],
        ),
        "configmap/settings edited",
    );
    assert_eq!(
        k.jsonpath(&["cm", "settings", "-n", "scenario"], "{.data.mode}"),
        "slow"
    );
    contains(
        &k.ok(&["label", "deploy", "api", "tier=back", "-n", "scenario"]),
        "labeled",
    );
    contains(
        &k.ok(&[
            "annotate",
            "deploy",
            "api",
            "owner=team-a",
            "-n",
            "scenario",
        ]),
        "annotated",
    );
    assert_eq!(
        k.jsonpath(
            &["deploy", "api", "-n", "scenario"],
            "{.metadata.labels.tier}"
        ),
        "back"
    );
    assert_eq!(
        k.jsonpath(
            &["deploy", "api", "-n", "scenario"],
            "{.metadata.annotations.owner}"
        ),
        "team-a"
    );
    contains(
        &k.ok(&["scale", "deploy", "api", "--replicas=5", "-n", "scenario"]),
        "scaled",
    );
    assert_eq!(
        k.jsonpath(&["deploy", "api", "-n", "scenario"], "{.spec.replicas}"),
        "5"
    );
    k.ok(&[
        "patch",
        "deploy",
        "api",
        "-n",
        "scenario",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":1}}"#,
    ]);
    assert_eq!(
        k.jsonpath(&["deploy", "api", "-n", "scenario"], "{.spec.replicas}"),
        "1"
    );
    k.ok(&[
        "patch",
        "deploy",
        "api",
        "-n",
        "scenario",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#,
    ]);
    assert_eq!(
        k.jsonpath(&["deploy", "api", "-n", "scenario"], "{.spec.replicas}"),
        "2"
    );
    k.ok(&[
        "patch",
        "deploy",
        "api",
        "-n",
        "scenario",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"busybox:1.37"}]}}}}"#,
    ]);
    assert_eq!(
        k.jsonpath(&["deploy", "api", "-n", "scenario"], "{.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].command[0]}"),
        "busybox:1.37 sleep"
    );
    let err = k.fails(
        &[
            "patch",
            "deploy",
            "api",
            "-n",
            "scenario",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/nothing"}]"#,
        ],
        None,
    );
    contains(&err, "could not be applied");

    // dry run and diff
    contains(
        &k.ok(&[
            "create",
            "configmap",
            "dry",
            "--from-literal=a=b",
            "-n",
            "scenario",
            "--dry-run=server",
        ]),
        "configmap/dry created (server dry run)",
    );
    k.fails(&["get", "cm", "dry", "-n", "scenario"], None);
    let diffed = changed.replace("replicas: 3", "replicas: 7");
    let out = kubectl_in(
        &k.kubeconfig,
        k.dir.path(),
        &["diff", "-f", "-"],
        Some(&diffed),
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "kubectl diff exits 1 when there are differences"
    );
    contains(&String::from_utf8_lossy(&out.stdout), "+  replicas: 7");

    // explain (OpenAPI v3)
    let out = k.ok(&["explain", "deployment.spec.strategy"]);
    contains(&out, "KIND:");
    contains(&out, "rollingUpdate");

    // cordon and uncordon a Node object
    k.ok_with(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n  labels: {kubernetes.io/hostname: node-a}\n"),
        &[],
    );
    contains(&k.ok(&["cordon", "node-a"]), "node/node-a cordoned");
    assert_eq!(
        k.jsonpath(&["node", "node-a"], "{.spec.unschedulable}"),
        "true"
    );
    contains(&k.ok(&["get", "nodes"]), "SchedulingDisabled");
    contains(&k.ok(&["uncordon", "node-a"]), "node/node-a uncordoned");
    assert_eq!(k.jsonpath(&["node", "node-a"], "{.spec.unschedulable}"), "");

    // bad input
    let err = k.fails(&["apply", "-f", "-"], Some("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad, namespace: scenario}\nspec:\n  replicas: 1\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: c}}\n    spec: {containers: [{name: c, image: i}]}\n"));
    contains(&err, "selector` does not match template `labels`");
    let err = k.fails(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: strict, namespace: scenario}\nbogus: 1\n"));
    contains(&err, "unknown field");
    k.fails(&["get", "cm", "strict", "-n", "scenario"], None);
    // A Deployment's selector is fixed once created.
    let moved = DEPLOYMENT.replace("{app: api}", "{app: api2}");
    let err = k.fails(&["apply", "-f", "-"], Some(&moved));
    contains(
        &err,
        "The Deployment \"api\" is invalid: spec.selector: Invalid value:",
    );
    contains(&err, "field is immutable");

    // delete waits for the object to go
    contains(
        &k.ok(&["delete", "deploy", "api", "-n", "scenario"]),
        "deployment.apps \"api\" deleted",
    );
    k.fails(&["get", "deploy", "api", "-n", "scenario"], None);
    contains(
        &k.ok(&["delete", "configmap", "-n", "scenario", "--all"]),
        "configmap \"settings\" deleted",
    );
    assert_eq!(k.ok(&["get", "cm", "-n", "scenario", "-o", "name"]), "");

    k.stop().await;
}
