"""Network namespaces and links, through iproute2.

Why: nodes and pods are network namespaces joined by veth pairs and bridges.
Each function here is one ``ip`` call (or a few) so that the backend reads as
a list of steps, and every creator has a matching remover that is safe to call
twice (cleanup after a crash must not fail on what is already gone).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from podhop import sh

NETNS_DIR = Path("/var/run/netns")


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return netns_path(name).exists()


def list_netns(prefix: str = "") -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def add(name: str) -> None:
    sh.run(["ip", "netns", "add", name])
    ip(name, "link", "set", "lo", "up")


def pids(name: str) -> list[int]:
    if not exists(name):
        return []
    out = sh.run(["ip", "netns", "pids", name], check=False).stdout
    return [int(p) for p in out.split()]


def kill_all(name: str, timeout: float = 5.0) -> None:
    """SIGKILL every process in the namespace and wait until none is left."""
    deadline = time.monotonic() + timeout
    while True:
        found = pids(name)
        if not found or time.monotonic() > deadline:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def delete(name: str) -> None:
    """Delete the namespace (and so its links), killing what still runs in it. Idempotent."""
    if not exists(name):
        return
    kill_all(name)
    if not sh.ok(["ip", "netns", "delete", name]):
        # A stale mount point without a namespace behind it: unmount and remove by hand.
        sh.ok(["umount", "-l", str(netns_path(name))])
        netns_path(name).unlink(missing_ok=True)


def ip(netns: str | None, *args: str) -> str:
    """Run ``ip`` in ``netns`` (host namespace when None) and return stdout."""
    argv = ["ip"] + (["-n", netns] if netns else []) + list(args)
    return sh.run(argv).stdout


def batch(netns: str | None, commands: list[str]) -> None:
    """Run many ``ip`` commands in one process (``ip -batch``): fast and all-or-error."""
    if not commands:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    sh.run(argv, input="\n".join(commands) + "\n")


def link_exists(netns: str | None, dev: str) -> bool:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", dev]
    return sh.ok(argv)


def delete_link(netns: str | None, dev: str) -> None:
    if link_exists(netns, dev):
        argv = ["ip"] + (["-n", netns] if netns else []) + ["link", "delete", dev]
        sh.ok(argv)


def host_links(prefix: str) -> list[str]:
    out = sh.run(["ip", "-o", "link", "show"]).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@", 1)[0]
            if name.startswith(prefix):
                names.append(name)
    return names


def sysctl(netns: str | None, key: str, value: str) -> None:
    """Set a sysctl inside a namespace (``ip netns exec`` so /proc/sys is that namespace's)."""
    path = "/proc/sys/" + key.replace(".", "/")
    if netns is None:
        Path(path).write_text(value)
    else:
        sh.run(["ip", "netns", "exec", netns, "sh", "-c", f"echo {value} > {path}"])



#: TCP states (as ``ss`` names them) in which a server may still owe its client an answer.
_OPEN = ("established", "close-wait")
_CLOSING = ("fin-wait-1", "closing", "last-ack")


def unanswered_connections(pid: int) -> int | None:
    """Connections of ``pid``'s network namespace that may still carry an answer; ``None`` when
    the namespace cannot be read.

    Owing: an open connection whose client has sent something (a request, perhaps not answered yet)
    or with bytes queued, and a closing one with bytes not yet acknowledged. Not owing: one whose
    client never sent a byte — a Go client (hey) keeps spare connections it dialled and never used,
    which NGINX's graceful stop leaves open (measured: held a drain for 5-8 s, until the client
    quit) — and one that has sent everything and its FIN (a lingering close)."""
    states = [w for s in (*_OPEN, *_CLOSING) for w in ("state", s)]
    out = sh.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ss", "-Htin", *states], check=False)
    if out.returncode != 0:
        return None
    return sum(1 for conn in parse_ss(out.stdout) if owes_answer(conn))


def parse_ss(text: str) -> list[dict[str, str]]:
    """``ss -Htin``'s connections: ``state``, ``recv_q``, ``send_q`` and the ``key:value`` fields
    of the line that follows each (``bytes_received``, ...)."""
    conns: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0].isspace() and conns:
            pairs = (f.partition(":") for f in line.split() if ":" in f and not f.startswith("("))
            conns[-1].update((key, value) for key, _, value in pairs)
            continue
        fields = line.split()
        if len(fields) >= 3:
            conns.append({"state": fields[0].lower(), "recv_q": fields[1], "send_q": fields[2]})
    return conns


def owes_answer(conn: dict[str, str]) -> bool:
    """Whether a connection (from :func:`parse_ss`) may still carry an answer (see
    :func:`unanswered_connections`)."""
    queued = int(conn.get("recv_q", "0")) > 0 or int(conn.get("send_q", "0")) > 0
    if conn["state"].startswith(("estab", "close-wait")):
        return queued or int(conn.get("bytes_received", "0") or 0) > 0
    return int(conn.get("send_q", "0")) > 0
