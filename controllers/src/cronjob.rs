//! The CronJob controller: creates a Job at each time the schedule names
//! (in `spec.timeZone`), as kube-controller-manager's CronJob controller v2.
//!
//! ```text
//!  cronjob, its Jobs (cache), the clock
//!    └─ history: delete finished Jobs beyond successful/failedJobsHistoryLimit
//!    └─ status.active: drop finished or vanished Jobs; lastSuccessfulTime
//!    └─ the most recent missed start (since lastScheduleTime, or creation;
//!    │  not before now - startingDeadlineSeconds)
//!    │    none / too late / already started → wait for the next
//!    │    Forbid and one running → skip;  Replace → delete the running ones
//!    └─ create `<cronjob>-<start in minutes since the epoch>`: the name is
//!       the lock, a second attempt for the same start finds it
//!    └─ requeue at the next start (+100 ms)
//! ```
//!
//! Only the latest missed start runs (never a backlog); more than 100
//! missed starts is logged as clock skew or a too-long startingDeadline.
//! Time is `Ctx::clock`, so tests move it.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::events::{object_ref, EventType, Recorder};
use balsa_api::client::{Action, Api, Client, DeleteParams, ObjectKey, Store};
use balsa_api::clock::Clock;
use balsa_api::cron::{self, Schedule};
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::own_writes::OwnWrites;
use crate::owners::{self};
use crate::Error;

/// The annotation a created Job carries: its scheduled start, RFC 3339 in
/// the CronJob's time zone.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Requeue this long after a start, so a clock a little behind still sees it.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
/// Missed starts above which the controller says something is wrong.
pub const MANY_MISSED: usize = 100;

pub struct Ctx {
    pub client: Client,
    pub jobs: Store<Job>,
    pub clock: Clock,
    pub writes: OwnWrites,
    /// Records as `cronjob-controller`.
    pub recorder: Recorder,
}

// ---- pure decisions ----------------------------------------------------

/// `<cronjob>-<scheduled time in minutes since the epoch>` (upstream
/// getJobName): the same start always gets the same name.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// RFC 3339 in `tz`, `Z` for UTC, as Go's time.RFC3339.
pub fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// Start times missed since the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    /// Where counting started: lastScheduleTime or the creation time (or
    /// the starting deadline, when later).
    pub since: Timestamp,
    /// The latest start at or before now, if any was missed.
    pub latest: Option<Timestamp>,
    /// How many were missed (at least; exact up to MANY_MISSED).
    pub count: usize,
}

/// The starts of `sched` in `(since, now]` (upstream mostRecentScheduleTime,
/// counted exactly up to `MANY_MISSED`, then estimated as upstream does).
pub fn missed(
    cj: &CronJob,
    sched: &Schedule,
    tz: &TimeZone,
    now: Timestamp,
    with_deadline: bool,
) -> Result<Missed, String> {
    let status = cj.status.clone().unwrap_or_default();
    let mut since = status
        .last_schedule_time
        .map(|t| t.0)
        .or(cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let deadline = cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds);
    if let (true, Some(d)) = (with_deadline, deadline) {
        let cut = now
            .checked_sub(SignedDuration::from_secs(d))
            .unwrap_or(Timestamp::MIN);
        since = since.max(cut);
    }
    let none = |since| Missed {
        since,
        latest: None,
        count: 0,
    };
    let Some(first) = sched.next_after(since, tz) else {
        return Ok(none(since));
    };
    if now < first {
        return Ok(none(since));
    }
    let mut latest = first;
    let mut count = 1;
    while let Some(t) = sched.next_after(latest, tz).filter(|t| *t <= now) {
        latest = t;
        count += 1;
        if count > MANY_MISSED {
            break;
        }
    }
    if count <= MANY_MISSED {
        return Ok(Missed {
            since,
            latest: Some(latest),
            count,
        });
    }
    // Too many to walk: estimate from the spacing of the first two.
    let second = sched.next_after(first, tz).unwrap_or(first);
    let step = second.as_second() - first.as_second();
    if step < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    let elapsed = now.as_second() - first.as_second();
    let n = elapsed / step + 1;
    let from = Timestamp::from_second(first.as_second() + (n - 2) * step).unwrap_or(first);
    let mut latest = None;
    let mut t = sched.next_after(from, tz);
    while let Some(x) = t.filter(|x| *x <= now) {
        latest = Some(x);
        t = sched.next_after(x, tz);
    }
    Ok(Missed {
        since,
        latest,
        count: n.max(MANY_MISSED as i64 + 1) as usize,
    })
}

