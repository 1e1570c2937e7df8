"""The migration cost model: sensible defaults, a least-squares fit, lenient loading of results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from podhop.policies.calibration import CalibrationError, Sample, fit, load_samples
from podhop.policies.costmodel import (
    DEFAULT_STRATEGY,
    MIB,
    PRIOR_COSTS,
    STRATEGIES,
    Coefficients,
    MigrationCostModel,
    normalize_strategy,
)


def test_defaults_grow_with_state_and_shrink_with_bandwidth() -> None:
    model = MigrationCostModel()
    for strategy in STRATEGIES:
        small = model.predict(10 * MIB, 1e9, strategy)
        large = model.predict(500 * MIB, 1e9, strategy)
        slow = model.predict(500 * MIB, 1e8, strategy)
        assert small[0] <= large[0] <= slow[0] and small[1] < large[1] < slow[1]
        assert all(d <= t for d, t in (small, large, slow))  # downtime is part of the migration


def test_strategies_rank_as_expected_for_a_large_state() -> None:
    down = {s: MigrationCostModel().predict(1024 * MIB, 1e9, s)[0] for s in STRATEGIES}
    assert down["clone"] < down["postcopy"] < down["precopy"] < down["cold"]


def test_predict_many_matches_predict() -> None:
    model = MigrationCostModel()
    sizes, bws = np.array([0.0, 5e6, 3e8]), np.array([1e9, 0.0, 1e8])  # 0: unknown bandwidth
    down, total = model.predict_many(sizes, bws, "cold")
    for i in range(3):
        assert (down[i], total[i]) == pytest.approx(model.predict(sizes[i], bws[i] or None, "cold"))


def test_fit_recovers_known_coefficients() -> None:
    truth = {"downtime": Coefficients(300.0, 0.5, 1.5), "total": Coefficients(900.0, 1.1, 3.0)}
    rng = np.random.default_rng(0)
    model = MigrationCostModel()
    samples = []
    for _ in range(40):
        size, bw = float(rng.uniform(1, 400)) * MIB, float(rng.choice([1e8, 5e8, 1e9]))
        wire, mib = model.features(size, bw)
        samples.append(Sample("cold", size, truth["downtime"](wire, mib), truth["total"](wire, mib), bw))
    result = fit(samples)
    cold = result.model.cost("cold")
    assert cold.downtime.as_array() == pytest.approx(truth["downtime"].as_array(), rel=0.02, abs=2.0)
    assert cold.total.as_array() == pytest.approx(truth["total"].as_array(), rel=0.02, abs=2.0)
    (stats,) = result.fits
    assert stats.samples == 40 and stats.rmse_downtime_after is not None and stats.rmse_downtime_before
    assert stats.rmse_downtime_after < 0.01 * stats.rmse_downtime_before  # the prior barely pulls
    assert result.model.cost("clone") == MigrationCostModel.priors().cost("clone")  # untouched prior


def test_fit_with_few_or_collinear_samples_stays_sane() -> None:
    one = fit([Sample("postcopy", 5.3e6, 600.0, 1500.0, None)])
    down, total = one.model.predict(5.3e6, None, "postcopy")
    assert down == pytest.approx(600.0, rel=0.1) and total == pytest.approx(1500.0, rel=0.1)
    coefficients = one.model.cost("postcopy").downtime.as_array()
    assert np.all(coefficients >= 0)
    with pytest.raises(CalibrationError):
        fit([])


def test_load_samples_is_lenient(tmp_path: Path) -> None:
    report = {
        "pod": "nginx",
        "strategy": "cold",
        "total_ms": 1200.5,
        "downtime_ms": 700.0,
        "bytes_transferred": 6e6,
        "image_bytes": 5.3e6,
        "link_bandwidth_bps": 1e8,
    }
    (tmp_path / "bench.json").write_text(
        json.dumps({"migrations": [report, {**report, "strategy": "lazy-pages"}]})
    )
    (tmp_path / "runs.json").write_text(
        json.dumps(
            {
                "strategy": "clone",
                "runs": [
                    {"total_ms": 900, "downtime_ms": 30, "bytes_transferred": 4e6},
                    {"total_ms": 950, "downtime_ms": None, "bytes_transferred": 4e6},
                ],
            }
        )
    )
    exp = tmp_path / "exp-1"
    exp.mkdir()
    (exp / "results.json").write_text(
        json.dumps({"repetitions": [{"migration": {**report, "strategy": "pre-copy"}}]})
    )
    (exp / "junk.json").write_text("{not json")
    (tmp_path / "notes.json").write_text(json.dumps({"hello": [1, 2, 3]}))
    samples = load_samples([tmp_path])
    assert sorted(s.strategy for s in samples) == ["clone", "clone", "cold", "postcopy", "precopy"]
    cold = next(s for s in samples if s.strategy == "cold")
    assert (cold.state_bytes, cold.bandwidth_bps, cold.downtime_ms) == (5.3e6, 1e8, 700.0)
    assert sum(1 for s in samples if s.downtime_ms is None) == 1
    with pytest.raises(CalibrationError):
        load_samples([tmp_path / "missing.json"])
    with pytest.raises(CalibrationError):
        load_samples([exp / "junk.json"])


def test_model_round_trips_through_json(tmp_path: Path) -> None:
    fitted = fit([Sample("cold", 5e6, 650.0, 1100.0, 1e9)] * 3).model
    fitted.save(tmp_path / "m.json")
    assert MigrationCostModel.load(tmp_path / "m.json") == fitted
    (tmp_path / "fit.json").write_text(json.dumps({"model": fitted.to_dict(), "fits": []}))
    assert MigrationCostModel.load(tmp_path / "fit.json") == fitted


def test_strategy_names() -> None:
    assert [normalize_strategy(n) for n in ("Stop-and-Copy", "lazy_pages", "PRE-COPY", "clone", "warp")] == [
        "cold",
        "postcopy",
        "precopy",
        "clone",
        None,
    ]
    with pytest.raises(ValueError, match="unknown migration strategy"):
        MigrationCostModel().predict(1.0, None, "teleport")


def test_defaults_are_the_shipped_benchmark_results_refitted() -> None:
    """data/cost-model.json is `podhop calibrate benchmarks/results/migration.json` (`make cost-model`)."""
    from importlib import resources

    root = Path(__file__).resolve().parents[2]
    refit = fit(load_samples([root / "benchmarks" / "results" / "migration.json"])).model.to_dict()
    shipped = json.loads(resources.files("podhop.policies").joinpath("data", "cost-model.json").read_text())
    assert refit == shipped
    measured = {s for s in STRATEGIES if s != "precopy"}
    defaults = MigrationCostModel()
    assert all(defaults.cost(s) != PRIOR_COSTS[s] for s in measured)  # measured, not assumed
    assert defaults.cost("precopy") == PRIOR_COSTS["precopy"]  # refused here: never measured


def test_default_strategy_runs_on_this_kernel() -> None:
    from podhop.migrate.plan import Strategy as EngineStrategy

    assert DEFAULT_STRATEGY in {"cold", "postcopy"}
    assert DEFAULT_STRATEGY in {s.value for s in EngineStrategy}
    assert MigrationCostModel().predict(10 * MIB) == MigrationCostModel().predict(10 * MIB, None, "cold")


def test_a_feature_the_samples_do_not_vary_keeps_its_prior() -> None:
    """Every sample moves 3.8 MiB over different links: the per-MiB cost cannot be told from the
    fixed one, so it stays the prior's; a clone's downtime never grows with the bytes."""
    prior = MigrationCostModel.priors()
    links = ((120.0, None), (150.0, 1e9), (440.0, 1e8))
    samples = [Sample("cold", 3.8 * MIB, d, 2 * d, bw) for d, bw in links]
    samples += [Sample("clone", 3.8 * MIB, d, 400.0, bw) for d, bw in ((5.0, None), (5.0, 1e9), (36.0, 1e8))]
    model = fit(samples).model
    assert model.cost("cold").downtime.per_mib_ms == prior.cost("cold").downtime.per_mib_ms
    assert model.cost("cold").downtime.per_wire > 0  # the link's share is seen
    clone = model.cost("clone").downtime
    assert (clone.per_wire, clone.per_mib_ms) == (
        prior.cost("clone").downtime.per_wire,
        prior.cost("clone").downtime.per_mib_ms,
    )
