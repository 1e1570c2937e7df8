"""Benchmark: podhop's cold migration beside Podman's checkpoint + restore, same NGINX, same CRIU, same run.

Why: downtime is the number users compare tools by, and Podman (4.3.1 here,
run with podhop's CRIU 4.2 first on its PATH) is the peer that does the same
job by hand: ``podman container checkpoint --export`` then ``podman container
restore --import``. Both start from the same image bytes (podhop's own
``nginx`` OCI image, copied into Podman's storage with skopeo).

Each round, interleaved so that both see the same machine:

- **podhop cold**: ``migrate`` node-1 → node-2 (or back), downtime from its own
  outside probe through the service VIP (200 requests/s);
- **Podman under the probe**: the same 200 requests/s against the container,
  then checkpoint + export, remove, restore + import; a checkpoint that fails
  (CRIU refuses in-flight connections) is recorded as a failure, not dropped;
- **Podman idle**: no probe; the time from the checkpoint's start until the
  restored container answers an HTTP GET (Podman's best case).

Writes ``benchmarks/results/podman.json`` (every round, medians, the ratio of
the medians) and ``podman.md`` (a table). Run as root after ``podhop setup``:
``python benchmarks/podman_bench.py [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from migration_bench import manifest  # noqa: E402

from podhop.backends.local.apply import apply  # noqa: E402
from podhop.backends.local.backend import LocalBackend  # noqa: E402
from podhop.backends.local.cluster import create_cluster, delete_cluster  # noqa: E402
from podhop.migrate.engine import Options, migrate  # noqa: E402
from podhop.migrate.probe import Probe, summarize  # noqa: E402
from podhop.runtime.criu import last_error  # noqa: E402
from podhop.settings import paths  # noqa: E402
from podhop.store import Store  # noqa: E402

NAME = "podhop-bench-nginx"
REF = "localhost/nginx:latest"
#: This machine's hard limits are lower than Podman's defaults ask for.
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=1024:1024"]
RATE_HZ = 200.0


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{paths().bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    out = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and out.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {out.stderr.strip()[-300:]}")
    return out


def answers(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}/", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_serving(ip: str, within: float = 30.0) -> float:
    """Poll (every millisecond, bounded) until ``ip`` answers; the time it did."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if answers(ip):
            return time.monotonic()
        time.sleep(0.001)
    raise RuntimeError(f"{ip} did not answer within {within:.0f} s")


def container_ip() -> str:
    info = json.loads(podman("inspect", NAME).stdout)[0]
    return str(info["NetworkSettings"]["IPAddress"])


def podman_round(archive: Path, probed: bool) -> dict[str, Any]:
    """Checkpoint + export, remove, restore + import: the time until it serves, or the failure."""
    ip = container_ip()
    wait_serving(ip)
    probe = Probe(lambda: (ip, 80), rate_hz=RATE_HZ).start() if probed else None
    if probe:
        time.sleep(0.5)  # the probe's steady state before the checkpoint
    t0 = time.monotonic()
    wall0 = time.time()
    try:
        out = podman("container", "checkpoint", "--export", str(archive), NAME, check=False, timeout=300)
        if out.returncode != 0:
            return {"ok": False, "error": _reason(out.stderr)}
        checkpointed = time.monotonic()
        podman("rm", "-f", "-t", "0", NAME)
        out = podman(
            "container", "restore", "--import", str(archive), "--name", NAME, check=False, timeout=300
        )
        if out.returncode != 0:  # Podman's failure is a result too (seen once: runc's readlink race)
            return {"ok": False, "error": "restore: " + " ".join(out.stderr.split())[-200:]}
        restored = time.monotonic()
        ip = container_ip()
        serving = wait_serving(ip)
        time.sleep(0.3 if probe else 0)
    finally:
        attempts = probe.stop() if probe else []
        archive.unlink(missing_ok=True)
    result: dict[str, Any] = {
        "ok": True,
        "checkpoint_ms": round((checkpointed - t0) * 1000, 1),
        "restore_ms": round((restored - checkpointed) * 1000, 1),
        "until_serving_ms": round((serving - t0) * 1000, 1),
    }
    if probe:
        summary = summarize(attempts, RATE_HZ, since=wall0)
        result["probe"] = dataclasses.asdict(summary)
        result["downtime_ms"] = summary.downtime_ms
    return result


def _reason(stderr: str) -> str:
    """CRIU's own first error (from the dump log in the work path Podman names), else Podman's last
    words: why the checkpoint failed."""
    found = re.search(r"--work-path (\S+)", stderr)
    logs = [Path(found.group(1)) / "dump.log"] if found else []
    reason = last_error(*logs)  # CRIU's first real error (not the benign rlimit one)
    return f"CRIU: {reason[:200]}" if reason else " ".join(stderr.split())[-200:]


