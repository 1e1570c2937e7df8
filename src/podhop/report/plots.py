"""The report's figures, drawn with matplotlib (Agg, no display) from a results folder's data.

Why: the seed's table hides how a number came about — a downtime is a gap in
a timeline, a freed CPU share is a before/after pair. Each figure here shows
the data behind one row of the table: latency over time with the load phases
and the migration's own phases shaded, node CPU and memory over time and
before/after, the per-phase load figures, and the migration's phase times.
Figures are returned as PNG bytes so the HTML report can embed them and the
Markdown report can link the same files.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from podhop.experiment.load import HeyRequest
from podhop.experiment.selection import MetricRow
from podhop.migrate.probe import Attempt

LOAD_PHASES = ("baseline", "during", "after")
PHASE_COLORS = {"baseline": "#e3eef9", "during": "#fbf3d0", "after": "#e2f2df"}
_PHASE_NAMES = "prepare detach freeze predump dump transfer restore switch pull drain cleanup".split()  # noqa: SIM905
_PHASE_HEX = "c7c7c7 9edae5 aec7e8 c5b0d5 ff9896 ffbb78 98df8a d62728 c49c94 8c564b 7f7f7f".split()  # noqa: SIM905
MIGRATION_COLORS = {name: f"#{hx}" for name, hx in zip(_PHASE_NAMES, _PHASE_HEX, strict=True)}
_NODE_HEX = "1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf".split()  # noqa: SIM905
NODE_COLORS = [f"#{hx}" for hx in _NODE_HEX]


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _shade_phases(ax: Any, rep: dict[str, Any], t0: float, label: bool) -> None:
    for ph in LOAD_PHASES:
        p = rep.get("phases", {}).get(ph)
        if p:
            ax.axvspan(p["start"] - t0, p["end"] - t0, color=PHASE_COLORS[ph], zorder=0, lw=0)
            if label:
                ax.text(
                    (p["start"] + p["end"]) / 2 - t0,
                    0.97,
                    f"{ph} load",
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="top",
                    fontsize=9,
                    color="#333333",
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5},
                    zorder=5,
                )


def _shade_migration(ax: Any, rep: dict[str, Any], t0: float) -> list[str]:
    spans = (rep.get("migration") or {}).get("timeline") or []
    for s in spans:
        color = MIGRATION_COLORS.get(s["phase"], "#bcbd22")
        ax.axvspan(
            s["start"] - t0, max(s["end"], s["start"] + 0.01) - t0, color=color, alpha=0.45, zorder=1, lw=0
        )
    return [s["phase"] for s in spans]


def rep_origin(rep: dict[str, Any]) -> float:
    starts = [p["start"] for p in rep.get("phases", {}).values()]
    return min(starts) if starts else 0.0


def _binned(t: Any, lat: Any, width: float) -> tuple[list[float], list[float], list[float]]:
    """p50 and p99 per ``width``-second bin; NaN where a bin is empty so lines break at gaps."""
    edges = np.arange(0, t.max() + width, width)
    idx = np.digitize(t, edges)
    centers: list[float] = []
    p50: list[float] = []
    p99: list[float] = []
    for k in range(1, len(edges) + 1):
        sel = lat[idx == k]
        centers.append(float(edges[k - 1] + width / 2))
        p50.append(float(np.percentile(sel, 50)) if len(sel) >= 5 else np.nan)
        p99.append(float(np.percentile(sel, 99)) if len(sel) >= 5 else np.nan)
    return centers, p50, p99


def latency_timeline(rep: dict[str, Any], load: list[HeyRequest], probe: list[Attempt], title: str) -> bytes:
    """hey latency (each request, and p50/p99 per 250 ms) and probe answers over time, phases shaded."""
    t0 = rep_origin(rep)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, height_ratios=[3, 2])
    for ax in (ax1, ax2):
        _shade_phases(ax, rep, t0, label=True)
    shown = _shade_migration(ax1, rep, t0)
    _shade_migration(ax2, rep, t0)
    if load:
        t = np.array([r.start - t0 for r in load])
        lat = np.array([max(r.latency_ms, 0.05) for r in load])
        ax1.scatter(
            t, lat, s=1, color="#1f77b4", alpha=0.12, rasterized=True, label="one hey request", zorder=2
        )
        centers, p50, p99 = _binned(t, lat, 0.25)
        ax1.plot(centers, p50, color="#08306b", lw=1.4, label="p50 per 250 ms", zorder=3)
        ax1.plot(centers, p99, color="#e6550d", lw=1.2, label="p99 per 250 ms", zorder=3)
        ax1.set_yscale("log")
        ax1.set_ylim(top=lat.max() * 4)
    ax1.set_ylabel("hey response time (ms, log)")
    ax1.grid(True, which="major", alpha=0.3)
    handles, labels = ax1.get_legend_handles_labels()
    handles += [Patch(color=MIGRATION_COLORS.get(p, "#bcbd22"), alpha=0.6) for p in dict.fromkeys(shown)]
    labels += [f"migration: {p}" for p in dict.fromkeys(shown)]
    legend = ax1.legend(
        handles,
        labels,
        loc="lower left",
        bbox_to_anchor=(0, 1.01),
        fontsize=7.5,
        ncol=6,
        framealpha=0.9,
        borderaxespad=0,
    )
    ok = [a for a in probe if a.ok]
    bad = [a for a in probe if not a.ok]
    top = max([(a.end - a.start) * 1000 for a in ok] or [1.0]) * 1.1
    if ok:
        ax2.scatter(
            [a.start - t0 for a in ok],
            [(a.end - a.start) * 1000 for a in ok],
            s=2,
            color="#2ca02c",
            alpha=0.5,
            rasterized=True,
            label=f"probe answered ({len(ok)})",
            zorder=2,
        )
    if bad:
        ax2.scatter(
            [a.start - t0 for a in bad],
            [top] * len(bad),
            marker="x",
            color="#d62728",
            s=18,
            label=f"probe failed ({len(bad)}), drawn at the top",
            zorder=3,
        )
    window = (rep.get("migration") or {}).get("window")
    whole = _longest_gap(ok)
    inside = _longest_gap([a for a in ok if window and window[0] <= a.start <= window[1]])
    if whole and whole != inside:
        ax2.axvspan(
            whole[0] - t0,
            whole[1] - t0,
            ymin=0,
            ymax=0.07,
            color="#7f7f7f",
            zorder=4,
            label=f"longest gap between answers, whole repetition ({(whole[1] - whole[0]) * 1000:.0f} ms)",
        )
    if inside:
        ax2.axvspan(
            inside[0] - t0,
            inside[1] - t0,
            ymin=0,
            ymax=0.07,
            color="#d62728",
            zorder=4,
            label=f"longest gap during the migration ({(inside[1] - inside[0]) * 1000:.0f} ms)",
        )
    ax2.set_ylim(0, top * 1.25)
    ax2.set_ylabel("probe response time (ms)")
    ax2.set_xlabel("time since the repetition's baseline load started (s)")
    ax2.grid(True, alpha=0.3)
    legend2 = ax2.legend(
        loc="lower left",
        bbox_to_anchor=(0, 1.01),
        fontsize=7.5,
        ncol=3,
        framealpha=0.9,
        borderaxespad=0,
    )
    for leg in (legend, legend2):
        for h in leg.legend_handles:
            if hasattr(h, "set_sizes"):
                h.set_sizes([18])
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(hspace=0.28)
    return png(fig)


def _longest_gap(ok: list[Attempt]) -> tuple[float, float] | None:
    ends = sorted(a.end for a in ok)
    if len(ends) < 2:
        return None
    d = np.diff(ends)
    k = int(np.argmax(d))
    return ends[k], ends[k + 1]


def node_timeline(rep: dict[str, Any], rows: list[MetricRow], title: str) -> bytes:
    """Each node's CPU (millicores) and memory (MiB) per 1-s sample, phases shaded."""
    t0 = rep_origin(rep)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 5.2), sharex=True)
    nodes = sorted({r.name for r in rows if r.kind == "node"}, key=_node_key)
    lo = min((p["start"] for p in rep.get("phases", {}).values()), default=0) - 2
    hi = max((p["end"] for p in rep.get("phases", {}).values()), default=0) + 2
    for ax in (ax1, ax2):
        _shade_phases(ax, rep, t0, label=ax is ax1)
        _shade_migration(ax, rep, t0)
    src = (rep.get("migration") or {}).get("source_node")
    dst = (rep.get("migration") or {}).get("target_node")
    for i, n in enumerate(nodes):
        rs = sorted(
            (r for r in rows if r.kind == "node" and r.name == n and lo <= r.t <= hi), key=lambda r: r.t
        )
        tag = " (source)" if n == src else " (target)" if n == dst else ""
        x = [r.mid - t0 for r in rs]
        ax1.plot(x, [r.cpu_m for r in rs], marker=".", lw=1.3, color=NODE_COLORS[i % 10], label=n + tag)
        ax2.plot(
            x, [r.memory_b / 2**20 for r in rs], marker=".", lw=1.3, color=NODE_COLORS[i % 10], label=n + tag
        )
    ax1.set_ylabel("node CPU (millicores)")
    ax2.set_ylabel("node memory (MiB)")
    ax2.set_xlabel("time since the repetition's baseline load started (s)")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.margins(y=0.22)  # room for the phase labels
        ax.set_ylim(bottom=0)
    ax1.legend(
        loc="lower left", bbox_to_anchor=(0, 1.01), fontsize=8, ncol=min(len(nodes), 5), borderaxespad=0
    )
    fig.suptitle(title, fontsize=11)
    return png(fig)


