"""Creating and deleting a local cluster: the host bridge, node namespaces, budgets.

Why: a node is a network namespace with its own address on the cluster
bridge, its own pod CIDR behind a ``cbr0`` bridge, its own store directory
and a cgroup budget. Creation is a list of idempotent steps recorded in the
state database *before* anything is made (status ``creating``), so that a
crash half-way leaves a record that ``delete`` can sweep. Deletion never
trusts the database alone: it removes everything whose name carries the
cluster's prefix (see ``layout``), in an order that is safe — processes first,
then mounts, then namespaces, links, NAT chains and cgroups — and reports any
residue it could not remove.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podhop.backends.local.layout import MAX_CLUSTERS, MAX_NODES, Layout, valid_name
from podhop.errors import AlreadyExistsError, ClusterError, NotFoundError, PodhopError
from podhop.net import nat, netns, shaping
from podhop.runtime import cgroups
from podhop.runtime.mounts import mounts_under, unmount_under
from podhop.runtime.runc import Runc
from podhop.settings import Paths, paths
from podhop.store import ClusterRecord, NodeRecord, Store

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass
class LocalCluster:
    """An existing local cluster: its record, layout, runtime and directories."""

    store: Store
    record: ClusterRecord
    paths: Paths

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def layout(self) -> Layout:
        return Layout(self.record.name, self.record.idx)

    @property
    def dir(self) -> Path:
        return self.paths.cluster_dir(self.name)

    @property
    def run_dir(self) -> Path:
        return self.paths.cluster_run_dir(self.name)

    @property
    def runc(self) -> Runc:
        criu = self.paths.criu_wrapper if self.paths.criu_wrapper.exists() else None
        return Runc(root=self.run_dir / "runc", log=self.run_dir / "runc.log", criu=criu)

    def node_dir(self, node: str) -> Path:
        return self.dir / "nodes" / node

    def nodes(self) -> list[NodeRecord]:
        return self.store.nodes(self.name)

    def node(self, name: str) -> NodeRecord:
        for n in self.nodes():
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes())
        raise NotFoundError(f"node {name!r} not found in cluster {self.name!r} (nodes: {known})")


def open_cluster(store: Store, name: str | None) -> LocalCluster:
    """The local cluster named ``name``, or the only one when ``name`` is None."""
    clusters = [c for c in store.clusters() if c.kind == "local"]
    if name is None:
        name = os.environ.get("PODHOP_CLUSTER") or None
    if name is None:
        if len(clusters) == 1:
            return LocalCluster(store, clusters[0], paths())
        if not clusters:
            raise NotFoundError("no cluster exists", hint="create one: podhop cluster create")
        names = ", ".join(c.name for c in clusters)
        raise NotFoundError(f"several clusters exist ({names})", hint="choose one with --cluster NAME")
    record = store.cluster(name)
    if record is not None and record.kind != "local":
        hint = f"use kubectl --kubeconfig $(podhop cluster kubeconfig {name})"
        raise NotFoundError(f"cluster {name!r} is a {record.kind} cluster", hint=hint)
    if record is None:
        names = ", ".join(c.name for c in clusters) or "none"
        raise NotFoundError(f"cluster {name!r} not found (clusters: {names})")
    return LocalCluster(store, record, paths())


def create_cluster(
    store: Store,
    name: str,
    nodes: int,
    node_cpu_m: int,
    node_memory_b: int,
    link_bandwidth_bps: int | None = None,
    report: Report = _quiet,
) -> LocalCluster:
    """Create a cluster of ``nodes`` nodes. On failure, everything made so far is removed."""
    if not valid_name(name):
        raise ClusterError(f"invalid cluster name {name!r}: use 1-24 lowercase letters, digits and '-'")
    if not 1 <= nodes <= MAX_NODES:
        raise ClusterError(f"--nodes must be between 1 and {MAX_NODES}, got {nodes}")
    if node_cpu_m < 100 or node_memory_b < 64 * 2**20:
        raise ClusterError("a node needs at least 100m CPU and 64Mi memory")
    with store.lock(name):
        if store.cluster(name) is not None:
            raise AlreadyExistsError(f"cluster {name!r} already exists", hint=f"podhop cluster delete {name}")
        record = store.add_cluster(
            lambda idx: ClusterRecord(name, idx, "creating", node_cpu_m, node_memory_b, link_bandwidth_bps),
            MAX_CLUSTERS,
        )
        cluster = LocalCluster(store, record, paths())
        try:
            _create_host_network(cluster, report)
            for i in range(1, nodes + 1):
                report(f"node-{i}: namespace, links, cgroup")
                _create_node(cluster, i, report)
            _link_nodes(cluster)
        except BaseException as exc:
            report("create failed: removing what was made")
            _sweep(cluster, _quiet)
            store.delete_cluster(name)
            if isinstance(exc, PodhopError):
                raise
            if isinstance(exc, Exception):
                raise ClusterError(f"creating cluster {name!r} failed: {exc}") from exc
            raise
        record.status = "ready"
        store.put_cluster(record)
        return cluster


def _create_host_network(cluster: LocalCluster, report: Report) -> None:
    lay = cluster.layout
    report(f"host bridge {lay.bridge} {lay.bridge_ip}/24")
    netns.sysctl(None, "net.ipv4.ip_forward", "1")
    if not netns.link_exists(None, lay.bridge):
        netns.batch(
            None,
            [
                f"link add {lay.bridge} type bridge",
                f"addr add {lay.bridge_ip}/24 dev {lay.bridge}",
                f"link set {lay.bridge} up",
                f"route replace {lay.service_cidr} dev {lay.bridge} src {lay.bridge_ip}",
            ],
        )
    # Let DNAT of 127.0.0.1:PORT (LoadBalancer services) leave through the bridge.
    netns.sysctl(None, f"net.ipv4.conf.{lay.bridge}.route_localnet", "1")
    nat.install_hooks(lay.chain_prefix, lay.bridge)
    cluster.dir.mkdir(parents=True, exist_ok=True)
    (cluster.run_dir / "runc").mkdir(parents=True, exist_ok=True)


def _create_node(cluster: LocalCluster, i: int, report: Report) -> NodeRecord:
    lay, rec = cluster.layout, cluster.record
    name = f"node-{i}"
    ns = lay.node_netns(name)
    node = NodeRecord(
        cluster=cluster.name,
        name=name,
        idx=i,
        ip=lay.node_ip(i),
        pod_cidr=lay.pod_cidr(i),
        cpu_m=rec.node_cpu_m,
        memory_b=rec.node_memory_b,
        bandwidth_bps=rec.link_bandwidth_bps,
        netns=ns,
    )
    netns.add(ns)
    veth = lay.node_veth(i)
    netns.batch(
        None,
        [
            f"link add {veth} type veth peer name eth0 netns {ns}",
            f"link set {veth} master {lay.bridge} up",
            f"route replace {node.pod_cidr} via {node.ip}",
        ],
    )
    netns.batch(
        ns,
        [
            f"addr add {node.ip}/24 dev eth0",
            "link set eth0 up",
            f"route add default via {lay.bridge_ip}",
            "link add cbr0 type bridge",
            f"addr add {lay.pod_gateway(i)}/24 dev cbr0",
            "link set cbr0 up",
        ],
    )
    netns.sysctl(ns, "net.ipv4.ip_forward", "1")
    nat.install_hooks(lay.chain_prefix, None, ns)
    if node.bandwidth_bps:
        shaping.limit(None, veth, node.bandwidth_bps)
        shaping.limit(ns, "eth0", node.bandwidth_bps)
    cgroups.create_node(cluster.name, name, node.cpu_m, node.memory_b)
    for sub in ("images", "checkpoints", "pods"):
        (cluster.node_dir(name) / sub).mkdir(parents=True, exist_ok=True)
    cluster.store.put_node(node)
    return node


def _link_nodes(cluster: LocalCluster) -> None:
    """Route each node's traffic for other nodes' pod CIDRs straight to them (host-gw style)."""
    nodes = cluster.nodes()
    for n in nodes:
        netns.batch(n.netns, [f"route replace {o.pod_cidr} via {o.ip}" for o in nodes if o.name != n.name])


def delete_cluster(store: Store, name: str, report: Report = _quiet) -> list[str]:
    """Delete the cluster and everything it made; return any residue left (empty when clean)."""
    record = store.cluster(name)
    if record is None:
        raise NotFoundError(f"cluster {name!r} not found")
    with store.lock(name):
        record.status = "deleting"
        store.put_cluster(record)
        cluster = LocalCluster(store, record, paths())
        left = _sweep(cluster, report)
        if not left:
            store.delete_cluster(name)
        return left


def _sweep(cluster: LocalCluster, report: Report) -> list[str]:
    lay = cluster.layout
    report("stopping containers and monitors")
    _kill_monitors(cluster)
    runc = cluster.runc
    for c in runc.list() if runc.root.is_dir() else []:
        runc.kill(c["id"], "KILL", all_processes=True)
    for pid in cgroups.procs(cgroups.relpath(cluster.name)):
        _kill(pid)
    unmount_under(cluster.run_dir)
    for c in runc.list() if runc.root.is_dir() else []:
        runc.delete(c["id"], force=True)
    report("unmounting root filesystems")
    unmount_under(cluster.dir)
    unmount_under(cluster.run_dir)
    report("removing namespaces, links, NAT rules, cgroups")
    for ns in netns.list_netns(lay.netns_prefix):
        netns.delete(ns)
    for link in netns.host_links(f"ph{lay.idx}"):
        if lay.owns_link(link):
            netns.delete_link(None, link)
    nat.remove_all(lay.chain_prefix, lay.bridge)
    deadline = time.monotonic() + 5
    while cgroups.remove_tree(cgroups.relpath(cluster.name)) and time.monotonic() < deadline:
        for pid in cgroups.procs(cgroups.relpath(cluster.name)):
            _kill(pid)
        time.sleep(0.1)
    cgroups.prune_root()
    left = residue(cluster.name, cluster.record.idx)
    if not [r for r in left if r.startswith("mount")]:
        shutil.rmtree(cluster.dir, ignore_errors=True)
        shutil.rmtree(cluster.run_dir, ignore_errors=True)
    return residue(cluster.name, cluster.record.idx)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _kill_monitors(cluster: LocalCluster) -> None:
    for pid in monitor_pids(cluster.dir):
        _kill(pid)


def monitor_pids(cluster_dir: Path) -> list[int]:
    """Processes whose command line names this cluster's directory (monitors, runc, criu)."""
    marker = str(cluster_dir).encode() + b"/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def residue(name: str, idx: int) -> list[str]:
    """Everything of cluster ``name`` still on the machine (namespaces, links, rules, ...)."""
    lay = Layout(name, idx)
    p = paths()
    left = [f"netns {n}" for n in netns.list_netns(lay.netns_prefix)]
    left += [f"link {n}" for n in netns.host_links(f"ph{idx}") if lay.owns_link(n)]
    left += [f"iptables {r}" for r in nat.leftover_rules(lay.chain_prefix)]
    left += [f"cgroup {c}" for c in cgroups.leftovers(cgroups.relpath(name))]
    left += [f"mount {m}" for m in mounts_under(p.cluster_dir(name)) + mounts_under(p.cluster_run_dir(name))]
    left += [f"process {pid}" for pid in monitor_pids(p.cluster_dir(name))]
    return left
