"""Pods on a local node: a network namespace, a veth on the node's bridge, runc containers.

Why: this is the kubelet of the local backend. A pod gets a sandbox id that
names its network namespace, its veth and its cgroup; an address from its
node's CIDR; and, per container, an OCI bundle whose root filesystem is an
overlay over the node's copy of the image, started by runc under a monitor
that holds its stdio. Every step registers its undo on an ``ExitStack``
before the next one runs, so a failure at any point removes exactly what was
made and nothing else — no half-made pod is ever left on a node.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from podhop import sh
from podhop.backends.local.cluster import LocalCluster
from podhop.backends.local.layout import pod_ips
from podhop.errors import PodhopError, RuntimeFailure, SchedulingError
from podhop.net import netns
from podhop.objects.model import ContainerSpec, PodSpec
from podhop.runtime import cgroups, monitor, oci, safefs
from podhop.runtime.images import Image, resolve
from podhop.runtime.mounts import mounts_under, unmount_under
from podhop.store import ContainerRecord, NodeRecord, PodRecord, now


def pod_dir(cluster: LocalCluster, node: str, name: str, sandbox: str) -> Path:
    return cluster.node_dir(node) / "pods" / f"{name}.{sandbox}"


def container_cgroup(cluster: LocalCluster, pod: PodRecord, container: str) -> str:
    """A container's cgroup, relative to each hierarchy's root (its runc ``cgroupsPath``)."""
    return f"{cgroups.relpath(cluster.name, pod.node, pod.sandbox)}/{container}"


def pull(cluster: LocalCluster, node: str, image: Image) -> Path:
    """Make ``image`` present in the node's image store; return its root filesystem.

    The node store holds a link to the host's unpacked layer (content-addressed,
    so every node shares the bytes, as nodes pulling the same digest would).
    """
    link = cluster.node_dir(node) / "images" / image.digest.replace(":", "-")
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(image.rootfs)
        tmp.rename(link)
    return link.resolve()


def container_record(
    cluster: LocalCluster, pod: PodRecord, name: str, image: str, ports: list[int]
) -> ContainerRecord:
    """Where a container of ``pod`` lives: runtime id, bundle, log, exit and pid files."""
    bundle = pod_dir(cluster, pod.node, pod.name, pod.sandbox) / name
    return ContainerRecord(
        name=name,
        image=image,
        runtime_id=f"{pod.name}.{pod.sandbox}.{name}",
        bundle=str(bundle),
        log=str(bundle.parent / f"{name}.log"),
        exit_file=str(bundle / "exit.json"),
        pid_file=str(bundle / "pid"),
        ports=ports,
    )


def free_ip(
    cluster: LocalCluster, node: NodeRecord, reserved: set[str] | frozenset[str] = frozenset()
) -> str:
    """The first unused address of the node's CIDR (``reserved`` ones count as used)."""
    used = {p.ip for p in cluster.store.pods(cluster.name) if p.node == node.name} | reserved
    for ip in pod_ips(node.pod_cidr):
        if ip not in used:
            return ip
    raise SchedulingError(f"node {node.name} has no free pod address in {node.pod_cidr}")


def create_pod(
    cluster: LocalCluster,
    node: NodeRecord,
    namespace: str,
    name: str,
    labels: dict[str, str],
    spec: PodSpec,
    owner: tuple[str, str] | None = None,
) -> PodRecord:
    """Create and start the pod on ``node``; on failure leave nothing behind."""
    images = [resolve(c.image) for c in spec.containers]
    sandbox = secrets.token_hex(3)
    record = PodRecord(
        cluster=cluster.name,
        namespace=namespace,
        name=name,
        uid=secrets.token_hex(16),
        node=node.name,
        sandbox=sandbox,
        netns=cluster.layout.pod_netns(name, sandbox),
        ip=free_ip(cluster, node),
        labels=labels,
        spec=spec.to_k8s(),
        owner_kind=owner[0] if owner else None,
        owner_name=owner[1] if owner else None,
    )
    with ExitStack() as undo:
        create_sandbox(cluster, node, record)
        undo.callback(delete_sandbox, cluster, record)
        undo.callback(cluster.store.remove, "Pod", cluster.name, namespace, name)
        cluster.store.put_pod(record)  # reserve the address before the slow part
        for ctr, image in zip(spec.containers, images, strict=True):
            crec = _start_container(cluster, record, ctr, image)
            record.containers.append(crec)
            undo.callback(stop_container, cluster, crec, 0.0)
        record.phase = "Running"
        record.started = now()
        cluster.store.put_pod(record)
        undo.pop_all()
    return record


