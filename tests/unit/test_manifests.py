"""Loading Kubernetes YAML: the supported subset, and precise errors for everything else."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from podhop.errors import ManifestError
from podhop.objects.manifests import dump_manifests, load_manifests
from podhop.objects.model import (
    ContainerPort,
    ContainerSpec,
    Deployment,
    Manifest,
    Pod,
    PodSpec,
    PodTemplate,
    Resources,
    Service,
    ServicePort,
)
from podhop.objects.quantity import GI, MI

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SEED = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx
  labels:
    app: nginx
spec:
  replicas: 10
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: nginx-service
spec:
  type: LoadBalancer
  selector:
    app: nginx
  ports:
  - port: 80
    targetPort: 80
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
"""

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: x
spec:
  containers:
  - name: c
    image: busybox
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: s
spec:
  selector: {app: web}
  ports:
  - port: 80
"""


def error(text: str, source: str = "bad.yaml") -> str:
    with pytest.raises(ManifestError) as info:
        load_manifests(source, text=text)
    return str(info.value)


def edit(base: str, old: str, new: str) -> str:
    assert old in base
    return base.replace(old, new, 1)


# --- valid manifests --------------------------------------------------------------------------------


def test_seed_nginx() -> None:
    deployment, service = load_manifests("seed.yaml", text=SEED)
    assert isinstance(deployment, Deployment)
    assert deployment.name == "nginx"
    assert deployment.namespace == "default"
    assert deployment.replicas == 10
    assert deployment.labels_dict == {"app": "nginx"}
    assert deployment.selector_dict == {"app": "nginx"}
    assert deployment.template.labels_dict == {"app": "nginx"}
    (container,) = deployment.template.spec.containers
    assert container == ContainerSpec(name="nginx", image="nginx", ports=(ContainerPort(80),))
    assert deployment.template.spec.requests == Resources()
    assert isinstance(service, Service)
    assert service.name == "nginx-service"
    assert service.type == "LoadBalancer"
    assert service.selector_dict == {"app": "nginx"}
    assert service.ports == (ServicePort(port=80, target_port=80, protocol="TCP"),)
    assert (deployment.kind, deployment.api_version) == ("Deployment", "apps/v1")
    assert (service.kind, service.api_version) == ("Service", "v1")


def test_example_files_load() -> None:
    deployment, service = load_manifests(EXAMPLES / "nginx.yaml")
    assert isinstance(deployment, Deployment) and isinstance(service, Service)
    assert deployment.replicas == 10
    assert deployment.template.spec.requests == Resources(100, 64 * MI)
    assert service.type == "LoadBalancer" and service.ports[0].target_port == 80

    redis, redis_svc = load_manifests(EXAMPLES / "redis.yaml")
    assert isinstance(redis, Deployment) and isinstance(redis_svc, Service)
    assert redis.replicas == 1
    assert redis.template.spec.requests == Resources(100, 128 * MI)
    assert redis_svc.type == "ClusterIP" and redis_svc.ports[0].port == 6379


def test_full_container_and_pod_fields() -> None:
    text = """\
apiVersion: v1
kind: Pod
metadata:
  name: pinned
  namespace: tools
  labels: {app: pinned, tier: "1"}
spec:
  nodeSelector:
    kubernetes.io/hostname: node-2
  containers:
  - name: main
    image: busybox
    command: [sh, -c]
    args: ["echo $A; sleep 3600"]
    workingDir: /tmp
    env:
    - {name: A, value: "1"}
    - {name: EMPTY}
    ports:
    - {containerPort: 8080, name: http}
    - {containerPort: 53, protocol: UDP}
    resources:
      requests: {cpu: 250m, memory: 64Mi}
      limits: {cpu: "1", memory: 1Gi}
  - name: side
    image: busybox
    resources:
      limits: {cpu: 0.5, memory: 128974848}
