"""Migration triggers: when to move a deployed container, and where.

Why: Oleghe's (IEEE Access 9, 2021) third decision — migrating deployed
containers — needs a reason to act. Kubernetes users know the descheduler's
reasons, the seed moved "the hottest pod", and at the edge users move. Each
trigger here looks at the *measured usage* in a snapshot (never requests:
a node whose pods request little but burn a lot is exactly what to fix) and
moves containers one at a time on a :class:`~podhop.policies.placement.State`,
so every move fits when it is made and the next sees it. Every target passes
kube-scheduler's ``NodeResourcesFit`` filter on requests (and nodeSelector).

* :func:`low_node_utilization` — descheduler ``LowNodeUtilization``: a node is
  *underutilized* when every resource's usage is below ``thresholds`` (percent
  of capacity) and *overutilized* when any is above ``target_thresholds``.
  Nothing happens unless both kinds exist (and more than ``number_of_nodes``
  underutilized ones). Overutilized nodes are drained in decreasing usage
  order; their movable pods, lowest priority first (then the largest CPU user,
  podhop's choice — fewest migrations), move while the node is still over a
  target threshold and the underutilized nodes have headroom left below their
  target thresholds; each goes to the least-used underutilized node that stays
  within its target thresholds. ``use_deviation``: thresholds are deviations
  from the mean usage (``useDeviationThresholds``). Unlike the descheduler,
  which evicts and lets kube-scheduler choose, the target is chosen here —
  a migration needs one.
* :func:`high_node_utilization` — descheduler ``HighNodeUtilization``: pods on
  underutilized nodes (all resources below ``thresholds``) move to the fullest
  other node that has room (MostAllocated, staying below ``limit`` percent
  usage), least-used source first, so the emptied nodes can be powered down.
* :func:`hottest` — the seed's rule: the pod using most CPU on the node using
  most CPU (as a fraction of capacity) moves to the node that will use the
  least after the move, if the source is above ``threshold`` and the move
  lowers the peak. One move per round.
* :func:`mobility` — follow the users: for every container one of whose users
  changed nearest node since the last snapshot, the node with the lowest
  rate-weighted mean latency to its users; it moves if that gains at least
  ``min_gain_ms`` and the gain over the next ``horizon_s`` outweighs what the
  downtime costs the same users (``gain · horizon ≥ d[s] · d[ms]``, the
  objective's migration term), largest gains first.
"""

from __future__ import annotations

import numpy as np

from podhop.policies.costmodel import DEFAULT_STRATEGY, MigrationCostModel, Strategy
from podhop.policies.scorers import ALL, NEG, State
from podhop.policies.snapshot import CPU, F64, I64, MEM

Reasons = dict[int, str]


def _percent(st: State) -> F64:
    cap = st.a.capacity.astype(np.float64)
    return np.divide(100.0 * st.usage, cap, out=np.zeros_like(st.usage), where=cap > 0)


def _fits(st: State, c: int) -> np.ndarray[tuple[int], np.dtype[np.bool_]]:
    ok = st.fits(np.array([c], dtype=np.int64), ALL)[0].copy()
    if st.assign[c] >= 0:
        ok[st.assign[c]] = False
    return np.asarray(ok, dtype=np.bool_)


def _movable(st: State, node: int) -> I64:
    return np.flatnonzero((st.assign == node) & st.a.movable).astype(np.int64)