def create_sandbox(cluster: LocalCluster, node: NodeRecord, pod: PodRecord) -> None:
    veth = f"vp{pod.sandbox}"
    netns.add(pod.netns)
    netns.batch(None, [f"link add {veth} netns {node.netns} type veth peer name eth0 netns {pod.netns}"])
    # The node forgets whatever had this address before (a pod just deleted): its neighbour entry
    # would send the new pod's traffic to the old pod's link address (measured: a pod made again
    # at once at its predecessor's address was not reachable for over 30 s).
    netns.batch(node.netns, [f"link set {veth} master cbr0 up", f"neigh flush to {pod.ip} nud all"])
    netns.batch(
        pod.netns,
        [
            f"addr add {pod.ip}/24 dev eth0",
            "link set eth0 up",
            f"route add default via {cluster.layout.pod_gateway(node.idx)}",
        ],
    )
    pod_dir(cluster, node.name, pod.name, pod.sandbox).mkdir(parents=True, exist_ok=True)
    write_etc(cluster, pod)


def delete_sandbox(cluster: LocalCluster, pod: PodRecord) -> None:
    netns.delete(pod.netns)
    top = pod_dir(cluster, pod.node, pod.name, pod.sandbox)
    unmount_under(top)
    if not mounts_under(top):
        shutil.rmtree(top, ignore_errors=True)
    cgroups.remove_tree(cgroups.relpath(cluster.name, pod.node, pod.sandbox))


#: Files every container of a pod gets from the pod's own directory (as the kubelet's etc-hosts):
#: bind-mounted, never written into the image tree, so a link planted there leads nowhere.
ETC_FILES = ("hosts", "hostname", "resolv.conf")
#: A container's ``/`` is read-only by mode, as in Podman and CRI-O (containers/storage): CRIU checks
#: the mode on restore, so archives only move between runtimes whose roots agree.
ROOT_MODE = 0o555


def write_etc(cluster: LocalCluster, pod: PodRecord) -> Path:
    """The pod's ``hosts``, ``hostname`` and ``resolv.conf`` in its own directory; return that directory."""
    etc = pod_dir(cluster, pod.node, pod.name, pod.sandbox) / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hostname").write_text(pod.name + "\n")
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{pod.ip}\t{pod.name}\n")
    (etc / "resolv.conf").write_text("# podhop: no cluster DNS\n")
    return etc


def etc_binds(cluster: LocalCluster, pod: PodRecord) -> tuple[oci.BindMount, ...]:
    etc = pod_dir(cluster, pod.node, pod.name, pod.sandbox) / "etc"
    return tuple(oci.BindMount(f"/etc/{name}", str(etc / name)) for name in ETC_FILES)


def external_binds(
    cluster: LocalCluster, pod: PodRecord, ctr: ContainerRecord
) -> tuple[tuple[oci.BindMount, ...], bool]:
    """The container's mounts beyond the pod's /etc files that its checkpoints expect
    (``ctr.external``), from sources of the pod's own: empty marker files in the pod's directory,
    ``/dev/shm`` from ``shm`` in its bundle; and whether it needs the cgroup file system."""
    from podhop.archive.layout import external_mounts  # pydantic: kept out of `podhop get`'s start-up

    plan = external_mounts(ctr.external)
    pdir = pod_dir(cluster, pod.node, pod.name, pod.sandbox)
    binds = []
    for destination, name in plan.files:
        (pdir / name).touch()
        binds.append(oci.BindMount(destination, str(pdir / name)))
    if plan.shm:
        shm = Path(ctr.bundle) / "shm"
        shm.mkdir(parents=True, exist_ok=True)
        os.chmod(shm, 0o1777)
        binds.append(oci.BindMount("/dev/shm", str(shm), restricted=True))
    return tuple(binds), plan.cgroup


