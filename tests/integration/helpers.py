"""What several integration test modules share: the podhop command, a web pod and its service, what a
local cluster may hold beyond its pods (nothing), whether a Kubernetes-kind cluster can be made here, a
fresh namespace on one, and what a migration may not leave on its nodes."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from podhop.backends.local import pods as podops
from podhop.backends.local.backend import LocalBackend
from podhop.backends.local.cluster import LocalCluster, monitor_pids
from podhop.migrate import engine
from podhop.migrate.plan import Options
from podhop.net import netns
from podhop.runtime import cgroups
from podhop.runtime.mounts import mount_table

if TYPE_CHECKING:
    from podhop.kubekind.cluster import KubeCluster
    from podhop.kubekind.layout import KubeLayout

PODHOP = [sys.executable, "-m", "podhop"]


def kube_unavailable() -> str | None:
    """Why the Kubernetes kind's tests cannot run here (None when they can)."""
    from podhop.kubekind import components

    if os.geteuid() != 0:
        return "needs root"
    missing = [c.key for c in components.COMPONENTS if not components.is_built(c)]
    if missing:
        return f"Kubernetes components not built ({', '.join(missing)}): run `podhop setup`"
    if shutil.which("hey") is None:
        return "needs hey (run `podhop setup`)"
    return None


@contextmanager
def kube_cluster(prefix: str) -> Iterator[KubeCluster]:
    """A 3-node cluster of the Kubernetes kind (``$PODHOP_TEST_PREFIX-…`` or ``prefix-…``); its delete
    must leave no residue."""
    import secrets
    import time

    from podhop.kubekind import cluster as kube
    from podhop.store import Store

    store = Store()
    name = f"{os.environ.get('PODHOP_TEST_PREFIX', prefix)}-{secrets.token_hex(3)}"
    t0 = time.monotonic()
    c = kube.create_cluster(store, name, 3, 1000, 2 * 2**30)
    print(f"\ncluster {name} Ready in {time.monotonic() - t0:.1f} s")
    try:
        yield c
    finally:
        left = kube.delete_cluster(store, name)
        assert left == [], f"delete left residue: {left}"
        assert kube.residue(name, c.record.idx) == []


WEB_POD = """
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeSelector: {kubernetes.io/hostname: node-1}
  containers: [{name: nginx, image: nginx, ports: [{containerPort: 80}]}]
"""
WEB_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"""
#: An NGINX pod on node-1 behind a service.
WEB = WEB_POD + "---" + WEB_SERVICE


def podhop(cluster: LocalCluster, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run ``podhop ARGS`` against ``cluster`` as a user would (its own process)."""
    env = {**os.environ, "PODHOP_CLUSTER": cluster.name}
    return subprocess.run([*PODHOP, *args], capture_output=True, text=True, timeout=timeout, env=env)


def backend(cluster: LocalCluster) -> LocalBackend:
    """The local cluster behind the backend interface, as the CLI and the engine see it."""
    return LocalBackend(cluster)


def migrate(
    cluster: LocalCluster,
    pod: str,
    target: str,
    strategy: str = "cold",
    namespace: str = "default",
    options: Options | None = None,
) -> dict[str, Any]:
    """A migration through the engine, its report as ``podhop migrate -o json`` prints it."""
    return engine.migrate(LocalBackend(cluster), pod, target, strategy, namespace, options).to_dict()


def _files_under(top: Path) -> list[str]:
    return sorted(str(Path(r) / f) for r, _, fs in os.walk(top) for f in fs) if top.exists() else []


def local_leftovers(cluster: LocalCluster) -> list[str]:
    """Whatever the cluster holds beyond its nodes and the pods in its store: runc containers (or
    ones not running), pod namespaces, sandbox directories and cgroups, checkpoint files and
    checkpoint tmpfs mounts, processes naming the cluster's directory other than the pods' monitors."""
    pods = cluster.store.pods(cluster.name)
    left: list[str] = []
    want = {c.runtime_id for p in pods for c in p.containers}
    left += [f"runc {c['id']} {c['status']}" for c in cluster.runc.list() if c["id"] not in want]
    left += [f"runc {c['id']} {c['status']}" for c in cluster.runc.list() if c["status"] != "running"]
    nodes = cluster.nodes()
    known = {n.netns for n in nodes} | {p.netns for p in pods}
    left += [f"netns {n}" for n in netns.list_netns(cluster.layout.netns_prefix) if n not in known]
    for n in nodes:
        dirs = {podops.pod_dir(cluster, n.name, p.name, p.sandbox).name for p in pods if p.node == n.name}
        top = cluster.node_dir(n.name) / "pods"
        left += [str(d) for d in top.iterdir() if d.name not in dirs] if top.exists() else []
        sandboxes = {p.sandbox for p in pods if p.node == n.name}
        for root in cgroups.hierarchies():
            node_cg = root / cgroups.relpath(cluster.name, n.name)
            if node_cg.is_dir():
                left += [str(d) for d in node_cg.iterdir() if d.is_dir() and d.name not in sandboxes]
        left += _files_under(cluster.node_dir(n.name) / "checkpoints")
    left += [m[0] for m in mount_table() if m[0].startswith(str(cluster.dir)) and "/checkpoint" in m[0]]
    monitors = {c.monitor_pid for p in pods for c in p.containers}
    left += [f"process {pid}" for pid in monitor_pids(cluster.dir) if pid not in monitors]
    return left


