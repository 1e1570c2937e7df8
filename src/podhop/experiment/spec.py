"""The experiment spec: one YAML file that says what to run, validated before anything runs.

Why: an experiment is only reproducible if everything that shapes its numbers
— cluster size, workload, load, which pod moves where and how, how often —
is written down in one file that can be versioned and re-run. The file is
parsed into the pydantic models below (each field documented with its unit
and default) and checked completely before a cluster is touched; an error
names the key (``load.concurrency``) and what was expected, so a typo costs
seconds, not a half-built cluster.

Manifest paths are relative to the spec file. Sizes use Kubernetes
quantities (``500m``, ``2Gi``) and tc rates (``100mbit``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from podhop.errors import ManifestError
from podhop.migrate.plan import Strategy
from podhop.net.shaping import parse_rate
from podhop.objects.quantity import parse_cpu, parse_memory

#: ``migration.pod`` values that pick the pod from measured metrics.
POD_RULES = ("hottest-cpu", "hottest-memory")
#: ``migration.target`` values that pick the node from measured metrics.
TARGET_RULES = ("least-loaded",)
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class SpecError(ManifestError):
    """An experiment spec is invalid; the message names the key and what was expected."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterSpec(_Model):
    """The cluster to run on: created for the run (and deleted after), or an existing one reused —
    a podhop cluster by name, or any Kubernetes cluster by kubeconfig."""

    kind: Literal["local", "kubernetes"] = Field(
        default="local",
        description="Kind of the cluster created for the run: `local` (podhop's own nodes) or "
        "`kubernetes` (real kubelets, containerd and API server on this machine).",
    )
    name: str | None = Field(
        default=None,
        description="Cluster name. If it exists it is reused as is; default: a new `exp-…` cluster.",
    )
    kubeconfig: str | None = Field(
        default=None,
        description="Run on the cluster this kubeconfig names (EKS, say), reused as is; "
        "relative to the spec; `~` is expanded.",
    )
    context: str | None = Field(
        default=None, description="The kubeconfig's context; default: its current one."
    )
    nodes: int = Field(
        default=3, ge=2, le=50, description="Number of nodes (≥ 2: a migration needs a target)."
    )
    node_cpu: str = Field(default="1", description="CPU budget per node, a quantity: `1`, `500m`.")
    node_memory: str = Field(default="2Gi", description="Memory budget per node, a quantity: `2Gi`, `512Mi`.")
    link_bandwidth: str | None = Field(
        default=None, description="Cap on each node's link (`1gbit`); none = uncapped."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 24 or not _NAME.fullmatch(v)):
            raise ValueError("expected 1-24 lowercase letters, digits and '-'")
        return v

    @model_validator(mode="after")
    def _one_way(self) -> ClusterSpec:
        if self.kubeconfig is not None and self.name is not None:
            raise ValueError("give either name (a podhop cluster) or kubeconfig (any cluster), not both")
        if self.context is not None and self.kubeconfig is None:
            raise ValueError("context needs kubeconfig")
        return self

    @field_validator("node_cpu")
    @classmethod
    def _cpu(cls, v: str) -> str:
        if parse_cpu(v) < 100:
            raise ValueError("expected at least 100m")
        return v

    @field_validator("node_memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        if parse_memory(v) < 64 * 2**20:
            raise ValueError("expected at least 64Mi")
        return v

    @field_validator("link_bandwidth")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is not None:
            parse_rate(v)
        return v

    @property
    def cpu_m(self) -> int:
        return parse_cpu(self.node_cpu)

    @property
    def memory_b(self) -> int:
        return parse_memory(self.node_memory)

    @property
    def bandwidth_bps(self) -> int | None:
        return parse_rate(self.link_bandwidth) if self.link_bandwidth else None


class PodCommand(_Model):
    """A command run (``podhop exec``-style) in the first running pod whose labels match."""

    selector: dict[str, str] = Field(description="Labels the pod must carry, e.g. `{app: redis}`.")
    command: list[str] = Field(min_length=1, description="argv run in the pod's first container.")


class WorkloadSpec(_Model):
    """What to deploy and how to prepare it."""

    manifests: list[str] = Field(min_length=1, description="Kubernetes YAML files, relative to the spec.")
    prepare: list[PodCommand] = Field(
        default_factory=list, description="Commands run once after deploying (e.g. load data into Redis)."
    )


class LoadSpec(_Model):
    """The `hey` load: the same settings for the baseline, during and after phases.

    Baseline and after send ``requests`` requests each (``hey -n``). The during phase must
    span the migration, whose length is not known in advance, so it sends enough requests
    to last ``during_s`` seconds at the baseline's measured rate (at least ``requests``,
    at most ``max_requests``); the migration's own CPU use slows the load, so it lasts
    at least that long. hey's CSV leaves out requests that got no answer, so errors are
    counted as requests sent minus answers, plus answers with status ≥ 400: that is
    exact because every phase is bounded by count, and every count is rounded up to a
    multiple of ``concurrency`` (hey's workers each send ``⌊n/c⌋``, so any other count
    is not what hey sends). Every run is also bounded in time
    (``max_phase_s``): hey is interrupted there, and the phase is marked truncated.
    """

    service: str = Field(description="Service the load (and by default the probe) is sent to.")
    namespace: str = Field(default="default", description="The service's namespace.")
    via: Literal["cluster-ip", "load-balancer"] = Field(
        default="cluster-ip",
        description="`cluster-ip`: the service VIP; `load-balancer`: its `127.0.0.1` port (the seed's ELB).",
    )
    path: str = Field(default="/", description="HTTP path requested.")
    requests: int = Field(default=10000, ge=1, le=1_000_000, description="Requests per phase (`hey -n`).")
    concurrency: int = Field(default=100, ge=1, le=1000, description="Concurrent workers (`hey -c`).")
    qps: float | None = Field(
        default=None, gt=0, description="Total rate limit, requests/s (`hey -q` × workers)."
    )
    request_timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="Per-request timeout (`hey -t`), s."
    )
    during_s: float = Field(default=10.0, gt=0, le=600, description="Target length of the during phase, s.")
    max_requests: int = Field(
        default=200_000, ge=1, le=5_000_000, description="Cap on the during phase's requests."
    )
    max_phase_s: float = Field(
        default=60.0, gt=0, le=3600, description="Hard time bound of any one hey run, s."
    )
    warmup_requests: int = Field(
        default=200, ge=0, le=100_000, description="Requests sent once before measuring."
    )
    settle_s: float = Field(default=1.0, ge=0, le=60, description="Pause between phases, s.")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("expected a path starting with '/'")
        return v

    @model_validator(mode="after")
    def _counts(self) -> LoadSpec:
        if self.requests < self.concurrency:
            raise ValueError(f"requests ({self.requests}) must be at least concurrency ({self.concurrency})")
        return self


