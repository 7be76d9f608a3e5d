use prost_reflect::prost::Message as _;
use serde_json::json;

use super::*;

/// Request bodies kubectl 1.32.4 sent for `kubectl create … --dry-run=server`,
/// captured from a listener (see `testdata/README.md`).
fn kubectl(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/src/k8s_protobuf/testdata/{name}.pb",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap()
}

/// A body as kubectl builds one: magic, then an Unknown around the object,
/// written here in protobuf text format.
fn body(api_version: &str, kind: &str, object_text: &str) -> Vec<u8> {
    let name = message_name(api_version, kind).unwrap();
    let desc = POOL.get_message_by_name(&name).unwrap();
    let object = DynamicMessage::parse_text_format(desc, object_text).unwrap();
    envelope(api_version, kind, object.encode_to_vec(), "")
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>, encoding: &str) -> Vec<u8> {
    let text = format!(
        r#"typeMeta {{ apiVersion: "{api_version}" kind: "{kind}" }} contentEncoding: "{encoding}" contentType: """#
    );
    let mut unknown =
        DynamicMessage::parse_text_format(POOL.get_message_by_name(UNKNOWN).unwrap(), &text)
            .unwrap();
    unknown.set_field_by_name("raw", Value::Bytes(raw.into()));
    [MAGIC.as_slice(), &unknown.encode_to_vec()].concat()
}

#[test]
fn kubectl_create_namespace() {
    assert_eq!(
        decode(&kubectl("create-namespace")).unwrap(),
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "foo", "generation": 0, "creationTimestamp": null},
            "spec": {},
            "status": {},
        })
    );
}

#[test]
fn kubectl_create_configmap_keeps_binary_data_as_base64() {
    // --from-literal=a=b --from-file=bin=<bytes 00 01 02 ff>
    assert_eq!(
        decode(&kubectl("create-configmap")).unwrap(),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cm1", "namespace": "ns1", "generation": 0, "creationTimestamp": null},
            "data": {"a": "b"},
            "binaryData": {"bin": "AAEC/w=="},
        })
    );
}

#[test]
fn kubectl_create_secret_has_base64_data() {
    // --from-literal=user=admin --from-file=key=<bytes 00 01 02 ff>
    assert_eq!(
        decode(&kubectl("create-secret")).unwrap(),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s1", "namespace": "ns1", "generation": 0, "creationTimestamp": null},
            "data": {"user": "YWRtaW4=", "key": "AAEC/w=="},
        })
    );
}

#[test]
fn kubectl_create_deployment() {
    // --image=nginx:1.27 --port=80 --replicas=0: replicas is a pointer, so its
    // zero is present and kept.
    let meta = |name: &str, ns: Option<&str>| {
        let mut m = json!({"generation": 0, "creationTimestamp": null, "labels": {"app": "web"}});
        if !name.is_empty() {
            m["name"] = name.into();
        }
        if let Some(ns) = ns {
            m["namespace"] = ns.into();
        }
        m
    };
    assert_eq!(
        decode(&kubectl("create-deployment")).unwrap(),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta("web", Some("ns1")),
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": meta("", None),
                    "spec": {
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "ports": [{"containerPort": 80, "hostPort": 0}],
                            "resources": {},
                            "stdin": false,
                            "stdinOnce": false,
                            "tty": false,
                        }],
                        "hostIPC": false,
                        "hostNetwork": false,
                        "hostPID": false,
                    },
                },
                "strategy": {},
                "minReadySeconds": 0,
                "paused": false,
            },
            "status": {
                "availableReplicas": 0,
                "observedGeneration": 0,
                "readyReplicas": 0,
                "replicas": 0,
                "unavailableReplicas": 0,
                "updatedReplicas": 0,
            },
        })
    );
}

#[test]
fn every_captured_kubectl_body_decodes() {
    let service = decode(&kubectl("create-service")).unwrap();
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 0}])
    );
    let quota = decode(&kubectl("create-quota")).unwrap();
    assert_eq!(
        quota["spec"]["hard"],
        json!({"cpu": "2", "memory": "1Gi", "pods": "10"})
    );
    let pdb = decode(&kubectl("create-pdb")).unwrap();
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], "50%");
    let cronjob = decode(&kubectl("create-cronjob")).unwrap();
    assert_eq!(cronjob["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"],
        "OnFailure"
    );
    let job = decode(&kubectl("create-job")).unwrap();
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["echo", "hi"])
    );
    let pc = decode(&kubectl("create-priorityclass")).unwrap();
    assert_eq!(pc["apiVersion"], "scheduling.k8s.io/v1");
    assert_eq!(pc["value"], 1000);
    let sa = decode(&kubectl("create-serviceaccount")).unwrap();
    assert_eq!(sa["kind"], "ServiceAccount");
    assert_eq!(sa["metadata"]["name"], "sa1");
}

