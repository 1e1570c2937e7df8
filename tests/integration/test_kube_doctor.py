"""``podhop doctor --kubeconfig`` against a real 3-node cluster (``--kind kubernetes``), as a user runs it.

One cluster for the module. The passing run is made as a ServiceAccount holding exactly the user
roles ``podhop kube manifests`` prints (not as the cluster's admin), so it also proves those roles are
enough for everything the doctor does: the access reviews, the kubelet probe, the throwaway pods and
their checkpoints, the agents. The failing runs are deterministic: the same ServiceAccount without
the roles (the rbac line names what is missing), and the cluster with its agents removed (the agent
lines give ``podhop kube install``; the install then makes the doctor pass again). After every run no
throwaway pod and no checkpoint archive may be left on any node.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import PODHOP, kube_cluster, kube_unavailable

from podhop.kubekind import cluster as kube
from podhop.kubekind import components

pytestmark = pytest.mark.integration


if (why := kube_unavailable()) is not None:
    pytest.skip(why, allow_module_level=True)

KUBECTL = str(components.binary("kubectl"))
NODES = ("node-1", "node-2", "node-3")
CHECKS = (
    "api server",
    "rbac",
    "nodes",
    "runtime",
    "agent",
    "restore",
    "checkpoint API",
    "checkpoint",
    "criu",
)


@pytest.fixture(scope="module")
def kcluster() -> Iterator[kube.KubeCluster]:
    with kube_cluster("kd") as c:
        yield c


def kubectl(c: kube.KubeCluster, *args: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        [KUBECTL, f"--kubeconfig={c.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        input=input,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*PODHOP, "doctor", *args], capture_output=True, text=True, timeout=600)
    print(proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc


def table(stdout: str) -> dict[str, tuple[str, str, str]]:
    """The doctor's rows by check name: (mark, detail, fix), cut at the header's columns."""
    lines = stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if "CHECK" in ln and "DETAIL" in ln)
    head = lines[header]
    at_check, at_detail, at_fix = head.index("CHECK"), head.index("DETAIL"), head.index("FIX")
    rows = {}
    for ln in lines[header + 1 :]:
        if not ln.strip():
            break
        rows[ln[at_check:at_detail].strip()] = (
            ln[:at_check].strip(),
            ln[at_detail:at_fix].strip(),
            ln[at_fix:].strip(),
        )
    return rows


@pytest.fixture
def user(kcluster: kube.KubeCluster, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A namespace with a ServiceAccount and a kubeconfig for it (its token); all removed after."""
    ns = f"kd-{secrets.token_hex(3)}"
    kubectl(kcluster, "create", "namespace", ns)
    kubectl(kcluster, "-n", ns, "create", "serviceaccount", "podhop")
    token = kubectl(kcluster, "-n", ns, "create", "token", "podhop", "--duration=1h").strip()
    admin = yaml.safe_load(kcluster.kubeconfig.read_text())
    kubeconfig = tmp_path / "user.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kd", "cluster": admin["clusters"][0]["cluster"]}],
                "users": [{"name": "podhop", "user": {"token": token}}],
                "contexts": [
                    {"name": "podhop", "context": {"cluster": "kd", "user": "podhop", "namespace": ns}}
                ],
                "current-context": "podhop",
            }
        )
    )
    try:
        yield ns, kubeconfig
    finally:
        kubectl(kcluster, "delete", "clusterrolebinding", f"podhop-user-{ns}", "--ignore-not-found")
        kubectl(
            kcluster,
            "-n",
            "podhop-system",
            "delete",
            "rolebinding",
            f"podhop-user-{ns}",
            "--ignore-not-found",
        )
        kubectl(kcluster, "delete", "namespace", ns, "--wait=true", "--timeout=120s")


def bind_user_roles(c: kube.KubeCluster, ns: str) -> None:
    sa = f"{ns}:podhop"
    kubectl(
        c,
        "create",
        "clusterrolebinding",
        f"podhop-user-{ns}",
        "--clusterrole=podhop-user",
        f"--serviceaccount={sa}",
    )
    kubectl(
        c,
        "-n",
        "podhop-system",
        "create",
        "rolebinding",
        f"podhop-user-{ns}",
        "--role=podhop-user",
        f"--serviceaccount={sa}",
    )


def assert_nothing_left(c: kube.KubeCluster) -> None:
    pods = json.loads(kubectl(c, "get", "pods", "-A", "-l", "podhop.io/doctor", "-o", "json"))
    assert pods["items"] == []
    for node in NODES:
        ckpt = c.layout.dir / "nodes" / node / "kubelet" / "checkpoints"
        assert sorted(p.name for p in ckpt.iterdir()) == [], f"archives left on {node}"


