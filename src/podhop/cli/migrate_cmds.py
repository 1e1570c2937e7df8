"""``podhop migrate``: move a running pod to another node with CRIU.

Also ``checkpoint``, ``inspect``, ``restore`` and ``rebalance``. The engine is
imported inside each command; ``inspect`` reads the archive with
:mod:`podhop.archive.reader` alone, so it starts without the migration path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from podhop.cli.common import Target, cluster_option, console, handle_errors, print_table
from podhop.migrate.plan import Strategy

if TYPE_CHECKING:
    from podhop.migrate.report import MigrationReport


def print_report(report: MigrationReport) -> None:
    """A migration report as a short human-readable summary."""
    renamed = f" (now pod {report.new_pod})" if report.new_pod else ""
    click.echo(
        f"pod {report.pod} migrated {report.source_node} -> {report.target_node} "
        f"({report.strategy}), {report.old_ip} -> {report.new_ip}{renamed}"
    )
    print_table(["PHASE", "MS"], [[k, f"{v:.1f}"] for k, v in report.phases.items()])
    down = report.downtime_ms
    failed = "n/a" if report.probe is None else str(report.probe.failed)
    click.echo(
        f"total {report.total_ms:.0f} ms; downtime (probe) "
        f"{'n/a' if down is None else f'{down:.0f} ms'}; failed probes {failed}"
    )
    click.echo(f"transferred {_mib(report.bytes_transferred)}; CRIU images {_mib(report.image_bytes)}")
    if len(report.moves) > 1:
        rows = [
            [c["container"], _mib(c["bytes_transferred"]), _mib(c["image_bytes"])]
            for c in report.to_dict()["containers"]
        ]
        print_table(["CONTAINER", "TRANSFERRED", "IMAGES"], rows)
    freed = report.resources_freed
    if freed:
        click.echo(
            f"freed on {freed.node}: {freed.cpu_m_freed}m CPU, {freed.memory_b_freed / 2**20:.1f} MiB memory"
        )
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


@click.command("migrate")
@click.argument("pod")
@click.option("--to", "node", required=True, help="Target node.")
@click.option("--strategy", type=click.Choice([s.value for s in Strategy]), default="cold", show_default=True)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=120.0,
    show_default=True,
    help="Give up (and roll back) after this many seconds.",
)
@click.option("--no-probe", is_flag=True, help="Do not measure downtime with a probe.")
@cluster_option
@handle_errors
def migrate_cmd(
    pod: str,
    node: str,
    strategy: str,
    namespace: str,
    output: str,
    timeout: float,
    no_probe: bool,
    target: Target,
) -> None:
    """Live-migrate POD to another node; on any failure the source keeps serving."""
    from podhop.migrate.engine import Options, migrate

    backend = target.backend(mutating=True)
    opts = Options(timeout_s=timeout, probe=not no_probe)
    if output == "json":
        report = migrate(backend, pod, node, strategy, namespace, opts)
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    with console.status(f"migrating {pod} to {node} ({strategy})") as status:
        opts.on_phase = lambda phase, _m: status.update(f"migrating {pod} to {node} ({strategy}): {phase}")
        report = migrate(backend, pod, node, strategy, namespace, opts)
    print_report(report)


@click.command("checkpoint")
@click.argument("pod")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Archive to write (default: checkpoint-POD_NS-CONTAINER-TIME.tar).",
)
@click.option("--leave-running", is_flag=True, help="Keep the pod running after the checkpoint.")
@click.option("-c", "--container", default=None)
@click.option("-n", "--namespace", default="default", show_default=True)
@cluster_option
@handle_errors
def checkpoint_cmd(
    pod: str,
    output: Path | None,
    leave_running: bool,
    container: str | None,
    namespace: str,
    target: Target,
) -> None:
    """Checkpoint a pod's container into an archive (Podman/CRI-O layout, mode 0600)."""
    backend = target.backend(mutating=True)
    with console.status(f"checkpointing {pod}"):
        path = backend.checkpoint(namespace, pod, container, output, leave_running)
    click.echo(
        f"checkpoint of {pod} written to {path} ({path.stat().st_size / 2**20:.1f} MiB)"
        + ("" if leave_running else "; the pod was stopped")
    )


