"""``podhop doctor --kubeconfig K``: can pods migrate on this cluster? A line per check, each "no" with a fix.

Why: on a cluster podhop did not make (EKS), a migration depends on facts spread
over the control plane, RBAC and every node — the API server's version, the
user's permissions, the kubelet's checkpoint API and who may call it, the
runtime's version and its restore setting, CRIU on the node — and each fails
late, as a 403 or a CRIU error deep in a migration. The doctor asks each of
them once, changes nothing it does not undo, and says what to change:

- ``api server``: ``/version`` >= 1.30 (the kubelet's checkpoint API is on by default from 1.30).
- ``rbac``: a SelfSubjectAccessReview for every verb of ``podhop kube manifests``' user roles
  (parsed from :func:`podhop.backends.kubernetes.install.user_rbac_yaml`, the one list), naming
  each permission missing.
- ``nodes``, ``runtime``: each node Ready, its kubelet >= 1.30, its runtime containerd 2.1–2.3 (the
  only ones that restore a checkpoint image in CreateContainer; from ``nodeInfo``).
- ``agent``: podhop's node agent Ready on each node and answering through the pod proxy.
- ``restore``: containerd's CRI plugin's own configuration, through the agent (``GET /runtime``).
- ``checkpoint API``: an authorised probe on every node: a checkpoint request for a pod that does not
  exist. It goes the whole way — the user's ``nodes/proxy``, the API server's kubelet client's
  ``nodes/checkpoint`` at the kubelet (kubernetes #126232), the ContainerCheckpoint route — and the
  kubelet's "pod does not exist" proves all three while dumping nothing and leaving nothing behind.
- ``checkpoint``, ``criu``: a real dump of a throwaway pod per node (the agent's own image, started as
  ``podhop-agent --idle``: it is on every node already), through the same kubelet API a migration
  uses. Only a real dump shows that containerd's runc finds a working CRIU, and its ``dump.log``
  (read by the agent) names the CRIU version that actually ran. The archive and the pod are removed;
  nodes without an agent are not dumped, since nothing could remove their archive.

Each check becomes one line however many nodes there are: nodes that agree share a detail, the
failing ones are named. No check raises; bad input (no kubeconfig, unknown context) does, as one line.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podhop.backends.kubernetes import agent as agents
from podhop.backends.kubernetes import api, install, kubelet
from podhop.backends.kubernetes.backend import KubernetesBackend
from podhop.backends.kubernetes.verdicts import (
    MIN_KUBERNETES,
    Permission,
    Verdict,
    checkpoint_fix,
    criu_verdict,
    no,
    ok,
    probe_verdict,
    required_permissions,
    restore_verdict,
    runtime_verdict,
    server_verdict,
    version_tuple,
)
from podhop.doctor import MIGRATION, Check
from podhop.errors import NotFoundError, PodhopError

PROBE_LABEL = "podhop.io/doctor"
PROBE_CONTAINER = "probe"
ABSENT_POD = "podhop-doctor-absent"
WORKERS = 4  # the client's connection pool holds 4 per host: more would only queue


# --------------------------------------------------------------------------- RBAC


def _allowed(backend: KubernetesBackend, perm: Permission) -> bool:
    from kubernetes import client as k8s

    attrs = k8s.V1ResourceAttributes(
        verb=perm.verb,
        group=perm.group,
        resource=perm.resource,
        subresource=perm.subresource or None,
        namespace=perm.namespace or None,
        name=perm.name or None,
    )
    review = k8s.V1SelfSubjectAccessReview(spec=k8s.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs))
    answer = api.call(
        f"access review of {perm}",
        k8s.AuthorizationV1Api(backend.api).create_self_subject_access_review,
        review,
    )
    return bool(answer.status and answer.status.allowed)


def check_rbac(backend: KubernetesBackend) -> Verdict:
    perms = required_permissions()
    with ThreadPoolExecutor(WORKERS) as pool:
        allowed = list(pool.map(lambda p: _allowed(backend, p), perms))
    missing = [str(p) for p, ok in zip(perms, allowed, strict=True) if not ok]
    if not missing:
        return ok(f"all {len(perms)} permissions of {install.USER_ROLE} granted")
    return no(
        f"missing {len(missing)} of {len(perms)}: {', '.join(missing)}",
        f"bind the {install.USER_ROLE} ClusterRole and Role to this user "
        f"(`podhop kube manifests` binds them to group {install.USER_GROUP})",
    )


# --------------------------------------------------------------------------- per node


def aggregate(name: str, verdicts: dict[str, Verdict]) -> Check:
    """One line for a check made on every node: the failing nodes named, agreeing nodes grouped."""
    if not verdicts:
        return Check(name, False, "no nodes", "add nodes to the cluster", MIGRATION)
    groups: dict[tuple[bool, str], list[str]] = {}
    for node in sorted(verdicts):
        v = verdicts[node]
        groups.setdefault((v.ok, v.detail), []).append(node)
    ok = all(v.ok for v in verdicts.values())
    if ok and len(groups) == 1:
        n = len(verdicts)
        detail = f"{next(iter(groups))[1]} on {'the only node' if n == 1 else f'all {n} nodes'}"
    else:
        parts = [f"{', '.join(nodes)}: {detail}" for (good, detail), nodes in sorted(groups.items())]
        detail = "; ".join(parts)
    fixes = list(dict.fromkeys(v.fix for v in verdicts.values() if not v.ok and v.fix))
    return Check(name, ok, detail, None if ok else "; ".join(fixes), MIGRATION)


def _node_verdict(node: dict[str, Any]) -> Verdict:
    status = node.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    kubelet_version = str((status.get("nodeInfo") or {}).get("kubeletVersion") or "")
    v = version_tuple(kubelet_version)
    if not ready:
        return no(f"not Ready (kubelet {kubelet_version})", "see `kubectl describe node`")
    if v is None or v[:2] < MIN_KUBERNETES:
        return no(
            f"kubelet {kubelet_version}: no checkpoint API by default before 1.30",
            "upgrade the node group to Kubernetes >= 1.30",
        )
    return ok(f"Ready, kubelet {kubelet_version}")


def _install_fix(kubeconfig: Path) -> str:
    return f"podhop kube install --kubeconfig {kubeconfig} --image REF (docs/eks.md)"


def _probe_pod(name: str, node: str, image: str, run: str) -> dict[str, Any]:
    """The throwaway pod the kubelet checkpoints: the agent's image (already on every node), idling.

    root (uid 0) with every capability dropped: CRIU, which runs as root on the node, can dump a
    process of another uid only with CAP_SYS_RESOURCE, which some nodes lack — podhop's own kind among
    them — and the pod itself needs no privilege. ``nodeName`` pins it without the scheduler, so
    cordoned and tainted nodes are checked too."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {PROBE_LABEL: run, "app.kubernetes.io/managed-by": "podhop"},
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": PROBE_CONTAINER,
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/podhop-agent", "--idle"],
                    "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}, "limits": {"memory": "64Mi"}},
                    "securityContext": {
                        "runAsUser": 0,
                        "runAsGroup": 0,
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                }
            ],
        },
    }


