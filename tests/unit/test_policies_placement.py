"""Placement: exact mode is kube-scheduler's, fast mode is feasible, and nothing ever overflows a node."""

from __future__ import annotations

import random

import numpy as np
import pytest

from podhop.objects.model import Resources
from podhop.objects.quantity import GI, MI
from podhop.policies import scoring
from podhop.policies.placement import SCORERS, PlacementError, State, place
from podhop.policies.scoring import NodeState, place_all
from podhop.policies.snapshot import I64, Arrays, ContainerInfo, NodeInfo, Snapshot, User

CPU_CHOICES = [0, 100, 250, 500, 1500]
MEM_CHOICES = [0, 64 * MI, 512 * MI, GI]


def random_snapshot(seed: int, nodes: int = 6, containers: int = 20) -> Snapshot:
    rng = random.Random(seed)
    node_infos = tuple(
        NodeInfo(
            f"node-{i + 1}",
            Resources(rng.choice([1000, 2000, 4000]), rng.choice([GI, 2 * GI, 8 * GI])),
            max_pods=rng.choice([3, 110]),
        )
        for i in range(nodes)
    )
    conts = tuple(
        ContainerInfo(f"c{i}", None, Resources(rng.choice(CPU_CHOICES), rng.choice(MEM_CHOICES)))
        for i in range(containers)
    )
    return Snapshot(node_infos, conts)


def big_arrays(seed: int, nodes: int, containers: int) -> Arrays:
    rng = np.random.default_rng(seed)
    cap = np.stack([rng.choice([2000, 4000, 8000], nodes), rng.choice([4, 8, 16], nodes) * GI], 1)
    req = np.stack([rng.integers(0, 1200, containers), rng.integers(0, 2048, containers) * MI], 1)
    empty = np.zeros(0, dtype=np.int64)
    return Arrays(
        node_names=tuple(f"node-{i + 1}" for i in range(nodes)),
        capacity=cap.astype(np.int64),
        bandwidth_bps=np.full(nodes, 1e9),
        idle_w=np.full(nodes, 60.0),
        max_w=np.full(nodes, 150.0),
        max_pods=rng.choice([8, 110], nodes).astype(np.int64),
        base_usage=np.zeros((nodes, 2)),
        container_names=tuple(f"c{i}" for i in range(containers)),
        requests=req.astype(np.int64),
        usage=req * 0.5,
        state_bytes=req[:, 1] * 0.2,
        node=np.full(containers, -1, dtype=np.int64),
        priority=np.zeros(containers, dtype=np.int64),
        movable=np.ones(containers, dtype=np.bool_),
        user_container=empty,
        user_node=empty,
        user_prev_node=empty,
        user_rate=np.zeros(0),
        user_access_ms=np.zeros(0),
    )


def assert_feasible(arrays: Arrays, assign: I64) -> None:
    assert np.all(arrays.requested(assign) <= arrays.capacity)
    assert np.all(arrays.pods(assign) <= arrays.max_pods)
    # whatever is left out fits no node, even now (capacity only shrank while placing)
    st = State(arrays, assign)
    left = np.flatnonzero(assign < 0)
    if len(left):
        assert not np.any(st.fits(left, np.arange(arrays.n_nodes)))


@pytest.mark.parametrize("scorer", ["least-allocated", "most-allocated", "balanced"])
def test_exact_mode_is_kube_scheduler_pod_by_pod(scorer: str) -> None:
    for seed in range(60):
        snap = random_snapshot(seed, nodes=1 + seed % 7)
        arrays = snap.arrays()
        assign, _ = place(arrays, scorer=scorer, mode="exact")
        got = [arrays.node_names[j] if j >= 0 else None for j in assign]
        states = [NodeState(n.name, n.capacity, Resources(), max_pods=n.max_pods) for n in snap.nodes]
        assert got == place_all(states, [(c.requests, {}) for c in snap.containers], scorer), seed


@pytest.mark.parametrize("scorer", ["least-allocated", "most-allocated", "balanced"])
def test_reported_scores_are_kube_scheduler_scores(scorer: str) -> None:
    snap = random_snapshot(3, nodes=5, containers=12)
    arrays = snap.arrays()
    assign, scores = place(arrays, scorer=scorer, mode="exact")
    states = [NodeState(n.name, n.capacity, Resources(), max_pods=n.max_pods) for n in snap.nodes]
    for c, info in enumerate(snap.containers):
        if assign[c] < 0:
            continue
        j = int(assign[c])
        assert scores[c] == scoring.SCORERS[scorer](states[j], info.requests)
        states[j] = states[j].with_pod(info.requests)


@pytest.mark.parametrize(
    ("scorer", "mode"),
    # latency-aware has no fast mode: it is always exact
    [(s, m) for s in sorted(SCORERS) for m in ("exact", "fast") if (s, m) != ("latency-aware", "fast")],
)
def test_no_placement_ever_exceeds_capacity(scorer: str, mode: str) -> None:
    for seed in range(3):
        arrays = big_arrays(seed, nodes=140 + 30 * seed, containers=700 + 300 * seed)
        assign, _ = place(arrays, scorer=scorer, mode=mode)  # type: ignore[arg-type]
        assert_feasible(arrays, assign)
        assert np.sum(assign >= 0) > 0.5 * arrays.n_containers


