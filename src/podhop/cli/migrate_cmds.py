"""``podhop migrate``: move a running pod to another node with CRIU."""

from __future__ import annotations

import json
from typing import Any

import click

from podhop.cli.common import cluster_option, console, get_cluster, handle_errors, print_table, require_root
from podhop.migrate.plan import Strategy


def print_report(report: dict[str, Any]) -> None:
    """A migration report as a short human-readable summary."""
    click.echo(
        f"pod {report['pod']} migrated {report['source_node']} -> {report['target_node']} "
        f"({report['strategy']}), {report['old_ip']} -> {report['new_ip']}"
    )
    print_table(["PHASE", "MS"], [[k, f"{v:.1f}"] for k, v in report["phases"].items()])
    down = report["downtime_ms"]
    probe = report.get("probe") or {}
    click.echo(
        f"total {report['total_ms']:.0f} ms; downtime (probe) "
        f"{'n/a' if down is None else f'{down:.0f} ms'}; failed probes {probe.get('failed', 'n/a')}"
    )
    click.echo(
        f"transferred {report['bytes_transferred'] / 2**20:.2f} MiB; images {report['image_bytes'] / 2**20:.2f} MiB"
    )
    freed = report.get("resources_freed")
    if freed:
        click.echo(
            f"freed on {freed['node']}: {freed['cpu_m_freed']}m CPU, "
            f"{freed['memory_b_freed'] / 2**20:.1f} MiB memory"
        )


@click.command("migrate")
@click.argument("pod")
@click.option("--to", "target", required=True, help="Target node.")
@click.option("--strategy", type=click.Choice([s.value for s in Strategy]), default="cold", show_default=True)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option(
    "--timeout", default=120.0, show_default=True, help="Give up (and roll back) after this many seconds."
)
@click.option("--no-probe", is_flag=True, help="Do not measure downtime with a probe.")
@cluster_option
@handle_errors
def migrate_cmd(
    pod: str,
    target: str,
    strategy: str,
    namespace: str,
    output: str,
    timeout: float,
    no_probe: bool,
    cluster_name: str | None,
) -> None:
    """Live-migrate POD to another node; on any failure the source keeps serving."""
    from podhop.migrate.engine import Options, migrate

    require_root()
    cluster = get_cluster(cluster_name)
    opts = Options(timeout_s=timeout, probe=not no_probe)
    if output == "json":
        report = migrate(cluster, pod, target, strategy, namespace, opts)
        click.echo(json.dumps(report, indent=2))
        return
    with console.status(f"migrating {pod} to {target} ({strategy})") as status:
        opts.on_phase = lambda phase, _m: status.update(f"migrating {pod} to {target} ({strategy}): {phase}")
        report = migrate(cluster, pod, target, strategy, namespace, opts)
    print_report(report)


COMMANDS = [migrate_cmd]
