//! The Job, CronJob, TTL-after-finished and pod GC controllers as every
//! master runs them (leader only), against a real three-master cluster. No
//! node agent runs: a fake kubelet in the test runs pods to Succeeded or
//! Failed as their image says, and finishes graceful deletions. A watch on
//! the pods checks what is never allowed to happen (more than parallelism
//! at once); CronJobs run on a fake clock the test moves.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use balsa_api::client::{
    Api, Change, Client, DeleteParams, Informer, Patch, PatchParams, PostParams,
};
use balsa_api::clock::Clock;
use balsa_api::registry::Reason;
use balsa_controllers::job::TRACKING_FINALIZER;
use balsa_controllers::pods::{is_active, phase};
use k8s_openapi::api::batch::v1::{
    CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec, PodFailurePolicy,
    PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
    PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    Node, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::controllers::{client_of, eventually, namespace};
use crate::harness::InProc;

pub(crate) const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// How long the fake kubelet lets a pod run before it ends it.
const RUN: Duration = Duration::from_millis(300);

fn now() -> Time {
    Time(balsa_api::clock::now_to_second())
}

fn image_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

pub(crate) fn label(p: &Pod, key: &str) -> String {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key).cloned())
        .unwrap_or_default()
}

/// How a pod ends, by its image: `ok` succeeds, `exit-N` fails with N,
/// `hang` runs until deleted, `disrupt-once` is disrupted (Failed with a
/// DisruptionTarget condition) the first time for its job and succeeds
/// after, `fail-index-I-once` fails index I the first time,
/// `succeed-index-I` succeeds for index I and hangs for the others.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Outcome {
    Succeed,
    Exit(i32),
    Disrupted,
    Hang,
}

fn outcome(p: &Pod, once: &mut HashSet<String>) -> Outcome {
    let image = image_of(p);
    let job = label(p, JOB_NAME);
    if image == "ok" {
        Outcome::Succeed
    } else if image == "hang" {
        Outcome::Hang
    } else if image == "disrupt-once" {
        if once.insert(format!("disrupt/{job}")) {
            Outcome::Disrupted
        } else {
            Outcome::Succeed
        }
    } else if let Some(i) = image
        .strip_prefix("fail-index-")
        .and_then(|r| r.strip_suffix("-once"))
    {
        let index = label(p, "batch.kubernetes.io/job-completion-index");
        if index == i && once.insert(format!("index/{job}/{i}")) {
            Outcome::Exit(1)
        } else {
            Outcome::Succeed
        }
    } else if let Some(i) = image.strip_prefix("succeed-index-") {
        let index = label(p, "batch.kubernetes.io/job-completion-index");
        if index == i {
            Outcome::Succeed
        } else {
            Outcome::Hang
        }
    } else if let Some(code) = image.strip_prefix("exit-").and_then(|c| c.parse().ok()) {
        Outcome::Exit(code)
    } else {
        Outcome::Hang
    }
}