"""
    (pod,) = load_manifests("p.yaml", text=text)
    assert isinstance(pod, Pod)
    assert (pod.namespace, pod.name) == ("tools", "pinned")
    assert pod.labels_dict == {"app": "pinned", "tier": "1"}
    assert pod.spec.node_selector_dict == {"kubernetes.io/hostname": "node-2"}
    main, side = pod.spec.containers
    assert main.command == ("sh", "-c")
    assert main.args == ("echo $A; sleep 3600",)
    assert main.working_dir == "/tmp"
    assert main.env == (("A", "1"), ("EMPTY", ""))
    assert main.ports == (ContainerPort(8080, "TCP", "http"), ContainerPort(53, "UDP"))
    assert main.requests == Resources(250, 64 * MI)
    assert main.limits == Resources(1000, GI)
    # an unset request defaults to the limit, as in Kubernetes
    assert side.requests == side.limits == Resources(500, 128974848)
    assert pod.spec.requests == Resources(750, 64 * MI + 128974848)
    assert pod.spec.port_by_name("http") == 8080
    assert pod.spec.port_by_name("nope") is None


def test_multiple_documents_empty_documents_and_lists() -> None:
    text = f"---\n# only a comment\n---\n{DEPLOYMENT}---\n---\nkind: List\napiVersion: v1\nitems:\n"
    text += "".join(f"- {line}\n" if i == 0 else f"  {line}\n" for i, line in enumerate(SERVICE.splitlines()))
    kinds = [m.kind for m in load_manifests("many.yaml", text=text)]
    assert kinds == ["Deployment", "Service"]
    assert load_manifests("empty.yaml", text="") == []
    assert load_manifests("empty.yaml", text="---\n---\n") == []


def test_replicas_default_and_zero() -> None:
    (d,) = load_manifests("d.yaml", text=DEPLOYMENT)
    assert isinstance(d, Deployment) and d.replicas == 1
    (d,) = load_manifests("d.yaml", text=edit(DEPLOYMENT, "spec:\n", "spec:\n  replicas: 0\n"))
    assert isinstance(d, Deployment) and d.replicas == 0


def test_service_defaults_and_named_target_port() -> None:
    (svc,) = load_manifests("s.yaml", text=SERVICE)
    assert isinstance(svc, Service)
    assert svc.type == "ClusterIP"
    assert svc.ports == (ServicePort(80, 80),)
    text = edit(
        SERVICE, "  - port: 80\n", "  - {port: 80, targetPort: http, name: web}\n  - {port: 443, name: tls}\n"
    )
    (svc,) = load_manifests("s.yaml", text=text)
    assert isinstance(svc, Service)
    assert svc.ports == (ServicePort(80, "http", "TCP", "web"), ServicePort(443, 443, "TCP", "tls"))


def test_harmless_real_world_fields_are_ignored() -> None:
    text = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  creationTimestamp: null
  annotations: {deployment.kubernetes.io/revision: "1"}
  labels: {app: web}
spec:
  replicas: 2
  revisionHistoryLimit: 10
  progressDeadlineSeconds: 600
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 25%}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      creationTimestamp: null
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
        imagePullPolicy: IfNotPresent
        resources: {}
        terminationMessagePath: /dev/termination-log
        terminationMessagePolicy: File
      dnsPolicy: ClusterFirst
      restartPolicy: Always
      schedulerName: default-scheduler
      securityContext: {}
      terminationGracePeriodSeconds: 30
status: {}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  creationTimestamp: null
spec:
  type: LoadBalancer
  selector: {app: web}
  sessionAffinity: None
  externalTrafficPolicy: Cluster
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  ports:
  - {port: 80, protocol: TCP, targetPort: 80}
status:
  loadBalancer: {}
"""
    deployment, service = load_manifests("real.yaml", text=text)
    assert isinstance(deployment, Deployment) and deployment.replicas == 2
    assert isinstance(service, Service) and service.type == "LoadBalancer"


def test_same_name_in_other_kind_or_namespace_is_fine() -> None:
    other_ns = edit(DEPLOYMENT, "  name: web\n", "  name: web\n  namespace: prod\n")
    service = edit(SERVICE, "name: s", "name: web")
    assert len(load_manifests("ok.yaml", text="---\n".join([DEPLOYMENT, other_ns, service]))) == 3


def test_round_trip_through_to_k8s() -> None:
    text = SEED + "---\n" + (EXAMPLES / "redis.yaml").read_text() + "---\n" + POD
    originals = load_manifests("seed.yaml", text=text)
    again = load_manifests("again.yaml", text=dump_manifests(originals))
    assert again == originals
    for obj in originals:
        assert load_manifests("one.yaml", text=yaml.safe_dump(obj.to_k8s())) == [obj]