def container_config(
    cluster: LocalCluster,
    pod: PodRecord,
    ctr: ContainerSpec,
    process: oci.ProcessSpec,
    extra_binds: tuple[oci.BindMount, ...] = (),
    cgroup_mount: bool = False,
) -> dict[str, Any]:
    """The OCI config of one container of ``pod``, built by podhop from the pod spec (at creation, and
    again on every restore: nothing of a checkpointed config is reused)."""
    base = pod_dir(cluster, pod.node, pod.name, pod.sandbox) / ctr.name
    return oci.config(
        process,
        hostname=pod.name,
        netns_path=netns.netns_path(pod.netns),
        cgroups_path=container_cgroup(cluster, pod, ctr.name),
        cpu_limit_m=ctr.limits.cpu_m,
        memory_limit_b=ctr.limits.memory_b,
        annotations={
            "io.kubernetes.pod.name": pod.name,
            "io.kubernetes.pod.namespace": pod.namespace,
            "io.kubernetes.container.name": ctr.name,
            # runc hands this file to CRIU on checkpoint/restore: per-operation options
            # (skip-in-flight, tcp-close) without touching the host's /etc/criu/runc.conf.
            "org.criu.config": str(base / "criu.conf"),
        },
        binds=etc_binds(cluster, pod) + extra_binds,
        cgroup_mount=cgroup_mount,
    )


def image_process(ctr: ContainerSpec, image: Image) -> oci.ProcessSpec:
    """What a container runs: Kubernetes' rule over the image's config."""
    cfg = image.config
    return oci.resolve_process(
        cfg.entrypoint, cfg.cmd, cfg.env, cfg.working_dir, ctr.command, ctr.args, ctr.env, ctr.working_dir
    )


def mount_overlay(cluster: LocalCluster, node: str, image: Image, bundle: Path) -> Path:
    """Mount a container's root filesystem: an overlay of its own upper dir over the node's image."""
    rootfs, upper, work = bundle / "rootfs", bundle / "upper", bundle / "work"
    for d in (rootfs, upper, work):
        d.mkdir(parents=True, exist_ok=True)
    lower = pull(cluster, node, image)
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    sh.run(["mount", "-t", "overlay", "overlay", "-o", options, str(rootfs)])
    try:
        os.chmod(rootfs, ROOT_MODE)
        prepare_mount_points(rootfs)
    except PodhopError:
        sh.ok(["umount", str(rootfs)])
        raise
    return rootfs


def prepare_mount_points(rootfs: Path) -> None:
    """Make the pod's bind-mount points plain files, whatever the tree held there (a link to a host
    file, say): runc then mounts exactly where CRIU expects, and nothing is resolved through a link."""
    try:
        with safefs.open_root(rootfs) as root:
            for name in ETC_FILES:
                safefs.ensure_file(root, f"etc/{name}")
    except safefs.UnsafePathError as exc:
        raise RuntimeFailure(f"root filesystem {rootfs}: {exc}") from exc


def _start_container(
    cluster: LocalCluster, pod: PodRecord, ctr: ContainerSpec, image: Image
) -> ContainerRecord:
    base = pod_dir(cluster, pod.node, pod.name, pod.sandbox) / ctr.name
    mount_overlay(cluster, pod.node, image, base)
    config = container_config(cluster, pod, ctr, image_process(ctr, image))
    (base / "criu.conf").write_text("")
    (base / "config.json").write_text(json.dumps(config, indent=1))
    record = container_record(cluster, pod, ctr.name, image.name, [p.container_port for p in ctr.ports])
    runc = cluster.runc
    argv = runc.run_argv(record.runtime_id, base, Path(record.pid_file))
    try:
        record.monitor_pid = monitor.launch(argv, Path(record.log), Path(record.exit_file))
    except RuntimeError as exc:
        runc.delete(record.runtime_id, force=True)
        raise RuntimeFailure(
            f"container {ctr.name} of pod {pod.name} failed to start: {runc.last_error() or exc}"
        ) from exc
    return record