def _node_key(name: str) -> tuple[int, str]:
    tail = name.rsplit("-", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (10**9, name)


def node_before_after(rep: dict[str, Any], title: str) -> bytes:
    """Mean CPU and memory per node in the baseline and after phases (same load), source/target marked."""
    nodes_by_phase = rep.get("nodes", {})
    before, after = nodes_by_phase.get("baseline", {}), nodes_by_phase.get("after", {})
    names = sorted(set(before) | set(after), key=_node_key)
    src = (rep.get("migration") or {}).get("source_node")
    dst = (rep.get("migration") or {}).get("target_node")
    labels = [n + ("\n(source)" if n == src else "\n(target)" if n == dst else "") for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(len(names))
    for ax, key, scale, unit in (
        (axes[0], "cpu_m", 1.0, "CPU (millicores)"),
        (axes[1], "memory_b", 2**20, "memory (MiB)"),
    ):
        b = [before.get(n, {}).get(key, 0) / scale for n in names]
        a = [after.get(n, {}).get(key, 0) / scale for n in names]
        bars_b = ax.bar(x - 0.2, b, 0.4, label="before (baseline load)", color="#6baed6")
        bars_a = ax.bar(x + 0.2, a, 0.4, label="after (same load)", color="#fd8d3c")
        fmt = "%.0f" if key == "cpu_m" else "%.1f"
        ax.bar_label(bars_b, fmt=fmt, fontsize=7.5, padding=1)
        ax.bar_label(bars_a, fmt=fmt, fontsize=7.5, padding=1)
        ax.set_xticks(x, labels, fontsize=8.5)
        ax.set_ylabel(f"mean node {unit}")
        ax.grid(True, axis="y", alpha=0.3)
        ax.margins(y=0.15)
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="lower center",
        bbox_to_anchor=(0.5, 0.9),
        fontsize=8,
        ncol=2,
        frameon=False,
    )
    fig.suptitle(title, fontsize=11, y=1.02)
    return png(fig)


def phase_bars(reps: list[dict[str, Any]], title: str) -> bytes:
    """Requests/s and p50/p95/p99 per load phase; with repetitions, medians with min–max bars."""
    phases = [ph for ph in LOAD_PHASES if any(ph in r.get("phases", {}) for r in reps)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[1, 2])

    def series(get: Any) -> tuple[list[float], list[list[float]]]:
        med: list[float] = []
        err: list[list[float]] = [[], []]
        for ph in phases:
            vals = [v for r in reps if ph in r.get("phases", {}) and (v := get(r["phases"][ph])) is not None]
            m = float(np.median(vals)) if vals else 0.0
            med.append(m)
            err[0].append(m - min(vals) if vals else 0.0)
            err[1].append(max(vals) - m if vals else 0.0)
        return med, err

    many = len(reps) > 1
    rps, rps_err = series(lambda p: p["rps"])
    bars = ax1.bar(
        phases,
        rps,
        color=[PHASE_COLORS[p].replace("#", "#") for p in phases],
        edgecolor="#555555",
        yerr=rps_err if many else None,
        capsize=4,
    )
    ax1.bar_label(bars, fmt="%.0f", fontsize=8, padding=2)
    ax1.set_ylabel("requests/s (hey)")
    ax1.margins(y=0.15)
    x = np.arange(len(phases))
    for k, (q, color) in enumerate((("p50", "#9ecae1"), ("p95", "#4292c6"), ("p99", "#08519c"))):
        vals, err = series(lambda p, q=q: p["latency_ms"][q])
        b = ax2.bar(
            x + (k - 1) * 0.26, vals, 0.26, label=q, color=color, yerr=err if many else None, capsize=3
        )
        ax2.bar_label(b, fmt="%.1f", fontsize=7.5, padding=2)
    ax2.set_xticks(x, phases)
    ax2.set_ylabel("response time (ms)")
    ax2.legend(fontsize=8)
    ax2.margins(y=0.15)
    for ax in (ax1, ax2):
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(
        title + (f" — median of {len(reps)} repetitions, bars: min–max" if many else ""), fontsize=11
    )
    return png(fig)


def migration_phases(reps: list[dict[str, Any]], title: str) -> bytes:
    """Each repetition's migration as a horizontal bar of its phases (ms), probe downtime noted."""
    done = [r for r in reps if r.get("migration")]
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.55 * len(done)))
    seen: dict[str, None] = {}
    for row, r in enumerate(done):
        m = r["migration"]
        spans = m.get("timeline") or []
        start = m["window"][0] if m.get("window") else (spans[0]["start"] if spans else 0)
        for s in spans:
            w = (s["end"] - s["start"]) * 1000
            ax.barh(
                row,
                w,
                left=(s["start"] - start) * 1000,
                color=MIGRATION_COLORS.get(s["phase"], "#bcbd22"),
                edgecolor="white",
                height=0.6,
            )
            if w > 0.07 * max(m["total_ms"], 1):
                ax.text(
                    (s["start"] - start) * 1000 + w / 2,
                    row,
                    f"{s['phase']}\n{w:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                )
            seen[s["phase"]] = None
        down = m.get("downtime_ms")
        ax.text(
            m["total_ms"] * 1.01,
            row,
            f"total {m['total_ms']:.0f} ms" + (f"; downtime {down:.0f} ms" if down is not None else ""),
            va="center",
            fontsize=8,
        )
    ax.set_yticks(
        range(len(done)), [f"rep {r['index']}: {r['migration']['strategy']}" for r in done], fontsize=8
    )
    ax.invert_yaxis()
    ax.set_xlabel("ms since the migration started (engine's phase timings)")
    ax.grid(True, axis="x", alpha=0.3)
    xmax = max((r["migration"]["total_ms"] for r in done), default=1)
    ax.set_xlim(0, xmax * 1.35)
    ax.legend(
        [Patch(color=MIGRATION_COLORS.get(p, "#bcbd22")) for p in seen],
        list(seen),
        fontsize=7.5,
        ncol=min(len(seen), 8),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    ax.set_title(title, fontsize=11, pad=22)
    return png(fig)
