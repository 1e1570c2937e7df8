"""Reading a checkpoint archive: one validated pass, nothing unpacked that is not asked for.

Why: an archive is untrusted and may be large (it holds process memory), so
it is read as a stream, once, member by member — plain, gzip or zstd
(Podman's default export) — and every member is checked before a byte of it
is used: its name must be plain (no absolute path, no ``..``), each name may
appear once, and only regular files and directories are accepted (a link, a
device or a FIFO refuses the whole archive). Metadata goes to memory, with a
size cap. CRIU's images are written, only when asked (``images_to``), into a
fresh directory with ``O_EXCL|O_NOFOLLOW`` and mode 0600; the root filesystem
diff likewise (``diff_to``). ``inspect`` asks for neither: it sums the
memory pages from the members' sizes and decodes the process tree from the
small images it holds in memory. A truncated, non-tar or otherwise broken
archive becomes one :class:`~podhop.archive.layout.ArchiveError` naming the
problem; the caller removes what was written (it passes directories of its own).
"""

from __future__ import annotations

import gzip
import os
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from podhop.archive import layout
from podhop.archive.layout import ArchiveError, ArchiveSpec, ConfigDump
from podhop.runtime import criu

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20
#: Small CRIU images kept in memory for ``inspect`` (the process tree).
_TREE_IMAGES = ("pstree.img", "core-")
_TYPES = {
    tarfile.SYMTYPE: "symbolic link",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}


@dataclass
class Contents:
    """What an archive holds, as far as podhop takes it."""

    path: Path
    size_bytes: int
    compression: str
    config: ConfigDump
    spec: ArchiveSpec
    deleted: list[str]
    stats: dict[str, int]
    processes: list[criu.Process]
    pages_bytes: int
    images_bytes: int
    rootfs_diff_bytes: int
    has_rootfs_diff: bool
    images_dir: Path | None = None
    extracted: dict[str, Path] = field(default_factory=dict)  # replayed members, as written to disk
    ignored: list[str] = field(default_factory=list)

    @property
    def rootfs_diff(self) -> Path | None:
        return self.extracted.get(layout.ROOTFS_DIFF)


@contextmanager
def _stream(path: Path) -> Iterator[tuple[IO[bytes], str]]:
    """The archive's tar stream, decompressed (``none``, ``gzip`` or ``zstd``)."""
    try:
        fh = path.open("rb")
    except FileNotFoundError as exc:
        raise ArchiveError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ArchiveError(f"{path}: is a directory, not a checkpoint archive") from exc
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot read: {exc.strerror}") from exc
    with fh:
        magic = fh.read(4)
        fh.seek(0)
        if magic == ZSTD_MAGIC:
            reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
            with reader:
                yield reader, "zstd"
        elif magic[:2] == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=fh) as gz:
                yield cast(IO[bytes], gz), "gzip"
        else:
            yield fh, "none"


def _member_name(member: tarfile.TarInfo) -> str:
    raw = member.name
    name = raw[2:] if raw.startswith("./") else raw
    name = name.rstrip("/")
    if not name or name.startswith("/") or "\x00" in name or ".." in name.split("/"):
        raise ArchiveError(f"member {raw[:100]!r} has an unsafe name (absolute, '..' or empty)")
    return name


def _copy(src: IO[bytes], dest: Path, limit: int | None = None) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(dest, flags, 0o600)
    total = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(CHUNK):
            total += len(chunk)
            if limit is not None and total > limit:
                raise ArchiveError(f"{dest.name} is larger than {limit} bytes")
            out.write(chunk)
    return total


def _read_small(src: IO[bytes], name: str) -> bytes:
    data = src.read(layout.METADATA_MAX + 1)
    if len(data) > layout.METADATA_MAX:
        raise ArchiveError(f"{name} is larger than {layout.METADATA_MAX >> 20} MiB")
    return data


