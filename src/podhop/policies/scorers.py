"""kube-scheduler's scorers and their companions, vectorised over nodes and containers.

Why: placement (:mod:`podhop.policies.placement`) and the migration triggers
both need to ask "does this container fit that node, and how good is it?" for
many containers and many nodes at once. :mod:`podhop.policies.scoring` answers
for one pod and one node with kube-scheduler's exact integer formulas; this
module computes the same numbers as NumPy arrays, over a mutable
:class:`State` (per-node requests, non-zero requests, pods and usage) that a
round of placements or migrations updates as it goes.

Scorers (higher is better; the integer ones are kube-scheduler's formulas as
documented in :mod:`~podhop.policies.scoring`, integer truncation included):
``least-allocated`` (``NodeResourcesFit`` LeastAllocated), ``most-allocated``
(MostAllocated), ``balanced`` (``NodeResourcesBalancedAllocation``); and
``first-fit`` (first node in natural name order), ``best-fit`` (least capacity
left, as the sum of the cpu and memory fractions left after placing),
``worst-fit`` (most left) and ``latency-aware`` (lowest expected latency of
the container's users, Oleghe's (IEEE Access 9, 2021) edge placement
criterion; ties go to the least-allocated node).

``latency-aware`` counts the load it puts on a node, as edge placement models
do (queueing at the edge server, e.g. M/M/1 response times): a user's expected
latency from node *n* is its network latency (access + path) plus the node's
response time ``SERVICE_MS / (1 − ρ)``, where ρ is the node's CPU utilisation
*with* the container on it (measured usage over capacity, capped at
``MAX_UTILISATION``), the same queueing term the simulator charges. Without it
the policy packed services next to their users until those nodes overloaded
(on ``examples/sim-edge.yaml``: mean 52.0 ms against least-allocated's 22.7 ms,
35 % of requests over the SLA).

Ties are broken as in ``scoring``: fewer pods first, then natural name order.
They are folded into one float per (container, node) — the integer score plus
a fraction below 0.5 (or a 10⁻⁹ nudge for the float scorers) — so that the
best node is a plain ``argmax``. The filter is ``NodeResourcesFit`` on real
requests (a resource the container does not request always fits), the pod
limit, and the container's nodeSelector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from podhop.errors import PodhopError
from podhop.policies.scoring import MAX_NODE_SCORE
from podhop.policies.snapshot import CPU, F64, I64, MEM, Arrays, Bools

Nodes: TypeAlias = I64 | slice
NEG = -np.inf
ALL = slice(None)  # "every node", without copying per-node arrays


class PlacementError(PodhopError):
    """Unknown scorer or mode."""


class State:
    """Per-node bookkeeping during a round: real and non-zero requests, pods, usage."""

    def __init__(self, arrays: Arrays, assign: I64 | None = None) -> None:
        self.a = arrays
        self.assign = (arrays.node if assign is None else assign).copy()
        self.requested = arrays.requested(self.assign)
        self.nz_requested = arrays.requested(self.assign, nonzero=True)
        self.pods = arrays.pods(self.assign)
        self.usage = arrays.node_usage(self.assign)
        self.nz = arrays.nonzero_requests
        self.latency: dict[int, F64] = {}  # container -> its users' latency from each node, when known
        cap = arrays.capacity.astype(np.float64)
        self.inv_cap = np.divide(1.0, cap, out=np.zeros_like(cap), where=cap > 0)  # 0 where no capacity
        self.pod_scale = float(
            (max(int(arrays.max_pods.max(initial=0)), int(self.pods.max(initial=0))) + 1)
            * max(arrays.n_nodes, 1)
            + 1
        )

    def fits(self, cs: I64, nodes: Nodes) -> Bools:
        """``NodeResourcesFit`` for each container (rows) on each node (columns)."""
        req = self.a.requests[cs]
        free = self.a.capacity[nodes] - self.requested[nodes]
        ok = (self.pods[nodes] < self.a.max_pods[nodes])[None, :]
        for r in (CPU, MEM):
            need = req[:, r, None]
            ok = ok & ((need == 0) | (need <= free[None, :, r]))
        for row, c in enumerate(cs.tolist()):
            if c in self.a.allowed:
                ok[row] &= self.a.allowed[c][nodes]
        return np.asarray(ok, dtype=np.bool_)

    def place(self, c: int, node: int) -> None:
        """Account for container ``c`` on ``node`` (moving it off its current node if any)."""
        old = int(self.assign[c])
        if old >= 0:
            self.requested[old] -= self.a.requests[c]
            self.nz_requested[old] -= self.nz[c]
            self.pods[old] -= 1
            self.usage[old] -= self.a.usage[c]
        if node >= 0:
            self.requested[node] += self.a.requests[c]
            self.nz_requested[node] += self.nz[c]
            self.pods[node] += 1
            self.usage[node] += self.a.usage[c]
        self.assign[c] = node

    def tie_break(self, nodes: Nodes) -> F64:
        """In (0, 0.5), larger for fewer pods, then earlier natural name order."""
        key = self.pods[nodes] * float(self.a.n_nodes) + self.a.rank[nodes] + 1
        return np.asarray(0.5 * (1.0 - key / self.pod_scale), dtype=np.float64)


# --- scorers: (state, requests, non-zero requests, containers or None, nodes) -> scores ---------------
# ``req``/``nz`` are (B, 1, 2) against nodes (K,) for a (B, K) matrix, or (B, 2) against nodes (B,)
# for one score per (container, node) pair.

ScoreFn: TypeAlias = Callable[[State, I64, I64, I64 | None, Nodes], F64]


def _least(st: State, req: I64, nz: I64, cs: I64 | None, nodes: Nodes) -> F64:
    cap = st.a.capacity[nodes]
    used = st.nz_requested[nodes] + nz
    per = np.where((cap == 0) | (used > cap), 0, (cap - used) * MAX_NODE_SCORE // np.maximum(cap, 1))
    return ((per[..., CPU] + per[..., MEM]) // 2).astype(np.float64)


def _most(st: State, req: I64, nz: I64, cs: I64 | None, nodes: Nodes) -> F64:
    cap = st.a.capacity[nodes]
    used = st.nz_requested[nodes] + nz
    per = np.where(cap == 0, 0, np.minimum(used, cap) * MAX_NODE_SCORE // np.maximum(cap, 1))
    return ((per[..., CPU] + per[..., MEM]) // 2).astype(np.float64)


def _balanced(st: State, req: I64, nz: I64, cs: I64 | None, nodes: Nodes) -> F64:
    cap = st.a.capacity[nodes].astype(np.float64)
    used = (st.requested[nodes] + req).astype(np.float64)
    frac = np.minimum(1.0, used / np.where(cap > 0, cap, 1.0))
    both = np.all(cap > 0, axis=-1)
    std = np.where(both, np.abs(frac[..., CPU] - frac[..., MEM]) / 2, 0.0)
    return np.where(np.all(req == 0, axis=-1), 0.0, np.floor((1 - std) * MAX_NODE_SCORE))


def _left(st: State, req: I64, nodes: Nodes) -> F64:
    cap = st.a.capacity[nodes].astype(np.float64)
    left = cap - (st.requested[nodes] + req)
    return np.asarray(
        np.sum(np.where(cap > 0, left / np.where(cap > 0, cap, 1.0), 0.0), axis=-1), dtype=np.float64
    )


def _best_fit(st: State, req: I64, nz: I64, cs: I64 | None, nodes: Nodes) -> F64:
    return -_left(st, req, nodes)


def _worst_fit(st: State, req: I64, nz: I64, cs: I64 | None, nodes: Nodes) -> F64:
    return _left(st, req, nodes)


def _first_fit(st: State, req: I64, nz: I64, cs: I64 | None, nodes: Nodes) -> F64:
    rank = -st.a.rank[nodes].astype(np.float64)
    return np.broadcast_to(rank, np.broadcast_shapes(req.shape[:-1], rank.shape))


#: The M/M/1-like response time of an idle node (ms) and the utilisation it is capped at (the
#: simulator's ``service_ms`` and ``max_utilisation`` defaults).
SERVICE_MS = 5.0
MAX_UTILISATION = 0.95


def response_ms(usage_cpu: F64, cpu_cap: F64) -> F64:
    """``SERVICE_MS / (1 − ρ)`` with ρ = usage / capacity, capped at ``MAX_UTILISATION``."""
    rho = np.divide(usage_cpu, cpu_cap, out=np.full(np.shape(usage_cpu), MAX_UTILISATION), where=cpu_cap > 0)
    return np.asarray(SERVICE_MS / (1.0 - np.clip(rho, 0.0, MAX_UTILISATION)), dtype=np.float64)


def _latency(st: State, req: I64, nz: I64, cs: I64 | None, nodes: Nodes) -> F64:
    spread = _least(st, req, nz, cs, nodes) / MAX_NODE_SCORE * 1e-3
    if cs is None:
        return spread
    known = [st.latency.get(c) for c in cs.tolist()]
    lat = np.array(known) if all(row is not None for row in known) else st.a.container_latency(cs)
    cap = st.a.capacity[nodes, CPU].astype(np.float64)
    load = st.usage[nodes, CPU]
    own = st.a.usage[cs, CPU]
    if req.ndim == 3:  # (containers, nodes): each container added to each node
        picked = lat[:, nodes]
        queue = response_ms(load[None, :] + own[:, None], np.broadcast_to(cap, picked.shape))
    else:  # one node per container
        picked = lat[np.arange(len(cs)), nodes]
        queue = response_ms(load + own, cap)
    has_users = np.any(lat > 0, axis=1)  # a container nobody calls waits on no queue
    queue = np.where(has_users[:, None] if req.ndim == 3 else has_users, queue, 0.0)
    return np.asarray(-(picked + queue) + spread, dtype=np.float64)


# --- fast mode's node order for a batch: higher first ------------------------------------------------


def _free_key(st: State, nonzero: bool, mean: I64) -> F64:
    """Sum over cpu and memory of the fraction left after placing the batch's mean request."""
    used = (st.nz_requested if nonzero else st.requested) + mean
    free = (st.a.capacity - used) * st.inv_cap
    return np.asarray(free[:, CPU] + free[:, MEM], dtype=np.float64)


