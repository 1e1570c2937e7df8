"""Placement policies, vectorised: place many containers, each seeing the ones before it.

Why: the first of Oleghe's (IEEE Access 9, 2021) decisions is where each
container goes. kube-scheduler answers it pod by pod: filter the nodes that
fit (``NodeResourcesFit``), score them, take the best, account for the pod,
next. This module does the same with the scorers of
:mod:`podhop.policies.scorers`, fast enough for 100,000 containers on 10,000
nodes.

Two modes, same filter and scores:

* ``exact`` — pod after pod over all nodes (``O(C·N)``); it reproduces
  :func:`podhop.policies.scoring.place_all` decision for decision.
* ``fast`` (chosen by ``auto`` once ``C·N`` exceeds 4·10⁶) — containers in
  batches of ``N/8`` (16 to 4,096), each batch placed with a handful of
  vectorised operations:

  - spreading scorers (least-allocated, balanced, worst-fit): the batch is
    split into four groups by cpu:memory mix; each group ranks the nodes by
    the scorer for the group's mean request and its containers take the
    group's best nodes, one per node, larger requests on larger nodes
    (:func:`_round_robin`). After taking a container a node scores lower
    anyway, so one per node per batch is what sequential spreading does when
    the batch is small next to the cluster;
  - packing scorers (most-allocated, best-fit, first-fit): next-fit over the
    best 256 nodes — fill the best node with the next containers while they
    fit, then move on (:func:`_next_fit`).

  Containers that find no node this way are placed exactly over all nodes, so
  fast mode leaves no container out that exact mode would place (a request
  that fitted nowhere is remembered: a larger one is not tried again).

  Approximation, documented: fast mode ranks nodes for a group's *mean*
  request and does not revisit a node within a batch, so its choices can
  differ from exact mode's — on 1,000 mixed nodes × 8,000 containers the
  spread of CPU utilisation under least-allocated is about twice exact
  mode's, still below a tenth. Feasibility is never approximated: every
  placement passes the exact filter against the current state.

Complexity in fast mode: ``O(C/B · N)`` with ``B = N/8`` — about 8·C
operations — so 100,000 containers on 10,000 nodes take a fraction of a second.
``latency-aware`` is always exact (each container has its own users).
"""

from __future__ import annotations

import bisect
import itertools
from typing import Literal, TypeAlias

import numpy as np

from podhop.policies.scorers import (
    ALL,
    NEG,
    SCORERS,
    PlacementError,
    Scorer,
    State,
    get_scorer,
)
from podhop.policies.snapshot import CPU, F64, I64, MEM, UNPLACED, Arrays, Bools

__all__ = [
    "ALL", "NEG", "SCORERS", "PlacementError", "Scorer", "State",
    "best_node", "could_fit", "get_scorer", "place",
]

Mode: TypeAlias = Literal["auto", "exact", "fast"]
WINDOW = 256
GROUPS = 4
FAST_MIN_NODES = 128
LATENCY_CHUNK = 256
FAST_ABOVE = 4e6


def best_node(st: State, scorer: Scorer, c: int, exclude: int = UNPLACED) -> tuple[int, float]:
    """Exact choice for one container over all nodes (``-1`` if none fits)."""
    s = scorer.composite(st, np.array([c], dtype=np.int64), ALL)[0]
    if exclude >= 0:
        s[exclude] = NEG
    j = int(np.argmax(s)) if len(s) else 0
    return (j, float(s[j])) if len(s) and s[j] > NEG else (UNPLACED, NEG)


def place(
    arrays: Arrays,
    containers: I64 | None = None,
    scorer: str = "least-allocated",
    *,
    assign: I64 | None = None,
    mode: Mode = "auto",
) -> tuple[I64, F64]:
    """Place ``containers`` (default: the pending ones) in order, each seeing those before it.

    Returns the new assignment of every container and, per container, the score of its node.
    """
    sc = get_scorer(scorer)
    if mode not in ("auto", "exact", "fast"):
        raise PlacementError(f"unknown placement mode {mode!r} (auto, exact or fast)")
    initial = (arrays.node if assign is None else assign).copy()
    todo = np.flatnonzero(initial < 0) if containers is None else np.asarray(containers, dtype=np.int64)
    scores = np.full(arrays.n_containers, np.nan)
    # capacity only shrinks within a round: what fits nowhere now never will (a full cluster's pending
    # containers stay pending: checked at once instead of against every node, step after step)
    todo = todo[could_fit(arrays, arrays.requested(initial), arrays.pods(initial), todo)]
    if not len(todo):
        return initial, scores
    st = State(arrays, initial)
    fast = mode == "fast" or (mode == "auto" and len(todo) * arrays.n_nodes > FAST_ABOVE)
    if sc.exact_only or not fast or arrays.n_nodes <= FAST_MIN_NODES:
        for start in range(0, len(todo), LATENCY_CHUNK):
            chunk = todo[start : start + LATENCY_CHUNK]
            if sc.name == "latency-aware":  # users' latency for a chunk at a time, not pod by pod
                st.latency = dict(zip(chunk.tolist(), arrays.container_latency(chunk), strict=True))
            for c in chunk.tolist():
                j, s = best_node(st, sc, c)
                if j >= 0:
                    st.place(c, j)
                    scores[c] = s
        st.latency = {}
        return st.assign, np.floor(scores) if sc.integer else scores
    _place_fast(st, sc, todo, scores)
    return st.assign, np.floor(scores) if sc.integer else scores


