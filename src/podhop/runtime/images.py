"""The local image store: two base images (``nginx``, ``redis``) built with debootstrap, kept as OCI.

Why: podhop must run without a registry (this machine reaches Debian mirrors
and PyPI, not Docker Hub), yet manifests say ``image: nginx:1.25`` like any
Kubernetes manifest. So ``podhop setup`` builds one Debian root filesystem
holding NGINX and Redis with debootstrap, adjusts it the way the official
images do (NGINX as root with logs on stdout/stderr, Redis without protected
mode), and stores it as a standard OCI image layout: one uncompressed layer
shared by two images that differ only in their image config. Standard tools
(``skopeo inspect oci:DIR:nginx``, ``umoci``) can read it, and the unpacked
layer is kept next to it as the read-only lowerdir of container overlays.

Any reference resolves by its repository's last component (``docker.io/
library/nginx:latest`` → ``nginx``); tags and digests are accepted and
ignored, because there is exactly one local build of each image.

Crash safety: everything is built in a temporary directory inside the store;
blobs are content-addressed and moved in whole, the unpacked root filesystem
is renamed into place, and ``index.json`` — the only thing readers trust — is
replaced last with an atomic rename. An interrupted build leaves garbage that
the next build removes, never a store that looks finished.

This module also holds the two host helpers that building Debian roots
needs (the Debian mirror the host uses, ``debootstrap``) and a tree removal
that unmounts first; :mod:`podhop.setup.host` reuses them for CRIU's root.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podhop import locks, sh
from podhop.errors import CommandError, ImageError, PodhopError, SetupError
from podhop.runtime.mounts import mount_table, mounts_under
from podhop.settings import paths

Report = Callable[[str], None]

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SUITE = "bookworm"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"

DEBOOTSTRAP_TIMEOUT_S = 1800.0
_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


@dataclass(frozen=True)
class ImageConfig:
    """The part of an OCI image config that decides how a container runs.

    Attributes:
        entrypoint: ``config.Entrypoint``; empty when the image has none.
        cmd: ``config.Cmd``, the default arguments (the command when there is
            no entrypoint).
        env: ``config.Env`` as ``NAME=value`` strings.
        working_dir: ``config.WorkingDir``; ``/`` when unset.
        exposed_ports: TCP ports from ``config.ExposedPorts``.
        stop_signal: ``config.StopSignal``; ``SIGTERM`` when unset.
    """

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    working_dir: str
    exposed_ports: tuple[int, ...]
    stop_signal: str = "SIGTERM"

    @property
    def argv(self) -> tuple[str, ...]:
        """The process the image runs by default: entrypoint followed by cmd."""
        return self.entrypoint + self.cmd


@dataclass(frozen=True)
class Image:
    """One image of the local store.

    Attributes:
        name: repository short name (``nginx``).
        digest: manifest digest, ``sha256:<hex>``.
        rootfs: the unpacked (single) layer; use it read-only, as an overlay lowerdir.
        config: how a container of this image runs.
        size_bytes: size of the image's content (layers plus config), in bytes.
        config_digest: digest of the image config: the image ID Podman and Docker show.
    """

    name: str
    digest: str
    rootfs: Path
    config: ImageConfig
    size_bytes: int
    config_digest: str = ""  # the image ID as Podman and Docker show it (``sha256:<hex>``)


#: The base images, as their official counterparts run them (as root: CRIU on
#: this kind of machine cannot dump processes of another uid).
BASE_IMAGES: Mapping[str, ImageConfig] = {
    "nginx": ImageConfig(
        entrypoint=(),
        cmd=("nginx", "-g", "daemon off;"),
        env=(_PATH_ENV,),
        working_dir="/",
        exposed_ports=(80,),
        stop_signal="SIGQUIT",
    ),
    "redis": ImageConfig(
        entrypoint=(),
        cmd=("redis-server", "--protected-mode", "no"),
        env=(_PATH_ENV,),
        working_dir="/data",
        exposed_ports=(6379,),
    ),
}


# --------------------------------------------------------------------------- references


def normalize(ref: str) -> str:
    """The repository short name of an image reference.

    ``nginx``, ``nginx:1.25``, ``docker.io/library/nginx:latest``,
    ``localhost:5000/team/nginx:1`` and ``nginx@sha256:…`` all give ``nginx``.
    Raises :class:`ImageError` when ``ref`` has no valid repository name.
    """
    text = ref.strip()
    repo = text.split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    name = last.split(":", 1)[0].lower()
    if not name or not _NAME_COMPONENT.fullmatch(name):
        raise ImageError(f"invalid image reference {ref!r}", hint="use a name such as `nginx` or `redis:7`")
    return name


def resolve(ref: str) -> Image:
    """The local image a reference means, by its repository's last component.

    Tags and digests are accepted and ignored: podhop has one local build of
    each image. Raises :class:`ImageError` naming ``ref`` and the images podhop has.
    """
    name = normalize(ref)
    images = list_images()
    for image in images:
        if image.name == name:
            return image
    if not images:
        raise ImageError(
            f"image {ref!r} is not available: podhop has no images yet",
            hint="run `podhop setup` to build the base images (nginx, redis)",
        )
    have = ", ".join(image.name for image in images)
    raise ImageError(
        f"image {ref!r} is not available locally; podhop has: {have} (it builds images locally, pulls none)",
        hint=f"use one of: {have}",
    )


# --------------------------------------------------------------------------- reading the store


def _oci_dir() -> Path:
    return paths().images_dir / "oci"


def _rootfs_dir() -> Path:
    return paths().images_dir / "rootfs"


def _blob_path(oci: Path, digest: str) -> Path:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or not _HEX64.fullmatch(hexpart):
        raise ValueError(f"unsupported digest {digest!r}")
    return oci / "blobs" / "sha256" / hexpart


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _config_from_json(doc: Mapping[str, Any]) -> ImageConfig:
    cfg: Mapping[str, Any] = doc.get("config") or {}
    ports: list[int] = []
    for key in cfg.get("ExposedPorts") or {}:
        number, _, proto = str(key).partition("/")
        if proto in ("", "tcp") and number.isdigit():
            ports.append(int(number))
    return ImageConfig(
        entrypoint=tuple(str(a) for a in cfg.get("Entrypoint") or ()),
        cmd=tuple(str(a) for a in cfg.get("Cmd") or ()),
        env=tuple(str(a) for a in cfg.get("Env") or ()),
        working_dir=str(cfg.get("WorkingDir") or "/"),
        exposed_ports=tuple(sorted(ports)),
        stop_signal=str(cfg.get("StopSignal") or "SIGTERM"),
    )


def _image_from_descriptor(oci: Path, desc: Mapping[str, Any]) -> Image | None:
    annotations: Mapping[str, Any] = desc.get("annotations") or {}
    ref = annotations.get(REF_NAME)
    if not isinstance(ref, str) or desc.get("mediaType", MEDIA_MANIFEST) != MEDIA_MANIFEST:
        return None
    try:
        name = normalize(ref)
    except ImageError:
        return None
    digest = str(desc["digest"])
    manifest = _read_json(_blob_path(oci, digest))
    config_desc = manifest["config"]
    config_path = _blob_path(oci, str(config_desc["digest"]))
    layers = manifest.get("layers") or []
    if len(layers) != 1:  # podhop images have exactly one layer, kept unpacked
        return None
    layer_digest = str(layers[0]["digest"])
    if not _blob_path(oci, layer_digest).is_file():
        return None
    rootfs = _rootfs_dir() / layer_digest.partition(":")[2]
    if not rootfs.is_dir():
        return None
    size = int(config_desc.get("size", config_path.stat().st_size)) + sum(int(la["size"]) for la in layers)
    return Image(
        name=name,
        digest=digest,
        rootfs=rootfs,
        config=_config_from_json(_read_json(config_path)),
        size_bytes=size,
        config_digest=str(config_desc["digest"]),
    )


def list_images() -> list[Image]:
    """The usable images of the store, sorted by name.

    An entry whose manifest, config, layer or unpacked root filesystem is
    missing or unreadable is left out (the next ``podhop setup`` rebuilds it).
    """
    oci = _oci_dir()
    try:
        index = _read_json(oci / "index.json")
        descriptors = list(index.get("manifests") or [])
    except (OSError, ValueError, AttributeError, TypeError):
        return []
    found: dict[str, Image] = {}
    for desc in descriptors:
        try:
            image = _image_from_descriptor(oci, desc)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if image is not None and image.name not in found:
            found[image.name] = image
    return [found[name] for name in sorted(found)]


# --------------------------------------------------------------------------- host helpers


def _sources_entries(text: str, deb822: bool) -> list[tuple[str, list[str]]]:
    """(URI, suites) of the enabled ``deb`` entries of one apt sources file."""
    entries: list[tuple[str, list[str]]] = []
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            key = ""
            for raw in stanza.splitlines():
                if raw.lstrip().startswith("#") or not raw.strip():
                    continue
                if raw[:1].isspace() and key:
                    fields[key] += " " + raw.strip()
                    continue
                key, _, value = raw.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in fields.get("types", "").split():
                continue
            suites = fields.get("suites", "").split()
            entries.extend((uri, suites) for uri in fields.get("uris", "").split())
        return entries
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        line = re.sub(r"\[[^]]*\]", " ", line)  # options: [arch=amd64 signed-by=...]
        words = line.split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append((words[1], [words[2]]))
    return entries


def mirror_from_sources(files: Sequence[tuple[str, str]]) -> str | None:
    """Pick the Debian archive mirror from apt sources, given as (file name, text) pairs.

    Prefers an http(s) URI whose path ends in ``/debian`` (the main archive,
    not ``debian-security``) listing a non-security suite; then any http(s)
    URI with a non-security suite whose path contains ``/debian``.
    """
    best: tuple[int, str] | None = None
    for name, text in files:
        for uri, suites in _sources_entries(text, deb822=name.endswith(".sources")):
            if not uri.startswith(("http://", "https://")):
                continue
            if suites and all("security" in s for s in suites):
                continue
            clean = uri.rstrip("/")
            if clean.endswith("/debian"):
                score = 2
            elif "/debian/" in clean + "/" and "debian-security" not in clean:
                score = 1
            else:
                continue
            if best is None or score > best[0]:
                best = (score, clean)
    return best[1] if best else None


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror named in the host's apt sources (fallback ``http://deb.debian.org/debian``)."""
    files: list[tuple[str, str]] = []
    candidates = [apt_dir / "sources.list"]
    with contextlib.suppress(OSError):
        candidates += sorted(apt_dir.joinpath("sources.list.d").iterdir())
    for path in candidates:
        if path.name.endswith((".list", ".sources")) and path.is_file():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                files.append((path.name, path.read_text()))
    return mirror_from_sources(files) or DEFAULT_MIRROR


