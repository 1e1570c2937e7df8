"""Service endpoints of a local cluster: selectors → ready pod addresses → NAT rules.

Why: endpoints must follow pods as they come, go and migrate. Rather than
patching rules incrementally, every change recomputes the whole endpoint set
from the state database and rewrites the cluster's chains atomically (what
kube-proxy's iptables mode does on each sync), so the rules can never drift
from the state.

Migrations change endpoints before the state does — a clone's source is
detached while CRIU dumps it, its target serves beside it for a moment — so
those changes are *overrides* kept in the state database too (one per
migration step), and every sync applies all of them. Syncs take turns (a
per-cluster lock): concurrent migrations behind one service each see the
others' overrides, so none re-adds another's detached source.
"""

from __future__ import annotations

import dataclasses
import socket
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass

from podhop import locks
from podhop.backends.local.cluster import LocalCluster
from podhop.net import nat
from podhop.store import PodRecord, ServiceRecord

LB_PORT_RANGE = range(30000, 32768)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def target_port(pod: PodRecord, target: int | str) -> int | None:
    """A service port's targetPort on this pod (named ports looked up in its containers)."""
    if isinstance(target, int):
        return target
    if target.isdigit():
        return int(target)
    for ctr in pod.spec.get("containers", []):
        for port in ctr.get("ports", []):
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def endpoints(service: ServiceRecord, pods: list[PodRecord]) -> dict[str, list[nat.Endpoint]]:
    """Ready endpoints per service port name (or number), sorted for a stable rule order."""
    ready = [
        p
        for p in pods
        if p.phase == "Running" and p.namespace == service.namespace and selects(service.selector, p.labels)
    ]
    out: dict[str, list[nat.Endpoint]] = {}
    for port in service.ports:
        key = str(port.get("name") or port["port"])
        eps = []
        for pod in ready:
            tp = target_port(pod, port.get("targetPort", port["port"]))
            if tp is not None:
                eps.append(nat.Endpoint(pod.ip, tp))
        out[key] = sorted(eps, key=lambda e: (e.ip, e.port))
    return out


OVERRIDE_KIND = "EndpointOverride"


def set_override(
    cluster: LocalCluster, key: str, *, add: tuple[PodRecord, ...] = (), exclude: tuple[PodRecord, ...] = ()
) -> None:
    """Record an endpoint override and apply it: ``add`` pods serve too, ``exclude`` pods do not."""
    body = {
        "add": [dataclasses.asdict(p) for p in add],
        "exclude": [[p.namespace, p.name, p.ip] for p in exclude],
    }
    cluster.store.put_object(OVERRIDE_KIND, cluster.name, "", key, body)
    sync(cluster)


def clear_overrides(cluster: LocalCluster, *keys: str) -> None:
    """Drop endpoint overrides (those that exist) and apply the result in one sync."""
    for key in keys:
        cluster.store.remove(OVERRIDE_KIND, cluster.name, "", key)
    sync(cluster)


def _overrides(cluster: LocalCluster) -> tuple[list[PodRecord], set[tuple[str, str, str]]]:
    added: list[PodRecord] = []
    gone: set[tuple[str, str, str]] = set()
    for body in cluster.store.objects(OVERRIDE_KIND, cluster.name):
        added += [PodRecord.from_dict(p) for p in body.get("add", [])]
        gone |= {(ns, name, ip) for ns, name, ip in body.get("exclude", [])}
    return added, gone


def rules(cluster: LocalCluster) -> list[nat.ServiceRule]:
    added, gone = _overrides(cluster)
    pods = [p for p in cluster.store.pods(cluster.name) + added if (p.namespace, p.name, p.ip) not in gone]
    out = []
    for svc in cluster.store.services(cluster.name):
        eps = endpoints(svc, pods)
        for port in svc.ports:
            key = str(port.get("name") or port["port"])
            out.append(
                nat.ServiceRule(
                    key=f"{svc.namespace}/{svc.name}:{key}",
                    vip=svc.cluster_ip,
                    port=int(port["port"]),
                    endpoints=tuple(eps[key]),
                    external_port=port.get("nodePort"),
                )
            )
    return out


def _taking_turns(cluster: LocalCluster) -> AbstractContextManager[None]:
    """The per-cluster lock every change of its service rules holds."""
    lock = cluster.store.lock_path(f"{cluster.name}.services")
    return locks.hold(lock, f"the services of cluster {cluster.name}")


def _host_sources(cluster: LocalCluster) -> nat.HostSources:
    lay = cluster.layout
    return nat.HostSources(lay.bridge, lay.service_source_ip, lay.loopback_source_ip)


@dataclass
class PreparedSwitch:
    """One ``iptables-restore`` per place the rules live (the host, each node), started ahead of a
    switch (:class:`~podhop.net.nat.PreparedRestore`) so that applying it costs the commits alone."""

    host: nat.PreparedRestore
    nodes: list[nat.PreparedRestore]

    @classmethod
    def start(cls, cluster: LocalCluster) -> PreparedSwitch:
        return cls(nat.PreparedRestore(), [nat.PreparedRestore(n.netns) for n in cluster.nodes()])

    def close(self) -> None:
        for prepared in (self.host, *self.nodes):
            prepared.close()


def switch_prepared(cluster: LocalCluster, prepared: PreparedSwitch) -> None:
    """Apply the current state's rules with a :class:`PreparedSwitch`: on the host first (where
    outside traffic enters), then on every node at once. Chains no longer used stay until the
    next :func:`sync`."""
    prefix = cluster.layout.chain_prefix
    with _taking_turns(cluster):
        current = rules(cluster)
        prepared.host.apply(prefix, current, _host_sources(cluster))
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda node: node.apply(prefix, current), prepared.nodes))


def sync(cluster: LocalCluster) -> None:
    """Rewrite the cluster's service rules, on the host and on every node, from the current state
    (pods and endpoint overrides). Syncs of one cluster take turns, across threads and processes."""
    with _taking_turns(cluster):
        current = rules(cluster)
        prefix = cluster.layout.chain_prefix
        host = _host_sources(cluster)
        nodes = [n.netns for n in cluster.nodes()]
        with ThreadPoolExecutor(max_workers=8) as pool:  # one iptables-restore per namespace
            # The host first, on its own: it is where outside traffic (LoadBalancer, the host's
            # clients, a migration's probe) enters, and alone on the CPU it takes a third of the
            # time it takes beside the nodes' updates, which follow in parallel.
            nat.sync(prefix, current, None, host)
            list(pool.map(lambda ns: nat.sync(prefix, current, ns), nodes))


def forget_endpoint(cluster: LocalCluster, address: str) -> None:
    """Drop the connections translated to ``address`` (a pod that has gone) from conntrack, on the
    host and every node (:func:`podhop.net.nat.forget_connections`)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda ns: nat.forget_connections(address, ns), [None, *(n.netns for n in cluster.nodes())]
            )
        )


def allocate_cluster_ip(cluster: LocalCluster) -> str:
    used = {s.cluster_ip for s in cluster.store.services(cluster.name)}
    for n in range(1, 255):
        ip = cluster.layout.service_ip(n)
        if ip not in used:
            return ip
    raise RuntimeError("no free service address")


def allocate_lb_port(used: set[int]) -> int:
    """A free port on 127.0.0.1 for a LoadBalancer service, nodePort-style (30000-32767)."""
    for port in LB_PORT_RANGE:
        if port in used:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port for a LoadBalancer service")
