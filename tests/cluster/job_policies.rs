//! The Job controller's policies beyond counts and limits, on a real
//! three-master cluster with the fake kubelet of `jobs.rs`: the pod-failure
//! backoff per index.

use std::time::Duration;

use balsa_api::client::{Api, PostParams};
use balsa_controllers::pods::phase;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::Pod;

use crate::controllers::{client_of, namespace};
use crate::harness::InProc;
use crate::jobs::{
    fake_kubelet, finished, job, label, no_finalizers_left, pods_of, template, PodWatch,
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

/// backoffLimitPerIndex: a failed index waits its own backoff for its
/// retry, and its failed pod keeps the tracking finalizer (so its failure
/// count cannot be lost) until the retry exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn indexed_jobs_back_off_per_index() {
    let c = InProc::start(3, |o| {
        o.controllers.job_backoff = (Duration::from_secs(3), Duration::from_secs(6));
    })
    .await;
    let client = client_of(&c);
    namespace(&client, "index-backoff").await;
    let kubelet = fake_kubelet(client.clone());
    let watch = PodWatch::start(&client, "index-backoff");
    let jobs = Api::<Job>::namespaced(client.clone(), "index-backoff");
    let pods = Api::<Pod>::namespaced(client.clone(), "index-backoff");
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
