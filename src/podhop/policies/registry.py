"""Policies by name: what ``--policies least-allocated,ilp`` and ``podhop rebalance`` choose from.

Why: the simulator compares policies side by side and the live rebalancer runs
one; both must mean the same thing by the same name, and a typo must fail
with the list of valid names. A :class:`Policy` combines Oleghe's (IEEE
Access 9, 2021) placement decision (a scorer from
:mod:`~podhop.policies.placement`, for pending containers) with an optional
migration decision (a trigger from :mod:`~podhop.policies.triggers`, or the
exact model of :mod:`~podhop.policies.ilp`). It is pure: ``decide`` maps an
:class:`~podhop.policies.snapshot.Arrays` to a
:class:`~podhop.policies.plan.Decision`, ``plan`` a snapshot to a
:class:`~podhop.policies.plan.Plan`.

============== ================= ===================================================
name           places with       then migrates
============== ================= ===================================================
least-allocated least-allocated   — (kube-scheduler's default spreading)
most-allocated  most-allocated    — (bin packing)
balanced        balanced          —
first-fit       first-fit         —
best-fit        best-fit          —
worst-fit       worst-fit         —
latency-aware   latency-aware     — (nearest to its users, capacity permitting)
low-utilization least-allocated   descheduler LowNodeUtilization on real usage
high-utilization most-allocated   descheduler HighNodeUtilization on real usage
hottest         least-allocated   the seed's hottest-pod rule
mobility        latency-aware     follow users whose nearest node changed
ilp             exact model       exact model (re-optimises placement and migration)
============== ================= ===================================================
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from podhop.errors import PodhopError
from podhop.policies import triggers
from podhop.policies.costmodel import DEFAULT_STRATEGY, MigrationCostModel, Strategy
from podhop.policies.ilp import IlpOptions, solve
from podhop.policies.objective import Weights
from podhop.policies.placement import State, place
from podhop.policies.plan import Decision, Plan, make_plan
from podhop.policies.snapshot import Arrays, Snapshot


class UnknownPolicyError(PodhopError):
    """No policy (or no policy option) by that name."""


@dataclass(frozen=True)
class Context:
    """What every policy is priced with: the cost model, the objective's weights, the strategy."""

    cost_model: MigrationCostModel = field(default_factory=MigrationCostModel)
    weights: Weights = field(default_factory=Weights)
    strategy: Strategy = DEFAULT_STRATEGY


TRIGGERS: dict[str, Callable[..., triggers.Reasons]] = {
    "low-utilization": triggers.low_node_utilization,
    "high-utilization": triggers.high_node_utilization,
    "hottest": triggers.hottest,
    "mobility": triggers.mobility,
}


@dataclass(frozen=True)
class Policy:
    """Place pending containers with ``scorer``; then migrate with ``trigger`` or the ILP."""

    name: str
    description: str
    scorer: str = "least-allocated"
    trigger: str | None = None
    ilp: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def migrates(self) -> bool:
        return self.ilp or self.trigger is not None

    def decide(self, arrays: Arrays, ctx: Context | None = None) -> Decision:
        """The new node of every container (indices), with reasons for the moves."""
        ctx = ctx or Context()
        assign, scores = place(arrays, scorer=self.scorer)
        if self.ilp:
            opts = IlpOptions(**self.options)
            model = arrays
            if int(np.sum(arrays.node < 0)) * arrays.n_nodes > opts.full_below:
                # too many pending containers to decide exactly: place them heuristically,
                # then re-optimise a window as for a running cluster
                model = arrays.derive(node=assign)
            result = solve(model, ctx.weights, ctx.cost_model, ctx.strategy, opts, starts=[assign])
            moved = np.flatnonzero((arrays.node >= 0) & (result.assign != arrays.node))
            why = f"ilp: objective {result.objective:.3f} ({result.status}, gap {result.gap:.2%})"
            return Decision(result.assign, {int(c): why for c in moved}, scores)
        if self.trigger is None:
            return Decision(assign, {}, scores)
        st = State(arrays, assign)
        trigger = TRIGGERS[self.trigger]
        params = inspect.signature(trigger).parameters
        priced = {"cost_model": ctx.cost_model, "strategy": ctx.strategy, "horizon_s": ctx.weights.horizon_s}
        extra = {k: v for k, v in priced.items() if k in params and k not in self.options}
        reasons = trigger(st, **extra, **self.options)
        return Decision(st.assign, reasons, scores)

    def plan(self, snapshot: Snapshot | Arrays, ctx: Context | None = None) -> Plan:
        """The plan for a snapshot: placements, then migrations in a feasible order."""
        ctx = ctx or Context()
        arrays = snapshot.arrays() if isinstance(snapshot, Snapshot) else snapshot
        decision = self.decide(arrays, ctx)
        return make_plan(self.name, arrays, decision, ctx.cost_model, ctx.strategy, ctx.weights)


def _policy(name: str, description: str, **kwargs: Any) -> Policy:
    return Policy(name, description, **kwargs)


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        _policy("least-allocated", "kube-scheduler LeastAllocated: spread over the emptiest nodes"),
        _policy(
            "most-allocated",
            "kube-scheduler MostAllocated: pack onto the fullest nodes",
            scorer="most-allocated",
        ),
        _policy(
            "balanced",
            "kube-scheduler BalancedAllocation: keep cpu and memory proportional",
            scorer="balanced",
        ),
        _policy("first-fit", "first node (natural name order) with room", scorer="first-fit"),
        _policy("best-fit", "node left with the least room", scorer="best-fit"),
        _policy("worst-fit", "node left with the most room", scorer="worst-fit"),
        _policy(
            "latency-aware",
            "node closest to the container's users, capacity permitting",
            scorer="latency-aware",
        ),
        _policy(
            "low-utilization",
            "descheduler LowNodeUtilization on real usage, then least-allocated",
            trigger="low-utilization",
        ),
        _policy(
            "high-utilization",
            "descheduler HighNodeUtilization on real usage: pack, free nodes",
            scorer="most-allocated",
            trigger="high-utilization",
        ),
        _policy("hottest", "the seed's rule: hottest pod off the hottest node", trigger="hottest"),
        _policy(
            "mobility",
            "follow the users: move a container when its users' nearest node changes",
            scorer="latency-aware",
            trigger="mobility",
        ),
        _policy(
            "ilp",
            "exact model (HiGHS): latency, migration cost, imbalance and energy",
            scorer="latency-aware",
            ilp=True,
        ),
    )
}


def names() -> list[str]:
    return list(POLICIES)


def _allowed_options(policy: Policy) -> set[str]:
    if policy.ilp:
        return {f.name for f in dataclasses.fields(IlpOptions)}
    if policy.trigger is not None:
        params = list(inspect.signature(TRIGGERS[policy.trigger]).parameters)
        return set(params[1:]) - {"cost_model", "strategy"}
    return set()


def get(name: str, **options: Any) -> Policy:
    """The policy called ``name``, with trigger or ILP ``options`` (e.g. ``thresholds=(20, 20)``)."""
    try:
        policy = POLICIES[name]
    except KeyError:
        raise UnknownPolicyError(
            f"unknown policy {name!r}", hint=f"choose from {', '.join(POLICIES)}"
        ) from None
    unknown = set(options) - _allowed_options(policy)
    if unknown:
        allowed = ", ".join(sorted(_allowed_options(policy))) or "none"
        raise UnknownPolicyError(
            f"policy {name!r} has no option {', '.join(sorted(unknown))}", hint=f"options: {allowed}"
        )
    return dataclasses.replace(policy, options={**policy.options, **options}) if options else policy