def os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    """The host's /etc/os-release as a dict (empty when unreadable)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def image_suite() -> str:
    """The Debian suite the base images are built from: the host's own codename, else bookworm."""
    rel = os_release()
    codename = rel.get("VERSION_CODENAME", "")
    if rel.get("ID") == "debian" and re.fullmatch(r"[a-z]+", codename) and codename != "sid":
        return codename
    return DEFAULT_SUITE


def _nginx_package(suite: str) -> str:
    # nginx-light is the small build; it exists up to bookworm, trixie folded it into nginx.
    return "nginx-light" if suite in ("buster", "bullseye", "bookworm") else "nginx"


def debootstrap(
    suite: str, target: Path, include: Sequence[str], report: Report, *, mirror: str | None = None
) -> None:
    """Install a minimal Debian ``suite`` (variant minbase) plus ``include`` into ``target``.

    Raises :class:`SetupError` with the tail of debootstrap's log on failure.
    """
    if sh.which("debootstrap") is None:
        raise SetupError("debootstrap is not installed", hint="run `apt-get install debootstrap`")
    source = mirror or debian_mirror()
    report(f"debootstrap {suite} + {', '.join(include)} from {source} (about a minute)…")
    started = time.monotonic()
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(include)}", suite, str(target), source]
    try:
        sh.run(argv, timeout=DEBOOTSTRAP_TIMEOUT_S)
    except CommandError as exc:
        log = target / "debootstrap" / "debootstrap.log"
        tail = ""
        with contextlib.suppress(OSError):
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-4:])
        raise SetupError(
            f"debootstrap {suite} failed: {tail or exc}",
            hint=f"check that {source} is reachable (apt-get update) and that the disk has ~1 GB free",
        ) from exc
    report(f"debootstrap {suite}: done in {time.monotonic() - started:.0f} s")


