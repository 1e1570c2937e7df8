"""The exact model: placement and migration as an integer linear program, solved by HiGHS.

Why: heuristics answer fast but cannot say how far from the best they are.
Oleghe (IEEE Access 9, 2021) surveys multi-objective ILP models of edge
placement and migration; this is one, small enough to solve exactly for tens
of nodes and hundreds of containers, and it minimises *exactly* the objective
of :mod:`podhop.policies.objective` (the constant offset included), so its
value can be compared with any heuristic's — and can never be worse than the
best start it is given (the current assignment is always one).

Formulation. ``S``: containers being decided (pending or movable); ``K(c)``:
candidate nodes of ``c`` (nodes that pass its nodeSelector and fit it alone,
plus its current node). Everything else is fixed and only uses capacity.

    x[c,j] ∈ {0,1}  c ∈ S, j ∈ K(c)       c runs on j
    on[j]  ∈ {0,1}                         node j is powered (1 if it has fixed load)
    u[c]   ∈ {0,1}  c ∈ S pending          c stays unplaced
    z      ≥ 0                             peak CPU utilisation, percent
    o[j]   ≥ 0                             node j's CPU utilisation above the target, points

    minimise  Σ x[c,j] · ( w_lat · R_c · L[c,j] / R
                          + (w_mig · R_c · d[s] · d[ms] / (R · H) + w_move) · [cur(c) placed, j ≠ cur(c)]
                          + w_en / N · (max_j − idle_j) · use_c / cap_j
                          − w_imb · 100 · use_c / Σ cap )
            + Σ on[j] · w_en / N · idle_j  +  w_imb · z  +  w_over · Σ o[j]
            + Σ u[c] · w_unplaced  +  offset
    s.t.      Σ_j x[c,j] (+ u[c]) = 1                                every container somewhere
              Σ_c req_c^r · x[c,j] ≤ (cap_j^r − fixed_j^r) · on[j]    r ∈ {cpu, memory}
              Σ_c x[c,j] ≤ (max_pods_j − fixed pods_j) · on[j]
              100 · Σ_c use_c · x[c,j] / cap_j − z    ≤ −100 · fixed use_j / cap_j
              100 · Σ_c use_c · x[c,j] / cap_j − o[j] ≤ target − 100 · fixed use_j / cap_j
              x[c,j] ≤ on[j]                                          c requesting nothing

``L[c,j]`` is the rate-weighted mean latency of ``c``'s users from ``j``,
``R_c`` their total rate, ``R`` all users' rate, ``d`` the cost model's
downtime of the move, ``H`` the horizon; ``use`` is measured CPU usage;
``offset`` collects the fixed containers' latency, power and utilisation
terms. Capacity rows on requests are kube-scheduler's ``NodeResourcesFit``;
the power model is linear in CPU utilisation per powered node; ``z`` and
``o`` linearise the max and the overload. (``strong_links`` adds
``x[c,j] ≤ on[j]`` for every pair: a tighter relaxation, slower here.)

Scale: the full model has ``|S|·N`` binaries — 10,000 for 50 nodes × 200
containers. Re-optimising a running cluster of that size solves to the 1 %
gap in about a second; placing 200 containers from nothing is harder (the
LP relaxation spreads load fractionally, so its bound on imbalance and
power is weak) and stops at ``time_limit_s`` with the best plan found and the
gap HiGHS proved. Larger instances (``|S|·N`` above ``full_below``)
re-optimise a window: the ``max_containers`` containers that stand to gain
most (latency to their users, or sitting on the busiest nodes) over
``candidates`` nodes each (their current node, the closest to their users,
the least used); every other container stays where it is.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import highspy
import numpy as np

from podhop.errors import PodhopError
from podhop.policies.costmodel import DEFAULT_STRATEGY, MigrationCostModel, Strategy
from podhop.policies.objective import Weights, evaluate, migration_penalty_ms, move_costs
from podhop.policies.scorers import State
from podhop.policies.snapshot import CPU, F64, I64, MEM, Arrays, Bools


class IlpError(PodhopError):
    """HiGHS found no solution (and no feasible start was given)."""


@dataclass(frozen=True)
class IlpOptions:
    """Solver limits and, for large instances, the size of the re-optimised window."""

    time_limit_s: float = 10.0
    mip_rel_gap: float = 0.01
    full_below: int = 20_000
    max_containers: int = 200
    candidates: int = 8
    threads: int = 1
    strong_links: bool = False


@dataclass(frozen=True)
class IlpResult:
    assign: I64
    objective: float
    status: str
    gap: float
    seconds: float
    containers: int
    variables: int


def _window(st: State, opts: IlpOptions) -> tuple[I64, Bools]:
    """Containers to decide and their candidate nodes (all nodes for small instances)."""
    a = st.a
    pending = np.flatnonzero(a.node < 0)
    movable = np.flatnonzero((a.node >= 0) & a.movable)
    decide = np.concatenate([pending, movable])
    if len(decide) * a.n_nodes <= opts.full_below:
        cand = np.ones((len(decide), a.n_nodes), dtype=np.bool_)
    else:
        util = np.divide(
            st.usage[:, CPU], a.capacity[:, CPU], out=np.zeros(a.n_nodes), where=a.capacity[:, CPU] > 0
        )
        now, floor = a.served_latency()
        gain = ((now - floor) * a.container_rate())[movable]  # at most this much latency to win
        badness = gain / max(float(gain.max(initial=0.0)), 1e-9) + util[a.node[movable]]
        keep = max(0, opts.max_containers - len(pending))
        chosen = movable[np.argsort(-badness, kind="stable")[:keep]]
        decide = np.concatenate([pending, np.sort(chosen)])
        k = max(1, opts.candidates // 2)
        lat = a.container_latency(decide)
        cand = np.zeros((len(decide), a.n_nodes), dtype=np.bool_)
        near = np.argpartition(lat, min(k, a.n_nodes - 1), axis=1)[:, :k]
        cand[np.arange(len(decide))[:, None], near] = True
        cand[:, np.argsort(util, kind="stable")[:k]] = True
    alone = np.all(
        (a.requests[decide][:, None, :] == 0) | (a.requests[decide][:, None, :] <= a.capacity[None, :, :]),
        axis=2,
    )
    cand &= alone
    for i, c in enumerate(decide.tolist()):
        if c in a.allowed:
            cand[i] &= a.allowed[c]
        if a.node[c] >= 0:
            cand[i, a.node[c]] = True
    return decide.astype(np.int64), cand


class _Mip:
    """Columns, rows and coefficients of the model, gathered as arrays and passed to HiGHS at once."""

    def __init__(self) -> None:
        self.col_parts: list[tuple[F64, F64, F64, bool]] = []
        self.row_parts: list[tuple[F64, F64]] = []
        self.entries: list[tuple[I64, I64, F64]] = []
        self.ncol = self.nrow = 0

    def cols(self, cost: F64, lower: F64 | float, upper: float, integer: bool) -> I64:
        k = len(cost)
        self.col_parts.append(
            (cost, np.broadcast_to(np.asarray(lower, dtype=np.float64), (k,)), np.full(k, upper), integer)
        )
        self.ncol += k
        return np.arange(self.ncol - k, self.ncol, dtype=np.int64)

    def rows(self, k: int, lower: float, upper: F64 | float) -> I64:
        self.row_parts.append((np.full(k, lower), np.broadcast_to(np.asarray(upper, dtype=np.float64), (k,))))
        self.nrow += k
        return np.arange(self.nrow - k, self.nrow, dtype=np.int64)

    def coef(self, rows: I64, cols: I64, values: F64 | float) -> None:
        self.entries.append((rows, cols, np.broadcast_to(np.asarray(values, dtype=np.float64), rows.shape)))

    def load(self, h: highspy.Highs, offset: float) -> None:
        r = np.concatenate([e[0] for e in self.entries])
        c = np.concatenate([e[1] for e in self.entries])
        v = np.concatenate([e[2] for e in self.entries])
        order = np.lexsort((r, c))
        start = np.searchsorted(c[order], np.arange(self.ncol + 1)).astype(np.int32)
        integrality = np.concatenate([np.full(len(p[0]), int(p[3]), dtype=np.int32) for p in self.col_parts])
        h.passModel(
            self.ncol,
            self.nrow,
            len(v),
            1,
            1,
            offset,
            np.concatenate([p[0] for p in self.col_parts]),
            np.concatenate([p[1] for p in self.col_parts]),
            np.concatenate([p[2] for p in self.col_parts]),
            np.concatenate([p[0] for p in self.row_parts]),
            np.concatenate([p[1] for p in self.row_parts]),
            start,
            r[order].astype(np.int32),
            v[order],
            integrality,
        )


def solve(
    arrays: Arrays,
    weights: Weights | None = None,
    cost_model: MigrationCostModel | None = None,
    strategy: Strategy = DEFAULT_STRATEGY,
    options: IlpOptions | None = None,
    starts: Sequence[I64] = (),
) -> IlpResult:
    """Minimise the shared objective exactly (see the module docstring); ``starts`` are feasible
    assignments offered as incumbents (the current one is always added)."""
    t0 = time.perf_counter()
    w, model, opts = weights or Weights(), cost_model or MigrationCostModel(), options or IlpOptions()
    a, n = arrays, arrays.n_nodes
    decide, cand = _window(State(a), opts)
    fixed_assign = a.node.copy()
    fixed_assign[decide] = -1
    f_req, f_pods, f_use = a.requested(fixed_assign), a.pods(fixed_assign), a.node_usage(fixed_assign)
    cpu_cap = a.capacity[:, CPU].astype(np.float64)
    capped = np.flatnonzero(cpu_cap > 0)
    slot = np.full(n, -1, dtype=np.int64)
    slot[capped] = np.arange(len(capped))
    total_cap, total_rate = float(cpu_cap.sum()), float(a.user_rate.sum())
    vc, vj = np.nonzero(cand)  # variable k is x[decide[vc[k]], vj[k]]
    cs = decide[vc]
    use = a.usage[cs, CPU]
    util = np.where(cpu_cap[vj] > 0, 100.0 * use / np.maximum(cpu_cap[vj], 1.0), 0.0)
    energy = w.energy / max(n, 1)
    lat = a.container_latency(decide)[vc, vj] if total_rate > 0 else np.zeros(len(vc))
    cost = w.latency * a.container_rate()[cs] * lat / (total_rate or 1.0)
    cost += energy * (a.max_w[vj] - a.idle_w[vj]) * util / 100.0
    cost -= w.imbalance * 100.0 * use * (cpu_cap[vj] > 0) / (total_cap or 1.0)
    moving = (a.node[cs] >= 0) & (a.node[cs] != vj)
    if moving.any():
        down, _ = move_costs(a, cs[moving], a.node[cs[moving]], vj[moving], model, strategy)
        cost[moving] += w.migration * migration_penalty_ms(a, cs[moving], down, w) + w.per_migration
    pending = np.flatnonzero(a.node[decide] < 0)
    forced_on = (f_pods > 0) | (a.base_usage[:, CPU] > 0)
    f_util = np.divide(100.0 * f_use[:, CPU], cpu_cap, out=np.zeros(n), where=cpu_cap > 0)

    m = _Mip()
    x = m.cols(cost, 0.0, 1.0, True)
    on = m.cols(energy * a.idle_w, forced_on.astype(np.float64), 1.0, True)
    z = m.cols(np.array([w.imbalance]), 0.0, np.inf, False)
    over = m.cols(np.full(len(capped), w.overload), 0.0, np.inf, False)
    unplaced = m.cols(np.full(len(pending), w.unplaced), 0.0, 1.0, True)
    assign_rows = m.rows(len(decide), 1.0, 1.0)
    m.coef(assign_rows[vc], x, 1.0)
    m.coef(assign_rows[pending], unplaced, 1.0)
    room = np.maximum(a.capacity - f_req, 0).astype(np.float64)
    for r in (CPU, MEM):
        cap_rows = m.rows(n, -np.inf, 0.0)
        m.coef(cap_rows[vj], x, a.requests[cs, r].astype(np.float64))
        m.coef(cap_rows, on, -room[:, r])
    pod_rows = m.rows(n, -np.inf, 0.0)
    m.coef(pod_rows[vj], x, 1.0)
    m.coef(pod_rows, on, -np.maximum(a.max_pods - f_pods, 0).astype(np.float64))
    sel = slot[vj] >= 0
    for extra, rhs in (
        (np.repeat(z, len(capped)), -f_util[capped]),
        (over, w.target_utilisation - f_util[capped]),
    ):
        util_rows = m.rows(len(capped), -np.inf, rhs)
        m.coef(util_rows[slot[vj[sel]]], x[sel], util[sel])
        m.coef(util_rows, extra, -1.0)
    links = np.arange(len(vc)) if opts.strong_links else np.flatnonzero(np.all(a.requests[cs] == 0, axis=1))
    link_rows = m.rows(len(links), -np.inf, 0.0)
    m.coef(link_rows, x[links], 1.0)
    m.coef(link_rows, on[vj[links]], -1.0)
    # the fixed containers' share of the objective
    f_lat = a.user_latency(fixed_assign)
    served = np.isfinite(f_lat)
    offset = w.latency * float(np.sum(a.user_rate[served] * f_lat[served])) / (total_rate or 1.0)
    offset += energy * float(np.sum(((a.max_w - a.idle_w) * f_util / 100.0)[forced_on]))
    offset -= w.imbalance * 100.0 * float(f_use[capped, CPU].sum()) / (total_cap or 1.0)

    h = _highs()
    for name, value in (
        ("output_flag", False),
        ("time_limit", float(opts.time_limit_s)),
        ("mip_rel_gap", float(opts.mip_rel_gap)),
        ("threads", int(opts.threads)),
        ("random_seed", 0),
    ):
        h.setOptionValue(name, value)
    m.load(h, offset)
    best = _best_start(a, [a.node, *starts], w, model, strategy, decide, cand)
    if best is not None:
        util_best = np.divide(100.0 * a.node_usage(best)[:, CPU], cpu_cap, out=np.zeros(n), where=cpu_cap > 0)
        values = np.zeros(m.ncol)
        values[x] = best[cs] == vj
        values[on] = forced_on | (a.pods(best) > 0)
        values[z] = float(util_best.max(initial=0.0))
        values[over] = np.maximum(util_best[capped] - w.target_utilisation, 0.0)
        values[unplaced] = best[decide[pending]] < 0
        sol = highspy.HighsSolution()
        sol.col_value = values.tolist()
        sol.value_valid = True
        h.setSolution(sol)
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    info = h.getInfo()
    seconds = time.perf_counter() - t0
    if info.primal_solution_status != 2:  # kSolutionStatusFeasible
        if best is None:
            raise IlpError(f"HiGHS found no feasible placement ({status})")
        total = evaluate(a, best, w, model, strategy).total
        return IlpResult(best, total, status, float("inf"), seconds, len(decide), m.ncol)
    chosen = np.array(h.getSolution().col_value)[x] > 0.5
    assign = a.node.copy()
    assign[decide[pending]] = -1
    assign[cs[chosen]] = vj[chosen]
    gap = float(info.mip_gap)
    return IlpResult(assign, float(info.objective_function_value), status, gap, seconds, len(decide), m.ncol)


def _highs() -> highspy.Highs:
    """A solver, without the banner HiGHS prints on stdout when the first one is made."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            return highspy.Highs()  # type: ignore[no-untyped-call]
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _best_start(
    a: Arrays,
    starts: Sequence[I64],
    w: Weights,
    model: MigrationCostModel,
    strategy: Strategy,
    decide: I64,
    cand: Bools,
) -> I64 | None:
    """The best feasible start whose choices are all candidates."""
    best: tuple[float, I64] | None = None
    for x in starts:
        chosen = x[decide]
        ok = np.all((chosen < 0) | cand[np.arange(len(decide)), np.maximum(chosen, 0)])
        ok &= bool(np.all(x[a.node >= 0] >= 0))
        req = a.requested(x)
        ok &= bool(np.all((req <= a.capacity) | (a.requested(a.node) >= req)))
        ok &= bool(np.all(a.pods(x) <= np.maximum(a.max_pods, a.pods(a.node))))
        if ok:
            total = evaluate(a, x, w, model, strategy).total
            if best is None or total < best[0]:
                best = (total, x)
    return None if best is None else best[1]
