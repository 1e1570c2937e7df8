"""Hostile pods and hostile archives: nothing podhop writes, deletes or unpacks leaves the pod.

A pod's root filesystem and a checkpoint archive are untrusted. These tests
plant what an attacker would — links from the pod's ``/etc`` files to host
files, archives with ``..``, absolute names, links leading out, device nodes,
deletions outside the root, a ``spec.dump`` asking for host mounts, hooks and
capabilities — and check that the host is untouched, the pod (where it still
runs) serves, and nothing of a refused restore is left behind.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import PODHOP, WEB, migrate, podhop

from podhop.backends.local import pods as podops
from podhop.backends.local.apply import apply
from podhop.backends.local.cluster import LocalCluster, monitor_pids
from podhop.migrate.engine import Migration, Options
from podhop.net import netns
from podhop.store import PodRecord

pytestmark = pytest.mark.integration


def the_pod(cluster: LocalCluster) -> PodRecord:
    (pod,) = cluster.store.pods(cluster.name)
    return pod


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def victims(tmp_path: Path) -> dict[str, Path]:
    """Host files an attacker would like overwritten, one per /etc file podhop manages."""
    out = {}
    for name in ("hosts", "hostname", "resolv.conf"):
        victim = tmp_path / f"host-{name}"
        victim.write_text(f"host's own {name}\n")
        out[name] = victim
    return out


def assert_victims_intact(found: dict[str, Path]) -> None:
    for name, victim in found.items():
        assert victim.read_text() == f"host's own {name}\n", f"{victim} was written through the pod"


def plant_links(pod: PodRecord, targets: dict[str, Path]) -> None:
    """Make the pod's /etc/hosts, /etc/hostname and /etc/resolv.conf links to host files.

    From inside, the pod cannot (they are bind mounts: see ``test_pod_cannot_replace_its_etc_files``),
    so the links are planted in its overlay's upper directory, where a migration or a checkpoint
    finds them."""
    etc = Path(pod.containers[0].bundle) / "upper" / "etc"
    etc.mkdir(exist_ok=True)
    for name, victim in targets.items():
        (etc / name).unlink(missing_ok=True)
        (etc / name).symlink_to(victim)


def test_pod_cannot_replace_its_etc_files(cluster: LocalCluster, tmp_path: Path) -> None:
    apply(cluster, "web.yaml", WEB)
    assert podops.wait_ready(cluster.store.pods(cluster.name)) == []
    victim = victims(tmp_path)["hosts"]
    for script in (
        f"rm /etc/hosts && ln -s {victim} /etc/hosts",
        f"mv /etc /etc.old && mkdir /etc && ln -s {victim} /etc/hosts",
        "echo pwned > /etc/hosts.new && mv /etc/hosts.new /etc/hosts",
    ):
        out = podhop(cluster, "exec", "web", "--", "sh", "-c", script)
        assert out.returncode != 0, script
    assert victim.read_text() == "host's own hosts\n"


@pytest.mark.parametrize("strategy", ["cold", "clone", "postcopy"])
def test_links_from_etc_to_host_files_stay_links(
    make_cluster: Callable[..., LocalCluster], tmp_path: Path, strategy: str
) -> None:
    cluster = make_cluster(nodes=2)
    apply(cluster, "web.yaml", WEB)
    pod = the_pod(cluster)
    assert podops.wait_ready([pod]) == []
    found = victims(tmp_path)
    plant_links(pod, found)
    for target in ("node-2", "node-1"):  # there and back: the second move starts from planted links too
        report = migrate(cluster, "web", target, strategy, options=Options(measure_resources=False))
        assert report["target_node"] == target
        assert_victims_intact(found)
        now = the_pod(cluster)
        assert get(f"http://{now.ip}/").startswith("<!DOCTYPE html>")
    # Inside, the pod sees its own hosts file (bind-mounted from its directory), not the host's.
    hosts = podhop(cluster, "exec", "web", "--", "cat", "/etc/hosts")
    assert hosts.returncode == 0 and the_pod(cluster).ip in hosts.stdout, hosts


def test_checkpoint_and_restore_of_a_pod_with_planted_links(cluster: LocalCluster, tmp_path: Path) -> None:
    apply(cluster, "web.yaml", WEB)
    pod = the_pod(cluster)
    assert podops.wait_ready([pod]) == []
    found = victims(tmp_path)
    plant_links(pod, found)
    archive = tmp_path / "web.tar"
    out = podhop(cluster, "checkpoint", "web", "-o", str(archive))
    assert out.returncode == 0, out.stderr
    out = podhop(cluster, "restore", str(archive), "--node", "node-2")
    assert out.returncode == 0, out.stderr
    assert_victims_intact(found)
    assert get(f"http://{the_pod(cluster).ip}/").startswith("<!DOCTYPE html>")


# --- hostile archives -------------------------------------------------------------------------------


def real_archive(cluster: LocalCluster, tmp_path: Path) -> Path:
    """A genuine checkpoint of the web pod (left running), to be tampered with."""
    apply(cluster, "web.yaml", WEB)
    assert podops.wait_ready(cluster.store.pods(cluster.name)) == []
    archive = tmp_path / "genuine.tar"
    out = podhop(cluster, "checkpoint", "web", "--leave-running", "-o", str(archive))
    assert out.returncode == 0, out.stderr
    return archive


def read_member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        fh = tar.extractfile(name)
        assert fh is not None
        return fh.read()


def rewrite(
    src: Path,
    dest: Path,
    *,
    replace: dict[str, bytes] | None = None,
    extra: list[tarfile.TarInfo] | None = None,
    data: dict[str, bytes] | None = None,
) -> Path:
    """Copy an archive, replacing members' contents and appending hostile members."""
    replace, data = replace or {}, data or {}
    with tarfile.open(src) as tin, tarfile.open(dest, "w") as tout:
        for m in tin.getmembers():
            if m.name in replace:
                body = replace[m.name]
                m.size = len(body)
                tout.addfile(m, io.BytesIO(body))
            else:
                tout.addfile(m, tin.extractfile(m) if m.isreg() else None)
        for m in extra or []:
            tout.addfile(m, io.BytesIO(data.get(m.name, b"")) if m.isreg() else None)
    return dest


