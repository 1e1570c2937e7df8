"""What a migration reports, as typed values — the same on every kind of cluster.

Why: the CLI, the rebalancer, the experiment runner, the benchmarks and the
calibration all read a migration's outcome. As a dict, each of them spelled
the keys again; here they are fields, written once. ``to_dict`` gives the JSON
that ``podhop migrate -o json`` prints and results files keep (its keys are a
published format: they do not change with the code's names). A pod's
containers move each from its own checkpoint, so the figures are kept per
container (``containers``, one entry each) and the pod's totals are their sums.

This module is pure (no I/O); backends and the engine both build from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: The phases every report times (milliseconds), in order, whether or not a strategy runs them.
REPORTED_PHASES = ("freeze", "dump", "transfer", "restore", "switch")


@dataclass(frozen=True)
class ProbeSummary:
    """An outside probe's figures over a window: attempts, failures, the longest gap between good
    answers (``downtime_ms`` is that minus one probe period, the probe's resolution), latency."""

    attempts: int
    failed: int
    longest_gap_ms: float
    downtime_ms: float
    latency_p50_ms: float
    latency_max_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ResourcesFreed:
    """CPU and memory of the source node just before and just after the migration."""

    node: str
    cpu_m_before: int
    cpu_m_after: int
    memory_b_before: int
    memory_b_after: int
    pod_cpu_m: int | None = None
    pod_memory_b: int | None = None

    @property
    def cpu_m_freed(self) -> int:
        return self.cpu_m_before - self.cpu_m_after

    @property
    def memory_b_freed(self) -> int:
        return self.memory_b_before - self.memory_b_after

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cpu_m_freed": self.cpu_m_freed, "memory_b_freed": self.memory_b_freed}


@dataclass
class MoveFigures:
    """What one container's move cost (a backend fills it in as it goes)."""

    container: str
    transferred_bytes: int = 0  # non-memory images and files over the link
    page_bytes: int = 0  # memory: streamed to a page server, or pulled lazily
    image_bytes: int = 0  # the checkpoint as it landed on the target
    criu_stats: dict[str, int] = field(default_factory=dict)

    def to_dict(self, lazy: bool = False) -> dict[str, Any]:
        """One entry of the report's ``containers``, its keys and sense the report's own (so the
        entries add up to the report's totals)."""
        return {
            "container": self.container,
            "bytes_transferred": self.transferred_bytes + self.page_bytes,
            "memory_pages_bytes": self.page_bytes,
            "image_bytes": self.image_bytes + (self.page_bytes if lazy else 0),
            "criu_stats": self.criu_stats,
        }


@dataclass
class MigrationReport:
    """One migration, measured."""

    pod: str
    namespace: str
    strategy: str
    source_node: str
    target_node: str
    old_ip: str
    new_ip: str
    started_at: str
    phases: dict[str, float]
    total_ms: float
    probe: ProbeSummary | None
    moves: list[MoveFigures]
    link_bandwidth_bps: int | None = None
    lazy: bool = False  # post-copy: pages went to memory, not to the target's disk
    warnings: list[str] = field(default_factory=list)
    resources_freed: ResourcesFreed | None = None
    kind: str = "local"
    new_pod: str = ""  # the restored pod's name where the cluster gives it a new one (Kubernetes)

    @property
    def downtime_ms(self) -> float | None:
        return self.probe.downtime_ms if self.probe else None

    @property
    def memory_pages_bytes(self) -> int:
        return sum(m.page_bytes for m in self.moves)

    @property
    def bytes_transferred(self) -> int:
        return sum(m.transferred_bytes for m in self.moves) + self.memory_pages_bytes

    @property
    def image_bytes(self) -> int:
        lazy = self.memory_pages_bytes if self.lazy else 0
        return sum(m.image_bytes for m in self.moves) + lazy

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pod": self.pod,
            "namespace": self.namespace,
            "kind": self.kind,
            "strategy": self.strategy,
            "source_node": self.source_node,
            "target_node": self.target_node,
            "old_ip": self.old_ip,
            "new_ip": self.new_ip,
            "started_at": self.started_at,
            "phases": self.phases,
            "total_ms": self.total_ms,
            "downtime_ms": self.downtime_ms,
            "probe": self.probe.to_dict() if self.probe else None,
            "bytes_transferred": self.bytes_transferred,
            "image_bytes": self.image_bytes,
            "memory_pages_bytes": self.memory_pages_bytes,
            "link_bandwidth_bps": self.link_bandwidth_bps,
            "criu_stats": [m.criu_stats for m in self.moves],
            "containers": [m.to_dict(self.lazy) for m in self.moves],
            "warnings": self.warnings,
        }
        if self.new_pod:
            out["new_pod"] = self.new_pod
        if self.resources_freed is not None:
            out["resources_freed"] = self.resources_freed.to_dict()
        return out


def phase_table(timings: dict[str, float]) -> dict[str, float]:
    """Every reported phase (0 where not run) first, then the others the migration timed, rounded."""
    phases = {p: round(timings.get(p, 0.0), 1) for p in REPORTED_PHASES}
    phases.update({p: round(v, 1) for p, v in timings.items() if p not in phases})
    return phases
