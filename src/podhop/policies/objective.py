"""One objective for every policy: user latency, migration cost, load imbalance and energy.

Why: to say that one policy is better than another — and to check that the
ILP is never beaten by a heuristic — every assignment of containers to nodes
must be scored by the same function. Oleghe (IEEE Access 9, 2021) surveys
multi-objective placement and migration models whose objectives are exactly
these: latency to users, the cost of migrating, balance of load and energy.
This module is the weighted sum; :mod:`podhop.policies.ilp` minimises the same
expression exactly (its constant offset included), so an ILP solution and a
heuristic's assignment are directly comparable.

Terms (``x`` the assignment, ``x0`` the current one). Each is normalised so
that its size does not grow with the cluster, and the defaults of
:class:`Weights` mean the same at 5 nodes and at 5,000:

* ``latency_ms`` — rate-weighted mean network latency over all users' traffic,
  ``Σ_u rate_u · (access_u + D[access node_u, x(c_u)]) / R`` with ``R = Σ_u rate_u``;
  traffic to an unplaced container counts 0 here and is charged by ``unplaced``.
* ``migration_ms`` — what the moves cost users, in the same unit: every
  container with ``x(c) ≠ x0(c)`` (both placed) is down for ``d_c`` (the cost
  model's downtime over ``min(bandwidth(source), bandwidth(target))``), and the
  ``R_c · d_c`` requests its users send meanwhile wait up to ``d_c``; spread
  over the ``R · horizon_s`` requests of the decision horizon that adds
  ``Σ R_c · d_c[s] · d_c[ms] / (R · horizon_s)`` ms to the mean latency. A
  snapshot without users (a live cluster measured by ``top`` alone) gives
  every container an equal share, ``R_c / R = 1 / C``.
  ``migrations`` counts the moves (each also costs ``w.per_migration``, so
  nothing moves for nothing); ``downtime_s`` is their total downtime.
* ``imbalance_pp`` — peak CPU utilisation minus the cluster's CPU utilisation,
  in percentage points: ``100 · (max_j use_j / cap_j − Σ use / Σ cap)`` (real
  usage, not requests; 0 when perfectly even).
* ``overload_pp`` — how far nodes run above the target CPU utilisation, summed
  over nodes in percentage points, ``Σ_j max(0, 100 · use_j / cap_j − target)``:
  a stand-in for queueing delay, which grows steeply near saturation (requests
  only promise capacity; real usage can exceed it).
* ``power_w`` — linear power model per powered-on node (one that hosts a
  container or has load of its own): ``idle_j + (max_j − idle_j) · use_j / cap_j``;
  the objective charges the mean per node, ``power_w / N``.
* ``unplaced`` — containers without a node.

``total = w.latency · latency_ms + w.migration · migration_ms + w.per_migration ·
migrations + w.imbalance · imbalance_pp + w.overload · overload_pp + w.energy ·
power_w / N + w.unplaced · unplaced``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from podhop.policies.costmodel import DEFAULT_STRATEGY, MigrationCostModel, Strategy
from podhop.policies.snapshot import CPU, F64, I64, Arrays


@dataclass(frozen=True)
class Weights:
    """Weights of the objective's terms. Defaults: 1 ms of mean latency ≈ 20 points of CPU
    imbalance ≈ 50 W of mean power per node; a move costs at least 0.01 ms; leaving a container
    unplaced is never worth it. ``horizon_s`` spreads a migration's downtime over the requests
    until the next decision."""

    latency: float = 1.0  # per ms of mean user latency
    migration: float = 1.0  # per ms of mean latency that downtime adds over the horizon
    per_migration: float = 0.01  # per move
    imbalance: float = 0.05  # per percentage point of peak-minus-mean CPU utilisation
    overload: float = 0.5  # per percentage point of CPU utilisation above the target, per node
    target_utilisation: float = 80.0  # percent
    energy: float = 0.02  # per W of mean power per node
    unplaced: float = 1000.0  # per unplaced container
    horizon_s: float = 60.0


@dataclass(frozen=True)
class Breakdown:
    """The objective of one assignment, term by term."""

    latency_ms: float
    migration_ms: float
    migrations: int
    downtime_s: float
    imbalance_pp: float
    overload_pp: float
    power_w: float
    unplaced: int
    total: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def migration_penalty_ms(arrays: Arrays, containers: I64, downtime_ms: F64, weights: Weights) -> F64:
    """Each move's ``R_c · d[s] · d[ms] / (R · horizon_s)``: mean latency its downtime adds."""
    total_rate = float(arrays.user_rate.sum())
    if total_rate > 0:
        share = arrays.container_rate()[containers] / total_rate
    else:  # nothing known about users: every container carries an equal share of the traffic
        share = np.full(len(containers), 1.0 / max(arrays.n_containers, 1))
    return np.asarray(share * (downtime_ms / 1000.0) * downtime_ms / weights.horizon_s, dtype=np.float64)


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
    strategy: Strategy = DEFAULT_STRATEGY,
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
    downtime = penalty = 0.0
    if len(moved):
        down, _ = move_costs(arrays, moved, arrays.node[moved], x[moved], model, strategy)
        downtime = float(down.sum()) / 1000.0
        penalty = float(migration_penalty_ms(arrays, moved, down, w).sum())
    util, overall = cpu_utilisation(arrays, x)
    has_cap = arrays.capacity[:, CPU] > 0
    imbalance = 100.0 * (float(util[has_cap].max()) - overall) if np.any(has_cap) else 0.0
    overload = float(np.sum(np.maximum(100.0 * util[has_cap] - w.target_utilisation, 0.0)))
    on = powered_on(arrays, x)
    power = float(np.sum((arrays.idle_w + (arrays.max_w - arrays.idle_w) * util)[on]))
    unplaced = int(np.sum(x < 0))
    total = (
        w.latency * latency
        + w.migration * penalty
        + w.per_migration * len(moved)
        + w.imbalance * imbalance
        + w.overload * overload
        + w.energy * power / max(arrays.n_nodes, 1)
        + w.unplaced * unplaced
    )
    return Breakdown(latency, penalty, len(moved), downtime, imbalance, overload, power, unplaced, total)
