"""Running an experiment end to end: cluster, workload, warm-up, then per repetition
baseline → (choose) → during + migration → after, all recorded; teardown whatever happens.

Why: the seed's steps — deploy, load with ``hey``, read ``top``, move the
hottest pod, load again — were done by hand, so their timing and their
numbers could not be repeated. Here each is a named step, timed and shown as
it runs; ``top`` is sampled every second and an availability probe (a fresh
connection per attempt, ≥ 200/s) runs through every repetition, both in the
background. ``results.json`` is rewritten after each step, so a failure or a
Ctrl-C leaves everything gathered so far and names the step that failed; the
teardown (delete the run's cluster, or the objects it applied to a reused
one) runs in every case and cannot itself be interrupted half-way.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from podhop.errors import PodhopError
from podhop.experiment import load as hey
from podhop.experiment.environment import (
    Environment,
    ExperimentError,
    find_service,
    load_url,
    run_prepare,
    wait_serving,
)
from podhop.experiment.recorder import Sampler
from podhop.experiment.repetition import Context, repetition
from podhop.experiment.results import ResultsDir, aggregate, python_command, versions
from podhop.experiment.spec import ExperimentSpec, manifest_path, spec_kubeconfig
from podhop.store import Store


class Events(Protocol):
    """How a run reports progress (the CLI draws it with rich; tests stay quiet)."""

    def step(self, title: str) -> None: ...
    def status(self, message: str) -> None: ...
    def done(self, summary: str) -> None: ...
    def fail(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...


class QuietEvents:
    def step(self, title: str) -> None: ...
    def status(self, message: str) -> None: ...
    def done(self, summary: str) -> None: ...
    def fail(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...


@dataclass
class RunOptions:
    """Command-line overrides of the spec."""

    output: Path | None = None  # results folder; default spec.output or results/<time>-<name>
    cluster: str | None = None  # reuse this cluster if it exists, else create it under this name
    keep_cluster: bool = False
    repetitions: int | None = None
    kind: str | None = None  # the kind of a cluster created for the run (default: the spec's)
    kubeconfig: Path | None = None  # run on this cluster instead (default: the spec's)
    context: str | None = None


@dataclass
class Outcome:
    path: Path
    results: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.results.get("status") == "ok")


@dataclass
class _Step:
    summary: str = ""
    record: dict[str, Any] = field(default_factory=dict)


def default_output(spec: ExperimentSpec, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path(spec.output) if spec.output else Path("results") / f"{stamp}-{spec.name}"


def _iso(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).isoformat(timespec="milliseconds")


class Runner:
    """One run of a spec. Use :meth:`run`; it returns an :class:`Outcome` and never leaves a cluster."""

    def __init__(
        self,
        spec: ExperimentSpec,
        spec_path: Path,
        spec_text: str,
        options: RunOptions | None = None,
        events: Events | None = None,
    ) -> None:
        self.spec, self.spec_path, self.spec_text = spec, spec_path, spec_text
        self.options = options or RunOptions()
        self.events: Events = events or QuietEvents()
        self.dir = ResultsDir(self.options.output or default_output(spec))
        self.env = Environment(Store())
        self.sampler: Sampler | None = None
        self.current = "setup"
        self.repetitions = self.options.repetitions or spec.repetitions
        self.results: dict[str, Any] = {
            "schema": 1,
            "name": spec.name,
            "description": spec.description,
            "status": "running",
            "error": None,
            "command": python_command(),
            "started_at": _iso(),
            "finished_at": None,
            "duration_s": None,
            "versions": {},
            "spec": spec.model_dump(mode="json"),
            "spec_file": "spec.yaml",
            "manifests": [],
            "steps": [],
            "warnings": [],
            "repetitions": [],
        }

    def _save(self) -> None:
        if self.sampler is not None:
            self.dir.append_metrics(self.sampler.take())
        self.dir.write_json(self.results)

    @contextmanager
    def _step(self, name: str, title: str) -> Iterator[_Step]:
        self.current = name
        st = _Step(record={"step": name, "started_at": _iso(), "ok": False})
        self.results["steps"].append(st.record)
        self.dir.write_json(self.results)  # the folder always says which step is running
        self.events.step(title)
        t0 = time.monotonic()
        try:
            yield st
        except BaseException as exc:
            st.record["error"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            self.events.fail(st.record["error"])
            raise
        finally:
            st.record["duration_s"] = round(time.monotonic() - t0, 3)
            self._save()
        st.record["ok"] = True
        st.record["summary"] = st.summary
        self.events.done(st.summary)
        self._save()

    def warn(self, message: str) -> None:
        self.results["warnings"].append(message)
        self.events.warn(message)

    def run(self) -> Outcome:
        """Run every step; on failure or Ctrl-C record it, tear down, and return what was gathered."""
        t0 = time.monotonic()
        self.dir.create()
        self.dir.write_text("spec.yaml", self.spec_text)
        try:
            self._run()
            self.results["status"] = "ok"
        except KeyboardInterrupt:
            self.results["status"] = "interrupted"
            self.results["error"] = {"step": self.current, "message": "interrupted (Ctrl-C)", "hint": None}
        except PodhopError as exc:
            self.results["status"] = "failed"
            step = exc.step if isinstance(exc, ExperimentError) else self.current
            message = str(exc).removeprefix(f"step {step!r} failed: ")
            self.results["error"] = {"step": step, "message": message, "hint": exc.hint}
        except Exception as exc:  # a bug must still leave the results and no cluster behind
            self.results["status"] = "failed"
            self.results["error"] = {
                "step": self.current,
                "message": f"{type(exc).__name__}: {exc}",
                "hint": None,
            }
        finally:
            self._finish(t0)
        return Outcome(self.dir.path, self.results)

    def _finish(self, t0: float) -> None:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a half-done teardown would leave residue
        try:
            if self.sampler is not None:
                self.sampler.stop()
                for err in sorted(set(self.sampler.errors))[:5]:
                    self.warn(f"metrics sampling: {err}")
            aggregate(self.results, self.spec.probe.rate_hz)
            keep = self.options.keep_cluster
            if self.env.backend is not None:
                self.current = "teardown"
                title = "keeping cluster" if keep else "tearing down"
                self.events.step(f"{title} {self.env.backend.name}")
                try:
                    for problem in self.env.teardown(keep, self.events.status):
                        self.warn(problem)
                    if keep:
                        what = "kept"
                    elif self.env.created_cluster:
                        what = f"deleted cluster {self.env.backend.name}"
                    elif self.env.applied:
                        what = "deleted the objects the run applied; the reused cluster stays"
                    else:
                        what = "the reused cluster and its objects stay as they were"
                    self.events.done(what)
                except PodhopError as exc:
                    self.warn(f"teardown: {exc}")
                    self.events.fail(str(exc))
                self.results.setdefault("cluster", {})["kept"] = keep or not self.env.created_cluster
            self.results["finished_at"] = _iso()
            self.results["duration_s"] = round(time.monotonic() - t0, 2)
            self._save()
            self.env.store.close()
        finally:
            signal.signal(signal.SIGINT, old)

    def _run(self) -> None:
        spec = self.spec
        with self._step("preflight", "checking tools") as st:
            hey.hey_binary()
            self.results["versions"] = versions(_criu())
            st.summary = ", ".join(f"{k} {v}" for k, v in self.results["versions"].items())
        with self._step("cluster", "cluster") as st:
            o = self.options
            cluster = self.env.open(
                spec.cluster,
                self.events.status,
                name=o.cluster,
                kind=o.kind,
                kubeconfig=o.kubeconfig or (spec_kubeconfig(self.spec_path, spec) if not o.cluster else None),
                context=o.context or (spec.cluster.context if not o.cluster else None),
            )
            nodes = cluster.nodes()
            self.results["cluster"] = {
                "name": cluster.name,
                "kind": cluster.kind,
                "created": self.env.created_cluster,
                "nodes": [n.name for n in nodes],
                "node_cpu_m": nodes[0].cpu_m if nodes else 0,
                "node_memory_b": nodes[0].memory_b if nodes else 0,
                "link_bandwidth_bps": nodes[0].bandwidth_bps if nodes else None,
            }
            verb = "created" if self.env.created_cluster else "reusing"
            cpu = nodes[0].cpu_m if nodes else 0
            st.summary = f"{verb} {cluster.name} ({cluster.kind}): {len(nodes)} nodes × {cpu}m CPU"
        with self._step("deploy", "deploying the workload") as st:
            paths = [manifest_path(self.spec_path, m) for m in spec.workload.manifests]
            for p in paths:
                self.results["manifests"].append(f"manifests/{p.name}")
                self.dir.write_text(f"manifests/{p.name}", p.read_text())
            messages = self.env.deploy(paths, self.events.status)
            svc = wait_serving(
                cluster, spec.load.namespace, spec.load.service, spec.load.via, 300, self.events.status
            )
            prepared = run_prepare(
                cluster, spec.load.namespace, list(spec.workload.prepare), self.events.status
            )
            url = load_url(svc, spec.load.via, spec.load.path, cluster.service_address(svc))
            psvc = find_service(cluster, spec.load.namespace, spec.probe_service)
            target = cluster.service_address(psvc)
            self.results["deploy"] = {"messages": messages, "prepare": prepared}
            self.results["load_target"] = {"service": svc.name, "via": spec.load.via, "url": url}
            self.results["probe_target"] = {
                "service": psvc.name,
                "address": f"{target[0]}:{target[1]}",
                "rate_hz": spec.probe.rate_hz,
            }
            st.summary = f"{len(messages)} object(s); load → {url}; probe → {target[0]}:{target[1]}"
        self.sampler = Sampler(cluster).start()
        if spec.load.warmup_requests:
            with self._step("warmup", "warming up") as st:
                self.sampler.tag(0, "warmup")
                n = max(spec.load.warmup_requests, 1)
                run = hey.run_hey(
                    url,
                    n,
                    min(spec.load.concurrency, n),
                    timeout_s=spec.load.request_timeout_s,
                    max_s=spec.load.max_phase_s,
                )
                stats = hey.summarize(run)
                self.results["warmup"] = stats.to_dict()
                st.summary = f"{stats.answered}/{stats.requests} answered, {stats.rps:.0f} req/s"
        ctx = Context(self, cluster, url, target)
        for i in range(1, self.repetitions + 1):
            repetition(ctx, i)


def _criu() -> Path | None:
    from podhop.settings import paths

    p = paths().criu_wrapper
    return p if p.exists() else None
