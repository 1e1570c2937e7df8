"""The one backend interface: what the CLI, experiments, rebalancer and migration engine need.

Why: podhop must do the same things on its own local clusters and on any
Kubernetes cluster — list nodes, pods and services, apply and delete
manifests, measure usage, read logs, run commands, and move a running pod —
without the layers above knowing which. Everything above ``backends`` talks
to a :class:`Backend`; the local kind (namespaces, runc, iptables) and the
Kubernetes backend (API server, kubelet checkpoints, a node agent) implement
it. Objects cross the seam as small frozen values (:class:`Node`,
:class:`Pod`, :class:`Service`, :class:`Sample`), never as one side's records.

A migration is a plan of phases (:mod:`podhop.migrate.plan`) that the engine
runs against a :class:`MigrationDriver` the backend gives it: one method per
phase, each registering its undo on the ExitStack it is handed, so strategies,
fault handling and reports are written once, in the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from podhop.migrate.plan import MigrationPlan
from podhop.migrate.report import MoveFigures
from podhop.objects.model import Resources

Report = Callable[[str], None]
Deadline = Callable[[str], float]  # seconds left for the named phase; raises once the deadline passed


@dataclass(frozen=True)
class Node:
    name: str
    ip: str
    cpu_m: int  # allocatable
    memory_b: int
    pods: int = 0
    pod_cidr: str = ""
    bandwidth_bps: int | None = None
    ready: bool = True
    version: str = ""
    created: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    ports: tuple[int, ...] = ()
    ready: bool = True
    restarts: int = 0


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    node: str
    ip: str
    phase: str
    labels: dict[str, str]
    containers: tuple[Container, ...]
    requests: Resources = field(default_factory=Resources)
    node_selector: dict[str, str] = field(default_factory=dict)
    owner_kind: str | None = None
    owner_name: str | None = None
    created: str = ""
    uid: str = ""

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(p for c in self.containers for p in c.ports)

    @property
    def ready(self) -> bool:
        return self.phase == "Running" and all(c.ready for c in self.containers)


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int | str
    name: str = ""
    node_port: int | None = None


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    type: str
    cluster_ip: str
    selector: dict[str, str]
    ports: tuple[ServicePort, ...]
    external: str | None = None  # "address:port" reachable from this machine (a LoadBalancer's)
    created: str = ""

    def selects(self, pod: Pod) -> bool:
        return bool(self.selector) and all(pod.labels.get(k) == v for k, v in self.selector.items())


@dataclass(frozen=True)
class NodeUsage:
    name: str
    cpu_m: int
    memory_b: int
    cpu_capacity_m: int
    memory_capacity_b: int

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu_m / self.cpu_capacity_m if self.cpu_capacity_m else 0.0

    @property
    def memory_pct(self) -> float:
        return 100.0 * self.memory_b / self.memory_capacity_b if self.memory_capacity_b else 0.0


@dataclass(frozen=True)
class PodUsage:
    namespace: str
    name: str
    node: str
    cpu_m: int
    memory_b: int


@dataclass(frozen=True)
class Sample:
    """Usage over a window, as ``kubectl top`` reports it (millicores, working-set bytes)."""

    window_s: float
    nodes: list[NodeUsage]
    pods: list[PodUsage]


@dataclass(frozen=True)
class LogLine:
    time: str
    stream: str
    text: str


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class MigrationFacts:
    """What planning a migration needs to know of the cluster (the plan itself is pure)."""

    target_fits: bool
    state_bytes: int
    link_bps: int | None
    other_endpoints: bool  # every service selecting the pod has another ready endpoint
    dirty_tracking: bool = False
    unsupported: dict[str, str] = field(default_factory=dict)  # strategy -> why this backend cannot


class MigrationDriver(Protocol):
    """One pod's move on one backend: a method per phase the plan may list.

    Phases before the plan's commit point (``prepare`` … ``switch``/``restore``) each register their
    undo on ``undo``; :meth:`discard` removes an attempt's files after a failure. Phases after the
    commit (``pull``, ``drain``, ``cleanup``) must not fail the migration: they return warnings.
    """

    def probe_target(self) -> Callable[[], tuple[str, int]] | None:
        """Where an outside probe reaches the pod (its service, or wherever it is now)."""
        ...

    def prepare(self, undo: ExitStack, deadline: Deadline) -> None: ...
    def freeze(self, undo: ExitStack, deadline: Deadline) -> None: ...
    def detach(self, undo: ExitStack, deadline: Deadline) -> None: ...
    def dump(self, undo: ExitStack, deadline: Deadline) -> None: ...
    def transfer(self, undo: ExitStack, deadline: Deadline) -> None: ...
    def restore(self, undo: ExitStack, deadline: Deadline) -> None: ...
    def switch(self, undo: ExitStack, deadline: Deadline) -> None: ...
    def pull(self, deadline: Deadline) -> list[str]: ...
    def drain(self, deadline: Deadline) -> list[str]: ...
    def cleanup(self, deadline: Deadline) -> list[str]: ...
    def discard(self) -> None: ...

    @property
    def new_ip(self) -> str: ...

    @property
    def new_pod(self) -> str: ...

    def figures(self) -> list[MoveFigures]: ...


class Backend(Protocol):
    """A cluster podhop can place pods on, measure and migrate pods in."""

    name: str
    kind: str  # "local" | "kubernetes"

    def nodes(self) -> list[Node]: ...
    def pods(self, namespace: str | None = "default") -> list[Pod]:
        """Pods of ``namespace`` (None: of every namespace)."""
        ...

    def services(self, namespace: str | None = "default") -> list[Service]: ...
    def service_address(self, svc: Service) -> tuple[str, int]:
        """Where a client on this machine reaches ``svc`` (its first port): load and probes go there."""
        ...

    def objects(self, resource: str, namespace: str | None) -> list[dict[str, Any]]:
        """``nodes``, ``pods`` or ``services`` as Kubernetes objects (``kubectl get -o json``)."""
        ...

    def apply(self, source: str, text: str, report: Report) -> list[str]: ...
    def delete(self, source: str, text: str, report: Report) -> list[str]: ...
    def top(self, window_s: float, *, cached: bool = False) -> Sample:
        """CPU and memory of nodes and pods averaged over the next ``window_s``; ``cached`` accepts
        the cluster's own metrics pipeline instead (metrics-server's last window, as ``kubectl top``)."""
        ...

    def logs(self, namespace: str, pod: str, container: str | None) -> list[LogLine]: ...
    def exec(
        self, namespace: str, pod: str, container: str | None, argv: list[str], *, timeout: float | None
    ) -> ExecResult: ...
    def exec_interactive(self, namespace: str, pod: str, container: str | None, argv: list[str]) -> int:
        """Run with this process's stdio; return the exit status."""
        ...

    def lock(self) -> AbstractContextManager[None]:
        """Exclusive use of the cluster for a mutating operation (a no-op where the API serialises)."""
        ...

    def wait_ready(self, namespace: str, timeout: float) -> list[str]:
        """Wait until every pod of ``namespace`` answers on its ports; return those that do not."""
        ...

    def room_for(self, pod: Pod) -> set[str]:
        """Nodes other than the pod's whose allocatable fits its requests."""
        ...

    def migration_facts(self, pod: Pod, target: str, strategy: str) -> MigrationFacts: ...
    def migration(
        self, plan: MigrationPlan, pod: Pod, options: Any, reserved: set[str] | None
    ) -> MigrationDriver: ...

    def checkpoint(
        self, namespace: str, pod: str, container: str | None, output: Path | None, leave_running: bool
    ) -> Path: ...
    def restore(self, archive_path: Path, node: str, name: str | None) -> Pod: ...
