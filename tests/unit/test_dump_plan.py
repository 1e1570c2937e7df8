"""The direct CRIU dump asks CRIU what ``runc checkpoint`` (runc 1.1's ``Checkpoint``) would ask."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from podhop.runtime.dump import DESCRIPTORS, DumpPlan, plan_dump

ROOTFS = "/var/lib/podhop/clusters/c/nodes/node-1/pods/web.abc/nginx/rootfs"
POD = "/var/lib/podhop/clusters/c/nodes/node-1/pods/web.abc"
STATE: dict[str, Any] = {
    "init_process_pid": 4242,
    "external_descriptors": ["/dev/null", "pipe:[9004742]", "pipe:[9004743]"],
    "cgroup_paths": {"freezer": "/sys/fs/cgroup/freezer/podhop/c/node-1/abc/nginx"},
    "config": {
        "rootfs": ROOTFS,
        "mask_paths": ["/proc/kcore", "/proc/keys", "/proc/acpi"],
        "devices": [{"path": "/dev/null"}, {"path": "/dev/zero"}],
        "namespaces": [
            {"type": "NEWPID", "path": ""},
            {"type": "NEWNS", "path": ""},
            {"type": "NEWNET", "path": "/var/run/netns/ph-c.web.abc"},
        ],
        "mounts": [
            {"device": "proc", "source": "proc", "destination": "/proc"},
            {"device": "tmpfs", "source": "tmpfs", "destination": "/dev"},
            {"device": "bind", "source": f"{POD}/etc/hosts", "destination": "/etc/hosts"},
            {"device": "bind", "source": f"{POD}/etc/resolv.conf", "destination": "/etc/resolv.conf"},
        ],
        "labels": ["bundle=/b", f"org.criu.config={POD}/nginx/criu.conf"],
    },
}
POINTS = {"/", "/proc", "/dev", "/etc/hosts", "/etc/resolv.conf"}


def plan(state: dict[str, Any] = STATE, points: set[str] = POINTS) -> DumpPlan | None:
    return plan_dump(
        state, netns_inode=4026532322, masked_files={"/proc/kcore", "/proc/keys"}, mount_points=points
    )


def test_options_are_runcs() -> None:
    p = plan()
    assert p is not None
    assert (p.pid, p.root) == (4242, ROOTFS)
    opts = list(p.options)
    pairs = [opts[i + 1] for i, o in enumerate(opts) if o == "--external"]
    assert pairs == [
        "net[4026532322]:extRootNetNS",
        "mnt[/etc/hosts]:/etc/hosts",  # bind mounts: keyed by their destination
        "mnt[/etc/resolv.conf]:/etc/resolv.conf",
        "mnt[/proc/kcore]:/dev/null",  # masked files that exist (not /proc/acpi: a directory or absent)
        "mnt[/proc/keys]:/dev/null",
        "mnt[/dev/null]:/dev/null",  # devices
        "mnt[/dev/zero]:/dev/zero",
    ]
    assert opts[opts.index("--freeze-cgroup") + 1] == "/sys/fs/cgroup/freezer/podhop/c/node-1/abc/nginx"
    assert opts[opts.index("--config") + 1] == f"{POD}/nginx/criu.conf"


def test_argv_carries_the_move(tmp_path: Path) -> None:
    p = plan()
    assert p is not None
    argv = p.argv(
        Path("/criu"),
        tmp_path / "img",
        tmp_path / "work",
        leave_running=True,
        ps_socket=3,
    )
    assert argv[:4] == ["/criu", "dump", "-t", "4242"]
    assert "--leave-running" in argv and "--tcp-established" in argv
    i = argv.index("--page-server")
    assert argv[i + 1 : i + 3] == ["--ps-socket", "3"] and "--address" not in argv
    assert argv[argv.index("-W") + 1] == str(tmp_path / "work")


def test_descriptors_written_as_runc_does(tmp_path: Path) -> None:
    p = plan()
    assert p is not None
    p.write_descriptors(tmp_path)
    path = tmp_path / DESCRIPTORS
    assert json.loads(path.read_text()) == STATE["external_descriptors"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_what_only_runc_knows_goes_to_runc() -> None:
    cgroup = copy.deepcopy(STATE)
    cgroup["config"]["mounts"].append(
        {"device": "cgroup", "source": "cgroup", "destination": "/sys/fs/cgroup"}
    )
    assert plan(cgroup) is None  # runc expands a v1 cgroup mount into one bind per controller
    cgns = copy.deepcopy(STATE)
    cgns["config"]["namespaces"].append({"type": "NEWCGROUP", "path": ""})
    assert plan(cgns) is None
    pidns = copy.deepcopy(STATE)
    pidns["config"]["namespaces"][0]["path"] = "/proc/1/ns/pid"
    assert plan(pidns) is None
    dotted = copy.deepcopy(STATE)
    dotted["config"]["mounts"][2]["destination"] = "/etc/../etc/hosts"
    assert plan(dotted) is None  # runc would resolve it (securejoin)
    # a bind mount that is not where its destination says (a link resolved it elsewhere): runc's call
    assert plan(STATE, POINTS - {"/etc/hosts"}) is None
    nofreezer = copy.deepcopy(STATE)
    nofreezer["cgroup_paths"] = {}
    assert plan(nofreezer) is None
