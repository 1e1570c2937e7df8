"""``top`` for the local cluster: CPU and memory from cgroup accounting.

Why: the seed read ``kubectl top`` (metrics-server) to find the hottest pod.
metrics-server reports CPU as the rate of cumulative CPU time over a sampling
window, in millicores, and memory as the working set; we compute the same
figures from each pod's and node's cgroup, so numbers mean what users expect.
"""

from __future__ import annotations

import time

from podhop.backends.base import NodeUsage, PodUsage, Sample
from podhop.backends.local.cluster import LocalCluster
from podhop.runtime import cgroups


def sample(cluster: LocalCluster, window_s: float = 1.0) -> Sample:
    """Measure every node and pod over ``window_s`` seconds."""
    nodes = cluster.nodes()
    pods = cluster.store.pods(cluster.name)
    node_rel = {n.name: cgroups.relpath(cluster.name, n.name) for n in nodes}
    pod_rel = {(p.namespace, p.name): cgroups.relpath(cluster.name, p.node, p.sandbox) for p in pods}
    rels = list(node_rel.values()) + list(pod_rel.values())
    t0 = time.monotonic()
    before = {r: cgroups.usage(r) for r in rels}
    time.sleep(window_s)
    after = {r: cgroups.usage(r) for r in rels}
    elapsed = time.monotonic() - t0

    def cpu_m(rel: str) -> int:
        a, b = before.get(rel), after.get(rel)
        if a is None or b is None or elapsed <= 0:
            return 0
        return max(0, round((b.cpu_ns - a.cpu_ns) / elapsed / 1e6))

    def mem(rel: str) -> int:
        b = after.get(rel)
        return b.memory_working_set_b if b else 0

    return Sample(
        window_s=elapsed,
        nodes=[
            NodeUsage(n.name, cpu_m(node_rel[n.name]), mem(node_rel[n.name]), n.cpu_m, n.memory_b)
            for n in nodes
        ],
        pods=[
            PodUsage(
                p.namespace,
                p.name,
                p.node,
                cpu_m(pod_rel[(p.namespace, p.name)]),
                mem(pod_rel[(p.namespace, p.name)]),
            )
            for p in pods
        ],
    )