/// How long until the next start after the latest one (upstream
/// nextScheduleTimeDuration), padded by NEXT_SCHEDULE_DELTA.
pub fn until_next(
    cj: &CronJob,
    sched: &Schedule,
    tz: &TimeZone,
    now: Timestamp,
) -> Option<Duration> {
    let base = match missed(cj, sched, tz, now, false) {
        Err(_) => now,
        Ok(Missed {
            latest: Some(t), ..
        }) => t,
        Ok(Missed {
            since, count: 0, ..
        }) => since,
        Ok(_) => now,
    };
    let next = sched.next_after(base, tz)?;
    let wait = Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO);
    Some(wait + NEXT_SCHEDULE_DELTA)
}

fn job_state(j: &Job) -> Option<&'static str> {
    crate::job::finished(j)
}

/// The Jobs to delete so that at most `limit` finished ones of each kind
/// stay: the oldest started first, those never started last.
pub fn beyond_history(jobs: &[Arc<Job>], kind: &str, limit: Option<i32>) -> Vec<Arc<Job>> {
    let Some(limit) = limit else { return vec![] };
    let mut of_kind: Vec<Arc<Job>> = jobs
        .iter()
        .filter(|j| job_state(j) == Some(kind) && j.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    let excess = of_kind.len() as i64 - limit.max(0) as i64;
    if excess <= 0 {
        return vec![];
    }
    of_kind.sort_by(|a, b| {
        let start = |j: &Job| {
            j.status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0)
        };
        match (start(a), start(b)) {
            (Some(x), Some(y)) if x != y => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            _ => a.metadata.name.cmp(&b.metadata.name),
        }
    });
    of_kind.truncate(excess as usize);
    of_kind
}

/// The Job for the start at `scheduled`.
pub fn job_for(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let name = cj.metadata.name.clone().unwrap_or_default();
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339_in(scheduled, tz));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owners::controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn reference(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        field_path: None,
    }
}

// ---- reconcile ---------------------------------------------------------