def in_use_as_lowerdir(path: Path) -> bool:
    """True when an overlay mount of this machine uses ``path`` (or a directory in it) as a lowerdir."""
    text = str(path)
    return any(fstype == "overlay" and text in opts for _, fstype, opts in mount_table())


def remove_tree(path: Path) -> None:
    """Delete ``path`` recursively, unmounting whatever is mounted inside it first.

    Why: debootstrap mounts /proc, /sys (and sometimes binds /dev) inside its
    target; a run killed half-way leaves them mounted, and a plain rmtree
    would walk into the host's /dev. Refuses to delete anything while a mount
    remains below ``path``.
    """
    target = Path(os.path.abspath(path))
    if len(target.parts) < 3:
        raise SetupError(f"refusing to remove {target}: too close to /")
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink() or not target.is_dir():
        target.unlink()
        return
    for point in mounts_under(target):
        sh.ok(["umount", "--lazy", point], timeout=30)
    left = mounts_under(target)
    if left:
        raise SetupError(
            f"cannot remove {target}: still mounted: {', '.join(left)}",
            hint=f"unmount them (umount -l {left[0]}) and retry",
        )
    shutil.rmtree(target)


# --------------------------------------------------------------------------- writing the store



@contextlib.contextmanager
def _store_lock() -> Iterator[None]:
    """Exclusive lock on the image store, across processes; re-entrant within a thread."""
    with locks.hold(paths().images_dir / ".lock", "the image store"):
        yield


