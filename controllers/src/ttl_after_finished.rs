//! The TTL-after-finished controller: deletes a finished Job (Complete or
//! Failed) `spec.ttlSecondsAfterFinished` after it finished, with
//! Background propagation so the garbage collector takes its pods.
//!
//! The finish time is the Complete/Failed condition's lastTransitionTime.
//! Before deleting, the Job is read again from the API: a TTL that was just
//! raised, or a Job replaced by another of the same name, is not deleted on
//! a stale cache's word.

use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::{Action, Api, Client, DeleteParams, ObjectKey};
use balsa_api::clock::Clock;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::Error;

pub struct Ctx {
    pub client: Client,
    pub clock: Clock,
}

/// When the job may be deleted, if it has a TTL and has finished.
pub fn expires_at(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = job
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let at = finished.last_transition_time.as_ref()?.0;
    at.checked_add(SignedDuration::from_secs(ttl as i64)).ok()
}

/// Whether to delete now, or how long to wait.
pub fn due(job: &Job, now: Timestamp) -> Option<Result<(), Duration>> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let at = expires_at(job)?;
    if at <= now {
        Some(Ok(()))
    } else {
        Some(Err(
            Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
        ))
    }
}

pub async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = ObjectKey::of(&*job);
    match due(&job, ctx.clock.now()) {
        None => return Ok(Action::await_change()),
        Some(Err(wait)) => return Ok(Action::requeue(wait.max(Duration::from_millis(100)))),
        Some(Ok(())) => {}
    }
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let api = Api::<Job>::namespaced(ctx.client.clone(), &ns);
    let Some(fresh) = api
        .get_opt(&name)
        .await
        .map_err(Error::api("reading job", key.to_string()))?
    else {
        return Ok(Action::await_change());
    };
    if fresh.metadata.uid != job.metadata.uid {
        return Ok(Action::await_change());
    }
    match due(&fresh, ctx.clock.now()) {
        None => return Ok(Action::await_change()),
        Some(Err(wait)) => return Ok(Action::requeue(wait.max(Duration::from_millis(100)))),
        Some(Ok(())) => {}
    }
    let dp = DeleteParams {
        propagation_policy: Some("Background".into()),
        uid: fresh.metadata.uid.clone(),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {
            tracing::info!(job = %key, "deleted a finished job after its ttlSecondsAfterFinished");
            Ok(Action::await_change())
        }
        Err(e) if e.code() == 404 => Ok(Action::await_change()),
        Err(e) => Err(Error::api("deleting expired job", key.to_string())(e)),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn job(ttl: Option<i32>, finished: Option<(&str, i64)>) -> Job {
        Job {
            metadata: Default::default(),
            spec: Some(JobSpec {
                ttl_seconds_after_finished: ttl,
                ..Default::default()
            }),
            status: finished.map(|(ty, at)| JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: ty.into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(t(at))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn finished_jobs_expire_after_their_ttl() {
        assert_eq!(
            due(&job(Some(60), Some(("Complete", 0))), t(30)),
            Some(Err(Duration::from_secs(30)))
        );
        assert_eq!(
            due(&job(Some(60), Some(("Failed", 0))), t(60)),
            Some(Ok(()))
        );
        assert_eq!(
            due(&job(Some(0), Some(("Complete", 10))), t(10)),
            Some(Ok(()))
        );
        assert_eq!(
            due(&job(None, Some(("Complete", 0))), t(999)),
            None,
            "no ttl"
        );
        assert_eq!(due(&job(Some(1), None), t(999)), None, "not finished");
        assert_eq!(
            due(&job(Some(1), Some(("SuccessCriteriaMet", 0))), t(999)),
            None
        );
        let mut deleting = job(Some(1), Some(("Complete", 0)));
        deleting.metadata.deletion_timestamp = Some(Time(t(5)));
        assert_eq!(due(&deleting, t(999)), None);
    }
}
