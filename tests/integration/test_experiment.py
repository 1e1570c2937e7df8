"""One real, short experiment end to end: 2 nodes, 3 NGINX replicas, small load, clone migration.

Runs the CLI command (`podhop experiment run --json`) in a subprocess against a fresh cluster it
creates and must delete; then checks results.json, the CSVs and the report's embedded figures.
A second run is interrupted with SIGINT (Ctrl-C) mid-load: it must stop, keep what it gathered,
say so, and leave no cluster behind.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from podhop.backends.local.cluster import residue
from podhop.sh import default_sigint
from podhop.store import Store

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CLI = [sys.executable, "-c", "from podhop.cli.experiment_cmds import experiment_group; experiment_group()"]


@pytest.fixture
def hey_present(capable: None) -> None:
    if shutil.which("hey") is None:
        pytest.skip("needs `hey` (run `podhop setup` or apt-get install hey)")


def new_name() -> str:
    return f"it-{secrets.token_hex(3)}"


def write_spec(tmp_path: Path, name: str, **load: object) -> Path:
    nginx = list(yaml.safe_load_all((EXAMPLES / "nginx.yaml").read_text()))
    nginx[0]["spec"]["replicas"] = 3
    (tmp_path / "nginx.yaml").write_text(yaml.safe_dump_all(nginx))
    spec = {
        "name": "it",
        "cluster": {"name": name, "nodes": 2, "node_cpu": "1", "node_memory": "1Gi"},
        "workload": {"manifests": ["nginx.yaml"]},
        "load": {
            "service": "nginx-service",
            "requests": 1500,
            "concurrency": 20,
            "during_s": 3,
            "warmup_requests": 50,
            "settle_s": 0.5,
            "max_phase_s": 30,
            **load,
        },
        "migration": {
            "pod": "hottest-cpu",
            "target": "least-loaded",
            "strategy": "clone",
            "start_after_s": 0.5,
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def assert_gone(name: str, idx: int | None) -> None:
    store = Store()
    try:
        assert store.cluster(name) is None, f"cluster {name} was not deleted"
    finally:
        store.close()
    if idx is not None:
        assert residue(name, idx) == []


def cluster_index(name: str, timeout_s: float = 20) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        store = Store()
        rec = store.cluster(name)
        store.close()
        if rec is not None:
            return rec.idx
        time.sleep(0.1)
    return None


def current_step(out: Path) -> str | None:
    try:
        steps = json.loads((out / "results.json").read_text())["steps"]
    except (OSError, ValueError, KeyError):
        return None
    return str(steps[-1]["step"]) if steps else None


def test_short_experiment_end_to_end(hey_present: None, tmp_path: Path) -> None:
    name = new_name()
    spec = write_spec(tmp_path, name)
    out = tmp_path / "results"
    t0 = time.monotonic()
    proc = subprocess.run(
        [*CLI, "run", str(spec), "--json", "-o", str(out)], capture_output=True, text=True, timeout=180
    )
    elapsed = time.monotonic() - t0
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0, (doc.get("error"), proc.stderr[-2000:])
    assert doc["status"] == "ok" and doc["results_dir"] == str(out)
    assert_gone(name, None)

    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "ok" and results["cluster"]["created"] is True
    for phase in ("baseline", "during", "after"):
        p = results["phases"][phase]
        assert p["rps"] > 0 and p["requests"] >= 1500 and p["errors"] >= 0
        assert 0 < p["latency_ms"]["p50"] <= p["latency_ms"]["p95"] <= p["latency_ms"]["p99"]
    mig = results["migration"]
    assert mig["strategy"] == "clone" and mig["source_node"] != mig["target_node"]
    assert (
        mig["total_ms"] > 0 and mig["downtime_ms"] is not None and {"dump", "restore"} <= set(mig["phases"])
    )
    assert [s["phase"] for s in mig["timeline"]][:1] == ["prepare"]
    assert results["probe"]["attempts"] > 200 * 3 and "longest_gap_ms" in results["probe"]
    assert results["resources_freed"]["node"] == mig["source_node"]
    assert set(results["versions"]) >= {"kernel", "criu", "runc", "podhop"}
    sel = results["repetitions"][0]["selection"]
    assert sel["pod"]["chosen"] == mig["pod"] and sel["node"]["chosen"] == mig["target_node"]
    for f in ("metrics.csv", "probe.csv", "load.csv", "spec.yaml", "manifests/nginx.yaml", "report.md"):
        assert (out / f).is_file(), f
    html = (out / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) == 5 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert doc["table"][0]["metric"] == "Migration time" and "ms" in doc["table"][0]["value"]
    assert elapsed < 120, f"took {elapsed:.0f} s"


def test_ctrl_c_stops_cleanly_and_removes_the_cluster(hey_present: None, tmp_path: Path) -> None:
    name = new_name()
    spec = write_spec(tmp_path, name, requests=200000, concurrency=20, max_phase_s=120)
    out = tmp_path / "results"
    proc = subprocess.Popen(
        [*CLI, "run", str(spec), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,  # Ctrl-C means stop, even if this test runs with SIGINT ignored
    )
    try:
        idx = cluster_index(name)
        deadline = time.monotonic() + 60
        while current_step(out) != "baseline" and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # well into the (long) baseline load
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "interrupted", results["error"]
    assert results["error"]["step"] == "baseline", [st["step"] for st in results["steps"]]
    assert "results gathered so far are in" in stderr
    assert (out / "report.html").is_file() and (out / "metrics.csv").is_file()
    assert_gone(name, idx)
    url = results["load_target"]["url"]
    left = [a for a in map(_argv, Path("/proc").glob("[0-9]*/cmdline")) if a[:1] == ["hey"] and url in a]
    assert not left, f"hey left running: {left}"


def _argv(p: Path) -> list[str]:
    try:
        argv = p.read_bytes().decode(errors="replace").rstrip("\0").split("\0")
    except OSError:
        return []
    return [Path(argv[0]).name, *argv[1:]] if argv and argv[0] else []
