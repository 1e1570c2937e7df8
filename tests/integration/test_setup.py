"""``podhop setup`` for real: packages, sysctls, a working CRIU 4.2 and the OCI base images.

Why: everything else (clusters, migration) stands on what setup leaves
behind, and the parts that matter most — CRIU actually running on this
kernel, the images actually serving — can only be checked on the machine.
The first run debootstraps twice in parallel (about a minute); later runs
must be fast because every test session and every CI run starts with one.

Uses the real data directory (``PODHOP_HOME``, default /var/lib/podhop): that
is what the product uses, and it keeps the slow build to once per machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from podhop import doctor, sh
from podhop.runtime import images
from podhop.settings import paths
from podhop.setup import host

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="podhop setup needs root (apt-get, sysctl, debootstrap)"),
    pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="podhop setup supports Debian hosts only"),
]


@dataclass
class SetupRun:
    seconds: float
    messages: list[str]


@pytest.fixture(scope="module")
def first_setup() -> SetupRun:
    messages: list[str] = []
    started = time.monotonic()
    host.setup_all(messages.append)
    return SetupRun(time.monotonic() - started, messages)


def test_setup_reports_progress(first_setup: SetupRun) -> None:
    print(f"first setup_all in this session: {first_setup.seconds:.1f} s")
    text = "\n".join(first_setup.messages)
    for topic in ("packages:", "sysctl:", "criu:", "images:"):
        assert topic in text


def test_criu_wrapper_works(first_setup: SetupRun) -> None:
    wrapper = host.criu_path()
    assert wrapper == paths().criu_wrapper
    version = host.criu_version([str(wrapper)])
    assert version is not None and version >= (4, 2, 0), version
    proc = sh.run([str(wrapper), "check"], check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert oct(wrapper.stat().st_mode & 0o777) == oct(0o755)


def test_criu_loads_its_kernel_feature_cache(first_setup: SetupRun, tmp_path: Path) -> None:
    """Setup leaves CRIU's kdat cache for this boot, and CRIU (through the wrapper) loads it."""
    from podhop.runtime import criu

    assert criu.kdat_cache_fresh()
    log = tmp_path / "check.log"
    sh.run([str(paths().criu_wrapper), "check", "-v4", "-o", str(log)], timeout=60)
    assert f"Loaded kdat cache from {criu.KDAT_CACHE}" in log.read_text()


def test_criu_wrapper_drops_a_cache_of_another_boot(first_setup: SetupRun, tmp_path: Path) -> None:
    """A cache stamped with another boot's id goes before CRIU reads it; podhop makes it again."""
    from podhop.runtime import criu

    criu.KDAT_BOOT.write_text("an-earlier-boot\n")
    try:
        log = tmp_path / "check.log"
        sh.run([str(paths().criu_wrapper), "check", "-v4", "-o", str(log)], timeout=60)
        assert "Loaded kdat cache" not in log.read_text()
        assert not criu.KDAT_CACHE.exists()
    finally:
        assert criu.ensure_kdat_cache(paths().criu_wrapper)
    assert criu.kdat_cache_fresh()


def test_sysctls_are_set(first_setup: SetupRun) -> None:
    assert int(host.read_sysctl("fs.pipe-max-size")) >= host.PIPE_MAX_SIZE
    for name, minimum in host.SYSCTL_MINIMUMS.items():
        assert int(host.read_sysctl(name)) >= minimum, name
    assert host.read_sysctl("net.ipv4.ip_forward") == "1"
    assert host.missing_packages() == []


def test_images_resolve(first_setup: SetupRun) -> None:
    nginx = images.resolve("docker.io/library/nginx:1.25")
    redis = images.resolve("redis:7-alpine")
    assert nginx.name == "nginx" and redis.name == "redis"
    assert nginx.rootfs == redis.rootfs  # one shared layer
    assert nginx.config.cmd == ("nginx", "-g", "daemon off;")
    assert nginx.config.exposed_ports == (80,)
    assert redis.config.cmd == ("redis-server", "--protected-mode", "no")
    assert redis.config.exposed_ports == (6379,)
    root = nginx.rootfs
    assert "user root;" in (root / "etc/nginx/nginx.conf").read_text()
    assert os.readlink(root / "var/log/nginx/access.log") == "/dev/stdout"
    assert os.readlink(root / "var/log/nginx/error.log") == "/dev/stderr"
    assert not list((root / "var/lib/apt/lists").glob("*_Packages"))
    assert not list((root / "var/cache/apt/archives").glob("*.deb"))


