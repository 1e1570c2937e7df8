"""Vectorised scorers: kube-scheduler's worked examples, the same numbers as ``scoring``, and the new ones."""

from __future__ import annotations

import random

import numpy as np
import pytest

from podhop.objects.model import Resources
from podhop.objects.quantity import GI, MI
from podhop.policies import scoring
from podhop.policies.scorers import SCORERS, State
from podhop.policies.snapshot import ContainerInfo, NodeInfo, Snapshot


def one(node: Resources, used: Resources, pod: Resources, scorer: str) -> float:
    """Score of ``pod`` on a node of capacity ``node`` already holding a pod requesting ``used``."""
    conts = (ContainerInfo("new", None, pod), ContainerInfo("old", "n", used))
    st = State(Snapshot((NodeInfo("n", node),), conts if used != Resources() else conts[:1]).arrays())
    sc = SCORERS[scorer]
    return float(
        sc.fn(st, st.a.requests[[0]][:, None, :], st.nz[[0]][:, None, :], np.array([0]), np.array([0]))[0, 0]
    )


HALF_FULL = (Resources(4000, 10 * GI), Resources(1000, 2 * GI))
POD = Resources(1000, 2 * GI)


def test_kube_scheduler_worked_examples() -> None:
    # as in test_scoring: cpu (4000-2000)*100//4000 = 50, memory 60 -> 55; MostAllocated 45; Balanced 95
    assert one(*HALF_FULL, POD, "least-allocated") == 55
    assert one(*HALF_FULL, POD, "most-allocated") == 45
    assert one(*HALF_FULL, POD, "balanced") == 95
    # integer truncation like Go: 66 and 80 -> 73
    assert one(Resources(3000, 5 * GI), Resources(), Resources(1000, GI), "least-allocated") == 73
    # best-effort pods count as 100m / 200Mi for Least/MostAllocated, and score 0 for Balanced
    empty = Resources(1000, 1000 * MI)
    assert one(empty, Resources(), Resources(), "least-allocated") == 85
    assert one(empty, Resources(), Resources(), "most-allocated") == 15
    assert one(empty, Resources(), Resources(), "balanced") == 0


def test_fit_scorers_worked_examples() -> None:
    # after placing: cpu (4000-2000)/4000 = 0.5 left, memory (10-4)/10 = 0.6 left -> 1.1
    assert one(*HALF_FULL, POD, "worst-fit") == pytest.approx(1.1)
    assert one(*HALF_FULL, POD, "best-fit") == pytest.approx(-1.1)
    assert one(*HALF_FULL, POD, "first-fit") == 0.0  # minus the node's rank in natural name order


@pytest.mark.parametrize("scorer", ["least-allocated", "most-allocated", "balanced"])
def test_vectorised_scores_equal_scoring_module(scorer: str) -> None:
    rng = random.Random(scorer)
    for _ in range(300):
        node = Resources(rng.choice([0, 1000, 3000, 4000]), rng.choice([0, GI, 5 * GI]))
        used = Resources(rng.choice([0, 100, 2500]), rng.choice([0, 100 * MI, 3 * GI]))
        pod = Resources(rng.choice([0, 100, 333, 1000]), rng.choice([0, 64 * MI, GI]))
        state = scoring.NodeState("n", node, Resources())
        state = state.with_pod(used) if used != Resources() else state
        assert one(node, used, pod, scorer) == scoring.SCORERS[scorer](state, pod), (node, used, pod)


def test_ties_go_to_fewer_pods_then_natural_name_order() -> None:
    nodes = tuple(NodeInfo(n, Resources(4000, 8 * GI)) for n in ("node-10", "node-2", "node-1"))
    st = State(Snapshot(nodes, (ContainerInfo("a", None, Resources(100, MI)),)).arrays())
    sc = SCORERS["least-allocated"]
    scores = sc.composite(st, np.array([0]), np.arange(3))[0]
    assert [nodes[i].name for i in np.argsort(-scores)] == ["node-1", "node-2", "node-10"]
    assert np.floor(scores).tolist() == [98, 98, 98]  # cpu 97, memory 99
