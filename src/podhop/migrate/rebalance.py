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

from podhop.backends.local import metrics
from podhop.backends.local.apply import spec_from_record
from podhop.backends.local.cluster import LocalCluster
from podhop.errors import PodhopError
from podhop.migrate.engine import Options, execute, prepare
from podhop.objects.model import Resources, pairs
from podhop.policies import registry
from podhop.policies.plan import Migration as PlannedMove
from podhop.policies.plan import Plan
from podhop.policies.snapshot import ContainerInfo, NodeInfo, Snapshot

Report = Callable[[str], None]


def snapshot(cluster: LocalCluster, sample: metrics.Sample) -> Snapshot:
    """The live cluster as the policies see it."""
    usage = {(p.namespace, p.name): p for p in sample.pods}
    node_usage = {n.name: n for n in sample.nodes}
    nodes = tuple(
        NodeInfo(
            name=n.name,
            capacity=Resources(n.cpu_m, n.memory_b),
            usage=Resources(node_usage[n.name].cpu_m, node_usage[n.name].memory_b),
            bandwidth_bps=float(n.bandwidth_bps or 10**10),
            labels=pairs({"kubernetes.io/hostname": n.name}),
        )
        for n in cluster.nodes()
    )
    containers = []
    for p in cluster.store.pods(cluster.name):
        u = usage.get((p.namespace, p.name))
        spec = spec_from_record(p)
        containers.append(
            ContainerInfo(
                name=p.name,
                node=p.node,
                requests=spec.requests,
                usage=Resources(u.cpu_m, u.memory_b) if u else Resources(),
                state_bytes=u.memory_b if u else 0,
                node_selector=spec.node_selector,
            )
        )
    return Snapshot(nodes=nodes, containers=tuple(containers))


def imbalance(sample: metrics.Sample) -> float:
    """Standard deviation of the nodes' CPU utilisation, in percent points."""
    pct = [n.cpu_pct for n in sample.nodes]
    return statistics.pstdev(pct) if len(pct) > 1 else 0.0


@dataclass
class Result:
    policy: str
    plan: Plan
    imbalance_before: float
    imbalance_after: float | None = None
    migrations: list[dict[str, Any]] = field(default_factory=list)
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
            "migrations": self.migrations,
            "failed": self.failed,
            "skipped": self.skipped,
            "stale": self.stale,
        }


def rebalance(
    cluster: LocalCluster,
    policy: str,
    *,
    dry_run: bool = False,
    max_concurrent: int = 1,
    strategy: str = "cold",
    window_s: float = 2.0,
    options: dict[str, Any] | None = None,
    report: Report = lambda _: None,
) -> Result:
    """Plan with ``policy`` from live usage; unless ``dry_run``, execute the plan's migrations."""
    if max_concurrent < 1:
        raise PodhopError("--max-concurrent must be at least 1")
    if window_s <= 0:
        raise PodhopError(f"--window must be positive, got {window_s:g}")
    pol = registry.get(policy, **(options or {}))
    report(f"measuring usage for {window_s:.0f} s")
    before = metrics.sample(cluster, window_s)
    plan = pol.plan(snapshot(cluster, before), registry.Context(strategy=strategy))  # type: ignore[arg-type]
    result = Result(policy, plan, imbalance(before))
    if dry_run or not plan.migrations:
        return result
    execute_plan(cluster, result, max_concurrent=max_concurrent, strategy=strategy, report=report)
    report(f"measuring usage for {window_s:.0f} s")
    result.imbalance_after = imbalance(metrics.sample(cluster, window_s))
    return result


def stale(cluster: LocalCluster, step: PlannedMove) -> str | None:
    """Why a planned step no longer fits the cluster as it is now (None: it still does)."""
    pod = next((p for p in cluster.store.pods(cluster.name) if p.name == step.container), None)
    if pod is None:
        return f"pod {step.container} no longer exists"
    if pod.node != step.source:
        return f"pod {step.container} is on {pod.node} now, not on {step.source} as planned"
    if pod.phase != "Running":
        return f"pod {step.container} is {pod.phase}"
    if step.target not in {n.name for n in cluster.nodes()}:
        return f"node {step.target} no longer exists"
    return None


def execute_plan(
    cluster: LocalCluster,
    result: Result,
    *,
    max_concurrent: int = 1,
    strategy: str = "cold",
    report: Report = lambda _: None,
) -> None:
    """Run ``result.plan``'s migrations, K at a time, each re-checked against the cluster as it is
    just before it runs (capacity by the engine's planning, the pod's place here); stop after a failure."""
    steps = list(result.plan.migrations)
    with cluster.store.lock(cluster.name):
        while steps and not result.failed:
            batch, steps = steps[:max_concurrent], steps[max_concurrent:]
            reserved: set[str] = set()
            prepared = []
            for step in batch:
                why = stale(cluster, step)
                if why is not None:
                    result.stale.append({"pod": step.container, "target": step.target, "reason": why})
                    continue
                try:
                    prepared.append(
                        prepare(
                            cluster,
                            step.container,
                            step.target,
                            strategy,
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
