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
serving what it already has. The kubelet owns that condition, though: every
10 s (its status manager's reconcile tick) it rewrites a status that differs
from its own, which puts the pod back into its Services until podhop marks it
again. So ``drain`` watches for that rewrite and marks the pod again at once,
and lets the caller stop the pod only when (a) no EndpointSlice has offered it
for one kube-proxy sync and (b) its kubelet cannot rewrite the mark before the
caller is done: either a rewrite was just seen (the next one is a whole
period away) or a whole period passed without one. That costs up to one
period (10 s) in the switch; the source serves all along, so clients see
nothing of it. ``keep_out`` repeats the mark while the caller lets the pod go.
The undo marks it Ready again (the kubelet would too, at its next tick).
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
#: The kubelet's status reconcile period (``syncPeriod`` in its status manager).
KUBELET_SYNC_S = 10.0
#: How long after ``drain`` returns the caller has to let the pod go (delete it, or have its
#: ReplicaSet delete it) before its kubelet may rewrite the mark.
LET_GO_S = 3.0
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


def _kubelet_rewrote(backend: KubernetesBackend, namespace: str, pod: str) -> bool:
    """Whether ``pod``'s Ready condition is True again (only its kubelet sets it back)."""
    raw = api.call(f"reading pod {pod}", backend.core.read_namespaced_pod, pod, namespace)
    if raw.metadata is not None and raw.metadata.deletion_timestamp is not None:
        return False  # terminating: its endpoints are not ready whatever the condition says
    conditions = raw.status.conditions if raw.status is not None else None
    return any(c.type == "Ready" and c.status == "True" for c in conditions or [])


def keep_out(backend: KubernetesBackend, namespace: str, pod: str) -> bool:
    """Mark ``pod`` not Ready again if its kubelet rewrote the mark; True if it had."""
    if not _kubelet_rewrote(backend, namespace, pod):
        return False
    set_ready(backend, namespace, pod, False)
    return True


def drain(backend: KubernetesBackend, namespace: str, pod: str, timeout: float) -> bool:
    """Mark ``pod`` not Ready; return once no Service sends it new connections and its kubelet
    cannot undo that for ``LET_GO_S`` (see the module doc); False on timeout."""
    set_ready(backend, namespace, pod, False)
    now = time.monotonic()
    end, marked = now + timeout, now
    rewritten: float | None = None  # when the kubelet last rewrote the mark
    quiet_since: float | None = None  # since when no endpoint offers the pod
    while True:
        now = time.monotonic()
        if keep_out(backend, namespace, pod):
            rewritten, quiet_since = now, None
        elif serving_endpoints(backend, namespace, pod):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        quiet = quiet_since is not None and now - quiet_since >= PROXY_SYNC_S
        if rewritten is not None:
            safe = now + LET_GO_S < rewritten + KUBELET_SYNC_S - 0.5
        else:
            safe = now - marked > KUBELET_SYNC_S + 0.5  # a whole tick passed: it does not fight here
        if quiet and safe:
            return True
        if now > end:
            return False
        time.sleep(0.1)
