"""Calibrating the migration cost model on measured migrations (``podhop calibrate``).

Why: the default coefficients of :class:`~podhop.policies.costmodel.MigrationCostModel`
come from a few hand-run migrations; the live cluster's migration benchmark and
experiments measure many more. Fitting the model to them makes the simulator
and the rebalancer charge what a migration really costs on this machine.

Input (lenient on purpose, since reports evolve): JSON files or directories of
them. Anywhere in a file's JSON tree, an object with a ``strategy`` (its own or
an enclosing object's), a size (``image_bytes``, ``bytes_transferred`` or
``state_bytes``) and a ``downtime_ms`` and/or ``total_ms`` is one migration;
``link_bandwidth_bps`` is optional (also inherited). That covers a list of
reports, ``{"migrations": [...]}``, ``{"runs": [...]}`` and an experiment's
``results.json`` with a ``migration`` key.

Fit, per strategy and per target (downtime, total): non-negative least squares
on the features ``[1, wire_ms, mib]`` with a ridge term pulling towards the
current coefficients, ``min ‖Xβ − y‖² + λ Σ_k s_k² (β_k − β0_k)²``, where
``s_k`` is the RMS of feature ``k`` (so the pull is scale-free) and λ = 0.05.
With informative data the data win; with one sample, or samples that all share
one bandwidth (so ``wire_ms`` and ``mib`` are collinear), the unidentified
directions stay at their prior instead of going wild. Non-negativity is exact:
with three coefficients every active set is tried.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from podhop.errors import PodhopError
from podhop.policies.costmodel import (
    F64,
    Coefficients,
    MigrationCostModel,
    Strategy,
    StrategyCost,
    normalize_strategy,
)

RIDGE = 0.05
_SIZE_KEYS = ("image_bytes", "bytes_transferred", "state_bytes")
_TOTAL_KEYS = ("total_ms", "migration_ms", "duration_ms")
_BW_KEYS = ("link_bandwidth_bps", "bandwidth_bps")


class CalibrationError(PodhopError):
    """No usable migration measurements, or an unreadable results file."""


@dataclass(frozen=True)
class Sample:
    """One measured migration."""

    strategy: Strategy
    state_bytes: float
    downtime_ms: float | None
    total_ms: float | None
    bandwidth_bps: float | None = None
    source: str = ""


@dataclass(frozen=True)
class StrategyFit:
    """How well the model explains one strategy's samples, before and after fitting (RMSE, ms)."""

    strategy: str
    samples: int
    rmse_downtime_before: float | None
    rmse_downtime_after: float | None
    rmse_total_before: float | None
    rmse_total_after: float | None


@dataclass(frozen=True)
class FitResult:
    model: MigrationCostModel
    fits: tuple[StrategyFit, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "fits": [vars(f).copy() for f in self.fits]}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _first(record: Mapping[str, Any], keys: Sequence[str]) -> float | None:
    for key in keys:
        value = _number(record.get(key))
        if value is not None:
            return value
    return None


def _walk(node: Any, context: dict[str, Any], source: str) -> Iterator[Sample]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, context, source)
        return
    if not isinstance(node, dict):
        return
    context = dict(context)
    for key in ("strategy", *_BW_KEYS):
        if key in node and not isinstance(node[key], dict | list):
            context[key] = node[key]
    size = _first(node, _SIZE_KEYS)
    downtime = _number(node.get("downtime_ms"))
    total = _first(node, _TOTAL_KEYS)
    strategy = normalize_strategy(str(context.get("strategy", "")))
    if size is not None and strategy is not None and (downtime is not None or total is not None):
        bw = _first(context, _BW_KEYS)
        yield Sample(strategy, size, downtime, total, bw if bw and bw > 0 else None, source)
        return
    for value in node.values():
        yield from _walk(value, context, source)


def load_samples(paths: Iterable[str | Path]) -> list[Sample]:
    """Every migration found in the given JSON files and directories (searched recursively)."""
    samples: list[Sample] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(path.rglob("*.json"))
        elif path.is_file():
            files = [path]
        else:
            raise CalibrationError(f"no such results file or directory: {path}")
        for file in files:
            try:
                data = json.loads(file.read_text())
            except (OSError, ValueError) as exc:
                if file == path:
                    raise CalibrationError(f"cannot read {file}: {exc}") from exc
                continue
            samples.extend(_walk(data, {}, str(file)))
    return samples


