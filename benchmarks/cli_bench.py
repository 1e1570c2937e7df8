"""Benchmark: how long ``podhop`` takes to start, per command (issue 9: under 0.3 s).

Commands that need no plotting or solver — ``--help``, ``cluster list``,
``get``, ``inspect`` — must answer within 0.3 s on this 2-core machine; the
simulator's ``--help`` is measured too (it must not import the simulator).
Timings come from ``hyperfine`` (Debian package; median of ``--runs``, after
warm-up runs, so the page cache is warm as it is for a user), or from a plain
loop of the same runs when hyperfine is missing. Each command runs as
``python -m podhop`` (what the ``podhop`` script does); ``--src DIR`` times
another checkout's ``src`` instead (e.g. a worktree of the commit before, for
the "before" figure).

With root, a one-node cluster ``pfcli`` (one NGINX pod, one checkpoint archive)
is made so that ``get pods`` and ``inspect`` do real work; it is deleted after.
The machine's load average is written with the results, since the machine is
shared. Results go to ``benchmarks/results/cli.json``.

Run: ``python benchmarks/cli_bench.py [--runs 10] [--src DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_S = 0.3
CLUSTER = "pfcli"
POD = """
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
    - name: nginx
      image: nginx
      resources: {requests: {cpu: 100m, memory: 32Mi}}
"""


def podhop_argv(src: Path | None) -> list[str]:
    """``python -m podhop``, with ``src`` first on the path when timing another checkout."""
    if src is None:
        return [sys.executable, "-m", "podhop"]
    return ["env", f"PYTHONPATH={src}", sys.executable, "-m", "podhop"]


def run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300).stdout


def time_loop(command: list[str], runs: int, warmup: int) -> list[float]:
    """Wall times of ``runs`` runs (after ``warmup``), when hyperfine is not installed."""
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        subprocess.run(command, capture_output=True, timeout=60)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def time_hyperfine(commands: dict[str, list[str]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Wall times per command from one hyperfine run (commands interleaved in its own order)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "hf.json"
        names = list(commands)
        argv = ["hyperfine", "-N", "--ignore-failure", "--style", "none", "--runs", str(runs),
                "--warmup", str(warmup), "--export-json", str(out)]
        for name in names:
            argv += ["--command-name", name, " ".join(commands[name])]
        subprocess.run(argv, check=True, capture_output=True, timeout=1800)
        data = json.loads(out.read_text())
    return {name: r["times"] for name, r in zip(names, data["results"], strict=True)}


def make_cluster(base: list[str], workdir: Path) -> Path | None:
    """The ``pfcli`` cluster with one pod, and a checkpoint archive of it (None without root)."""
    if os.geteuid() != 0:
        return None
    subprocess.run([*base, "cluster", "delete", CLUSTER], capture_output=True, timeout=300)
    run([*base, "cluster", "create", "--name", CLUSTER, "--nodes", "1"])
    manifest = workdir / "pod.yaml"
    manifest.write_text(POD)
    run([*base, "apply", "-f", str(manifest), "--cluster", CLUSTER])
    archive = workdir / "web.tar"
    run([*base, "checkpoint", "web", "--leave-running", "-o", str(archive), "--cluster", CLUSTER])
    return archive


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--src", type=Path, default=None, help="time this checkout's src/ instead")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "cli.json")
    args = parser.parse_args()
    base = podhop_argv(None)
    timed = podhop_argv(args.src.resolve() if args.src else None)
    workdir = Path(tempfile.mkdtemp(prefix="pfcli-"))
    load_before = os.getloadavg()
    try:
        archive = make_cluster(base, workdir)
        commands: dict[str, list[str]] = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "podhop --help": [*timed, "--help"],
            "podhop cluster list": [*timed, "cluster", "list"],
            "podhop simulate --help": [*timed, "simulate", "--help"],
        }
        if archive is not None:
            commands["podhop get pods -o wide"] = [*timed, "get", "pods", "-o", "wide", "--cluster", CLUSTER]
            commands["podhop get services -o yaml"] = [*timed, "get", "services", "-o", "yaml",
                                                       "--cluster", CLUSTER]
            commands["podhop inspect ARCHIVE"] = [*timed, "inspect", str(archive)]
        if shutil.which("hyperfine"):
            tool = "hyperfine"
            times = time_hyperfine(commands, args.runs, args.warmup)
        else:
            tool = "loop"
            times = {name: time_loop(argv, args.runs, args.warmup) for name, argv in commands.items()}
    finally:
        if os.geteuid() == 0:
            subprocess.run([*base, "cluster", "delete", CLUSTER], capture_output=True, timeout=300)
        shutil.rmtree(workdir, ignore_errors=True)
    medians = {name: round(statistics.median(t), 4) for name, t in times.items()}
    checked = {n: m for n, m in medians.items() if n.startswith("podhop")}
    for name, median in medians.items():
        print(f"{name:<32} median {1000 * median:7.1f} ms  (min {1000 * min(times[name]):.1f})")
    doc = {
        "benchmark": "cli",
        "machine": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "tool": tool,
        "runs": args.runs,
        "warmup": args.warmup,
        "src": str(args.src) if args.src else "this checkout",
        "times_s": {n: [round(x, 4) for x in t] for n, t in times.items()},
        "median_s": medians,
        "target_s": TARGET_S,
        "ok": all(m < TARGET_S for m in checked.values()),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"all podhop commands under {TARGET_S} s: {doc['ok']}; written to {args.output}")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
