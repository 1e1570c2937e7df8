"""The run's surroundings: its cluster, its workload, its addresses — made, found and removed.

Why: a run must leave the machine as it found it. It either creates its
cluster (and deletes it at the end, unless told to keep it) or reuses a named
one (and leaves it, removing only the objects it applied itself). Keeping
that bookkeeping here, apart from the measuring, makes the teardown path —
taken on success, failure and Ctrl-C alike — short enough to trust. The
addresses load and probe go to are resolved here too, and only ever inside
the cluster: a service VIP, or a LoadBalancer's ``127.0.0.1`` port.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from podhop.backends.local import apply as applyops
from podhop.backends.local.cluster import LocalCluster, create_cluster, delete_cluster, open_cluster
from podhop.errors import NotFoundError, PodhopError, RuntimeFailure
from podhop.experiment.spec import ExperimentSpec, PodCommand
from podhop.objects.manifests import load_manifests
from podhop.policies.scoring import fits
from podhop.store import PodRecord, ServiceRecord, Store

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
    cluster: LocalCluster | None = None
    created_cluster: bool = False
    applied: list[tuple[str, str]] = field(default_factory=list)  # (source, text) we created

    def open(self, spec: ExperimentSpec, name: str | None, report: Report) -> LocalCluster:
        """Reuse cluster ``name`` if it exists, else create it (``exp-…`` when unnamed) from the spec."""
        name = name or spec.cluster.name
        if name is not None and self.store.cluster(name) is not None:
            self.cluster = open_cluster(self.store, name)
            if len(self.cluster.nodes()) < 2:
                raise ExperimentError("cluster", f"cluster {name!r} has one node; a migration needs two")
            return self.cluster
        name = name or f"exp-{secrets.token_hex(3)}"
        c = spec.cluster
        self.cluster = create_cluster(self.store, name, c.nodes, c.cpu_m, c.memory_b, c.bandwidth_bps, report)
        self.created_cluster = True
        return self.cluster

    def deploy(self, manifests: list[Path], report: Report) -> list[str]:
        """Apply each manifest; remember those whose objects did not exist before (ours to delete)."""
        assert self.cluster is not None
        messages: list[str] = []
        for path in manifests:
            text = path.read_text()
            existed = _existing(self.cluster, str(path), text)
            messages += applyops.apply(self.cluster, str(path), text, report)
            if not existed:
                self.applied.append((str(path), text))
        return messages

    def teardown(self, keep: bool, report: Report) -> list[str]:
        """Delete the cluster we created (or the objects we applied to a reused one); return residue."""
        if self.cluster is None or keep:
            return []
        if self.created_cluster:
            return [f"left behind: {r}" for r in delete_cluster(self.store, self.cluster.name, report)]
        problems = []
        for source, text in reversed(self.applied):
            try:
                applyops.delete(self.cluster, source, text, report)
            except PodhopError as exc:
                problems.append(f"deleting {source}: {exc}")
        return problems


def _existing(cluster: LocalCluster, source: str, text: str) -> bool:
    """Whether any object the manifest names already exists in the cluster."""
    names = {(m.namespace, m.name) for m in load_manifests(source, text=text)}
    have = {(d.namespace, d.name) for d in cluster.store.deployments(cluster.name)}
    have |= {(s.namespace, s.name) for s in cluster.store.services(cluster.name)}
    have |= {(p.namespace, p.name) for p in cluster.store.pods(cluster.name)}
    return bool(names & have)


def find_service(cluster: LocalCluster, namespace: str, name: str) -> ServiceRecord:
    for s in cluster.store.services(cluster.name):
        if (s.namespace, s.name) == (namespace, name):
            if not s.ports:
                raise NotFoundError(f"service {name!r} has no ports")
            return s
    known = ", ".join(s.name for s in cluster.store.services(cluster.name)) or "none"
    raise NotFoundError(f"service {name!r} not found in namespace {namespace!r} (services: {known})")


def load_url(svc: ServiceRecord, via: str, path: str) -> str:
    """Where hey sends its load: the service VIP, or its LoadBalancer port on 127.0.0.1."""
    port = svc.ports[0]
    if via == "load-balancer":
        if svc.type != "LoadBalancer" or not port.get("nodePort"):
            raise NotFoundError(
                f"load.via is load-balancer but service {svc.name!r} is of type {svc.type}",
                hint="use via: cluster-ip, or make the service type: LoadBalancer",
            )
        return f"http://127.0.0.1:{port['nodePort']}{path}"
    return f"http://{svc.cluster_ip}:{port['port']}{path}"


def running_pods(
    cluster: LocalCluster, namespace: str, selector: dict[str, str] | None = None
) -> list[PodRecord]:
    return [
        p
        for p in cluster.store.pods(cluster.name)
        if p.namespace == namespace
        and p.phase == "Running"
        and all(p.labels.get(k) == v for k, v in (selector or {}).items())
    ]


def pod_named(cluster: LocalCluster, namespace: str, name: str) -> PodRecord:
    for p in cluster.store.pods(cluster.name):
        if (p.namespace, p.name) == (namespace, name):
            return p
    raise NotFoundError(f"pod {name!r} not found in namespace {namespace!r}")


def nodes_with_room(cluster: LocalCluster, pod: PodRecord) -> set[str]:
    """Nodes (other than the pod's) whose allocatable fits the pod's requests, as the engine checks."""
    others = [
        p for p in cluster.store.pods(cluster.name) if p.name != pod.name or p.namespace != pod.namespace
    ]
    states = applyops.node_states(cluster, others)
    need = applyops.spec_from_record(pod).requests
    return {n for n, st in states.items() if n != pod.node and fits(st, need)}


def exec_in(cluster: LocalCluster, pod: PodRecord, argv: list[str], timeout_s: float = 60) -> str:
    """Run ``argv`` in the pod's first container; return its stdout (stripped)."""
    if not pod.containers:
        raise RuntimeFailure(f"pod {pod.name} has no containers")
    cmd = cluster.runc.argv("exec", pod.containers[0].runtime_id, *argv)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeFailure(f"`{' '.join(argv)}` in {pod.name} timed out after {timeout_s:.0f} s") from exc
    if out.returncode != 0:
        raise RuntimeFailure(
            f"`{' '.join(argv)}` in {pod.name} failed (exit {out.returncode}): {out.stderr.strip()[-200:]}"
        )
    return out.stdout.strip()


def run_prepare(
    cluster: LocalCluster, namespace: str, commands: list[PodCommand], report: Report
) -> list[str]:
    """Run the spec's ``workload.prepare`` commands; return 'pod: output' lines."""
    lines = []
    for cmd in commands:
        pods = running_pods(cluster, namespace, cmd.selector)
        if not pods:
            raise NotFoundError(f"workload.prepare: no running pod with labels {cmd.selector}")
        report(f"{pods[0].name}: {' '.join(cmd.command)}")
        lines.append(f"{pods[0].name}: {exec_in(cluster, pods[0], cmd.command)}")
    return lines
