"""``podhop cluster create|delete|list|kubeconfig`` (``--kind local`` or ``--kind kubernetes``).

Why lazy imports: ``cluster list`` only reads the store; the cluster machinery
(namespaces, runc, cgroups, the Kubernetes kind) is imported by the commands that use it.
"""

from __future__ import annotations

import time

import click

from podhop.cli import common
from podhop.cli.common import console, handle_errors, print_table, progress, require_root
from podhop.errors import ClusterError, NotFoundError
from podhop.net.shaping import format_rate, parse_rate
from podhop.objects.quantity import format_memory, parse_cpu, parse_memory
from podhop.store import ClusterRecord, Store


@click.group()
def cluster() -> None:
    """Create, delete and list local clusters."""


@cluster.command("create")
@click.option("--name", default="podhop", show_default=True, help="Cluster name.")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1), help="Number of nodes.")
@click.option(
    "--node-cpus", default="1", show_default=True, help="CPU budget per node (cores or millicores, 500m)."
)
@click.option(
    "--node-memory", default="2Gi", show_default=True, help="Memory budget per node (e.g. 512Mi, 2Gi)."
)
@click.option("--link-bandwidth", default=None, help="Cap each node's link (e.g. 100mbit, 1gbit).")
@click.option(
    "--kind",
    type=click.Choice(["local", "kubernetes"]),
    default="local",
    show_default=True,
    help="local: podhop's own nodes; kubernetes: real kubelets, containerd and API server.",
)
@handle_errors
def create(
    name: str, nodes: int, node_cpus: str, node_memory: str, link_bandwidth: str | None, kind: str
) -> None:
    """Create a cluster of NODES nodes (network namespaces; real kubelets with --kind kubernetes)."""
    from podhop.backends.select import create_cluster

    require_root()
    try:
        cpu_m, mem_b = parse_cpu(node_cpus), parse_memory(node_memory)
        bw = parse_rate(link_bandwidth) if link_bandwidth else None
    except ValueError as exc:
        raise ClusterError(str(exc)) from exc
    start = time.monotonic()
    link = f", links capped at {format_rate(bw)}" if bw else ""
    title = "Kubernetes cluster" if kind == "kubernetes" else "cluster"
    store = common.store()
    with progress(f"creating {title} {name}") as report:
        create_cluster(store, kind, name, nodes, cpu_m, mem_b, bw, report)
    console.print(
        f"{title} [bold]{name}[/] created: {nodes} nodes × {cpu_m}m CPU / "
        f"{format_memory(mem_b)}{link} in {time.monotonic() - start:.1f} s",
        highlight=False,
    )
    if kind == "kubernetes":
        from podhop.kubekind.cluster import kubeconfig_path

        console.print(f"kubectl --kubeconfig {kubeconfig_path(store, name)} get nodes", highlight=False)


@cluster.command("delete")
@click.argument("name", required=False)
@click.option("--name", "name_opt", default=None, help="Cluster name (same as the argument).")
@click.option("--all", "all_", is_flag=True, help="Delete every cluster.")
@handle_errors
def delete(name: str | None, name_opt: str | None, all_: bool) -> None:
    """Delete a cluster and everything it made (idempotent)."""
    from podhop.backends.select import delete_cluster

    require_root()
    store = common.store()
    names = [c.name for c in store.clusters()] if all_ else [name or name_opt or ""]
    if names == [""]:
        existing = [c.name for c in store.clusters()]
        if len(existing) != 1:
            raise NotFoundError("say which cluster to delete" if existing else "no cluster exists")
        names = existing
    for n in names:
        record = store.cluster(n)
        if record is None:
            console.print(f"cluster {n} does not exist: nothing to delete")
            continue
        with progress(f"deleting cluster {n}") as report:
            left = delete_cluster(store, n, report)
        if left:
            raise ClusterError(f"cluster {n} deleted with residue: " + "; ".join(left[:10]))
        console.print(f"cluster [bold]{n}[/] deleted")


@cluster.command("list")
@handle_errors
def list_() -> None:
    """List clusters."""
    store = common.store()
    rows = [
        [
            c.name,
            c.kind,
            c.status,
            str(_node_count(store, c)),
            f"{c.node_cpu_m}m",
            format_memory(c.node_memory_b),
            format_rate(c.link_bandwidth_bps) if c.link_bandwidth_bps else "unlimited",
            f"10.{200 + c.idx}.0.0/16",
            c.created,
        ]
        for c in store.clusters()
    ]
    headers = ["NAME", "KIND", "STATUS", "NODES", "NODE-CPU", "NODE-MEMORY", "LINK", "NETWORK", "CREATED"]
    print_table(headers, rows)


@cluster.command("kubeconfig")
@click.argument("name")
@handle_errors
def kubeconfig(name: str) -> None:
    """Print the path of a Kubernetes cluster's admin kubeconfig."""
    from podhop.kubekind.cluster import kubeconfig_path

    click.echo(str(kubeconfig_path(common.store(), name)))


def _node_count(store: Store, c: ClusterRecord) -> int:
    if c.kind == "kubernetes":
        from podhop.kubekind.cluster import node_count

        return node_count(c)
    return len(store.nodes(c.name))


COMMANDS = [cluster]
