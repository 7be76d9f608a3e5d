use serde_json::Value;

use super::*;

fn all_refs<'a>(v: &'a Value, out: &mut Vec<(&'a str, bool)>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push((r, m.len() > 1));
            }
            m.values().for_each(|c| all_refs(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| all_refs(c, out)),
        _ => {}
    }
}

fn v3_docs() -> Vec<(&'static String, &'static Document)> {
    V3.iter().collect()
}

fn v3(group: &str, version: &str) -> &'static Value {
    v3_document(group, version).unwrap_or_else(|| panic!("no document for {group}/{version}"))
}

#[test]
fn every_ref_resolves_in_every_document() {
    for (path, doc) in v3_docs() {
        let schemas = &doc.value["components"]["schemas"];
        let mut refs = Vec::new();
        all_refs(&doc.value, &mut refs);
        assert!(refs.len() > 10, "{path}");
        for (r, has_siblings) in refs {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{path}: foreign ref {r}"));
            assert!(schemas.get(name).is_some(), "{path}: {r} does not resolve");
            // OpenAPI 3.0 ignores a ref's siblings: they must be under allOf.
            assert!(!has_siblings, "{path}: {r} has siblings");
        }
    }
    let v2 = v2_document();
    let mut refs = Vec::new();
    all_refs(v2, &mut refs);
    for (r, _) in refs {
        let name = r
            .strip_prefix("#/definitions/")
            .unwrap_or_else(|| panic!("v2: foreign ref {r}"));
        assert!(v2["definitions"].get(name).is_some(), "v2: {r}");
    }
}

#[test]
fn index_lists_every_group_version_with_its_hash() {
    let index = v3_index();
    for (g, v) in kinds::group_versions() {
        let path = v3_path(g, v);
        let url = index["paths"][&path]["serverRelativeURL"]
            .as_str()
            .unwrap_or_else(|| panic!("{path} missing"));
        let doc = v3_at(&path).expect("document");
        assert_eq!(url, format!("/openapi/v3/{path}?hash={}", doc.hash));
        assert_eq!(doc.hash.len(), 16);
    }
    assert!(index["paths"]["apis/apps/v1"].is_object());
    assert!(index["paths"]["api/v1"].is_object());
    assert!(v3_document("apps", "v1beta1").is_none());
    assert_eq!(
        v3_at("/apis/apps/v1").map(|d| &d.value),
        v3_document("apps", "v1")
    );
}

#[test]
fn kinds_and_lists_carry_their_group_version_kind() {
    for k in KINDS {
        let doc = v3(k.group, k.version);
        let schemas = &doc["components"]["schemas"];
        let gvk = &schemas[k.schema_name()]["x-kubernetes-group-version-kind"];
        assert_eq!(
            gvk,
            &json!([{"group": k.group, "version": k.version, "kind": k.kind}]),
            "{}",
            k.kind
        );
        let list = &schemas[schemas::list_name(k)];
        assert_eq!(
            list["x-kubernetes-group-version-kind"][0]["kind"],
            format!("{}List", k.kind)
        );
        assert_eq!(
            list["properties"]["items"]["items"]["allOf"][0]["$ref"],
            format!("#/components/schemas/{}", k.schema_name())
        );
        // kube-apiserver never requires metadata.
        let required = schemas[k.schema_name()]["required"].as_array();
        assert!(
            !required.is_some_and(|r| r.iter().any(|f| f == "metadata")),
            "{}",
            k.kind
        );
    }
    let apps = v3("apps", "v1");
    assert_eq!(
        apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]
            ["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
    );
}

