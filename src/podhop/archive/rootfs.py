"""A container's root filesystem changes: recorded from its overlay, replayed into a new root.

Why: a checkpoint carries what the container changed in its root filesystem
(``rootfs-diff.tar``) and what it deleted (``deleted.files``). Recording reads
the overlay's upper directory (real paths, no link ever followed). Replaying
is the dangerous half — the diff and the list come from an archive, and the
target root already holds links such as Debian's ``var/run -> /run`` — so
every entry is created, linked or deleted through :mod:`podhop.runtime.safefs`,
relative to the root and without following links. What the entries may be is
narrow: files, directories, symbolic links (kept as text, never followed by
podhop), hard links to files inside the root and FIFOs. Devices are refused,
set-user/group-id bits are dropped, and extended attributes (file
capabilities among them) are not applied.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from podhop.archive.layout import DELETED_FILES, ROOTFS_DIFF, ArchiveError
from podhop.runtime import safefs


@dataclass
class Applied:
    """What replaying a diff did: entries written, and set-id bits dropped."""

    entries: int = 0
    setid_dropped: int = 0
    deleted: int = 0


def make_diff(upper: Path, out: Path) -> list[str]:
    """Write ``rootfs-diff.tar`` from an overlay upper dir; return the deleted paths (whiteouts)."""
    deleted: list[str] = []
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w") as tar:
        for root, dirs, files in os.walk(upper):
            for name in sorted(dirs + files):
                full = Path(root) / name
                rel = str(full.relative_to(upper))
                st = full.lstat()
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    deleted.append("/" + rel)  # an overlay whiteout: the file was deleted
                    continue
                tar.add(full, arcname=rel, recursive=False)
    return deleted


def apply_diff(rootfs: Path, diff: Path) -> Applied:
    """Replay ``rootfs-diff.tar`` into the mounted root ``rootfs``, confined to it."""
    done = Applied()
    hardlinks: list[tuple[str, str]] = []
    try:
        with safefs.open_root(rootfs) as root, tarfile.open(diff, mode="r:") as tar:
            for member in tar:
                if member.name.strip("./") == "":  # the root itself ("./"): it is there already
                    continue
                _apply(root, tar, member, done, hardlinks)
            for path, target in hardlinks:  # after every file they may point at exists
                safefs.make_hardlink(root, path, target)
    except safefs.UnsafePathError as exc:
        raise ArchiveError(f"{ROOTFS_DIFF}: {exc}") from exc
    except (tarfile.TarError, EOFError) as exc:
        raise ArchiveError(f"{ROOTFS_DIFF} is not a readable tar archive: {exc or 'truncated'}") from exc
    return done


def _apply(
    root: int, tar: tarfile.TarFile, m: tarfile.TarInfo, done: Applied, links: list[tuple[str, str]]
) -> None:
    path = m.name
    safefs.components(path)  # refuse '..' and the like before anything is made
    if m.mode & (stat.S_ISUID | stat.S_ISGID):
        done.setid_dropped += 1
    if m.isdir():
        safefs.make_dir(root, path, mode=m.mode, uid=m.uid, gid=m.gid)
    elif m.isreg():
        src = tar.extractfile(m)
        assert src is not None
        safefs.write_file(root, path, src, mode=m.mode, uid=m.uid, gid=m.gid)
    elif m.issym():
        safefs.make_symlink(root, path, m.linkname, uid=m.uid, gid=m.gid)
    elif m.islnk():
        safefs.components(m.linkname)
        links.append((path, m.linkname))
    elif m.isfifo():
        safefs.make_fifo(root, path, mode=m.mode, uid=m.uid, gid=m.gid)
    else:
        kind = "device node" if m.isdev() else f"member of type {m.type!r}"
        raise ArchiveError(f"{ROOTFS_DIFF}: {path!r} is a {kind}: refused")
    done.entries += 1


def apply_deletions(rootfs: Path, deleted: list[str]) -> int:
    """Delete the listed paths from the mounted root, confined to it; return how many existed."""
    count = 0
    try:
        with safefs.open_root(rootfs) as root:
            for path in deleted:
                count += safefs.remove(root, path)
    except safefs.UnsafePathError as exc:
        raise ArchiveError(f"{DELETED_FILES}: {exc}") from exc
    return count


def write_deleted(path: Path, deleted: list[str]) -> None:
    path.write_text(json.dumps(deleted))
