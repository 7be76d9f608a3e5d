//! `backoffLimitPerIndex` for Indexed Jobs: each index is retried up to its
//! own limit, then marked failed (`status.failedIndexes`) while the other
//! indexes go on.
//!
//! A pod carries the failures of its index so far in an annotation, copied
//! and bumped from the failed pod it replaces; an index fails when a counted
//! failure of a pod that already carries `backoffLimitPerIndex` failures is
//! added, or when a `FailIndex` rule of the pod failure policy matches
//! (upstream's `isIndexFailed` and `getNewIndexFailureCounts`).
//!
//! So that count is not lost, the last failed pod of an index waiting for
//! its replacement keeps its tracking finalizer (and so is neither counted
//! nor removed) until the replacement exists; the replacement waits the
//! pod-failure backoff of its own index, from that pod's failures and
//! finish time (upstream's `getPodsWithDelayedDeletionPerIndex` and
//! `getRemainingTimePerIndex`), not the Job-wide one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::indexes::{self, Intervals};
use super::policy::{self, Backoff};

pub const FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
pub const IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";

fn annotation(p: &Pod, key: &str) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse().ok())
        // Negative counts are junk a user wrote: none, as upstream.
        .filter(|v: &i32| *v >= 0)
        .unwrap_or(0)
}

/// Every failure of the pod's index before it, ignored ones included.
fn absolute_failures(p: &Pod) -> i32 {
    annotation(p, FAILURE_COUNT).saturating_add(annotation(p, IGNORED_FAILURE_COUNT))
}

/// Whether the Job retries per index.
pub fn enabled(spec: &JobSpec) -> bool {
    spec.backoff_limit_per_index.is_some()
}

/// Whether the failure of `p` (a failed pod) fails its index.
pub fn index_failed(spec: &JobSpec, p: &Pod) -> bool {
    let Some(limit) = spec.backoff_limit_per_index else {
        return false;
    };
    let verdict = policy::judge(spec.pod_failure_policy.as_ref(), p);
    if verdict.action.as_deref() == Some("FailIndex") {
        return true;
    }
    verdict.counts && annotation(p, FAILURE_COUNT) >= limit
}

/// The failed indexes: those already in the status and those the failed
/// pods not yet counted (`fresh`) fail.
pub fn failed_indexes<'a>(
    spec: &JobSpec,
    recorded: &str,
    fresh: impl IntoIterator<Item = &'a Pod>,
) -> Intervals {
    let completions = spec.completions.unwrap_or(0);
    let prev = Intervals::parse(recorded, completions);
    prev.with(
        fresh
            .into_iter()
            .filter(|p| index_failed(spec, p))
            .filter_map(|p| indexes::valid(p, completions)),
    )
}

/// The failure and ignored-failure counts the replacement of `replaced`
/// starts with: that pod's, plus its own failure (ignored when the pod
/// failure policy says Ignore). A first pod starts at none.
pub fn counts_for_replacement(spec: &JobSpec, replaced: Option<&Pod>) -> (i32, i32) {
    let Some(p) = replaced else { return (0, 0) };
    let (count, ignored) = (
        annotation(p, FAILURE_COUNT),
        annotation(p, IGNORED_FAILURE_COUNT),
    );
    if policy::judge(spec.pod_failure_policy.as_ref(), p).counts {
        (count.saturating_add(1), ignored)
    } else {
        (count, ignored.saturating_add(1))
    }
}

/// Per index waiting for a new pod, its last failed pod: the one whose
/// finalizer stays until the replacement exists. `failed` are the failed
/// pods the Job still tracks; indexes in `settled` (succeeded or failed)
/// or `running` wait for nothing.
pub fn awaiting_replacement(
    failed: impl IntoIterator<Item = Arc<Pod>>,
    completions: i32,
    settled: &Intervals,
    running: &BTreeSet<u32>,
) -> BTreeMap<u32, Arc<Pod>> {
    let mut out: BTreeMap<u32, Arc<Pod>> = BTreeMap::new();
    for p in failed {
        let Some(ix) = indexes::valid(&p, completions) else {
            continue;
        };
        if settled.has(ix) || running.contains(&ix) {
            continue;
        }
        let later = |last: &Pod| {
            absolute_failures(last) <= absolute_failures(&p)
                && policy::finished_at(&p) >= policy::finished_at(last)
        };
        match out.get(&ix) {
            Some(last) if !later(last) => {}
            _ => {
                out.insert(ix, p);
            }
        }
    }
    out
}

/// How long the replacement of `last_failed` still waits at `now`: the
/// backoff of its index's failures so far, this one included, from when it
/// finished.
pub fn backoff_remaining(
    last_failed: Option<&Pod>,
    now: Timestamp,
    base: Duration,
    max: Duration,
) -> Duration {
    let Some(p) = last_failed else {
        return Duration::ZERO;
    };
    let b = Backoff {
        failures: absolute_failures(p).saturating_add(1).max(0) as u32,
        last_failure: policy::finished_at(p),
    };
    b.remaining(now, base, max)
}

