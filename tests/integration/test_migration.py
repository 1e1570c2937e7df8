"""Live migration on a real local cluster: every strategy, state, load, and every injected fault.

Each test runs real runc containers and real CRIU on a fresh cluster (see
``conftest``). Faults are real, not mocked: a corrupted CRIU image, a node link
taken down, a full file system, a deadline, a SIGINT. After each fault the
same checks run (``assert_source_intact``): the source still answers through
its service VIP and its own address, its record is unchanged, runc knows only
the cluster's own containers, no pod namespace, sandbox directory, cgroup or
helper process of the attempted target is left, the source's namespace holds
no CRIU network lock, the service still points at the source — and the error
names the phase that failed and why.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import migrate

from podhop.backends.local import pods as podops
from podhop.backends.local.apply import apply
from podhop.backends.local.cluster import LocalCluster, monitor_pids, mounts_under
from podhop.errors import PodhopError
from podhop.migrate.engine import Migration, Options
from podhop.migrate.plan import MigrationError
from podhop.migrate.probe import Probe, request_for, summarize
from podhop.net import netns
from podhop.runtime import cgroups, criu
from podhop.runtime.mounts import mount_table
from podhop.sh import default_sigint
from podhop.store import PodRecord

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PODHOP = [sys.executable, "-m", "podhop"]
REDIS = 6379

# --- small clients: a RESP (Redis) client over a plain socket, an "is it answering" check -----------


class RespError(Exception):
    """An error reply (``-ERR ...``) from Redis."""


class Resp:
    """A minimal Redis client: RESP over one TCP connection, with pipelining."""

    def __init__(self, ip: str, port: int = REDIS, timeout: float = 2.0) -> None:
        self.sock = socket.create_connection((ip, port), timeout=timeout)
        self.rf = self.sock.makefile("rb")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.rf.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def encode(*args: str | bytes | int) -> bytes:
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(parts)

    def read(self) -> Any:
        line = self.rf.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed mid-reply")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body
        if kind == b"-":
            return RespError(body.decode(errors="replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            n = int(body)
            if n < 0:
                return None
            data = self.rf.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("connection closed mid-reply")
            return data[:-2]
        if kind == b"*":
            n = int(body)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError(f"unexpected reply {line[:40]!r}")

    def call(self, *args: str | bytes | int) -> Any:
        self.sock.sendall(self.encode(*args))
        reply = self.read()
        if isinstance(reply, RespError):
            raise reply
        return reply

    def pipeline(self, commands: list[tuple[str | bytes | int, ...]]) -> list[Any]:
        self.sock.sendall(b"".join(self.encode(*c) for c in commands))
        return [self.read() for _ in commands]


def answers(ip: str, port: int, timeout: float = 1.0) -> bool:
    """One fresh connection, one request (HTTP GET, or Redis PING on 6379): a good answer?"""
    request, expect = request_for(port)
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.sendall(request)
            return s.recv(64).startswith(expect)
    except OSError:
        return False


def serves(ip: str, port: int, n: int = 20) -> int:
    """How many of ``n`` fresh connections in a row were answered (bounded: ≤ n seconds)."""
    return sum(answers(ip, port) for _ in range(n))


# --- cluster helpers --------------------------------------------------------------------------------


def pod_named(cluster: LocalCluster, name: str) -> PodRecord:
    return next(p for p in cluster.store.pods(cluster.name) if p.name == name)


def service_vip(cluster: LocalCluster, name: str) -> tuple[str, int]:
    svc = next(s for s in cluster.store.services(cluster.name) if s.name == name)
    return svc.cluster_ip, int(svc.ports[0]["port"])


def other_node(cluster: LocalCluster, node: str) -> str:
    return next(n.name for n in cluster.nodes() if n.name != node)


def deploy_redis(cluster: LocalCluster) -> tuple[PodRecord, tuple[str, int]]:
    apply(cluster, str(EXAMPLES / "redis.yaml"))
    (pod,) = cluster.store.pods(cluster.name)
    assert podops.wait_ready([pod], timeout=15) == []
    return pod, service_vip(cluster, "redis")


def sh(*argv: str, timeout: float = 30) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True).stdout


def criu_lock(pod_netns: str) -> str:
    """CRIU's network-lock rules in a pod's namespace (iptables and ip6tables), '' when none."""
    path = str(netns.netns_path(pod_netns))
    out = ""
    for tool in ("iptables", "ip6tables"):
        out += "".join(
            ln + "\n" for ln in sh("nsenter", f"--net={path}", tool, "-w", "-S").splitlines() if "CRIU" in ln
        )
    return out


def dnat_destinations(cluster: LocalCluster) -> set[str]:
    rules = sh("iptables", "-w", "-t", "nat", "-S")
    prefix = f"-A {cluster.layout.chain_prefix}-SEP"
    return {
        ln.split("--to-destination ")[1]
        for ln in rules.splitlines()
        if ln.startswith(prefix) and "DNAT" in ln
    }


def files_under(top: Path) -> list[str]:
    return sorted(str(Path(r) / f) for r, _, fs in os.walk(top) for f in fs) if top.exists() else []


@dataclass
class Recorder:
    """An ``on_phase`` hook that records the phases and keeps the :class:`Migration` for inspection."""

    phases: list[str] = field(default_factory=list)
    migration: Migration | None = None
    at: dict[str, Callable[[Migration], None]] = field(default_factory=dict)

    def __call__(self, phase: str, m: Migration) -> None:
        self.phases.append(phase)
        self.migration = m
        if phase in self.at:
            self.at[phase](m)


def opts(
    hook: Recorder | None = None,
    timeout_s: float = 60.0,
    probe: bool = True,
    resources: bool = False,
    stream_pages: bool = False,
) -> Options:
    """``stream_pages``: memory goes to a page server on the target whatever the container's size
    (by default only from 64 MiB)."""
    o = Options(timeout_s=timeout_s, probe=probe, measure_resources=resources, on_phase=hook)
    if stream_pages:
        o.stream_pages_from_b = 0
    return o


def assert_source_intact(
    cluster: LocalCluster,
    before: PodRecord,
    target: str,
    m: Migration | None,
    vip: tuple[str, int] | None,
    *,
    source_checkpoints: bool = True,
) -> None:
    """After a failed migration: the source serves as before and nothing of the target attempt is left.

    ``source_checkpoints=False`` skips the check that the source's checkpoint files are gone
    (an interrupt leaves them: see ``test_interrupt_leaves_no_checkpoint_files``).
    """
    pods = cluster.store.pods(cluster.name)
    after = pod_named(cluster, before.name)
    assert (after.node, after.ip, after.sandbox, after.netns, after.phase) == (
        before.node,
        before.ip,
        before.sandbox,
        before.netns,
        "Running",
    )
    assert [c.runtime_id for c in after.containers] == [c.runtime_id for c in before.containers]
    port = before.containers[0].ports[0]
    # Serving: through its own address and through the service, every one of 20 fresh connections.
    assert serves(before.ip, port) == 20, f"source {before.ip}:{port} does not answer"
    if vip is not None:
        assert serves(*vip) == 20, f"service {vip} does not answer"
        assert {d.rsplit(":", 1)[0] for d in dnat_destinations(cluster)} == {p.ip for p in pods}
    # No CRIU network lock left in the source's namespace.
    assert criu_lock(before.netns) == ""
    # runc: exactly the cluster's containers (the source's among them), all running, none frozen.
    expected = {c.runtime_id for p in pods for c in p.containers}
    assert {c["id"]: c["status"] for c in cluster.runc.list()} == dict.fromkeys(expected, "running")
    # Namespaces: the nodes' and the pods' in the store, nothing else.
    node_ns = {n.netns for n in cluster.nodes()}
    assert set(netns.list_netns(cluster.layout.netns_prefix)) - node_ns == {p.netns for p in pods}
    # The target node: no sandbox directory other than its pods', no mounts, no cgroup of the attempt.
    target_dir = cluster.node_dir(target) / "pods"
    on_target = {podops.pod_dir(cluster, target, p.name, p.sandbox).name for p in pods if p.node == target}
    assert {d.name for d in target_dir.iterdir()} == on_target
    ours = [str(target_dir / d) for d in on_target]
    assert [
        pt for pt in mounts_under(target_dir) if pt != str(target_dir) and not pt.startswith(tuple(ours))
    ] == []
    if m is not None:
        assert not netns.exists(m.driver.new.netns)
        assert cgroups.leftovers(cgroups.relpath(cluster.name, target, m.driver.new.sandbox)) == []
        for mv in m.driver.moves:
            assert cluster.runc.state(mv.target.runtime_id) is None
    # Nobody (an orphaned CRIU) still holds the source's processes under ptrace.
    for pid in cgroups.procs(cgroups.relpath(cluster.name, before.node, before.sandbox)):
        with contextlib.suppress(FileNotFoundError):
            status = Path(f"/proc/{pid}/status").read_text()
            assert "TracerPid:\t0\n" in status, f"source process {pid} is still traced:\n{status[:400]}"
    # No helper process of the attempt (page server, lazy-pages daemon, transfer ends) survives:
    # the only processes naming the cluster's directory are the pods' monitors.
    monitors = {c.monitor_pid for p in pods for c in p.containers}
    assert set(monitor_pids(cluster.dir)) == monitors
    # The source's checkpoint files are gone.
    if source_checkpoints:
        assert files_under(cluster.node_dir(before.node) / "checkpoints") == []


def checkpoint_debris(cluster: LocalCluster) -> list[str]:
    return [f for n in cluster.nodes() for f in files_under(cluster.node_dir(n.name) / "checkpoints")]


# --- Redis writer: SET key-i=i through the service, recording which writes were acknowledged --------


@dataclass
class Writer:
    """Writes ``w:i = i`` one at a time (fresh index per attempt), reconnecting on any error."""

    ip: str
    port: int = REDIS
    max_writes: int = 300_000
    max_s: float = 45.0
    acked: dict[int, float] = field(default_factory=dict)  # index -> time.monotonic() of the +OK
    errors: int = 0
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Writer:
        self.thread = threading.Thread(target=self._run, name="redis-writer", daemon=True)
        self.thread.start()
        return self

    def acked_since(self, t: float) -> int:
        # list() copies the values under the GIL: the writer thread may be inserting meanwhile.
        return sum(1 for at in list(self.acked.values()) if at > t)

    def stop(self) -> None:
        self.stop_event.set()
        assert self.thread is not None
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        conn: Resp | None = None
        i = 0
        while i < self.max_writes and not self.stop_event.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = Resp(self.ip, self.port, timeout=0.5)
                reply = conn.call("SET", f"w:{i}", str(i))
                if reply == b"OK":
                    self.acked[i] = time.monotonic()
            except (OSError, ConnectionError, RespError):
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
            i += 1
        if conn is not None:
            conn.close()


def preload(ip: str, n: int) -> None:
    with Resp(ip, timeout=10) as r:
        for lo in range(0, n, 1000):
            replies = r.pipeline([("SET", f"pre:{i}", f"v{i}") for i in range(lo, min(n, lo + 1000))])
            assert all(x == b"OK" for x in replies)


def missing_keys(ip: str, expected: dict[str, str]) -> list[str]:
    """Keys of ``expected`` whose value on the Redis at ``ip`` differs (MGET in batches)."""
    keys = sorted(expected)
    wrong: list[str] = []
    with Resp(ip, timeout=10) as r:
        for lo in range(0, len(keys), 1000):
            batch = keys[lo : lo + 1000]
            values = r.call("MGET", *batch)
            wrong += [k for k, v in zip(batch, values, strict=True) if v != expected[k].encode()]
    return wrong


# --- every strategy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["cold", "clone", "postcopy"])
def test_each_strategy_moves_a_pod_with_its_memory(
    make_cluster: Callable[..., LocalCluster], strategy: str
) -> None:
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    with Resp(pod.ip) as r:
        r.call("SET", "marker", "before-migration")
    target = other_node(cluster, pod.node)
    hook = Recorder()

    # Cold also samples the source node before and after (1 s each) to report what it freed.
    report = migrate(cluster, pod.name, target, strategy, options=opts(hook, resources=strategy == "cold"))

    expected_phases = {
        "cold": ["prepare", "freeze", "dump", "transfer", "restore", "switch"],
        "clone": ["prepare", "dump", "transfer", "restore", "switch"],  # the only replica: no detach
        "postcopy": ["prepare", "dump", "transfer", "switch", "restore"],
    }[strategy]
    assert hook.phases == expected_phases
    moved = pod_named(cluster, pod.name)
    assert (report["strategy"], report["source_node"], report["target_node"]) == (strategy, pod.node, target)
    assert (moved.node, moved.ip) == (target, report["new_ip"]) and report["old_ip"] == pod.ip
    assert moved.ip != pod.ip and moved.sandbox != pod.sandbox and moved.phase == "Running"
    for phase in ("dump", "transfer", "restore", "switch"):
        assert report["phases"][phase] > 0, report["phases"]
    assert report["probe"]["attempts"] > 0 and report["downtime_ms"] is not None
    assert report["bytes_transferred"] > 0 and report["image_bytes"] > 0
    # Every byte counted once: the images, the root filesystem's changes, a tar stream's framing.
    assert report["bytes_transferred"] < report["image_bytes"] * 1.2 + (2 << 20), report
    assert report["total_ms"] >= sum(report["phases"][p] for p in ("dump", "transfer", "restore"))
    # The memory came along: the key set on the source is there, and the service leads to it.
    with Resp(moved.ip) as r:
        assert r.call("GET", "marker") == b"before-migration"
    assert serves(*vip) == 20 and serves(moved.ip, REDIS) == 20
    assert dnat_destinations(cluster) == {f"{moved.ip}:{REDIS}"}
    # The source is gone: container, namespace, directory, cgroup; no checkpoint files anywhere.
    assert [c["id"] for c in cluster.runc.list()] == [moved.containers[0].runtime_id]
    assert set(netns.list_netns(cluster.layout.netns_prefix)) - {n.netns for n in cluster.nodes()} == {
        moved.netns
    }
    assert not podops.pod_dir(cluster, pod.node, pod.name, pod.sandbox).exists()
    assert cgroups.leftovers(cgroups.relpath(cluster.name, pod.node, pod.sandbox)) == []
    assert checkpoint_debris(cluster) == []
    assert not (Path(moved.containers[0].bundle) / "checkpoint").exists()
    assert [m for m in mount_table() if m[1] == "tmpfs" and "/checkpoint" in m[0]] == []  # images in memory
    if strategy == "cold":
        freed = report["resources_freed"]
        assert freed["node"] == pod.node and freed["pod_memory_b"] > 0
        assert freed["memory_b_after"] < freed["memory_b_before"]
    print(
        f"\n{strategy}: downtime {report['downtime_ms']} ms, phases {report['phases']}, "
        f"probe {report['probe']}"
    )


def test_precopy_is_refused_without_dirty_tracking(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    wrapper = cluster.runc.criu
    assert wrapper is not None
    if criu.dirty_tracking(wrapper):
        pytest.skip("this kernel tracks dirty memory: pre-copy is not refused here")
    hook = Recorder()
    with pytest.raises(MigrationError) as err:
        migrate(cluster, pod.name, other_node(cluster, pod.node), "precopy", options=opts(hook))
    assert err.value.phase == "plan" and "soft-dirty" in str(err.value)
    assert hook.phases == []  # refused before anything was touched
    assert_source_intact(cluster, pod, other_node(cluster, pod.node), None, vip)


def test_same_pod_there_and_back(make_cluster: Callable[..., LocalCluster]) -> None:
    """A→B (cold) then B→A (postcopy): the pod comes home with its memory, twice re-addressed."""
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    home, away = pod.node, other_node(cluster, pod.node)
    preload(pod.ip, 2000)
    first = migrate(cluster, pod.name, away, "cold", options=opts())
    with Resp(first["new_ip"]) as r:
        r.call("SET", "on-b", "1")
    second = migrate(cluster, pod.name, home, "postcopy", options=opts())
    back = pod_named(cluster, pod.name)
    assert (first["source_node"], first["target_node"]) == (home, away)
    assert (second["source_node"], second["target_node"]) == (away, home)
    assert back.node == home and back.ip == second["new_ip"] and second["old_ip"] == first["new_ip"]
    assert len({pod.sandbox, pod_named(cluster, pod.name).sandbox}) == 2
    assert missing_keys(back.ip, {f"pre:{i}": f"v{i}" for i in range(2000)} | {"on-b": "1"}) == []
    assert serves(*vip) == 20
    assert [c["id"] for c in cluster.runc.list()] == [back.containers[0].runtime_id]
    assert set(netns.list_netns(cluster.layout.netns_prefix)) - {n.netns for n in cluster.nodes()} == {
        back.netns
    }
    assert {d.name for d in (cluster.node_dir(away) / "pods").iterdir()} == set()
    assert checkpoint_debris(cluster) == []
    print(f"\nA→B cold downtime {first['downtime_ms']} ms; B→A postcopy downtime {second['downtime_ms']} ms")


# --- state: every acknowledged write survives --------------------------------------------------------


@pytest.mark.parametrize("strategy", ["cold", "postcopy"])
def test_redis_keeps_every_acknowledged_write(
    make_cluster: Callable[..., LocalCluster], strategy: str
) -> None:
    cluster = make_cluster(nodes=2)
    pod, (vip, port) = deploy_redis(cluster)
    n_pre = 10_000
    preload(pod.ip, n_pre)
    writer = Writer(vip, port).start()
    try:
        time.sleep(1.5)  # the writer is well under way on the source
        acked_before = len(writer.acked)
        report = migrate(cluster, pod.name, other_node(cluster, pod.node), strategy, options=opts())
        done = time.monotonic()
        # Keep writing to the target for a while (bounded: ≤ 10 s) until 200 more writes are acknowledged.
        while time.monotonic() < done + 10 and writer.acked_since(done) < 200:
            time.sleep(0.05)
    finally:
        writer.stop()
    moved = pod_named(cluster, pod.name)
    after_done = writer.acked_since(done)
    assert acked_before > 100, "the writer never got going on the source"
    assert after_done >= 200, "the writer never got going on the target"
    expected = {f"pre:{i}": f"v{i}" for i in range(n_pre)} | {f"w:{i}": str(i) for i in writer.acked}
    lost = missing_keys(moved.ip, expected)
    assert lost == [], f"{len(lost)} acknowledged writes lost, e.g. {lost[:10]}"
    with Resp(moved.ip) as r:
        dbsize = r.call("DBSIZE")
    assert dbsize >= len(expected)
    print(
        f"\n{strategy}: {len(writer.acked)} writes acknowledged ({writer.errors} errors), dbsize {dbsize}, "
        f"downtime {report['downtime_ms']} ms, phases {report['phases']}"
    )


# --- clone under load: zero failed requests ----------------------------------------------------------


def parse_hey(out: str) -> tuple[dict[int, int], str]:
    """(status code -> responses, error distribution text) from hey's summary."""
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors = out.split("Error distribution:", 1)[1].strip() if "Error distribution:" in out else ""
    return codes, errors


