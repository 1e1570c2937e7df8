"""The cluster's image registry: podhop's images in it, and checkpoint images built for it.

Why: nodes have no internet, yet ``kubectl create deployment nginx --image=nginx``
must work, and a checkpoint must travel to another node the way it would through
ECR. Each cluster runs Debian's ``docker-registry`` on its bridge address over
one shared storage directory (``<data>/k8s/registry``), and every node's
containerd uses it as the mirror for ``docker.io`` (and as itself). podhop's
locally built ``nginx``/``redis`` OCI images and a pause image are pushed there
with ``skopeo``.

A checkpoint image is what containerd's restore-via-create recognises
(``internal/cri/server/container_checkpoint_linux.go``): an image whose
top-level blob — the manifest the tag points at — carries the annotation
``org.criu.checkpoint.container.name``, and whose single layer holds the
checkpoint archive's files at ``/`` (containerd mounts the layer and copies it
into the new container's restore directory). Building it is pure file writing
(:func:`checkpoint_layout`), so no buildah is needed; the layout is pushed like
any other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import platform
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from podhop import sh
from podhop.errors import CommandError, ImageError
from podhop.kubekind.layout import KubeLayout

CHECKPOINT_ANNOTATION = "org.criu.checkpoint.container.name"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"


def _arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _put_blob(oci: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    path = oci / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_layout(
    oci: Path,
    ref: str,
    layer: bytes,
    config: Mapping[str, Any],
    annotations: Mapping[str, str] | None = None,
) -> str:
    """Write a one-layer OCI image layout at ``oci`` tagged ``ref``; return the manifest digest."""
    (oci / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (oci / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    layer_desc = {"mediaType": MEDIA_LAYER, **_put_blob(oci, layer)}
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cfg = {
        "created": created,
        "architecture": _arch(),
        "os": "linux",
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        "history": [{"created": created, "created_by": "podhop"}],
    }
    cfg_desc = {"mediaType": MEDIA_CONFIG, **_put_blob(oci, json.dumps(cfg).encode())}
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": cfg_desc,
        "layers": [layer_desc],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    man_desc = {"mediaType": MEDIA_MANIFEST, **_put_blob(oci, json.dumps(manifest).encode())}
    entry: dict[str, Any] = {**man_desc, "annotations": {REF_NAME: ref, **(annotations or {})}}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]}
    (oci / "index.json").write_text(json.dumps(index))
    return str(man_desc["digest"])


def pause_layer(binary: Path) -> bytes:
    """A layer holding only ``/pause``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tar.gettarinfo(str(binary), arcname="pause")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o755
        info.mtime = 0
        with binary.open("rb") as fh:
            tar.addfile(info, fh)
    return buf.getvalue()


def checkpoint_layer(archive: Path) -> bytes:
    """The checkpoint archive's entries as a layer (containerd copies the layer to the restore dir).

    Only regular files and directories are kept: containerd refuses anything else on restore.
    """
    buf = io.BytesIO()
    try:
        with (
            tarfile.open(archive, "r:*") as src,
            tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst,
        ):
            for member in src:
                if not (member.isreg() or member.isdir()):
                    continue
                name = member.name.lstrip("./")
                if not name or name.startswith("..") or "/../" in f"/{name}/":
                    continue
                member.name = name
                member.uid = member.gid = 0
                member.uname = member.gname = ""
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    except (OSError, tarfile.TarError) as exc:
        raise ImageError(f"cannot read checkpoint archive {archive}: {exc}") from exc
    return buf.getvalue()


def checkpoint_layout(oci: Path, archive: Path, container: str, ref: str) -> str:
    """An OCI layout at ``oci`` holding ``archive`` as a checkpoint image of ``container``."""
    return write_layout(
        oci,
        ref,
        checkpoint_layer(archive),
        {},
        annotations={CHECKPOINT_ANNOTATION: container},
    )


def push(oci: Path, ref: str, dest: str, *, timeout: float = 600) -> None:
    """``skopeo copy oci:OCI:REF docker://DEST`` to a plain-HTTP registry."""
    try:
        sh.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{oci}:{ref}", f"docker://{dest}"],
            timeout=timeout,
        )
    except CommandError as exc:
        raise ImageError(f"pushing {ref} to {dest} failed: {exc}") from exc


def has_image(dest: str) -> bool:
    """Whether the registry already holds ``dest`` (``host:port/repo:tag``)."""
    return sh.ok(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{dest}"], timeout=30)


# ----------------------------------------------------------------------------- the registry process


def storage_dir() -> Path:
    from podhop.settings import paths

    return paths().data_dir / "k8s" / "registry"


def start_registry(lay: KubeLayout) -> None:
    """Run ``docker-registry`` for this cluster on its bridge address (shared storage)."""
    from podhop.kubekind import control_plane
    from podhop.kubekind import processes as procs

    storage_dir().mkdir(parents=True, exist_ok=True)
    conf = lay.dir / "registry.yml"
    conf.write_text(control_plane.registry_config(lay, storage_dir()))
    binary = sh.which("docker-registry") or "/usr/bin/docker-registry"
    log = lay.logs / "registry.log"
    pid = procs.start("registry", [binary, "serve", str(conf)], log, lay.run_dir / "registry.pid")
    host, port = lay.registry.split(":")
    procs.wait_until("registry", lambda: procs.tcp_open(host, int(port)), 30, pid=pid, log=log)


def push_base_images(lay: KubeLayout, report: Callable[[str], None]) -> None:
    """podhop's nginx/redis as docker.io/library/*, and the pause image, into the registry (once)."""
    from podhop.kubekind import components, config
    from podhop.settings import paths

    oci = paths().images_dir / "oci"
    if not (oci / "index.json").exists():
        raise ImageError("podhop's base images are missing", hint="run `podhop setup`")
    for name in ("nginx", "redis"):
        dest = f"{lay.registry}/library/{name}:latest"
        if not has_image(dest):
            report(f"registry: pushing {name}")
            push(oci, name, dest)
    pause_ref = config.PAUSE_IMAGE.split("/", 1)[1]  # podhop/pause:3.10
    dest = f"{lay.registry}/{pause_ref}"
    if not has_image(dest):
        layout = components.component_dir(components.PAUSE) / "oci"
        write_layout(layout, "pause", pause_layer(components.binary("pause")), {"Entrypoint": ["/pause"]})
        report("registry: pushing pause")
        push(layout, "pause", dest)


def publish_checkpoint(lay: KubeLayout, archive: Path, container: str, repository: str, tag: str) -> str:
    """Turn a kubelet checkpoint archive into a checkpoint image in the cluster's registry; return its ref.

    The restoring pod uses the ref as its container image. Its node must also have the checkpoint's
    base image (containerd otherwise pulls it past the registry mirror): see ``NOTES``/tests.
    """
    import tempfile

    ref = f"{lay.registry}/{repository}:{tag}"
    with tempfile.TemporaryDirectory(prefix="podhop-ckpt-") as tmp:
        oci = Path(tmp) / "oci"
        checkpoint_layout(oci, archive, container, tag)
        push(oci, tag, ref)
    return ref
