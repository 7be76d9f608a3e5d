//! REST paths to what they name: `/api/v1[/namespaces/NS]/RESOURCE[/NAME[/SUB]]`
//! and `/apis/GROUP/VERSION/...`, with the legacy `/watch/` prefix.

use crate::registry::kinds::{by_resource, Kind};
use crate::registry::{ApiError, Reason};

#[derive(Debug)]
pub struct Target {
    pub kind: &'static Kind,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    /// Came in through `/watch/...`.
    pub watch: bool,
}

#[derive(Debug)]
pub enum Route {
    /// `/api/v1`, `/apis/G/V`
    Discovery {
        group: String,
        version: String,
    },
    Resource(Target),
}

pub fn not_found() -> ApiError {
    ApiError::new(
        Reason::NotFound,
        "the server could not find the requested resource",
    )
}

pub fn parse(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    let (watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    if rest.is_empty() {
        return Ok(Route::Discovery {
            group: group.into(),
            version: version.into(),
        });
    }
    // `namespaces/NS/RESOURCE...` is namespaced; `namespaces/NS[/status]` is
    // the Namespace object itself.
    let (ns, rest) = match rest {
        ["namespaces", ns, resource, tail @ ..] if !matches!(*resource, "status" | "finalize") => {
            (Some(*ns), [&[*resource][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let (resource, name, sub) = match rest.as_slice() {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(*n), None),
        [r, n, s] => (*r, Some(*n), Some(*s)),
        _ => return Err(not_found()),
    };
    let kind = by_resource(group, resource)
        .filter(|k| k.version == version)
        .ok_or_else(not_found)?;
    if ns.is_some() && !kind.namespaced {
        return Err(not_found());
    }
    if ns.is_none() && kind.namespaced && name.is_some() {
        return Err(not_found());
    }
    if let Some(s) = sub {
        let known = match s {
            "status" => kind.status,
            "scale" => kind.scale,
            "binding" | "eviction" | "log" => kind.kind == "Pod" && kind.group.is_empty(),
            _ => false,
        };
        if !known {
            return Err(not_found());
        }
    }
    for n in [ns, name].into_iter().flatten() {
        if n.is_empty() {
            return Err(not_found());
        }
    }
    Ok(Route::Resource(Target {
        kind,
        ns: ns.map(str::to_string),
        name: name.map(str::to_string),
        sub: sub.map(str::to_string),
        watch,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match parse(path).unwrap() {
            Route::Resource(t) => t,
            Route::Discovery { .. } => panic!("{path} is discovery"),
        }
    }

    #[test]
    fn paths() {
        let t = target("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (
                t.kind.kind,
                t.ns.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("Pod", Some("default"), Some("web"), Some("status"))
        );
        let t = target("/api/v1/namespaces/prod");
        assert_eq!(
            (t.kind.kind, t.name.as_deref()),
            ("Namespace", Some("prod"))
        );
        let t = target("/api/v1/namespaces/prod/status");
        assert_eq!(
            (t.kind.kind, t.sub.as_deref()),
            ("Namespace", Some("status"))
        );
        let t = target("/apis/apps/v1/deployments");
        assert!(t.ns.is_none() && t.name.is_none());
        let t = target("/apis/apps/v1/watch/namespaces/a/deployments");
        assert!(t.watch);
        let t = target("/api/v1/nodes/n1");
        assert_eq!(t.kind.kind, "Node");
        assert!(matches!(
            parse("/apis/apps/v1").unwrap(),
            Route::Discovery { .. }
        ));
        for bad in [
            "/api/v1/nopes",
            "/apis/apps/v2/deployments",
            "/api/v1/namespaces/a/nodes/n",
            "/api/v1/pods/web",
            "/apis/apps/v1/namespaces/a/deployments/d/binding",
            "/api/v1/namespaces/a/configmaps/c/scale",
            "/other",
        ] {
            assert_eq!(parse(bad).unwrap_err().code(), 404, "{bad}");
        }
    }
}
