//! LimitRange admission for pods (upstream's LimitRanger): containers
//! (and init containers) without a request or limit get the `Container`
//! items' defaults; then every container must lie within the `Container`
//! items' min, max and maxLimitRequestRatio, and the pod's totals over its
//! containers within the `Pod` items'. (Init containers are defaulted but not
//! checked, as upstream. Balsa serves no PersistentVolumeClaims, so
//! `PersistentVolumeClaim` items have nothing to constrain.)

use serde_json::{json, Map, Value};

use super::quantity::Quantity;

fn map(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// The item's defaults as the API would have stored them: `default` falls
/// back to `max`, `defaultRequest` to `default`.
fn defaults(item: &Value) -> (Map<String, Value>, Map<String, Value>) {
    let mut limits = map(&item["default"]);
    for (k, v) in map(&item["max"]) {
        limits.entry(k).or_insert(v);
    }
    let mut requests = map(&item["defaultRequest"]);
    for (k, v) in &limits {
        requests.entry(k.clone()).or_insert(v.clone());
    }
    (limits, requests)
}

/// The ranges' items of one type (`Container`, `Pod`).
fn items<'a>(ranges: &'a [Value], kind: &str) -> Vec<&'a Value> {
    ranges
        .iter()
        .flat_map(|r| r["spec"]["limits"].as_array().into_iter().flatten())
        .filter(|i| i["type"] == kind)
        .collect()
}

/// A pod's requests or limits summed over its containers, as upstream sums
/// them: a resource counts only when every container names it; cpu adds up
/// in millicores, everything else in whole units (each rounded up).
fn pod_total(pod: &Value, which: &str) -> Value {
    let lists: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| &c["resources"][which])
        .collect();
    let mut total = Map::new();
    let Some(first) = lists.first().and_then(|l| l.as_object()) else {
        return Value::Object(total);
    };
    for res in first.keys() {
        let mut milli = 0i128;
        let mut everywhere = true;
        for list in &lists {
            match list
                .get(res)
                .and_then(Value::as_str)
                .and_then(Quantity::parse)
            {
                Some(q) if res == "cpu" => milli += q.milli,
                Some(q) => milli += (q.milli + 999).div_euclid(1000) * 1000,
                None => everywhere = false,
            }
        }
        if everywhere {
            let sum = Quantity {
                milli,
                ..Quantity::default()
            };
            total.insert(res.clone(), Value::String(sum.to_string()));
        }
    }
    Value::Object(total)
}

fn fill(c: &mut Value, which: &str, from: &Map<String, Value>) {
    if from.is_empty() {
        return;
    }
    if !c["resources"].is_object() {
        c["resources"] = json!({});
    }
    if !c["resources"][which].is_object() {
        c["resources"][which] = json!({});
    }
    if let Some(m) = c["resources"][which].as_object_mut() {
        for (k, v) in from {
            m.entry(k.clone()).or_insert(v.clone());
        }
    }
}

