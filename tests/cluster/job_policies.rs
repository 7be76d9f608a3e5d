//! The Job controller's policies beyond counts and limits, on a real
//! three-master cluster with the fake kubelet of `jobs.rs`: the pod-failure
//! backoff per index, `successPolicy`, `managedBy`, `podReplacementPolicy`,
//! and their validation as kubectl shows it.

use std::collections::BTreeMap;
use std::time::Duration;

use balsa_api::client::{DeleteParams, Patch, PatchParams, PostParams};
use balsa_controllers::job::TRACKING_FINALIZER;
use balsa_controllers::pods::phase;
use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobSpec, JobStatus, SuccessPolicy, SuccessPolicyRule,
};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde_json::json;

use crate::controllers::eventually;
use crate::harness::InProc;
use crate::jobs::{
    batch_cluster, condition, ended_status, finished, job, label, no_finalizers_left, pods_of,
    set_status, template, BatchCluster, Outcome, PodWatch,
};

const INDEX: &str = "batch.kubernetes.io/job-completion-index";
const FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";

fn annotation(p: &Pod, key: &str) -> String {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key).cloned())
        .unwrap_or_default()
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn tracked(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

/// backoffLimitPerIndex: a failed index waits its own backoff for its
/// retry, and its failed pod keeps the tracking finalizer (so its failure
/// count cannot be lost) until the retry exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn indexed_jobs_back_off_per_index() {
    let BatchCluster {
        c,
        client,
        kubelet,
        jobs,
        pods,
    } = batch_cluster("index-backoff", |o| {
        o.controllers.job_backoff = (Duration::from_secs(3), Duration::from_secs(6));
    })
    .await;
    let watch = PodWatch::start(&client, "index-backoff");
    let spec = JobSpec {
        completions: Some(3),
        parallelism: Some(3),
        completion_mode: Some("Indexed".into()),
        backoff_limit_per_index: Some(1),
        template: template("fail-index-1-once"),
        ..Default::default()
    };
    jobs.create(&job("retry", spec), &PostParams::default())
        .await
        .expect("create job");
    let j = finished(&jobs, "retry", "Complete").await;
    let st = j.status.unwrap();
    assert_eq!((st.succeeded, st.failed), (Some(3), Some(1)));
    assert_eq!(st.completed_indexes.as_deref(), Some("0-2"));
    let ran = pods_of(&pods, "retry").await;
    assert_eq!(ran.len(), 4, "one retry");
    no_finalizers_left(&ran);
    let of_index_1: Vec<&Pod> = ran.iter().filter(|p| label(p, INDEX) == "1").collect();
    let failed = of_index_1
        .iter()
        .find(|p| phase(p) == "Failed")
        .expect("the failed try");
    let retry = of_index_1
        .iter()
        .find(|p| phase(p) == "Succeeded")
        .expect("the retry");
    assert_eq!(annotation(failed, FAILURE_COUNT), "0");
    assert_eq!(annotation(retry, FAILURE_COUNT), "1");
    let (failed_at, retried_at, released_at) = {
        let seen = watch.seen.lock().expect("watch state");
        (
            seen.failed[&name(failed)],
            seen.appeared[&name(retry)],
            seen.released[&name(failed)],
        )
    };
    // The pod's finish time is whole seconds: the wait may be up to a
    // second short of 3 s.
    let gap = retried_at.duration_since(failed_at);
    assert!(gap >= Duration::from_millis(1500), "retried after {gap:?}");
    assert!(
        released_at >= retried_at,
        "the failed pod was released {:?} before its retry appeared",
        retried_at.duration_since(released_at)
    );
    kubelet.abort();
    drop(watch);
    c.shutdown().await;
}

fn indexed_with_policy(image: &str, rules: Vec<SuccessPolicyRule>) -> JobSpec {
    JobSpec {
        completions: Some(4),
        parallelism: Some(4),
        completion_mode: Some("Indexed".into()),
        success_policy: Some(SuccessPolicy { rules }),
        template: template(image),
        ..Default::default()
    }
}

