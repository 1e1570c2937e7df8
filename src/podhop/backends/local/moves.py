"""The container-level steps of a local migration: dump, transfer, restore — each with its undo.

Why: the engine reads as a list of phases; the mechanics of each phase for
one container live here. Every function that changes the machine registers
how to undo that change on the ``ExitStack`` it is given *before* returning,
so that a failure or an interrupt at any later point unwinds exactly what was
done — above all, the source container is resumed and its CRIU network lock
removed, so it keeps serving.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from podhop import sh
from podhop.backends.local import carry, transfer
from podhop.backends.local import pods as podops
from podhop.backends.local.apply import spec_from_record
from podhop.backends.local.cluster import LocalCluster
from podhop.errors import CommandError
from podhop.migrate.plan import MigrationError
from podhop.net import nat, netns
from podhop.runtime import cgroups, criu, dump, monitor, mounts, oci
from podhop.runtime.images import resolve
from podhop.store import ContainerRecord, NodeRecord, PodRecord


@dataclass
class Side:
    """One end of a migration for one container: where its images and work files go."""

    node: NodeRecord
    images: Path
    work: Path

    @property
    def netns_path(self) -> Path:
        return netns.netns_path(self.node.netns)


@dataclass
class ContainerMove:
    """A container being moved: its source record, its target record, and their CRIU directories."""

    source: ContainerRecord
    target: ContainerRecord
    src: Side
    dst: Side
    transferred_bytes: int = 0
    page_bytes: int = 0
    image_bytes: int = 0  # the checkpoint as it landed on the target
    stopped: bool = False  # the source container is gone (after the commit)
    stats: dict[str, int] = field(default_factory=dict)
    dump_proc: subprocess.Popen[bytes] | None = None  # post-copy: the source's page server
    page_link: carry.PageLink | None = None  # cold, clone: the dump's connection to a page server
    lazy_daemon: criu.Daemon | None = None  # post-copy: the target's lazy-pages daemon
    transfer_port: int = 0  # where the target's receiver listens
    page_server_port: int = 0  # where CRIU's page server listens (target; source for post-copy)
    tls: criu.Tls | None = None  # post-copy: this migration's key and certificate for CRIU's connection
    monitor: monitor.Pending | None = None  # the restored container's monitor, started in prepare
    join_cgroup: str | None = None  # the cgroup runc must restore from (set by :func:`configure_target`)


#: CRIU options for dumps (runc passes this file via the ``org.criu.config`` annotation):
#: in-flight connections (still in the accept queue) are skipped, and no network lock is taken —
#: the source is frozen (cold) or keeps running (clone), and connections are closed on restore
#: into the new address anyway, so the lock would only add two iptables-restore runs to the freeze
#: and, if the dump died, leave the source unreachable.
DUMP_CONFIG = "skip-in-flight\nnetwork-lock skip\n"


def _fail(phase: str, what: str, exc: Exception, *logs: Path) -> MigrationError:
    if isinstance(exc, subprocess.TimeoutExpired):
        return MigrationError(phase, f"{what}: timed out after {exc.timeout:.1f} s")
    detail = criu.last_error(*logs)
    if not detail and isinstance(exc, CommandError):
        detail = exc.stderr.splitlines()[-1] if exc.stderr else str(exc)
    return MigrationError(phase, f"{what}: {detail or exc}")


def resume_source(cluster: LocalCluster, ctr: ContainerRecord, pod: PodRecord) -> None:
    """Undo of freeze/dump: the source container serves again (thawed, no CRIU network lock)."""
    criu.remove_network_lock(netns.netns_path(pod.netns))
    state = cluster.runc.state(ctr.runtime_id)
    if state and state.get("status") == "paused":
        cluster.runc.resume(ctr.runtime_id)


def freeze(cluster: LocalCluster, ctr: ContainerRecord, pod: PodRecord, undo: ExitStack) -> None:
    """Freeze a container (cgroup freezer); thawed again by the undo if what follows fails.

    podhop writes the freezer itself and polls it finely (runc's ``pause`` costs a runc start and
    gives up quickly on a CPU-throttled cgroup); CRIU then finds the cgroup frozen at its first look
    and skips its own 100 ms freezing step. runc reads the state back from the same freezer."""
    undo.callback(resume_source, cluster, ctr, pod)
    rel = podops.container_cgroup(cluster, pod, ctr.name)
    try:
        frozen = cgroups.freeze(rel)
    except OSError as exc:
        raise MigrationError("freeze", f"cannot freeze {ctr.name}: {exc}") from exc
    if not frozen:
        raise MigrationError("freeze", f"{ctr.name} did not freeze within 5 s")


def secure_links(move: ContainerMove, undo: ExitStack) -> None:
    """Post-copy: this migration's TLS material for CRIU's page-server connection (see
    :class:`~podhop.runtime.criu.Tls`), root-only, in the move's own checkpoint directory."""
    move.tls = criu.make_tls(move.src.images.parent / "tls", [move.dst.node.ip, move.src.node.ip])


