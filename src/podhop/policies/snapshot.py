"""What a policy sees: a snapshot of nodes, containers, users and links — and its array view.

Why: Oleghe (IEEE Access 9, 2021) frames edge scheduling as three decisions
(which container serves each request, where each container is placed, where a
deployed one migrates), all taken from the same state: node capacities and
load, container demands and state sizes, and where the users are. A
:class:`Snapshot` is that state as plain frozen values — what the live
rebalancer builds from ``podhop top`` metrics — and :class:`Arrays` is the
same state as NumPy arrays, which every policy works on, and which the
simulator builds directly (10,000 services × 1,000 steps cannot afford a
Python object per container per step).

Units: CPU in millicores, memory and state in bytes (as
:class:`~podhop.objects.model.Resources`), bandwidth in bit/s, latency in ms,
power in W, positions in km. Requests are what the scheduler reserves
(kube-scheduler's ``NodeResourcesFit`` filters on them); usage is what
``kubectl top`` measures (descheduler-style triggers act on it).

Latency model: a user reaches the edge through its *access node* (the nearest
node) in ``access_ms``; from there to the node serving it costs the
node-to-node latency ``D[access, serving]`` (0 when they coincide). ``D`` comes
from explicit links (shortest paths), else from node positions
(``hop_ms + ms_per_km · distance``), else is 0 everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray

from podhop.errors import PodhopError
from podhop.objects.model import Pairs, Resources
from podhop.policies.scoring import DEFAULT_MEMORY_REQUEST, DEFAULT_MILLI_CPU_REQUEST, natural_key

I64: TypeAlias = NDArray[np.int64]
F64: TypeAlias = NDArray[np.float64]
Bools: TypeAlias = NDArray[np.bool_]
CPU, MEM = 0, 1
UNPLACED = -1


class SnapshotError(PodhopError):
    """A snapshot refers to a node or container it does not contain, or repeats a name."""


@dataclass(frozen=True)
class NodeInfo:
    """One node: allocatable ``capacity``, measured ``usage`` (zero: the sum of its containers'),
    link bandwidth, a linear power model (``idle_w`` at 0 % CPU to ``max_w`` at 100 %)."""

    name: str
    capacity: Resources
    usage: Resources = field(default_factory=Resources)
    bandwidth_bps: float = 1e9
    idle_w: float = 60.0
    max_w: float = 150.0
    max_pods: int = 110
    position: tuple[float, float] | None = None
    labels: Pairs = ()


@dataclass(frozen=True)
class ContainerInfo:
    """One pod/container. ``node`` is ``None`` while pending. ``state_bytes`` is what a migration
    moves (0: its memory usage). Unmovable containers stay put (but count on their node)."""

    name: str
    node: str | None
    requests: Resources
    usage: Resources = field(default_factory=Resources)
    state_bytes: int = 0
    priority: int = 0
    movable: bool = True
    node_selector: Pairs = ()


@dataclass(frozen=True)
class User:
    """A user of ``container``, attached to its nearest node ``node`` (``previous_node`` the last
    time we looked), sending ``rate`` requests/s, ``access_ms`` from that node."""

    name: str
    container: str
    node: str
    previous_node: str | None = None
    access_ms: float = 0.0
    rate: float = 1.0


@dataclass(frozen=True)
class Link:
    """A node-to-node link with its one-way latency."""

    a: str
    b: str
    latency_ms: float


@dataclass(frozen=True)
class Snapshot:
    nodes: tuple[NodeInfo, ...]
    containers: tuple[ContainerInfo, ...] = ()
    users: tuple[User, ...] = ()
    links: tuple[Link, ...] = ()
    hop_ms: float = 0.0
    ms_per_km: float = 0.0

    def arrays(self) -> Arrays:
        """The array view every policy works on (validates names and references)."""
        if not self.nodes:
            raise SnapshotError("a snapshot needs at least one node")
        nodes = {n.name: i for i, n in enumerate(self.nodes)}
        conts = {c.name: i for i, c in enumerate(self.containers)}
        if len(nodes) != len(self.nodes) or len(conts) != len(self.containers):
            raise SnapshotError("node and container names must be unique in a snapshot")

        def node_of(name: str | None, what: str) -> int:
            if name is None:
                return UNPLACED
            if name not in nodes:
                raise SnapshotError(f"{what} refers to unknown node {name!r}")
            return nodes[name]

        where = np.array([node_of(c.node, f"container {c.name}") for c in self.containers], dtype=np.int64)
        usage = np.array([[c.usage.cpu_m, c.usage.memory_b] for c in self.containers], dtype=np.float64)
        usage = usage.reshape(-1, 2)
        measured = np.array([[n.usage.cpu_m, n.usage.memory_b] for n in self.nodes], dtype=np.float64)
        on_node = np.zeros((len(self.nodes), 2))
        placed = where >= 0
        np.add.at(on_node, where[placed], usage[placed])
        base = np.where(measured > 0, np.maximum(measured - on_node, 0.0), 0.0)
        for u in self.users:
            if u.container not in conts:
                raise SnapshotError(f"user {u.name} refers to unknown container {u.container!r}")
        allowed: dict[int, Bools] = {}
        for i, c in enumerate(self.containers):
            if c.node_selector:
                want = dict(c.node_selector)
                allowed[i] = np.array(
                    [
                        all(
                            (n.name if k == "kubernetes.io/hostname" else dict(n.labels).get(k)) == v
                            for k, v in want.items()
                        )
                        for n in self.nodes
                    ],
                    dtype=np.bool_,
                )
        positions = None
        if self.nodes and all(n.position is not None for n in self.nodes):
            positions = np.array([n.position for n in self.nodes], dtype=np.float64)
        return Arrays(
            node_names=tuple(nodes),
            capacity=np.array(
                [[n.capacity.cpu_m, n.capacity.memory_b] for n in self.nodes], dtype=np.int64
            ).reshape(-1, 2),
            bandwidth_bps=np.array([n.bandwidth_bps for n in self.nodes], dtype=np.float64),
            idle_w=np.array([n.idle_w for n in self.nodes], dtype=np.float64),
            max_w=np.array([n.max_w for n in self.nodes], dtype=np.float64),
            max_pods=np.array([n.max_pods for n in self.nodes], dtype=np.int64),
            base_usage=base.reshape(-1, 2),
            container_names=tuple(conts),
            requests=np.array(
                [[c.requests.cpu_m, c.requests.memory_b] for c in self.containers], dtype=np.int64
            ).reshape(-1, 2),
            usage=usage,
            state_bytes=np.array(
                [c.state_bytes or c.usage.memory_b for c in self.containers], dtype=np.float64
            ),
            node=where,
            priority=np.array([c.priority for c in self.containers], dtype=np.int64),
            movable=np.array([c.movable for c in self.containers], dtype=np.bool_),
            user_container=np.array([conts[u.container] for u in self.users], dtype=np.int64),
            user_node=np.array([node_of(u.node, f"user {u.name}") for u in self.users], dtype=np.int64),
            user_prev_node=np.array(
                [node_of(u.previous_node, f"user {u.name}") for u in self.users], dtype=np.int64
            ),
            user_rate=np.array([u.rate for u in self.users], dtype=np.float64),
            user_access_ms=np.array([u.access_ms for u in self.users], dtype=np.float64),
            positions=positions,
            latency=_shortest_paths(
                len(self.nodes), [(nodes[lk.a], nodes[lk.b], lk.latency_ms) for lk in self.links]
            )
            if self.links
            else None,
            hop_ms=self.hop_ms,
            ms_per_km=self.ms_per_km,
            allowed=allowed,
        )


def _shortest_paths(n: int, edges: list[tuple[int, int, float]]) -> F64:
    """All-pairs shortest latencies (Floyd–Warshall, vectorised per pivot); unreachable: 1e6 ms."""
    d = np.full((n, n), np.inf)
    np.fill_diagonal(d, 0.0)
    for a, b, ms in edges:
        d[a, b] = d[b, a] = min(d[a, b], ms)
    for k in range(n):
        np.minimum(d, d[:, k, None] + d[None, k, :], out=d)
    return np.where(np.isfinite(d), d, 1e6)


@dataclass(eq=False)
class Arrays:
    """The snapshot as arrays: ``N`` nodes, ``C`` containers, ``U`` users (columns: cpu, memory)."""

    node_names: tuple[str, ...]
    capacity: I64
    bandwidth_bps: F64
    idle_w: F64
    max_w: F64
    max_pods: I64
    base_usage: F64
    container_names: tuple[str, ...]
    requests: I64
    usage: F64
    state_bytes: F64
    node: I64
    priority: I64
    movable: Bools
    user_container: I64
    user_node: I64
    user_prev_node: I64
    user_rate: F64
    user_access_ms: F64
    positions: F64 | None = None
    latency: F64 | None = None
    hop_ms: float = 0.0
    ms_per_km: float = 0.0
    allowed: dict[int, Bools] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    @property
    def n_containers(self) -> int:
        return len(self.container_names)

    def derive(self, **changes: Any) -> Arrays:
        """A copy with some fields replaced, keeping the caches that do not depend on them."""
        new = replace(self, **changes)
        keep = {"rank": "node_names", "users": "user_container", "nodes_idx": "node_names", "nz": "requests"}
        new._cache.update({k: v for k, v in self._cache.items() if keep.get(k, "?") not in changes})
        return new

    @property
    def rank(self) -> I64:
        """Each node's position in natural name order (ties go to the lower rank)."""
        if "rank" not in self._cache:
            order = sorted(range(self.n_nodes), key=lambda i: natural_key(self.node_names[i]))
            rank = np.empty(self.n_nodes, dtype=np.int64)
            rank[np.array(order, dtype=np.int64)] = np.arange(self.n_nodes)
            self._cache["rank"] = rank
        return self._cache["rank"]  # type: ignore[no-any-return]

    def node_index(self, name: str) -> int:
        if "nodes_idx" not in self._cache:
            self._cache["nodes_idx"] = {n: i for i, n in enumerate(self.node_names)}
        return int(self._cache["nodes_idx"][name])

    @property
    def nonzero_requests(self) -> I64:
        """Requests as kube-scheduler's scorers count them (unset cpu/memory: 100m / 200Mi)."""
        cached = self._cache.get("nz")
        if cached is None or cached[0] is not self.requests:
            defaults = np.array([DEFAULT_MILLI_CPU_REQUEST, DEFAULT_MEMORY_REQUEST], dtype=np.int64)
            cached = (self.requests, np.where(self.requests > 0, self.requests, defaults))
            self._cache["nz"] = cached
        return cached[1]

    def requested(self, assign: I64 | None = None, nonzero: bool = False) -> I64:
        """Sum of requests per node (``nonzero``: with kube-scheduler's defaults for unset ones)."""
        where = self.node if assign is None else assign
        placed = where >= 0
        values = (self.nonzero_requests if nonzero else self.requests)[placed]
        # float64 sums of integers are exact below 2**53 (8 PiB of memory on one node)
        out = np.empty((self.n_nodes, 2), dtype=np.int64)
        for r in (CPU, MEM):
            out[:, r] = np.bincount(where[placed], values[:, r], minlength=self.n_nodes)
        return out

    def node_usage(self, assign: I64 | None = None) -> F64:
        """Measured usage per node: what its containers use plus what no container accounts for."""
        where = self.node if assign is None else assign
        placed = where >= 0
        out = self.base_usage.copy()
        for r in (CPU, MEM):
            out[:, r] += np.bincount(where[placed], self.usage[placed, r], minlength=self.n_nodes)
        return out

    def pods(self, assign: I64 | None = None) -> I64:
        where = self.node if assign is None else assign
        return np.bincount(where[where >= 0], minlength=self.n_nodes).astype(np.int64)

    def latency_rows(self, rows: I64) -> F64:
        """``D[rows, :]``: latency (ms) from each node in ``rows`` to every node."""
        if self.latency is not None:
            return self.latency[rows]
        if self.positions is None:
            return np.zeros((len(rows), self.n_nodes))
        diff = self.positions[rows, None, :] - self.positions[None, :, :]
        d = self.hop_ms + self.ms_per_km * np.sqrt(np.sum(diff**2, axis=2))
        d[rows[:, None] == np.arange(self.n_nodes)[None, :]] = 0.0
        return np.asarray(d, dtype=np.float64)

    def latency_pairs(self, a: I64, b: I64) -> F64:
        """``D[a[i], b[i]]`` elementwise."""
        if self.latency is not None:
            return np.take(self.latency, a * self.n_nodes + b)
        if self.positions is None:
            return np.zeros(len(a))
        dist = np.sqrt(np.sum((self.positions[a] - self.positions[b]) ** 2, axis=1))
        return np.where(a == b, 0.0, self.hop_ms + self.ms_per_km * dist)

    def users_of(self) -> tuple[I64, I64]:
        """Users grouped by container: ``(order, starts)`` with container ``c``'s users at
        ``order[starts[c]:starts[c + 1]]``."""
        if "users" not in self._cache:
            order = np.argsort(self.user_container, kind="stable").astype(np.int64)
            starts = np.searchsorted(self.user_container[order], np.arange(self.n_containers + 1))
            self._cache["users"] = (order, starts.astype(np.int64))
        return self._cache["users"]  # type: ignore[no-any-return]

    def container_rate(self) -> F64:
        """Total request rate of each container's users."""
        return np.bincount(self.user_container, self.user_rate, minlength=self.n_containers).astype(
            np.float64
        )

    def container_latency(self, containers: I64) -> F64:
        """Rate-weighted mean latency (ms) of each container's users if it ran on each node,
        shape ``(len(containers), N)``; 0 for a container without users."""
        order, starts = self.users_of()
        out = np.zeros((len(containers), self.n_nodes))
        lo, hi = starts[containers], starts[containers + 1]
        has = hi > lo
        if not np.any(has):
            return out
        counts = (hi - lo)[has]
        seg = np.repeat(np.arange(len(counts)), counts)
        starts_seg = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        users = order[lo[has][seg] + np.arange(len(seg)) - starts_seg[seg]]
        w = self.user_rate[users]
        total = np.bincount(seg, w)
        w = w / np.where(total > 0, total, 1.0)[seg]
        rows = (self.latency_rows(self.user_node[users]) + self.user_access_ms[users, None]) * w[:, None]
        out[has] = np.add.reduceat(rows, starts_seg, axis=0)
        return out

    def served_latency(self, assign: I64 | None = None) -> tuple[F64, F64]:
        """Per container, its users' rate-weighted mean latency as placed, and the floor of that
        (their access latency alone: served on their nearest node); 0 without users."""
        rate = self.container_rate()
        share = self.user_rate / np.where(rate > 0, rate, 1.0)[self.user_container]
        lat = self.user_latency(assign)
        now = np.bincount(
            self.user_container, share * np.where(np.isfinite(lat), lat, 0.0), self.n_containers
        )
        floor = np.bincount(self.user_container, share * self.user_access_ms, minlength=self.n_containers)
        return now.astype(np.float64), floor.astype(np.float64)

    def user_latency(self, assign: I64 | None = None) -> F64:
        """Network latency (ms) of every user to the node serving it (``inf`` if unplaced)."""
        where = (self.node if assign is None else assign)[self.user_container]
        served = where >= 0
        lat = np.full(len(where), np.inf)
        lat[served] = self.user_access_ms[served] + self.latency_pairs(self.user_node[served], where[served])
        return lat