fn position(conditions: &[JobCondition], ty: &str) -> Option<usize> {
    conditions
        .iter()
        .position(|c| c.type_ == ty && c.status == "True")
}

/// successPolicy: the Job is Complete once a rule holds, with
/// SuccessCriteriaMet first; the pods still running are stopped and not
/// counted as failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn success_policies_complete_indexed_jobs_early() {
    let BatchCluster {
        c,
        client: _,
        kubelet,
        jobs,
        pods,
    } = batch_cluster("success", |_| {}).await;
    let pp = PostParams::default();
    // Index 0 is the leader: its success is the Job's.
    let leader = indexed_with_policy(
        "succeed-index-0",
        vec![SuccessPolicyRule {
            succeeded_indexes: Some("0".into()),
            succeeded_count: None,
        }],
    );
    jobs.create(&job("leader", leader), &pp).await.unwrap();
    // Any one index will do: the second rule holds.
    let any = indexed_with_policy(
        "succeed-index-2",
        vec![
            SuccessPolicyRule {
                succeeded_indexes: Some("0".into()),
                succeeded_count: None,
            },
            SuccessPolicyRule {
                succeeded_indexes: None,
                succeeded_count: Some(1),
            },
        ],
    );
    jobs.create(&job("any", any), &pp).await.unwrap();

    for (name, index, rule) in [("leader", "0", 0), ("any", "2", 1)] {
        let j = finished(&jobs, name, "Complete").await;
        let message = format!("Matched rules at index {rule}");
        let want = Some((Some("SuccessPolicy".to_string()), Some(message)));
        assert_eq!(condition(&j, "SuccessCriteriaMet"), want, "{name}");
        assert_eq!(condition(&j, "Complete"), want, "{name}");
        let st: JobStatus = j.status.clone().unwrap();
        let conditions = st.conditions.clone().unwrap_or_default();
        assert!(
            position(&conditions, "SuccessCriteriaMet") < position(&conditions, "Complete"),
            "{name}: {conditions:?}"
        );
        assert_eq!(
            (st.succeeded, st.failed, st.active, st.terminating),
            (Some(1), None, None, Some(0)),
            "{name}: the stopped pods are no failures"
        );
        assert_eq!(st.completed_indexes.as_deref(), Some(index), "{name}");
        assert!(st.completion_time.is_some());
        // The other indexes' pods were stopped; the one that succeeded stays.
        let left = eventually(&format!("{name}'s stopped pods gone"), || async {
            let left = pods_of(&pods, name).await;
            (left.len() == 1).then_some(left)
        })
        .await;
        assert_eq!(label(&left[0], INDEX), index);
        assert_eq!(phase(&left[0]), "Succeeded");
        no_finalizers_left(&left);
    }
    kubelet.abort();
    c.shutdown().await;
}

