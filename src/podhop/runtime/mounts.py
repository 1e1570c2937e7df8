"""The machine's mount table, and removing mounts below a directory deepest first.

Why: cleanup everywhere — a pod's overlay, CRIU's ``criu-root`` bind mount under
runc's state, a half-built image root, a whole cluster — must unmount what lies
below a directory before deleting it, or a recursive delete could go through a
mount into files that are not ours. One reading of ``/proc/self/mountinfo``
(with its octal escapes decoded) serves them all.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from podhop import sh


def mount_table() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every mount of this process."""
    out: list[tuple[str, str, str]] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields = left.split()
            rest = right.split()
            if len(fields) < 5 or len(rest) < 3:
                continue
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            out.append((point, rest[0], rest[2]))
    return out


def mounts_under(top: Path) -> list[str]:
    """Mount points at or below ``top``, deepest first."""
    root = str(top).rstrip("/")
    points = [m for m, _, _ in mount_table() if m == root or m.startswith(root + "/")]
    return sorted(points, key=lambda m: m.count("/"), reverse=True)


def unmount_under(top: Path) -> None:
    """Unmount everything at or below ``top``, deepest first (lazily where a plain umount fails)."""
    for point in mounts_under(top):
        if not sh.ok(["umount", point]):
            sh.ok(["umount", "-l", point])
