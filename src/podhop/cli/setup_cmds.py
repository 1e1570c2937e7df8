"""``podhop setup``, ``podhop doctor`` and ``podhop demo``."""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path

import click

from podhop.cli.common import console, handle_errors, print_table, progress, require_root
from podhop.store import Store


@click.command("setup")
@click.option("--no-images", is_flag=True, help="Skip building the base container images.")
@handle_errors
def setup_cmd(no_images: bool) -> None:
    """Install what the local backend needs and build the base images (idempotent)."""
    from podhop.setup.host import setup_all

    require_root()
    start = time.monotonic()
    with progress("setting up") as report:
        setup_all(report, images=not no_images)
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
    if not (can_cluster and can_migrate):
        sys.exit(1)


@click.command("demo")
@click.option("--name", default="demo", show_default=True, help="Cluster to (re)use.")
@click.option("--keep/--no-keep", default=True, show_default=True, help="Keep the cluster afterwards.")
@handle_errors
def demo_cmd(name: str, keep: bool) -> None:
    """Create a 3-node cluster, deploy the seed's NGINX and call it through its service."""
    from podhop.backends.local.apply import apply
    from podhop.backends.local.cluster import create_cluster, delete_cluster, open_cluster
    from podhop.objects.quantity import parse_memory

    require_root()
    store = Store()
    example = Path(__file__).resolve().parents[3] / "examples" / "nginx.yaml"
    if not example.exists():
        example = Path("examples/nginx.yaml")
    with progress(f"cluster {name}") as report:
        if store.cluster(name) is None:
            create_cluster(store, name, 3, 1000, parse_memory("2Gi"), None, report)
        cluster = open_cluster(store, name)
        for line in apply(cluster, str(example), report=report):
            click.echo(line)
    from podhop.cli.object_cmds import get_cmd

    click.echo("")
    get_cmd.main(["pods", "-o", "wide", "--cluster", name], standalone_mode=False)
    click.echo("")
    get_cmd.main(["services", "--cluster", name], standalone_mode=False)
    svc = next(s for s in cluster.store.services(cluster.name) if s.name == "nginx-service")
    for url in (f"http://{svc.cluster_ip}/", f"http://127.0.0.1:{svc.ports[0]['nodePort']}/"):
        with urllib.request.urlopen(url, timeout=5) as resp:
            click.echo(f"\nGET {url} -> HTTP {resp.status} ({len(resp.read())} bytes)")
    if not keep:
        delete_cluster(store, name)


COMMANDS = [setup_cmd, doctor_cmd, demo_cmd]
