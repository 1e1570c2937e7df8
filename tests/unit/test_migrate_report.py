"""A migration report lists each container's figures, and the pod's totals are their sums."""

from __future__ import annotations

import pytest

from podhop.migrate.report import MigrationReport, MoveFigures


def report(lazy: bool) -> MigrationReport:
    moves = [
        MoveFigures("nginx", transferred_bytes=100, page_bytes=1000, image_bytes=1500, criu_stats={"a": 1}),
        MoveFigures("cache", transferred_bytes=20, page_bytes=300, image_bytes=400),
    ]
    return MigrationReport(
        pod="duo",
        namespace="default",
        strategy="postcopy" if lazy else "cold",
        source_node="node-1",
        target_node="node-2",
        old_ip="10.0.0.1",
        new_ip="10.0.0.2",
        started_at="2026-01-01T00:00:00+00:00",
        phases={},
        total_ms=1.0,
        probe=None,
        moves=moves,
        lazy=lazy,
    )


@pytest.mark.parametrize("lazy", [False, True])
def test_each_container_is_listed_and_the_totals_are_their_sums(lazy: bool) -> None:
    out = report(lazy).to_dict()
    containers = out["containers"]
    assert [c["container"] for c in containers] == ["nginx", "cache"]
    assert containers[0]["bytes_transferred"] == 1100 and containers[0]["memory_pages_bytes"] == 1000
    assert containers[0]["criu_stats"] == {"a": 1}
    assert containers[1]["image_bytes"] == (700 if lazy else 400)  # post-copy's pages count as image
    for key in ("bytes_transferred", "image_bytes", "memory_pages_bytes"):
        assert sum(c[key] for c in containers) == out[key], key
    assert out["criu_stats"] == [{"a": 1}, {}]  # the older per-container list, kept as it was
