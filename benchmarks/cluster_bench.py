"""Benchmark: how fast a 10-node cluster comes up, and what a service VIP costs.

Targets (issue 2), on a 2-core machine:
- ``podhop cluster create --nodes 10`` plus applying NGINX × 10: under 20 s;
- the request rate ``hey`` reaches through a service VIP is within 5% of the
  rate straight to the pod's IP.

The VIP comparison uses a service with exactly one endpoint, the same pod hit
directly, so the only difference is the DNAT path; runs are interleaved
(direct, VIP, direct, VIP, ...) and medians compared, because these machines
are shared and noisy. The 10-endpoint ``nginx-service`` is measured too, for
information. Results go to ``benchmarks/results/cluster.json``.

Run as root after ``podhop setup``: ``python benchmarks/cluster_bench.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PODHOP = [sys.executable, "-m", "podhop"]
ONE_ENDPOINT = """
apiVersion: v1
kind: Service
metadata: {name: one}
spec:
  selector: {bench: one}
  ports: [{port: 80, targetPort: 80}]
"""


def podhop(*args: str) -> str:
    return subprocess.run([*PODHOP, *args], check=True, capture_output=True, text=True, timeout=600).stdout


def hey(url: str, seconds: int, concurrency: int, keepalive: bool = True) -> float:
    argv = ["hey", "-z", f"{seconds}s", "-c", str(concurrency)]
    if not keepalive:
        argv.append("-disable-keepalive")
    out = subprocess.run(
        [*argv, url], check=True, capture_output=True, text=True, timeout=seconds + 60
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Error distribution:", out)
    if not match or errors:
        raise RuntimeError(f"hey failed against {url}:\n{out[-2000:]}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="bench")
    parser.add_argument("--seconds", type=int, default=5, help="length of each hey run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "cluster.json")
    args = parser.parse_args()
    examples = HERE.parent / "examples"
    subprocess.run([*PODHOP, "cluster", "delete", args.name], capture_output=True, timeout=300)

    t0 = time.monotonic()
    podhop("cluster", "create", "--name", args.name, "--nodes", "10")
    t_create = time.monotonic() - t0
    podhop("apply", "-f", str(examples / "nginx.yaml"), "--cluster", args.name)
    t_total = time.monotonic() - t0
    print(f"cluster create --nodes 10: {t_create:.2f} s; + apply nginx x10: {t_total:.2f} s (target < 20 s)")

    try:
        pods = json.loads(podhop("get", "pods", "-o", "json", "--cluster", args.name))["items"]
        target = pods[0]
        nodes = sorted({p["spec"]["nodeName"] for p in pods})
        # A dedicated pod on the same node, behind a one-endpoint service: VIP and direct hit the same NGINX.
        pinned = f"""
apiVersion: v1
kind: Pod
metadata: {{name: bench-one, labels: {{bench: one}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {target["spec"]["nodeName"]}}}
  containers: [{{name: nginx, image: nginx, ports: [{{containerPort: 80}}]}}]
"""
        subprocess.run(
            [*PODHOP, "apply", "-f", "-", "--cluster", args.name],
            input=pinned + "---" + ONE_ENDPOINT,
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        services = json.loads(podhop("get", "services", "-o", "json", "--cluster", args.name))["items"]
        vip_one = next(s["spec"]["clusterIP"] for s in services if s["metadata"]["name"] == "one")
        vip_all = next(s["spec"]["clusterIP"] for s in services if s["metadata"]["name"] == "nginx-service")
        one = next(
            p
            for p in json.loads(podhop("get", "pods", "-o", "json", "--cluster", args.name))["items"]
            if p["metadata"]["name"] == "bench-one"
        )
        pod_ip = one["status"]["podIP"]
        hey(f"http://{pod_ip}/", 1, args.concurrency)  # warm-up

        runs: dict[str, list[float]] = {
            "direct": [],
            "vip": [],
            "direct_nokeepalive": [],
            "vip_nokeepalive": [],
        }
        for _ in range(args.rounds):
            runs["direct"].append(hey(f"http://{pod_ip}/", args.seconds, args.concurrency))
            runs["vip"].append(hey(f"http://{vip_one}/", args.seconds, args.concurrency))
            runs["direct_nokeepalive"].append(hey(f"http://{pod_ip}/", args.seconds, args.concurrency, False))
            runs["vip_nokeepalive"].append(hey(f"http://{vip_one}/", args.seconds, args.concurrency, False))
        spread = hey(f"http://{vip_all}/", args.seconds, args.concurrency)
    finally:
        t_del = time.monotonic()
        podhop("cluster", "delete", args.name)
        t_delete = time.monotonic() - t_del

    med = {k: statistics.median(v) for k, v in runs.items()}
    cost = 1 - med["vip"] / med["direct"]
    cost_nk = 1 - med["vip_nokeepalive"] / med["direct_nokeepalive"]
    result = {
        "benchmark": "cluster",
        "machine": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "create_10_nodes_s": round(t_create, 3),
        "create_and_apply_10_replicas_s": round(t_total, 3),
        "create_and_apply_target_s": 20,
        "create_and_apply_ok": t_total < 20,
        "delete_s": round(t_delete, 3),
        "nodes_used_by_10_replicas": len(nodes),
        "hey": {
            "seconds": args.seconds,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "rps_runs": runs,
            "rps_median": med,
            "rps_vip_10_endpoints": spread,
        },
        "vip_cost_fraction": round(cost, 4),
        "vip_cost_fraction_no_keepalive": round(cost_nk, 4),
        "vip_cost_target": 0.05,
        "vip_cost_ok": cost < 0.05,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"hey direct {med['direct']:.0f} rps, via VIP {med['vip']:.0f} rps: "
        f"VIP costs {cost:+.1%} (target < 5%)"
    )
    print(
        f"without keep-alive: direct {med['direct_nokeepalive']:.0f}, VIP {med['vip_nokeepalive']:.0f} "
        f"rps ({cost_nk:+.1%}); 10-endpoint VIP {spread:.0f} rps"
    )
    print(f"wrote {args.output}")
    return 0 if result["create_and_apply_ok"] and result["vip_cost_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
