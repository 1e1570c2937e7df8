"""One pod's migration on a Kubernetes cluster: kubelet checkpoints, node agents, a pinned restored pod.

Why this shape: Kubernetes has a checkpoint API (the kubelet's, through the
node proxy) but no restore API; a runtime restores when a container's image
is a checkpoint image. So, per container: ``dump`` asks the source kubelet
for a checkpoint; ``transfer`` has the source node's agent stream the archive
to the target node's agent, which makes it a checkpoint image in that node's
containerd (no registry needed); ``restore`` creates the restored pod pinned
with ``nodeSelector: kubernetes.io/hostname`` as the seed did, with the
source's labels — so its Service selects it and it serves beside the source.

Owned pods (a Deployment's, through its ReplicaSet): the restored pod is
created without the ReplicaSet's ``pod-template-hash`` label, so the
ReplicaSet does not count it while it comes up. ``switch`` then marks the
source with the lowest ``controller.kubernetes.io/pod-deletion-cost``, gives
the restored pod the label — the ReplicaSet adopts it (its owner reference) —
and deletes the source itself: the ReplicaSet, seeing the label change first
(one watch, in order), counts the restored pod and not the terminating
source, and should it act before the deletion lands, it deletes the cheapest,
the same source. The Deployment keeps exactly its replica count, the restored
pod among them. podhop deletes rather than waits for the controller so that
the source goes at once, whatever the controller's delay on a busy cluster
(the let-go window of :mod:`~podhop.backends.kubernetes.endpoints` is short).
A pod nobody owns is simply deleted after the switch.

``cold`` pauses the source's containers (through the agent) before the
checkpoint, and after the switch kills them while still frozen, so the
source never answers again; ``clone`` leaves it running until the restored
pod is ready, takes it out of its Services (marked not Ready until the
EndpointSlices drop it, and kept so against its kubelet's rewrites:
:mod:`~podhop.backends.kubernetes.endpoints`) and only then lets it go, gracefully.
When other pods serve its Services, the clone takes it out already in
``detach``, before the checkpoint freezes it.
Post-copy is refused (no runtime restores lazily).

Undo, phase by phase: ``prepare``'s receives are cancelled (their listeners
closed, any image they imported removed), ``freeze``'s tasks resumed, ``dump``'s
archives deleted on the source node, ``restore``'s pod deleted, ``switch``'s
deletion cost and not-Ready mark taken back. The restored container keeps its
own snapshot, so the checkpoint image is removed once the migration is done.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from podhop.backends.base import Deadline, Pod
from podhop.backends.kubernetes import agent as agents
from podhop.backends.kubernetes import api, endpoints
from podhop.backends.kubernetes.kubelet import kubelet_checkpoint
from podhop.errors import NotFoundError, PodhopError
from podhop.migrate.plan import MigrationError, MigrationPlan, Options, Strategy
from podhop.migrate.report import MoveFigures

if TYPE_CHECKING:
    from podhop.backends.kubernetes.backend import KubernetesBackend

HOSTNAME = "kubernetes.io/hostname"
TEMPLATE_HASH = "pod-template-hash"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
MIGRATED_FROM = "podhop.io/migrated-from"
BASE_PULL = "podhop-base-"  # the restored pod's init containers that pull its base images
CHECKPOINT_TIMEOUT_S = 120


class KubeMigration:
    """The :class:`~podhop.backends.base.MigrationDriver` of the Kubernetes backend."""

    def __init__(self, backend: KubernetesBackend, plan: MigrationPlan, pod: Pod, options: Options) -> None:
        self.backend, self.plan, self.pod, self.options = backend, plan, pod, options
        self.id = secrets.token_hex(3)
        raw = api.call(
            f"pod {pod.namespace}/{pod.name}", backend.core.read_namespaced_pod, pod.name, pod.namespace
        )
        self.raw: dict[str, Any] = api.plain(backend.api, raw)
        self.owned = pod.owner_kind == "ReplicaSet" and TEMPLATE_HASH in pod.labels
        self.restored_name = _new_name(pod, self.owned)
        self.restored_ip = ""
        self.containers = [c["name"] for c in self.raw["spec"]["containers"]]
        self.ids = {
            s["name"]: str(s.get("containerID", "")).split("://", 1)[-1]
            for s in self.raw.get("status", {}).get("containerStatuses") or []
        }
        self.images = {c: f"{agents.CHECKPOINT_REPO}/{pod.name}-{c}:{self.id}" for c in self.containers}
        self.archives: dict[str, str] = {}
        self.receives: dict[str, tuple[str, int, str]] = {}  # container -> (id, port, secret)
        self.moves = {c: MoveFigures(c) for c in self.containers}
        self.src: agents.Agent | None = None
        self.dst: agents.Agent | None = None
        self.frozen: list[str] = []
        self.holdout: endpoints.Holdout | None = None  # a clone's source kept out of its Services

    # ---------------------------------------------------------------- what the engine reads
    @property
    def new_ip(self) -> str:
        return self.restored_ip

    @property
    def new_pod(self) -> str:
        return self.restored_name

    def figures(self) -> list[MoveFigures]:
        return list(self.moves.values())

    def probe_target(self) -> Callable[[], tuple[str, int]] | None:
        """The pod's Service, where this machine reaches it (``Backend.service_address``)."""
        for s in self.backend.services(self.pod.namespace):
            if s.selects(self.pod) and s.ports:
                address = self.backend.service_address(s)
                return lambda: address
        return None

    # ---------------------------------------------------------------- phases up to the commit
    def prepare(self, undo: ExitStack, deadline: Deadline) -> None:
        found = agents.agents(self.backend)
        for node in (self.plan.source, self.plan.target):
            if node not in found:
                raise MigrationError(
                    "prepare", f"podhop's node agent is not ready on {node}", hint=agents._HINT
                )
        self.src, self.dst = found[self.plan.source], found[self.plan.target]
        source_ip = self._node_ip(self.plan.source)
        for c in self.containers:
            secret = secrets.token_hex(32)
            status = self.dst.request(
                "POST",
                "receive",
                {
                    "from": source_ip,
                    "secret": secret,
                    "container": c,
                    "image": self.images[c],
                    "timeout_s": int(deadline("prepare")),
                },
            )
            self.receives[c] = (str(status["id"]), int(status["port"]), secret)
            undo.callback(self._abandon_receive, c)

    def freeze(self, undo: ExitStack, deadline: Deadline) -> None:
        assert self.src is not None
        for c in self.containers:
            self.src.request("POST", f"tasks/{self.ids[c]}/pause", {})
            self.frozen.append(c)
            undo.callback(self._resume, c)

    def detach(self, undo: ExitStack, deadline: Deadline) -> None:
        """Clone, when other pods serve its Services: the source out of them before the checkpoint
        freezes it, so that no new connection waits through the freeze."""
        self._hold_out(undo)
        assert self.holdout is not None
        if not self.holdout.wait_out(min(15.0, deadline("detach"))):
            raise MigrationError("detach", f"the Services kept sending {self.pod.name} connections")

    def dump(self, undo: ExitStack, deadline: Deadline) -> None:
        for c in self.containers:
            timeout = min(CHECKPOINT_TIMEOUT_S, int(deadline("dump")))
            items = kubelet_checkpoint(
                self.backend, self.plan.source, self.pod.namespace, self.pod.name, c, timeout
            )
            self.archives[c] = PurePosixPath(items[0]).name
            undo.callback(self._remove_archive, c)

    def transfer(self, undo: ExitStack, deadline: Deadline) -> None:
        assert self.src is not None and self.dst is not None
        target_ip = self._node_ip(self.plan.target)
        for c in self.containers:
            receive_id, port, secret = self.receives[c]
            sent = self.src.request(
                "POST",
                "send",
                {"archive": self.archives[c], "peer": f"{target_ip}:{port}", "secret": secret},
                timeout=deadline("transfer"),
            )
            status = self.dst.wait_received(receive_id, deadline("transfer"))
            self.moves[c].transferred_bytes = int(sent.get("bytes", 0))
            self.moves[c].image_bytes = int(status.get("bytes", 0))

    def restore(self, undo: ExitStack, deadline: Deadline) -> None:
        body = self._restored_pod()
        api.call(
            f"creating {self.restored_name} on {self.plan.target}",
            self.backend.core.create_namespaced_pod,
            self.pod.namespace,
            body,
        )
        undo.callback(self._delete_pod, self.restored_name, 0)
        end = time.monotonic() + deadline("restore")
        while True:
            pod = self.backend.pod(self.pod.namespace, self.restored_name)
            if pod.ready:
                self.restored_ip = pod.ip
                return
            reason = self._waiting_reason()
            if reason or time.monotonic() > end:
                raise MigrationError(
                    "restore",
                    f"{self.restored_name} on {self.plan.target} did not start: {reason or 'timed out'}",
                )
            time.sleep(0.1)

    def switch(self, undo: ExitStack, deadline: Deadline) -> None:
        """The restored pod takes the source's place (see the module doc for owned pods)."""
        core, ns = self.backend.core, self.pod.namespace
        if self.plan.strategy is Strategy.CLONE:  # out of its Services before it is stopped
            self._hold_out(undo)
            assert self.holdout is not None
            if not self.holdout.wait_out(min(25.0, deadline("switch")), let_go=True):
                raise MigrationError("switch", f"the Services kept sending {self.pod.name} connections")
        if self.owned:
            api.call(
                f"marking {self.pod.name} to go",
                core.patch_namespaced_pod,
                self.pod.name,
                ns,
                {"metadata": {"annotations": {DELETION_COST: "-2147483648"}}},
            )
            undo.callback(self._unmark_source)
            labels = {TEMPLATE_HASH: self.pod.labels[TEMPLATE_HASH]}
            api.call(
                f"handing {self.restored_name} to its ReplicaSet",
                core.patch_namespaced_pod,
                self.restored_name,
                ns,
                {"metadata": {"labels": labels}},
            )
        grace = 0 if self.plan.strategy is Strategy.COLD else int(self.options.drain_s)
        self._delete_pod(self.pod.name, grace)

    def discard(self) -> None:
        for c in self.containers:
            with suppress(PodhopError):
                self._remove_archive(c)

    # ---------------------------------------------------------------- after the commit
    def pull(self, deadline: Deadline) -> list[str]:
        return []

    def drain(self, deadline: Deadline) -> list[str]:
        """Clone: the source finishes in-flight requests (its grace period) and goes."""
        try:
            return self._wait_gone(self.options.drain_s + 30)
        finally:
            self._release()

    def cleanup(self, deadline: Deadline) -> list[str]:
        self._release()
        warnings = []
        if self.plan.strategy is Strategy.COLD:
            for c in list(self.frozen):  # killed while frozen: it never runs again
                try:
                    assert self.src is not None
                    self.src.request("POST", f"tasks/{self.ids[c]}/kill", {})  # thawed by the agent
                except PodhopError as exc:
                    warnings.append(f"stopping the frozen source {c}: {exc}")
            self.frozen.clear()
            warnings += self._wait_gone(60)
        for c in self.containers:
            for step in (self._remove_archive, self._remove_image):
                try:
                    step(c)
                except PodhopError as exc:
                    warnings.append(f"cleaning up after {c}: {exc}")
        return warnings

    # ---------------------------------------------------------------- pieces
    def _node_ip(self, node: str) -> str:
        for n in self.backend.nodes():
            if n.name == node:
                return n.ip
        raise NotFoundError(f"node {node!r} not found")

    def _restored_pod(self) -> dict[str, Any]:
        spec = copy.deepcopy(self.raw["spec"])
        for key in ("nodeName", "hostname", "subdomain"):
            spec.pop(key, None)
        spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), HOSTNAME: self.plan.target}
        # A container restored before runs a checkpoint image whose base its status names.
        running = {
            s["name"]: s.get("image", "") for s in self.raw.get("status", {}).get("containerStatuses") or []
        }
        base_images = []
        for c in spec["containers"]:
            image = c["image"]
            if image.startswith(agents.CHECKPOINT_REPO + "/") and running.get(c["name"]):
                image = running[c["name"]]
            base_images.append(image)
            c["image"] = self.images[c["name"]]
            c["imagePullPolicy"] = "Never"  # the agent put it there
        # containerd restores on top of the checkpoint's base image and pulls it if missing, past the
        # registry mirror; pulling it first through the kubelet (CRI, mirror honoured) avoids that.
        spec["initContainers"] = [
            {
                "name": f"{BASE_PULL}{i}",
                "image": image,
                "command": ["true"],
                "imagePullPolicy": "IfNotPresent",
            }
            for i, image in enumerate(dict.fromkeys(base_images))
        ] + [  # a pod restored before already has podhop's: those of the user stay
            c for c in spec.get("initContainers") or [] if not str(c.get("name", "")).startswith(BASE_PULL)
        ]
        labels = dict(self.pod.labels)
        if self.owned:
            labels.pop(TEMPLATE_HASH)  # not the ReplicaSet's until the switch
        meta = {
            "name": self.restored_name,
            "namespace": self.pod.namespace,
            "labels": labels,
            "annotations": {MIGRATED_FROM: self.pod.name},
        }
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}

    def _waiting_reason(self) -> str:
        raw = api.plain(
            self.backend.api,
            api.call(
                "restored pod", self.backend.core.read_namespaced_pod, self.restored_name, self.pod.namespace
            ),
        )
        status = raw.get("status") or {}
        for s in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            waiting = (s.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in (
                "ErrImagePull",
                "ImagePullBackOff",
                "ErrImageNeverPull",
                "CreateContainerError",
                "CrashLoopBackOff",
                "RunContainerError",
            ):
                return f"{s.get('name')}: {waiting.get('reason')}: {waiting.get('message', '')}"[:300]
        return ""

    def _hold_out(self, undo: ExitStack) -> None:
        """The source out of its Services from now on (once; the undo puts it back)."""
        if self.holdout is None:
            self.holdout = endpoints.Holdout(self.backend, self.pod.namespace, self.pod.name).start()
            undo.callback(self._release, ready_again=True)

    def _release(self, *, ready_again: bool = False) -> None:
        if self.holdout is not None:
            self.holdout.stop(ready_again=ready_again)
            self.holdout = None

    def _wait_gone(self, timeout: float) -> list[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                self.backend.pod(self.pod.namespace, self.pod.name)
            except NotFoundError:
                return []
            time.sleep(0.2)
        return [f"the source pod {self.pod.name} was still there after {timeout:.0f} s"]

    def _delete_pod(self, name: str, grace: int) -> None:
        with suppress(NotFoundError):
            api.call(
                f"deleting pod {name}",
                self.backend.core.delete_namespaced_pod,
                name,
                self.pod.namespace,
                grace_period_seconds=grace,
            )

    def _unmark_source(self) -> None:
        with suppress(NotFoundError):
            api.call(
                f"unmarking {self.pod.name}",
                self.backend.core.patch_namespaced_pod,
                self.pod.name,
                self.pod.namespace,
                {"metadata": {"annotations": {DELETION_COST: None}}},
            )

    def _resume(self, c: str) -> None:
        if self.src is not None and c in self.frozen:
            self.src.request("POST", f"tasks/{self.ids[c]}/resume", {})
            self.frozen.remove(c)

    def _remove_archive(self, c: str) -> None:
        name = self.archives.pop(c, None)
        if name and self.src is not None:
            self.src.request("DELETE", f"checkpoints/{name}")

    def _abandon_receive(self, c: str) -> None:
        """Undo of prepare: close the target's listener, let a running import end, remove its image."""
        if self.dst is None or c not in self.receives:
            return
        receive_id = self.receives[c][0]
        with suppress(PodhopError):  # best effort: an unwinding must not hide why it unwinds
            self.dst.request("DELETE", f"receive/{receive_id}")
            end = time.monotonic() + 30
            while time.monotonic() < end:
                if self.dst.request("GET", f"receive/{receive_id}").get("state") in ("done", "failed"):
                    break
                time.sleep(0.1)
        with suppress(PodhopError):
            self._remove_image(c)

    def _remove_image(self, c: str) -> None:
        if self.dst is not None:
            import urllib.parse

            with suppress(NotFoundError):
                self.dst.request("DELETE", f"images/{urllib.parse.quote(self.images[c], safe='')}")


def _new_name(pod: Pod, owned: bool) -> str:
    """A fresh name: the ReplicaSet's style for its pods (``<rs>-<5 chars>``), else ``<pod>-m<4 hex>``."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    if owned and pod.owner_name:
        return f"{pod.owner_name}-{''.join(secrets.choice(alphabet) for _ in range(5))}"
    return f"{pod.name[:57]}-m{secrets.token_hex(2)}"