@click.command("inspect")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def inspect_cmd(archive: Path, output: str) -> None:
    """Show what a checkpoint archive holds: processes, image, memory, CRIU statistics."""
    from podhop.archive import reader  # not podhop.migrate.archive: inspecting needs no engine

    info = reader.summary(reader.read(archive))
    if output == "json":
        click.echo(json.dumps(info, indent=2))
        return
    print_table(
        ["CONTAINER", "POD", "IMAGE", "ID", "RUNTIME", "CHECKPOINTED", "MEMORY", "CHKPT SIZE", "ROOTFS DIFF"],
        [
            [
                str(info["container"]),
                str(info["pod"]),
                str(info["image"]),
                str(info["id"]),
                str(info["runtime"]),
                str(info["checkpointed"]),
                _mib(info["memory_pages_bytes"]),
                _mib(info["checkpoint_bytes"]),
                _mib(info["rootfs_diff_bytes"]),
            ]
        ],
    )
    click.echo("\nprocess tree:")
    for proc in info["processes"]:
        click.echo(f"  pid {proc['pid']:<6} ppid {proc['ppid']:<6} {proc['comm']}")
    stats = info["criu_stats"]
    if stats:
        click.echo("\nCRIU dump statistics:")
        for key, value in stats.items():
            click.echo(f"  {key:<24} {value}")


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


@click.command("restore")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--node", required=True, help="Node to restore on.")
@click.option("--name", default=None, help="Pod name (default: the checkpointed pod's).")
@cluster_option
@handle_errors
def restore_cmd(archive: Path, node: str, name: str | None, target: Target) -> None:
    """Start a checkpoint archive's container as a pod on NODE."""
    backend = target.backend(mutating=True)
    with console.status(f"restoring {archive.name} on {node}"):
        pod = backend.restore(archive, node, name)
    click.echo(f"pod/{pod.name} restored on {pod.node} with IP {pod.ip}")


COMMANDS = [migrate_cmd, checkpoint_cmd, inspect_cmd, restore_cmd]


@click.command("rebalance")
@click.option("--policy", required=True, help="Policy name (e.g. low-utilization, hottest, ilp).")
@click.option("--dry-run", is_flag=True, help="Print the plan, migrate nothing.")
@click.option(
    "--max-concurrent", type=click.IntRange(1), default=1, show_default=True, help="Migrations run at once."
)
@click.option(
    "--strategy", type=click.Choice(["cold", "clone", "postcopy"]), default="cold", show_default=True
)
@click.option(
    "--window",
    type=click.FloatRange(0, min_open=True),
    default=2.0,
    show_default=True,
    help="Seconds of usage sampled before and after.",
)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option(
    "-n", "--namespace", default="default", show_default=True, help="Whose pods may move (DaemonSets' never)."
)
@cluster_option
@handle_errors
def rebalance_cmd(
    policy: str,
    dry_run: bool,
    max_concurrent: int,
    strategy: str,
    window: float,
    output: str,
    namespace: str,
    target: Target,
) -> None:
    """Plan migrations from live usage with a policy, and (unless --dry-run) carry them out."""
    from podhop.migrate.rebalance import rebalance

    backend = target.backend(mutating=not dry_run)
    with console.status(f"rebalancing with {policy}") as status:
        result = rebalance(
            backend,
            policy,
            dry_run=dry_run,
            max_concurrent=max_concurrent,
            strategy=strategy,
            window_s=window,
            namespace=namespace,
            report=lambda msg: status.update(f"rebalancing with {policy}: {msg}"),
        )
    data = result.to_dict()
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        if not data["planned"]:
            click.echo(f"{policy}: nothing to move (CPU imbalance {data['imbalance_before']:.1f} points)")
        else:
            print_table(
                ["POD", "FROM", "TO", "PREDICTED DOWNTIME", "REASON"],
                [
                    [m["pod"], m["source"], m["target"], f"{m['predicted_downtime_ms']:.0f} ms", m["reason"]]
                    for m in data["planned"]
                ],
            )
        for m in data["migrations"]:
            click.echo(
                f"migrated {m['pod']} {m['source_node']} -> {m['target_node']}: "
                f"downtime {_ms(m['downtime_ms'])}, total {m['total_ms']:.0f} ms"
            )
        for f in data["failed"]:
            click.echo(f"FAILED {f['pod']} -> {f['target']}: {f['error']}", err=True)
        for st in data["stale"]:
            click.echo(f"skipped {st['pod']} -> {st['target']}: {st['reason']}", err=True)
        if data["skipped"]:
            click.echo(f"not attempted after the failure: {', '.join(data['skipped'])}", err=True)
        if data["imbalance_after"] is not None:
            click.echo(
                f"CPU imbalance (std of node CPU %): {data['imbalance_before']:.1f} -> "
                f"{data['imbalance_after']:.1f}"
            )
    if data["failed"]:
        sys.exit(1)


COMMANDS.append(rebalance_cmd)
