"""Any Kubernetes cluster behind the one backend interface.

Why: a user with a kubeconfig — EKS, or podhop's own ``--kind kubernetes`` —
gets every podhop command. Reading is the API (``views`` turns objects into
the interface's values); ``apply`` is server-side apply, dry-run first so a
file applies completely or not at all; ``top`` reads metrics.k8s.io where it
is installed and otherwise the kubelets' resource metrics through the node
proxy (sampled over the window, as metrics-server does); ``exec`` and
``logs`` are the API's. Migration is :mod:`podhop.backends.kubernetes.migration`
(kubelet checkpoints, the podhop node agent, a restored pod pinned with a
``nodeSelector``).
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from podhop.backends.base import (
    ExecResult,
    LogLine,
    MigrationDriver,
    MigrationFacts,
    Node,
    Pod,
    Report,
    Sample,
    Service,
)
from podhop.backends.kubernetes import api, views
from podhop.backends.kubernetes.usage import KubeletUsage
from podhop.errors import ManifestError, NotFoundError, RuntimeFailure
from podhop.migrate.plan import MigrationPlan, Options
from podhop.objects.model import Resources
from podhop.store import ClusterRecord, Store

FIELD_MANAGER = "podhop"
#: Strategies a stock Kubernetes cluster cannot run, and why.
UNSUPPORTED = {
    "postcopy": "containerd and CRI-O restore a checkpoint image in CreateContainer, all of it at once; "
    "neither offers a lazy-pages (post-copy) restore",
    "precopy": "the kubelet's checkpoint API takes one full dump; it has no pre-dump",
}
_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\S+) (.*)$")


class KubernetesBackend:
    """A Kubernetes cluster, reached through its API server."""

    kind = "kubernetes"

    def __init__(
        self,
        client: Any,
        name: str,
        kubeconfig: Path,
        store: Store | None = None,
        record: ClusterRecord | None = None,
    ) -> None:
        self.api, self.name, self.kubeconfig = client, name, kubeconfig
        self.store, self.record = store, record
        from kubernetes import client as k8s

        self.core = k8s.CoreV1Api(client)
        self.custom = k8s.CustomObjectsApi(client)
        self.apps = k8s.AppsV1Api(client)
        self.usage = KubeletUsage(self._resource_metrics)

    @classmethod
    def connect(
        cls,
        kubeconfig: Path,
        *,
        context: str | None = None,
        store: Store | None = None,
        record: ClusterRecord | None = None,
    ) -> KubernetesBackend:
        client, context_name = api.connect(kubeconfig, context)
        return cls(client, record.name if record else context_name, kubeconfig, store, record)

    # ---------------------------------------------------------------- reading
    def _pods_raw(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            result = api.call("listing pods", self.core.list_pod_for_all_namespaces)
        else:
            result = api.call(f"listing pods in {namespace}", self.core.list_namespaced_pod, namespace)
        return [api.plain(self.api, p) for p in result.items]

    def _nodes_raw(self) -> list[dict[str, Any]]:
        return [api.plain(self.api, n) for n in api.call("listing nodes", self.core.list_node).items]

    def nodes(self) -> list[Node]:
        counts: dict[str, int] = {}
        for p in self._pods_raw(None):
            node = (p.get("spec") or {}).get("nodeName")
            if node and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                counts[node] = counts.get(node, 0) + 1
        return [views.node(n, counts.get(n["metadata"]["name"], 0)) for n in self._nodes_raw()]

    def pods(self, namespace: str | None = "default") -> list[Pod]:
        return [views.pod(p) for p in self._pods_raw(namespace)]

    def pod(self, namespace: str, name: str) -> Pod:
        raw = api.call(f"pod {namespace}/{name}", self.core.read_namespaced_pod, name, namespace)
        return views.pod(api.plain(self.api, raw))

    def service_address(self, svc: Service) -> tuple[str, int]:
        """Its LoadBalancer address if it has one (this machine is outside the cluster), else the
        cluster IP (reachable only from a node, or where the cluster's network is routed)."""
        if svc.external:
            host, _, port = svc.external.rpartition(":")
            return host, int(port)
        return svc.cluster_ip, svc.ports[0].port

    def services(self, namespace: str | None = "default") -> list[Service]:
        if namespace is None:
            result = api.call("listing services", self.core.list_service_for_all_namespaces)
        else:
            result = api.call(
                f"listing services in {namespace}", self.core.list_namespaced_service, namespace
            )
        return [views.service(api.plain(self.api, s)) for s in result.items]

    def objects(self, resource: str, namespace: str | None) -> list[dict[str, Any]]:
        if resource == "nodes":
            return self._nodes_raw()
        if resource == "pods":
            return self._pods_raw(namespace)
        if namespace is None:
            result = api.call("listing services", self.core.list_service_for_all_namespaces)
        else:
            result = api.call("listing services", self.core.list_namespaced_service, namespace)
        return [api.plain(self.api, s) for s in result.items]

    def logs(self, namespace: str, pod: str, container: str | None) -> list[LogLine]:
        kwargs: dict[str, Any] = {"timestamps": True}
        if container:
            kwargs["container"] = container
        text = api.call(
            f"logs of {namespace}/{pod}", self.core.read_namespaced_pod_log, pod, namespace, **kwargs
        )
        out = []
        for line in str(text).splitlines():
            m = _TS.match(line)
            out.append(LogLine(m.group(1), "stdout", m.group(2)) if m else LogLine("", "stdout", line))
        return out

    # ---------------------------------------------------------------- top
    def top(self, window_s: float, *, cached: bool = False) -> Sample:
        """Measured from the kubelets' resource metrics over the window; ``cached``: metrics-server's
        (its window is its resolution, 15 s by default), the kubelets' where it is not installed."""
        nodes = {n.name: n for n in self.nodes()}
        where = {(p.namespace, p.name): p.node for p in self.pods(None)}
        if not cached:
            return self._top_from_kubelets(nodes, where, window_s)
        try:
            raw_nodes = api.call(
                "node metrics", self.custom.list_cluster_custom_object, "metrics.k8s.io", "v1beta1", "nodes"
            )
            raw_pods = api.call(
                "pod metrics", self.custom.list_cluster_custom_object, "metrics.k8s.io", "v1beta1", "pods"
            )
        except NotFoundError:  # no metrics-server: the kubelets' own resource metrics
            return self._top_from_kubelets(nodes, where, window_s)
        node_items: list[dict[str, Any]] = dict(raw_nodes).get("items", [])  # type: ignore[call-overload]
        pod_items: list[dict[str, Any]] = dict(raw_pods).get("items", [])  # type: ignore[call-overload]
        return Sample(
            window_s=window_s,
            nodes=[views.node_usage(d, nodes.get(d["metadata"]["name"])) for d in node_items],
            pods=[views.pod_usage(d, where) for d in pod_items],
        )

    def _resource_metrics(self, node: str) -> str:
        text = api.call(
            f"resource metrics of {node}",
            self.core.connect_get_node_proxy_with_path,
            node,
            "metrics/resource",
        )
        return str(text)

    def _top_from_kubelets(
        self, nodes: dict[str, Node], where: dict[tuple[str, str], str], window_s: float
    ) -> Sample:
        return self.usage.sample(nodes, where, window_s)

    # ---------------------------------------------------------------- changing
    def _documents(self, source: str, text: str) -> list[dict[str, Any]]:
        import yaml

        try:
            docs = [d for d in yaml.safe_load_all(text) if d]
        except yaml.YAMLError as exc:
            raise ManifestError(f"{source}: not valid YAML: {exc}") from exc
        out = []
        for i, doc in enumerate(docs):
            if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
                raise ManifestError(f"{source}: document {i + 1} has no apiVersion and kind")
            if doc["kind"] == "List":
                out += [d for d in doc.get("items") or [] if isinstance(d, dict)]
            else:
                out.append(doc)
        return out

    def _resource(self, dynamic: Any, doc: dict[str, Any]) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        except ResourceNotFoundError as exc:
            raise ManifestError(f"{doc['kind']} ({doc['apiVersion']}) is not served by this cluster") from exc

    def apply(self, source: str, text: str, report: Report) -> list[str]:
        """Server-side apply of every document, all dry-run first: nothing applies if one is refused."""
        from kubernetes.dynamic import DynamicClient

        docs = self._documents(source, text)
        dynamic = api.call("discovering the API", DynamicClient, self.api, timeout=None)
        planned = []
        for doc in docs:
            resource = self._resource(dynamic, doc)
            ns = (doc.get("metadata") or {}).get("namespace") or ("default" if resource.namespaced else None)
            planned.append((doc, resource, ns))
        messages = []
        for dry in (True, False):
            for doc, resource, ns in planned:
                name = (doc.get("metadata") or {}).get("name", "")
                report(f"{'checking' if dry else 'applying'} {doc['kind']}/{name}")
                kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force_conflicts": True}
                if dry:
                    kwargs["dry_run"] = "All"
                api.call(
                    f"{source}: {doc['kind']}/{name}",
                    resource.server_side_apply,
                    body=doc,
                    name=name,
                    namespace=ns,
                    timeout=None,
                    **kwargs,
                )
                if not dry:
                    messages.append(f"{doc['kind'].lower()}/{name} serverside-applied")
        return messages

    def delete(self, source: str, text: str, report: Report) -> list[str]:
        from kubernetes.dynamic import DynamicClient

        dynamic = api.call("discovering the API", DynamicClient, self.api, timeout=None)
        messages = []
        for doc in reversed(self._documents(source, text)):
            resource = self._resource(dynamic, doc)
            meta = doc.get("metadata") or {}
            ns = meta.get("namespace") or ("default" if resource.namespaced else None)
            name = meta.get("name", "")
            report(f"deleting {doc['kind']}/{name}")
            try:
                api.call(
                    f"deleting {doc['kind']}/{name}", resource.delete, name=name, namespace=ns, timeout=None
                )
                messages.append(f"{doc['kind'].lower()}/{name} deleted")
            except NotFoundError:
                messages.append(f"{doc['kind'].lower()}/{name} not found")
        return messages

    def _stream(self, namespace: str, pod: str, container: str | None, argv: list[str]) -> Any:
        from kubernetes.stream import stream

        kwargs: dict[str, Any] = {
            "command": argv,
            "stderr": True,
            "stdin": False,
            "stdout": True,
            "tty": False,
            "_preload_content": False,
        }
        if container:
            kwargs["container"] = container
        return api.call(
            f"exec in {namespace}/{pod}",
            stream,
            self.core.connect_get_namespaced_pod_exec,
            pod,
            namespace,
            timeout=None,
            **kwargs,
        )

    def exec(
        self, namespace: str, pod: str, container: str | None, argv: list[str], *, timeout: float | None
    ) -> ExecResult:
        ws = self._stream(namespace, pod, container, argv)
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = [], []
        try:
            while ws.is_open():
                if deadline is not None and time.monotonic() > deadline:
                    raise RuntimeFailure(f"`{' '.join(argv)}` in {pod} timed out after {timeout:.0f} s")
                ws.update(timeout=1)
                if ws.peek_stdout():
                    out.append(ws.read_stdout())
                if ws.peek_stderr():
                    err.append(ws.read_stderr())
            code = ws.returncode
        finally:
            ws.close()
        return ExecResult(int(code or 0), "".join(out), "".join(err))

    def exec_interactive(self, namespace: str, pod: str, container: str | None, argv: list[str]) -> int:
        result = self.exec(namespace, pod, container, argv, timeout=None)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.returncode

    def lock(self) -> AbstractContextManager[None]:
        if self.store is not None and self.record is not None:  # a podhop cluster: one operation at a time
            return self.store.lock(self.record.name)
        return contextlib.nullcontext()

    def wait_ready(self, namespace: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            pending = [p.name for p in self.pods(namespace) if not p.ready]
            if not pending or time.monotonic() > deadline:
                return pending
            time.sleep(0.5)

    def room_for(self, pod: Pod) -> set[str]:
        used: dict[str, Resources] = {}
        for p in self.pods(None):
            if p.phase in ("Succeeded", "Failed") or (p.namespace, p.name) == (pod.namespace, pod.name):
                continue
            used[p.node] = used.get(p.node, Resources()) + p.requests
        out = set()
        for n in self.nodes():
            free_cpu = n.cpu_m - used.get(n.name, Resources()).cpu_m
            free_mem = n.memory_b - used.get(n.name, Resources()).memory_b
            if (
                n.name != pod.node
                and n.ready
                and free_cpu >= pod.requests.cpu_m
                and free_mem >= pod.requests.memory_b
            ):
                out.add(n.name)
        return out

    # ---------------------------------------------------------------- migration
    def migration_facts(self, pod: Pod, target: str, strategy: str) -> MigrationFacts:
        return MigrationFacts(
            target_fits=target in self.room_for(pod),
            state_bytes=0,
            link_bps=None,
            other_endpoints=self._other_endpoints(pod),
            unsupported=UNSUPPORTED,
        )

    def _other_endpoints(self, pod: Pod) -> bool:
        """Whether every Service selecting the pod has another ready pod (a clone then detaches it)."""
        services = [s for s in self.services(pod.namespace) if s.selects(pod)]
        others = [p for p in self.pods(pod.namespace) if p.name != pod.name and p.ready]
        return bool(services) and all(any(s.selects(p) for p in others) for s in services)

    def migration(
        self, plan: MigrationPlan, pod: Pod, options: Options, reserved: set[str] | None
    ) -> MigrationDriver:
        from podhop.backends.kubernetes.migration import KubeMigration

        return KubeMigration(self, plan, pod, options)

    def checkpoint(
        self, namespace: str, pod: str, container: str | None, output: Path | None, leave_running: bool
    ) -> Path:
        from podhop.backends.kubernetes import checkpoints

        return checkpoints.checkpoint_to_file(self, namespace, pod, container, output, leave_running)

    def restore(self, archive_path: Path, node: str, name: str | None) -> Pod:
        from podhop.backends.kubernetes import checkpoints

        return checkpoints.restore_from_file(self, archive_path, node, name)
