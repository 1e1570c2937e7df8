"""Checkpointing a runc container with CRIU directly, as ``runc checkpoint`` would ask it to.

Why: ``runc checkpoint`` costs ~20 ms around CRIU's own work on this machine
(Go start-up, its state and config loaded, and an extra CRIU run just to read
CRIU's version), all of it while a cold migration's source is frozen. What
runc asks of CRIU is plain: the container's root, its network namespace as an
external one, its freezer cgroup, every bind mount (and masked path and device)
as an external mount keyed by its destination, the ``org.criu.config`` file,
and the container's standard descriptors in ``descriptors.json`` for the
restore. :func:`plan_dump` reads that from runc's own ``state.json`` — no I/O,
a value a test can check against runc's rules (``libcontainer.Checkpoint`` in
runc 1.1) — and the images it makes are restored by ``runc restore`` as if
runc had dumped them.

Post-copy's lazy dump stays with runc (driven directly, CRIU's lazy dump failed
here). A container with anything else for CRIU to know (cgroup mounts without a cgroup
namespace, a PID namespace of another's, a mount whose key runc would resolve
through a link) gets ``None`` from :func:`plan_dump`: the caller then uses
``runc checkpoint``, which knows them all.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The key runc gives a container's network namespace when it is external (``criuNsToKey``).
NETNS_KEY = "extRootNetNS"
DESCRIPTORS = "descriptors.json"


@dataclass(frozen=True)
class DumpPlan:
    """What one ``criu dump`` of a runc container needs, read from runc's state."""

    pid: int
    root: str
    options: tuple[str, ...]  # CRIU's command-line options that describe the container
    descriptors: tuple[str, ...]  # the init process's stdio, for runc restore

    def argv(
        self,
        criu: Path,
        images: Path,
        work: Path,
        *,
        leave_running: bool = False,
        tcp_established: bool = True,
        ps_socket: int | None = None,
    ) -> list[str]:
        """The ``criu dump`` command line (log ``dump.log`` and statistics in ``work``); with
        ``ps_socket``, memory goes to a page server on the connection CRIU inherits as that descriptor."""
        argv = [str(criu), "dump", "-t", str(self.pid), "-D", str(images), "-W", str(work)]
        argv += ["-o", "dump.log", "-v4", "--root", self.root, "--manage-cgroups=soft", *self.options]
        if leave_running:
            argv.append("--leave-running")
        if tcp_established:
            argv.append("--tcp-established")
        if ps_socket is not None:
            argv += ["--page-server", "--ps-socket", str(ps_socket)]
        return argv

    def write_descriptors(self, images: Path) -> None:
        """``descriptors.json`` as runc writes it (root-only), which ``runc restore`` reads."""
        fd = os.open(images / DESCRIPTORS, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(list(self.descriptors), fh, separators=(",", ":"))


def _key(destination: str, rootfs: str) -> str | None:
    """runc's key for a mount (its destination inside the root); ``None`` when runc would have to
    resolve it (a relative or dotted path, which runc passes through ``securejoin``)."""
    dest = destination[len(rootfs) :] if destination.startswith(rootfs) else destination
    parts = dest.split("/")
    if not dest.startswith("/") or any(p in (".", "..") for p in parts[1:]) or "//" in dest:
        return None
    return dest


def plan_dump(
    state: dict[str, Any],
    *,
    netns_inode: int,
    masked_files: set[str],
    mount_points: set[str],
) -> DumpPlan | None:
    """The dump of the container whose runc ``state.json`` is ``state``, or ``None`` (see the module doc).

    ``netns_inode``: the inode of the container's network namespace file; ``masked_files``: the masked
    paths that exist in the container and are not directories (runc masks those with ``/dev/null``);
    ``mount_points``: the container's mount points as it sees them (its ``mountinfo``), which every
    external mount's key must be.
    """
    config = state.get("config") or {}
    rootfs = str(config.get("rootfs") or "")
    pid = int(state.get("init_process_pid") or 0)
    namespaces = {ns.get("type"): ns.get("path", "") for ns in config.get("namespaces") or []}
    freezer = (state.get("cgroup_paths") or {}).get("freezer", "")
    if not rootfs or pid <= 0 or not freezer or "NEWCGROUP" in namespaces or namespaces.get("NEWPID"):
        return None
    options: list[str] = []
    if namespaces.get("NEWNET"):
        options += ["--external", f"net[{netns_inode}]:{NETNS_KEY}"]
    options += ["--freeze-cgroup", freezer]
    external: list[tuple[str, str]] = []
    for mount in config.get("mounts") or []:
        device = mount.get("device")
        if device == "cgroup":
            return None  # runc expands it into one bind per controller
        if device != "bind":
            continue
        key = _key(str(mount.get("destination", "")), rootfs)
        if key is None or key not in mount_points:
            return None
        external.append((key, key))
    for path in config.get("mask_paths") or []:
        if path in masked_files:
            external.append((path, "/dev/null"))
    for device in config.get("devices") or []:
        path = str(device.get("path", ""))
        if path:
            external.append((path, path))
    for key, val in external:
        options += ["--external", f"mnt[{key}]:{val}"]
    labels = dict(label.split("=", 1) for label in config.get("labels") or [] if "=" in label)
    if labels.get("org.criu.config"):
        options += ["--config", labels["org.criu.config"]]
    return DumpPlan(pid, rootfs, tuple(options), tuple(state.get("external_descriptors") or ()))


def mount_points(pid: int) -> set[str]:
    """The mount points of process ``pid`` as it sees them (field 5 of its ``mountinfo``)."""
    points = set()
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4:  # spaces and the like are octal escapes there
            points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


def masked_files(pid: int, paths: list[str]) -> set[str]:
    """Those of ``paths`` that exist in process ``pid``'s root and are not directories (runc's rule)."""
    found = set()
    for path in paths:
        try:
            st = os.stat(f"/proc/{pid}/root/{path.lstrip('/')}")
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            found.add(path)
    return found


def load(runc_root: Path, container_id: str) -> DumpPlan | None:
    """The dump plan of a container of runc's state root ``runc_root`` (``None``: use runc)."""
    try:
        state = json.loads((runc_root / container_id / "state.json").read_text())
        pid = int(state.get("init_process_pid") or 0)
        config = state.get("config") or {}
        spaces = config.get("namespaces") or []
        netns = next((ns.get("path") for ns in spaces if ns.get("type") == "NEWNET"), "")
        inode = os.stat(netns).st_ino if netns else 0
        return plan_dump(
            state,
            netns_inode=inode,
            masked_files=masked_files(pid, list(config.get("mask_paths") or [])),
            mount_points=mount_points(pid),
        )
    except (OSError, ValueError):
        return None
