"""Names, addresses, ports and paths of a Kubernetes-kind cluster, derived from its index.

Why: like the local kind (``backends/local/layout.py``), delete must find every
namespace, link, chain, cgroup, mount and process a cluster made, also after a
crash half-way through create when the database knows nothing. So every name is
a pure function of the cluster's name and its store index, with prefixes that
differ from the local kind's (``pk`` links, ``PK`` chains, ``pk-`` namespaces,
``podhop-kube`` cgroups) — the index is unique across both kinds, so address
ranges never collide either.

Address plan of cluster *k* (``X = 200 + k``):

- ``10.X.0.1/24`` the host end of bridge ``pk<k>br``: API server, etcd, registry, metrics-server;
  node *i* is ``10.X.0.(10+i)`` in namespace ``pk-<cluster>.node-<i>``;
- ``10.X.96.0/24`` service cluster IPs (``10.X.96.1`` is ``kubernetes``);
- ``10.X.97.0/24`` LoadBalancer addresses, routed from the host to all nodes (ECMP), like an ELB;
- ``10.X.128.0/17`` pods: node *i* owns ``10.X.(128+i).0/24``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from podhop.settings import Paths

MAX_NODES = 100
API_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
KCM_PORT = 10257
SCHEDULER_PORT = 10259
METRICS_PORT = 4443
REGISTRY_PORT = 5000
KUBELET_PORT = 10250


@dataclass(frozen=True)
class KubeLayout:
    cluster: str
    idx: int
    paths: Paths

    # ---------------------------------------------------------------- network
    @property
    def octet(self) -> int:
        return 200 + self.idx

    @property
    def cidr(self) -> str:
        return f"10.{self.octet}.0.0/16"

    @property
    def bridge(self) -> str:
        return f"pk{self.idx}br"

    @property
    def host_ip(self) -> str:
        return f"10.{self.octet}.0.1"

    @property
    def service_cidr(self) -> str:
        return f"10.{self.octet}.96.0/24"

    @property
    def kubernetes_service_ip(self) -> str:
        return f"10.{self.octet}.96.1"

    @property
    def lb_cidr(self) -> str:
        return f"10.{self.octet}.97.0/24"

    def lb_ip(self, n: int) -> str:
        return f"10.{self.octet}.97.{n}"

    @property
    def cluster_cidr(self) -> str:
        return f"10.{self.octet}.128.0/17"

    @property
    def chain_prefix(self) -> str:
        return f"PK{self.idx}"

    @property
    def netns_prefix(self) -> str:
        return f"pk-{self.cluster}."

    def owns_link(self, name: str) -> bool:
        """Whether a host interface is this cluster's (``pk1br`` is cluster 1's, ``pk10br`` is not)."""
        return re.fullmatch(rf"pk{self.idx}(br|n\d+)", name) is not None

    @staticmethod
    def node_name(i: int) -> str:
        return f"node-{i}"

    def node_ip(self, i: int) -> str:
        return f"10.{self.octet}.0.{10 + i}"

    def node_netns(self, i: int) -> str:
        return f"{self.netns_prefix}{self.node_name(i)}"

    def node_veth(self, i: int) -> str:
        return f"pk{self.idx}n{i}"

    def pod_cidr(self, i: int) -> str:
        return f"10.{self.octet}.{128 + i}.0/24"

    def pod_gateway(self, i: int) -> str:
        return f"10.{self.octet}.{128 + i}.1"

    @property
    def api_url(self) -> str:
        return f"https://{self.host_ip}:{API_PORT}"

    @property
    def registry(self) -> str:
        """``host:port`` of the cluster's registry (also the nodes' mirror for docker.io)."""
        return f"{self.host_ip}:{REGISTRY_PORT}"

    # ---------------------------------------------------------------- files
    @property
    def dir(self) -> Path:
        """Persistent files: PKI, configs, logs, node roots (kubelet, containerd)."""
        return self.paths.data_dir / "k8s" / "clusters" / self.cluster

    @property
    def run_dir(self) -> Path:
        """Volatile files: sockets, pid files, containerd state."""
        return self.paths.run_dir / "k8s" / self.cluster

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    def node_dir(self, i: int) -> Path:
        return self.dir / "nodes" / self.node_name(i)

    def node_run_dir(self, i: int) -> Path:
        return self.run_dir / "nodes" / self.node_name(i)

    def containerd_socket(self, i: int) -> Path:
        return self.node_run_dir(i) / "containerd.sock"

    def shim_socket_dir(self, i: int) -> Path:
        """Shim sockets: containerd allows at most 42 characters here, hence the short form."""
        return self.paths.run_dir / "k8s" / "s" / f"{self.idx}-{i}"

    def kubelet_root(self, i: int) -> Path:
        return self.node_dir(i) / "kubelet"

    def checkpoints_dir(self, i: int) -> Path:
        return self.kubelet_root(i) / "checkpoints"

    # ---------------------------------------------------------------- cgroups
    @property
    def cgroup_parent(self) -> str:
        """Relative cgroup of the whole cluster (in every v1 hierarchy)."""
        return f"podhop-kube/{self.cluster}"

    def node_cgroup(self, i: int) -> str:
        """The kubelet's ``cgroupRoot`` (pods live in ``<this>/kubepods``)."""
        return f"{self.cgroup_parent}/{self.node_name(i)}"
