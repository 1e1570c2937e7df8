"""The SQLite state store: round trips, deletion, and the cross-process cluster lock."""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhop.errors import AlreadyExistsError, ClusterError
from podhop.locks import LockTimeout
from podhop.store import (
    ClusterRecord,
    ContainerRecord,
    DeploymentRecord,
    NodeRecord,
    PodRecord,
    ServiceRecord,
    Store,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "s.db")
    yield s
    s.close()


def _cluster(name: str = "demo", idx: int = 0) -> ClusterRecord:
    return ClusterRecord(name, idx, "ready", 2000, 2**30, 100_000_000, created="2024-01-01T00:00:00Z")


def _node(cluster: str, i: int) -> NodeRecord:
    return NodeRecord(
        cluster=cluster, name=f"node-{i}", idx=i, ip=f"10.200.0.{10 + i}", pod_cidr=f"10.200.{i}.0/24",
        cpu_m=2000, memory_b=2**30, bandwidth_bps=None if i % 2 else 50_000_000,
        netns=f"ph-{cluster}.node-{i}", created="2024-01-01T00:00:01Z",
    )


def _container(name: str) -> ContainerRecord:
    return ContainerRecord(
        name=name, image="docker.io/library/nginx:1.25", runtime_id=f"demo-abc123-{name}",
        bundle=f"/var/lib/podhop/{name}/bundle", log=f"/var/log/{name}.log", exit_file=f"/run/{name}.exit",
        pid_file=f"/run/{name}.pid", monitor_pid=4242, ports=[80, 443],
    )


def _pod(cluster: str, name: str, namespace: str = "default") -> PodRecord:
    return PodRecord(
        cluster=cluster, namespace=namespace, name=name, uid="0123456789abcdef", node="node-1",
        sandbox="abc123",
        netns=f"ph-{cluster}.{name}.abc123", ip="10.200.1.2", labels={"app": "web", "tier": "front"},
        spec={"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]},
        owner_kind="Deployment", owner_name="web", phase="Running",
        containers=[_container("web"), _container("sidecar")], created="2024-01-01T00:00:02Z",
        started="2024-01-01T00:00:03Z",
    )


def _service(cluster: str, name: str, namespace: str = "default") -> ServiceRecord:
    return ServiceRecord(
        cluster=cluster, namespace=namespace, name=name, type="LoadBalancer", cluster_ip="10.200.250.10",
        selector={"app": "web"},
        ports=[{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}],
        labels={"team": "a"}, created="2024-01-01T00:00:04Z",
    )


def _deployment(cluster: str, name: str, namespace: str = "default") -> DeploymentRecord:
    return DeploymentRecord(
        cluster=cluster, namespace=namespace, name=name, replicas=3, selector={"app": "web"},
        labels={"app": "web"},
        template={"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web"}]}},
        template_hash="5d4f7c9b8", created="2024-01-01T00:00:05Z",
    )


def test_empty_store(store: Store) -> None:
    assert store.clusters() == []
    assert store.cluster("demo") is None
    assert store.nodes("demo") == []
    assert store.pods("demo") == []
    assert store.services("demo") == []
    assert store.deployments("demo") == []


def test_cluster_round_trip(store: Store) -> None:
    rec = _cluster()
    store.put_cluster(rec)
    assert store.cluster("demo") == rec
    assert store.clusters() == [rec]
    no_limit = ClusterRecord("other", 1, "creating", 1000, 2**29, None)
    store.put_cluster(no_limit)
    got = store.cluster("other")
    assert got == no_limit
    assert got is not None and got.link_bandwidth_bps is None
    assert [c.name for c in store.clusters()] == ["demo", "other"]


def test_cluster_update_replaces(store: Store) -> None:
    rec = _cluster()
    store.put_cluster(rec)
    rec.status = "deleting"
    store.put_cluster(rec)
    assert store.clusters() == [rec]
    got = store.cluster("demo")
    assert got is not None and got.status == "deleting"


def test_default_created_timestamp_survives(store: Store) -> None:
    rec = ClusterRecord("demo", 0, "ready", 1000, 2**30, None)
    assert rec.created.endswith("Z")
    store.put_cluster(rec)
    got = store.cluster("demo")
    assert got is not None and got.created == rec.created


def test_nodes_round_trip_sorted_by_index(store: Store) -> None:
    nodes = [_node("demo", i) for i in (10, 2, 1)]
    for n in nodes:
        store.put_node(n)
    got = store.nodes("demo")
    assert got == sorted(nodes, key=lambda n: n.idx)
    assert [n.name for n in got] == ["node-1", "node-2", "node-10"]
    assert got[0].bandwidth_bps is None
    assert got[1].bandwidth_bps == 50_000_000


