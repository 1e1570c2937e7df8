"""``podhop setup``, ``podhop doctor`` and ``podhop demo``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from podhop.cli.common import console, handle_errors, print_table, progress, require_root


@click.command("setup")
@click.option("--no-images", is_flag=True, help="Skip building the base container images.")
@click.option("--no-kubernetes", is_flag=True, help="Skip building the Kubernetes kind's components.")
@handle_errors
def setup_cmd(no_images: bool, no_kubernetes: bool) -> None:
    """Install what the local backend needs and build the base images (idempotent)."""
    from podhop.setup.host import setup_all

    require_root()
    start = time.monotonic()
    with progress("setting up") as report:
        setup_all(report, images=not no_images, kubernetes=not no_kubernetes)
    console.print(f"setup complete in {time.monotonic() - start:.1f} s")


@click.command("doctor")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Check this Kubernetes cluster (EKS, any) for migration instead of this machine.",
)
@click.option("--context", default=None, help="The kubeconfig's context (default: its current one).")
@click.option(
    "--namespace",
    default="default",
    show_default=True,
    help="Where the throwaway pods that are checkpointed go (with --kubeconfig).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(5),
    default=120.0,
    show_default=True,
    help="Seconds for a throwaway pod to run and be checkpointed (with --kubeconfig).",
)
@handle_errors
def doctor_cmd(kubeconfig: Path | None, context: str | None, namespace: str, timeout: float) -> None:
    """Preflight checks: can clusters run here, and can pods migrate? With --kubeconfig: on that cluster."""
    if kubeconfig is None:
        if context is not None:
            raise click.UsageError("--context needs --kubeconfig")
        _local_doctor()
        return
    from podhop.backends.kubernetes.doctor import run_checks
    from podhop.errors import NotFoundError

    if not kubeconfig.is_file():
        raise NotFoundError(f"kubeconfig {kubeconfig}: no such file")
    with progress("checking the cluster") as report:
        checks = run_checks(kubeconfig, context, namespace=namespace, timeout=timeout, progress=report)
    _print_checks(checks)
    failed = [c.name for c in checks if not c.ok]
    click.echo(f"\nmigration on this cluster: {'no (' + ', '.join(failed) + ')' if failed else 'yes'}")
    if failed:
        sys.exit(1)


def _print_checks(checks: list[Any]) -> None:
    rows = []
    for c in checks:
        mark = "ok" if c.ok else ("FAIL" if c.needed_for != "info" else "warn")
        rows.append([mark, c.name, c.detail, "" if c.ok else (c.fix or "")])
    print_table(["", "CHECK", "DETAIL", "FIX"], rows)


def _local_doctor() -> None:
    from podhop.doctor import cluster_possible, migration_possible, run_checks

    checks = run_checks()
    _print_checks(checks)
    can_cluster, can_migrate = cluster_possible(checks), migration_possible(checks)
    click.echo(f"\nclusters: {'yes' if can_cluster else 'no'}; migration: {'yes' if can_migrate else 'no'}")
    kube = all(c.ok for c in checks if c.needed_for == "kubernetes")
    click.echo(f"--kind kubernetes: {'yes' if kube else 'no (see the k8s lines)'}")
    if not (can_cluster and can_migrate):
        sys.exit(1)


COMMANDS = [setup_cmd, doctor_cmd]
