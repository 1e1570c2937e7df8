"""The discrete-time simulator: every policy, side by side, on the same moving world.

Why: a policy that looks good on one snapshot may thrash, or fall behind its
users, over time. The engine replays a world step by step — users move
(:mod:`~podhop.sim.mobility`), service load follows a daily-like cycle — and
lets each policy decide, with exactly the code the live rebalancer runs
(:mod:`podhop.policies`), and exactly the migration prices
(:class:`~podhop.policies.costmodel.MigrationCostModel`).

One step of ``step_s`` seconds, for each policy in turn, all vectorised:

1. *Routing* (Oleghe's first decision): each user's requests go to the
   replica of its service with the lowest network latency.
2. *Usage*: a container uses ``idle_cpu_fraction × request`` plus
   ``cpu_per_rps_m`` per request/s routed to it; its memory in use is its state.
3. *Decide*: at step 0 the policy places every container; afterwards, every
   ``rebalance_every`` steps (``ilp_every`` for the ILP) a migrating policy
   returns a plan; its migrations run in their feasible order (moves that
   cannot be ordered are dropped and counted) and cost the predicted
   downtime. Requests are never placed above capacity: each step re-checks it
   and counts violations (there are none, by construction).
4. *Measure* (:mod:`~podhop.sim.metrics`): latency, SLA, energy, imbalance.

Determinism: the world, movement and load come from the spec's seed (NumPy
``SeedSequence``), identical for every policy; policies themselves are
deterministic; so the same spec gives the same ``summary.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from podhop.policies.costmodel import MigrationCostModel
from podhop.policies.objective import Weights, cpu_utilisation, move_costs
from podhop.policies.plan import sequence_moves
from podhop.policies.registry import Context, Policy, get
from podhop.policies.snapshot import CPU, F64, I64, UNPLACED, Arrays, Bools
from podhop.sim.metrics import Metrics
from podhop.sim.mobility import Mobility
from podhop.sim.spec import SimSpec
from podhop.sim.topology import World, build_world

Progress = Callable[[int, int], None]
MAX_MOVES_TRIGGERS = ("low-utilization", "high-utilization", "mobility")


@dataclass
class PolicyRun:
    """One policy's state during a run."""

    policy: Policy
    every: int
    assign: I64
    prev_access: I64
    metrics: Metrics = field(default_factory=Metrics)
    decide_s: float = 0.0
    over: Bools | None = None  # nodes whose requests exceed capacity (never, unless given so)
    stuck: bool = False  # a placement-only policy whose last try placed nothing: nothing has changed since


@dataclass
class SimResult:
    spec: SimSpec
    world: World
    summary: dict[str, dict[str, float | int]]
    series: dict[str, dict[str, list[float]]]
    timings: dict[str, float]


def make_policy(spec: SimSpec, name: str) -> Policy:
    options = dict(spec.policy_options.get(name, {}))
    if name == "ilp":
        options.setdefault("time_limit_s", 2.0)
    elif name in MAX_MOVES_TRIGGERS and spec.max_migrations_per_step is not None:
        options.setdefault("max_moves", spec.max_migrations_per_step)
    return get(name, **options)


