"""The results folder: what a run writes, how it is read back, and the statistics over repetitions.

Why: a run is only worth something if it can be re-read, re-plotted and
compared later without the cluster. Everything goes into one folder:
``results.json`` (every figure, the migration's own report, versions),
``metrics.csv`` (the per-second ``top`` samples), ``probe.csv`` (each probe
attempt), ``load.csv`` (each answered hey request), the spec and manifests as
used. CSVs are appended as the run goes and ``results.json`` is rewritten
after every step, so a run that fails or is interrupted still leaves what it
gathered. ``podhop report DIR`` needs nothing but this folder.

With repetitions a figure is reported as its median, spread (min–max) and a
95 % confidence interval of the mean (Student's t), not as one value.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podhop import __version__
from podhop.errors import NotFoundError
from podhop.experiment.load import HeyRequest
from podhop.experiment.selection import MetricRow
from podhop.migrate.probe import Attempt

RESULTS_JSON = "results.json"
METRICS_CSV = "metrics.csv"
PROBE_CSV = "probe.csv"
LOAD_CSV = "load.csv"
METRICS_FIELDS = [
    "t",
    "window_s",
    "kind",
    "namespace",
    "name",
    "node",
    "cpu_m",
    "memory_b",
    "cpu_capacity_m",
    "memory_capacity_b",
    "repetition",
    "phase",
]
PROBE_FIELDS = ["repetition", "start", "end", "ok", "latency_ms", "error"]
LOAD_FIELDS = ["repetition", "phase", "start", "latency_ms", "status"]

# two-sided 95 % Student t critical values by degrees of freedom (1..30); 1.96 beyond
_T95 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


def describe(values: Iterable[float | int | None]) -> dict[str, float | int | None]:
    """n, median, min, max, mean, stdev and the 95 % CI of the mean of the non-missing values."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(xs)
    if n == 0:
        return {
            "n": 0,
            "median": None,
            "min": None,
            "max": None,
            "mean": None,
            "stdev": None,
            "ci95_low": None,
            "ci95_high": None,
        }
    mean = statistics.fmean(xs)
    sd = statistics.stdev(xs) if n > 1 else 0.0
    half = (_T95[n - 2] if n - 1 <= len(_T95) else 1.96) * sd / math.sqrt(n) if n > 1 else 0.0
    r = 3
    return {
        "n": n,
        "median": round(statistics.median(xs), r),
        "min": round(min(xs), r),
        "max": round(max(xs), r),
        "mean": round(mean, r),
        "stdev": round(sd, r),
        "ci95_low": round(mean - half, r),
        "ci95_high": round(mean + half, r),
    }


def _get(d: dict[str, Any] | None, *path: str) -> Any:
    cur: Any = d
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


#: The figures summarized over repetitions: name -> path inside one repetition's record.
SUMMARY_FIGURES: dict[str, tuple[str, ...]] = {
    "migration_ms": ("migration", "total_ms"),
    "to_switch_ms": ("migration", "to_switch_ms"),
    "downtime_ms": ("migration", "downtime_ms"),
    "probe_failed": ("probe", "migration", "failed"),
    "probe_longest_gap_ms": ("probe", "run", "longest_gap_ms"),
    "errors_during": ("phases", "during", "errors"),
    "freed_cpu_m": ("migration", "resources_freed", "cpu_m_freed"),
    "freed_memory_b": ("migration", "resources_freed", "memory_b_freed"),
    "freed_cpu_pct": ("freed_pct", "cpu"),
    "freed_memory_pct": ("freed_pct", "memory"),
}
for _phase in ("baseline", "during", "after"):
    SUMMARY_FIGURES[f"{_phase}_rps"] = ("phases", _phase, "rps")
    for _q in ("p50", "p95", "p99"):
        SUMMARY_FIGURES[f"{_phase}_{_q}_ms"] = ("phases", _phase, "latency_ms", _q)
for _p in ("freeze", "dump", "transfer", "restore", "switch"):
    SUMMARY_FIGURES[f"phase_{_p}_ms"] = ("migration", "phases", _p)


