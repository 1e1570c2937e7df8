"""``podhop doctor``: can this machine run a cluster, and can it migrate pods? Each "no" with its fix.

Why: live migration depends on a stack of host facts that fail far from their
cause — a CRIU too old for the kernel fails with a vDSO error, a small
``fs.pipe-max-size`` as ``tee: Operation not permitted`` in the page server,
a missing capability as ``Can't get rlimit``. Checking them up front, in
under a few seconds and without changing anything, turns those into one line
each: what was found, and the command that fixes it. ``needed_for`` says what
a failure blocks: ``cluster`` (nothing runs), ``migration`` (pods run but
cannot move), or ``info`` (a capability that is merely reduced).

A check never raises: one that errors becomes a failing line carrying the error.
"""

from __future__ import annotations

import errno
import os
import platform
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from podhop import sh
from podhop.runtime import images as image_store
from podhop.runtime.mounts import mount_table
from podhop.setup import host

CLUSTER = "cluster"
MIGRATION = "migration"
INFO = "info"
KUBERNETES = "kubernetes"  # the Kubernetes kind (does not block the local kind)

CAP_SYS_RESOURCE = 24
TCP_REPAIR = 19  # linux/tcp.h; not exported by Python's socket module
CGROUP_V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "freezer", "pids")
CGROUP_V2_CONTROLLERS = ("cpu", "memory", "pids")  # cpuacct is part of cpu; freezing is built in
_TIMEOUT_S = 5.0
_SETUP_FIX = "run `podhop setup` (as root)"

__all__ = [
    "CLUSTER",
    "INFO",
    "MIGRATION",
    "Check",
    "capability_mask",
    "cluster_possible",
    "has_capability",
    "kernel_version",
    "migration_possible",
    "run_checks",
    "summary",
]


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report.

    Attributes:
        name: what was checked (``criu``, ``fs.pipe-max-size``).
        ok: whether it is fine.
        detail: what was found (a version, a value, the first error line).
        fix: how to fix it when not ok (a command, or why nothing needs fixing).
        needed_for: what a failure blocks: ``cluster``, ``migration`` or ``info``.
    """

    name: str
    ok: bool
    detail: str
    fix: str | None
    needed_for: str


def _pass(name: str, detail: str, needed_for: str) -> Check:
    return Check(name, True, detail, None, needed_for)


def _fail(name: str, detail: str, fix: str, needed_for: str) -> Check:
    return Check(name, False, detail, fix, needed_for)


def _guard(name: str, needed_for: str, probe: Callable[[], list[Check]]) -> list[Check]:
    try:
        return probe()
    except Exception as exc:  # a broken probe must not hide the other checks
        return [
            _fail(
                name,
                f"the check itself failed: {type(exc).__name__}: {exc}",
                "run `podhop doctor --debug` and report it",
                needed_for,
            )
        ]


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


# --------------------------------------------------------------------------- parsers (pure)


def capability_mask(status_text: str, field: str = "CapEff") -> int:
    """The capability bitmask ``field`` (``CapEff``, ``CapPrm``, ...) of a /proc/PID/status text."""
    match = re.search(rf"(?m)^{field}:\s*([0-9a-fA-F]+)\s*$", status_text)
    if match is None:
        raise ValueError(f"no {field} line in the status text")
    return int(match.group(1), 16)


def has_capability(status_text: str, bit: int, field: str = "CapEff") -> bool:
    """True when capability number ``bit`` is in the set ``field`` of a /proc/PID/status text."""
    return bool(capability_mask(status_text, field) >> bit & 1)


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as ``6.18.44-fc-v782``."""
    match = re.match(r"(\d+)\.(\d+)", release)
    if match is None:
        raise ValueError(f"unrecognised kernel release {release!r}")
    return int(match.group(1)), int(match.group(2))


# --------------------------------------------------------------------------- checks


