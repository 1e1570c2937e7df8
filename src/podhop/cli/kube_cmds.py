"""``podhop kube``: installing podhop's node agent on a Kubernetes cluster.

Why a group of its own: the agent is the one thing podhop needs inside a
cluster it did not make (EKS). ``manifests`` prints everything to apply
(``podhop kube manifests | kubectl apply -f -``); ``agent-image`` builds the
agent's image from podhop's own Go build and pushes it where the cluster can
pull it (ECR, or any registry). podhop's own ``--kind kubernetes`` clusters do
both at ``cluster create``. Imports are inside the commands (start-up).
"""

from __future__ import annotations

from typing import Any

import click

from podhop.cli.common import cluster_option, console, handle_errors


@click.group("kube")
def kube() -> None:
    """podhop's node agent for Kubernetes clusters (EKS, or any): manifests and image."""


@kube.command("manifests")
@click.option("--image", default=None, help="Agent image (default: docker.io/podhop/agent:<this version>).")
@click.option("--token", default=None, help="The agents' API token (default: a new random one).")
@click.option(
    "--kind-cluster",
    default=None,
    metavar="NAME",
    help="Paths of podhop's --kind kubernetes cluster NAME (per-node sockets) instead of EKS's.",
)
@click.option("--no-user-rbac", is_flag=True, help="Leave out the ClusterRole/Role for podhop's users.")
@click.option(
    "--user-group",
    default="podhop-users",
    show_default=True,
    help="Group the user roles are bound to.",
)
@handle_errors
def manifests_cmd(
    image: str | None, token: str | None, kind_cluster: str | None, no_user_rbac: bool, user_group: str
) -> None:
    """Print the agent's Namespace, Secret, ServiceAccount, DaemonSet and the user RBAC (YAML)."""
    from podhop.backends.kubernetes import install

    paths = install.EKS
    if kind_cluster is not None:
        from podhop.errors import ClusterError
        from podhop.kubekind.cluster import KubeCluster
        from podhop.store import Store

        record = Store().cluster(kind_cluster)
        if record is None or record.kind != "kubernetes":
            raise ClusterError(f"no --kind kubernetes cluster named {kind_cluster!r}")
        lay = KubeCluster(record).layout
        paths = install.kind_paths(str(lay.run_dir / "nodes"), str(lay.dir / "nodes"))
    if image is None:
        from podhop.kubekind import agentimage

        image = agentimage.image_ref()
    if token is not None and len(token) < 16:
        raise click.BadParameter("use at least 16 characters", param_hint="--token")
    click.echo(install.manifests(image, token, paths, user_rbac=not no_user_rbac, group=user_group), nl=False)


@kube.command("agent-image")
@click.option(
    "--push",
    "dest",
    default=None,
    metavar="REF",
    help="Push it there (host[:port]/repository:tag; plain HTTP allowed, as skopeo --dest-tls-verify=false).",
)
@handle_errors
def agent_image_cmd(dest: str | None) -> None:
    """Build the node agent's image (an OCI layout); with --push, copy it to a registry."""
    from podhop.cli.common import progress
    from podhop.kubekind import agentimage

    with progress("agent image") as report:
        oci = agentimage.build_layout(report)
        if dest:
            agentimage.push(dest, report)
    console.print(
        f"agent image {agentimage.image_ref()}: OCI layout {oci}" + (f", pushed to {dest}" if dest else "")
    )


@kube.command("install")
@click.option(
    "--image",
    default=None,
    help="Agent image the nodes can pull (required but for podhop's --kind kubernetes clusters).",
)
@click.option("--timeout", type=click.FloatRange(1), default=120.0, show_default=True)
@cluster_option
@handle_errors
def install_cmd(image: str | None, timeout: float, target: Any) -> None:
    """Apply the agent's objects (server-side apply) and wait until it is Ready on every node.

    An installed agent's token is kept (running agents and their Secret stay in step)."""
    import time

    from podhop.backends.kubernetes import agent as agents
    from podhop.backends.kubernetes import install
    from podhop.backends.kubernetes.backend import KubernetesBackend
    from podhop.errors import ClusterError, NotFoundError

    backend = target.backend(mutating=True)
    if not isinstance(backend, KubernetesBackend):
        raise ClusterError(f"cluster {backend.name!r} is a {backend.kind} cluster: it has no node agent")
    paths = install.EKS
    record = backend.record
    if record is not None and record.kind == "kubernetes":  # podhop's kind: per-node paths, its image
        from podhop.kubekind import agentimage
        from podhop.kubekind.cluster import KubeCluster

        lay = KubeCluster(record).layout
        paths = install.kind_paths(str(lay.run_dir / "nodes"), str(lay.dir / "nodes"))
        if image is None:
            agentimage.push_to_cluster(lay.registry, lambda _m: None)
            image = agentimage.image_ref()
    if image is None:
        raise click.UsageError(
            "give --image (where the nodes pull the agent from; see `podhop kube agent-image`)"
        )
    try:
        token = agents.token(backend)
    except (NotFoundError, agents.AgentError):
        token = None
    for message in backend.apply(
        "podhop kube install", install.manifests(image, token, paths), lambda _m: None
    ):
        console.print(message, highlight=False)
    nodes = {n.name for n in backend.nodes()}
    deadline = time.monotonic() + timeout
    while True:
        try:
            ready = set(agents.agents(backend))
        except agents.AgentError:  # not listed yet
            ready = set()
        if ready >= nodes:
            break
        if time.monotonic() > deadline:
            missing = ", ".join(sorted(nodes - ready))
            raise ClusterError(f"the node agent is not Ready on {missing} after {timeout:.0f} s")
        time.sleep(0.5)
    console.print(f"podhop's node agent is Ready on {len(nodes)} nodes")


COMMANDS = [kube]
