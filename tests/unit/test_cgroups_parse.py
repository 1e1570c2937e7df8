"""cgroup accounting against fake cgroup trees (v1 hybrid and v2), no real cgroups touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from podhop.runtime import cgroups
from podhop.runtime.cgroups import Usage, _kv, relpath, usage

REL = "podhop/demo/node-1"
GI = 2**30
MI = 2**20


# _kv


def test_kv_parses_key_value_lines() -> None:
    text = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 0\n"
    assert _kv(text) == {"usage_usec": 123456, "user_usec": 100000, "system_usec": 23456, "nr_periods": 0}


def test_kv_skips_malformed_lines() -> None:
    text = "\n".join([
        "cache 4096",
        "",
        "nokey",
        "three parts here",
        "float 1.5",
        "word abc",
        "hex 0x10",
        "  spaced    8192  ",
        "neg -5",
        "big 18446744073709551615",
    ])
    assert _kv(text) == {"cache": 4096, "spaced": 8192, "neg": -5, "big": 18446744073709551615}


def test_kv_of_empty_text() -> None:
    assert _kv("") == {}


def test_kv_last_duplicate_wins() -> None:
    assert _kv("a 1\na 2\n") == {"a": 2}


# relpath


def test_relpath() -> None:
    assert relpath("demo") == "podhop/demo"
    assert relpath("demo", "node-1") == "podhop/demo/node-1"
    assert relpath("demo", "node-1", "abc123") == "podhop/demo/node-1/abc123"


def test_relpath_is_relative_and_nested() -> None:
    cluster, node, pod = relpath("a"), relpath("a", "node-1"), relpath("a", "node-1", "abc123")
    for p in (cluster, node, pod):
        assert not p.startswith("/")
        assert "//" not in p
    assert node.startswith(cluster + "/")
    assert pod.startswith(node + "/")
    # clusters whose names share a prefix stay apart
    assert not relpath("a-b").startswith(relpath("a") + "/")


# usage() on fake trees


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _v1_tree(root: Path, rel: str, *, cpu_ns: int, usage_b: int, stat: str) -> None:
    _write(root / "cpuacct" / rel / "cpuacct.usage", f"{cpu_ns}\n")
    _write(root / "memory" / rel / "memory.usage_in_bytes", f"{usage_b}\n")
    _write(root / "memory" / rel / "memory.stat", stat)
    (root / "cpu" / rel).mkdir(parents=True, exist_ok=True)


def _v2_tree(root: Path, rel: str, *, usage_usec: int, current: int, stat: str) -> None:
    _write(root / "cgroup.controllers", "cpuset cpu io memory pids\n")
    d = root / rel
    _write(d / "cpu.stat", f"usage_usec {usage_usec}\nuser_usec {usage_usec - 1}\nsystem_usec 1\n")
    _write(d / "memory.current", f"{current}\n")
    _write(d / "memory.stat", stat)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake = tmp_path / "cgroup"
    fake.mkdir()
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", fake)
    return fake


def test_v1_usage(root: Path) -> None:
    stat = (
        "cache 100\nrss 200\ninactive_file 7\nactive_file 9\n"
        f"total_cache {300 * MI}\ntotal_rss {GI}\n"
        f"total_inactive_file {256 * MI}\ntotal_active_file {44 * MI}\n"
    )
    _v1_tree(root, REL, cpu_ns=5_000_000_000, usage_b=GI + 300 * MI, stat=stat)
    assert not cgroups.is_v2()
    # the subtree's usage minus the subtree's inactive file cache (total_*, not this level's own)
    assert usage(REL) == Usage(cpu_ns=5_000_000_000, memory_working_set_b=GI + 44 * MI)


def test_v1_usage_without_hierarchical_stats(root: Path) -> None:
    _v1_tree(root, REL, cpu_ns=42, usage_b=10 * MI, stat=f"cache {4 * MI}\ninactive_file {3 * MI}\n")
    assert usage(REL) == Usage(cpu_ns=42, memory_working_set_b=7 * MI)


def test_v1_working_set_never_negative(root: Path) -> None:
    _v1_tree(root, REL, cpu_ns=1, usage_b=MI, stat=f"total_inactive_file {2 * MI}\n")
    result = usage(REL)
    assert result is not None
    assert result.memory_working_set_b == 0


def test_v1_missing_cgroup_is_none(root: Path) -> None:
    _v1_tree(root, REL, cpu_ns=1, usage_b=MI, stat="")
    assert usage("podhop/demo/node-2") is None


def test_v1_partial_cgroup_is_none(root: Path) -> None:
    # a cgroup half made or half removed: cpuacct exists, memory does not
    _write(root / "cpuacct" / REL / "cpuacct.usage", "1\n")
    assert usage(REL) is None


def test_v2_usage(root: Path) -> None:
    stat = f"anon {GI}\nfile {300 * MI}\nactive_file {44 * MI}\ninactive_file {256 * MI}\n"
    _v2_tree(root, REL, usage_usec=5_000_000, current=GI + 300 * MI, stat=stat)
    assert cgroups.is_v2()
    # cpu.stat counts microseconds; Usage is in nanoseconds
    assert usage(REL) == Usage(cpu_ns=5_000_000_000, memory_working_set_b=GI + 44 * MI)


def test_v2_working_set_never_negative(root: Path) -> None:
    _v2_tree(root, REL, usage_usec=10, current=MI, stat=f"inactive_file {5 * MI}\n")
    assert usage(REL) == Usage(cpu_ns=10_000, memory_working_set_b=0)


def test_v2_without_inactive_file(root: Path) -> None:
    _v2_tree(root, REL, usage_usec=10, current=3 * MI, stat="anon 0\n")
    assert usage(REL) == Usage(cpu_ns=10_000, memory_working_set_b=3 * MI)


def test_v2_missing_cgroup_is_none(root: Path) -> None:
    _v2_tree(root, REL, usage_usec=1, current=1, stat="")
    assert usage("podhop/demo/node-2") is None


def test_v2_garbage_is_none(root: Path) -> None:
    _v2_tree(root, REL, usage_usec=1, current=1, stat="")
    (root / REL / "memory.current").write_text("max\n")
    assert usage(REL) is None


def test_v2_pod_level_usage(root: Path) -> None:
    pod = relpath("demo", "node-1", "abc123")
    _v2_tree(root, REL, usage_usec=9_000, current=9 * MI, stat="inactive_file 0\n")
    _v2_tree(root, pod, usage_usec=1_000, current=2 * MI, stat=f"inactive_file {MI}\n")
    assert usage(pod) == Usage(cpu_ns=1_000_000, memory_working_set_b=MI)
    assert usage(REL) == Usage(cpu_ns=9_000_000, memory_working_set_b=9 * MI)
