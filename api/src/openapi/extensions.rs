//! The list and map merge semantics of the built-in types, as kube-apiserver
//! publishes them: `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`
//! (strategic merge patch: what `kubectl apply` computes its patch with) and
//! `x-kubernetes-list-type` / `x-kubernetes-list-map-keys` /
//! `x-kubernetes-map-type` (server-side apply's field ownership).
//!
//! k8s-openapi's schemas carry none of these. The rows below were listed from
//! the Go API types of Kubernetes 1.33 (their `patchStrategy` / `patchMergeKey`
//! struct tags and `+listType`, `+listMapKey`, `+mapType`, `+structType`
//! markers), restricted to the types Balsa serves. A test checks every row
//! lands on a property that exists, so a row that stops matching is noticed.

use serde_json::{json, Map, Value};

/// The merge semantics of one property of one definition.
pub(super) struct Field {
    pub schema: &'static str,
    pub property: &'static str,
    pub patch_strategy: Option<&'static str>,
    pub merge_key: Option<&'static str>,
    pub list_type: Option<&'static str>,
    pub list_map_keys: &'static [&'static str],
    pub map_type: Option<&'static str>,
}

/// A row; the named parts are optional but keep this order.
macro_rules! field {
    (@opt) => { None };
    (@opt $x:literal) => { Some($x) };
    ($schema:literal, $property:literal
     $(, strategy: $s:literal)? $(, key: $k:literal)? $(, list: $l:literal)?
     $(, keys: [$($mk:literal),*])? $(, map: $m:literal)?) => {
        Field {
            schema: $schema,
            property: $property,
            patch_strategy: field!(@opt $($s)?),
            merge_key: field!(@opt $($k)?),
            list_type: field!(@opt $($l)?),
            list_map_keys: &[$($($mk),*)?],
            map_type: field!(@opt $($m)?),
        }
    };
}