def test_round_trip_of_hand_built_objects() -> None:
    spec = PodSpec(
        containers=(
            ContainerSpec(
                name="app",
                image="python",
                command=("python", "-m", "http.server"),
                args=("8000",),
                ports=(ContainerPort(8000, name="http"),),
                env=(("B", "2"), ("A", "1")),
                requests=Resources(1500, 3 * MI + 1),
                limits=Resources(2000, GI),
                working_dir="/srv",
            ),
        ),
        node_selector=(("disk", "ssd"),),
    )
    objects: list[Manifest] = [
        Deployment(
            "app", "demo", (("app", "app"),), 3, (("app", "app"),), PodTemplate((("app", "app"),), spec)
        ),
        Pod("solo", "default", (), spec),
        Service("app", "demo", (), "ClusterIP", (("app", "app"),), (ServicePort(80, "http", name="web"),)),
    ]
    assert load_manifests("built.yaml", text=dump_manifests(objects)) == objects
    assert objects[0].to_k8s()["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1500m", "memory": str(3 * MI + 1)},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }


def test_objects_are_hashable_values() -> None:
    first = load_manifests("a.yaml", text=SEED)
    second = load_manifests("b.yaml", text=SEED)
    assert set(first) == set(second)
    assert first[0].key == ("Deployment", "default", "nginx")


def test_reads_files_and_reports_missing_ones(tmp_path: Path) -> None:
    path = tmp_path / "seed.yaml"
    path.write_text(SEED)
    assert len(load_manifests(path)) == 2
    with pytest.raises(ManifestError, match=r"missing\.yaml: cannot read manifest file"):
        load_manifests(tmp_path / "missing.yaml")


# --- errors ---------------------------------------------------------------------------------------------


def test_invalid_quantity_names_document_object_and_field() -> None:
    bad = edit(
        DEPLOYMENT,
        "        image: nginx\n",
        "        image: nginx\n        resources:\n          requests: {cpu: lots}\n",
    )
    message = error(SERVICE + "---\n" + bad, source="examples/bad.yaml")
    assert message.startswith(
        "examples/bad.yaml: document 2 (Deployment/web): "
        "spec.template.spec.containers[0].resources.requests.cpu: invalid quantity 'lots'"
    )


def test_invalid_memory_quantity() -> None:
    bad = edit(POD, "    image: busybox\n", "    image: busybox\n    resources: {limits: {memory: 12mi}}\n")
    message = error(bad)
    assert (
        "document 1 (Pod/x): spec.containers[0].resources.limits.memory: invalid quantity '12mi'" in message
    )


def test_unsupported_kind() -> None:
    text = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\n"
    message = error(text)
    assert message.startswith("bad.yaml: document 1")
    assert "unsupported kind 'StatefulSet' (supported: Deployment, Pod, Service)" in message


def test_unsupported_field() -> None:
    message = error(edit(POD, "spec:\n", "spec:\n  hostNetwork: true\n"))
    assert message == "bad.yaml: document 1 (Pod/x): spec.hostNetwork: field not supported by podhop"


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        (
            "    image: busybox\n",
            "    image: busybox\n    env: [{name: A, valueFrom: {secretKeyRef: {}}}]\n",
            "spec.containers[0].env[0].valueFrom",
        ),
        (
            "    image: busybox\n",
            "    image: busybox\n    volumeMounts: []\n",
            "spec.containers[0].volumeMounts",
        ),
        (
            "    image: busybox\n",
            "    image: busybox\n    ports: [{containerPort: 80, hostPort: 80}]\n",
            "spec.containers[0].ports[0].hostPort",
        ),
        ("spec:\n", "spec:\n  securityContext: {runAsUser: 0}\n", "spec.securityContext.runAsUser"),
        ("metadata:\n", "metadata:\n  finalizers: [x]\n", "metadata.finalizers"),
    ],
)
def test_other_unsupported_fields(old: str, new: str, path: str) -> None:
    assert f"(Pod/x): {path}: field not supported by podhop" in error(edit(POD, old, new))


