"""The exact model: its objective is the shared one, and no heuristic ever beats it on small instances."""

from __future__ import annotations

import random

import numpy as np
import pytest

from podhop.objects.model import Resources
from podhop.objects.quantity import GI, MI
from podhop.policies.ilp import IlpOptions, solve
from podhop.policies.objective import Weights, evaluate
from podhop.policies.placement import place
from podhop.policies.registry import POLICIES
from podhop.policies.snapshot import I64, Arrays, ContainerInfo, NodeInfo, Snapshot, User

EXACT = IlpOptions(mip_rel_gap=0.0, time_limit_s=60.0)


def instance(seed: int, nodes: int = 4, containers: int = 8, users: int = 12, placed: bool = True) -> Arrays:
    rng = random.Random(seed)
    node_infos = tuple(
        NodeInfo(
            f"node-{i + 1}",
            Resources(rng.choice([1000, 2000]), rng.choice([GI, 2 * GI])),
            bandwidth_bps=rng.choice([1e8, 1e9]),
            idle_w=rng.choice([30.0, 60.0]),
            max_w=rng.choice([80.0, 150.0]),
            position=(rng.uniform(0, 10), rng.uniform(0, 10)),
        )
        for i in range(nodes)
    )
    conts = []
    for i in range(containers):
        req = Resources(rng.choice([100, 200, 400]), rng.choice([64, 128, 256]) * MI)
        use = Resources(int(req.cpu_m * rng.uniform(0.3, 1.5)), req.memory_b // 2)
        conts.append(ContainerInfo(f"c{i}", None, req, use, state_bytes=rng.choice([10, 50, 200]) * MI))
    user_infos = tuple(
        User(
            f"u{k}",
            f"c{rng.randrange(containers)}",
            f"node-{rng.randrange(nodes) + 1}",
            access_ms=rng.uniform(1, 5),
            rate=rng.uniform(0.5, 2),
        )
        for k in range(users)
    )
    arrays = Snapshot(node_infos, tuple(conts), user_infos, hop_ms=2.0, ms_per_km=1.0).arrays()
    if placed:
        arrays = arrays.derive(node=place(arrays, scorer="first-fit")[0])
    return arrays


def heuristic_assignments(arrays: Arrays) -> dict[str, I64]:
    out = {name: p.decide(arrays).assign for name, p in POLICIES.items() if not p.ilp}
    out["current"] = arrays.node
    return out


@pytest.mark.parametrize("placed", [True, False], ids=["reoptimise", "place"])
def test_ilp_is_never_worse_than_any_heuristic(placed: bool) -> None:
    for seed in range(12):
        arrays = instance(seed, placed=placed)
        result = solve(arrays, options=EXACT)
        assert result.status == "Optimal"
        ilp = evaluate(arrays, result.assign).total
        assert ilp == pytest.approx(result.objective, rel=1e-7, abs=1e-7)
        for name, assign in heuristic_assignments(arrays).items():
            if np.all(arrays.requested(assign) <= arrays.capacity):
                assert ilp <= evaluate(arrays, assign).total + 1e-7, (seed, name)


def test_ilp_respects_capacity_and_keeps_running_containers_placed() -> None:
    for seed in range(8):
        arrays = instance(seed, nodes=3, containers=10, placed=bool(seed % 2))
        result = solve(arrays, options=EXACT)
        assert np.all(arrays.requested(result.assign) <= arrays.capacity)
        assert np.all(result.assign[arrays.node >= 0] >= 0)


def test_weights_steer_the_ilp() -> None:
    arrays = instance(3, nodes=4, containers=6, placed=False)
    packed = solve(arrays, Weights(latency=0, imbalance=0, overload=0, energy=1.0), options=EXACT)
    spread = solve(arrays, Weights(latency=0, energy=0, imbalance=1.0), options=EXACT)
    assert np.sum(arrays.pods(packed.assign) > 0) <= np.sum(arrays.pods(spread.assign) > 0)
    assert evaluate(arrays, packed.assign).power_w <= evaluate(arrays, spread.assign).power_w + 1e-9


def test_large_instances_reoptimise_a_window() -> None:
    arrays = instance(1, nodes=60, containers=200, users=600)
    assert np.all(arrays.node >= 0)
    opts = IlpOptions(full_below=1000, max_containers=40, candidates=6, time_limit_s=20)
    result = solve(arrays, options=opts)
    assert result.containers == 40
    assert np.sum(result.assign != arrays.node) <= 40
    assert evaluate(arrays, result.assign).total <= evaluate(arrays).total + 1e-7
    assert np.all(arrays.requested(result.assign) <= arrays.capacity)
