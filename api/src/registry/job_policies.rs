//! Validation of a Job's policies beyond its pod counts, as upstream's
//! `validateJobSpec` words it: `successPolicy` (Indexed Jobs only, 1-20
//! rules, indexes within completions), `managedBy` (a domain-prefixed path
//! of at most 63 bytes) and `podReplacementPolicy`.

use serde_json::Value;

use super::error::Cause;
use super::names;

const MAX_SUCCESS_RULES: usize = 20;
const MAX_SUCCEEDED_INDEXES: usize = 64 * 1024;
const MAX_MANAGED_BY: usize = 63;

fn shown(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The policy as kube-apiserver prints it in an error: its internal Go
/// struct marshalled, field names capitalised and unset fields null.
fn shown_as_go(policy: &Value) -> String {
    let rules = policy["rules"].as_array().map(|rules| {
        let each: Vec<String> = rules
            .iter()
            .map(|r| {
                format!(
                    "{{\"SucceededIndexes\":{},\"SucceededCount\":{}}}",
                    shown(&r["succeededIndexes"]),
                    shown(&r["succeededCount"])
                )
            })
            .collect();
        format!("[{}]", each.join(","))
    });
    format!("{{\"Rules\":{}}}", rules.as_deref().unwrap_or("null"))
}

/// One `a` or `a-b` part of an index list (upstream parseIndexInterval).
fn interval(part: &str, completions: i64) -> Result<(i64, i64), String> {
    let limits: Vec<&str> = part.split('-').collect();
    if limits.len() > 2 {
        return Err(format!(
            "the fragment {part:?} violates the requirement that an index interval can have at most two parts separated by '-'"
        ));
    }
    let number = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("cannot convert string to integer for index: {s:?}"))
    };
    let first = number(limits[0])?;
    if first >= completions {
        return Err(format!("too large index: {:?}", limits[0]));
    }
    let Some(last) = limits.get(1) else {
        return Ok((first, first));
    };
    let last_n = number(last)?;
    if last_n >= completions {
        return Err(format!("too large index: {last:?}"));
    }
    if first >= last_n {
        return Err(format!(
            "non-increasing order, previous: {first}, current: {last_n}"
        ));
    }
    Ok((first, last_n))
}

/// How many indexes `1,3-5` names, or why it is not an ordered list of
/// indexes below `completions` (upstream validateIndexesFormat).
pub fn indexes_format(text: &str, completions: i64) -> Result<i64, String> {
    if text.is_empty() {
        return Ok(0);
    }
    let mut last: Option<i64> = None;
    let mut total = 0;
    for part in text.split(',') {
        let (first, end) = interval(part, completions)?;
        if let Some(prev) = last.filter(|p| *p >= first) {
            return Err(format!(
                "non-increasing order, previous: {prev}, current: {first}"
            ));
        }
        total += end - first + 1;
        last = Some(end);
    }
    Ok(total)
}

/// The first index two ordered index lists share, if any (upstream
/// validateFailedIndexesNotOverlapCompleted): both are walked interval by
/// interval, always stepping past the one that ends first; an interval that
/// does not parse is skipped (its error is reported by `indexes_format`).
pub fn indexes_overlap(completed: &str, failed: &str, completions: i64) -> Option<i64> {
    if completed.is_empty() || failed.is_empty() {
        return None;
    }
    let parsed = |text: &str| -> Vec<(i64, i64)> {
        text.split(',')
            .filter_map(|part| interval(part, completions).ok())
            .collect()
    };
    let (done, lost) = (parsed(completed), parsed(failed));
    let (mut i, mut j) = (0, 0);
    while let (Some(&(c0, c1)), Some(&(f0, f1))) = (done.get(i), lost.get(j)) {
        if c0 <= f1 && f0 <= c1 {
            return Some(c0.max(f0));
        }
        if c0 <= f0 {
            i += 1;
        } else {
            j += 1;
        }
    }
    None
}