def summarize_repetitions(reps: list[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Each figure of :data:`SUMMARY_FIGURES` described over the repetitions that have it."""
    return {name: describe(_get(rep, *path) for rep in reps) for name, path in SUMMARY_FIGURES.items()}


def aggregate(results: dict[str, Any], probe_rate_hz: float) -> None:
    """Top-level figures: the single repetition's values, or medians over repetitions."""
    reps = [r for r in results["repetitions"] if r.get("migration")]
    results["summary"] = summarize_repetitions(reps) if reps else {}
    phases: dict[str, Any] = {}
    for ph in ("baseline", "during", "after"):
        have = [r["phases"][ph] for r in results["repetitions"] if ph in r.get("phases", {})]
        if not have:
            continue
        if len(have) == 1:
            phases[ph] = have[0]
            continue
        phases[ph] = {
            "aggregate": "median",
            "rps": describe(h["rps"] for h in have)["median"],
            "errors": describe(h["errors"] for h in have)["median"],
            "latency_ms": {
                q: describe(h["latency_ms"][q] for h in have)["median"] for q in ("p50", "p95", "p99")
            },
        }
    results["phases"] = phases
    if reps:
        results["migration"] = reps[-1]["migration"]
        results["resources_freed"] = reps[-1]["migration"].get("resources_freed")
    probes = [r["probe"]["run"] for r in results["repetitions"] if r.get("probe")]
    if probes:
        results["probe"] = {
            "attempts": sum(p["attempts"] for p in probes),
            "failed": sum(p["failed"] for p in probes),
            "longest_gap_ms": max(p["longest_gap_ms"] for p in probes),
            "rate_hz": probe_rate_hz,
        }


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in (out.stdout + out.stderr).splitlines():
        line = line.strip()
        if line.lower().startswith(("version", "runc version")) or line.startswith("ii "):
            return line.split()[2] if line.startswith("ii ") else line.split(":", 1)[-1].split()[-1]
    return "unknown"


def versions(criu: Path | None) -> dict[str, str]:
    """Kernel, CRIU, runc, hey, Python and podhop versions, for the record."""
    return {
        "kernel": platform.release(),
        "criu": _version([str(criu), "--version"]) if criu else "none",
        "runc": _version(["runc", "--version"]),
        "hey": _version(["dpkg-query", "-W", "-f", "ii hey ${Version}\n", "hey"]),
        "python": platform.python_version(),
        "podhop": __version__,
    }


@dataclass
class ResultsDir:
    """A results folder being written (by a run) or read (by a report)."""

    path: Path
    _written: set[str] = field(default_factory=set)

    def create(self) -> ResultsDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def write_json(self, results: dict[str, Any]) -> None:
        tmp = self.path / (RESULTS_JSON + ".tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str, allow_nan=False) + "\n")
        os.replace(tmp, self.path / RESULTS_JSON)

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    def _append(self, name: str, fields: list[str], rows: Iterable[list[Any]]) -> None:
        target = self.path / name
        new = name not in self._written and not target.exists()
        with target.open("a", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            if new:
                w.writerow(fields)
            w.writerows(rows)
        self._written.add(name)

    def append_metrics(self, rows: Iterable[tuple[MetricRow, int, str]]) -> None:
        self._append(
            METRICS_CSV,
            METRICS_FIELDS,
            (
                [
                    f"{r.t:.3f}",
                    f"{r.window_s:.3f}",
                    r.kind,
                    r.namespace,
                    r.name,
                    r.node,
                    r.cpu_m,
                    r.memory_b,
                    r.cpu_capacity_m,
                    r.memory_capacity_b,
                    rep,
                    phase,
                ]
                for r, rep, phase in rows
            ),
        )

    def append_probe(self, repetition: int, attempts: Iterable[Attempt]) -> None:
        self._append(
            PROBE_CSV,
            PROBE_FIELDS,
            (
                [
                    repetition,
                    f"{a.start:.6f}",
                    f"{a.end:.6f}",
                    int(a.ok),
                    f"{(a.end - a.start) * 1000:.3f}",
                    a.error,
                ]
                for a in attempts
            ),
        )

    def append_load(self, repetition: int, phase: str, answers: Iterable[HeyRequest]) -> None:
        self._append(
            LOAD_CSV,
            LOAD_FIELDS,
            ([repetition, phase, f"{a.start:.6f}", f"{a.latency_ms:.3f}", a.status] for a in answers),
        )

    # reading back
    def read_json(self) -> dict[str, Any]:
        target = self.path / RESULTS_JSON
        if not target.is_file():
            raise NotFoundError(f"{self.path}: no {RESULTS_JSON} (not a results folder?)")
        data: dict[str, Any] = json.loads(target.read_text())
        return data

    def _rows(self, name: str) -> list[dict[str, str]]:
        target = self.path / name
        if not target.is_file():
            return []
        with target.open(newline="") as fh:
            return list(csv.DictReader(fh))

    def read_metrics(self) -> list[tuple[MetricRow, int, str]]:
        out = []
        for r in self._rows(METRICS_CSV):
            row = MetricRow(
                float(r["t"]),
                float(r["window_s"]),
                r["kind"],
                r["namespace"],
                r["name"],
                r["node"],
                int(r["cpu_m"]),
                int(r["memory_b"]),
                int(r["cpu_capacity_m"]),
                int(r["memory_capacity_b"]),
            )
            out.append((row, int(r["repetition"] or 0), r["phase"]))
        return out

    def read_probe(self) -> list[tuple[int, Attempt]]:
        return [
            (int(r["repetition"]), Attempt(float(r["start"]), float(r["end"]), r["ok"] == "1", r["error"]))
            for r in self._rows(PROBE_CSV)
        ]

    def read_load(self) -> list[tuple[int, str, HeyRequest]]:
        return [
            (
                int(r["repetition"]),
                r["phase"],
                HeyRequest(float(r["start"]), float(r["latency_ms"]), int(r["status"])),
            )
            for r in self._rows(LOAD_CSV)
        ]


def python_command() -> str:
    """How this process was started, for the record (``podhop experiment run ...``)."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
