"""``apply``, ``delete``, ``get``, ``top``, ``logs``, ``exec``: kubectl's verbs for the local cluster.

Why lazy imports: ``get`` and ``top`` read the store and cgroups, and must
start as fast as kubectl; apply's manifest parsing (pydantic) and YAML are
imported only by the commands that parse or print them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from podhop.cli.common import (
    cluster_option,
    console,
    get_cluster,
    handle_errors,
    print_table,
    progress,
    require_root,
)
from podhop.errors import ManifestError, NotFoundError
from podhop.objects.quantity import format_cpu, format_memory

if TYPE_CHECKING:
    from podhop.store import PodRecord

RESOURCES = {
    "nodes": "nodes",
    "node": "nodes",
    "no": "nodes",
    "pods": "pods",
    "pod": "pods",
    "po": "pods",
    "services": "services",
    "service": "services",
    "svc": "services",
}


def _read(filename: str) -> tuple[str, str]:
    if filename == "-":
        return "<stdin>", sys.stdin.read()
    try:
        return filename, Path(filename).read_text()
    except OSError as exc:
        raise ManifestError(f"{filename}: cannot read: {exc.strerror}") from exc


@click.command("apply")
@click.option("-f", "--filename", required=True, help="Kubernetes YAML file ('-' for stdin).")
@cluster_option
@handle_errors
def apply_cmd(filename: str, cluster_name: str | None) -> None:
    """Create or update the objects of a manifest file: all of them, or none."""
    from podhop.backends.local import apply as applyops

    require_root()
    source, text = _read(filename)
    cluster = get_cluster(cluster_name)
    with progress(f"applying {source}") as report:
        messages = applyops.apply(cluster, source, text, report)
    for m in messages:
        click.echo(m)


@click.command("delete")
@click.option("-f", "--filename", required=True, help="Kubernetes YAML file ('-' for stdin).")
@cluster_option
@handle_errors
def delete_cmd(filename: str, cluster_name: str | None) -> None:
    """Delete the objects named in a manifest file."""
    from podhop.backends.local import apply as applyops

    require_root()
    source, text = _read(filename)
    cluster = get_cluster(cluster_name)
    with progress(f"deleting {source}") as report:
        messages = applyops.delete(cluster, source, text, report)
    for m in messages:
        click.echo(m)


@click.command("get")
@click.argument("resource", type=click.Choice(sorted(RESOURCES)))
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["wide", "json", "yaml"]), default=None)
@cluster_option
@handle_errors
def get_cmd(resource: str, name: str | None, output: str | None, cluster_name: str | None) -> None:
    """Show nodes, pods or services, as kubectl get does."""
    from podhop.backends.local import render

    cluster = get_cluster(cluster_name)
    kind = RESOURCES[resource]
    pods = cluster.store.pods(cluster.name)
    node_ip = {n.name: n.ip for n in cluster.nodes()}
    if kind == "nodes":
        items = [render.node(n, sum(1 for p in pods if p.node == n.name)) for n in cluster.nodes()]
    elif kind == "pods":
        items = [render.pod(p, node_ip.get(p.node)) for p in pods]
    else:
        items = [render.service(s) for s in cluster.store.services(cluster.name)]
    if name is not None:
        items = [i for i in items if i["metadata"]["name"] == name]
        if not items:
            raise NotFoundError(f'{kind} "{name}" not found')
    if output in ("json", "yaml"):
        doc = items[0] if name is not None else render.as_list(items)
        if output == "json":
            click.echo(json.dumps(doc, indent=2))
        else:
            import yaml

            click.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)
        return
    wide = output == "wide"
    if kind == "nodes":
        headers = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"] + (
            ["INTERNAL-IP", "POD-CIDR", "CPU", "MEMORY"] if wide else []
        )
        rows = [
            [
                i["metadata"]["name"],
                "Ready",
                "<none>",
                render.age(i["metadata"]["creationTimestamp"]),
                "podhop",
            ]
            + (
                [
                    i["status"]["addresses"][0]["address"],
                    i["spec"]["podCIDR"],
                    i["status"]["capacity"]["cpu"],
                    i["status"]["capacity"]["memory"],
                ]
                if wide
                else []
            )
            for i in items
        ]
    elif kind == "pods":
        headers = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] + (["IP", "NODE"] if wide else [])
        rows = []
        for i in items:
            cs = i["status"]["containerStatuses"]
            ready = f"{sum(1 for c in cs if c['ready'])}/{len(cs)}"
            rows.append(
                [
                    i["metadata"]["name"],
                    ready,
                    i["status"]["phase"],
                    "0",
                    render.age(i["metadata"]["creationTimestamp"]),
                ]
                + ([i["status"]["podIP"], i["spec"]["nodeName"]] if wide else [])
            )
    else:
        services = {s.name: s for s in cluster.store.services(cluster.name)}
        headers = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"] + (
            ["SELECTOR"] if wide else []
        )
        rows = []
        for i in items:
            s = services[i["metadata"]["name"]]
            rows.append(
                [
                    s.name,
                    s.type,
                    s.cluster_ip,
                    render.external_address(s),
                    render.port_summary(s),
                    render.age(s.created),
                ]
                + ([",".join(f"{k}={v}" for k, v in s.selector.items())] if wide else [])
            )
    if not rows:
        click.echo(f"No resources found in cluster {cluster.name}.", err=True)
        return
    print_table(headers, rows)


@click.command("top")
@click.argument("resource", type=click.Choice(["nodes", "node", "pods", "pod"]))
@click.option("--sort-by", type=click.Choice(["cpu", "memory"]), default=None)
@click.option(
    "--window", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
    help="Sampling window in seconds.",
)
@cluster_option
@handle_errors
def top_cmd(resource: str, sort_by: str | None, window: float, cluster_name: str | None) -> None:
    """CPU (millicores over the window) and memory working set, from cgroup accounting."""
    from podhop.backends.local import metrics

    cluster = get_cluster(cluster_name)
    sample = metrics.sample(cluster, window)
    if resource.startswith("node"):
        nodes = sample.nodes
        if sort_by:
            nodes = sorted(nodes, key=lambda n: n.cpu_m if sort_by == "cpu" else n.memory_b, reverse=True)
        print_table(
            ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"],
            [
                [
                    n.name,
                    format_cpu(n.cpu_m),
                    f"{n.cpu_pct:.0f}%",
                    format_memory(n.memory_b),
                    f"{n.memory_pct:.0f}%",
                ]
                for n in nodes
            ],
        )
    else:
        pods = sample.pods
        if sort_by:
            pods = sorted(pods, key=lambda p: p.cpu_m if sort_by == "cpu" else p.memory_b, reverse=True)
        print_table(
            ["NAME", "CPU(cores)", "MEMORY(bytes)", "NODE"],
            [[p.name, format_cpu(p.cpu_m), format_memory(p.memory_b), p.node] for p in pods],
        )


def _find_pod(cluster_name: str | None, name: str) -> tuple[PodRecord, object]:
    cluster = get_cluster(cluster_name)
    for p in cluster.store.pods(cluster.name):
        if p.name == name:
            return p, cluster
    raise NotFoundError(f'pod "{name}" not found in cluster {cluster.name}')


@click.command("logs")
@click.argument("pod")
@click.option("-c", "--container", default=None)
@click.option("--timestamps", is_flag=True, help="Prefix each line with its time.")
@click.option("--tail", type=click.IntRange(-1), default=-1, help="Lines of recent log to show (-1: all).")
@cluster_option
@handle_errors
def logs_cmd(pod: str, container: str | None, timestamps: bool, tail: int, cluster_name: str | None) -> None:
    """Print a container's log (stdout and stderr, as the monitor kept it)."""
    from podhop.backends.local.pods import logs

    record, _ = _find_pod(cluster_name, pod)
    entries = logs(record, container)
    if tail >= 0:
        entries = entries[-tail:] if tail else []
    for ts, _stream, line in entries:
        click.echo(f"{ts} {line}" if timestamps else line)


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("pod")
@click.option("-c", "--container", default=None)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@cluster_option
@handle_errors
def exec_cmd(pod: str, container: str | None, command: tuple[str, ...], cluster_name: str | None) -> None:
    """Run a command in a pod's container: podhop exec POD -- CMD [ARGS...]."""
    require_root()
    record, cluster = _find_pod(cluster_name, pod)
    ctrs = [c for c in record.containers if container in (None, c.name)]
    if not ctrs:
        raise NotFoundError(f"pod {pod} has no container {container!r}")
    runc = cluster.runc  # type: ignore[attr-defined]
    argv = runc.argv("exec", ctrs[0].runtime_id, *command)
    sys.exit(subprocess.call(argv))


COMMANDS = [apply_cmd, delete_cmd, get_cmd, top_cmd, logs_cmd, exec_cmd]
_ = console