def _canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _put_blob_bytes(oci: Path, data: bytes) -> tuple[str, int]:
    hexpart = hashlib.sha256(data).hexdigest()
    final = oci / "blobs" / "sha256" / hexpart
    if not final.exists():
        tmp = final.with_name(f".{hexpart}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, final)
    return f"sha256:{hexpart}", len(data)


def _oci_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


def _config_json(config: ImageConfig, diff_id: str, created: str, created_by: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Env": list(config.env),
        "Cmd": list(config.cmd),
        "WorkingDir": config.working_dir,
        "ExposedPorts": {f"{port}/tcp": {} for port in config.exposed_ports},
        "StopSignal": config.stop_signal,
    }
    if config.entrypoint:
        body["Entrypoint"] = list(config.entrypoint)
    return {
        "created": created,
        "architecture": _oci_arch(),
        "os": "linux",
        "config": body,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": created_by}],
    }


def _write_index(oci: Path, manifests: list[dict[str, Any]]) -> None:
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests}
    tmp = oci / f".index.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, oci / "index.json")


def _collect_garbage(report: Report) -> None:
    """Remove blobs, unpacked layers and build directories nothing refers to."""
    store = paths().images_dir
    oci = _oci_dir()
    for stale in store.glob(".build-*"):
        report(f"images: removing the leftover build {stale.name}")
        remove_tree(stale)
    try:
        index = _read_json(oci / "index.json")
        descriptors = list(index.get("manifests") or [])
    except (OSError, ValueError, AttributeError, TypeError):
        return  # nothing trustworthy to compare against: keep everything
    keep: set[str] = set()
    layers: set[str] = set()
    for desc in descriptors:
        try:
            digest = str(desc["digest"])
            keep.add(digest.partition(":")[2])
            manifest = _read_json(_blob_path(oci, digest))
            keep.add(str(manifest["config"]["digest"]).partition(":")[2])
            for layer in manifest.get("layers") or []:
                hexpart = str(layer["digest"]).partition(":")[2]
                keep.add(hexpart)
                layers.add(hexpart)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return  # an entry we cannot read: do not guess what it needs
    removed: list[str] = []
    with contextlib.suppress(OSError):
        for blob in (oci / "blobs" / "sha256").iterdir():
            if blob.name not in keep:
                blob.unlink()
                removed.append(f"blob {blob.name[:12]}")
    with contextlib.suppress(OSError):
        for tree in _rootfs_dir().iterdir():
            if tree.name not in layers and not in_use_as_lowerdir(tree):
                remove_tree(tree)
                removed.append(f"rootfs {tree.name[:12]}")
    if removed:
        report(f"images: removed unreferenced {', '.join(removed)}")


