"""The node agent's manifests, image and build key, without a cluster (the server-side dry run of the
same YAML is in tests/integration/test_kube_migration.py); and the agent's own Go tests."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from podhop.backends.kubernetes import install
from podhop.kubekind import agentimage, components


def docs(**kw: Any) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in install.objects(install.manifests("r.io/podhop/agent:1", **kw))}


def daemonset_pod(**kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = docs(**kw)["DaemonSet"]["spec"]["template"]["spec"]
    return spec


def test_every_object_is_there_and_namespaced_right() -> None:
    d = docs(token="t" * 32)
    assert set(d) == {
        "Namespace",
        "Secret",
        "ServiceAccount",
        "DaemonSet",
        "ClusterRole",
        "Role",
        "ClusterRoleBinding",
        "RoleBinding",
    }
    for kind in ("Secret", "ServiceAccount", "DaemonSet", "Role", "RoleBinding"):
        assert d[kind]["metadata"]["namespace"] == install.NAMESPACE
    assert base64.b64decode(d["Secret"]["data"]["token"]).decode() == "t" * 32
    assert d["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert "ClusterRole" not in {x["kind"] for x in install.objects(install.manifests(user_rbac=False))}


def test_each_token_is_new_and_long() -> None:
    a, b = (docs()["Secret"]["data"]["token"] for _ in range(2))
    assert a != b and len(base64.b64decode(a)) == 64


def test_the_agent_has_no_api_access_and_only_what_it_needs() -> None:
    d = docs()
    pod = d["DaemonSet"]["spec"]["template"]["spec"]
    assert d["ServiceAccount"]["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is False and pod["hostNetwork"] is True
    for kind in ("ClusterRoleBinding", "RoleBinding"):  # the user roles are bound to users, not the agent
        assert [s["kind"] for s in d[kind]["subjects"]] == ["Group"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsUser"] == 0 and sc["readOnlyRootFilesystem"]
    host = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    assert host == {
        "containerd-socket": {"path": "/run/containerd/containerd.sock", "type": "Socket"},
        "checkpoints": {"path": "/var/lib/kubelet/checkpoints", "type": "DirectoryOrCreate"},
    }
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c["env"]}
    assert env["NODE_NAME"] == "spec.nodeName" and env["NODE_IP"] == "status.hostIP"
    assert c["ports"] == [{"name": "api", "containerPort": install.PORT, "protocol": "TCP"}]


def test_kind_paths_pick_each_nodes_own_socket_and_checkpoints() -> None:
    paths = install.kind_paths("/run/podhop/k8s/c/nodes", "/var/lib/podhop/k8s/clusters/c/nodes")
    pod = daemonset_pod(paths=paths)
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host == {
        "containerd-socket": "/run/podhop/k8s/c/nodes",
        "checkpoints": "/var/lib/podhop/k8s/clusters/c/nodes",
    }
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["containerd-socket"]["subPathExpr"] == "$(NODE_NAME)/containerd.sock"
    assert mounts["checkpoints"]["subPathExpr"] == "$(NODE_NAME)/kubelet/checkpoints"
    assert mounts["containerd-socket"]["mountPath"] == "/run/containerd/containerd.sock"


def test_each_privilege_says_why() -> None:
    text = install.manifests()
    lines = text.splitlines()
    for needle in (
        "hostNetwork: true",
        "runAsUser: 0",
        "- name: containerd-socket",
        "automountServiceAccountToken",
    ):
        i = next(i for i, ln in enumerate(lines) if needle in ln)
        assert lines[i - 1].strip().startswith("#"), f"no comment before {needle!r}"


def test_user_rbac_lists_exact_verbs() -> None:
    d = docs()
    rules = {(r["apiGroups"][0], r["resources"][0]): sorted(r["verbs"]) for r in d["ClusterRole"]["rules"]}
    assert rules == {
        ("", "pods"): ["create", "delete", "get", "list", "patch"],
        ("", "pods/status"): ["patch"],
        ("discovery.k8s.io", "endpointslices"): ["list"],
        ("", "nodes"): ["get", "list"],
        ("", "nodes/proxy"): ["create", "get"],
        ("", "services"): ["list"],
        ("", "pods/log"): ["get"],
        ("", "pods/exec"): ["create", "get"],
        ("metrics.k8s.io", "pods"): ["get", "list"],
    }
    secrets_rule = d["Role"]["rules"][0]
    assert secrets_rule["resources"] == ["secrets"] and secrets_rule["resourceNames"] == [install.SECRET]
    assert secrets_rule["verbs"] == ["get"]
    proxy = {r["resources"][0]: sorted(r["verbs"]) for r in d["Role"]["rules"]}["pods/proxy"]
    assert proxy == ["create", "delete", "get"]  # the agent's DELETE endpoints clean up after a migration


def test_agent_image_layer_is_the_binary_and_tmp(tmp_path: Path) -> None:
    binary = tmp_path / "podhop-agent"
    binary.write_bytes(b"\x7fELF fake")
    with tarfile.open(fileobj=io.BytesIO(agentimage.layer(binary))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"podhop-agent", "tmp"}
    assert members["podhop-agent"].mode == 0o755 and members["podhop-agent"].uid == 0
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    assert agentimage.layer(binary) == agentimage.layer(binary)  # reproducible


def test_agent_version_follows_its_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(components.GOMOD_DIR / "agent", tmp_path / "agent")
    monkeypatch.setattr(components, "GOMOD_DIR", tmp_path)
    before = components.source_hash("agent")
    assert components.AGENT.version.endswith(before)
    main = tmp_path / "agent" / "main.go"
    main.write_text(main.read_text() + "\n// changed\n")
    assert components.source_hash("agent") != before
    assert components.AGENT in components.COMPONENTS


@pytest.mark.skipif(shutil.which("go") is None, reason="needs the Go toolchain (podhop setup installs it)")
def test_the_agents_own_go_tests_pass() -> None:
    env = {
        **components.go_env(),
        "GOFLAGS": "-mod=mod -buildvcs=false",
        "HOME": os.environ.get("HOME", "/root"),
    }
    out = subprocess.run(
        ["nice", "-n", "19", "go", "test", "./..."],
        cwd=components.GOMOD_DIR / "agent",
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_agent_builds_of_other_versions_are_kept_while_recent(tmp_path: Path) -> None:
    """Another checkout on the machine may be using its own agent build: only old ones go."""
    import json

    now = 1_000_000_000.0
    builds = (("agent-0.1-new", now), ("agent-0.1-recent", now - 3600), ("agent-0.1-old", now - 3 * 86400))
    for name, built in builds:
        (tmp_path / name).mkdir()
        (tmp_path / name / ".built.json").write_text(json.dumps({"built": built}))
    (tmp_path / "agent-0.1-unstamped").mkdir()  # a build dir without a stamp: its mtime counts (now: kept)
    (tmp_path / "kubernetes-v1.37.2").mkdir()
    removed = components._prune_agent_builds(tmp_path, "agent-0.1-new", now=now + 1)
    assert removed == ["agent-0.1-old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "agent-0.1-new",
        "agent-0.1-recent",
        "agent-0.1-unstamped",
        "kubernetes-v1.37.2",
    ]
