"""Migration triggers: descheduler semantics on real usage, the seed's hottest rule, user mobility."""

from __future__ import annotations

import random

import numpy as np

from podhop.objects.model import Resources
from podhop.objects.quantity import GI, MI
from podhop.policies import triggers
from podhop.policies.costmodel import Coefficients, MigrationCostModel, StrategyCost
from podhop.policies.placement import State
from podhop.policies.snapshot import ContainerInfo, NodeInfo, Snapshot, User

NODE = Resources(1000, 10 * GI)


def pod(name: str, node: str, cpu_used: int, mem_used: int = GI // 2, cpu_req: int = 100) -> ContainerInfo:
    return ContainerInfo(name, node, Resources(cpu_req, 256 * MI), Resources(cpu_used, mem_used))


def cluster(*pods: ContainerInfo, nodes: int = 3, users: tuple[User, ...] = ()) -> State:
    infos = tuple(NodeInfo(f"node-{i + 1}", NODE, position=(float(i), 0.0)) for i in range(nodes))
    return State(Snapshot(infos, pods, users, hop_ms=2.0, ms_per_km=1.0).arrays())


def where(st: State) -> dict[str, str]:
    return {st.a.container_names[c]: st.a.node_names[j] for c, j in enumerate(st.assign)}


def test_low_utilization_moves_from_overutilized_to_underutilized_on_usage() -> None:
    # node-1 at 80 % cpu (usage; requests are tiny), node-2 at 30 %, node-3 idle
    st = cluster(pod("a", "node-1", 500), pod("b", "node-1", 300), pod("c", "node-2", 300))
    reasons = triggers.low_node_utilization(st, (20, 20), (50, 50))
    # the biggest cpu user leaves first, to the least used underutilized node; node-1 drops to 30 %
    assert list(reasons) == [0]
    assert where(st) == {"a": "node-3", "b": "node-1", "c": "node-2"}
    assert "node-1 over target" in reasons[0]


def test_low_utilization_needs_both_kinds_of_node() -> None:
    # an overutilized node but none below every threshold (memory is 30 % everywhere)
    busy = [pod("a", "node-1", 800, 3 * GI), pod("b", "node-2", 300, 3 * GI), pod("c", "node-3", 300, 3 * GI)]
    assert triggers.low_node_utilization(cluster(*busy), (20, 20), (50, 50)) == {}
    # and nothing to do when no node is over its target
    calm = [pod("a", "node-1", 400), pod("b", "node-2", 100)]
    assert triggers.low_node_utilization(cluster(*calm), (20, 20), (50, 50)) == {}
    # numberOfNodes: act only with more underutilized nodes than this
    hot = [pod("a", "node-1", 400), pod("b", "node-1", 400), pod("c", "node-2", 100)]
    assert triggers.low_node_utilization(cluster(*hot), (20, 20), (50, 50), number_of_nodes=2) == {}
    assert triggers.low_node_utilization(cluster(*hot), (20, 20), (50, 50), number_of_nodes=1)


def test_low_utilization_stops_when_targets_would_overflow() -> None:
    # one 700m pod: moving it would put node-2 (target 50 %) at 70 %: stay
    st = cluster(pod("a", "node-1", 700), nodes=2)
    assert triggers.low_node_utilization(st, (20, 20), (50, 50)) == {}


def test_high_utilization_empties_underutilized_nodes_onto_the_fullest() -> None:
    st = cluster(pod("a", "node-1", 100), pod("b", "node-2", 400), pod("c", "node-3", 600))
    reasons = triggers.high_node_utilization(st, (20, 20))
    assert list(reasons) == [0]
    assert where(st)["a"] == "node-3"  # MostAllocated: the fullest node with room


def test_hottest_moves_the_busiest_pod_off_the_busiest_node() -> None:
    st = cluster(pod("a", "node-1", 500), pod("b", "node-1", 300), pod("c", "node-2", 400))
    reasons = triggers.hottest(st)
    assert where(st) == {"a": "node-3", "b": "node-1", "c": "node-2"}
    assert "hottest" in reasons[0]
    # below the threshold, or when no move lowers the peak, nothing happens
    assert triggers.hottest(cluster(pod("a", "node-1", 500)), threshold=60) == {}
    assert triggers.hottest(cluster(pod("a", "node-1", 500), nodes=1)) == {}


def test_mobility_follows_users_when_worth_the_downtime() -> None:
    users = (User("u", "app", "node-3", previous_node="node-1", access_ms=2.0),)
    st = cluster(pod("app", "node-1", 100), users=users)
    # free, instant migrations: follow the user (2 km away: 2 ms a hop + 1 ms/km = 4 ms)
    instant = MigrationCostModel({"cold": StrategyCost(Coefficients(1, 0, 0), Coefficients(1, 0, 0))})
    reasons = triggers.mobility(st, min_gain_ms=1.0, cost_model=instant)
    assert where(st)["app"] == "node-3" and "4.0 ms closer" in reasons[0]
    # a 10 s downtime is not worth 4 ms over a minute
    slow = MigrationCostModel({"cold": StrategyCost(Coefficients(10_000, 0, 0), Coefficients(1, 0, 0))})
    st = cluster(pod("app", "node-1", 100), users=users)
    assert triggers.mobility(st, cost_model=slow) == {}
    # users who did not move trigger nothing
    still = (User("u", "app", "node-3", previous_node="node-3"),)
    assert triggers.mobility(cluster(pod("app", "node-1", 100), users=still), cost_model=instant) == {}


def test_triggers_never_overflow_a_node() -> None:
    rng = random.Random(5)
    for seed in range(25):
        n = rng.randint(2, 6)
        pods = [
            ContainerInfo(
                f"p{i}",
                f"node-{rng.randint(1, n)}",
                Resources(rng.choice([50, 100, 200]), rng.choice([128, 512]) * MI),
                Resources(rng.randint(0, 600), rng.randint(0, 2 * GI)),
                state_bytes=50 * MI,
            )
            for i in range(rng.randint(1, 12))
        ]
        users = tuple(
            User(
                f"u{k}",
                pods[rng.randrange(len(pods))].name,
                f"node-{rng.randint(1, n)}",
                previous_node=f"node-{rng.randint(1, n)}",
            )
            for k in range(10)
        )
        for trigger in (
            triggers.low_node_utilization,
            triggers.high_node_utilization,
            triggers.hottest,
            triggers.mobility,
        ):
            st = cluster(*pods, nodes=n, users=users)
            before_over = st.requested > st.a.capacity
            trigger(st)
            assert not np.any((st.requested > st.a.capacity) & ~before_over), (seed, trigger.__name__)
            assert np.all(st.pods <= st.a.max_pods)
            assert np.array_equal(st.requested, st.a.requested(st.assign))