def import_rootfs(
    rootfs: Path,
    configs: Mapping[str, ImageConfig],
    report: Report,
    *,
    created_by: str = "podhop",
) -> list[Image]:
    """Add images made of one root filesystem to the store; the tree ``rootfs`` is moved into it.

    Packs ``rootfs`` into one uncompressed tar layer (numeric owners,
    xattrs), writes one config and one manifest per entry of ``configs``
    (image name → config), moves the tree to ``images/rootfs/<layer hex>``
    and then atomically replaces ``index.json``, replacing any images of the
    same names. ``rootfs`` must be on the same filesystem as the store.
    """
    if not configs:
        raise ValueError("import_rootfs needs at least one image config")
    store = paths().images_dir
    oci = _oci_dir()
    with _store_lock():
        (oci / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        layout = oci / "oci-layout"
        if not layout.exists():
            layout.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}) + "\n")
        _rootfs_dir().mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=store))
        try:
            report("images: packing the root filesystem into an OCI layer…")
            tar_path = work / "layer.tar"
            tar = ["tar", "--numeric-owner", "--xattrs", "--sort=name", "-C", str(rootfs)]
            sh.run([*tar, "-cf", str(tar_path), "."], timeout=900)
            hexpart = _sha256_file(tar_path)
            layer_digest = f"sha256:{hexpart}"
            layer_size = tar_path.stat().st_size
            layer_blob = oci / "blobs" / "sha256" / hexpart
            if layer_blob.exists():
                tar_path.unlink()
            else:
                os.replace(tar_path, layer_blob)
            final_rootfs = _rootfs_dir() / hexpart
            if final_rootfs.exists():  # same content already unpacked (identical layer digest)
                remove_tree(rootfs)
            else:
                os.rename(rootfs, final_rootfs)
            created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            new_entries: list[dict[str, Any]] = []
            for name, config in configs.items():
                short = normalize(name)
                config_digest, config_size = _put_blob_bytes(
                    oci, _canonical(_config_json(config, layer_digest, created, created_by))
                )
                manifest = {
                    "schemaVersion": 2,
                    "mediaType": MEDIA_MANIFEST,
                    "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
                    "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": layer_size}],
                }
                manifest_digest, manifest_size = _put_blob_bytes(oci, _canonical(manifest))
                new_entries.append(
                    {
                        "mediaType": MEDIA_MANIFEST,
                        "digest": manifest_digest,
                        "size": manifest_size,
                        "platform": {"architecture": _oci_arch(), "os": "linux"},
                        "annotations": {REF_NAME: short},
                    }
                )
            names = {e["annotations"][REF_NAME] for e in new_entries}
            kept: list[dict[str, Any]] = []
            with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
                for desc in _read_json(oci / "index.json").get("manifests") or []:
                    ref = (desc.get("annotations") or {}).get(REF_NAME)
                    if not isinstance(ref, str) or ref not in names:
                        kept.append(desc)
            _write_index(oci, kept + new_entries)  # the commit point
        finally:
            remove_tree(work)
        _collect_garbage(report)
        wanted = {normalize(n) for n in configs}
        images = [image for image in list_images() if image.name in wanted]
        if len(images) != len(wanted):
            raise SetupError("images were written but cannot be read back", hint="run `podhop setup` again")
        return images