pub async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = ObjectKey::of(&*cj);
    if !ctx.writes.caught_up(&*cj) {
        // Our last status write (a new Job in status.active) is on its way.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let ns = cj.metadata.namespace.clone().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let jobs_api = Api::<Job>::namespaced(ctx.client.clone(), &ns);
    let jobs: Vec<Arc<Job>> = ctx.jobs.filter(|j| {
        j.metadata.namespace.as_deref() == Some(ns.as_str())
            && owners::controller_of(j).is_some_and(|r| r.uid == uid)
    });
    let mut new = (*cj).clone();
    let spec = new.spec.clone().unwrap_or_default();
    let status = new.status.get_or_insert_with(Default::default);

    // History: the oldest finished Jobs beyond the limits go.
    let doomed: Vec<Arc<Job>> =
        beyond_history(&jobs, "Complete", spec.successful_jobs_history_limit)
            .into_iter()
            .chain(beyond_history(
                &jobs,
                "Failed",
                spec.failed_jobs_history_limit,
            ))
            .collect();
    for j in &doomed {
        delete_job(&jobs_api, j).await?;
    }
    let gone: Vec<String> = doomed
        .iter()
        .filter_map(|j| j.metadata.uid.clone())
        .collect();
    let active = status.active.get_or_insert_with(Vec::new);
    active.retain(|r| r.uid.as_ref().is_none_or(|u| !gone.contains(u)));

    // What the Jobs say: finished ones leave the active list.
    for j in jobs
        .iter()
        .filter(|j| !doomed.iter().any(|d| Arc::ptr_eq(d, j)))
    {
        let listed = active.iter().any(|r| r.uid == j.metadata.uid);
        match job_state(j) {
            Some(_) if listed => active.retain(|r| r.uid != j.metadata.uid),
            None if !listed => {
                tracing::debug!(cronjob = %key, job = ?j.metadata.name, "a running job not in status.active");
            }
            _ => {}
        }
        if job_state(j) == Some("Complete") {
            let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
            if done.as_ref().is_some_and(|d| {
                status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|l| d.0 > l.0)
            }) {
                status.last_successful_time = done;
            }
        }
    }
    // Active Jobs the cache does not know: gone for good only if the API
    // agrees (the job cache may lag).
    let unknown: Vec<ObjectReference> = status
        .active
        .iter()
        .flatten()
        .filter(|r| !jobs.iter().any(|j| j.metadata.uid == r.uid))
        .cloned()
        .collect();
    for r in unknown {
        let name = r.name.clone().unwrap_or_default();
        let live = jobs_api
            .get_opt(&name)
            .await
            .map_err(Error::api("reading job", name.clone()))?;
        if live.is_none_or(|j| j.metadata.uid != r.uid) {
            tracing::info!(cronjob = %key, job = %name, "active job went missing");
            if let Some(a) = status.active.as_mut() {
                a.retain(|x| x.uid != r.uid);
            }
        }
    }

    let (requeue, err) = schedule(&cj, &mut new, &jobs_api, &ctx).await;
    if let Some(s) = new.status.as_mut() {
        if s.active.as_ref().is_some_and(Vec::is_empty) {
            s.active = None;
        }
    }
    if new.status != cj.status && !(cj.status.is_none() && new.status == Some(Default::default())) {
        let written = Api::<CronJob>::namespaced(ctx.client.clone(), &ns)
            .replace_status(&new, &owners::post_params())
            .await
            .map_err(Error::api("updating status of cronjob", key.to_string()))?;
        ctx.writes.wrote(&written);
    }
    if let Some(e) = err {
        return Err(e);
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Starts the Job for the latest missed start, if the policies allow; the
/// status changes go into `new`. Answers when to look again.
async fn schedule(
    cj: &CronJob,
    new: &mut CronJob,
    jobs_api: &Api<Job>,
    ctx: &Ctx,
) -> (Option<Duration>, Option<Error>) {
    let key = ObjectKey::of(cj);
    if cj.metadata.deletion_timestamp.is_some() {
        return (None, None);
    }
    let spec = cj.spec.clone().unwrap_or_default();
    let tz = match cron::time_zone(spec.time_zone.as_deref()) {
        Ok(tz) => tz,
        Err(e) => {
            tracing::warn!(cronjob = %key, error = %e, "not starting jobs: invalid timeZone");
            return (None, None);
        }
    };
    if spec.suspend == Some(true) {
        return (None, None);
    }
    let sched = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(cronjob = %key, error = %e, "not starting jobs: unparseable schedule");
            return (None, None);
        }
    };
    let now = ctx.clock.now();
    let next = |cj: &CronJob| until_next(cj, &sched, &tz, now);
    let missed = match missed(cj, &sched, &tz, now, true) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(cronjob = %key, error = %e, "not starting jobs: invalid schedule");
            return (None, None);
        }
    };
    let Some(scheduled) = missed.latest else {
        return (next(cj), None);
    };
    if missed.count > MANY_MISSED {
        tracing::warn!(cronjob = %key, missed = missed.count,
            "too many missed start times: set or decrease .spec.startingDeadlineSeconds or check clock skew");
    }
    if let Some(d) = spec.starting_deadline_seconds {
        let latest_start = scheduled
            .checked_add(SignedDuration::from_secs(d))
            .unwrap_or(Timestamp::MAX);
        if latest_start < now {
            tracing::info!(cronjob = %key, %scheduled, "missed the starting deadline");
            ctx.recorder.event(
                object_ref(cj),
                EventType::Warning,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {scheduled}"),
            );
            return (next(cj), None);
        }
    }
    let status = new.status.get_or_insert_with(Default::default);
    let name = job_name(cj.metadata.name.as_deref().unwrap_or_default(), scheduled);
    let active = status.active.get_or_insert_with(Vec::new);
    let started = active
        .iter()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || status
            .last_schedule_time
            .as_ref()
            .is_some_and(|t| t.0 == scheduled);
    if started {
        return (next(cj), None);
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            tracing::info!(cronjob = %key, %scheduled, "not starting: the previous run is active and concurrencyPolicy is Forbid");
            ctx.recorder.event(
                object_ref(cj),
                EventType::Normal,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            );
            return (next(cj), None);
        }
        Some("Replace") => {
            for r in active.clone() {
                let job = Job {
                    metadata: ObjectMeta {
                        name: r.name.clone(),
                        uid: r.uid.clone(),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                if let Err(e) = delete_job(jobs_api, &job).await {
                    return (None, Some(e));
                }
                active.retain(|x| x.uid != r.uid);
                tracing::info!(cronjob = %key, job = ?r.name, "replaced the running job");
                ctx.recorder.event(
                    object_ref(cj),
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted job {}", r.name.as_deref().unwrap_or_default()),
                );
            }
        }
        _ => {}
    }
    let want = job_for(cj, scheduled, &tz);
    let pp = owners::post_params();
    let created = match jobs_api.create(&want, &pp).await {
        Ok(j) => {
            tracing::info!(cronjob = %key, job = %name, %scheduled, "created job");
            ctx.recorder.event(
                object_ref(cj),
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created job {name}"),
            );
            j
        }
        Err(e) if e.code() == 409 => {
            // Created before (the status write that would say so was lost):
            // take it into the active list if it is ours.
            let existing = match jobs_api.get(&name).await {
                Ok(j) => j,
                Err(e) => return (None, Some(Error::api("reading job", name)(e))),
            };
            let ours = owners::controller_of(&existing)
                .is_some_and(|r| Some(&r.uid) == cj.metadata.uid.as_ref());
            if !ours || active.iter().any(|r| r.uid == existing.metadata.uid) {
                return (None, None);
            }
            existing
        }
        Err(e) => {
            return (
                None,
                Some(Error::api("creating job for cronjob", key.to_string())(e)),
            )
        }
    };
    active.push(reference(&created));
    status.last_schedule_time = Some(Time(scheduled));
    let mut after = new.clone();
    if let Some(s) = after.status.as_mut() {
        s.last_schedule_time = Some(Time(scheduled));
    }
    (next(&after), None)
}

