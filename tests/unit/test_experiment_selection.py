"""Hotspot and target selection on recorded `top` data (two 1-s samples of a real seed run's baseline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from podhop.experiment.results import METRICS_FIELDS, ResultsDir
from podhop.experiment.selection import (
    MetricRow,
    SelectionError,
    in_window,
    mean_usage,
    overlapping,
    pick_node,
    pick_pod,
)

# Recorded by `podhop demo` (metrics.csv, baseline phase, columns t..memory_capacity_b).
RECORDED = """\
1795620616.158,1.023,node,,node-1,node-1,142,11673600,1000,2147483648
1795620616.158,1.023,node,,node-2,node-2,127,9003008,1000,2147483648
1795620616.158,1.023,node,,node-3,node-3,124,9056256,1000,2147483648
1795620616.158,1.023,pod,default,nginx-zsprpwcg26-592th,node-1,33,2887680,0,0
1795620616.158,1.023,pod,default,nginx-zsprpwcg26-8vgw6,node-1,37,2920448,0,0
1795620616.158,1.023,pod,default,nginx-zsprpwcg26-9j7p8,node-1,31,2899968,0,0
1795620616.158,1.023,pod,default,nginx-zsprpwcg26-9p6zf,node-3,46,2945024,0,0
1795620616.158,1.023,pod,default,nginx-zsprpwcg26-dndjf,node-1,41,2924544,0,0
1795620616.158,1.023,pod,default,nginx-zsprpwcg26-gdwqf,node-2,49,3194880,0,0
1795620616.158,1.023,pod,default,nginx-zsprpwcg26-s6jmn,node-3,41,2908160,0,0
1795620616.158,1.023,pod,default,nginx-zsprpwcg26-skdls,node-2,41,2912256,0,0
1795620616.158,1.023,pod,default,nginx-zsprpwcg26-wr74l,node-2,39,3125248,0,0
1795620616.158,1.023,pod,default,nginx-zsprpwcg26-zqw9b,node-3,38,2650112,0,0
1795620617.205,1.039,node,,node-1,node-1,160,11694080,1000,2147483648
1795620617.205,1.039,node,,node-2,node-2,129,9019392,1000,2147483648
1795620617.205,1.039,node,,node-3,node-3,139,9068544,1000,2147483648
1795620617.205,1.039,pod,default,nginx-zsprpwcg26-592th,node-1,42,2891776,0,0
1795620617.205,1.039,pod,default,nginx-zsprpwcg26-8vgw6,node-1,48,2924544,0,0
1795620617.205,1.039,pod,default,nginx-zsprpwcg26-9j7p8,node-1,28,3170304,0,0
1795620617.205,1.039,pod,default,nginx-zsprpwcg26-9p6zf,node-3,50,2945024,0,0
1795620617.205,1.039,pod,default,nginx-zsprpwcg26-dndjf,node-1,43,2928640,0,0
1795620617.205,1.039,pod,default,nginx-zsprpwcg26-gdwqf,node-2,41,2678784,0,0
1795620617.205,1.039,pod,default,nginx-zsprpwcg26-s6jmn,node-3,46,2908160,0,0
1795620617.205,1.039,pod,default,nginx-zsprpwcg26-skdls,node-2,49,2912256,0,0
1795620617.205,1.039,pod,default,nginx-zsprpwcg26-wr74l,node-2,38,3133440,0,0
1795620617.205,1.039,pod,default,nginx-zsprpwcg26-zqw9b,node-3,45,3182592,0,0
"""
P = "nginx-zsprpwcg26-"


@pytest.fixture
def rows(tmp_path: Path) -> list[MetricRow]:
    """The recorded rows, read back through the results folder's reader (as `podhop report` does)."""
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        ",".join(METRICS_FIELDS) + "\n" + "".join(f"{line},1,baseline\n" for line in RECORDED.splitlines())
    )
    tagged = ResultsDir(tmp_path).read_metrics()
    assert {(rep, phase) for _, rep, phase in tagged} == {(1, "baseline")}
    return [r for r, _, _ in tagged]


