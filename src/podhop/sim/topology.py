"""The simulated edge: nodes, links, services and users — generated from a seed or loaded from CSV.

Why: policies are compared on a *world*, and every policy must face the same
one. A :class:`World` is that world as arrays, built once per run from the
spec's seed: edge nodes on a grid or a random geometric graph (nodes linked
when closer than a radius, as in the usual models of edge deployments), node
kinds with capacities, link bandwidth and a linear power model; services with
CPU/memory requests and state sizes; users placed uniformly, each using one
service picked with Zipf popularity (a few hot services make hot spots).

Latency between nodes is the shortest path over links, each link costing
``hop_ms + ms_per_km · length``: on a grid that is the Manhattan hop count; on
a random geometric graph (radius ``radius_factor`` times the usual
connectivity radius, ``area · sqrt(ln N / (π N))``; components left apart are
joined by their closest pairs) it is computed exactly (Floyd–Warshall) up to
1,500 nodes. Beyond that (and beyond 3,000 nodes on a grid) a dense matrix would not
fit, and latency becomes ``hop_ms + ms_per_km · distance`` between positions.
A migration's bandwidth is the smaller of its two nodes' link bandwidths.

CSV (``topology.nodes_csv`` etc.) replaces generation: ``nodes.csv`` has
``name,x,y,cpu,memory`` and optionally ``bandwidth,idle_w,max_w,max_pods``;
``links.csv`` ``a,b,latency_ms``; ``services.csv`` ``name,cpu,memory`` and
optionally ``state`` (bytes or a quantity); ``users.csv`` ``name,service,x,y``
and optionally ``rate``. Positions are in km.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from podhop.errors import ManifestError
from podhop.objects.quantity import MI, parse_cpu, parse_memory
from podhop.policies.snapshot import F64, I64, UNPLACED, Arrays, Bools
from podhop.sim.spec import SimSpec, parse_bandwidth

MAX_DENSE_GRID = 3000
MAX_DENSE_GRAPH = 1500


@dataclass(eq=False)
class World:
    """Everything static about a run (users' initial state included)."""

    node_names: tuple[str, ...]
    capacity: I64
    bandwidth_bps: F64
    idle_w: F64
    max_w: F64
    max_pods: I64
    positions: F64
    latency: F64 | None
    hop_ms: float
    ms_per_km: float
    area_km: float
    service_names: tuple[str, ...]
    container_names: tuple[str, ...]
    container_service: I64
    requests: I64
    state_bytes: F64
    user_service: I64
    user_pos: F64
    user_rate: F64
    user_access_ms: F64

    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    def arrays(self) -> Arrays:
        """A policy's view of this world with nothing placed and no users (the engine fills those)."""
        c = len(self.container_names)
        empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
        return Arrays(
            node_names=self.node_names,
            capacity=self.capacity,
            bandwidth_bps=self.bandwidth_bps,
            idle_w=self.idle_w,
            max_w=self.max_w,
            max_pods=self.max_pods,
            base_usage=np.zeros((self.n_nodes, 2)),
            container_names=self.container_names,
            requests=self.requests,
            usage=np.zeros((c, 2)),
            state_bytes=self.state_bytes,
            node=np.full(c, UNPLACED, dtype=np.int64),
            priority=np.zeros(c, dtype=np.int64),
            movable=np.ones(c, dtype=np.bool_),
            user_container=empty_i,
            user_node=empty_i,
            user_prev_node=empty_i,
            user_rate=empty_f,
            user_access_ms=empty_f,
            positions=self.positions,
            latency=self.latency,
            hop_ms=self.hop_ms,
            ms_per_km=self.ms_per_km,
        )


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from exc
    missing = [k for k in required if rows and k not in rows[0]]
    if not rows or missing:
        raise ManifestError(f"{path}: needs a header and rows with columns {', '.join(required)}")
    return rows


def _floyd_warshall(d: F64) -> F64:
    for k in range(len(d)):
        np.minimum(d, d[:, k, None] + d[None, k, :], out=d)
    return d


def _grid(n: int, area: float) -> tuple[F64, float]:
    cols = math.ceil(math.sqrt(n))
    spacing = area / cols
    idx = np.arange(n)
    return np.stack([(idx % cols + 0.5) * spacing, (idx // cols + 0.5) * spacing], axis=1), spacing


def _random_graph(rng: np.random.Generator, n: int, spec: SimSpec) -> tuple[F64, F64 | None]:
    topo = spec.topology
    pos = rng.uniform(0.0, topo.area_km, size=(n, 2))
    if n > MAX_DENSE_GRAPH:
        return pos, None
    dist = np.sqrt(np.sum((pos[:, None, :] - pos[None, :, :]) ** 2, axis=2))
    radius = topo.radius_factor * topo.area_km * math.sqrt(math.log(max(n, 2)) / (math.pi * max(n, 2)))
    adjacent = dist <= radius
    while True:  # link every component to its closest other one (Borůvka rounds) until connected
        label = _components(adjacent)
        if np.all(label == label[0]):
            break
        apart = np.where(label[:, None] != label[None, :], dist, np.inf)
        nearest = np.argmin(apart, axis=1)
        gap = apart[np.arange(n), nearest]
        for comp in np.unique(label).tolist():
            members = np.flatnonzero(label == comp)
            a = int(members[np.argmin(gap[members])])
            adjacent[a, nearest[a]] = adjacent[nearest[a], a] = True
    link = np.where(adjacent, topo.hop_ms + topo.ms_per_km * dist, np.inf)
    np.fill_diagonal(link, 0.0)
    return pos, _floyd_warshall(link)


def _components(adjacent: Bools) -> I64:
    """Connected-component label of each node (the smallest index in its component)."""
    label = np.arange(len(adjacent), dtype=np.int64)
    while True:
        spread = np.where(adjacent, label[None, :], len(label)).min(axis=1)
        new = np.minimum(label, spread)
        if np.array_equal(new, label):
            return label
        label = new


@dataclass
class _Nodes:
    names: tuple[str, ...]
    pos: F64
    cap: I64
    bw: F64
    idle: F64
    max: F64
    pods: I64
    lat: F64 | None


def _nodes(rng: np.random.Generator, spec: SimSpec) -> _Nodes:
    topo = spec.topology
    if topo.nodes_csv is not None:
        rows = _read_csv(topo.nodes_csv, ("name", "x", "y", "cpu", "memory"))
        try:
            names = tuple(r["name"] for r in rows)
            pos = np.array([[float(r["x"]), float(r["y"])] for r in rows])
            cap = np.array([[parse_cpu(r["cpu"]), parse_memory(r["memory"])] for r in rows], dtype=np.int64)
            bw = np.array([parse_bandwidth(r.get("bandwidth") or "1gbit") for r in rows])
            idle = np.array([float(r.get("idle_w") or 60) for r in rows])
            peak = np.array([float(r.get("max_w") or 150) for r in rows])
            pods = np.array([int(r.get("max_pods") or 110) for r in rows], dtype=np.int64)
        except (KeyError, ValueError) as exc:
            raise ManifestError(f"{topo.nodes_csv}: {exc}") from exc
        lat: F64 | None = None
        if topo.links_csv is not None:
            index = {name: i for i, name in enumerate(names)}
            d = np.full((len(names), len(names)), np.inf)
            np.fill_diagonal(d, 0.0)
            for r in _read_csv(topo.links_csv, ("a", "b", "latency_ms")):
                if r["a"] not in index or r["b"] not in index:
                    raise ManifestError(f"{topo.links_csv}: link {r['a']}-{r['b']} names an unknown node")
                a, b = index[r["a"]], index[r["b"]]
                d[a, b] = d[b, a] = min(d[a, b], float(r["latency_ms"]))
            d = _floyd_warshall(d)
            lat = np.where(np.isfinite(d), d, 1e6)
        return _Nodes(names, pos, cap, bw, idle, peak, pods, lat)
    n = spec.nodes
    weights = np.array([t.weight for t in topo.node_types])
    kind = rng.choice(len(weights), size=n, p=weights / weights.sum())
    types = topo.node_types
    table = np.array([[parse_cpu(t.cpu), parse_memory(t.memory)] for t in types], dtype=np.int64)
    if topo.layout == "grid":
        pos, spacing = _grid(n, topo.area_km)
        lat = None
        if n <= MAX_DENSE_GRID:
            hops = np.abs(pos[:, None, :] - pos[None, :, :]).sum(axis=2) / spacing
            lat = np.round(hops) * (topo.hop_ms + topo.ms_per_km * spacing)
    else:
        pos, lat = _random_graph(rng, n, spec)
    return _Nodes(
        names=tuple(f"edge-{i + 1}" for i in range(n)),
        pos=pos,
        cap=table[kind],
        bw=np.array([parse_bandwidth(t.bandwidth) for t in types])[kind],
        idle=np.array([t.idle_w for t in types], dtype=np.float64)[kind],
        max=np.array([t.max_w for t in types], dtype=np.float64)[kind],
        pods=np.array([t.max_pods for t in types], dtype=np.int64)[kind],
        lat=lat,
    )


def build_world(spec: SimSpec) -> World:
    """Generate (or load) the world of ``spec``; the same spec always gives the same world."""
    rng_nodes, rng_services, rng_users = (
        np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(3)
    )
    nodes = _nodes(rng_nodes, spec)
    pos = nodes.pos
    area = spec.topology.area_km
    if spec.topology.nodes_csv is not None:
        area = float(max(pos.max(initial=0.0), 1e-9))
    svc = spec.service
    if svc.csv is not None:
        rows = _read_csv(svc.csv, ("name", "cpu", "memory"))
        try:
            service_names = tuple(r["name"] for r in rows)
            sreq = np.array([[parse_cpu(r["cpu"]), parse_memory(r["memory"])] for r in rows], dtype=np.int64)
            sstate = np.array([float(parse_memory(r.get("state") or r["memory"])) for r in rows])
        except (KeyError, ValueError) as exc:
            raise ManifestError(f"{svc.csv}: {exc}") from exc
    else:
        s = spec.services
        service_names = tuple(f"svc-{i + 1}" for i in range(s))
        cpu = rng_services.integers(svc.cpu_m[0] // 10, svc.cpu_m[1] // 10 + 1, size=s) * 10
        mem = rng_services.integers(svc.memory_mib[0], svc.memory_mib[1] + 1, size=s) * MI
        sreq = np.stack([cpu, mem], axis=1).astype(np.int64)
        sstate = mem * rng_services.uniform(*svc.state_fraction, size=s)
    r = svc.replicas
    container_service = np.repeat(np.arange(len(service_names)), r).astype(np.int64)
    names = tuple(
        f"{service_names[i]}-{k}" if r > 1 else service_names[i]
        for i in range(len(service_names))
        for k in range(r)
    )
    usr = spec.user
    if usr.csv is not None:
        rows = _read_csv(usr.csv, ("name", "service", "x", "y"))
        index = {n: i for i, n in enumerate(service_names)}
        try:
            user_service = np.array([index[row["service"]] for row in rows], dtype=np.int64)
            user_pos = np.array([[float(row["x"]), float(row["y"])] for row in rows])
            rate = np.array([float(row.get("rate") or np.mean(usr.rate_rps)) for row in rows])
        except (KeyError, ValueError) as exc:
            raise ManifestError(f"{usr.csv}: unknown service or bad number ({exc})") from exc
    else:
        u = spec.users
        pop = 1.0 / np.arange(1, len(service_names) + 1) ** svc.popularity
        user_service = rng_users.choice(len(service_names), size=u, p=pop / pop.sum()).astype(np.int64)
        user_pos = rng_users.uniform(0.0, area, size=(u, 2))
        rate = rng_users.uniform(*usr.rate_rps, size=u)
    access = rng_users.uniform(*usr.access_ms, size=len(user_service))
    return World(
        node_names=nodes.names,
        capacity=nodes.cap,
        bandwidth_bps=nodes.bw,
        idle_w=nodes.idle,
        max_w=nodes.max,
        max_pods=nodes.pods,
        positions=pos,
        latency=nodes.lat,
        hop_ms=spec.topology.hop_ms,
        ms_per_km=spec.topology.ms_per_km,
        area_km=area,
        service_names=service_names,
        container_names=names,
        container_service=container_service,
        requests=sreq[container_service],
        state_bytes=np.asarray(sstate, dtype=np.float64)[container_service],
        user_service=user_service,
        user_pos=user_pos,
        user_rate=rate,
        user_access_ms=access,
    )
