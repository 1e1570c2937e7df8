"""Kubernetes-shaped views of local records, for ``get -o json|yaml`` and scripts.

Why: users' kubectl habits and jq scripts should carry over. A pod comes out
with ``metadata.name``, ``metadata.labels``, ``spec.nodeName``,
``status.phase`` and ``status.podIP`` where kubectl would put them; lists are
``kind: List`` with ``items``. The table views (``-o wide``) are built from
the same dicts so the two can never disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from podhop.backends.local.pods import container_state, pod_phase
from podhop.objects.quantity import format_memory
from podhop.store import NodeRecord, PodRecord, ServiceRecord


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def node(n: NodeRecord, pods: int) -> dict[str, Any]:
    capacity = {"cpu": f"{n.cpu_m}m", "memory": format_memory(n.memory_b), "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": n.name,
            "labels": {
                "kubernetes.io/hostname": n.name,
                "kubernetes.io/os": "linux",
                "podhop.io/cluster": n.cluster,
            },
            "creationTimestamp": n.created,
        },
        "spec": {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": n.ip}, {"type": "Hostname", "address": n.name}],
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "NamespaceUp"}],
            "nodeInfo": {"containerRuntimeVersion": "runc", "operatingSystem": "linux"},
            "podhop": {"netns": n.netns, "linkBandwidthBps": n.bandwidth_bps, "pods": pods},
        },
    }


def pod(p: PodRecord, node_ip: str | None = None) -> dict[str, Any]:
    statuses = []
    for c in p.containers:
        state, code = container_state(c)
        if state == "running":
            st: dict[str, Any] = {"running": {"startedAt": p.started}}
        elif state == "terminated":
            st = {"terminated": {"exitCode": code}}
        else:
            st = {"waiting": {"reason": "Unknown"}}
        statuses.append(
            {
                "name": c.name,
                "image": c.image,
                "ready": state == "running",
                "containerID": f"runc://{c.runtime_id}",
                "state": st,
                "restartCount": 0,
            }
        )
    meta: dict[str, Any] = {
        "name": p.name,
        "namespace": p.namespace,
        "uid": p.uid,
        "labels": p.labels,
        "creationTimestamp": p.created,
    }
    if p.owner_kind:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": p.owner_kind, "name": p.owner_name, "controller": True}
        ]
    phase = pod_phase(p)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {**p.spec, "nodeName": p.node},
        "status": {
            "phase": phase,
            "podIP": p.ip,
            "podIPs": [{"ip": p.ip}],
            "hostIP": node_ip,
            "startTime": p.started,
            "conditions": [{"type": "Ready", "status": "True" if phase == "Running" else "False"}],
            "containerStatuses": statuses,
        },
    }


def service(s: ServiceRecord) -> dict[str, Any]:
    ports = []
    for port in s.ports:
        entry = {k: port[k] for k in ("name", "protocol", "port", "targetPort") if port.get(k) is not None}
        if port.get("nodePort"):
            entry["nodePort"] = port["nodePort"]
        ports.append(entry)
    status: dict[str, Any] = {"loadBalancer": {}}
    if s.type == "LoadBalancer":
        status["loadBalancer"] = {"ingress": [{"ip": "127.0.0.1", "ipMode": "Proxy"}]}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": s.name,
            "namespace": s.namespace,
            "labels": s.labels,
            "creationTimestamp": s.created,
        },
        "spec": {
            "type": s.type,
            "clusterIP": s.cluster_ip,
            "clusterIPs": [s.cluster_ip],
            "selector": s.selector,
            "ports": ports,
        },
        "status": status,
    }


def age(timestamp: str | None) -> str:
    """kubectl's short age format (``45s``, ``3m``, ``2h``, ``4d``)."""
    if not timestamp:
        return "<unknown>"
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    secs = int((datetime.now(UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{max(secs, 0)}s"


def external_address(s: ServiceRecord) -> str:
    if s.type != "LoadBalancer":
        return "<none>"
    ports = [str(p["nodePort"]) for p in s.ports if p.get("nodePort")]
    return "127.0.0.1:" + ",".join(ports) if ports else "<pending>"


def port_summary(s: ServiceRecord) -> str:
    parts = []
    for p in s.ports:
        node_port = f":{p['nodePort']}" if p.get("nodePort") else ""
        parts.append(f"{p['port']}{node_port}/{p.get('protocol', 'TCP')}")
    return ",".join(parts)
