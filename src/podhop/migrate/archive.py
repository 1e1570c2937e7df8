"""Checkpoint archives in the layout Podman and CRI-O export, so tools can share them.

Why: a checkpoint is worth more as a file another tool can read. ``podhop
checkpoint`` writes, and ``podhop restore`` reads, the container archive
layout that ``checkpointctl`` understands (names from its ``lib/metadata.go``):

    checkpoint/        CRIU's images (pstree.img, core-*.img, pages-*.img, ...)
    config.dump        container metadata: id, name, rootfsImageName, runtime,
                       createdTime (plus podhop's own keys under "podhop")
    spec.dump          the container's OCI runtime config
    rootfs-diff.tar    files the container changed in its root filesystem
    deleted.files      JSON list of files it deleted
    stats-dump         CRIU's dump statistics; dump.log its log

Archives hold process memory, so they are created mode 0600. ``inspect``
reads one back: process tree, image, memory size and CRIU's statistics.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from podhop import sh
from podhop.backends.local import pods as podops
from podhop.backends.local import services as svcops
from podhop.backends.local.cluster import LocalCluster
from podhop.errors import AlreadyExistsError, NotFoundError, PodhopError
from podhop.migrate import steps
from podhop.migrate.plan import MigrationError
from podhop.net import netns
from podhop.runtime import criu
from podhop.store import PodRecord, now


def _diff(upper: Path, out: Path) -> list[str]:
    """Write ``rootfs-diff.tar`` from an overlay upper dir; return the deleted paths (whiteouts)."""
    deleted: list[str] = []
    with tarfile.open(out, "w") as tar:
        for root, dirs, files in os.walk(upper):
            for name in sorted(dirs + files):
                full = Path(root) / name
                rel = str(full.relative_to(upper))
                st = full.lstat()
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    deleted.append("/" + rel)  # an overlay whiteout: the file was deleted
                    continue
                tar.add(full, arcname=rel, recursive=False)
    return deleted


def _find(cluster: LocalCluster, pod: str, namespace: str) -> PodRecord:
    for p in cluster.store.pods(cluster.name):
        if (p.namespace, p.name) == (namespace, pod):
            return p
    raise NotFoundError(f'pod "{pod}" not found in cluster {cluster.name}')


def checkpoint(
    cluster: LocalCluster,
    pod_name: str,
    output: Path | None = None,
    *,
    namespace: str = "default",
    leave_running: bool = False,
    container: str | None = None,
) -> Path:
    """Checkpoint one container of a pod into an archive; without ``leave_running`` the pod is removed."""
    with cluster.store.lock(cluster.name):
        pod = _find(cluster, pod_name, namespace)
        ctrs = [c for c in pod.containers if container in (None, c.name)]
        if len(ctrs) != 1:
            names = ", ".join(c.name for c in pod.containers)
            raise PodhopError(f"pod {pod.name} has containers {names}: choose one with --container")
        ctr = ctrs[0]
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        output = output or Path(f"checkpoint-{pod.name}_{pod.namespace}-{ctr.name}-{stamp}.tar")
        work = cluster.node_dir(pod.node) / "checkpoints" / f"{pod.name}-{secrets.token_hex(3)}"
        images, logs = work / "checkpoint", work / "work"
        images.mkdir(parents=True)
        logs.mkdir()
        try:
            Path(ctr.bundle, "criu.conf").write_text("skip-in-flight\n")
            argv = cluster.runc.argv(
                "checkpoint",
                "--image-path",
                str(images),
                "--work-path",
                str(logs),
                "--tcp-established",
                *(["--leave-running"] if leave_running else []),
                ctr.runtime_id,
            )
            try:
                sh.run(criu.in_netns(netns.netns_path(cluster.node(pod.node).netns), argv), timeout=300)
            except PodhopError as exc:
                criu.remove_network_lock(netns.netns_path(pod.netns))
                detail = criu.last_error(logs / "dump.log") or str(exc)
                raise MigrationError("dump", f"checkpoint of {pod.name}/{ctr.name} failed: {detail}") from exc
            deleted = _diff(Path(ctr.bundle) / "upper", work / "rootfs-diff.tar")
            (work / "deleted.files").write_text(json.dumps(deleted))
            config = {
                "id": ctr.runtime_id,
                "name": ctr.name,
                "rootfsImageName": ctr.image,
                "runtime": "runc",
                "createdTime": pod.created,
                "checkpointedTime": stamp,
                "podhop": {
                    "pod": pod.name,
                    "namespace": pod.namespace,
                    "labels": pod.labels,
                    "spec": pod.spec,
                    "owner_kind": pod.owner_kind,
                    "owner_name": pod.owner_name,
                    "node": pod.node,
                    "podIP": pod.ip,
                    "ports": ctr.ports,
                    "leave_running": leave_running,
                },
            }
            (work / "config.dump").write_text(json.dumps(config, indent=2))
            shutil.copyfile(Path(ctr.bundle) / "config.json", work / "spec.dump")
            for name in ("stats-dump", "dump.log"):
                if (logs / name).exists():
                    shutil.copyfile(logs / name, work / name)
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w") as tar:
                for name in (
                    "config.dump",
                    "spec.dump",
                    "rootfs-diff.tar",
                    "deleted.files",
                    "stats-dump",
                    "dump.log",
                    "checkpoint",
                ):
                    if (work / name).exists():
                        tar.add(work / name, arcname=name)
            os.chmod(output, 0o600)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if not leave_running:  # CRIU ended the container: the pod is gone from this node
            podops.delete_pod(cluster, pod, grace_s=0)
            svcops.sync(cluster)
        return output


def inspect(archive: Path) -> dict[str, Any]:
    """What an archive holds: container, image, process tree, memory and CRIU statistics."""
    if not archive.exists():
        raise NotFoundError(f"{archive}: no such file")
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        if "config.dump" not in members or "spec.dump" not in members:
            raise PodhopError(f"{archive}: not a container checkpoint archive (no config.dump/spec.dump)")
        tar.extractall(tmp, filter="data")
        base = Path(tmp)
        config = json.loads((base / "config.dump").read_text())
        spec = json.loads((base / "spec.dump").read_text())
        images = base / "checkpoint"
        pages = sum(p.stat().st_size for p in images.glob("pages-*.img"))
        return {
            "archive": str(archive),
            "size_bytes": archive.stat().st_size,
            "container": config.get("name"),
            "id": config.get("id"),
            "image": config.get("rootfsImageName"),
            "runtime": config.get("runtime"),
            "created": config.get("createdTime"),
            "checkpointed": config.get("checkpointedTime"),
            "pod": config.get("podhop", {}).get("pod"),
            "command": spec.get("process", {}).get("args"),
            "processes": criu.process_tree(images) if (images / "pstree.img").exists() else [],
            "memory_pages_bytes": pages,
            "checkpoint_bytes": criu.dir_bytes(images),
            "rootfs_diff_bytes": (base / "rootfs-diff.tar").stat().st_size
            if (base / "rootfs-diff.tar").exists()
            else 0,
            "deleted_files": json.loads((base / "deleted.files").read_text())
            if (base / "deleted.files").exists()
            else [],
            "criu_stats": criu.read_stats(base / "stats-dump"),
        }


def restore(cluster: LocalCluster, archive: Path, node: str, name: str | None = None) -> PodRecord:
    """Start the archive's container as a pod on ``node`` (named as before unless ``name``)."""
    target = cluster.node(node)
    with cluster.store.lock(cluster.name):
        work = cluster.node_dir(node) / "checkpoints" / f"restore-{secrets.token_hex(3)}"
        work.mkdir(parents=True)
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(work, filter="tar")
            config = json.loads((work / "config.dump").read_text())
            spec = json.loads((work / "spec.dump").read_text())
            meta = config.get("podhop", {})
            pod_name = name or meta.get("pod") or config["name"]
            namespace = meta.get("namespace", "default")
            if any((p.namespace, p.name) == (namespace, pod_name) for p in cluster.store.pods(cluster.name)):
                raise AlreadyExistsError(f'pod "{pod_name}" already exists', hint="restore with --name NEW")
            sandbox = secrets.token_hex(3)
            pod = PodRecord(
                cluster=cluster.name,
                namespace=namespace,
                name=pod_name,
                uid=secrets.token_hex(16),
                node=node,
                sandbox=sandbox,
                netns=cluster.layout.pod_netns(pod_name, sandbox),
                ip=podops.free_ip(cluster, target),
                labels=meta.get("labels", {}),
                spec=meta.get(
                    "spec", {"containers": [{"name": config["name"], "image": config["rootfsImageName"]}]}
                ),
                owner_kind=meta.get("owner_kind"),
                owner_name=meta.get("owner_name"),
            )
            ctr = podops.container_record(
                cluster, pod, config["name"], config.get("rootfsImageName", ""), list(meta.get("ports", []))
            )
            with ExitStack() as undo:
                podops.create_sandbox(cluster, target, pod)
                undo.callback(podops.delete_sandbox, cluster, pod)
                rootfs = steps.mount_rootfs(cluster, ctr, pod, undo)
                if (work / "rootfs-diff.tar").exists():
                    sh.run(
                        ["tar", "--numeric-owner", "-C", str(rootfs), "-xpf", str(work / "rootfs-diff.tar")]
                    )
                for path in json.loads((work / "deleted.files").read_text() or "[]"):
                    target_path = rootfs / path.lstrip("/")
                    if target_path.is_dir() and not target_path.is_symlink():
                        shutil.rmtree(target_path, ignore_errors=True)
                    else:
                        target_path.unlink(missing_ok=True)
                podops.write_etc(rootfs, pod)
                steps.write_config(cluster, spec, ctr, pod)
                steps.runc_restore(
                    cluster, ctr, work / "checkpoint", work / "restore-work", node, undo, 120.0
                )
                pod.containers = [ctr]
                pod.phase, pod.started = "Running", now()
                cluster.store.put_pod(pod)
                undo.callback(cluster.store.remove, "Pod", cluster.name, namespace, pod_name)
                svcops.sync(cluster)
                undo.pop_all()
            return pod
        finally:
            shutil.rmtree(work, ignore_errors=True)
