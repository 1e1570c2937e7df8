"""Names and addresses of a local cluster, derived from its name and index."""

from __future__ import annotations

import ipaddress
import re

import pytest

from podhop.backends.local.layout import MAX_CLUSTERS, MAX_NODES, Layout, pod_ips, valid_name

IFNAMSIZ = 15  # Linux interface names are at most 15 characters
CLUSTER_IDXS = range(MAX_CLUSTERS)
NODE_IDXS = range(1, MAX_NODES + 1)  # nodes are numbered node-1 .. node-N


def _net(cidr: str) -> ipaddress.IPv4Network:
    net = ipaddress.ip_network(cidr, strict=False)
    assert isinstance(net, ipaddress.IPv4Network)
    return net


def _ip(addr: str) -> ipaddress.IPv4Address:
    ip = ipaddress.ip_address(addr)
    assert isinstance(ip, ipaddress.IPv4Address)
    return ip


def test_address_plan_of_first_cluster() -> None:
    lay = Layout("a", 0)
    assert lay.cidr == "10.200.0.0/16"
    assert lay.bridge == "ph0br"
    assert lay.bridge_ip == "10.200.0.1"
    assert lay.node_ip(1) == "10.200.0.11"
    assert lay.pod_cidr(1) == "10.200.1.0/24"
    assert lay.pod_gateway(1) == "10.200.1.1"
    assert lay.service_cidr == "10.200.250.0/24"
    assert lay.service_ip(10) == "10.200.250.10"
    assert lay.chain_prefix == "PH0"


def test_address_plan_of_last_cluster() -> None:
    lay = Layout("z", MAX_CLUSTERS - 1)
    assert lay.cidr == "10.249.0.0/16"
    assert lay.bridge_ip == "10.249.0.1"
    assert lay.node_ip(MAX_NODES) == "10.249.0.210"
    assert lay.pod_cidr(MAX_NODES) == "10.249.200.0/24"


@pytest.mark.parametrize("idx", CLUSTER_IDXS)
def test_every_address_is_valid_and_inside_the_cluster_range(idx: int) -> None:
    lay = Layout("c", idx)
    cluster = ipaddress.ip_network(lay.cidr)  # strict: must be a network address
    assert isinstance(cluster, ipaddress.IPv4Network)
    bridge_net = _net(f"{lay.bridge_ip}/24")
    services = _net(lay.service_cidr)
    assert services.subnet_of(cluster)
    assert _ip(lay.bridge_ip) in cluster
    assert _ip(lay.service_ip(1)) in services
    assert _ip(lay.service_ip(254)) in services
    assert not services.overlaps(bridge_net)

    node_ips = [_ip(lay.node_ip(i)) for i in NODE_IDXS]
    assert len(set(node_ips)) == MAX_NODES
    for ip in node_ips:
        # nodes sit on the bridge's /24, and are neither the bridge, network nor broadcast address
        assert ip in bridge_net
        assert ip not in (_ip(lay.bridge_ip), bridge_net.network_address, bridge_net.broadcast_address)

    pod_nets = [_net(lay.pod_cidr(i)) for i in NODE_IDXS]
    for i, net in zip(NODE_IDXS, pod_nets, strict=True):
        assert net.prefixlen == 24
        assert net.subnet_of(cluster)
        assert not net.overlaps(bridge_net), f"pod CIDR of node {i} overlaps the node network"
        assert not net.overlaps(services), f"pod CIDR of node {i} overlaps the service range"
        assert _ip(lay.pod_gateway(i)) == next(net.hosts())
    for a in range(len(pod_nets)):
        for b in range(a + 1, len(pod_nets)):
            assert not pod_nets[a].overlaps(pod_nets[b])


def test_cluster_ranges_are_disjoint() -> None:
    nets = [_net(Layout("c", i).cidr) for i in CLUSTER_IDXS]
    for a in range(len(nets)):
        for b in range(a + 1, len(nets)):
            assert not nets[a].overlaps(nets[b])


@pytest.mark.parametrize("idx", CLUSTER_IDXS)
def test_interface_names_fit_ifnamsiz(idx: int) -> None:
    lay = Layout("c", idx)
    names = [lay.bridge] + [lay.node_veth(i) for i in NODE_IDXS]
    for name in names:
        assert 0 < len(name) <= IFNAMSIZ, name
        assert re.fullmatch(r"[a-z0-9]+", name), name
        assert lay.owns_link(name), name
    assert len(set(names)) == len(names)


