"""Cluster state in SQLite, so that every command can be its own process.

Why: ``podhop apply`` and ``podhop get pods`` run as separate processes, like
kubectl against an API server; the state they share — clusters, nodes, pods,
services, deployments — lives in one SQLite file. Objects are stored as a few
indexed columns plus a JSON body, which keeps the schema small while the
objects grow. Writers hold a per-cluster file lock (:meth:`Store.lock`) for the
whole of an operation, so concurrent commands queue instead of racing.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from podhop import locks
from podhop.errors import AlreadyExistsError, ClusterError, PreflightError
from podhop.settings import paths

SCHEMA = """
CREATE TABLE IF NOT EXISTS clusters (
    name TEXT PRIMARY KEY, idx INTEGER UNIQUE NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    cluster TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (cluster, name)
);
CREATE TABLE IF NOT EXISTS objects (
    cluster TEXT NOT NULL, kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    body TEXT NOT NULL, PRIMARY KEY (cluster, kind, namespace, name)
);
"""


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ClusterRecord:
    """A cluster of either kind: its index (unique across kinds) fixes its address range and names."""

    name: str
    idx: int
    status: str  # creating | ready | deleting
    node_cpu_m: int
    node_memory_b: int
    link_bandwidth_bps: int | None
    created: str = field(default_factory=now)
    kind: str = "local"  # local | kubernetes (rows written before kinds existed load as local)


@dataclass
class NodeRecord:
    cluster: str
    name: str
    idx: int
    ip: str
    pod_cidr: str
    cpu_m: int
    memory_b: int
    bandwidth_bps: int | None
    netns: str
    created: str = field(default_factory=now)


@dataclass
class ContainerRecord:
    name: str
    image: str
    runtime_id: str
    bundle: str
    log: str
    exit_file: str
    pid_file: str
    monitor_pid: int = 0
    ports: list[int] = field(default_factory=list)
    #: External mounts its checkpoints need beyond the pod's /etc files (a container born in Podman:
    #: /run/.containerenv, /dev/shm, the cgroup file system), as CRIU names them.
    external: list[str] = field(default_factory=list)


@dataclass
class PodRecord:
    """A pod as the backend made it: where it runs, its sandbox and containers."""

    cluster: str
    namespace: str
    name: str
    uid: str
    node: str
    sandbox: str  # short id; names the pod's netns, veth and cgroup
    netns: str
    ip: str
    labels: dict[str, str]
    spec: dict[str, Any]  # the pod spec as Kubernetes YAML would have it
    owner_kind: str | None = None
    owner_name: str | None = None
    phase: str = "Pending"
    containers: list[ContainerRecord] = field(default_factory=list)
    created: str = field(default_factory=now)
    started: str | None = None

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> PodRecord:
        containers = [_load(ContainerRecord, c) for c in body.get("containers", [])]
        return _load(cls, {**body, "containers": containers})


@dataclass
class ServiceRecord:
    cluster: str
    namespace: str
    name: str
    type: str
    cluster_ip: str
    selector: dict[str, str]
    ports: list[dict[str, Any]]  # {"name", "port", "targetPort", "protocol", "nodePort"?}
    labels: dict[str, str] = field(default_factory=dict)
    created: str = field(default_factory=now)


@dataclass
class DeploymentRecord:
    cluster: str
    namespace: str
    name: str
    replicas: int
    selector: dict[str, str]
    labels: dict[str, str]
    template: dict[str, Any]  # the pod template as Kubernetes YAML would have it
    template_hash: str
    created: str = field(default_factory=now)


R = TypeVar("R")


def _load(cls: type[R], body: dict[str, Any]) -> R:
    """A record from its JSON body; keys this version does not know (a newer podhop's) are ignored."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in body.items() if k in known})


class Store:
    """Access to the state database (one connection per instance)."""

    def __init__(self, db: Path | None = None, *, on_lock_wait: locks.Waiting | None = None) -> None:
        self.path = db or paths().state_db
        self.on_lock_wait = on_lock_wait
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False: concurrent migrations (rebalance) share one Store; SQLite is
            # compiled serialized here (sqlite3.threadsafety == 3), so statements from threads do not mix.
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            root = os.geteuid() == 0
            raise PreflightError(
                f"cannot open podhop's state database {self.path}: {exc}",
                hint=None if root else "podhop keeps its state as root: run it with sudo",
            ) from exc

    def close(self) -> None:
        self.db.close()

    def lock_path(self, name: str) -> Path:
        return self.path.parent / "locks" / f"{name}.lock"

    @contextmanager
    def lock(self, cluster: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the cluster's exclusive lock (across processes) for a mutating operation.

        A waiter is told who holds it (``on_lock_wait``) and gives up after ``timeout`` seconds
        (default: :func:`podhop.locks.default_timeout`) with :class:`~podhop.locks.LockTimeout`.
        """
        with locks.hold(
            self.lock_path(cluster), f"cluster {cluster}", timeout=timeout, on_wait=self.on_lock_wait
        ):
            yield

    # clusters
    def add_cluster(self, make: Callable[[int], ClusterRecord], max_clusters: int) -> ClusterRecord:
        """Insert a new cluster with the lowest free index, atomically (concurrent creates get distinct
        indexes); raise :class:`AlreadyExistsError` if the name is taken, :class:`ClusterError` if full."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            used = {r[0] for r in self.db.execute("SELECT idx FROM clusters")}
            free = [i for i in range(max_clusters) if i not in used]
            if not free:
                raise ClusterError(f"at most {max_clusters} clusters can exist at once")
            record = make(free[0])
            try:
                self.db.execute(
                    "INSERT INTO clusters (name, idx, status, body) VALUES (?, ?, ?, ?)",
                    (record.name, record.idx, record.status, json.dumps(asdict(record))),
                )
            except sqlite3.IntegrityError as exc:
                raise AlreadyExistsError(
                    f"cluster {record.name!r} already exists", hint=f"podhop cluster delete {record.name}"
                ) from exc
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return record

    def put_cluster(self, c: ClusterRecord) -> None:
        """Insert or update a cluster's record. A cluster's index never changes, and an index taken
        by another cluster is an error (never a silent replacement): new clusters come from
        :meth:`add_cluster`."""
        self.db.execute(
            "INSERT INTO clusters (name, idx, status, body) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET status = excluded.status, body = excluded.body "
            "WHERE clusters.idx = excluded.idx",
            (c.name, c.idx, c.status, json.dumps(asdict(c))),
        )

    def clusters(self) -> list[ClusterRecord]:
        rows = self.db.execute("SELECT body FROM clusters ORDER BY name").fetchall()
        return [_load(ClusterRecord, json.loads(r[0])) for r in rows]

    def cluster(self, name: str) -> ClusterRecord | None:
        row = self.db.execute("SELECT body FROM clusters WHERE name = ?", (name,)).fetchone()
        return _load(ClusterRecord, json.loads(row[0])) if row else None

    def delete_cluster(self, name: str) -> None:
        for table in ("clusters", "nodes", "objects"):
            col = "name" if table == "clusters" else "cluster"
            self.db.execute(f"DELETE FROM {table} WHERE {col} = ?", (name,))

    # nodes
    def put_node(self, n: NodeRecord) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO nodes (cluster, name, body) VALUES (?, ?, ?)",
            (n.cluster, n.name, json.dumps(asdict(n))),
        )

    def nodes(self, cluster: str) -> list[NodeRecord]:
        rows = self.db.execute("SELECT body FROM nodes WHERE cluster = ?", (cluster,)).fetchall()
        return sorted((_load(NodeRecord, json.loads(r[0])) for r in rows), key=lambda n: n.idx)

    # namespaced objects
    def _put(self, kind: str, cluster: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO objects (cluster, kind, namespace, name, body) VALUES (?, ?, ?, ?, ?)",
            (cluster, kind, namespace, name, json.dumps(body)),
        )

    def _all(self, kind: str, cluster: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT body FROM objects WHERE cluster = ? AND kind = ? ORDER BY namespace, name",
            (cluster, kind),
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def remove(self, kind: str, cluster: str, namespace: str, name: str) -> None:
        self.db.execute(
            "DELETE FROM objects WHERE cluster = ? AND kind = ? AND namespace = ? AND name = ?",
            (cluster, kind, namespace, name),
        )

    def put_object(self, kind: str, cluster: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        """A small object of some other kind (an endpoint override, say), as a JSON body."""
        self._put(kind, cluster, namespace, name, body)

    def objects(self, kind: str, cluster: str) -> list[dict[str, Any]]:
        return self._all(kind, cluster)

    def put_pod(self, p: PodRecord) -> None:
        self._put("Pod", p.cluster, p.namespace, p.name, asdict(p))

    def pods(self, cluster: str) -> list[PodRecord]:
        return [PodRecord.from_dict(body) for body in self._all("Pod", cluster)]

    def put_service(self, s: ServiceRecord) -> None:
        self._put("Service", s.cluster, s.namespace, s.name, asdict(s))

    def services(self, cluster: str) -> list[ServiceRecord]:
        return [_load(ServiceRecord, b) for b in self._all("Service", cluster)]

    def put_deployment(self, d: DeploymentRecord) -> None:
        self._put("Deployment", d.cluster, d.namespace, d.name, asdict(d))

    def deployments(self, cluster: str) -> list[DeploymentRecord]:
        return [_load(DeploymentRecord, b) for b in self._all("Deployment", cluster)]
