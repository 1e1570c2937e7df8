"""Pydantic models of the manifest subset podhop accepts, field for field.

Why: podhop supports a deliberately small part of the Kubernetes API. Writing
that subset down as strict pydantic models with ``extra="forbid"`` makes
"what does podhop support?" answerable by reading one file, and makes every
unsupported field an error with its exact path instead of being silently
ignored. Field aliases are the Kubernetes (camelCase) names, so pydantic's
error locations are already the paths a user sees in the YAML.

Only :mod:`podhop.objects.manifests` uses these models; it turns them into
the frozen dataclasses of :mod:`podhop.objects.model` after the cross-field
checks (selector vs template labels, requests vs limits, ...).

Fields marked *ignored* are accepted because real-world manifests (``kubectl
create --dry-run -o yaml``, ``kubectl get -o yaml``, Helm output) carry them,
and they do not change what podhop would run. Some are accepted only with
their harmless value (``restartPolicy: Always``, ``securityContext: {}``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from podhop.objects.quantity import parse_cpu, parse_memory

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def dns1123_label(value: str) -> str:
    if len(value) > 63 or not _DNS1123_LABEL.fullmatch(value):
        raise ValueError(
            f"invalid name {value!r}: must be a DNS-1123 label "
            "(at most 63 characters: lowercase letters, digits and '-', starting and ending alphanumeric)"
        )
    return value


def dns1123_subdomain(value: str) -> str:
    """Kubernetes' rule for most object names (pods among them): at most 253 characters."""
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(value):
        raise ValueError(
            f"invalid name {value!r}: must be a DNS-1123 subdomain "
            "(lowercase letters, digits, '-' and '.', starting and ending alphanumeric)"
        )
    return value


def _label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        raise ValueError(f"invalid label key {key!r}: the prefix must be a DNS subdomain")
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ValueError(
            f"invalid label key {key!r}: the name must be at most 63 characters "
            "of letters, digits, '-', '_' and '.', starting and ending alphanumeric"
        )


def _label_map(value: dict[str, str]) -> dict[str, str]:
    for key, val in value.items():
        _label_key(key)
        if val and (len(val) > 63 or not _LABEL_NAME.fullmatch(val)):
            raise ValueError(
                f"invalid label value {val!r} for {key!r}: at most 63 characters "
                "of letters, digits, '-', '_' and '.', starting and ending alphanumeric"
            )
    return value


def _port_name(value: str) -> str:
    if len(value) > 15 or not _PORT_NAME.fullmatch(value) or not re.search("[a-z]", value):
        raise ValueError(
            f"invalid port name {value!r}: at most 15 lowercase letters, digits and '-', "
            "with at least one letter"
        )
    return value


