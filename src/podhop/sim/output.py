"""Writing a simulation's results: ``summary.json``, CSV files and plots.

Why: results are read by people (plots, a table), by scripts (JSON, CSV) and
by the next run (is it the same?). ``summary.json`` holds the spec and one
entry per policy — and nothing that varies between runs of the same spec
(wall-clock timings go to ``timings.json``), so two runs with one seed give
byte-identical summaries. Plots use Matplotlib's Agg backend: no display is
needed.

Files in the output directory:

* ``summary.json`` — ``{"spec": {...}, "policies": {name: metrics}}``
* ``summary.csv`` — one row per policy, the same metrics
* ``timeseries.csv`` — ``step,policy,`` then the per-step series
* ``timings.json`` — setup, total and per-policy decision seconds
* ``latency.png`` — mean latency per step, every policy
* ``summary.png`` — bars of the main metrics per policy
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from podhop.sim.engine import SimResult

BARS = (
    ("mean_latency_ms", "mean latency (ms)"),
    ("p95_latency_ms", "p95 latency (ms)"),
    ("sla_violation_rate", "SLA violations (share)"),
    ("migrations", "migrations"),
    ("downtime_s", "migration downtime (s)"),
    ("energy_kwh", "energy (kWh)"),
    ("imbalance_pp", "imbalance (pp)"),
)


def summary_document(result: SimResult) -> dict[str, object]:
    return {"spec": result.spec.model_dump(mode="json"), "policies": result.summary}


def write_results(result: SimResult, out: Path, plots: bool = True) -> list[Path]:
    """Write every output file into ``out`` (created if needed); returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def path(name: str) -> Path:
        written.append(out / name)
        return out / name

    path("summary.json").write_text(json.dumps(summary_document(result), indent=2) + "\n")
    path("timings.json").write_text(
        json.dumps({k: round(v, 3) for k, v in result.timings.items()}, indent=2) + "\n"
    )
    names = list(result.summary)
    columns = list(next(iter(result.summary.values())))
    with path("summary.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["policy", *columns])
        for name in names:
            writer.writerow([name, *(result.summary[name][c] for c in columns)])
    series_keys = list(next(iter(result.series.values())))
    with path("timeseries.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "policy", *series_keys])
        for name in names:
            series = result.series[name]
            for step in range(len(series[series_keys[0]])):
                writer.writerow([step, name, *(series[k][step] for k in series_keys)])
    if plots:
        _plot_latency(result, path("latency.png"))
        _plot_summary(result, path("summary.png"))
    return written


def _plot_latency(result: SimResult, file: Path) -> None:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name, series in result.series.items():
        top.plot(series["mean_latency_ms"], label=name, linewidth=1)
        bottom.plot(series["imbalance_pp"], label=name, linewidth=1)
    top.set_ylabel("mean latency (ms)")
    bottom.set_ylabel("CPU imbalance (pp)")
    bottom.set_xlabel(f"step ({result.spec.step_s:g} s)")
    top.legend(fontsize="small", ncol=3)
    top.set_title(f"{result.spec.nodes} nodes, {result.spec.services} services, {result.spec.users} users")
    fig.tight_layout()
    fig.savefig(file, dpi=110)
    plt.close(fig)


def _plot_summary(result: SimResult, file: Path) -> None:
    names = list(result.summary)
    fig, axes = plt.subplots(1, len(BARS), figsize=(3 * len(BARS), 4))
    for ax, (key, label) in zip(axes, BARS, strict=True):
        ax.bar(range(len(names)), [float(result.summary[n][key]) for n in names], color="tab:blue")
        ax.set_title(label, fontsize="small")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize="x-small")
    fig.tight_layout()
    fig.savefig(file, dpi=110)
    plt.close(fig)