def test_mean_usage_averages_samples(rows: list[MetricRow]) -> None:
    nodes = mean_usage(rows, "node")
    assert nodes["node-1"].cpu_m == 151 and nodes["node-1"].samples == 2
    assert nodes["node-1"].cpu_pct == pytest.approx(15.1)
    assert nodes["node-2"].memory_pct == pytest.approx(100 * (9003008 + 9019392) / 2 / 2**31)
    pods = mean_usage(rows, "pod", "default")
    assert len(pods) == 10 and pods[P + "9p6zf"].cpu_m == 48 and pods[P + "9p6zf"].node == "node-3"
    assert mean_usage(rows, "pod", "kube-system") == {}


def test_hottest_cpu_is_the_seeds_first_line_of_top_pods(rows: list[MetricRow]) -> None:
    choice = pick_pod(rows, "hottest-cpu")
    assert choice.chosen == P + "9p6zf"
    assert "48m over 2 sample(s) on node-3" in choice.reason
    assert [r["name"] for r in choice.ranking[:3]] == [
        P + "9p6zf",
        P + "gdwqf",
        P + "skdls",
    ]  # 45m tie: more memory first


def test_hottest_memory(rows: list[MetricRow]) -> None:
    assert pick_pod(rows, "hottest-memory").chosen == P + "wr74l"


def test_candidates_restrict_the_choice(rows: list[MetricRow]) -> None:
    only_node1 = {P + s for s in ("592th", "8vgw6", "9j7p8", "dndjf")}
    assert pick_pod(rows, "hottest-cpu", candidates=only_node1).chosen == P + "8vgw6"
    with pytest.raises(SelectionError, match=r"no running pod matches migration\.selector"):
        pick_pod(rows, "hottest-cpu", candidates=set())


def test_named_pod_is_taken_as_is(rows: list[MetricRow]) -> None:
    choice = pick_pod(rows, P + "592th", candidates={P + "592th"})
    assert (choice.rule, choice.chosen) == ("name", P + "592th")
    with pytest.raises(SelectionError, match="does not exist"):
        pick_pod(rows, "web-0", candidates={P + "592th"})


def test_least_loaded_excludes_the_source(rows: list[MetricRow]) -> None:
    choice = pick_node(rows, "least-loaded", source="node-3")
    assert choice.chosen == "node-2"
    assert [r["name"] for r in choice.ranking] == ["node-2", "node-1"]
    assert "12.8%" in choice.reason
    assert pick_node(rows, "least-loaded", source="node-2").chosen == "node-3"


def test_least_loaded_needs_room(rows: list[MetricRow]) -> None:
    choice = pick_node(rows, "least-loaded", source="node-3", eligible={"node-1"})
    assert choice.chosen == "node-1" and "no room: node-2" in choice.reason.replace("lack of room", "no room")
    with pytest.raises(SelectionError, match=r"no room on node-1, node-2"):
        pick_node(rows, "least-loaded", source="node-3", eligible=set())


def test_least_loaded_uses_the_dominant_share() -> None:
    """A node with idle CPU but full memory is not 'least loaded' for a memory-heavy pod."""
    gi = 2**30
    rows = [
        MetricRow(10, 1, "node", "", "node-1", "node-1", 500, 1 * gi, 1000, 2 * gi),  # 50 % / 50 %
        MetricRow(10, 1, "node", "", "node-2", "node-2", 100, int(1.8 * gi), 1000, 2 * gi),  # 10 % / 90 %
        MetricRow(10, 1, "node", "", "node-3", "node-3", 900, 0, 1000, 2 * gi),  # source
    ]
    assert pick_node(rows, "least-loaded", source="node-3").chosen == "node-1"


def test_named_node(rows: list[MetricRow]) -> None:
    assert pick_node(rows, "node-1", source="node-3").chosen == "node-1"
    with pytest.raises(SelectionError, match="already runs on node-3"):
        pick_node(rows, "node-3", source="node-3")


def test_windows(rows: list[MetricRow]) -> None:
    first = 1795620616.158
    assert {r.t for r in in_window(rows, first - 0.6, first)} == {first}  # midpoint inside
    assert in_window(rows, first - 0.1, first) == []  # midpoint outside ...
    assert {r.t for r in overlapping(rows, first - 0.1, first)} == {first}  # ... but the window overlaps
    with pytest.raises(SelectionError, match="no pod samples"):
        pick_pod(in_window(rows, 0, 1), "hottest-cpu")
