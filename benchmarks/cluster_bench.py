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

New connections (issue 9: hey ``-disable-keepalive``): the VIP must cost under
10 % of the direct rate and no request may wait on a retransmitted SYN. Each
run records hey's slowest request and how many took over 0.9 s (a SYN
retransmission costs at least 1 s), the pod's own TCP counters (its network
namespace is private: ``TcpExtPAWSTimewait`` counts SYNs its ``TIME_WAIT``
sockets dropped, ``ListenDrops`` full queues), the host's conntrack statistics
and the host's ``TcpRetransSegs``/``TcpExtTCPSynRetrans`` (host-wide: they also
count other users of this shared machine), and the load average.

Run as root after ``podhop setup``: ``python benchmarks/cluster_bench.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def tcp_counters(netns: str | None = None) -> dict[str, int]:
    """``/proc/net/snmp`` and ``/proc/net/netstat`` of a network namespace, as nstat names them."""
    out: dict[str, int] = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        argv = ["cat", path] if netns is None else ["ip", "netns", "exec", netns, "cat", path]
        lines = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout
        rows = lines.splitlines()
        for head, vals in zip(rows[::2], rows[1::2], strict=True):
            kind, names = head.split(":", 1)
            values = vals.split(":", 1)[1].split()
            out.update({kind + n: int(v) for n, v in zip(names.split(), values, strict=True)})
    return out


def conntrack_stats() -> dict[str, int]:
    """The host's conntrack statistics summed over CPUs (``conntrack -S``)."""
    text = subprocess.run(["conntrack", "-S"], capture_output=True, text=True, timeout=30).stdout
    total: dict[str, int] = {}
    for key, value in re.findall(r"(\w+)=(\d+)", text):
        if key != "cpu":
            total[key] = total.get(key, 0) + int(value)
    return total


POD_KEYS = ("TcpExtPAWSTimewait", "TcpExtListenDrops", "TcpExtListenOverflows", "TcpPassiveOpens")
HOST_KEYS = ("TcpRetransSegs", "TcpExtTCPSynRetrans")
CT_KEYS = ("found", "insert_failed", "drop", "early_drop", "clash_resolve", "invalid")


def hey_run(
    url: str, seconds: int, concurrency: int, keepalive: bool = True, pod_netns: str | None = None
) -> dict[str, Any]:
    """One hey run: rate, slowest request, requests over 0.9 s, and the counters that moved."""
    argv = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-o", "csv"]
    if not keepalive:
        argv.append("-disable-keepalive")
    host0, ct0 = tcp_counters(), conntrack_stats() if shutil.which("conntrack") else {}
    pod0 = tcp_counters(pod_netns) if pod_netns else {}
    t0 = time.monotonic()
    proc = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 60)
    wall = time.monotonic() - t0
    host1, ct1 = tcp_counters(), conntrack_stats() if shutil.which("conntrack") else {}
    pod1 = tcp_counters(pod_netns) if pod_netns else {}
    rows = [ln.split(",") for ln in proc.stdout.splitlines()[1:] if ln]
    times = [float(r[0]) for r in rows]
    errors = sum(1 for r in rows if r[6] != "200")
    if proc.returncode != 0 or not times:
        raise RuntimeError(f"hey failed against {url}:\n{proc.stderr[-2000:]}")
    return {
        "rps": round(len(times) / wall, 1),
        "requests": len(times),
        "errors": errors,
        "slowest_s": round(max(times), 4),
        "over_0_9_s": sum(1 for t in times if t > 0.9),
        "pod": {k: pod1.get(k, 0) - pod0.get(k, 0) for k in POD_KEYS} if pod_netns else {},
        "host_shared": {k: host1[k] - host0[k] for k in HOST_KEYS},
        "conntrack": {k: ct1.get(k, 0) - ct0.get(k, 0) for k in CT_KEYS},
        "loadavg": round(os.getloadavg()[0], 2),
    }