#[test]
fn deployment_with_resources_ports_rolling_update_and_times() {
    let text = r#"
        metadata {
          name: "web" namespace: "prod" uid: "" generation: 3
          creationTimestamp { seconds: 1704164645 }
          labels { key: "app" value: "web" }
          managedFields {
            manager: "kubectl" operation: "Update" apiVersion: "apps/v1"
            time { seconds: 1704164646 }
            fieldsType: "FieldsV1"
            fieldsV1 { Raw: "{\"f:spec\":{\"f:replicas\":{}}}" }
          }
        }
        spec {
          replicas: 3
          selector { matchLabels { key: "app" value: "web" } }
          strategy {
            type: "RollingUpdate"
            rollingUpdate { maxUnavailable { type: 0 intVal: 1 } maxSurge { type: 1 strVal: "25%" } }
          }
          progressDeadlineSeconds: 600
          template {
            metadata { labels { key: "app" value: "web" } }
            spec {
              terminationGracePeriodSeconds: 0
              containers {
                name: "nginx" image: "nginx:1.27"
                ports { name: "http" containerPort: 8080 protocol: "TCP" }
                resources {
                  limits { key: "cpu" value { string: "500m" } }
                  limits { key: "memory" value { string: "128Mi" } }
                  requests { key: "cpu" value { string: "250m" } }
                }
                readinessProbe { handler { httpGet { path: "/healthz" port { type: 1 strVal: "http" } } } periodSeconds: 5 }
              }
            }
          }
        }
    "#;
    assert_eq!(
        decode(&body("apps/v1", "Deployment", text)).unwrap(),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "prod",
                "generation": 3,
                "creationTimestamp": "2024-01-02T03:04:05Z",
                "labels": {"app": "web"},
                "managedFields": [{
                    "manager": "kubectl",
                    "operation": "Update",
                    "apiVersion": "apps/v1",
                    "time": "2024-01-02T03:04:06Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}},
                }],
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"},
                },
                "progressDeadlineSeconds": 600,
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                            "resources": {
                                "limits": {"cpu": "500m", "memory": "128Mi"},
                                "requests": {"cpu": "250m"},
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "periodSeconds": 5,
                            },
                        }],
                    },
                },
            },
        })
    );
}

#[test]
fn lease_has_micro_times_and_an_int64() {
    let text = r#"
        metadata { name: "kube-scheduler" namespace: "kube-system" }
        spec {
          holderIdentity: "node-1_0c9d"
          leaseDurationSeconds: 15
          acquireTime { seconds: 1704164645 nanos: 123456789 }
          renewTime { seconds: 1704164700 nanos: 0 }
          leaseTransitions: 2
        }
    "#;
    let lease = decode(&body("coordination.k8s.io/v1", "Lease", text)).unwrap();
    assert_eq!(
        lease["spec"],
        json!({
            "holderIdentity": "node-1_0c9d",
            "leaseDurationSeconds": 15,
            "acquireTime": "2024-01-02T03:04:05.123456Z",
            "renewTime": "2024-01-02T03:05:00.000000Z",
            "leaseTransitions": 2,
        })
    );
    // An int64 beyond 2^53 survives as an exact JSON number.
    let rev = decode(&body(
        "apps/v1",
        "ControllerRevision",
        r#"metadata { name: "web-1" } data { raw: "{\"spec\":{\"template\":{}}}" } revision: 9007199254740993"#,
    ))
    .unwrap();
    assert_eq!(rev["data"], json!({"spec": {"template": {}}}));
    assert_eq!(rev["revision"], json!(9_007_199_254_740_993_i64));
}

#[test]
fn inline_structs_are_flattened_and_renamed_fields_use_json_names() {
    let text = r#"
        metadata { name: "p" }
        spec {
          volumes { name: "cfg" volumeSource { configMap { localObjectReference { name: "app-config" } defaultMode: 420 } } }
          containers {
            name: "app" image: "app:1"
            env { name: "PASSWORD" valueFrom { secretKeyRef { localObjectReference { name: "db" } key: "password" } } }
            livenessProbe { handler { exec { command: "true" } } initialDelaySeconds: 3 }
          }
        }
    "#;
    let pod = decode(&body("v1", "Pod", text)).unwrap();
    assert_eq!(
        pod["spec"]["volumes"],
        json!([{"name": "cfg", "configMap": {"name": "app-config", "defaultMode": 420}}])
    );
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["env"],
        json!([{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}])
    );
    assert_eq!(
        container["livenessProbe"],
        json!({"exec": {"command": ["true"]}, "initialDelaySeconds": 3})
    );

    let class = decode(&body(
        "networking.k8s.io/v1",
        "IngressClass",
        r#"metadata { name: "nginx" } spec { controller: "k8s.io/ingress-nginx" parameters { aPIGroup: "k8s.example.com" kind: "Params" name: "p" } }"#,
    ))
    .unwrap();
    assert_eq!(
        class["spec"]["parameters"],
        json!({"apiGroup": "k8s.example.com", "kind": "Params", "name": "p"})
    );
}

