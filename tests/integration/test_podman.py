"""A real peer reads our archives and we read theirs: Podman 4.3 (runc, podhop's CRIU on its PATH).

Both directions with NGINX, whose root filesystem change (a page it serves) and whose deleted file
must travel: Podman's ``container checkpoint --export`` (zstd, its default) restores with
``podhop restore --node`` and serves; ``podhop checkpoint`` restores with ``podman container
restore --import`` and serves.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import WEB_POD as WEB
from helpers import podhop

from podhop.backends.local import pods as podops
from podhop.backends.local.apply import apply
from podhop.backends.local.cluster import LocalCluster
from podhop.settings import paths

pytestmark = pytest.mark.integration
#: This machine's hard limits are lower than Podman's defaults ask for.
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=1024:1024"]


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Podman with podhop's CRIU first on its PATH (the system's CRIU, if any, fails on this kernel)."""
    env = {**os.environ, "PATH": f"{paths().bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    out = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {out.stderr.strip()}")
    return out


def get(url: str, attempts: int = 50) -> str:
    for _ in range(attempts):  # bounded: a restored server may take a moment to accept
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return str(resp.read().decode().strip())
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


@pytest.fixture(scope="module")
def nginx_in_podman(capable: None) -> str:
    """podhop's own nginx image in Podman's storage (the same bytes on both sides: CRIU checks them)."""
    assert shutil.which("podman") and shutil.which("skopeo"), "podhop setup installs podman and skopeo"
    ref = "localhost/nginx:latest"
    layout = paths().images_dir / "oci"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{layout}:nginx", f"containers-storage:{ref}"],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return ref


@pytest.fixture
def podman_names() -> Iterator[list[str]]:
    """Names of the Podman containers a test makes; all removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        podman("rm", "-f", "-t", "0", name, check=False)


def test_podman_archive_restores_with_podhop(
    cluster: LocalCluster, nginx_in_podman: str, podman_names: list[str], tmp_path: Path
) -> None:
    name = f"ph-{secrets.token_hex(3)}"
    podman_names.append(name)
    podman("run", "-d", "--name", name, "--runtime", "runc", *ULIMITS, nginx_in_podman)
    # A new page (Podman 4.3's export carries the files a container added and deleted, not those it
    # modified in place) and a deleted file.
    script = "echo from-podman > /var/www/html/podman.html && rm /etc/nginx/koi-utf"
    podman("exec", name, "sh", "-c", script)
    archive = tmp_path / "podman.tar.zst"
    podman("container", "checkpoint", "--export", str(archive), name)  # zstd, Podman's default
    with archive.open("rb") as fh:
        assert fh.read(4) == b"\x28\xb5\x2f\xfd"

    info = json.loads(podhop(cluster, "inspect", str(archive), "-o", "json").stdout)
    assert info["compression"] == "zstd" and info["processes"][0]["comm"] == "nginx"

    out = podhop(cluster, "restore", str(archive), "--node", "node-2", "--name", "from-podman")
    assert out.returncode == 0, out.stderr
    (pod,) = cluster.store.pods(cluster.name)
    assert pod.node == "node-2" and pod.name == "from-podman"
    assert get(f"http://{pod.ip}/podman.html") == "from-podman"
    gone = podhop(cluster, "exec", "from-podman", "--", "test", "-e", "/etc/nginx/koi-utf")
    assert gone.returncode == 1  # the deletion travelled too
    # The restored container got nothing of Podman's host paths: its mounts are the pod's own.
    config = json.loads((Path(pod.containers[0].bundle) / "config.json").read_text())
    pod_dir = str(podops.pod_dir(cluster, pod.node, pod.name, pod.sandbox))
    for m in config["mounts"]:
        if m["type"] == "bind":
            assert m["source"].startswith(pod_dir), m
    # ... and it can be migrated on like any pod.
    out = podhop(cluster, "migrate", "from-podman", "--to", "node-3", "--strategy", "cold")
    assert out.returncode == 0, out.stderr
    assert get(f"http://{cluster.store.pods(cluster.name)[0].ip}/podman.html") == "from-podman"


def test_podhop_archive_restores_with_podman(
    cluster: LocalCluster, nginx_in_podman: str, podman_names: list[str], tmp_path: Path
) -> None:
    apply(cluster, "web.yaml", WEB)
    assert podops.wait_ready(cluster.store.pods(cluster.name)) == []
    script = "echo from-podhop > /var/www/html/index.nginx-debian.html && rm /etc/nginx/koi-utf"
    assert podhop(cluster, "exec", "web", "--", "sh", "-c", script).returncode == 0
    archive = tmp_path / "podhop.tar"
    out = podhop(cluster, "checkpoint", "web", "-o", str(archive))
    assert out.returncode == 0, out.stderr

    name = f"ph-{secrets.token_hex(3)}"
    podman_names.append(name)
    podman("container", "restore", "--import", str(archive), "--name", name)
    inspect = json.loads(podman("inspect", name).stdout)[0]
    assert inspect["State"]["Running"], inspect["State"]
    ip = inspect["NetworkSettings"]["IPAddress"]
    assert get(f"http://{ip}/") == "from-podhop"
    gone = podman("exec", name, "test", "-e", "/etc/nginx/koi-utf", check=False)
    assert gone.returncode == 1