fn running_status() -> PodStatus {
    PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(now()),
            ..Default::default()
        }]),
        container_statuses: Some(vec![ContainerStatus {
            name: "c".into(),
            ready: true,
            image: String::new(),
            image_id: String::new(),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(now()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

pub(crate) fn ended_status(o: Outcome) -> PodStatus {
    let code = match o {
        Outcome::Succeed => 0,
        Outcome::Exit(c) => c,
        _ => 137,
    };
    let mut conditions = vec![PodCondition {
        type_: "Ready".into(),
        status: "False".into(),
        last_transition_time: Some(now()),
        ..Default::default()
    }];
    if o == Outcome::Disrupted {
        conditions.push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("EvictionByEvictionAPI".into()),
            last_transition_time: Some(now()),
            ..Default::default()
        });
    }
    PodStatus {
        phase: Some(if code == 0 { "Succeeded" } else { "Failed" }.into()),
        conditions: Some(conditions),
        container_statuses: Some(vec![ContainerStatus {
            name: "c".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                    finished_at: Some(now()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// A stand-in for every node agent: pods go Running and Ready, then end
/// after RUN as their image says; pods marked for deletion are removed.
/// A three-master cluster with namespace `ns`, the fake kubelet running its
/// pods, and clients of that namespace's Jobs and pods.
pub(crate) struct BatchCluster {
    pub c: InProc,
    pub client: Client,
    pub kubelet: JoinHandle<()>,
    pub jobs: Api<Job>,
    pub pods: Api<Pod>,
}

pub(crate) async fn batch_cluster(
    ns: &str,
    tweak: impl Fn(&mut balsa::server::ServerOptions),
) -> BatchCluster {
    let c = InProc::start(3, tweak).await;
    let client = client_of(&c);
    namespace(&client, ns).await;
    BatchCluster {
        kubelet: fake_kubelet(client.clone()),
        jobs: Api::namespaced(client.clone(), ns),
        pods: Api::namespaced(client.clone(), ns),
        client,
        c,
    }
}

pub(crate) fn fake_kubelet(client: Client) -> JoinHandle<()> {
    let all = Api::<Pod>::all(client.clone());
    tokio::spawn(async move {
        let mut started: HashMap<String, (Instant, Outcome)> = HashMap::new();
        let mut once = HashSet::new();
        loop {
            if let Ok(list) = all.list().await {
                for p in &list.items {
                    let ns = p.metadata.namespace.clone().unwrap_or_default();
                    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    if p.metadata.deletion_timestamp.is_some() {
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            ..Default::default()
                        };
                        let _ = pods.delete(&name, &dp).await;
                        continue;
                    }
                    let mut next = p.clone();
                    match phase(p) {
                        "Pending" => {
                            // Decided once per pod, even if this write
                            // loses to another and is made again.
                            let o = match started.get(&uid) {
                                Some((_, o)) => *o,
                                None => outcome(p, &mut once),
                            };
                            started.insert(uid, (Instant::now(), o));
                            next.status = Some(running_status());
                        }
                        "Running" => {
                            let Some((since, o)) = started.get(&uid).copied() else {
                                continue;
                            };
                            if o == Outcome::Hang || since.elapsed() < RUN {
                                continue;
                            }
                            next.status = Some(ended_status(o));
                        }
                        _ => continue,
                    }
                    // A conflict: something else wrote first; next pass.
                    let _ = pods.replace_status(&next, &PostParams::default()).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
}

/// What the pod watch saw: the most active pods of each job at once, when
/// each pod appeared, when it was first seen Failed, and when first without
/// the job-tracking finalizer.
#[derive(Default)]
pub(crate) struct Seen {
    most_active: HashMap<String, usize>,
    pub(crate) appeared: HashMap<String, Instant>,
    pub(crate) failed: HashMap<String, Instant>,
    pub(crate) released: HashMap<String, Instant>,
}

pub(crate) struct PodWatch {
    pub(crate) seen: Arc<Mutex<Seen>>,
    tasks: Vec<JoinHandle<()>>,
}

impl PodWatch {
    pub(crate) fn start(client: &Client, ns: &str) -> Self {
        let informer = Informer::new(Api::<Pod>::namespaced(client.clone(), ns));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut changes = informer.subscribe();
        let store = informer.store();
        let i = informer.clone();
        let run = tokio::spawn(async move { i.run().await });
        let s = seen.clone();
        let observe = tokio::spawn(async move {
            while let Ok(change) = changes.recv().await {
                let mut seen = s.lock().expect("watch state");
                if let Change::Applied(p) = &change {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    seen.appeared
                        .entry(name.clone())
                        .or_insert_with(Instant::now);
                    if phase(p) == "Failed" {
                        seen.failed.entry(name.clone()).or_insert_with(Instant::now);
                    }
                    let tracked = p
                        .metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == TRACKING_FINALIZER);
                    if !tracked {
                        seen.released.entry(name).or_insert_with(Instant::now);
                    }
                }
                let mut per_job: HashMap<String, usize> = HashMap::new();
                for p in store.state().iter().filter(|p| is_active(p)) {
                    *per_job.entry(label(p, JOB_NAME)).or_default() += 1;
                }
                for (job, n) in per_job {
                    let m = seen.most_active.entry(job).or_default();
                    *m = (*m).max(n);
                }
            }
        });
        Self {
            seen,
            tasks: vec![run, observe],
        }
    }

    pub(crate) fn most_active(&self, job: &str) -> usize {
        self.seen
            .lock()
            .expect("watch state")
            .most_active
            .get(job)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub(crate) fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(BTreeMap::from([("app".to_string(), "batch".to_string())])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            containers: vec![Container {
                name: "c".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

pub(crate) fn job(name: &str, spec: JobSpec) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

pub(crate) fn condition(j: &Job, ty: &str) -> Option<(Option<String>, Option<String>)> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty && c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

pub(crate) async fn finished(jobs: &Api<Job>, name: &str, ty: &str) -> Job {
    eventually(&format!("job {name} {ty}"), || async {
        let j = jobs.get(name).await.ok()?;
        condition(&j, ty).is_some().then_some(j)
    })
    .await
}

pub(crate) async fn pods_of(pods: &Api<Pod>, job: &str) -> Vec<Pod> {
    let mut list: Vec<Pod> = pods
        .list()
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| label(p, JOB_NAME) == job)
        .collect();
    list.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    list
}

/// Writes a pod's status, again on a conflict (the scheduler writes too).
pub(crate) async fn set_status(pods: &Api<Pod>, name: &str, status: PodStatus) {
    for _ in 0..50 {
        let mut p = pods.get(name).await.expect("get pod");
        p.status = Some(status.clone());
        match pods.replace_status(&p, &PostParams::default()).await {
            Ok(_) => return,
            Err(e) if e.code() == 409 => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("status of {name}: {e}"),
        }
    }
    panic!("status of {name}: conflicts without end");
}

pub(crate) fn no_finalizers_left(pods: &[Pod]) {
    for p in pods {
        assert!(
            !p.metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == TRACKING_FINALIZER),
            "{:?} still holds the tracking finalizer",
            p.metadata.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_complete_within_parallelism_indexed_and_after_suspension() {
    let BatchCluster {
        c,
        client,
        kubelet,
        jobs,
        pods,
    } = batch_cluster("batch", |_| {}).await;
    let watch = PodWatch::start(&client, "batch");
    let pp = PostParams::default();

    // Admission: the generated selector and labels.
    let created = jobs
        .create(
            &job(
                "pi",
                JobSpec {
                    completions: Some(5),
                    parallelism: Some(2),
                    template: template("ok"),
                    ..Default::default()
                },
            ),
            &pp,
        )
        .await
        .expect("create pi");
    let uid = created.metadata.uid.clone().unwrap();
    let spec = created.spec.clone().unwrap();
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap(),
        BTreeMap::from([(
            "batch.kubernetes.io/controller-uid".to_string(),
            uid.clone()
        )])
    );
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
        ("controller-uid", uid.as_str()),
        (JOB_NAME, "pi"),
        ("job-name", "pi"),
        ("app", "batch"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
    }
    // A selector of one's own without manualSelector is refused.
    let mut own = job(
        "own",
        JobSpec {
            template: template("ok"),
            ..Default::default()
        },
    );
    own.spec.as_mut().unwrap().selector = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_string(), "batch".to_string())])),
            ..Default::default()
        },
    );
    let e = jobs.create(&own, &pp).await.expect_err("own selector");
    assert_eq!((e.code(), e.reason), (422, Reason::Invalid));
    assert_eq!(e.causes[0].field, "spec.selector");

    // Indexed: every index once, index 2 fails the first time and is retried.
    jobs.create(
        &job(
            "idx",
            JobSpec {
                completions: Some(4),
                parallelism: Some(2),
                completion_mode: Some("Indexed".into()),
                template: template("fail-index-2-once"),
                ..Default::default()
            },
        ),
        &pp,
    )
    .await
    .expect("create idx");

    // Suspended: no pods until resumed.
    jobs.create(
        &job(
            "later",
            JobSpec {
                suspend: Some(true),
                template: template("ok"),
                ..Default::default()
            },
        ),
        &pp,
    )
    .await
    .expect("create later");

    let pi = finished(&jobs, "pi", "Complete").await;
    let s = pi.status.clone().unwrap();
    assert_eq!(s.succeeded, Some(5));
    assert_eq!(s.failed, None);
    assert_eq!(s.active, None);
    assert_eq!(s.ready, Some(0));
    assert!(s.start_time.is_some() && s.completion_time.is_some());
    assert!(
        condition(&pi, "SuccessCriteriaMet").is_some(),
        "SuccessCriteriaMet before Complete"
    );
    assert_eq!(
        condition(&pi, "Complete"),
        Some((
            Some("CompletionsReached".into()),
            Some("Reached expected number of succeeded pods".into())
        ))
    );
    // `kubectl describe job` shows the job controller's words.
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), "batch");
    eventually("job events recorded", || async {
        let list = events.list().await.ok()?.items;
        let said = |reason: &str, prefix: &str| {
            list.iter().any(|e| {
                e.involved_object.name.as_deref() == Some("pi")
                    && e.source.as_ref().and_then(|s| s.component.as_deref())
                        == Some("job-controller")
                    && e.reason.as_deref() == Some(reason)
                    && e.message.as_deref().is_some_and(|m| m.starts_with(prefix))
            })
        };
        (said("SuccessfulCreate", "Created pod: pi-") && said("Completed", "Job completed"))
            .then_some(())
    })
    .await;
    let pi_pods = pods_of(&pods, "pi").await;
    assert_eq!(pi_pods.len(), 5, "one pod per completion");
    assert!(pi_pods.iter().all(|p| phase(p) == "Succeeded"));
    no_finalizers_left(&pi_pods);
    let most = watch.most_active("pi");
    assert!(
        (1..=2).contains(&most),
        "{most} pods active at once, parallelism is 2"
    );

    let idx = finished(&jobs, "idx", "Complete").await;
    let s = idx.status.clone().unwrap();
    assert_eq!(s.completed_indexes.as_deref(), Some("0-3"));
    assert_eq!((s.succeeded, s.failed), (Some(4), Some(1)));
    let idx_pods = pods_of(&pods, "idx").await;
    assert_eq!(idx_pods.len(), 5, "four indexes, index 2 twice");
    let mut by_index: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in &idx_pods {
        let i = p.metadata.annotations.as_ref().unwrap()
            ["batch.kubernetes.io/job-completion-index"]
            .clone();
        assert_eq!(label(p, "batch.kubernetes.io/job-completion-index"), i);
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{i}").as_str()));
        assert!(p
            .metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with(&format!("idx-{i}-")));
        let env = spec.containers[0].env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX"));
        by_index.entry(i).or_default().push(p);
    }
    assert_eq!(
        by_index.keys().cloned().collect::<Vec<_>>(),
        ["0", "1", "2", "3"]
    );
    assert_eq!(by_index["2"].len(), 2);
    assert!(watch.most_active("idx") <= 2);
    no_finalizers_left(&idx_pods);

    // The suspended job never ran; resumed, it runs and completes.
    let later = jobs.get("later").await.unwrap();
    assert!(pods_of(&pods, "later").await.is_empty());
    assert_eq!(
        condition(&later, "Suspended"),
        Some((Some("JobSuspended".into()), Some("Job suspended".into())))
    );
    assert!(later.status.as_ref().unwrap().start_time.is_none());
    jobs.patch(
        "later",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    let later = finished(&jobs, "later", "Complete").await;
    let resumed = later
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Suspended")
        .unwrap();
    assert_eq!(
        (resumed.status.as_str(), resumed.reason.as_deref()),
        ("False", Some("JobResumed"))
    );
    assert_eq!(later.status.unwrap().succeeded, Some(1));

    kubelet.abort();
    drop(watch);
    c.shutdown().await;
}

/// Elastic Indexed Jobs: completions may change together with an equal
/// parallelism (the pods of indexes beyond it go, new indexes start); any
/// other change of completions, or of the template, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn indexed_jobs_scale_elastically_and_keep_the_rest_fixed() {
    let BatchCluster {
        c: _c,
        client: _,
        kubelet,
        jobs,
        pods,
    } = batch_cluster("elastic", |_| {}).await;
    let spec = JobSpec {
        completions: Some(4),
        parallelism: Some(4),
        completion_mode: Some("Indexed".into()),
        template: template("hang"),
        ..Default::default()
    };
    jobs.create(&job("grow", spec), &PostParams::default())
        .await
        .expect("create job");
    let running_indexes = |want: &'static [&'static str]| {
        let pods = pods.clone();
        async move {
            let mut got: Vec<String> = pods_of(&pods, "grow")
                .await
                .iter()
                .filter(|p| is_active(p) && p.metadata.deletion_timestamp.is_none())
                .map(|p| label(p, "batch.kubernetes.io/job-completion-index"))
                .collect();
            got.sort();
            (got == want).then_some(())
        }
    };
    eventually("indexes 0-3 running", || {
        running_indexes(&["0", "1", "2", "3"])
    })
    .await;

    let scale = |completions: i32, parallelism: i32| {
        let jobs = jobs.clone();
        async move {
            let patch = json!({"spec": {"completions": completions, "parallelism": parallelism}});
            jobs.patch("grow", &PatchParams::default(), &Patch::Merge(patch))
                .await
        }
    };
    let err = scale(2, 4).await.expect_err("completions alone");
    assert_eq!(err.code(), 422);
    assert!(
        err.message
            .contains("spec.completions: Invalid value: 2: field is immutable"),
        "{}",
        err.message
    );
    scale(2, 2).await.expect("shrink elastically");
    eventually("indexes 2 and 3 gone", || running_indexes(&["0", "1"])).await;
    scale(3, 3).await.expect("grow elastically");
    eventually("index 2 back", || running_indexes(&["0", "1", "2"])).await;

    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "ok"}]}}}});
    let err = jobs
        .patch("grow", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect_err("template");
    assert_eq!(err.code(), 422);
    assert!(
        err.message.contains("spec.template: Invalid value:")
            && err.message.contains("field is immutable"),
        "{}",
        err.message
    );
    kubelet.abort();
}

/// backoffLimitPerIndex: an index is retried up to its own limit (the
/// retry carries the failures so far), then marked failed while the other
/// indexes finish; the Job then fails with FailedIndexes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn indexed_jobs_retry_and_fail_per_index() {
    let BatchCluster {
        c: _c,
        client: _,
        kubelet,
        jobs,
        pods,
    } = batch_cluster("per-index", |o| {
        o.controllers.job_backoff = (Duration::from_millis(100), Duration::from_secs(1))
    })
    .await;
    let spec = |limit: i32| JobSpec {
        completions: Some(3),
        parallelism: Some(3),
        completion_mode: Some("Indexed".into()),
        backoff_limit_per_index: Some(limit),
        template: template("fail-index-1-once"),
        ..Default::default()
    };
    let pp = PostParams::default();
    // Limit 1: index 1 fails once and its retry succeeds.
    let created = jobs
        .create(&job("retried", spec(1)), &pp)
        .await
        .expect("create job");
    assert_eq!(created.spec.unwrap().backoff_limit, Some(i32::MAX));
    let j = finished(&jobs, "retried", "Complete").await;
    let st = j.status.unwrap();
    assert_eq!((st.succeeded, st.failed), (Some(3), Some(1)));
    assert_eq!(st.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(st.failed_indexes.as_deref(), Some(""));
    // (Creation timestamps are to the second: order by the count instead.)
    let mut counts: Vec<(String, String, String)> = pods_of(&pods, "retried")
        .await
        .iter()
        .map(|p| {
            let a = p.metadata.annotations.clone().unwrap_or_default();
            (
                label(p, "batch.kubernetes.io/job-completion-index"),
                phase(p).to_string(),
                a.get("batch.kubernetes.io/job-index-failure-count")
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .filter(|(ix, _, _)| ix == "1")
        .collect();
    counts.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(
        counts,
        vec![
            ("1".into(), "Failed".into(), "0".into()),
            ("1".into(), "Succeeded".into(), "1".into())
        ]
    );

    // Limit 0: index 1 fails for good, 0 and 2 still finish, then the Job
    // fails.
    jobs.create(&job("one-failed", spec(0)), &pp)
        .await
        .expect("create job");
    let j = finished(&jobs, "one-failed", "Failed").await;
    assert_eq!(
        condition(&j, "Failed"),
        Some((
            Some("FailedIndexes".into()),
            Some("Job has failed indexes".into())
        ))
    );
    let st = j.status.unwrap();
    assert_eq!(st.failed_indexes.as_deref(), Some("1"));
    assert_eq!(st.completed_indexes.as_deref(), Some("0,2"));
    assert_eq!(
        pods_of(&pods, "one-failed").await.len(),
        3,
        "no retry of index 1"
    );
    kubelet.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_fail_by_backoff_limit_deadline_and_pod_failure_policy() {
    let BatchCluster {
        c,
        client,
        kubelet,
        jobs,
        pods,
    } = batch_cluster("fail", |o| {
        o.controllers.job_backoff = (Duration::from_secs(3), Duration::from_secs(6));
    })
    .await;
    let watch = PodWatch::start(&client, "fail");
    let pp = PostParams::default();

    // Each pod fails: retried after 3 s, then 6 s; the third failure is
    // beyond backoffLimit 2.
    let backoff = JobSpec {
        backoff_limit: Some(2),
        template: template("exit-1"),
        ..Default::default()
    };
    jobs.create(&job("flaky", backoff), &pp).await.unwrap();
    // Never finishes: the deadline ends it.
    let deadline = JobSpec {
        parallelism: Some(2),
        completions: Some(2),
        active_deadline_seconds: Some(2),
        template: template("hang"),
        ..Default::default()
    };
    jobs.create(&job("slow", deadline), &pp).await.unwrap();
    // Exit 42 fails the job at once; a disruption is not counted.
    let policy = PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    operator: "In".into(),
                    values: vec![42],
                    ..Default::default()
                }),
                ..Default::default()
            },
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                }]),
                ..Default::default()
            },
        ],
    };
    let fatal = JobSpec {
        backoff_limit: Some(6),
        pod_failure_policy: Some(policy.clone()),
        template: template("exit-42"),
        ..Default::default()
    };
    jobs.create(&job("fatal", fatal), &pp).await.unwrap();
    let disrupted = JobSpec {
        backoff_limit: Some(0),
        pod_failure_policy: Some(policy),
        template: template("disrupt-once"),
        ..Default::default()
    };
    jobs.create(&job("disrupted", disrupted), &pp)
        .await
        .unwrap();

    let slow = finished(&jobs, "slow", "Failed").await;
    assert_eq!(
        condition(&slow, "Failed"),
        Some((
            Some("DeadlineExceeded".into()),
            Some("Job was active longer than specified deadline".into())
        ))
    );
    assert_eq!(
        condition(&slow, "FailureTarget").map(|c| c.0),
        Some(Some("DeadlineExceeded".into()))
    );
    let s = slow.status.clone().unwrap();
    assert_eq!(
        (s.active, s.failed),
        (None, Some(2)),
        "both running pods stopped and counted"
    );
    eventually("the deadline job's pods gone", || async {
        pods_of(&pods, "slow").await.is_empty().then_some(())
    })
    .await;

    let fatal = finished(&jobs, "fatal", "Failed").await;
    let (reason, message) = condition(&fatal, "Failed").unwrap();
    assert_eq!(reason.as_deref(), Some("PodFailurePolicy"));
    assert!(
        message
            .as_deref()
            .unwrap()
            .contains("failed with exit code 42 matching FailJob rule at index 0"),
        "{message:?}"
    );
    assert_eq!(fatal.status.unwrap().failed, Some(1));
    assert_eq!(
        pods_of(&pods, "fatal").await.len(),
        1,
        "no retry after FailJob"
    );

    let disrupted = finished(&jobs, "disrupted", "Complete").await;
    let s = disrupted.status.unwrap();
    assert_eq!(
        (s.succeeded, s.failed),
        (Some(1), None),
        "the disruption was ignored"
    );
    assert_eq!(pods_of(&pods, "disrupted").await.len(), 2);

    let flaky = finished(&jobs, "flaky", "Failed").await;
    assert_eq!(
        condition(&flaky, "Failed"),
        Some((
            Some("BackoffLimitExceeded".into()),
            Some("Job has reached the specified backoff limit".into())
        ))
    );
    assert_eq!(flaky.status.clone().unwrap().failed, Some(3));
    let tries = pods_of(&pods, "flaky").await;
    assert_eq!(tries.len(), 3, "one try and two retries");
    no_finalizers_left(&tries);
    assert_eq!(watch.most_active("flaky"), 1);
    // The retries waited the backoff (the pod's finish time is whole
    // seconds, so each wait may be up to a second short).
    let (first, second) = {
        let seen = watch.seen.lock().expect("watch state");
        let name = |p: &Pod| p.metadata.name.clone().unwrap();
        let gap = |failed: &Pod, next: &Pod| {
            seen.appeared[&name(next)].duration_since(seen.failed[&name(failed)])
        };
        (gap(&tries[0], &tries[1]), gap(&tries[1], &tries[2]))
    };
    assert!(
        first >= Duration::from_millis(1500),
        "first retry after {first:?}"
    );
    assert!(
        second >= Duration::from_millis(4500),
        "second retry after {second:?}"
    );

    kubelet.abort();
    drop(watch);
    c.shutdown().await;
}