#[test]
fn empty_string_is_kept_where_it_means_no_class() {
    let pvc = decode(&body(
        "v1",
        "PersistentVolumeClaim",
        r#"metadata { name: "data" namespace: "" labels { key: "tier" value: "" } }
           spec { storageClassName: "" volumeMode: "" }"#,
    ))
    .unwrap();
    assert_eq!(pvc["spec"], json!({"storageClassName": ""}));
    // An empty map value is a value (a label without one), not an unset field.
    assert_eq!(
        pvc["metadata"],
        json!({"name": "data", "labels": {"tier": ""}})
    );
}

#[test]
fn rbac_and_other_groups_map_to_upstream_packages() {
    let role = decode(&body(
        "rbac.authorization.k8s.io/v1",
        "Role",
        r#"metadata { name: "r" } rules { verbs: "get" verbs: "list" apiGroups: "" resources: "pods" }"#,
    ))
    .unwrap();
    // An empty string inside a list is an element, not an unset field.
    assert_eq!(
        role["rules"],
        json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}])
    );
    for (av, kind, name) in [
        ("v1", "Pod", "k8s.io.api.core.v1.Pod"),
        (
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "k8s.io.api.discovery.v1.EndpointSlice",
        ),
        ("events.k8s.io/v1", "Event", "k8s.io.api.events.v1.Event"),
        (
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            "k8s.io.api.autoscaling.v2.HorizontalPodAutoscaler",
        ),
        (
            "scheduling.k8s.io/v1",
            "PriorityClass",
            "k8s.io.api.scheduling.v1.PriorityClass",
        ),
        ("batch/v1", "CronJob", "k8s.io.api.batch.v1.CronJob"),
    ] {
        assert_eq!(message_name(av, kind).as_deref(), Some(name));
        assert!(
            POOL.get_message_by_name(name).is_some(),
            "{name} is in the descriptor"
        );
    }
}

#[test]
fn body_without_magic_is_refused() {
    let mut b = kubectl("create-namespace");
    assert!(matches!(decode(&b[4..]), Err(ProtobufError::MissingMagic)));
    b[3] = b'!';
    assert!(matches!(decode(&b), Err(ProtobufError::MissingMagic)));
    assert!(matches!(
        decode(b"{\"kind\":\"Namespace\"}"),
        Err(ProtobufError::MissingMagic)
    ));
}

#[test]
fn truncated_body_is_refused_never_panics() {
    let b = kubectl("create-deployment");
    // Cut inside `raw`: the envelope's length prefix runs past the end.
    let err = decode(&b[..b.len() - 10]).unwrap_err();
    assert!(matches!(err, ProtobufError::Envelope(_)), "{err}");
    for n in 0..b.len() {
        let _ = decode(&b[..n]);
    }
}

#[test]
fn garbage_is_refused() {
    let garbage = [MAGIC.as_slice(), &[0xff; 16]].concat();
    assert!(matches!(decode(&garbage), Err(ProtobufError::Envelope(_))));
    // A sound envelope around a raw object that is not protobuf.
    let b = envelope(
        "v1",
        "ConfigMap",
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        "",
    );
    let err = decode(&b).unwrap_err();
    assert!(matches!(err, ProtobufError::Object { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("v1 ConfigMap: object does not decode"),
        "{err}"
    );
}

#[test]
fn unknown_kinds_and_envelopes_are_unsupported() {
    for (av, kind) in [
        ("example.com/v1", "Widget"),
        ("v1", "NoSuchKind"),
        ("apps/v2", "Deployment"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("v1", "Pod.Spec"),
    ] {
        let err = decode(&envelope(av, kind, vec![], "")).unwrap_err();
        assert!(
            matches!(err, ProtobufError::UnknownKind { .. }),
            "{av} {kind}: {err}"
        );
    }
    let err = decode(&envelope("v1", "", vec![], "")).unwrap_err();
    assert!(matches!(err, ProtobufError::MissingTypeMeta), "{err}");
    let err = decode(&envelope("v1", "Namespace", vec![], "gzip")).unwrap_err();
    assert!(
        matches!(err, ProtobufError::UnsupportedEncoding { .. }),
        "{err}"
    );
}

#[test]
fn field_errors_name_the_path() {
    let b = body(
        "apps/v1",
        "Deployment",
        r#"spec { strategy { rollingUpdate { maxSurge { type: 2 } } } }"#,
    );
    let err = decode(&b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field spec.strategy.rollingUpdate.maxSurge: IntOrString type 2 is neither 0 (int) nor 1 (string)"
    );
    let b = body(
        "apps/v1",
        "ControllerRevision",
        r#"data { raw: "not json" }"#,
    );
    let err = decode(&b).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("field data: RawExtension does not hold JSON"),
        "{err}"
    );
}
