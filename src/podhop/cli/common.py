"""What every command shares: the console, error handling, opening the cluster, progress.

Why: commands should read as "parse options, call the library, print". Turning
a :class:`~podhop.errors.PodhopError` into one red line plus a hint and exit
status 1, finding the cluster from ``--cluster``/``PODHOP_CLUSTER``, and
showing progress for long steps live here once.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console

from podhop.backends.local.cluster import LocalCluster, open_cluster
from podhop.errors import PodhopError, PreflightError
from podhop.store import Store

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Print podhop errors as one line (plus hint) and exit 1; ``--debug`` shows the chain."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PodhopError as exc:
            if os.environ.get("PODHOP_DEBUG"):
                err_console.print_exception()
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            if exc.hint:
                err_console.print(f"[yellow]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)
            sys.exit(1)
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def require_root() -> None:
    if os.geteuid() != 0:
        raise PreflightError(
            "podhop needs root to create namespaces, mounts and containers",
            hint="run it with sudo, or as root",
        )


def cluster_option(func: F) -> F:
    return click.option(
        "--cluster",
        "cluster_name",
        envvar="PODHOP_CLUSTER",
        default=None,
        help="Cluster to act on (default: $PODHOP_CLUSTER, or the only one).",
    )(func)


def get_cluster(name: str | None) -> LocalCluster:
    return open_cluster(Store(), name)


@contextmanager
def progress(title: str) -> Iterator[Callable[[str], None]]:
    """A spinner with a changing status line; yields the ``report`` callback."""
    if not console.is_terminal:
        yield lambda msg: err_console.print(f"  {msg}", highlight=False)
        return
    with console.status(title) as status:
        yield lambda msg: status.update(f"{title}: {msg}")


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """kubectl-style plain columns (no borders, never wrapped, pipe-friendly)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        click.echo("   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
