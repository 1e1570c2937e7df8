"""Node resource budgets and accounting through cgroups (v1 hybrid or v2).

Why: a node of the local cluster is a namespace, not a machine, so its CPU and
memory budget is a cgroup parent: every container of a pod on that node lives
under ``/podhop/<cluster>/<node>/<pod-sandbox>/<container>``. The node's cgroup
caps the whole subtree (CFS quota, memory limit), and the same tree gives the
accounting that ``podhop top`` reports, the way metrics-server reads cAdvisor:
CPU as cumulative usage sampled over a window, memory as the working set
(usage minus inactive file pages).

runc creates the container leaves (in every hierarchy it knows); we create the
node level, where limits live, and remove the whole ``/podhop/<cluster>`` tree
bottom-up on delete.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000
_V1_LIMITED = ("cpu", "cpuacct", "memory", "pids")


def is_v2() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def relpath(cluster: str, node: str | None = None, sandbox: str | None = None) -> str:
    """The cgroup path (relative to each hierarchy's root) of a cluster, node or pod sandbox."""
    parts = ["podhop", cluster] + ([node] if node else []) + ([sandbox] if sandbox else [])
    return "/".join(parts)


def _v1_dir(controller: str, rel: str) -> Path:
    return CGROUP_ROOT / controller / rel


def create_node(cluster: str, node: str, cpu_m: int, memory_b: int) -> None:
    """Create the node's cgroup with its CPU quota and memory limit (idempotent)."""
    rel = relpath(cluster, node)
    quota = max(1000, cpu_m * CFS_PERIOD_US // 1000)
    if is_v2():
        _enable_v2_controllers(rel)
        d = CGROUP_ROOT / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
        (d / "memory.max").write_text(str(memory_b))
        return
    for ctrl in _V1_LIMITED:
        if (CGROUP_ROOT / ctrl).is_dir():
            _v1_dir(ctrl, rel).mkdir(parents=True, exist_ok=True)
    cpu = _v1_dir("cpu", rel)
    (cpu / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
    (cpu / "cpu.cfs_quota_us").write_text(str(quota))
    (_v1_dir("memory", rel) / "memory.limit_in_bytes").write_text(str(memory_b))


def join(rel: str, pid: int = 0) -> None:
    """Move ``pid`` (0: the caller) into cgroup ``rel`` of every hierarchy, creating it.

    runc restores a container whose checkpoint has cgroup v1 mounts by binding, for each,
    the cgroup of *its own* process: started from inside the container's cgroups, it binds
    those (as ``runc run`` would), not its caller's tree.
    """
    who = str(pid or os.getpid())
    if is_v2():
        d = CGROUP_ROOT / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text(who)
        return
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        if hierarchy.name == "unified" or not (hierarchy / "cgroup.procs").exists():
            continue
        d = hierarchy / rel
        d.mkdir(parents=True, exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():
            parent = hierarchy
            for part in rel.split("/"):
                parent = parent / part
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    if not (parent / knob).read_text().strip():
                        (parent / knob).write_text((parent.parent / knob).read_text())
        (d / "cgroup.procs").write_text(who)


def _enable_v2_controllers(rel: str) -> None:
    d = CGROUP_ROOT
    for part in rel.split("/"):
        for ctrl in ("cpu", "memory", "pids"):
            with contextlib.suppress(OSError):
                (d / "cgroup.subtree_control").write_text(f"+{ctrl}")
        d = d / part
        d.mkdir(exist_ok=True)


def freeze(rel: str, timeout: float = 5.0) -> bool:
    """Freeze the cgroup ``rel`` and wait until it is frozen; False if it did not freeze in time.

    runc's own freeze gives up after a few milliseconds, which a CPU-throttled cgroup (its CFS
    quota spent) can need more than: its tasks must be scheduled to enter the freezer. The poll
    is fine (a millisecond): an idle cgroup freezes in well under one.
    """
    v2 = is_v2()
    control = CGROUP_ROOT / rel / "cgroup.freeze" if v2 else CGROUP_ROOT / "freezer" / rel / "freezer.state"
    status = CGROUP_ROOT / rel / "cgroup.events" if v2 else control
    control.write_text("1" if v2 else "FROZEN")

    def done() -> bool:
        text = status.read_text()
        return "frozen 1" in text if v2 else text.strip() == "FROZEN"

    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def hierarchies() -> list[Path]:
    """Every mounted hierarchy root (one for v2; one per controller mount for v1)."""
    if is_v2():
        return [CGROUP_ROOT]
    return [p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink()]


def remove_tree(rel: str) -> list[str]:
    """Remove ``rel`` and everything under it in every hierarchy, deepest first.

    Returns the directories that could not be removed (still holding processes).
    """
    stuck: list[str] = []
    for root in hierarchies():
        top = root / rel
        if not top.is_dir():
            continue
        dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True)
        for d in dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                stuck.append(str(d))
    return stuck


def prune_root() -> None:
    """Remove the shared ``/podhop`` parent in every hierarchy once no cluster uses it."""
    for root in hierarchies():
        with contextlib.suppress(OSError):
            (root / "podhop").rmdir()


def leftovers(rel: str) -> list[str]:
    return [str(root / rel) for root in hierarchies() if (root / rel).exists()]


def procs(rel: str) -> list[int]:
    """Pids of every process in the subtree (for cleanup of strays)."""
    root = CGROUP_ROOT if is_v2() else CGROUP_ROOT / "pids"
    top = root / rel
    found: list[int] = []
    if not top.is_dir():
        return found
    for d, _, files in os.walk(top):
        if "cgroup.procs" in files:
            try:
                found += [int(x) for x in (Path(d) / "cgroup.procs").read_text().split()]
            except OSError:
                continue
    return found


@dataclass(frozen=True)
class Usage:
    """Cumulative CPU time (ns) and current memory working set (bytes) of a cgroup subtree."""

    cpu_ns: int
    memory_working_set_b: int


def usage(rel: str) -> Usage | None:
    """Read accounting for ``rel``; None when the cgroup does not exist."""
    try:
        if is_v2():
            d = CGROUP_ROOT / rel
            stat = _kv((d / "cpu.stat").read_text())
            mem = _kv((d / "memory.stat").read_text())
            current = int((d / "memory.current").read_text())
            return Usage(stat.get("usage_usec", 0) * 1000, max(0, current - mem.get("inactive_file", 0)))
        cpu_ns = int(_v1_dir("cpuacct", rel).joinpath("cpuacct.usage").read_text())
        md = _v1_dir("memory", rel)
        current = int((md / "memory.usage_in_bytes").read_text())
        mem = _kv((md / "memory.stat").read_text())
        inactive = mem.get("total_inactive_file", mem.get("inactive_file", 0))
        return Usage(cpu_ns, max(0, current - inactive))
    except (OSError, ValueError):
        return None


def _kv(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out
