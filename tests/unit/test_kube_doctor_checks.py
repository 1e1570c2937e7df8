"""The cluster doctor's judgements, without a cluster: versions, containerd's restore setting, the
kubelet's answers, the RBAC list and how a check over many nodes becomes one line.

Why: on EKS these verdicts are all a user sees of a node they cannot log into, so each "no" must name
what was found and what to change; the real cluster run is tests/integration/test_kube_doctor.py.
"""

from __future__ import annotations

from podhop.backends.kubernetes import doctor, install, verdicts
from podhop.backends.kubernetes.verdicts import Permission, Verdict


def test_version_tuple_reads_what_clusters_report() -> None:
    assert verdicts.version_tuple("v1.30.2-eks-1552ad0") == (1, 30, 2)
    assert verdicts.version_tuple("containerd://2.3.7") == (2, 3, 7)
    assert verdicts.version_tuple("4.2") == (4, 2)
    assert verdicts.version_tuple("unknown") is None


def test_server_version_from_1_30() -> None:
    assert verdicts.server_verdict("v1.30.0", "https://x").ok
    assert verdicts.server_verdict("v1.35.1-eks-3025e55", "https://x").ok
    old = verdicts.server_verdict("v1.29.9", "https://x")
    assert not old.ok and old.fix and "1.30" in old.fix
    assert not verdicts.server_verdict("nonsense", "https://x").ok


def test_runtime_containerd_2_1_to_2_3_only() -> None:
    for good in ("containerd://2.1.4", "containerd://2.2.0", "containerd://2.3.7"):
        assert verdicts.runtime_verdict(good).ok, good
    for bad, why in (
        ("containerd://1.7.27", "2.1"),
        ("containerd://2.0.5", "2.1"),
        ("containerd://2.4.2", "removed"),
        ("cri-o://1.30.1", "containerd only"),
        ("", "containerd only"),
    ):
        verdict = verdicts.runtime_verdict(bad)
        assert not verdict.ok and why in verdict.detail and verdict.fix, bad


def test_restore_setting_as_containerd_parsed_it() -> None:
    on = verdicts.restore_verdict(
        {"containerd": "v2.3.7", "cri": {"enableExperimentalRestoreViaCreate": True}}
    )
    assert on.ok and "enable_experimental_restore_via_create = true" in on.detail
    off = verdicts.restore_verdict(
        {"containerd": "v2.3.7", "cri": {"enableExperimentalRestoreViaCreate": False}}
    )
    assert not off.ok and off.fix and "enable_experimental_restore_via_create = true" in off.fix
    assert "examples/eks/cluster.yaml" in off.fix
    built_in = verdicts.restore_verdict({"containerd": "2.2.0", "cri": {"enableCRIU": None}})
    assert built_in.ok and "built in" in built_in.detail
    assert not verdicts.restore_verdict({"containerd": "2.4.2", "cri": {}}).ok
    assert not verdicts.restore_verdict({"containerd": "2.0.5", "cri": {}}).ok
    criu_off = verdicts.restore_verdict(
        {"containerd": "2.3.7", "cri": {"enableExperimentalRestoreViaCreate": True, "enableCRIU": False}}
    )
    assert not criu_off.ok and "enable_criu" in criu_off.detail
    unread = verdicts.restore_verdict({"containerd": "2.3.7", "criError": "CRI status: unavailable"})
    assert not unread.ok and "unavailable" in unread.detail


def test_criu_from_4_2() -> None:
    assert verdicts.criu_verdict("4.2.1").ok
    assert verdicts.criu_verdict("4.3").ok
    old = verdicts.criu_verdict("3.17.1")
    assert not old.ok and old.fix and "4.2" in old.fix
    assert not verdicts.criu_verdict("").ok


