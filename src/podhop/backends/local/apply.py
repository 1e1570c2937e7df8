"""``apply -f`` and ``delete -f``: make the cluster match a manifest file, or nothing.

Why: a user who applies a file expects all of it or none of it. So apply is
two steps, as in lightkube's "build the request, then send it": :func:`plan`
is pure with respect to the machine — it validates every object, resolves
every image and schedules every new pod against the current node states —
and raises before anything is touched; :func:`execute` then creates what the
plan says, undoing everything it did if any step fails.

Scheduling is kube-scheduler's: filter nodes by nodeSelector and capacity
(NodeResourcesFit), score with LeastAllocated, spread ties. Deployments own
their pods directly (named ``<deployment>-<template-hash>-<suffix>`` as
through a ReplicaSet); changing a template replaces the pods; changing
``replicas`` adds or removes pods.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

from podhop.backends.local import pods as podops
from podhop.backends.local import services as svcops
from podhop.backends.local.cluster import LocalCluster
from podhop.errors import ManifestError, NotFoundError, PodhopError, RuntimeFailure, SchedulingError
from podhop.objects.manifests import load_manifests
from podhop.objects.model import Deployment, Manifest, Pod, PodSpec, Resources, Service
from podhop.objects.quantity import format_cpu, format_memory
from podhop.policies.scoring import HOSTNAME_LABEL, NodeState, explain_unschedulable, pick_node
from podhop.runtime.images import resolve
from podhop.store import DeploymentRecord, PodRecord, ServiceRecord

Report = Callable[[str], None]
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated names


@dataclass
class NewPod:
    namespace: str
    name: str
    node: str
    labels: dict[str, str]
    spec: PodSpec
    owner: tuple[str, str] | None


@dataclass
class Plan:
    """What applying a file will do; built without touching the machine."""

    source: str
    new_pods: list[NewPod] = field(default_factory=list)
    doomed_pods: list[PodRecord] = field(default_factory=list)
    services: list[ServiceRecord] = field(default_factory=list)
    deployments: list[DeploymentRecord] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def template_hash(dep: Deployment) -> str:
    text = json.dumps(dep.to_k8s()["spec"]["template"], sort_keys=True)
    digest = hashlib.sha256(text.encode()).digest()
    return "".join(_SUFFIX_ALPHABET[b % len(_SUFFIX_ALPHABET)] for b in digest[:10])


def _suffix() -> str:
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))


def spec_from_record(pod: PodRecord) -> PodSpec:
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod.name}, "spec": pod.spec}
    parsed = load_manifests("<state>", text=json.dumps(doc))[0]
    assert isinstance(parsed, Pod)
    return parsed.spec


def node_states(cluster: LocalCluster, pods: list[PodRecord]) -> dict[str, NodeState]:
    """Allocatable and requested resources per node, from the pods given."""
    states = {
        n.name: NodeState(
            name=n.name,
            allocatable=Resources(n.cpu_m, n.memory_b),
            requested=Resources(),
            labels=((HOSTNAME_LABEL, n.name),),
        )
        for n in cluster.nodes()
    }
    for p in pods:
        if p.node in states:
            states[p.node] = states[p.node].with_pod(spec_from_record(p).requests)
    return states


def plan(cluster: LocalCluster, manifests: list[Manifest], source: str) -> Plan:
    """Validate, resolve images and schedule; raise before anything is changed."""
    result = Plan(source)
    existing = cluster.store.pods(cluster.name)
    deployments = {(d.namespace, d.name): d for d in cluster.store.deployments(cluster.name)}
    services = {(s.namespace, s.name): s for s in cluster.store.services(cluster.name)}
    pod_names = {(p.namespace, p.name) for p in existing}

    def where(obj: Manifest) -> str:
        return f"{source}: {obj.kind}/{obj.name}"

    for obj in manifests:
        if isinstance(obj, Service):
            continue
        containers = obj.template.spec.containers if isinstance(obj, Deployment) else obj.spec.containers
        for i, ctr in enumerate(containers):
            try:
                resolve(ctr.image)
            except PodhopError as exc:
                field_path = "spec.template.spec" if isinstance(obj, Deployment) else "spec"
                raise ManifestError(
                    f"{where(obj)}: {field_path}.containers[{i}].image: {exc}", hint=exc.hint
                ) from exc

    keep = list(existing)
    for obj in manifests:
        if isinstance(obj, Deployment):
            _plan_deployment(cluster, obj, deployments.get((obj.namespace, obj.name)), existing, result, keep)
        elif isinstance(obj, Pod):
            if (obj.namespace, obj.name) in pod_names:
                result.messages.append(f"pod/{obj.name} unchanged")
                continue
            result.new_pods.append(NewPod(obj.namespace, obj.name, "", obj.labels_dict, obj.spec, None))
            result.messages.append(f"pod/{obj.name} created")
        else:
            _plan_service(cluster, obj, services.get((obj.namespace, obj.name)), result)

    states = node_states(cluster, keep)
    for new in result.new_pods:
        request = new.spec.requests
        chosen = pick_node(list(states.values()), request, new.spec.node_selector_dict)
        if chosen is None:
            why = explain_unschedulable(list(states.values()), request, new.spec.node_selector_dict)
            raise SchedulingError(
                f"{source}: {_owner_label(new)}: pod {new.name} (requests {format_cpu(request.cpu_m)} CPU, "
                f"{format_memory(request.memory_b)}) cannot be placed: {why}"
            )
        new.node = chosen.name
        states[chosen.name] = chosen.with_pod(request)
    return result


def _owner_label(new: NewPod) -> str:
    return f"{new.owner[0]}/{new.owner[1]}" if new.owner else f"Pod/{new.name}"


def _plan_deployment(
    cluster: LocalCluster,
    dep: Deployment,
    old: DeploymentRecord | None,
    existing: list[PodRecord],
    result: Plan,
    keep: list[PodRecord],
) -> None:
    thash = template_hash(dep)
    owned = [
        p
        for p in existing
        if p.owner_kind == "Deployment" and p.owner_name == dep.name and p.namespace == dep.namespace
    ]
    current = [p for p in owned if p.labels.get("pod-template-hash") == thash]
    stale = [p for p in owned if p.labels.get("pod-template-hash") != thash]
    surplus = sorted(current, key=lambda p: p.created, reverse=True)[: max(0, len(current) - dep.replicas)]
    doomed = stale + surplus
    result.doomed_pods += doomed
    for p in doomed:
        keep.remove(p)
    labels = {**dep.template.labels_dict, "pod-template-hash": thash}
    for _ in range(max(0, dep.replicas - len(current))):
        name = f"{dep.name}-{thash}-{_suffix()}"
        result.new_pods.append(
            NewPod(dep.namespace, name, "", labels, dep.template.spec, ("Deployment", dep.name))
        )
    result.deployments.append(
        DeploymentRecord(
            cluster=cluster.name,
            namespace=dep.namespace,
            name=dep.name,
            replicas=dep.replicas,
            selector=dep.selector_dict,
            labels=dep.labels_dict,
            template=dep.to_k8s()["spec"]["template"],
            template_hash=thash,
            **({"created": old.created} if old else {}),
        )
    )
    changed = old is None or old.template_hash != thash or old.replicas != dep.replicas
    verb = "created" if old is None else ("configured" if changed else "unchanged")
    result.messages.append(f"deployment.apps/{dep.name} {verb}")


def _plan_service(cluster: LocalCluster, svc: Service, old: ServiceRecord | None, result: Plan) -> None:
    ports = []
    for i, p in enumerate(svc.ports):
        entry: dict[str, object] = {"port": p.port, "targetPort": p.target_port, "protocol": p.protocol}
        if p.name:
            entry["name"] = p.name
        if svc.type == "LoadBalancer":
            old_port = old.ports[i].get("nodePort") if old and i < len(old.ports) else None
            entry["nodePort"] = old_port
        ports.append(entry)
    record = ServiceRecord(
        cluster=cluster.name,
        namespace=svc.namespace,
        name=svc.name,
        type=svc.type,
        cluster_ip=old.cluster_ip if old else "",
        selector=svc.selector_dict,
        ports=ports,
        labels=svc.labels_dict,
        **({"created": old.created} if old else {}),
    )
    result.services.append(record)
    same = old is not None and (old.type, old.selector, old.ports) == (
        record.type,
        record.selector,
        record.ports,
    )
    verb = "created" if old is None else ("unchanged" if same else "configured")
    result.messages.append(f"service/{svc.name} {verb}")


def execute(cluster: LocalCluster, p: Plan, report: Report) -> list[str]:
    """Carry out ``p``; if any step fails, undo every step already done and re-raise."""
    store = cluster.store
    with ExitStack() as undo:
        used_ports = {
            int(port["nodePort"])
            for c in store.clusters()
            for s in store.services(c.name)
            for port in s.ports
            if port.get("nodePort")
        }
        for svc in p.services:
            old = next(
                (
                    s
                    for s in store.services(cluster.name)
                    if (s.namespace, s.name) == (svc.namespace, svc.name)
                ),
                None,
            )
            if not svc.cluster_ip:
                svc.cluster_ip = svcops.allocate_cluster_ip(cluster)
            for port in svc.ports:
                if svc.type == "LoadBalancer" and not port.get("nodePort"):
                    port["nodePort"] = svcops.allocate_lb_port(used_ports)
                    used_ports.add(int(port["nodePort"]))
            store.put_service(svc)
            if old is None:
                undo.callback(store.remove, "Service", cluster.name, svc.namespace, svc.name)
            else:
                undo.callback(store.put_service, old)
        undo.callback(svcops.sync, cluster)
        created: list[PodRecord] = []
        nodes = {n.name: n for n in cluster.nodes()}
        for i, new in enumerate(p.new_pods, 1):
            report(f"pod {i}/{len(p.new_pods)}: {new.name} on {new.node}")
            pod = podops.create_pod(
                cluster, nodes[new.node], new.namespace, new.name, new.labels, new.spec, new.owner
            )
            created.append(pod)
            undo.callback(podops.delete_pod, cluster, pod, 0.0)
        if created:
            report(f"waiting for {len(created)} pod(s) to accept connections")
            slow = podops.wait_ready(created)
            if slow:
                raise RuntimeFailure(
                    f"pods not ready after 30 s: {', '.join(p.name for p in slow)}",
                    hint="see `podhop logs POD`",
                )
        for dep in p.deployments:
            store.put_deployment(dep)
        svcops.sync(cluster)
        undo.pop_all()
    for pod in p.doomed_pods:
        report(f"removing pod {pod.name}")
        podops.delete_pod(cluster, pod)
    if p.doomed_pods:
        svcops.sync(cluster)
    return p.messages


def apply(
    cluster: LocalCluster, source: str, text: str | None = None, report: Report = lambda _: None
) -> list[str]:
    """Parse ``source`` and make the cluster match it; all of it or none of it."""
    manifests = load_manifests(source, text=text)
    with cluster.store.lock(cluster.name):
        return execute(cluster, plan(cluster, manifests, source), report)


def delete(
    cluster: LocalCluster, source: str, text: str | None = None, report: Report = lambda _: None
) -> list[str]:
    """Delete every object the file names (a Deployment takes its pods with it)."""
    manifests = load_manifests(source, text=text)
    store = cluster.store
    messages: list[str] = []
    missing: list[str] = []
    with store.lock(cluster.name):
        pods = store.pods(cluster.name)
        for obj in manifests:
            key = (obj.namespace, obj.name)
            if isinstance(obj, Deployment):
                if key not in {(d.namespace, d.name) for d in store.deployments(cluster.name)}:
                    missing.append(f"deployments.apps {obj.name!r} not found")
                    continue
                owned = [
                    p
                    for p in pods
                    if (p.namespace, p.owner_kind, p.owner_name) == (obj.namespace, "Deployment", obj.name)
                ]
                for pod in owned:
                    report(f"removing pod {pod.name}")
                    podops.delete_pod(cluster, pod)
                store.remove("Deployment", cluster.name, *key)
                messages.append(f'deployment.apps "{obj.name}" deleted')
            elif isinstance(obj, Pod):
                found = [p for p in pods if (p.namespace, p.name) == key]
                if not found:
                    missing.append(f"pods {obj.name!r} not found")
                    continue
                podops.delete_pod(cluster, found[0])
                messages.append(f'pod "{obj.name}" deleted')
            else:
                if key not in {(s.namespace, s.name) for s in store.services(cluster.name)}:
                    missing.append(f"services {obj.name!r} not found")
                    continue
                store.remove("Service", cluster.name, *key)
                messages.append(f'service "{obj.name}" deleted')
        svcops.sync(cluster)
    if missing:
        raise NotFoundError("; ".join(missing) + (f" (deleted: {'; '.join(messages)})" if messages else ""))
    return messages
