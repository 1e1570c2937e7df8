"""Taking a pod out of its Services before it is stopped, without relabelling it.

Why: a clone's source is deleted once the restored pod serves — by its
ReplicaSet, or by podhop — and the kubelet signals it at once, while every
node's kube-proxy still sends it new connections until the EndpointSlice
change reaches it (kube-proxy's default ``minSyncPeriod`` is 1 s). Those
connections are refused: seen as failed requests under load. A preStop sleep
would cover it, but the pod is the user's (its spec is immutable). Relabelling
it would make its ReplicaSet count a pod lost and start another one.

So podhop marks the source not Ready in its status (the Ready condition, as a
failed readiness probe would): the EndpointSlice controller turns its
endpoints ``ready: false`` and kube-proxy stops choosing it, while it keeps
serving what it already has. podhop waits until every EndpointSlice of the
pod's namespace says so, then one kube-proxy sync more, and only then lets the
source go. The undo marks it Ready again (the kubelet would too, at its next
status reconcile).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from podhop.backends.kubernetes import api

if TYPE_CHECKING:
    from podhop.backends.kubernetes.backend import KubernetesBackend

#: One kube-proxy sync (its default minSyncPeriod, 1 s) and a margin: how long after the
#: EndpointSlices changed every node has stopped sending the pod new connections.
PROXY_SYNC_S = 1.5
REASON = "PodhopMigration"


def _conditions(ready: bool) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = "True" if ready else "False"
    message = "" if ready else "podhop: replaced by its migrated copy; draining"
    return {
        "status": {
            "conditions": [
                {"type": t, "status": status, "reason": REASON, "message": message, "lastTransitionTime": now}
                for t in ("Ready", "ContainersReady")
            ]
        }
    }


def set_ready(backend: KubernetesBackend, namespace: str, pod: str, ready: bool) -> None:
    api.call(
        f"marking {pod} {'ready' if ready else 'not ready'}",
        backend.core.patch_namespaced_pod_status,
        pod,
        namespace,
        _conditions(ready),
    )


def serving_endpoints(backend: KubernetesBackend, namespace: str, pod: str) -> int:
    """How many EndpointSlice endpoints of the namespace still offer ``pod`` as ready."""
    from kubernetes import client as k8s

    slices = api.call(
        f"listing EndpointSlices in {namespace}",
        k8s.DiscoveryV1Api(backend.api).list_namespaced_endpoint_slice,
        namespace,
    )
    count = 0
    for s in slices.items:
        for ep in s.endpoints or []:
            ref = ep.target_ref
            if ref is not None and ref.kind == "Pod" and ref.name == pod:
                ready = ep.conditions.ready if ep.conditions is not None else True
                if ready is not False:
                    count += 1
    return count


def drain(backend: KubernetesBackend, namespace: str, pod: str, timeout: float) -> bool:
    """Mark ``pod`` not Ready and wait until no Service sends it new connections; False on timeout."""
    set_ready(backend, namespace, pod, False)
    end = time.monotonic() + timeout
    while serving_endpoints(backend, namespace, pod):
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    time.sleep(min(PROXY_SYNC_S, max(0.0, end - time.monotonic())))
    return True
