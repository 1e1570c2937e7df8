"""Fixtures for integration tests: a real local cluster per test, always torn down.

These tests need root, runc, iptables and the base images (``podhop setup``).
They skip, saying exactly what is missing, only where the machine truly lacks
a capability; in CI (root, after ``make setup``) they all run. Each test gets
a fresh cluster with a unique name (kr8s's namespace-per-test idea), and
teardown fails the test if the cluster left anything behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhop.backends.local.cluster import LocalCluster, create_cluster, delete_cluster, residue
from podhop.store import Store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _missing_capability() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts, runc)"
    for tool in ("runc", "iptables", "ip", "tc"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            return f"needs `{tool}` (run `podhop setup`)"
    from podhop.runtime.images import list_images

    names = {i.name for i in list_images()}
    if not {"nginx", "redis"} <= names:
        return "needs the base images nginx and redis (run `podhop setup`)"
    return None


@pytest.fixture(scope="session")
def capable() -> None:
    reason = _missing_capability()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store()
    yield s
    s.close()


def new_name() -> str:
    """A fresh cluster name; ``PODHOP_TEST_PREFIX`` tells one engineer's test clusters from another's."""
    return f"{os.environ.get('PODHOP_TEST_PREFIX', 'it')}-{secrets.token_hex(3)}"


@pytest.fixture
def make_cluster(capable: None, store: Store) -> Iterator[object]:
    """Factory for clusters that are deleted (and checked for residue) after the test."""
    made: list[LocalCluster] = []

    def make(
        nodes: int = 3, cpu_m: int = 1000, memory_b: int = 1 << 30, bandwidth: int | None = None
    ) -> LocalCluster:
        c = create_cluster(store, new_name(), nodes, cpu_m, memory_b, bandwidth)
        made.append(c)
        return c

    yield make
    for c in made:
        if store.cluster(c.name) is not None:
            left = delete_cluster(store, c.name)
            assert left == [], f"cluster {c.name} left residue: {left}"
        assert residue(c.name, c.record.idx) == []


@pytest.fixture
def cluster(make_cluster: object) -> LocalCluster:
    c: LocalCluster = make_cluster()  # type: ignore[operator]
    return c