# ------------------------------------------------------------------------- the Kubernetes kind

KUBE_NODES = ("node-1", "node-2", "node-3")


def _kube_binary(name: str) -> str:
    from podhop.kubekind import components

    return str(components.binary(name))


@dataclass
class Ns:
    """One test's namespace on a Kubernetes-kind cluster, and kubectl/podhop aimed at it."""

    name: str
    kubeconfig: Path
    layout: KubeLayout

    def kubectl(self, *args: str, timeout: float = 120, check: bool = True, input: str | None = None) -> str:
        proc = subprocess.run(
            [_kube_binary("kubectl"), f"--kubeconfig={self.kubeconfig}", "-n", self.name, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, doc: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))

    def pods(self) -> list[dict[str, Any]]:
        return list(self.get("pods")["items"])

    def podhop(
        self, *args: str, timeout: float = 300, namespaced: bool = True
    ) -> subprocess.CompletedProcess[str]:
        where = ["-n", self.name] if namespaced else []
        return subprocess.run(
            [*PODHOP, *args, "--kubeconfig", str(self.kubeconfig), *where],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@contextmanager
def kube_namespace(cluster: KubeCluster, tmp_path: Path) -> Iterator[Ns]:
    """A fresh namespace (and a kubeconfig of the test's own); afterwards it must be gone, and no
    checkpoint debris left on any node."""
    name = f"t-{secrets.token_hex(3)}"
    kc = tmp_path / "kubeconfig"
    kc.write_text(cluster.kubeconfig.read_text())
    n = Ns(name, kc, cluster.layout)
    n.kubectl("create", "namespace", name)
    try:
        yield n
    finally:
        n.kubectl("delete", "pods", "--all", "--grace-period=1", "--wait=false", check=False)  # quicker
        n.kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s", timeout=150, check=False)
        gone = subprocess.run(
            [_kube_binary("kubectl"), f"--kubeconfig={kc}", "get", "namespace", name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert gone.returncode != 0 and "NotFound" in gone.stderr, f"namespace {name} still there"
    assert kube_checkpoint_debris(cluster.layout) == []


def ready(pod: dict[str, Any]) -> bool:
    """A pod (as the API server returns it) is Ready and not being deleted."""
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod.get("status") or {}).get("conditions", [])
    ) and not pod["metadata"].get("deletionTimestamp")


def node_index(node: str) -> int:
    return int(node.rsplit("-", 1)[1])


def kube_checkpoint_debris(lay: KubeLayout) -> list[str]:
    """Archives in any kubelet's checkpoint directory, checkpoint images in any containerd, and
    anything an agent staged."""
    left = []
    for node in KUBE_NODES:
        i = node_index(node)
        left += [str(p) for p in lay.checkpoints_dir(i).iterdir()]
        images = subprocess.run(
            [_kube_binary("ctr"), "-a", str(lay.containerd_socket(i)), "-n", "k8s.io", "images", "ls"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        left += [f"{node}: {ln.split()[0]}" for ln in images.splitlines() if "podhop.io/checkpoint" in ln]
        pods = lay.kubelet_root(i) / "pods"
        left += [str(p) for p in pods.glob("*/volumes/kubernetes.io~empty-dir/work/podhop-agent/*")]
    return left


def external_ip(ns: Ns, service: str) -> str:
    """A LoadBalancer Service's address, once the LB controller has given it one."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ingress = (ns.get("service", service).get("status") or {}).get("loadBalancer", {}).get("ingress")
        if ingress:
            return str(ingress[0]["ip"])
        time.sleep(0.5)
    raise AssertionError(f"service {service} got no external address")


def wait_serving(ip: str, timeout: float = 60) -> None:
    """Until the address answers: its first SYN before kube-proxy's rules exist would leave a
    conntrack entry without DNAT that every retransmission then follows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{ip}/", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{ip} does not answer")


#: Three CPU-bound replicas (the rebalancer's tests, both kinds).
BUSY = """apiVersion: apps/v1
kind: Deployment
metadata: {name: busy}
spec:
  replicas: 3
  selector: {matchLabels: {app: busy}}
  template:
    metadata: {labels: {app: busy}}
    spec:
      containers:
      - name: main
        image: nginx
        command: ["sh", "-c", "while :; do :; done"]
        # The limit makes each busy pod use 300m whatever else the machine runs (a CPU quota): node-1
        # at 90 % of its 1000m, the others idle; spread out, 30 % each.
        resources: {requests: {cpu: 50m, memory: 16Mi}, limits: {cpu: 300m}}
"""