def low_node_utilization(
    st: State,
    thresholds: tuple[float, float] = (20.0, 20.0),
    target_thresholds: tuple[float, float] = (50.0, 50.0),
    *,
    use_deviation: bool = False,
    number_of_nodes: int = 0,
    max_moves: int | None = None,
) -> Reasons:
    """Descheduler ``LowNodeUtilization`` on real usage (see the module docstring)."""
    pct = _percent(st)
    low, high = np.array(thresholds, dtype=np.float64), np.array(target_thresholds, dtype=np.float64)
    if use_deviation:
        mean = pct.mean(axis=0)
        low, high = mean - low, mean + high
    under = np.all(pct < low, axis=1)
    over = np.any(pct > high, axis=1)
    if int(under.sum()) <= number_of_nodes or not over.any():
        return {}
    cap = st.a.capacity.astype(np.float64)
    headroom = np.sum(np.maximum(high * cap[under] / 100.0 - st.usage[under], 0.0), axis=0)
    reasons: Reasons = {}
    sources = np.flatnonzero(over)
    for node in sources[np.argsort(-pct[sources].sum(axis=1), kind="stable")].tolist():
        pods = _movable(st, node)
        pods = pods[np.lexsort((-st.a.usage[pods, CPU], st.a.priority[pods]))]
        for c in pods.tolist():
            if max_moves is not None and len(reasons) >= max_moves:
                return reasons
            if not np.any(_percent(st)[node] > high) or np.any(headroom <= 0):
                break
            after = 100.0 * (st.usage + st.a.usage[c]) / np.where(cap > 0, cap, 1.0)
            ok = _fits(st, c) & under & np.all(after <= high, axis=1)
            if not ok.any():
                continue
            target = int(np.argmin(np.where(ok, _percent(st).sum(axis=1), np.inf)))
            headroom -= st.a.usage[c]
            before = _percent(st)[node]
            st.place(c, target)
            reasons[c] = (
                f"low-utilization: {st.a.node_names[node]} over target thresholds "
                f"(cpu {before[CPU]:.0f}%, memory {before[MEM]:.0f}%)"
            )
    return reasons