def restart_podman_container() -> None:
    podman("rm", "-f", "-t", "0", NAME, check=False)
    podman("run", "-d", "--name", NAME, "--runtime", "runc", *ULIMITS, REF)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "podman.json")
    args = parser.parse_args()
    if shutil.which("podman") is None or shutil.which("skopeo") is None:
        print("podman and skopeo are needed (podhop setup installs them)", file=sys.stderr)
        return 2
    layout = paths().images_dir / "oci"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{layout}:nginx", f"containers-storage:{REF}"],
        check=True,
        timeout=300,
        capture_output=True,
    )
    store = Store()
    name = "bench-podman"
    if store.cluster(name):
        delete_cluster(store, name)
    cluster = create_cluster(store, name, 2, 2000, 4 << 30, None)
    rounds: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="podhop-podman-bench-"))
    os.chmod(work, 0o700)  # archives hold process memory
    try:
        apply(cluster, "nginx.yaml", manifest("nginx"))
        restart_podman_container()
        where = "node-1"
        for i in range(args.rounds):
            target = "node-2" if where == "node-1" else "node-1"
            report = migrate(
                LocalBackend(cluster), "nginx", target, "cold", options=Options(measure_resources=False)
            ).to_dict()
            where = target
            probed = podman_round(work / "probed.tar.zst", probed=True)
            if not probed["ok"]:
                restart_podman_container()  # a failed checkpoint leaves it running (or not): start clean
            idle = podman_round(work / "idle.tar.zst", probed=False)
            if not idle["ok"]:
                restart_podman_container()
            row = {
                "round": i + 1,
                "podhop_cold_downtime_ms": report["downtime_ms"],
                "podhop_cold_phases": report["phases"],
                "podhop_failed_probes": (report["probe"] or {}).get("failed"),
                "podman_probed": probed,
                "podman_idle": idle,
            }
            rounds.append(row)
            print(
                f"round {i + 1}: podhop cold {report['downtime_ms']} ms; podman under probe "
                f"{probed.get('downtime_ms') if probed['ok'] else 'FAILED: ' + probed['error']}; "
                f"podman idle {idle.get('until_serving_ms') if idle['ok'] else 'FAILED'} ms",
                flush=True,
            )
    finally:
        podman("rm", "-f", "-t", "0", NAME, check=False)
        shutil.rmtree(work, ignore_errors=True)
        delete_cluster(store, name)
    result = summarise(rounds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(render(result))
    print(render(result))
    return 0


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    podhop = [float(r["podhop_cold_downtime_ms"]) for r in rounds if r["podhop_cold_downtime_ms"] is not None]
    idle = [float(r["podman_idle"]["until_serving_ms"]) for r in rounds if r["podman_idle"]["ok"]]
    probed_ok = [r["podman_probed"] for r in rounds if r["podman_probed"]["ok"]]
    probed = [float(p["downtime_ms"]) for p in probed_ok]
    med_podhop, med_idle = _median(podhop), _median(idle)
    ratio = round(med_podhop / med_idle, 3) if med_podhop and med_idle else None
    return {
        "benchmark": "podman",
        "rounds": rounds,
        "medians": {
            "podhop_cold_downtime_ms": med_podhop,
            "podman_idle_until_serving_ms": med_idle,
            "podman_probed_downtime_ms": _median(probed),
            "podman_probed_failures": len(rounds) - len(probed_ok),
            "podman_idle_failures": len(rounds) - len(idle),
        },
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "ratio_podhop_to_podman_idle": ratio,
        "targets": [
            {
                "target": "podhop cold NGINX downtime <= 150 ms",
                "measured": med_podhop,
                "ok": med_podhop is not None and med_podhop <= 150,
            },
            {
                "target": "podhop cold <= 1/3 of Podman checkpoint+restore (idle)",
                "measured": ratio,
                "ok": ratio is not None and ratio <= 1 / 3,
            },
        ],
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        "| round | podhop cold downtime ms | Podman under probe "
        "| Podman idle: checkpoint+restore until serving ms |",
        "|---|---|---|---|",
    ]
    for r in result["rounds"]:
        p = r["podman_probed"]
        probed = f"{p['downtime_ms']} ms" if p["ok"] else f"failed: …{p['error'][-90:]}"
        idle = r["podman_idle"]
        lines.append(
            f"| {r['round']} | {r['podhop_cold_downtime_ms']} | {probed} | "
            f"{idle['until_serving_ms'] if idle['ok'] else 'failed'} |"
        )
    m = result["medians"]
    lines += [
        "",
        f"Medians: podhop cold {m['podhop_cold_downtime_ms']} ms; "
        f"Podman idle {m['podman_idle_until_serving_ms']} ms "
        f"(ratio {result['ratio_podhop_to_podman_idle']}); Podman under the probe failed "
        f"{m['podman_probed_failures']} of {len(result['rounds'])} rounds.",
        "",
        "| target | measured | ok |",
        "|---|---|---|",
    ]
    lines += [
        f"| {t['target']} | {t['measured']} | {'yes' if t['ok'] else 'NO'} |" for t in result["targets"]
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
