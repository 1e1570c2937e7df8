"""The checkpoint archive layout, and what podhop accepts from one.

Why: Podman, CRI-O, containerd and podhop write the same container archive
layout (names from checkpointctl's ``lib/metadata.go``):

    checkpoint/        CRIU's images (flat: pstree.img, core-*.img, pages-*.img, ...)
    config.dump        container metadata: id, name, rootfsImageName, runtime, times
                       (podhop adds its pod's metadata under "podhop")
    spec.dump          the container's OCI runtime config when it was dumped
    rootfs-diff.tar    files the container changed in its root filesystem
    deleted.files      JSON list of files it deleted
    stats-dump         CRIU's dump statistics; dump.log its log

An archive is untrusted input: whoever made it chose every byte. This module
is the one statement of what podhop takes from it — names that follow
Kubernetes' rules, a process (arguments, environment, working directory)
within sane bounds, the pod's labels and spec validated like a manifest —
and, by omission, of what it never takes: hooks, host mounts, namespaces,
capabilities, devices. The models are pure (no I/O); ``reader`` feeds them.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from podhop.errors import PodhopError
from podhop.objects.schema import dns1123_label, dns1123_subdomain

CONFIG_DUMP = "config.dump"
SPEC_DUMP = "spec.dump"
ROOTFS_DIFF = "rootfs-diff.tar"
DELETED_FILES = "deleted.files"
STATS_DUMP = "stats-dump"
DUMP_LOG = "dump.log"
CHECKPOINT_DIR = "checkpoint"
DEVSHM = "devshm-checkpoint.tar"  # Podman's: what /dev/shm held
#: Tar members replayed into the new container (never unpacked as they are).
REPLAYED = (ROOTFS_DIFF, DEVSHM)

#: Small files read into memory (at most ``METADATA_MAX`` bytes each).
METADATA = (CONFIG_DUMP, SPEC_DUMP, DELETED_FILES, STATS_DUMP)
METADATA_MAX = 16 << 20
#: Files podhop writes into its own archives, in this order.
WRITTEN = (CONFIG_DUMP, SPEC_DUMP, ROOTFS_DIFF, DELETED_FILES, STATS_DUMP, DUMP_LOG)
#: CRIU image names: letters, digits, '-', '_', '.', ending in .img (plus a few fixed names).
IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}")
M = TypeVar("M", bound="BaseModel")


class ArchiveError(PodhopError):
    """A checkpoint archive is unreadable, incomplete or asks for something podhop refuses."""


def pod_name(value: str) -> str:
    """Kubernetes' rule for pod names: a DNS-1123 subdomain."""
    return dns1123_subdomain(value)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL byte")
    return value


def _env_entry(value: str) -> str:
    _no_nul(value)
    if "=" not in value or value.startswith("="):
        raise ValueError(f"environment entry {value[:40]!r} is not NAME=value")
    return value


def _absolute_path(value: str) -> str:
    _no_nul(value)
    if not value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"{value!r} is not an absolute path without '..'")
    return posixpath.normpath(value)


Arg = Annotated[str, Field(max_length=65536), AfterValidator(_no_nul)]
EnvEntry = Annotated[str, Field(max_length=65536), AfterValidator(_env_entry)]
AbsPath = Annotated[str, Field(max_length=4096), AfterValidator(_absolute_path)]
PodName = Annotated[str, AfterValidator(pod_name)]
Label = Annotated[str, AfterValidator(dns1123_label)]


class ArchiveProcess(BaseModel):
    """The only part of ``spec.dump`` podhop uses: what the container ran, and where."""

    model_config = ConfigDict(extra="ignore")

    args: Annotated[list[Arg], Field(min_length=1, max_length=4096)]
    env: Annotated[list[EnvEntry], Field(max_length=4096)] = []
    cwd: AbsPath = "/"


class ArchiveMount(BaseModel):
    """A mount of the dumped container, as far as podhop looks at it: where, and what kind."""

    model_config = ConfigDict(extra="ignore")

    destination: AbsPath
    type: str = ""
    options: list[str] = []

    @property
    def is_bind(self) -> bool:
        return self.type == "bind" or "bind" in self.options or "rbind" in self.options


class ArchiveSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    process: ArchiveProcess
    mounts: Annotated[list[ArchiveMount], Field(max_length=256)] = []


class PodhopMeta(BaseModel):
    """What podhop's own archives add about the pod (validated again on the way in)."""

    model_config = ConfigDict(extra="ignore")

    pod: PodName
    namespace: Label = "default"
    labels: dict[str, str] = {}
    spec: dict[str, Any] | None = None
    owner_kind: str | None = None
    owner_name: str | None = None
    ports: Annotated[list[Annotated[int, Field(ge=1, le=65535)]], Field(max_length=64)] = []
    containers: Annotated[list[Label], Field(max_length=64)] = []


class ConfigDump(BaseModel):
    """``config.dump``: the container's identity (every other key is ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: Annotated[str, Field(max_length=256)] = ""
    name: Annotated[str, Field(min_length=1, max_length=253)]
    rootfs_image_name: Annotated[str, Field(max_length=512)] = Field(default="", alias="rootfsImageName")
    runtime: Annotated[str, Field(max_length=64)] = ""
    created_time: str | None = Field(default=None, alias="createdTime")
    checkpointed_time: str | None = Field(default=None, alias="checkpointedTime")
    podhop: PodhopMeta | None = None


def parse_json(member: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ArchiveError(f"{member} is not valid JSON: {exc}") from exc


def parse_model(model: type[M], member: str, data: bytes) -> M:
    """``member``'s JSON as ``model``, or one :class:`ArchiveError` line naming the first problem."""
    raw = parse_json(member, data)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise ArchiveError(f"{member}: {where}: {first['msg']}") from exc


def parse_deleted(data: bytes) -> list[str]:
    raw = parse_json(DELETED_FILES, data) if data.strip() else []
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise ArchiveError(f"{DELETED_FILES} is not a JSON list of paths")
    return raw


def container_name(config: ConfigDump) -> str:
    """The archive's container name, which must follow Kubernetes' rule for container names."""
    try:
        return dns1123_label(config.name)
    except ValueError as exc:
        raise ArchiveError(
            f"{CONFIG_DUMP}: container name {config.name!r} is not a valid Kubernetes container name",
            hint="restore it with --name NAME (a DNS-1123 label)",
        ) from exc


#: What every podhop pod already gets bind-mounted (from its own directory).
POD_FILES = frozenset({"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"})
#: Marker files other runtimes bind into containers: given back as empty files of the pod's own.
EMPTY_FILES = {"/run/.containerenv": "containerenv"}


@dataclass(frozen=True)
class ExternalMounts:
    """What a restore must mount from outside the container, as the checkpoint's CRIU images say.

    ``files``: (destination, file name in the pod's directory) of empty files; ``shm``: ``/dev/shm``
    is a bind (its contents in ``devshm-checkpoint.tar``); ``cgroup``: the cgroup file system.
    """

    files: tuple[tuple[str, str], ...] = ()
    shm: bool = False
    cgroup: bool = False


def external_mounts(keys: list[str]) -> ExternalMounts:
    """Plan the external mounts for CRIU's ``keys``; refuse any podhop cannot give from the pod's own
    directories (a host path, a volume): nothing of an archive becomes a host mount."""
    files: list[tuple[str, str]] = []
    shm = cgroup = False
    for key in keys:
        if key in POD_FILES or key == "/dev/null":  # the pod's own; /dev/null: runc's masked paths
            continue
        if key in EMPTY_FILES:
            files.append((key, EMPTY_FILES[key]))
        elif key == "/dev/shm":
            shm = True
        elif key == "/sys/fs/cgroup" or key.startswith("/sys/fs/cgroup/"):
            cgroup = True
        else:
            raise ArchiveError(
                f"the checkpoint expects {key!r} mounted from outside the container (a volume?): "
                "podhop restores only a pod's own files, /dev/shm and the cgroup file system"
            )
    return ExternalMounts(tuple(files), shm, cgroup)


def image_member(name: str) -> bool:
    """Whether ``checkpoint/NAME`` is a plausible CRIU image file name (no '/', no '..')."""
    return IMAGE_NAME.fullmatch(name) is not None and ".." not in name
