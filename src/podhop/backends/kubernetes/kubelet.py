"""The kubelet's checkpoint API, reached through the API server's node proxy.

Why a request of its own: the generated client's ``connect_post_node_proxy_with_path``
quotes a query string into the path (``…/redis%3Ftimeout=30``, which the kubelet
reads as a container name), and it hides the status of a refusal. So the request
is built with the client's ``param_serialize`` (auth, TLS, the kubeconfig's
server) with ``timeout`` as a real query parameter, and the kubelet's answer —
``{"items": ["<kubelet root>/checkpoints/<name>.tar"]}`` — is checked here.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING

from podhop.backends.kubernetes import api
from podhop.migrate.plan import MigrationError

if TYPE_CHECKING:
    from podhop.backends.kubernetes.backend import KubernetesBackend


def post_checkpoint(
    backend: KubernetesBackend, node: str, namespace: str, pod: str, container: str, timeout: int
) -> tuple[int, bytes]:
    """POST the kubelet's checkpoint API through the node proxy: the HTTP status and the raw answer
    (a refusal is returned, not raised: the doctor reads the kubelet's own 403 and 404)."""
    client = backend.api
    q = urllib.parse.quote
    path = f"/api/v1/nodes/{q(node, safe='')}/proxy/checkpoint/{q(namespace)}/{q(pod)}/{q(container)}"
    method, url, headers, body, post = client.param_serialize(
        "POST",
        path,
        query_params=[("timeout", str(max(1, timeout)))],
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    what = f"kubelet checkpoint of {pod}/{container} on {node}"
    resp = api.call(what, client.call_api, method, url, headers, body, post, timeout=timeout + 10)
    return int(resp.status), resp.read() or b""


def kubelet_checkpoint(
    backend: KubernetesBackend, node: str, namespace: str, pod: str, container: str, timeout: int
) -> list[str]:
    """The kubelet's checkpoint API through the node proxy; the archive paths it answers
    (``{"items": ["<kubelet root>/checkpoints/<name>.tar"]}``)."""
    what = f"kubelet checkpoint of {pod}/{container} on {node}"
    status, raw = post_checkpoint(backend, node, namespace, pod, container, timeout)
    if status >= 400:
        raise MigrationError("dump", f"{what}: {raw.decode(errors='replace').strip()[:300]} (HTTP {status})")
    return archive_paths(what, raw)


def archive_paths(what: str, raw: bytes) -> list[str]:
    """The archive paths of a successful checkpoint answer."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise MigrationError("dump", f"{what}: the kubelet answered {raw[:200]!r}") from exc
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise MigrationError("dump", f"{what}: the kubelet returned no archive: {raw[:200]!r}")
    return [str(i) for i in items]