def test_fast_mode_places_as_much_as_exact_mode_when_there_is_room() -> None:
    arrays = big_arrays(7, nodes=200, containers=800)
    for scorer in ("least-allocated", "most-allocated", "first-fit"):
        fast, _ = place(arrays, scorer=scorer, mode="fast")
        exact, _ = place(arrays, scorer=scorer, mode="exact")
        assert np.sum(fast >= 0) == np.sum(exact >= 0) == arrays.n_containers


def test_fast_least_allocated_spreads_and_most_allocated_packs() -> None:
    arrays = big_arrays(11, nodes=400, containers=2000)
    spread, _ = place(arrays, scorer="least-allocated", mode="fast")
    packed, _ = place(arrays, scorer="most-allocated", mode="fast")
    assert np.sum(arrays.pods(spread) > 0) > np.sum(arrays.pods(packed) > 0)


def test_node_selector_is_respected() -> None:
    nodes = tuple(
        NodeInfo(f"node-{i}", Resources(4000, 8 * GI), labels=(("zone", "a" if i < 2 else "b"),))
        for i in range(4)
    )
    conts = (
        ContainerInfo(
            "pinned", None, Resources(100, MI), node_selector=(("kubernetes.io/hostname", "node-3"),)
        ),
        ContainerInfo("zoned", None, Resources(100, MI), node_selector=(("zone", "a"),)),
        ContainerInfo("nowhere", None, Resources(100, MI), node_selector=(("zone", "c"),)),
    )
    arrays = Snapshot(nodes, conts).arrays()
    for mode in ("exact", "fast"):
        assign, _ = place(arrays, mode=mode)
        assert arrays.node_names[assign[0]] == "node-3"
        assert arrays.node_names[assign[1]] in ("node-0", "node-1")
        assert assign[2] == -1


def test_latency_aware_places_next_to_users_while_there_is_room() -> None:
    nodes = tuple(NodeInfo(f"edge-{i}", Resources(1000, 4 * GI), position=(float(i), 0.0)) for i in range(5))
    conts = tuple(ContainerInfo(f"app-{k}", None, Resources(600, GI)) for k in range(2))
    users = (User("u1", "app-0", "edge-4", access_ms=3.0), User("u2", "app-1", "edge-4", access_ms=3.0))
    arrays = Snapshot(nodes, conts, users, hop_ms=1.0, ms_per_km=2.0).arrays()
    assign, scores = place(arrays, scorer="latency-aware")
    # the first goes to the users' node; the second does not fit there and takes the next closest
    assert [arrays.node_names[j] for j in assign] == ["edge-4", "edge-3"]
    assert scores[0] > scores[1]


def test_unknown_scorer_and_mode() -> None:
    arrays = random_snapshot(1).arrays()
    with pytest.raises(PlacementError, match="least-allocated"):
        place(arrays, scorer="nope")
    with pytest.raises(PlacementError):
        place(arrays, mode="quick")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(30))
def test_could_fit_is_exactly_fits_somewhere(seed: int) -> None:
    """The O(n log n) pre-check agrees with NodeResourcesFit against every node (zero requests, full
    pod slots and over-committed nodes included)."""
    from podhop.policies.placement import could_fit

    rng = np.random.default_rng(seed)
    arrays = big_arrays(seed, nodes=int(rng.integers(1, 12)), containers=60)
    half = rng.random(60) < 0.5
    assign = np.where(half, rng.integers(0, arrays.n_nodes, 60), -1).astype(np.int64)
    st = State(arrays, assign)
    cs = np.flatnonzero(assign < 0).astype(np.int64)
    expected = st.fits(cs, slice(None)).any(axis=1)
    got = could_fit(arrays, arrays.requested(assign), arrays.pods(assign), cs)
    assert got.tolist() == expected.tolist()


def test_a_full_cluster_keeps_pending_containers_pending_at_once() -> None:
    arrays = big_arrays(3, nodes=4, containers=400)
    first, _ = place(arrays)
    again, scores = place(arrays.derive(node=first))
    assert (again == first).all() and np.isnan(scores).all()


def test_latency_aware_counts_the_load_it_adds_to_a_node() -> None:
    """Users next to node-1, which runs at 90 % CPU: one hop farther (2 ms) to an idle node beats
    queueing at node-1 (5/(1-0.95) = 100 ms against 5 ms); on an idle node-1 it stays next to them."""
    infos = tuple(
        NodeInfo(f"node-{i + 1}", Resources(1000, 10 * GI), position=(float(i), 0.0)) for i in range(3)
    )
    busy = ContainerInfo("busy", "node-1", Resources(100, 64 * MI), Resources(900, 64 * MI))
    new = ContainerInfo("new", None, Resources(100, 64 * MI), Resources(100, 64 * MI))
    users = (User("u", "new", "node-1", access_ms=1.0),)
    loaded = Snapshot(infos, (busy, new), users, hop_ms=2.0, ms_per_km=0.0).arrays()
    assign, _ = place(loaded, scorer="latency-aware")
    assert loaded.node_names[assign[1]] == "node-2"
    idle = Snapshot(infos, (new,), users, hop_ms=2.0, ms_per_km=0.0).arrays()
    assign, _ = place(idle, scorer="latency-aware")
    assert idle.node_names[assign[0]] == "node-1"