def stop_container(
    cluster: LocalCluster, ctr: ContainerRecord, grace_s: float, done: Callable[[int], bool] | None = None
) -> None:
    """Stop a container: its stop signal, up to ``grace_s`` to exit (or until ``done(pid)`` says it
    owes nobody anything any more), then SIGKILL and delete."""
    runc = cluster.runc
    if grace_s > 0 and runc.state(ctr.runtime_id) is not None:
        runc.kill(ctr.runtime_id, stop_signal(ctr))
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (pid := container_pid(ctr)) is not None:
            if done is not None and done(pid):
                break
            time.sleep(0.02)
    runc.kill(ctr.runtime_id, "KILL", all_processes=True)
    runc.delete(ctr.runtime_id, force=True)
    if ctr.monitor_pid:
        wait_gone(ctr.monitor_pid, 2.0)
    rootfs = Path(ctr.bundle) / "rootfs"
    if os.path.ismount(rootfs) and not sh.ok(["umount", str(rootfs)]):
        sh.ok(["umount", "-l", str(rootfs)])


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody has reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_signal(ctr: ContainerRecord) -> str:
    """The image's stop signal (nginx: SIGQUIT, a graceful shutdown), as runc kill spells it."""
    try:
        return resolve(ctr.image).config.stop_signal.removeprefix("SIG")
    except PodhopError:
        return "TERM"


def wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive(pid):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def delete_pod(cluster: LocalCluster, pod: PodRecord, grace_s: float = 5.0) -> None:
    """Stop the pod's containers (TERM, then KILL after ``grace_s``) and remove everything of it."""
    errors: list[Exception] = []
    for ctr in pod.containers:
        try:
            stop_container(cluster, ctr, grace_s)
        except PodhopError as exc:
            errors.append(exc)
    delete_sandbox(cluster, pod)
    cluster.store.remove("Pod", cluster.name, pod.namespace, pod.name)
    if errors:
        raise RuntimeFailure(f"pod {pod.name}: {errors[0]}") from errors[0]


def container_pid(ctr: ContainerRecord) -> int | None:
    """The container init's pid while it runs, else None."""
    try:
        pid = int(Path(ctr.pid_file).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and not Path(ctr.exit_file).exists() else None


def container_state(ctr: ContainerRecord) -> tuple[str, int | None]:
    """('running' | 'terminated' | 'unknown', exit code)."""
    exit_path = Path(ctr.exit_file)
    if exit_path.exists():
        try:
            return "terminated", json.loads(exit_path.read_text()).get("exitCode")
        except (OSError, ValueError):
            return "terminated", None
    return ("running", None) if container_pid(ctr) is not None else ("unknown", None)


def pod_phase(pod: PodRecord) -> str:
    states = [container_state(c) for c in pod.containers]
    if pod.phase != "Running" or not states:
        return pod.phase
    if all(s == "running" for s, _ in states):
        return "Running"
    if all(s == "terminated" for s, _ in states):
        return "Succeeded" if all(code == 0 for _, code in states) else "Failed"
    return "Unknown" if any(s == "unknown" for s, _ in states) else "Running"


def wait_ready(pods: list[PodRecord], timeout: float = 30.0) -> list[PodRecord]:
    """Wait until every declared container port of each pod accepts TCP; return those not ready."""
    pending = {(p.name, p.ip, port) for p in pods for c in p.containers for port in c.ports}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for item in sorted(pending):
            try:
                with socket.create_connection((item[1], item[2]), timeout=0.5):
                    pending.discard(item)
            except OSError:
                continue
        if pending:
            time.sleep(0.05)
    slow = {name for name, _, _ in pending}
    return [p for p in pods if p.name in slow]


def logs(pod: PodRecord, container: str | None = None) -> list[tuple[str, str, str]]:
    """(timestamp, stream, line) entries of a container's log (the first when unnamed)."""
    ctrs = [c for c in pod.containers if container in (None, c.name)]
    if not ctrs:
        names = ", ".join(c.name for c in pod.containers)
        raise PodhopError(f"pod {pod.name} has no container {container!r} (containers: {names})")
    out = []
    try:
        text = Path(ctrs[0].log).read_text(errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4:
            out.append((parts[0], parts[1], parts[3]))
    return out