def test_harmful_values_of_harmless_fields_are_refused() -> None:
    message = error(edit(POD, "spec:\n", "spec:\n  restartPolicy: Never\n"))
    assert "(Pod/x): spec.restartPolicy: unsupported value 'Never' (podhop accepts 'Always')" in message


def test_bad_yaml_reports_line_and_column() -> None:
    message = error("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [x\n")
    assert message.startswith("bad.yaml: invalid YAML at line ")
    message = error("apiVersion: v1\nkind: Pod\n  metadata: x\n")
    assert message.startswith("bad.yaml: invalid YAML at line 3, column 11: mapping values are not allowed")


def test_document_that_is_not_an_object() -> None:
    assert error(f"{POD}---\n- a\n- b\n") == (
        "bad.yaml: document 2: expected a Kubernetes object (a mapping), got a list"
    )


def test_missing_kind_and_api_version() -> None:
    assert "document 1: kind: required field is missing" in error("apiVersion: v1\nmetadata: {name: a}\n")
    message = error(POD.replace("apiVersion: v1\n", ""))
    assert "document 1 (Pod/x): apiVersion: required field is missing (expected 'v1' for a Pod)" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            DEPLOYMENT.replace("apps/v1", "v1"),
            "(Deployment/web): apiVersion: 'v1' does not match kind Deployment",
        ),
        (DEPLOYMENT.replace("apps/v1", "extensions/v1beta1"), "expected 'apps/v1'"),
        (
            POD.replace("apiVersion: v1", "apiVersion: apps/v1"),
            "(Pod/x): apiVersion: 'apps/v1' does not match kind Pod",
        ),
        (SERVICE.replace("apiVersion: v1", "apiVersion: apps/v1"), "(Service/s): apiVersion:"),
    ],
)
def test_api_version_must_match_kind(text: str, fragment: str) -> None:
    assert fragment in error(text)


@pytest.mark.parametrize("name", ["Web", "web_1", "-web", "web-", "a" * 64, "web.example"])
def test_names_must_be_dns_labels(name: str) -> None:
    message = error(edit(DEPLOYMENT, "  name: web\n", f"  name: '{name}'\n"))
    assert f"metadata.name: invalid name '{name}': must be a DNS-1123 label" in message


def test_container_names_must_be_dns_labels_and_unique() -> None:
    message = error(edit(POD, "  - name: c\n", "  - name: C\n"))
    assert "(Pod/x): spec.containers[0].name: invalid name 'C'" in message
    twice = edit(POD, "    image: busybox\n", "    image: busybox\n  - name: c\n    image: busybox\n")
    assert "(Pod/x): spec.containers[1].name: duplicate container name 'c'" in error(twice)


def test_namespace_defaults_and_is_validated() -> None:
    assert "metadata.namespace: invalid name 'Prod'" in error(
        edit(POD, "  name: x\n", "  name: x\n  namespace: Prod\n")
    )


def test_selector_must_be_non_empty() -> None:
    message = error(edit(DEPLOYMENT, "matchLabels: {app: web}", "matchLabels: {}"))
    assert message == "bad.yaml: document 1 (Deployment/web): spec.selector.matchLabels: must not be empty"
    message = error(edit(DEPLOYMENT, "matchLabels: {app: web}", "matchExpressions: []"))
    assert "spec.selector.matchExpressions: field not supported by podhop" in message


def test_selector_must_match_template_labels() -> None:
    message = error(edit(DEPLOYMENT, "labels: {app: web}", "labels: {app: other}"))
    assert "(Deployment/web): spec.template.metadata.labels: must match spec.selector.matchLabels" in message
    assert "missing app=web" in message


def test_replicas_must_not_be_negative() -> None:
    message = error(edit(DEPLOYMENT, "spec:\n", "spec:\n  replicas: -1\n"))
    assert "(Deployment/web): spec.replicas: must be at least 0, got -1" in message
    message = error(edit(DEPLOYMENT, "spec:\n", "spec:\n  replicas: '3'\n"))
    assert "spec.replicas: expected an integer, got '3'" in message


