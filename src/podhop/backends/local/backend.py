"""The local kind behind the one backend interface.

Why: the CLI, experiments, the rebalancer and the migration engine should not
care where a cluster runs. This adapter turns the local kind's records
(SQLite, namespaces, runc) into the interface's values and forwards each
operation to the module that does it: ``apply`` (the API server and
scheduler), ``pods`` (the kubelet), ``services`` (kube-proxy), ``metrics``
(metrics-server), ``migration`` (the migration driver), ``archive``
(checkpoint and restore).
"""

from __future__ import annotations

import subprocess
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from podhop.backends.base import (
    Container,
    ExecResult,
    LogLine,
    MigrationDriver,
    MigrationFacts,
    Node,
    Pod,
    Report,
    Sample,
    Service,
    ServicePort,
)
from podhop.backends.local import apply as applyops
from podhop.backends.local import metrics, render
from podhop.backends.local import pods as podops
from podhop.backends.local import services as svcops
from podhop.backends.local.cluster import LocalCluster
from podhop.errors import NotFoundError, RuntimeFailure
from podhop.migrate.plan import MigrationPlan, Options, Strategy
from podhop.policies.scoring import fits
from podhop.runtime import criu
from podhop.store import PodRecord, ServiceRecord


def pod_view(p: PodRecord) -> Pod:
    spec = applyops.spec_from_record(p)
    return Pod(
        namespace=p.namespace,
        name=p.name,
        node=p.node,
        ip=p.ip,
        phase=podops.pod_phase(p),
        labels=dict(p.labels),
        containers=tuple(
            Container(c.name, c.image, tuple(c.ports), podops.container_state(c)[0] == "running")
            for c in p.containers
        ),
        requests=spec.requests,
        node_selector=spec.node_selector_dict,
        owner_kind=p.owner_kind,
        owner_name=p.owner_name,
        created=p.created,
        uid=p.uid,
    )


def service_view(s: ServiceRecord) -> Service:
    ports = tuple(
        ServicePort(
            int(p["port"]), p.get("targetPort", p["port"]), str(p.get("name") or ""), p.get("nodePort")
        )
        for p in s.ports
    )
    lb = next((p.node_port for p in ports if p.node_port), None)
    external = f"127.0.0.1:{lb}" if s.type == "LoadBalancer" and lb else None
    return Service(s.namespace, s.name, s.type, s.cluster_ip, dict(s.selector), ports, external, s.created)


