"""What several integration test modules share: the podhop command, a web pod and its service, and
whether a Kubernetes-kind cluster can be made here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from podhop.backends.local.backend import LocalBackend
from podhop.backends.local.cluster import LocalCluster
from podhop.migrate import engine
from podhop.migrate.plan import Options

if TYPE_CHECKING:
    from podhop.kubekind.cluster import KubeCluster

PODHOP = [sys.executable, "-m", "podhop"]


def kube_unavailable() -> str | None:
    """Why the Kubernetes kind's tests cannot run here (None when they can)."""
    from podhop.kubekind import components

    if os.geteuid() != 0:
        return "needs root"
    missing = [c.key for c in components.COMPONENTS if not components.is_built(c)]
    if missing:
        return f"Kubernetes components not built ({', '.join(missing)}): run `podhop setup`"
    if shutil.which("hey") is None:
        return "needs hey (run `podhop setup`)"
    return None


@contextmanager
def kube_cluster(prefix: str) -> Iterator[KubeCluster]:
    """A 3-node cluster of the Kubernetes kind (``$PODHOP_TEST_PREFIX-…`` or ``prefix-…``); its delete
    must leave no residue."""
    import secrets
    import time

    from podhop.kubekind import cluster as kube
    from podhop.store import Store

    store = Store()
    name = f"{os.environ.get('PODHOP_TEST_PREFIX', prefix)}-{secrets.token_hex(3)}"
    t0 = time.monotonic()
    c = kube.create_cluster(store, name, 3, 1000, 2 * 2**30)
    print(f"\ncluster {name} Ready in {time.monotonic() - t0:.1f} s")
    try:
        yield c
    finally:
        left = kube.delete_cluster(store, name)
        assert left == [], f"delete left residue: {left}"
        assert kube.residue(name, c.record.idx) == []


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
