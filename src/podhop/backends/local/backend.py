"""The local cluster as a :class:`~podhop.backends.base.ClusterBackend`.

Why: callers that should not care where the cluster runs (experiments, the
rebalancer) talk to this adapter; it forwards to the local modules and
returns Kubernetes-shaped objects.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from podhop.backends.local import apply as applyops
from podhop.backends.local import metrics, render
from podhop.backends.local.cluster import LocalCluster


class LocalBackend:
    """Adapter from :class:`LocalCluster` to the backend protocol."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.name = cluster.name

    def list_nodes(self) -> list[dict[str, Any]]:
        pods = self.cluster.store.pods(self.name)
        return [render.node(n, sum(1 for p in pods if p.node == n.name)) for n in self.cluster.nodes()]

    def list_pods(self) -> list[dict[str, Any]]:
        ips = {n.name: n.ip for n in self.cluster.nodes()}
        return [render.pod(p, ips.get(p.node)) for p in self.cluster.store.pods(self.name)]

    def list_services(self) -> list[dict[str, Any]]:
        return [render.service(s) for s in self.cluster.store.services(self.name)]

    def apply(self, source: str, text: str) -> list[str]:
        return applyops.apply(self.cluster, source, text)

    def delete(self, source: str, text: str) -> list[str]:
        return applyops.delete(self.cluster, source, text)

    def top(self, window_s: float) -> dict[str, Any]:
        sample = metrics.sample(self.cluster, window_s)
        return {
            "window_s": sample.window_s,
            "nodes": [asdict(n) for n in sample.nodes],
            "pods": [asdict(p) for p in sample.pods],
        }
