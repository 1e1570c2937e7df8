"""Migration cost model: predicted downtime and total time of one live migration.

Why: every policy that migrates must weigh what a move gains against what it
costs, and the simulator must charge each policy the same price for the same
move. The price of a CRIU migration is dominated by a few quantities — the
state (memory) size, the link bandwidth and the strategy — so a small linear
model, calibrated on podhop's own measurements, is both good enough and
explainable. Oleghe (IEEE Access 9, 2021) counts migration cost (downtime,
transferred state) among the objectives of every migration model; this is it.

Model, per strategy ``s`` (``cold``, ``clone``, ``postcopy``, ``precopy``), with
state size ``S`` bytes and link bandwidth ``B`` bit/s:

    wire_ms     = 8 · S / B · 1000      (time for the state to cross the link)
    mib         = S / 2**20
    downtime_ms = d0[s] + d1[s] · wire_ms + d2[s] · mib
    transfer_ms = t0[s] + t1[s] · wire_ms + t2[s] · mib

``transfer_ms`` is the whole migration, start to finish (a report's
``total_ms``). ``d0``/``t0`` are fixed costs (CRIU start-up, runc restore, the
endpoint switch); ``d1``/``t1`` the fraction of the state that crosses the link
while the pod is frozen / during the whole migration; ``d2``/``t2`` per-MiB
dump and restore work that does not depend on the link.

The defaults are *measured*: ``data/cost-model.json`` in this package is
``podhop calibrate benchmarks/results/migration.json`` (``make cost-model``
rewrites it; a unit test checks that it is what the shipped results give).
Calibration starts from :data:`PRIOR_COSTS`, figures assumed from runs noted
by hand (a cold NGINX move dumped in 390 ms, restored in 303 ms and switched
endpoints in 24 ms for a 5.3 MB image; post-copy restored in 233 ms without
memory in the image; clone's users only see the switch; pre-copy with a
fifth of memory dirty at the final dump), and :meth:`MigrationCostModel.fit`
re-estimates the six coefficients per strategy by non-negative least squares,
pulled gently towards those priors so that a handful of samples cannot produce
nonsense (see :mod:`podhop.policies.calibration`). Pre-copy is refused on this
kernel (no soft-dirty tracking), so it has no measurement and keeps its prior.

:data:`DEFAULT_STRATEGY` is ``cold``, the strategy plans are priced with when
none is named. It runs here (pre-copy does not), keeps the pod's state exactly
(clone does not: it is for stateless replicas), and until its endpoint switch
any failure leaves the source serving; post-copy's downtime is lower for large
memory, but once its target runs, a lost link or source loses the pod, a risk
an edge link makes real. ``podhop rebalance`` defaults to the same strategy.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast, get_args, overload

import numpy as np
from numpy.typing import NDArray

Strategy: TypeAlias = Literal["cold", "clone", "postcopy", "precopy"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
#: Strategy plans are priced with when none is named (see the module's doc for why).
DEFAULT_STRATEGY: Strategy = "cold"
MIB = 2**20
F64: TypeAlias = NDArray[np.float64]

if TYPE_CHECKING:
    from podhop.policies.calibration import FitResult, Sample


@dataclass(frozen=True)
class Coefficients:
    """``fixed_ms + per_wire · wire_ms + per_mib_ms · mib`` (all non-negative)."""

    fixed_ms: float
    per_wire: float
    per_mib_ms: float

    @overload
    def __call__(self, wire_ms: float, mib: float) -> float: ...
    @overload
    def __call__(self, wire_ms: F64, mib: F64) -> F64: ...
    def __call__(self, wire_ms: float | F64, mib: float | F64) -> float | F64:
        return self.fixed_ms + self.per_wire * wire_ms + self.per_mib_ms * mib

    def as_array(self) -> F64:
        return np.array([self.fixed_ms, self.per_wire, self.per_mib_ms], dtype=np.float64)

    @classmethod
    def from_array(cls, values: F64) -> Coefficients:
        a, b, c = (round(float(v), 6) for v in values)
        return cls(a, b, c)


@dataclass(frozen=True)
class StrategyCost:
    """How one strategy's downtime and total time grow with state size and bandwidth."""

    downtime: Coefficients
    total: Coefficients


#: Assumed coefficients: calibration's starting point and pull (not the defaults: see DEFAULT_COSTS).
PRIOR_COSTS: dict[str, StrategyCost] = {
    # freeze + dump (390) + restore (303) + switch (24); everything crosses the link frozen
    "cold": StrategyCost(Coefficients(720.0, 1.0, 2.0), Coefficients(900.0, 1.0, 2.0)),
    # make-before-break: users only see the endpoint switch
    "clone": StrategyCost(Coefficients(25.0, 0.0, 0.0), Coefficients(900.0, 1.0, 2.0)),
    # frozen for the non-memory dump and the restore; memory is pulled afterwards
    "postcopy": StrategyCost(Coefficients(480.0, 0.02, 0.1), Coefficients(900.0, 1.0, 2.0)),
    # pre-dumps while running; a fifth of memory is dirty at the final dump
    "precopy": StrategyCost(Coefficients(720.0, 0.2, 0.4), Coefficients(1100.0, 1.2, 2.4)),
}

SHIPPED_MODEL = "cost-model.json"


