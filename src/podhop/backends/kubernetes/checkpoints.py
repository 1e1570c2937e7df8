"""``podhop checkpoint`` and ``podhop restore`` on Kubernetes: the kubelet's archive, to a file and back.

Why: the same promises as on the local kind. A checkpoint goes through the
kubelet's API; the node agent streams the archive into an output claimed
before the dump and renamed into place only once whole (0600); only then,
unless ``--leave-running``, is the pod deleted. A restore sends the archive —
checked by podhop's own reader first: an archive is untrusted — to the target
node's agent, which makes it a checkpoint image there, and creates a pod
pinned to that node whose container runs from it.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from podhop.archive import layout, reader
from podhop.archive.writer import Output
from podhop.backends.base import Pod
from podhop.backends.kubernetes import agent as agents
from podhop.backends.kubernetes import api
from podhop.backends.kubernetes.kubelet import kubelet_checkpoint
from podhop.backends.kubernetes.migration import HOSTNAME
from podhop.errors import AlreadyExistsError, PodhopError
from podhop.migrate.plan import MigrationError
from podhop.objects.schema import dns1123_label

if TYPE_CHECKING:
    from podhop.backends.kubernetes.backend import KubernetesBackend


def checkpoint_to_file(
    backend: KubernetesBackend,
    namespace: str,
    pod_name: str,
    container: str | None,
    output: Path | None,
    leave_running: bool,
) -> Path:
    pod = backend.pod(namespace, pod_name)
    names = [c.name for c in pod.containers]
    if container is None and len(names) != 1:
        raise PodhopError(
            f"pod {pod_name} has several containers ({', '.join(names)}): choose one with --container"
        )
    ctr = container or names[0]
    if ctr not in names:
        raise PodhopError(f"pod {pod_name} has no container {ctr!r} (containers: {', '.join(names)})")
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    output = output or Path(f"checkpoint-{pod_name}_{namespace}-{ctr}-{stamp}.tar")
    out = Output(output)  # claimed before the dump
    source = agents.agent_on(backend, pod.node)
    archive = ""
    try:
        items = kubelet_checkpoint(backend, pod.node, namespace, pod_name, ctr, 120)
        archive = Path(items[0]).name
        assert out.fd is not None
        with open(out.fd, "wb", closefd=False) as fh:
            source.download(archive, fh)
            fh.flush()
        out.commit()
    except BaseException:
        out.discard()
        raise
    finally:
        if archive:
            source.request("DELETE", f"checkpoints/{archive}")
    if not leave_running:
        api.call(f"deleting {pod_name}", backend.core.delete_namespaced_pod, pod_name, namespace)
    return output


def _cri_names(name: str) -> tuple[str, str, str] | None:
    """(container, pod, namespace) from a CRI container name ``<container>_<pod>_<ns>_<uid>_<attempt>``
    (all DNS labels, so the underscores split it unambiguously); None for any other name."""
    parts = name.split("_")
    if len(parts) != 5 or not parts[4].isdigit():
        return None
    try:
        for label in parts[:3]:
            dns1123_label(label)
    except ValueError:
        return None
    return parts[0], parts[1], parts[2]


def _local_address_towards(ip: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((ip, 9))
        return str(s.getsockname()[0])


def restore_from_file(backend: KubernetesBackend, archive: Path, node: str, name: str | None) -> Pod:
    contents = reader.read(archive)  # checked before any byte leaves this machine
    meta = contents.config.podhop
    kube = _cri_names(contents.config.name)
    if kube is not None and meta is None:  # a kubelet's archive (containerd/CRI-O naming)
        ctr, from_pod, namespace = kube
    else:
        ctr = layout.container_name(contents.config)
        from_pod, namespace = (meta.pod, meta.namespace) if meta else (ctr, "default")
    pod_name = name or from_pod
    layout.pod_name(pod_name)
    if any(p.name == pod_name for p in backend.pods(namespace)):
        raise AlreadyExistsError(f'pod "{pod_name}" already exists', hint="restore with --name NEW")
    target = agents.agent_on(backend, node)
    node_ip = next(n.ip for n in backend.nodes() if n.name == node)
    image = f"{agents.CHECKPOINT_REPO}/{pod_name}-{ctr}:{secrets.token_hex(3)}"
    secret = secrets.token_hex(32)
    status = target.request(
        "POST",
        "receive",
        {
            "from": _local_address_towards(node_ip),
            "secret": secret,
            "container": ctr,
            "image": image,
            "timeout_s": 120,
        },
    )
    with (
        socket.create_connection((node_ip, int(status["port"])), timeout=30) as conn,
        archive.open("rb") as fh,
    ):
        conn.sendall(bytes.fromhex(secret))
        while chunk := fh.read(1 << 20):
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
    quoted = urllib.parse.quote(image, safe="")
    try:
        target.wait_received(str(status["id"]), 120)
        pod = _create_restored(backend, contents, meta, ctr, pod_name, namespace, node, image)
    finally:  # the running container has its own snapshot: the image is not needed any more
        with contextlib.suppress(PodhopError):
            target.request("DELETE", f"images/{quoted}")
    return pod


def _create_restored(
    backend: KubernetesBackend,
    contents: reader.Contents,
    meta: layout.PodhopMeta | None,
    ctr: str,
    pod_name: str,
    namespace: str,
    node: str,
    image: str,
) -> Pod:
    base = contents.config.rootfs_image_name or ""
    labels = meta.labels if meta else {}
    ports = [{"containerPort": p} for p in (meta.ports if meta else [])]
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": namespace, "labels": labels},
        "spec": {
            "nodeSelector": {HOSTNAME: node},
            "initContainers": [{"name": "podhop-base", "image": base, "command": ["true"]}] if base else [],
            "containers": [{"name": ctr, "image": image, "imagePullPolicy": "Never", "ports": ports}],
        },
    }
    api.call(
        f"creating {pod_name} on {node}",
        backend.core.create_namespaced_pod,
        namespace,
        json.loads(json.dumps(body)),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pod = backend.pod(namespace, pod_name)
        if pod.ready:
            return pod
        time.sleep(0.2)
    with contextlib.suppress(PodhopError):  # a restore that did not start leaves nothing behind
        api.call(f"deleting {pod_name}", backend.core.delete_namespaced_pod, pod_name, namespace)
    raise MigrationError("restore", f"{pod_name} on {node} did not become ready within 120 s")
