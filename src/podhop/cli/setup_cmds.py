"""``podhop setup``, ``podhop doctor`` and ``podhop demo``."""

from __future__ import annotations

import sys
import time

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
@handle_errors
def doctor_cmd() -> None:
    """Preflight checks: can clusters run here, and can pods migrate?"""
    from podhop.doctor import cluster_possible, migration_possible, run_checks

    checks = run_checks()
    rows = []
    for c in checks:
        mark = "ok" if c.ok else ("FAIL" if c.needed_for != "info" else "warn")
        rows.append([mark, c.name, c.detail, "" if c.ok else (c.fix or "")])
    print_table(["", "CHECK", "DETAIL", "FIX"], rows)
    can_cluster, can_migrate = cluster_possible(checks), migration_possible(checks)
    click.echo(f"\nclusters: {'yes' if can_cluster else 'no'}; migration: {'yes' if can_migrate else 'no'}")
    kube = all(c.ok for c in checks if c.needed_for == "kubernetes")
    click.echo(f"--kind kubernetes: {'yes' if kube else 'no (see the k8s lines)'}")
    if not (can_cluster and can_migrate):
        sys.exit(1)


COMMANDS = [setup_cmd, doctor_cmd]
