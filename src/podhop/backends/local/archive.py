"""``podhop checkpoint`` and ``podhop restore`` on the local backend: a pod to an archive and back.

Why: a checkpoint is worth more as a file other tools read (the layout is in
:mod:`podhop.archive.layout`). The two directions carry the two promises:

- **no lost checkpoint.** The output is claimed before the dump
  (:class:`~podhop.archive.writer.Output`); the container is frozen, dumped
  with CRIU told to leave it as it is, the archive written, synced and renamed
  into place — and only then, unless ``--leave-running``, is the container
  killed. Any failure before that thaws it: the pod runs on as before.
- **an archive is untrusted.** It is read in one checked pass
  (:mod:`podhop.archive.reader`); the pod, its names and labels, and its spec
  are validated like a manifest; the container's OCI config is built by podhop
  (:func:`~podhop.backends.local.pods.container_config`) taking from the
  archive only the process; the root filesystem diff and deletions are
  replayed confined to the new root (:mod:`podhop.archive.rootfs`). Any
  failure removes everything the restore made.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from podhop import sh
from podhop.archive import layout, reader, rootfs
from podhop.archive.layout import ArchiveError
from podhop.archive.writer import Output
from podhop.backends.local import moves as steps
from podhop.backends.local import pods as podops
from podhop.backends.local import services as svcops
from podhop.backends.local.cluster import LocalCluster
from podhop.errors import AlreadyExistsError, CommandError, ManifestError, NotFoundError, PodhopError
from podhop.migrate.plan import MigrationError
from podhop.net import netns
from podhop.objects.manifests import load_manifests
from podhop.objects.model import Pod
from podhop.runtime import criu, oci
from podhop.runtime.images import resolve
from podhop.store import ContainerRecord, PodRecord, now

#: How long a checkpoint's dump may take.
DUMP_TIMEOUT_S = 300.0


def _find(cluster: LocalCluster, pod: str, namespace: str) -> PodRecord:
    for p in cluster.store.pods(cluster.name):
        if (p.namespace, p.name) == (namespace, pod):
            return p
    raise NotFoundError(f'pod "{pod}" not found in cluster {cluster.name}')


def _container(pod: PodRecord, name: str | None) -> ContainerRecord:
    ctrs = [c for c in pod.containers if name in (None, c.name)]
    if len(ctrs) != 1:
        names = ", ".join(c.name for c in pod.containers)
        which = "has no container " + repr(name) if name else "has several containers"
        raise PodhopError(f"pod {pod.name} {which} ({names}): choose one with --container")
    return ctrs[0]


def checkpoint(
    cluster: LocalCluster,
    pod_name: str,
    output: Path | None = None,
    *,
    namespace: str = "default",
    leave_running: bool = False,
    container: str | None = None,
) -> Path:
    """Checkpoint one container of a pod into an archive; without ``leave_running`` the pod is removed
    (after the archive is safely written)."""
    with cluster.store.lock(cluster.name):
        pod = _find(cluster, pod_name, namespace)
        ctr = _container(pod, container)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        output = output or Path(f"checkpoint-{pod.name}_{pod.namespace}-{ctr.name}-{stamp}.tar")
        out = Output(output)  # claimed before the dump: a bad path costs nothing
        work = cluster.node_dir(pod.node) / "checkpoints" / f"{pod.name}-{secrets.token_hex(3)}"
        try:
            with ExitStack() as undo:
                if not leave_running:
                    steps.freeze(cluster, ctr, pod, undo)  # thawed by the undo on any failure
                _dump(cluster, pod, ctr, work, undo)
                _write_metadata(pod, ctr, work, stamp, leave_running)
                out.write(work)
                out.commit()
                if leave_running:
                    undo.close()  # nothing was frozen by us: CRIU left the container running
                else:
                    undo.pop_all()  # committed: the frozen container is stopped below
        except BaseException:
            out.discard()
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if not leave_running:
            steps.kill_frozen_source(cluster, ctr)
            podops.delete_pod(cluster, pod, grace_s=0)
            svcops.sync(cluster)
        return output


def _dump(cluster: LocalCluster, pod: PodRecord, ctr: ContainerRecord, work: Path, undo: ExitStack) -> None:
    """CRIU's images of ``ctr`` into ``work/checkpoint``, the container left as it was (running or frozen)."""
    images, logs = work / layout.CHECKPOINT_DIR, work / "work"
    images.mkdir(parents=True, mode=0o700)
    logs.mkdir()
    Path(ctr.bundle, "criu.conf").write_text(steps.DUMP_CONFIG)
    argv = cluster.runc.argv(
        "checkpoint",
        "--image-path",
        str(images),
        "--work-path",
        str(logs),
        "--tcp-established",
        "--leave-running",
        ctr.runtime_id,
    )
    node_ns = netns.netns_path(cluster.node(pod.node).netns)
    undo.callback(criu.remove_network_lock, netns.netns_path(pod.netns))
    try:
        sh.run_group(criu.in_netns(node_ns, argv), DUMP_TIMEOUT_S)
    except (CommandError, subprocess.TimeoutExpired) as exc:
        detail = criu.last_error(logs / "dump.log") or str(exc)
        raise MigrationError("dump", f"checkpoint of {pod.name}/{ctr.name} failed: {detail}") from exc
    for name in (layout.STATS_DUMP, layout.DUMP_LOG):
        if (logs / name).exists():
            shutil.copyfile(logs / name, work / name)


