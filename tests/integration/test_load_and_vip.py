"""Real hey against a real NGINX pod: loss-free runs report no error; VIP connections lose no SYN.

Why here and not in unit tests: what hey sends for ``-n``/``-c`` and what the kernel does with a
service connection are the facts these checks pin down, so they use the real hey, a real pod and
the real NAT rules. No timing is asserted: counts only (the rates are ``benchmarks/``' job).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from podhop.backends.local.apply import apply
from podhop.backends.local.cluster import LocalCluster
from podhop.experiment import load

pytestmark = pytest.mark.integration

MANIFEST = """
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers: [{name: nginx, image: nginx, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
"""


@pytest.fixture
def web(make_cluster: object, tmp_path: Path) -> tuple[LocalCluster, str, str]:
    """A one-node cluster with one NGINX pod behind a one-endpoint service: (cluster, pod IP, VIP)."""
    if shutil.which("hey") is None:
        pytest.skip("needs `hey` (run `podhop setup` or apt-get install hey)")
    cluster: LocalCluster = make_cluster(nodes=1)  # type: ignore[operator]
    (tmp_path / "web.yaml").write_text(MANIFEST)
    apply(cluster, str(tmp_path / "web.yaml"))
    pod = next(p for p in cluster.store.pods(cluster.name) if p.name == "web")
    svc = next(s for s in cluster.store.services(cluster.name) if s.name == "web")
    return cluster, pod.ip, svc.cluster_ip


def test_hey_sends_floor_n_over_c_by_its_own_summary(web: tuple[LocalCluster, str, str]) -> None:
    """hey's own summary: ``-n 1005 -c 10`` sends and answers 1,000 requests, no error."""
    _, pod_ip, _ = web
    out = subprocess.run(
        ["hey", "-n", "1005", "-c", "10", f"http://{pod_ip}/"], capture_output=True, text=True, timeout=120
    ).stdout
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    assert codes == {200: load.hey_sends(1005, 10)}, out
    assert "Error distribution" not in out, out


def test_a_loss_free_run_reports_no_error(web: tuple[LocalCluster, str, str]) -> None:
    """Asked for a count that is not a multiple of the concurrency, through the VIP: 0 errors."""
    _, _, vip = web
    run = load.run_hey(f"http://{vip}/", 1005, 10, max_s=60)
    stats = load.summarize(run)
    assert not run.truncated
    assert stats.errors == 0 and stats.no_answer == 0 and stats.bad_status == 0, stats
    assert stats.requests == stats.answered == 1010
    assert stats.status_codes == {"200": 1010}


def test_chained_runs_of_odd_sizes_report_no_error(web: tuple[LocalCluster, str, str]) -> None:
    """The during phase's back-to-back runs (first and next of sizes hey cannot split evenly)."""
    _, _, vip = web
    chain = load.ChainedLoad(f"http://{vip}/", 1005, 333, 10, max_s=60).start()
    while len(chain.runs) < 2 and chain.running():
        time.sleep(0.05)
    merged = chain.finish()
    stats = load.summarize(merged)
    assert merged.chunks >= 2
    assert stats.errors == 0 and stats.requests == stats.answered, stats


def _pod_counter(pod_netns: str, name: str) -> int:
    text = subprocess.run(
        ["ip", "netns", "exec", pod_netns, "cat", "/proc/net/netstat"], capture_output=True, text=True,
        check=True, timeout=30,
    ).stdout.splitlines()
    for head, values in zip(text[::2], text[1::2], strict=True):
        names, nums = head.split()[1:], values.split()[1:]
        if name.removeprefix("TcpExt") in names and head.startswith("TcpExt:"):
            return int(nums[names.index(name.removeprefix("TcpExt"))])
    raise AssertionError(f"no counter {name}")


def test_vip_and_direct_connections_never_share_a_pod_4_tuple(web: tuple[LocalCluster, str, str]) -> None:
    """New connections to the pod, straight and through the VIP, alternated: no SYN is dropped by the
    pod's TIME_WAIT sockets (PAWS), every request is answered. Before the host's service traffic had
    its own source address, each VIP run after a direct one lost hundreds of SYNs this way."""
    cluster, pod_ip, vip = web
    pod = next(p for p in cluster.store.pods(cluster.name) if p.name == "web")
    pod_netns = cluster.layout.pod_netns(pod.name, pod.sandbox)
    before = _pod_counter(pod_netns, "TcpExtPAWSTimewait")
    for url in (pod_ip, vip, pod_ip, vip):
        out = subprocess.run(
            ["hey", "-n", "3000", "-c", "20", "-disable-keepalive", f"http://{url}/"],
            capture_output=True, text=True, timeout=300,
        ).stdout
        assert re.search(r"\[200\]\s+3000 responses", out), out
        assert "Error distribution" not in out, out
    assert _pod_counter(pod_netns, "TcpExtPAWSTimewait") == before