def link_pages(cluster: LocalCluster, move: ContainerMove, undo: ExitStack, timeout: float) -> None:
    """Cold and clone with much memory: memory will stream to a page server on the target while CRIU
    dumps, over a connection made now (:class:`~podhop.backends.local.carry.PageLink`), so that
    neither start-up nor hand-shake is part of the freeze. Only the source node may connect.

    Only for a dump CRIU is driven for directly (``runc checkpoint`` cannot hand CRIU a
    connection): the images of any other go over the link with the rest of the checkpoint."""
    fd = transfer.PS_SOCKET_FD
    dump_argv = _checkpoint_argv(cluster, move, leave_running=True, ps_socket=fd)
    if dump_argv is None or cluster.runc.criu is None:
        return
    server_argv = criu.page_server_argv(
        cluster.runc.criu, move.dst.images, move.dst.work / "page-server.log", fd
    )
    link = carry.PageLink.start(move.src, move.dst, server_argv, dump_argv, timeout)
    undo.callback(link.stop)
    move.page_link, move.page_server_port = link, link.port


def dump_leave_running(
    cluster: LocalCluster, move: ContainerMove, pod: PodRecord, undo: ExitStack, timeout: float
) -> None:
    """Checkpoint with the source left as it is (running, or frozen after :func:`freeze`).

    With a page link (:func:`link_pages`), memory streams to the target node while CRIU dumps;
    without one, every image lands in the source's images directory and crosses the link with the
    rest of the checkpoint (:func:`~podhop.backends.local.carry.start_transfer`)."""
    undo.callback(resume_source, cluster, move.source, pod)  # thaw; remove any CRIU network lock
    try:
        if move.page_link is not None:
            move.page_link.go(timeout)
        else:
            argv = _checkpoint_argv(cluster, move, leave_running=True)
            assert argv is not None
            sh.run_group(criu.in_netns(move.src.netns_path, argv), timeout)
    except (CommandError, criu.CriuError, subprocess.TimeoutExpired) as exc:
        failure = _fail("dump", f"checkpoint of {move.source.name}", exc, move.src.work / "dump.log")
        receiver = criu.last_error(move.dst.work / "page-server.log")
        if receiver:  # the cause is often on the receiving side (a full disk, say)
            failure = MigrationError(
                "dump", f"{str(failure).split(': ', 1)[1]}; target's page server: {receiver}"
            )
        raise failure from exc
    pages = move.dst.images if move.page_link is not None else move.src.images
    move.page_bytes = sum(p.stat().st_size for p in pages.glob("pages-*.img"))
    move.stats = criu.read_stats(move.src.work / "stats-dump")


