"""The simulated world: spec validation, topologies, CSV loading, mobility and metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from podhop.errors import ManifestError
from podhop.sim.metrics import Metrics
from podhop.sim.mobility import Mobility, nearest_raster
from podhop.sim.spec import SimSpec, TopologySpec, UserSpec, load_spec, parse_bandwidth
from podhop.sim.topology import build_world


def test_spec_defaults_overrides_and_errors(tmp_path: Path) -> None:
    spec = SimSpec()
    assert spec.nodes == 50 and "ilp" in spec.policies
    assert spec.with_overrides(nodes=7, seed=None).nodes == 7
    with pytest.raises(ManifestError, match="unknown policies"):
        spec.with_overrides(policies=["nope"])
    path = tmp_path / "s.yaml"
    path.write_text("nodes: 3\ntopology: {layout: random, nodes_csv: nodes.csv}\nbogus: 1\n")
    with pytest.raises(ManifestError, match="bogus"):
        load_spec(path)
    path.write_text("nodes: 3\ntopology: {layout: random}\n")
    assert load_spec(path).topology.layout == "random"
    assert load_spec(None) == SimSpec()
    assert (
        parse_bandwidth("100mbit") == 1e8 and parse_bandwidth("125Mbps") == 1e9 and parse_bandwidth(5) == 5.0
    )
    with pytest.raises(ValueError):
        parse_bandwidth("fast")


def test_example_spec_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "sim-edge.yaml"
    spec = load_spec(example)
    assert spec.nodes > 0 and spec.policies


def test_grid_latency_is_manhattan_hops() -> None:
    topology = TopologySpec(area_km=3.0, hop_ms=1.0, ms_per_km=0.0)
    world = build_world(SimSpec(nodes=9, services=3, users=5, topology=topology))
    assert world.latency is not None
    assert world.latency[0, 8] == 4.0 and world.latency[0, 1] == 1.0 and world.latency[4, 4] == 0.0


def test_random_geometric_graph_is_connected_and_seeded() -> None:
    spec = SimSpec(nodes=40, services=5, users=10, topology=TopologySpec(layout="random"))
    a, b = build_world(spec), build_world(spec)
    assert a.latency is not None and np.isfinite(a.latency).all()
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.requests, b.requests)
    assert (a.latency == a.latency.T).all()
    c = build_world(spec.with_overrides(seed=2))
    assert not np.array_equal(a.positions, c.positions)


def test_csv_world(tmp_path: Path) -> None:
    (tmp_path / "nodes.csv").write_text(
        "name,x,y,cpu,memory,bandwidth\nA,0,0,2,4Gi,100mbit\nB,1,0,4,8Gi,\nC,2,0,1,2Gi,\n"
    )
    (tmp_path / "links.csv").write_text("a,b,latency_ms\nA,B,3\nB,C,4\n")
    (tmp_path / "services.csv").write_text("name,cpu,memory,state\nweb,500m,256Mi,64Mi\ndb,1,1Gi,\n")
    (tmp_path / "users.csv").write_text("name,service,x,y,rate\nu1,web,0.1,0,2\nu2,db,1.9,0,\n")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "topology: {nodes_csv: nodes.csv, links_csv: links.csv}\n"
        "service: {csv: services.csv}\nuser: {csv: users.csv}\n"
    )
    world = build_world(load_spec(spec_file))
    assert world.node_names == ("A", "B", "C") and world.capacity[0].tolist() == [2000, 4 * 2**30]
    assert world.bandwidth_bps.tolist() == [1e8, 1e9, 1e9]
    assert world.latency is not None and world.latency[0, 2] == 7.0
    assert world.container_names == ("web", "db") and world.state_bytes.tolist() == [64 * 2**20, 2**30]
    assert world.user_service.tolist() == [0, 1] and world.user_rate[0] == 2.0
    (tmp_path / "users.csv").write_text("name,service,x,y\nu1,cache,0,0\n")
    with pytest.raises(ManifestError, match="unknown service"):
        build_world(load_spec(spec_file))


def test_random_waypoint_stays_in_the_area_and_moves() -> None:
    rng = np.random.default_rng(0)
    nodes = rng.uniform(0, 5, size=(20, 2))
    users = rng.uniform(0, 5, size=(300, 2))
    mob = Mobility(users, nodes, 5.0, UserSpec(speed_kmh=(30, 60), pause_steps=(0, 2)), 60.0, rng)
    start = mob.pos.copy()
    for _ in range(30):
        mob.step()
        assert (mob.pos >= 0).all() and (mob.pos <= 5.0).all()
    assert np.mean(np.linalg.norm(mob.pos - start, axis=1)) > 0.5
    exact = np.argmin(((mob.pos[:, None, :] - nodes[None]) ** 2).sum(axis=2), axis=1)
    assert np.mean(mob.nearest() == exact) > 0.95  # the raster is off only at region borders


def test_nearest_raster_on_a_grid() -> None:
    nodes = np.array([[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5]])
    raster = nearest_raster(nodes, 2.0, cells=4)
    assert raster[0, 0] == 0 and raster[0, 3] == 1 and raster[3, 0] == 2 and raster[3, 3] == 3


def test_metrics_percentiles_and_sla() -> None:
    m = Metrics()
    latency = np.linspace(1.0, 100.0, 1000)
    mean, violation = m.record_requests(latency, np.ones(1000), np.zeros(1000), sla_ms=50.0)
    assert mean == pytest.approx(50.5) and violation == pytest.approx(0.505, abs=0.002)
    assert m.percentile(95) == pytest.approx(95.05, rel=0.01)
    # downtime: half of these requests went unserved; unplaced: none served
    m2 = Metrics()
    _, violation = m2.record_requests(
        np.array([10.0, np.inf]), np.array([2.0, 2.0]), np.array([0.5, 0.0]), 50.0
    )
    assert violation == pytest.approx(0.75) and m2.served == 1.0
