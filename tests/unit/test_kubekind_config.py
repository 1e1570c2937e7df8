"""Pure rendering of the Kubernetes kind: layout names, configs, RBAC, PKI plan, LB address choice."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from podhop.kubekind import certs, config, control_plane, lbcontroller, manifests
from podhop.kubekind.layout import KubeLayout
from podhop.settings import Paths

LAY = KubeLayout("k8s1", 3, Paths(Path("/data"), Path("/run/ph")))


def test_layout_names_derive_from_index() -> None:
    assert LAY.bridge == "pk3br"
    assert LAY.node_veth(2) == "pk3n2"
    assert LAY.node_netns(1) == "pk-k8s1.node-1"
    assert LAY.host_ip == "10.203.0.1"
    assert LAY.node_ip(1) == "10.203.0.11"
    assert LAY.pod_cidr(2) == "10.203.130.0/24"
    assert LAY.service_cidr == "10.203.96.0/24"
    assert LAY.lb_ip(1) == "10.203.97.1"
    assert LAY.owns_link("pk3n7") and LAY.owns_link("pk3br")
    assert not LAY.owns_link("pk30br") and not LAY.owns_link("ph3br")
    # containerd refuses shim socket dirs longer than 42 characters
    assert (
        len(
            str(
                KubeLayout("x" * 24, 49, Paths(Path("/var/lib/podhop"), Path("/run/podhop"))).shim_socket_dir(
                    100
                )
            )
        )
        <= 42
    )


def test_containerd_config_enables_restore_and_separates_nodes() -> None:
    text = config.containerd_config(LAY, 2, Path("/cni"))
    assert "enable_experimental_restore_via_create = true" in text
    assert "netns_mounts_under_state_dir = true" in text
    assert 'Root = "/run/ph/k8s/k8s1/nodes/node-2/runc"' in text
    assert 'socket_dir = "/run/ph/k8s/s/3-2"' in text
    assert 'address = "/run/ph/k8s/k8s1/nodes/node-2/containerd.sock"' in text
    assert f'sandbox = "{config.PAUSE_IMAGE}"' in text


def test_kubelet_config_webhook_auth_cgroup_v1_and_budget() -> None:
    budget = config.NodeBudget(cpu_m=1000, memory_b=2 * 2**30, host_cpu_m=2000, host_memory_b=24 * 2**30)
    doc = yaml.safe_load(config.kubelet_config(LAY, 1, budget))
    assert doc["authentication"]["anonymous"]["enabled"] is False
    assert doc["authentication"]["webhook"]["enabled"] is True
    assert doc["authorization"]["mode"] == "Webhook"
    assert doc["failCgroupV1"] is False
    assert doc["cgroupRoot"] == "/podhop-kube/k8s1/node-1"
    assert doc["featureGates"]["ContainerCheckpoint"] is True
    assert doc["systemReserved"] == {"memory": "22528Mi", "cpu": "1000m"}
    assert doc["address"] == "10.203.0.11"


def test_kube_proxy_leaves_host_conntrack_alone() -> None:
    doc = yaml.safe_load(config.kube_proxy_config(LAY, 1))
    assert doc["conntrack"]["maxPerCore"] == 0
    assert doc["iptables"]["masqueradeAll"] is True
    assert doc["clusterCIDR"] == "10.203.128.0/17"


def test_cni_conflist_keeps_state_per_node() -> None:
    doc = json.loads(config.cni_conflist(LAY, 2))
    assert doc["name"] == "podhop-k3"
    ipam = doc["plugins"][0]["ipam"]
    assert ipam["ranges"][0][0]["subnet"] == "10.203.130.0/24"
    assert ipam["dataDir"].startswith("/data/k8s/clusters/k8s1/nodes/node-2/")


def test_apiserver_kubelet_client_may_checkpoint() -> None:
    docs = manifests.bootstrap_objects(LAY, b"CA")
    role = next(
        d for d in docs if d["metadata"]["name"] == "podhop:kubelet-api-admin" and d["kind"] == "ClusterRole"
    )
    assert "nodes/checkpoint" in role["rules"][0]["resources"]
    binding = next(
        d
        for d in docs
        if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"] == "podhop:kubelet-api-admin"
    )
    assert binding["subjects"][0]["name"] == "kube-apiserver-kubelet-client"
    argv = control_plane.apiserver_argv(LAY, Path("/bin/kube-apiserver"))
    assert "--authorization-mode=Node,RBAC" in argv
    assert any(
        a.startswith("--kubelet-client-certificate=") and "apiserver-kubelet-client" in a for a in argv
    )


def test_registry_hosts_mirror_docker_io_without_internet() -> None:
    hosts = config.registry_hosts(LAY)
    assert set(hosts) == {"docker.io", "10.203.0.1:5000"}
    assert 'server = "http://10.203.0.1:5000"' in hosts["docker.io"]
    assert "registry-1.docker.io" not in hosts["docker.io"]


def test_pki_plan_identities() -> None:
    plan = certs.plan(["10.203.0.1", "10.203.96.1"], [("node-1", "10.203.0.11")])
    by = {c.name: c for c in plan.certs}
    assert by["kubelet-node-1"].cn == "system:node:node-1" and by["kubelet-node-1"].orgs == ("system:nodes",)
    assert by["kubelet-node-1-serving"].ips == ("10.203.0.11",)
    assert by["admin"].orgs == ("system:masters",)
    assert "10.203.96.1" in by["apiserver"].ips
    assert by["front-proxy-client"].ca == certs.FRONT_PROXY_CA


def test_lb_controller_assigns_lowest_free_address() -> None:
    def svc(name: str, type_: str, ip: str | None = None) -> dict[str, object]:
        status = {"loadBalancer": {"ingress": [{"ip": ip}]}} if ip else {}
        return {
            "metadata": {"namespace": "default", "name": name, "creationTimestamp": name},
            "spec": {"type": type_},
            "status": status,
        }

    services = [svc("a", "LoadBalancer", "10.203.97.1"), svc("b", "ClusterIP"), svc("c", "LoadBalancer")]
    assert lbcontroller.pick_addresses(services, "10.203.97") == {("default", "c"): "10.203.97.2"}


def test_cluster_rows_written_before_kinds_load_as_local(tmp_path: Path) -> None:
    import sqlite3

    from podhop.store import Store

    store = Store(tmp_path / "state.db")
    old = {
        "name": "old",
        "idx": 4,
        "status": "ready",
        "node_cpu_m": 1000,
        "node_memory_b": 1,
        "link_bandwidth_bps": None,
        "created": "2026-01-01T00:00:00Z",
    }
    store.db.execute("INSERT INTO clusters VALUES (?, ?, ?, ?)", ("old", 4, "ready", json.dumps(old)))
    assert store.cluster("old") is not None and store.cluster("old").kind == "local"  # type: ignore[union-attr]
    assert isinstance(store.db, sqlite3.Connection)
