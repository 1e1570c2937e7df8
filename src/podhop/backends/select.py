"""Which cluster a command acts on: a podhop cluster of either kind, or any cluster from a kubeconfig.

Why: every command takes the same choice — ``--cluster NAME`` (or
``PODHOP_CLUSTER``; the only cluster when there is one), or ``--kubeconfig
PATH [--context C]`` for a cluster podhop did not make (EKS, say) — and gets
back one :class:`~podhop.backends.base.Backend`. Creating and deleting a
podhop cluster dispatch on its kind here too, so nothing else needs to know
the kinds exist.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from podhop.backends.base import Backend
from podhop.errors import NotFoundError
from podhop.settings import paths
from podhop.store import ClusterRecord, Store

KINDS = ("local", "kubernetes")
Report = Callable[[str], None]


def choose(store: Store, name: str | None) -> ClusterRecord:
    """The cluster record named ``name`` (or ``$PODHOP_CLUSTER``), or the only one there is."""
    clusters = store.clusters()
    name = name or os.environ.get("PODHOP_CLUSTER") or None
    if name is None:
        if len(clusters) == 1:
            return clusters[0]
        if not clusters:
            raise NotFoundError("no cluster exists", hint="create one: podhop cluster create")
        names = ", ".join(c.name for c in clusters)
        raise NotFoundError(f"several clusters exist ({names})", hint="choose one with --cluster NAME")
    record = store.cluster(name)
    if record is None:
        names = ", ".join(c.name for c in clusters) or "none"
        raise NotFoundError(f"cluster {name!r} not found (clusters: {names})")
    return record


def open_backend(
    store: Store,
    cluster: str | None = None,
    *,
    kubeconfig: Path | None = None,
    context: str | None = None,
) -> Backend:
    """The backend for a podhop cluster of either kind, or for the cluster a kubeconfig names."""
    if kubeconfig is not None:
        from podhop.backends.kubernetes.backend import KubernetesBackend

        return KubernetesBackend.connect(kubeconfig, context=context, store=store)
    record = choose(store, cluster)
    if record.kind == "kubernetes":
        from podhop.backends.kubernetes.backend import KubernetesBackend
        from podhop.kubekind.cluster import KubeCluster

        return KubernetesBackend.connect(KubeCluster(record).kubeconfig, store=store, record=record)
    from podhop.backends.local.backend import LocalBackend
    from podhop.backends.local.cluster import LocalCluster

    return LocalBackend(LocalCluster(store, record, paths()))


def create_cluster(
    store: Store,
    kind: str,
    name: str,
    nodes: int,
    node_cpu_m: int,
    node_memory_b: int,
    link_bandwidth_bps: int | None,
    report: Report,
) -> None:
    """Create a podhop cluster of ``kind``; on failure everything made so far is removed."""
    if kind == "kubernetes":
        from podhop.kubekind import cluster as kube

        kube.create_cluster(store, name, nodes, node_cpu_m, node_memory_b, link_bandwidth_bps, report)
        return
    from podhop.backends.local import cluster as local

    local.create_cluster(store, name, nodes, node_cpu_m, node_memory_b, link_bandwidth_bps, report)


def delete_cluster(store: Store, name: str, report: Report) -> list[str]:
    """Delete podhop cluster ``name`` of either kind; return any residue (empty when clean)."""
    record = store.cluster(name)
    if record is not None and record.kind == "kubernetes":
        from podhop.kubekind import cluster as kube

        return kube.delete_cluster(store, name, report)
    from podhop.backends.local import cluster as local

    return local.delete_cluster(store, name, report)
