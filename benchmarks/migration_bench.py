"""Benchmark: downtime and total time per migration strategy, workload and link.

Workloads: NGINX (a few MB of state) and Redis holding 10 MB, 100 MB and 1 GB
(filled with ``DEBUG POPULATE``); links unlimited, 1 Gbit/s and 100 Mbit/s
(one 2-node cluster per link, the cap on every node's link); strategies
``cold``, ``clone`` and ``postcopy`` (``precopy`` is refused on this kernel).
Each migration goes node-1 → node-2 or back, with the engine's own outside
probe (200 requests/s through the service VIP) measuring downtime. ``clone``
runs with a second NGINX replica behind the service, as in the seed.

Each combination runs ``--repeat`` times (default 5) and the targets are checked
on the medians (issue 9):
- ``cold`` NGINX downtime ≤ 150 ms;
- ``clone``: 0 failed probe requests and no probe gap above 20 ms (NGINX);
- ``postcopy`` downtime for 1 GB Redis ≤ 300 ms;
- ``cold`` 1 GB Redis on the unlimited link ≤ 2.5 s;
- ``cold`` on a capped link within 1.2 × (state bytes ÷ link bandwidth + the
  fixed cost, NGINX's cold downtime on the same link), for ≥ 100 MB.

Writes ``benchmarks/results/migration.json`` (every report) and ``migration.md``
(a table of medians). Run as root after ``podhop setup``; the full matrix takes long
(1 GB over 100 Mbit/s alone is ~2 min per migration): ``--links``, ``--workloads`` and
``--strategies`` pick a part, ``--quick`` runs NGINX and 10 MB Redis on the unlimited link.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
    parser.add_argument("--links", default=",".join(LINKS))
    parser.add_argument("--workloads", default=",".join(["nginx", *REDIS_MB]))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--repeat-capped", type=int, default=None, help="repeats on capped links")
    parser.add_argument("--skip", default="", help="LINK:WORKLOAD,... not to run (e.g. 100mbit:redis-1GB)")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "migration.json")
    args = parser.parse_args()
    links = {k: LINKS[k] for k in (["unlimited"] if args.quick else args.links.split(","))}
    workloads = ["nginx", "redis-10MB"] if args.quick else args.workloads.split(",")
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
                if f"{link}:{workload}" in args.skip.split(","):
                    continue
                kind = "nginx" if workload == "nginx" else "redis"
                repeat = args.repeat if bps is None or args.repeat_capped is None else args.repeat_capped
                apply(cluster, f"{workload}.yaml", manifest(kind))
                state_mb = REDIS_MB.get(workload, 0)
                if state_mb:
                    populate(name, kind, state_mb)
                where = "node-1"
                for strategy, _ in ((s, i) for s in strategies for i in range(repeat)):
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
    medians = median_runs(runs)
    result = {
        "benchmark": "migration",
        "repeat": args.repeat,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "medians": medians,
        "runs": runs,
        "targets": check(medians),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    table = render(medians, result["targets"])
    args.output.with_suffix(".md").write_text(table)
    print(table)
    return 0


def median_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (link, workload, strategy): the medians of its runs (downtime, total, phases,
    bytes, failed probes, longest probe gap) and how many runs they are of."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["link"], r["workload"], r["strategy"]), []).append(r)
    out = []
    for (link, workload, strategy), rs in groups.items():
        probes = [r["probe"] or {} for r in rs]
        phases = {p for r in rs for p in r["phases"]}
        out.append(
            {
                "link": link,
                "link_bps": rs[0]["link_bps"],
                "workload": workload,
                "state_mb": rs[0]["state_mb"],
                "strategy": strategy,
                "n": len(rs),
                "downtime_ms": _med([r["downtime_ms"] for r in rs]),
                "downtime_ms_all": [r["downtime_ms"] for r in rs],
                "total_ms": _med([r["total_ms"] for r in rs]),
                "phases": {p: _med([r["phases"].get(p, 0.0) for r in rs]) for p in sorted(phases)},
                "bytes_transferred": _med([r["bytes_transferred"] for r in rs]),
                "failed_probes": _med([p.get("failed", 0) for p in probes]),
                "failed_probes_max": max(p.get("failed", 0) for p in probes),
                "longest_gap_ms": _med([p.get("longest_gap_ms", 0.0) for p in probes]),
            }
        )
    return out


def _med(values: list[float]) -> float:
    return round(float(statistics.median(values)), 2)


def check(medians: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 9's targets, on the medians."""
    out: list[dict[str, Any]] = []

    def find(workload: str, strategy: str, link: str) -> dict[str, Any] | None:
        key = (workload, strategy, link)
        return next((r for r in medians if (r["workload"], r["strategy"], r["link"]) == key), None)

    def target(text: str, measured: str, ok: bool) -> None:
        out.append({"target": text, "measured": measured, "ok": ok})

    for r in medians:
        w, s, link = r["workload"], r["strategy"], r["link"]
        if s == "cold" and w == "nginx":
            target(
                f"cold nginx downtime <= 150 ms ({link})", f"{r['downtime_ms']} ms", r["downtime_ms"] <= 150
            )
        if s == "clone" and w == "nginx":
            target(
                f"clone nginx ({link}): 0 failed probes, gap <= 20 ms",
                f"{r['failed_probes_max']} failed (worst run), gap {r['longest_gap_ms']} ms",
                r["failed_probes_max"] == 0 and r["longest_gap_ms"] <= 20,
            )
        if s == "postcopy" and w == "redis-1GB":
            target(
                f"postcopy 1 GB redis downtime <= 300 ms ({link})",
                f"{r['downtime_ms']} ms",
                r["downtime_ms"] <= 300,
            )
        if s == "cold" and w == "redis-1GB" and link == "unlimited":
            target(
                "cold 1 GB redis downtime <= 2.5 s (unlimited)",
                f"{r['downtime_ms']} ms",
                r["downtime_ms"] <= 2500,
            )
        base = find("nginx", "cold", link)
        if s == "cold" and r["state_mb"] >= 100 and r["link_bps"] and base:
            bound = 1.2 * (r["bytes_transferred"] * 8 / r["link_bps"] * 1000 + base["downtime_ms"])
            target(
                f"cold {w} ({link}) <= 1.2 x (bytes/bw + fixed)",
                f"{r['downtime_ms']} ms vs bound {bound:.0f} ms",
                r["downtime_ms"] <= bound,
            )
    return out


def render(medians: list[dict[str, Any]], targets: list[dict[str, Any]]) -> str:
    lines = [
        "Medians of n runs each (downtime by the outside probe through the service VIP, 200 requests/s).",
        "",
        "| link | workload | strategy | n | downtime ms | total ms | freeze | dump | transfer | restore | "
        "switch | MiB moved | failed probes (worst) | longest gap ms |",
        "|" + "---|" * 14,
    ]
    for r in medians:
        p = r["phases"]
        lines.append(
            f"| {r['link']} | {r['workload']} | {r['strategy']} | {r['n']} | {r['downtime_ms']} | "
            f"{r['total_ms']} | {p.get('freeze', 0.0)} | {p.get('dump', 0.0)} | {p.get('transfer', 0.0)} | "
            f"{p.get('restore', 0.0)} | {p.get('switch', 0.0)} | {r['bytes_transferred'] / 2**20:.1f} | "
            f"{r['failed_probes']} ({r['failed_probes_max']}) | {r['longest_gap_ms']} |"
        )
    lines += ["", "| target | measured | ok |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['ok'] else 'NO'} |" for t in targets]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