/// A pod the other controller of a Job made, holding the tracking
/// finalizer.
fn pod_of(owner: &Job, pod: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(pod.into()),
            finalizers: Some(vec![TRACKING_FINALIZER.into()]),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: owner.metadata.name.clone().unwrap_or_default(),
                uid: owner.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            containers: vec![Container {
                name: "c".into(),
                image: Some("hang".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

fn kubectl(c: &InProc, dir: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster: {{server: http://{}}}\n\
             users:\n- name: b\n  user: {{}}\ncontexts:\n- name: b\n  context: {{cluster: b, user: b}}\n\
             current-context: b\n",
            c.server(0).rest_addr
        ),
    )
    .expect("kubeconfig");
    let mut child = std::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("kubectl finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// managedBy: a Job another controller manages gets no pods and no status
/// from this one, and the pods that controller made keep their tracking
/// finalizer; the field and bad policies are refused as kube-apiserver
/// refuses them (422, through kubectl).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_managed_elsewhere_are_left_alone_and_bad_policies_refused() {
    let BatchCluster {
        c,
        client: _,
        kubelet,
        jobs,
        pods,
    } = batch_cluster("managed", |_| {}).await;
    let pp = PostParams::default();
    let managed = |by: &str| JobSpec {
        managed_by: Some(by.into()),
        template: template("ok"),
        ..Default::default()
    };
    let external = jobs
        .create(&job("external", managed("example.com/queue")), &pp)
        .await
        .unwrap();
    let ours = jobs
        .create(&job("ours", managed("kubernetes.io/job-controller")), &pp)
        .await
        .unwrap();
    let done = finished(&jobs, "ours", "Complete").await;
    assert_eq!(done.status.unwrap().succeeded, Some(1));

    // The other controller finishes its Job and keeps a pod of it; a pod
    // of our finished Job is released (so the orphan pass has run).
    pods.create(&pod_of(&external, "external-pod"), &pp)
        .await
        .unwrap();
    let mut finished_external = jobs.get("external").await.unwrap();
    let now = Time(balsa_api::clock::now_to_second());
    finished_external.status = Some(JobStatus {
        start_time: Some(now.clone()),
        completion_time: Some(now.clone()),
        succeeded: Some(1),
        conditions: Some(
            ["SuccessCriteriaMet", "Complete"]
                .into_iter()
                .map(|ty| JobCondition {
                    type_: ty.into(),
                    status: "True".into(),
                    last_transition_time: Some(now.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    });
    jobs.replace_status(&finished_external, &pp)
        .await
        .expect("the other controller's status");
    pods.create(&pod_of(&ours, "ours-pod"), &pp).await.unwrap();
    eventually("our finished Job's pod released", || async {
        let p = pods.get("ours-pod").await.ok()?;
        (!tracked(&p)).then_some(())
    })
    .await;
    let theirs = pods.get("external-pod").await.unwrap();
    assert!(tracked(&theirs), "the other controller's pod was released");
    let ext = jobs.get("external").await.unwrap();
    assert_eq!(
        pods_of(&pods, "external").await.len(),
        0,
        "no pods from the job controller"
    );
    assert_eq!(
        ext.status.unwrap().active,
        None,
        "the status is the other controller's"
    );

    // managedBy is fixed once set.
    let patch = json!({"spec": {"managedBy": "example.com/other"}});
    let err = jobs
        .patch("external", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect_err("managedBy changed");
    assert_eq!(err.code(), 422);
    assert!(
        err.message
            .contains("spec.managedBy: Invalid value: \"example.com/other\": field is immutable"),
        "{}",
        err.message
    );

    // kubectl shows kube-apiserver's words for bad policies.
    let dir = tempfile::tempdir().expect("dir");
    let bad = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: bad, namespace: managed}
spec:
  managedBy: queue
  podReplacementPolicy: Never
  successPolicy:
    rules: [{succeededCount: 1}]
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: ok}]
"#;
    let (ok, text) = kubectl(&c, dir.path(), &["create", "-f", "-"], bad);
    assert!(!ok, "{text}");
    for want in [
        "The Job \"bad\" is invalid:",
        "spec.successPolicy: Invalid value: {\"Rules\":[{\"SucceededIndexes\":null,\"SucceededCount\":1}]}: requires indexed completion mode",
        "spec.podReplacementPolicy: Unsupported value: \"Never\": supported values: \"Failed\", \"TerminatingOrFailed\"",
        "spec.managedBy: Invalid value: \"queue\": must be a domain-prefixed path (such as \"acme.io/foo\")",
    ] {
        assert!(text.contains(want), "{want}\nnot in\n{text}");
    }
    let out_of_range = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: bad, namespace: managed}
spec:
  completionMode: Indexed
  completions: 3
  parallelism: 3
  successPolicy:
    rules: [{succeededIndexes: "1-3"}, {succeededIndexes: "0-1", succeededCount: 3}]
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: ok}]
"#;
    let (ok, text) = kubectl(&c, dir.path(), &["create", "-f", "-"], out_of_range);
    assert!(!ok, "{text}");
    for want in [
        "spec.successPolicy.rules[0].succeededIndexes: Invalid value: \"1-3\": error parsing succeededIndexes: too large index: \"3\"",
        "spec.successPolicy.rules[1].succeededCount: Invalid value: 3: must be less than or equal to 2 (the number of indexes in the specified succeededIndexes field)",
    ] {
        assert!(text.contains(want), "{want}\nnot in\n{text}");
    }
    assert!(jobs.get_opt("bad").await.unwrap().is_none());
    kubelet.abort();
    c.shutdown().await;
}

/// podReplacementPolicy: TerminatingOrFailed (the default) replaces a pod
/// as soon as it is terminating; Failed waits until it has failed.
/// status.terminating counts the pods on their way out either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_are_replaced_as_the_replacement_policy_says() {
    let BatchCluster {
        c,
        client: _,
        kubelet,
        jobs,
        pods,
    } = batch_cluster("replace", |o| {
        o.controllers.job_backoff = (Duration::from_millis(100), Duration::from_secs(1));
    })
    .await;
    let pp = PostParams::default();
    // A finalizer of the test's keeps deleted pods terminating.
    let held = |policy: Option<&str>| {
        let mut t = template("hang");
        let meta = t.metadata.get_or_insert_with(ObjectMeta::default);
        meta.finalizers = Some(vec!["example.com/hold".into()]);
        JobSpec {
            pod_replacement_policy: policy.map(Into::into),
            template: t,
            ..Default::default()
        }
    };
    let at_once = jobs.create(&job("at-once", held(None)), &pp).await.unwrap();
    assert_eq!(
        at_once.spec.unwrap().pod_replacement_policy.as_deref(),
        Some("TerminatingOrFailed")
    );
    jobs.create(&job("on-failure", held(Some("Failed"))), &pp)
        .await
        .unwrap();
    let mut first = BTreeMap::new();
    for name in ["at-once", "on-failure"] {
        let p = eventually(&format!("{name}'s pod running"), || async {
            let list = pods_of(&pods, name).await;
            (list.len() == 1 && phase(&list[0]) == "Running").then(|| list[0].clone())
        })
        .await;
        pods.delete(&p.metadata.name.clone().unwrap(), &DeleteParams::default())
            .await
            .expect("delete pod");
        first.insert(name, p);
    }
    let status = |name: &'static str| {
        let jobs = jobs.clone();
        async move { jobs.get(name).await.ok()?.status }
    };

    // Replaced at once, counted failed, the old pod still terminating.
    eventually("at-once replaced while terminating", || async {
        let st = status("at-once").await?;
        let n = pods_of(&pods, "at-once").await.len();
        (n == 2 && st.active == Some(1) && st.terminating == Some(1) && st.failed == Some(1))
            .then_some(())
    })
    .await;

    // Not replaced while terminating.
    eventually("on-failure's pod terminating", || async {
        let st = status("on-failure").await?;
        (st.terminating == Some(1) && st.active.is_none()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        pods_of(&pods, "on-failure").await.len(),
        1,
        "replaced before it failed"
    );
    let st = status("on-failure").await.unwrap();
    assert_eq!((st.active, st.failed), (None, None));
    // Once it has failed, it is counted and replaced.
    let old = &first["on-failure"];
    set_status(
        &pods,
        old.metadata.name.as_deref().unwrap(),
        ended_status(Outcome::Exit(137)),
    )
    .await;
    eventually("on-failure replaced once failed", || async {
        let st = status("on-failure").await?;
        let n = pods_of(&pods, "on-failure").await.len();
        (n == 2 && st.active == Some(1) && st.terminating == Some(0) && st.failed == Some(1))
            .then_some(())
    })
    .await;
    kubelet.abort();
    c.shutdown().await;
}
