"""The host network and the nodes of a Kubernetes-kind cluster.

Why: a node is a network namespace on the cluster bridge whose daemons —
containerd, kubelet, kube-proxy — enter only that namespace (see
``processes``). Routing is host-gw style: the host and every node route each
node's pod CIDR to that node's address, so pod traffic needs no overlay. The
LoadBalancer pool is routed from the host to all nodes at once (an ECMP route),
where kube-proxy's rules for the service's ingress IP take over, like an ELB in
front of a node group.

The kubelet's ``cgroupRoot`` must exist in every v1 hierarchy before it starts
(``cpuset`` needs its ``cpus``/``mems`` copied from the parent); the node's
budget is enforced twice: a quota and a memory limit on that cgroup, and the
kubelet's allocatable (``systemReserved`` = machine minus budget).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from podhop import sh
from podhop.kubekind import components, config
from podhop.kubekind import processes as procs
from podhop.kubekind.layout import KubeLayout
from podhop.net import netns, shaping
from podhop.runtime import cgroups
from podhop.settings import paths

CFS_PERIOD_US = 100_000


def host_capacity() -> tuple[int, int]:
    """(millicores, bytes) of this machine, as the kubelet's cAdvisor sees them."""
    cpus = os.cpu_count() or 1
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    return cpus * 1000, mem


def create_host_network(lay: KubeLayout) -> None:
    netns.sysctl(None, "net.ipv4.ip_forward", "1")
    if not netns.link_exists(None, lay.bridge):
        netns.batch(
            None,
            [
                f"link add {lay.bridge} type bridge",
                f"addr add {lay.host_ip}/24 dev {lay.bridge}",
                f"link set {lay.bridge} up",
            ],
        )


def delete_host_network(lay: KubeLayout) -> None:
    """Remove the bridge and the nodes' host ends (their routes go with them)."""
    for link in netns.host_links(f"pk{lay.idx}"):
        if lay.owns_link(link):
            netns.delete_link(None, link)


def leftover_routes(lay: KubeLayout) -> list[str]:
    """Host routes through this cluster's links (only ever its own: another kind's cluster may reuse the
    address range once this one's index is free again, so the range alone proves nothing)."""
    out = sh.run(["ip", "-4", "-o", "route", "show"], check=False).stdout
    return [
        ln.strip()
        for ln in out.splitlines()
        if any(lay.owns_link(dev) for dev in re.findall(r"\bdev (\S+)", ln))
    ]