/// Checks one container's (or the pod's total) `req` and `lim` against one
/// item; `kind` names what is checked in the messages.
fn check(kind: &str, req: &Value, lim: &Value, item: &Value, out: &mut Vec<String>) {
    let q = |v: &Value| v.as_str().and_then(Quantity::parse);
    for (res, min) in map(&item["min"]) {
        let (Some(minq), min) = (q(&min), min.as_str().unwrap_or_default()) else {
            continue;
        };
        match q(&req[&res]) {
            None => out.push(format!(
                "minimum {res} usage per {kind} is {min}.  No request is specified"
            )),
            Some(r) if r < minq => out.push(format!(
                "minimum {res} usage per {kind} is {min}, but request is {}",
                req[&res].as_str().unwrap_or_default()
            )),
            Some(_) => match q(&lim[&res]) {
                Some(l) if l < minq => out.push(format!(
                    "minimum {res} usage per {kind} is {min}, but limit is {}",
                    lim[&res].as_str().unwrap_or_default()
                )),
                _ => {}
            },
        }
    }
    for (res, max) in map(&item["max"]) {
        let (Some(maxq), max) = (q(&max), max.as_str().unwrap_or_default()) else {
            continue;
        };
        match q(&lim[&res]) {
            None => out.push(format!(
                "maximum {res} usage per {kind} is {max}.  No limit is specified"
            )),
            Some(l) if l > maxq => out.push(format!(
                "maximum {res} usage per {kind} is {max}, but limit is {}",
                lim[&res].as_str().unwrap_or_default()
            )),
            Some(_) => match q(&req[&res]) {
                Some(r) if r > maxq => out.push(format!(
                    "maximum {res} usage per {kind} is {max}, but request is {}",
                    req[&res].as_str().unwrap_or_default()
                )),
                _ => {}
            },
        }
    }
    for (res, ratio) in map(&item["maxLimitRequestRatio"]) {
        let (Some(most), shown) = (q(&ratio), ratio.as_str().unwrap_or_default()) else {
            continue;
        };
        let nonzero = |v: &Value| q(v).filter(|x| x.milli != 0);
        match (nonzero(&req[&res]), nonzero(&lim[&res])) {
            (None, _) => out.push(format!(
                "{res} max limit to request ratio per {kind} is {shown}, but no request is specified or request is 0"
            )),
            (_, None) => out.push(format!(
                "{res} max limit to request ratio per {kind} is {shown}, but no limit is specified or limit is 0"
            )),
            (Some(r), Some(l)) => {
                let ratio = l.milli as f64 / r.milli as f64;
                if ratio * 1000.0 > most.milli as f64 {
                    out.push(format!(
                        "{res} max limit to request ratio per {kind} is {shown}, but provided ratio is {ratio:.6}"
                    ));
                }
            }
        }
    }
}