def could_fit(a: Arrays, requested: I64, pods: I64, cs: I64) -> Bools:
    """Whether each container fits some node now (``NodeResourcesFit`` on CPU, memory and pod count),
    in O((nodes + containers) log nodes): nodes sorted by free CPU, the most free memory among those
    with at least a container's CPU. Containers limited to some nodes are left to the exact check.

    Why: a full cluster keeps its pending containers pending, and scoring each against every node,
    step after step, was most of the simulator's time (least-allocated: 19.8 s of a 100-step run)."""
    free = (a.capacity - requested)[pods < a.max_pods].astype(np.float64)  # nodes with a pod slot
    if len(cs) == 0 or len(free) == 0:
        return np.isin(cs, np.fromiter(a.allowed, dtype=np.int64, count=len(a.allowed)))
    order = np.argsort(free[:, CPU], kind="stable")
    cpu_sorted = free[order, CPU]
    mem_suffix_max = np.maximum.accumulate(free[order, MEM][::-1])[::-1]
    req = a.requests[cs].astype(np.float64)
    need_cpu = np.where(req[:, CPU] == 0, -np.inf, req[:, CPU])  # a zero request fits anywhere
    need_mem = np.where(req[:, MEM] == 0, -np.inf, req[:, MEM])
    first = np.searchsorted(cpu_sorted, need_cpu, side="left")
    has = first < len(free)
    ok = np.zeros(len(cs), dtype=np.bool_)
    ok[has] = mem_suffix_max[first[has]] >= need_mem[has]
    if a.allowed:
        ok |= np.isin(cs, np.fromiter(a.allowed, dtype=np.int64, count=len(a.allowed)))
    return ok


