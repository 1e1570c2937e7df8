"""What a simulation measures, per policy: latency, SLA violations, migrations, energy, imbalance.

Why: the point of simulating is to compare policies on the quantities users
and operators care about, over the same world. Per step, every user's
requests are weighted by their number (rate × step length), so a busy user
counts more than an idle one, as in a request log. Latency is network (access
plus node-to-node) plus processing, the latter growing with the serving node's
CPU utilisation ρ as in an M/M/1 queue, ``service_ms / (1 − min(ρ, ρ_max))``
— overloaded nodes are slow, so balancing load matters for latency too.
During a migration's downtime a container serves nothing: that fraction of
its users' requests in the step counts as SLA violations (and not in the
latency statistics). Requests to an unplaced container all violate the SLA.

Percentiles come from a weighted histogram with logarithmic bins (0.5 % wide,
0.01 ms to 10⁶ ms) so memory stays constant however long the run — p95 is
exact to within one bin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from podhop.policies.snapshot import F64

LOG_LO, LOG_HI = -2.0, 6.0
BINS = 3700  # (LOG_HI - LOG_LO) / log10(1.005)


def _bin(values: F64) -> np.ndarray[Any, np.dtype[np.int64]]:
    x = (np.log10(np.maximum(values, 10**LOG_LO)) - LOG_LO) / (LOG_HI - LOG_LO) * BINS
    return np.clip(x.astype(np.int64), 0, BINS - 1)


@dataclass
class Metrics:
    """Accumulates one policy's measurements over a run."""

    requests: float = 0.0
    served: float = 0.0
    latency_sum: float = 0.0
    sla_violations: float = 0.0
    migrations: int = 0
    dropped: int = 0
    downtime_s: float = 0.0
    transfer_s: float = 0.0
    energy_j: float = 0.0
    imbalance_sum: float = 0.0
    util_std_sum: float = 0.0
    unplaced_max: int = 0
    capacity_violations: int = 0
    steps: int = 0
    hist: F64 = field(default_factory=lambda: np.zeros(BINS))
    series: dict[str, list[float]] = field(default_factory=dict)

    def record_requests(
        self, latency: F64, weight: F64, down_fraction: F64, sla_ms: float
    ) -> tuple[float, float]:
        """Add one step of requests; returns the step's mean latency and SLA violation rate."""
        served_w = weight * (1.0 - down_fraction)
        ok = np.isfinite(latency)
        violations = float(np.sum(weight * down_fraction) + np.sum(served_w[~ok]))
        violations += float(np.sum(served_w[ok & (latency > sla_ms)]))
        lat_sum = float(np.sum(served_w[ok] * latency[ok]))
        served = float(np.sum(served_w[ok]))
        total = float(np.sum(weight))
        self.hist += np.bincount(_bin(latency[ok]), served_w[ok], minlength=BINS)
        self.requests += total
        self.served += served
        self.latency_sum += lat_sum
        self.sla_violations += violations
        return (lat_sum / served if served > 0 else 0.0), (violations / total if total > 0 else 0.0)

    def record_step(self, power_w: float, step_s: float, util: F64, overall: float, unplaced: int) -> None:
        self.steps += 1
        self.energy_j += power_w * step_s
        self.imbalance_sum += 100.0 * (float(util.max(initial=0.0)) - overall)
        self.util_std_sum += float(util.std()) if len(util) else 0.0
        self.unplaced_max = max(self.unplaced_max, unplaced)

    def add_series(self, **values: float) -> None:
        for key, value in values.items():
            self.series.setdefault(key, []).append(value)

    def percentile(self, q: float) -> float:
        total = float(self.hist.sum())
        if total <= 0:
            return 0.0
        idx = int(np.searchsorted(np.cumsum(self.hist), q / 100.0 * total))
        return float(10 ** (LOG_LO + (min(idx, BINS - 1) + 1) * (LOG_HI - LOG_LO) / BINS))

    def summary(self, step_s: float) -> dict[str, float | int]:
        """The per-policy numbers of ``summary.json`` (rounded so reruns compare equal as text)."""
        steps = max(self.steps, 1)
        out: dict[str, float | int] = {
            "mean_latency_ms": self.latency_sum / self.served if self.served else 0.0,
            "p95_latency_ms": self.percentile(95),
            "p99_latency_ms": self.percentile(99),
            "requests": self.requests,
            "sla_violations": self.sla_violations,
            "sla_violation_rate": self.sla_violations / self.requests if self.requests else 0.0,
            "migrations": self.migrations,
            "dropped_migrations": self.dropped,
            "downtime_s": self.downtime_s,
            "transfer_s": self.transfer_s,
            "energy_kwh": self.energy_j / 3.6e6,
            "mean_power_w": self.energy_j / (steps * step_s),
            "imbalance_pp": self.imbalance_sum / steps,
            "utilisation_std": self.util_std_sum / steps,
            "unplaced": self.unplaced_max,
            "capacity_violations": self.capacity_violations,
        }
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}
