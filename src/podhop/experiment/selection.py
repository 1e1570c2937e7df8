"""Choosing the pod to move and where to, from measured metrics — as the seed did by hand.

Why: the seed ran ``hey``, read ``kubectl top pods --sort-by=cpu`` and
``kubectl top nodes``, and moved the hottest pod to the least-loaded node.
The experiment does the same from the ``top`` samples it records every
second, and this module is that decision, kept pure (rows in, a choice with
its ranking out) so it can be tested on recorded data and re-checked from a
results folder's ``metrics.csv``.

Rules (all over the mean of the samples whose window lies in the chosen
interval, normally the baseline load phase):

``hottest-cpu``     the pod with the highest mean CPU (millicores); ties: more memory, then name.
``hottest-memory``  the pod with the highest mean working set; ties: more CPU, then name.
``least-loaded``    among nodes other than the pod's that have room for it, the one whose
                    dominant share — max(CPU %, memory %) of its capacity — is lowest;
                    ties: the other share, then name. (CPU alone would send a memory-heavy
                    pod to a node short of memory; the dominant share, as in DRF, does not.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from podhop.errors import PodhopError


class SelectionError(PodhopError):
    """No pod or no node satisfies the rule (no samples, no candidates, no room)."""


@dataclass(frozen=True)
class MetricRow:
    """One ``top`` reading of one node or pod; the rows of ``metrics.csv``."""

    t: float  # end of the sampling window, time.time() seconds
    window_s: float
    kind: str  # "node" | "pod"
    namespace: str  # "" for nodes
    name: str
    node: str  # the node a pod ran on; a node's own name
    cpu_m: int
    memory_b: int
    cpu_capacity_m: int = 0  # nodes only
    memory_capacity_b: int = 0

    @property
    def mid(self) -> float:
        return self.t - self.window_s / 2


@dataclass(frozen=True)
class Usage:
    """Mean usage of one node or pod over a window."""

    name: str
    node: str
    cpu_m: float
    memory_b: float
    samples: int
    cpu_pct: float = 0.0  # nodes: of capacity
    memory_pct: float = 0.0

    @property
    def dominant_pct(self) -> float:
        return max(self.cpu_pct, self.memory_pct)


@dataclass(frozen=True)
class Choice:
    """A decision and why: the rule, what it picked, and every candidate's figures, best first."""

    rule: str
    chosen: str
    reason: str
    ranking: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def in_window(rows: Iterable[MetricRow], since: float, until: float) -> list[MetricRow]:
    """Rows whose sampling window's midpoint lies in ``[since, until]``."""
    return [r for r in rows if since <= r.mid <= until]


def overlapping(rows: Iterable[MetricRow], since: float, until: float) -> list[MetricRow]:
    """Rows whose sampling window overlaps ``[since, until]`` (for phases shorter than a window)."""
    return [r for r in rows if r.t >= since and r.t - r.window_s <= until]


def mean_usage(rows: Iterable[MetricRow], kind: str, namespace: str | None = None) -> dict[str, Usage]:
    """Mean CPU and memory per node (``kind="node"``) or pod (``"pod"``, optionally one namespace)."""
    acc: dict[str, list[MetricRow]] = {}
    for r in rows:
        if r.kind == kind and (namespace is None or kind == "node" or r.namespace == namespace):
            acc.setdefault(r.name, []).append(r)
    out: dict[str, Usage] = {}
    for name, rs in acc.items():
        n = len(rs)
        cpu = sum(r.cpu_m for r in rs) / n
        mem = sum(r.memory_b for r in rs) / n
        cap_cpu, cap_mem = rs[-1].cpu_capacity_m, rs[-1].memory_capacity_b
        out[name] = Usage(
            name,
            rs[-1].node,
            cpu,
            mem,
            n,
            100.0 * cpu / cap_cpu if cap_cpu else 0.0,
            100.0 * mem / cap_mem if cap_mem else 0.0,
        )
    return out


def _row(u: Usage) -> dict[str, Any]:
    return {
        "name": u.name,
        "node": u.node,
        "cpu_m": round(u.cpu_m, 1),
        "memory_b": round(u.memory_b),
        "cpu_pct": round(u.cpu_pct, 2),
        "memory_pct": round(u.memory_pct, 3),
        "samples": u.samples,
    }


def pick_pod(
    rows: Iterable[MetricRow],
    rule: str,
    *,
    namespace: str = "default",
    candidates: set[str] | None = None,
) -> Choice:
    """The pod ``rule`` names: ``hottest-cpu``, ``hottest-memory``, or a pod name taken as is."""
    usage = mean_usage(rows, "pod", namespace)
    if rule not in ("hottest-cpu", "hottest-memory"):
        if candidates is not None and rule not in candidates:
            raise SelectionError(f"pod {rule!r} does not exist in namespace {namespace!r}")
        found = usage.get(rule)
        return Choice("name", rule, "named in the spec", [_row(found)] if found else [])
    pool = [u for u in usage.values() if candidates is None or u.name in candidates]
    if not pool:
        raise SelectionError(
            f"{rule}: no pod samples to choose from"
            + (" (no running pod matches migration.selector)" if candidates is not None else ""),
            hint="the load phase may be shorter than one 1-s metrics sample: raise load.requests",
        )
    if rule == "hottest-cpu":
        pool.sort(key=lambda u: (-u.cpu_m, -u.memory_b, u.name))
        best = pool[0]
        reason = f"highest mean CPU: {best.cpu_m:.0f}m over {best.samples} sample(s) on {best.node}"
    else:
        pool.sort(key=lambda u: (-u.memory_b, -u.cpu_m, u.name))
        best = pool[0]
        reason = f"highest mean memory: {best.memory_b / 2**20:.1f} MiB over {best.samples} sample(s)"
    return Choice(rule, best.name, reason, [_row(u) for u in pool])


def pick_node(
    rows: Iterable[MetricRow],
    rule: str,
    *,
    source: str,
    eligible: set[str] | None = None,
) -> Choice:
    """The target node: ``least-loaded`` (see the module doc) or a node name taken as is."""
    usage = mean_usage(rows, "node")
    if rule != "least-loaded":
        if rule == source:
            raise SelectionError(f"the pod already runs on {rule}", hint="choose another migration.target")
        found = usage.get(rule)
        return Choice("name", rule, "named in the spec", [_row(found)] if found else [])
    pool = [u for u in usage.values() if u.name != source]
    if eligible is not None:
        full = sorted(u.name for u in pool if u.name not in eligible)
        pool = [u for u in pool if u.name in eligible]
    else:
        full = []
    if not pool:
        raise SelectionError(
            f"least-loaded: no node other than {source} can take the pod"
            + (f" (no room on {', '.join(full)})" if full else " (no node samples)")
        )
    pool.sort(key=lambda u: (u.dominant_pct, min(u.cpu_pct, u.memory_pct), u.name))
    best = pool[0]
    reason = (
        f"lowest dominant share: {best.dominant_pct:.1f}% "
        f"(CPU {best.cpu_pct:.1f}%, memory {best.memory_pct:.1f}%)"
        + (f"; skipped for lack of room: {', '.join(full)}" if full else "")
    )
    return Choice(rule, best.name, reason, [_row(u) for u in pool])
