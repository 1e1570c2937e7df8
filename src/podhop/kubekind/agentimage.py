"""The node agent's image, built by podhop from nothing but its own Go binary, and its install.

Why: no registry can be pulled from here, and the agent needs no base system
— it is one static Go binary (``gomod/agent``) that talks to containerd through
its Go client. So its image is one layer (``/podhop-agent`` and an empty
``/tmp``), written as an OCI layout like the pause image and pushed with
skopeo. The image is tagged with the agent's component version (a hash of its
source), so a changed agent is a new tag and nodes never run a stale one.

``install`` is what ``cluster create --kind kubernetes`` does last: push the image
into the cluster's registry (once: the storage is shared), apply
:func:`podhop.backends.kubernetes.install.agent_yaml` with this kind's per-node
paths, and wait until every node's agent is Ready.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from podhop.errors import ClusterError, CommandError
from podhop.kubekind import components, registry
from podhop.kubekind.layout import KubeLayout

Report = Callable[[str], None]
REPOSITORY = "podhop/agent"
REF_NAME = "agent"


def tag() -> str:
    return components.AGENT.version


def image_ref() -> str:
    """The name pods use (``docker.io`` is each node's mirror of the cluster's registry)."""
    return f"docker.io/{REPOSITORY}:{tag()}"


def layer(binary: Path) -> bytes:
    """``/podhop-agent`` (0755) and ``/tmp`` (1777), owned by root, reproducible."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode, tmp.mtime = tarfile.DIRTYPE, 0o1777, 0
        tar.addfile(tmp)
        info = tar.gettarinfo(str(binary), arcname="podhop-agent")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode, info.mtime = 0o755, 0
        with binary.open("rb") as fh:
            tar.addfile(info, fh)
    return buf.getvalue()


def build_layout(report: Report) -> Path:
    """Build the agent (if not cached) and its OCI layout (once per version); the layout's path."""
    components.build(components.AGENT, report)
    oci = components.component_dir(components.AGENT) / "oci"
    if not (oci / "index.json").is_file():
        tmp = oci.with_name(f"oci.tmp-{time.monotonic_ns()}")
        registry.write_layout(
            tmp,
            REF_NAME,
            layer(components.binary("podhop-agent")),
            {"Entrypoint": ["/podhop-agent"], "User": "0:0", "WorkingDir": "/"},
        )
        tmp.rename(oci)
    return oci


def push(dest: str, report: Report) -> None:
    """Build the image and ``skopeo copy`` it to ``dest`` (``host[:port]/repo:tag``, plain HTTP)."""
    oci = build_layout(report)
    report(f"pushing the agent image to {dest}")
    registry.push(oci, REF_NAME, dest)


def push_to_cluster(registry_addr: str, report: Report) -> None:
    """Into a kind cluster's registry, unless it already holds this version."""
    dest = f"{registry_addr}/{REPOSITORY}:{tag()}"
    if not registry.has_image(dest):
        push(dest, report)


def apply(lay: KubeLayout, report: Report) -> None:
    """Push the image (once) and apply the agent's objects with this kind's per-node paths. Done as
    soon as the API server answers: the DaemonSet's pods then start as each node registers, in
    parallel with the rest of create."""
    from podhop.backends.kubernetes import install as manifests
    from podhop.kubekind import kubectl

    push_to_cluster(lay.registry, report)
    paths = manifests.kind_paths(str(lay.run_dir / "nodes"), str(lay.dir / "nodes"))
    report("podhop's node agent")
    kubectl.apply(lay, manifests.manifests(image_ref(), paths=paths))


def install(lay: KubeLayout, n_nodes: int, report: Report, timeout: float = 120) -> None:
    """The agent on every node of a kind cluster, Ready."""
    apply(lay, report)
    wait_ready(lay, n_nodes, timeout)


def wait_ready(lay: KubeLayout, n_nodes: int, timeout: float) -> None:
    from podhop.backends.kubernetes import install as manifests
    from podhop.kubekind import kubectl

    deadline = time.monotonic() + timeout
    status: dict[str, bool] = {}
    while time.monotonic() < deadline:  # the pods themselves: the DaemonSet's status lags seconds behind
        try:
            pods = kubectl.get_json(lay, "pods", "-n", manifests.NAMESPACE, "-l", manifests.LABEL)
            status = {
                (p.get("spec") or {}).get("nodeName", ""): any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (p.get("status") or {}).get("conditions", [])
                )
                for p in pods.get("items", [])
            }
        except CommandError:
            status = {}
        if sum(status.values()) >= n_nodes:
            return
        time.sleep(0.2)
    raise ClusterError(
        f"podhop's node agent is not Ready on all {n_nodes} nodes after {timeout:.0f} s: "
        f"{json.dumps(status)[:300]}",
        hint=f"kubectl -n {manifests.NAMESPACE} describe pods; kubelet logs in {lay.logs}",
    )
