"""Benchmark: downtime and total time per migration strategy, workload and link.

Workloads: NGINX (a few MB of state) and Redis holding 10 MB, 100 MB and 1 GB
(filled with ``DEBUG POPULATE``); links unlimited, 1 Gbit/s and 100 Mbit/s
(one 2-node cluster per link, the cap on every node's link); strategies
``cold``, ``clone`` and ``postcopy`` (``precopy`` is refused on this kernel).
Each migration goes node-1 → node-2 or back, with the engine's own outside
probe (200 requests/s through the service VIP) measuring downtime. ``clone``
runs with a second NGINX replica behind the service, as in the seed.

Targets checked (issue 3):
- ``clone``: 0 failed probe requests and no probe gap above 20 ms (NGINX);
- ``cold`` NGINX downtime under 200 ms;
- ``postcopy`` downtime for 1 GB Redis under 500 ms;
- ``cold`` downtime for ≥ 100 MB within 1.3 × (state bytes ÷ link bandwidth + the
  fixed cost measured for NGINX on the same link).

Writes ``benchmarks/results/migration.json`` (every report) and ``migration.md``
(a table). Run as root after ``podhop setup``; the full matrix takes several
minutes (1 GB over 100 Mbit/s alone is ~90 s per migration): ``--quick`` runs
NGINX and 10 MB Redis on the unlimited link only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from podhop.backends.local.apply import apply  # noqa: E402
from podhop.backends.local.backend import LocalBackend  # noqa: E402
from podhop.backends.local.cluster import create_cluster, delete_cluster  # noqa: E402
from podhop.migrate.engine import Options, migrate  # noqa: E402
from podhop.store import Store  # noqa: E402

LINKS = {"unlimited": None, "1gbit": 10**9, "100mbit": 10**8}
# For clone, a second NGINX replica behind the same service (on node-2) serves while CRIU dumps the
# source, as the seed's 10 replicas did; cold and post-copy run with the pod alone, so their
# downtime is the pod's own.
PEER = """apiVersion: v1
kind: Pod
metadata: {name: nginx-peer, labels: {app: nginx}}
spec:
  nodeSelector: {kubernetes.io/hostname: node-2}
  containers: [{name: main, image: nginx, ports: [{containerPort: 80}]}]
"""
REDIS_MB = {"redis-10MB": 10, "redis-100MB": 100, "redis-1GB": 1024}


def manifest(kind: str) -> str:
    if kind == "nginx":
        image, port, args = "nginx", 80, ""
    else:
        image, port = "redis", 6379
        args = (
            '        args: ["redis-server", "--protected-mode", "no", "--enable-debug-command", "local",'
            ' "--save", ""]\n'
        )
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {kind}, labels: {{app: {kind}}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: node-1}}
  containers:
      - name: main
        image: {image}
{args}        ports: [{{containerPort: {port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {kind}}}
spec:
  selector: {{app: {kind}}}
  ports: [{{port: {port}}}]
"""


