"""The seed's results table, filled from ``results.json``, and the per-phase table.

Why: the seed ended with "Migration time ~XX ms, curl time before/after ~XX ms,
resource freed ~ZZ %" and nothing behind it. This module turns a run's
figures into exactly those rows — plus downtime and failed requests, which
the seed claimed ("uninterrupted") but did not measure — each with how it was
measured, so the CLI, the Markdown and the HTML print the same words. With
repetitions a cell shows the median, the range and the 95 % confidence
interval of the mean instead of one value.
"""

from __future__ import annotations

from typing import Any

LOAD_PHASES = ("baseline", "during", "after")


def fmt_ms(v: float | int | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.0f} ms" if abs(v) >= 100 else f"{v:.1f} ms"


def _num(v: float | int | None, unit: str, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}{unit}"


def fmt_stat(d: dict[str, Any] | None, unit: str = " ms", digits: int = 1, scale: float = 1.0) -> str:
    """median (range min–max; 95 % CI lo–hi, n=N)."""
    if not d or d.get("n", 0) == 0:
        return "n/a"

    def f(k: str) -> str:
        return f"{d[k] / scale:.{digits}f}"

    if d["n"] == 1:
        return f"{f('median')}{unit}"
    spread = f"range {f('min')}–{f('max')}; 95% CI {f('ci95_low')}–{f('ci95_high')}, n={d['n']}"
    return f"median {f('median')}{unit} ({spread})"


def _latency(results: dict[str, Any], phase: str) -> str:
    reps = [r for r in results.get("repetitions", []) if phase in r.get("phases", {})]
    if not reps:
        return "n/a"
    if len(reps) == 1:
        p = reps[0]["phases"][phase]
        lat = p["latency_ms"]
        if lat["p50"] is None:
            return f"no answers ({p['errors']} errors)"
        qs = ", ".join(f"{q} {fmt_ms(lat[q])}" for q in ("p50", "p95", "p99"))
        return f"{qs} ({p['rps']:.0f} req/s)"
    s = results.get("summary", {})
    return "; ".join(f"{q} {fmt_stat(s.get(f'{phase}_{q}_ms'))}" for q in ("p50", "p95", "p99"))


