"""Plans, snapshots and the policy registry: what the live rebalancer builds and executes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from podhop.errors import PodhopError
from podhop.objects.model import Resources
from podhop.objects.quantity import GI, MI
from podhop.policies import registry
from podhop.policies.costmodel import MigrationCostModel
from podhop.policies.objective import evaluate
from podhop.policies.plan import Decision, Migration, make_plan, sequence_moves
from podhop.policies.registry import POLICIES, Context, UnknownPolicyError, get
from podhop.policies.snapshot import ContainerInfo, Link, NodeInfo, Snapshot, SnapshotError, User

NODE = Resources(1000, 4 * GI)


def snapshot(*pods: ContainerInfo, users: tuple[User, ...] = (), nodes: int = 3) -> Snapshot:
    infos = tuple(NodeInfo(f"node-{i + 1}", NODE, bandwidth_bps=1e9) for i in range(nodes))
    links = tuple(Link(f"node-{i + 1}", f"node-{i + 2}", 5.0) for i in range(nodes - 1))
    return Snapshot(infos, pods, users, links)


def test_the_rebalancer_path_snapshot_to_plan() -> None:
    # the seed's situation: one node hot with two busy pods, two idle nodes
    snap = snapshot(
        ContainerInfo(
            "nginx-1", "node-1", Resources(100, 64 * MI), Resources(600, 50 * MI), state_bytes=20 * MI
        ),
        ContainerInfo("nginx-2", "node-1", Resources(100, 64 * MI), Resources(300, 50 * MI)),
        ContainerInfo("nginx-3", None, Resources(100, 64 * MI)),
    )
    plan = get("hottest").plan(snap, Context(strategy="clone"))
    assert [(p.container, p.node) for p in plan.placements] == [("nginx-3", "node-2")]
    (move,) = plan.migrations
    # both other nodes are idle: the tie goes to the first in name order
    assert (move.pod, move.source, move.target, move.strategy) == ("nginx-1", "node-1", "node-2", "clone")
    expected = MigrationCostModel().predict(20 * MI, 1e9, "clone")
    assert (move.downtime_ms, move.transfer_ms) == pytest.approx(expected, abs=0.1)
    assert move.reason.startswith("hottest")
    assert plan.objective is not None and plan.objective.migrations == 1
    assert plan.downtime_ms == move.downtime_ms
    doc = json.loads(json.dumps(plan.to_dict()))
    assert doc["migrations"][0]["target"] == "node-2" and doc["policy"] == "hottest"


def test_migrations_are_ordered_so_each_fits_and_deadlocks_are_dropped() -> None:
    big = Resources(800, GI)
    snap = snapshot(
        ContainerInfo("a", "node-1", big),
        ContainerInfo("b", "node-2", big),
        ContainerInfo("c", "node-3", Resources(100, GI)),
        nodes=3,
    )
    arrays = snap.arrays()
    # a -> node-2 only fits once b has left for node-3 (which has room for it): b must go first
    reached, order, dropped = sequence_moves(arrays, np.array([1, 2, 2]))
    assert order == [1, 0] and dropped == []
    assert reached.tolist() == [1, 2, 2]
    # a and b swapping full nodes cannot be ordered: both are dropped, nothing overflows
    reached, order, dropped = sequence_moves(arrays, np.array([1, 0, 2]))
    assert order == [] and sorted(dropped) == [0, 1]
    plan = make_plan("test", arrays, Decision(np.array([1, 0, 2])))
    assert plan.migrations == () and plan.dropped == ("a", "b")


def test_plan_objective_matches_evaluate() -> None:
    snap = snapshot(
        ContainerInfo("a", "node-1", Resources(100, MI), Resources(500, MI), state_bytes=10 * MI),
        users=(User("u", "a", "node-3", previous_node="node-1", access_ms=1.0),),
    )
    arrays = snap.arrays()
    decision = Decision(np.array([2]), {0: "test"})
    plan = make_plan("x", arrays, decision)
    assert plan.objective == evaluate(arrays, np.array([2]))
    down, total = MigrationCostModel().predict(10 * MI, 1e9, "cold")  # the default strategy
    assert plan.migrations == (
        Migration("a", "node-1", "node-3", "cold", round(down, 1), round(total, 1), 10 * MI, "test"),
    )
    assert plan.objective.latency_ms == pytest.approx(1.0)  # served on the user's own node now


def test_snapshot_latency_from_links_and_positions() -> None:
    arrays = snapshot(ContainerInfo("a", "node-1", NODE), nodes=3).arrays()
    assert arrays.latency is not None and arrays.latency[0, 2] == 10.0  # two 5 ms links
    geo = Snapshot(
        tuple(NodeInfo(f"n{i}", NODE, position=(3.0 * i, 4.0 * i)) for i in range(2)),
        hop_ms=1.0,
        ms_per_km=2.0,
    ).arrays()
    assert geo.latency_pairs(np.array([0, 0]), np.array([1, 0])).tolist() == [11.0, 0.0]


def test_snapshot_validation() -> None:
    with pytest.raises(SnapshotError, match="unknown node"):
        snapshot(ContainerInfo("a", "node-9", NODE)).arrays()
    with pytest.raises(SnapshotError, match="unique"):
        snapshot(ContainerInfo("a", "node-1", NODE), ContainerInfo("a", "node-2", NODE)).arrays()
    with pytest.raises(SnapshotError, match="at least one node"):
        Snapshot(()).arrays()
    with pytest.raises(SnapshotError, match="unknown container"):
        snapshot(users=(User("u", "ghost", "node-1"),)).arrays()


def test_node_usage_beyond_containers_counts_as_base_load() -> None:
    infos = (NodeInfo("n", Resources(1000, GI), usage=Resources(700, GI // 2)),)
    arrays = Snapshot(infos, (ContainerInfo("a", "n", Resources(100, MI), Resources(300, MI)),)).arrays()
    assert arrays.node_usage()[0].tolist() == [700.0, GI // 2]


def test_registry_names_and_errors() -> None:
    for name in (
        "least-allocated",
        "most-allocated",
        "balanced",
        "latency-aware",
        "low-utilization",
        "hottest",
        "ilp",
        "mobility",
        "high-utilization",
        "first-fit",
        "best-fit",
        "worst-fit",
    ):
        assert name in POLICIES and registry.names().count(name) == 1
    with pytest.raises(UnknownPolicyError) as err:
        get("fastest")
    assert isinstance(err.value, PodhopError) and "least-allocated" in (err.value.hint or "")
    with pytest.raises(UnknownPolicyError, match="no option"):
        get("hottest", thresholds=(1, 2))
    assert get("low-utilization", thresholds=(10, 10)).options["thresholds"] == (10, 10)
    assert get("ilp", time_limit_s=1.0).options == {"time_limit_s": 1.0}


def test_every_policy_plans_a_small_cluster_within_capacity() -> None:
    pods = tuple(
        ContainerInfo(
            f"p{i}",
            None if i % 3 == 0 else f"node-{i % 3 + 1}",
            Resources(150, 300 * MI),
            Resources(100 + 60 * i, 200 * MI),
            state_bytes=30 * MI,
        )
        for i in range(9)
    )
    users = tuple(User(f"u{i}", f"p{i}", f"node-{i % 3 + 1}", previous_node="node-1") for i in range(9))
    snap = snapshot(*pods, users=users)
    arrays = snap.arrays()
    for name, policy in POLICIES.items():
        plan = policy.plan(snap)
        after = dict(
            zip(
                arrays.container_names,
                [None if j < 0 else arrays.node_names[j] for j in arrays.node],
                strict=True,
            )
        )
        after.update({p.container: p.node for p in plan.placements})
        after.update({m.container: m.target for m in plan.migrations})
        load: dict[str, int] = {}
        for pod in pods:
            node = after[pod.name]
            if node is not None:
                load[node] = load.get(node, 0) + pod.requests.cpu_m
        assert all(v <= NODE.cpu_m for v in load.values()), name
        assert not plan.unplaced, name
