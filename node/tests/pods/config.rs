use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use serde_json::json;

use crate::common::*;

const T: Duration = Duration::from_secs(20);

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

#[tokio::test]
async fn missing_config_map_is_create_container_config_error_until_it_exists() {
    let h = Harness::new();
    let handle = h.worker.spawn(pod(json!({
        "metadata": {"name": "needs-cm"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "x", "command": ["sh", "-c", "echo $MODE"],
            "env": [
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                {"name": "OPTIONAL", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": true}}}
            ]}]}
    })));
    let key = handle.key().clone();
    let st = wait_for(&handle, T, "CreateContainerConfigError", |s| {
        waiting_reason(s, "c") == Some("CreateContainerConfigError")
    })
    .await;
    let msg = container(&st, "c")
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone();
    assert_eq!(msg.as_deref(), Some(r#"configmap "settings" not found"#));
    assert_eq!(phase(&st), "Pending");
    h.objects
        .put_config_map(config_map("settings", &[("other", "x")]));
    let st = wait_for(&handle, T, "missing key", |s| {
        container(s, "c")
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.message.as_deref())
            == Some("couldn't find key mode in ConfigMap default/settings")
    })
    .await;
    assert_eq!(waiting_reason(&st, "c"), Some("CreateContainerConfigError"));
    h.objects
        .put_config_map(config_map("settings", &[("mode", "fast")]));
    wait_for(&handle, T, "Succeeded", |s| phase(s) == "Succeeded").await;
    assert_eq!(log_contents(&h.log(&key, "c", 0)), vec!["fast"]);
    stop(handle).await;
}

#[tokio::test]
async fn env_downward_api_expansion_and_config_volumes() {
    let h = Harness::new();
    h.objects.put_config_map(config_map(
        "app",
        &[
            ("greeting", "hi"),
            ("LEVEL", "debug"),
            ("bad key", "skipped"),
        ],
    ));
    h.objects.put_secret(Secret {
        metadata: ObjectMeta {
            name: Some("creds".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "password".to_string(),
            ByteString(b"s3cret".to_vec()),
        )])),
        ..Default::default()
    });
    let handle = h.worker.spawn(pod(json!({
        "metadata": {"name": "envy", "labels": {"app": "web", "tier": "front"}, "annotations": {"note": "n1"}},
        "spec": {"restartPolicy": "Never", "serviceAccountName": "robot", "nodeName": "node-1",
            "volumes": [
                {"name": "cfg", "configMap": {"name": "app", "items": [{"key": "greeting", "path": "sub/greeting.txt", "mode": 0o600}]}},
                {"name": "sec", "secret": {"secretName": "creds"}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}
                ]}}
            ],
            "containers": [{
                "name": "c", "image": "x",
                "command": ["sh", "-c"],
                "args": ["echo \"$(GREETING) $B $POD $NS $IP $NODE $SA $LABEL $NOTE $MEM $CPU $PASS $CFG_LEVEL $ESCAPED\"; cat cfg/sub/greeting.txt; echo; cat sec/password; echo; cat info/labels; echo; cat info/mem; echo; stat -c %a cfg/sub/greeting.txt"],
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
                "volumeMounts": [
                    {"name": "cfg", "mountPath": "/cfg"},
                    {"name": "sec", "mountPath": "/sec", "readOnly": true},
                    {"name": "info", "mountPath": "/info"}
                ],
                "envFrom": [{"configMapRef": {"name": "app"}, "prefix": "CFG_"}],
                "env": [
                    {"name": "A", "value": "alpha"},
                    {"name": "B", "value": "$(A)-beta-$(MISSING)"},
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "greeting"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                    {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                    {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "ESCAPED", "value": "$$(A)"}
                ]
            }]
        }
    })));
    let key = handle.key().clone();
    let st = wait_for(&handle, T, "Succeeded", |s| {
        phase(s) == "Succeeded" || phase(s) == "Failed"
    })
    .await;
    let lines = log_contents(&h.log(&key, "c", 0));
    assert_eq!(phase(&st), "Succeeded", "{lines:?}");
    assert_eq!(
        lines,
        vec![
            "hi alpha-beta-$(MISSING) envy default 127.0.0.1 node-1 robot web n1 64 250 s3cret debug $(A)",
            "hi",
            "s3cret",
            "app=\"web\"",
            "tier=\"front\"",
            "64",
            "600",
        ]
    );
    stop(handle).await;
}
