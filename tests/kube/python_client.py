"""The official Kubernetes Python client against Balsa: CRUD, patch and a
watch that sees ADDED, MODIFIED and DELETED in order. Prints OK at the end;
any failure raises."""
import sys

from kubernetes import client, config, watch

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
apps = client.AppsV1Api()
ns = "pyclient"

v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
start = v1.list_namespaced_config_map(ns).metadata.resource_version

cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg", labels={"app": "py"}), data={"k": "1"})
created = v1.create_namespaced_config_map(ns, cm)
assert created.metadata.uid, "a uid was assigned"
listed = v1.list_namespaced_config_map(ns, label_selector="app=py")
assert [c.metadata.name for c in listed.items] == ["cfg"], listed.items
patched = v1.patch_namespaced_config_map("cfg", ns, {"data": {"k": "2"}})
assert patched.data["k"] == "2"
try:
    v1.create_namespaced_config_map(ns, cm)
    raise AssertionError("a second create must fail")
except client.exceptions.ApiException as e:
    assert e.status == 409, e.status
v1.delete_namespaced_config_map("cfg", ns)
try:
    v1.read_namespaced_config_map("cfg", ns)
    raise AssertionError("the configmap is gone")
except client.exceptions.ApiException as e:
    assert e.status == 404, e.status

seen = []
w = watch.Watch()
for event in w.stream(v1.list_namespaced_config_map, ns, resource_version=start, timeout_seconds=5):
    seen.append((event["type"], event["object"].data.get("k") if event["object"].data else None))
    if event["type"] == "DELETED":
        w.stop()
assert seen == [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")], seen

deploy = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.25")]),
        ),
    ),
)
d = apps.create_namespaced_deployment(ns, deploy)
assert d.spec.strategy.type == "RollingUpdate", "defaults applied"
scale = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 4}})
assert scale.spec.replicas == 4
assert apps.read_namespaced_deployment("web", ns).spec.replicas == 4
print("OK")