@dataclass
class NodeReport:
    probe: Verdict
    checkpoint: Verdict
    criu: Verdict


class _Prober:
    """The checkpoint checks of one run: the probe on every node, the throwaway dump where an agent is."""

    def __init__(self, backend: KubernetesBackend, namespace: str, timeout: float) -> None:
        self.backend, self.namespace, self.timeout = backend, namespace, timeout
        self.run = secrets.token_hex(3)

    def probe(self, node: str) -> Verdict:
        try:
            status, raw = kubelet.post_checkpoint(
                self.backend, node, self.namespace, ABSENT_POD, PROBE_CONTAINER, 10
            )
        except PodhopError as exc:
            return no(str(exc), exc.hint or "is the cluster up?")
        return probe_verdict(status, raw.decode(errors="replace"))

    def dump(
        self, node: str, index: int, agent: agents.Agent | None, image: str | None
    ) -> tuple[Verdict, Verdict]:
        """(checkpoint, criu) of one node's throwaway pod; the pod and its archive are removed."""
        if agent is None or image is None:
            skipped = no("not run: no Ready agent on the node to read and remove the archive", "")
            return skipped, skipped
        name = f"podhop-doctor-{self.run}-{index}"
        archives: list[str] = []
        try:
            checkpoint, criu = self._dump(node, name, agent, image, archives)
        except PodhopError as exc:
            message = str(exc)
            checkpoint = no(message, exc.hint or checkpoint_fix(message))
            criu = no("not known: the dump failed", checkpoint_fix(message))
        finally:
            self._delete(name)
        for archive in archives:
            try:
                agent.request("DELETE", f"checkpoints/{urllib.parse.quote(archive, safe='')}", timeout=30)
            except PodhopError as exc:
                checkpoint = no(
                    f"the throwaway pod's archive {archive} is left on the node: {exc}",
                    "delete it from the kubelet's checkpoint directory (/var/lib/kubelet/checkpoints)",
                )
        return checkpoint, criu

    def _dump(
        self, node: str, name: str, agent: agents.Agent, image: str, archives: list[str]
    ) -> tuple[Verdict, Verdict]:
        api.call(
            f"creating {self.namespace}/{name}",
            self.backend.core.create_namespaced_pod,
            self.namespace,
            _probe_pod(name, node, image, self.run),
        )
        self._wait_running(name)
        status, raw = kubelet.post_checkpoint(
            self.backend, node, self.namespace, name, PROBE_CONTAINER, int(self.timeout)
        )
        text = raw.decode(errors="replace").strip()
        if status >= 400:
            fix = checkpoint_fix(text)
            return no(f"HTTP {status}: {text[:300]}", fix), no("not known: the dump failed", fix)
        archives += [Path(p).name for p in kubelet.archive_paths(f"checkpoint of {name}", raw)]
        dumped = ok("a throwaway pod dumped through the kubelet's API")
        try:
            found = agent.request(
                "GET", f"checkpoints/{urllib.parse.quote(archives[0], safe='')}/criu", timeout=30
            )
        except agents.AgentNotFound as exc:
            fix = "see the agent's log (kubectl -n podhop-system logs)"
            if "no such endpoint" in str(exc):
                fix = "reinstall the agent: this one cannot read a dump's log (podhop kube install)"
            return dumped, no(str(exc), fix)
        return dumped, criu_verdict(str(found.get("criu") or ""))

    def _wait_running(self, name: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            pod = api.plain(
                self.backend.api,
                api.call(f"pod {name}", self.backend.core.read_namespaced_pod, name, self.namespace),
            )
            status = pod.get("status") or {}
            for c in status.get("containerStatuses") or []:
                state = c.get("state") or {}
                if c.get("ready") and "running" in state:
                    return
                if "terminated" in state or (state.get("waiting") or {}).get("reason") in (
                    "ErrImagePull",
                    "ImagePullBackOff",
                    "CreateContainerError",
                    "CrashLoopBackOff",
                ):
                    why = state.get("terminated") or state.get("waiting") or {}
                    message = str(why.get("message") or "")[:200]
                    raise PodhopError(
                        f"the throwaway pod did not run: {why.get('reason')}: {message}",
                        hint="the agent's image must be pullable on the node and have `--idle` "
                        "(reinstall the agent: podhop kube install)",
                    )
            if status.get("phase") in ("Failed", "Succeeded"):
                raise PodhopError(f"the throwaway pod ended: {status.get('phase')}")
            if time.monotonic() > deadline:
                raise PodhopError(
                    f"the throwaway pod was not running after {self.timeout:.0f} s "
                    f"({status.get('phase')}: {status.get('reason') or ''})"
                )
            time.sleep(0.5)

    def _delete(self, name: str) -> None:
        try:
            api.call(
                f"deleting {name}",
                self.backend.core.delete_namespaced_pod,
                name,
                self.namespace,
                grace_period_seconds=0,
            )
        except NotFoundError:
            return
        except PodhopError:
            pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                api.call(f"pod {name}", self.backend.core.read_namespaced_pod, name, self.namespace)
            except NotFoundError:
                return
            except PodhopError:
                return
            time.sleep(0.5)

    def leftovers(self) -> list[str]:
        """Pods of this run still there (after an interruption): deleted, and named."""
        try:
            listed = api.call(
                "listing the doctor's pods",
                self.backend.core.list_namespaced_pod,
                self.namespace,
                label_selector=f"{PROBE_LABEL}={self.run}",
            )
        except PodhopError:
            return []
        names = [str(api.plain(self.backend.api, p)["metadata"]["name"]) for p in listed.items]
        for name in names:
            self._delete(name)
        return names


def _agents_with_image(backend: KubernetesBackend) -> tuple[dict[str, agents.Agent], str | None, str | None]:
    """The Ready agents by node, the agent's image, or why there are none."""
    try:
        ready = agents.agents(backend)
    except PodhopError as exc:
        return {}, None, str(exc)
    image = None
    for a in ready.values():  # the DaemonSet's image, from any of its pods
        pod = api.call(f"agent pod {a.pod}", backend.core.read_namespaced_pod, a.pod, agents.NAMESPACE)
        image = str(api.plain(backend.api, pod)["spec"]["containers"][0]["image"])
        break
    return ready, image, None


def _agent_verdict(a: agents.Agent) -> Verdict:
    try:
        health = a.request("GET", "healthz", timeout=15)
    except PodhopError as exc:
        return no(
            f"not answering through the pod proxy: {exc}",
            f"the API server must reach TCP {agents.PORT} on the node's address (docs/eks.md)",
        )
    return ok(f"Ready and answering (containerd {health.get('containerd')})")


def _restore(a: agents.Agent) -> Verdict:
    try:
        info = a.request("GET", "runtime", timeout=15)
    except agents.AgentNotFound:
        return no(
            "the agent has no runtime endpoint (an older agent)", "reinstall the agent: podhop kube install"
        )
    except PodhopError as exc:
        return no(f"the agent could not tell: {exc}", "see the agent's log (kubectl -n podhop-system logs)")
    return restore_verdict(info)


def run_checks(
    kubeconfig: Path,
    context: str | None = None,
    *,
    namespace: str = "default",
    timeout: float = 120.0,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[Check]:
    """Every cluster check, in a stable order. Raises only for a kubeconfig that cannot be used."""
    backend = KubernetesBackend.connect(kubeconfig, context=context)
    checks: list[Check] = []

    def add(name: str, verdict: Verdict) -> None:
        checks.append(Check(name, verdict.ok, verdict.detail, verdict.fix, MIGRATION))

    progress("api server")
    try:
        from kubernetes import client as k8s

        code = api.call("reading the server version", k8s.VersionApi(backend.api).get_code)
        server = backend.api.configuration.host
        add("api server", server_verdict(str(code.git_version), f"{server} ({backend.name})"))
    except PodhopError as exc:
        add("api server", no(str(exc), exc.hint or "check the kubeconfig's server and credentials"))
        return checks  # nothing else can answer
    progress("rbac")
    add("rbac", _guard(lambda: check_rbac(backend)))

    progress("nodes")
    try:
        nodes = backend._nodes_raw()
    except PodhopError as exc:
        add("nodes", no(str(exc), exc.hint or "the user needs list on nodes (see the rbac line)"))
        return checks
    names = [n["metadata"]["name"] for n in nodes]
    checks.append(aggregate("nodes", {n["metadata"]["name"]: _node_verdict(n) for n in nodes}))
    checks.append(
        aggregate(
            "runtime",
            {
                n["metadata"]["name"]: runtime_verdict(
                    str(((n.get("status") or {}).get("nodeInfo") or {}).get("containerRuntimeVersion") or "")
                )
                for n in nodes
            },
        )
    )

    progress("agents")
    install_fix = _install_fix(kubeconfig)
    ready, image, why = _agents_with_image(backend)
    missing = no(f"no Ready agent ({why})" if why else "no Ready agent", install_fix)
    prober = _Prober(backend, namespace, timeout)
    index = {n: i for i, n in enumerate(names, 1)}
    with ThreadPoolExecutor(WORKERS) as pool:

        def each(fn: Callable[[str], Any]) -> dict[str, Any]:
            return dict(zip(names, pool.map(fn, names), strict=True))

        health = each(lambda n: _agent_verdict(ready[n]) if n in ready else missing)
        answering = {n: ready[n] for n in names if health[n].ok}
        checks.append(aggregate("agent", health))
        restore = each(lambda n: _restore(answering[n]) if n in answering else _skipped(install_fix))
        checks.append(aggregate("restore", restore))
        progress("checkpoint API")
        checks.append(aggregate("checkpoint API", each(prober.probe)))
        progress("checkpoint")
        try:
            dumps = each(lambda n: prober.dump(n, index[n], answering.get(n), image))
        finally:
            left = prober.leftovers()
    checks.append(aggregate("checkpoint", {n: _fill(d[0], install_fix) for n, d in dumps.items()}))
    checks.append(aggregate("criu", {n: _fill(d[1], install_fix) for n, d in dumps.items()}))
    if left:
        checks.append(Check("cleanup", True, f"removed leftover pods {', '.join(left)}", None, MIGRATION))
    return checks


def _skipped(fix: str) -> Verdict:
    return no("not known: no agent answering on the node", fix)


def _fill(v: Verdict, fix: str) -> Verdict:
    return v if v.ok or v.fix else Verdict(False, v.detail, fix)


def _guard(probe: Callable[[], Verdict]) -> Verdict:
    try:
        return probe()
    except PodhopError as exc:
        return no(str(exc), exc.hint or "see the message")