def create_cgroup(rel: str, cpu_m: int, memory_b: int) -> None:
    """The kubelet's cgroup root in every hierarchy, with the node's CPU quota and memory limit."""
    if cgroups.is_v2():
        d = cgroups.CGROUP_ROOT
        for part in rel.split("/"):
            for ctrl in ("cpu", "cpuset", "memory", "pids", "io", "hugetlb"):
                with contextlib.suppress(OSError):
                    (d / "cgroup.subtree_control").write_text(f"+{ctrl}")
            d = d / part
            d.mkdir(exist_ok=True)
        (d / "cpu.max").write_text(f"{max(1000, cpu_m * CFS_PERIOD_US // 1000)} {CFS_PERIOD_US}")
        (d / "memory.max").write_text(str(memory_b))
        return
    for root in cgroups.hierarchies():
        d = root
        for part in rel.split("/"):
            parent, d = d, d / part
            d.mkdir(exist_ok=True)
            if root.name == "cpuset":
                for f in ("cpuset.cpus", "cpuset.mems"):
                    if not (d / f).read_text().strip():
                        (d / f).write_text((parent / f).read_text())
    cpu = cgroups.CGROUP_ROOT / "cpu" / rel
    (cpu / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
    (cpu / "cpu.cfs_quota_us").write_text(str(max(1000, cpu_m * CFS_PERIOD_US // 1000)))
    (cgroups.CGROUP_ROOT / "memory" / rel / "memory.limit_in_bytes").write_text(str(memory_b))


def write_node_files(lay: KubeLayout, i: int, budget: config.NodeBudget) -> None:
    node = lay.node_dir(i)
    for sub in ("cni/net.d", "cni/ipam", "pod-logs", "kubelet", "kubelet-pki", "opt"):
        (node / sub).mkdir(parents=True, exist_ok=True)
    lay.node_run_dir(i).mkdir(parents=True, exist_ok=True)
    lay.shim_socket_dir(i).mkdir(parents=True, exist_ok=True)
    (node / "containerd.toml").write_text(config.containerd_config(lay, i, node / "cni" / "net.d"))
    for host, text in config.registry_hosts(lay).items():
        d = node / "certs.d" / host
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts.toml").write_text(text)
    (node / "cni" / "net.d" / "10-podhop.conflist").write_text(config.cni_conflist(lay, i))
    (node / "kubelet.yaml").write_text(config.kubelet_config(lay, i, budget))
    (node / "kube-proxy.yaml").write_text(config.kube_proxy_config(lay, i))


def create_node(lay: KubeLayout, i: int, budget: config.NodeBudget, bandwidth_bps: int | None) -> None:
    ns, veth, ip = lay.node_netns(i), lay.node_veth(i), lay.node_ip(i)
    if not netns.exists(ns):
        netns.add(ns)
    if not netns.link_exists(None, veth):
        netns.batch(
            None,
            [
                f"link add {veth} type veth peer name eth0 netns {ns}",
                f"link set {veth} master {lay.bridge} up",
            ],
        )
        netns.batch(
            ns, [f"addr add {ip}/24 dev eth0", "link set eth0 up", f"route add default via {lay.host_ip}"]
        )
    netns.batch(None, [f"route replace {lay.pod_cidr(i)} via {ip}"])
    netns.sysctl(ns, "net.ipv4.ip_forward", "1")
    if bandwidth_bps:
        shaping.limit(None, veth, bandwidth_bps)
        shaping.limit(ns, "eth0", bandwidth_bps)
    create_cgroup(lay.node_cgroup(i), budget.cpu_m, budget.memory_b)
    write_node_files(lay, i, budget)
    start_node_daemons(lay, i)


def start_node_daemons(lay: KubeLayout, i: int) -> None:
    b = components.binary
    name, ns, logs, run = lay.node_name(i), lay.node_netns(i), lay.logs, lay.node_run_dir(i)
    criu_dir = paths().criu_wrapper.parent
    log = logs / f"{name}-containerd.log"
    criu_conf = lay.dir / "criu.conf"
    criu_conf.write_text(config.CRIU_CONF)
    pid = procs.start(
        f"{name} containerd",
        config.containerd_argv(lay, i, b("containerd")),
        log,
        run / "containerd.pid",
        netns=ns,
        path_prefix=(criu_dir, b("containerd").parent),
        # CRIU reads this file in runc's RPC mode too; the CRI gives runc no TCP options (see config).
        env={"CRIU_CONFIG_FILE": str(criu_conf)},
    )
    sock = lay.containerd_socket(i)
    procs.wait_until(f"{name} containerd", sock.exists, 60, pid=pid, log=log)
    procs.start(
        f"{name} kubelet",
        config.kubelet_argv(lay, i, b("kubelet")),
        logs / f"{name}-kubelet.log",
        run / "kubelet.pid",
        netns=ns,
    )
    procs.start(
        f"{name} kube-proxy",
        config.kube_proxy_argv(lay, i, b("kube-proxy")),
        logs / f"{name}-kube-proxy.log",
        run / "kube-proxy.pid",
        netns=ns,
    )


def link_nodes(lay: KubeLayout, n_nodes: int) -> None:
    """Pod CIDR routes between nodes, and the LoadBalancer pool from the host to every node."""
    for i in range(1, n_nodes + 1):
        others = [
            f"route replace {lay.pod_cidr(j)} via {lay.node_ip(j)}" for j in range(1, n_nodes + 1) if j != i
        ]
        netns.batch(lay.node_netns(i), others)
    hops = " ".join(f"nexthop via {lay.node_ip(j)}" for j in range(1, n_nodes + 1))
    netns.batch(None, [f"route replace {lay.lb_cidr} {hops}"])