def _write_metadata(
    pod: PodRecord, ctr: ContainerRecord, work: Path, stamp: str, leave_running: bool
) -> None:
    deleted = rootfs.make_diff(Path(ctr.bundle) / "upper", work / layout.ROOTFS_DIFF)
    rootfs.write_deleted(work / layout.DELETED_FILES, deleted)
    image = resolve(ctr.image)
    config = {
        "id": ctr.runtime_id,
        "name": ctr.name,
        "rootfsImageName": ctr.image,
        # What Podman's import needs besides (its image ID; a network namespace of its own, not the
        # one spec.dump names, which is this pod's and may still be in use).
        "rootfsImageID": image.config_digest.removeprefix("sha256:"),
        "createNetNS": True,
        "networkMode": "bridge",
        "newNetworks": {"podman": {"interface_name": "eth0"}},
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
    (work / layout.CONFIG_DUMP).write_text(json.dumps(config, indent=2))
    spec = json.loads((Path(ctr.bundle) / "config.json").read_text())
    spec.get("annotations", {}).pop("org.criu.config", None)  # a podhop path, meaningless elsewhere
    (work / layout.SPEC_DUMP).write_text(json.dumps(spec, indent=1))


def inspect(archive: Path) -> dict[str, Any]:
    """What an archive holds: container, image, process tree, memory and CRIU statistics.

    Nothing is unpacked to disk: memory is summed from the members' sizes.
    """
    return reader.summary(reader.read(archive))


def _pod_from_archive(
    contents: reader.Contents, name: str | None
) -> tuple[str, str, dict[str, str], dict[str, Any], str]:
    """(pod name, namespace, labels, validated spec, container name) for the restored pod."""
    ctr_name = layout.container_name(contents.config)
    meta = contents.config.podhop
    pod_name = name or (meta.pod if meta else ctr_name)
    namespace = meta.namespace if meta else "default"
    image = contents.config.rootfs_image_name
    if not image:
        raise ArchiveError(f"{contents.path}: {layout.CONFIG_DUMP} names no image (rootfsImageName)")
    raw_spec = (meta.spec if meta else None) or {"containers": [{"name": ctr_name, "image": image}]}
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": namespace, "labels": meta.labels if meta else {}},
        "spec": raw_spec,
    }
    try:
        parsed = load_manifests(f"{contents.path.name}:{layout.CONFIG_DUMP}", text=json.dumps(doc))[0]
    except ManifestError as exc:
        raise ArchiveError(f"the pod in {contents.path} is not valid: {exc}", hint=exc.hint) from exc
    assert isinstance(parsed, Pod)
    names = [c.name for c in parsed.spec.containers]
    if ctr_name not in names:
        raise ArchiveError(f"{contents.path}: container {ctr_name!r} is not in its pod's spec ({names})")
    if len(names) > 1:
        raise ArchiveError(f"{contents.path}: its pod has several containers; an archive holds one")
    return pod_name, namespace, dict(parsed.labels), parsed.spec.to_k8s(), ctr_name


def restore(cluster: LocalCluster, archive: Path, node: str, name: str | None = None) -> PodRecord:
    """Start the archive's container as a pod on ``node`` (named as before unless ``name``)."""
    if name is not None:
        try:
            layout.pod_name(name)
        except ValueError as exc:
            raise ArchiveError(f"--name: {exc}") from exc
    target = cluster.node(node)
    with cluster.store.lock(cluster.name):
        work = cluster.node_dir(node) / "checkpoints" / f"restore-{secrets.token_hex(3)}"
        work.mkdir(parents=True, mode=0o700)
        try:
            contents = reader.read(
                archive, images_to=work / layout.CHECKPOINT_DIR, extract_to=work / "replay"
            )
            reader.require_images(contents)
            assert contents.images_dir is not None
            keys = criu.external_mounts(contents.images_dir)
            mounts = layout.external_mounts(keys)  # refuses what podhop cannot give from the pod's own
            pod_name, namespace, labels, spec, ctr_name = _pod_from_archive(contents, name)
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
                labels=labels,
                spec=spec,
                owner_kind=contents.config.podhop.owner_kind if contents.config.podhop else None,
                owner_name=contents.config.podhop.owner_name if contents.config.podhop else None,
            )
            ports = [p.get("containerPort") for p in spec["containers"][0].get("ports", [])]
            ctr = podops.container_record(
                cluster, pod, ctr_name, spec["containers"][0]["image"], [int(p) for p in ports if p]
            )
            ctr.external = [k for k in keys if k not in layout.POD_FILES and k != "/dev/null"]
            with ExitStack() as undo:
                podops.create_sandbox(cluster, target, pod)
                undo.callback(podops.delete_sandbox, cluster, pod)
                root = steps.mount_rootfs(cluster, ctr, pod, undo)
                if contents.rootfs_diff is not None:
                    rootfs.apply_diff(root, contents.rootfs_diff)
                rootfs.apply_deletions(root, contents.deleted)
                podops.prepare_mount_points(root)  # the diff may have put links there
                mode = criu.root_mode(contents.images_dir)
                if mode is not None:  # CRIU checks it: Podman's roots are 0555
                    os.chmod(root, mode)
                if mounts.shm and layout.DEVSHM in contents.extracted:  # what /dev/shm held
                    shm = Path(ctr.bundle) / "shm"
                    shm.mkdir(mode=0o1777)
                    rootfs.apply_diff(shm, contents.extracted[layout.DEVSHM])
                proc = contents.spec.process
                process = oci.ProcessSpec(tuple(proc.args), tuple(proc.env), proc.cwd)
                join = steps.write_config(cluster, ctr, pod, process)
                steps.runc_restore(
                    cluster,
                    ctr,
                    contents.images_dir,
                    work / "restore-work",
                    node,
                    undo,
                    120.0,
                    join_cgroup=join,
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