def seed_table(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, value, how it was measured) rows of the seed's table, filled."""
    reps = results.get("repetitions", [])
    done = [r for r in reps if r.get("migration")]
    spec = results.get("spec", {})
    load, probe = spec.get("load", {}), spec.get("probe", {})
    many = len(done) > 1
    s = results.get("summary", {})
    rows: list[tuple[str, str, str]] = []
    strategy = done[0]["migration"]["strategy"] if done else spec.get("migration", {}).get("strategy", "?")
    if many:
        sw, total = fmt_stat(s.get("to_switch_ms"), digits=0), fmt_stat(s.get("migration_ms"), digits=0)
        mig = f"{sw} until the target served; in all {total}"
    elif done:
        m = done[0]["migration"]
        ph = m.get("phases", {})
        parts = ", ".join(
            f"{p} {fmt_ms(ph[p])}" for p in ("dump", "transfer", "restore", "switch") if ph.get(p)
        )
        tail = [f"{p} {fmt_ms(ph[p])}" for p in ("drain", "cleanup", "pull") if ph.get(p)]
        mig = f"{fmt_ms(m['total_ms'])} ({parts})"
        if m.get("to_switch_ms") is not None:
            after = f" ({', '.join(tail)} after the switch)" if tail else ""
            until = f"{fmt_ms(m['to_switch_ms'])} until {m['target_node']} served ({parts})"
            mig = f"{until}; {fmt_ms(m['total_ms'])} in all{after}"
    else:
        mig = "n/a (no migration completed)"
    rows.append(
        (
            "Migration time",
            mig,
            f"`podhop migrate` engine, strategy `{strategy}`, phase timings",
        )
    )
    how = f"hey -n {load.get('requests')} -c {load.get('concurrency')}"
    rows.append(("Response time before migration", _latency(results, "baseline"), f"{how}, baseline phase"))
    rows.append(
        ("Response time during migration", _latency(results, "during"), "hey, load spanning the migration")
    )
    rows.append(("Response time after migration", _latency(results, "after"), f"{how}, after phase"))
    rate = probe.get("rate_hz", 200)
    if many:
        down = fmt_stat(s.get("downtime_ms"))
    else:
        down = fmt_ms(done[0]["migration"].get("downtime_ms")) if done else "n/a"
    rows.append(
        (
            "Downtime",
            down,
            f"longest gap between probe answers minus one period; probe {rate:g}/s, new connection each",
        )
    )
    failed = []
    for r in reps if not many else []:
        d = r.get("phases", {}).get("during")
        if d:
            failed.append(f"hey {d['errors']} of {d['requests']} during")
        pm = r.get("probe", {}).get("migration")
        if pm:
            failed.append(f"probe {pm['failed']} of {pm['attempts']} during the migration")
    if many:
        failed = [
            f"hey during: {fmt_stat(s.get('errors_during'), '', 0)}",
            f"probe: {fmt_stat(s.get('probe_failed'), '', 0)}",
        ]
    rows.append(
        (
            "Failed requests",
            "; ".join(failed) or "n/a",
            "hey: sent (⌊n/c⌋·c, as hey's workers send) − answered + status ≥ 400; probe: failed attempts",
        )
    )
    if many:
        freed = (
            f"CPU {fmt_stat(s.get('freed_cpu_m'), 'm', 0)} ({fmt_stat(s.get('freed_cpu_pct'), '%')}); "
            f"RAM {fmt_stat(s.get('freed_memory_b'), ' MiB', 1, 2**20)}"
        )
    elif done and done[0]["migration"].get("resources_freed"):
        f = done[0]["migration"]["resources_freed"]
        pct = done[0].get("freed_pct", {})
        freed = (
            f"{f['cpu_m_freed']}m CPU ({_num(pct.get('cpu'), '%')} of {f['node']}), "
            f"{f['memory_b_freed'] / 2**20:.1f} MiB RAM ({_num(pct.get('memory'), '%', 2)})"
        )
    else:
        freed = "n/a"
    rows.append(
        (
            "Resources freed (source node)",
            freed,
            "node's top 1 s before vs 1 s after the migration, under load",
        )
    )
    if not many and done:
        src = done[0]["migration"]["source_node"]
        nodes = done[0].get("nodes", {})
        b, a = nodes.get("baseline", {}).get(src), nodes.get("after", {}).get(src)
        if b and a:
            rows.append(
                (
                    "Source node load before → after",
                    f"CPU {b['cpu_m']:.0f}m → {a['cpu_m']:.0f}m ({a['cpu_pct'] - b['cpu_pct']:+.1f} points), "
                    f"RAM {b['memory_b'] / 2**20:.1f} → {a['memory_b'] / 2**20:.1f} MiB",
                    f"mean of {src}'s 1-s samples in the baseline and after phases (same hey load)",
                )
            )
    if not many and reps and reps[0].get("probe"):
        pb, pa = reps[0]["probe"].get("baseline"), reps[0]["probe"].get("after")
        if pb and pa:
            rows.append(
                (
                    "Probe response time before / after",
                    f"p50 {fmt_ms(pb['latency_p50_ms'])} / {fmt_ms(pa['latency_p50_ms'])}",
                    "the probe's answered attempts in the baseline and after phases",
                )
            )
    return rows


def _errors(p: dict[str, Any]) -> str:
    """A phase's errors, split as hey counts them: sent without an answer, answered with status ≥ 400."""
    if "no_answer" not in p:  # results written before the split
        return str(p["errors"])
    if not p["errors"]:
        return "0"
    return f"{p['errors']} ({p['no_answer']} no answer, {p['bad_status']} status ≥ 400)"


def _codes(p: dict[str, Any]) -> str:
    """hey's status code distribution of a phase, e.g. ``200×9990, 502×10``."""
    codes = p.get("status_codes") or {}
    return ", ".join(f"{code}×{n}" for code, n in codes.items()) or "none"


def phase_rows(reps: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One row per repetition and load phase: hey's figures and the probe's."""
    headers = [
        "Rep",
        "Phase",
        "Sent",
        "Errors",
        "Status codes",
        "req/s",
        "p50",
        "p95",
        "p99",
        "max",
        "Duration",
        "Probe failed",
        "Probe p50",
    ]
    rows = []
    for r in reps:
        for ph in LOAD_PHASES:
            p = r.get("phases", {}).get(ph)
            if not p:
                continue
            lat = p["latency_ms"]
            pr = r.get("probe", {}).get(ph, {})
            rows.append(
                [
                    str(r["index"]),
                    ph + (" (truncated)" if p.get("truncated") else ""),
                    str(p["requests"]),
                    _errors(p),
                    _codes(p),
                    f"{p['rps']:.0f}",
                    fmt_ms(lat["p50"]),
                    fmt_ms(lat["p95"]),
                    fmt_ms(lat["p99"]),
                    fmt_ms(lat["max"]),
                    f"{p['duration_s']:.1f} s",
                    f"{pr.get('failed', 'n/a')} of {pr.get('attempts', 'n/a')}",
                    fmt_ms(pr.get("latency_p50_ms")),
                ]
            )
    return headers, rows