fn cronjob(name: &str, schedule: &str, policy: &str, image: &str) -> CronJob {
    CronJob {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(CronJobSpec {
            schedule: schedule.into(),
            concurrency_policy: Some(policy.into()),
            successful_jobs_history_limit: Some(2),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(BTreeMap::from([("cron".to_string(), name.to_string())])),
                    ..Default::default()
                }),
                spec: Some(JobSpec {
                    template: template(image),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn minute(t: Timestamp) -> i64 {
    t.as_second().div_euclid(60)
}

/// The Jobs a CronJob made, by name.
async fn jobs_of(jobs: &Api<Job>, cron: &str) -> Vec<String> {
    let mut names: Vec<String> = jobs
        .list()
        .await
        .expect("list jobs")
        .items
        .into_iter()
        .filter(|j| {
            j.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("cron"))
                .map(String::as_str)
                == Some(cron)
        })
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter_map(|j| j.metadata.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cronjobs_start_jobs_at_their_times_on_a_fake_clock() {
    let start = balsa_api::clock::now_to_second();
    let clock = Clock::fake(start);
    let shared = clock.clone();
    let c = InProc::start(3, move |o| o.controllers.clock = shared.clone()).await;
    let client = client_of(&c);
    namespace(&client, "cron").await;
    let kubelet = fake_kubelet(client.clone());
    let cjs = Api::<CronJob>::namespaced(client.clone(), "cron");
    let jobs = Api::<Job>::namespaced(client.clone(), "cron");
    let pp = PostParams::default();

    // A bad schedule is refused at create time.
    let e = cjs
        .create(&cronjob("bad", "61 * * * *", "Allow", "ok"), &pp)
        .await
        .expect_err("bad schedule");
    assert_eq!((e.code(), e.reason), (422, Reason::Invalid));
    assert_eq!(e.causes[0].field, "spec.schedule");
    assert!(
        e.causes[0]
            .message
            .contains("minute field \"61\": 61 is above the maximum 59"),
        "{:?}",
        e.causes
    );
    let mut zoned = cronjob("zoned", "0 9 * * *", "Allow", "ok");
    zoned.spec.as_mut().unwrap().time_zone = Some("Mars/Olympus".into());
    let e = cjs.create(&zoned, &pp).await.expect_err("bad zone");
    assert_eq!(e.causes[0].field, "spec.timeZone");

    // The three are created within one minute, so they share a first start.
    while balsa_api::clock::now().as_second().rem_euclid(60) >= 55 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let every = cjs
        .create(&cronjob("every", "* * * * *", "Allow", "ok"), &pp)
        .await
        .unwrap();
    cjs.create(&cronjob("forbid", "* * * * *", "Forbid", "hang"), &pp)
        .await
        .unwrap();
    cjs.create(&cronjob("replace", "* * * * *", "Replace", "hang"), &pp)
        .await
        .unwrap();
    let created = every.metadata.creation_timestamp.unwrap().0;
    // The first start: the minute after creation.
    let first = Timestamp::from_second((minute(created) + 1) * 60).unwrap();

    // Just before it: nothing.
    clock.set(Timestamp::from_second(first.as_second() - 1).unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        jobs_of(&jobs, "every").await.is_empty(),
        "nothing before the first start"
    );

    // At it: one job each, named by the minute.
    clock.set(first);
    let want = format!("every-{}", minute(first));
    eventually("the first job", || async {
        (jobs_of(&jobs, "every").await == [want.clone()]).then_some(())
    })
    .await;
    let j = jobs.get(&want).await.unwrap();
    assert_eq!(
        j.metadata.annotations.as_ref().unwrap()["batch.kubernetes.io/cronjob-scheduled-timestamp"],
        first.to_string()
    );
    let cj = eventually("every: lastScheduleTime and lastSuccessfulTime", || async {
        let cj = cjs.get("every").await.ok()?;
        let s = cj.status.clone()?;
        (s.last_schedule_time.as_ref().map(|t| t.0) == Some(first)
            && s.last_successful_time.is_some()
            && s.active.is_none())
        .then_some(cj)
    })
    .await;
    assert!(cj.status.unwrap().last_successful_time.is_some());
    let forbid_first = format!("forbid-{}", minute(first));
    let replace_first = format!("replace-{}", minute(first));
    eventually("forbid and replace start their first jobs", || async {
        let f = jobs_of(&jobs, "forbid").await == [forbid_first.clone()];
        let r = jobs_of(&jobs, "replace").await == [replace_first.clone()];
        let active = cjs.get("forbid").await.ok()?.status?.active?.len() == 1;
        (f && r && active).then_some(())
    })
    .await;

    // Three more minutes, one at a time: `every` keeps two successful jobs
    // (its history limit); Forbid never starts a second while the first
    // runs; Replace swaps its running job for the new one.
    for k in 2..=4 {
        let t = Timestamp::from_second(first.as_second() + (k - 1) * 60).unwrap();
        clock.set(t);
        let newest = format!("every-{}", minute(t));
        let replaced = format!("replace-{}", minute(t));
        eventually(&format!("minute {k}"), || async {
            let every = jobs_of(&jobs, "every").await;
            let replace = jobs_of(&jobs, "replace").await;
            let done = jobs
                .get(&newest)
                .await
                .ok()
                .and_then(|j| condition(&j, "Complete"))
                .is_some();
            (every.contains(&newest) && every.len() <= 2 && done && replace == [replaced.clone()])
                .then_some(())
        })
        .await;
        assert_eq!(
            jobs_of(&jobs, "forbid").await,
            std::slice::from_ref(&forbid_first),
            "Forbid at minute {k}"
        );
    }
    eventually("history: the two newest successful jobs", || async {
        let every = jobs_of(&jobs, "every").await;
        let want = [
            format!("every-{}", minute(first) + 2),
            format!("every-{}", minute(first) + 3),
        ];
        (every == want).then_some(())
    })
    .await;

    // Suspended: the next minute passes without a job; resumed, the missed
    // start runs (it is the latest one).
    cjs.patch(
        "every",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    eventually("suspend seen", || async {
        cjs.get("every").await.ok()?.spec?.suspend?.then_some(())
    })
    .await;
    // Give the controller's cache a moment to see it too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t5 = Timestamp::from_second(first.as_second() + 4 * 60).unwrap();
    clock.set(t5);
    let missed = format!("every-{}", minute(t5));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !jobs_of(&jobs, "every").await.contains(&missed),
        "no job while suspended"
    );
    cjs.patch(
        "every",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    eventually("the missed start runs once resumed", || async {
        jobs_of(&jobs, "every")
            .await
            .contains(&missed)
            .then_some(())
    })
    .await;

    kubelet.abort();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finished_jobs_expire_and_pod_gc_cleans_up() {
    let BatchCluster {
        c,
        client,
        kubelet,
        jobs,
        pods,
    } = batch_cluster("gc", |o| {
        o.controllers.pod_gc.period = Duration::from_millis(200);
        o.controllers.pod_gc.quarantine = Duration::from_secs(1);
        o.controllers.pod_gc.terminated_threshold = 3;
    })
    .await;
    let pp = PostParams::default();

    // TTL: deleted two seconds after it completes, with its pods.
    let spec = JobSpec {
        ttl_seconds_after_finished: Some(2),
        template: template("ok"),
        ..Default::default()
    };
    jobs.create(&job("brief", spec), &pp).await.unwrap();
    let done = finished(&jobs, "brief", "Complete").await;
    let completed = done
        .status
        .unwrap()
        .completion_time
        .expect("completionTime")
        .0;
    eventually("the finished job deleted after its TTL", || async {
        jobs.get_opt("brief").await.ok()?.is_none().then_some(())
    })
    .await;
    // completionTime has whole seconds (truncated), as the TTL controller
    // reads it: the deletion comes at least the TTL after it. (Measured from
    // when this test saw Complete, a slow watch would make it look early.)
    let deleted_by = Timestamp::now();
    assert!(
        deleted_by.duration_since(completed) >= k8s_openapi::jiff::SignedDuration::from_secs(2),
        "deleted before its TTL: completed {completed}, gone by {deleted_by}"
    );
    eventually("its pods deleted with it", || async {
        pods_of(&pods, "brief").await.is_empty().then_some(())
    })
    .await;
    kubelet.abort();

    // Terminated pods above the threshold (3): the oldest go.
    for i in 0..5 {
        let p = Pod {
            metadata: ObjectMeta {
                name: Some(format!("done-{i}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("ok".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        };
        let p = pods.create(&p, &pp).await.unwrap();
        set_status(
            &pods,
            p.metadata.name.as_deref().unwrap(),
            ended_status(Outcome::Succeed),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("terminated pods down to the threshold", || async {
        let names: Vec<String> = pods
            .list()
            .await
            .ok()?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        let mut names: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| n.starts_with("done-"))
            .collect();
        names.sort();
        (names == ["done-2", "done-3", "done-4"]).then_some(())
    })
    .await;

    // Pods bound to a node that is deleted: marked Failed and deleted.
    let nodes = Api::<Node>::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some("doomed-node".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    nodes.create(&node, &pp).await.unwrap();
    for i in 0..2 {
        let p = Pod {
            metadata: ObjectMeta {
                name: Some(format!("stranded-{i}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("doomed-node".into()),
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("hang".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        };
        let p = pods.create(&p, &pp).await.unwrap();
        set_status(&pods, p.metadata.name.as_deref().unwrap(), running_status()).await;
    }
    // Still there while the node exists.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(pods.get_opt("stranded-0").await.unwrap().is_some());
    let deleted_at = Instant::now();
    nodes
        .delete("doomed-node", &DeleteParams::default())
        .await
        .unwrap();
    eventually("pods of the deleted node gone", || async {
        let left = pods.list().await.ok()?.items;
        (!left.iter().any(|p| {
            p.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .starts_with("stranded-")
        }))
        .then_some(())
    })
    .await;
    assert!(
        deleted_at.elapsed() >= Duration::from_millis(900),
        "deleted before the quarantine"
    );
    c.shutdown().await;
}

fn script(command: &str) -> PodTemplateSpec {
    let mut t = template("busybox");
    if let Some(spec) = t.spec.as_mut() {
        spec.termination_grace_period_seconds = Some(2);
        spec.containers[0].command = Some(vec!["sh".into(), "-c".into(), command.into()]);
    }
    t
}

/// The whole path: the scheduler binds the Job's pods to a node agent on
/// the process runtime, whose phases (from the commands' exit codes) the
/// Job controller counts; an Indexed pod reads its index from the env.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_run_on_a_node_agent() {
    use balsa_node::agent::{Agent, AgentConfig};
    use balsa_node::ProcessRuntime;

    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "real").await;
    let root = tempfile::tempdir().expect("root");
    let masters: Vec<String> = (0..3).map(|i| c.server(i).api_addr.to_string()).collect();
    let runtime = Arc::new(ProcessRuntime::new(root.path(), "127.0.0.1"));
    let mut config = AgentConfig::new("worker", masters, root.path(), runtime);
    config.heartbeat = Duration::from_millis(500);
    crate::harness::without_pressure(&mut config);
    let agent = Agent::start(config).await.expect("agent");
    let jobs = Api::<Job>::namespaced(client.clone(), "real");
    let pods = Api::<Pod>::namespaced(client.clone(), "real");
    let pp = PostParams::default();

    let indexed = JobSpec {
        completions: Some(3),
        parallelism: Some(2),
        completion_mode: Some("Indexed".into()),
        template: script(r#"[ -n "$JOB_COMPLETION_INDEX" ] && echo "index $JOB_COMPLETION_INDEX""#),
        ..Default::default()
    };
    jobs.create(&job("indexed", indexed), &pp).await.unwrap();
    // kubectl waits for it as a user would.
    let kubeconfig = root.path().join("kubeconfig");
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
    let home = root.path().to_path_buf();
    let kubectl = move |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", &home)
            .output()
            .expect("kubectl runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let wait = {
        let kubectl = kubectl.clone();
        tokio::task::spawn_blocking(move || {
            kubectl(&[
                "wait",
                "--for=condition=complete",
                "job/indexed",
                "-n",
                "real",
                "--timeout=60s",
            ])
        })
    };
    let broken = JobSpec {
        backoff_limit: Some(0),
        template: script("exit 3"),
        ..Default::default()
    };
    jobs.create(&job("broken", broken), &pp).await.unwrap();

    let waited = wait.await.expect("kubectl wait");
    assert!(
        waited.contains("job.batch/indexed condition met"),
        "{waited}"
    );
    let done = finished(&jobs, "indexed", "Complete").await;
    let s = done.status.unwrap();
    assert_eq!(
        (s.succeeded, s.completed_indexes.as_deref()),
        (Some(3), Some("0-2"))
    );
    let ran = pods_of(&pods, "indexed").await;
    assert_eq!(ran.len(), 3);
    for p in &ran {
        assert_eq!(
            p.spec.as_ref().unwrap().node_name.as_deref(),
            Some("worker")
        );
        assert_eq!(phase(p), "Succeeded");
    }
    no_finalizers_left(&ran);

    let failed = finished(&jobs, "broken", "Failed").await;
    assert_eq!(
        condition(&failed, "Failed").and_then(|c| c.0).as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(failed.status.unwrap().failed, Some(1));
    let tried = pods_of(&pods, "broken").await;
    assert_eq!(tried.len(), 1);
    let exit = tried[0]
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c[0].state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    assert_eq!(exit, Some(3));

    // kubectl get jobs: kubectl's columns, from the server's Table.
    let table = kubectl(&["get", "jobs", "-n", "real"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        "{table}"
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l[0] == name)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(row("indexed")[1..3], ["Complete", "3/3"], "{table}");
    assert_eq!(row("broken")[1..3], ["Failed", "0/1"], "{table}");

    agent.stop(Some(Duration::from_secs(1))).await;
    c.shutdown().await;
}

/// The leader stops while a Job's pods are finishing: the next leader goes
/// on from the Job's status and the pods' finalizers, and every finished pod
/// is counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_finishes_across_a_leader_change() {
    let BatchCluster {
        mut c,
        client: _,
        kubelet,
        jobs,
        pods,
    } = batch_cluster("failover", |_| {}).await;
    let spec = JobSpec {
        completions: Some(8),
        parallelism: Some(2),
        template: template("ok"),
        ..Default::default()
    };
    jobs.create(&job("steady", spec), &PostParams::default())
        .await
        .unwrap();
    eventually("the first completions", || async {
        let s = jobs.get("steady").await.ok()?.status?;
        (s.succeeded.unwrap_or(0) >= 2).then_some(())
    })
    .await;
    let leader = c.wait_leader(&[]).await;
    c.stop(leader).await;
    c.wait_leader(&[leader]).await;

    let done = finished(&jobs, "steady", "Complete").await;
    let s = done.status.unwrap();
    let ran = pods_of(&pods, "steady").await;
    let succeeded = ran.iter().filter(|p| phase(p) == "Succeeded").count() as i32;
    assert!(s.succeeded >= Some(8), "{:?}", s.succeeded);
    assert_eq!(
        s.succeeded,
        Some(succeeded),
        "each finished pod counted once"
    );
    assert_eq!(
        s.uncounted_terminated_pods.unwrap_or_default().succeeded,
        None
    );
    no_finalizers_left(&ran);
    kubelet.abort();
    c.shutdown().await;
}
