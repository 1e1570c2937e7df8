"""kubectl-style tables of nodes, pods and services, from the backend interface's values.

Why: ``podhop get`` prints the same columns on either kind of cluster; the rows
are built here once, from :mod:`podhop.backends.base`'s values, never from one
backend's records.
"""

from __future__ import annotations

from datetime import UTC, datetime

from podhop.backends.base import Node, Pod, Service
from podhop.objects.quantity import format_memory

Rows = tuple[list[str], list[list[str]]]


def age(timestamp: str | None) -> str:
    """kubectl's short age format (``45s``, ``3m``, ``2h``, ``4d``)."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    secs = int((datetime.now(UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{max(secs, 0)}s"


def nodes(items: list[Node], wide: bool) -> Rows:
    headers = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    if wide:
        headers += ["INTERNAL-IP", "POD-CIDR", "CPU", "MEMORY"]
    rows = []
    for n in items:
        row = [n.name, "Ready" if n.ready else "NotReady", "<none>", age(n.created), n.version or "<unknown>"]
        if wide:
            row += [n.ip, n.pod_cidr or "<none>", f"{n.cpu_m}m", format_memory(n.memory_b)]
        rows.append(row)
    return headers, rows


def pods(items: list[Pod], wide: bool, with_namespace: bool) -> Rows:
    headers = (["NAMESPACE"] if with_namespace else []) + ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    if wide:
        headers += ["IP", "NODE"]
    rows = []
    for p in items:
        ready = f"{sum(1 for c in p.containers if c.ready)}/{len(p.containers)}"
        restarts = str(sum(c.restarts for c in p.containers))
        row = ([p.namespace] if with_namespace else []) + [p.name, ready, p.phase, restarts, age(p.created)]
        if wide:
            row += [p.ip or "<none>", p.node or "<none>"]
        rows.append(row)
    return headers, rows


def _ports(s: Service) -> str:
    return ",".join(f"{p.port}{f':{p.node_port}' if p.node_port else ''}/TCP" for p in s.ports)


def services(items: list[Service], wide: bool, with_namespace: bool) -> Rows:
    headers = (["NAMESPACE"] if with_namespace else []) + [
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ]
    if wide:
        headers += ["SELECTOR"]
    rows = []
    for s in items:
        external = "<none>" if s.type != "LoadBalancer" else (s.external or "<pending>")
        row = ([s.namespace] if with_namespace else []) + [
            s.name,
            s.type,
            s.cluster_ip,
            external,
            _ports(s),
            age(s.created),
        ]
        if wide:
            row += [",".join(f"{k}={v}" for k, v in s.selector.items()) or "<none>"]
        rows.append(row)
    return headers, rows
