"""Cluster state in SQLite, so that every command can be its own process.

Why: ``podhop apply`` and ``podhop get pods`` run as separate processes, like
kubectl against an API server; the state they share — clusters, nodes, pods,
services, deployments — lives in one SQLite file. Objects are stored as a few
indexed columns plus a JSON body, which keeps the schema small while the
objects grow. Writers hold a per-cluster file lock (:meth:`Store.lock`) for the
whole of an operation, so concurrent commands queue instead of racing.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


class Store:
    """Access to the state database (one connection per instance)."""

    def __init__(self, db: Path | None = None) -> None:
        self.path = db or paths().state_db
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: concurrent migrations (rebalance) share one Store; SQLite is
        # compiled serialized here (sqlite3.threadsafety == 3), so statements from threads do not mix.
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def lock(self, cluster: str) -> Iterator[None]:
        """Hold the cluster's exclusive lock (across processes) for a mutating operation."""
        lock_path = self.path.parent / "locks" / f"{cluster}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # clusters
    def put_cluster(self, c: ClusterRecord) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO clusters (name, idx, status, body) VALUES (?, ?, ?, ?)",
            (c.name, c.idx, c.status, json.dumps(asdict(c))),
        )

    def clusters(self) -> list[ClusterRecord]:
        rows = self.db.execute("SELECT body FROM clusters ORDER BY name").fetchall()
        return [ClusterRecord(**json.loads(r[0])) for r in rows]

    def cluster(self, name: str) -> ClusterRecord | None:
        row = self.db.execute("SELECT body FROM clusters WHERE name = ?", (name,)).fetchone()
        return ClusterRecord(**json.loads(row[0])) if row else None

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
        return sorted((NodeRecord(**json.loads(r[0])) for r in rows), key=lambda n: n.idx)

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

    def put_pod(self, p: PodRecord) -> None:
        self._put("Pod", p.cluster, p.namespace, p.name, asdict(p))

    def pods(self, cluster: str) -> list[PodRecord]:
        out = []
        for body in self._all("Pod", cluster):
            containers = [ContainerRecord(**c) for c in body.pop("containers")]
            out.append(PodRecord(**body, containers=containers))
        return out

    def put_service(self, s: ServiceRecord) -> None:
        self._put("Service", s.cluster, s.namespace, s.name, asdict(s))

    def services(self, cluster: str) -> list[ServiceRecord]:
        return [ServiceRecord(**b) for b in self._all("Service", cluster)]

    def put_deployment(self, d: DeploymentRecord) -> None:
        self._put("Deployment", d.cluster, d.namespace, d.name, asdict(d))

    def deployments(self, cluster: str) -> list[DeploymentRecord]:
        return [DeploymentRecord(**b) for b in self._all("Deployment", cluster)]
