"""A policy's answer as a value: placements and migrations, each with its predicted cost.

Why: "plan, then act". A policy never touches a cluster; it returns a
:class:`Plan` that the live rebalancer executes step by step (its
``migrations`` in order, each naming the pod, source, target and strategy) and
that the simulator costs with the same numbers (each migration carries its
predicted downtime and transfer time from the cost model). Because the plan is
a value it can be printed, saved as JSON, compared and tested.

Policies compute in array indices (:class:`Decision`: the new node of every
container); :func:`make_plan` turns that into names. Migrations are ordered so
that every one fits when it runs — the target has room for the container's
requests given the moves before it (the source's resources are freed when a
move completes). Moves that cannot be ordered that way (say, two full nodes
swapping containers) are left out and listed in ``Plan.dropped``, so executing
a plan never overcommits a node at any point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from podhop.policies.costmodel import DEFAULT_STRATEGY, MigrationCostModel, Strategy
from podhop.policies.objective import Breakdown, Weights, evaluate, move_costs
from podhop.policies.snapshot import F64, I64, Arrays


@dataclass(frozen=True)
class Placement:
    """Bind a pending container to ``node``; ``score`` is the policy's score for that node and
    ``latency_ms`` the predicted mean latency of the container's users there."""

    container: str
    node: str
    score: float = 0.0
    latency_ms: float = 0.0


@dataclass(frozen=True)
class Migration:
    """Move ``container`` (a pod) from ``source`` to ``target`` with ``strategy``; predicted
    ``downtime_ms`` (users unserved) and ``transfer_ms`` (the whole migration)."""

    container: str
    source: str
    target: str
    strategy: Strategy
    downtime_ms: float
    transfer_ms: float
    state_bytes: int = 0
    reason: str = ""

    @property
    def pod(self) -> str:
        return self.container


@dataclass(frozen=True)
class Plan:
    """Placements, then migrations in execution order; ``objective`` predicts the result."""

    policy: str
    placements: tuple[Placement, ...] = ()
    migrations: tuple[Migration, ...] = ()
    unplaced: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    objective: Breakdown | None = None

    @property
    def is_empty(self) -> bool:
        return not self.placements and not self.migrations

    @property
    def downtime_ms(self) -> float:
        return sum(m.downtime_ms for m in self.migrations)

    @property
    def transfer_ms(self) -> float:
        return sum(m.transfer_ms for m in self.migrations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "placements": [asdict(p) for p in self.placements],
            "migrations": [asdict(m) for m in self.migrations],
            "unplaced": list(self.unplaced),
            "dropped": list(self.dropped),
            "objective": self.objective.to_dict() if self.objective else None,
        }


@dataclass
class Decision:
    """A policy's answer in indices: ``assign[c]`` is container ``c``'s node afterwards (-1: none);
    ``reasons[c]`` why it moves; ``scores[c]`` the score of a placement."""

    assign: I64
    reasons: dict[int, str] = field(default_factory=dict)
    scores: F64 | None = None


def sequence_moves(arrays: Arrays, target: I64) -> tuple[I64, list[int], list[int]]:
    """Order the migrations from ``arrays.node`` to ``target`` so each fits when it runs.

    Returns the assignment actually reached, the moved containers in order, and the dropped ones.
    """
    # placements of pending containers come first
    current = np.where(arrays.node >= 0, arrays.node, target)
    movers = [int(c) for c in np.flatnonzero((arrays.node >= 0) & (target >= 0) & (target != current))]
    if not movers:
        return current, [], []
    requested = arrays.requested(current)
    pods = arrays.pods(current)
    cap, req = arrays.capacity, arrays.requests
    done: list[int] = []
    pending = movers
    while pending:
        left: list[int] = []
        for c in pending:
            t, s = int(target[c]), int(current[c])
            need = req[c]
            if np.all((need == 0) | (requested[t] + need <= cap[t])) and pods[t] < arrays.max_pods[t]:
                requested[t] += need
                requested[s] -= need
                pods[t] += 1
                pods[s] -= 1
                current[c] = t
                done.append(c)
            else:
                left.append(c)
        if len(left) == len(pending):
            break
        pending = left
    return current, done, pending


def make_plan(
    policy: str,
    arrays: Arrays,
    decision: Decision,
    cost_model: MigrationCostModel | None = None,
    strategy: Strategy = DEFAULT_STRATEGY,
    weights: Weights | None = None,
) -> Plan:
    """Turn a :class:`Decision` into a :class:`Plan` with predicted costs and objective."""
    model = cost_model or MigrationCostModel()
    reached, order, dropped = sequence_moves(arrays, decision.assign)
    names, nodes = arrays.container_names, arrays.node_names
    new = np.flatnonzero((arrays.node < 0) & (reached >= 0))
    latency, _ = arrays.served_latency(reached)
    scores = decision.scores if decision.scores is not None else np.zeros(arrays.n_containers)
    placements = tuple(
        map(
            Placement,
            map(names.__getitem__, new.tolist()),
            map(nodes.__getitem__, reached[new].tolist()),
            scores[new].tolist(),
            np.round(latency[new], 3).tolist(),
        )
    )
    idx = np.array(order, dtype=np.int64)
    down, total = move_costs(arrays, idx, arrays.node[idx], reached[idx], model, strategy)
    migrations = tuple(
        Migration(
            names[c],
            nodes[arrays.node[c]],
            nodes[reached[c]],
            strategy,
            round(float(down[i]), 1),
            round(float(total[i]), 1),
            int(arrays.state_bytes[c]),
            decision.reasons.get(c, ""),
        )
        for i, c in enumerate(order)
    )
    unplaced = tuple(names[c] for c in np.flatnonzero(reached < 0).tolist())
    return Plan(
        policy,
        placements,
        migrations,
        unplaced,
        tuple(names[c] for c in dropped),
        evaluate(arrays, reached, weights, model, strategy),
    )
