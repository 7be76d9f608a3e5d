//! Releases the job-tracking finalizer from pods no Job will count any
//! more: their Job is gone (deleted, or replaced by one of the same name),
//! finished, or they have no controller at all (upstream's orphan queue).
//! Without this a deleted Job's pods would stay Terminating forever.
//!
//! The job cache can lag behind the pod cache (a pod may be seen before the
//! Job that created it), so a Job missing from the cache is looked up on
//! the API before its pod is released.

use std::sync::Arc;

use balsa_api::client::{Action, Api, Client, ObjectKey, Store};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use super::{finished, has_finalizer, managed_elsewhere, remove_finalizer};
use crate::{owners, Error};

pub struct Ctx {
    pub client: Client,
    pub jobs: Store<Job>,
}

/// What to do with a pod holding the finalizer, given its controlling Job
/// as far as it is known.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// Its Job still counts it.
    Keep,
    Release,
    /// The cache does not know its Job: ask the API.
    LookUp,
}

pub fn fate(pod: &Pod, job: Option<&Job>) -> Fate {
    let Some(r) = owners::controller_of(pod) else {
        return Fate::Release;
    };
    if r.kind != "Job" || r.api_version != "batch/v1" {
        // Someone else's pod: not ours to touch.
        return Fate::Keep;
    }
    match job {
        None => Fate::LookUp,
        Some(j) if j.metadata.uid.as_deref() != Some(r.uid.as_str()) => Fate::Release,
        // Another controller's Job: its pods' finalizers are its business.
        Some(j) if managed_elsewhere(j).is_some() => Fate::Keep,
        Some(j) if finished(j).is_some() => Fate::Release,
        Some(_) => Fate::Keep,
    }
}

pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !has_finalizer(&pod) {
        return Ok(Action::await_change());
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let owner = owners::controller_of(&*pod).map(|r| r.name.clone());
    let cached = owner
        .as_ref()
        .and_then(|n| ctx.jobs.get(&ObjectKey::new(Some(&ns), n)));
    let mut decision = fate(&pod, cached.as_deref());
    if decision == Fate::LookUp {
        let name = owner.unwrap_or_default();
        let live = Api::<Job>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&name)
            .await
            .map_err(Error::api("reading the job of pod", name))?;
        decision = match fate(&pod, live.as_ref()) {
            Fate::LookUp => Fate::Release,
            other => other,
        };
    }
    if decision == Fate::Release {
        let api = Api::<Pod>::namespaced(ctx.client.clone(), &ns);
        remove_finalizer(&api, &pod).await?;
        tracing::debug!(pod = %ObjectKey::of(&*pod), "released an orphaned job pod");
    }
    Ok(Action::await_change())
}

/// The pods of `job` that still hold the finalizer: to look at again when
/// the Job finishes or goes.
pub fn pods_of(pods: &Store<Pod>, job: &Job) -> Vec<ObjectKey> {
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let ns = job.metadata.namespace.clone();
    pods.filter(|p| {
        p.metadata.namespace == ns
            && has_finalizer(p)
            && owners::controller_of(p).is_some_and(|r| r.uid == uid)
    })
    .iter()
    .map(|p| ObjectKey::of(&**p))
    .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    use super::*;

    fn job(uid: &str, done: bool) -> Job {
        let mut j = Job::default();
        j.metadata.name = Some("j".into());
        j.metadata.uid = Some(uid.into());
        if done {
            j.status = Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: "Complete".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            });
        }
        j
    }

    #[test]
    fn only_pods_of_gone_or_finished_jobs_are_released() {
        let live = job("u1", false);
        let mut pod = Pod::default();
        assert_eq!(fate(&pod, None), Fate::Release, "no controller");
        pod.metadata.owner_references = Some(vec![owners::controller_ref(&live)]);
        assert_eq!(fate(&pod, Some(&live)), Fate::Keep);
        assert_eq!(fate(&pod, None), Fate::LookUp);
        assert_eq!(
            fate(&pod, Some(&job("u2", false))),
            Fate::Release,
            "a new job of that name"
        );
        assert_eq!(fate(&pod, Some(&job("u1", true))), Fate::Release);
        let mut elsewhere = job("u1", true);
        elsewhere.spec = Some(k8s_openapi::api::batch::v1::JobSpec {
            managed_by: Some("example.com/queue".into()),
            ..Default::default()
        });
        assert_eq!(fate(&pod, Some(&elsewhere)), Fate::Keep);
        let mut foreign = Pod::default();
        let rs = k8s_openapi::api::apps::v1::ReplicaSet::default();
        foreign.metadata.owner_references = Some(vec![owners::controller_ref(&rs)]);
        assert_eq!(fate(&foreign, None), Fate::Keep);
    }
}
