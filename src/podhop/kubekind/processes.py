"""Starting, finding and stopping the daemons of a Kubernetes-kind cluster.

Why: every daemon (etcd, the API server, the kubelets, the containerds, ...) is
a plain process started detached (its own session, so podhop's exit does not
kill it), with its log in the cluster's ``logs/`` and a pid file. A node's
daemons enter the node's network namespace with ``nsenter --net`` only — not
``ip netns exec``, which would also give them a private mount namespace where
containerd's overlay mounts and the kubelet's volume mounts would be invisible
to the host (and to cleanup).

Cleanup never trusts pid files alone: :func:`pids_mentioning` finds every
process whose command line names the cluster's directories (daemons, shims,
runc, CRIU), which is what delete kills after a crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from podhop.errors import ClusterError

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def netns_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` run in network namespace ``netns`` (only the network namespace changes)."""
    if netns is None:
        return list(argv)
    return ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]


def start(
    name: str,
    argv: Sequence[str],
    log: Path,
    pid_file: Path,
    *,
    netns: str | None = None,
    path_prefix: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` detached; return its pid. An already running one (by pid file) is kept."""
    old = read_pid(pid_file)
    if old is not None and alive(old):
        return old
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    environ = {
        "PATH": ":".join([*(str(p) for p in path_prefix), BASE_PATH]),
        "HOME": "/root",
        "LANG": "C.UTF-8",
    }
    environ.update(env or {})
    with open(log, "ab") as out, open(os.devnull, "rb") as devnull:
        try:
            proc = subprocess.Popen(
                netns_argv(netns, argv),
                stdin=devnull,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=environ,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise ClusterError(f"cannot start {name}: {exc}") from exc
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def log_tail(log: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        text = log.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])
    return "(no log)"


def wait_until(
    what: str, probe: Callable[[], bool], timeout: float, *, pid: int | None = None, log: Path | None = None
) -> None:
    """Poll ``probe`` until it is true; fail early when ``pid`` died, with the log's tail."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except OSError:
            pass
        if pid is not None and not alive(pid):
            tail = log_tail(log) if log else ""
            raise ClusterError(f"{what} exited during startup: {tail}")
        if time.monotonic() > deadline:
            tail = f": {log_tail(log)}" if log else ""
            raise ClusterError(f"{what} not ready after {timeout:.0f} s{tail}")
        time.sleep(0.2)


def tcp_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def https_ok(url_host: str, port: int, path: str, ca: Path, cert: Path, key: Path) -> bool:
    """GET ``path`` over TLS with a client certificate; True on HTTP 200."""
    import http.client

    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    conn = http.client.HTTPSConnection(url_host, port, context=ctx, timeout=3)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, ssl.SSLError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def pids_mentioning(markers: Sequence[str]) -> list[int]:
    """Processes whose command line contains any of ``markers`` (never this process)."""
    wanted = [m.encode() for m in markers]
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if any(m in cmdline for m in wanted):
            found.append(int(entry.name))
    return found


def terminate(pids: Sequence[int], grace: float = 5.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
