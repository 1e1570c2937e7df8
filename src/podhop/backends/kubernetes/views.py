"""Kubernetes API objects as the backend interface's values — pure functions on plain dicts.

Why: the rest of podhop reads nodes, pods and services as
:mod:`podhop.backends.base` values, whichever cluster they come from. The API
server's objects (as ``kubectl get -o json`` prints them) are turned into
those here, with no client and no I/O, so the mapping is tested on real JSON
and the backend module stays about calling the API.
"""

from __future__ import annotations

from typing import Any

from podhop.backends.base import Container, Node, NodeUsage, Pod, PodUsage, Service, ServicePort
from podhop.objects.model import Resources
from podhop.objects.quantity import parse_cpu, parse_memory

HOSTNAME = "kubernetes.io/hostname"


def _cpu(value: Any) -> int:
    try:
        return parse_cpu(str(value)) if value not in (None, "") else 0
    except ValueError:
        return 0


def _memory(value: Any) -> int:
    try:
        return parse_memory(str(value)) if value not in (None, "") else 0
    except ValueError:
        return 0


def node(doc: dict[str, Any], pods: int = 0) -> Node:
    meta, spec, status = doc.get("metadata", {}), doc.get("spec", {}), doc.get("status", {})
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses", [])}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
    return Node(
        name=meta.get("name", ""),
        ip=addresses.get("InternalIP") or addresses.get("ExternalIP") or "",
        cpu_m=_cpu(alloc.get("cpu")),
        memory_b=_memory(alloc.get("memory")),
        pods=pods,
        pod_cidr=spec.get("podCIDR", ""),
        ready=ready and not spec.get("unschedulable", False),
        version=status.get("nodeInfo", {}).get("kubeletVersion", ""),
        created=meta.get("creationTimestamp") or "",
        labels=dict(meta.get("labels") or {}),
    )


def _requests(spec: dict[str, Any]) -> Resources:
    total = Resources()
    for c in spec.get("containers", []):
        req = (c.get("resources") or {}).get("requests") or {}
        total = total + Resources(_cpu(req.get("cpu")), _memory(req.get("memory")))
    return total


def pod(doc: dict[str, Any]) -> Pod:
    meta, spec, status = doc.get("metadata", {}), doc.get("spec", {}), doc.get("status", {})
    statuses = {s.get("name"): s for s in status.get("containerStatuses") or []}
    containers = tuple(
        Container(
            name=c["name"],
            image=c.get("image", ""),
            ports=tuple(int(p["containerPort"]) for p in c.get("ports") or [] if p.get("containerPort")),
            ready=bool(statuses.get(c["name"], {}).get("ready", False)),
            restarts=int(statuses.get(c["name"], {}).get("restartCount", 0)),
        )
        for c in spec.get("containers", [])
    )
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    phase = status.get("phase", "Unknown")
    if meta.get("deletionTimestamp"):
        phase = "Terminating"
    return Pod(
        namespace=meta.get("namespace", "default"),
        name=meta.get("name", ""),
        node=spec.get("nodeName") or "",
        ip=status.get("podIP") or "",
        phase=phase,
        labels=dict(meta.get("labels") or {}),
        containers=containers,
        requests=_requests(spec),
        node_selector=dict(spec.get("nodeSelector") or {}),
        owner_kind=owner.get("kind") if owner else None,
        owner_name=owner.get("name") if owner else None,
        created=meta.get("creationTimestamp") or "",
        uid=meta.get("uid", ""),
    )


def service(doc: dict[str, Any]) -> Service:
    meta, spec, status = doc.get("metadata", {}), doc.get("spec", {}), doc.get("status", {})
    ports = tuple(
        ServicePort(
            port=int(p["port"]),
            target_port=p.get("targetPort", p["port"]),
            name=p.get("name") or "",
            node_port=p.get("nodePort"),
        )
        for p in spec.get("ports") or []
    )
    ingress = (status.get("loadBalancer") or {}).get("ingress") or []
    external = None
    if spec.get("type") == "LoadBalancer" and ingress and ports:
        address = ingress[0].get("ip") or ingress[0].get("hostname")
        external = f"{address}:{ports[0].port}" if address else None
    return Service(
        namespace=meta.get("namespace", "default"),
        name=meta.get("name", ""),
        type=spec.get("type", "ClusterIP"),
        cluster_ip=spec.get("clusterIP") or "",
        selector=dict(spec.get("selector") or {}),
        ports=ports,
        external=external,
        created=meta.get("creationTimestamp") or "",
    )


def node_usage(doc: dict[str, Any], capacity: Node | None) -> NodeUsage:
    """A ``metrics.k8s.io/v1beta1`` NodeMetrics item."""
    usage = doc.get("usage", {})
    return NodeUsage(
        name=doc.get("metadata", {}).get("name", ""),
        cpu_m=_cpu(usage.get("cpu")),
        memory_b=_memory(usage.get("memory")),
        cpu_capacity_m=capacity.cpu_m if capacity else 0,
        memory_capacity_b=capacity.memory_b if capacity else 0,
    )


def pod_usage(doc: dict[str, Any], nodes: dict[tuple[str, str], str]) -> PodUsage:
    """A ``metrics.k8s.io/v1beta1`` PodMetrics item (its containers summed)."""
    meta = doc.get("metadata", {})
    cpu = sum(_cpu(c.get("usage", {}).get("cpu")) for c in doc.get("containers", []))
    mem = sum(_memory(c.get("usage", {}).get("memory")) for c in doc.get("containers", []))
    key = (meta.get("namespace", "default"), meta.get("name", ""))
    return PodUsage(key[0], key[1], nodes.get(key, ""), cpu, mem)