@pytest.mark.parametrize("port", [0, 65536, -80])
def test_ports_must_be_in_range(port: int) -> None:
    container = edit(
        POD, "    image: busybox\n", f"    image: busybox\n    ports: [{{containerPort: {port}}}]\n"
    )
    assert "(Pod/x): spec.containers[0].ports[0].containerPort: must be" in error(container)
    service = edit(SERVICE, "  - port: 80\n", f"  - port: {port}\n")
    assert "(Service/s): spec.ports[0].port: must be" in error(service)
    target = edit(SERVICE, "  - port: 80\n", f"  - {{port: 80, targetPort: {port}}}\n")
    assert "(Service/s): spec.ports[0].targetPort: invalid targetPort" in error(target)


def test_service_validation() -> None:
    assert "spec.type: unsupported value 'NodePort' (podhop accepts 'ClusterIP' or 'LoadBalancer')" in error(
        edit(SERVICE, "spec:\n", "spec:\n  type: NodePort\n")
    )
    assert "spec.ports[0].protocol: unsupported value 'UDP' (podhop accepts 'TCP')" in error(
        edit(SERVICE, "  - port: 80\n", "  - {port: 80, protocol: UDP}\n")
    )
    assert "(Service/s): spec.selector: a Service without a selector is not supported" in error(
        edit(SERVICE, "  selector: {app: web}\n", "")
    )
    assert "spec.ports: must not be empty" in error(SERVICE.split("  ports:")[0] + "  ports: []\n")
    assert "spec.ports[1].port: duplicate port 80" in error(
        edit(SERVICE, "  - port: 80\n", "  - {port: 80, name: a}\n  - {port: 80, name: b}\n")
    )
    assert "spec.ports[0].name: required when a Service has more than one port" in error(
        edit(SERVICE, "  - port: 80\n", "  - {port: 80}\n  - {port: 81, name: b}\n")
    )
    assert "spec.ports[0].targetPort: targetPort '8080' is a string" in error(
        edit(SERVICE, "  - port: 80\n", "  - {port: 80, targetPort: '8080'}\n")
    )
    assert "spec.clusterIP: headless Services (clusterIP: None) are not supported" in error(
        edit(SERVICE, "spec:\n", "spec:\n  clusterIP: None\n")
    )


def test_requests_must_not_exceed_limits() -> None:
    text = edit(
        POD,
        "    image: busybox\n",
        "    image: busybox\n    resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}\n",
    )
    assert "(Pod/x): spec.containers[0].resources.requests.memory: request 2Gi exceeds limit 1Gi" in error(
        text
    )


def test_labels_are_validated() -> None:
    message = error(edit(POD, "  name: x\n", "  name: x\n  labels: {version: 1}\n"))
    assert "(Pod/x): metadata.labels.version: expected a string, got 1" in message
    message = error(edit(POD, "  name: x\n", "  name: x\n  labels: {'bad key': x}\n"))
    assert "metadata.labels: invalid label key 'bad key'" in message


def test_missing_required_fields() -> None:
    assert "(Pod/x): spec.containers[0].image: required field is missing" in error(
        POD.replace("    image: busybox\n", "")
    )
    assert "(Pod/x): spec: required field is missing" in error(POD.split("spec:")[0])
    assert "(Pod/x): spec.containers: must not be empty" in error(
        POD.split("  containers:")[0] + "  containers: []\n"
    )


def test_duplicate_objects_in_one_file() -> None:
    message = error("---\n".join([DEPLOYMENT, SERVICE, DEPLOYMENT]))
    assert message == (
        "bad.yaml: document 3 (Deployment/web): duplicate of document 1 (same kind, namespace and name)"
    )


def test_errors_inside_lists_name_the_item() -> None:
    items = "".join(f"- {line}\n" if i == 0 else f"  {line}\n" for i, line in enumerate(POD.splitlines()))
    text = "apiVersion: v1\nkind: List\nitems:\n" + items.replace(
        "image: busybox", "image: busybox\n      tty: true"
    )
    assert (
        "bad.yaml: document 1, item 1 (Pod/x): spec.containers[0].tty: field not supported by podhop"
        in error(text)
    )


def test_several_problems_are_counted() -> None:
    text = edit(POD, "spec:\n", "spec:\n  hostNetwork: true\n  hostPID: true\n")
    assert error(text).endswith("spec.hostNetwork: field not supported by podhop (and 1 more problem)")