def _target_port(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 65535:
            raise ValueError(f"invalid targetPort {value}: must be between 1 and 65535")
        return value
    if isinstance(value, str):
        if value.isdigit():
            raise ValueError(f"targetPort {value!r} is a string; write the port number without quotes")
        return _port_name(value)
    raise ValueError(f"invalid targetPort {value!r}: expected a port number or a container port name")


def _cluster_ip(value: str) -> str:
    if value == "None":
        raise ValueError("headless Services (clusterIP: None) are not supported by podhop")
    return value


Name = Annotated[str, AfterValidator(dns1123_label)]
Labels = Annotated[dict[str, str], AfterValidator(_label_map)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
PortName = Annotated[str, AfterValidator(_port_name)]
Cpu = Annotated[int, BeforeValidator(parse_cpu)]
Memory = Annotated[int, BeforeValidator(parse_memory)]
TargetPort = Annotated[int | str, BeforeValidator(_target_port)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        """As in Kubernetes, ``field: null`` (or an empty ``field:``) means the field is not set."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class Empty(_Model):
    """A field accepted only when empty (``securityContext: {}``, ``resources: {}``)."""


class ObjectMeta(_Model):
    name: Name
    namespace: Name = "default"
    labels: Labels = {}
    # ignored:
    annotations: dict[str, Any] | None = None
    creation_timestamp: Any = Field(default=None, alias="creationTimestamp")
    generation: Any = None
    resource_version: Any = Field(default=None, alias="resourceVersion")
    uid: Any = None
    managed_fields: Any = Field(default=None, alias="managedFields")


class TemplateMeta(_Model):
    labels: Labels = {}
    # ignored:
    annotations: dict[str, Any] | None = None
    creation_timestamp: Any = Field(default=None, alias="creationTimestamp")


class ResourceList(_Model):
    cpu: Cpu = 0
    memory: Memory = 0


class ResourceRequirements(_Model):
    requests: ResourceList = ResourceList()
    limits: ResourceList = ResourceList()


class ContainerPortDoc(_Model):
    container_port: PortNumber = Field(alias="containerPort")
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    name: PortName | None = None


class EnvVar(_Model):
    name: Annotated[str, Field(min_length=1, pattern=r"^[^=]+$")]
    value: str = ""


class Container(_Model):
    name: Name
    image: Annotated[str, Field(min_length=1)]
    command: list[str] | None = None
    args: list[str] | None = None
    ports: list[ContainerPortDoc] = []
    env: list[EnvVar] = []
    resources: ResourceRequirements = ResourceRequirements()
    working_dir: str | None = Field(default=None, alias="workingDir")
    # ignored:
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, alias="imagePullPolicy"
    )
    termination_message_path: str | None = Field(default=None, alias="terminationMessagePath")
    termination_message_policy: Literal["File", "FallbackToLogsOnError"] | None = Field(
        default=None, alias="terminationMessagePolicy"
    )
    security_context: Empty | None = Field(default=None, alias="securityContext")


class PodSpecDoc(_Model):
    containers: Annotated[list[Container], Field(min_length=1)]
    node_selector: Labels = Field(default={}, alias="nodeSelector")
    # ignored:
    restart_policy: Literal["Always"] | None = Field(default=None, alias="restartPolicy")
    dns_policy: Literal["ClusterFirst", "Default"] | None = Field(default=None, alias="dnsPolicy")
    scheduler_name: Literal["default-scheduler"] | None = Field(default=None, alias="schedulerName")
    security_context: Empty | None = Field(default=None, alias="securityContext")
    termination_grace_period_seconds: int | None = Field(default=None, alias="terminationGracePeriodSeconds")
    enable_service_links: bool | None = Field(default=None, alias="enableServiceLinks")


class PodTemplateDoc(_Model):
    metadata: TemplateMeta = TemplateMeta()
    spec: PodSpecDoc


class LabelSelector(_Model):
    match_labels: Labels = Field(default={}, alias="matchLabels")


class DeploymentSpecDoc(_Model):
    replicas: Annotated[int, Field(ge=0)] = 1
    selector: LabelSelector
    template: PodTemplateDoc
    # ignored:
    strategy: Any = None
    revision_history_limit: int | None = Field(default=None, alias="revisionHistoryLimit")
    progress_deadline_seconds: int | None = Field(default=None, alias="progressDeadlineSeconds")
    min_ready_seconds: int | None = Field(default=None, alias="minReadySeconds")


class ServicePortDoc(_Model):
    port: PortNumber
    target_port: TargetPort | None = Field(default=None, alias="targetPort")
    protocol: Literal["TCP"] = "TCP"
    name: Name | None = None


class ServiceSpecDoc(_Model):
    type: Literal["ClusterIP", "LoadBalancer"] = "ClusterIP"
    selector: Labels = {}
    ports: Annotated[list[ServicePortDoc], Field(min_length=1)]
    # ignored:
    session_affinity: Literal["None"] | None = Field(default=None, alias="sessionAffinity")
    external_traffic_policy: Literal["Cluster", "Local"] | None = Field(
        default=None, alias="externalTrafficPolicy"
    )
    internal_traffic_policy: Literal["Cluster", "Local"] | None = Field(
        default=None, alias="internalTrafficPolicy"
    )
    ip_families: list[Literal["IPv4"]] | None = Field(default=None, alias="ipFamilies")
    ip_family_policy: Literal["SingleStack"] | None = Field(default=None, alias="ipFamilyPolicy")
    cluster_ip: Annotated[str, AfterValidator(_cluster_ip)] | None = Field(default=None, alias="clusterIP")
    cluster_ips: list[Annotated[str, AfterValidator(_cluster_ip)]] | None = Field(
        default=None, alias="clusterIPs"
    )
    allocate_load_balancer_node_ports: bool | None = Field(
        default=None, alias="allocateLoadBalancerNodePorts"
    )


class DeploymentDoc(_Model):
    api_version: Literal["apps/v1"] = Field(alias="apiVersion")
    kind: Literal["Deployment"]
    metadata: ObjectMeta
    spec: DeploymentSpecDoc
    status: Any = None  # ignored


class PodDoc(_Model):
    api_version: Literal["v1"] = Field(alias="apiVersion")
    kind: Literal["Pod"]
    metadata: ObjectMeta
    spec: PodSpecDoc
    status: Any = None  # ignored


class ServiceDoc(_Model):
    api_version: Literal["v1"] = Field(alias="apiVersion")
    kind: Literal["Service"]
    metadata: ObjectMeta
    spec: ServiceSpecDoc
    status: Any = None  # ignored


DOCS: dict[str, type[DeploymentDoc] | type[PodDoc] | type[ServiceDoc]] = {
    "Deployment": DeploymentDoc,
    "Pod": PodDoc,
    "Service": ServiceDoc,
}
API_VERSIONS = {"Deployment": "apps/v1", "Pod": "v1", "Service": "v1"}
