"""kube-scheduler-style filtering and scoring, checked against hand-computed examples."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from podhop.objects.model import Resources
from podhop.objects.quantity import GI, MI
from podhop.policies.scoring import (
    SCORERS,
    NodeState,
    balanced_allocation,
    explain_unschedulable,
    fits,
    least_allocated,
    matches_selector,
    most_allocated,
    non_zero,
    pick_node,
    place_all,
    rank_nodes,
)

NOTHING = Resources()


def node(
    name: str = "node-1",
    cpu_m: int = 4000,
    memory_b: int = 10 * GI,
    used: Resources = NOTHING,
    pods: int = 0,
    **labels: str,
) -> NodeState:
    return NodeState(name, Resources(cpu_m, memory_b), used, pods=pods, labels=tuple(labels.items()))


# --- scores, worked by hand from kube-scheduler's formulas ------------------------------------------------

HALF_FULL = node(used=Resources(1000, 2 * GI))
POD = Resources(1000, 2 * GI)


def test_least_allocated_worked_example() -> None:
    # cpu: (4000 - 2000) * 100 // 4000 = 50; memory: (10Gi - 4Gi) * 100 // 10Gi = 60; (50 + 60) // 2
    assert least_allocated(HALF_FULL, POD) == 55


def test_least_allocated_truncates_like_go() -> None:
    # cpu: 2000 * 100 // 3000 = 66 (66.6); memory: 4Gi * 100 // 5Gi = 80; (66 + 80) // 2 = 73
    assert least_allocated(node(cpu_m=3000, memory_b=5 * GI), Resources(1000, GI)) == 73


def test_most_allocated_worked_example() -> None:
    # cpu: 2000 * 100 // 4000 = 50; memory: 4Gi * 100 // 10Gi = 40; (50 + 40) // 2
    assert most_allocated(HALF_FULL, POD) == 45


def test_balanced_allocation_worked_example() -> None:
    # fractions cpu 0.5, memory 0.4; std = |0.5 - 0.4| / 2 = 0.05; int((1 - 0.05) * 100)
    assert balanced_allocation(HALF_FULL, POD) == 95
    # fractions 0.25 and 0.75 -> std 0.25 -> 75
    assert balanced_allocation(node(cpu_m=4000, memory_b=4 * GI), Resources(1000, 3 * GI)) == 75


def test_best_effort_pods_are_scored_with_non_zero_defaults() -> None:
    empty = node(cpu_m=1000, memory_b=1000 * MI)
    # counts as 100m / 200Mi: cpu (900 * 100 // 1000) = 90, memory (800 * 100 // 1000) = 80
    assert least_allocated(empty, Resources()) == 85
    # cpu 10, memory 20
    assert most_allocated(empty, Resources()) == 15
    # kube-scheduler skips BalancedAllocation for best-effort pods
    assert balanced_allocation(empty, Resources()) == 0
    # only the unset resource is defaulted
    assert non_zero(Resources(cpu_m=300)) == Resources(300, 200 * MI)
    assert non_zero(Resources(memory_b=MI)) == Resources(100, MI)


def test_node_bookkeeping_keeps_real_and_non_zero_requests_apart() -> None:
    state = node(cpu_m=1000, memory_b=1000 * MI).with_pod(Resources())
    assert state.requested == Resources()
    assert state.scoring_requested == Resources(100, 200 * MI)
    assert state.pods == 1
    # the second best-effort pod sees the first one: cpu 800 -> 80, memory 600 -> 60
    assert least_allocated(state, Resources()) == 70
    # but the fit filter uses real requests: the full capacity is still free
    assert fits(state, Resources(1000, 1000 * MI))


def test_over_capacity_and_zero_capacity() -> None:
    assert least_allocated(node(cpu_m=100, memory_b=GI), Resources(200, GI)) == 0
    # most-allocated caps requested at capacity: cpu 100, memory 100
    assert most_allocated(node(cpu_m=100, memory_b=GI), Resources(200, GI)) == 100
    assert least_allocated(node(cpu_m=0, memory_b=0), POD) == 0
    assert most_allocated(node(cpu_m=0, memory_b=0), POD) == 0
    # balanced: fractions are capped at 1; a resource with no capacity is left out
    assert balanced_allocation(node(cpu_m=1000, memory_b=GI), Resources(4000, GI)) == 100
    assert balanced_allocation(node(cpu_m=1000, memory_b=0), Resources(500, GI)) == 100


def test_scorer_registry() -> None:
    registry = dict(SCORERS)
    assert registry == {
        "least-allocated": least_allocated,
        "most-allocated": most_allocated,
        "balanced": balanced_allocation,
    }


# --- filter ------------------------------------------------------------------------------------------


def test_fits_uses_real_requests_and_pod_count() -> None:
    n = node(cpu_m=1000, memory_b=GI, used=Resources(500, GI // 2))
    assert fits(n, Resources(500, GI // 2))
    assert not fits(n, Resources(501, 0))
    assert not fits(n, Resources(0, GI // 2 + 1))
    assert not fits(NodeState("n", Resources(1000, GI), Resources(), pods=110), Resources())
    assert fits(NodeState("n", Resources(1000, GI), Resources(), pods=109), Resources())


def test_pod_without_requests_fits_an_overcommitted_node() -> None:
    # as in kube-scheduler, only requested resources are checked
    assert fits(node(cpu_m=1000, memory_b=GI, used=Resources(2000, 2 * GI)), Resources())


def test_matches_selector() -> None:
    n = node("node-2", disk="ssd")
    assert matches_selector(n, {})
    assert matches_selector(n, {"disk": "ssd"})
    assert not matches_selector(n, {"disk": "hdd"})
    assert not matches_selector(n, {"zone": "a"})
    assert matches_selector(n, {"kubernetes.io/hostname": "node-2", "disk": "ssd"})
    assert not matches_selector(n, {"kubernetes.io/hostname": "node-1"})
    # the hostname label is the node name, whatever the labels say
    liar = NodeState("node-3", Resources(1, 1), Resources(), labels=(("kubernetes.io/hostname", "x"),))
    assert matches_selector(liar, {"kubernetes.io/hostname": "node-3"})
    assert not matches_selector(liar, {"kubernetes.io/hostname": "x"})


# --- picking ------------------------------------------------------------------------------------------


def test_pick_node_prefers_the_emptier_node() -> None:
    nodes = [node("node-1", used=Resources(2000, 4 * GI)), node("node-2")]
    chosen = pick_node(nodes, POD)
    assert chosen is not None and chosen.name == "node-2"


def test_most_allocated_packs() -> None:
    nodes = [node("node-1"), node("node-2", used=Resources(2000, 4 * GI))]
    chosen = pick_node(nodes, POD, scorer="most-allocated")
    assert chosen is not None and chosen.name == "node-2"


def test_balanced_prefers_proportional_usage() -> None:
    # node-1 would end at cpu 0.5 / memory 0.2 (score 85); node-2 at 0.5 / 0.5 (score 100)
    nodes = [node("node-1", used=Resources(1000, 0)), node("node-2", used=Resources(1000, 3 * GI))]
    ranked = rank_nodes(nodes, POD, scorer="balanced")
    assert [(n.name, score) for n, score in ranked] == [("node-2", 100), ("node-1", 85)]


def test_node_selector_is_honoured() -> None:
    nodes = [node("node-1"), node("node-2", used=Resources(3000, 8 * GI)), node("node-3", disk="ssd")]
    chosen = pick_node(nodes, POD, {"kubernetes.io/hostname": "node-2"})
    assert chosen is not None and chosen.name == "node-2"
    chosen = pick_node(nodes, POD, {"disk": "ssd"})
    assert chosen is not None and chosen.name == "node-3"
    assert pick_node(nodes, POD, {"disk": "nvme"}) is None
    assert pick_node(nodes, POD, {"kubernetes.io/hostname": "node-9"}) is None


def test_no_node_fits() -> None:
    assert pick_node([node(cpu_m=500)], POD) is None
    assert pick_node([], POD) is None


def test_unknown_scorer() -> None:
    with pytest.raises(ValueError, match="unknown scorer 'random'"):
        pick_node([node()], POD, scorer="random")
    with pytest.raises(ValueError, match="least-allocated, most-allocated, balanced"):
        place_all([node()], [], scorer="random")


def test_ties_go_to_fewer_pods_then_natural_name_order() -> None:
    big = Resources(10**6, 10**6 * GI)  # large enough that a few pods do not move the score
    nodes = [
        NodeState("node-10", big, Resources()),
        NodeState("node-2", big, Resources()),
        NodeState("node-1", big, Resources(), pods=1),
    ]
    ranked = rank_nodes(nodes, POD)
    assert len({score for _, score in ranked}) == 1
    assert [n.name for n, _ in ranked] == ["node-2", "node-10", "node-1"]


# --- batches ------------------------------------------------------------------------------------------


def test_ten_identical_pods_spread_four_three_three() -> None:
    nodes = [node(f"node-{i}", cpu_m=4000, memory_b=8 * GI) for i in (1, 2, 3)]
    for request in (Resources(100, 64 * MI), Resources()):
        for scorer in ("least-allocated", "balanced"):
            placed = place_all(nodes, [(request, {})] * 10, scorer=scorer)
            assert Counter(placed) == {"node-1": 4, "node-2": 3, "node-3": 3}, (request, scorer)
            assert placed[:4] == ["node-1", "node-2", "node-3", "node-1"]


def test_most_allocated_fills_one_node_first() -> None:
    nodes = [node(f"node-{i}", cpu_m=1000, memory_b=GI) for i in (1, 2)]
    placed = place_all(nodes, [(Resources(300, 100 * MI), {})] * 5, scorer="most-allocated")
    assert placed == ["node-1", "node-1", "node-1", "node-2", "node-2"]


def test_place_all_reports_pods_that_do_not_fit() -> None:
    nodes = [node("node-1", cpu_m=1000, memory_b=GI), node("node-2", cpu_m=1000, memory_b=GI)]
    requests: list[tuple[Resources, dict[str, str]]] = [(Resources(600, 0), {})] * 3 + [
        (Resources(100, 0), {"kubernetes.io/hostname": "node-2"})
    ]
    assert place_all(nodes, requests) == ["node-1", "node-2", None, "node-2"]
    assert nodes[0].requested == Resources()  # inputs are not modified


def test_place_all_never_exceeds_capacity() -> None:
    rng = random.Random(20240601)
    scorers = list(SCORERS)
    for _ in range(300):
        nodes = []
        for i in range(rng.randint(1, 5)):
            cpu, memory = rng.randint(0, 8000), rng.randint(0, 16 * GI)
            used = Resources(rng.randint(0, cpu), rng.randint(0, memory))
            labels = (("zone", rng.choice("ab")),)
            nodes.append(
                NodeState(f"node-{i + 1}", Resources(cpu, memory), used, rng.randint(0, 3), 8, labels)
            )
        requests: list[tuple[Resources, dict[str, str]]] = []
        for _ in range(rng.randint(0, 40)):
            request = Resources(
                rng.choice([0, rng.randint(1, 3000)]), rng.choice([0, rng.randint(1, 4 * GI)])
            )
            selector = rng.choice([{}, {}, {"zone": rng.choice("ab")}, {"kubernetes.io/hostname": "node-1"}])
            requests.append((request, selector))

        placed = place_all(nodes, requests, scorer=rng.choice(scorers))

        states = {n.name: n for n in nodes}
        for (request, selector), name in zip(requests, placed, strict=True):
            if name is None:
                assert not any(matches_selector(s, selector) and fits(s, request) for s in states.values())
                continue
            state = states[name]
            assert matches_selector(state, selector)
            states[name] = state.with_pod(request)
        for state in states.values():
            assert state.requested.cpu_m <= state.allocatable.cpu_m
            assert state.requested.memory_b <= state.allocatable.memory_b
            assert state.pods <= state.max_pods


def test_place_all_is_deterministic() -> None:
    nodes = [node(f"node-{i}", cpu_m=2000, memory_b=4 * GI) for i in range(1, 6)]
    requests: list[tuple[Resources, dict[str, str]]] = [
        (Resources(100 * (i % 4), 64 * MI * (i % 3)), {}) for i in range(30)
    ]
    assert place_all(nodes, requests) == place_all(list(nodes), list(requests))


# --- explanations -------------------------------------------------------------------------------------


def test_explain_unschedulable() -> None:
    nodes = [node("node-1", cpu_m=500), node("node-2", memory_b=GI), node("node-3", disk="ssd")]
    assert explain_unschedulable(nodes, POD, {}) == (
        "1/3 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
    )
    assert explain_unschedulable(nodes, POD, {"disk": "ssd"}) == (
        "1/3 nodes are available: 2 node(s) didn't match Pod's node selector."
    )
    full = [NodeState("node-1", Resources(1, 1), Resources(), pods=110)]
    assert explain_unschedulable(full, Resources(), {}) == "0/1 nodes are available: 1 Too many pods."