/// Defaults then checks `pod` against the namespace's LimitRanges; the
/// error is upstream's message (one, or several as `[a, b]`).
pub fn admit_pod(pod: &mut Value, ranges: &[Value]) -> Result<(), String> {
    let (containers, pods) = (items(ranges, "Container"), items(ranges, "Pod"));
    if containers.is_empty() && pods.is_empty() {
        return Ok(());
    }
    for list in ["initContainers", "containers"] {
        for c in pod["spec"][list].as_array_mut().into_iter().flatten() {
            for item in &containers {
                let (limits, requests) = defaults(item);
                fill(c, "limits", &limits);
                fill(c, "requests", &requests);
            }
        }
    }
    let mut errs = Vec::new();
    for item in &containers {
        for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let r = &c["resources"];
            check("Container", &r["requests"], &r["limits"], item, &mut errs);
        }
    }
    if !pods.is_empty() {
        let (requests, limits) = (pod_total(pod, "requests"), pod_total(pod, "limits"));
        for item in &pods {
            check("Pod", &requests, &limits, item, &mut errs);
        }
    }
    match errs.len() {
        0 => Ok(()),
        1 => Err(errs.remove(0)),
        _ => Err(format!("[{}]", errs.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(item: Value) -> Vec<Value> {
        vec![json!({"spec": {"limits": [item]}})]
    }

    #[test]
    fn defaults_then_bounds() {
        let lr = range(json!({"type":"Container","default":{"cpu":"500m"},
            "defaultRequest":{"cpu":"100m"},"max":{"cpu":"1","memory":"1Gi"}}));
        let mut pod = json!({"spec":{"containers":[{"name":"a"},
            {"name":"b","resources":{"requests":{"cpu":"200m"},"limits":{"cpu":"800m"}}}]}});
        admit_pod(&mut pod, &lr).unwrap();
        let a = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(a["limits"], json!({"cpu":"500m","memory":"1Gi"}));
        assert_eq!(a["requests"], json!({"cpu":"100m","memory":"1Gi"}));
        let b = &pod["spec"]["containers"][1]["resources"];
        assert_eq!(b["limits"]["cpu"], "800m");
        assert_eq!(b["requests"]["cpu"], "200m");

        let mut big =
            json!({"spec":{"containers":[{"name":"a","resources":{"limits":{"cpu":"2"}}}]}});
        assert_eq!(
            admit_pod(&mut big, &lr),
            Err("maximum cpu usage per Container is 1, but limit is 2".into())
        );
        let min = range(json!({"type":"Container","min":{"cpu":"100m","memory":"10Mi"}}));
        let mut small =
            json!({"spec":{"containers":[{"name":"a","resources":{"requests":{"cpu":"50m"}}}]}});
        assert_eq!(
            admit_pod(&mut small, &min),
            Err("[minimum cpu usage per Container is 100m, but request is 50m, minimum memory usage per Container is 10Mi.  No request is specified]".into())
        );
    }

    #[test]
    fn pod_items_bound_the_sum_over_containers() {
        let lr = range(json!({"type":"Pod","max":{"cpu":"1","memory":"1Gi"},"min":{"cpu":"200m"}}));
        let mut pod = json!({"spec":{"containers":[
            {"name":"a","resources":{"requests":{"cpu":"300m"},"limits":{"cpu":"600m","memory":"512Mi"}}},
            {"name":"b","resources":{"requests":{"cpu":"300m"},"limits":{"cpu":"700m"}}}]}});
        // cpu limits sum to 1300m; memory is named by one container only, so
        // the pod has no memory limit at all (upstream's sum).
        assert_eq!(
            admit_pod(&mut pod, &lr),
            Err("[maximum cpu usage per Pod is 1, but limit is 1300m, maximum memory usage per Pod is 1Gi.  No limit is specified]".into())
        );
        let mut fits = json!({"spec":{"containers":[
            {"name":"a","resources":{"requests":{"cpu":"100m"},"limits":{"cpu":"500m","memory":"300Mi"}}},
            {"name":"b","resources":{"requests":{"cpu":"100m"},"limits":{"cpu":"500m","memory":"300Mi"}}}]}});
        admit_pod(&mut fits, &lr).unwrap();
        // A Pod item sets no defaults.
        assert!(fits["spec"]["containers"][0]["resources"]["requests"]
            .get("memory")
            .is_none());
    }

    #[test]
    fn limit_to_request_ratio_per_container_and_pod() {
        let lr = range(json!({"type":"Container","maxLimitRequestRatio":{"cpu":"2"}}));
        let pod = |req: &str, lim: &str| json!({"spec":{"containers":[{"name":"a","resources":{"requests":{"cpu":req},"limits":{"cpu":lim}}}]}});
        admit_pod(&mut pod("250m", "500m"), &lr).unwrap();
        assert_eq!(
            admit_pod(&mut pod("250m", "1"), &lr),
            Err(
                "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"
                    .into()
            )
        );
        assert_eq!(
            admit_pod(&mut pod("0", "1"), &lr),
            Err("cpu max limit to request ratio per Container is 2, but no request is specified or request is 0".into())
        );
        let mut no_limit =
            json!({"spec":{"containers":[{"name":"a","resources":{"requests":{"cpu":"1"}}}]}});
        assert_eq!(
            admit_pod(&mut no_limit, &lr),
            Err("cpu max limit to request ratio per Container is 2, but no limit is specified or limit is 0".into())
        );
        let per_pod = range(json!({"type":"Pod","maxLimitRequestRatio":{"memory":"1.5"}}));
        let mut two = json!({"spec":{"containers":[
            {"name":"a","resources":{"requests":{"memory":"100Mi"},"limits":{"memory":"100Mi"}}},
            {"name":"b","resources":{"requests":{"memory":"100Mi"},"limits":{"memory":"300Mi"}}}]}});
        assert_eq!(
            admit_pod(&mut two, &per_pod),
            Err(
                "memory max limit to request ratio per Pod is 1.5, but provided ratio is 2.000000"
                    .into()
            )
        );
    }

    #[test]
    fn init_containers_get_defaults_but_are_not_bounded() {
        let lr = range(
            json!({"type":"Container","defaultRequest":{"cpu":"100m"},"default":{"cpu":"200m"},
            "max":{"cpu":"500m"}}),
        );
        let mut pod = json!({"spec":{
            "initContainers":[{"name":"init","resources":{"limits":{"cpu":"2"}}},{"name":"plain"}],
            "containers":[{"name":"a"}]}});
        admit_pod(&mut pod, &lr).unwrap();
        assert_eq!(
            pod["spec"]["initContainers"][1]["resources"]["limits"]["cpu"],
            "200m"
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["resources"]["requests"]["cpu"],
            "100m"
        );
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "200m"
        );
    }
}
