"""Talking to podhop's node agent: through the API server's pod proxy, with the agent's token.

Why: a checkpoint archive lives on the node whose kubelet made it, and the
restored container needs a checkpoint image in the target node's runtime. The
node agent (a DaemonSet, see ``podhop kube manifests``) does both: it reads
archives, streams them straight to the target node's agent (authenticated by
a per-migration secret and the peer's address), turns them into checkpoint
images there, and pauses, resumes or kills a container's task for a cold
migration. podhop reaches each agent through the API server's pod proxy —
so it works from a laptop against EKS, where node addresses are private —
and proves itself with the token in the agent's Secret (the API server does
not forward Authorization headers to proxied pods, hence ``X-Podhop-Token``).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podhop.backends.kubernetes import api
from podhop.errors import ClusterError, NotFoundError

if TYPE_CHECKING:
    from podhop.backends.kubernetes.backend import KubernetesBackend

NAMESPACE = "podhop-system"
SECRET = "podhop-agent"
LABEL = "app.kubernetes.io/name=podhop-agent"
PORT = 10290
CHUNK = 1 << 20
#: Where the agents name the checkpoint images they import into a node's containerd.
CHECKPOINT_REPO = "localhost/podhop-checkpoint"


class AgentError(ClusterError):
    """The node agent is missing, unreachable, or refused an operation."""


class AgentNotFound(AgentError, NotFoundError):
    """The agent has no such checkpoint, receive, image or container (HTTP 404)."""


@dataclass
class Agent:
    """The agent on one node."""

    backend: KubernetesBackend
    node: str
    pod: str
    ip: str
    token: str

    def _path(self, path: str) -> str:
        return f"/api/v1/namespaces/{NAMESPACE}/pods/{self.pod}:{PORT}/proxy/{path.lstrip('/')}"

    def _open(self, what: str, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> Any:
        """One request through the pod proxy, its body not read yet (a ``RESTResponse``); a status
        >= 400 becomes :class:`AgentError` (:class:`AgentNotFound` for 404) with the agent's message."""
        headers = {"X-Podhop-Token": self.token, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        client = self.backend.api
        method, url, headers, body, post = client.param_serialize(
            method, self._path(path), header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        resp = api.call(what, client.call_api, method, url, headers, body, post, timeout=timeout)
        if resp.status >= 400:
            raw = resp.read() or b""
            try:
                message = json.loads(raw).get("error") or raw.decode(errors="replace")
            except (ValueError, AttributeError):
                message = raw.decode(errors="replace")[:300]
            error = AgentNotFound if resp.status == 404 else AgentError
            raise error(f"{what}: {str(message).strip()[:300]} (HTTP {resp.status})")
        return resp

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        """One JSON request; a refusal becomes :class:`AgentError` with the agent's own message."""
        what = f"agent on {self.node}: {method} /{path.lstrip('/')}"
        raw = self._open(what, method, path, body, timeout).read()
        try:
            doc = json.loads(raw or b"{}")
        except ValueError as exc:
            raise AgentError(f"agent on {self.node} answered {raw[:100]!r}") from exc
        return doc if isinstance(doc, dict) else {}  # refusals come with a status >= 400 (see _open)

    def download(self, name: str, fh: Any, timeout: float = 600.0) -> int:
        """Stream the checkpoint archive ``name`` from this node into the open file ``fh``."""
        quoted = urllib.parse.quote(name, safe="")
        resp = self._open(
            f"agent on {self.node}: fetching {name}", "GET", f"checkpoints/{quoted}", None, timeout
        )
        total = 0
        try:
            for chunk in resp.response.stream(CHUNK):
                fh.write(chunk)
                total += len(chunk)
        finally:
            resp.response.release_conn()
        return total

    def wait_received(self, receive_id: str, timeout: float) -> dict[str, Any]:
        """Wait (bounded) until a receive is ``done``; its status, or :class:`AgentError` if it failed."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.request("GET", f"receive/{receive_id}")
            if status.get("state") == "done":
                return status
            if status.get("state") == "failed":
                raise AgentError(f"agent on {self.node}: receiving failed: {status.get('error')}")
            if time.monotonic() > deadline:
                raise AgentError(
                    f"agent on {self.node}: receive still {status.get('state')} after {timeout:.0f} s"
                )
            time.sleep(0.05)


def token(backend: KubernetesBackend) -> str:
    secret = api.call(
        "reading the agent's token",
        backend.core.read_namespaced_secret,
        SECRET,
        NAMESPACE,
    )
    data = (secret.data or {}).get("token")
    if not data:
        raise AgentError(f"secret {NAMESPACE}/{SECRET} has no token")
    return base64.b64decode(data).decode()


def agents(backend: KubernetesBackend) -> dict[str, Agent]:
    """The running, ready agent of every node, by node name."""
    try:
        listed = api.call(
            "listing podhop's node agents", backend.core.list_namespaced_pod, NAMESPACE, label_selector=LABEL
        )
        pods = [api.plain(backend.api, p) for p in listed.items]
    except NotFoundError as exc:
        raise AgentError("podhop's node agent is not installed", hint=_HINT) from exc
    if not pods:
        raise AgentError("podhop's node agent is not installed", hint=_HINT)
    secret = token(backend)
    out = {}
    for p in pods:
        status, node = p.get("status") or {}, (p.get("spec") or {}).get("nodeName")
        ready = any(c.get("ready") for c in status.get("containerStatuses") or [])
        if node and ready and status.get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"):
            out[node] = Agent(backend, node, p["metadata"]["name"], status.get("podIP") or "", secret)
    return out


def agent_on(backend: KubernetesBackend, node: str) -> Agent:
    found = agents(backend)
    if node not in found:
        raise AgentError(f"podhop's node agent is not ready on {node}", hint=_HINT)
    return found[node]


_HINT = "install it: podhop kube manifests | kubectl apply -f - (see docs/eks.md)"


def save_archive(agent: Agent, name: str, output: Path) -> int:
    """Download an archive into ``output`` (already claimed by the caller)."""
    with output.open("wb") as fh:
        return agent.download(name, fh)
