"""Experiments and the rebalancer on Kubernetes: ``podhop demo --kind kubernetes`` (the seed, end to
end, on a real local Kubernetes cluster it creates and deletes), ``experiment run`` on a cluster named
by a kubeconfig (reused as is: only the run's own objects are removed), and ``podhop rebalance
--kubeconfig`` moving pods off a node they overload.

Both run the CLI as a user would (``--json``), then check the filled table, the raw data and the
report, that the hottest pod really moved to the chosen node, and that nothing is left behind.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import BUSY, Ns, kube_cluster, kube_namespace, kube_unavailable

pytestmark = pytest.mark.integration

if (why := kube_unavailable()) is not None:
    pytest.skip(why, allow_module_level=True)

from podhop.kubekind import cluster as kube  # noqa: E402
from podhop.kubekind import components  # noqa: E402
from podhop.store import Store  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PODHOP = [sys.executable, "-m", "podhop"]
KUBECTL = str(components.binary("kubectl"))


@pytest.fixture(scope="module")
def kcluster() -> Iterator[kube.KubeCluster]:
    with kube_cluster("kx") as c:
        yield c


@pytest.fixture
def ns(kcluster: kube.KubeCluster, tmp_path: Path) -> Iterator[Ns]:
    with kube_namespace(kcluster, tmp_path) as n:
        yield n


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


def test_experiment_on_the_cluster_of_a_kubeconfig(ns: Ns, tmp_path: Path) -> None:
    """``cluster: {kubeconfig: …}``: reused as is; the workload (in the test's own namespace) is
    removed after, the cluster and the namespace stay; the pod moved was the hottest."""
    docs = list(yaml.safe_load_all((EXAMPLES / "nginx.yaml").read_text()))
    for d in docs:
        d["metadata"]["namespace"] = ns.name
    docs[0]["spec"]["replicas"] = 4
    (tmp_path / "nginx.yaml").write_text(yaml.safe_dump_all(docs))
    spec = {
        "name": "kubeconfig-run",
        "cluster": {"kubeconfig": str(ns.kubeconfig)},
        "workload": {"manifests": ["nginx.yaml"]},
        "load": {
            "service": "nginx-service",
            "namespace": ns.name,
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
    # The run removed what it applied, and only that: the namespace stays, emptied.
    deadline = time.monotonic() + 120
    while left := ns.kubectl("get", "deployments,services,pods", "-o", "name").split():
        assert time.monotonic() < deadline, f"the run left {left}"
        time.sleep(1)
    assert len(ns.kubectl("get", "nodes", "-o", "name").split()) == 3  # the cluster is untouched


def test_rebalance_moves_pods_off_the_node_they_overload(ns: Ns) -> None:
    """Three CPU-bound replicas all on node-1 (the others cordoned while they start): ``podhop
    rebalance --kubeconfig`` plans moves off node-1 only, carries them out, the Deployment keeps its
    three ready replicas, and node-1's measured load falls. The agents (a DaemonSet) never move."""
    for n in ("node-2", "node-3"):
        ns.kubectl("cordon", n)
    try:
        ns.kubectl("apply", "-f", "-", input=BUSY)
        ns.kubectl("rollout", "status", "deployment/busy", "--timeout=120s", timeout=130)
    finally:
        for n in ("node-2", "node-3"):
            ns.kubectl("uncordon", n)
    assert {p["spec"]["nodeName"] for p in ns.pods()} == {"node-1"}
    args = ["rebalance", "--policy", "low-utilization", "--window", "3", "-o", "json"]
    dry = ns.podhop(*args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)["planned"]
    assert planned and all(m["source"] == "node-1" and m["target"] != "node-1" for m in planned), planned
    assert all(m["pod"].startswith("busy-") for m in planned), planned
    out = ns.podhop(*args, "--strategy", "cold", "--max-concurrent", "1", timeout=600)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    moved = len(data["migrations"])
    print(f"\nrebalance: {data['imbalance_before']} -> {data['imbalance_after']}, moved {moved}")
    assert not data["failed"] and data["migrations"], data
    assert all(m["source_node"] == "node-1" and m["target_node"] != "node-1" for m in data["migrations"])
    assert data["imbalance_after"] < data["imbalance_before"]
    ns.kubectl("rollout", "status", "deployment/busy", "--timeout=120s", timeout=130)
    deployment = ns.get("deployment", "busy")
    assert deployment["status"].get("readyReplicas") == 3 and deployment["status"].get("replicas") == 3
    assert len({p["spec"]["nodeName"] for p in ns.pods()}) >= 2