def _check_root() -> list[Check]:
    if os.geteuid() == 0:
        return [_pass("root", "running as root", CLUSTER)]
    return [_fail("root", f"running as uid {os.geteuid()}", "run podhop as root (sudo podhop ...)", CLUSTER)]


def _check_kernel() -> list[Check]:
    release = platform.release()
    if kernel_version(release) >= (5, 4):
        return [_pass("kernel", f"Linux {release}", INFO)]
    return [
        _fail("kernel", f"Linux {release}", "use a kernel >= 5.4 (CRIU 4.2 and runc are tested there)", INFO)
    ]


def _check_cgroups() -> list[Check]:
    mounts = mount_table()
    by_point = {point: (fstype, opts) for point, fstype, opts in mounts}
    root = by_point.get("/sys/fs/cgroup")
    if root is not None and root[0] == "cgroup2":
        available = Path("/sys/fs/cgroup/cgroup.controllers").read_text().split()
        missing = [c for c in CGROUP_V2_CONTROLLERS if c not in available]
        layout = "v2 (unified)"
    else:
        layout = "v1 (hybrid)" if any(fs == "cgroup2" for _, fs, _ in mounts) else "v1 (legacy)"
        present: set[str] = set()
        for _, fstype, opts in mounts:
            if fstype == "cgroup":
                present.update(opts.split(","))
        missing = [c for c in CGROUP_V1_CONTROLLERS if c not in present]
    if missing:
        return [
            _fail(
                "cgroups",
                f"{layout}; controllers not mounted: {', '.join(missing)}",
                "mount the missing cgroup controllers (e.g. mount -t cgroup -o memory cgroup "
                "/sys/fs/cgroup/memory) or boot with them enabled",
                CLUSTER,
            )
        ]
    wanted = CGROUP_V2_CONTROLLERS if layout.startswith("v2") else CGROUP_V1_CONTROLLERS
    return [_pass("cgroups", f"{layout}; {', '.join(wanted)} reachable", CLUSTER)]


def _check_tool(
    name: str, package: str, needed_for: str, version_argv: list[str] | None, why: str = ""
) -> list[Check]:
    path = sh.which(name)
    fix = f"apt-get install {package} (or `podhop setup`)"
    if path is None:
        return [_fail(name, f"not found{why}", fix, needed_for)]
    detail = path
    if version_argv is not None:
        proc = sh.run([path, *version_argv], check=False, timeout=_TIMEOUT_S)
        line = _first_line(proc.stdout) or _first_line(proc.stderr)
        if proc.returncode != 0:
            return [_fail(name, f"{path} does not run: {line}", fix, needed_for)]
        detail = f"{line} ({path})"
    return [_pass(name, detail + why, needed_for)]


def _criu_binary() -> tuple[list[str], str] | None:
    wrapper = host.criu_path()
    if wrapper is not None:
        return [str(wrapper)], str(wrapper)
    system = sh.which("criu")
    if system is not None:
        return [system], f"{system} (system; no podhop wrapper yet)"
    return None


def _check_criu() -> list[Check]:
    found = _criu_binary()
    if found is None:
        return [
            _fail("criu", "no CRIU found (no podhop wrapper, no system criu)", _SETUP_FIX, MIGRATION),
            _fail("criu check", "skipped: no CRIU", _SETUP_FIX, MIGRATION),
        ]
    binary, where = found
    version = host.criu_version(binary)
    text = "unknown" if version is None else ".".join(map(str, version))
    if version is None or version < host.CRIU_MIN_VERSION:
        return [
            _fail(
                "criu",
                f"CRIU {text} at {where}; podhop needs >= 4.2 (3.17 fails on new kernels, "
                "4.1 cannot dump TCP on >= 6.16)",
                _SETUP_FIX + ": it installs CRIU 4.2 privately when the system's is older",
                MIGRATION,
            ),
            _fail("criu check", "skipped: CRIU too old", _SETUP_FIX, MIGRATION),
        ]
    checks = [_pass("criu", f"CRIU {text} at {where}", MIGRATION)]
    passed, line = host.criu_check(binary)
    if passed:
        checks.append(_pass("criu check", line, MIGRATION))
    else:
        checks.append(
            _fail("criu check", line, "this kernel lacks a feature CRIU needs: see the line above", MIGRATION)
        )
    checks += _criu_features(binary)
    return checks