def _checkpoint_argv(
    cluster: LocalCluster,
    move: ContainerMove,
    *,
    leave_running: bool = False,
    ps_socket: int | None = None,
    page_server: tuple[str, int] | None = None,
    lazy: bool = False,
    status_fd: int | None = None,
) -> list[str] | None:
    """The checkpoint of the source container into its images dir (to be run in the source node's
    namespace): CRIU driven directly as runc would drive it (:mod:`podhop.runtime.dump`), memory
    going to the connection it inherits as ``ps_socket`` if given; or ``runc checkpoint`` for a
    container only runc can describe, and for a lazy dump — ``None`` if that would need ``ps_socket``.

    Also makes the directories both sides need and sets the dump's CRIU options.
    """
    for d in (move.src.images, move.src.work, move.dst.images, move.dst.work):
        d.mkdir(parents=True, exist_ok=True)
    tls = move.tls.config_lines() if move.tls else ""
    Path(move.source.bundle, "criu.conf").write_text(DUMP_CONFIG + tls)
    wrapper = cluster.runc.criu
    # A lazy dump stays with runc: driven directly, CRIU's lazy dump failed here ("Unable to detach
    # from PID: No such process") where runc's works.
    direct = wrapper is not None and not lazy
    plan = dump.load(cluster.runc.root, move.source.runtime_id) if direct else None
    if plan is not None and wrapper is not None:
        plan.write_descriptors(move.src.images)
        return plan.argv(
            wrapper, move.src.images, move.src.work, leave_running=leave_running, ps_socket=ps_socket
        )
    if ps_socket is not None:
        return None
    return cluster.runc.argv(
        "checkpoint",
        "--image-path",
        str(move.src.images),
        "--work-path",
        str(move.src.work),
        "--tcp-established",
        *(["--leave-running"] if leave_running else []),
        *(["--page-server", f"{page_server[0]}:{page_server[1]}"] if page_server else []),
        *(["--lazy-pages"] if lazy else []),
        *(["--status-fd", str(status_fd)] if status_fd is not None else []),
        move.source.runtime_id,
    )


def lazy_dump(
    cluster: LocalCluster, move: ContainerMove, pod: PodRecord, undo: ExitStack, timeout: float
) -> int:
    """Post-copy: dump all but memory; the source stays frozen and serves its pages until pulled.

    Returns the page server's port on the source node (only the target may connect: TLS and a guard).
    """
    port = carry.free_port()
    undo.callback(nat.guard_port(move.src.node.netns, move.src.node.ip, port, move.dst.node.ip))
    read_fd, write_fd = os.pipe()
    argv = _checkpoint_argv(
        cluster, move, page_server=(move.src.node.ip, port), lazy=True, status_fd=write_fd
    )
    assert argv is not None
    try:
        proc = subprocess.Popen(
            criu.in_netns(move.src.netns_path, argv),
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    finally:
        os.close(write_fd)
    move.dump_proc = proc

    def stop_dump() -> None:
        sh.kill_group(proc.pid)
        proc.wait(timeout=10)
        resume_source(cluster, move.source, pod)

    undo.callback(stop_dump)
    with os.fdopen(read_fd, "rb") as status:
        ready = _read_with_timeout(status.fileno(), timeout)
    if not ready:
        stderr = (
            proc.stderr.read().decode(errors="replace") if proc.poll() is not None and proc.stderr else ""
        )
        raise MigrationError(
            "dump",
            f"lazy checkpoint of {move.source.name} did not get ready: "
            f"{criu.last_error(move.src.work / 'dump.log') or stderr.strip() or 'timeout'}",
        )
    return port


def _read_with_timeout(fd: int, timeout: float) -> bool:
    import select

    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready) and os.read(fd, 1) != b""


def prestart_monitor(move: ContainerMove, undo: ExitStack) -> None:
    """Start the restored container's monitor now, so that its start-up is not part of the restore."""
    move.monitor = monitor.prestart(Path(move.target.log), Path(move.target.exit_file))
    undo.callback(move.monitor.cancel)


def configure_target(move: ContainerMove, cluster: LocalCluster, new_pod: PodRecord) -> None:
    """Write the restored container's OCI config ahead of the freeze: it depends on the pod spec and
    the target's sandbox only (building it imports pydantic and reads the image: ~10 ms)."""
    move.join_cgroup = write_config(cluster, move.target, new_pod)


def mount_rootfs(cluster: LocalCluster, tc: ContainerRecord, new_pod: PodRecord, undo: ExitStack) -> Path:
    """Mount the target container's overlay (its upper dir may already hold the source's changes)."""
    rootfs = podops.mount_overlay(cluster, new_pod.node, resolve(tc.image), Path(tc.bundle))
    undo.callback(_unmount_quietly, rootfs)
    return rootfs


