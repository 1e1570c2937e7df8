"""One repetition: baseline load, choose pod and node, load during the migration, load after.

Why: this is the seed's experiment proper, made exact. The baseline is the
seed's ``hey -n 10000 -c 100``; the pod and node are chosen from the
baseline's ``top`` samples by the spec's rule; the during phase's load is
sized from the baseline's rate so that it spans the migration, which starts
a fixed time into it; the after phase repeats the baseline's load. The probe
runs from the first request to the last, and the migration's downtime is the
longest gap between its successful answers inside the migration's window —
the same measure ``podhop migrate`` reports (its own probe is off here so two
probes do not compete for the CPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from podhop.backends.base import Backend
from podhop.experiment import load as hey
from podhop.experiment.environment import exec_in, pod_named, running_pods
from podhop.experiment.selection import MetricRow, in_window, mean_usage, overlapping, pick_node, pick_pod
from podhop.migrate.engine import Options, migrate
from podhop.migrate.probe import Attempt, Probe, summarize

if TYPE_CHECKING:
    from podhop.experiment.runner import Runner

#: Phases that run after the switch and are timed by the engine but not announced to ``on_phase``.
_AFTER_SWITCH = ("pull", "drain", "cleanup")


@dataclass
class Context:
    runner: Runner
    cluster: Backend
    url: str
    target: tuple[str, int]  # the probe's (ip, port)
    last_migration_s: float = 0.0


def phase_record(run: hey.LoadRun) -> dict[str, Any]:
    return {
        **hey.summarize(run).to_dict(),
        "start": run.started,
        "end": run.ended,
        "concurrency": run.concurrency,
        "url": run.url,
    }


def phase_line(p: dict[str, Any]) -> str:
    lat = p["latency_ms"]
    if lat["p50"] is None:
        return f"no answers; {p['errors']} error(s)"
    return (
        f"{p['rps']:.0f} req/s, p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, p99 {lat['p99']:.1f} ms, "
        f"{p['errors']} error(s)" + (" (truncated at its time bound)" if p["truncated"] else "")
    )


def repetition(ctx: Context, i: int) -> None:
    """Run repetition ``i``; records go into ``runner.results['repetitions']`` as they are made."""
    r = ctx.runner
    rep: dict[str, Any] = {"index": i, "phases": {}}
    r.results["repetitions"].append(rep)
    probe = Probe(lambda: ctx.target, rate_hz=r.spec.probe.rate_hz, timeout_s=r.spec.probe.timeout_s).start()
    try:
        baseline = _load_phase(ctx, rep, i, "baseline", r.spec.load.requests)
        _settle(ctx, i)
        pod, node = _select(ctx, rep, i, baseline)
        _during(ctx, rep, i, pod, node)
        _settle(ctx, i)
        _load_phase(ctx, rep, i, "after", r.spec.load.requests)
    finally:
        attempts = probe.stop()
        r.dir.append_probe(i, attempts)
        probe_summary(rep, attempts, r.spec.probe.rate_hz)
        if r.sampler is not None:
            r.sampler.wait_samples(1, 3.0)  # the sample covering the last phase's tail ends up to 1 s later
        rows = r.sampler.rows() if r.sampler else []
        rep["nodes"] = {
            ph: node_means(rows, rep["phases"][ph])
            for ph in ("baseline", "during", "after")
            if ph in rep["phases"]
        }
        r._save()


def _name(ctx: Context, step: str, i: int) -> tuple[str, str]:
    n = ctx.runner.repetitions
    return (step, "") if n == 1 else (f"{step}[{i}]", f" ({i}/{n})")


def _load_phase(ctx: Context, rep: dict[str, Any], i: int, phase: str, n: int) -> dict[str, Any]:
    r, L = ctx.runner, ctx.runner.spec.load
    n = hey.run_size(n, L.concurrency)  # what hey will send: a multiple of -c
    name, suffix = _name(ctx, phase, i)
    assert r.sampler is not None
    with r._step(name, f"{phase} load{suffix}: hey -n {n} -c {L.concurrency}") as st:
        r.sampler.tag(i, phase)
        run = hey.run_hey(
            ctx.url,
            n,
            L.concurrency,
            qps=L.qps,
            timeout_s=L.request_timeout_s,
            max_s=L.max_phase_s,
            on_tick=lambda e: r.events.status(f"{e:.0f} s"),
        )
        r.sampler.tag(i, "idle")
        record = rep["phases"][phase] = phase_record(run)
        r.dir.append_load(i, phase, run.answers)
        if run.truncated:
            r.warn(
                f"{name}: hey stopped at load.max_phase_s ({L.max_phase_s:.0f} s) before sending all requests"
            )
        st.summary = phase_line(record)
    return record


def _settle(ctx: Context, i: int) -> None:
    r = ctx.runner
    if r.sampler is not None:
        r.sampler.tag(i, "idle")
    time.sleep(r.spec.load.settle_s)


def _window(ctx: Context, start: float, end: float) -> list[MetricRow]:
    """Samples of ``[start, end]``; for a phase shorter than a sample, those overlapping it."""
    r = ctx.runner
    assert r.sampler is not None
    rows = in_window(r.sampler.rows(), start, end)
    if not any(x.kind == "pod" for x in rows):
        r.sampler.wait_samples(1, 3.0)
        rows = overlapping(r.sampler.rows(), start, end)
    return rows


def _select(ctx: Context, rep: dict[str, Any], i: int, baseline: dict[str, Any]) -> tuple[str, str]:
    r, M, ns = ctx.runner, ctx.runner.spec.migration, ctx.runner.spec.load.namespace
    name, suffix = _name(ctx, "select", i)
    with r._step(name, f"choosing the pod ({M.pod}) and node ({M.target}){suffix}") as st:
        rows = _window(ctx, baseline["start"], baseline["end"])
        candidates = {p.name for p in running_pods(ctx.cluster, ns, M.selector or None)}
        pod_choice = pick_pod(rows, M.pod, namespace=ns, candidates=candidates)
        pod = pod_named(ctx.cluster, ns, pod_choice.chosen)
        node_choice = pick_node(rows, M.target, source=pod.node, eligible=ctx.cluster.room_for(pod))
        rep["selection"] = {
            "window": [baseline["start"], baseline["end"]],
            "samples": len({x.t for x in rows}),
            "source_node": pod.node,
            "pod": pod_choice.to_dict(),
            "node": node_choice.to_dict(),
        }
        st.summary = (
            f"{pod.name} on {pod.node} ({pod_choice.reason}) → {node_choice.chosen} ({node_choice.reason})"
        )
    return pod.name, node_choice.chosen


def _during(ctx: Context, rep: dict[str, Any], i: int, pod_name: str, node: str) -> None:
    r, L, M, ns = ctx.runner, ctx.runner.spec.load, ctx.runner.spec.migration, ctx.runner.spec.load.namespace
    span = L.during_s
    if ctx.last_migration_s:  # later repetitions: make room for a migration as long as the last one
        span = max(span, M.start_after_s + 1.5 * ctx.last_migration_s + 2.0)
    n = hey.during_requests(rep["phases"]["baseline"]["rps"], span, L.requests, L.max_requests, L.concurrency)
    if M.verify:
        rep["state_check"] = {
            "command": M.verify,
            "before": exec_in(ctx.cluster, pod_named(ctx.cluster, ns, pod_name), M.verify),
        }
    name, suffix = _name(ctx, "during", i)
    assert r.sampler is not None
    title = f"during load{suffix}: hey -n {n} -c {L.concurrency}; {M.strategy.value} migration → {node}"
    with r._step(name, title) as st:
        r.sampler.tag(i, "during")
        then = hey.during_requests(
            rep["phases"]["baseline"]["rps"], 2.0, L.concurrency, L.max_requests, L.concurrency
        )
        chain = hey.ChainedLoad(
            ctx.url, n, then, L.concurrency, qps=L.qps, timeout_s=L.request_timeout_s, max_s=L.max_phase_s
        ).start()
        marks: list[tuple[str, float]] = []

        def on_phase(phase: str, _m: object) -> None:
            marks.append((phase, time.time()))
            r.events.status(f"migrating {pod_name} → {node}: {phase}")

        error: Exception | None = None
        report: dict[str, Any] | None = None
        try:
            while time.time() < chain.started + M.start_after_s:
                r.events.status(f"load running, migration at +{M.start_after_s:g} s")
                time.sleep(0.05)
            t0 = time.time()
            opts = Options(timeout_s=M.timeout_s, probe=False, on_phase=on_phase)
            try:
                report = migrate(ctx.cluster, pod_name, node, M.strategy.value, ns, opts).to_dict()
            except Exception as exc:  # record the load first, then fail the step
                error = exc
            t1 = time.time()
            if not chain.running():
                r.warn(f"{name}: the load stopped before the migration ended (load.max_phase_s reached)")
            r.events.status("migration done; letting the current load run finish")
            run = chain.finish()
        except BaseException:
            chain.abort()
            raise
        r.sampler.tag(i, "idle")
        record = rep["phases"]["during"] = phase_record(run)
        record["requests_sized_for_s"] = round(span, 2)
        record["chunks"] = run.chunks
        r.dir.append_load(i, "during", run.answers)
        if error is not None or report is None:
            rep["migration_error"] = str(error)
            raise error or RuntimeError("migration returned nothing")
        report["timeline"] = _timeline(marks, report, t0)
        switch = [x for x in report["timeline"] if x["phase"] == "switch"]
        if switch:  # until the target serves: what a client waits for; draining the source comes after
            report["to_switch_ms"] = round((switch[0]["end"] - report["timeline"][0]["start"]) * 1000, 1)
        report["window"] = [marks[0][1] if marks else t0, t1]
        rep["migration"] = report
        ctx.last_migration_s = t1 - t0
        freed = report.get("resources_freed") or {}
        src = next(n for n in ctx.cluster.nodes() if n.name == report["source_node"])
        if freed:
            rep["freed_pct"] = {
                "cpu": round(100.0 * freed["cpu_m_freed"] / src.cpu_m, 2),
                "memory": round(100.0 * freed["memory_b_freed"] / src.memory_b, 3),
            }
        if M.verify:
            after = exec_in(
                ctx.cluster, pod_named(ctx.cluster, ns, report.get("new_pod") or pod_name), M.verify
            )
            rep["state_check"].update(after=after, preserved=after == rep["state_check"]["before"])
        st.summary = f"migration {report['total_ms']:.0f} ms; load: {phase_line(record)}"


def _timeline(marks: list[tuple[str, float]], report: dict[str, Any], t0: float) -> list[dict[str, Any]]:
    """Wall-clock spans of the migration's phases, from the engine's start hooks and its timings."""
    phases: dict[str, float] = report.get("phases", {})
    spans: list[dict[str, Any]] = [
        {"phase": p, "start": s, "end": s + phases.get(p, 0.0) / 1000} for p, s in marks
    ]
    t: float = spans[-1]["end"] if spans else t0
    for p in _AFTER_SWITCH:
        if p in phases and p not in {m[0] for m in marks} and phases[p] > 0:
            spans.append({"phase": p, "start": t, "end": t + phases[p] / 1000})
            t += phases[p] / 1000
    return spans


def probe_summary(rep: dict[str, Any], attempts: list[Attempt], rate: float) -> None:
    probe: dict[str, Any] = {"run": summarize(attempts, rate).to_dict()}
    for ph, rec in rep["phases"].items():
        probe[ph] = summarize(attempts, rate, since=rec["start"], until=rec["end"]).to_dict()
    mig = rep.get("migration")
    if mig and mig.get("window"):
        w = summarize(attempts, rate, since=mig["window"][0], until=mig["window"][1]).to_dict()
        probe["migration"] = w
        mig["probe"] = w
        mig["downtime_ms"] = w["downtime_ms"]
        mig["probe_source"] = "experiment probe (same service address and rate as `podhop migrate`'s)"
    rep["probe"] = probe


def node_means(rows: list[MetricRow], phase: dict[str, Any]) -> dict[str, dict[str, float]]:
    usage = mean_usage(
        in_window(rows, phase["start"], phase["end"]) or overlapping(rows, phase["start"], phase["end"]),
        "node",
    )
    return {
        n: {
            "cpu_m": round(u.cpu_m, 1),
            "memory_b": round(u.memory_b),
            "cpu_pct": round(u.cpu_pct, 2),
            "memory_pct": round(u.memory_pct, 3),
            "samples": u.samples,
        }
        for n, u in sorted(usage.items())
    }