class ProbeSpec(_Model):
    """The availability probe: a fresh connection per attempt, every attempt recorded."""

    service: str | None = Field(default=None, description="Service probed; default: `load.service`.")
    rate_hz: float = Field(default=200.0, ge=200, le=2000, description="Attempts per second (≥ 200).")
    timeout_s: float = Field(default=1.0, gt=0, le=10, description="Per-attempt timeout, s.")


class MigrationSpec(_Model):
    """Which pod moves, where, how, and when relative to the load."""

    pod: str = Field(
        default="hottest-cpu",
        description="A pod name, or `hottest-cpu` / `hottest-memory` (highest mean during the baseline).",
    )
    selector: dict[str, str] = Field(
        default_factory=dict, description="Only pods with these labels are candidates for `hottest-*`."
    )
    target: str = Field(
        default="least-loaded",
        description="A node name, or `least-loaded` (lowest dominant share of CPU/memory in the baseline).",
    )
    strategy: Strategy = Field(default=Strategy.CLONE, description="cold | clone | postcopy | precopy.")
    start_after_s: float = Field(
        default=1.0, ge=0, le=600, description="Seconds into the during phase to start."
    )
    timeout_s: float = Field(
        default=120.0, gt=0, le=3600, description="Give up (and roll back) after this, s."
    )
    verify: list[str] | None = Field(
        default=None, description="Command run in the pod before and after; equal output = state preserved."
    )


