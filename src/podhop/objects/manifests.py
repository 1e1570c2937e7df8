"""Load Kubernetes YAML manifests into podhop's data model, or say exactly what is wrong.

Why: ``podhop apply -f`` takes the same files a user would give ``kubectl``.
podhop supports only a small subset of the API, so the loader's main job is
to refuse everything else loudly and precisely: every error is a
:class:`~podhop.errors.ManifestError` whose one-line message names the file,
the document (1-based, counting empty ones, so it matches the ``---``
separators), the object (``Kind/name``) when known, and the field path::

    examples/bad.yaml: document 2 (Deployment/web): spec.template.spec.containers[0].resources
    .requests.cpu: invalid quantity 'lots' ...   (one line; wrapped here)

Use :func:`load_manifests` with a path, or with ``text=`` for YAML that does
not come from a file (``source`` is then only used in messages).

Supported: ``apps/v1`` Deployment, ``v1`` Pod, ``v1`` Service (ClusterIP or
LoadBalancer, TCP), and ``v1`` List of those. The accepted fields are the
pydantic models in :mod:`podhop.objects.schema`. Fields that real-world
manifests carry but that would not change what podhop runs are accepted and
ignored: ``metadata.annotations``, ``creationTimestamp``, ``generation``,
``resourceVersion``, ``uid``, ``managedFields``; ``status``; Deployment
``strategy``, ``revisionHistoryLimit``, ``progressDeadlineSeconds``,
``minReadySeconds``; pod ``restartPolicy: Always``, ``dnsPolicy``,
``schedulerName: default-scheduler``, ``securityContext: {}``,
``terminationGracePeriodSeconds``, ``enableServiceLinks``; container
``imagePullPolicy``, ``terminationMessagePath``/``Policy``,
``securityContext: {}``; Service ``sessionAffinity: None``,
``externalTrafficPolicy``, ``internalTrafficPolicy``, ``ipFamilies: [IPv4]``,
``ipFamilyPolicy: SingleStack``, ``clusterIP``/``clusterIPs`` (podhop assigns
its own), ``allocateLoadBalancerNodePorts``. Anything else is an error.

Semantics follow Kubernetes where podhop has them: ``namespace`` defaults to
``default``, ``replicas`` to 1, ``targetPort`` to ``port``; a container's
unset request defaults to its limit; ``field: null`` means "not set".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from podhop.errors import ManifestError
from podhop.objects import schema
from podhop.objects.model import (
    ContainerPort,
    ContainerSpec,
    Deployment,
    Manifest,
    Pod,
    PodSpec,
    PodTemplate,
    Resources,
    Service,
    ServicePort,
    pairs,
)
from podhop.objects.quantity import format_cpu, memory_quantity

SUPPORTED_KINDS = tuple(schema.DOCS)

_Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Invalid(Exception):
    """A problem at ``path`` inside the current document (``""`` for the document itself)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def load_manifests(source: str | Path, *, text: str | None = None) -> list[Manifest]:
    """Parse every object in a (multi-document) YAML file, in file order.

    Raises :class:`ManifestError` on unreadable files, bad YAML, unsupported
    kinds or fields, invalid values, and duplicate objects within the file.
    """
    label = str(source)
    if text is None:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ManifestError(f"{label}: cannot read manifest file: {reason}") from exc

    manifests: list[Manifest] = []
    seen: dict[tuple[str, str, str], str] = {}
    for where, raw in _documents(label, text):
        prefix = f"{label}: {where}{_describe(raw)}"
        try:
            obj = _convert(raw)
        except _Invalid as exc:
            location = f"{exc.path}: " if exc.path else ""
            raise ManifestError(f"{prefix}: {location}{exc.message}") from None
        if obj.key in seen:
            raise ManifestError(
                f"{prefix}: duplicate of {seen[obj.key]} (same kind, namespace and name)",
                hint="rename one of them or put them in different namespaces",
            )
        seen[obj.key] = where
        manifests.append(obj)
    return manifests


