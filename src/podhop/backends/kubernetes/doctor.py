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

import re
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
from podhop.doctor import MIGRATION, Check
from podhop.errors import NotFoundError, PodhopError

MIN_KUBERNETES = (1, 30)
MIN_CRIU = (4, 2)
#: containerd lines that restore a checkpoint image in CreateContainer: from 2.1 (always on) through
#: 2.3 (behind ``enable_experimental_restore_via_create``); 2.4 removed it.
RESTORE_FROM, RESTORE_UNTIL = (2, 1), (2, 4)
PROBE_LABEL = "podhop.io/doctor"
PROBE_CONTAINER = "probe"
ABSENT_POD = "podhop-doctor-absent"
WORKERS = 4  # the client's connection pool holds 4 per host: more would only queue


@dataclass(frozen=True)
class Verdict:
    """One node's (or the cluster's) answer to one check."""

    ok: bool
    detail: str
    fix: str | None = None


def _ok(detail: str) -> Verdict:
    return Verdict(True, detail)


def _no(detail: str, fix: str) -> Verdict:
    return Verdict(False, detail, fix)


# --------------------------------------------------------------------------- pure verdicts


def version_tuple(text: str) -> tuple[int, ...] | None:
    """(major, minor[, patch]) of ``v1.30.2-eks-1552ad0``, ``containerd://2.3.7``, ``4.2.1``."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return None
    return tuple(int(g) for g in match.groups() if g is not None)


def _dotted(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def server_verdict(git_version: str, where: str) -> Verdict:
    v = version_tuple(git_version)
    if v is None:
        return _no(
            f"unrecognised version {git_version!r} at {where}", "check that this is a Kubernetes API server"
        )
    if v[:2] < MIN_KUBERNETES:
        return _no(
            f"{git_version} at {where}: the kubelet's checkpoint API is on by default from 1.30",
            "upgrade the cluster to Kubernetes >= 1.30 (eksctl upgrade cluster --version ...)",
        )
    return _ok(f"{git_version} at {where}")


def runtime_verdict(runtime: str) -> Verdict:
    """``nodeInfo.containerRuntimeVersion``: containerd 2.1–2.3, the lines that restore a checkpoint image."""
    name, _, version = runtime.partition("://")
    if name != "containerd":
        return _no(
            f"{runtime or 'no runtime reported'}: podhop's node agent drives containerd only",
            "use nodes whose runtime is containerd 2.1–2.3 (EKS: Amazon Linux 2023 or Bottlerocket AMIs)",
        )
    v = version_tuple(version)
    if v is None:
        return _no(
            f"containerd {version!r}: unrecognised version", "report the node's `containerd --version`"
        )
    if v[:2] < RESTORE_FROM:
        return _no(
            f"containerd {version}: cannot restore a checkpoint image (restore-via-create came in 2.1)",
            "use nodes with containerd 2.1–2.3 (a newer AMI release)",
        )
    if v[:2] >= RESTORE_UNTIL:
        return _no(
            f"containerd {version}: restore-via-create was removed in 2.4",
            "use nodes with containerd 2.1–2.3",
        )
    return _ok(f"containerd {version}")


_RESTORE_FIX = (
    'add to containerd\'s config `[plugins."io.containerd.cri.v1.runtime"] '
    "enable_experimental_restore_via_create = true` and restart containerd "
    "(examples/eks/cluster.yaml's NodeConfig does it at boot)"
)


def restore_verdict(info: dict[str, Any]) -> Verdict:
    """The agent's ``GET /runtime``: containerd's version and its CRI plugin's settings."""
    version = str(info.get("containerd") or "")
    v = version_tuple(version)
    cri = info.get("cri")
    if not isinstance(cri, dict):
        return _no(
            f"containerd {version}: its CRI status cannot be read: {info.get('criError') or 'no answer'}",
            "check containerd's CRI plugin on the node (crictl info)",
        )
    if cri.get("enableCRIU") is False:
        return _no(
            f"containerd {version}: enable_criu = false in its CRI config",
            "remove `enable_criu = false` from containerd's config and restart containerd",
        )
    setting = cri.get("enableExperimentalRestoreViaCreate")
    if setting is True:
        return _ok(f"enable_experimental_restore_via_create = true (containerd {version})")
    if setting is False:
        return _no(f"containerd {version}: enable_experimental_restore_via_create is false", _RESTORE_FIX)
    if v is not None and RESTORE_FROM <= v[:2] < (2, 3):
        return _ok(f"built in (containerd {version} has no setting for it)")
    return _no(
        f"containerd {version}: no restore-via-create (it exists in containerd 2.1–2.3)",
        "use nodes with containerd 2.1–2.3",
    )