async fn delete_job(api: &Api<Job>, j: &Job) -> Result<(), Error> {
    let name = j.metadata.name.clone().unwrap_or_default();
    let dp = DeleteParams {
        propagation_policy: Some("Background".into()),
        uid: j.metadata.uid.clone(),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == 404 => Ok(()),
        Err(e) => Err(Error::api("deleting job", name)(e)),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{CronJobSpec, CronJobStatus, JobCondition, JobStatus};

    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cronjob(
        schedule: &str,
        created: &str,
        last: Option<&str>,
        deadline: Option<i64>,
    ) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                name: Some("tick".into()),
                creation_timestamp: Some(Time(at(created))),
                ..Default::default()
            },
            spec: Some(CronJobSpec {
                schedule: schedule.into(),
                starting_deadline_seconds: deadline,
                ..Default::default()
            }),
            status: Some(CronJobStatus {
                last_schedule_time: last.map(|l| Time(at(l))),
                ..Default::default()
            }),
        }
    }

    fn missed_of(cj: &CronJob, now: &str) -> Missed {
        let sched = Schedule::parse(&cj.spec.as_ref().unwrap().schedule).unwrap();
        missed(cj, &sched, &TimeZone::UTC, at(now), true).unwrap()
    }

    #[test]
    fn jobs_are_named_by_their_start_in_minutes() {
        assert_eq!(
            job_name("tick", at("2024-03-05T10:00:00Z")),
            "tick-28493880"
        );
        assert_eq!(
            job_name("tick", at("2024-03-05T10:00:59Z")),
            "tick-28493880"
        );
        let berlin = cron::time_zone(Some("Europe/Berlin")).unwrap();
        assert_eq!(
            rfc3339_in(at("2024-03-05T10:00:00Z"), &berlin),
            "2024-03-05T11:00:00+01:00"
        );
        assert_eq!(
            rfc3339_in(at("2024-03-05T10:00:00Z"), &TimeZone::UTC),
            "2024-03-05T10:00:00Z"
        );
    }

    #[test]
    fn only_the_latest_missed_start_counts() {
        let cj = cronjob("*/5 * * * *", "2024-03-05T10:01:00Z", None, None);
        let m = missed_of(&cj, "2024-03-05T10:04:59Z");
        assert_eq!((m.latest, m.count), (None, 0));
        let m = missed_of(&cj, "2024-03-05T10:05:00Z");
        assert_eq!((m.latest, m.count), (Some(at("2024-03-05T10:05:00Z")), 1));
        let m = missed_of(&cj, "2024-03-05T10:17:00Z");
        assert_eq!((m.latest, m.count), (Some(at("2024-03-05T10:15:00Z")), 3));
        // After the 10:15 run, nothing until 10:20.
        let ran = cronjob(
            "*/5 * * * *",
            "2024-03-05T10:01:00Z",
            Some("2024-03-05T10:15:00Z"),
            None,
        );
        assert_eq!(missed_of(&ran, "2024-03-05T10:19:00Z").latest, None);
        let sched = Schedule::parse("*/5 * * * *").unwrap();
        let wait = until_next(&ran, &sched, &TimeZone::UTC, at("2024-03-05T10:19:00Z"));
        assert_eq!(wait, Some(Duration::from_secs(60) + NEXT_SCHEDULE_DELTA));
    }

    #[test]
    fn a_starting_deadline_bounds_the_look_back_and_many_misses_are_estimated() {
        // Down for a day: every minute was missed, the deadline keeps two.
        let cj = cronjob("* * * * *", "2024-03-05T00:00:00Z", None, Some(120));
        let m = missed_of(&cj, "2024-03-06T00:00:30Z");
        assert_eq!((m.latest, m.count), (Some(at("2024-03-06T00:00:00Z")), 2));
        let no_deadline = cronjob("* * * * *", "2024-03-05T00:00:00Z", None, None);
        let m = missed_of(&no_deadline, "2024-03-06T00:00:30Z");
        assert_eq!(m.latest, Some(at("2024-03-06T00:00:00Z")));
        assert!(m.count > MANY_MISSED, "{}", m.count);
        assert_eq!(m.count, 1440);
    }

    fn finished_job(name: &str, kind: &str, start: Option<i64>) -> Arc<Job> {
        Arc::new(Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: None,
            status: Some(JobStatus {
                start_time: start.map(|s| Time(Timestamp::from_second(s).unwrap())),
                conditions: Some(vec![JobCondition {
                    type_: kind.into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn history_keeps_the_newest() {
        let jobs = vec![
            finished_job("c", "Complete", Some(300)),
            finished_job("a", "Complete", Some(100)),
            finished_job("never", "Complete", None),
            finished_job("b", "Complete", Some(200)),
            finished_job("f", "Failed", Some(50)),
        ];
        let names = |v: Vec<Arc<Job>>| -> Vec<String> {
            v.iter().map(|j| j.metadata.name.clone().unwrap()).collect()
        };
        assert_eq!(
            names(beyond_history(&jobs, "Complete", Some(2))),
            ["a", "b"]
        );
        assert_eq!(names(beyond_history(&jobs, "Complete", Some(0))).len(), 4);
        assert!(beyond_history(&jobs, "Complete", None).is_empty());
        assert!(beyond_history(&jobs, "Failed", Some(1)).is_empty());
    }

    #[test]
    fn jobs_come_from_the_template() {
        let mut cj = cronjob("@hourly", "2024-03-05T10:00:00Z", None, None);
        cj.metadata.uid = Some("cj-uid".into());
        cj.metadata.namespace = Some("ns".into());
        let j = job_for(&cj, at("2024-03-05T11:00:00Z"), &TimeZone::UTC);
        assert_eq!(j.metadata.name.as_deref(), Some("tick-28493940"));
        assert_eq!(
            j.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP],
            "2024-03-05T11:00:00Z"
        );
        let r = &j.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str(), r.controller),
            ("CronJob", "cj-uid", Some(true))
        );
    }
}
