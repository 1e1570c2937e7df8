"""The immutable data model: what a Deployment, a Pod and a Service mean to podhop.

Why: the loader validates YAML once; after that every layer (scheduler,
backend, store, CLI) should handle plain, hashable, typed values that cannot
be mutated behind its back and cannot carry a field podhop does not support.
These frozen dataclasses are that contract. Maps (labels, selectors, node
selectors) are stored as sorted tuples of pairs so objects hash and compare by
value; each has a ``*_dict`` property for convenient lookups. Quantities are
already integers (millicores, bytes); zero means "not set".

``to_k8s()`` turns an object back into the Kubernetes-shaped manifest dict, so
``load_manifests(yaml.safe_dump(obj.to_k8s()))`` yields the same object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

from podhop.objects.quantity import cpu_quantity, memory_quantity

Pairs: TypeAlias = tuple[tuple[str, str], ...]
ServiceType: TypeAlias = Literal["ClusterIP", "LoadBalancer"]


def pairs(mapping: Mapping[str, str] | Iterable[tuple[str, str]]) -> Pairs:
    """Canonical (sorted) tuple-of-pairs form of a label map."""
    items = mapping.items() if isinstance(mapping, Mapping) else mapping
    return tuple(sorted((str(k), str(v)) for k, v in items))


@dataclass(frozen=True)
class Resources:
    """CPU in millicores and memory in bytes; 0 means "not set"."""

    cpu_m: int = 0
    memory_b: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_m + other.cpu_m, self.memory_b + other.memory_b)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu_m - other.cpu_m, self.memory_b - other.memory_b)

    @property
    def is_zero(self) -> bool:
        return self.cpu_m == 0 and self.memory_b == 0

    def to_k8s(self) -> dict[str, str]:
        """Quantity map (``{"cpu": "100m", "memory": "64Mi"}``), leaving out unset values."""
        out: dict[str, str] = {}
        if self.cpu_m:
            out["cpu"] = cpu_quantity(self.cpu_m)
        if self.memory_b:
            out["memory"] = memory_quantity(self.memory_b)
        return out


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    name: str | None = None

    def to_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {"containerPort": self.container_port, "protocol": self.protocol}
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class ContainerSpec:
    """One container. ``command``/``args`` of ``None`` mean "use the image's"."""

    name: str
    image: str
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    ports: tuple[ContainerPort, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    requests: Resources = Resources()
    limits: Resources = Resources()
    working_dir: str | None = None

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def to_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "image": self.image}
        if self.command is not None:
            out["command"] = list(self.command)
        if self.args is not None:
            out["args"] = list(self.args)
        if self.ports:
            out["ports"] = [p.to_k8s() for p in self.ports]
        if self.env:
            out["env"] = [{"name": k, "value": v} for k, v in self.env]
        resources = {k: v for k, v in (("requests", self.requests), ("limits", self.limits)) if not v.is_zero}
        if resources:
            out["resources"] = {k: v.to_k8s() for k, v in resources.items()}
        if self.working_dir is not None:
            out["workingDir"] = self.working_dir
        return out


@dataclass(frozen=True)
class PodSpec:
    containers: tuple[ContainerSpec, ...]
    node_selector: Pairs = ()

    @property
    def requests(self) -> Resources:
        """The pod's request: the sum over its containers (what the scheduler reserves)."""
        return sum((c.requests for c in self.containers), Resources())

    @property
    def limits(self) -> Resources:
        return sum((c.limits for c in self.containers), Resources())

    @property
    def node_selector_dict(self) -> dict[str, str]:
        return dict(self.node_selector)

    def port_by_name(self, name: str) -> int | None:
        """Resolve a named container port (a Service's ``targetPort: http``)."""
        for container in self.containers:
            for port in container.ports:
                if port.name == name:
                    return port.container_port
        return None

    def to_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {"containers": [c.to_k8s() for c in self.containers]}
        if self.node_selector:
            out["nodeSelector"] = dict(self.node_selector)
        return out


@dataclass(frozen=True)
class PodTemplate:
    labels: Pairs
    spec: PodSpec

    @property
    def labels_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class _Object:
    """Fields and helpers every top-level object shares (its ``metadata``)."""

    kind: ClassVar[str]
    api_version: ClassVar[str]

    name: str
    namespace: str
    labels: Pairs

    @property
    def labels_dict(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def key(self) -> tuple[str, str, str]:
        """``(kind, namespace, name)``: unique within a cluster."""
        return (self.kind, self.namespace, self.name)

    def to_k8s(self) -> dict[str, Any]:
        """The Kubernetes manifest (``apiVersion``, ``kind``, ``metadata``, ``spec``) as a dict."""
        raise NotImplementedError

    def _manifest(self, spec: dict[str, Any]) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            metadata["labels"] = dict(self.labels)
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": metadata, "spec": spec}


@dataclass(frozen=True)
class Deployment(_Object):
    kind: ClassVar[str] = "Deployment"
    api_version: ClassVar[str] = "apps/v1"

    replicas: int
    selector: Pairs
    template: PodTemplate

    @property
    def selector_dict(self) -> dict[str, str]:
        return dict(self.selector)

    def to_k8s(self) -> dict[str, Any]:
        return self._manifest(
            {
                "replicas": self.replicas,
                "selector": {"matchLabels": dict(self.selector)},
                "template": {
                    "metadata": {"labels": dict(self.template.labels)},
                    "spec": self.template.spec.to_k8s(),
                },
            }
        )


@dataclass(frozen=True)
class Pod(_Object):
    """A bare ``v1`` Pod manifest (not one created by a Deployment)."""

    kind: ClassVar[str] = "Pod"
    api_version: ClassVar[str] = "v1"

    spec: PodSpec

    def to_k8s(self) -> dict[str, Any]:
        return self._manifest(self.spec.to_k8s())


@dataclass(frozen=True)
class ServicePort:
    """``target_port`` is a number or the name of a container port."""

    port: int
    target_port: int | str
    protocol: str = "TCP"
    name: str | None = None

    def to_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {"port": self.port, "targetPort": self.target_port, "protocol": self.protocol}
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class Service(_Object):
    kind: ClassVar[str] = "Service"
    api_version: ClassVar[str] = "v1"

    type: ServiceType
    selector: Pairs
    ports: tuple[ServicePort, ...]

    @property
    def selector_dict(self) -> dict[str, str]:
        return dict(self.selector)

    def to_k8s(self) -> dict[str, Any]:
        return self._manifest(
            {
                "type": self.type,
                "selector": dict(self.selector),
                "ports": [p.to_k8s() for p in self.ports],
            }
        )


Manifest: TypeAlias = Deployment | Pod | Service
