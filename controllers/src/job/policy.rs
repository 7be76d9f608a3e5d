//! How a Job judges its finished pods: which count as failed, what its pod
//! failure policy says of one, when a pod finished, and how long the
//! pod-failure backoff holds back replacements.

use std::time::Duration;

use k8s_openapi::api::batch::v1::{
    JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;

use crate::pods;

/// Pods are replaced only once they have failed, not while terminating:
/// `podReplacementPolicy: Failed`, implied by a pod failure policy.
pub fn only_replace_failed(spec: &JobSpec) -> bool {
    spec.pod_failure_policy.is_some() || spec.pod_replacement_policy.as_deref() == Some("Failed")
}

/// A failure: phase Failed, or (unless only failed pods count) deleted
/// before it succeeded, so an orphaned pod that never reaches a phase still
/// counts.
pub fn is_failed(p: &Pod, only_failed: bool) -> bool {
    match pods::phase(p) {
        "Failed" => true,
        "Succeeded" => false,
        _ => !only_failed && p.metadata.deletion_timestamp.is_some(),
    }
}

/// What a job's pod failure policy makes of a failed pod (upstream
/// matchPodFailurePolicy): the first rule that matches decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// A FailJob rule matched: the message for the job's condition.
    pub fail_job: Option<String>,
    /// Counts toward backoffLimit (false for Ignore).
    pub counts: bool,
    pub action: Option<String>,
}

fn terminated_with(
    statuses: Option<&Vec<ContainerStatus>>,
    req: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<(String, i32)> {
    statuses.into_iter().flatten().find_map(|c| {
        let t = c.state.as_ref()?.terminated.as_ref()?;
        if req.container_name.as_ref().is_some_and(|n| *n != c.name) || t.exit_code == 0 {
            return None;
        }
        let listed = req.values.contains(&t.exit_code);
        let hit = match req.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        hit.then(|| (c.name.clone(), t.exit_code))
    })
}

pub fn judge(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Verdict {
    let counted = Verdict {
        fail_job: None,
        counts: true,
        action: None,
    };
    let Some(policy) = policy else { return counted };
    let status = pod.status.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    for (i, rule) in policy.rules.iter().enumerate() {
        let matched = if let Some(req) = &rule.on_exit_codes {
            terminated_with(status.container_statuses.as_ref(), req)
                .or_else(|| terminated_with(status.init_container_statuses.as_ref(), req))
                .map(|(c, code)| {
                    format!(
                        "Container {c} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                        rule.action
                    )
                })
        } else if let Some(patterns) = &rule.on_pod_conditions {
            status.conditions.iter().flatten().find_map(|c| {
                patterns
                    .iter()
                    .any(|p| p.type_ == c.type_ && p.status == c.status)
                    .then(|| {
                        format!(
                            "Pod {ns}/{name} has condition {} matching {} rule at index {i}",
                            c.type_, rule.action
                        )
                    })
            })
        } else {
            None
        };
        let Some(message) = matched else { continue };
        let action = Some(rule.action.clone());
        match rule.action.as_str() {
            "Ignore" => {
                return Verdict {
                    fail_job: None,
                    counts: false,
                    action,
                }
            }
            "Count" => return Verdict { action, ..counted },
            "FailJob" => {
                return Verdict {
                    fail_job: Some(message),
                    counts: true,
                    action,
                }
            }
            // The index fails (backoffLimitPerIndex, which validation
            // requires beside this action); the failure counts.
            "FailIndex" => return Verdict { action, ..counted },
            _ => {}
        }
    }
    counted
}

/// When the pod finished (upstream getFinishedTime): its last container's
/// finish, else when it stopped being Ready, else its deletion, else its
/// creation.
pub fn finished_at(p: &Pod) -> Option<Timestamp> {
    let status = p.status.as_ref();
    let containers = status.and_then(|s| s.container_statuses.as_ref());
    let finished: Option<Vec<Timestamp>> = containers.filter(|c| !c.is_empty()).and_then(|cs| {
        cs.iter()
            .map(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.finished_at.as_ref())
                    .map(|t| t.0)
            })
            .collect()
    });
    if let Some(t) = finished.and_then(|f| f.into_iter().max()) {
        return Some(t);
    }
    let not_ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref());
    if let Some(t) = not_ready {
        return Some(t.0);
    }
    if let Some(t) = &p.metadata.deletion_timestamp {
        let grace = p.metadata.deletion_grace_period_seconds.unwrap_or(0);
        return Some(
            t.0.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(grace))
                .unwrap_or(t.0),
        );
    }
    p.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Failures since the last success, and when the last of them happened: the
/// pod-failure backoff (kept per job while this master leads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    pub failures: u32,
    pub last_failure: Option<Timestamp>,
}