def _batch_size(n_nodes: int) -> int:
    return max(16, min(4096, n_nodes // 8))


def _place_fast(st: State, sc: Scorer, todo: I64, scores: F64) -> None:
    failed: list[I64] = []  # requests that fit nowhere; capacity only shrinks within a round
    pinned = np.isin(todo, np.fromiter(st.a.allowed, dtype=np.int64, count=len(st.a.allowed)))
    size = _batch_size(st.a.n_nodes)
    for start in range(0, len(todo), size):
        batch, pin = todo[start : start + size], pinned[start : start + size]
        cs = batch[~pin]
        left = (_round_robin if sc.spread else _next_fit)(st, sc, cs, scores) if len(cs) else []
        position = {c: i for i, c in enumerate(batch.tolist())}
        for c in sorted({*left, *batch[pin].tolist()}, key=position.__getitem__):
            req = st.a.requests[c]
            if c not in st.a.allowed and any(np.all(req >= f) for f in failed):
                continue
            node, value = best_node(st, sc, c)
            if node >= 0:
                st.place(c, node)
                scores[c] = value
            elif c not in st.a.allowed:
                failed.append(req.copy())


def _candidates(st: State, need: I64) -> Bools:
    room = st.a.capacity - st.requested
    return np.asarray(
        (st.pods < st.a.max_pods) & np.all((need == 0) | (need <= room), axis=1), dtype=np.bool_
    )


def _commit(st: State, sc: Scorer, cs: I64, nodes: I64, scores: F64, counted: bool = False) -> None:
    """Place ``cs[i]`` on ``nodes[i]`` (all already checked to fit) in one vectorised update;
    ``counted``: real requests and pods were already added."""
    if not len(cs):
        return
    scores[cs] = sc.pairwise(st, cs, nodes)
    updates = [(st.nz_requested, st.nz), (st.usage, st.a.usage)]
    if not counted:
        updates.append((st.requested, st.a.requests))
        np.add.at(st.pods, nodes, 1)
    for target, values in updates:
        np.add.at(target, nodes, values[cs])
    st.assign[cs] = nodes


def _top(key: F64, mask: Bools, k: int) -> I64:
    """The ``k`` best nodes by ``key`` among ``mask``, best first."""
    masked = np.where(mask, key, NEG)
    k = min(k, int(np.sum(mask)))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-masked, k - 1)[:k] if k < len(masked) else np.arange(len(masked))
    return top[np.argsort(-masked[top], kind="stable")].astype(np.int64)


def _round_robin(st: State, sc: Scorer, cs: I64, scores: F64) -> list[int]:
    """Spreading: the batch's containers go to as many of the best nodes, one per node.

    The batch is split into groups by cpu:memory composition, and each group ranks the nodes
    by the scorer for *its* mean request (a cpu-heavy request should not land on a node that
    only has memory left); within a group, larger requests go to larger nodes (:func:`_pair`).
    Nodes come from those with room for the batch's largest request (else its smallest); a
    container that does not fit its node tries again over the nodes left, up to four times.
    """
    req = st.a.requests[cs]
    usable = _candidates(st, req.max(axis=0))
    if np.sum(usable) < len(cs):
        usable = _candidates(st, req.min(axis=0))
    scale = np.maximum(st.a.capacity.mean(axis=0), 1.0)
    share = req / scale
    mix = share[:, CPU] / np.maximum(share.sum(axis=1), 1e-12)
    groups = np.array_split(cs[np.argsort(mix, kind="stable")], GROUPS if len(cs) >= 16 * GROUPS else 1)
    left: list[int] = []
    for attempt in range(4):
        left = []
        for group in groups:
            top = _top(sc.key(st, group), usable, len(group))
            head = _pair(st, sc, group[: len(top)], top)
            need = st.a.requests[head]
            ok = np.all((need == 0) | (need <= st.a.capacity[top] - st.requested[top]), axis=1)
            _commit(st, sc, head[ok], top[ok], scores)
            usable[top] = False
            left.extend([*head[~ok].tolist(), *group[len(top) :].tolist()])
        if not left or not np.any(usable) or attempt == 3:
            break
        groups = [np.array(left, dtype=np.int64)]
    return left


def _pair(st: State, sc: Scorer, cs: I64, top: I64) -> I64:
    """Reorder ``cs`` so that ``cs[i]`` suits ``top[i]``: for least-allocated and worst-fit, larger
    requests go to larger nodes (a request costs a large node a smaller fraction — pairing sorted
    sizes with sorted capacities minimises the total); for balanced, cpu-heavy requests go to
    memory-heavy nodes."""
    if not len(top):
        return cs
    cap = st.a.capacity[top].astype(np.float64)
    scale = np.maximum(cap.mean(axis=0), 1.0)
    req = st.a.requests[cs] / scale
    if sc.name == "balanced":
        frac = st.requested[top] / np.maximum(cap, 1.0)
        pod_key, node_key = req[:, CPU] - req[:, MEM], frac[:, MEM] - frac[:, CPU]
    else:
        pod_key, node_key = req.sum(axis=1), (cap / scale).sum(axis=1)
    out = np.empty_like(cs)
    out[np.argsort(-node_key, kind="stable")] = cs[np.argsort(-pod_key, kind="stable")]
    return out


def _next_fit(st: State, sc: Scorer, cs: I64, scores: F64) -> list[int]:
    """Packing: fill the best node with the next containers while they fit, then the next node.

    Nodes: the 128 best with room for the batch's smallest request and the 128 best with room
    for its largest, best first; a container that fits none of them is placed exactly.
    """
    req = st.a.requests[cs]
    key = sc.key(st, cs)
    picks = [_top(key, _candidates(st, need), WINDOW // 2) for need in (req.min(axis=0), req.max(axis=0))]
    order = np.unique(np.concatenate(picks))
    order = order[np.argsort(-key[order], kind="stable")]
    room = st.a.capacity[order] - st.requested[order]
    rc, rm = room[:, CPU].tolist(), room[:, MEM].tolist()
    slots = (st.a.max_pods[order] - st.pods[order]).tolist()
    qc, qm = req[:, CPU].tolist(), req[:, MEM].tolist()
    cc = [0, *itertools.accumulate(qc)]
    cm = [0, *itertools.accumulate(qm)]
    chosen = np.full(len(cs), UNPLACED, dtype=np.int64)
    left: list[int] = []
    i, pos, n, w = 0, 0, len(cs), len(order)
    while i < n and pos < w:
        k = min(
            bisect.bisect_right(cc, cc[i] + rc[pos]) - 1 - i,
            bisect.bisect_right(cm, cm[i] + rm[pos]) - 1 - i,
            slots[pos],
        )
        if k > 0:
            chosen[i : i + k] = pos
            rc[pos] -= cc[i + k] - cc[i]
            rm[pos] -= cm[i + k] - cm[i]
            slots[pos] -= k
            i += k
            continue
        c, m = qc[i], qm[i]
        j = pos + 1  # next-fit: skip to the next node that takes container i
        while j < w and not ((c == 0 or c <= rc[j]) and (m == 0 or m <= rm[j]) and slots[j] > 0):
            j += 1
        if j < w:
            pos = j
        else:
            left.append(int(cs[i]))
            i += 1
    st.requested[order] = st.a.capacity[order] - np.array([rc, rm], dtype=np.int64).T
    st.pods[order] = st.a.max_pods[order] - np.array(slots, dtype=np.int64)
    done = chosen >= 0
    _commit(st, sc, cs[done], order[chosen[done]], scores, counted=True)
    return [*left, *cs[i:].tolist()]
