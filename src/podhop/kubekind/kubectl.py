"""Running the cluster's own ``kubectl`` with the admin kubeconfig, and waiting on the cluster.

Why: create applies RBAC objects and waits for nodes, the tests and the
benchmarks run the seed's commands verbatim; all of them should use the kubectl
built with the cluster (same version), never ``/usr/bin/kubectl`` (a cloud-sdk
dispatcher on this machine).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from podhop import sh
from podhop.errors import ClusterError, CommandError
from podhop.kubekind import components
from podhop.kubekind.layout import KubeLayout


def argv(lay: KubeLayout, *args: str) -> list[str]:
    return [str(components.binary("kubectl")), f"--kubeconfig={lay.admin_kubeconfig}", *args]


def run(
    lay: KubeLayout, *args: str, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return sh.run(argv(lay, *args), input=input, timeout=timeout)


def apply(lay: KubeLayout, manifest: str, *, attempts: int = 10) -> None:
    """``kubectl apply -f -``, retried while the API server finishes starting its controllers."""
    for attempt in range(attempts):
        try:
            run(lay, "apply", "-f", "-", input=manifest)
            return
        except CommandError as exc:
            if attempt == attempts - 1:
                raise ClusterError(f"applying bootstrap objects failed: {exc}") from exc
            time.sleep(1)


def get_json(lay: KubeLayout, *args: str) -> dict[str, Any]:
    out = run(lay, "get", *args, "-o", "json").stdout
    data: dict[str, Any] = json.loads(out)
    return data


def ready_nodes(lay: KubeLayout) -> list[str]:
    items = get_json(lay, "nodes").get("items", [])
    ready = []
    for n in items:
        for cond in n.get("status", {}).get("conditions", []):
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                ready.append(n["metadata"]["name"])
    return ready


def wait_nodes_ready(lay: KubeLayout, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            seen = ready_nodes(lay)
        except CommandError:
            seen = []
        if len(seen) >= count:
            return
        time.sleep(1)
    raise ClusterError(
        f"only {len(seen)} of {count} nodes Ready after {timeout:.0f} s ({', '.join(seen) or 'none'})",
        hint=f"see the kubelet logs in {lay.logs}",
    )
