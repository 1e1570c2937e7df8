"""A real 3-node Kubernetes cluster (``--kind kubernetes``): seed commands, checkpoint, restore elsewhere.

One cluster for the session (creating it takes seconds once the components are
built; building them is ``podhop setup``'s job), a fresh namespace per test
(each test's kubeconfig has it as the context's namespace, so the seed's
commands run verbatim), and teardown fails if delete leaves anything behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import kube_cluster, kube_unavailable

from podhop.kubekind import cluster as kube
from podhop.kubekind import components, registry
from podhop.kubekind.layout import KubeLayout
from podhop.store import Store

pytestmark = pytest.mark.integration


if (why := kube_unavailable()) is not None:
    pytest.skip(why, allow_module_level=True)

KUBECTL = str(components.binary("kubectl"))


@pytest.fixture(scope="module")
def kcluster() -> Iterator[kube.KubeCluster]:
    with kube_cluster("kt") as c:
        yield c


@dataclass
class Ns:
    """A fresh namespace, and a kubeconfig whose context uses it (so commands stay verbatim)."""

    name: str
    kubeconfig: Path
    layout: KubeLayout

    def sh(
        self, command: str, *, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = shlex.split(command)
        if argv[0] == "kubectl":
            argv[0] = KUBECTL
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{command!r} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def json(self, command: str) -> dict:  # type: ignore[type-arg]
        data: dict = json.loads(self.sh(command + " -o json").stdout)  # type: ignore[type-arg]
        return data

    def apply(self, doc: dict) -> None:  # type: ignore[type-arg]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        subprocess.run(
            [KUBECTL, "apply", "-f", "-"],
            input=yaml.safe_dump(doc),
            text=True,
            check=True,
            env=env,
            capture_output=True,
            timeout=60,
        )

    def wait_ready(self, pod: str, timeout: int = 120) -> None:
        self.sh(f"kubectl wait --for=condition=Ready pod/{pod} --timeout={timeout}s", timeout=timeout + 10)


@pytest.fixture
def ns(kcluster: kube.KubeCluster, tmp_path: Path) -> Iterator[Ns]:
    name = f"t-{secrets.token_hex(3)}"
    cfg = yaml.safe_load(kcluster.kubeconfig.read_text())
    cfg["contexts"][0]["context"]["namespace"] = name
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump(cfg))
    n = Ns(name, kc, kcluster.layout)
    n.sh(f"kubectl create namespace {name}")
    try:
        yield n
    finally:
        n.sh(f"kubectl delete namespace {name} --wait=false", check=False)


def test_three_nodes_ready_with_our_versions(ns: Ns) -> None:
    nodes = ns.json("kubectl get nodes")["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["node-1", "node-2", "node-3"]
    for n in nodes:
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
        assert n["status"]["nodeInfo"]["kubeletVersion"] == components.KUBERNETES.version
        assert (
            n["status"]["nodeInfo"]["containerRuntimeVersion"]
            == f"containerd://{components.CONTAINERD.version[1:]}"
        )
    assert f"Server Version: {components.KUBERNETES.version}" in ns.sh("kubectl version").stdout


def test_seed_commands_verbatim_and_hey_gets_only_200s(ns: Ns) -> None:
    ns.sh("kubectl create deployment nginx --image=nginx")
    ns.sh("kubectl scale deployment nginx --replicas=10")
    ns.sh("kubectl rollout status deployment/nginx --timeout=180s", timeout=200)
    pods = ns.json("kubectl get pods -l app=nginx")["items"]
    ready = [p for p in pods if all(c.get("ready") for c in p["status"].get("containerStatuses", []))]
    assert len(ready) == 10
    assert {p["spec"]["nodeName"] for p in ready} == {"node-1", "node-2", "node-3"}
    ns.sh("kubectl expose deployment nginx --name=nginx-service --port=80 --type=LoadBalancer")
    external = ""
    deadline = time.monotonic() + 30
    while not external and time.monotonic() < deadline:
        out = ns.sh("kubectl get svc nginx-service").stdout
        row = out.splitlines()[1].split()
        external = row[3] if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", row[3]) else ""
        time.sleep(0.5)
    assert external.startswith(f"10.{ns.layout.octet}.97."), out
    hey = subprocess.run(
        ["hey", "-n", "10000", "-c", "100", f"http://{external}/"],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", hey))
    assert codes == {"200": "10000"}, hey


def test_kubectl_top_shows_numbers(ns: Ns) -> None:
    ns.sh("kubectl create deployment web --image=nginx --replicas=2")
    ns.sh("kubectl rollout status deployment/web --timeout=120s", timeout=130)
    deadline = time.monotonic() + 120
    nodes = pods = ""
    while time.monotonic() < deadline:
        nodes = ns.sh("kubectl top nodes", check=False).stdout
        pods = ns.sh("kubectl top pods -A --sort-by=cpu", check=False).stdout
        if re.search(r"node-1\s+\d+m", nodes) and re.search(rf"{ns.name}\s+web-\S+\s+\d+m\s+\d+Mi", pods):
            break
        time.sleep(3)
    assert re.search(r"node-\d\s+\d+m\s+\d+%\s+\d+Mi", nodes), nodes
    assert re.search(rf"{ns.name}\s+web-\S+\s+\d+m\s+\d+Mi", pods), pods


def _redis_pod(name: str, node: str, image: str = "redis", init_base: bool = False) -> dict:  # type: ignore[type-arg]
    spec: dict = {  # type: ignore[type-arg]
        "nodeSelector": {"kubernetes.io/hostname": node},
        "containers": [{"name": "redis", "image": image}],
    }
    if image == "redis":
        spec["containers"][0]["args"] = [
            "redis-server",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
    if init_base:
        # containerd pulls the checkpoint's base image with its plain client, past the registry mirror:
        # have the node pull it through CRI first.
        spec["initContainers"] = [{"name": "base-image", "image": "redis", "command": ["true"]}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
    }


def test_checkpoint_via_api_server_then_restore_on_another_node(ns: Ns) -> None:
    ns.apply(_redis_pod("redis", "node-1"))
    ns.wait_ready("redis")
    token = secrets.token_hex(8)
    assert ns.sh(f"kubectl exec redis -- redis-cli SET secret {token}").stdout.strip() == "OK"
    assert ns.sh("kubectl exec redis -- redis-cli INCRBY counter 41").stdout.strip() == "41"
    run_id = re.search(r"run_id:(\w+)", ns.sh("kubectl exec redis -- redis-cli INFO server").stdout)
    assert run_id

    out = ns.sh(
        f"kubectl create --raw /api/v1/nodes/node-1/proxy/checkpoint/{ns.name}/redis/redis -f /dev/null"
    )
    archive = Path(json.loads(out.stdout)["items"][0])
    assert archive.parent == ns.layout.checkpoints_dir(1) and archive.is_file()
    assert archive.stat().st_mode & 0o777 == 0o600

    inspected = subprocess.run(
        [sys.executable, "-m", "podhop", "inspect", str(archive), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert inspected.returncode == 0, inspected.stderr
    info = json.loads(inspected.stdout)
    assert info["image"] == "docker.io/library/redis:latest"
    assert [p["comm"] for p in info["processes"]] == ["redis-server"]

    ref = registry.publish_checkpoint(ns.layout, archive, "redis", f"checkpoints/{ns.name}-redis", "v1")
    ns.apply(_redis_pod("redis-restored", "node-3", image=ref, init_base=True))
    ns.wait_ready("redis-restored")
    pod = ns.json("kubectl get pod redis-restored")
    assert pod["spec"]["nodeName"] == "node-3"
    # Process state, not a fresh start: the key lived only in memory, the counter goes on, same run id.
    assert ns.sh("kubectl exec redis-restored -c redis -- redis-cli GET secret").stdout.strip() == token
    assert ns.sh("kubectl exec redis-restored -c redis -- redis-cli INCRBY counter 1").stdout.strip() == "42"
    info2 = ns.sh("kubectl exec redis-restored -c redis -- redis-cli INFO server").stdout
    assert f"run_id:{run_id.group(1)}" in info2
    # ... and serves on its new address, from the host.
    ip = pod["status"]["podIP"]
    assert ip.startswith(f"10.{ns.layout.octet}.131.")
    with __import__("socket").create_connection((ip, 6379), timeout=5) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(16).startswith(b"+PONG")


def test_delete_after_a_crash_half_way_through_create_leaves_nothing(kcluster: kube.KubeCluster) -> None:
    name = f"{os.environ.get('PODHOP_TEST_PREFIX', 'kt')}-{secrets.token_hex(3)}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "podhop",
            "cluster",
            "create",
            "--kind",
            "kubernetes",
            "--name",
            name,
            "--nodes",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "node-1" in line:  # control plane up, first node being made
            break
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    store = Store()
    record = store.cluster(name)
    assert record is not None and record.status == "creating"
    assert kube.residue(name, record.idx) != []
    for _ in range(2):  # a second delete is harmless
        out = subprocess.run(
            [sys.executable, "-m", "podhop", "cluster", "delete", name],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
    assert store.cluster(name) is None
    assert kube.residue(name, record.idx) == []
