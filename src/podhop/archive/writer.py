"""Writing a checkpoint archive so that it is either whole and in place, or not there at all.

Why: a checkpoint that stops the container is the only copy of that
container. So the output is claimed *before* the dump — its directory must
exist and be writable, the name must not be a link or a directory — by
creating a temporary file beside it with ``O_CREAT|O_EXCL|O_NOFOLLOW``, mode
0600 (the archive holds process memory). The archive is written there,
``fsync``-ed, and renamed over the final name (then the directory is synced),
so a reader never sees a half-written archive and a failure at any point
leaves the previous file, if any, untouched. Only after :meth:`Output.commit`
returns may the caller stop the container.
"""

from __future__ import annotations

import os
import secrets
import stat
import tarfile
from pathlib import Path

from podhop.archive import layout
from podhop.archive.layout import ArchiveError


class Output:
    """A claimed output path: a temporary file beside it until :meth:`commit`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dir = path.parent if str(path.parent) else Path(".")
        self.tmp = self.dir / f".{path.name}.{secrets.token_hex(4)}.part"
        self._check()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self.fd: int | None = os.open(self.tmp, flags, 0o600)
        except OSError as exc:
            raise ArchiveError(
                f"cannot write the checkpoint to {path}: {exc.strerror}", hint="choose another -o path"
            ) from exc

    def _check(self) -> None:
        try:
            st_dir = os.stat(self.dir)
        except FileNotFoundError as exc:
            raise ArchiveError(
                f"cannot write the checkpoint to {self.path}: directory {self.dir} does not exist"
            ) from exc
        if not stat.S_ISDIR(st_dir.st_mode):
            raise ArchiveError(f"cannot write the checkpoint to {self.path}: {self.dir} is not a directory")
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise ArchiveError(f"refusing to write the checkpoint through the symbolic link {self.path}")
        if not stat.S_ISREG(st.st_mode):
            raise ArchiveError(f"cannot write the checkpoint to {self.path}: it exists and is not a file")

    def write(self, work: Path, names: tuple[str, ...] = (*layout.WRITTEN, layout.CHECKPOINT_DIR)) -> None:
        """Write the archive from the files ``names`` of ``work`` (those that exist), then fsync."""
        assert self.fd is not None
        try:
            with os.fdopen(os.dup(self.fd), "wb") as fh:
                with tarfile.open(fileobj=fh, mode="w") as tar:
                    for name in names:
                        if (work / name).exists():
                            tar.add(work / name, arcname=name)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            why = exc.strerror or exc
            raise ArchiveError(f"writing the checkpoint to {self.path} failed: {why}") from exc

    def commit(self) -> Path:
        """Rename the finished archive into place (atomically), sync the directory."""
        assert self.fd is not None
        os.close(self.fd)
        self.fd = None
        try:
            os.rename(self.tmp, self.path)
            dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            why = exc.strerror or exc
            raise ArchiveError(f"moving the checkpoint into {self.path} failed: {why}") from exc
        return self.path

    def discard(self) -> None:
        """Remove the temporary file (after a failure); the final name is left as it was."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.tmp.unlink(missing_ok=True)
