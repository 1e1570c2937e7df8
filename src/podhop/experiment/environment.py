"""The run's surroundings: its cluster, its workload, its addresses — made, found and removed.

Why: a run must leave the machine as it found it. It either creates its
cluster (and deletes it at the end, unless told to keep it) or reuses a named
one (and leaves it, removing only the objects it applied itself). Keeping
that bookkeeping here, apart from the measuring, makes the teardown path —
taken on success, failure and Ctrl-C alike — short enough to trust. The
addresses load and probe go to are resolved here too, and only ever inside
the cluster: a service VIP, or a LoadBalancer's address (``127.0.0.1`` port on
the local kind).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from podhop.backends.base import Backend, Pod, Service
from podhop.backends.select import create_cluster, delete_cluster, open_backend
from podhop.errors import NotFoundError, PodhopError, RuntimeFailure
from podhop.experiment.spec import ClusterSpec, PodCommand
from podhop.objects.manifests import load_manifests
from podhop.store import Store

Report = Callable[[str], None]


class ExperimentError(PodhopError):
    """A step of an experiment failed; ``step`` names it."""

    def __init__(self, step: str, message: str, *, hint: str | None = None) -> None:
        self.step = step
        super().__init__(f"step {step!r} failed: {message}", hint=hint)


@dataclass
class Environment:
    """What a run made or borrowed, so teardown undoes exactly that."""

    store: Store
    backend: Backend | None = None
    created_cluster: bool = False
    applied: list[tuple[str, str]] = field(default_factory=list)  # (source, text) we created

    def open(
        self,
        spec: ClusterSpec,
        report: Report,
        *,
        name: str | None = None,
        kind: str | None = None,
        kubeconfig: Path | None = None,
        context: str | None = None,
    ) -> Backend:
        """The cluster ``kubeconfig`` names; else podhop cluster ``name`` if it exists (of ``kind``, when
        one is asked for); else a new one (``exp-…`` when unnamed) of the spec's size."""
        name = name or spec.name
        record = self.store.cluster(name) if name is not None else None
        if kubeconfig is not None:
            self.backend = open_backend(self.store, kubeconfig=kubeconfig, context=context)
        elif record is not None:
            if kind is not None and record.kind != kind:
                raise ExperimentError(
                    "cluster",
                    f"cluster {name!r} exists and is a {record.kind} cluster, not {kind}",
                    hint="name another cluster with --name/--cluster, or delete it first",
                )
            self.backend = open_backend(self.store, name)
        else:
            name = name or f"exp-{secrets.token_hex(3)}"
            kind = kind or spec.kind
            create_cluster(
                self.store, kind, name, spec.nodes, spec.cpu_m, spec.memory_b, spec.bandwidth_bps, report
            )
            self.created_cluster = True
            self.backend = open_backend(self.store, name)
        if len(self.backend.nodes()) < 2:
            raise ExperimentError(
                "cluster", f"cluster {self.backend.name!r} has one node; a migration needs two"
            )
        return self.backend

    def deploy(self, manifests: list[Path], report: Report) -> list[str]:
        """Apply each manifest; remember those whose objects did not exist before (ours to delete)."""
        assert self.backend is not None
        messages: list[str] = []
        for path in manifests:
            text = path.read_text()
            existed = _existing(self.backend, str(path), text)
            messages += self.backend.apply(str(path), text, report)
            if not existed:
                self.applied.append((str(path), text))
        return messages

    def teardown(self, keep: bool, report: Report) -> list[str]:
        """Delete the cluster we created (or the objects we applied to a reused one); return residue."""
        if self.backend is None or keep:
            return []
        if self.created_cluster:
            return [f"left behind: {r}" for r in delete_cluster(self.store, self.backend.name, report)]
        problems = []
        for source, text in reversed(self.applied):
            try:
                self.backend.delete(source, text, report)
            except PodhopError as exc:
                problems.append(f"deleting {source}: {exc}")
        return problems