def test_interface_names_of_one_cluster_differ_from_another() -> None:
    seen: dict[str, int] = {}
    for idx in CLUSTER_IDXS:
        lay = Layout("c", idx)
        for name in [lay.bridge] + [lay.node_veth(i) for i in NODE_IDXS]:
            assert name not in seen, f"{name} is used by clusters {seen.get(name)} and {idx}"
            seen[name] = idx


def test_a_cluster_owns_only_its_own_links() -> None:
    # cluster 1 must not sweep the links of clusters 10-19 ("ph1" is a prefix of "ph10br")
    for idx in CLUSTER_IDXS:
        lay = Layout("c", idx)
        for other in CLUSTER_IDXS:
            theirs = Layout("d", other)
            for name in [theirs.bridge] + [theirs.node_veth(i) for i in (1, 2, 10, MAX_NODES)]:
                assert lay.owns_link(name) == (other == idx), (idx, name)


@pytest.mark.parametrize(
    "name", ["eth0", "cbr0", "vpabc123", "ph1", "ph1brx", "ph1n", "xph1br", "ph1nx", "ph10br", "docker0"]
)
def test_foreign_links_are_not_owned(name: str) -> None:
    assert not Layout("c", 1).owns_link(name)


def test_chain_prefixes_do_not_match_other_clusters_chains() -> None:
    # nat.our_chains selects chains by ``prefix + "-"``
    for idx in CLUSTER_IDXS:
        mine = Layout("c", idx).chain_prefix + "-"
        for other in CLUSTER_IDXS:
            if other != idx:
                assert not f"{Layout('d', other).chain_prefix}-SERVICES".startswith(mine)


def test_chain_prefix_leaves_room_for_iptables_chain_names() -> None:
    # "<prefix>-SVC-<10 hex digits>" must fit iptables' 28-character chain names
    for idx in CLUSTER_IDXS:
        assert len(Layout("c", idx).chain_prefix) + len("-NOENDPOINTS") <= 28
        assert len(Layout("c", idx).chain_prefix) + len("-SVC-") + 10 <= 28


def test_netns_prefixes_of_similar_cluster_names_never_prefix_each_other() -> None:
    a, ab = Layout("a", 0), Layout("a-b", 1)
    assert not a.netns_prefix.startswith(ab.netns_prefix)
    assert not ab.netns_prefix.startswith(a.netns_prefix)
    a_names = [a.node_netns("node-1"), a.pod_netns("web", "abc123"), a.pod_netns("b.x", "abc123")]
    ab_names = [ab.node_netns("node-1"), ab.pod_netns("web", "abc123")]
    for name in a_names:
        assert name.startswith(a.netns_prefix)
        assert not name.startswith(ab.netns_prefix)
    for name in ab_names:
        assert name.startswith(ab.netns_prefix)
        assert not name.startswith(a.netns_prefix)


def test_netns_names_of_a_cluster() -> None:
    lay = Layout("demo", 3)
    assert lay.node_netns("node-2") == "ph-demo.node-2"
    assert lay.pod_netns("web-0", "a1b2c3") == "ph-demo.web-0.a1b2c3"
    assert lay.pod_netns("web-0", "a1b2c3") != lay.pod_netns("web-0", "d4e5f6")


def test_pod_ips_skip_network_gateway_and_broadcast() -> None:
    ips = pod_ips("10.200.1.0/24")
    assert ips[0] == "10.200.1.2"
    assert ips[-1] == "10.200.1.254"
    assert len(ips) == 253
    assert len(set(ips)) == 253
    for skipped in ("10.200.1.0", "10.200.1.1", "10.200.1.255"):
        assert skipped not in ips


def test_pod_ips_of_a_node_match_its_gateway() -> None:
    lay = Layout("c", 7)
    for i in (1, 42, MAX_NODES):
        ips = pod_ips(lay.pod_cidr(i))
        assert lay.pod_gateway(i) not in ips
        assert all(_ip(ip) in _net(lay.pod_cidr(i)) for ip in ips)


def test_pod_ips_of_a_small_network() -> None:
    assert pod_ips("192.168.0.0/29") == [f"192.168.0.{i}" for i in range(2, 7)]


@pytest.mark.parametrize(
    "name",
    ["a", "0", "demo", "a-b", "edge-1", "x" * 24, "a" + "-" * 22 + "b", "1cluster", "c9"],
)
def test_valid_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 25,
        "-a",
        "a-",
        "-",
        "Demo",
        "a_b",
        "a.b",
        "a b",
        "a/b",
        "ä",
        " a",
        "a ",
    ],
)
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)


@pytest.mark.parametrize("name", ["abc\n", "a-b\n", "abc\nx", "\nabc"])
def test_names_with_newlines_are_invalid(name: str) -> None:
    # a '$' anchor would accept a trailing newline
    assert not valid_name(name)