def read(archive: Path, *, images_to: Path | None = None, extract_to: Path | None = None) -> Contents:
    """Read and check ``archive``; write CRIU's images into ``images_to`` and the tar members podhop
    replays (:data:`~podhop.archive.layout.REPLAYED`: the root filesystem diff, ``/dev/shm``'s
    contents) into the directory ``extract_to`` when given (neither may exist yet)."""
    for d in (images_to, extract_to):
        if d is not None:
            d.mkdir(mode=0o700)
    extracted: dict[str, Path] = {}
    small: dict[str, bytes] = {}
    tree: dict[str, bytes] = {}
    seen: set[str] = set()
    ignored: list[str] = []
    pages = images = diff_bytes = 0
    has_diff = False
    size = archive.stat().st_size if archive.exists() else 0
    try:
        with _stream(archive) as (stream, compression), tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = _member_name(member)
                if name in seen:
                    raise ArchiveError(f"member {name!r} appears twice")
                seen.add(name)
                if member.isdir():
                    continue
                if not member.isreg():
                    kind = _TYPES.get(member.type, f"member of type {member.type!r}")
                    raise ArchiveError(
                        f"member {name!r} is a {kind}: only files and directories are accepted"
                    )
                src = tar.extractfile(member)
                assert src is not None  # a regular file
                top, _, rest = name.partition("/")
                if top == layout.CHECKPOINT_DIR and rest:
                    if "/" in rest or not layout.image_member(rest):
                        raise ArchiveError(f"member {name!r} is not a CRIU image name")
                    images += member.size
                    if rest.startswith("pages-"):
                        pages += member.size
                    if images_to is not None:
                        _copy(src, images_to / rest)
                    elif rest.startswith(_TREE_IMAGES):
                        tree[rest] = _read_small(src, name)
                elif name in layout.METADATA:
                    small[name] = _read_small(src, name)
                elif name in layout.REPLAYED:
                    if name == layout.ROOTFS_DIFF:
                        has_diff, diff_bytes = True, member.size
                    if extract_to is not None:
                        _copy(src, extract_to / name)
                        extracted[name] = extract_to / name
                else:
                    ignored.append(name)
    except ArchiveError as exc:
        raise ArchiveError(f"{archive}: {exc}") from exc
    except (tarfile.TarError, EOFError, zstandard.ZstdError, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"{archive}: not a readable tar archive ({_why(exc)})") from exc
    except OSError as exc:
        raise ArchiveError(f"{archive}: cannot be read: {exc.strerror or exc}") from exc
    contents = _contents(
        archive, size, compression, small, tree, images_to, pages, images, diff_bytes, has_diff, ignored
    )
    contents.extracted = extracted
    return contents


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "unexpected end" in text or isinstance(exc, EOFError):
        return "truncated"
    return text


def _contents(
    archive: Path,
    size: int,
    compression: str,
    small: dict[str, bytes],
    tree: dict[str, bytes],
    images_to: Path | None,
    pages: int,
    images: int,
    diff_bytes: int,
    has_diff: bool,
    ignored: list[str],
) -> Contents:
    missing = [n for n in (layout.CONFIG_DUMP, layout.SPEC_DUMP) if n not in small]
    if missing:
        raise ArchiveError(f"{archive}: not a container checkpoint archive (no {'/'.join(missing)})")
    try:
        config = layout.parse_model(ConfigDump, layout.CONFIG_DUMP, small[layout.CONFIG_DUMP])
        spec = layout.parse_model(ArchiveSpec, layout.SPEC_DUMP, small[layout.SPEC_DUMP])
        deleted = layout.parse_deleted(small.get(layout.DELETED_FILES, b""))
        processes = _processes(tree, images_to)
    except ArchiveError as exc:
        raise ArchiveError(f"{archive}: {exc}") from exc
    return Contents(
        path=archive,
        size_bytes=size,
        compression=compression,
        config=config,
        spec=spec,
        deleted=deleted,
        stats=criu.parse_stats(small.get(layout.STATS_DUMP, b"")),
        processes=processes,
        pages_bytes=pages,
        images_bytes=images,
        rootfs_diff_bytes=diff_bytes,
        has_rootfs_diff=has_diff,
        images_dir=images_to,
        ignored=ignored,
    )


def _processes(tree: dict[str, bytes], images_to: Path | None) -> list[criu.Process]:
    def image(name: str) -> bytes | None:
        if images_to is not None:
            path = images_to / name
            return path.read_bytes() if path.exists() else None
        return tree.get(name)

    pstree = image("pstree.img")
    if pstree is None:
        return []
    try:
        return criu.process_tree_of(pstree, lambda pid: image(f"core-{pid}.img"))
    except (ValueError, IndexError) as exc:
        raise ArchiveError(f"checkpoint/pstree.img is corrupt: {exc}") from exc


def require_images(contents: Contents) -> None:
    """A restorable archive has CRIU's inventory and process tree."""
    assert contents.images_dir is not None
    for name in ("inventory.img", "pstree.img"):
        if not (contents.images_dir / name).is_file():
            raise ArchiveError(f"{contents.path}: no checkpoint/{name}: not a complete CRIU checkpoint")


def summary(contents: Contents) -> dict[str, Any]:
    """``inspect``'s JSON document."""
    meta = contents.config.podhop
    return {
        "archive": str(contents.path),
        "size_bytes": contents.size_bytes,
        "compression": contents.compression,
        "container": contents.config.name,
        "id": contents.config.id,
        "image": contents.config.rootfs_image_name,
        "runtime": contents.config.runtime,
        "created": contents.config.created_time,
        "checkpointed": contents.config.checkpointed_time,
        "pod": meta.pod if meta else None,
        "namespace": meta.namespace if meta else None,
        "command": contents.spec.process.args,
        "processes": [{"pid": p.pid, "ppid": p.ppid, "comm": p.comm} for p in contents.processes],
        "memory_pages_bytes": contents.pages_bytes,
        "checkpoint_bytes": contents.images_bytes,
        "rootfs_diff_bytes": contents.rootfs_diff_bytes,
        "deleted_files": contents.deleted,
        "criu_stats": contents.stats,
        "ignored_members": contents.ignored,
    }
