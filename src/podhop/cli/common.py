"""What every command shares: the console, error handling, opening the cluster, progress.

Why: commands should read as "parse options, call the library, print". Turning
a :class:`~podhop.errors.PodhopError` into one red line plus a hint and exit
status 1, finding the cluster from ``--cluster``/``PODHOP_CLUSTER``, and
showing progress for long steps live here once.

Start-up: every command module imports this one, so it imports only click,
rich's console and podhop's errors; the store and the cluster backend are
imported when a command asks for them (see ``tests/unit/test_cli_imports.py``).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from rich.console import Console

from podhop.errors import PodhopError, PreflightError

if TYPE_CHECKING:
    from podhop.backends.base import Backend
    from podhop.backends.local.cluster import LocalCluster
    from podhop.store import Store

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    """One red line (plus a hint) on stderr, then exit; ``--debug`` shows the traceback first."""
    if os.environ.get("PODHOP_DEBUG") and sys.exc_info()[0] is not None:
        err_console.print_exception()
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[yellow]hint:[/] {hint}", highlight=False, soft_wrap=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turn every failure into one line and a non-zero exit: podhop's own errors (exit 1, with their
    hint), the operating system's (a missing file, no permission: exit 1), and bugs (exit 70, saying
    so); ``--debug`` shows the traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PodhopError as exc:
            fail(str(exc), exc.hint)
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            sys.exit(130)
        except PermissionError as exc:
            hint = "podhop needs root for this: run it with sudo" if os.geteuid() != 0 else None
            fail(_os_error(exc), hint)
        except OSError as exc:
            fail(_os_error(exc))
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:
            fail(
                f"internal error: {type(exc).__name__}: {exc}",
                "this is a bug in podhop; rerun with --debug for the traceback and report it",
                code=70,
            )

    return wrapper  # type: ignore[return-value]


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def require_root() -> None:
    if os.geteuid() != 0:
        raise PreflightError(
            "podhop needs root to create namespaces, mounts and containers",
            hint="run it with sudo, or as root",
        )


@dataclass(frozen=True)
class Target:
    """The cluster a command acts on: ``--cluster NAME`` (either kind) or ``--kubeconfig PATH``."""

    cluster: str | None = None
    kubeconfig: Path | None = None
    context: str | None = None

    def backend(self, *, mutating: bool = False) -> Backend:
        """Open it; ``mutating`` commands on the local kind need root (namespaces, mounts, runc)."""
        from podhop.backends.select import open_backend

        backend = open_backend(store(), self.cluster, kubeconfig=self.kubeconfig, context=self.context)
        if mutating and backend.kind == "local":
            require_root()
        return backend


def kubeconfig_options(func: F, help: str, envvar: str | None = None) -> F:
    """``--kubeconfig PATH`` (``help``) and ``--context C`` on ``func``."""
    func = click.option(
        "--context", default=None, help="The kubeconfig's context to use (default: its current one)."
    )(func)
    return click.option(
        "--kubeconfig",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar=envvar,
        default=None,
        help=help,
    )(func)


def cluster_option(func: F) -> F:
    """``--cluster``, ``--kubeconfig`` and ``--context``, handed to the command as ``target``."""

    @functools.wraps(func)
    def wrapper(
        *args: Any, cluster_name: str | None, kubeconfig: Path | None, context: str | None, **kw: Any
    ) -> Any:
        if kubeconfig is not None and cluster_name is not None:
            raise click.UsageError("give --cluster or --kubeconfig, not both")
        if context is not None and kubeconfig is None:
            raise click.UsageError("--context needs --kubeconfig")
        return func(*args, target=Target(cluster_name, kubeconfig, context), **kw)

    wrapper = kubeconfig_options(
        wrapper,
        "Act on the Kubernetes cluster of this kubeconfig (any cluster, EKS included; "
        "default as `kubectl podhop`: kubectl's).",
        envvar="PODHOP_KUBECONFIG",
    )
    wrapper = click.option(
        "--cluster",
        "cluster_name",
        envvar="PODHOP_CLUSTER",
        default=None,
        help="podhop cluster to act on, of either kind (default: $PODHOP_CLUSTER, or the only one).",
    )(wrapper)
    return wrapper  # type: ignore[return-value]


def namespace_options(func: F) -> F:
    """``-n/--namespace`` and ``-A/--all-namespaces``, handed on as ``namespace`` (None: all)."""

    @functools.wraps(func)
    def wrapper(*args: Any, namespace: str, all_namespaces: bool, **kw: Any) -> Any:
        return func(*args, namespace=None if all_namespaces else namespace, **kw)

    wrapper = click.option("-A", "--all-namespaces", is_flag=True, help="Across every namespace.")(wrapper)
    wrapper = click.option("-n", "--namespace", default="default", show_default=True)(wrapper)
    return wrapper  # type: ignore[return-value]


def lock_waiting(message: str, waited: float) -> None:
    """Say whom a command waits for (now, then every 5 s), so that a blocked command never looks frozen."""
    if waited < 1.5 or int(waited) % 5 == 0:
        err_console.print(f"[yellow]{message}[/]", highlight=False, soft_wrap=True)


def store() -> Store:
    """The state store, reporting waits for a cluster's lock on stderr."""
    from podhop.store import Store

    return Store(on_lock_wait=lock_waiting)


def get_cluster(name: str | None) -> LocalCluster:
    """A local-kind cluster (for what only the local kind has: its records, runc)."""
    from podhop.backends.local.cluster import open_cluster

    return open_cluster(store(), name)


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