def _existing(backend: Backend, source: str, text: str) -> bool:
    """Whether any object the manifest names already exists in the cluster."""
    names = {(m.namespace, m.name) for m in load_manifests(source, text=text)}
    have = {(s.namespace, s.name) for s in backend.services(None)}
    for p in backend.pods(None):
        have.add((p.namespace, p.name))
        if p.owner_name:
            have.add((p.namespace, p.owner_name))
    return bool(names & have)


def find_service(backend: Backend, namespace: str, name: str) -> Service:
    services = backend.services(namespace)
    for s in services:
        if s.name == name:
            if not s.ports:
                raise NotFoundError(f"service {name!r} has no ports")
            return s
    known = ", ".join(s.name for s in services) or "none"
    raise NotFoundError(f"service {name!r} not found in namespace {namespace!r} (services: {known})")


def wait_serving(
    backend: Backend, namespace: str, service: str, via: str, timeout_s: float, report: Report
) -> Service:
    """Wait until every pod of ``namespace`` is ready and ``service`` exists (with its LoadBalancer
    address when the load goes there); a real cluster gets to both some seconds after the apply."""
    report(f"waiting for the pods of {namespace} to be ready")
    pending = backend.wait_ready(namespace, timeout_s)
    if pending:
        raise ExperimentError(
            "deploy",
            f"{len(pending)} pods not ready after {timeout_s:.0f} s: {', '.join(sorted(pending)[:5])}",
            hint="see podhop get pods and podhop logs POD",
        )
    end = time.monotonic() + timeout_s
    while True:
        svc = find_service(backend, namespace, service)
        if via != "load-balancer" or svc.type != "LoadBalancer" or svc.external or time.monotonic() > end:
            return svc
        report(f"waiting for {service}'s LoadBalancer address")
        time.sleep(0.5)


def load_url(svc: Service, via: str, path: str, address: tuple[str, int]) -> str:
    """Where hey sends its load: its LoadBalancer address, or ``address`` — where this machine reaches
    the service (``Backend.service_address``: the VIP on the local kind)."""
    if via == "load-balancer":
        if svc.type != "LoadBalancer" or not svc.external:
            raise NotFoundError(
                f"load.via is load-balancer but service {svc.name!r} is of type {svc.type}"
                + ("" if svc.type != "LoadBalancer" else " and has no external address yet"),
                hint="use via: cluster-ip, or make the service type: LoadBalancer",
            )
        return f"http://{svc.external}{path}"
    return f"http://{address[0]}:{address[1]}{path}"


def running_pods(backend: Backend, namespace: str, selector: dict[str, str] | None = None) -> list[Pod]:
    return [
        p
        for p in backend.pods(namespace)
        if p.phase == "Running" and all(p.labels.get(k) == v for k, v in (selector or {}).items())
    ]


def pod_named(backend: Backend, namespace: str, name: str) -> Pod:
    for p in backend.pods(namespace):
        if p.name == name:
            return p
    raise NotFoundError(f"pod {name!r} not found in namespace {namespace!r}")


def exec_in(backend: Backend, pod: Pod, argv: list[str], timeout_s: float = 60) -> str:
    """Run ``argv`` in the pod's first container; return its stdout (stripped)."""
    out = backend.exec(pod.namespace, pod.name, None, argv, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeFailure(
            f"`{' '.join(argv)}` in {pod.name} failed (exit {out.returncode}): {out.stderr.strip()[-200:]}"
        )
    return out.stdout.strip()


def run_prepare(backend: Backend, namespace: str, commands: list[PodCommand], report: Report) -> list[str]:
    """Run the spec's ``workload.prepare`` commands; return 'pod: output' lines."""
    lines = []
    for cmd in commands:
        pods = running_pods(backend, namespace, cmd.selector)
        if not pods:
            raise NotFoundError(f"workload.prepare: no running pod with labels {cmd.selector}")
        report(f"{pods[0].name}: {' '.join(cmd.command)}")
        lines.append(f"{pods[0].name}: {exec_in(backend, pods[0], cmd.command)}")
    return lines
