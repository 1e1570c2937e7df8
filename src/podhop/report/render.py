"""A results folder as a report: ``report.md`` and a self-contained ``report.html``.

Why: the seed's results table was left at "~XX ms"; this fills it from a run's
``results.json`` and shows the data behind each row. Both formats are built
from one list of sections (text, tables, figures), so they cannot disagree;
the HTML embeds its figures as base64 PNGs so it can be mailed or published
as one file, and the Markdown links the same PNGs under ``plots/``. Nothing
here needs the cluster: ``podhop report DIR`` re-renders any results folder.
With repetitions, each figure of the table is the median with its spread and
95 % confidence interval.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podhop.experiment.results import ResultsDir
from podhop.report import plots
from podhop.report.table import fmt_ms, phase_rows, seed_table


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file under plots/, caption)


@dataclass
class Rendered:
    markdown: Path
    html: Path
    table: list[tuple[str, str, str]]
    figures: list[Path]


def _figures(rd: ResultsDir, results: dict[str, Any]) -> list[tuple[str, bytes, str]]:
    """(file name, PNG, caption) for every figure the data allows."""
    reps = results.get("repetitions", [])
    out: list[tuple[str, bytes, str]] = []
    load_rows = rd.read_load()
    probe_rows = rd.read_probe()
    metric_rows = [r for r, _, _ in rd.read_metrics()]
    shown = reps[:5]
    for rep in shown:
        i = rep["index"]
        load = [r for k, _, r in load_rows if k == i]
        probe = [a for k, a in probe_rows if k == i]
        tag = f" — repetition {i}" if len(reps) > 1 else ""
        if rep.get("phases"):
            mig = rep.get("migration") or {}
            what = f"{mig.get('strategy', '')} migration of {mig.get('pod', '?')}" if mig else "no migration"
            out.append(
                (
                    f"latency-{i}.png",
                    plots.latency_timeline(rep, load, probe, f"Response time over time{tag}: {what}"),
                    "Response time over time: each hey request (dots), p50/p99 per 250 ms (lines), and the "
                    "probe's answers and failures; load phases and the migration's phases shaded.",
                )
            )
        if metric_rows and rep.get("phases"):
            out.append(
                (
                    f"nodes-time-{i}.png",
                    plots.node_timeline(rep, metric_rows, f"Node CPU and memory{tag}"),
                    "Node CPU and memory per 1-s sample (cgroup accounting, as kubectl top).",
                )
            )
        if rep.get("nodes", {}).get("baseline") and rep.get("nodes", {}).get("after"):
            out.append(
                (
                    f"nodes-before-after-{i}.png",
                    plots.node_before_after(rep, f"Node load before and after{tag}"),
                    "Mean node CPU and memory during the baseline load and during the same load after "
                    "the migration.",
                )
            )
    if any(r.get("phases") for r in reps):
        out.append(
            (
                "phases.png",
                plots.phase_bars(reps, "Load phases"),
                "hey throughput and response-time percentiles per load phase.",
            )
        )
    if any(r.get("migration") for r in reps):
        out.append(
            (
                "migration.png",
                plots.migration_phases(reps, "Migration phases"),
                "The migration's phases as timed by the engine.",
            )
        )
    return out


def _sections(results: dict[str, Any], figures: list[tuple[str, bytes, str]]) -> list[Section]:
    reps = results.get("repetitions", [])
    secs: list[Section] = []
    head = Section("Summary")
    status = results.get("status", "?")
    spec = results.get("spec", {})
    mig = spec.get("migration", {})
    head.text.append(
        f"Experiment **{results.get('name', '?')}**, status **{status}**, {len(reps)} repetition(s), "
        f"started {results.get('started_at', '?')}, took {results.get('duration_s', '?')} s."
    )
    if results.get("description"):
        head.text.append(str(results["description"]))
    err = results.get("error")
    if err:
        head.text.append(
            f"**Failed in step `{err['step']}`:** {err['message']}"
            + (f" (hint: {err['hint']})" if err.get("hint") else "")
        )
    cl = results.get("cluster", {})
    if cl:
        url = results.get("load_target", {}).get("url", "?")
        probe_at = results.get("probe_target", {}).get("address", "?")
        head.text.append(
            f"Cluster `{cl.get('name')}`: {len(cl.get('nodes', []))} nodes × {cl.get('node_cpu_m')}m CPU / "
            f"{(cl.get('node_memory_b') or 0) / 2**20:.0f} MiB; load `{url}` "
            f"(hey -c {spec.get('load', {}).get('concurrency')}), probe {probe_at} "
            f"at {spec.get('probe', {}).get('rate_hz', 0):g}/s; migration: pod `{mig.get('pod')}` → "
            f"`{mig.get('target')}`, strategy `{mig.get('strategy')}`, {mig.get('start_after_s')} s into "
            "the during load."
        )
    head.tables.append((["Metric", "Value", "How it was measured"], [list(r) for r in seed_table(results)]))
    secs.append(head)
    figs = {name: cap for name, _, cap in figures}
    timeline = Section("Response time over time")
    timeline.figures += [(n, figs[n]) for n in figs if n.startswith("latency-")]
    secs.append(timeline)
    phases = Section("Load phases")
    phases.tables.append(phase_rows(reps))
    phases.figures += [(n, figs[n]) for n in ("phases.png",) if n in figs]
    secs.append(phases)
    sel = Section("Hotspot and target (from the baseline's top samples)")
    for rep in reps:
        s = rep.get("selection")
        if not s:
            continue
        pref = f"Repetition {rep['index']}: " if len(reps) > 1 else ""
        sel.text.append(
            f"{pref}pod `{s['pod']['chosen']}` on `{s['source_node']}` — {s['pod']['reason']}; "
            f"target `{s['node']['chosen']}` — {s['node']['reason']}."
        )
        ranked = {r["name"]: k + 1 for k, r in enumerate(s["node"]["ranking"])}
        means = rep.get("nodes", {}).get("baseline", {})
        if means and not pref:

            def role(n: str, sel: dict[str, Any] = s, ranked: dict[str, int] = ranked) -> str:
                if n == sel["source_node"]:
                    return "source (excluded)"
                return (
                    f"#{ranked[n]}" + (" — chosen" if n == sel["node"]["chosen"] else "")
                    if n in ranked
                    else "no room"
                )

            sel.tables.append(
                (
                    ["Node", "CPU (m)", "CPU %", "Memory (MiB)", "Memory %", "Rank"],
                    [
                        [
                            n,
                            f"{u['cpu_m']:.0f}",
                            f"{u['cpu_pct']:.1f}",
                            f"{u['memory_b'] / 2**20:.1f}",
                            f"{u['memory_pct']:.2f}",
                            role(n),
                        ]
                        for n, u in means.items()
                    ],
                )
            )
            top = s["pod"]["ranking"][:5]
            sel.tables.append(
                (
                    ["Pod (top 5 by rule)", "Node", "CPU (m)", "Memory (MiB)"],
                    [
                        [r["name"], r["node"], f"{r['cpu_m']:.0f}", f"{r['memory_b'] / 2**20:.1f}"]
                        for r in top
                    ],
                )
            )
    secs.append(sel)
    nodes = Section("Nodes before and after")
    nodes.figures += [(n, figs[n]) for n in figs if n.startswith("nodes-")]
    secs.append(nodes)
    migs = Section("Migration")
    rows = []
    for rep in reps:
        m = rep.get("migration")
        if m:
            ph = m.get("phases", {})
            rows.append(
                [
                    str(rep["index"]),
                    f"{m['source_node']} → {m['target_node']}",
                    fmt_ms(m.get("to_switch_ms")),
                    fmt_ms(m["total_ms"]),
                    *(fmt_ms(ph.get(p)) for p in ("dump", "transfer", "restore", "switch")),
                    fmt_ms(m.get("downtime_ms")),
                    f"{m.get('bytes_transferred', 0) / 2**20:.2f} MiB",
                ]
            )
        elif rep.get("migration_error"):
            migs.text.append(f"Repetition {rep['index']}: migration failed: {rep['migration_error']}")
    if rows:
        migs.tables.append(
            (
                [
                    "Rep",
                    "Move",
                    "Until switch",
                    "Total",
                    "Dump",
                    "Transfer",
                    "Restore",
                    "Switch",
                    "Downtime",
                    "Moved",
                ],
                rows,
            )
        )
    for rep in reps:
        sc = rep.get("state_check")
        if sc and "after" in sc:
            migs.text.append(
                f"State check `{' '.join(sc['command'])}`: before `{sc['before']}`, after `{sc['after']}` — "
                + ("preserved." if sc.get("preserved") else "**differs**.")
            )
    migs.figures += [(n, figs[n]) for n in ("migration.png",) if n in figs]
    secs.append(migs)
    env = Section("Environment and files")
    env.tables.append(
        (["Component", "Version"], [[k, str(v)] for k, v in results.get("versions", {}).items()])
    )
    env.text.append(
        "Files: `results.json` (every figure), `metrics.csv` (top, 1 s), `probe.csv` (each probe attempt), "
        "`load.csv` (each answered hey request), `spec.yaml`, "
        + ", ".join(f"`{m}`" for m in results.get("manifests", []))
        + "."
    )
    for w in results.get("warnings", []):
        env.text.append(f"Warning: {w}")
    secs.append(env)
    return secs


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        if not (s.text or s.tables or s.figures):
            continue
        out += [f"## {s.title}", ""]
        for t in s.text:
            out += [t, ""]
        for headers, rows in s.tables:
            out += [_md_table(headers, rows), ""]
        for name, cap in s.figures:
            out += [f"![{cap}](plots/{name})", "", f"*{cap}*", ""]
    return "\n".join(out)


def _inline(text: str) -> str:
    """The little Markdown the sections use (**bold**, `code`) as HTML."""
    parts = html.escape(text).split("`")
    s = "".join(f"<code>{p}</code>" if k % 2 else p for k, p in enumerate(parts))
    bits = s.split("**")
    return "".join(f"<strong>{b}</strong>" if k % 2 else b for k, b in enumerate(bits))


CSS = " ".join(
    [
        "body{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222;",
        "line-height:1.45} table{border-collapse:collapse;margin:.8em 0}",
        "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}",
        "th{background:#f3f3f3} code{background:#f4f4f4;padding:0 .25em;border-radius:3px}",
        "figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee}",
        "figcaption{color:#555;font-size:.9em} h1{border-bottom:2px solid #333}",
        "h2{border-bottom:1px solid #ddd;margin-top:1.6em}",
    ]
)


def to_html(title: str, sections: list[Section], images: dict[str, bytes]) -> str:
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    for s in sections:
        if not (s.text or s.tables or s.figures):
            continue
        out.append(f"<h2>{html.escape(s.title)}</h2>")
        out += [f"<p>{_inline(t)}</p>" for t in s.text]
        for headers, rows in s.tables:
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</table>")
        for name, cap in s.figures:
            data = base64.b64encode(images[name]).decode()
            out.append(
                f"<figure><img alt='{html.escape(cap)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(cap)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)


def render_report(path: str | Path) -> Rendered:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` into the results folder ``path``."""
    rd = ResultsDir(Path(path))
    results = rd.read_json()
    figures = _figures(rd, results)
    plot_dir = rd.path / "plots"
    plot_dir.mkdir(exist_ok=True)
    written = []
    for name, data, _ in figures:
        (plot_dir / name).write_bytes(data)
        written.append(plot_dir / name)
    title = f"podhop experiment: {results.get('name', '?')}"
    sections = _sections(results, figures)
    md = rd.write_text("report.md", to_markdown(title, sections))
    page = rd.write_text("report.html", to_html(title, sections, {n: d for n, d, _ in figures}))
    return Rendered(md, page, seed_table(results), written)
