"""Commands and migrations at the same time: distinct clusters, right endpoints, honest waiting."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable

import pytest
from helpers import WEB_SERVICE, backend, migrate

from podhop.backends.local import pods as podops
from podhop.backends.local.apply import apply
from podhop.backends.local.cluster import LocalCluster, delete_cluster, open_cluster, residue
from podhop.migrate.engine import Migration, Options, execute, prepare
from podhop.migrate.rebalance import Result, execute_plan, rebalance
from podhop.policies.plan import Migration as PlannedMove
from podhop.policies.plan import Plan
from podhop.store import Store

pytestmark = pytest.mark.integration
PODHOP = [sys.executable, "-m", "podhop"]

NGINX = (
    """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: nginx, image: nginx, ports: [{containerPort: 80}]}]
---"""
    + WEB_SERVICE
)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PODHOP, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or dict(os.environ),
    )


def dnat_destinations(cluster: LocalCluster, ns: str | None = None) -> set[str]:
    argv = ["iptables", "-w", "-t", "nat", "-S"]
    if ns:
        argv = ["nsenter", f"--net=/var/run/netns/{ns}", "--", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    prefix = f"-A {cluster.layout.chain_prefix}-SEP"
    return {
        ln.split("--to-destination ")[1].split(":")[0] for ln in out.splitlines() if ln.startswith(prefix)
    }


def test_concurrent_creates_give_two_working_clusters(capable: None, store: Store) -> None:
    names = [f"cc-{secrets.token_hex(2)}" for _ in range(2)]
    procs = [run("cluster", "create", "--name", n, "--nodes", "2") for n in names]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        records = [store.cluster(n) for n in names]
        assert all(r is not None and r.status == "ready" for r in records)
        assert len({r.idx for r in records if r}) == 2
        for n in names:  # each works: a pod answers through its service
            c = open_cluster(store, n)
            apply(c, "web.yaml", NGINX.replace("replicas: 4", "replicas: 1"))
            assert podops.wait_ready(c.store.pods(c.name)) == []
            svc = c.store.services(c.name)[0]
            with urllib.request.urlopen(f"http://{svc.cluster_ip}/", timeout=5) as resp:
                assert resp.status == 200
    finally:
        for n in names:
            rec = store.cluster(n)
            if rec is not None:
                assert delete_cluster(store, n) == []
                assert residue(n, rec.idx) == []


def test_concurrent_clones_behind_one_service_keep_the_endpoints_right(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    """Two clone migrations of replicas behind one service, both detached at once: each sync keeps the
    other's source out; afterwards the service leads to exactly the pods that exist."""
    cluster = make_cluster(nodes=3)
    apply(cluster, "web.yaml", NGINX)
    pods = cluster.store.pods(cluster.name)
    assert podops.wait_ready(pods) == []
    movers = [p for p in pods if p.node != "node-3"][:2]
    both_detached = threading.Barrier(2, timeout=60)
    during: list[set[str]] = []

    def hook(phase: str, m: Migration) -> None:
        if phase == "dump":  # after "detach": wait until the other migration has detached too
            both_detached.wait()
            during.append(dnat_destinations(cluster))
            both_detached.wait()

    reserved: set[str] = set()
    prepared = [
        prepare(
            backend(cluster),
            p.name,
            "node-3",
            "clone",
            options=Options(on_phase=hook, measure_resources=False),
            reserved=reserved,
        )
        for p in movers
    ]
    errors: list[BaseException] = []

    def go(m: Migration) -> None:
        try:
            execute(m)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(m,)) for m in prepared]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    others = {p.ip for p in pods} - {p.ip for p in movers}
    assert during and all(d == others for d in during), (during, others)
    after = {p.ip for p in cluster.store.pods(cluster.name)}
    assert len(after) == 4 and {
        p.node for p in cluster.store.pods(cluster.name) if p.name in {m.name for m in movers}
    } == {"node-3"}
    for ns in (None, *(n.netns for n in cluster.nodes())):
        assert dnat_destinations(cluster, ns) == after
    assert cluster.store.objects("EndpointOverride", cluster.name) == []


def test_a_blocked_command_says_whom_it_waits_for_and_gives_up(cluster: LocalCluster) -> None:
    env = {**os.environ, "PODHOP_CLUSTER": cluster.name, "PODHOP_LOCK_TIMEOUT": "3"}
    with cluster.store.lock(cluster.name):
        proc = run("apply", "-f", "-", env=env)
        _, err = proc.communicate(NGINX, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err
    assert f"pid {os.getpid()}" in err and "waiting for cluster" in err, err
    assert "gave up waiting after 3 s" in err, err
    assert cluster.store.pods(cluster.name) == []


def test_rebalance_rechecks_each_step_before_it_runs(cluster: LocalCluster) -> None:
    """A plan made before someone else moved the pod: the step is skipped, saying why."""
    apply(cluster, "web.yaml", NGINX.replace("replicas: 4", "replicas: 1"))
    (pod,) = cluster.store.pods(cluster.name)
    moved_by_hand = next(n.name for n in cluster.nodes() if n.name != pod.node)
    target = next(n.name for n in cluster.nodes() if n.name not in (pod.node, moved_by_hand))
    plan = Plan("test", (), (PlannedMove(pod.name, pod.node, target, "cold", 0.0, 0.0),))
    migrate(cluster, pod.name, moved_by_hand, "cold", options=Options(measure_resources=False))
    result = Result("test", plan, 0.0)
    execute_plan(backend(cluster), result)
    assert result.migrations == [] and result.failed == []
    assert result.stale and f"on {moved_by_hand} now" in result.stale[0]["reason"]
    assert cluster.store.pods(cluster.name)[0].node == moved_by_hand


def test_rebalance_refuses_a_nonpositive_window(cluster: LocalCluster) -> None:
    env = {**os.environ, "PODHOP_CLUSTER": cluster.name}
    out = subprocess.run(
        [*PODHOP, "rebalance", "--policy", "hottest", "--window", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr and "--window" in out.stderr
    with pytest.raises(Exception, match="--window"):
        rebalance(backend(cluster), "hottest", window_s=0)
