"""Confined file operations: nothing resolves outside the root, no link is ever followed."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from podhop.runtime import safefs
from podhop.runtime.safefs import UnsafePathError


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "etc").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("host secret\n")
    return root, outside


@pytest.mark.parametrize("bad", ["", ".", "/", "a/../b", "../x", "a/..", "x\x00y", "a" * 5000])
def test_components_refuse_what_could_leave(bad: str) -> None:
    with pytest.raises(UnsafePathError):
        safefs.components(bad)


def test_components_make_absolute_paths_relative() -> None:
    assert safefs.components("/etc//hosts") == ("etc", "hosts")
    assert safefs.components("./var/./run/x") == ("var", "run", "x")


def test_write_replaces_a_link_instead_of_writing_through_it(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "etc" / "hosts").symlink_to(outside / "secret")
    with safefs.open_root(root) as fd:
        safefs.write_file(fd, "/etc/hosts", io.BytesIO(b"pod's hosts\n"))
    assert (outside / "secret").read_text() == "host secret\n"
    assert not (root / "etc" / "hosts").is_symlink()
    assert (root / "etc" / "hosts").read_text() == "pod's hosts\n"


def test_a_link_on_the_way_is_refused(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "var").symlink_to(outside)  # absolute link to outside
    (root / "rel").symlink_to("../outside")  # relative link climbing out
    with safefs.open_root(root) as fd:
        for path in ("var/new", "rel/new", "var/secret"):
            with pytest.raises(UnsafePathError):
                safefs.write_file(fd, path, io.BytesIO(b"x"))
        with pytest.raises(UnsafePathError):
            safefs.remove(fd, "var/secret")
        with pytest.raises(UnsafePathError):
            safefs.make_dir(fd, "rel/dir")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


def test_remove_deletes_inside_only(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "etc" / "gone").mkdir()
    (root / "etc" / "gone" / "f").write_text("x")
    (root / "link").symlink_to(outside / "secret")
    with safefs.open_root(root) as fd:
        assert safefs.remove(fd, "/etc/gone")
        assert safefs.remove(fd, "link")  # the link, not its target
        assert not safefs.remove(fd, "etc/never")
        assert not safefs.remove(fd, "nowhere/deep/x")
    assert not (root / "etc" / "gone").exists() and not (root / "link").is_symlink()
    assert (outside / "secret").read_text() == "host secret\n"


def test_setid_bits_are_dropped(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with safefs.open_root(root) as fd:
        safefs.write_file(fd, "bin/su", io.BytesIO(b"\x7fELF"), mode=0o4755)
        safefs.make_dir(fd, "shared", mode=0o2775)
    assert stat.S_IMODE((root / "bin" / "su").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "shared").stat().st_mode) == 0o775


def test_symlinks_are_made_as_text_and_hardlinks_stay_inside(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "etc" / "passwd").write_text("root:x:0:0\n")
    with safefs.open_root(root) as fd:
        safefs.make_symlink(fd, "etc/evil", str(outside / "secret"))
        safefs.make_hardlink(fd, "etc/passwd2", "etc/passwd")
        with pytest.raises(UnsafePathError):
            safefs.make_hardlink(fd, "etc/steal", "etc/evil/x")
    assert os.readlink(root / "etc" / "evil") == str(outside / "secret")
    assert (root / "etc" / "passwd2").stat().st_ino == (root / "etc" / "passwd").stat().st_ino


def test_ensure_file_turns_a_link_into_a_plain_mount_point(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "etc" / "hosts").symlink_to(outside / "secret")
    with safefs.open_root(root) as fd:
        safefs.ensure_file(fd, "etc/hosts")
        safefs.ensure_file(fd, "etc/hostname")
    assert (root / "etc" / "hosts").is_file() and not (root / "etc" / "hosts").is_symlink()
    assert (root / "etc" / "hostname").read_text() == ""
    assert (outside / "secret").read_text() == "host secret\n"


def test_open_root_refuses_a_link(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "alias").symlink_to(outside)
    with pytest.raises(UnsafePathError), safefs.open_root(root / "alias"):
        pass
