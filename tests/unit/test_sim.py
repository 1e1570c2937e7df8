"""The simulator end to end: deterministic, never overcommits, writes its results; and its commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from podhop.cli.sim_cmds import COMMANDS, calibrate_cmd, simulate_cmd
from podhop.sim.engine import Engine, simulate
from podhop.sim.output import write_results
from podhop.sim.spec import SimSpec

SMALL = {"nodes": 9, "services": 24, "users": 120, "steps": 12, "ilp_every": 6}
ALL = [
    "least-allocated",
    "most-allocated",
    "latency-aware",
    "mobility",
    "low-utilization",
    "high-utilization",
    "hottest",
    "ilp",
]


def small(**changes: object) -> SimSpec:
    # a generous time limit: the ILP always stops at its gap, so runs are reproducible
    ilp = {"ilp": {"time_limit_s": 60.0, "mip_rel_gap": 0.05}}
    return SimSpec.model_validate({**SMALL, "policies": ALL, "policy_options": ilp, **changes})


def test_same_seed_same_summary_and_no_overcommit(tmp_path: Path) -> None:
    first = simulate(small(seed=7))
    second = simulate(small(seed=7))
    write_results(first, tmp_path / "a", plots=False)
    write_results(second, tmp_path / "b", plots=False)
    assert (tmp_path / "a" / "summary.json").read_bytes() == (tmp_path / "b" / "summary.json").read_bytes()
    assert (tmp_path / "a" / "timeseries.csv").read_bytes() == (
        tmp_path / "b" / "timeseries.csv"
    ).read_bytes()
    other = simulate(small(seed=8, policies=["least-allocated", "mobility"]))
    assert other.summary["mobility"] != first.summary["mobility"]
    for name, metrics in first.summary.items():
        assert metrics["capacity_violations"] == 0, name
        assert metrics["unplaced"] == 0, name
        assert metrics["requests"] > 0 and metrics["mean_latency_ms"] > 0, name
    assert first.summary["least-allocated"]["migrations"] == 0  # placement only


def test_every_step_respects_capacity() -> None:
    engine = Engine(small(seed=3, steps=12, nodes=6, services=30))
    for _ in range(12):
        engine.step()
        for run in engine.runs:
            view = engine.view(run)
            assert (view.requested(run.assign) <= view.capacity).all(), run.policy.name


def test_outputs(tmp_path: Path) -> None:
    result = simulate(small(steps=6, policies=["least-allocated", "hottest"]))
    files = write_results(result, tmp_path)
    assert {f.name for f in files} == {
        "summary.json",
        "summary.csv",
        "timeseries.csv",
        "timings.json",
        "latency.png",
        "summary.png",
    }
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert list(doc["policies"]) == ["least-allocated", "hottest"] and doc["spec"]["steps"] == 6
    for key in (
        "mean_latency_ms",
        "p95_latency_ms",
        "sla_violations",
        "migrations",
        "downtime_s",
        "energy_kwh",
        "imbalance_pp",
    ):
        assert key in doc["policies"]["hottest"]
    rows = (tmp_path / "timeseries.csv").read_text().splitlines()
    assert rows[0].startswith("step,policy,") and len(rows) == 1 + 2 * 6
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_simulate_command(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("nodes: 50\nservices: 20\nusers: 50\nsteps: 3\npolicies: [least-allocated]\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        simulate_cmd,
        [
            str(spec),
            "--nodes",
            "5",
            "--policies",
            "least-allocated,hottest",
            "--output",
            str(out),
            "--no-plots",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "summary.json").read_text())
    assert doc["spec"]["nodes"] == 5 and list(doc["policies"]) == ["least-allocated", "hottest"]
    assert "hottest" in result.output and str(out) in result.output
    bad = CliRunner().invoke(simulate_cmd, ["--policies", "best-guess", "--steps", "1", "--output", str(out)])
    assert bad.exit_code == 1 and "best-guess" in bad.output
    assert {c.name for c in COMMANDS} == {"simulate", "calibrate"}


def test_calibrate_command(tmp_path: Path) -> None:
    runs = [
        {
            "strategy": "cold",
            "total_ms": 900 + k * 10,
            "downtime_ms": 700 + k * 9,
            "image_bytes": (5 + k) * 2**20,
            "link_bandwidth_bps": 1e9,
        }
        for k in range(5)
    ]
    (tmp_path / "bench.json").write_text(json.dumps(runs))
    out = tmp_path / "model.json"
    result = CliRunner().invoke(calibrate_cmd, [str(tmp_path / "bench.json"), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "cold" in result.output and "5 migrations" in result.output
    assert "cold" in json.loads(out.read_text())["strategies"]
    spec = SimSpec.model_validate({**SMALL, "steps": 2, "policies": ["hottest"], "cost_model": str(out)})
    assert simulate(spec).summary["hottest"]["capacity_violations"] == 0
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    failed = CliRunner().invoke(calibrate_cmd, [str(empty), "--output", str(out)])
    assert failed.exit_code == 1 and "no migrations" in failed.output


@pytest.mark.parametrize("replicas", [1, 3])
def test_replicas_route_users_to_the_nearest(replicas: int) -> None:
    spec = small(steps=4, policies=["latency-aware"], service={"replicas": replicas})
    engine = Engine(spec)
    engine.step()
    view = engine.view(engine.runs[0])
    assert view.n_containers == spec.services * replicas
    served = view.user_container // replicas
    assert (served == engine.world.user_service).all()
    if replicas > 1:
        lat = view.user_latency()
        for r in range(replicas):
            other = engine.world.user_service * replicas + r
            alt = view.user_access_ms + view.latency_pairs(view.user_node, view.node[other])
            assert (lat <= alt + 1e-9).all()