class LocalBackend:
    """A local cluster as a :class:`~podhop.backends.base.Backend`."""

    kind = "local"

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.name = cluster.name

    # ---------------------------------------------------------------- reading
    def nodes(self) -> list[Node]:
        records = self.cluster.store.pods(self.name)
        return [
            Node(
                name=n.name,
                ip=n.ip,
                cpu_m=n.cpu_m,
                memory_b=n.memory_b,
                pods=sum(1 for p in records if p.node == n.name),
                pod_cidr=n.pod_cidr,
                bandwidth_bps=n.bandwidth_bps,
                version="podhop",
                created=n.created,
                labels={"kubernetes.io/hostname": n.name},
            )
            for n in self.cluster.nodes()
        ]

    def records(self, namespace: str | None = "default") -> list[PodRecord]:
        return [p for p in self.cluster.store.pods(self.name) if namespace in (None, p.namespace)]

    def record(self, namespace: str, name: str) -> PodRecord:
        for p in self.records(namespace):
            if p.name == name:
                return p
        raise NotFoundError(f'pod "{name}" not found in namespace {namespace} of cluster {self.name}')

    def pods(self, namespace: str | None = "default") -> list[Pod]:
        return [pod_view(p) for p in self.records(namespace)]

    def service_address(self, svc: Service) -> tuple[str, int]:
        """The VIP: the host has every service chain, as a node does."""
        return svc.cluster_ip, svc.ports[0].port

    def services(self, namespace: str | None = "default") -> list[Service]:
        return [
            service_view(s)
            for s in self.cluster.store.services(self.name)
            if namespace in (None, s.namespace)
        ]

    def objects(self, resource: str, namespace: str | None) -> list[dict[str, Any]]:
        if resource == "nodes":
            records = self.cluster.store.pods(self.name)
            return [render.node(n, sum(1 for p in records if p.node == n.name)) for n in self.cluster.nodes()]
        if resource == "pods":
            ips = {n.name: n.ip for n in self.cluster.nodes()}
            return [render.pod(p, ips.get(p.node)) for p in self.records(namespace)]
        return [
            render.service(s)
            for s in self.cluster.store.services(self.name)
            if namespace in (None, s.namespace)
        ]

    def top(self, window_s: float, *, cached: bool = False) -> Sample:  # always measured
        return metrics.sample(self.cluster, window_s)

    def logs(self, namespace: str, pod: str, container: str | None) -> list[LogLine]:
        return [LogLine(*entry) for entry in podops.logs(self.record(namespace, pod), container)]

    # ---------------------------------------------------------------- changing
    def apply(self, source: str, text: str, report: Report) -> list[str]:
        return applyops.apply(self.cluster, source, text, report)

    def delete(self, source: str, text: str, report: Report) -> list[str]:
        return applyops.delete(self.cluster, source, text, report)

    def _exec_argv(self, namespace: str, pod: str, container: str | None, argv: list[str]) -> list[str]:
        record = self.record(namespace, pod)
        ctrs = [c for c in record.containers if container in (None, c.name)]
        if not ctrs:
            raise NotFoundError(f"pod {pod} has no container {container!r}")
        return self.cluster.runc.argv("exec", ctrs[0].runtime_id, *argv)

    def exec(
        self, namespace: str, pod: str, container: str | None, argv: list[str], *, timeout: float | None
    ) -> ExecResult:
        cmd = self._exec_argv(namespace, pod, container, argv)
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeFailure(f"`{' '.join(argv)}` in {pod} timed out after {timeout:.0f} s") from exc
        return ExecResult(out.returncode, out.stdout, out.stderr)

    def exec_interactive(self, namespace: str, pod: str, container: str | None, argv: list[str]) -> int:
        return subprocess.call(self._exec_argv(namespace, pod, container, argv))

    def lock(self) -> AbstractContextManager[None]:
        return self.cluster.store.lock(self.name)

    def wait_ready(self, namespace: str, timeout: float) -> list[str]:
        return [p.name for p in podops.wait_ready(self.records(namespace), timeout)]

    def room_for(self, pod: Pod) -> set[str]:
        others = [
            p
            for p in self.cluster.store.pods(self.name)
            if (p.namespace, p.name) != (pod.namespace, pod.name)
        ]
        states = applyops.node_states(self.cluster, others)
        return {n for n, st in states.items() if n != pod.node and fits(st, pod.requests)}

    # ---------------------------------------------------------------- migration
    def migration_facts(self, pod: Pod, target: str, strategy: str) -> MigrationFacts:
        record = self.record(pod.namespace, pod.name)
        wrapper = self.cluster.runc.criu
        if wrapper is None:
            from podhop.migrate.plan import MigrationError

            raise MigrationError("plan", "no CRIU configured", hint="run `podhop setup`")
        others = [p for p in self.cluster.store.pods(self.name) if p is not record and p.uid != record.uid]
        states = applyops.node_states(self.cluster, others)
        if target not in states:
            raise NotFoundError(f"node {target!r} not found in cluster {self.name!r}")
        return MigrationFacts(
            target_fits=fits(states[target], pod.requests),
            state_bytes=sum(criu.dir_bytes(Path(c.bundle) / "upper") for c in record.containers),
            link_bps=self.cluster.node(target).bandwidth_bps,
            other_endpoints=self._other_endpoints(record),
            dirty_tracking=strategy == Strategy.PRECOPY and criu.dirty_tracking(wrapper),
        )

    def _other_endpoints(self, record: PodRecord) -> bool:
        """Whether every service selecting the pod has another running endpoint."""
        pods = [
            p for p in self.cluster.store.pods(self.name) if p.name != record.name and p.phase == "Running"
        ]
        services = [
            s
            for s in self.cluster.store.services(self.name)
            if s.namespace == record.namespace and svcops.selects(s.selector, record.labels)
        ]
        return bool(services) and all(
            any(svcops.selects(s.selector, p.labels) for p in pods) for s in services
        )

    def migration(
        self, plan: MigrationPlan, pod: Pod, options: Options, reserved: set[str] | None
    ) -> MigrationDriver:
        from podhop.backends.local.migration import LocalMigration

        return LocalMigration(self.cluster, plan, self.record(pod.namespace, pod.name), options, reserved)

    def checkpoint(
        self, namespace: str, pod: str, container: str | None, output: Path | None, leave_running: bool
    ) -> Path:
        from podhop.backends.local import archive

        return archive.checkpoint(
            self.cluster, pod, output, namespace=namespace, leave_running=leave_running, container=container
        )

    def restore(self, archive_path: Path, node: str, name: str | None) -> Pod:
        from podhop.backends.local import archive

        return pod_view(archive.restore(self.cluster, archive_path, node, name))
