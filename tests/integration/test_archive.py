"""Checkpoint archives: checkpoint → inspect → restore on another node, in the Podman/CRI-O layout."""

from __future__ import annotations

import json
import stat
import subprocess
import tarfile
import urllib.request
from pathlib import Path

import pytest
from helpers import PODHOP, WEB, podhop

from podhop.backends.local.apply import apply
from podhop.backends.local.cluster import LocalCluster

pytestmark = pytest.mark.integration


def test_archive_round_trip(cluster: LocalCluster, tmp_path: Path) -> None:
    apply(cluster, "web.yaml", WEB)
    # change the root filesystem: one file written, one deleted; both must travel in the archive
    script = "echo migrated-page > /var/www/html/index.nginx-debian.html && rm -r /usr/share/doc/nginx-light"
    out = podhop(cluster, "exec", "web", "--", "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    archive = tmp_path / "web.tar"
    out = podhop(cluster, "checkpoint", "web", "-o", str(archive))
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600  # it holds process memory
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"config.dump", "spec.dump", "rootfs-diff.tar", "deleted.files", "stats-dump"} <= names
    assert "checkpoint/pstree.img" in names and any(n.startswith("checkpoint/pages-") for n in names)
    assert cluster.store.pods(cluster.name) == []  # checkpoint without --leave-running stops the pod

    info = json.loads(podhop(cluster, "inspect", str(archive), "-o", "json").stdout)
    assert info["container"] == "nginx" and info["image"] == "nginx" and info["pod"] == "web"
    assert info["processes"][0]["comm"] == "nginx" and len(info["processes"]) >= 2
    assert info["memory_pages_bytes"] > 1 << 20
    assert info["criu_stats"]["pages_written"] > 0
    assert "/usr/share/doc/nginx-light" in info["deleted_files"]

    out = podhop(cluster, "restore", str(archive), "--node", "node-2")
    assert out.returncode == 0, out.stderr
    pod = cluster.store.pods(cluster.name)[0]
    assert pod.node == "node-2" and pod.ip.startswith(cluster.layout.pod_cidr(2).rsplit(".", 1)[0])
    svc = cluster.store.services(cluster.name)[0]
    with urllib.request.urlopen(f"http://{svc.cluster_ip}/", timeout=5) as resp:
        assert resp.read().decode().strip() == "migrated-page"
    gone = podhop(cluster, "exec", "web", "--", "test", "-e", "/usr/share/doc/nginx-light")
    assert gone.returncode == 1  # the deletion travelled too

    again = podhop(cluster, "restore", str(archive), "--node", "node-1")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_inspect_rejects_a_non_checkpoint(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar"
    with tarfile.open(bogus, "w") as tar:
        (tmp_path / "x").write_text("x")
        tar.add(tmp_path / "x", arcname="x")
    out = subprocess.run([*PODHOP, "inspect", str(bogus)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not a container checkpoint archive" in out.stderr


def serving(cluster: LocalCluster) -> bool:
    (pod,) = cluster.store.pods(cluster.name)
    with urllib.request.urlopen(f"http://{pod.ip}/", timeout=5) as resp:
        return resp.status == 200


@pytest.mark.parametrize("where", ["missing-dir", "read-only", "full-disk", "symlink"])
def test_failed_checkpoint_leaves_the_pod_running(cluster: LocalCluster, tmp_path: Path, where: str) -> None:
    """No lost checkpoint: wherever writing the archive fails, before or after the dump, the pod runs on."""
    apply(cluster, "web.yaml", WEB)
    (before,) = cluster.store.pods(cluster.name)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    output = mnt / "web.tar"
    if where == "missing-dir":
        output = tmp_path / "nonexistent" / "web.tar"
    elif where == "read-only":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], check=True)
    elif where == "full-disk":  # the dump succeeds; the archive (~5 MB) does not fit: fails after it
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], check=True)
    else:
        output.symlink_to(tmp_path / "elsewhere.tar")
    try:
        out = podhop(cluster, "checkpoint", "web", "-o", str(output))
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith("error:") and len(out.stderr.strip().splitlines()) <= 2, out.stderr
        if where != "symlink":
            assert sorted(p.name for p in mnt.iterdir()) == []  # no partial archive left
        (after,) = cluster.store.pods(cluster.name)
        assert (after.node, after.sandbox, after.phase) == (before.node, before.sandbox, "Running")
        assert {c["id"]: c["status"] for c in cluster.runc.list()} == {
            before.containers[0].runtime_id: "running"
        }
        assert serving(cluster)
        assert not list((cluster.node_dir(before.node) / "checkpoints").iterdir())
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)
    # and then a checkpoint to a good place works
    good = tmp_path / "good.tar"
    out = podhop(cluster, "checkpoint", "web", "-o", str(good))
    assert out.returncode == 0, out.stderr
    assert cluster.store.pods(cluster.name) == []