def _balance_key(st: State, mean: I64) -> F64:
    cap = st.a.capacity.astype(np.float64)
    frac = (st.requested + mean) / np.where(cap > 0, cap, 1.0)
    return -np.abs(frac[:, CPU] - frac[:, MEM]) + 1e-3 * _free_key(st, True, mean)


KEYS: dict[str, Callable[[State, I64], F64]] = {
    "least-allocated": lambda st, mean: _free_key(st, True, mean),
    "most-allocated": lambda st, mean: -_free_key(st, True, 0 * mean),  # packing: fullest first
    "balanced": _balance_key,
    "first-fit": lambda st, mean: -st.a.rank.astype(np.float64),
    "best-fit": lambda st, mean: -_free_key(st, False, 0 * mean),
    "worst-fit": lambda st, mean: _free_key(st, False, mean),
    "latency-aware": lambda st, mean: _free_key(st, True, mean),
}


@dataclass(frozen=True)
class Scorer:
    name: str
    fn: ScoreFn
    integer: bool  # integer scores: tie-break in (0, 0.5); else a 1e-9 nudge
    spread: bool  # a node scores lower once it took a container (fast mode: one per node per batch)
    exact_only: bool = False  # needs per-container data (latency): always exact mode

    def composite(self, st: State, cs: I64, nodes: Nodes) -> F64:
        """(containers × nodes) scores with tie-breaks folded in, ``-inf`` where it does not fit."""
        s = self.fn(st, st.a.requests[cs][:, None, :], st.nz[cs][:, None, :], cs, nodes)
        s = s + self.nudge(st, nodes)[None, :]
        return np.where(st.fits(cs, nodes), s, NEG)

    def pairwise(self, st: State, cs: I64, nodes: I64) -> F64:
        """Score of each container on its own node (``nodes[i]`` for ``cs[i]``), tie-breaks folded in."""
        return self.fn(st, st.a.requests[cs], st.nz[cs], cs, nodes) + self.nudge(st, nodes)

    def nudge(self, st: State, nodes: Nodes) -> F64:
        return st.tie_break(nodes) * (1.0 if self.integer else 2e-9)

    def key(self, st: State, cs: I64) -> F64:
        """Fast mode's node order for a batch (higher first), ties as in exact mode."""
        mean = np.round(st.a.requests[cs].mean(axis=0)).astype(np.int64)
        return KEYS[self.name](st, mean) + st.tie_break(ALL) * 1e-9


SCORERS: dict[str, Scorer] = {
    s.name: s
    for s in (
        Scorer("least-allocated", _least, True, True),
        Scorer("most-allocated", _most, True, False),
        Scorer("balanced", _balanced, True, True),
        Scorer("first-fit", _first_fit, False, False),
        Scorer("best-fit", _best_fit, False, False),
        Scorer("worst-fit", _worst_fit, False, True),
        Scorer("latency-aware", _latency, False, False, exact_only=True),
    )
}


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]
    except KeyError:
        raise PlacementError(f"unknown scorer {name!r} (choose from {', '.join(SCORERS)})") from None