def test_pod_round_trip_with_containers(store: Store) -> None:
    pod = _pod("demo", "web-0")
    store.put_pod(pod)
    got = store.pods("demo")
    assert got == [pod]
    assert all(isinstance(c, ContainerRecord) for c in got[0].containers)
    assert got[0].containers[1].ports == [80, 443]


def test_pod_with_defaults_round_trip(store: Store) -> None:
    pod = PodRecord("demo", "default", "bare", "uid", "node-1", "abc123", "ns", "10.200.1.3", {}, {})
    store.put_pod(pod)
    assert store.pods("demo") == [pod]
    assert store.pods("demo")[0].containers == []
    assert store.pods("demo")[0].owner_kind is None


def test_pod_update_replaces(store: Store) -> None:
    pod = _pod("demo", "web-0")
    store.put_pod(pod)
    pod.phase = "Succeeded"
    pod.containers.pop()
    store.put_pod(pod)
    got = store.pods("demo")
    assert len(got) == 1
    assert got[0].phase == "Succeeded"
    assert [c.name for c in got[0].containers] == ["web"]


def test_same_name_in_two_namespaces(store: Store) -> None:
    store.put_pod(_pod("demo", "web", namespace="default"))
    store.put_pod(_pod("demo", "web", namespace="prod"))
    assert [(p.namespace, p.name) for p in store.pods("demo")] == [("default", "web"), ("prod", "web")]
    store.remove("Pod", "demo", "prod", "web")
    assert [(p.namespace, p.name) for p in store.pods("demo")] == [("default", "web")]


def test_objects_listed_by_namespace_then_name(store: Store) -> None:
    for ns, name in [("b", "x"), ("a", "z"), ("a", "y")]:
        store.put_pod(_pod("demo", name, namespace=ns))
    assert [(p.namespace, p.name) for p in store.pods("demo")] == [("a", "y"), ("a", "z"), ("b", "x")]


def test_service_round_trip(store: Store) -> None:
    svc = _service("demo", "web")
    store.put_service(svc)
    assert store.services("demo") == [svc]


def test_deployment_round_trip(store: Store) -> None:
    dep = _deployment("demo", "web")
    store.put_deployment(dep)
    assert store.deployments("demo") == [dep]


def test_kinds_do_not_mix(store: Store) -> None:
    store.put_pod(_pod("demo", "web"))
    store.put_service(_service("demo", "web"))
    store.put_deployment(_deployment("demo", "web"))
    assert len(store.pods("demo")) == 1
    assert len(store.services("demo")) == 1
    assert len(store.deployments("demo")) == 1
    store.remove("Service", "demo", "default", "web")
    assert store.services("demo") == []
    assert len(store.pods("demo")) == 1
    assert len(store.deployments("demo")) == 1


def test_state_is_shared_between_store_instances(tmp_path: Path) -> None:
    a = Store(tmp_path / "s.db")
    b = Store(tmp_path / "s.db")
    try:
        a.put_cluster(_cluster())
        a.put_pod(_pod("demo", "web-0"))
        assert b.cluster("demo") == _cluster()
        assert b.pods("demo") == [_pod("demo", "web-0")]
    finally:
        a.close()
        b.close()


def test_delete_cluster_removes_only_that_cluster(store: Store) -> None:
    for name, idx in (("a", 0), ("a-b", 1)):
        store.put_cluster(_cluster(name, idx))
        store.put_node(_node(name, 1))
        store.put_node(_node(name, 2))
        store.put_pod(_pod(name, "web-0"))
        store.put_service(_service(name, "web"))
        store.put_deployment(_deployment(name, "web"))

    store.delete_cluster("a")

    assert store.cluster("a") is None
    assert store.nodes("a") == []
    assert store.pods("a") == []
    assert store.services("a") == []
    assert store.deployments("a") == []

    assert store.cluster("a-b") == _cluster("a-b", 1)
    assert [c.name for c in store.clusters()] == ["a-b"]
    assert [n.name for n in store.nodes("a-b")] == ["node-1", "node-2"]
    assert store.pods("a-b") == [_pod("a-b", "web-0")]
    assert store.services("a-b") == [_service("a-b", "web")]
    assert store.deployments("a-b") == [_deployment("a-b", "web")]

    # the index of the deleted cluster can be reused
    store.put_cluster(_cluster("c", 0))
    assert [c.name for c in store.clusters()] == ["a-b", "c"]


def test_delete_unknown_cluster_is_harmless(store: Store) -> None:
    store.put_cluster(_cluster())
    store.delete_cluster("nope")
    assert store.clusters() == [_cluster()]


# the cluster lock
#
# The child process signals through files, not multiprocessing Events: a process killed while
# waiting on an Event leaves it unusable (Event.set() then blocks forever).

BOUND = 10.0  # seconds: upper bound of every wait below


def _wait_for(path: Path, timeout: float = BOUND) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _hold_lock(db: str, cluster: str, held: str, release: str) -> None:
    s = Store(Path(db))
    with s.lock(cluster):
        Path(held).touch()
        _wait_for(Path(release))
    s.close()