#[test]
fn lists_carry_their_merge_semantics() {
    let core = &v3("", "v1")["components"]["schemas"];
    let pod_spec = &core["io.k8s.api.core.v1.PodSpec"]["properties"];
    for list in [
        "containers",
        "initContainers",
        "volumes",
        "imagePullSecrets",
    ] {
        assert_eq!(
            pod_spec[list]["x-kubernetes-patch-merge-key"], "name",
            "{list}"
        );
        assert_eq!(pod_spec[list]["x-kubernetes-list-type"], "map", "{list}");
        assert_eq!(
            pod_spec[list]["x-kubernetes-list-map-keys"],
            json!(["name"])
        );
    }
    assert_eq!(
        pod_spec["containers"]["x-kubernetes-patch-strategy"],
        "merge"
    );
    assert_eq!(
        pod_spec["volumes"]["x-kubernetes-patch-strategy"],
        "merge,retainKeys"
    );
    assert_eq!(pod_spec["tolerations"]["x-kubernetes-list-type"], "atomic");
    assert!(pod_spec["tolerations"]
        .get("x-kubernetes-patch-merge-key")
        .is_none());

    let container = &core["io.k8s.api.core.v1.Container"]["properties"];
    assert_eq!(container["env"]["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(
        container["volumeMounts"]["x-kubernetes-patch-merge-key"],
        "mountPath"
    );
    assert_eq!(
        container["ports"]["x-kubernetes-patch-merge-key"],
        "containerPort"
    );
    assert_eq!(
        container["ports"]["x-kubernetes-list-map-keys"],
        json!(["containerPort", "protocol"])
    );
    let service = &core["io.k8s.api.core.v1.ServiceSpec"]["properties"];
    assert_eq!(service["ports"]["x-kubernetes-patch-merge-key"], "port");
    assert_eq!(
        service["ports"]["x-kubernetes-list-map-keys"],
        json!(["port", "protocol"])
    );
    let meta = &core["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"];
    assert_eq!(meta["finalizers"]["x-kubernetes-list-type"], "set");
    assert_eq!(
        meta["ownerReferences"]["x-kubernetes-patch-merge-key"],
        "uid"
    );
    assert_eq!(
        core["io.k8s.api.core.v1.PodStatus"]["properties"]["conditions"]
            ["x-kubernetes-patch-merge-key"],
        "type"
    );
    let apps = &v3("apps", "v1")["components"]["schemas"];
    assert_eq!(
        apps["io.k8s.api.apps.v1.DeploymentStatus"]["properties"]["conditions"]
            ["x-kubernetes-list-map-keys"],
        json!(["type"])
    );
    assert_eq!(
        apps["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["x-kubernetes-map-type"],
        "atomic"
    );
}

#[test]
fn every_merge_row_lands_on_a_property() {
    let defs = &v2_document()["definitions"];
    let misses: Vec<String> = extensions::FIELDS
        .iter()
        .filter(|f| defs[f.schema]["properties"].get(f.property).is_none())
        .map(|f| format!("{} {}", f.schema, f.property))
        .chain(
            extensions::ATOMIC_TYPES
                .iter()
                .filter(|(name, _)| defs.get(*name).is_none())
                .map(|(name, _)| format!("{name} ")),
        )
        .collect();
    assert!(
        misses.is_empty(),
        "rows matching nothing:\n{}",
        misses.join("\n")
    );
}

fn patch_ops(doc: &Value) -> Vec<(&String, &Value)> {
    doc["paths"]
        .as_object()
        .map(|paths| {
            paths
                .iter()
                .filter_map(|(p, item)| item.get("patch").map(|op| (p, op)))
                .collect()
        })
        .unwrap_or_default()
}

fn param_names(op: &Value) -> Vec<&str> {
    op["parameters"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn every_patch_takes_the_patch_types_and_field_validation() {
    for (path, doc) in v3_docs() {
        let ops = patch_ops(&doc.value);
        assert!(!ops.is_empty(), "{path}");
        for (p, op) in ops {
            let names = param_names(op);
            for want in ["dryRun", "fieldManager", "fieldValidation", "force"] {
                assert!(names.contains(&want), "{p}: no {want}");
            }
            let content = op["requestBody"]["content"].as_object().expect("content");
            for ct in PATCH_CONTENT_TYPES {
                assert!(content.contains_key(*ct), "{p}: no {ct}");
            }
            assert_eq!(op["x-kubernetes-action"], "patch");
            assert!(op["x-kubernetes-group-version-kind"]["kind"].is_string());
        }
    }
    // kubectl's check, for every kind: some PATCH op with the kind's GVK
    // lists fieldValidation.
    for k in KINDS {
        let doc = v3(k.group, k.version);
        let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
        let found = patch_ops(doc).into_iter().any(|(_, op)| {
            op["x-kubernetes-group-version-kind"] == gvk
                && param_names(op).contains(&"fieldValidation")
        });
        assert!(found, "{}", k.kind);
    }
    let v2 = v2_document();
    let op = &v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(op["consumes"], json!(PATCH_CONTENT_TYPES));
    assert!(param_names(op).contains(&"fieldValidation"));
    assert!(param_names(op).contains(&"body"));
}

#[test]
fn resources_have_item_collection_and_subresource_paths() {
    let apps = v3("apps", "v1");
    let paths = &apps["paths"];
    let item = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    for m in ["get", "put", "patch", "delete"] {
        assert_eq!(
            item[m]["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"}),
            "{m}"
        );
    }
    assert_eq!(
        item["patch"]["operationId"],
        "patchAppsV1NamespacedDeployment"
    );
    let coll = &paths["/apis/apps/v1/namespaces/{namespace}/deployments"];
    assert_eq!(coll["get"]["x-kubernetes-action"], "list");
    assert_eq!(coll["post"]["x-kubernetes-action"], "post");
    assert_eq!(
        coll["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentList"
    );
    assert!(paths["/apis/apps/v1/deployments"]["get"].is_object());
    let scale = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
    assert_eq!(
        scale["patch"]["x-kubernetes-group-version-kind"]["kind"],
        "Scale"
    );
    assert!(apps["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"].is_object());
    assert!(
        paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"]["put"].is_object()
    );
    // Path-level parameters name the placeholders.
    let names: Vec<&str> = item["parameters"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["name", "namespace", "pretty"]);

    let core = &v3("", "v1")["paths"];
    assert!(core["/api/v1/nodes/{name}"]["patch"].is_object());
    assert!(core["/api/v1/namespaces/{name}"]["patch"].is_object());
    assert!(core["/api/v1/nodes/{name}/scale"].is_null());
    assert_eq!(
        core["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"]
            ["x-kubernetes-group-version-kind"]["group"],
        "policy"
    );
    assert!(core["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"].is_object());
    assert!(
        core["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"]["responses"]["200"]
            ["content"]["text/plain"]
            .is_object()
    );
    let rbac = &v3("rbac.authorization.k8s.io", "v1")["paths"];
    assert_eq!(
        rbac["/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}"]["patch"]["operationId"],
        "patchRbacAuthorizationV1ClusterRole"
    );
}

/// What `kubectl explain deployment.spec.template.spec.containers` walks.
#[test]
fn explain_finds_descriptions_along_a_field_path() {
    let doc = v3("apps", "v1");
    let schemas = &doc["components"]["schemas"];
    let resolve = |v: &Value| -> Value {
        let r = v["allOf"][0]["$ref"]
            .as_str()
            .or(v["$ref"].as_str())
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .map(|name| schemas[name].clone());
        r.unwrap_or_else(|| v.clone())
    };
    let mut cur = schemas["io.k8s.api.apps.v1.Deployment"].clone();
    assert!(cur["description"].as_str().is_some_and(|d| !d.is_empty()));
    for field in ["spec", "template", "spec", "containers"] {
        let prop = cur["properties"][field].clone();
        assert!(
            prop["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{field}"
        );
        cur = resolve(&prop);
    }
    assert_eq!(cur["type"], "array");
    let container = resolve(&cur["items"]);
    assert!(container["properties"]["image"]["description"].is_string());
    assert!(container["required"]
        .as_array()
        .is_some_and(|r| r.iter().any(|f| f == "name")));
    // int-or-string has a type, as upstream.
    assert_eq!(
        schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
        "int-or-string"
    );
}

#[test]
fn documents_are_stable() {
    let again = Document::new(build_v3("apps", "v1"));
    assert_eq!(v3_at("apis/apps/v1").map(|d| &d.hash), Some(&again.hash));
    assert_eq!(again.json, v3_at("apis/apps/v1").expect("doc").json);
}

#[test]
fn v2_protobuf_carries_every_definition() {
    let pb = v2_protobuf();
    // Document{swagger: "2.0"} first.
    assert_eq!(&pb[..5], [1 << 3 | 2, 3, b'2', b'.', b'0']);
    let text = String::from_utf8_lossy(pb);
    for name in v2_document()["definitions"]
        .as_object()
        .map(|d| d.keys().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        assert!(text.contains(name.as_str()), "{name}");
    }
    assert!(text.contains("x-kubernetes-group-version-kind"));
}