def _feature(binary: list[str], feature: str) -> tuple[bool, str]:
    proc = sh.run([*binary, "check", "--feature", feature], check=False, timeout=_TIMEOUT_S)
    out = (proc.stdout + "\n" + proc.stderr).strip()
    return proc.returncode == 0, _first_line(out) or f"exit status {proc.returncode}"


def _criu_features(binary: list[str]) -> list[Check]:
    checks: list[Check] = []
    uffd_ok, uffd_line = _feature(binary, "uffd")
    noncoop_ok, noncoop_line = _feature(binary, "uffd-noncoop")
    if uffd_ok and noncoop_ok:
        checks.append(_pass("lazy pages", "userfaultfd supported: post-copy migration available", INFO))
    else:
        checks.append(
            _fail(
                "lazy pages",
                f"{uffd_line if not uffd_ok else noncoop_line}: post-copy migration unavailable",
                "use a kernel with CONFIG_USERFAULTFD and vm.unprivileged_userfaultfd or root; "
                "cold migration still works",
                INFO,
            )
        )
    dirty_ok, dirty_line = _feature(binary, "mem_dirty_track")
    if dirty_ok:
        checks.append(_pass("dirty tracking", "soft-dirty supported: pre-copy can shrink downtime", INFO))
    else:
        checks.append(
            _fail(
                "dirty tracking",
                "dirty tracking is off (no soft-dirty in this kernel): iterative pre-copy unavailable"
                if "OFF" in dirty_line
                else f"{dirty_line}: iterative pre-copy unavailable",
                "nothing to do for cold or post-copy migration; pre-copy needs a kernel with "
                "CONFIG_MEM_SOFT_DIRTY",
                INFO,
            )
        )
    return checks


def _check_tcp_repair() -> list[Check]:
    name = "tcp repair"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
        except OSError as exc:
            if exc.errno == errno.EPERM:
                return [_fail(name, "TCP_REPAIR refused: no CAP_NET_ADMIN", "run podhop as root", MIGRATION)]
            return [
                _fail(
                    name,
                    f"TCP_REPAIR unsupported: {exc.strerror}",
                    "use a kernel with TCP repair (CONFIG_CHECKPOINT_RESTORE); without it "
                    "pods with open connections cannot be dumped",
                    MIGRATION,
                )
            ]
    return [_pass(name, "TCP_REPAIR available: established connections can be checkpointed", MIGRATION)]


def _check_capabilities(status_text: str | None = None) -> list[Check]:
    status = Path("/proc/self/status").read_text() if status_text is None else status_text
    if has_capability(status, CAP_SYS_RESOURCE):
        return [_pass("CAP_SYS_RESOURCE", "in the effective set", INFO)]
    return [
        _fail(
            "CAP_SYS_RESOURCE",
            "missing from the effective set: CRIU cannot read the rlimits of processes of another "
            "uid, nor grow pipes past fs.pipe-max-size",
            "none needed: podhop runs workloads as root inside containers and raises "
            "fs.pipe-max-size; to regain it, run podhop outside this restricted environment",
            INFO,
        )
    ]


