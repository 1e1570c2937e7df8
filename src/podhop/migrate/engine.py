"""Executing a migration plan, phase by phase, timed and undoable — on any backend.

Why: this is the one place that knows the order of a migration and its
discipline. The plan lists the phases up to the commit point and those after;
the backend's :class:`~podhop.backends.base.MigrationDriver` does each. Every
change a phase makes registers its undo on one ``ExitStack``, so a failure, a
timeout or Ctrl-C anywhere before the commit unwinds everything: the target's
half-made pod disappears and the source — resumed, serving — stays. After the
commit, phases are best effort: their failures become warnings in the report.

Downtime is not inferred from phase times: a probe (``probe``) hits the
pod's service (or the pod itself) at 200 requests/s from outside throughout,
and the longest gap between successful answers is reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from podhop.backends.base import Backend, MigrationDriver, Pod, Sample
from podhop.errors import NotFoundError, PodhopError
from podhop.migrate.plan import MigrationError, MigrationPlan, Options, Strategy, plan_migration
from podhop.migrate.probe import Attempt, Probe, summarize
from podhop.migrate.report import MigrationReport, ResourcesFreed, phase_table

__all__ = ["Migration", "MigrationError", "Options", "execute", "migrate", "prepare"]


@dataclass
class Migration:
    """A migration in progress: the plan, the pod as it was, the backend's driver, the clock."""

    backend: Backend
    plan: MigrationPlan
    pod: Pod
    driver: MigrationDriver
    options: Options
    started: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    current_phase: str = "prepare"

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
        except PodhopError as exc:  # the cause's hint (how to fix it) goes along
            raise MigrationError(name, str(exc), hint=exc.hint) from exc
        except OSError as exc:
            raise MigrationError(name, str(exc)) from exc
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + (time.monotonic() - t0) * 1000


def prepare(
    backend: Backend,
    pod_name: str,
    target: str,
    strategy: str,
    namespace: str = "default",
    options: Options | None = None,
    reserved: set[str] | None = None,
) -> Migration:
    """Find the pod, check the target, build the plan and the backend's driver. Nothing changes yet.

    ``reserved``: addresses taken by other migrations prepared alongside this one (updated).
    """
    pod = next((p for p in backend.pods(namespace) if p.name == pod_name), None)
    if pod is None:
        raise NotFoundError(f'pod "{pod_name}" not found in namespace {namespace} of cluster {backend.name}')
    nodes = {n.name for n in backend.nodes()}
    if target not in nodes:
        raise NotFoundError(
            f"node {target!r} not found in cluster {backend.name!r} (nodes: {', '.join(sorted(nodes))})"
        )
    facts = backend.migration_facts(pod, target, strategy)
    plan = plan_migration(
        namespace,
        pod_name,
        pod.node,
        target,
        strategy,
        target_fits=facts.target_fits,
        dirty_tracking=facts.dirty_tracking,
        state_bytes=facts.state_bytes,
        link_bps=facts.link_bps,
        other_endpoints=facts.other_endpoints,
        unsupported=facts.unsupported,
    )
    opts = options or Options()
    return Migration(backend, plan, pod, backend.migration(plan, pod, opts, reserved), opts)


def execute(m: Migration) -> MigrationReport:
    """Run the plan; return its report. Raises :class:`MigrationError` naming the failing phase."""
    opts, driver = m.options, m.driver
    before = _sample(m) if opts.measure_resources else None
    target = driver.probe_target() if opts.probe else None
    probe = Probe(target, rate_hz=opts.probe_rate_hz).start() if target else None
    wall0 = time.time()
    m.started = time.monotonic()
    try:
        with ExitStack() as undo:
            for name in m.plan.phases:
                with m.phase(name):
                    getattr(driver, name)(undo, m.remaining)
            undo.pop_all()  # committed: the pod lives on the target now
    except BaseException as exc:
        if probe:
            probe.stop()
        driver.discard()
        if isinstance(exc, KeyboardInterrupt):
            raise MigrationError(
                m.current_phase, "interrupted; the source pod was resumed and keeps serving"
            ) from exc
        raise
    for name in m.plan.after_commit:  # nothing here may undo the migration
        t0 = time.monotonic()
        try:
            m.warnings += getattr(driver, name)(lambda _phase: max(1.0, opts.timeout_s))
        except PodhopError as exc:
            m.warnings.append(f"{name}: {exc}")
        m.timings[name] = m.timings.get(name, 0.0) + (time.monotonic() - t0) * 1000
    total_ms = (time.monotonic() - m.started) * 1000
    attempts = probe.stop() if probe else []
    after = _sample(m) if opts.measure_resources else None
    return _report(m, total_ms, wall0, attempts, before, after)


def _sample(m: Migration) -> Sample | None:
    try:
        return m.backend.top(1.0)
    except PodhopError as exc:
        m.warnings.append(f"measuring resources: {exc}")
        return None


def _report(
    m: Migration,
    total_ms: float,
    wall0: float,
    attempts: list[Attempt],
    before: Sample | None,
    after: Sample | None,
) -> MigrationReport:
    return MigrationReport(
        pod=m.pod.name,
        namespace=m.pod.namespace,
        kind=m.backend.kind,
        strategy=m.plan.strategy.value,
        source_node=m.plan.source,
        target_node=m.plan.target,
        old_ip=m.pod.ip,
        new_ip=m.driver.new_ip,
        new_pod=m.driver.new_pod if m.driver.new_pod != m.pod.name else "",
        started_at=datetime.fromtimestamp(wall0, UTC).isoformat(),
        phases=phase_table(m.timings),
        total_ms=round(total_ms, 1),
        probe=summarize(attempts, m.options.probe_rate_hz) if attempts else None,
        moves=m.driver.figures(),
        link_bandwidth_bps=m.plan.link_bps,
        lazy=m.plan.strategy is Strategy.POSTCOPY,
        warnings=m.warnings,
        resources_freed=_freed(m, before, after),
    )


def _freed(m: Migration, before: Sample | None, after: Sample | None) -> ResourcesFreed | None:
    if before is None or after is None:
        return None
    b = next((n for n in before.nodes if n.name == m.plan.source), None)
    a = next((n for n in after.nodes if n.name == m.plan.source), None)
    if a is None or b is None:
        return None
    pod = next((p for p in before.pods if (p.namespace, p.name) == (m.pod.namespace, m.pod.name)), None)
    return ResourcesFreed(
        node=m.plan.source,
        cpu_m_before=b.cpu_m,
        cpu_m_after=a.cpu_m,
        memory_b_before=b.memory_b,
        memory_b_after=a.memory_b,
        pod_cpu_m=pod.cpu_m if pod else None,
        pod_memory_b=pod.memory_b if pod else None,
    )


def migrate(
    backend: Backend,
    pod: str,
    target: str,
    strategy: str = "cold",
    namespace: str = "default",
    options: Options | None = None,
) -> MigrationReport:
    """Plan and execute one pod's migration holding the cluster's lock; return its report."""
    with backend.lock():
        return execute(prepare(backend, pod, target, strategy, namespace, options))
