"""File operations confined to one directory tree, never following a symbolic link.

Why: a container's root filesystem is untrusted. Its owner can replace any
path — ``/etc/hosts``, a directory on the way to a file — with a symbolic
link to anywhere on the host, and a checkpoint archive can name ``..`` or an
absolute path. Anything podhop writes, links or deletes inside such a tree
therefore goes through this module: a path is split into plain components
(``..``, empty and NUL-bearing ones refused), walked from an open descriptor
of the root one component at a time with ``O_NOFOLLOW``, and the final
operation is done relative to the parent's descriptor (``*at`` system calls).
A symbolic link met on the way is refused rather than resolved, so nothing
can land outside the root, and no check-then-use race exists: every step
works on descriptors, not names.

Legitimate inputs never need to cross a link: a root filesystem diff is made
from an overlay upper directory, whose paths are the real ones (a write to
``/var/run/x`` through Debian's ``var/run -> /run`` link is recorded as
``run/x``).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from podhop.errors import PodhopError

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_PATH = 4096
CHUNK = 1 << 20


class UnsafePathError(PodhopError):
    """A path would leave its root (``..``, an absolute link on the way, a bad name)."""


def components(path: str) -> tuple[str, ...]:
    """The plain components of a path inside a root: ``/etc/hosts`` and ``./etc/hosts`` → ``(etc, hosts)``.

    Raises :class:`UnsafePathError` for ``..``, NUL bytes, an empty path or one longer than 4096.
    """
    if not path or "\x00" in path or len(path) > MAX_PATH:
        raise UnsafePathError(f"invalid path {path[:80]!r}")
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if not parts:
        raise UnsafePathError(f"path {path!r} names the root itself")
    if ".." in parts:
        raise UnsafePathError(f"path {path!r} climbs out with '..'")
    return parts


@contextmanager
def open_root(path: str | os.PathLike[str]) -> Iterator[int]:
    """A descriptor of the root directory (itself not a link), closed on exit."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise UnsafePathError(f"{path}: cannot open as a directory: {exc.strerror}") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def _step(dir_fd: int, name: str, where: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise UnsafePathError(f"{where}: {name!r} on the way is not a directory (a link?)") from exc
        raise


@contextmanager
def parent(root_fd: int, path: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
    """``(descriptor of the parent directory, final name)`` of ``path`` under the root.

    ``create`` makes missing directories on the way (mode 0755, owned by the caller).
    """
    parts = components(path)
    fd = os.dup(root_fd)
    try:
        for name in parts[:-1]:
            try:
                nxt = _step(fd, name, path)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(name, 0o755, dir_fd=fd)
                nxt = _step(fd, name, path)
            os.close(fd)
            fd = nxt
        yield fd, parts[-1]
    finally:
        os.close(fd)


def lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _clear(dir_fd: int, name: str, *, keep_dir: bool) -> None:
    """Remove whatever is at ``name`` (a directory only unless ``keep_dir``)."""
    st = lstat(dir_fd, name)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        if not keep_dir:
            shutil.rmtree(name, dir_fd=dir_fd)
        return
    os.unlink(name, dir_fd=dir_fd)


def _own(fd_or_name: int | str, mode: int, uid: int, gid: int, dir_fd: int | None = None) -> None:
    """Owner then permissions (chown clears set-id bits, so order matters); set-id bits never kept."""
    safe = stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID)
    if isinstance(fd_or_name, int):
        os.fchown(fd_or_name, uid, gid)
        os.fchmod(fd_or_name, safe)
    else:
        os.chown(fd_or_name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        os.chmod(fd_or_name, safe, dir_fd=dir_fd)


def write_file(
    root_fd: int, path: str, data: IO[bytes], *, mode: int = 0o644, uid: int = 0, gid: int = 0
) -> int:
    """Create ``path`` anew (whatever was there replaced, never written through); return its size."""
    with parent(root_fd, path, create=True) as (dir_fd, name):
        _clear(dir_fd, name, keep_dir=False)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        size = 0
        try:
            while chunk := data.read(CHUNK):
                os.write(fd, chunk)
                size += len(chunk)
            _own(fd, mode, uid, gid)
        finally:
            os.close(fd)
        return size


def make_dir(root_fd: int, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
    """Make a directory (an existing one keeps its contents; anything else in the way is replaced)."""
    with parent(root_fd, path, create=True) as (dir_fd, name):
        st = lstat(dir_fd, name)
        if st is None or not stat.S_ISDIR(st.st_mode):
            _clear(dir_fd, name, keep_dir=False)
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        _own(name, mode, uid, gid, dir_fd)


def make_symlink(root_fd: int, path: str, target: str, *, uid: int = 0, gid: int = 0) -> None:
    """Make a symbolic link. Its text may point anywhere: podhop never follows it, and the
    container resolves it inside its own root."""
    if "\x00" in target or len(target) > MAX_PATH:
        raise UnsafePathError(f"invalid link target for {path!r}")
    with parent(root_fd, path, create=True) as (dir_fd, name):
        _clear(dir_fd, name, keep_dir=False)
        os.symlink(target, name, dir_fd=dir_fd)
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def make_hardlink(root_fd: int, path: str, existing: str) -> None:
    """Link ``path`` to the file ``existing``, both inside the root (a link is linked, not followed)."""
    with (
        parent(root_fd, existing) as (src_fd, src_name),
        parent(root_fd, path, create=True) as (
            dir_fd,
            name,
        ),
    ):
        st = lstat(src_fd, src_name)
        if st is None or stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"hard link {path!r} -> {existing!r}: no such file in the root")
        _clear(dir_fd, name, keep_dir=False)
        os.link(src_name, name, src_dir_fd=src_fd, dst_dir_fd=dir_fd, follow_symlinks=False)


def make_fifo(root_fd: int, path: str, *, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    with parent(root_fd, path, create=True) as (dir_fd, name):
        _clear(dir_fd, name, keep_dir=False)
        os.mkfifo(name, 0o600, dir_fd=dir_fd)
        _own(name, mode, uid, gid, dir_fd)


def remove(root_fd: int, path: str) -> bool:
    """Delete ``path`` (a directory with its contents) if it exists; True if something was removed.

    A missing directory on the way means there is nothing to delete; a link on the way is refused.
    """
    try:
        with parent(root_fd, path) as (dir_fd, name):
            if lstat(dir_fd, name) is None:
                return False
            _clear(dir_fd, name, keep_dir=False)
            return True
    except FileNotFoundError:
        return False


def ensure_file(root_fd: int, path: str, *, mode: int = 0o644) -> None:
    """An empty regular file at ``path`` unless one is there (a mount point for a bind mount)."""
    with parent(root_fd, path, create=True) as (dir_fd, name):
        st = lstat(dir_fd, name)
        if st is not None and stat.S_ISREG(st.st_mode):
            return
        _clear(dir_fd, name, keep_dir=False)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
        os.close(fd)