/// Upstream's verdict for a Job whose indexes have failed, if it is over:
/// more failed indexes than `maxFailedIndexes`, or every index either
/// succeeded or failed with at least one failed.
pub fn job_failure(
    spec: &JobSpec,
    succeeded: &Intervals,
    failed: &Intervals,
) -> Option<(&'static str, &'static str)> {
    if !enabled(spec) || failed.total() == 0 {
        return None;
    }
    if spec
        .max_failed_indexes
        .is_some_and(|m| failed.total() as i64 > m as i64)
    {
        return Some((
            "MaxFailedIndexesExceeded",
            "Job has exceeded the specified maximal number of failed indexes",
        ));
    }
    let completions = spec.completions.unwrap_or(0).max(0) as usize;
    (succeeded.total() + failed.total() >= completions)
        .then_some(("FailedIndexes", "Job has failed indexes"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::batch::v1::{
        PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn spec(limit: i32, max_failed: Option<i32>) -> JobSpec {
        JobSpec {
            completions: Some(4),
            completion_mode: Some("Indexed".into()),
            backoff_limit_per_index: Some(limit),
            max_failed_indexes: max_failed,
            ..Default::default()
        }
    }

    fn failed(index: u32, failures: i32, exit: i32) -> Pod {
        let mut p = Pod::default();
        p.metadata.annotations = Some(BTreeMap::from([
            (indexes::COMPLETION_INDEX.to_string(), index.to_string()),
            (FAILURE_COUNT.to_string(), failures.to_string()),
        ]));
        p.status = Some(PodStatus {
            phase: Some("Failed".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "c".into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: exit,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    #[test]
    fn an_index_fails_past_its_own_limit() {
        let s = spec(1, None);
        // The first failure is retried, the retry's failure fails the index.
        assert!(!index_failed(&s, &failed(2, 0, 1)));
        assert!(index_failed(&s, &failed(2, 1, 1)));
        let got = failed_indexes(&s, "0", [&failed(2, 1, 1), &failed(3, 0, 1)]);
        assert_eq!(got.to_string(), "0,2");
        // Out of range indexes and junk in the status are dropped.
        assert_eq!(failed_indexes(&s, "7", []).to_string(), "");
    }

    #[test]
    fn fail_index_and_ignore_rules() {
        let rule = |action: &str, code: i32| PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                operator: "In".into(),
                values: vec![code],
                ..Default::default()
            }),
            on_pod_conditions: None,
        };
        let mut s = spec(3, None);
        s.pod_failure_policy = Some(PodFailurePolicy {
            rules: vec![rule("FailIndex", 42), rule("Ignore", 7)],
        });
        assert!(index_failed(&s, &failed(0, 0, 42)), "FailIndex at once");
        assert!(
            !index_failed(&s, &failed(0, 3, 7)),
            "ignored failures never fail it"
        );
        assert_eq!(counts_for_replacement(&s, Some(&failed(1, 1, 1))), (2, 0));
        assert_eq!(counts_for_replacement(&s, Some(&failed(2, 0, 7))), (0, 1));
        assert_eq!(counts_for_replacement(&s, None), (0, 0));
    }

    fn at(mut p: Pod, second: i64) -> Arc<Pod> {
        let t = Timestamp::from_second(1_700_000_000 + second).unwrap();
        let st = p.status.as_mut().unwrap();
        let c = &mut st.container_statuses.as_mut().unwrap()[0];
        let term = c.state.as_mut().unwrap().terminated.as_mut().unwrap();
        term.finished_at = Some(Time(t));
        Arc::new(p)
    }

    #[test]
    fn the_last_failure_of_a_waiting_index_is_held() {
        let settled = Intervals::parse("0", 4);
        let running = BTreeSet::from([3]);
        let held = awaiting_replacement(
            [
                at(failed(0, 0, 1), 0),
                at(failed(1, 0, 1), 5),
                at(failed(1, 1, 1), 9),
                at(failed(2, 1, 1), 9),
                at(failed(2, 0, 1), 12),
                at(failed(3, 0, 1), 1),
                at(failed(9, 0, 1), 1),
            ],
            4,
            &settled,
            &running,
        );
        // 0 is settled, 3 runs again, 9 is out of range.
        assert_eq!(held.keys().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(annotation(&held[&1], FAILURE_COUNT), 1, "the latest");
        // Index 2's later finish has fewer failures: the earlier one stays.
        assert_eq!(annotation(&held[&2], FAILURE_COUNT), 1);
    }

    #[test]
    fn each_index_waits_its_own_backoff() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(600));
        let t = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        assert_eq!(backoff_remaining(None, t(0), base, max), Duration::ZERO);
        // A first failure at 0: 10 s.
        let first = at(failed(1, 0, 1), 0);
        assert_eq!(
            backoff_remaining(Some(&first), t(4), base, max),
            Duration::from_secs(6)
        );
        // Two failures before it, one of them ignored: the fourth failure
        // waits 80 s.
        let mut third = failed(1, 2, 1);
        third
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(IGNORED_FAILURE_COUNT.into(), "1".into());
        let third = at(third, 100);
        assert_eq!(
            backoff_remaining(Some(&third), t(100), base, max),
            Duration::from_secs(80)
        );
        assert_eq!(
            backoff_remaining(Some(&third), t(180), base, max),
            Duration::ZERO
        );
        // Junk counts count as none.
        let mut junk = failed(1, 0, 1);
        junk.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(FAILURE_COUNT.into(), "-5".into());
        assert_eq!(absolute_failures(&junk), 0);
    }

    #[test]
    fn the_job_fails_on_too_many_or_all_indexes_settled() {
        let s = spec(1, Some(1));
        let done = |t: &str| Intervals::parse(t, 4);
        assert_eq!(job_failure(&s, &done("0"), &done("")), None);
        assert_eq!(job_failure(&s, &done("0"), &done("1")), None);
        assert_eq!(
            job_failure(&s, &done(""), &done("1,2")).map(|r| r.0),
            Some("MaxFailedIndexesExceeded")
        );
        assert_eq!(
            job_failure(&s, &done("0,2,3"), &done("1")).map(|r| r.0),
            Some("FailedIndexes")
        );
    }
}
