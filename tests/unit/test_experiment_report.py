"""Results and reports without a cluster: statistics, the results folder, and a report rendered from a
small results folder generated here the way a run writes it (one repetition, then three)."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from podhop.experiment.load import HeyRequest, LoadRun
from podhop.experiment.repetition import node_means, phase_record, probe_summary
from podhop.experiment.results import ResultsDir, aggregate, describe
from podhop.experiment.selection import MetricRow
from podhop.migrate.probe import Attempt
from podhop.report.render import render_report
from podhop.report.table import fmt_stat, seed_table

PNG = b"\x89PNG\r\n\x1a\n"


def test_describe() -> None:
    one = describe([42.0])
    assert one["n"] == 1 and one["median"] == 42.0 and one["ci95_low"] == one["ci95_high"] == 42.0
    three = describe([10, 12, None, 14, math.nan])
    assert three["n"] == 3 and three["median"] == 12 and three["stdev"] == 2.0
    half = 4.303 * 2 / math.sqrt(3)  # Student t, 2 degrees of freedom
    assert three["ci95_low"] == pytest.approx(12 - half, abs=1e-3)
    assert three["ci95_high"] == pytest.approx(12 + half, abs=1e-3)
    assert describe([])["median"] is None
    assert fmt_stat(three) == "median 12.0 ms (range 10.0–14.0; 95% CI 7.0–17.0, n=3)"


def _repetition(rd: ResultsDir, index: int, t0: float, scale: float) -> dict[str, Any]:
    """One repetition as the runner records it: baseline 0-3 s, during 4-10 s, after 11-14 s after t0."""
    rep: dict[str, Any] = {"index": index, "phases": {}}
    bounds = {"baseline": (0, 3), "during": (4, 10), "after": (11, 14)}
    for phase, (a, b) in bounds.items():
        run = LoadRun("http://10.0.0.1:80/", 600, 10, started=t0 + a, ended=t0 + b)
        slow = 3.0 if phase == "during" else 1.0
        run.answers = [
            HeyRequest(t0 + a + k * (b - a) / 600, scale * slow * (5 + k % 40), 200) for k in range(598)
        ]
        rep["phases"][phase] = phase_record(run)
        rd.append_load(index, phase, run.answers)
    start = t0 + 5.0
    names = ["prepare", "dump", "transfer", "restore", "switch", "drain"]
    lengths = [0.1, 0.8 * scale, 0.1, 0.9 * scale, 0.2, 0.5]
    timeline, t = [], start
    for name, length in zip(names, lengths, strict=True):
        timeline.append({"phase": name, "start": t, "end": t + length})
        t += length
    rep["migration"] = {
        "pod": "nginx-abc-1",
        "namespace": "default",
        "strategy": "clone",
        "source_node": "node-1",
        "target_node": "node-2",
        "old_ip": "10.1.1.2",
        "new_ip": "10.1.2.9",
        "phases": {"freeze": 0.0, **{n: round(x * 1000, 1) for n, x in zip(names, lengths, strict=True)}},
        "total_ms": round((t - start) * 1000, 1),
        "to_switch_ms": round(sum(lengths[:5]) * 1000, 1),
        "bytes_transferred": 4 * 2**20,
        "image_bytes": 4 * 2**20,
        "warnings": [],
        "resources_freed": {
            "node": "node-1",
            "cpu_m_before": 300,
            "cpu_m_after": 200,
            "cpu_m_freed": 100,
            "memory_b_before": 40 << 20,
            "memory_b_after": 37 << 20,
            "memory_b_freed": 3 << 20,
        },
        "timeline": timeline,
        "window": [start, t + 1.0],
    }
    rep["freed_pct"] = {"cpu": 10.0, "memory": 0.15}
    gap = (start + sum(lengths[:4]), start + sum(lengths[:4]) + 0.12)  # no answer for 120 ms at the switch
    attempts = [
        Attempt(t0 + k / 200, t0 + k / 200 + 0.004, not gap[0] <= t0 + k / 200 <= gap[1])
        for k in range(15 * 200)
    ]
    rd.append_probe(index, attempts)
    probe_summary(rep, attempts, 200.0)
    rows = []
    for sec in range(16):
        for n, cpu in (
            ("node-1", 300 if sec < 8 else 200),
            ("node-2", 150 if sec < 8 else 250),
            ("node-3", 180),
        ):
            rows.append(MetricRow(t0 + sec + 1, 1.0, "node", "", n, n, cpu, (40 << 20) - sec, 1000, 2 << 30))
        rows.append(MetricRow(t0 + sec + 1, 1.0, "pod", "default", "nginx-abc-1", "node-1", 40, 3 << 20))
    rd.append_metrics((r, index, "x") for r in rows)
    rep["nodes"] = {ph: node_means(rows, rep["phases"][ph]) for ph in ("baseline", "during", "after")}
    rep["selection"] = {
        "window": [t0, t0 + 3],
        "samples": 3,
        "source_node": "node-1",
        "pod": {
            "rule": "hottest-cpu",
            "chosen": "nginx-abc-1",
            "reason": "highest mean CPU: 40m",
            "ranking": [{"name": "nginx-abc-1", "node": "node-1", "cpu_m": 40.0, "memory_b": 3 << 20}],
        },
        "node": {
            "rule": "least-loaded",
            "chosen": "node-2",
            "reason": "lowest dominant share: 15.0%",
            "ranking": [
                {"name": "node-2", "cpu_m": 150.0, "cpu_pct": 15.0, "memory_b": 40 << 20, "memory_pct": 1.95}
            ],
        },
    }
    return rep


def make_results(path: Path, repetitions: int) -> Path:
    rd = ResultsDir(path).create()
    results: dict[str, Any] = {
        "schema": 1,
        "name": "seed",
        "description": "a generated run",
        "status": "ok",
        "error": None,
        "started_at": "2026-01-01T00:00:00Z",
        "duration_s": 40.0,
        "versions": {"kernel": "6.1", "criu": "4.2", "runc": "1.1", "podhop": "0.1.0"},
        "spec": {
            "load": {"requests": 600, "concurrency": 10},
            "probe": {"rate_hz": 200},
            "migration": {"pod": "hottest-cpu", "target": "least-loaded", "strategy": "clone"},
        },
        "cluster": {
            "name": "t",
            "nodes": ["node-1", "node-2", "node-3"],
            "node_cpu_m": 1000,
            "node_memory_b": 2 << 30,
        },
        "manifests": ["manifests/nginx.yaml"],
        "warnings": [],
        "steps": [],
        "repetitions": [_repetition(rd, i + 1, 1000.0 + 100 * i, 1 + 0.2 * i) for i in range(repetitions)],
    }
    aggregate(results, 200.0)
    rd.write_json(results)
    return path


def test_results_folder_round_trip(tmp_path: Path) -> None:
    rd = ResultsDir(make_results(tmp_path / "r", 1))
    results = rd.read_json()
    for phase in ("baseline", "during", "after"):
        p = results["phases"][phase]
        assert {"rps", "errors"} <= set(p) and {"p50", "p95", "p99"} <= set(p["latency_ms"])
        assert p["errors"] == 2  # 600 sent, 598 answered
    assert results["probe"]["failed"] == 25 and results["probe"]["longest_gap_ms"] > 120
    assert (
        results["migration"]["downtime_ms"] == results["repetitions"][0]["probe"]["migration"]["downtime_ms"]
    )
    assert results["resources_freed"]["cpu_m_freed"] == 100
    assert len(rd.read_load()) == 3 * 598 and len(rd.read_probe()) == 3000 and len(rd.read_metrics()) == 64
    assert "\r" not in (rd.path / "metrics.csv").read_text()


def test_seed_table_is_filled(tmp_path: Path) -> None:
    results = ResultsDir(make_results(tmp_path / "r", 1)).read_json()
    table = dict((m, v) for m, v, _ in seed_table(results))
    assert table["Migration time"].startswith("2100 ms until node-2 served (dump 800 ms")
    assert table["Response time before migration"].startswith("p50 ")
    assert table["Downtime"].endswith(" ms") and float(table["Downtime"].split()[0]) > 100
    assert table["Failed requests"] == "hey 2 of 600 during; probe 25 of 721 during the migration"
    assert table["Resources freed (source node)"] == "100m CPU (10.0% of node-1), 3.0 MiB RAM (0.15%)"
    assert not any("XX" in v or "n/a" in v for v in table.values())


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)]


def test_report_from_a_recorded_folder(tmp_path: Path) -> None:
    path = make_results(tmp_path / "r", 1)
    rendered = render_report(path)
    html = rendered.html.read_text()
    images = _images(html)
    assert len(images) == len(rendered.figures) == 5
    assert all(img.startswith(PNG) and len(img) > 10_000 for img in images)
    assert "http" not in html.replace("http://10.0.0.1:80/", "")  # self-contained: nothing fetched
    md = rendered.markdown.read_text()
    assert "| Migration time | 2100 ms until node-2 served" in md
    assert "![" in md and "(plots/latency-1.png)" in md
    for f in rendered.figures:
        assert f.read_bytes().startswith(PNG)


def test_report_with_repetitions_shows_median_and_ci(tmp_path: Path) -> None:
    path = make_results(tmp_path / "r", 3)
    results = json.loads((path / "results.json").read_text())
    assert results["summary"]["migration_ms"]["n"] == 3
    assert results["phases"]["baseline"]["aggregate"] == "median"
    rendered = render_report(path)
    table = dict((m, v) for m, v, _ in rendered.table)
    assert "median" in table["Migration time"] and "95% CI" in table["Migration time"]
    assert "median" in table["Downtime"] and "n=3" in table["Downtime"]
    assert len(_images(rendered.html.read_text())) == 3 * 3 + 2


def test_report_of_a_failed_run(tmp_path: Path) -> None:
    rd = ResultsDir(tmp_path / "r").create()
    rd.write_json(
        {
            "name": "seed",
            "status": "failed",
            "repetitions": [],
            "error": {"step": "deploy", "message": "image nginx not found", "hint": "podhop setup"},
        }
    )
    rendered = render_report(rd.path)
    assert "Failed in step <code>deploy</code>" in rendered.html.read_text()
    assert dict((m, v) for m, v, _ in rendered.table)["Migration time"] == "n/a (no migration completed)"
