//! `spec.successPolicy` of an Indexed Job: the Job succeeds as soon as one
//! rule holds, given the indexes that have succeeded (upstream's
//! `matchSuccessPolicy`). Then the controller adds `SuccessCriteriaMet`
//! (reason `SuccessPolicy`), stops the pods still running without counting
//! them as failures, and ends the Job `Complete`.

use k8s_openapi::api::batch::v1::{SuccessPolicy, SuccessPolicyRule};

use super::indexes::Intervals;

/// The condition's reason when a rule of the policy held.
pub const REASON: &str = "SuccessPolicy";

/// The message of the first rule that holds (`Matched rules at index N`),
/// if one does. A rule with `succeededIndexes` holds when all those indexes
/// succeeded, or (with `succeededCount`) that many of them; a rule with
/// only `succeededCount` when that many indexes succeeded at all.
pub fn matched(
    policy: Option<&SuccessPolicy>,
    completions: i32,
    succeeded: &Intervals,
) -> Option<String> {
    let policy = policy?;
    if succeeded.is_empty() {
        return None;
    }
    let holds = |(i, rule): (usize, &SuccessPolicyRule)| {
        let count = rule.succeeded_count.map(|c| c.max(0) as usize);
        match &rule.succeeded_indexes {
            Some(text) => {
                let wanted = Intervals::parse(text, completions);
                // Indexes that do not parse make no rule (validation
                // refuses them; a rule never holds by being empty).
                if wanted.is_empty() {
                    return None;
                }
                let done = wanted.overlap(succeeded);
                (done == wanted.total() || count.is_some_and(|c| done >= c)).then_some(i)
            }
            None => count.filter(|c| succeeded.total() >= *c).map(|_| i),
        }
    };
    policy
        .rules
        .iter()
        .enumerate()
        .find_map(holds)
        .map(|i| format!("Matched rules at index {i}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(indexes: Option<&str>, count: Option<i32>) -> SuccessPolicyRule {
        SuccessPolicyRule {
            succeeded_indexes: indexes.map(Into::into),
            succeeded_count: count,
        }
    }

    fn policy(rules: Vec<SuccessPolicyRule>) -> SuccessPolicy {
        SuccessPolicy { rules }
    }

    #[test]
    fn the_first_rule_that_holds_decides() {
        let done = |s: &str| Intervals::parse(s, 10);
        let p = policy(vec![rule(Some("0,2-4"), None), rule(None, Some(3))]);
        assert_eq!(matched(Some(&p), 10, &done("0,2")), None);
        assert_eq!(
            matched(Some(&p), 10, &done("0,2-5")).as_deref(),
            Some("Matched rules at index 0")
        );
        assert_eq!(
            matched(Some(&p), 10, &done("7-9")).as_deref(),
            Some("Matched rules at index 1")
        );
        // Some of the listed indexes are enough with a count.
        let some = policy(vec![rule(Some("1-5"), Some(2))]);
        assert_eq!(matched(Some(&some), 10, &done("0,6")), None);
        assert_eq!(
            matched(Some(&some), 10, &done("2,5")).as_deref(),
            Some("Matched rules at index 0")
        );
    }

    #[test]
    fn nothing_holds_before_a_success_or_without_a_policy() {
        let none = Intervals::default();
        let zero = policy(vec![rule(None, Some(0))]);
        assert_eq!(matched(Some(&zero), 3, &none), None);
        assert_eq!(matched(None, 3, &Intervals::parse("0-2", 3)), None);
        // Indexes beyond completions are not there.
        let beyond = policy(vec![rule(Some("5"), None)]);
        assert_eq!(matched(Some(&beyond), 3, &Intervals::parse("0-2", 3)), None);
    }
}
