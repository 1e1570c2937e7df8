"""The simulation spec: one documented, validated model of an edge scenario (``podhop simulate SPEC``).

Why: a simulation is only worth comparing if it can be repeated exactly, so
everything that shapes it — topology, services, users and their movement,
load, the policies compared, the price of a migration, the objective's
weights and the seed — lives in one YAML file, validated once, with a unit
and a default for every field (the sizes of EdgeSimPy's published case
studies, 60 servers and 240 services, are in the same range as the defaults).
Command-line options override it (:meth:`SimSpec.with_overrides`).
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from podhop.errors import ManifestError
from podhop.objects.quantity import parse_cpu, parse_memory
from podhop.policies.costmodel import DEFAULT_STRATEGY, Strategy
from podhop.policies.registry import POLICIES

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(bit|bps)?(?:/s)?\s*")
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_bandwidth(text: str | int | float) -> float:
    """``"100mbit"``, ``"1gbit"``, ``"125Mbps"`` (bytes/s) or a number of bit/s → bit/s."""
    if isinstance(text, int | float):
        return float(text)
    m = _RATE.fullmatch(text.lower())
    if not m:
        raise ValueError(f"invalid bandwidth {text!r}: use e.g. 100mbit, 1gbit")
    value = Decimal(m.group(1)) * _UNITS[m.group(2)] * (8 if m.group(3) == "bps" else 1)
    return float(value)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeType(_Model):
    """A kind of edge node; ``weight`` is its share of the generated nodes."""

    cpu: str | int = "4"  # allocatable CPU (cores or millicores, as in Kubernetes)
    memory: str = "8Gi"  # allocatable memory
    bandwidth: str = "1gbit"  # the node's link
    idle_w: float = 60.0  # power at 0 % CPU (W)
    max_w: float = 150.0  # power at 100 % CPU (W)
    max_pods: int = 110
    weight: float = 1.0

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: str | int) -> str | int:
        parse_cpu(v)
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        parse_memory(v)
        return v

    @field_validator("bandwidth")
    @classmethod
    def _bandwidth(cls, v: str) -> str:
        parse_bandwidth(v)
        return v


def _default_types() -> list[NodeType]:
    return [
        NodeType(cpu="2", memory="4Gi", bandwidth="100mbit", idle_w=30, max_w=70, weight=2),
        NodeType(cpu="4", memory="8Gi", bandwidth="1gbit", idle_w=60, max_w=150, weight=2),
        NodeType(cpu="8", memory="16Gi", bandwidth="1gbit", idle_w=90, max_w=250, weight=1),
    ]


class TopologySpec(_Model):
    """Where the edge nodes are and how far apart (in latency) they are."""

    layout: Literal["grid", "random"] = "grid"  # grid, or random geometric (radius graph)
    area_km: float = Field(default=10.0, gt=0)  # side of the square area
    node_types: list[NodeType] = Field(default_factory=_default_types)
    hop_ms: float = Field(default=2.0, ge=0)  # per link crossed
    ms_per_km: float = Field(default=0.05, ge=0)  # propagation and queuing per km of link
    radius_factor: float = Field(
        default=1.5, gt=0
    )  # random layout: link radius, times the connectivity radius
    nodes_csv: Path | None = None  # name,x,y,cpu,memory[,bandwidth,idle_w,max_w]: instead of generating
    links_csv: Path | None = None  # a,b,latency_ms: explicit links (shortest paths)


class ServiceSpec(_Model):
    """What each service requests, uses and carries as state."""

    cpu_m: tuple[int, int] = (100, 1000)  # request, uniform in this range (millicores)
    memory_mib: tuple[int, int] = (64, 512)  # request, uniform (MiB)
    state_fraction: tuple[float, float] = (0.05, 0.3)  # state (what migrates) / memory request
    cpu_per_rps_m: float = Field(default=10.0, ge=0)  # CPU used per request/s (millicores)
    idle_cpu_fraction: float = Field(default=0.1, ge=0)  # CPU used with no load, as a fraction of the request
    popularity: float = Field(default=0.8, ge=0)  # Zipf exponent of how users pick services (0: uniform)
    replicas: int = Field(default=1, ge=1)  # containers per service; users go to the nearest replica
    csv: Path | None = None  # name,cpu,memory[,state]: instead of generating


class UserSpec(_Model):
    """Users: random waypoint movement and the requests they send."""

    speed_kmh: tuple[float, float] = (3.0, 60.0)  # uniform per trip
    pause_steps: tuple[int, int] = (0, 20)  # pause at each waypoint, uniform
    rate_rps: tuple[float, float] = (0.5, 4.0)  # requests/s, uniform per user
    access_ms: tuple[float, float] = (2.0, 8.0)  # radio access latency, uniform per user
    csv: Path | None = None  # name,service,x,y[,rate,speed_kmh]: initial users instead of generating


class LoadSpec(_Model):
    """Each service's load multiplier: ``1 + amplitude · sin(2π t / period + phase)``."""

    amplitude: float = Field(default=0.5, ge=0, le=1)
    period_steps: int = Field(default=360, ge=1)


