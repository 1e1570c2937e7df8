"""A pod of two containers migrates whole: NGINX and a Redis sidecar in one pod network, cold and clone,
on the local kind and on the Kubernetes kind (issue 11; podmigration-operator's issue #18 moved one).

Each container holds state only its checkpointed processes know, so a container started afresh on the
target (or left behind) fails the test:

- the sidecar's Redis keeps its keys, a counter and its ``run_id`` in memory only (no RDB, no AOF): a
  fresh Redis would be empty and draw a new ``run_id``;
- NGINX was reloaded before the move, so its workers have pids a fresh start does not give (CRIU
  restores pids); it serves a page written into its root filesystem (the checkpoint's rootfs diff)
  through its Service and its pod address;
- each reaches the other on ``127.0.0.1``: they share one network namespace on the target too.

The migrations run as a user runs them (``podhop migrate … -o json`` in its own process). After each
one: one pod, on the target, both containers running; the source gone; nothing left on any node (the
local kind: ``helpers.local_leftovers``; the Kubernetes kind: ``helpers.kube_checkpoint_debris`` and the
namespace's deletion). The Kubernetes tests share one cluster for the module and skip, saying why, where
the kind cannot run.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    Ns,
    external_ip,
    kube_checkpoint_debris,
    kube_cluster,
    kube_namespace,
    kube_unavailable,
    local_leftovers,
    podhop,
    ready,
    wait_serving,
)

from podhop.backends.local.cluster import LocalCluster

pytestmark = pytest.mark.integration

KEYS = 2000
CONTAINERS = {"nginx", "cache"}


def duo(node: str, service_type: str) -> list[dict[str, Any]]:
    """The pod (NGINX + a Redis sidecar keeping everything in memory) pinned to ``node``, and its Service."""
    redis_args = ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "duo", "labels": {"app": "duo"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [
                {"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]},
                {"name": "cache", "image": "redis", "args": redis_args, "ports": [{"containerPort": 6379}]},
            ],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "duo"},
        "spec": {"type": service_type, "selector": {"app": "duo"}, "ports": [{"port": 80}]},
    }
    return [pod, service]


#: Runs argv in one container of the pod; returns its stdout (fails the test on a non-zero exit).
Run = Callable[[str, Sequence[str]], str]


@dataclass(frozen=True)
class State:
    """What the pod's processes hold before the move."""

    marker: str  # Redis key ``marker`` and k:<i> = <marker>-<i>; NGINX's /duo.txt
    run_id: str  # Redis' own, drawn at its start
    counter: int
    fresh_workers: frozenset[int]  # NGINX's worker pids as started
    workers: frozenset[int]  # after the reload: what the restored process tree must have


def redis(run: Run, *args: str) -> str:
    return run("cache", ["redis-cli", *args]).strip()


def run_id(run: Run) -> str:
    info = dict(
        ln.split(":", 1) for ln in redis(run, "INFO", "server").splitlines() if ":" in ln and ln[0] != "#"
    )
    return info["run_id"].strip()


def nginx_workers(run: Run) -> frozenset[int]:
    """The pids of NGINX's processes but its master (pid 1)."""
    pids = {int(p) for p in run("nginx", ["pgrep", "-x", "nginx"]).split()}
    assert 1 in pids, f"NGINX's master is not the container's init: {pids}"
    return frozenset(pids - {1})


def seed(run: Run) -> State:
    """Give both containers state that lives only in their processes (and NGINX a page on its disk)."""
    marker = secrets.token_hex(8)
    script = f'for i in $(seq 1 {KEYS}); do echo "SET k:$i {marker}-$i"; done | redis-cli --pipe'
    out = run("cache", ["bash", "-c", script])
    assert f"errors: 0, replies: {KEYS}" in out, out
    assert redis(run, "SET", "marker", marker) == "OK"
    assert redis(run, "INCRBY", "counter", "41") == "41"
    run("nginx", ["bash", "-c", f"echo {marker} > /var/www/html/duo.txt"])
    fresh = nginx_workers(run)
    run("nginx", ["bash", "-c", "kill -HUP 1"])  # a reload: new workers, new pids
    deadline = time.monotonic() + 30
    while (workers := nginx_workers(run)) & fresh or len(workers) < len(fresh):
        assert time.monotonic() < deadline, f"NGINX's reload did not replace {fresh}: {workers}"
        time.sleep(0.2)
    state = State(marker, run_id(run), 41, fresh, workers)
    assert_state(run, state, first=True)
    return state


