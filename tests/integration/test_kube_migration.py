"""Migration on a real Kubernetes cluster (``--kind kubernetes``): the node agent, cold, clone, faults.

One 3-node cluster for the module (its agents installed by ``cluster create``),
a fresh namespace per test whose deletion is checked, and after every test no
checkpoint archive on any node, no checkpoint image in any node's containerd
and nothing staged in any agent. The migrations run as a user would run them
(``podhop migrate … --kubeconfig``); the fault tests call the engine in-process
with the ``on_phase`` hook the local kind's tests use (raise as a phase starts).
"""

from __future__ import annotations

import io
import json
import re
import secrets
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    KUBE_NODES,
    Ns,
    external_ip,
    kube_checkpoint_debris,
    kube_cluster,
    kube_namespace,
    kube_unavailable,
    ready,
    wait_serving,
)

from podhop.errors import PodhopError
from podhop.kubekind import cluster as kube
from podhop.kubekind import components
from podhop.sh import default_sigint

pytestmark = pytest.mark.integration


if (why := kube_unavailable()) is not None:
    pytest.skip(why, allow_module_level=True)

CTR = str(components.binary("ctr"))
NODES = KUBE_NODES
KEYS = 20_000


@pytest.fixture(scope="module")
def kcluster() -> Iterator[kube.KubeCluster]:
    with kube_cluster("km") as c:
        yield c


@pytest.fixture
def ns(kcluster: kube.KubeCluster, tmp_path: Path) -> Iterator[Ns]:
    with kube_namespace(kcluster, tmp_path) as n:
        yield n


def redis_pod(node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "redis", "labels": {"app": "redis", "tier": "cache"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [
                {
                    "name": "redis",
                    "image": "redis",
                    "args": ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"],
                }
            ],
        },
    }


def start_redis(ns: Ns, node: str, keys: int = KEYS) -> dict[str, Any]:
    ns.apply(redis_pod(node))
    ns.kubectl("wait", "--for=condition=Ready", "pod/redis", "--timeout=120s", timeout=130)
    commands = "".join(f"SET key:{i} value-{i}\r\n" for i in range(keys))
    out = ns.kubectl("exec", "-i", "redis", "--", "redis-cli", "--pipe", input=commands, timeout=120)
    assert f"replies: {keys}" in out and "errors: 0" in out, out
    assert dbsize(ns, "redis") == keys
    pod: dict[str, Any] = ns.get("pod", "redis")
    return pod


def dbsize(ns: Ns, pod: str) -> int:
    return int(ns.kubectl("exec", pod, "-c", "redis", "--", "redis-cli", "DBSIZE").strip())


# ---------------------------------------------------------------------------------------------- tests


