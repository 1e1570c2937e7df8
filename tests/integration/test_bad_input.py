"""Bad manifests and impossible requests fail cleanly and apply nothing of the file."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import WEB_SERVICE as SERVICE

from podhop.backends.local import cluster as cluster_mod
from podhop.backends.local.apply import apply
from podhop.backends.local.cluster import LocalCluster, create_cluster, delete_cluster, residue
from podhop.errors import ClusterError, ManifestError, RuntimeFailure, SchedulingError
from podhop.net import netns
from podhop.store import Store

pytestmark = pytest.mark.integration
PODHOP = [sys.executable, "-m", "podhop"]


def deployment(name: str, image: str = "nginx", cpu: str = "100m", extra: str = "") -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      {extra}
      containers:
      - name: main
        image: {image}
        ports: [{{containerPort: 80}}]
        resources: {{requests: {{cpu: {cpu}, memory: 32Mi}}}}
"""


def assert_untouched(c: LocalCluster) -> None:
    assert c.store.pods(c.name) == []
    assert c.store.services(c.name) == []
    assert c.store.deployments(c.name) == []
    node_ns = {n.netns for n in c.nodes()}
    assert set(netns.list_netns(c.layout.netns_prefix)) == node_ns  # no pod namespace left


def test_unknown_image_names_document_and_field(cluster: LocalCluster) -> None:
    text = "---".join([SERVICE, deployment("good"), deployment("bad", image="quay.io/acme/unknown:1")])
    with pytest.raises(ManifestError) as err:
        apply(cluster, "mixed.yaml", text)
    msg = str(err.value)
    assert "mixed.yaml" in msg and "Deployment/bad" in msg and "containers[0].image" in msg
    assert "nginx" in msg and "redis" in msg  # lists the images podhop has
    assert_untouched(cluster)


def test_impossible_placement_applies_nothing(cluster: LocalCluster) -> None:
    text = "---".join([SERVICE, deployment("small"), deployment("huge", cpu="64")])
    with pytest.raises(SchedulingError) as err:
        apply(cluster, "huge.yaml", text)
    assert "Deployment/huge" in str(err.value) and "Insufficient cpu" in str(err.value)
    assert_untouched(cluster)


def test_node_selector_for_missing_node(cluster: LocalCluster) -> None:
    extra = "nodeSelector: {kubernetes.io/hostname: node-9}"
    with pytest.raises(SchedulingError) as err:
        apply(cluster, "sel.yaml", deployment("pinned", extra=extra))
    assert "node selector" in str(err.value)
    assert_untouched(cluster)


def test_container_that_cannot_start_rolls_back(cluster: LocalCluster) -> None:
    broken = deployment("broken", extra="").replace(
        "image: nginx", 'image: nginx\n        command: ["/no/such/binary"]'
    )
    with pytest.raises(RuntimeFailure) as err:
        apply(cluster, "broken.yaml", "---".join([SERVICE, broken]))
    assert "failed to start" in str(err.value)
    assert_untouched(cluster)


def test_cli_reports_bad_yaml_and_unsupported_field(cluster: LocalCluster, tmp_path: object) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.yaml"
    bad.write_text("kind: Pod\nmetadata: {name: x\n")
    out = subprocess.run(
        [*PODHOP, "apply", "-f", str(bad), "--cluster", cluster.name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "bad.yaml" in out.stderr and "line" in out.stderr
    unsupported = Path(str(tmp_path)) / "hostnet.yaml"
    unsupported.write_text(deployment("hn", extra="hostNetwork: true"))
    out = subprocess.run(
        [*PODHOP, "apply", "-f", str(unsupported), "--cluster", cluster.name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "hostNetwork" in out.stderr and "document 1" in out.stderr
    assert_untouched(cluster)


def test_failed_create_removes_everything(
    capable: None, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = cluster_mod._create_node

    used: list[int] = []

    def flaky(c: LocalCluster, i: int, report: object) -> object:
        used.append(c.record.idx)
        if i == 2:
            raise OSError("injected failure on node 2")
        return real(c, i, report)  # type: ignore[arg-type]

    monkeypatch.setattr(cluster_mod, "_create_node", flaky)
    name = f"it-{secrets.token_hex(3)}"
    with pytest.raises(ClusterError, match="injected failure"):
        create_cluster(store, name, 3, 1000, 1 << 30)
    assert store.cluster(name) is None
    assert used and residue(name, used[0]) == []


def test_delete_after_killed_create(capable: None, store: Store) -> None:
    name = f"it-{secrets.token_hex(3)}"
    proc = subprocess.Popen(
        [*PODHOP, "cluster", "create", "--name", name, "--nodes", "40"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(netns.list_netns(f"ph-{name}.")) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    record = store.cluster(name)
    assert record is not None and record.status == "creating"
    assert netns.list_netns(f"ph-{name}.")  # half made
    assert delete_cluster(store, name) == []
    assert residue(name, record.idx) == []
    assert store.cluster(name) is None


#: Commands that only read may work for another user where the state is readable; either way, no traceback.
NONROOT_READERS = ["get pods", "cluster list", "top pods", "logs x", "rebalance --policy hottest --dry-run"]
NONROOT_COMMANDS = [
    "cluster create --name x",
    "cluster delete x",
    "exec x -- true",
    "apply -f examples/nginx.yaml",
    "migrate x --to node-2",
    "checkpoint x",
    "restore README.md --node node-1",
    "rebalance --policy hottest",
    "experiment run examples/seed.yaml",
    "setup",
]


def as_nobody(args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *PODHOP, *args.split()],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(Path(__file__).resolve().parents[2]),
        env={"HOME": "/tmp", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


@pytest.mark.parametrize("args", NONROOT_READERS)
def test_reading_commands_as_non_root_never_trace(args: str) -> None:
    out = as_nobody(args)
    assert "Traceback" not in out.stderr, out.stderr
    if out.returncode != 0:
        assert out.returncode == 1 and out.stderr.startswith("error:"), out.stderr


@pytest.mark.parametrize("args", NONROOT_COMMANDS)
def test_commands_as_non_root_say_so_in_one_line(args: str) -> None:
    out = as_nobody(args)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and out.stderr.startswith("error:"), out.stderr
    assert "root" in out.stderr or "sudo" in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ("rebalance --policy hottest --window -1", "--window"),
        ("rebalance --policy hottest --max-concurrent 0", "--max-concurrent"),
        ("migrate x --to node-2 --timeout 0", "--timeout"),
        ("top pods --window 0", "--window"),
        ("logs x --tail -5", "--tail"),
        ("cluster create --nodes 0", "--nodes"),
        ("inspect /nonexistent/archive.tar", "no such file"),
        ("inspect README.md", "not a readable tar archive"),
        ("simulate --nodes -3", "--nodes"),
        ("experiment run /nonexistent.yaml", "nonexistent.yaml"),
    ],
)
def test_bad_values_give_one_line_and_no_traceback(args: str, words: str) -> None:
    out = subprocess.run(
        [*PODHOP, *args.split()],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert out.returncode in (1, 2), (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and words in out.stderr, out.stderr