pub fn success_policy(spec: &Value, path: &str, out: &mut Vec<Cause>) {
    let policy = &spec["successPolicy"];
    if policy.is_null() {
        return;
    }
    let at = format!("{path}.successPolicy");
    if spec["completionMode"] != "Indexed" {
        out.push(Cause::invalid(
            at,
            shown_as_go(policy),
            "requires indexed completion mode",
        ));
        return;
    }
    let rules = policy["rules"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if rules.is_empty() {
        out.push(Cause::required_because(
            format!("{at}.rules"),
            "at least one rules must be specified when the successPolicy is specified",
        ));
    }
    if rules.len() > MAX_SUCCESS_RULES {
        out.push(Cause::too_many(
            format!("{at}.rules"),
            rules.len(),
            MAX_SUCCESS_RULES,
        ));
    }
    let completions = spec["completions"].as_i64();
    for (i, rule) in rules.iter().enumerate() {
        let rule_at = format!("{at}.rules[{i}]");
        let (indexes, count) = (&rule["succeededIndexes"], rule["succeededCount"].as_i64());
        if indexes.is_null() && count.is_none() {
            out.push(Cause::required_because(
                rule_at.clone(),
                "at least one of succeededCount or succeededIndexes must be specified",
            ));
        }
        let mut listed = 0;
        if let Some(text) = indexes.as_str() {
            let field = format!("{rule_at}.succeededIndexes");
            if text.len() > MAX_SUCCEEDED_INDEXES {
                out.push(Cause::too_long(field.clone(), MAX_SUCCEEDED_INDEXES));
            }
            // (Without completions, an Indexed Job is refused already.)
            if let Some(c) = completions {
                match indexes_format(text, c) {
                    Ok(n) => listed = n,
                    Err(e) => out.push(Cause::invalid(
                        field,
                        format!("{text:?}"),
                        &format!("error parsing succeededIndexes: {e}"),
                    )),
                }
            }
        }
        let (Some(n), Some(c)) = (count, completions) else {
            continue;
        };
        let field = format!("{rule_at}.succeededCount");
        if n < 0 {
            out.push(Cause::invalid(
                field.clone(),
                n,
                "must be greater than or equal to 0",
            ));
        }
        if n > c {
            out.push(Cause::invalid(
                field.clone(),
                n,
                &format!("must be less than or equal to {c} (the number of specified completions)"),
            ));
        }
        if !indexes.is_null() && n > listed {
            out.push(Cause::invalid(
                field,
                n,
                &format!("must be less than or equal to {listed} (the number of indexes in the specified succeededIndexes field)"),
            ));
        }
    }
}

/// An HTTP path as RFC 3986 allows it (upstream's httpPathFmt).
fn http_path(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-._~%!$&'()*+,;=:".contains(c))
}

/// `managedBy`: a domain-prefixed path such as `acme.io/foo`
/// (apimachinery IsDomainPrefixedPath), at most 63 bytes.
pub fn managed_by(spec: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(by) = spec["managedBy"].as_str() else {
        return;
    };
    let field = format!("{path}.managedBy");
    match by.split_once('/') {
        _ if by.is_empty() => out.push(Cause::required(field.clone())),
        Some((host, rest)) if !host.is_empty() && !rest.is_empty() => {
            if let Err(e) = names::dns1123_subdomain(host) {
                out.push(Cause::invalid(field.clone(), format!("{host:?}"), &e));
            }
            if !http_path(rest) {
                out.push(Cause::invalid(
                    field.clone(),
                    format!("{rest:?}"),
                    "Invalid path (regex used for validation is '[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')",
                ));
            }
        }
        _ => out.push(Cause::invalid(
            field.clone(),
            format!("{by:?}"),
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        )),
    }
    if by.len() > MAX_MANAGED_BY {
        out.push(Cause::too_long(field, MAX_MANAGED_BY));
    }
}

/// `podReplacementPolicy`: `Failed` or `TerminatingOrFailed`, and only
/// `Failed` beside a pod failure policy.
pub fn pod_replacement_policy(spec: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(policy) = spec["podReplacementPolicy"].as_str() else {
        return;
    };
    let field = format!("{path}.podReplacementPolicy");
    if !spec["podFailurePolicy"].is_null() {
        if policy != "Failed" {
            out.push(Cause::not_supported(field, policy, &["Failed"]));
        }
    } else if !matches!(policy, "Failed" | "TerminatingOrFailed") {
        out.push(Cause::not_supported(
            field,
            policy,
            &["Failed", "TerminatingOrFailed"],
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn lines(f: fn(&Value, &str, &mut Vec<Cause>), spec: Value) -> Vec<String> {
        let mut out = Vec::new();
        f(&spec, "spec", &mut out);
        out.iter().map(Cause::line).collect()
    }

    #[test]
    fn overlapping_index_lists_name_the_first_shared_index() {
        assert_eq!(indexes_overlap("0,2", "1", 5), None);
        assert_eq!(indexes_overlap("", "1", 5), None);
        assert_eq!(indexes_overlap("0-2", "2-4", 5), Some(2));
        assert_eq!(indexes_overlap("0,3-4", "1-3", 5), Some(3));
        assert_eq!(indexes_overlap("4", "0,1,4", 5), Some(4));
        // An interval that does not parse is passed over, as upstream.
        assert_eq!(indexes_overlap("x,3", "3", 5), Some(3));
        assert_eq!(indexes_overlap("0-9", "1", 5), None);
    }

    #[test]
    fn index_lists_parse_as_upstream() {
        assert_eq!(indexes_format("", 5), Ok(0));
        assert_eq!(indexes_format("0,2-4", 5), Ok(4));
        let err = |s: &str| indexes_format(s, 5).unwrap_err();
        assert_eq!(err("1-2-3"), "the fragment \"1-2-3\" violates the requirement that an index interval can have at most two parts separated by '-'");
        assert_eq!(
            err("a"),
            "cannot convert string to integer for index: \"a\""
        );
        assert_eq!(err("0,5"), "too large index: \"5\"");
        assert_eq!(err("1-7"), "too large index: \"7\"");
        assert_eq!(err("3-1"), "non-increasing order, previous: 3, current: 1");
        assert_eq!(err("2,1"), "non-increasing order, previous: 2, current: 1");
        assert_eq!(
            err("0-2,2"),
            "non-increasing order, previous: 2, current: 2"
        );
    }

    #[test]
    fn success_policies_are_checked() {
        let indexed = |policy: Value| json!({"completionMode": "Indexed", "completions": 5, "successPolicy": policy});
        assert!(lines(
            success_policy,
            indexed(json!({"rules": [
                {"succeededIndexes": "0-2", "succeededCount": 2}, {"succeededCount": 5}
            ]}))
        )
        .is_empty());
        assert_eq!(
            lines(
                success_policy,
                json!({"completions": 5, "successPolicy": {"rules": [{"succeededCount": 1}]}})
            ),
            ["spec.successPolicy: Invalid value: {\"Rules\":[{\"SucceededIndexes\":null,\"SucceededCount\":1}]}: requires indexed completion mode"]
        );
        assert_eq!(
            lines(success_policy, indexed(json!({"rules": []}))),
            ["spec.successPolicy.rules: Required value: at least one rules must be specified when the successPolicy is specified"]
        );
        let many: Vec<Value> = (0..21).map(|_| json!({"succeededCount": 1})).collect();
        assert_eq!(
            lines(success_policy, indexed(json!({ "rules": many }))),
            ["spec.successPolicy.rules: Too many: 21: must have at most 20 items"]
        );
        assert_eq!(
            lines(success_policy, indexed(json!({"rules": [
                {},
                {"succeededIndexes": "0,9"},
                {"succeededCount": 6},
                {"succeededIndexes": "1-2", "succeededCount": 3},
                {"succeededCount": -1},
            ]}))),
            [
                "spec.successPolicy.rules[0]: Required value: at least one of succeededCount or succeededIndexes must be specified",
                "spec.successPolicy.rules[1].succeededIndexes: Invalid value: \"0,9\": error parsing succeededIndexes: too large index: \"9\"",
                "spec.successPolicy.rules[2].succeededCount: Invalid value: 6: must be less than or equal to 5 (the number of specified completions)",
                "spec.successPolicy.rules[3].succeededCount: Invalid value: 3: must be less than or equal to 2 (the number of indexes in the specified succeededIndexes field)",
                "spec.successPolicy.rules[4].succeededCount: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
    }

    #[test]
    fn managed_by_is_a_short_domain_prefixed_path() {
        let check = |by: &str| lines(managed_by, json!({ "managedBy": by }));
        assert!(check("kubernetes.io/job-controller").is_empty());
        assert!(check("example.com/queue:v1").is_empty());
        assert_eq!(check(""), ["spec.managedBy: Required value"]);
        assert_eq!(
            check("queue"),
            ["spec.managedBy: Invalid value: \"queue\": must be a domain-prefixed path (such as \"acme.io/foo\")"]
        );
        assert_eq!(
            check("Example.com/q"),
            [format!(
                "spec.managedBy: Invalid value: \"Example.com\": {}",
                names::dns1123_subdomain("Example.com").unwrap_err()
            )]
        );
        assert_eq!(
            check("example.com/a b"),
            ["spec.managedBy: Invalid value: \"a b\": Invalid path (regex used for validation is '[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')"]
        );
        let long = format!("example.com/{}", "q".repeat(60));
        assert_eq!(
            check(&long),
            ["spec.managedBy: Too long: may not be more than 63 bytes"]
        );
    }

    #[test]
    fn pod_replacement_policies_are_checked() {
        let check = |spec: Value| lines(pod_replacement_policy, spec);
        assert!(check(json!({"podReplacementPolicy": "Failed"})).is_empty());
        assert!(check(json!({"podReplacementPolicy": "TerminatingOrFailed"})).is_empty());
        assert_eq!(
            check(json!({"podReplacementPolicy": "Never"})),
            ["spec.podReplacementPolicy: Unsupported value: \"Never\": supported values: \"Failed\", \"TerminatingOrFailed\""]
        );
        assert_eq!(
            check(json!({"podReplacementPolicy": "TerminatingOrFailed", "podFailurePolicy": {"rules": []}})),
            ["spec.podReplacementPolicy: Unsupported value: \"TerminatingOrFailed\": supported values: \"Failed\""]
        );
    }
}
