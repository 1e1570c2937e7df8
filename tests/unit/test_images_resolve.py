"""The local image store without debootstrap: references, listing, packing, apt sources.

Why: every manifest names an image, so ``resolve`` runs on every apply; the
store it reads is a standard OCI layout. A tiny layout written here by an
independent (pure Python) writer proves that podhop reads standard layouts,
not only its own, and keeps these tests fast and root-free.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from podhop.errors import ImageError, NotFoundError, SetupError
from podhop.runtime import images
from podhop.runtime.images import Image, ImageConfig

NGINX = ImageConfig(
    entrypoint=(),
    cmd=("nginx", "-g", "daemon off;"),
    env=("PATH=/usr/sbin:/usr/bin",),
    working_dir="/",
    exposed_ports=(80,),
    stop_signal="SIGQUIT",
)
REDIS = ImageConfig(
    entrypoint=("docker-entrypoint.sh",),
    cmd=("redis-server",),
    env=("PATH=/usr/bin",),
    working_dir="/data",
    exposed_ports=(6379,),
)


# --------------------------------------------------------------------------- a tiny OCI store


def _blob(oci: Path, data: bytes) -> dict[str, Any]:
    hexpart = hashlib.sha256(data).hexdigest()
    (oci / "blobs" / "sha256" / hexpart).write_bytes(data)
    return {"digest": f"sha256:{hexpart}", "size": len(data)}


def make_oci_store(
    home: Path, configs: dict[str, ImageConfig], *, files: dict[str, bytes] | None = None
) -> Path:
    """Write an OCI layout of one tiny layer shared by ``configs`` under ``home``; returns the oci dir.

    Mirrors what ``podhop setup`` leaves: ``images/oci`` plus the unpacked
    layer at ``images/rootfs/<layer hex>``.
    """
    store = home / "images"
    oci = store / "oci"
    (oci / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (oci / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    default = {"etc/hostname": b"tiny\n", "usr/bin/hello": b"#!/bin/sh\necho hi\n"}
    content = files if files is not None else default
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in sorted(content.items()):
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    layer = _blob(oci, buffer.getvalue())
    rootfs = store / "rootfs" / layer["digest"].split(":", 1)[1]
    for name, data in content.items():
        (rootfs / name).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / name).write_bytes(data)
    manifests = []
    for name, cfg in configs.items():
        config_doc = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": list(cfg.entrypoint) or None,
                "Cmd": list(cfg.cmd),
                "Env": list(cfg.env),
                "WorkingDir": cfg.working_dir,
                "ExposedPorts": {f"{p}/tcp": {} for p in cfg.exposed_ports},
                "StopSignal": cfg.stop_signal,
            },
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
        }
        config = _blob(oci, json.dumps(config_doc).encode())
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": images.MEDIA_MANIFEST,
            "config": {"mediaType": images.MEDIA_CONFIG, **config},
            "layers": [{"mediaType": images.MEDIA_LAYER, **layer}],
        }
        manifest = _blob(oci, json.dumps(manifest_doc).encode())
        manifests.append(
            {
                "mediaType": images.MEDIA_MANIFEST,
                **manifest,
                "annotations": {images.REF_NAME: name},
            }
        )
    (oci / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": images.MEDIA_INDEX, "manifests": manifests})
    )
    return oci


def validate_oci_layout(oci: Path) -> list[str]:
    """Problems found in an OCI layout: blob digests, references, diff_ids (empty when valid)."""
    problems: list[str] = []
    if json.loads((oci / "oci-layout").read_text()).get("imageLayoutVersion") != "1.0.0":
        problems.append("oci-layout: wrong imageLayoutVersion")
    for blob in (oci / "blobs" / "sha256").iterdir():
        digest = hashlib.sha256(blob.read_bytes()).hexdigest()
        if digest != blob.name:
            problems.append(f"blob {blob.name} has sha256 {digest}")

    def load(desc: dict[str, Any]) -> bytes:
        data: bytes = (oci / "blobs" / "sha256" / desc["digest"].split(":", 1)[1]).read_bytes()
        if len(data) != desc["size"]:
            problems.append(f"{desc['digest']}: size {len(data)} != {desc['size']}")
        return data

    index = json.loads((oci / "index.json").read_text())
    assert index["schemaVersion"] == 2
    for desc in index["manifests"]:
        manifest = json.loads(load(desc))
        config = json.loads(load(manifest["config"]))
        layer_digests = [layer["digest"] for layer in manifest["layers"]]
        for layer in manifest["layers"]:
            load(layer)
        if config["rootfs"]["diff_ids"] != layer_digests:  # uncompressed layers: diff_id == digest
            problems.append(f"{desc['digest']}: diff_ids do not match the layers")
        for key in ("architecture", "os", "config", "rootfs"):
            if key not in config:
                problems.append(f"config of {desc['digest']} lacks {key}")
    return problems


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("PODHOP_HOME", str(home))
    return home


@pytest.fixture
def store(home: Path) -> Path:
    return make_oci_store(home, {"nginx": NGINX, "redis": REDIS})


# --------------------------------------------------------------------------- normalize


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("nginx", "nginx"),
        ("nginx:1.25", "nginx"),
        ("nginx:latest", "nginx"),
        ("docker.io/library/nginx:latest", "nginx"),
        ("library/redis:7-alpine", "redis"),
        ("nginx@sha256:" + "a" * 64, "nginx"),
        ("docker.io/library/nginx:1.25@sha256:" + "b" * 64, "nginx"),
        ("localhost:5000/team/redis:7", "redis"),
        ("  redis  ", "redis"),
        ("NGINX", "nginx"),
        ("my-app_2.x", "my-app_2.x"),
    ],
)
def test_normalize(ref: str, name: str) -> None:
    assert images.normalize(ref) == name


@pytest.mark.parametrize("ref", ["", "   ", "nginx/", ":latest", "@sha256:abc", "-bad", "bad-"])
def test_normalize_rejects_invalid(ref: str) -> None:
    with pytest.raises(ImageError, match="invalid image reference"):
        images.normalize(ref)


# --------------------------------------------------------------------------- list / resolve


def test_list_images_reads_a_standard_layout(store: Path) -> None:
    found = images.list_images()
    assert [i.name for i in found] == ["nginx", "redis"]
    nginx, redis = found
    assert nginx.config == NGINX
    assert redis.config == REDIS
    assert redis.config.argv == ("docker-entrypoint.sh", "redis-server")
    assert nginx.rootfs == redis.rootfs  # one layer shared by both images
    assert (nginx.rootfs / "usr/bin/hello").is_file()
    manifest_hex = nginx.digest.split(":", 1)[1]
    assert hashlib.sha256((store / "blobs/sha256" / manifest_hex).read_bytes()).hexdigest() == manifest_hex
    assert nginx.size_bytes > 0
    assert validate_oci_layout(store) == []


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("nginx", "nginx"),
        ("nginx:1.25", "nginx"),
        ("docker.io/library/nginx:latest", "nginx"),
        ("library/redis:7-alpine", "redis"),
        ("nginx@sha256:" + "c" * 64, "nginx"),
    ],
)
def test_resolve(store: Path, ref: str, name: str) -> None:
    image = images.resolve(ref)
    assert isinstance(image, Image)
    assert image.name == name
    assert image.digest.startswith("sha256:")


def test_resolve_unknown_names_ref_and_lists_images(store: Path) -> None:
    with pytest.raises(ImageError) as info:
        images.resolve("docker.io/library/postgres:16")
    message = str(info.value)
    assert "postgres:16" in message
    assert "nginx, redis" in message
    assert isinstance(info.value, NotFoundError)
    assert info.value.hint is not None and "nginx" in info.value.hint


def test_resolve_with_empty_store_hints_setup(home: Path) -> None:
    assert images.list_images() == []
    with pytest.raises(ImageError) as info:
        images.resolve("nginx")
    assert "'nginx'" in str(info.value)
    assert info.value.hint is not None and "podhop setup" in info.value.hint


def test_entry_without_unpacked_rootfs_is_left_out(store: Path, home: Path) -> None:
    shutil.rmtree(images.list_images()[0].rootfs)
    assert images.list_images() == []


def test_corrupt_index_gives_no_images(store: Path) -> None:
    (store / "index.json").write_text("{not json")
    assert images.list_images() == []


def test_missing_blob_skips_only_that_image(store: Path) -> None:
    redis = images.resolve("redis")
    (store / "blobs/sha256" / redis.digest.split(":", 1)[1]).unlink()
    assert [i.name for i in images.list_images()] == ["nginx"]


def test_tagged_annotation_is_normalized(home: Path) -> None:
    make_oci_store(home, {"docker.io/library/nginx:1.25": NGINX})
    assert images.resolve("nginx").name == "nginx"


# --------------------------------------------------------------------------- import_rootfs (podhop's writer)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
def test_import_rootfs_writes_a_valid_layout(home: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    (home / "images").mkdir(parents=True)
    tree = home / "images" / "src-tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_text("hello\n")
    os.symlink("/dev/stdout", tree / "etc" / "log")
    got = images.import_rootfs(tree, {"nginx": NGINX, "redis": REDIS}, messages.append)
    assert [i.name for i in got] == ["nginx", "redis"]
    assert not tree.exists()  # moved into the store
    oci = home / "images" / "oci"
    assert validate_oci_layout(oci) == []
    nginx = images.resolve("nginx:stable")
    assert (nginx.rootfs / "etc" / "motd").read_text() == "hello\n"
    assert os.readlink(nginx.rootfs / "etc" / "log") == "/dev/stdout"
    assert nginx.config == NGINX
    layer_hex = nginx.rootfs.name
    with tarfile.open(oci / "blobs" / "sha256" / layer_hex) as tar:
        assert "./etc/motd" in tar.getnames()
    assert messages

    # A second import of new content replaces the images and removes what nothing refers to.
    tree2 = home / "images" / "src-tree2"
    (tree2 / "etc").mkdir(parents=True)
    (tree2 / "etc" / "motd").write_text("second\n")
    (home / "images" / ".build-stale").mkdir()
    images.import_rootfs(tree2, {"nginx": NGINX}, messages.append)
    assert (images.resolve("nginx").rootfs / "etc" / "motd").read_text() == "second\n"
    assert images.resolve("redis").rootfs.name == layer_hex  # redis kept its old layer
    assert validate_oci_layout(oci) == []
    assert not (home / "images" / ".build-stale").exists()
    tree3 = home / "images" / "src-tree3"
    (tree3 / "etc").mkdir(parents=True)
    (tree3 / "etc" / "motd").write_text("third\n")
    images.import_rootfs(tree3, {"redis": REDIS, "nginx": NGINX}, messages.append)
    assert not (home / "images" / "rootfs" / layer_hex).exists()  # garbage-collected
    assert len(list((home / "images" / "rootfs").iterdir())) == 1
    blobs = {p.name for p in (oci / "blobs" / "sha256").iterdir()}
    assert len(blobs) == 1 + 2 + 2  # one layer, two configs, two manifests
    assert validate_oci_layout(oci) == []


# --------------------------------------------------------------------------- host helpers


def test_mirror_from_deb822_sources() -> None:
    text = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""
    assert images.mirror_from_sources([("debian.sources", text)]) == "http://deb.debian.org/debian"


def test_mirror_from_one_line_sources_skips_others() -> None:
    files = [
        ("google.list", "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n"),
        ("security.list", "deb http://security.debian.org/debian-security bookworm-security main\n"),
        (
            "sources.list",
            "# deb http://old/debian sid main\ndeb [arch=amd64] http://ftp.fr.debian.org/debian/ trixie main",
        ),
    ]
    assert images.mirror_from_sources(files) == "http://ftp.fr.debian.org/debian"


def test_mirror_disabled_stanza_and_fallback(tmp_path: Path) -> None:
    text = "Enabled: no\nTypes: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
    assert images.mirror_from_sources([("x.sources", text)]) is None
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "x.sources").write_text(text)
    (tmp_path / "sources.list.d" / "y.sources.disabled").write_text(text.replace("Enabled: no\n", ""))
    assert images.debian_mirror(tmp_path) == images.DEFAULT_MIRROR


def test_remove_tree_refuses_paths_near_root() -> None:
    with pytest.raises(SetupError):
        images.remove_tree(Path("/var"))


def test_remove_tree_removes_a_plain_tree(tmp_path: Path) -> None:
    tree = tmp_path / "a"
    (tree / "b" / "c").mkdir(parents=True)
    (tree / "b" / "c" / "f").write_text("x")
    os.symlink("/etc", tree / "link-to-etc")
    images.remove_tree(tree)
    assert not tree.exists()
    assert Path("/etc").is_dir()
    images.remove_tree(tree)  # absent: nothing to do