def dump_manifests(manifests: Iterable[Manifest]) -> str:
    """The inverse of :func:`load_manifests`: a multi-document YAML string."""
    return yaml.safe_dump_all([m.to_k8s() for m in manifests], sort_keys=False)


def _documents(label: str, text: str) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, raw)`` for each non-empty document, unpacking ``kind: List``."""
    number = 0
    try:
        for raw in yaml.load_all(text, Loader=_Loader):
            number += 1
            if raw is None:
                continue
            if isinstance(raw, dict) and raw.get("kind") == "List":
                yield from _list_items(label, f"document {number}", raw)
            else:
                yield f"document {number}", raw
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        raise ManifestError(f"{label}: invalid YAML{at}: {problem}") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{label}: invalid YAML: {exc}") from exc


def _list_items(label: str, where: str, raw: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    def fail(path: str, message: str) -> ManifestError:
        return ManifestError(f"{label}: {where} (List): {path}: {message}")

    for key in raw:
        if key not in ("apiVersion", "kind", "metadata", "items"):
            raise fail(key, "field not supported by podhop")
    if raw.get("apiVersion") != "v1":
        raise fail("apiVersion", f"expected 'v1' for a List, got {raw.get('apiVersion')!r}")
    items = raw.get("items") or []
    if not isinstance(items, list):
        raise fail("items", "expected a list of objects")
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("kind") == "List":
            raise fail(f"items[{index}]", "a List inside a List is not supported")
        yield f"{where}, item {index + 1}", item


def _describe(raw: Any) -> str:
    """`` (Kind/name)`` when the raw document says so, else ``""``."""
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
        return ""
    metadata = raw.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return f" ({raw['kind']}/{name})" if isinstance(name, str) else f" ({raw['kind']})"


def _convert(raw: Any) -> Manifest:
    if not isinstance(raw, dict):
        raise _Invalid("", f"expected a Kubernetes object (a mapping), got {_type_name(raw)}")
    kind = raw.get("kind")
    if kind is None:
        raise _Invalid("kind", "required field is missing")
    if kind not in schema.DOCS:
        raise _Invalid("", f"unsupported kind {kind!r} (supported: {', '.join(SUPPORTED_KINDS)})")
    expected = schema.API_VERSIONS[kind]
    api_version = raw.get("apiVersion")
    if api_version is None:
        raise _Invalid("apiVersion", f"required field is missing (expected {expected!r} for a {kind})")
    if api_version != expected:
        raise _Invalid("apiVersion", f"{api_version!r} does not match kind {kind} (expected {expected!r})")
    try:
        doc = schema.DOCS[kind].model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        path, message = _explain(errors[0])
        more = len(errors) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise _Invalid(path, message) from None
    if isinstance(doc, schema.DeploymentDoc):
        return _deployment(doc)
    if isinstance(doc, schema.PodDoc):
        meta = doc.metadata
        return Pod(meta.name, meta.namespace, pairs(meta.labels), _pod_spec(doc.spec, "spec"))
    return _service(doc)


def _deployment(doc: schema.DeploymentDoc) -> Deployment:
    selector = doc.spec.selector.match_labels
    template_labels = doc.spec.template.metadata.labels
    if not selector:
        raise _Invalid("spec.selector.matchLabels", "must not be empty")
    missing = [f"{k}={v}" for k, v in selector.items() if template_labels.get(k) != v]
    if missing:
        raise _Invalid(
            "spec.template.metadata.labels",
            f"must match spec.selector.matchLabels (missing {', '.join(missing)})",
        )
    spec = _pod_spec(doc.spec.template.spec, "spec.template.spec")
    return Deployment(
        doc.metadata.name,
        doc.metadata.namespace,
        pairs(doc.metadata.labels),
        doc.spec.replicas,
        pairs(selector),
        PodTemplate(pairs(template_labels), spec),
    )


def _pod_spec(doc: schema.PodSpecDoc, path: str) -> PodSpec:
    names: set[str] = set()
    containers: list[ContainerSpec] = []
    for index, c in enumerate(doc.containers):
        where = f"{path}.containers[{index}]"
        if c.name in names:
            raise _Invalid(f"{where}.name", f"duplicate container name {c.name!r}")
        names.add(c.name)
        port_names = [p.name for p in c.ports if p.name is not None]
        for p_index, p in enumerate(c.ports):
            if p.name is not None and port_names.count(p.name) > 1:
                raise _Invalid(f"{where}.ports[{p_index}].name", f"duplicate port name {p.name!r}")
        requests, limits = _resources(c.resources, f"{where}.resources")
        containers.append(
            ContainerSpec(
                name=c.name,
                image=c.image,
                command=tuple(c.command) if c.command is not None else None,
                args=tuple(c.args) if c.args is not None else None,
                ports=tuple(ContainerPort(p.container_port, p.protocol, p.name) for p in c.ports),
                env=tuple((e.name, e.value) for e in c.env),
                requests=requests,
                limits=limits,
                working_dir=c.working_dir,
            )
        )
    return PodSpec(tuple(containers), pairs(doc.node_selector))


def _resources(doc: schema.ResourceRequirements, path: str) -> tuple[Resources, Resources]:
    limits = Resources(doc.limits.cpu, doc.limits.memory)
    requests = Resources(doc.requests.cpu or limits.cpu_m, doc.requests.memory or limits.memory_b)
    if limits.cpu_m and requests.cpu_m > limits.cpu_m:
        raise _Invalid(
            f"{path}.requests.cpu",
            f"request {format_cpu(requests.cpu_m)} exceeds limit {format_cpu(limits.cpu_m)}",
        )
    if limits.memory_b and requests.memory_b > limits.memory_b:
        raise _Invalid(
            f"{path}.requests.memory",
            f"request {memory_quantity(requests.memory_b)} exceeds limit {memory_quantity(limits.memory_b)}",
        )
    return requests, limits


def _service(doc: schema.ServiceDoc) -> Service:
    if not doc.spec.selector:
        raise _Invalid("spec.selector", "a Service without a selector is not supported by podhop")
    ports: list[ServicePort] = []
    several = len(doc.spec.ports) > 1
    for index, p in enumerate(doc.spec.ports):
        where = f"spec.ports[{index}]"
        if any(q.port == p.port for q in ports):
            raise _Invalid(f"{where}.port", f"duplicate port {p.port}")
        if several and p.name is None:
            raise _Invalid(f"{where}.name", "required when a Service has more than one port")
        if p.name is not None and any(q.name == p.name for q in ports):
            raise _Invalid(f"{where}.name", f"duplicate port name {p.name!r}")
        target = p.target_port if p.target_port is not None else p.port
        ports.append(ServicePort(p.port, target, p.protocol, p.name))
    return Service(
        doc.metadata.name,
        doc.metadata.namespace,
        pairs(doc.metadata.labels),
        doc.spec.type,
        pairs(doc.spec.selector),
        tuple(ports),
    )


def _explain(error: ErrorDetails) -> tuple[str, str]:
    """Turn one pydantic error into ``(field path, message)`` in Kubernetes terms."""
    path = ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f"{'.' if path else ''}{part}"
    kind = error["type"]
    got = _short(error.get("input"))
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return path, "field not supported by podhop"
    if kind == "missing":
        return path, "required field is missing"
    if kind == "value_error":
        return path, str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        return path, f"unsupported value {got} (podhop accepts {ctx.get('expected')})"
    if kind in ("too_short", "string_too_short"):
        return path, "must not be empty"
    if kind == "greater_than_equal":
        return path, f"must be at least {ctx.get('ge')}, got {got}"
    if kind == "less_than_equal":
        return path, f"must be at most {ctx.get('le')}, got {got}"
    if kind in _EXPECTED:
        return path, f"expected {_EXPECTED[kind]}, got {got}"
    message = error["msg"]
    return path, f"{message[:1].lower()}{message[1:]}, got {got}"


_EXPECTED = {
    "int_type": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