def assert_state(run: Run, before: State, first: bool = False) -> None:
    """Every container holds what it held: the sidecar's keys, counter and run_id, NGINX's workers and
    page; each reaches the other on 127.0.0.1 (one pod network)."""
    assert run_id(run) == before.run_id, "the sidecar's Redis was started afresh, not restored"
    assert int(redis(run, "DBSIZE")) == KEYS + 2
    assert redis(run, "GET", "marker") == before.marker
    assert redis(run, "GET", "k:1234") == f"{before.marker}-1234"
    assert redis(run, "MGET", "k:1", f"k:{KEYS}").split() == [f"{before.marker}-1", f"{before.marker}-{KEYS}"]
    if not first:  # live, not frozen: the counter goes on from where it was
        assert redis(run, "INCR", "counter") == str(before.counter + 1)
    workers = nginx_workers(run)
    assert workers == before.workers, f"NGINX's workers {workers}: not the ones moved ({before.workers})"
    assert not workers & before.fresh_workers
    page = run("cache", ["curl", "-sf", "--max-time", "5", "http://127.0.0.1/duo.txt"]).strip()
    assert page == before.marker, "the sidecar does not reach NGINX on 127.0.0.1"
    assert run("nginx", ["redis-cli", "-h", "127.0.0.1", "GET", "marker"]).strip() == before.marker


def fetch(host: str, port: int, path: str = "/duo.txt", timeout: float = 5) -> str | None:
    """The page's text, or None (the failure is printed)."""
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as resp:
            return str(resp.read().decode().strip())
    except OSError as exc:
        print(f"GET {host}:{port}{path}: {exc!r} after {time.monotonic() - t0:.2f} s")
        return None


def assert_serves(host: str, port: int, marker: str, n: int = 10) -> None:
    """n fresh connections in a row get NGINX's page (bounded: ≤ 5n seconds)."""
    got = [fetch(host, port) for _ in range(n)]
    assert got == [marker] * n, f"{host}:{port} answered {got}"


def wait_serves(host: str, port: int, marker: str, n: int = 10, within: float = 60) -> None:
    """Until n fresh connections in a row get NGINX's page: a new LoadBalancer address is served by
    each node once its kube-proxy has the rules, and the host's connections spread over the nodes."""
    deadline, streak = time.monotonic() + within, 0
    while streak < n:
        assert time.monotonic() < deadline, f"{host}:{port} never answered {n} times in a row"
        if fetch(host, port, timeout=2) == marker:
            streak += 1
        else:
            streak = 0
            time.sleep(0.2)