def test_agents_ready_on_every_node_and_manifests_accepted(ns: Ns) -> None:
    """``cluster create`` installed the agent (Ready on all nodes); every shipped manifest passes a
    server-side dry run."""
    agents = ns.get("pods", "-n", "podhop-system", "-l", "app.kubernetes.io/name=podhop-agent")["items"]
    assert sorted(p["spec"]["nodeName"] for p in agents if ready(p)) == list(NODES)
    for extra in ([], ["--kind-cluster", ns.layout.cluster], ["--no-user-rbac", "--image", "x.io/a:b"]):
        out = subprocess.run(
            [sys.executable, "-m", "podhop", "kube", "manifests", *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        kinds = [d["kind"] for d in yaml.safe_load_all(out) if d]
        assert {"Namespace", "Secret", "ServiceAccount", "DaemonSet"} <= set(kinds), kinds
        assert ("ClusterRole" in kinds) == ("--no-user-rbac" not in extra)
        dry = ns.kubectl("-n", "podhop-system", "apply", "--dry-run=server", "-f", "-", input=out)
        assert dry.count("(server dry run)") == len(kinds), dry


def test_kube_install_reapplies_and_keeps_the_token(ns: Ns) -> None:
    """``podhop kube install`` on a cluster that has the agent: same token, agents Ready, answering."""
    from podhop.backends.kubernetes import agent as agents
    from podhop.backends.kubernetes.backend import KubernetesBackend

    backend = KubernetesBackend.connect(ns.kubeconfig)
    before = agents.token(backend)
    out = subprocess.run(
        [sys.executable, "-m", "podhop", "kube", "install", "--cluster", ns.layout.cluster],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "daemonset/podhop-agent serverside-applied" in out.stdout
    assert "Ready on 3 nodes" in out.stdout, out.stdout
    assert agents.token(backend) == before
    for node in NODES:
        assert agents.agent_on(backend, node).request("GET", "healthz")["node"] == node


def test_agent_refuses_without_its_token_and_unsafe_names(ns: Ns) -> None:
    from podhop.backends.kubernetes import agent as agents
    from podhop.backends.kubernetes.backend import KubernetesBackend

    backend = KubernetesBackend.connect(ns.kubeconfig)
    good = agents.agent_on(backend, "node-2")
    assert good.request("GET", "healthz")["status"] == "ok"
    bad = agents.Agent(backend, good.node, good.pod, good.ip, "0" * 64)
    with pytest.raises(agents.AgentError, match="401"):
        bad.request("GET", "healthz")
    checkpoints = ns.layout.checkpoints_dir(2)
    (checkpoints / "link.tar").symlink_to("/etc/shadow")
    try:
        with pytest.raises(agents.AgentError, match="symbolic link"):
            good.request("GET", "checkpoints/link.tar")
        for name in ("..%2F..%2Fkubelet.yaml", "%2E%2E"):
            with pytest.raises(agents.AgentError, match=r"not a plain file name|40[04]"):
                good.request("GET", f"checkpoints/{name}")
    finally:
        (checkpoints / "link.tar").unlink()
    with pytest.raises(agents.AgentError, match=r"not a container id|40[04]"):
        good.request("POST", "tasks/..%2Fx/pause", {})


def _tar(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ok = tarfile.TarInfo("config.dump")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"{}"))
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return buf.getvalue()


def _hostile() -> dict[str, bytes]:
    link = tarfile.TarInfo("checkpoint/pages-1.img")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    hard = tarfile.TarInfo("spec.dump")
    hard.type, hard.linkname = tarfile.LNKTYPE, "config.dump"
    dev = tarfile.TarInfo("checkpoint/tty")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    kind = "is not a regular file or directory"
    return {  # what the agent must answer -> the archive
        f"{kind} (type '2')": _tar(link),
        f"{kind} (type '1')": _tar(hard),
        f"{kind} (type '3')": _tar(dev),
        "leaves the archive": _tar(tarfile.TarInfo("checkpoint/../../escape"), b"x"),
        "has an absolute or invalid name": _tar(tarfile.TarInfo("/etc/cron.d/evil"), b"x"),
        "not a tar archive": b"\x00garbage" * 100,
    }


def test_receive_takes_one_peer_with_its_secret_and_refuses_hostile_archives(ns: Ns) -> None:
    """The archive a receive gets is untrusted: links, devices, escaping or absolute names refuse
    it (nothing imported); a connection without the secret is dropped and the right one still gets in."""
    from podhop.backends.kubernetes import agent as agents
    from podhop.backends.kubernetes.backend import KubernetesBackend

    backend = KubernetesBackend.connect(ns.kubeconfig)
    target = agents.agent_on(backend, "node-2")
    node_ip = ns.layout.node_ip(2)
    for reason, data in _hostile().items():
        secret = secrets.token_hex(32)
        image = f"localhost/podhop-checkpoint/evil:{secrets.token_hex(3)}"
        body = {
            "from": ns.layout.host_ip,
            "secret": secret,
            "container": "evil",
            "image": image,
            "timeout_s": 30,
        }
        status = target.request("POST", "receive", body)
        with socket.create_connection((node_ip, int(status["port"])), timeout=10) as wrong:
            wrong.sendall(bytes(32))
            assert wrong.recv(1) == b"", "a connection without the secret must be dropped"
        with socket.create_connection((node_ip, int(status["port"])), timeout=10) as conn:
            conn.sendall(bytes.fromhex(secret) + data)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)
        deadline = time.monotonic() + 30
        while (state := target.request("GET", f"receive/{status['id']}"))["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        assert state["state"] == "failed" and "refused" in state["error"], (reason, state)
        assert reason in state["error"], (reason, state)
        with pytest.raises(agents.AgentNotFound):
            target.request("DELETE", f"images/{urllib.parse.quote(image, safe='')}")


def test_checkpoint_to_a_file_and_restore_it_on_another_node(ns: Ns, tmp_path: Path) -> None:
    start_redis(ns, "node-1", keys=500)
    out_file = tmp_path / "redis.tar"
    out = ns.podhop("checkpoint", "redis", "-o", str(out_file), "--leave-running")
    assert out.returncode == 0, out.stderr
    assert out_file.stat().st_mode & 0o777 == 0o600 and out_file.stat().st_size > 100_000
    out = ns.podhop("restore", str(out_file), "--node", "node-2", "--name", "redis-copy", namespaced=False)
    assert out.returncode == 0, out.stderr
    copy = ns.get("pod", "redis-copy")
    assert copy["spec"]["nodeName"] == "node-2" and ready(copy)
    assert dbsize(ns, "redis-copy") == 500 and dbsize(ns, "redis") == 500  # both: --leave-running


def test_redis_cold_migration_keeps_every_key(ns: Ns) -> None:
    before = start_redis(ns, "node-1")
    t0 = time.monotonic()
    out = ns.podhop("migrate", "redis", "--to", "node-3", "--strategy", "cold", "-o", "json")
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    print(f"\ncold redis ({KEYS} keys): {took:.1f} s wall, phases {report['phases']}")
    new = report["new_pod"]
    assert report["source_node"] == "node-1" and report["target_node"] == "node-3" and new
    pods = ns.pods()
    assert [p["metadata"]["name"] for p in pods] == [new], "the source must be gone, only its copy left"
    (pod,) = pods
    assert pod["spec"]["nodeName"] == "node-3" and ready(pod)
    assert pod["metadata"]["labels"] == before["metadata"]["labels"]
    assert pod["status"]["podIP"] == report["new_ip"] != before["status"]["podIP"]
    assert dbsize(ns, new) == KEYS
    assert (
        ns.kubectl("exec", new, "-c", "redis", "--", "redis-cli", "GET", "key:12345").strip() == "value-12345"
    )
    assert report["bytes_transferred"] > 0
    # The copy moves on like any pod (its own podhop init containers are not repeated).
    again = ns.podhop("migrate", new, "--to", "node-2", "--strategy", "cold", "-o", "json")
    assert again.returncode == 0, again.stderr
    newer = json.loads(again.stdout)["new_pod"]
    (pod,) = ns.pods()
    assert pod["metadata"]["name"] == newer and pod["spec"]["nodeName"] == "node-2" and ready(pod)
    assert dbsize(ns, newer) == KEYS


def parse_hey(out: str) -> tuple[dict[int, int], str]:
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors = out.split("Error distribution:", 1)[1].strip() if "Error distribution:" in out else ""
    return codes, errors


def test_nginx_deployment_clone_under_load_fails_no_request(ns: Ns) -> None:
    ns.kubectl("create", "deployment", "nginx", "--image=nginx", "--replicas=4")
    ns.kubectl("rollout", "status", "deployment/nginx", "--timeout=180s", timeout=200)
    ns.kubectl("expose", "deployment", "nginx", "--port=80", "--type=LoadBalancer")
    ip = external_ip(ns, "nginx")
    wait_serving(ip)
    pods = ns.pods()
    where = {n: [p for p in pods if p["spec"]["nodeName"] == n] for n in NODES}
    source_node = max(where, key=lambda n: len(where[n]))
    target = min(where, key=lambda n: len(where[n]))
    source = where[source_node][0]["metadata"]["name"]
    # hey runs until interrupted (at most 90 s, at most 2 million requests) so that its load covers
    # the whole migration however long the machine makes it; on SIGINT it prints its summary.
    load = subprocess.Popen(
        ["hey", "-n", "2000000", "-z", "90s", "-c", "10", f"http://{ip}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        time.sleep(1.0)
        out = ns.podhop("migrate", source, "--to", target, "--strategy", "clone", "-o", "json", timeout=120)
        loaded = load.poll() is None
        time.sleep(1.0)  # and a while on the new endpoint set
        load.send_signal(signal.SIGINT)
        hey, _ = load.communicate(timeout=30)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(timeout=10)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    codes, errors = parse_hey(hey)
    print(f"\nclone under hey: {codes} errors={errors!r}; probe {report['probe']}; phases {report['phases']}")
    assert loaded, "hey ended before the migration did: the load did not cover it"
    assert set(codes) == {200} and codes[200] > 1000, hey
    assert errors == "", f"hey saw failed requests:\n{errors}"
    new = report["new_pod"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pods = ns.pods()
        if len(pods) == 4 and all(ready(p) for p in pods):
            break
        time.sleep(0.5)
    names = {p["metadata"]["name"]: p for p in pods}
    assert len(pods) == 4 and all(ready(p) for p in pods), [(n, ready(p)) for n, p in names.items()]
    assert source not in names and new in names
    assert names[new]["spec"]["nodeName"] == target
    owner = names[new]["metadata"]["ownerReferences"][0]
    assert (
        owner["kind"] == "ReplicaSet"
        and owner["name"] == where[source_node][0]["metadata"]["generateName"][:-1]
    )
    assert ns.get("deployment", "nginx")["status"].get("readyReplicas") == 4


def test_cold_migration_of_a_deployments_pod_keeps_the_replica_count(ns: Ns) -> None:
    """Owned and frozen: the ReplicaSet adopts the restored pod and deletes the source, which podhop
    then kills while it is still frozen; the Deployment ends with its 2 replicas, one on the target."""
    ns.kubectl("create", "deployment", "cache", "--image=redis", "--replicas=2")
    ns.kubectl("rollout", "status", "deployment/cache", "--timeout=180s", timeout=200)
    pods = ns.pods()
    source = pods[0]
    target = next(n for n in NODES if n not in {p["spec"]["nodeName"] for p in pods})
    name = source["metadata"]["name"]
    assert ns.kubectl("exec", name, "--", "redis-cli", "SET", "moved", "yes").strip() == "OK"
    out = ns.podhop("migrate", name, "--to", target, "--strategy", "cold", "-o", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["warnings"] == [], report["warnings"]
    new = report["new_pod"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pods = ns.pods()
        if len(pods) == 2 and all(ready(p) for p in pods):
            break
        time.sleep(0.5)
    names = {p["metadata"]["name"]: p for p in pods}
    assert len(names) == 2 and name not in names and names[new]["spec"]["nodeName"] == target
    assert names[new]["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    assert ns.kubectl("exec", new, "-c", "redis", "--", "redis-cli", "GET", "moved").strip() == "yes"


def test_drained_pod_leaves_its_service_and_comes_back(ns: Ns) -> None:
    """What a clone does to its source (and its undo): held out -> not Ready, out of the
    EndpointSlices, still running, and kept out across its kubelet's 10 s rewrites of the mark;
    the let-go wait leaves a window no rewrite reaches; left alone, the kubelet does put it back;
    the undo -> back in."""
    from podhop.backends.kubernetes import endpoints
    from podhop.backends.kubernetes.backend import KubernetesBackend

    start_redis(ns, "node-1", keys=10)
    ns.kubectl("expose", "pod", "redis", "--port=6379")
    backend = KubernetesBackend.connect(ns.kubeconfig)

    def serving() -> int:
        return endpoints.serving_endpoints(backend, ns.name, "redis")

    def wait_serving(n: int, why: str) -> None:
        deadline = time.monotonic() + 30
        while serving() != n:
            assert time.monotonic() < deadline, why
            time.sleep(0.2)

    wait_serving(1, "the Service never offered the pod")
    holdout = endpoints.Holdout(backend, ns.name, "redis").start()
    try:
        assert holdout.wait_out(15)
        # Held for longer than a kubelet period: each rewrite is undone within a moment (the
        # EndpointSlices may offer the pod for that moment; wait_out(let_go) is what keeps a stop
        # clear of it).
        end = time.monotonic() + endpoints.KUBELET_SYNC_S + 2
        offered_since: float | None = None
        longest = 0.0
        while time.monotonic() < end:
            now = time.monotonic()
            if serving():
                offered_since = offered_since or now
                longest = max(longest, now - offered_since)
            else:
                offered_since = None
            time.sleep(0.1)
        print(f"\nkubelet rewrites {holdout.rewrites}; longest offered {longest:.2f} s")
        assert holdout.rewrites >= 1, "the kubelet never rewrote the mark: the holdout guards nothing"
        assert longest < 1.0, f"a rewrite kept the pod offered for {longest:.2f} s"
        assert holdout.wait_out(25, let_go=True)
        released = time.monotonic()
    finally:
        holdout.stop()
    while time.monotonic() < released + endpoints.LET_GO_S:  # the window wait_out(let_go) promises
        assert serving() == 0 and not ready(ns.get("pod", "redis"))
        time.sleep(0.2)
    assert dbsize(ns, "redis") == 10  # out of service, still running
    # Nobody holding it out: within one reconcile period its kubelet marks it Ready again.
    deadline = released + endpoints.KUBELET_SYNC_S + 5
    while not ready(ns.get("pod", "redis")):
        assert time.monotonic() < deadline, "the kubelet never rewrote the mark"
        time.sleep(0.2)
    wait_serving(1, "the kubelet's rewrite did not bring the pod back")
    holdout = endpoints.Holdout(backend, ns.name, "redis").start()
    assert holdout.wait_out(15)
    holdout.stop(ready_again=True)  # the undo
    wait_serving(1, "the undo did not bring the pod back into its Service")
    time.sleep(2)
    assert ready(ns.get("pod", "redis")) and serving() == 1


def test_kubectl_podhop_is_a_kubectl_plugin_on_kubectls_cluster(ns: Ns) -> None:
    """``kubectl podhop …`` (the ``kubectl-podhop`` entry point on PATH) acts on kubectl's cluster."""
    import os

    start_redis(ns, "node-1", keys=10)
    bindir = Path(sys.executable).parent
    assert (bindir / "kubectl-podhop").is_file(), "the package installs no kubectl-podhop entry point"
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}", "KUBECONFIG": str(ns.kubeconfig)}
    env.pop("PODHOP_CLUSTER", None)
    out = subprocess.run(
        [str(components.binary("kubectl")), "podhop", "get", "pods", "-n", ns.name, "-o", "wide"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "redis" in out.stdout and "node-1" in out.stdout, out.stdout
    listed = subprocess.run(
        [str(components.binary("kubectl")), "plugin", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert "kubectl-podhop" in listed.stdout, listed.stdout + listed.stderr


def test_postcopy_is_refused_clearly(ns: Ns) -> None:
    ns.apply(redis_pod("node-1"))
    ns.kubectl("wait", "--for=condition=Ready", "pod/redis", "--timeout=120s", timeout=130)
    out = ns.podhop("migrate", "redis", "--to", "node-2", "--strategy", "postcopy")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith(
        "error: migration failed in phase 'plan': strategy postcopy is not available"
    ), lines
    assert "lazy-pages" in lines[0] and "Traceback" not in out.stderr
    (pod,) = ns.pods()
    assert pod["metadata"]["name"] == "redis" and pod["spec"]["nodeName"] == "node-1" and ready(pod)


# ------------------------------------------------------------------------------------ injected faults

FAULT_PHASES = {
    "cold": ["prepare", "freeze", "dump", "transfer", "restore", "switch"],
    "clone": ["prepare", "dump", "transfer", "restore", "switch"],
}
FAULT_CASES = [(s, p) for s, phases in FAULT_PHASES.items() for p in phases]


class InjectedFault(PodhopError):
    """What the fault-injection hook raises."""


@pytest.mark.parametrize(("strategy", "phase"), FAULT_CASES)
def test_fault_in_each_phase_keeps_source(ns: Ns, strategy: str, phase: str) -> None:
    """A failure as each phase starts: the migration unwinds naming it; the source serves as before,
    unfrozen, with every key; nothing of the attempt is left (pods, archives, images, listeners)."""
    from podhop.backends.kubernetes.backend import KubernetesBackend
    from podhop.migrate.engine import MigrationError, Options, migrate

    before = start_redis(ns, "node-1", keys=2000)
    seen: list[str] = []
    kept: dict[str, Any] = {}

    def hook(name: str, m: Any) -> None:
        seen.append(name)
        kept["m"] = m
        if name == phase:
            if phase in ("transfer", "restore", "switch"):  # the work so far really happened
                kept["archives"] = dict(m.driver.archives)
            raise InjectedFault("injected fault")

    backend = KubernetesBackend.connect(ns.kubeconfig)
    t0 = time.monotonic()
    with pytest.raises(MigrationError) as err:
        migrate(
            backend, "redis", "node-3", strategy, ns.name, Options(timeout_s=90, on_phase=hook, probe=False)
        )
    print(f"\n{strategy}/{phase}: failed and unwound in {time.monotonic() - t0:.1f} s")
    assert err.value.phase == phase and "injected fault" in str(err.value), err.value
    assert seen[-1] == phase
    if phase in ("transfer", "restore", "switch"):
        assert kept["archives"], "the dump did not happen before the fault"
    assert_source_intact(ns, before, kept["m"], keys=2000)


def assert_source_intact(ns: Ns, before: dict[str, Any], m: Any, keys: int) -> None:
    """The same pod on the same node, Ready, unfrozen, every key; nothing of the attempt left."""
    (pod,) = ns.pods()
    assert pod["metadata"]["uid"] == before["metadata"]["uid"] and pod["spec"]["nodeName"] == "node-1"
    assert ready(pod) and pod["status"]["podIP"] == before["status"]["podIP"]
    assert DELETION_COST not in (pod["metadata"].get("annotations") or {})
    assert pod["metadata"]["labels"] == before["metadata"]["labels"]
    restarts = [c["restartCount"] for c in pod["status"]["containerStatuses"]]
    assert restarts == [c["restartCount"] for c in before["status"]["containerStatuses"]]
    # Serving, not frozen: redis answers at once, with every key.
    assert dbsize(ns, "redis") == keys
    assert ns.kubectl("exec", "redis", "--", "redis-cli", "SET", "after", "fault", timeout=10).strip() == "OK"
    state = subprocess.run(
        [CTR, "-a", str(ns.layout.containerd_socket(1)), "-n", "k8s.io", "tasks", "ls"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    assert re.search(rf"^{cid}\s+\d+\s+RUNNING$", state, re.M), state
    # The target's receive was closed (no listener waits for an archive any more).
    for receive_id, _port, _secret in m.driver.receives.values():
        assert m.driver.dst.request("GET", f"receive/{receive_id}")["state"] in ("failed", "done")
    assert kube_checkpoint_debris(ns.layout) == []


@pytest.mark.parametrize("strategy", ["cold", "clone"])
def test_restore_failing_on_the_target_keeps_source(ns: Ns, strategy: str) -> None:
    """A real failure inside a phase: the target's checkpoint image vanishes before the restored pod
    starts; the restore fails naming the cause and everything unwinds."""
    from podhop.backends.kubernetes.backend import KubernetesBackend
    from podhop.migrate.engine import MigrationError, Options, migrate

    before = start_redis(ns, "node-1", keys=2000)
    kept: dict[str, Any] = {}

    def hook(name: str, m: Any) -> None:
        kept["m"] = m
        if name == "restore":
            for image in m.driver.images.values():
                m.driver.dst.request("DELETE", f"images/{urllib.parse.quote(image, safe='')}")

    backend = KubernetesBackend.connect(ns.kubeconfig)
    with pytest.raises(MigrationError) as err:
        migrate(
            backend, "redis", "node-2", strategy, ns.name, Options(timeout_s=90, on_phase=hook, probe=False)
        )
    assert err.value.phase == "restore" and "did not start" in str(err.value), err.value
    assert "ErrImageNeverPull" in str(err.value) or "not found" in str(err.value), err.value
    assert_source_intact(ns, before, kept["m"], keys=2000)


@pytest.mark.parametrize("phase", ["freeze", "transfer", "switch"])
def test_deadline_in_a_phase_keeps_source(ns: Ns, phase: str) -> None:
    """The migration's deadline passes as a phase starts: "timed out", in that phase; the source serves."""
    from podhop.backends.kubernetes.backend import KubernetesBackend
    from podhop.migrate.engine import MigrationError, Options, migrate

    before = start_redis(ns, "node-1", keys=2000)
    kept: dict[str, Any] = {}

    def hook(name: str, m: Any) -> None:
        kept["m"] = m
        if name == phase:
            m.options.timeout_s = (time.monotonic() - m.started) - 0.001

    backend = KubernetesBackend.connect(ns.kubeconfig)
    with pytest.raises(MigrationError) as err:
        migrate(
            backend, "redis", "node-3", "cold", ns.name, Options(timeout_s=90, on_phase=hook, probe=False)
        )
    assert err.value.phase == phase and "timed out" in str(err.value), err.value
    assert_source_intact(ns, before, kept["m"], keys=2000)


DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