def criu_verdict(version: str) -> Verdict:
    v = version_tuple(version)
    if v is None:
        return _no(f"unrecognised CRIU version {version!r}", "run `criu --version` on the node")
    if v[:2] < MIN_CRIU:
        return _no(
            f"CRIU {version}: podhop needs >= 4.2 (older ones fail on kernels >= 6.16)",
            "install CRIU >= 4.2 on the nodes where containerd's runc finds it (examples/eks/cluster.yaml)",
        )
    return _ok(f"CRIU {version} (the dump's own log)")


def probe_verdict(status: int, body: str) -> Verdict:
    """The kubelet's answer to a checkpoint of a pod that does not exist."""
    text = body.strip().replace("\n", " ")[:240]
    if status == 404 and "pod does not exist" in text:
        return _ok("answers and authorises (a probe for an absent pod: the kubelet's 'pod does not exist')")
    if status == 403:
        if "nodes/proxy" in text:
            return _no(f"HTTP 403: {text}", "the user needs create on nodes/proxy (see the rbac line)")
        user = re.search(r"user=([^,\s)]+)", text)
        who = user[1] if user else "the API server's kubelet client"
        return _no(
            f"HTTP 403 from the kubelet: {text}",
            f"grant nodes/checkpoint to {who} (kubernetes #126232): kubectl create clusterrole "
            f"podhop-kubelet-checkpoint --verb=create --resource=nodes/checkpoint && kubectl create "
            "clusterrolebinding podhop-kubelet-checkpoint --clusterrole=podhop-kubelet-checkpoint "
            f"--user={who}",
        )
    if status == 404:
        return _no(
            f"HTTP 404: {text or 'no checkpoint route'}",
            "the kubelet has no checkpoint API: enable its ContainerCheckpoint feature gate (on by default "
            "from 1.30)",
        )
    return _no(f"HTTP {status}: {text}", "the API server could not reach the kubelet: see its message")


def checkpoint_fix(message: str) -> str:
    low = message.lower()
    if "criu" in low and any(w in low for w in ("not found", "requires at least", "version", "no such file")):
        return "install CRIU >= 4.2 where containerd's runc finds it (examples/eks/cluster.yaml builds it)"
    if "tcp" in low and ("established" in low or "connected" in low):
        return (
            "give runc's CRIU tcp-close and skip-in-flight (/etc/criu/runc.conf: examples/eks/cluster.yaml)"
        )
    return "see the kubelet's and containerd's logs on the node (journalctl -u kubelet -u containerd)"


# --------------------------------------------------------------------------- RBAC


@dataclass(frozen=True)
class Permission:
    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    def __str__(self) -> str:
        res = self.resource + (f"/{self.subresource}" if self.subresource else "")
        if self.group:
            res += f".{self.group}"
        if self.name:
            res += f" {self.name}"
        return f"{self.verb} {res}" + (f" in {self.namespace}" if self.namespace else "")