def _parse_costs(data: Mapping[str, Any], base: Mapping[str, StrategyCost]) -> dict[str, StrategyCost]:
    strategies = dict(base)
    for name, cost in cast(Mapping[str, Any], data.get("strategies", {})).items():
        if name not in STRATEGIES:
            raise ValueError(f"unknown migration strategy {name!r} in cost model")
        strategies[name] = StrategyCost(Coefficients(**cost["downtime"]), Coefficients(**cost["total"]))
    return strategies


@functools.cache
def _shipped() -> dict[str, StrategyCost]:
    text = resources.files("podhop.policies").joinpath("data", SHIPPED_MODEL).read_text()
    return _parse_costs(cast(Mapping[str, Any], json.loads(text)), PRIOR_COSTS)


def shipped_costs() -> dict[str, StrategyCost]:
    """The measured coefficients shipped in ``podhop/policies/data/cost-model.json``."""
    return dict(_shipped())


#: The default coefficients: measured (``data/cost-model.json``), pre-copy's assumed.
DEFAULT_COSTS: dict[str, StrategyCost] = shipped_costs()


@dataclass(frozen=True)
class MigrationCostModel:
    """Predicts ``(downtime_ms, transfer_ms)`` of a migration (see the module docstring).

    ``strategies`` maps each strategy to its coefficients (default: :data:`DEFAULT_COSTS`, measured);
    ``default_bandwidth_bps`` is used when a link's bandwidth is unknown (default 1 Gbit/s).
    """

    strategies: Mapping[str, StrategyCost] = field(default_factory=lambda: dict(DEFAULT_COSTS))
    default_bandwidth_bps: float = 1e9

    @classmethod
    def priors(cls) -> MigrationCostModel:
        """The assumed model calibration starts from (:data:`PRIOR_COSTS`)."""
        return cls(dict(PRIOR_COSTS))

    def cost(self, strategy: str) -> StrategyCost:
        try:
            return self.strategies[strategy]
        except KeyError:
            raise ValueError(
                f"unknown migration strategy {strategy!r} (choose from {', '.join(STRATEGIES)})"
            ) from None

    def features(self, state_bytes: float, bandwidth_bps: float | None) -> tuple[float, float]:
        """``(wire_ms, mib)`` for one migration."""
        bw = bandwidth_bps if bandwidth_bps and bandwidth_bps > 0 else self.default_bandwidth_bps
        return 8.0 * state_bytes / bw * 1000.0, state_bytes / MIB

    def predict(
        self, state_bytes: float, bandwidth_bps: float | None = None, strategy: str = DEFAULT_STRATEGY
    ) -> tuple[float, float]:
        """Predicted ``(downtime_ms, transfer_ms)`` for ``state_bytes`` over a ``bandwidth_bps`` link."""
        cost = self.cost(strategy)
        wire, mib = self.features(state_bytes, bandwidth_bps)
        down = max(0.0, cost.downtime(wire, mib))
        return down, max(down, cost.total(wire, mib))  # fitted lines may cross: downtime is part of it

    def predict_many(
        self, state_bytes: F64, bandwidth_bps: F64, strategy: str = DEFAULT_STRATEGY
    ) -> tuple[F64, F64]:
        """Vectorised :meth:`predict` (bandwidth ``<= 0`` means unknown)."""
        cost = self.cost(strategy)
        bw = np.where(bandwidth_bps > 0, bandwidth_bps, self.default_bandwidth_bps)
        wire = 8.0 * state_bytes / bw * 1000.0
        mib = state_bytes / MIB
        down = np.maximum(cost.downtime(wire, mib), 0.0)
        return down, np.maximum(cost.total(wire, mib), down)

    def replace(self, updates: Mapping[str, StrategyCost]) -> MigrationCostModel:
        return MigrationCostModel({**self.strategies, **updates}, self.default_bandwidth_bps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "default_bandwidth_bps": self.default_bandwidth_bps,
            "strategies": {
                name: {
                    "downtime": vars(cost.downtime).copy(),
                    "total": vars(cost.total).copy(),
                }
                for name, cost in self.strategies.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MigrationCostModel:
        """Inverse of :meth:`to_dict`; strategies left out keep their defaults."""
        strategies = _parse_costs(data, DEFAULT_COSTS)
        bw = float(data.get("default_bandwidth_bps", 1e9))
        return cls(strategies, bw)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> MigrationCostModel:
        """Read a model written by :meth:`save` (or ``podhop calibrate``)."""
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "model" in data:
            data = data["model"]
        return cls.from_dict(cast(Mapping[str, Any], data))

    def fit(self, samples: Sequence[Sample]) -> FitResult:
        """Fit to measured migrations (least squares, see :func:`podhop.policies.calibration.fit`)."""
        from podhop.policies.calibration import fit

        return fit(samples, self)


def load_samples(paths: Iterable[str | Path]) -> list[Sample]:
    """Measured migrations from JSON files or directories (see :mod:`podhop.policies.calibration`)."""
    from podhop.policies.calibration import load_samples as load

    return load(paths)


def normalize_strategy(name: str) -> Strategy | None:
    """Map the names reports use (``stop-and-copy``, ``lazy-pages``, ``pre-copy``...) to a strategy."""
    key = name.lower().replace("-", "").replace("_", "").replace(" ", "")
    aliases: dict[str, Strategy] = {
        "cold": "cold",
        "stopandcopy": "cold",
        "stopcopy": "cold",
        "checkpointrestore": "cold",
        "clone": "clone",
        "leaverunning": "clone",
        "postcopy": "postcopy",
        "lazy": "postcopy",
        "lazypages": "postcopy",
        "precopy": "precopy",
        "iterative": "precopy",
        "predump": "precopy",
    }
    return aliases.get(key)