def _check_sysctls() -> list[Check]:
    checks: list[Check] = []
    pipe = int(host.read_sysctl("fs.pipe-max-size"))
    if pipe >= host.PIPE_MAX_SIZE:
        checks.append(_pass("fs.pipe-max-size", str(pipe), MIGRATION))
    else:
        checks.append(
            _fail(
                "fs.pipe-max-size",
                f"{pipe} < {host.PIPE_MAX_SIZE}: CRIU's page server fails (`tee: Operation not permitted`)",
                f"sysctl -w fs.pipe-max-size={host.PIPE_MAX_SIZE} (or `podhop setup`)",
                MIGRATION,
            )
        )
    forward = host.read_sysctl("net.ipv4.ip_forward")
    if forward == "1":
        checks.append(_pass("net.ipv4.ip_forward", "1", CLUSTER))
    else:
        checks.append(
            _fail(
                "net.ipv4.ip_forward",
                f"{forward}: nodes cannot route pod traffic",
                "sysctl -w net.ipv4.ip_forward=1 (or `podhop setup`)",
                CLUSTER,
            )
        )
    return checks


def _check_images() -> list[Check]:
    found = image_store.list_images()
    names = [image.name for image in found]
    missing = [name for name in sorted(image_store.BASE_IMAGES) if name not in names]
    if missing:
        have = f"; present: {', '.join(names)}" if names else ""
        return [_fail("images", f"missing: {', '.join(missing)}{have}", _SETUP_FIX, CLUSTER)]
    listed = ", ".join(f"{i.name} ({i.digest[7:19]}, {i.size_bytes / 1e6:.0f} MB)" for i in found)
    return [_pass("images", listed, CLUSTER)]


def run_checks() -> list[Check]:
    """Every preflight check, in a stable order. Never raises; fast (well under 3 s)."""
    probes: list[tuple[str, str, Callable[[], list[Check]]]] = [
        ("root", CLUSTER, _check_root),
        ("kernel", INFO, _check_kernel),
        ("cgroups", CLUSTER, _check_cgroups),
        ("runc", CLUSTER, lambda: _check_tool("runc", "runc", CLUSTER, ["--version"])),
        (
            "iptables",
            CLUSTER,
            lambda: _check_tool(
                "iptables", "iptables", CLUSTER, ["--version"], "; services and CRIU's network lock"
            ),
        ),
        ("ip", CLUSTER, lambda: _check_tool("ip", "iproute2", CLUSTER, ["-V"])),
        ("tc", CLUSTER, lambda: _check_tool("tc", "iproute2", CLUSTER, ["-V"])),
        ("hey", INFO, lambda: _check_tool("hey", "hey", INFO, None, "; HTTP load for experiments")),
        (
            "debootstrap",
            INFO,
            lambda: _check_tool(
                "debootstrap", "debootstrap", INFO, ["--version"], "; used by `podhop setup`"
            ),
        ),
        ("criu", MIGRATION, _check_criu),
        ("tcp repair", MIGRATION, _check_tcp_repair),
        ("CAP_SYS_RESOURCE", INFO, lambda: _check_capabilities()),
        ("sysctls", CLUSTER, _check_sysctls),
        ("images", CLUSTER, _check_images),
        ("k8s", KUBERNETES, _check_kubernetes),
    ]
    checks: list[Check] = []
    for name, needed_for, probe in probes:
        checks += _guard(name, needed_for, probe)
    return checks


def _check_kubernetes() -> list[Check]:
    from podhop.kubekind.setup import checks

    return [Check(name, ok, detail, fix, KUBERNETES) for name, ok, detail, fix in checks()]


def cluster_possible(checks: Sequence[Check]) -> bool:
    """True when no check a cluster needs has failed."""
    return all(c.ok for c in checks if c.needed_for == CLUSTER)


def migration_possible(checks: Sequence[Check]) -> bool:
    """True when a cluster can run and no check migration needs has failed."""
    return cluster_possible(checks) and all(c.ok for c in checks if c.needed_for == MIGRATION)


def summary(checks: Sequence[Check]) -> str:
    """One line: what this machine can do."""
    if migration_possible(checks):
        return "ready: clusters and migration"
    if cluster_possible(checks):
        return "clusters only: migration is blocked (see the failing migration checks)"
    return "not ready: see the failing cluster checks"
