"""The archive reader and the root filesystem replay, on synthetic archives (no CRIU needed)."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from podhop.archive import reader, rootfs
from podhop.archive.layout import ArchiveError
from podhop.archive.writer import Output


def _add(
    tar: tarfile.TarFile, name: str, body: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    info.size = len(body) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(body) if kind == tarfile.REGTYPE else None)


CONFIG = {
    "id": "abc",
    "name": "nginx",
    "rootfsImageName": "docker.io/library/nginx:latest",
    "runtime": "runc",
}
SPEC = {"process": {"args": ["nginx", "-g", "daemon off;"], "env": ["PATH=/bin"], "cwd": "/"}, "mounts": []}


def make(path: Path, extra: list[tuple[str, bytes, bytes, str]] | None = None, **over: object) -> Path:
    with tarfile.open(path, "w") as tar:
        _add(tar, "config.dump", json.dumps({**CONFIG, **over.get("config", {})}).encode())  # type: ignore[dict-item]
        _add(tar, "spec.dump", json.dumps(over.get("spec", SPEC)).encode())
        _add(tar, "deleted.files", b'["/usr/share/doc"]')
        _add(tar, "checkpoint", kind=tarfile.DIRTYPE)
        _add(tar, "checkpoint/inventory.img", b"\x00" * 16)
        _add(tar, "checkpoint/pages-1.img", b"\x00" * 8192)
        for name, body, kind, link in extra or []:
            _add(tar, name, body, kind, link)
    return path


def test_inspect_sums_pages_without_unpacking(tmp_path: Path) -> None:
    contents = reader.read(make(tmp_path / "a.tar"))
    assert contents.pages_bytes == 8192 and contents.images_dir is None
    assert contents.config.name == "nginx" and contents.deleted == ["/usr/share/doc"]
    assert reader.summary(contents)["command"] == ["nginx", "-g", "daemon off;"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar"]  # nothing written


def test_zstd_and_gzip_archives_read_alike(tmp_path: Path) -> None:
    plain = make(tmp_path / "a.tar").read_bytes()
    (tmp_path / "a.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(plain))
    import gzip

    (tmp_path / "a.tar.gz").write_bytes(gzip.compress(plain))
    for name, kind in (("a.tar.zst", "zstd"), ("a.tar.gz", "gzip")):
        c = reader.read(tmp_path / name)
        assert c.compression == kind and c.pages_bytes == 8192


def test_images_are_written_root_only_into_a_fresh_directory(tmp_path: Path) -> None:
    out = tmp_path / "images"
    reader.read(make(tmp_path / "a.tar"), images_to=out)
    assert sorted(p.name for p in out.iterdir()) == ["inventory.img", "pages-1.img"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "pages-1.img").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("../evil", b"x", tarfile.REGTYPE, ""), "unsafe name"),
        (("/etc/evil", b"x", tarfile.REGTYPE, ""), "unsafe name"),
        (("checkpoint/x.img", b"", tarfile.SYMTYPE, "/etc/shadow"), "symbolic link"),
        (("checkpoint/y.img", b"", tarfile.LNKTYPE, "config.dump"), "hard link"),
        (("checkpoint/z.img", b"", tarfile.CHRTYPE, ""), "character device"),
        (("checkpoint/sub/deep.img", b"x", tarfile.REGTYPE, ""), "not a CRIU image name"),
        (("config.dump", b"{}", tarfile.REGTYPE, ""), "appears twice"),
    ],
)
def test_hostile_members_refuse_the_archive(
    tmp_path: Path, extra: tuple[str, bytes, bytes, str], words: str
) -> None:
    with pytest.raises(ArchiveError, match=words):
        reader.read(make(tmp_path / "a.tar", [extra]), images_to=tmp_path / "images")


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"spec": {"process": {"args": [], "cwd": "/"}}}, "process.args"),
        ({"spec": {"process": {"args": ["x"], "cwd": "../up"}}}, "process.cwd"),
        ({"spec": {"process": {"args": ["x"], "env": ["NOEQUALS"]}}}, "process.env"),
        ({"spec": {"process": {"args": ["x\x00y"]}}}, "process.args"),
        ({"config": {"podhop": {"pod": "Bad_Name"}}}, "podhop.pod"),
    ],
)
def test_metadata_is_validated(tmp_path: Path, over: dict[str, object], words: str) -> None:
    with pytest.raises(ArchiveError, match=words):
        reader.read(make(tmp_path / "a.tar", **over))


@pytest.mark.parametrize("case", ["truncated", "garbage", "empty", "bad-zstd", "not-json"])
def test_broken_archives_raise_one_archive_error(tmp_path: Path, case: str) -> None:
    good = make(tmp_path / "good.tar").read_bytes()
    bad = tmp_path / "bad.tar"
    bad.write_bytes(
        {
            "truncated": good[: len(good) // 2],
            "garbage": b"hello world\n" * 200,
            "empty": b"",
            "bad-zstd": b"\x28\xb5\x2f\xfd" + os.urandom(512),
            "not-json": b"",
        }[case]
    )
    if case == "not-json":
        with tarfile.open(bad, "w") as tar:
            _add(tar, "config.dump", b"{not json")
            _add(tar, "spec.dump", b"{}")
    with pytest.raises(ArchiveError) as err:
        reader.read(bad, images_to=tmp_path / "images")
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def _diff(entries: list[tuple[str, bytes, bytes, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, body, kind, link in entries:
            _add(tar, name, body, kind, link)
    return buf.getvalue()


def test_diff_replay_stays_in_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "var").mkdir(parents=True)
    (root / "run").mkdir()
    (root / "var" / "run").symlink_to("/run")  # as in Debian: an absolute link in the image
    outside.mkdir()
    diff = tmp_path / "diff.tar"
    diff.write_bytes(
        _diff([("etc/motd", b"hello", tarfile.REGTYPE, ""), ("run/x.pid", b"1", tarfile.REGTYPE, "")])
    )
    done = rootfs.apply_diff(root, diff)
    assert done.entries == 2 and (root / "etc" / "motd").read_text() == "hello"
    for hostile, words in (
        ([("var/run/evil", b"x", tarfile.REGTYPE, "")], "not a directory"),
        ([("l", b"", tarfile.SYMTYPE, str(outside)), ("l/x", b"x", tarfile.REGTYPE, "")], "not a directory"),
        ([("../../x", b"x", tarfile.REGTYPE, "")], "climbs out"),
        ([("dev/sda", b"", tarfile.BLKTYPE, "")], "device node"),
    ):
        diff.write_bytes(_diff(hostile))
        with pytest.raises(ArchiveError, match=words):
            rootfs.apply_diff(root, diff)
    assert list(outside.iterdir()) == [] and not (tmp_path / "x").exists()


def test_deletions_stay_in_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "doc").mkdir(parents=True)
    outside.mkdir()
    (outside / "keep").write_text("k")
    assert rootfs.apply_deletions(root, ["/doc", "/never/there"]) == 1
    with pytest.raises(ArchiveError, match="climbs out"):
        rootfs.apply_deletions(root, [f"/../{outside.name}/keep"])
    assert (outside / "keep").exists()


def test_output_is_claimed_before_and_renamed_after(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="does not exist"):
        Output(tmp_path / "nope" / "x.tar")
    (tmp_path / "link.tar").symlink_to(tmp_path / "elsewhere.tar")
    with pytest.raises(ArchiveError, match="symbolic link"):
        Output(tmp_path / "link.tar")
    work = tmp_path / "work"
    (work / "checkpoint").mkdir(parents=True)
    (work / "config.dump").write_text("{}")
    out = Output(tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists() and out.tmp.exists()
    out.write(work)
    out.commit()
    assert stat.S_IMODE((tmp_path / "x.tar").stat().st_mode) == 0o600 and not out.tmp.exists()
    failed = Output(tmp_path / "x.tar")
    failed.discard()  # a failure leaves the earlier archive as it was
    assert (tmp_path / "x.tar").exists() and not failed.tmp.exists()
