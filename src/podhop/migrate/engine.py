"""Executing a migration plan on the local backend, phase by phase, timed and undoable.

Why: this is the one place that knows the order of a migration. Each phase is
timed; each change registers its undo (see ``steps``) on one ``ExitStack``, so
a failure, a timeout or Ctrl-C anywhere before the commit point unwinds
everything: the target's half-made sandbox disappears and the source —
resumed, its CRIU network lock removed — keeps serving. The commit point is
the endpoint switch; after it, removing the source is best effort.

Downtime is not inferred from phase times: a probe (``probe``) hits the
pod's service (or the pod itself) at 200 requests/s from outside throughout,
and the longest gap between successful answers is reported.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from podhop.backends.local import metrics
from podhop.backends.local import pods as podops
from podhop.backends.local import services as svcops
from podhop.backends.local.apply import node_states, spec_from_record
from podhop.backends.local.cluster import LocalCluster
from podhop.errors import NotFoundError, PodhopError
from podhop.migrate import steps
from podhop.migrate.plan import REPORTED_PHASES, MigrationError, MigrationPlan, Strategy, plan_migration
from podhop.migrate.probe import Probe, summarize
from podhop.policies.scoring import fits
from podhop.runtime import criu
from podhop.store import PodRecord

PhaseHook = Callable[[str, "Migration"], None]


@dataclass
class Options:
    """How to run a migration.

    Attributes:
        timeout_s: the whole migration must finish within this many seconds (default 120).
        probe: measure downtime with an outside probe (default on).
        probe_rate_hz: probe attempts per second (default 200).
        measure_resources: sample the source node's CPU/memory for 1 s before and after.
        drain_s: ``clone``: how long the source may take to finish in-flight requests.
        on_phase: called with each phase's name as it starts (progress, tests).
    """

    timeout_s: float = 120.0
    probe: bool = True
    probe_rate_hz: float = 200.0
    measure_resources: bool = True
    drain_s: float = 10.0
    on_phase: PhaseHook | None = None


@dataclass
class Migration:
    """A migration in progress: the plan, both pod records and per-container moves."""

    cluster: LocalCluster
    plan: MigrationPlan
    pod: PodRecord
    new: PodRecord
    moves: list[steps.ContainerMove]
    options: Options
    started: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)
    current_ip: str = ""  # where the pod answers now (the probe follows it)
    warnings: list[str] = field(default_factory=list)
    current_phase: str = "prepare"
    id: str = field(default_factory=lambda: secrets.token_hex(4))  # names its endpoint overrides

    def remaining(self, phase: str) -> float:
        left = self.options.timeout_s - (time.monotonic() - self.started)
        if left <= 0:
            raise MigrationError(phase, f"timed out after {self.options.timeout_s:g} s")
        return left

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.current_phase = name
        self.remaining(name)
        t0 = time.monotonic()
        try:
            if self.options.on_phase:  # progress, and the tests' fault injection (raise, or spend time)
                self.options.on_phase(name, self)
                self.remaining(name)
            yield
        except MigrationError:
            raise
        except PodhopError as exc:
            raise MigrationError(name, str(exc)) from exc
        except OSError as exc:
            raise MigrationError(name, str(exc)) from exc
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + (time.monotonic() - t0) * 1000


def prepare(
    cluster: LocalCluster,
    pod_name: str,
    target: str,
    strategy: str,
    namespace: str = "default",
    options: Options | None = None,
    reserved: set[str] | None = None,
) -> Migration:
    """Find the pod, check the target, build the plan and the target's records. No changes yet.

    ``reserved``: addresses taken by other migrations prepared alongside this one (updated).
    """
    pods = cluster.store.pods(cluster.name)
    pod = next((p for p in pods if (p.namespace, p.name) == (namespace, pod_name)), None)
    if pod is None:
        raise NotFoundError(f'pod "{pod_name}" not found in cluster {cluster.name}')
    target_node = cluster.node(target)
    states = node_states(cluster, [p for p in pods if p is not pod])
    wrapper = cluster.runc.criu
    if wrapper is None:
        raise MigrationError("plan", "no CRIU configured", hint="run `podhop setup`")
    plan = plan_migration(
        namespace,
        pod_name,
        pod.node,
        target,
        strategy,
        target_fits=fits(states[target], spec_from_record(pod).requests),
        dirty_tracking=strategy == Strategy.PRECOPY and criu.dirty_tracking(wrapper),
        state_bytes=sum(criu.dir_bytes(Path(c.bundle) / "upper") for c in pod.containers),
        link_bps=target_node.bandwidth_bps,
    )
    sandbox = secrets.token_hex(3)
    new = dataclasses.replace(
        pod,
        node=target,
        sandbox=sandbox,
        netns=cluster.layout.pod_netns(pod.name, sandbox),
        ip=podops.free_ip(cluster, target_node, frozenset(reserved or ())),
        containers=[],
        started=None,
    )
    if reserved is not None:  # migrations prepared together must not take the same address
        reserved.add(new.ip)
    mid = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)
    source_node = cluster.node(pod.node)
    moves = []
    for c in pod.containers:
        tc = podops.container_record(cluster, new, c.name, c.image, list(c.ports))
        tc.external = list(c.external)
        src_dir = cluster.node_dir(pod.node) / "checkpoints" / f"{pod.name}-{mid}" / c.name
        dst_dir = cluster.node_dir(target) / "checkpoints" / f"{pod.name}-{mid}" / c.name
        moves.append(
            steps.ContainerMove(
                source=c,
                target=tc,
                src=steps.Side(source_node, src_dir / "images", src_dir / "work"),
                dst=steps.Side(target_node, Path(tc.bundle) / "checkpoint", dst_dir / "work"),
            )
        )
    return Migration(cluster, plan, pod, new, moves, options or Options())


def _probe_target(m: Migration) -> Callable[[], tuple[str, int]] | None:
    """The pod's service VIP and port if a service selects it, else the pod's current address."""
    service = next(
        (
            s
            for s in m.cluster.store.services(m.cluster.name)
            if s.namespace == m.pod.namespace and svcops.selects(s.selector, m.pod.labels) and s.ports
        ),
        None,
    )
    if service is not None:
        vip, vport = service.cluster_ip, int(service.ports[0]["port"])
        return lambda: (vip, vport)
    ports = [p for c in m.pod.containers for p in c.ports]
    if not ports:
        return None
    return lambda: (m.current_ip, ports[0])


def execute(m: Migration) -> dict[str, Any]:
    """Run the plan; return the migration report. Raises :class:`MigrationError` with the failing phase."""
    cluster, opts = m.cluster, m.options
    m.current_ip = m.pod.ip
    before = metrics.sample(cluster, 1.0) if opts.measure_resources else None
    target = _probe_target(m) if opts.probe else None
    probe = Probe(target, rate_hz=opts.probe_rate_hz).start() if target else None
    wall0 = time.time()
    m.started = time.monotonic()
    try:
        with ExitStack() as undo:
            # Last undo to run: whatever endpoint overrides this migration made go, in one sync.
            undo.callback(svcops.clear_overrides, cluster, f"{m.id}/both", f"{m.id}/detach")
            with m.phase("prepare"):
                podops.create_sandbox(cluster, cluster.node(m.plan.target), m.new)
                undo.callback(podops.delete_sandbox, cluster, m.new)
                transfers = [steps.start_transfer(mv, m.remaining("prepare"), undo) for mv in m.moves]
                for mv in m.moves:
                    steps.secure_links(mv, undo)
                    if m.plan.strategy in (Strategy.COLD, Strategy.CLONE):
                        steps.start_page_server(cluster, mv, undo)
            _run_strategy(m, undo, transfers)
            undo.pop_all()  # committed: the pod lives on the target now
    except BaseException as exc:
        if probe:
            probe.stop()
        for mv in m.moves:  # the attempt's checkpoint files and CRIU logs, on both nodes
            shutil.rmtree(mv.src.images.parent, ignore_errors=True)
            shutil.rmtree(mv.dst.work.parent, ignore_errors=True)
        if isinstance(exc, KeyboardInterrupt):
            raise MigrationError(
                m.current_phase, "interrupted; the source pod was resumed and keeps serving"
            ) from exc
        raise
    try:
        _finish_source(m)
    finally:
        for mv in m.moves:
            shutil.rmtree(mv.src.images.parent, ignore_errors=True)
    total_ms = (time.monotonic() - m.started) * 1000
    attempts = probe.stop() if probe else []
    after = metrics.sample(cluster, 1.0) if opts.measure_resources else None
    images = sum(criu.dir_bytes(mv.dst.images) for mv in m.moves)
    for mv in m.moves:
        shutil.rmtree(mv.dst.images, ignore_errors=True)
        shutil.rmtree(mv.dst.work.parent, ignore_errors=True)
    return _report(m, total_ms, wall0, attempts, before, after, images)


def _switch(m: Migration, undo: ExitStack) -> None:
    """Endpoints (and the pod's record) move to the target; undone by putting the source back."""
    with m.phase("switch"):
        m.new.containers = [mv.target for mv in m.moves]
        m.new.started = m.pod.started
        if m.plan.strategy is Strategy.CLONE:
            svcops.set_override(m.cluster, f"{m.id}/both", add=(m.new,))  # both serve for a moment
        m.cluster.store.put_pod(m.new)
        undo.callback(m.cluster.store.put_pod, m.pod)
        svcops.clear_overrides(m.cluster, f"{m.id}/both", f"{m.id}/detach")
        m.current_ip = m.new.ip


def _run_strategy(m: Migration, undo: ExitStack, transfers: list[steps.Transfer]) -> None:
    """The strategy's phases after ``prepare``, in the plan's order, ending at the commit point.

    Post-copy switches *before* it restores: once the target runs, the source's CRIU hands it the
    memory and then ends the source, so nothing after the restore could put the source back.
    Until the restore has succeeded the source is frozen, holding all its memory, and every
    failure (the switch's included) unwinds to it.
    """
    cluster, strategy = m.cluster, m.plan.strategy
    timeout = m.remaining
    if strategy is Strategy.COLD:
        with m.phase("freeze"):
            for mv in m.moves:
                steps.freeze(cluster, mv.source, m.pod, undo)
    if strategy is Strategy.CLONE and _has_other_endpoints(m):
        with m.phase("detach"):
            # CRIU freezes and network-locks the source while it dumps; with other replicas
            # serving, new connections should not wait for it. The target joins after restore.
            svcops.set_override(cluster, f"{m.id}/detach", exclude=(m.pod,))
    if strategy in (Strategy.COLD, Strategy.CLONE):
        with m.phase("dump"):
            for mv in m.moves:
                steps.dump_to_page_server(cluster, mv, m.pod, undo, timeout("dump"))
        with m.phase("transfer"):
            for mv, t in zip(m.moves, transfers, strict=True):
                mv.transferred_bytes += t.go(timeout("transfer"))
        with m.phase("restore"):
            for mv in m.moves:
                steps.restore(cluster, mv, m.new, undo, timeout("restore"), lazy=False)
        _switch(m, undo)
        return
    ports = []
    with m.phase("dump"):
        for mv in m.moves:
            ports.append(steps.lazy_dump(cluster, mv, m.pod, undo, timeout("dump")))
    with m.phase("transfer"):
        for mv, t in zip(m.moves, transfers, strict=True):
            mv.transferred_bytes += t.go(timeout("transfer"))
    _switch(m, undo)
    wrapper = cluster.runc.criu
    assert wrapper is not None
    with m.phase("restore"):
        for mv, port in zip(m.moves, ports, strict=True):
            mv.dst.work.mkdir(parents=True, exist_ok=True)
            assert mv.tls is not None
            daemon = criu.lazy_pages(
                wrapper, mv.dst.netns_path, mv.src.node.ip, port, mv.dst.images, mv.dst.work, mv.tls
            )
            undo.callback(daemon.stop)
            mv.lazy_daemon = daemon
            steps.restore(cluster, mv, m.new, undo, timeout("restore"), lazy=True)


def _has_other_endpoints(m: Migration) -> bool:
    """Whether every service selecting the pod has another running endpoint."""
    pods = [p for p in m.cluster.store.pods(m.cluster.name) if p.name != m.pod.name and p.phase == "Running"]
    services = [
        s
        for s in m.cluster.store.services(m.cluster.name)
        if s.namespace == m.pod.namespace and svcops.selects(s.selector, m.pod.labels)
    ]
    return bool(services) and all(any(svcops.selects(s.selector, p.labels) for p in pods) for s in services)


def _finish_source(m: Migration) -> None:
    """After the switch (committed): let post-copy finish pulling memory, drain or kill the source.

    Nothing here may undo the migration, so each step is best effort: a failure becomes a
    warning in the report, and the source's sandbox is removed in any case.
    """
    cluster = m.cluster
    if m.plan.strategy is Strategy.POSTCOPY:
        t0 = time.monotonic()
        for mv in m.moves:
            try:
                if mv.dump_proc is not None:
                    mv.dump_proc.wait(timeout=max(1.0, m.options.timeout_s))
                if mv.lazy_daemon is not None:
                    mv.lazy_daemon.wait(timeout=30)
            except (subprocess.TimeoutExpired, criu.CriuError) as exc:
                m.warnings.append(f"post-copy of {mv.source.name} did not finish cleanly: {exc}")
            # A lazy dump's stats-dump holds no page counts (and a bogus frozen time), so the memory
            # the target pulled is read from the source's pagemaps instead.
            mv.page_bytes = criu.pagemap_bytes(mv.src.images)
        m.timings["pull"] = (time.monotonic() - t0) * 1000
    t0 = time.monotonic()
    for mv in m.moves:
        try:
            if m.plan.strategy is Strategy.COLD:
                steps.kill_frozen_source(cluster, mv.source)
            grace = m.options.drain_s if m.plan.strategy is Strategy.CLONE else 0.0
            podops.stop_container(cluster, mv.source, grace)
        except PodhopError as exc:
            m.warnings.append(f"stopping the source {mv.source.name}: {exc}")
    podops.delete_sandbox(cluster, m.pod)
    m.timings["drain" if m.plan.strategy is Strategy.CLONE else "cleanup"] = (time.monotonic() - t0) * 1000


def _report(
    m: Migration,
    total_ms: float,
    wall0: float,
    attempts: list[Any],
    before: metrics.Sample | None,
    after: metrics.Sample | None,
    images: int,
) -> dict[str, Any]:
    phases = {p: round(m.timings.get(p, 0.0), 1) for p in REPORTED_PHASES}
    phases.update({p: round(v, 1) for p, v in m.timings.items() if p not in phases})
    probe = summarize(attempts, m.options.probe_rate_hz) if attempts else None
    pages = sum(mv.page_bytes for mv in m.moves)  # streamed to a page server, or pulled lazily
    lazy = pages if m.plan.strategy is Strategy.POSTCOPY else 0
    transferred = sum(mv.transferred_bytes for mv in m.moves) + pages
    report: dict[str, Any] = {
        "pod": m.pod.name,
        "namespace": m.pod.namespace,
        "strategy": m.plan.strategy.value,
        "source_node": m.plan.source,
        "target_node": m.plan.target,
        "old_ip": m.pod.ip,
        "new_ip": m.new.ip,
        "started_at": datetime.fromtimestamp(wall0, UTC).isoformat(),
        "phases": phases,
        "total_ms": round(total_ms, 1),
        "downtime_ms": probe["downtime_ms"] if probe else None,
        "probe": probe,
        "bytes_transferred": transferred,
        "image_bytes": images + lazy,  # CRIU's images; post-copy's pages went to memory, not disk
        "memory_pages_bytes": pages,
        "link_bandwidth_bps": m.plan.link_bps,
        "criu_stats": [mv.stats for mv in m.moves],
        "warnings": m.warnings,
    }
    if before and after:
        b = next(n for n in before.nodes if n.name == m.plan.source)
        a = next(n for n in after.nodes if n.name == m.plan.source)
        pod_before = next((p for p in before.pods if p.name == m.pod.name), None)
        report["resources_freed"] = {
            "node": m.plan.source,
            "cpu_m_before": b.cpu_m,
            "cpu_m_after": a.cpu_m,
            "cpu_m_freed": b.cpu_m - a.cpu_m,
            "memory_b_before": b.memory_b,
            "memory_b_after": a.memory_b,
            "memory_b_freed": b.memory_b - a.memory_b,
            "pod_cpu_m": pod_before.cpu_m if pod_before else None,
            "pod_memory_b": pod_before.memory_b if pod_before else None,
        }
    return report


def migrate(
    cluster: LocalCluster,
    pod: str,
    target: str,
    strategy: str = "cold",
    namespace: str = "default",
    options: Options | None = None,
) -> dict[str, Any]:
    """Plan and execute one pod's migration under the cluster's lock; return its report."""
    with cluster.store.lock(cluster.name):
        return execute(prepare(cluster, pod, target, strategy, namespace, options))
