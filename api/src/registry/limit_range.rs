//! LimitRange admission for pods (upstream's LimitRanger, `Container`
//! limits): containers without a request or limit get the range's
//! defaults, then every container must lie within its min and max.

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

fn container_items(ranges: &[Value]) -> Vec<&Value> {
    ranges
        .iter()
        .flat_map(|r| r["spec"]["limits"].as_array().into_iter().flatten())
        .filter(|i| i["type"] == "Container")
        .collect()
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

fn check(c: &Value, item: &Value, out: &mut Vec<String>) {
    let req = &c["resources"]["requests"];
    let lim = &c["resources"]["limits"];
    let q = |v: &Value| v.as_str().and_then(Quantity::parse);
    for (res, min) in map(&item["min"]) {
        let (Some(minq), min) = (q(&min), min.as_str().unwrap_or_default()) else {
            continue;
        };
        match q(&req[&res]) {
            None => out.push(format!(
                "minimum {res} usage per Container is {min}.  No request is specified"
            )),
            Some(r) if r < minq => out.push(format!(
                "minimum {res} usage per Container is {min}, but request is {}",
                req[&res].as_str().unwrap_or_default()
            )),
            Some(_) => match q(&lim[&res]) {
                Some(l) if l < minq => out.push(format!(
                    "minimum {res} usage per Container is {min}, but limit is {}",
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
                "maximum {res} usage per Container is {max}.  No limit is specified"
            )),
            Some(l) if l > maxq => out.push(format!(
                "maximum {res} usage per Container is {max}, but limit is {}",
                lim[&res].as_str().unwrap_or_default()
            )),
            Some(_) => match q(&req[&res]) {
                Some(r) if r > maxq => out.push(format!(
                    "maximum {res} usage per Container is {max}, but request is {}",
                    req[&res].as_str().unwrap_or_default()
                )),
                _ => {}
            },
        }
    }
}

/// Defaults then checks `pod` against the namespace's LimitRanges; the
/// error is upstream's message (one, or several as `[a, b]`).
pub fn admit_pod(pod: &mut Value, ranges: &[Value]) -> Result<(), String> {
    let items = container_items(ranges);
    if items.is_empty() {
        return Ok(());
    }
    let mut errs = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(cs) = pod["spec"][list].as_array_mut() else {
            continue;
        };
        for c in cs.iter_mut() {
            for item in &items {
                let (limits, requests) = defaults(item);
                fill(c, "limits", &limits);
                fill(c, "requests", &requests);
            }
            for item in &items {
                check(c, item, &mut errs);
            }
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
}