def test_clone_under_load_fails_no_request(cluster: LocalCluster) -> None:
    """NGINX × 10 under ``hey -c 20``: ``clone`` one pod to another node; no request fails."""
    apply(cluster, str(EXAMPLES / "nginx.yaml"))
    pods = cluster.store.pods(cluster.name)
    assert podops.wait_ready(pods, timeout=20) == []
    vip, port = service_vip(cluster, "nginx-service")
    counts = {n.name: sum(1 for p in pods if p.node == n.name) for n in cluster.nodes()}
    busiest = max(counts, key=lambda n: counts[n])
    pod = next(p for p in pods if p.node == busiest)
    target = min(counts, key=lambda n: counts[n])
    hook = Recorder()
    # hey runs until interrupted (at most 45 s) so that its load covers the whole migration,
    # however long the machine makes it; on SIGINT it stops and prints its summary.
    load = subprocess.Popen(
        ["hey", "-z", "45s", "-c", "20", f"http://{vip}:{port}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,  # stoppable by SIGINT even if this test runs with it ignored
    )
    try:
        # Baseline: the same probe, same load, no migration — what "a gap" is on this machine anyway.
        time.sleep(0.5)
        with Probe(lambda: (vip, port)) as baseline_probe:
            time.sleep(1.5)
        baseline = summarize(baseline_probe.attempts, baseline_probe.rate_hz)
        report = migrate(cluster, pod.name, target, "clone", options=opts(hook, timeout_s=40))
        migrated_while_loaded = load.poll() is None
        time.sleep(1.0)  # and a while on the new endpoint set
        load.send_signal(signal.SIGINT)
        out, _ = load.communicate(timeout=30)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(timeout=10)
    codes, errors = parse_hey(out)
    probe = report["probe"]
    print(
        f"\nclone under hey: hey {codes} errors={errors!r}\n  probe {probe}\n  baseline probe {baseline}"
        f"\n  phases {report['phases']}; total {report['total_ms']} ms"
    )
    assert migrated_while_loaded, "hey ended before the migration did: the load did not cover it"
    assert "detach" in hook.phases  # other replicas serve while CRIU dumps the source
    moved = pod_named(cluster, pod.name)
    assert moved.node == target and serves(moved.ip, port) == 20
    assert len(cluster.store.pods(cluster.name)) == 10 and len(cluster.runc.list()) == 10
    assert set(codes) == {200} and codes[200] > 1000, out
    assert errors == "", f"hey saw failed requests:\n{errors}"
    assert probe["failed"] == 0, probe
    # The longest gap is a performance figure, not a pass/fail criterion on a shared machine: the
    # migration benchmark (benchmarks/migration_bench.py) records it against its target.


# --- injected faults -----------------------------------------------------------------------------------
#
# Each fault test checks the rollback in full (assert_source_intact) and then, where cheap, that a second
# attempt without the fault succeeds: nothing the failed attempt left blocks the next one.


def corrupter(pattern: str) -> Callable[[Migration], None]:
    """Overwrite the transferred CRIU images matching ``pattern`` on the target with garbage."""

    def corrupt(m: Migration) -> None:
        hit = [img for mv in m.driver.moves for img in mv.dst.images.glob(pattern)]
        assert hit, f"no {pattern} in {[sorted(os.listdir(mv.dst.images)) for mv in m.driver.moves]}"
        for img in hit:
            img.write_bytes(b"\xde\xad\xbe\xef" * 64)

    return corrupt


@pytest.mark.parametrize(
    ("strategy", "image"),
    [
        ("cold", "inventory.img"),  # CRIU refuses at once
        ("cold", "core-*.img"),  # CRIU fails while restoring the tasks
        ("clone", "pstree.img"),
        ("postcopy", "inventory.img"),  # the lazy-pages daemon refuses to start
        ("postcopy", "core-*.img"),  # the daemon runs, the restore fails
    ],
)
def test_restore_failure_on_target_keeps_source(
    make_cluster: Callable[..., LocalCluster], strategy: str, image: str
) -> None:
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    with Resp(pod.ip) as r:
        r.call("SET", "marker", "kept")
    target = other_node(cluster, pod.node)
    hook = Recorder(at={"restore": corrupter(image)})
    with pytest.raises(MigrationError) as err:
        migrate(cluster, pod.name, target, strategy, options=opts(hook))
    print(f"\n{strategy}/{image}: {err.value}")
    assert err.value.phase == "restore", err.value
    assert f"restore of redis on {target} failed" in str(err.value) or "lazy-pages daemon" in str(err.value)
    assert_source_intact(cluster, pod, target, hook.migration, vip)
    with Resp(pod.ip) as r:
        assert r.call("GET", "marker") == b"kept"
    report = migrate(cluster, pod.name, target, strategy, options=opts())
    with Resp(report["new_ip"]) as r:
        assert r.call("GET", "marker") == b"kept"


def test_restore_error_names_the_cause(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(nodes=2)
    pod, _ = deploy_redis(cluster)
    hook = Recorder(at={"restore": corrupter("core-*.img")})
    with pytest.raises(MigrationError) as err:
        migrate(cluster, pod.name, other_node(cluster, pod.node), "cold", options=opts(hook, probe=False))
    assert err.value.phase == "restore"
    assert "core-" in str(err.value) and "magic" in str(err.value), str(err.value)


def test_failed_migration_leaves_no_checkpoint_files(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(nodes=2)
    pod, _ = deploy_redis(cluster)
    hook = Recorder(at={"restore": corrupter("inventory.img")})
    with pytest.raises(MigrationError):
        migrate(cluster, pod.name, other_node(cluster, pod.node), "cold", options=opts(hook, probe=False))
    assert checkpoint_debris(cluster) == []


def link_down(cluster: LocalCluster, node: str) -> Callable[[Migration], None]:
    veth = cluster.layout.node_veth(cluster.node(node).idx)
    return lambda _m: sh("ip", "link", "set", veth, "down")


@pytest.mark.parametrize("strategy", ["cold", "clone", "postcopy"])
def test_link_cut_during_transfer_keeps_source(
    make_cluster: Callable[..., LocalCluster], strategy: str
) -> None:
    """The target's link goes down as the images start to cross it; the deadline (6 s) gives up."""
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    target = other_node(cluster, pod.node)
    veth = cluster.layout.node_veth(cluster.node(target).idx)
    hook = Recorder(at={"transfer": link_down(cluster, target)})
    t0 = time.monotonic()
    try:
        with pytest.raises(MigrationError) as err:
            migrate(cluster, pod.name, target, strategy, options=opts(hook, timeout_s=6))
        took = time.monotonic() - t0
        assert_source_intact(cluster, pod, target, hook.migration, vip)  # while the link is still down
    finally:
        sh("ip", "link", "set", veth, "up")
    print(f"\n{strategy}: after {took:.1f} s: {err.value}")
    assert err.value.phase == "transfer", err.value
    assert "no progress" in str(err.value) and "link" in str(err.value)
    assert took < 15
    report = migrate(cluster, pod.name, target, strategy, options=opts())
    assert serves(report["new_ip"], REDIS) == 20


def test_link_cut_before_dump_keeps_source(make_cluster: Callable[..., LocalCluster]) -> None:
    """The link is down before CRIU connects to the target's page server: the dump fails, cleanly."""
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    target = other_node(cluster, pod.node)
    veth = cluster.layout.node_veth(cluster.node(target).idx)
    hook = Recorder(at={"dump": link_down(cluster, target)})
    try:
        with pytest.raises(MigrationError) as err:
            migrate(cluster, pod.name, target, "cold", options=opts(hook, timeout_s=6, stream_pages=True))
        assert_source_intact(cluster, pod, target, hook.migration, vip)
    finally:
        sh("ip", "link", "set", veth, "up")
    print(f"\n{err.value}")
    assert err.value.phase == "dump", err.value


def fill_redis(ip: str, mib: int) -> None:
    """Put ``mib`` MiB of incompressible values into the Redis at ``ip`` (1 MiB each)."""
    with Resp(ip, timeout=30) as r:
        for lo in range(0, mib, 16):
            replies = r.pipeline(
                [("SET", f"big:{i}", os.urandom(1 << 19).hex()) for i in range(lo, min(mib, lo + 16))]
            )
            assert all(x == b"OK" for x in replies)


def cut_link_mid_stream(cluster: LocalCluster, node: str, after_bytes: int) -> Callable[[Migration], None]:
    """At "dump": give the migration 2 s more, and take the target's link down once CRIU has streamed
    ``after_bytes`` of memory pages to the target's page server."""
    veth = cluster.layout.node_veth(cluster.node(node).idx)

    def hook(m: Migration) -> None:
        m.options.timeout_s = (time.monotonic() - m.started) + 2.0

        def watch() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                pages = [p for mv in m.driver.moves for p in mv.dst.images.glob("pages-*.img")]
                got = sum(p.stat().st_size for p in pages)
                if got >= after_bytes:
                    # Stop the receiver first, so the rest cannot slip through before the cut.
                    pids = page_server_pids(m.driver.cluster, m.plan.target)
                    for pid in pids:
                        os.kill(pid, signal.SIGSTOP)
                    sh("ip", "link", "set", veth, "down")
                    for pid in pids:
                        os.kill(pid, signal.SIGCONT)
                    return
                time.sleep(0.002)

        threading.Thread(target=watch, daemon=True).start()

    return hook


@pytest.mark.parametrize("strategy", ["cold", "clone"])
def test_link_cut_while_pages_stream_keeps_source(
    make_cluster: Callable[..., LocalCluster], strategy: str
) -> None:
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    fill_redis(pod.ip, 200)
    target = other_node(cluster, pod.node)
    veth = cluster.layout.node_veth(cluster.node(target).idx)
    hook = Recorder(at={"dump": cut_link_mid_stream(cluster, target, 20 << 20)})
    try:
        with pytest.raises(MigrationError) as err:
            migrate(cluster, pod.name, target, strategy, options=opts(hook))
        print(f"\n{strategy}: {err.value}")
        assert err.value.phase == "dump"
        assert_source_intact(cluster, pod, target, hook.migration, vip)
    finally:
        sh("ip", "link", "set", veth, "up")
    time.sleep(2)  # whatever CRIU does once the link is back, the source must stay up
    assert_source_intact(cluster, pod, target, hook.migration, vip)


BIG = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: big, labels: {app: big}}
spec:
  replicas: 2
  selector: {matchLabels: {app: big}}
  template:
    metadata: {labels: {app: big}}
    spec:
      containers:
        - name: redis
          image: redis
          ports: [{containerPort: 6379}]
          resources: {requests: {cpu: 600m, memory: 64Mi}}
---
apiVersion: v1
kind: Service
metadata: {name: big}
spec:
  selector: {app: big}
  ports: [{port: 6379, targetPort: 6379}]
"""


def test_target_without_capacity_is_refused(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(nodes=2)
    apply(cluster, "big.yaml", BIG)
    pods = cluster.store.pods(cluster.name)
    assert podops.wait_ready(pods, timeout=15) == []
    assert len({p.node for p in pods}) == 2  # 600m each: one per 1000m node
    pod = pods[0]
    target = other_node(cluster, pod.node)
    hook = Recorder()
    with pytest.raises(MigrationError) as err:
        migrate(cluster, pod.name, target, "cold", options=opts(hook))
    print(f"\n{err.value} (hint: {err.value.hint})")
    assert err.value.phase == "plan" and "no room" in str(err.value) and target in str(err.value)
    assert hook.phases == []  # refused before anything was touched
    for p in pods:
        assert_source_intact(cluster, p, other_node(cluster, p.node), None, service_vip(cluster, "big"))
    # The CLI says the same, exit status 1.
    out = subprocess.run(
        [*PODHOP, "migrate", pod.name, "--to", target, "--cluster", cluster.name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "'plan'" in out.stderr and "no room" in out.stderr, out.stderr


@contextlib.contextmanager
def full_disk(path: Path) -> Iterator[None]:
    """A 64 KiB file system mounted over ``path`` for the duration."""
    sh("mount", "-t", "tmpfs", "-o", "size=64k", "podhop-test-full", str(path))
    try:
        yield
    finally:
        if os.path.ismount(path):
            subprocess.run(["umount", str(path)], check=False, timeout=30)


def wrote_files(pod: PodRecord, size: int = 1 << 20) -> None:
    """The pod's container wrote ``size`` bytes of files (its root filesystem's changes grow by them):
    they must reach the target's disk, whereas checkpoint images travel in memory."""
    (Path(pod.containers[0].bundle) / "upper" / "written-by-the-app.bin").write_bytes(os.urandom(size))


@pytest.mark.parametrize("strategy", ["cold", "clone", "postcopy"])
def test_target_without_disk_keeps_source(make_cluster: Callable[..., LocalCluster], strategy: str) -> None:
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    wrote_files(pod)
    target = other_node(cluster, pod.node)
    pods_dir = cluster.node_dir(target) / "pods"
    hook = Recorder()
    with full_disk(pods_dir):
        with pytest.raises(MigrationError) as err:
            migrate(cluster, pod.name, target, strategy, options=opts(hook))
        print(f"\n{strategy}: {err.value}")
        assert_source_intact(cluster, pod, target, hook.migration, vip)  # checked on the full disk
        assert files_under(pods_dir) == []
    assert err.value.phase in ("dump", "transfer"), err.value
    assert files_under(pods_dir) == []
    report = migrate(cluster, pod.name, target, strategy, options=opts())
    assert serves(report["new_ip"], REDIS) == 20


@pytest.mark.parametrize(
    "strategy",
    [
        "cold",
        "postcopy",  # the files go through the transfer, whose receiver reports the disk error
    ],
)
def test_full_target_disk_error_says_so(make_cluster: Callable[..., LocalCluster], strategy: str) -> None:
    cluster = make_cluster(nodes=2)
    pod, _ = deploy_redis(cluster)
    wrote_files(pod)
    target = other_node(cluster, pod.node)
    with full_disk(cluster.node_dir(target) / "pods"), pytest.raises(MigrationError) as err:
        migrate(cluster, pod.name, target, strategy, options=opts(probe=False))
    assert "No space left on device" in str(err.value), str(err.value)


#: The phases a fault can hit, per strategy (each hook runs as its phase starts, after the previous
#: phase's work is done; "switch" is the last moment before the commit).
FAULT_PHASES = {
    "cold": ["prepare", "freeze", "dump", "transfer", "restore", "switch"],
    "clone": ["prepare", "dump", "transfer", "restore", "switch"],
    "postcopy": ["prepare", "dump", "transfer", "switch", "restore"],
}
FAULT_CASES = [(s, p) for s, phases in FAULT_PHASES.items() for p in phases]


class InjectedFault(PodhopError):
    """What the fault-injection hook raises."""


def fail_here(_m: Migration) -> None:
    raise InjectedFault("injected fault")


def deadline_passes(m: Migration) -> None:
    """The whole migration's deadline is over, here and now (no clock race: it is already past)."""
    m.options.timeout_s = (time.monotonic() - m.started) - 0.001


@pytest.mark.parametrize(("strategy", "phase"), FAULT_CASES)
def test_fault_in_each_phase_keeps_source(
    make_cluster: Callable[..., LocalCluster], strategy: str, phase: str
) -> None:
    """A failure injected as each phase starts: the migration unwinds, naming that phase."""
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    target = other_node(cluster, pod.node)
    hook = Recorder(at={phase: fail_here})
    with pytest.raises(MigrationError) as err:
        migrate(cluster, pod.name, target, strategy, options=opts(hook))
    assert err.value.phase == phase and "injected fault" in str(err.value), err.value
    assert hook.phases[-1] == phase
    assert_source_intact(cluster, pod, target, hook.migration, vip)


@pytest.mark.parametrize(("strategy", "phase"), FAULT_CASES)
def test_deadline_in_each_phase_keeps_source(
    make_cluster: Callable[..., LocalCluster], strategy: str, phase: str
) -> None:
    """The deadline passes as each phase starts: "timed out", in that phase, and the source serves."""
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    target = other_node(cluster, pod.node)
    hook = Recorder(at={phase: deadline_passes})
    with pytest.raises(MigrationError) as err:
        migrate(cluster, pod.name, target, strategy, options=opts(hook))
    assert err.value.phase == phase and "timed out" in str(err.value), err.value
    assert_source_intact(cluster, pod, target, hook.migration, vip)


def page_server_pids(cluster: LocalCluster, node: str) -> list[int]:
    """CRIU page servers writing into ``node``'s pods (a migration's receiving end)."""
    marker = str(cluster.node_dir(node) / "pods").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (entry / "cmdline").read_bytes()
                if b"page-server" in cmd and marker in cmd and b"nsenter" not in cmd:
                    found.append(int(entry.name))
    return found


def connected(pid: int) -> bool:
    """Whether the page server ``pid`` has its migration's connection (podhop's accepting end has
    checked it and become CRIU: :class:`~podhop.backends.local.carry.PageLink`)."""
    try:
        return b"podhop.backends.local.transfer" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stall_page_server(m: Migration) -> None:
    """Stop the target's page server before the dump streams: the dump cannot make progress."""
    for mv in m.driver.moves:
        assert mv.page_link is not None
        os.kill(mv.page_link.server.pid, signal.SIGSTOP)
        for pid in page_server_pids(m.driver.cluster, m.plan.target):
            os.kill(pid, signal.SIGSTOP)


def deadline_in(seconds: float) -> Callable[[Migration], None]:
    """A hook that moves the migration's deadline to ``seconds`` from now."""

    def hook(m: Migration) -> None:
        m.options.timeout_s = (time.monotonic() - m.started) + seconds

    return hook


def test_timeout_between_phases_says_timed_out(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    target = other_node(cluster, pod.node)

    def slow_transfer(m: Migration) -> None:
        deadline_in(0.2)(m)
        time.sleep(0.3)  # the transfer phase overruns the deadline

    hook = Recorder(at={"transfer": slow_transfer})
    with pytest.raises(MigrationError) as err:
        migrate(cluster, pod.name, target, "cold", options=opts(hook))
    print(f"\n{err.value}")
    assert err.value.phase == "transfer" and "timed out" in str(err.value)
    assert_source_intact(cluster, pod, target, hook.migration, vip)


@pytest.mark.parametrize("strategy", ["cold", "clone"])
def test_timeout_during_dump_says_timed_out(make_cluster: Callable[..., LocalCluster], strategy: str) -> None:
    """CRIU is dumping, its page server stalled (stopped): the deadline strikes inside the dump."""
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    target = other_node(cluster, pod.node)

    def stall(m: Migration) -> None:
        stall_page_server(m)
        m.options.timeout_s = (time.monotonic() - m.started) + 1.0

    hook = Recorder(at={"dump": stall})
    with pytest.raises(MigrationError) as err:
        migrate(cluster, pod.name, target, strategy, options=opts(hook, stream_pages=True))
    print(f"\n{err.value}")
    assert err.value.phase == "dump"
    assert "timed out" in str(err.value), str(err.value)
    assert_source_intact(cluster, pod, target, hook.migration, vip)
    assert page_server_pids(cluster, target) == []


def wait_for(cond: Callable[[], bool], within: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


@pytest.mark.parametrize(
    "group",
    [
        pytest.param(True, id="ctrl-c-to-group"),
        pytest.param(
            False,
            id="sigint-to-podhop",
        ),
    ],
)
def test_interrupt_during_dump_keeps_source(make_cluster: Callable[..., LocalCluster], group: bool) -> None:
    """SIGINT to ``podhop migrate`` while CRIU dumps (its page server stalled, so the dump cannot end
    first): exit 1, naming the phase and "interrupted"."""
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    fill_redis(pod.ip, 200)
    target = other_node(cluster, pod.node)
    checkpoints = cluster.node_dir(pod.node) / "checkpoints"
    proc = subprocess.Popen(
        [*PODHOP, "migrate", pod.name, "--to", target, "--cluster", cluster.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
        preexec_fn=default_sigint,  # and Ctrl-C means stop, as in a terminal
    )
    try:
        # The page server is started and connected in "prepare": stall it before the dump streams.
        assert wait_for(lambda: any(connected(pid) for pid in page_server_pids(cluster, target)), within=30)
        for pid in page_server_pids(cluster, target):
            os.kill(pid, signal.SIGSTOP)
        dumping = wait_for(lambda: any(checkpoints.glob(f"{pod.name}-*/*/work/dump.log")), within=30)
        still_running = proc.poll() is None
        pages = cluster.node_dir(target).glob("pods/*/*/checkpoint/pages-*.img")
        streamed = sum(p.stat().st_size for p in pages)
        if group:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        else:
            os.kill(proc.pid, signal.SIGINT)
        out, errout = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    print(f"\nrc={proc.returncode}\nstdout: {out[-300:]}\nstderr: {errout[-600:]}")
    assert dumping and still_running and streamed < 200 << 20  # interrupted while memory streamed
    assert proc.returncode == 1, (proc.returncode, errout)
    assert "'dump'" in errout and "interrupted" in errout, errout
    time.sleep(1)  # let any straggler act: the source must stay up
    assert_source_intact(cluster, pod, target, None, vip, source_checkpoints=False)
    with Resp(pod.ip) as r:
        assert r.call("DBSIZE") == 200


@contextlib.contextmanager
def sigint_raises() -> Iterator[None]:
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _interrupt(_m: Migration) -> None:
    os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT: Python raises KeyboardInterrupt right here
    time.sleep(1)  # not reached


@pytest.mark.parametrize("phase", ["transfer", "restore"])
def test_interrupt_names_the_phase_it_hit(make_cluster: Callable[..., LocalCluster], phase: str) -> None:
    cluster = make_cluster(nodes=2)
    pod, vip = deploy_redis(cluster)
    target = other_node(cluster, pod.node)
    hook = Recorder(at={phase: _interrupt})
    try:
        with sigint_raises(), pytest.raises(MigrationError) as err:
            migrate(cluster, pod.name, target, "cold", options=opts(hook))
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped the engine as KeyboardInterrupt")
    print(f"\n{phase}: {err.value}")
    assert hook.phases[-1] == phase and "interrupted" in str(err.value)
    assert_source_intact(cluster, pod, target, hook.migration, vip, source_checkpoints=False)
    assert err.value.phase == phase, str(err.value)


def test_interrupt_leaves_no_checkpoint_files(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(nodes=2)
    pod, _ = deploy_redis(cluster)
    hook = Recorder(at={"transfer": _interrupt})
    with sigint_raises(), pytest.raises(MigrationError, match="interrupted"):
        migrate(cluster, pod.name, other_node(cluster, pod.node), "cold", options=opts(hook, probe=False))
    assert files_under(cluster.node_dir(pod.node) / "checkpoints") == []


def test_postcopy_report_counts_the_memory_it_moved(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(nodes=2)
    pod, _ = deploy_redis(cluster)
    fill_redis(pod.ip, 64)
    report = migrate(cluster, pod.name, other_node(cluster, pod.node), "postcopy", options=opts(probe=False))
    with Resp(report["new_ip"]) as r:
        assert r.call("DBSIZE") == 64
    print(f"\n{report['bytes_transferred']=} {report['memory_pages_bytes']=} {report['criu_stats']=}")
    assert report["bytes_transferred"] >= 64 << 20


def test_a_client_port_used_before_a_cold_move_connects_after_it(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    """A connection through the VIP that was open when the source went leaves a conntrack entry
    translated to the gone address; a new connection from the same client port must not follow it.
    The stale entry is made deterministically: the client's socket is torn down with its RST
    dropped before conntrack sees it (a raw-table rule), as when a client dies mid-connection."""
    cluster = make_cluster(nodes=2)
    pod, (vip, port) = deploy_redis(cluster)
    client_port = 0  # the kernel's choice of a free port first, then that same port again

    def connect() -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(2)
        s.bind(("0.0.0.0", client_port))
        s.connect((vip, port))
        return s

    old = connect()
    client_port = old.getsockname()[1]
    old.sendall(b"PING\r\n")
    assert old.recv(64).startswith(b"+PONG")
    migrate(cluster, pod.name, other_node(cluster, pod.node), "cold", options=opts())
    rule = ["OUTPUT", "-p", "tcp", "--sport", str(client_port), "--tcp-flags", "RST", "RST", "-j", "DROP"]
    subprocess.run(["iptables", "-w", "-t", "raw", "-I", *rule], check=True)
    try:
        old.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        old.close()  # an RST nobody sees: the entry stays ESTABLISHED, towards the old address
    finally:
        subprocess.run(["iptables", "-w", "-t", "raw", "-D", *rule], check=True)
    entries = subprocess.run(
        ["conntrack", "-L", "-p", "tcp", "--sport", str(client_port)], capture_output=True, text=True
    ).stdout
    assert pod.ip not in entries, f"a stale entry towards the gone source remains:\n{entries}"
    with connect() as new:
        new.sendall(b"PING\r\n")
        assert new.recv(64).startswith(b"+PONG")