impl Backoff {
    /// The record after `succeeded` and `failed` pods were newly seen.
    pub fn after(self, succeeded: &[&Pod], failed: &[&Pod]) -> Backoff {
        let latest = |ps: &[&Pod]| ps.iter().filter_map(|p| finished_at(p)).max();
        if succeeded.is_empty() {
            if failed.is_empty() {
                return self;
            }
            return Backoff {
                failures: self.failures + failed.len() as u32,
                last_failure: latest(failed).or(self.last_failure),
            };
        }
        // A success resets the count: only failures after it stay.
        let success = latest(succeeded);
        let after: Vec<Timestamp> = failed
            .iter()
            .filter_map(|p| finished_at(p))
            .filter(|t| success.is_none_or(|s| *t > s))
            .collect();
        Backoff {
            failures: after.len() as u32,
            last_failure: after.into_iter().max(),
        }
    }

    /// How long replacements still wait at `now`: `base` doubling per
    /// failure up to `max`, counted from the last failure.
    pub fn remaining(&self, now: Timestamp, base: Duration, max: Duration) -> Duration {
        let Some(last) = self.last_failure.filter(|_| self.failures > 0) else {
            return Duration::ZERO;
        };
        let mut wait = base;
        for _ in 1..self.failures {
            wait = wait.saturating_mul(2);
            if wait >= max {
                wait = max;
                break;
            }
        }
        let elapsed = now.duration_since(last);
        let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
        wait.saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn exited(code: i32, at: i64) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("p".into());
        p.metadata.namespace = Some("ns".into());
        p.status = Some(PodStatus {
            phase: Some(if code == 0 { "Succeeded" } else { "Failed" }.into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "main".into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        finished_at: Some(Time(t(at))),
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

    fn rule(action: &str) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let policy = PodFailurePolicy {
            rules: vec![
                PodFailurePolicyRule {
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        operator: "In".into(),
                        values: vec![42],
                        ..Default::default()
                    }),
                    ..rule("FailJob")
                },
                PodFailurePolicyRule {
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]),
                    ..rule("Ignore")
                },
                PodFailurePolicyRule {
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        operator: "NotIn".into(),
                        values: vec![1],
                        container_name: Some("main".into()),
                    }),
                    ..rule("Count")
                },
            ],
        };
        let v = judge(Some(&policy), &exited(42, 0));
        assert_eq!(
            v.fail_job.as_deref(),
            Some("Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0")
        );
        let mut disrupted = exited(1, 0);
        disrupted.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            ..Default::default()
        }]);
        let v = judge(Some(&policy), &disrupted);
        assert!(!v.counts && v.fail_job.is_none());
        assert_eq!(v.action.as_deref(), Some("Ignore"));
        let v = judge(Some(&policy), &exited(3, 0));
        assert!(v.counts);
        assert_eq!(v.action.as_deref(), Some("Count"));
        // Exit 1 matches no rule: counted, no action.
        assert_eq!(judge(Some(&policy), &exited(1, 0)).action, None);
        assert!(judge(None, &exited(42, 0)).fail_job.is_none());
    }

    #[test]
    fn failed_means_phase_or_deleted_unless_only_failed_pods_count() {
        let mut deleted = Pod::default();
        deleted.metadata.deletion_timestamp = Some(Time(t(0)));
        assert!(is_failed(&deleted, false));
        assert!(!is_failed(&deleted, true));
        assert!(is_failed(&exited(1, 0), true));
        assert!(!is_failed(&exited(0, 0), false));
    }

    #[test]
    fn backoff_doubles_from_the_last_failure_and_a_success_resets_it() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(360);
        let b = Backoff::default().after(&[], &[&exited(1, 0)]);
        assert_eq!(b.failures, 1);
        assert_eq!(b.remaining(t(4), base, max), Duration::from_secs(6));
        let b = b.after(&[], &[&exited(1, 20), &exited(1, 30)]);
        assert_eq!((b.failures, b.last_failure), (3, Some(t(30))));
        assert_eq!(b.remaining(t(30), base, max), Duration::from_secs(40));
        assert_eq!(b.remaining(t(100), base, max), Duration::ZERO);
        let many = Backoff {
            failures: 12,
            last_failure: Some(t(0)),
        };
        assert_eq!(many.remaining(t(0), base, max), max, "capped");
        // A success at 50 leaves only the failure after it.
        let b = b.after(&[&exited(0, 50)], &[&exited(1, 40), &exited(1, 60)]);
        assert_eq!((b.failures, b.last_failure), (1, Some(t(60))));
        let b = b.after(&[&exited(0, 70)], &[]);
        assert_eq!(b, Backoff::default());
    }
}