def high_node_utilization(
    st: State,
    thresholds: tuple[float, float] = (20.0, 20.0),
    *,
    limit: float = 90.0,
    max_moves: int | None = None,
) -> Reasons:
    """Descheduler ``HighNodeUtilization`` on real usage: empty the underutilized nodes."""
    pct = _percent(st)
    under = np.all(pct < np.array(thresholds), axis=1) & (st.pods > 0)
    targets = ~np.all(pct < np.array(thresholds), axis=1)
    if not under.any() or not targets.any():
        return {}
    cap = np.where(st.a.capacity > 0, st.a.capacity, 1).astype(np.float64)
    reasons: Reasons = {}
    sources = np.flatnonzero(under)
    order = sources[np.argsort(pct[sources].sum(axis=1), kind="stable")]
    # every candidate in the order the descheduler visits them: source nodes, then pods on each
    rank = np.full(st.a.n_nodes, -1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    on = np.flatnonzero(st.a.movable & (st.assign >= 0))
    on = on[rank[st.assign[on]] >= 0]
    cands = on[np.lexsort((on, rank[st.assign[on]]))].astype(np.int64)  # by source node, then index
    origin = st.assign[cands].copy()
    i = 0
    while i < len(cands):
        if max_moves is not None and len(reasons) >= max_moves:
            return reasons
        # the first candidate from i on that has a target: all before it fail as they would one by
        # one (nothing changes until a move), so a vectorised look is exact and skips them at once;
        # first a necessary condition per resource (the most room any target has), then the full check
        slot = targets & (st.pods < st.a.max_pods)
        if not slot.any():
            break
        room = (st.a.capacity - st.requested)[slot].max(axis=0)
        head = (limit * cap / 100.0 - st.usage)[slot].max(axis=0)
        req, use = st.a.requests[cands[i:]], st.a.usage[cands[i:]]
        maybe = np.flatnonzero(np.all((req == 0) | (req <= room), axis=1) & np.all(use <= head, axis=1))
        if not len(maybe):
            break
        i += int(maybe[0])
        chunk = cands[i : i + 256]
        after = 100.0 * (st.usage[None, :, :] + st.a.usage[chunk][:, None, :]) / cap[None, :, :]
        ok = st.fits(chunk, ALL) & targets[None, :] & np.all(after <= limit, axis=2)
        ok[np.arange(len(chunk)), st.assign[chunk]] = False  # never onto its own node
        rows = np.flatnonzero(ok.any(axis=1))
        if not len(rows):
            i += len(chunk)
            continue
        c, node = int(chunk[rows[0]]), int(origin[i + rows[0]])
        target = int(np.argmax(np.where(ok[rows[0]], _percent(st).sum(axis=1), NEG)))
        st.place(c, target)
        reasons[c] = f"high-utilization: {st.a.node_names[node]} underutilized, packing"
        i += int(rows[0]) + 1
    return reasons


def hottest(st: State, threshold: float = 0.0) -> Reasons:
    """The seed's rule: move the hottest pod off the hottest node, if that lowers the peak."""
    cap = st.a.capacity[:, CPU].astype(np.float64)
    util = np.divide(st.usage[:, CPU], cap, out=np.zeros(len(cap)), where=cap > 0)
    if not len(util):
        return {}
    node = int(np.argmax(util))
    pods = _movable(st, node)
    if util[node] * 100.0 <= threshold or not len(pods):
        return {}
    c = int(pods[np.argmax(st.a.usage[pods, CPU])])
    after = np.divide(
        st.usage[:, CPU] + st.a.usage[c, CPU], cap, out=np.full(len(cap), np.inf), where=cap > 0
    )
    after = np.where(_fits(st, c), after, np.inf)
    target = int(np.argmin(after))
    if not np.isfinite(after[target]) or after[target] >= util[node]:
        return {}
    st.place(c, target)
    return {c: f"hottest: busiest pod on the busiest node {st.a.node_names[node]} ({util[node]:.0%} cpu)"}


def mobility(
    st: State,
    min_gain_ms: float = 1.0,
    max_moves: int | None = None,
    *,
    candidates: int = 64,
    horizon_s: float = 60.0,
    cost_model: MigrationCostModel | None = None,
    strategy: Strategy = DEFAULT_STRATEGY,
) -> Reasons:
    """Follow users who changed nearest node: move their container where its users are closest,
    if the gain is worth the downtime (``gain_ms · horizon_s ≥ d[s] · d[ms]``).

    Screening, so that thousands of moving users stay cheap: a container's gain is at most its
    users' current latency minus their access latency, and its downtime at least the cost
    model's over the fastest link, so containers that cannot gain enough are skipped. The
    rest are ranked by how far their users moved, ``δ = Σ_moved w_u · D[previous, now]`` (by
    the triangle inequality no node's latency to them changed by more), and only the
    ``candidates`` with the largest ``δ`` are scored exactly over every node.
    """
    model = cost_model or MigrationCostModel()
    a = st.a
    moved_users = (a.user_prev_node >= 0) & (a.user_prev_node != a.user_node)
    cs = np.unique(a.user_container[moved_users])
    cs = cs[(st.assign[cs] >= 0) & a.movable[cs]]
    if not len(cs):
        return {}
    now, floor = a.served_latency(st.assign)
    rate = a.container_rate()
    weight = a.user_rate / np.where(rate > 0, rate, 1.0)[a.user_container]
    best_bw = np.full(len(cs), float(a.bandwidth_bps.max(initial=0.0)))
    fastest, _ = model.predict_many(
        a.state_bytes[cs], np.minimum(best_bw, a.bandwidth_bps[st.assign[cs]]), strategy
    )
    bound = (now - floor)[cs]
    keep = bound >= np.maximum(min_gain_ms, fastest * fastest / 1000.0 / horizon_s)
    moved = np.flatnonzero(moved_users)
    shift = a.latency_pairs(a.user_prev_node[moved], a.user_node[moved]) * weight[moved]
    delta = np.bincount(a.user_container[moved], shift, minlength=a.n_containers)[cs]
    cs = cs[keep][np.argsort(-delta[keep], kind="stable")][:candidates]
    if not len(cs):
        return {}
    lat = a.container_latency(cs)
    current = lat[np.arange(len(cs)), st.assign[cs]]
    gain_bound = current - lat.min(axis=1)
    reasons: Reasons = {}
    for i in np.argsort(-gain_bound, kind="stable").tolist():
        if gain_bound[i] < min_gain_ms or (max_moves is not None and len(reasons) >= max_moves):
            break
        c = int(cs[i])
        row = np.where(_fits(st, c), lat[i], np.inf)
        target = int(np.argmin(row))
        gain = float(current[i] - row[target])
        bandwidth = min(a.bandwidth_bps[target], a.bandwidth_bps[st.assign[c]])
        down_ms, _ = model.predict(float(a.state_bytes[c]), float(bandwidth), strategy)
        if gain >= min_gain_ms and gain * horizon_s >= down_ms * down_ms / 1000.0:
            st.place(c, target)
            reasons[c] = f"mobility: users moved, {gain:.1f} ms closer on {a.node_names[target]}"
    return reasons
