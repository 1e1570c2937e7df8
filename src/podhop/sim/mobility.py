"""Users on the move: random waypoint mobility and each user's nearest edge node.

Why: at the edge, a container that was next to its users is soon far from
them — Oleghe (IEEE Access 9, 2021) names user mobility as the main reason to
migrate. Random waypoint is the standard model (EdgeSimPy and iFogSim ship
it): each user walks or drives in a straight line at a speed drawn for the
trip to a uniformly drawn waypoint, pauses there, and sets off again.
Vectorised over all users, one step costs a few array operations.

The nearest node (where a user's traffic enters the edge) is looked up on a
raster of the area, 256 × 256 cells, each holding the node nearest to its
centre (computed once). Near a boundary between two nodes' regions the
answer can be the second nearest, by less than half a cell's diagonal — a
documented approximation that makes the lookup O(users) per step.
"""

from __future__ import annotations

import numpy as np

from podhop.policies.snapshot import F64, I64
from podhop.sim.spec import UserSpec

RASTER = 256


class Mobility:
    """The users' positions, trips and pauses; :meth:`step` advances them by ``step_s``."""

    def __init__(
        self,
        positions: F64,
        nodes: F64,
        area_km: float,
        spec: UserSpec,
        step_s: float,
        rng: np.random.Generator,
    ) -> None:
        self.pos = positions.copy()
        self.area = area_km
        self.spec = spec
        self.step_km_per_kmh = step_s / 3600.0
        self.rng = rng
        n = len(positions)
        self.dest = rng.uniform(0.0, area_km, size=(n, 2))
        self.speed = rng.uniform(*spec.speed_kmh, size=n) * self.step_km_per_kmh
        self.pause = np.zeros(n, dtype=np.int64)
        self.raster = nearest_raster(nodes, area_km)

    def step(self) -> None:
        """Move every user one step towards its waypoint (or let it rest)."""
        moving = self.pause == 0
        self.pause[~moving] -= 1
        delta = self.dest - self.pos
        dist = np.sqrt(np.sum(delta**2, axis=1))
        arrive = moving & (dist <= self.speed)
        go = moving & ~arrive
        self.pos[go] += delta[go] * (self.speed[go] / dist[go])[:, None]
        k = int(arrive.sum())
        if k:
            self.pos[arrive] = self.dest[arrive]
            self.dest[arrive] = self.rng.uniform(0.0, self.area, size=(k, 2))
            self.speed[arrive] = self.rng.uniform(*self.spec.speed_kmh, size=k) * self.step_km_per_kmh
            lo, hi = self.spec.pause_steps
            self.pause[arrive] = self.rng.integers(lo, hi + 1, size=k)

    def nearest(self) -> I64:
        """Each user's nearest node (on the raster)."""
        cell = np.clip((self.pos / max(self.area, 1e-12) * RASTER).astype(np.int64), 0, RASTER - 1)
        return self.raster[cell[:, 1], cell[:, 0]]


def nearest_raster(nodes: F64, area_km: float, cells: int = RASTER, chunk: int = 4096) -> I64:
    """For each cell of a ``cells`` × ``cells`` raster of the area, the node nearest its centre."""
    centres = (np.arange(cells) + 0.5) * area_km / cells
    xs, ys = np.meshgrid(centres, centres)  # raster[row = y, column = x]
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    out = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), chunk):
        p = points[start : start + chunk]
        d = np.sum(p**2, axis=1)[:, None] - 2.0 * p @ nodes.T + np.sum(nodes**2, axis=1)[None, :]
        out[start : start + chunk] = np.argmin(d, axis=1)
    return out.reshape(cells, cells)