def required_permissions() -> list[Permission]:
    """Every permission of the user roles ``podhop kube manifests`` prints (the ClusterRole's
    cluster-wide, the Role's in the agent's namespace)."""
    out: list[Permission] = []
    for doc in install.objects(install.user_rbac_yaml()):
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        namespace = doc["metadata"].get("namespace", "") if doc["kind"] == "Role" else ""
        for rule in doc.get("rules") or []:
            for group in rule.get("apiGroups") or [""]:
                for full in rule["resources"]:
                    resource, _, sub = full.partition("/")
                    for name in rule.get("resourceNames") or [""]:
                        for verb in rule["verbs"]:
                            out.append(Permission(verb, group, resource, sub, namespace, name))
    return out


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
        return _ok(f"all {len(perms)} permissions of {install.USER_ROLE} granted")
    return _no(
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
        return _no(f"not Ready (kubelet {kubelet_version})", "see `kubectl describe node`")
    if v is None or v[:2] < MIN_KUBERNETES:
        return _no(
            f"kubelet {kubelet_version}: no checkpoint API by default before 1.30",
            "upgrade the node group to Kubernetes >= 1.30",
        )
    return _ok(f"Ready, kubelet {kubelet_version}")


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
            return _no(str(exc), exc.hint or "is the cluster up?")
        return probe_verdict(status, raw.decode(errors="replace"))

    def dump(
        self, node: str, index: int, agent: agents.Agent | None, image: str | None
    ) -> tuple[Verdict, Verdict]:
        """(checkpoint, criu) of one node's throwaway pod; the pod and its archive are removed."""
        if agent is None or image is None:
            skipped = _no("not run: no Ready agent on the node to read and remove the archive", "")
            return skipped, skipped
        name = f"podhop-doctor-{self.run}-{index}"
        archives: list[str] = []
        try:
            checkpoint, criu = self._dump(node, name, agent, image, archives)
        except PodhopError as exc:
            message = str(exc)
            checkpoint = _no(message, exc.hint or checkpoint_fix(message))
            criu = _no("not known: the dump failed", checkpoint_fix(message))
        finally:
            self._delete(name)
        for archive in archives:
            try:
                agent.request("DELETE", f"checkpoints/{urllib.parse.quote(archive, safe='')}", timeout=30)
            except PodhopError as exc:
                checkpoint = _no(
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
            return _no(f"HTTP {status}: {text[:300]}", fix), _no("not known: the dump failed", fix)
        archives += [Path(p).name for p in kubelet.archive_paths(f"checkpoint of {name}", raw)]
        dumped = _ok("a throwaway pod dumped through the kubelet's API")
        try:
            found = agent.request(
                "GET", f"checkpoints/{urllib.parse.quote(archives[0], safe='')}/criu", timeout=30
            )
        except agents.AgentNotFound as exc:
            fix = "see the agent's log (kubectl -n podhop-system logs)"
            if "no such endpoint" in str(exc):
                fix = "reinstall the agent: this one cannot read a dump's log (podhop kube install)"
            return dumped, _no(str(exc), fix)
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
        return _no(
            f"not answering through the pod proxy: {exc}",
            f"the API server must reach TCP {agents.PORT} on the node's address (docs/eks.md)",
        )
    return _ok(f"Ready and answering (containerd {health.get('containerd')})")


def _restore(a: agents.Agent) -> Verdict:
    try:
        info = a.request("GET", "runtime", timeout=15)
    except agents.AgentNotFound:
        return _no(
            "the agent has no runtime endpoint (an older agent)", "reinstall the agent: podhop kube install"
        )
    except PodhopError as exc:
        return _no(f"the agent could not tell: {exc}", "see the agent's log (kubectl -n podhop-system logs)")
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
        add("api server", _no(str(exc), exc.hint or "check the kubeconfig's server and credentials"))
        return checks  # nothing else can answer
    progress("rbac")
    add("rbac", _guard(lambda: check_rbac(backend)))

    progress("nodes")
    try:
        nodes = backend._nodes_raw()
    except PodhopError as exc:
        add("nodes", _no(str(exc), exc.hint or "the user needs list on nodes (see the rbac line)"))
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
    missing = _no(f"no Ready agent ({why})" if why else "no Ready agent", install_fix)
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
    return _no("not known: no agent answering on the node", fix)


def _fill(v: Verdict, fix: str) -> Verdict:
    return v if v.ok or v.fix else Verdict(False, v.detail, fix)


def _guard(probe: Callable[[], Verdict]) -> Verdict:
    try:
        return probe()
    except PodhopError as exc:
        return _no(str(exc), exc.hint or "see the message")
