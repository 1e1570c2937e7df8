"""The doctor's pure half: what each answer from a cluster means (a verdict and, if "no", the fix).

Why apart: deciding whether a server version, a runtime, a containerd configuration, a
CRIU version or a kubelet's answer to a checkpoint probe is good enough is pure logic that
unit tests cover without a cluster; :mod:`podhop.backends.kubernetes.doctor` asks the
cluster and hands the answers here. The permissions podhop needs are read here from the
shipped user roles (:func:`podhop.backends.kubernetes.install.user_rbac_yaml`, the one list).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from podhop.backends.kubernetes import install

MIN_KUBERNETES = (1, 30)
MIN_CRIU = (4, 2)
#: containerd lines that restore a checkpoint image in CreateContainer: from 2.1 (always on) through
#: 2.3 (behind ``enable_experimental_restore_via_create``); 2.4 removed it.
RESTORE_FROM, RESTORE_UNTIL = (2, 1), (2, 4)


@dataclass(frozen=True)
class Verdict:
    """One node's (or the cluster's) answer to one check."""

    ok: bool
    detail: str
    fix: str | None = None


def ok(detail: str) -> Verdict:
    return Verdict(True, detail)


def no(detail: str, fix: str) -> Verdict:
    return Verdict(False, detail, fix)


# --------------------------------------------------------------------------- pure verdicts


def version_tuple(text: str) -> tuple[int, ...] | None:
    """(major, minor[, patch]) of ``v1.30.2-eks-1552ad0``, ``containerd://2.3.7``, ``4.2.1``."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return None
    return tuple(int(g) for g in match.groups() if g is not None)


def dotted(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def server_verdict(git_version: str, where: str) -> Verdict:
    v = version_tuple(git_version)
    if v is None:
        return no(
            f"unrecognised version {git_version!r} at {where}", "check that this is a Kubernetes API server"
        )
    if v[:2] < MIN_KUBERNETES:
        return no(
            f"{git_version} at {where}: the kubelet's checkpoint API is on by default from 1.30",
            "upgrade the cluster to Kubernetes >= 1.30 (eksctl upgrade cluster --version ...)",
        )
    return ok(f"{git_version} at {where}")


def runtime_verdict(runtime: str) -> Verdict:
    """``nodeInfo.containerRuntimeVersion``: containerd 2.1–2.3, the lines that restore a checkpoint image."""
    name, _, version = runtime.partition("://")
    if name != "containerd":
        return no(
            f"{runtime or 'no runtime reported'}: podhop's node agent drives containerd only",
            "use nodes whose runtime is containerd 2.1–2.3 (EKS: Amazon Linux 2023 or Bottlerocket AMIs)",
        )
    v = version_tuple(version)
    if v is None:
        return no(f"containerd {version!r}: unrecognised version", "report the node's `containerd --version`")
    if v[:2] < RESTORE_FROM:
        return no(
            f"containerd {version}: cannot restore a checkpoint image (restore-via-create came in 2.1)",
            "use nodes with containerd 2.1–2.3 (a newer AMI release)",
        )
    if v[:2] >= RESTORE_UNTIL:
        return no(
            f"containerd {version}: restore-via-create was removed in 2.4",
            "use nodes with containerd 2.1–2.3",
        )
    return ok(f"containerd {version}")


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
        return no(
            f"containerd {version}: its CRI status cannot be read: {info.get('criError') or 'no answer'}",
            "check containerd's CRI plugin on the node (crictl info)",
        )
    if cri.get("enableCRIU") is False:
        return no(
            f"containerd {version}: enable_criu = false in its CRI config",
            "remove `enable_criu = false` from containerd's config and restart containerd",
        )
    setting = cri.get("enableExperimentalRestoreViaCreate")
    if setting is True:
        return ok(f"enable_experimental_restore_via_create = true (containerd {version})")
    if setting is False:
        return no(f"containerd {version}: enable_experimental_restore_via_create is false", _RESTORE_FIX)
    if v is not None and RESTORE_FROM <= v[:2] < (2, 3):
        return ok(f"built in (containerd {version} has no setting for it)")
    return no(
        f"containerd {version}: no restore-via-create (it exists in containerd 2.1–2.3)",
        "use nodes with containerd 2.1–2.3",
    )


def criu_verdict(version: str) -> Verdict:
    v = version_tuple(version)
    if v is None:
        return no(f"unrecognised CRIU version {version!r}", "run `criu --version` on the node")
    if v[:2] < MIN_CRIU:
        return no(
            f"CRIU {version}: podhop needs >= 4.2 (older ones fail on kernels >= 6.16)",
            "install CRIU >= 4.2 on the nodes where containerd's runc finds it (examples/eks/cluster.yaml)",
        )
    return ok(f"CRIU {version} (the dump's own log)")


def probe_verdict(status: int, body: str) -> Verdict:
    """The kubelet's answer to a checkpoint of a pod that does not exist."""
    text = body.strip().replace("\n", " ")[:240]
    if status == 404 and "pod does not exist" in text:
        return ok("answers and authorises (a probe for an absent pod: the kubelet's 'pod does not exist')")
    if status == 403:
        if "nodes/proxy" in text:
            return no(f"HTTP 403: {text}", "the user needs create on nodes/proxy (see the rbac line)")
        user = re.search(r"user=([^,\s)]+)", text)
        who = user[1] if user else "the API server's kubelet client"
        return no(
            f"HTTP 403 from the kubelet: {text}",
            f"grant nodes/checkpoint to {who} (kubernetes #126232): kubectl create clusterrole "
            f"podhop-kubelet-checkpoint --verb=create --resource=nodes/checkpoint && kubectl create "
            "clusterrolebinding podhop-kubelet-checkpoint --clusterrole=podhop-kubelet-checkpoint "
            f"--user={who}",
        )
    if status == 404:
        return no(
            f"HTTP 404: {text or 'no checkpoint route'}",
            "the kubelet has no checkpoint API: enable its ContainerCheckpoint feature gate (on by default "
            "from 1.30)",
        )
    return no(f"HTTP {status}: {text}", "the API server could not reach the kubelet: see its message")


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