def per_container(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The report's figures per container: each container's checkpoint crossed the link and landed,
    and the pod's totals are their sums."""
    moved = {c["container"]: c for c in report["containers"]}
    assert set(moved) == CONTAINERS, report["containers"]
    for key in ("bytes_transferred", "image_bytes", "memory_pages_bytes"):
        assert sum(c[key] for c in moved.values()) == report[key], (key, report)
    for name, c in moved.items():
        assert c["bytes_transferred"] > 0 and c["image_bytes"] > 0, (name, c)
    return moved


# ---------------------------------------------------------------------------------- the local kind


def local_run(cluster: LocalCluster) -> Run:
    def run(container: str, argv: Sequence[str]) -> str:
        out = podhop(cluster, "exec", "duo", "-c", container, "--", *argv, timeout=60)
        assert out.returncode == 0, f"{container}: {' '.join(argv)}: {out.stderr}"
        return out.stdout

    return run


def local_pod(cluster: LocalCluster) -> dict[str, Any]:
    out = podhop(cluster, "get", "pods", "-o", "json")
    assert out.returncode == 0, out.stderr
    (pod,) = json.loads(out.stdout)["items"]
    assert isinstance(pod, dict)
    return pod


@pytest.mark.parametrize("strategy", ["cold", "clone"])
def test_two_containers_move_whole_on_the_local_kind(
    make_cluster: Callable[..., LocalCluster], tmp_path: Path, strategy: str
) -> None:
    cluster = make_cluster(nodes=2)
    manifest = tmp_path / "duo.yaml"
    manifest.write_text(yaml.safe_dump_all(duo("node-1", "ClusterIP")))
    out = podhop(cluster, "apply", "-f", str(manifest))
    assert out.returncode == 0, out.stderr
    run = local_run(cluster)
    deadline = time.monotonic() + 30
    while fetch(local_pod(cluster)["status"]["podIP"], 80, "/") is None:
        assert time.monotonic() < deadline, "NGINX never answered"
        time.sleep(0.2)
    before = local_pod(cluster)
    state = seed(run)
    svc = json.loads(podhop(cluster, "get", "services", "-o", "json").stdout)["items"][0]
    vip = svc["spec"]["clusterIP"]
    assert_serves(vip, 80, state.marker)

    out = podhop(cluster, "migrate", "duo", "--to", "node-2", "--strategy", strategy, "-o", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    print(f"\nlocal {strategy}: downtime {report['downtime_ms']} ms, phases {report['phases']}")

    after = local_pod(cluster)  # the only pod: the source is gone
    assert after["metadata"]["name"] == "duo" and after["spec"]["nodeName"] == "node-2"
    assert after["status"]["podIP"] == report["new_ip"] != before["status"]["podIP"]
    assert after["status"]["phase"] == "Running"
    statuses = {c["name"]: c for c in after["status"]["containerStatuses"]}
    assert set(statuses) == CONTAINERS and all(c["ready"] for c in statuses.values()), statuses
    old_ids = {c["containerID"] for c in before["status"]["containerStatuses"]}
    assert not old_ids & {c["containerID"] for c in statuses.values()}
    assert_state(run, state)
    assert_serves(vip, 80, state.marker)
    assert_serves(after["status"]["podIP"], 80, state.marker)
    assert fetch(before["status"]["podIP"], 80, "/", timeout=2) is None, "the source's address still answers"
    per_container(report)
    assert local_leftovers(cluster) == []
    (record,) = cluster.store.pods(cluster.name)
    assert {c["id"] for c in cluster.runc.list()} == {c.runtime_id for c in record.containers}


# ------------------------------------------------------------------------------ the Kubernetes kind


@pytest.fixture(scope="module")
def kcluster() -> Iterator[Any]:
    if (why := kube_unavailable()) is not None:
        pytest.skip(why)
    with kube_cluster("wp") as c:
        yield c


@pytest.fixture
def ns(kcluster: Any, tmp_path: Path) -> Iterator[Ns]:
    with kube_namespace(kcluster, tmp_path) as n:
        yield n


@pytest.fixture
def dead_pods(kcluster: Any) -> Iterator[list[str]]:
    """Addresses of pods a test saw go; afterwards every node forgets the TCP connections it had
    translated to them.

    kube-proxy drops a removed endpoint's conntrack entries for UDP only (kubernetes#101607): the
    SYNs a frozen cold-migration source never answered stay pinned to its address for two minutes
    (nf_conntrack's SYN_SENT timeout), so a later connection from a reused host port — the next test's,
    to the reused LoadBalancer address — would follow one to a pod that is gone. Each test here leaves
    the nodes' tables as a fresh cluster's."""
    ips: list[str] = []
    yield ips
    for i in range(1, 4):
        for ip in ips:
            argv = ["ip", "netns", "exec", kcluster.layout.node_netns(i), "conntrack", "-D", "-p", "tcp"]
            subprocess.run([*argv, "--reply-src", ip], capture_output=True, timeout=30, check=False)


def pinned_to(kcluster: Any, ip: str) -> int:
    """How many of the nodes' conntrack entries still translate to ``ip``."""
    n = 0
    for i in range(1, 4):
        argv = ["ip", "netns", "exec", kcluster.layout.node_netns(i), "conntrack", "-L", "--reply-src", ip]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
        n += len(out.splitlines())
    return n


def kube_run(ns: Ns, pod: str) -> Run:
    def run(container: str, argv: Sequence[str]) -> str:
        return ns.kubectl("exec", pod, "-c", container, "--", *argv, timeout=60)

    return run


@pytest.mark.parametrize("strategy", ["cold", "clone"])
def test_two_containers_move_whole_on_kubernetes(
    kcluster: Any, ns: Ns, dead_pods: list[str], strategy: str
) -> None:
    for doc in duo("node-1", "LoadBalancer"):
        ns.apply(doc)
    ns.kubectl("wait", "--for=condition=Ready", "pod/duo", "--timeout=120s", timeout=130)
    before = ns.get("pod", "duo")
    state = seed(kube_run(ns, "duo"))
    lb = external_ip(ns, "duo")
    wait_serving(lb)
    wait_serves(lb, 80, state.marker)

    out = ns.podhop("migrate", "duo", "--to", "node-3", "--strategy", strategy, "-o", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    print(f"\nkubernetes {strategy}: downtime {report['downtime_ms']} ms, phases {report['phases']}")
    new = report["new_pod"]
    assert new and report["source_node"] == "node-1" and report["target_node"] == "node-3"
    dead_pods.append(before["status"]["podIP"])

    deadline = time.monotonic() + 60  # a clone's source leaves after its grace period
    while (names := [p["metadata"]["name"] for p in ns.pods()]) != [new]:
        assert time.monotonic() < deadline, f"the source did not go: {names}"
        time.sleep(0.5)
    pods = ns.pods()
    (pod,) = pods
    assert pod["spec"]["nodeName"] == "node-3" and ready(pod)
    assert pod["metadata"]["labels"] == before["metadata"]["labels"]
    assert pod["status"]["podIP"] == report["new_ip"] != before["status"]["podIP"]
    statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
    assert set(statuses) == CONTAINERS, statuses
    for name, c in statuses.items():
        assert c["ready"] and "running" in c["state"] and c["restartCount"] == 0, (name, c)
    assert_state(kube_run(ns, new), state)
    assert_serves(lb, 80, state.marker)
    assert_serves(pod["status"]["podIP"], 80, state.marker)
    assert fetch(before["status"]["podIP"], 80, "/", timeout=2) is None, "the source's address still answers"
    per_container(report)
    assert kube_checkpoint_debris(ns.layout) == []
    print(f"conntrack entries still pinned to the source: {pinned_to(kcluster, before['status']['podIP'])}")