def populate(cluster_name: str, pod: str, megabytes: int) -> None:
    keys = megabytes * 1024  # 1 KiB values
    argv = [
        sys.executable,
        "-m",
        "podhop",
        "exec",
        pod,
        "--cluster",
        cluster_name,
        "--",
        "redis-cli",
        "DEBUG",
        "POPULATE",
        str(keys),
        "key",
        "1024",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if "OK" not in out.stdout:
        raise RuntimeError(f"populate failed: {out.stdout} {out.stderr}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--strategies", default="cold,clone,postcopy")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "migration.json")
    args = parser.parse_args()
    links = {"unlimited": None} if args.quick else LINKS
    workloads = ["nginx", "redis-10MB"] if args.quick else ["nginx", *REDIS_MB]
    strategies = args.strategies.split(",")
    store = Store()
    runs: list[dict[str, Any]] = []
    for link, bps in links.items():
        name = f"bench-{link}"
        if store.cluster(name):
            delete_cluster(store, name)
        cluster = create_cluster(store, name, 2, 2000, 4 << 30, bps)
        try:
            for workload in workloads:
                kind = "nginx" if workload == "nginx" else "redis"
                apply(cluster, f"{workload}.yaml", manifest(kind))
                state_mb = REDIS_MB.get(workload, 0)
                if state_mb:
                    populate(name, kind, state_mb)
                where = "node-1"
                for strategy in strategies:
                    if strategy == "clone" and kind == "redis":
                        continue  # clone is for stateless pods
                    target = "node-2" if where == "node-1" else "node-1"
                    if strategy == "clone":
                        apply(cluster, "peer.yaml", PEER)
                    t0 = time.monotonic()
                    report = migrate(
                        LocalBackend(cluster),
                        kind,
                        target,
                        strategy,
                        options=Options(timeout_s=600, measure_resources=False),
                    ).to_dict()
                    where = target
                    if strategy == "clone":
                        subprocess.run(
                            [sys.executable, "-m", "podhop", "delete", "-f", "-", "--cluster", name],
                            input=PEER,
                            capture_output=True,
                            text=True,
                            timeout=120,
                        )
                    run = {
                        "workload": workload,
                        "link": link,
                        "link_bps": bps,
                        "state_mb": state_mb,
                        "strategy": strategy,
                        "wall_s": round(time.monotonic() - t0, 2),
                        **report,
                    }
                    runs.append(run)
                    probe = report["probe"] or {}
                    print(
                        f"{link:>9} {workload:>12} {strategy:>8}: downtime {report['downtime_ms']:>8} ms, "
                        f"total {report['total_ms']:>9} ms, failed probes {probe.get('failed')}, "
                        f"moved {report['bytes_transferred'] / 2**20:.1f} MiB",
                        flush=True,
                    )
                subprocess.run(
                    [sys.executable, "-m", "podhop", "delete", "-f", "-", "--cluster", name],
                    input=manifest(kind),
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
        finally:
            delete_cluster(store, name)
    result = {"benchmark": "migration", "runs": runs, "targets": check(runs)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    table = render(runs, result["targets"])
    args.output.with_suffix(".md").write_text(table)
    print(table)
    return 0


def check(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def find(workload: str, strategy: str, link: str) -> dict[str, Any] | None:
        key = (workload, strategy, link)
        return next((r for r in runs if (r["workload"], r["strategy"], r["link"]) == key), None)

    for r in runs:
        probe = r["probe"] or {}
        if r["strategy"] == "clone" and r["workload"] == "nginx":
            out.append(
                {
                    "target": f"clone nginx ({r['link']}): 0 failed, gap <= 20 ms",
                    "measured": f"{probe.get('failed')} failed, gap {probe.get('longest_gap_ms')} ms",
                    "ok": probe.get("failed") == 0 and probe.get("longest_gap_ms", 1e9) <= 20,
                }
            )
        if r["strategy"] == "cold" and r["workload"] == "nginx":
            out.append(
                {
                    "target": f"cold nginx downtime < 200 ms ({r['link']})",
                    "measured": f"{r['downtime_ms']} ms",
                    "ok": r["downtime_ms"] < 200,
                }
            )
        if r["strategy"] == "postcopy" and r["workload"] == "redis-1GB":
            out.append(
                {
                    "target": f"postcopy 1 GB redis downtime < 500 ms ({r['link']})",
                    "measured": f"{r['downtime_ms']} ms",
                    "ok": r["downtime_ms"] < 500,
                }
            )
        if r["strategy"] == "cold" and r["state_mb"] >= 100:
            base = find("nginx", "cold", r["link"])
            if base and r["link_bps"]:
                bound = 1.3 * (r["bytes_transferred"] * 8 / r["link_bps"] * 1000 + base["downtime_ms"])
                out.append(
                    {
                        "target": f"cold {r['workload']} ({r['link']}) <= 1.3 x (bytes/bw + fixed)",
                        "measured": f"{r['downtime_ms']} ms vs bound {bound:.0f} ms",
                        "ok": r["downtime_ms"] <= bound,
                    }
                )
    return out


def render(runs: list[dict[str, Any]], targets: list[dict[str, Any]]) -> str:
    lines = [
        "| link | workload | strategy | downtime ms | total ms | freeze | dump | transfer | restore | "
        "switch | MiB moved | failed probes |",
        "|" + "---|" * 12,
    ]
    for r in runs:
        p = r["phases"]
        lines.append(
            f"| {r['link']} | {r['workload']} | {r['strategy']} | {r['downtime_ms']} | {r['total_ms']} | "
            f"{p['freeze']} | {p['dump']} | {p['transfer']} | {p['restore']} | {p['switch']} | "
            f"{r['bytes_transferred'] / 2**20:.1f} | {(r['probe'] or {}).get('failed')} |"
        )
    lines += ["", "| target | measured | ok |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['ok'] else 'NO'} |" for t in targets]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
