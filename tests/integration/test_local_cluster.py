"""A real local cluster: nodes, the seed's NGINX, services, top, delete without residue."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from podhop.backends.local import metrics
from podhop.backends.local.apply import apply
from podhop.backends.local.cluster import LocalCluster, delete_cluster, residue
from podhop.backends.local.pods import logs
from podhop.net import netns
from podhop.net.nat import our_chains
from podhop.runtime import cgroups
from podhop.store import Store

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PODHOP = [sys.executable, "-m", "podhop"]


def http_get(url: str, timeout: float = 5.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        resp.read()
        return int(resp.status)


def test_nodes_are_namespaces_with_budgets(cluster: LocalCluster) -> None:
    nodes = cluster.nodes()
    assert [n.name for n in nodes] == ["node-1", "node-2", "node-3"]
    cidrs = [ipaddress.ip_network(n.pod_cidr) for n in nodes]
    assert len(set(cidrs)) == 3 and not any(a.overlaps(b) for a in cidrs for b in cidrs if a != b)
    for n in nodes:
        assert netns.exists(n.netns)
        assert f"{n.ip}/24" in netns.ip(n.netns, "-o", "addr", "show", "eth0")
        rel = cgroups.relpath(cluster.name, n.name)
        if not cgroups.is_v2():
            quota = int((cgroups.CGROUP_ROOT / "cpu" / rel / "cpu.cfs_quota_us").read_text())
            assert quota == 100_000  # 1000m over a 100 ms period
            limit = int((cgroups.CGROUP_ROOT / "memory" / rel / "memory.limit_in_bytes").read_text())
            assert limit == 1 << 30


def test_seed_nginx_spreads_serves_and_balances(cluster: LocalCluster) -> None:
    apply(cluster, str(EXAMPLES / "nginx.yaml"))
    pods = cluster.store.pods(cluster.name)
    assert len(pods) == 10
    by_node = {n.name: n for n in cluster.nodes()}
    for p in pods:
        assert p.phase == "Running"
        assert ipaddress.ip_address(p.ip) in ipaddress.ip_network(by_node[p.node].pod_cidr)
    counts = sorted(sum(1 for p in pods if p.node == n) for n in by_node)
    assert counts == [3, 3, 4], counts  # LeastAllocated spreads equal nodes evenly

    svc = next(s for s in cluster.store.services(cluster.name) if s.name == "nginx-service")
    assert http_get(f"http://{svc.cluster_ip}/") == 200
    assert http_get(f"http://127.0.0.1:{svc.ports[0]['nodePort']}/") == 200

    # Every endpoint is hit: each request is a new connection, so kube-proxy-style random DNAT
    # spreads them; 300 requests over 10 endpoints miss one with probability ~1e-13.
    for i in range(300):
        try:
            http_get(f"http://{svc.cluster_ip}/probe-{i}")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    # nginx's access log reaches the pod log through its monitor, asynchronously: wait (bounded) for it.
    deadline = time.monotonic() + 10
    while True:
        hits = {p.name: sum(1 for _, _, line in logs(p) if "GET /probe-" in line) for p in pods}
        if sum(hits.values()) >= 300 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sum(hits.values()) == 300, hits
    assert all(h > 0 for h in hits.values()), hits


def test_top_shows_cpu_of_loaded_pod(cluster: LocalCluster) -> None:
    apply(cluster, str(EXAMPLES / "nginx.yaml"))
    target = cluster.store.pods(cluster.name)[0]
    load = subprocess.Popen(
        ["hey", "-z", "4s", "-c", "20", f"http://{target.ip}/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        sample = metrics.sample(cluster, window_s=1.5)
    finally:
        load.wait(timeout=30)
    usage = {p.name: p for p in sample.pods}
    assert usage[target.name].cpu_m > 20, usage[target.name]
    assert usage[target.name].cpu_m == max(p.cpu_m for p in sample.pods)
    assert usage[target.name].memory_b > 0
    node = next(n for n in sample.nodes if n.name == target.node)
    assert node.cpu_m >= usage[target.name].cpu_m * 0.8


def test_delete_leaves_no_residue(make_cluster: object, store: Store) -> None:
    c: LocalCluster = make_cluster(nodes=2)  # type: ignore[operator]
    apply(c, str(EXAMPLES / "nginx.yaml"))
    assert our_chains(c.layout.chain_prefix)["nat"]
    assert residue(c.name, c.record.idx) != []  # sanity: the check sees a live cluster
    assert delete_cluster(store, c.name) == []
    assert residue(c.name, c.record.idx) == []
    assert not netns.list_netns(c.layout.netns_prefix)
    assert not Path(c.dir).exists()
    # A second delete is a harmless no-op from the CLI.
    out = subprocess.run([*PODHOP, "cluster", "delete", c.name], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "nothing to delete" in out.stdout


def test_scale_down_updates_endpoints(cluster: LocalCluster, tmp_path: Path) -> None:
    apply(cluster, str(EXAMPLES / "nginx.yaml"))
    smaller = (EXAMPLES / "nginx.yaml").read_text().replace("replicas: 10", "replicas: 4")
    assert "replicas: 4" in smaller
    messages = apply(cluster, "smaller.yaml", smaller)
    assert "deployment.apps/nginx configured" in messages
    pods = cluster.store.pods(cluster.name)
    assert len(pods) == 4
    rules = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True).stdout
    seps = [
        ln
        for ln in rules.splitlines()
        if ln.startswith(f"-A {cluster.layout.chain_prefix}-SEP") and "DNAT" in ln
    ]
    assert sorted(ln.split("--to-destination ")[1] for ln in seps) == sorted(f"{p.ip}:80" for p in pods)
    svc = cluster.store.services(cluster.name)[0]
    assert http_get(f"http://{svc.cluster_ip}/") == 200


def test_link_bandwidth_is_shaped(make_cluster: object) -> None:
    c: LocalCluster = make_cluster(nodes=1, bandwidth=50_000_000)  # type: ignore[operator]
    node = c.nodes()[0]
    host_side = subprocess.run(
        ["tc", "class", "show", "dev", c.layout.node_veth(node.idx)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    node_side = subprocess.run(
        ["tc", "-n", node.netns, "class", "show", "dev", "eth0"], capture_output=True, text=True, check=True
    ).stdout
    assert "rate 50Mbit" in host_side and "rate 50Mbit" in node_side
