"""Creating and deleting a Kubernetes-kind cluster: real control plane, real kubelets, one host.

Why: the same shape as the local kind — a node is a network namespace with its
own address on the cluster bridge and its own pod CIDR — but every node runs a
real kubelet, containerd (own root, state, sockets, runc root) and kube-proxy,
and the control plane (etcd, API server, controller manager, scheduler,
metrics-server, the registry and the LoadBalancer controller) runs on the host,
bound to the bridge address. The record goes into the state store first
(status ``creating``, ``kind = "kubernetes"``), so a crash half-way leaves
something delete can find; delete never trusts the record alone but sweeps by
the names ``layout`` derives from the index.

Order of delete: the LB controller and kubelets first (so nothing restarts
containers), then every process in the cluster's cgroups, then every process
naming the cluster's directories (shims, containerds, control plane), then
mounts, namespaces, links, CNI state, cgroups and files.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podhop import sh
from podhop.errors import AlreadyExistsError, ClusterError, NotFoundError, PodhopError
from podhop.kubekind import (
    agentimage,
    certs,
    components,
    config,
    control_plane,
    kubectl,
    manifests,
    nodes,
    registry,
)
from podhop.kubekind import processes as procs
from podhop.kubekind.layout import MAX_NODES, KubeLayout
from podhop.net import netns
from podhop.runtime import cgroups
from podhop.runtime.mounts import mounts_under, unmount_under
from podhop.settings import paths
from podhop.store import ClusterRecord, Store

Report = Callable[[str], None]
KIND = "kubernetes"
MAX_CLUSTERS = 50
CNI_STATE = Path("/var/lib/cni")


def _quiet(_: str) -> None:
    return None


@dataclass
class KubeCluster:
    record: ClusterRecord

    @property
    def layout(self) -> KubeLayout:
        return KubeLayout(self.record.name, self.record.idx, paths())

    @property
    def kubeconfig(self) -> Path:
        return self.layout.admin_kubeconfig


def _valid_name(name: str) -> bool:
    from podhop.backends.local.layout import valid_name

    return valid_name(name)


def create_cluster(
    store: Store,
    name: str,
    n_nodes: int,
    node_cpu_m: int,
    node_memory_b: int,
    link_bandwidth_bps: int | None = None,
    report: Report = _quiet,
) -> KubeCluster:
    """Create a cluster of ``n_nodes`` kubelets; on failure everything made so far is removed."""
    if not _valid_name(name):
        raise ClusterError(f"invalid cluster name {name!r}: use 1-24 lowercase letters, digits and '-'")
    if not 1 <= n_nodes <= MAX_NODES:
        raise ClusterError(
            f"--nodes must be between 1 and {MAX_NODES} for a Kubernetes cluster, got {n_nodes}"
        )
    if node_cpu_m < 100 or node_memory_b < 256 * 2**20:
        raise ClusterError("a Kubernetes node needs at least 100m CPU and 256Mi memory")
    missing = [c.key for c in components.COMPONENTS if not components.is_built(c)]
    if missing:
        raise ClusterError(
            f"Kubernetes components not built: {', '.join(missing)}",
            hint="run `podhop setup` (builds them once)",
        )
    for tool in ("skopeo", "docker-registry", "nsenter", "runc"):
        if sh.which(tool) is None:
            raise ClusterError(f"`{tool}` is missing", hint="run `podhop setup`")
    with store.lock(name):
        if store.cluster(name) is not None:
            raise AlreadyExistsError(f"cluster {name!r} already exists", hint=f"podhop cluster delete {name}")
        record = store.add_cluster(  # the index in one transaction: concurrent creates never share one
            lambda idx: ClusterRecord(
                name, idx, "creating", node_cpu_m, node_memory_b, link_bandwidth_bps, kind=KIND
            ),
            MAX_CLUSTERS,
        )
        cluster = KubeCluster(record)
        try:
            _create(cluster, n_nodes, report)
        except BaseException as exc:
            report("create failed: removing what was made")
            logs = cluster.layout.logs
            kept = _keep_logs(logs)
            _sweep(cluster.layout, _quiet)
            store.delete_cluster(name)
            where = f" (logs kept in {kept})" if kept else ""
            if isinstance(exc, PodhopError):
                exc.args = (f"{exc}{where}",)
                raise
            if isinstance(exc, Exception):
                raise ClusterError(f"creating cluster {name!r} failed: {exc}{where}") from exc
            raise
        record.status = "ready"
        store.put_cluster(record)
        return cluster


def _keep_logs(logs: Path) -> Path | None:
    if not logs.is_dir():
        return None
    dest = paths().data_dir / "k8s" / "failed-logs" / f"{logs.parent.name}-{int(time.time())}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        shutil.copytree(logs, dest)
        return dest
    return None


def _create(cluster: KubeCluster, n_nodes: int, report: Report) -> None:
    lay, rec = cluster.layout, cluster.record
    lay.dir.mkdir(parents=True, exist_ok=True)
    lay.run_dir.mkdir(parents=True, exist_ok=True)
    report(f"host bridge {lay.bridge} {lay.host_ip}/24")
    nodes.create_host_network(lay)
    report("certificates")
    node_list = [(lay.node_name(i), lay.node_ip(i)) for i in range(1, n_nodes + 1)]
    certs.write_pki(lay.pki, certs.plan([lay.host_ip, lay.kubernetes_service_ip], node_list))
    _write_kubeconfigs(lay, n_nodes)
    report(f"registry on {lay.registry}")
    registry.start_registry(lay)
    registry.push_base_images(lay, report)
    _start_control_plane(lay, report)
    agentimage.apply(lay, report)  # its pods start as the nodes register
    budget = config.NodeBudget(rec.node_cpu_m, rec.node_memory_b, *nodes.host_capacity())
    for i in range(1, n_nodes + 1):
        report(f"{lay.node_name(i)}: namespace, containerd, kubelet, kube-proxy")
        nodes.create_node(lay, i, budget, rec.link_bandwidth_bps)
    nodes.link_nodes(lay, n_nodes)
    report(f"waiting for {n_nodes} nodes to be Ready")
    kubectl.wait_nodes_ready(lay, n_nodes, timeout=180)
    _start_lb_controller(lay, n_nodes)
    report(f"waiting for podhop's node agent on {n_nodes} nodes")
    agentimage.wait_ready(lay, n_nodes, timeout=120)


def _write_kubeconfigs(lay: KubeLayout, n_nodes: int) -> None:
    p = lay.pki
    users = {
        "admin": ("kubernetes-admin", lay.admin_kubeconfig),
        "controller-manager": ("system:kube-controller-manager", lay.dir / "controller-manager.kubeconfig"),
        "scheduler": ("system:kube-scheduler", lay.dir / "scheduler.kubeconfig"),
        "kube-proxy": ("system:kube-proxy", lay.dir / "kube-proxy.kubeconfig"),
        "metrics-server": ("system:metrics-server", lay.dir / "metrics-server.kubeconfig"),
    }
    for i in range(1, n_nodes + 1):
        n = lay.node_name(i)
        users[f"kubelet-{n}"] = (f"system:node:{n}", lay.node_dir(i) / "kubelet.kubeconfig")
    for stem, (user, path) in users.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config.kubeconfig(lay, user, p / f"{stem}.crt", p / f"{stem}.key"))
        path.chmod(0o600)


def _start_control_plane(lay: KubeLayout, report: Report) -> None:
    b = components.binary
    pki = lay.pki
    report("etcd")
    pid = procs.start(
        "etcd", control_plane.etcd_argv(lay, b("etcd")), lay.logs / "etcd.log", lay.run_dir / "etcd.pid"
    )
    procs.wait_until(
        "etcd",
        lambda: procs.https_ok(
            lay.host_ip,
            2379,
            "/health",
            pki / "ca.crt",
            pki / "apiserver-etcd-client.crt",
            pki / "apiserver-etcd-client.key",
        ),
        60,
        pid=pid,
        log=lay.logs / "etcd.log",
    )
    report("kube-apiserver")
    log = lay.logs / "kube-apiserver.log"
    pid = procs.start(
        "kube-apiserver",
        control_plane.apiserver_argv(lay, b("kube-apiserver")),
        log,
        lay.run_dir / "kube-apiserver.pid",
    )
    procs.wait_until(
        "kube-apiserver",
        lambda: procs.https_ok(
            lay.host_ip, 6443, "/readyz", pki / "ca.crt", pki / "admin.crt", pki / "admin.key"
        ),
        180,
        pid=pid,
        log=log,
    )
    report("RBAC (kubelet API incl. nodes/checkpoint), metrics API")
    kubectl.apply(
        lay, manifests.objects_yaml(manifests.bootstrap_objects(lay, (pki / "ca.crt").read_bytes()))
    )
    for name, argv in (
        ("kube-controller-manager", control_plane.controller_manager_argv(lay, b("kube-controller-manager"))),
        ("kube-scheduler", control_plane.scheduler_argv(lay, b("kube-scheduler"))),
        ("metrics-server", control_plane.metrics_server_argv(lay, b("metrics-server"))),
    ):
        report(name)
        procs.start(name, argv, lay.logs / f"{name}.log", lay.run_dir / f"{name}.pid")


def _start_lb_controller(lay: KubeLayout, n_nodes: int) -> None:
    argv = [
        sys.executable,
        "-m",
        "podhop.kubekind.lbcontroller",
        f"--cluster-dir={lay.dir}",
        f"--api-host={lay.host_ip}",
        "--api-port=6443",
        f"--pool-prefix={lay.lb_ip(0).rsplit('.', 1)[0]}",
        *(f"--netns={lay.node_netns(i)}" for i in range(1, n_nodes + 1)),
    ]
    procs.start("lb-controller", argv, lay.logs / "lb-controller.log", lay.run_dir / "lb-controller.pid")


# ----------------------------------------------------------------------------- delete


def delete_cluster(store: Store, name: str, report: Report = _quiet) -> list[str]:
    """Delete the cluster and everything it made; return any residue (empty when clean)."""
    record = store.cluster(name)
    if record is None:
        raise NotFoundError(f"cluster {name!r} not found")
    with store.lock(name):
        record.status = "deleting"
        store.put_cluster(record)
        lay = KubeCluster(record).layout
        left = _sweep(lay, report)
        if not left:
            store.delete_cluster(name)
        return left


def _markers(lay: KubeLayout) -> list[str]:
    return [str(lay.dir) + "/", str(lay.dir) + " ", str(lay.run_dir) + "/", f"--cluster-dir={lay.dir}"]


def _sweep(lay: KubeLayout, report: Report) -> list[str]:
    report("stopping the LB controller and kubelets")
    kubelets = [
        p for p in procs.pids_mentioning(_markers(lay)) if _comm(p) in ("kubelet", "python3", "python")
    ]
    procs.terminate(kubelets, grace=3)
    report("killing containers")
    deadline = time.monotonic() + 10
    while (left := cgroups.procs(lay.cgroup_parent)) and time.monotonic() < deadline:
        procs.terminate(left, grace=0.5)
    report("stopping shims, containerd, kube-proxy, control plane, registry")
    procs.terminate(procs.pids_mentioning(_markers(lay)), grace=5)
    report("unmounting")
    for _ in range(3):
        unmount_under(lay.run_dir)
        unmount_under(lay.dir)
    report("removing namespaces, links, CNI state, cgroups")
    for ns in netns.list_netns(lay.netns_prefix):
        netns.delete(ns)
    nodes.delete_host_network(lay)
    _remove_cni_state(lay)
    deadline = time.monotonic() + 5
    while cgroups.remove_tree(lay.cgroup_parent) and time.monotonic() < deadline:
        procs.terminate(cgroups.procs(lay.cgroup_parent), grace=0.2)
        time.sleep(0.1)
    for root in cgroups.hierarchies():
        with contextlib.suppress(OSError):
            (root / "podhop-kube").rmdir()
    if not [m for m in mounts_under(lay.dir) + mounts_under(lay.run_dir)]:
        shutil.rmtree(lay.dir, ignore_errors=True)
        shutil.rmtree(lay.run_dir, ignore_errors=True)
        for i in range(1, MAX_NODES + 1):
            sock = lay.shim_socket_dir(i)
            if sock.exists():
                shutil.rmtree(sock, ignore_errors=True)
        with contextlib.suppress(OSError):
            lay.shim_socket_dir(1).parent.rmdir()
    return residue(lay.cluster, lay.idx)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _cni_results(lay: KubeLayout) -> list[Path]:
    """CNI's shared result cache entries of this cluster: its network's, and the loopback ones
    containerd adds for every sandbox (named by sandbox id; they name the netns under our run dir)."""
    results = CNI_STATE / "results"
    if not results.is_dir():
        return []
    net, marker = config.cni_network_name(lay), (str(lay.run_dir) + "/").encode()
    found = []
    for f in results.iterdir():
        if f.name.startswith(f"{net}-"):
            found.append(f)
            continue
        with contextlib.suppress(OSError):
            if marker in f.read_bytes():
                found.append(f)
    return found


def _remove_cni_state(lay: KubeLayout) -> None:
    for f in _cni_results(lay):
        f.unlink(missing_ok=True)
    shutil.rmtree(CNI_STATE / "networks" / config.cni_network_name(lay), ignore_errors=True)


def residue(name: str, idx: int) -> list[str]:
    """Everything of cluster ``name`` still on the machine (the local kind's checks, this kind's names)."""
    lay = KubeLayout(name, idx, paths())
    left = [f"netns {n}" for n in netns.list_netns(lay.netns_prefix)]
    left += [f"link {n}" for n in netns.host_links(f"pk{idx}") if lay.owns_link(n)]
    left += [f"route {r}" for r in nodes.leftover_routes(lay)]
    left += [f"cgroup {c}" for c in cgroups.leftovers(lay.cgroup_parent)]
    left += [f"mount {m}" for m in mounts_under(lay.dir) + mounts_under(lay.run_dir)]
    left += [f"process {pid}" for pid in procs.pids_mentioning(_markers(lay))]
    left += [f"file {p}" for p in (lay.dir, lay.run_dir) if p.exists()]
    shims = lay.shim_socket_dir(1).parent
    if shims.is_dir():
        left += [f"file {p}" for p in shims.glob(f"{idx}-*")]
    left += [f"cni cache {f}" for f in _cni_results(lay)]
    if (CNI_STATE / "networks" / config.cni_network_name(lay)).exists():
        left.append(f"cni state {CNI_STATE / 'networks' / config.cni_network_name(lay)}")
    return left


def node_count(record: ClusterRecord) -> int:
    nodes_dir = KubeCluster(record).layout.dir / "nodes"
    return len(list(nodes_dir.iterdir())) if nodes_dir.is_dir() else 0


def kubeconfig_path(store: Store, name: str) -> Path:
    record = store.cluster(name)
    if record is None:
        raise NotFoundError(f"cluster {name!r} not found")
    if record.kind != KIND:
        raise ClusterError(f"cluster {name!r} is a {record.kind} cluster: it has no kubeconfig")
    return KubeCluster(record).kubeconfig
