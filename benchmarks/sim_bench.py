"""Benchmark: 1,000 simulated steps of 1,000 edge nodes, 10,000 services and 20,000 users.

Target (issue: placement and migration scheduling), on this 2-core machine:
under 60 s for the whole run — setup, initial placement and 1,000 steps —
with five policies side by side: least-allocated and latency-aware (static
placement), mobility, low-utilization and hottest (placement plus migration
every step). The ILP is left out: at this scale it re-optimises a 200-container
window per call within its time limit, which is a cost chosen by
``ilp_every``/``time_limit_s``, not the simulator's. For scale, CloudSim Plus
reports 20,000 hosts and 40,000 VMs in 1.3 minutes; EdgeSimPy's published case
studies use 60 servers and 240 services.

Services request 50–400m CPU (10 per node on average, 56 % of the cluster's
CPU requested) on a 30 km × 30 km grid. Results go to
``benchmarks/results/sim.json``. Run: ``python benchmarks/sim_bench.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from podhop.sim.engine import simulate
from podhop.sim.spec import ServiceSpec, SimSpec, TopologySpec

HERE = Path(__file__).resolve().parent
POLICIES = ["least-allocated", "latency-aware", "mobility", "low-utilization", "hottest"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--output", type=Path, default=HERE / "results" / "sim.json")
    args = parser.parse_args()
    spec = SimSpec(
        seed=args.seed,
        nodes=args.nodes,
        services=args.services,
        users=args.users,
        steps=args.steps,
        policies=args.policies.split(","),
        topology=TopologySpec(area_km=30.0),
        service=ServiceSpec(cpu_m=(50, 400)),
    )
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        if done % 100 == 0 or done == total:
            now = time.perf_counter()
            print(f"step {done}/{total} (+{now - last[0]:.1f} s)", flush=True)
            last[0] = now

    t0 = time.perf_counter()
    result = simulate(spec, progress)
    seconds = time.perf_counter() - t0
    out = {
        "benchmark": "sim",
        "machine": {
            "kernel": platform.release(),
            "cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "nodes": args.nodes,
        "services": args.services,
        "users": args.users,
        "steps": args.steps,
        "policies": spec.policies,
        "seconds": round(seconds, 2),
        "target_s": 60.0,
        "ok": seconds < 60.0,
        "timings": {k: round(v, 2) for k, v in result.timings.items()},
        "summary": result.summary,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"{args.steps} steps × {args.nodes} nodes × {args.services} services: {seconds:.1f} s (target < 60 s)"
    )
    for name, m in result.summary.items():
        print(
            f"  {name:16} mean {m['mean_latency_ms']:.1f} ms  p95 {m['p95_latency_ms']:.1f} ms  "
            f"migrations {m['migrations']}  capacity violations {m['capacity_violations']}"
        )
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