class Engine:
    """Runs :func:`simulate`; kept as a class so tests can step it."""

    def __init__(self, spec: SimSpec) -> None:
        self.spec = spec
        self.world = build_world(spec)
        rng_move, rng_load = (
            np.random.default_rng(s) for s in np.random.SeedSequence([spec.seed, 1]).spawn(2)
        )
        w = self.world
        self.mobility = Mobility(w.user_pos, w.positions, w.area_km, spec.user, spec.step_s, rng_move)
        self.phase = rng_load.uniform(0.0, 2 * np.pi, size=len(w.service_names))
        self.base = w.arrays()
        self.cost_model = (
            MigrationCostModel.load(spec.cost_model) if spec.cost_model else MigrationCostModel()
        )
        self.ctx = Context(self.cost_model, Weights(**spec.weights.model_dump()), spec.strategy)
        self.replicas = spec.service.replicas
        c, u = len(w.container_names), len(w.user_service)
        self.runs = [
            PolicyRun(
                p,
                spec.ilp_every if p.ilp else spec.rebalance_every,
                np.full(c, UNPLACED, dtype=np.int64),
                np.full(u, UNPLACED, dtype=np.int64),
            )
            for p in (make_policy(spec, name) for name in spec.policies)
        ]
        self.cpu_cap = w.capacity[:, CPU].astype(np.float64)
        self.state_usage = np.stack([np.zeros(c), w.state_bytes], axis=1)
        self.idle_cpu = w.requests[:, CPU] * spec.service.idle_cpu_fraction
        self.t = 0

    def _route(self, assign: I64, access: I64) -> I64:
        """The container serving each user: the nearest placed replica of its service."""
        first = self.world.user_service * self.replicas
        if self.replicas == 1:
            return first
        cand = first[:, None] + np.arange(self.replicas)[None, :]
        nodes = assign[cand]
        lat = np.where(
            nodes >= 0,
            self.base.latency_pairs(np.repeat(access, self.replicas), np.maximum(nodes, 0).ravel()).reshape(
                nodes.shape
            ),
            np.inf,
        )
        if np.all(nodes < 0):  # nothing placed yet: spread users over the replicas
            return np.asarray(first + np.arange(len(first)) % self.replicas, dtype=np.int64)
        return np.asarray(first + np.argmin(lat, axis=1), dtype=np.int64)

    def _rate(self) -> F64:
        load = self.spec.load
        factor = 1.0 + load.amplitude * np.sin(2 * np.pi * self.t / load.period_steps + self.phase)
        return np.asarray(self.world.user_rate * factor[self.world.user_service], dtype=np.float64)

    def view(self, run: PolicyRun, access: I64 | None = None, rate: F64 | None = None) -> Arrays:
        """What ``run``'s policy sees now: the snapshot the live rebalancer would build."""
        access = self.mobility.nearest() if access is None else access
        rate = self._rate() if rate is None else rate
        serving = self._route(run.assign, access)
        return self.base.derive(
            node=run.assign,
            usage=self._usage(serving, rate),
            user_container=serving,
            user_node=access,
            user_prev_node=run.prev_access,
            user_rate=rate,
            user_access_ms=self.world.user_access_ms,
        )

    def step(self) -> None:
        """Advance the world by one step and let every policy act and be measured."""
        if self.t > 0:
            self.mobility.step()
        access = self.mobility.nearest()
        rate = self._rate()
        for run in self.runs:
            self._step_policy(run, access, rate)
        self.t += 1

    def _usage(self, serving: I64, rate: F64) -> F64:
        usage = self.state_usage.copy()
        usage[:, CPU] = self.idle_cpu + self.spec.service.cpu_per_rps_m * np.bincount(
            serving, rate, minlength=len(usage)
        )
        return usage

    def _step_policy(self, run: PolicyRun, access: I64, rate: F64) -> None:
        spec, m = self.spec, run.metrics
        arrays = self.view(run, access, rate)
        serving, usage = arrays.user_container, arrays.usage
        down = np.zeros(len(run.assign))
        moves = 0
        # a placement-only policy retries pending containers only if its last try placed some: requests
        # and placements are all that decide what fits, and neither changed (exact, and most of a big
        # run's time before: least-allocated re-decided 2,500 unplaceable containers every step)
        retry = bool(np.any(run.assign < 0)) and not run.stuck
        due = self.t == 0 or (run.policy.migrates and self.t % run.every == 0) or retry
        if due:
            t0 = time.perf_counter()
            decision = run.policy.decide(arrays, self.ctx)
            run.decide_s += time.perf_counter() - t0
            reached, order, dropped = sequence_moves(arrays, decision.assign)
            if order:
                idx = np.array(order, dtype=np.int64)
                d, total = move_costs(
                    arrays, idx, run.assign[idx], reached[idx], self.cost_model, spec.strategy
                )
                down[idx] = d
                moves = len(order)
                m.migrations += moves
                m.downtime_s += float(d.sum()) / 1000.0
                m.transfer_s += float(total.sum()) / 1000.0
            m.dropped += len(dropped)
            run.stuck = not run.policy.migrates and bool(np.all(reached == run.assign))
            if np.any(reached != run.assign):
                over_before = run.over if run.over is not None else arrays.requested() > arrays.capacity
                run.over = arrays.requested(reached) > arrays.capacity
                m.capacity_violations += int(np.sum(run.over & ~over_before))
                run.assign = reached
                if self.replicas > 1:
                    serving = self._route(run.assign, access)
                    usage = self._usage(serving, rate)
            run.prev_access = access
        self._measure(run, access, rate, serving, usage, down, moves)

    def _measure(
        self, run: PolicyRun, access: I64, rate: F64, serving: I64, usage: F64, down: F64, moves: int
    ) -> None:
        spec, w, m = self.spec, self.world, run.metrics
        arrays = self.base.derive(node=run.assign, usage=usage)
        util, overall = cpu_utilisation(arrays, run.assign)
        node = run.assign[serving]
        placed = node >= 0
        latency = np.full(len(serving), np.inf)
        rho = np.minimum(util[node[placed]], spec.max_utilisation)
        latency[placed] = (
            w.user_access_ms[placed]
            + self.base.latency_pairs(access[placed], node[placed])
            + spec.service_ms / (1.0 - rho)
        )
        fraction = np.minimum(1.0, down[serving] / (spec.step_s * 1000.0))
        mean_lat, violation = m.record_requests(latency, rate * spec.step_s, fraction, spec.sla_ms)
        on = arrays.pods(run.assign) > 0
        power = float(np.sum((w.idle_w + (w.max_w - w.idle_w) * np.minimum(util, 1.0))[on]))
        unplaced = int(np.sum(run.assign < 0))
        m.record_step(power, spec.step_s, util[self.cpu_cap > 0], overall, unplaced)
        m.add_series(
            mean_latency_ms=round(mean_lat, 4),
            sla_violation_rate=round(violation, 6),
            migrations=moves,
            power_w=round(power, 2),
            imbalance_pp=round(100.0 * (float(util.max(initial=0.0)) - overall), 4),
        )


def simulate(spec: SimSpec, progress: Progress | None = None) -> SimResult:
    """Run every policy of ``spec`` for ``spec.steps`` steps; same spec, same result."""
    t0 = time.perf_counter()
    engine = Engine(spec)
    setup = time.perf_counter() - t0
    for t in range(spec.steps):
        engine.step()
        if progress is not None:
            progress(t + 1, spec.steps)
    summary = {r.policy.name: r.metrics.summary(spec.step_s) for r in engine.runs}
    series = {r.policy.name: r.metrics.series for r in engine.runs}
    timings = {"setup_s": setup, "total_s": time.perf_counter() - t0}
    timings.update({f"decide_{r.policy.name}_s": r.decide_s for r in engine.runs})
    return SimResult(spec, engine.world, summary, series, timings)
