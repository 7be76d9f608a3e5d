//! `backoffLimitPerIndex` for Indexed Jobs: each index is retried up to its
//! own limit, then marked failed (`status.failedIndexes`) while the other
//! indexes go on.
//!
//! A pod carries the failures of its index so far in an annotation, copied
//! and bumped from the failed pod it replaces; an index fails when a counted
//! failure of a pod that already carries `backoffLimitPerIndex` failures is
//! added, or when a `FailIndex` rule of the pod failure policy matches
//! (upstream's `isIndexFailed` and `getNewIndexFailureCounts`).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::api::core::v1::Pod;

use super::indexes::{self, Intervals};
use super::policy;

pub const FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
pub const IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";

fn annotation(p: &Pod, key: &str) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
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

/// The failure and ignored-failure counts a new pod for each index starts
/// with: those of the index's latest failed pod, plus that pod's own
/// failure (ignored when the pod failure policy says Ignore).
pub fn counts_for_new_pods<'a>(
    spec: &JobSpec,
    failed: impl IntoIterator<Item = &'a Pod>,
) -> BTreeMap<u32, (i32, i32)> {
    let mut out: BTreeMap<u32, (i32, i32)> = BTreeMap::new();
    for p in failed {
        let Some(ix) = indexes::of(p) else { continue };
        let (mut count, mut ignored) = (
            annotation(p, FAILURE_COUNT),
            annotation(p, IGNORED_FAILURE_COUNT),
        );
        if policy::judge(spec.pod_failure_policy.as_ref(), p).counts {
            count += 1;
        } else {
            ignored += 1;
        }
        let e = out.entry(ix).or_default();
        // The latest failure carries the most.
        if (count, ignored) > *e {
            *e = (count, ignored);
        }
    }
    out
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
        let next = counts_for_new_pods(&s, [&failed(1, 0, 1), &failed(1, 1, 1), &failed(2, 0, 7)]);
        assert_eq!(next[&1], (2, 0));
        assert_eq!(next[&2], (0, 1));
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
