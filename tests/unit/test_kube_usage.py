"""Rates from the kubelets' resource metrics use the samples' own timestamps, not the scrapes'."""

from __future__ import annotations

from podhop.backends.base import Node
from podhop.backends.kubernetes.usage import SHARED_HOST, KubeletUsage, parse_resource_metrics


def metrics(node_cpu: float, node_t_ms: int, pod_cpu: float, pod_t_ms: int) -> str:
    return f"""# HELP node_cpu_usage_seconds_total x
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total {node_cpu} {node_t_ms}
node_memory_working_set_bytes 1.5e+09 {node_t_ms}
container_cpu_usage_seconds_total{{container="a",namespace="ns",pod="p"}} 1 {pod_t_ms}
pod_cpu_usage_seconds_total{{namespace="ns",pod="p"}} {pod_cpu} {pod_t_ms}
pod_memory_working_set_bytes{{namespace="ns",pod="p"}} 2048 {pod_t_ms}
scrape_error 0
"""


def test_parse_keeps_values_and_timestamps() -> None:
    s = parse_resource_metrics(metrics(100.0, 1_000_000, 5.0, 1_000_500), scraped_at=42.0)
    assert s["node_cpu_usage_seconds_total"][("", "")] == (100.0, 1000.0)
    assert s["pod_cpu_usage_seconds_total"][("ns", "p")] == (5.0, 1000.5)
    assert s["scrape_error"][("", "")] == (0.0, 42.0)  # no timestamp: when it was scraped


def node() -> dict[str, Node]:
    return {"n1": Node("n1", "10.0.0.1", 2000, 2 << 30)}


def test_rates_follow_refreshes_not_scrapes() -> None:
    pages = iter(
        [
            metrics(100.0, 1_000_000, 5.0, 1_000_000),
            metrics(100.0, 1_000_000, 5.0, 1_000_000),  # not refreshed within the window
            metrics(110.0, 1_010_000, 7.5, 1_010_000),  # refreshed 10 s later: 1 core, 250m
            metrics(110.0, 1_010_000, 7.5, 1_010_000),
            metrics(110.0, 1_010_000, 7.5, 1_010_000),
            metrics(110.0, 1_010_000, 7.5, 1_010_000),
        ]
    )
    usage = KubeletUsage(lambda _node: next(pages))
    first = usage.sample(node(), {}, 0.0)
    assert first.nodes[0].cpu_m == 0 and first.pods[0].cpu_m == 0  # nothing known yet, not a guess
    second = usage.sample(node(), {("ns", "p"): "n1"}, 0.0)
    assert second.nodes[0].cpu_m == 1000  # (110-100) s over 10 s, however close the scrapes were
    assert second.pods[0].cpu_m == 250 and second.pods[0].node == "n1"
    assert second.pods[0].memory_b == 2048 and second.nodes[0].memory_b == 1_500_000_000
    third = usage.sample(node(), {}, 0.0)
    assert third.nodes[0].cpu_m == 1000  # no refresh since: the latest interval's rate stays


def test_a_counter_that_restarts_gives_no_negative_rate() -> None:
    pages = iter(
        [metrics(100.0, 1_000_000, 5.0, 1_000_000)] * 2 + [metrics(100.0, 1_001_000, 0.5, 1_001_000)] * 2
    )
    usage = KubeletUsage(lambda _node: next(pages))
    usage.sample(node(), {}, 0.0)
    after = usage.sample(node(), {}, 0.0)
    assert after.pods[0].cpu_m == 0


def test_on_the_kind_a_node_is_the_sum_of_its_pods() -> None:
    pages = iter(
        [metrics(100.0, 1_000_000, 5.0, 1_000_000)] * 2 + [metrics(120.0, 1_010_000, 7.5, 1_010_000)] * 2
    )
    usage = KubeletUsage(lambda _node: next(pages))
    shared = {"n1": Node("n1", "10.0.0.1", 2000, 2 << 30, labels={SHARED_HOST: "true"})}
    usage.sample(shared, {}, 0.0)
    s = usage.sample(shared, {("ns", "p"): "n1"}, 0.0)
    assert s.nodes[0].cpu_m == 250 and s.nodes[0].memory_b == 2048  # not the host's 2000m


def test_the_kind_labels_its_nodes_as_sharing_the_host() -> None:
    from podhop.kubekind import config

    assert config.SHARED_HOST_LABEL == SHARED_HOST