class ExperimentSpec(_Model):
    """A whole experiment."""

    name: str = Field(description="Short name, used in the results folder's name.")
    description: str = Field(default="", description="Free text copied into the report.")
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    workload: WorkloadSpec
    load: LoadSpec
    probe: ProbeSpec = Field(default_factory=ProbeSpec)
    migration: MigrationSpec = Field(default_factory=MigrationSpec)
    repetitions: int = Field(
        default=1, ge=1, le=50, description="Baseline/during/after cycles, each with a migration."
    )
    output: str | None = Field(
        default=None,
        description="Results folder (relative to the current directory); default `results/<time>-<name>`.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][-_.A-Za-z0-9]{0,62}", v):
            raise ValueError("expected letters, digits, '-', '_' or '.' (at most 63)")
        return v

    @model_validator(mode="after")
    def _rules(self) -> ExperimentSpec:
        if self.migration.target not in TARGET_RULES and not re.fullmatch(r"node-\d+", self.migration.target):
            raise ValueError(
                f"migration.target: expected a node name (node-N) or one of {', '.join(TARGET_RULES)}, "
                f"got {self.migration.target!r}"
            )
        if self.migration.target not in TARGET_RULES:
            index = int(self.migration.target.split("-")[1])
            if self.cluster.name is None and not 1 <= index <= self.cluster.nodes:
                raise ValueError(
                    f"migration.target: {self.migration.target} does not exist in a "
                    f"{self.cluster.nodes}-node cluster"
                )
        if self.migration.pod not in POD_RULES and self.migration.selector:
            raise ValueError("migration.selector: only used with pod: hottest-cpu or hottest-memory")
        return self

    @property
    def probe_service(self) -> str:
        return self.probe.service or self.load.service


def _where(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]" if parts else f"[{p}]"]
        else:
            parts.append(p)
    return ".".join(parts) or "(top level)"


def _message(err: Any) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    return str(msg).removeprefix("Value error, ")


def _known_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model at ``loc`` (minus its last element) accepts, for 'unknown key' errors."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = (
            current.model_fields.get(part)
            if isinstance(current, type) and issubclass(current, BaseModel)
            else None
        )
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        current = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return []
    return (
        sorted(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []
    )


def parse_spec(data: Any, source: str = "<spec>") -> ExperimentSpec:
    """Validate already-loaded YAML data; raise :class:`SpecError` naming every bad key."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of keys (name, cluster, workload, load, ...)")
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = f"{_where(loc)}: {_message(err)}"
            if err["type"] == "extra_forbidden":
                keys = _known_keys(ExperimentSpec, loc)
                line += f" (expected one of: {', '.join(keys)})" if keys else ""
            elif err["type"] not in ("missing", "value_error") and "input" in err:
                line += f" (got {err['input']!r})"
            lines.append(line)
        raise SpecError(f"{source}: invalid experiment spec: " + "; ".join(lines)) from None


def load_spec(path: str | Path) -> tuple[ExperimentSpec, str]:
    """Read and validate a spec file; return it with its text. Checks that manifests exist."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{p}: cannot read experiment spec: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{p}: not valid YAML: {exc}") from exc
    spec = parse_spec(data, str(p))
    for i, m in enumerate(spec.workload.manifests):
        if not manifest_path(p, m).is_file():
            raise SpecError(
                f"{p}: workload.manifests[{i}]: file {m!r} not found (paths are relative to the spec)"
            )
    kubeconfig = spec_kubeconfig(p, spec)
    if kubeconfig is not None and not kubeconfig.is_file():
        raise SpecError(f"{p}: cluster.kubeconfig: file {spec.cluster.kubeconfig!r} not found")
    return spec, text


def spec_kubeconfig(spec_path: str | Path, spec: ExperimentSpec) -> Path | None:
    """``cluster.kubeconfig`` resolved (``~`` expanded, relative to the spec's folder), if given."""
    if spec.cluster.kubeconfig is None:
        return None
    return manifest_path(spec_path, str(Path(spec.cluster.kubeconfig).expanduser()))


def manifest_path(spec_path: str | Path, manifest: str) -> Path:
    """A manifest path from the spec, resolved against the spec file's folder."""
    m = Path(manifest)
    return m if m.is_absolute() else Path(spec_path).resolve().parent / m