def test_oci_layout_is_valid(first_setup: SetupRun) -> None:
    oci = paths().images_dir / "oci"
    assert json.loads((oci / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    for blob in (oci / "blobs" / "sha256").iterdir():
        digest = hashlib.sha256()
        with blob.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        assert digest.hexdigest() == blob.name, f"blob {blob.name} is corrupt"
    index = json.loads((oci / "index.json").read_text())
    names = set()
    for desc in index["manifests"]:
        names.add(desc["annotations"]["org.opencontainers.image.ref.name"])
        manifest_path = oci / "blobs" / "sha256" / desc["digest"].split(":")[1]
        assert manifest_path.stat().st_size == desc["size"]
        manifest = json.loads(manifest_path.read_text())
        config = json.loads(
            (oci / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text()
        )
        assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]
        for layer in manifest["layers"]:
            assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
            assert (oci / "blobs" / "sha256" / layer["digest"].split(":")[1]).stat().st_size == layer["size"]
            assert (paths().images_dir / "rootfs" / layer["digest"].split(":")[1]).is_dir()
    assert {"nginx", "redis"} <= names


@pytest.mark.parametrize(("name", "port"), [("nginx", "80/tcp"), ("redis", "6379/tcp")])
def test_skopeo_reads_the_layout(first_setup: SetupRun, name: str, port: str) -> None:
    ref = f"oci:{paths().images_dir / 'oci'}:{name}"
    info = json.loads(sh.run(["skopeo", "inspect", ref], timeout=60).stdout)
    assert info["Digest"] == images.resolve(name).digest
    config = json.loads(sh.run(["skopeo", "inspect", "--config", ref], timeout=60).stdout)
    assert port in config["config"]["ExposedPorts"]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_images_serve(first_setup: SetupRun, tmp_path: Path) -> None:
    """NGINX answers 200 at / and Redis PONG, from an overlay over the read-only layer, as root."""
    lower = images.resolve("nginx").rootfs
    for sub in ("upper", "work", "merged"):
        (tmp_path / sub).mkdir()
    script = tmp_path / "run.sh"
    script.write_text(
        "set -e\n"
        f"M={tmp_path}/merged\n"
        f"mount -t overlay overlay -o lowerdir={lower},upperdir={tmp_path}/upper,workdir={tmp_path}/work $M\n"
        "mount -t proc proc $M/proc\n"
        "ip link set lo up\n"
        'chroot $M sh -c \'nginx -g "daemon off;" >/dev/null 2>&1 & '
        "cd /data && redis-server --protected-mode no >/dev/null 2>&1 & "
        "for i in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done; "
        'curl -s -o /dev/null -w "http=%{http_code}\\n" --retry 20 --retry-connrefused --retry-delay 0 '
        "http://127.0.0.1/; redis-cli ping; ps -o user= -C nginx,redis-server | sort -u'\n"
    )
    before = sorted(p.name for p in lower.iterdir())
    proc = sh.run(
        ["unshare", "--mount", "--pid", "--net", "--fork", "--kill-child", "sh", str(script)], timeout=60
    )
    assert "http=200" in proc.stdout, proc.stdout + proc.stderr
    assert "PONG" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "root"  # workers run as root (CRIU needs it here)
    assert sorted(p.name for p in lower.iterdir()) == before  # the layer stayed untouched


def test_doctor_after_setup(first_setup: SetupRun) -> None:
    checks = doctor.run_checks()
    by_name = {c.name: c for c in checks}
    for name in ("criu", "criu check", "fs.pipe-max-size", "net.ipv4.ip_forward", "images"):
        assert by_name[name].ok, by_name[name]


def test_second_setup_is_fast(first_setup: SetupRun) -> None:
    started = time.monotonic()
    messages: list[str] = []
    host.setup_all(messages.append)
    elapsed = time.monotonic() - started
    print(f"second setup_all: {elapsed:.2f} s")
    assert elapsed < 10.0
    assert not any("debootstrap" in m for m in messages)
