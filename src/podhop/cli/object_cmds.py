"""``apply``, ``delete``, ``get``, ``top``, ``logs``, ``exec``: kubectl's verbs, on either kind of cluster.

Why lazy imports: ``get`` and ``top`` read the store and cgroups, and must
start as fast as kubectl; apply's manifest parsing (pydantic) and YAML are
imported only by the commands that parse or print them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from podhop.cli.common import Target, cluster_option, handle_errors, namespace_options, print_table, progress
from podhop.errors import ManifestError, NotFoundError
from podhop.objects.quantity import format_cpu, format_memory

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
def apply_cmd(filename: str, target: Target) -> None:
    """Create or update the objects of a manifest file: all of them, or none (server-side apply on
    Kubernetes)."""
    source, text = _read(filename)
    backend = target.backend(mutating=True)
    with progress(f"applying {source}") as report:
        messages = backend.apply(source, text, report)
    for m in messages:
        click.echo(m)


@click.command("delete")
@click.option("-f", "--filename", required=True, help="Kubernetes YAML file ('-' for stdin).")
@cluster_option
@handle_errors
def delete_cmd(filename: str, target: Target) -> None:
    """Delete the objects named in a manifest file."""
    source, text = _read(filename)
    backend = target.backend(mutating=True)
    with progress(f"deleting {source}") as report:
        messages = backend.delete(source, text, report)
    for m in messages:
        click.echo(m)


def _as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


@click.command("get")
@click.argument("resource", type=click.Choice(sorted(RESOURCES)))
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["wide", "json", "yaml"]), default=None)
@namespace_options
@cluster_option
@handle_errors
def get_cmd(
    resource: str, name: str | None, output: str | None, namespace: str | None, target: Target
) -> None:
    """Show nodes, pods or services, as kubectl get does."""
    from podhop.cli import tables

    backend = target.backend()
    kind = RESOURCES[resource]
    if output in ("json", "yaml"):
        items = backend.objects(kind, namespace)
        if name is not None:
            items = [i for i in items if i["metadata"]["name"] == name]
            if not items:
                raise NotFoundError(f'{kind} "{name}" not found')
        doc = items[0] if name is not None else _as_list(items)
        if output == "json":
            click.echo(json.dumps(doc, indent=2))
        else:
            import yaml

            click.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)
        return
    wide = output == "wide"
    if kind == "nodes":
        headers, rows = tables.nodes(backend.nodes(), wide)
    elif kind == "pods":
        headers, rows = tables.pods(backend.pods(namespace), wide, namespace is None)
    else:
        headers, rows = tables.services(backend.services(namespace), wide, namespace is None)
    if name is not None:
        rows = [r for r in rows if r[1 if namespace is None and kind != "nodes" else 0] == name]
        if not rows:
            raise NotFoundError(f'{kind} "{name}" not found')
    if not rows:
        where = "" if kind == "nodes" or namespace is None else f" in namespace {namespace}"
        click.echo(f"No resources found{where} in cluster {backend.name}.", err=True)
        return
    print_table(headers, rows)


@click.command("top")
@click.argument("resource", type=click.Choice(["nodes", "node", "pods", "pod"]))
@click.option("--sort-by", type=click.Choice(["cpu", "memory"]), default=None)
@click.option(
    "--window",
    type=click.FloatRange(0, min_open=True),
    default=1.0,
    show_default=True,
    help="Sampling window in seconds (the local kind; Kubernetes reports metrics-server's own).",
)
@namespace_options
@cluster_option
@handle_errors
def top_cmd(resource: str, sort_by: str | None, window: float, namespace: str | None, target: Target) -> None:
    """CPU (millicores) and memory working set of nodes or pods, as kubectl top shows them."""
    sample = target.backend().top(window, cached=True)
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
        return
    pods = [p for p in sample.pods if namespace in (None, p.namespace)]
    if sort_by:
        pods = sorted(pods, key=lambda p: p.cpu_m if sort_by == "cpu" else p.memory_b, reverse=True)
    head = ["NAMESPACE"] if namespace is None else []
    print_table(
        [*head, "NAME", "CPU(cores)", "MEMORY(bytes)", "NODE"],
        [
            [
                *([p.namespace] if namespace is None else []),
                p.name,
                format_cpu(p.cpu_m),
                format_memory(p.memory_b),
                p.node,
            ]
            for p in pods
        ],
    )


@click.command("logs")
@click.argument("pod")
@click.option("-c", "--container", default=None)
@click.option("--timestamps", is_flag=True, help="Prefix each line with its time.")
@click.option("--tail", type=click.IntRange(-1), default=-1, help="Lines of recent log to show (-1: all).")
@click.option("-n", "--namespace", default="default", show_default=True)
@cluster_option
@handle_errors
def logs_cmd(
    pod: str, container: str | None, timestamps: bool, tail: int, namespace: str, target: Target
) -> None:
    """Print a container's log (stdout and stderr)."""
    entries = target.backend().logs(namespace, pod, container)
    if tail >= 0:
        entries = entries[-tail:] if tail else []
    for e in entries:
        click.echo(f"{e.time} {e.text}" if timestamps else e.text)


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("pod")
@click.option("-c", "--container", default=None)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@cluster_option
@handle_errors
def exec_cmd(
    pod: str, container: str | None, namespace: str, command: tuple[str, ...], target: Target
) -> None:
    """Run a command in a pod's container: podhop exec POD -- CMD [ARGS...]."""
    backend = target.backend(mutating=True)
    sys.exit(backend.exec_interactive(namespace, pod, container, list(command)))


COMMANDS = [apply_cmd, delete_cmd, get_cmd, top_cmd, logs_cmd, exec_cmd]