def _adjust_rootfs(root: Path) -> None:
    """Make the Debian tree behave like the official images, and drop apt caches."""
    conf = root / "etc" / "nginx" / "nginx.conf"
    text = conf.read_text()
    if re.search(r"(?m)^\s*user\s+[^;]*;", text):
        text = re.sub(r"(?m)^\s*user\s+[^;]*;", "user root;", text, count=1)
    else:
        text = "user root;\n" + text
    conf.write_text(text)
    logs = root / "var" / "log" / "nginx"
    logs.mkdir(parents=True, exist_ok=True)
    for name, device in (("access.log", "/dev/stdout"), ("error.log", "/dev/stderr")):
        link = logs / name
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(device)
    data = root / "data"
    data.mkdir(exist_ok=True)
    data.chmod(0o755)
    clean_apt_caches(root)
    root.chmod(0o755)


def clean_apt_caches(root: Path) -> None:
    """Drop downloaded packages and package lists from a Debian tree, as the official images do."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*"):
        for junk in root.glob(pattern):
            if junk.is_file() or junk.is_symlink():
                junk.unlink()
            elif junk.is_dir() and junk.name != "partial":
                remove_tree(junk)


def _check_rootfs(root: Path) -> None:
    """Fail the build early when the tree lacks what the two images run (symlinks inside are absolute)."""
    needed = [
        "usr/sbin/nginx",
        "usr/bin/redis-server",
        "usr/bin/redis-cli",
        "usr/bin/curl",
        "var/www/html",
        "etc/nginx/sites-available/default",
        "etc/nginx/sites-enabled/default",
    ]
    missing = [p for p in needed if not os.path.lexists(root / p)]
    if missing:
        raise SetupError(f"the base root filesystem lacks {', '.join(missing)}")
    if "user root;" not in (root / "etc/nginx/nginx.conf").read_text():
        raise SetupError("could not set `user root;` in nginx.conf")


def ensure_base_images(report: Report) -> list[Image]:
    """Build the ``nginx`` and ``redis`` images once (one debootstrap); later calls just list them."""
    wanted = sorted(BASE_IMAGES)
    present = {image.name: image for image in list_images()}
    if all(name in present for name in wanted):
        report(f"images: {', '.join(wanted)} present")
        return [present[name] for name in wanted]
    with _store_lock():
        present = {image.name: image for image in list_images()}
        if all(name in present for name in wanted):  # built by someone else while we waited
            report(f"images: {', '.join(wanted)} present")
            return [present[name] for name in wanted]
        _collect_garbage(report)
        suite = image_suite()
        include = [_nginx_package(suite), "redis-server", "redis-tools", "curl", "procps", "iproute2"]
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=paths().images_dir))
        try:
            root = build / "rootfs"
            debootstrap(suite, root, include, report)
            _adjust_rootfs(root)
            _check_rootfs(root)
            images = import_rootfs(
                root,
                BASE_IMAGES,
                report,
                created_by=f"debootstrap --variant=minbase --include={','.join(include)} {suite}",
            )
        except PodhopError:
            raise
        except OSError as exc:
            raise SetupError(f"building the base images failed: {exc}") from exc
        finally:
            remove_tree(build)
        total = images[0].size_bytes if images else 0
        report(f"images: built {', '.join(i.name for i in images)} ({total / 1e6:.0f} MB layer)")
        return images