def _solve(x: F64, y: F64, prior: F64) -> F64:
    """Ridge-regularised non-negative least squares for three coefficients (exact active sets)."""
    scale = np.sqrt(np.mean(x**2, axis=0)) + 1e-12
    a = np.vstack([x, math.sqrt(RIDGE) * np.diag(scale)])
    b = np.concatenate([y, math.sqrt(RIDGE) * scale * prior])
    best: tuple[float, F64] | None = None
    for free in itertools.chain.from_iterable(itertools.combinations(range(3), k) for k in (3, 2, 1, 0)):
        beta = np.zeros(3)
        if free:
            cols = list(free)
            beta[cols] = np.linalg.lstsq(a[:, cols], b, rcond=None)[0]
        if np.any(beta < -1e-12):
            continue
        beta = np.maximum(beta, 0.0)
        loss = float(np.sum((a @ beta - b) ** 2))
        if best is None or loss < best[0] - 1e-12:
            best = (loss, beta)
    assert best is not None  # the all-zero solution is always feasible
    return best[1]


#: Coefficients the physics fixes, kept at the prior's value whatever the samples say: a clone's
#: source serves while its copy crosses the link, so its downtime does not grow with the bytes
#: (1: per wire millisecond, 2: per MiB).
STRUCTURAL: dict[tuple[str, str], tuple[int, ...]] = {("clone", "downtime"): (1, 2)}


def _solve_identifiable(x: F64, y: F64, prior: F64, fixed: tuple[int, ...] = ()) -> F64:
    """:func:`_solve` for the coefficients the samples can tell apart: a feature that hardly varies
    across them (every clone in the benchmark moves the same few MiB of NGINX) is the intercept
    in disguise, so its coefficient keeps the prior's value (as do ``fixed`` ones) and the rest is
    fitted around it."""
    spread = [j for j in (1, 2) if np.ptp(x[:, j]) <= 0.1 * max(float(np.max(np.abs(x[:, j]))), 1e-9)]
    keep = sorted({*spread, *fixed})
    if not keep:
        return _solve(x, y, prior)
    free = [j for j in range(3) if j not in keep]
    y_rest = y - x[:, keep] @ prior[keep]
    beta = prior.copy()
    pad = 3 - len(free)  # _solve takes three columns: unused ones are zero (and stay zero)
    sub = _solve(np.pad(x[:, free], ((0, 0), (0, pad))), y_rest, np.pad(prior[free], (0, pad)))
    beta[free] = sub[: len(free)]
    return beta


def _rmse(x: F64, y: F64, beta: F64) -> float:
    return round(float(np.sqrt(np.mean((x @ beta - y) ** 2))), 3)


def fit(samples: Sequence[Sample], base: MigrationCostModel | None = None) -> FitResult:
    """Fit ``base`` (default: the assumed priors, so that refitting the shipped benchmark results gives
    the shipped model) to ``samples``; strategies without samples keep theirs."""
    model = base or MigrationCostModel.priors()
    if not samples:
        raise CalibrationError(
            "no migrations found in the results",
            hint="pass migration reports (JSON with strategy, downtime_ms, total_ms, image_bytes)",
        )
    updates: dict[str, StrategyCost] = {}
    fits: list[StrategyFit] = []
    for strategy in sorted({s.strategy for s in samples}):
        group = [s for s in samples if s.strategy == strategy]
        prior = model.cost(strategy)
        new: dict[str, Coefficients] = {}
        rmse: dict[str, tuple[float | None, float | None]] = {}
        for target, coeffs in (("downtime", prior.downtime), ("total", prior.total)):
            rows = [
                (model.features(s.state_bytes, s.bandwidth_bps), value)
                for s in group
                if (value := s.downtime_ms if target == "downtime" else s.total_ms) is not None
            ]
            if not rows:
                new[target], rmse[target] = coeffs, (None, None)
                continue
            x = np.array([[1.0, wire, mib] for (wire, mib), _ in rows])
            y = np.array([value for _, value in rows])
            beta = _solve_identifiable(x, y, coeffs.as_array(), STRUCTURAL.get((strategy, target), ()))
            new[target] = Coefficients.from_array(beta)
            rmse[target] = (_rmse(x, y, coeffs.as_array()), _rmse(x, y, new[target].as_array()))
        updates[strategy] = StrategyCost(new["downtime"], new["total"])
        fits.append(StrategyFit(strategy, len(group), *rmse["downtime"], *rmse["total"]))
    return FitResult(model.replace(updates), tuple(fits))