class WeightsSpec(_Model):
    """The objective's weights (see :class:`podhop.policies.objective.Weights`)."""

    latency: float = 1.0
    migration: float = 1.0
    per_migration: float = 0.01
    imbalance: float = 0.05
    overload: float = 0.5
    target_utilisation: float = 80.0
    energy: float = 0.02
    unplaced: float = 1000.0
    horizon_s: float = 60.0


class SimSpec(_Model):
    """A simulation: ``steps`` discrete steps of ``step_s`` seconds, every policy on the same world."""

    seed: int = 1
    nodes: int = Field(default=50, ge=1)
    services: int = Field(default=200, ge=1)
    users: int = Field(default=1000, ge=0)
    steps: int = Field(default=360, ge=1)
    step_s: float = Field(default=10.0, gt=0)
    policies: list[str] = Field(
        default_factory=lambda: [
            "least-allocated",
            "latency-aware",
            "mobility",
            "low-utilization",
            "hottest",
            "ilp",
        ]
    )
    policy_options: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per policy, e.g. thresholds
    rebalance_every: int = Field(default=1, ge=1)  # steps between migration decisions
    ilp_every: int = Field(default=10, ge=1)  # steps between ILP re-optimisations
    max_migrations_per_step: int | None = 50  # cap for triggers that accept one
    strategy: Strategy = DEFAULT_STRATEGY
    cost_model: Path | None = None  # JSON from `podhop calibrate` (default: the measured, shipped one)
    sla_ms: float = Field(default=50.0, gt=0)  # a request slower than this violates the SLA
    service_ms: float = Field(default=5.0, ge=0)  # processing time on an idle node
    max_utilisation: float = Field(default=0.95, gt=0, lt=1)  # queueing delay is capped at this utilisation
    weights: WeightsSpec = Field(default_factory=WeightsSpec)
    topology: TopologySpec = Field(default_factory=TopologySpec)
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    user: UserSpec = Field(default_factory=UserSpec)
    load: LoadSpec = Field(default_factory=LoadSpec)

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: list[str]) -> list[str]:
        unknown = [p for p in v if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown policies {', '.join(unknown)} (choose from {', '.join(POLICIES)})")
        if len(set(v)) != len(v) or not v:
            raise ValueError("list each policy once, and at least one")
        return v

    def with_overrides(self, **overrides: Any) -> SimSpec:
        """A copy with the options given on the command line (``None`` means "not given")."""
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            return SimSpec.model_validate({**self.model_dump(), **given})
        except ValidationError as exc:
            raise ManifestError(f"invalid simulation options: {_errors(exc)}") from exc


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())


def load_spec(path: Path | None) -> SimSpec:
    """The spec in ``path`` (YAML), or the defaults; relative CSV paths are relative to the file."""
    if path is None:
        return SimSpec()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"cannot read simulation spec {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a simulation spec is a mapping of fields")
    for section, keys in (
        ("topology", ("nodes_csv", "links_csv")),
        ("service", ("csv",)),
        ("user", ("csv",)),
    ):
        part = data.get(section)
        for key in keys:
            if (
                isinstance(part, dict)
                and isinstance(part.get(key), str)
                and not Path(part[key]).is_absolute()
            ):
                part[key] = str(path.parent / part[key])
    if isinstance(data.get("cost_model"), str) and not Path(data["cost_model"]).is_absolute():
        data["cost_model"] = str(path.parent / data["cost_model"])
    try:
        return SimSpec.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(f"{path}: {_errors(exc)}") from exc