def write_config(
    cluster: LocalCluster, tc: ContainerRecord, new_pod: PodRecord, process: oci.ProcessSpec | None = None
) -> str | None:
    """The restored container's OCI config, built afresh from the pod's spec for its new home (new
    netns, cgroup, mount sources, the external mounts its checkpoint expects) with restore-time CRIU
    options; ``process`` overrides what the pod spec and image say the container runs (an archive's
    own, already validated). Returns the cgroup runc must restore from (see :func:`runc_restore`)."""
    spec = next(c for c in spec_from_record(new_pod).containers if c.name == tc.name)
    proc = process or podops.image_process(spec, resolve(tc.image))
    binds, cgroup_mount = podops.external_binds(cluster, new_pod, tc)
    config = podops.container_config(cluster, new_pod, spec, proc, binds, cgroup_mount)
    bundle = Path(tc.bundle)
    (bundle / "config.json").write_text(json.dumps(config, indent=1))
    (bundle / "criu.conf").write_text("tcp-close\n")  # the address changed: connections cannot live on
    return config["linux"]["cgroupsPath"].strip("/") if cgroup_mount else None


def runc_restore(
    cluster: LocalCluster,
    tc: ContainerRecord,
    images: Path,
    work: Path,
    node: str,
    undo: ExitStack,
    timeout: float,
    lazy: bool = False,
    join_cgroup: str | None = None,
    pending: monitor.Pending | None = None,
) -> None:
    """``runc restore`` under a new monitor (``pending``, when one was started ahead); on failure,
    a safe delete (see the recipes' traps).

    ``join_cgroup``: start runc from inside that cgroup (a checkpoint with cgroup mounts: runc binds
    its own process's cgroups into the container)."""
    runc = cluster.runc
    work.mkdir(parents=True, exist_ok=True)
    argv = runc.argv(
        "restore",
        "--detach",
        "--image-path",
        str(images),
        "--work-path",
        str(work),
        "--bundle",
        tc.bundle,
        "--pid-file",
        tc.pid_file,
        "--tcp-established",
        *(["--lazy-pages"] if lazy else []),
        tc.runtime_id,
    )
    undo.callback(_delete_failed_restore, cluster, tc)
    try:
        pending = pending or monitor.prestart(Path(tc.log), Path(tc.exit_file))
        tc.monitor_pid = pending.go(argv, timeout=timeout, join_cgroup=join_cgroup)
    except RuntimeError as exc:
        detail = (
            criu.last_error(work / "restore.log", work / "lazy-pages.log") or runc.last_error() or str(exc)
        )
        raise MigrationError("restore", f"restore of {tc.name} on {node} failed: {detail}") from exc


def restore(
    cluster: LocalCluster,
    move: ContainerMove,
    new_pod: PodRecord,
    undo: ExitStack,
    timeout: float,
    lazy: bool,
) -> None:
    """Restore the container on the target from the transferred images, under a new monitor (its
    OCI config was written in prepare: :func:`configure_target`)."""
    tc = move.target
    mount_rootfs(cluster, tc, new_pod, undo)
    if Path(move.source.log).exists():
        shutil.copyfile(move.source.log, tc.log)
    runc_restore(
        cluster,
        tc,
        move.dst.images,
        move.dst.work,
        new_pod.node,
        undo,
        timeout,
        lazy,
        move.join_cgroup,
        move.monitor,
    )


def _unmount_quietly(path: Path) -> None:
    if os.path.ismount(path) and not sh.ok(["umount", str(path)]):
        sh.ok(["umount", "-l", str(path)])


def _delete_failed_restore(cluster: LocalCluster, tc: ContainerRecord) -> None:
    """Remove a restored-or-half-restored container without letting runc wipe its root filesystem."""
    runc = cluster.runc
    runc.kill(tc.runtime_id, "KILL", all_processes=True)
    time.sleep(0.05)
    mounts.unmount_under(runc.root / tc.runtime_id)  # CRIU's criu-root bind mount: never delete through it
    runc.delete(tc.runtime_id, force=True)
    if tc.monitor_pid:
        podops.wait_gone(tc.monitor_pid, 2.0)


def kill_frozen_source(cluster: LocalCluster, ctr: ContainerRecord) -> None:
    """Kill a frozen source without letting it run again: queue SIGKILL, then thaw."""
    runc = cluster.runc
    runc.kill(ctr.runtime_id, "KILL", all_processes=True)
    state = runc.state(ctr.runtime_id)
    if state and state.get("status") == "paused":
        runc.resume(ctr.runtime_id)
