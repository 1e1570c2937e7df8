"""Policies and the simulator are pure: they never import a backend, the runtime, the network or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import podhop

ROOT = Path(podhop.__file__).resolve().parent
FORBIDDEN = (
    "podhop.backends",
    "podhop.runtime",
    "podhop.net",
    "podhop.cli",
    "podhop.migrate",
    "podhop.store",
)
PURE = sorted([*(ROOT / "policies").rglob("*.py"), *(ROOT / "sim").rglob("*.py")])


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_there_are_modules_to_check() -> None:
    assert len(PURE) >= 15


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_modules_import_no_backend(path: Path) -> None:
    bad = sorted(
        m for m in imported_modules(path) if m.startswith(FORBIDDEN) or m in ("podhop", "podhop.cli")
    )
    assert not bad, f"{path.name} imports {bad}"