pub(super) static FIELDS: &[Field] = &[
    field!("io.k8s.api.core.v1.PersistentVolumeSpec", "accessModes", list: "atomic"),
    field!("io.k8s.api.core.v1.PersistentVolumeSpec", "mountOptions", list: "atomic"),
    field!("io.k8s.api.core.v1.PersistentVolumeClaimSpec", "accessModes", list: "atomic"),
    field!("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "accessModes", list: "atomic"),
    field!("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", strategy: "merge", key: "type", list: "map", keys: ["type"]),
    field!("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "allocatedResourceStatuses", map: "granular"),
    field!("io.k8s.api.core.v1.RBDVolumeSource", "monitors", list: "atomic"),
    field!("io.k8s.api.core.v1.RBDPersistentVolumeSource", "monitors", list: "atomic"),
    field!("io.k8s.api.core.v1.CephFSVolumeSource", "monitors", list: "atomic"),
    field!("io.k8s.api.core.v1.CephFSPersistentVolumeSource", "monitors", list: "atomic"),
    field!("io.k8s.api.core.v1.SecretVolumeSource", "items", list: "atomic"),
    field!("io.k8s.api.core.v1.SecretProjection", "items", list: "atomic"),
    field!("io.k8s.api.core.v1.ISCSIVolumeSource", "portals", list: "atomic"),
    field!("io.k8s.api.core.v1.ISCSIPersistentVolumeSource", "portals", list: "atomic"),
    field!("io.k8s.api.core.v1.FCVolumeSource", "targetWWNs", list: "atomic"),
    field!("io.k8s.api.core.v1.FCVolumeSource", "wwids", list: "atomic"),
    field!("io.k8s.api.core.v1.ConfigMapVolumeSource", "items", list: "atomic"),
    field!("io.k8s.api.core.v1.ConfigMapProjection", "items", list: "atomic"),
    field!("io.k8s.api.core.v1.ProjectedVolumeSource", "sources", list: "atomic"),
    field!("io.k8s.api.core.v1.HTTPGetAction", "httpHeaders", list: "atomic"),
    field!("io.k8s.api.core.v1.ExecAction", "command", list: "atomic"),
    field!("io.k8s.api.core.v1.Capabilities", "add", list: "atomic"),
    field!("io.k8s.api.core.v1.Capabilities", "drop", list: "atomic"),
    field!("io.k8s.api.core.v1.ResourceRequirements", "claims", list: "map", keys: ["name"]),
    field!("io.k8s.api.core.v1.Container", "command", list: "atomic"),
    field!("io.k8s.api.core.v1.Container", "args", list: "atomic"),
    field!("io.k8s.api.core.v1.Container", "ports", strategy: "merge", key: "containerPort", list: "map", keys: ["containerPort", "protocol"]),
    field!("io.k8s.api.core.v1.Container", "envFrom", list: "atomic"),
    field!("io.k8s.api.core.v1.Container", "env", strategy: "merge", key: "name", list: "map", keys: ["name"]),
    field!("io.k8s.api.core.v1.Container", "resizePolicy", list: "atomic"),
    field!("io.k8s.api.core.v1.Container", "volumeMounts", strategy: "merge", key: "mountPath", list: "map", keys: ["mountPath"]),
    field!("io.k8s.api.core.v1.Container", "volumeDevices", strategy: "merge", key: "devicePath", list: "map", keys: ["devicePath"]),
    field!("io.k8s.api.core.v1.ContainerStatus", "volumeMounts", strategy: "merge", key: "mountPath", list: "map", keys: ["mountPath"]),
    field!("io.k8s.api.core.v1.ContainerStatus", "allocatedResourcesStatus", strategy: "merge", key: "name", list: "map", keys: ["name"]),
    field!("io.k8s.api.core.v1.ResourceStatus", "resources", list: "map", keys: ["resourceID"]),
    field!("io.k8s.api.core.v1.LinuxContainerUser", "supplementalGroups", list: "atomic"),
    field!("io.k8s.api.core.v1.NodeSelector", "nodeSelectorTerms", list: "atomic"),
    field!("io.k8s.api.core.v1.NodeSelectorTerm", "matchExpressions", list: "atomic"),
    field!("io.k8s.api.core.v1.NodeSelectorTerm", "matchFields", list: "atomic"),
    field!("io.k8s.api.core.v1.NodeSelectorRequirement", "values", list: "atomic"),
    field!("io.k8s.api.core.v1.TopologySelectorTerm", "matchLabelExpressions", list: "atomic"),
    field!("io.k8s.api.core.v1.TopologySelectorLabelRequirement", "values", list: "atomic"),
    field!("io.k8s.api.core.v1.PodAffinity", "requiredDuringSchedulingIgnoredDuringExecution", list: "atomic"),
    field!("io.k8s.api.core.v1.PodAffinity", "preferredDuringSchedulingIgnoredDuringExecution", list: "atomic"),
    field!("io.k8s.api.core.v1.PodAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution", list: "atomic"),
    field!("io.k8s.api.core.v1.PodAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution", list: "atomic"),
    field!("io.k8s.api.core.v1.PodAffinityTerm", "namespaces", list: "atomic"),
    field!("io.k8s.api.core.v1.PodAffinityTerm", "matchLabelKeys", list: "atomic"),
    field!("io.k8s.api.core.v1.PodAffinityTerm", "mismatchLabelKeys", list: "atomic"),
    field!("io.k8s.api.core.v1.NodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution", list: "atomic"),
    field!("io.k8s.api.core.v1.PodSpec", "volumes", strategy: "merge,retainKeys", key: "name", list: "map", keys: ["name"]),
    field!("io.k8s.api.core.v1.PodSpec", "initContainers", strategy: "merge", key: "name", list: "map", keys: ["name"]),
    field!("io.k8s.api.core.v1.PodSpec", "containers", strategy: "merge", key: "name", list: "map", keys: ["name"]),
    field!("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", strategy: "merge", key: "name", list: "map", keys: ["name"]),
    field!("io.k8s.api.core.v1.PodSpec", "nodeSelector", map: "atomic"),
    field!("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", strategy: "merge", key: "name", list: "map", keys: ["name"]),
    field!("io.k8s.api.core.v1.PodSpec", "tolerations", list: "atomic"),
    field!("io.k8s.api.core.v1.PodSpec", "hostAliases", strategy: "merge", key: "ip", list: "map", keys: ["ip"]),
    field!("io.k8s.api.core.v1.PodSpec", "readinessGates", list: "atomic"),
    field!("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", strategy: "merge", key: "topologyKey", list: "map", keys: ["topologyKey", "whenUnsatisfiable"]),
    field!("io.k8s.api.core.v1.PodSpec", "schedulingGates", strategy: "merge", key: "name", list: "map", keys: ["name"]),
    field!("io.k8s.api.core.v1.PodSpec", "resourceClaims", strategy: "merge,retainKeys", key: "name", list: "map", keys: ["name"]),
    field!("io.k8s.api.core.v1.TopologySpreadConstraint", "matchLabelKeys", list: "atomic"),
    field!("io.k8s.api.core.v1.HostAlias", "hostnames", list: "atomic"),
    field!("io.k8s.api.core.v1.PodSecurityContext", "supplementalGroups", list: "atomic"),
    field!("io.k8s.api.core.v1.PodSecurityContext", "sysctls", list: "atomic"),
    field!("io.k8s.api.core.v1.PodDNSConfig", "nameservers", list: "atomic"),
    field!("io.k8s.api.core.v1.PodDNSConfig", "searches", list: "atomic"),
    field!("io.k8s.api.core.v1.PodDNSConfig", "options", list: "atomic"),
    field!("io.k8s.api.core.v1.EphemeralContainer", "command", list: "atomic"),
    field!("io.k8s.api.core.v1.EphemeralContainer", "args", list: "atomic"),
    field!("io.k8s.api.core.v1.EphemeralContainer", "ports", strategy: "merge", key: "containerPort", list: "map", keys: ["containerPort", "protocol"]),
    field!("io.k8s.api.core.v1.EphemeralContainer", "envFrom", list: "atomic"),
    field!("io.k8s.api.core.v1.EphemeralContainer", "env", strategy: "merge", key: "name", list: "map", keys: ["name"]),
    field!("io.k8s.api.core.v1.EphemeralContainer", "resizePolicy", list: "atomic"),
    field!("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", strategy: "merge", key: "mountPath", list: "map", keys: ["mountPath"]),
    field!("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", strategy: "merge", key: "devicePath", list: "map", keys: ["devicePath"]),
    field!("io.k8s.api.core.v1.PodStatus", "conditions", strategy: "merge", key: "type", list: "map", keys: ["type"]),
    field!("io.k8s.api.core.v1.PodStatus", "hostIPs", strategy: "merge", key: "ip", list: "atomic"),
    field!("io.k8s.api.core.v1.PodStatus", "podIPs", strategy: "merge", key: "ip", list: "map", keys: ["ip"]),
    field!("io.k8s.api.core.v1.PodStatus", "initContainerStatuses", list: "atomic"),
    field!("io.k8s.api.core.v1.PodStatus", "containerStatuses", list: "atomic"),
    field!("io.k8s.api.core.v1.PodStatus", "ephemeralContainerStatuses", list: "atomic"),
    field!("io.k8s.api.core.v1.PodStatus", "resourceClaimStatuses", strategy: "merge,retainKeys", key: "name", list: "map", keys: ["name"]),
    field!("io.k8s.api.core.v1.ServiceStatus", "conditions", strategy: "merge", key: "type", list: "map", keys: ["type"]),
    field!("io.k8s.api.core.v1.LoadBalancerStatus", "ingress", list: "atomic"),
    field!("io.k8s.api.core.v1.LoadBalancerIngress", "ports", list: "atomic"),
    field!("io.k8s.api.core.v1.ServiceSpec", "ports", strategy: "merge", key: "port", list: "map", keys: ["port", "protocol"]),
    field!("io.k8s.api.core.v1.ServiceSpec", "selector", map: "atomic"),
    field!("io.k8s.api.core.v1.ServiceSpec", "clusterIPs", list: "atomic"),
    field!("io.k8s.api.core.v1.ServiceSpec", "externalIPs", list: "atomic"),
    field!("io.k8s.api.core.v1.ServiceSpec", "loadBalancerSourceRanges", list: "atomic"),
    field!("io.k8s.api.core.v1.ServiceSpec", "ipFamilies", list: "atomic"),
    field!("io.k8s.api.core.v1.ServiceAccount", "secrets", strategy: "merge", key: "name", list: "map", keys: ["name"]),
    field!("io.k8s.api.core.v1.ServiceAccount", "imagePullSecrets", list: "atomic"),
    field!("io.k8s.api.core.v1.Endpoints", "subsets", list: "atomic"),
    field!("io.k8s.api.core.v1.EndpointSubset", "addresses", list: "atomic"),
    field!("io.k8s.api.core.v1.EndpointSubset", "notReadyAddresses", list: "atomic"),
    field!("io.k8s.api.core.v1.EndpointSubset", "ports", list: "atomic"),
    field!("io.k8s.api.core.v1.NodeSpec", "podCIDRs", strategy: "merge", list: "set"),
    field!("io.k8s.api.core.v1.NodeSpec", "taints", list: "atomic"),
    field!("io.k8s.api.core.v1.NodeStatus", "conditions", strategy: "merge", key: "type", list: "map", keys: ["type"]),
    field!("io.k8s.api.core.v1.NodeStatus", "addresses", strategy: "merge", key: "type", list: "map", keys: ["type"]),
    field!("io.k8s.api.core.v1.NodeStatus", "images", list: "atomic"),
    field!("io.k8s.api.core.v1.NodeStatus", "volumesInUse", list: "atomic"),
    field!("io.k8s.api.core.v1.NodeStatus", "volumesAttached", list: "atomic"),
    field!("io.k8s.api.core.v1.NodeStatus", "runtimeHandlers", list: "atomic"),
    field!("io.k8s.api.core.v1.ContainerImage", "names", list: "atomic"),
    field!("io.k8s.api.core.v1.NamespaceSpec", "finalizers", list: "atomic"),
    field!("io.k8s.api.core.v1.NamespaceStatus", "conditions", strategy: "merge", key: "type", list: "map", keys: ["type"]),
    field!("io.k8s.api.core.v1.LimitRangeSpec", "limits", list: "atomic"),
    field!("io.k8s.api.core.v1.ResourceQuotaSpec", "scopes", list: "atomic"),
    field!("io.k8s.api.core.v1.ScopeSelector", "matchExpressions", list: "atomic"),
    field!("io.k8s.api.core.v1.ScopedResourceSelectorRequirement", "values", list: "atomic"),
    field!("io.k8s.api.core.v1.DownwardAPIVolumeSource", "items", list: "atomic"),
    field!("io.k8s.api.core.v1.DownwardAPIProjection", "items", list: "atomic"),
    field!("io.k8s.api.apps.v1.StatefulSetSpec", "volumeClaimTemplates", list: "atomic"),
    field!("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", strategy: "merge", key: "type", list: "map", keys: ["type"]),
    field!("io.k8s.api.apps.v1.DeploymentSpec", "strategy", strategy: "retainKeys"),
    field!("io.k8s.api.apps.v1.DeploymentStatus", "conditions", strategy: "merge", key: "type", list: "map", keys: ["type"]),
    field!("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", strategy: "merge", key: "type", list: "map", keys: ["type"]),
    field!("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", strategy: "merge", key: "type", list: "map", keys: ["type"]),
    field!("io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesRequirement", "values", list: "set"),
    field!("io.k8s.api.batch.v1.PodFailurePolicyRule", "onPodConditions", list: "atomic"),
    field!("io.k8s.api.batch.v1.PodFailurePolicy", "rules", list: "atomic"),
    field!("io.k8s.api.batch.v1.SuccessPolicy", "rules", list: "atomic"),
    field!("io.k8s.api.batch.v1.JobStatus", "conditions", strategy: "merge", key: "type", list: "atomic"),
    field!("io.k8s.api.batch.v1.UncountedTerminatedPods", "succeeded", list: "set"),
    field!("io.k8s.api.batch.v1.UncountedTerminatedPods", "failed", list: "set"),
    field!("io.k8s.api.batch.v1.CronJobStatus", "active", list: "atomic"),
    field!("io.k8s.api.discovery.v1.EndpointSlice", "endpoints", list: "atomic"),
    field!("io.k8s.api.discovery.v1.EndpointSlice", "ports", list: "atomic"),
    field!("io.k8s.api.discovery.v1.Endpoint", "addresses", list: "set"),
    field!("io.k8s.api.discovery.v1.EndpointHints", "forZones", list: "atomic"),
    field!("io.k8s.api.discovery.v1.EndpointHints", "forNodes", list: "atomic"),
    field!("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec", "metrics", list: "atomic"),
    field!("io.k8s.api.autoscaling.v2.HPAScalingRules", "policies", list: "atomic"),
    field!("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "currentMetrics", list: "atomic"),
    field!("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", strategy: "merge", key: "type", list: "map", keys: ["type"]),
    field!("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector", strategy: "replace"),
    field!("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", strategy: "merge", key: "type", list: "map", keys: ["type"]),
    field!("io.k8s.api.rbac.v1.PolicyRule", "verbs", list: "atomic"),
    field!("io.k8s.api.rbac.v1.PolicyRule", "apiGroups", list: "atomic"),
    field!("io.k8s.api.rbac.v1.PolicyRule", "resources", list: "atomic"),
    field!("io.k8s.api.rbac.v1.PolicyRule", "resourceNames", list: "atomic"),
    field!("io.k8s.api.rbac.v1.PolicyRule", "nonResourceURLs", list: "atomic"),
    field!("io.k8s.api.rbac.v1.Role", "rules", list: "atomic"),
    field!("io.k8s.api.rbac.v1.RoleBinding", "subjects", list: "atomic"),
    field!("io.k8s.api.rbac.v1.ClusterRole", "rules", list: "atomic"),
    field!("io.k8s.api.rbac.v1.AggregationRule", "clusterRoleSelectors", list: "atomic"),
    field!("io.k8s.api.rbac.v1.ClusterRoleBinding", "subjects", list: "atomic"),
    field!("io.k8s.api.storage.v1.StorageClass", "mountOptions", list: "atomic"),
    field!("io.k8s.api.storage.v1.StorageClass", "allowedTopologies", list: "atomic"),
    field!("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", strategy: "merge", key: "uid", list: "map", keys: ["uid"]),
    field!("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", strategy: "merge", list: "set"),
    field!("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "managedFields", list: "atomic"),
    field!("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions", "dryRun", list: "atomic"),
    field!("io.k8s.apimachinery.pkg.apis.meta.v1.Status", "details", list: "atomic"),
    field!("io.k8s.apimachinery.pkg.apis.meta.v1.StatusDetails", "causes", list: "atomic"),
    field!("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector", "matchExpressions", list: "atomic"),
    field!("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement", "values", list: "atomic"),
];

/// Struct types whose every field is owned together (`+structType=atomic`):
/// the definition itself carries `x-kubernetes-map-type`.
pub(super) static ATOMIC_TYPES: &[(&str, &str)] = &[
    ("io.k8s.api.core.v1.SecretReference", "atomic"),
    ("io.k8s.api.core.v1.ObjectFieldSelector", "atomic"),
    ("io.k8s.api.core.v1.ResourceFieldSelector", "atomic"),
    ("io.k8s.api.core.v1.ConfigMapKeySelector", "atomic"),
    ("io.k8s.api.core.v1.SecretKeySelector", "atomic"),
    ("io.k8s.api.core.v1.NodeSelector", "atomic"),
    ("io.k8s.api.core.v1.NodeSelectorTerm", "atomic"),
    ("io.k8s.api.core.v1.TopologySelectorTerm", "atomic"),
    ("io.k8s.api.core.v1.EndpointAddress", "atomic"),
    ("io.k8s.api.core.v1.EndpointPort", "atomic"),
    ("io.k8s.api.core.v1.ObjectReference", "atomic"),
    ("io.k8s.api.core.v1.LocalObjectReference", "atomic"),
    ("io.k8s.api.core.v1.TypedLocalObjectReference", "atomic"),
    ("io.k8s.api.core.v1.ScopeSelector", "atomic"),
    ("io.k8s.api.discovery.v1.EndpointPort", "atomic"),
    ("io.k8s.api.rbac.v1.Subject", "atomic"),
    ("io.k8s.api.rbac.v1.RoleRef", "atomic"),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
        "atomic",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
        "atomic",
    ),
];

/// Puts the rows' extensions on the definitions present in `defs`.
pub(super) fn apply(defs: &mut Map<String, Value>) {
    for f in FIELDS {
        let Some(prop) = defs
            .get_mut(f.schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(f.property))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if let Some(s) = f.patch_strategy {
            prop.insert("x-kubernetes-patch-strategy".into(), s.into());
        }
        if let Some(k) = f.merge_key {
            prop.insert("x-kubernetes-patch-merge-key".into(), k.into());
        }
        if let Some(l) = f.list_type {
            prop.insert("x-kubernetes-list-type".into(), l.into());
        }
        if !f.list_map_keys.is_empty() {
            prop.insert("x-kubernetes-list-map-keys".into(), json!(f.list_map_keys));
        }
        if let Some(m) = f.map_type {
            prop.insert("x-kubernetes-map-type".into(), m.into());
        }
    }
    for (name, map_type) in ATOMIC_TYPES {
        if let Some(schema) = defs.get_mut(*name).and_then(Value::as_object_mut) {
            schema.insert("x-kubernetes-map-type".into(), (*map_type).into());
        }
    }
}
