"""One objective for every policy: user latency, migration cost, load imbalance and energy.

Why: to say that one policy is better than another — and to check that the
ILP is never beaten by a heuristic — every assignment of containers to nodes
must be scored by the same function. Oleghe (IEEE Access 9, 2021) surveys
multi-objective placement and migration models whose objectives are exactly
these: latency to users, the cost of migrating, balance of load and energy.
This module is the weighted sum; :mod:`podhop.policies.ilp` minimises the same
expression exactly (its constant offset included), so an ILP solution and a
heuristic's assignment are directly comparable.

Terms (``x`` the assignment, ``x0`` the current one):

* ``latency_ms`` — rate-weighted mean network latency over all users' traffic,
  ``Σ_u rate_u · (access_u + D[access node_u, x(c_u)]) / Σ_u rate_u``; traffic to
  an unplaced container counts 0 here and is charged by ``unplaced`` instead.
* ``downtime_s`` — predicted downtime of every container with
  ``x(c) ≠ x0(c)`` (and ``x0(c)`` placed), from the migration cost model over
  ``min(bandwidth(source), bandwidth(target))``.
* ``imbalance_pp`` — peak CPU utilisation minus the cluster's CPU utilisation,
  in percentage points: ``100 · (max_j use_j / cap_j − Σ use / Σ cap)`` (real
  usage, not requests; 0 when perfectly even).
* ``power_w`` — linear power model per powered-on node (one that hosts a
  container or has load of its own): ``idle_j + (max_j − idle_j) · use_j / cap_j``.
* ``unplaced`` — containers without a node.

``total = w.latency · latency_ms + w.migration · downtime_s + w.imbalance ·
imbalance_pp + w.energy · power_w + w.unplaced · unplaced``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from podhop.policies.costmodel import MigrationCostModel, Strategy
from podhop.policies.snapshot import CPU, F64, I64, Arrays


@dataclass(frozen=True)
class Weights:
    """Weights of the objective's terms (units: per ms, per s of downtime, per percentage point,
    per W, per unplaced container). Defaults: 1 ms of mean latency ≈ 1 s of downtime ≈
    10 points of imbalance ≈ 100 W; leaving a container unplaced is never worth it."""

    latency: float = 1.0
    migration: float = 1.0
    imbalance: float = 0.1
    energy: float = 0.01
    unplaced: float = 1000.0


@dataclass(frozen=True)
class Breakdown:
    """The objective of one assignment, term by term."""

    latency_ms: float
    downtime_s: float
    imbalance_pp: float
    power_w: float
    unplaced: int
    total: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def move_costs(
    arrays: Arrays,
    containers: I64,
    sources: I64,
    targets: I64,
    cost_model: MigrationCostModel,
    strategy: Strategy,
) -> tuple[F64, F64]:
    """Predicted ``(downtime_ms, transfer_ms)`` of moving each container from source to target."""
    bw = np.minimum(arrays.bandwidth_bps[sources], arrays.bandwidth_bps[targets])
    return cost_model.predict_many(arrays.state_bytes[containers], bw, strategy)


def cpu_utilisation(arrays: Arrays, assign: I64) -> tuple[F64, float]:
    """Per-node CPU utilisation (usage / capacity) and the cluster's overall utilisation."""
    use = arrays.node_usage(assign)[:, CPU]
    cap = arrays.capacity[:, CPU].astype(np.float64)
    util = np.divide(use, cap, out=np.zeros_like(use), where=cap > 0)
    total_cap = float(cap.sum())
    return util, (float(use[cap > 0].sum()) / total_cap if total_cap > 0 else 0.0)


def powered_on(arrays: Arrays, assign: I64) -> np.ndarray[Any, np.dtype[np.bool_]]:
    return (arrays.pods(assign) > 0) | (arrays.base_usage[:, CPU] > 0)


def evaluate(
    arrays: Arrays,
    assign: I64 | None = None,
    weights: Weights | None = None,
    cost_model: MigrationCostModel | None = None,
    strategy: Strategy = "precopy",
) -> Breakdown:
    """Score an assignment (default: the current one) with the shared objective."""
    w = weights or Weights()
    model = cost_model or MigrationCostModel()
    x = arrays.node if assign is None else assign
    lat = arrays.user_latency(x)
    total_rate = float(arrays.user_rate.sum())
    served = np.isfinite(lat)
    latency = float(np.sum(arrays.user_rate[served] * lat[served]) / total_rate) if total_rate > 0 else 0.0
    moved = np.flatnonzero((arrays.node >= 0) & (x >= 0) & (x != arrays.node))
    downtime = 0.0
    if len(moved):
        down, _ = move_costs(arrays, moved, arrays.node[moved], x[moved], model, strategy)
        downtime = float(down.sum()) / 1000.0
    util, overall = cpu_utilisation(arrays, x)
    has_cap = arrays.capacity[:, CPU] > 0
    imbalance = 100.0 * (float(util[has_cap].max()) - overall) if np.any(has_cap) else 0.0
    on = powered_on(arrays, x)
    power = float(np.sum((arrays.idle_w + (arrays.max_w - arrays.idle_w) * util)[on]))
    unplaced = int(np.sum(x < 0))
    total = (
        w.latency * latency
        + w.migration * downtime
        + w.imbalance * imbalance
        + w.energy * power
        + w.unplaced * unplaced
    )
    return Breakdown(latency, downtime, imbalance, power, unplaced, total)
