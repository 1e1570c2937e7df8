"""Benchmark: the Kubernetes kind — component builds (cold and cached), cluster create, 10 Ready NGINX pods.

- ``build``: with ``--cold``, every component is built from nothing (empty Go build
  cache and module cache, a temporary ``PODHOP_HOME``), as on a fresh machine;
  always, the cached case (``podhop setup`` finding every stamp) is timed.
- ``create``: ``podhop cluster create --kind kubernetes --nodes 3`` until 3 nodes are Ready.
- ``nginx``: the seed's ``kubectl create deployment nginx --image=nginx`` + ``scale --replicas=10``
  until all 10 pods are Ready, then the cluster is deleted (timed too).

Results go to ``benchmarks/results/kube.json`` (a cold run also keeps its build numbers
there; a run without ``--cold`` keeps the last cold numbers it finds).

Run as root after ``podhop setup``: ``python benchmarks/kube_bench.py [--cold]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "kube.json"
PODHOP = [sys.executable, "-m", "podhop"]
BUILD = "import json; from podhop.kubekind import components; print(json.dumps(components.ensure_all(print)))"


def cold_build() -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="podhop-cold-"))
    env = {
        **os.environ,
        "PODHOP_HOME": str(tmp / "home"),
        "GOCACHE": str(tmp / "gocache"),
        "GOMODCACHE": str(tmp / "gomodcache"),
    }
    start = time.monotonic()
    try:
        out = subprocess.run(
            [sys.executable, "-c", BUILD],
            env=env,
            capture_output=True,
            text=True,
            timeout=3 * 3600,
            check=True,
        ).stdout
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=False)  # the module cache is read-only
        shutil.rmtree(tmp, ignore_errors=True)
    per = json.loads(out.strip().splitlines()[-1])
    return {
        "wall_s": round(time.monotonic() - start, 1),
        "per_component_s": {k: round(v, 1) for k, v in per.items()},
    }


def cached_build() -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", BUILD], capture_output=True, text=True, timeout=600, check=True)
    return round(time.monotonic() - start, 2)


def kubectl(kubeconfig: str, *args: str, timeout: float = 300) -> str:
    from podhop.kubekind import components

    env = {**os.environ, "KUBECONFIG": kubeconfig}
    return subprocess.run(
        [str(components.binary("kubectl")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout


def cluster_run() -> dict[str, float]:
    name = f"kb-{secrets.token_hex(3)}"
    start = time.monotonic()
    subprocess.run(
        [*PODHOP, "cluster", "create", "--kind", "kubernetes", "--name", name, "--nodes", "3"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    create_s = time.monotonic() - start
    kc = subprocess.run(
        [*PODHOP, "cluster", "kubeconfig", name], check=True, capture_output=True, text=True
    ).stdout
    kc = kc.strip()
    try:
        start = time.monotonic()
        kubectl(kc, "create", "deployment", "nginx", "--image=nginx")
        kubectl(kc, "scale", "deployment", "nginx", "--replicas=10")
        kubectl(kc, "rollout", "status", "deployment/nginx", "--timeout=300s", timeout=320)
        nginx_s = time.monotonic() - start
    finally:
        start = time.monotonic()
        subprocess.run([*PODHOP, "cluster", "delete", name], check=True, capture_output=True, timeout=300)
        delete_s = time.monotonic() - start
    return {
        "create_3_nodes_s": round(create_s, 1),
        "nginx_10_ready_s": round(nginx_s, 1),
        "delete_s": round(delete_s, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true", help="also build everything from nothing (takes minutes)")
    args = ap.parse_args()
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    result["build_cold"] = cold_build() if args.cold else old.get("build_cold")
    result["build_cached_s"] = cached_build()
    result.update(cluster_run())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
