"""Experiments on Kubernetes: ``podhop demo --kind kubernetes`` (the seed, end to end, on a real local
Kubernetes cluster it creates and deletes) and ``experiment run`` on a cluster named by a kubeconfig
(reused as is: only the run's own objects are removed).

Both run the CLI as a user would (``--json``), then check the filled table, the raw data and the
report, that the hottest pod really moved to the chosen node, and that nothing is left behind.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import kube_cluster, kube_unavailable

pytestmark = pytest.mark.integration

if (why := kube_unavailable()) is not None:
    pytest.skip(why, allow_module_level=True)

from podhop.kubekind import cluster as kube  # noqa: E402
from podhop.kubekind import components  # noqa: E402
from podhop.store import Store  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PODHOP = [sys.executable, "-m", "podhop"]
KUBECTL = str(components.binary("kubectl"))


def check_results(out: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """The checks every finished run must pass; the results document."""
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert results["status"] == "ok" and doc["status"] == "ok", doc.get("error")
    assert results["cluster"]["kind"] == "kubernetes"
    mig = results["migration"]
    assert mig["kind"] == "kubernetes" and mig["source_node"] != mig["target_node"]
    assert {"dump", "transfer", "restore", "switch"} <= set(mig["phases"]) and mig["total_ms"] > 0
    assert mig["new_pod"] and mig["bytes_transferred"] > 0
    for phase in ("baseline", "during", "after"):
        p = results["phases"][phase]
        assert p["rps"] > 0 and p["errors"] == 0, (phase, p)  # hey: not one failed request
    assert results["probe"]["attempts"] > 200
    table = {row["metric"]: row["value"] for row in doc["table"]}
    for metric in ("Migration time", "Downtime", "Failed requests", "Response time during migration"):
        assert table.get(metric) and "n/a" not in table[metric], (metric, table.get(metric))
    assert table["Failed requests"].startswith("hey 0 of"), table["Failed requests"]
    for f in ("metrics.csv", "probe.csv", "load.csv", "spec.yaml", "report.md", "report.html"):
        assert (out / f).is_file(), f
    pods = [r for r in (out / "metrics.csv").read_text().splitlines() if ",pod," in r]
    assert pods, "no pod metrics recorded: the hottest pod was chosen from nothing"
    print(f"\n{json.dumps(doc['table'], indent=1)}")
    return results


def test_demo_on_a_kubernetes_cluster_it_creates(tmp_path: Path) -> None:
    name = f"kx-{secrets.token_hex(3)}"
    out = tmp_path / "demo"
    proc = subprocess.Popen(
        [*PODHOP, "demo", "--kind", "kubernetes", "--name", name, "--json", "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    idx = None
    deadline = time.monotonic() + 120
    while idx is None and proc.poll() is None and time.monotonic() < deadline:
        store = Store()
        record = store.cluster(name)
        store.close()
        idx = record.idx if record is not None else None
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    results = check_results(out, json.loads(stdout))
    assert results["cluster"]["name"] == name and results["cluster"]["created"] is True
    store = Store()
    try:
        assert store.cluster(name) is None, "the demo's cluster was not deleted"
    finally:
        store.close()
    assert idx is not None and kube.residue(name, idx) == []


def test_experiment_on_the_cluster_of_a_kubeconfig(tmp_path: Path) -> None:
    """``cluster: {kubeconfig: …}``: reused as is; the workload (in the test's own namespace) is
    removed after, the cluster and the namespace stay; the pod moved was the hottest."""
    ns = f"exp-{secrets.token_hex(3)}"
    docs = list(yaml.safe_load_all((EXAMPLES / "nginx.yaml").read_text()))
    for d in docs:
        d["metadata"]["namespace"] = ns
    docs[0]["spec"]["replicas"] = 4
    (tmp_path / "nginx.yaml").write_text(yaml.safe_dump_all(docs))
    with kube_cluster("kx") as c:
        kubectl = [KUBECTL, f"--kubeconfig={c.kubeconfig}"]
        subprocess.run([*kubectl, "create", "namespace", ns], check=True, capture_output=True)
        spec = {
            "name": "kubeconfig-run",
            "cluster": {"kubeconfig": str(c.kubeconfig)},
            "workload": {"manifests": ["nginx.yaml"]},
            "load": {
                "service": "nginx-service",
                "namespace": ns,
                "via": "load-balancer",
                "requests": 2000,
                "concurrency": 20,
                "during_s": 4,
                "warmup_requests": 100,
                "max_phase_s": 60,
            },
            "migration": {"selector": {"app": "nginx"}, "strategy": "clone"},
        }
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        out = tmp_path / "run"
        proc = subprocess.run(
            [*PODHOP, "experiment", "run", str(tmp_path / "spec.yaml"), "--json", "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results = check_results(out, json.loads(proc.stdout))
        assert results["cluster"]["created"] is False
        sel = results["repetitions"][0]["selection"]
        assert sel["pod"]["chosen"] == results["migration"]["pod"]
        # The run removed what it applied, and only that: its namespace stays, emptied.
        deadline = time.monotonic() + 120
        while True:
            left = subprocess.run(
                [*kubectl, "get", "deployments,services,pods", "-n", ns, "-o", "name"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            if not left:
                break
            assert time.monotonic() < deadline, f"the run left {left}"
            time.sleep(1)
        nodes = subprocess.run(
            [*kubectl, "get", "nodes", "-o", "name"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert len(nodes.stdout.split()) == 3  # the cluster itself is untouched