def member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, size, link, 0o644
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    return info


def inner_diff(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, body in entries:
            info.size = len(body) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(body) if info.isreg() else None)
    return buf.getvalue()


def nothing_left(cluster: LocalCluster, before_pods: int) -> None:
    """A refused restore leaves no pod, namespace, directory, mount or process behind."""
    pods = cluster.store.pods(cluster.name)
    assert len(pods) == before_pods
    node_ns = {n.netns for n in cluster.nodes()}
    assert set(netns.list_netns(cluster.layout.netns_prefix)) - node_ns == {p.netns for p in pods}
    for n in cluster.nodes():
        assert not any((cluster.node_dir(n.name) / "checkpoints").iterdir())
        on_node = {podops.pod_dir(cluster, n.name, p.name, p.sandbox).name for p in pods if p.node == n.name}
        assert {d.name for d in (cluster.node_dir(n.name) / "pods").iterdir()} == on_node
    assert set(monitor_pids(cluster.dir)) == {c.monitor_pid for p in pods for c in p.containers}


def restore_refused(cluster: LocalCluster, archive: Path, *words: str) -> str:
    before = len(cluster.store.pods(cluster.name))
    out = podhop(cluster, "restore", str(archive), "--node", "node-2", "--name", "evil")
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, out.stderr
    for word in words:
        assert word in lines[0], out.stderr
    nothing_left(cluster, before)
    return lines[0]


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("dotdot-member", ["unsafe name"]),
        ("absolute-member", ["unsafe name"]),
        ("symlink-member", ["symbolic link"]),
        ("device-member", ["character device"]),
        ("duplicate-member", ["appears twice"]),
        ("diff-dotdot", ["'..'"]),
        ("diff-through-link", ["not a directory"]),
        ("diff-device", ["device node"]),
        ("deleted-outside", ["'..'"]),
        ("bad-name", ["container name"]),
    ],
)
def test_hostile_archive_is_refused_and_leaves_nothing(
    cluster: LocalCluster, tmp_path: Path, case: str, words: list[str]
) -> None:
    genuine = real_archive(cluster, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep me")
    config = json.loads(read_member(genuine, "config.dump"))
    hostile = tmp_path / f"{case}.tar"
    diff = "rootfs-diff.tar"
    if case == "dotdot-member":
        rewrite(genuine, hostile, extra=[member("../../escaped", size=3)], data={"../../escaped": b"bad"})
    elif case == "absolute-member":
        path = str(outside / "abs")
        rewrite(genuine, hostile, extra=[member(path, size=3)], data={path: b"bad"})
    elif case == "symlink-member":
        rewrite(genuine, hostile, extra=[member("checkpoint/evil.img", tarfile.SYMTYPE, link="/etc/shadow")])
    elif case == "device-member":
        rewrite(genuine, hostile, extra=[member("checkpoint/mem.img", tarfile.CHRTYPE)])
    elif case == "duplicate-member":
        rewrite(genuine, hostile, extra=[member("config.dump", size=2)], data={"config.dump": b"{}"})
    elif case == "diff-dotdot":
        body = inner_diff([(member("../../../" + str(outside / "x")), b"bad")])
        rewrite(genuine, hostile, replace={diff: body})
    elif case == "diff-through-link":
        body = inner_diff(
            [(member("etc/out", tarfile.SYMTYPE, link=str(outside)), b""), (member("etc/out/x"), b"bad")]
        )
        rewrite(genuine, hostile, replace={diff: body})
    elif case == "diff-device":
        rewrite(genuine, hostile, replace={diff: inner_diff([(member("dev-sda", tarfile.BLKTYPE), b"")])})
    elif case == "deleted-outside":
        entries = json.dumps(["/../../../" + str(outside / "keep")]).encode()
        rewrite(genuine, hostile, replace={"deleted.files": entries})
    elif case == "bad-name":
        config["name"] = "../Evil_Name"
        rewrite(genuine, hostile, replace={"config.dump": json.dumps(config).encode()})
    restore_refused(cluster, hostile, *words)
    assert (
        sorted(p.name for p in outside.iterdir()) == ["keep"] and (outside / "keep").read_text() == "keep me"
    )
    assert not (tmp_path.parent / "escaped").exists()


def test_spec_dump_cannot_ask_for_hooks_mounts_or_privileges(cluster: LocalCluster, tmp_path: Path) -> None:
    """A ``spec.dump`` asking for a host mount, a hook, capabilities and the host's namespaces: the pod is
    restored with podhop's own config, none of it granted."""
    genuine = real_archive(cluster, tmp_path)
    marker = tmp_path / "hook-ran"
    spec = json.loads(read_member(genuine, "spec.dump"))
    spec["hooks"] = {
        "prestart": [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}"]}],
        "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}"]}],
    }
    spec["mounts"].append({"destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "rw"]})
    spec["process"]["capabilities"] = {k: ["CAP_SYS_ADMIN"] for k in ("bounding", "effective", "permitted")}
    spec["linux"]["namespaces"] = [{"type": "mount"}]  # i.e. the host's network, pid, ipc, uts
    spec["linux"]["devices"] = [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]
    hostile = rewrite(genuine, tmp_path / "spec.tar", replace={"spec.dump": json.dumps(spec).encode()})
    out = podhop(cluster, "restore", str(hostile), "--node", "node-2", "--name", "copy")
    # CRIU may refuse the mount the checkpoint never had; either way nothing of the spec is granted.
    restored = next((p for p in cluster.store.pods(cluster.name) if p.name == "copy"), None)
    assert not marker.exists(), "a hook from the archive ran"
    if restored is None:
        assert out.returncode == 1 and "Traceback" not in out.stderr
        return
    config = json.loads((Path(restored.containers[0].bundle) / "config.json").read_text())
    assert "hooks" not in config
    assert all(m["destination"] != "/host" for m in config["mounts"])
    assert "CAP_SYS_ADMIN" not in config["process"]["capabilities"]["bounding"]
    assert {n["type"] for n in config["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount", "network"}
    assert "devices" not in config["linux"]
    assert get(f"http://{restored.ip}/").startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("case", ["truncated", "not-a-tar", "empty", "garbage-zstd", "no-images"])
def test_broken_archives_give_one_line(cluster: LocalCluster, tmp_path: Path, case: str) -> None:
    genuine = real_archive(cluster, tmp_path)
    bad = tmp_path / f"{case}.tar"
    if case == "truncated":
        bad.write_bytes(genuine.read_bytes()[: genuine.stat().st_size // 2])
    elif case == "not-a-tar":
        bad.write_text("this is not an archive\n" * 100)
    elif case == "empty":
        bad.write_bytes(b"")
    elif case == "garbage-zstd":
        bad.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(4000))
    else:
        with tarfile.open(genuine) as tin, tarfile.open(bad, "w") as tout:
            for m in tin.getmembers():
                if not m.name.startswith("checkpoint"):
                    tout.addfile(m, tin.extractfile(m) if m.isreg() else None)
    line = restore_refused(cluster, bad)
    assert str(bad) in line
    ins = subprocess.run([*PODHOP, "inspect", str(bad)], capture_output=True, text=True, timeout=60)
    if case != "no-images":
        assert ins.returncode == 1 and "Traceback" not in ins.stderr and ins.stderr.startswith("error:")


# --- transfers accept only their own migration ----------------------------------------------------


def connect_from(ns: str | None, ip: str, port: int, payload: bytes) -> str:
    """Connect from network namespace ``ns`` (None: the host), send ``payload``; what happened."""
    code = (
        "import socket,sys\n"
        "try:\n"
        f"    s=socket.create_connection(({ip!r},{port}),timeout=3)\n"
        f"    s.sendall({payload!r})\n"
        "    s.settimeout(3)\n"
        "    print('closed' if s.recv(1)==b'' else 'answered')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except ConnectionResetError: print('reset')\n"
        "except OSError as e: print('error', e)\n"
    )
    argv = [sys.executable, "-c", code]
    if ns:
        argv = ["nsenter", f"--net={netns.netns_path(ns)}", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()


def test_transfer_ends_refuse_strangers(make_cluster: Callable[..., LocalCluster]) -> None:
    """While a cold migration is under way, its receivers refuse the host, a pod and a wrong secret."""
    cluster = make_cluster(nodes=3)
    apply(cluster, "web.yaml", WEB)
    assert podops.wait_ready(cluster.store.pods(cluster.name)) == []
    src, dst, third = cluster.node("node-1"), cluster.node("node-2"), cluster.node("node-3")
    seen: dict[str, str] = {}

    def probe_receivers(phase: str, m: Migration) -> None:
        if phase != "freeze":
            return
        mv = m.driver.moves[0]
        seen["transfer from host"] = connect_from(None, dst.ip, mv.transfer_port, b"x" * 64)
        seen["transfer from another node"] = connect_from(third.netns, dst.ip, mv.transfer_port, b"x" * 64)
        seen["transfer, wrong secret"] = connect_from(src.netns, dst.ip, mv.transfer_port, b"\0" * 32)
        seen["page server from host"] = connect_from(None, dst.ip, mv.page_server_port, b"hello")
        seen["page server from another node"] = connect_from(third.netns, dst.ip, mv.page_server_port, b"x")

    opts = Options(measure_resources=False, on_phase=probe_receivers, stream_pages_from_b=0)
    report = migrate(cluster, "web", "node-2", "cold", options=opts)
    print(f"\n{seen}")
    assert report["target_node"] == "node-2"  # the real sender still got through
    for who in ("transfer from host", "transfer from another node", "transfer, wrong secret"):
        assert seen[who] in ("closed", "reset"), seen  # dropped unread
    assert seen["page server from host"] in ("refused", "reset")
    assert seen["page server from another node"] in ("refused", "reset")
    assert get(f"http://{the_pod(cluster).ip}/").startswith("<!DOCTYPE html>")


def test_an_intruder_cannot_take_the_page_servers_connection(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    """From the one address allowed, during the freeze, a client gets nothing from the page server's
    port (the migration's own connection was made and checked in prepare), and the migration goes on
    undisturbed."""
    cluster = make_cluster(nodes=2)
    apply(cluster, "web.yaml", WEB)
    (pod,) = cluster.store.pods(cluster.name)
    assert podops.wait_ready([pod]) == []
    src, dst = cluster.node("node-1"), cluster.node("node-2")
    seen: dict[str, str] = {}

    def intrude(phase: str, m: Migration) -> None:
        if phase == "freeze":
            mv = m.driver.moves[0]
            assert mv.page_link is not None  # memory streams on a link of its own
            seen["intruder"] = connect_from(src.netns, dst.ip, mv.page_server_port, b"\0" * 32 + b"pages")

    report = migrate(
        cluster,
        "web",
        "node-2",
        "cold",
        options=Options(measure_resources=False, on_phase=intrude, stream_pages_from_b=0),
    )
    print(f"\n{seen}")
    assert seen["intruder"] in ("refused", "reset", "closed"), seen  # no page server answered it
    assert report["target_node"] == "node-2" and report["memory_pages_bytes"] > 0
    (after,) = cluster.store.pods(cluster.name)
    assert after.node == "node-2"
    assert get(f"http://{after.ip}/").startswith("<!DOCTYPE html>")