def hey(url: str, seconds: int, concurrency: int, keepalive: bool = True) -> float:
    run = hey_run(url, seconds, concurrency, keepalive)
    if run["errors"]:
        raise RuntimeError(f"hey against {url}: {run['errors']} failed requests")
    return float(run["rps"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="pfbench")
    parser.add_argument("--seconds", type=int, default=5, help="length of each hey run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per variant")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "cluster.json")
    args = parser.parse_args()
    examples = HERE.parent / "examples"
    load_before = [round(x, 2) for x in os.getloadavg()]
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
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        prefix = f"ph-{args.name}.bench-one."
        pod_netns = next(ln.split()[0] for ln in netns.splitlines() if ln.startswith(prefix))
        hey(f"http://{pod_ip}/", 1, args.concurrency)  # warm-up

        variants = {
            "direct": (f"http://{pod_ip}/", True),
            "vip": (f"http://{vip_one}/", True),
            "direct_nokeepalive": (f"http://{pod_ip}/", False),
            "vip_nokeepalive": (f"http://{vip_one}/", False),
        }
        details: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for key, (url, keepalive) in variants.items():
                details[key].append(hey_run(url, args.seconds, args.concurrency, keepalive, pod_netns))
        runs = {k: [float(r["rps"]) for r in v] for k, v in details.items()}
        spread = hey(f"http://{vip_all}/", args.seconds, args.concurrency)
    finally:
        t_del = time.monotonic()
        podhop("cluster", "delete", args.name)
        t_delete = time.monotonic() - t_del

    med = {k: statistics.median(v) for k, v in runs.items()}
    cost = 1 - med["vip"] / med["direct"]
    cost_nk = 1 - med["vip_nokeepalive"] / med["direct_nokeepalive"]
    # drift on a shared machine moves both halves of a round together: the paired ratio is steadier
    paired = 1 - statistics.median(v / d for v, d in zip(runs["vip_nokeepalive"], runs["direct_nokeepalive"],
                                                          strict=True))
    slowest = {k: max(float(r["slowest_s"]) for r in v) for k, v in details.items()}
    waited = {k: sum(int(r["over_0_9_s"]) for r in v) for k, v in details.items()}
    paws = {k: sum(int(r["pod"]["TcpExtPAWSTimewait"]) for r in v) for k, v in details.items()}
    no_syn_wait = all(n == 0 for n in waited.values()) and max(slowest.values()) < 1.0
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
            "runs": details,
            "slowest_s": slowest,
            "requests_over_0_9_s": waited,
            "pod_paws_timewait_drops": paws,
        },
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "vip_cost_fraction": round(cost, 4),
        "vip_cost_fraction_no_keepalive": round(cost_nk, 4),
        "vip_cost_fraction_no_keepalive_paired": round(paired, 4),
        "vip_cost_target": 0.05,
        "vip_cost_target_no_keepalive": 0.10,
        "vip_cost_ok": cost < 0.05,
        "vip_cost_no_keepalive_ok": cost_nk < 0.10,
        "no_request_waited_on_a_syn_retransmission": no_syn_wait,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"hey direct {med['direct']:.0f} rps, via VIP {med['vip']:.0f} rps: "
        f"VIP costs {cost:+.1%} (target < 5%)"
    )
    print(
        f"without keep-alive: direct {med['direct_nokeepalive']:.0f}, VIP {med['vip_nokeepalive']:.0f} "
        f"rps ({cost_nk:+.1%}, target < 10%; median of paired rounds {paired:+.1%}); "
        f"10-endpoint VIP {spread:.0f} rps"
    )
    print(f"slowest request per variant (s): {slowest}; over 0.9 s: {waited}; pod PAWS drops: {paws}")
    print(f"wrote {args.output}")
    ok = result["create_and_apply_ok"] and result["vip_cost_ok"] and result["vip_cost_no_keepalive_ok"]
    return 0 if ok and no_syn_wait else 1


if __name__ == "__main__":
    sys.exit(main())
