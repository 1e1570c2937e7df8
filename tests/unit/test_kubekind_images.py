"""Checkpoint images and component builds, without a registry or a Go toolchain."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from podhop.kubekind import components, registry


def _archive(path: Path) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in (("config.dump", b"{}"), ("spec.dump", b"{}"), ("checkpoint/pstree.img", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("evil")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)


def test_checkpoint_image_carries_the_annotation_containerd_looks_for(tmp_path: Path) -> None:
    _archive(tmp_path / "a.tar")
    digest = registry.checkpoint_layout(tmp_path / "oci", tmp_path / "a.tar", "redis", "ckpt")
    oci = tmp_path / "oci"
    manifest = json.loads((oci / "blobs" / "sha256" / digest.split(":")[1]).read_text())
    assert manifest["annotations"] == {registry.CHECKPOINT_ANNOTATION: "redis"}
    layer = oci / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    with tarfile.open(layer) as tar:
        names = tar.getnames()
    assert sorted(names) == ["checkpoint/pstree.img", "config.dump", "spec.dump"]  # no symlink
    index = json.loads((oci / "index.json").read_text())
    assert index["manifests"][0]["annotations"][registry.REF_NAME] == "ckpt"


def test_go_build_command_is_niced_trimmed_and_versioned(tmp_path: Path) -> None:
    argv = components.go_argv(components.KUBERNETES, tmp_path)
    assert argv[:3] == ["nice", "-n", "19"]
    assert "-trimpath" in argv
    ld = argv[argv.index("-ldflags") + 1]
    assert "-s -w" in ld and "k8s.io/component-base/version.gitVersion=v1.37.2" in ld
    assert argv[-6:] == list(components.KUBERNETES.packages)
    assert components.ETCD.binaries == ("etcd",)
    assert components.binary("kubelet").parent.name == "kubernetes-v1.37.2"


def test_wrapper_module_pins_every_staging_module() -> None:
    gomod = (components.GOMOD_DIR / "kubernetes" / "go.mod").read_text()
    assert "\tk8s.io/kubernetes v1.37.2 " in gomod
    replaces = [ln for ln in gomod.splitlines() if "=>" in ln]
    assert len(replaces) >= 30
    assert all(ln.strip().endswith("v0.37.2") for ln in replaces)
