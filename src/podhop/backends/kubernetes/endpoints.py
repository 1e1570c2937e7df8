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
from its own, which puts the pod back into its Services. So a
:class:`Holdout` keeps the mark in a thread, marking the pod again as soon as
its kubelet rewrites it, until the pod is gone. ``wait_out`` returns once no
EndpointSlice has offered the pod for one kube-proxy sync; with ``let_go`` it
also waits until the kubelet cannot rewrite the mark before the caller has
stopped the pod: either a rewrite was just seen (the next one is a whole
period away) or a whole period passed without one. That costs up to one
period (10 s) in a clone's switch; the source serves all along, so clients see
nothing of it. A clone holds its source out from ``detach`` on when other
pods serve its Services, so that no new connection waits through the
checkpoint's freeze. The undo marks it Ready again (the kubelet would too, at
its next tick).
"""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from podhop.backends.kubernetes import api
from podhop.errors import NotFoundError, PodhopError

if TYPE_CHECKING:
    from podhop.backends.kubernetes.backend import KubernetesBackend

#: One kube-proxy sync (its default minSyncPeriod, 1 s) and a margin: how long after the
#: EndpointSlices changed every node has stopped sending the pod new connections.
PROXY_SYNC_S = 1.5
#: The kubelet's status reconcile period (``syncPeriod`` in its status manager).
KUBELET_SYNC_S = 10.0
#: How long after ``wait_out(let_go=True)`` returns the caller has to let the pod go (delete it,
#: or have its ReplicaSet delete it) before its kubelet may rewrite the mark.
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


class Holdout:
    """Keeps one pod out of its Services (not Ready) against its kubelet, until stopped."""

    def __init__(self, backend: KubernetesBackend, namespace: str, pod: str) -> None:
        self.backend, self.namespace, self.pod = backend, namespace, pod
        self.marked = 0.0
        self.rewritten: float | None = None  # when its kubelet last rewrote the mark
        self.rewrites = 0
        self.error: PodhopError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Holdout:
        set_ready(self.backend, self.namespace, self.pod, False)
        self.marked = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=f"holdout-{self.pod}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                if _kubelet_rewrote(self.backend, self.namespace, self.pod):
                    set_ready(self.backend, self.namespace, self.pod, False)
                    self.rewritten, self.rewrites = time.monotonic(), self.rewrites + 1
            except NotFoundError:
                return  # gone: nothing to hold out
            except PodhopError as exc:  # the API server busy: try again, say so if it lasts
                self.error = exc

    def wait_out(self, timeout: float, *, let_go: bool = False) -> bool:
        """Wait until no Service has offered the pod for one kube-proxy sync (and, with ``let_go``,
        its kubelet cannot rewrite the mark for ``LET_GO_S``); False on timeout."""
        end = time.monotonic() + timeout
        quiet_since: float | None = None
        seen = self.rewrites
        while True:
            now = time.monotonic()
            if self.rewrites != seen or serving_endpoints(self.backend, self.namespace, self.pod):
                seen, quiet_since = self.rewrites, None
            elif quiet_since is None:
                quiet_since = now
            ok = quiet_since is not None and now - quiet_since >= PROXY_SYNC_S
            if ok and let_go:
                if self.rewritten is not None:
                    ok = now + LET_GO_S < self.rewritten + KUBELET_SYNC_S - 0.5
                else:  # a whole tick passed without a rewrite: this kubelet does not fight
                    ok = now - self.marked > KUBELET_SYNC_S + 0.5
            if ok:
                return True
            if now > end:
                return False
            time.sleep(0.1)

    def stop(self, *, ready_again: bool = False) -> None:
        """Stop holding; ``ready_again`` (the undo) marks the pod Ready, if it is still there."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if ready_again:
            with suppress(NotFoundError):
                set_ready(self.backend, self.namespace, self.pod, True)