def test_checkpoint_probe_answers() -> None:
    assert verdicts.probe_verdict(404, "pod does not exist\n").ok
    kubelet = verdicts.probe_verdict(
        403,
        "Forbidden (user=kube-apiserver-kubelet-client, verb=create, resource=nodes, "
        "subresource(s)=[checkpoint])",
    )
    assert not kubelet.ok and kubelet.fix
    assert "--user=kube-apiserver-kubelet-client" in kubelet.fix and "nodes/checkpoint" in kubelet.fix
    user = verdicts.probe_verdict(
        403, 'nodes "n1" is forbidden: User "alice" cannot create resource "nodes/proxy" in API group ""'
    )
    assert not user.ok and user.fix and "rbac" in user.fix
    gate = verdicts.probe_verdict(404, "404 page not found")
    assert not gate.ok and gate.fix and "ContainerCheckpoint" in gate.fix
    assert not verdicts.probe_verdict(502, "dial tcp: i/o timeout").ok


def test_checkpoint_failures_point_at_their_cause() -> None:
    assert "CRIU >= 4.2" in verdicts.checkpoint_fix(
        "rpc error: criu binary not found in shim path or system PATH"
    )
    assert "CRIU >= 4.2" in verdicts.checkpoint_fix("checkpoint/restore requires at least CRIU 31600")
    assert "tcp-close" in verdicts.checkpoint_fix("Connected TCP socket, consider using --tcp-established")
    assert "logs" in verdicts.checkpoint_fix("something else")


def test_rbac_list_is_install_s_user_roles() -> None:
    perms = verdicts.required_permissions()
    assert len(perms) == len(set(perms))
    assert Permission("create", "", "nodes", "proxy") in perms  # the kubelet's checkpoint API
    assert Permission("patch", "", "pods", "status") in perms
    assert Permission("get", "", "secrets", "", install.NAMESPACE, install.SECRET) in perms
    assert Permission("create", "", "pods", "proxy", install.NAMESPACE) in perms
    assert Permission("list", "metrics.k8s.io", "nodes") in perms
    # every rule of both roles, verb by verb
    rules = [
        r
        for d in install.objects(install.user_rbac_yaml())
        if d["kind"] in ("ClusterRole", "Role")
        for r in d["rules"]
    ]
    assert len(perms) == sum(
        len(r["apiGroups"]) * len(r["resources"]) * len(r["verbs"]) * len(r.get("resourceNames") or [""])
        for r in rules
    )
    assert str(Permission("get", "", "secrets", "", "podhop-system", "podhop-agent")) == (
        "get secrets podhop-agent in podhop-system"
    )
    assert (
        str(Permission("list", "discovery.k8s.io", "endpointslices"))
        == "list endpointslices.discovery.k8s.io"
    )


def test_one_line_per_check_whatever_the_nodes() -> None:
    same = doctor.aggregate("runtime", {f"n{i}": Verdict(True, "containerd 2.3.7") for i in range(10)})
    assert same.ok and same.detail == "containerd 2.3.7 on all 10 nodes" and same.fix is None
    mixed = doctor.aggregate(
        "criu",
        {
            "n1": Verdict(True, "CRIU 4.2.1"),
            "n2": Verdict(False, "CRIU 3.17", "install CRIU >= 4.2"),
            "n3": Verdict(False, "CRIU 3.17", "install CRIU >= 4.2"),
        },
    )
    assert not mixed.ok
    assert mixed.detail == "n2, n3: CRIU 3.17; n1: CRIU 4.2.1"  # the failing nodes first
    assert mixed.fix == "install CRIU >= 4.2"
    assert not doctor.aggregate("nodes", {}).ok
    assert doctor.aggregate("x", {"n1": Verdict(True, "fine")}).detail == "fine on the only node"


def test_the_throwaway_pod_is_pinned_idle_and_unprivileged() -> None:
    pod = doctor._probe_pod("podhop-doctor-abc-1", "node-3", "r.io/podhop/agent:1", "abc")
    spec = pod["spec"]
    assert spec["nodeName"] == "node-3" and spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    (c,) = spec["containers"]
    assert c["command"] == ["/podhop-agent", "--idle"] and c["name"] == doctor.PROBE_CONTAINER
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    assert pod["metadata"]["labels"][doctor.PROBE_LABEL] == "abc"
