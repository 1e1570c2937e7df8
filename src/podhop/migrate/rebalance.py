"""The live rebalancer: measure the cluster, let a policy plan, migrate step by step.

Why: the policies in :mod:`podhop.policies` are pure and shared with the
simulator; this module is the thin live loop around them. It samples real
usage (the ``top`` data) into a :class:`~podhop.policies.snapshot.Snapshot` —
node capacities and links, pod requests, usage and memory as state size —
asks the named policy for a :class:`~podhop.policies.plan.Plan`, and runs the
plan's migrations with the migration engine, one after another or K at a
time (the plan orders moves so each fits after the previous ones; with K > 1 a
batch's moves are checked against the target's capacity by the engine's own
planning, so one that no longer fits fails cleanly). If a step fails, the
steps already running finish, no new step starts,
and the report says which failed and why (each failed step has already rolled
itself back, so its pod keeps serving where it was).

Imbalance is reported as the standard deviation of the nodes' CPU
utilisation (percent of each node's CPU budget), before and after.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from podhop.backends.base import Backend, Sample
from podhop.errors import PodhopError
from podhop.migrate.engine import Options, execute, prepare
from podhop.migrate.report import MigrationReport
from podhop.objects.model import Resources, pairs
from podhop.policies import registry
from podhop.policies.plan import Migration as PlannedMove
from podhop.policies.plan import Plan
from podhop.policies.snapshot import ContainerInfo, NodeInfo, Snapshot

Report = Callable[[str], None]


#: Pods that belong to their node (one per node, by design): never moved.
PINNED_OWNERS = ("DaemonSet", "Node")


def snapshot(backend: Backend, sample: Sample, namespace: str = "default") -> Snapshot:
    """The live cluster as the policies see it: every node (its measured usage includes every pod),
    the running pods of ``namespace`` that may move."""
    usage = {(p.namespace, p.name): p for p in sample.pods}
    node_usage = {n.name: n for n in sample.nodes}
    nodes = tuple(
        NodeInfo(
            name=n.name,
            capacity=Resources(n.cpu_m, n.memory_b),
            usage=Resources(node_usage[n.name].cpu_m, node_usage[n.name].memory_b)
            if n.name in node_usage
            else Resources(),
            bandwidth_bps=float(n.bandwidth_bps or 10**10),
            labels=pairs({"kubernetes.io/hostname": n.name, **n.labels}),
        )
        for n in backend.nodes()
    )
    containers = []
    for p in backend.pods(namespace):
        if p.phase != "Running" or p.owner_kind in PINNED_OWNERS:
            continue
        u = usage.get((p.namespace, p.name))
        containers.append(
            ContainerInfo(
                name=p.name,
                node=p.node,
                requests=p.requests,
                usage=Resources(u.cpu_m, u.memory_b) if u else Resources(),
                state_bytes=u.memory_b if u else 0,
                node_selector=pairs(p.node_selector),
            )
        )
    return Snapshot(nodes=nodes, containers=tuple(containers))


def imbalance(sample: Sample) -> float:
    """Standard deviation of the nodes' CPU utilisation, in percent points."""
    pct = [n.cpu_pct for n in sample.nodes]
    return statistics.pstdev(pct) if len(pct) > 1 else 0.0


@dataclass
class Result:
    policy: str
    plan: Plan
    imbalance_before: float
    imbalance_after: float | None = None
    migrations: list[MigrationReport] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stale: list[dict[str, str]] = field(default_factory=list)  # steps the cluster had outgrown

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "planned": [
                {
                    "pod": m.container,
                    "source": m.source,
                    "target": m.target,
                    "reason": m.reason,
                    "predicted_downtime_ms": round(m.downtime_ms, 1),
                    "predicted_transfer_ms": round(m.transfer_ms, 1),
                }
                for m in self.plan.migrations
            ],
            "imbalance_before": round(self.imbalance_before, 2),
            "imbalance_after": None if self.imbalance_after is None else round(self.imbalance_after, 2),
            "migrations": [m.to_dict() for m in self.migrations],
            "failed": self.failed,
            "skipped": self.skipped,
            "stale": self.stale,
        }


def rebalance(
    backend: Backend,
    policy: str,
    *,
    dry_run: bool = False,
    max_concurrent: int = 1,
    strategy: str = "cold",
    window_s: float = 2.0,
    options: dict[str, Any] | None = None,
    namespace: str = "default",
    report: Report = lambda _: None,
) -> Result:
    """Plan with ``policy`` from live usage of the pods of ``namespace``; unless ``dry_run``, execute
    the plan's migrations."""
    if max_concurrent < 1:
        raise PodhopError("--max-concurrent must be at least 1")
    if window_s <= 0:
        raise PodhopError(f"--window must be positive, got {window_s:g}")
    pol = registry.get(policy, **(options or {}))
    report(f"measuring usage for {window_s:.0f} s")
    before = backend.top(window_s)
    plan = pol.plan(snapshot(backend, before, namespace), registry.Context(strategy=strategy))  # type: ignore[arg-type]
    result = Result(policy, plan, imbalance(before))
    if dry_run or not plan.migrations:
        return result
    execute_plan(
        backend, result, max_concurrent=max_concurrent, strategy=strategy, namespace=namespace, report=report
    )
    report(f"measuring usage for {window_s:.0f} s")
    result.imbalance_after = imbalance(backend.top(window_s))
    return result


def stale(backend: Backend, step: PlannedMove, namespace: str = "default") -> str | None:
    """Why a planned step no longer fits the cluster as it is now (None: it still does)."""
    pod = next((p for p in backend.pods(namespace) if p.name == step.container), None)
    if pod is None:
        return f"pod {step.container} no longer exists"
    if pod.node != step.source:
        return f"pod {step.container} is on {pod.node} now, not on {step.source} as planned"
    if pod.phase != "Running":
        return f"pod {step.container} is {pod.phase}"
    if step.target not in {n.name for n in backend.nodes()}:
        return f"node {step.target} no longer exists"
    return None


def execute_plan(
    backend: Backend,
    result: Result,
    *,
    max_concurrent: int = 1,
    strategy: str = "cold",
    namespace: str = "default",
    report: Report = lambda _: None,
) -> None:
    """Run ``result.plan``'s migrations, K at a time, each re-checked against the cluster as it is
    just before it runs (capacity by the engine's planning, the pod's place here); stop after a failure."""
    steps = list(result.plan.migrations)
    with backend.lock():
        while steps and not result.failed:
            batch, steps = steps[:max_concurrent], steps[max_concurrent:]
            reserved: set[str] = set()
            prepared = []
            for step in batch:
                why = stale(backend, step, namespace)
                if why is not None:
                    result.stale.append({"pod": step.container, "target": step.target, "reason": why})
                    continue
                try:
                    prepared.append(
                        prepare(
                            backend,
                            step.container,
                            step.target,
                            strategy,
                            namespace,
                            options=Options(measure_resources=False),
                            reserved=reserved,
                        )
                    )
                except PodhopError as exc:
                    result.failed.append({"pod": step.container, "target": step.target, "error": str(exc)})
            if not prepared:
                continue
            report(f"migrating {', '.join(f'{m.pod.name} -> {m.plan.target}' for m in prepared)}")
            with ThreadPoolExecutor(max_workers=max_concurrent) as pool:
                futures = [(m, pool.submit(execute, m)) for m in prepared]
                for m, fut in futures:
                    try:
                        result.migrations.append(fut.result())
                    except PodhopError as exc:
                        result.failed.append({"pod": m.pod.name, "target": m.plan.target, "error": str(exc)})
        result.skipped = [s.container for s in steps]
