"""Names and addresses of everything a local cluster creates, derived from its index.

Why: cleanup must find every namespace, link, chain and cgroup a cluster made —
even after a crash half-way through create, when the database may not know
them all. So nothing gets a random name: each is a pure function of the
cluster's name and index (and, for pods, a sandbox id), and delete sweeps by
these prefixes.

Address plan of cluster *k* (``10.(200+k).0.0/16``):

- ``10.X.0.1/24`` the host end of the cluster bridge ``ph<k>br``; node *i* is ``10.X.0.(10+i)``;
- ``10.X.0.2`` and ``10.X.0.3`` host addresses that only service traffic leaves from (masqueraded
  calls to a VIP, and to a LoadBalancer port on 127.0.0.1): see :mod:`podhop.net.nat`;
- ``10.X.i.0/24`` the pod CIDR of node *i* (gateway ``10.X.i.1`` on the node's ``cbr0``);
- ``10.X.250.0/24`` service virtual IPs.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

MAX_CLUSTERS = 50
MAX_NODES = 200
NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?")
SERVICE_OCTET = 250


@dataclass(frozen=True)
class Layout:
    cluster: str
    idx: int

    @property
    def octet(self) -> int:
        return 200 + self.idx

    @property
    def cidr(self) -> str:
        return f"10.{self.octet}.0.0/16"

    @property
    def bridge(self) -> str:
        return f"ph{self.idx}br"

    @property
    def bridge_ip(self) -> str:
        return f"10.{self.octet}.0.1"

    @property
    def service_source_ip(self) -> str:
        """Source of the host's masqueraded calls to service VIPs (never of a direct call to a pod)."""
        return f"10.{self.octet}.0.2"

    @property
    def loopback_source_ip(self) -> str:
        """Source of the host's masqueraded calls to LoadBalancer ports on 127.0.0.1."""
        return f"10.{self.octet}.0.3"

    @property
    def chain_prefix(self) -> str:
        return f"PH{self.idx}"

    def owns_link(self, name: str) -> bool:
        """Whether a host interface is this cluster's (``ph1br`` is cluster 1's, ``ph10br`` is not)."""
        return re.fullmatch(rf"ph{self.idx}(br|n\d+)", name) is not None

    @property
    def netns_prefix(self) -> str:
        return f"ph-{self.cluster}."

    @property
    def service_cidr(self) -> str:
        return f"10.{self.octet}.{SERVICE_OCTET}.0/24"

    def node_ip(self, i: int) -> str:
        return f"10.{self.octet}.0.{10 + i}"

    def node_netns(self, node: str) -> str:
        return f"{self.netns_prefix}{node}"

    def node_veth(self, i: int) -> str:
        return f"ph{self.idx}n{i}"

    def pod_cidr(self, i: int) -> str:
        return f"10.{self.octet}.{i}.0/24"

    def pod_gateway(self, i: int) -> str:
        return f"10.{self.octet}.{i}.1"

    def pod_netns(self, pod: str, sandbox: str) -> str:
        return f"{self.netns_prefix}{pod}.{sandbox}"

    def service_ip(self, n: int) -> str:
        return f"10.{self.octet}.{SERVICE_OCTET}.{n}"


def pod_ips(pod_cidr: str) -> list[str]:
    """Assignable pod addresses of a node CIDR (skipping network, gateway, broadcast)."""
    net = ipaddress.ip_network(pod_cidr)
    return [str(h) for h in list(net.hosts())[1:]]


def valid_name(name: str) -> bool:
    return NAME_RE.fullmatch(name) is not None