def _acquire_in_thread(db: Path, cluster: str) -> tuple[threading.Thread, threading.Event]:
    acquired = threading.Event()

    def run() -> None:
        s = Store(db)
        try:
            with s.lock(cluster):
                acquired.set()
        finally:
            s.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, acquired


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[multiprocessing.process.BaseProcess, Path, Path]]:
    """A child process holding the lock of cluster "demo" until ``release`` exists."""
    db = tmp_path / "s.db"
    Store(db).close()
    held, release = tmp_path / "held", tmp_path / "release"
    child = multiprocessing.get_context("spawn").Process(
        target=_hold_lock, args=(str(db), "demo", str(held), str(release))
    )
    child.start()
    try:
        assert _wait_for(held), "child never took the lock"
        yield child, db, release
    finally:
        release.touch()
        child.join(BOUND)
        if child.is_alive():
            child.kill()
            child.join(BOUND)


def test_lock_is_exclusive_across_processes(
    holder: tuple[multiprocessing.process.BaseProcess, Path, Path],
) -> None:
    child, db, release = holder
    # another cluster's lock is independent
    t_other, other = _acquire_in_thread(db, "other")
    assert other.wait(BOUND), "the lock of another cluster was blocked"
    t_other.join(BOUND)

    t, acquired = _acquire_in_thread(db, "demo")
    assert not acquired.wait(1.0), "took the lock while another process held it"
    assert child.is_alive()
    release.touch()
    assert acquired.wait(BOUND), "lock not granted after the other process released it"
    t.join(BOUND)
    assert not t.is_alive()
    child.join(BOUND)
    assert child.exitcode == 0


def test_lock_is_released_when_the_holder_dies(
    holder: tuple[multiprocessing.process.BaseProcess, Path, Path],
) -> None:
    child, db, _ = holder
    t, acquired = _acquire_in_thread(db, "demo")
    assert not acquired.wait(0.5), "took the lock while another process held it"
    child.kill()
    child.join(BOUND)
    assert acquired.wait(BOUND), "lock not granted after its holder was killed"
    t.join(BOUND)


def test_lock_is_released_on_exception(store: Store) -> None:
    with pytest.raises(RuntimeError), store.lock("demo"):
        raise RuntimeError("boom")
    t, acquired = _acquire_in_thread(store.path, "demo")
    assert acquired.wait(BOUND)
    t.join(BOUND)


def test_a_waiter_is_told_who_holds_the_lock_and_gives_up(
    holder: tuple[multiprocessing.process.BaseProcess, Path, Path],
) -> None:
    child, db, _ = holder
    heard: list[str] = []
    s = Store(db, on_lock_wait=lambda msg, waited: heard.append(msg))
    try:
        start = time.monotonic()
        with pytest.raises(LockTimeout) as err, s.lock("demo", timeout=1.5):
            pass
        assert 1.5 <= time.monotonic() - start < BOUND
    finally:
        s.close()
    assert f"pid {child.pid}" in str(err.value) and "gave up" in str(err.value)
    assert heard and all(f"pid {child.pid}" in m and "cluster demo" in m for m in heard)


def test_lock_is_reentrant_in_a_thread_and_exclusive_between_threads(store: Store) -> None:
    with store.lock("demo"), store.lock("demo"):  # nested: no deadlock
        t, acquired = _acquire_in_thread(store.path, "demo")
        assert not acquired.wait(0.5), "another thread of this process took a held lock"
    assert acquired.wait(BOUND)
    t.join(BOUND)


def _create_many(db: str, prefix: str, n: int) -> None:
    s = Store(Path(db))
    try:
        for i in range(n):
            s.add_cluster(lambda idx, i=i: ClusterRecord(f"{prefix}{i}", idx, "ready", 1000, 2**30, None), 50)
    finally:
        s.close()


def test_concurrent_creates_get_distinct_indexes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    Store(db).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_create_many, args=(str(db), p, 10)) for p in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(BOUND * 3)
        assert p.exitcode == 0
    s = Store(db)
    try:
        clusters = s.clusters()
        assert len(clusters) == 30
        assert sorted(c.idx for c in clusters) == list(range(30))
        with pytest.raises(AlreadyExistsError):
            s.add_cluster(lambda idx: ClusterRecord("a0", idx, "ready", 1000, 2**30, None), 50)
        with pytest.raises(ClusterError, match="at most"):
            s.add_cluster(lambda idx: ClusterRecord("full", idx, "ready", 1000, 2**30, None), 30)
    finally:
        s.close()


def test_an_index_is_never_silently_replaced(store: Store) -> None:
    store.put_cluster(_cluster("one", 0))
    with pytest.raises(sqlite3.IntegrityError):
        store.put_cluster(_cluster("two", 0))
    assert [c.name for c in store.clusters()] == ["one"]
