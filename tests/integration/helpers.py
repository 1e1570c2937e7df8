"""What several integration test modules share: the podhop command, a web pod and its service."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from podhop.backends.local.backend import LocalBackend
from podhop.backends.local.cluster import LocalCluster
from podhop.migrate import engine
from podhop.migrate.plan import Options

PODHOP = [sys.executable, "-m", "podhop"]

WEB_POD = """
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeSelector: {kubernetes.io/hostname: node-1}
  containers: [{name: nginx, image: nginx, ports: [{containerPort: 80}]}]
"""
WEB_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"""
#: An NGINX pod on node-1 behind a service.
WEB = WEB_POD + "---" + WEB_SERVICE


def podhop(cluster: LocalCluster, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run ``podhop ARGS`` against ``cluster`` as a user would (its own process)."""
    env = {**os.environ, "PODHOP_CLUSTER": cluster.name}
    return subprocess.run([*PODHOP, *args], capture_output=True, text=True, timeout=timeout, env=env)


def backend(cluster: LocalCluster) -> LocalBackend:
    """The local cluster behind the backend interface, as the CLI and the engine see it."""
    return LocalBackend(cluster)


def migrate(
    cluster: LocalCluster,
    pod: str,
    target: str,
    strategy: str = "cold",
    namespace: str = "default",
    options: Options | None = None,
) -> dict[str, Any]:
    """A migration through the engine, its report as ``podhop migrate -o json`` prints it."""
    return engine.migrate(LocalBackend(cluster), pod, target, strategy, namespace, options).to_dict()
