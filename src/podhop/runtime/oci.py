"""OCI runtime bundles: the ``config.json`` runc runs a pod's container from.

Why: a container of a pod is an OCI bundle — a root filesystem and a
config. Building the config is pure (a dict from the container spec, the
image config and where the pod lives), so it is kept apart from running
it. Choices that matter for CRIU are made here once:

- the process runs as root inside the container (this machine lacks
  CAP_SYS_RESOURCE, and CRIU cannot read rlimits of another uid without it);
- the network namespace is the pod's, given by path, so runc treats it as
  external and a checkpoint can be restored into another pod namespace;
- the root filesystem is a per-container overlay (``rootfs``) over the node's
  read-only copy of the image, so writes stay in the container's upper dir;
- RLIMIT_NOFILE is set to the host's current hard limit (raising it would need
  CAP_SYS_RESOURCE);
- as few tmpfs mounts as possible (see ``MASKED_PATHS``): each costs CRIU a tar on dump and restore.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]  # Docker's and containerd's default set

# Files masked with /dev/null, as Docker does. Docker also masks the directories /proc/acpi,
# /proc/scsi and /sys/firmware with empty read-only tmpfs mounts; we leave those out: CRIU dumps and
# restores every tmpfs by running tar over it, ~20 ms each way per mount, which is a fifth of a
# cold migration's freeze here. /sys is read-only in the container anyway.
MASKED_PATHS = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


@dataclass(frozen=True)
class BindMount:
    """A file or directory of the host (always one of the pod's own) mounted into the container."""

    destination: str
    source: str
    readonly: bool = False
    restricted: bool = False  # nosuid, noexec, nodev (what /dev/shm gets)

    def to_oci(self) -> dict[str, Any]:
        options = ["rbind", "rprivate", "ro" if self.readonly else "rw"]
        if self.restricted:
            options += ["nosuid", "noexec", "nodev"]
        return {"destination": self.destination, "type": "bind", "source": self.source, "options": options}


#: The cgroup file system, read-only, as Podman and Docker give it (cgroup v1: one bind per controller).
CGROUP_MOUNT = {
    "destination": "/sys/fs/cgroup",
    "type": "cgroup",
    "source": "cgroup",
    "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
}


@dataclass(frozen=True)
class ProcessSpec:
    """What to run, resolved from the image config and the container spec."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str


def resolve_process(
    image_entrypoint: tuple[str, ...],
    image_cmd: tuple[str, ...],
    image_env: tuple[str, ...],
    image_workdir: str,
    command: tuple[str, ...] | None,
    args: tuple[str, ...] | None,
    env: tuple[tuple[str, str], ...],
    working_dir: str | None,
) -> ProcessSpec:
    """Kubernetes' rule: ``command`` replaces the entrypoint, ``args`` the cmd.

    If ``command`` is given without ``args``, the image's cmd is dropped too.
    """
    if command:  # an empty list means "not set", as in Kubernetes
        argv = tuple(command) + tuple(args or ())
    else:
        argv = image_entrypoint + (tuple(args) if args else image_cmd)
    if not argv:
        raise ValueError("container has no command: the image has none and the manifest gives none")
    merged: dict[str, str] = {}
    for item in image_env:
        key, _, value = item.partition("=")
        merged[key] = value
    merged.update(dict(env))
    merged.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return ProcessSpec(
        args=argv,
        env=tuple(f"{k}={v}" for k, v in merged.items()),
        cwd=working_dir or image_workdir or "/",
    )


def config(
    process: ProcessSpec,
    *,
    hostname: str,
    netns_path: Path,
    cgroups_path: str,
    cpu_limit_m: int = 0,
    memory_limit_b: int = 0,
    annotations: dict[str, str] | None = None,
    binds: tuple[BindMount, ...] = (),
    cgroup_mount: bool = False,
) -> dict[str, Any]:
    """The OCI runtime config for one container (root filesystem at ``rootfs``).

    ``binds`` are mounted after the standard mounts (the pod's ``/etc/hosts`` and the like: runc
    resolves each destination inside the root filesystem, so a link there cannot lead outside);
    a bind replaces a standard mount of the same destination (``/dev/shm``). ``cgroup_mount``
    adds a read-only ``/sys/fs/cgroup`` (restoring a checkpoint that had one).
    """
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if nofile == resource.RLIM_INFINITY:
        nofile = 1 << 20
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if cpu_limit_m:
        resources["cpu"] = {"quota": cpu_limit_m * 100, "period": 100_000}
    if memory_limit_b:
        resources["memory"] = {"limit": memory_limit_b}
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(process.args),
            "env": list(process.env),
            "cwd": process.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": False,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": hostname[:63],
        "mounts": _mounts(binds, cgroup_mount),
        "annotations": annotations or {},
        "linux": {
            "cgroupsPath": "/" + cgroups_path.strip("/"),
            "resources": resources,
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "network", "path": str(netns_path)},
            ],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }


def _mounts(binds: tuple[BindMount, ...], cgroup_mount: bool) -> list[dict[str, Any]]:
    replaced = {b.destination for b in binds}
    standard = [m for m in _standard_mounts() if m["destination"] not in replaced]
    return [*standard, *([CGROUP_MOUNT] if cgroup_mount else []), *(b.to_oci() for b in binds)]


def _standard_mounts() -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
    ]
