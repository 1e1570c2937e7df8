"""``podhop migrate``: move a running pod to another node with CRIU.

Also ``checkpoint``, ``inspect``, ``restore`` and ``rebalance``. The engine is
imported inside each command; ``inspect`` reads the archive with
:mod:`podhop.archive.reader` alone, so it starts without the migration path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
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
    click.echo(f"transferred {_mib(report['bytes_transferred'])}; CRIU images {_mib(report['image_bytes'])}")
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
    cluster_name: str | None,
) -> None:
    """Checkpoint a pod's container into an archive (Podman/CRI-O layout, mode 0600)."""
    from podhop.migrate.archive import checkpoint

    require_root()
    with console.status(f"checkpointing {pod}"):
        path = checkpoint(
            get_cluster(cluster_name),
            pod,
            output,
            namespace=namespace,
            leave_running=leave_running,
            container=container,
        )
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
def restore_cmd(archive: Path, node: str, name: str | None, cluster_name: str | None) -> None:
    """Start a checkpoint archive's container as a pod on NODE."""
    from podhop.migrate.archive import restore

    require_root()
    with console.status(f"restoring {archive.name} on {node}"):
        pod = restore(get_cluster(cluster_name), archive, node, name)
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
@cluster_option
@handle_errors
def rebalance_cmd(
    policy: str,
    dry_run: bool,
    max_concurrent: int,
    strategy: str,
    window: float,
    output: str,
    cluster_name: str | None,
) -> None:
    """Plan migrations from live usage with a policy, and (unless --dry-run) carry them out."""
    from podhop.migrate.rebalance import rebalance

    require_root()
    cluster = get_cluster(cluster_name)
    with console.status(f"rebalancing with {policy}") as status:
        result = rebalance(
            cluster,
            policy,
            dry_run=dry_run,
            max_concurrent=max_concurrent,
            strategy=strategy,
            window_s=window,
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
