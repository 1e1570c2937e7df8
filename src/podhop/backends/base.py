"""The cluster backend interface: what the control layer needs from a cluster.

Why: the same manifests, policies and (later) migration plans should run on
the local backend and on a real Kubernetes cluster. This protocol is the seam:
the local backend implements it with namespaces and runc; a Kubernetes backend
would implement it with the official client (pods created with a
``nodeSelector``, checkpoints through the kubelet's ``/checkpoint`` API,
restores from checkpoint OCI images). Objects cross it in Kubernetes shape
(dicts as ``kubectl get -o json`` prints them) so that neither side depends on
the other's records.
"""

from __future__ import annotations

from typing import Any, Protocol


class ClusterBackend(Protocol):
    """A cluster podhop can place pods on and measure."""

    name: str

    def list_nodes(self) -> list[dict[str, Any]]:
        """Nodes as Kubernetes ``Node`` objects."""
        ...

    def list_pods(self) -> list[dict[str, Any]]:
        """Pods as Kubernetes ``Pod`` objects (``spec.nodeName``, ``status.podIP``)."""
        ...

    def list_services(self) -> list[dict[str, Any]]:
        """Services as Kubernetes ``Service`` objects."""
        ...

    def apply(self, source: str, text: str) -> list[str]:
        """Create or update the objects of a manifest file; all or nothing."""
        ...

    def delete(self, source: str, text: str) -> list[str]:
        """Delete the objects named in a manifest file."""
        ...

    def top(self, window_s: float) -> dict[str, Any]:
        """Node and pod usage over a window: ``{"nodes": [...], "pods": [...]}`` in millicores and bytes."""
        ...
