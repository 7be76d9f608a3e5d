//! What a write to a Job's status may hold and change: upstream's
//! `ValidateJobStatusUpdate` with the options its Job status strategy sets
//! while the JobManagedBy feature is on (beta, on by default, in 1.32). With
//! `spec.managedBy` a controller other than Balsa's may write the status, so
//! the API keeps every writer to the transitions clients rely on: counters
//! never go down, a terminal condition stays, a finished Job has a start time
//! and no active or uncounted pods. Most rules apply only when the write
//! changes the fields they read, as upstream's, so that an old status stays
//! writable.

use serde_json::Value;

use super::error::Cause;
use super::job_policies::{indexes_format, indexes_overlap};

const NEGATIVE: &str = "must be greater than or equal to 0";

fn is_true(job: &Value, kind: &str) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn finished(job: &Value) -> bool {
    is_true(job, "Complete") || is_true(job, "Failed")
}

fn count(job: &Value, field: &str) -> i64 {
    job["status"][field].as_i64().unwrap_or(0)
}

fn text(job: &Value, field: &str) -> String {
    job["status"][field]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn uncounted(job: &Value) -> usize {
    ["succeeded", "failed"]
        .iter()
        .map(|k| {
            job["status"]["uncountedTerminatedPods"][k]
                .as_array()
                .map_or(0, Vec::len)
        })
        .sum()
}

/// `validateJobStatus`'s checks that hold whatever the write changed.
fn always(job: &Value, out: &mut Vec<Cause>) {
    for field in ["active", "succeeded", "failed", "ready", "terminating"] {
        if let Some(n) = job["status"][field].as_i64().filter(|n| *n < 0) {
            out.push(Cause::invalid(format!("status.{field}"), n, NEGATIVE));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for list in ["succeeded", "failed"] {
        let uids = job["status"]["uncountedTerminatedPods"][list].as_array();
        for (i, uid) in uids.into_iter().flatten().enumerate() {
            let at = format!("status.uncountedTerminatedPods.{list}[{i}]");
            let uid = uid.as_str().unwrap_or_default();
            if uid.is_empty() {
                out.push(Cause::invalid(at, "\"\"", "must not be empty"));
            } else if !seen.insert(uid) {
                out.push(Cause::duplicate(at, format!("{uid:?}")));
            }
        }
    }
    let met = is_true(job, "SuccessCriteriaMet");
    if met && is_true(job, "Failed") {
        out.push(Cause::invalid_omitted(
            "status.conditions",
            "cannot set SuccessCriteriaMet=True and Failed=true conditions",
        ));
    }
    if met && is_true(job, "FailureTarget") {
        out.push(Cause::invalid_omitted(
            "status.conditions",
            "cannot set SuccessCriteriaMet=True and FailureTarget=true conditions",
        ));
    }
    if !job["spec"]["successPolicy"].is_null() && !met && is_true(job, "Complete") {
        out.push(Cause::invalid_omitted(
            "status.conditions",
            "cannot set Complete=True for Job with SuccessPolicy unless SuccessCriteriaMet=True",
        ));
    }
}

/// The checks upstream enables only when the write changes what they read.
fn when_changed(old: &Value, new: &Value, out: &mut Vec<Cause>) {
    let changed = |f: &str| old["status"][f] != new["status"][f];
    let complete_changed = is_true(old, "Complete") != is_true(new, "Complete");
    let failed_changed = is_true(old, "Failed") != is_true(new, "Failed");
    let target_changed = is_true(old, "FailureTarget") != is_true(new, "FailureTarget");
    let finished_changed = finished(old) != finished(new);
    let (complete, done) = (is_true(new, "Complete"), finished(new));
    let status = &new["status"];
    let (start, completion) = (&status["startTime"], &status["completionTime"]);
    if (complete_changed || failed_changed) && complete && is_true(new, "Failed") {
        out.push(Cause::invalid_omitted(
            "status.conditions",
            "cannot set Complete=True and Failed=true conditions",
        ));
    }
    if (complete_changed || target_changed) && complete && is_true(new, "FailureTarget") {
        out.push(Cause::invalid_omitted(
            "status.conditions",
            "cannot set Complete=True and FailureTarget=true conditions",
        ));
    }
    if complete_changed || changed("completionTime") {
        if !completion.is_null() && !complete {
            out.push(Cause::invalid(
                "status.completionTime",
                completion,
                "cannot set completionTime when there is no Complete=True condition",
            ));
        }
        if completion.is_null() && complete {
            out.push(Cause::required_because(
                "status.completionTime",
                "completionTime is required for Complete jobs",
            ));
        }
    }
    if changed("startTime") || changed("completionTime") {
        // RFC 3339 in UTC, as the API stores times: text order is time order.
        if let (Some(s), Some(c)) = (start.as_str(), completion.as_str()) {
            if c < s {
                out.push(Cause::invalid(
                    "status.completionTime",
                    completion,
                    "completionTime cannot be set before startTime",
                ));
            }
        }
    }
    if (finished_changed || changed("active")) && done && count(new, "active") > 0 {
        out.push(Cause::invalid(
            "status.active",
            count(new, "active"),
            "active>0 is invalid for finished job",
        ));
    }
    if (finished_changed || changed("startTime")) && done && start.is_null() {
        out.push(Cause::required_because(
            "status.startTime",
            "startTime is required for finished job",
        ));
    }
    if (finished_changed || changed("uncountedTerminatedPods")) && done && uncounted(new) > 0 {
        out.push(Cause::invalid(
            "status.uncountedTerminatedPods",
            &status["uncountedTerminatedPods"],
            "uncountedTerminatedPods needs to be empty for finished job",
        ));
    }
    let spec = &new["spec"];
    let indexed = spec["completionMode"] == "Indexed";
    if changed("completedIndexes") {
        let completed = text(new, "completedIndexes");
        if let Some(n) = spec["completions"].as_i64() {
            if let Err(e) = indexes_format(&completed, n) {
                out.push(Cause::invalid(
                    "status.completedIndexes",
                    format!("{completed:?}"),
                    &format!("error parsing completedIndexes: {e}"),
                ));
            }
        }
        if !completed.is_empty() && !indexed {
            out.push(Cause::invalid(
                "status.completedIndexes",
                format!("{completed:?}"),
                "cannot set non-empty completedIndexes when non-indexed completion mode",
            ));
        }
    }
    if changed("failedIndexes") {
        if let Some(failed) = status["failedIndexes"].as_str() {
            if spec["backoffLimitPerIndex"].is_null() {
                out.push(Cause::invalid(
                    "status.failedIndexes",
                    format!("{failed:?}"),
                    "cannot set non-null failedIndexes when backoffLimitPerIndex is null",
                ));
            } else if let Some(n) = spec["completions"].as_i64() {
                if let Err(e) = indexes_format(failed, n) {
                    out.push(Cause::invalid(
                        "status.failedIndexes",
                        format!("{failed:?}"),
                        &format!("error parsing failedIndexes: {e}"),
                    ));
                }
            }
        }
    }
    if changed("failedIndexes") || changed("completedIndexes") {
        let failed = status["failedIndexes"].as_str();
        if let (Some(n), Some(failed)) = (spec["completions"].as_i64(), failed) {
            if let Some(at) = indexes_overlap(&text(new, "completedIndexes"), failed, n) {
                out.push(Cause::invalid(
                    "status.failedIndexes",
                    format!("{failed:?}"),
                    &format!("failedIndexes and completedIndexes overlap at index: {at}"),
                ));
            }
        }
    }
}

/// `ValidateJobStatusUpdate`'s transition rules.
fn transitions(old: &Value, new: &Value, out: &mut Vec<Cause>) {
    for kind in ["Failed", "Complete", "FailureTarget"] {
        if is_true(old, kind) && !is_true(new, kind) {
            out.push(Cause::invalid_omitted(
                "status.conditions",
                &format!("cannot disable the terminal {kind}=True condition"),
            ));
        }
    }
    if count(new, "failed") < count(old, "failed") {
        out.push(Cause::invalid(
            "status.failed",
            count(new, "failed"),
            "cannot decrease the failed counter",
        ));
    }
    // An Indexed Job with completions equal to parallelism may scale down.
    let spec = &new["spec"];
    let elastic = spec["completionMode"] == "Indexed" && spec["completions"] == spec["parallelism"];
    if !elastic && count(new, "succeeded") < count(old, "succeeded") {
        out.push(Cause::invalid(
            "status.succeeded",
            count(new, "succeeded"),
            "cannot decrease the succeeded counter",
        ));
    }
    let (o, n) = (&old["status"], &new["status"]);
    if !o["completionTime"].is_null()
        && !n["completionTime"].is_null()
        && o["completionTime"] != n["completionTime"]
    {
        out.push(Cause::invalid(
            "status.completionTime",
            &n["completionTime"],
            "completionTime cannot be mutated",
        ));
    }
    if !o["startTime"].is_null() && o["startTime"] != n["startTime"] && spec["suspend"] != true {
        out.push(Cause::required_because(
            "status.startTime",
            "startTime cannot be removed for unsuspended job",
        ));
    }
    let (met_before, met) = (
        is_true(old, "SuccessCriteriaMet"),
        is_true(new, "SuccessCriteriaMet"),
    );
    if met_before && !met {
        out.push(Cause::invalid_omitted(
            "status.conditions",
            "cannot disable the SuccessCriteriaMet=True condition",
        ));
    }
    if is_true(old, "Complete") && !met_before && met {
        out.push(Cause::invalid_omitted(
            "status.conditions",
            "cannot set SuccessCriteriaMet=True for Job already has Complete=true conditions",
        ));
    }
}

/// Every status rule for an update from `old` to `new` that writes the
/// status (a write of the main resource keeps the stored status).
pub fn update(old: &Value, new: &Value, out: &mut Vec<Cause>) {
    if old["status"] == new["status"] {
        return;
    }
    always(new, out);
    when_changed(old, new, out);
    transitions(old, new, out);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(spec: Value, status: Value) -> Value {
        json!({"spec": spec, "status": status})
    }

    fn lines(old: &Value, new: &Value) -> Vec<String> {
        let mut out = Vec::new();
        update(old, new, &mut out);
        out.iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    fn cond(kind: &str) -> Value {
        json!({"type": kind, "status": "True"})
    }

    const T0: &str = "2026-11-24T06:00:00Z";
    const T1: &str = "2026-11-24T06:01:00Z";

    #[test]
    fn counters_never_go_down_and_are_never_negative() {
        let spec = json!({"completions": 3, "parallelism": 3});
        let old = job(spec.clone(), json!({"succeeded": 2, "failed": 1}));
        let new = job(spec, json!({"succeeded": 1, "failed": 0, "active": -1}));
        assert_eq!(
            lines(&old, &new),
            vec![
                "status.active: Invalid value: -1: must be greater than or equal to 0",
                "status.failed: Invalid value: 0: cannot decrease the failed counter",
                "status.succeeded: Invalid value: 1: cannot decrease the succeeded counter",
            ]
        );
        // An elastic Indexed Job (completions = parallelism) may scale down.
        let spec = json!({"completionMode": "Indexed", "completions": 1, "parallelism": 1});
        let old = job(spec.clone(), json!({"succeeded": 2}));
        assert!(lines(&old, &job(spec, json!({"succeeded": 1}))).is_empty());
    }

    #[test]
    fn a_finished_job_stays_finished_with_its_times_and_no_pods() {
        let spec = json!({"completions": 1});
        let running = job(
            spec.clone(),
            json!({"active": 1, "startTime": T0,
            "uncountedTerminatedPods": {"succeeded": ["a"]}}),
        );
        let done = job(
            spec.clone(),
            json!({"active": 1, "conditions": [cond("Complete")],
            "uncountedTerminatedPods": {"succeeded": ["a", "a", ""]}}),
        );
        assert_eq!(
            lines(&running, &done),
            vec![
                "status.uncountedTerminatedPods.succeeded[1]: Duplicate value: \"a\"",
                "status.uncountedTerminatedPods.succeeded[2]: Invalid value: \"\": must not be empty",
                "status.completionTime: Required value: completionTime is required for Complete jobs",
                "status.active: Invalid value: 1: active>0 is invalid for finished job",
                "status.startTime: Required value: startTime is required for finished job",
                "status.uncountedTerminatedPods: Invalid value: {\"succeeded\":[\"a\",\"a\",\"\"]}: uncountedTerminatedPods needs to be empty for finished job",
                "status.startTime: Required value: startTime cannot be removed for unsuspended job",
            ]
        );
        // What Balsa's controller writes when a Job completes is accepted.
        let complete = job(
            spec.clone(),
            json!({"succeeded": 1, "startTime": T0,
            "completionTime": T1, "conditions": [cond("SuccessCriteriaMet"), cond("Complete")]}),
        );
        assert!(lines(&running, &complete).is_empty());
        // And then it stays Complete, at the same time.
        let reopened = job(
            spec.clone(),
            json!({"succeeded": 1, "startTime": T0,
            "completionTime": T0, "conditions": [cond("SuccessCriteriaMet")]}),
        );
        assert_eq!(
            lines(&complete, &reopened),
            vec![
                "status.completionTime: Invalid value: \"2026-11-24T06:00:00Z\": cannot set completionTime when there is no Complete=True condition",
                "status.conditions: Invalid value: cannot disable the terminal Complete=True condition",
                "status.completionTime: Invalid value: \"2026-11-24T06:00:00Z\": completionTime cannot be mutated",
            ]
        );
    }

    #[test]
    fn conditions_that_contradict_each_other_are_refused() {
        let spec = json!({"completions": 1});
        let old = job(spec.clone(), json!({"startTime": T0}));
        let both = job(
            spec.clone(),
            json!({"startTime": T0, "completionTime": T1,
            "conditions": [cond("Complete"), cond("Failed"), cond("SuccessCriteriaMet")]}),
        );
        assert_eq!(
            lines(&old, &both),
            vec![
                "status.conditions: Invalid value: cannot set SuccessCriteriaMet=True and Failed=true conditions",
                "status.conditions: Invalid value: cannot set Complete=True and Failed=true conditions",
            ]
        );
        let early = job(
            spec.clone(),
            json!({"startTime": T1, "completionTime": T0,
            "conditions": [cond("SuccessCriteriaMet"), cond("Complete")]}),
        );
        assert_eq!(
            lines(&old, &early),
            vec![
                "status.completionTime: Invalid value: \"2026-11-24T06:00:00Z\": completionTime cannot be set before startTime",
                "status.startTime: Required value: startTime cannot be removed for unsuspended job",
            ]
        );
    }

    #[test]
    fn index_lists_must_parse_and_fit_the_mode() {
        let plain = json!({"completions": 3});
        let old = job(plain.clone(), json!({}));
        let new = job(
            plain,
            json!({"completedIndexes": "0,1", "failedIndexes": "2"}),
        );
        assert_eq!(
            lines(&old, &new),
            vec![
                "status.completedIndexes: Invalid value: \"0,1\": cannot set non-empty completedIndexes when non-indexed completion mode",
                "status.failedIndexes: Invalid value: \"2\": cannot set non-null failedIndexes when backoffLimitPerIndex is null",
            ]
        );
        let indexed =
            json!({"completionMode": "Indexed", "completions": 3, "backoffLimitPerIndex": 1});
        let old = job(indexed.clone(), json!({}));
        let out = lines(
            &old,
            &job(indexed.clone(), json!({"completedIndexes": "0-7"})),
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with(
            "status.completedIndexes: Invalid value: \"0-7\": error parsing completedIndexes: "
        ));
        assert!(lines(
            &old,
            &job(
                indexed.clone(),
                json!({"completedIndexes": "0,2", "failedIndexes": "1"})
            )
        )
        .is_empty());
        let both = job(
            indexed.clone(),
            json!({"completedIndexes": "0-1", "failedIndexes": "1-2"}),
        );
        assert_eq!(
            lines(&old, &both),
            vec!["status.failedIndexes: Invalid value: \"1-2\": failedIndexes and completedIndexes overlap at index: 1"]
        );
        // An old overlap stays writable while neither list changes.
        let mut relabelled = both.clone();
        relabelled["status"]["active"] = json!(1);
        assert!(lines(&both, &relabelled).is_empty());
    }

    #[test]
    fn a_main_resource_write_keeps_an_old_status_writable() {
        let spec = json!({"completions": 1});
        let odd = job(spec.clone(), json!({"active": -1}));
        let mut relabelled = odd.clone();
        relabelled["metadata"] = json!({"labels": {"a": "b"}});
        assert!(lines(&odd, &relabelled).is_empty());
    }
}