def test_a_podhop_user_passes_every_check(kcluster: kube.KubeCluster, user: tuple[str, Path]) -> None:
    ns, kubeconfig = user
    bind_user_roles(kcluster, ns)
    proc = doctor("--kubeconfig", str(kubeconfig), "--namespace", ns)
    rows = table(proc.stdout)
    assert tuple(rows) == CHECKS
    failing = {name: row for name, row in rows.items() if row[0] != "ok"}
    assert failing == {}
    assert proc.returncode == 0
    assert "migration on this cluster: yes" in proc.stdout
    assert rows["rbac"][1].startswith("all 25 permissions of podhop-user granted")
    assert rows["runtime"][1] == "containerd 2.3.7 on all 3 nodes"
    assert rows["restore"][1].startswith("enable_experimental_restore_via_create = true")
    assert "pod does not exist" in rows["checkpoint API"][1]
    assert rows["criu"][1].startswith("CRIU 4.") and rows["criu"][1].endswith("on all 3 nodes")
    assert_nothing_left(kcluster)


def test_a_user_without_the_roles_fails_rbac_naming_what_is_missing(
    kcluster: kube.KubeCluster, user: tuple[str, Path]
) -> None:
    _ns, kubeconfig = user
    proc = doctor("--kubeconfig", str(kubeconfig))
    assert proc.returncode == 1
    rows = table(proc.stdout)
    mark, detail, fix = rows["rbac"]
    assert mark == "FAIL"
    assert detail.startswith("missing 25 of 25: create pods, get pods")
    assert "create nodes/proxy" in detail and "get secrets podhop-agent in podhop-system" in detail
    assert "podhop-user" in fix
    assert rows["nodes"][0] == "FAIL" and "forbidden" in rows["nodes"][1]
    assert "migration on this cluster: no (rbac, nodes)" in proc.stdout
    assert_nothing_left(kcluster)


def test_bad_input_is_one_line(kcluster: kube.KubeCluster, tmp_path: Path) -> None:
    missing = doctor("--kubeconfig", str(tmp_path / "nope.kubeconfig"))
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        f"error: kubeconfig {tmp_path / 'nope.kubeconfig'}: no such file"
    ]
    context = doctor("--kubeconfig", str(kcluster.kubeconfig), "--context", "no-such-context")
    assert context.returncode == 1 and context.stdout == ""
    (line,) = context.stderr.strip().splitlines()
    assert line.startswith("error: context 'no-such-context' not in ")
    garbage = tmp_path / "garbage.kubeconfig"
    for text in ("just: [text\n", "[1, 2]\n", ""):  # not YAML; YAML but no Config; empty
        garbage.write_text(text)
        bad = doctor("--kubeconfig", str(garbage))
        assert bad.returncode == 1 and bad.stdout == ""
        (line,) = bad.stderr.strip().splitlines()
        assert line.startswith(f"error: {garbage}: not a usable kubeconfig: ")


def test_without_agents_the_agent_checks_fail_with_the_install_hint(kcluster: kube.KubeCluster) -> None:
    """Last in the module: it removes the agents, then puts them back the way the hint says."""
    kubectl(kcluster, "-n", "podhop-system", "delete", "daemonset", "podhop-agent", "--wait=true")
    kubectl(
        kcluster,
        "-n",
        "podhop-system",
        "wait",
        "--for=delete",
        "pod",
        "-l",
        "app.kubernetes.io/name=podhop-agent",
        "--timeout=120s",
    )
    proc = doctor("--kubeconfig", str(kcluster.kubeconfig))
    assert proc.returncode == 1
    rows = table(proc.stdout)
    for name in ("agent", "restore", "checkpoint", "criu"):
        mark, _detail, fix = rows[name]
        assert mark == "FAIL", name
        assert f"podhop kube install --kubeconfig {kcluster.kubeconfig}" in fix, name
    assert "podhop's node agent is not installed" in rows["agent"][1]
    # what needs no agent still passes: the probe dumps nothing and leaves nothing
    for name in ("api server", "rbac", "nodes", "runtime", "checkpoint API"):
        assert rows[name][0] == "ok", name
    assert_nothing_left(kcluster)

    install = subprocess.run(
        [*PODHOP, "kube", "install", "--cluster", kcluster.record.name],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    again = doctor("--kubeconfig", str(kcluster.kubeconfig))
    assert again.returncode == 0
    assert all(row[0] == "ok" for row in table(again.stdout).values())
    assert_nothing_left(kcluster)
