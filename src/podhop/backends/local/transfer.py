"""Moving checkpoint files across the link between two nodes, and counting the bytes.

Why: a migration's cost is mostly bytes over a link. Memory pages stream from
CRIU on the source to a page server on the target; everything else (CRIU's
small images, the container's root filesystem changes) must cross the same
link — not be copied through the host's filesystem — so that a bandwidth cap
on a node applies to all of it and the byte count is honest. This module
streams a ``tar`` of a directory from one network namespace to another over
TCP: ``tar`` keeps the overlay whiteouts and ``trusted.overlay.*`` xattrs
that a root filesystem diff needs.

Several directories go in one connection as concatenated tar archives, each
renamed on the way (``SRC=NAME`` puts SRC's content under NAME/); the
receiver reads them with ``--ignore-zeros``. Both ends are started before the
migration's freeze (the receiver listens, the sender waits for a line on its
stdin), so the interpreter start-up is not on the critical path.

The receiver takes only its own migration's stream: it listens on the target
node's address only, drops a connection from any address but the source
node's, and one that does not open with the migration's 32-byte secret (read
within a few seconds, compared in constant time) — before a byte reaches
``tar``. It then keeps waiting for the real sender. The secret reaches both
ends on their standard input (never on a command line, which other users can
read in ``/proc``).

The same hand-shake guards CRIU's page-server connection (memory streamed
while CRIU dumps): ``accept`` and ``connect`` make the connection, check it,
and then *become* the CRIU process (``exec``) with the socket as its
descriptor 3 (``--ps-socket 3``). CRIU's own TLS would do the checking too, but
it halves what one core can stream (1 GB here: ~3.5 s with TLS, ~2.2 s
without); the connection is made in ``prepare``, so no hand-shake is left for
the freeze either.

Run inside the namespaces (``nsenter --net``) as
``python -m podhop.backends.local.transfer recv ADDR PORT DEST TIMEOUT FROM``,
``python -m podhop.backends.local.transfer send ADDR PORT SRC=NAME[,SRC=NAME...] TIMEOUT``,
``python -m podhop.backends.local.transfer accept ADDR PORT TIMEOUT FROM -- COMMAND...`` and
``python -m podhop.backends.local.transfer connect ADDR PORT TIMEOUT -- COMMAND...``,
each given the secret in hex as the first line of its standard input (the
sender and ``connect`` then wait for a line ``go``); the receiver and ``accept``
print ``listening`` when ready, ``connect`` prints ``connected``, and the
receiver and sender print ``{"bytes": N}`` when done.
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import subprocess
import sys
import time

CHUNK = 1 << 20
SECRET_BYTES = 32
#: How long a connection may take to present the secret before it is dropped.
HELLO_TIMEOUT_S = 5.0
#: Where CRIU finds its page-server connection after :func:`hand_over`.
PS_SOCKET_FD = 3
TAR_FLAGS = ["--xattrs", "--xattrs-include=trusted.*", "--xattrs-include=user.*", "--numeric-owner"]
#: 64 KiB records instead of tar's 10 KiB: a few MB of images cross a veth in half the time (measured
#: over loopback: 7.4 MB in two archives, 16-20 ms with the sender alone on 64 KiB, 8 ms with both);
#: the receiver reads full records (``-B``) since a socket returns what has arrived.
RECORD = ["--blocking-factor=128"]
UNTAR = ["tar", *TAR_FLAGS, *RECORD, "--read-full-records"]


def _read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def accept_own(server: socket.socket, peer: str, secret: bytes, deadline: float) -> socket.socket:
    """The first connection from ``peer`` that presents ``secret``; any other is dropped unread."""
    while True:
        server.settimeout(max(0.01, deadline - time.monotonic()))
        conn, (addr, _port) = server.accept()
        if addr != peer:
            print(f"refused a connection from {addr} (expected {peer})", file=sys.stderr, flush=True)
            conn.close()
            continue
        conn.settimeout(HELLO_TIMEOUT_S)
        try:
            hello = _read_exact(conn, SECRET_BYTES)
        except OSError:
            hello = b""
        if hmac.compare_digest(hello, secret):
            return conn
        print(f"refused a connection from {addr}: wrong secret", file=sys.stderr, flush=True)
        conn.close()


def listen_own(address: str, port: int, peer: str, secret: bytes, deadline: float) -> socket.socket:
    """Listen on ``address:port`` (saying ``listening`` on stdout) until the connection from ``peer``
    that presents ``secret`` (:func:`accept_own`); that connection, blocking, and no listener left."""
    with socket.create_server((address, port), reuse_port=False) as server:
        print("listening", flush=True)
        conn = accept_own(server, peer, secret, deadline)
    conn.settimeout(None)
    return conn


def receive(address: str, port: int, dest: str, timeout: float, peer: str, secret: bytes) -> int:
    deadline = time.monotonic() + timeout
    with listen_own(address, port, peer, secret, deadline) as conn:
        # tar reads the connection itself (no copy through this process); --totals counts the bytes.
        untar = subprocess.Popen(
            [*UNTAR, "--ignore-zeros", "--totals", "-C", dest, "-xpf", "-"],
            stdin=conn.fileno(),
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, err = untar.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            untar.kill()
            raise SystemExit("timed out receiving the stream") from None
    if untar.returncode != 0:
        lines = [ln for ln in err.splitlines() if not ln.startswith("Total bytes")]
        sys.stderr.write("\n".join(lines[-5:]) + "\n")
        raise SystemExit(f"tar failed to unpack the stream{_disk_full(dest)}")
    return _total(err)


def _total(tar_stderr: str) -> int:
    """The byte count of tar's ``--totals`` line (``Total bytes read: N (…)``), summed over archives."""
    total = 0
    for line in tar_stderr.splitlines():
        if line.startswith("Total bytes"):
            total += int(line.split(":", 1)[1].split()[0])
    return total


def _disk_full(dest: str) -> str:
    """``: No space left on device …`` when ``dest``'s file system is (nearly) full — tar's own
    message then only says it wrote fewer bytes than it read."""
    try:
        st = os.statvfs(dest)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    return f": No space left on device ({dest}: {free} bytes free)" if free < CHUNK else ""


def connect_own(address: str, port: int, secret: bytes, deadline: float) -> socket.socket:
    """A connection to ``address:port`` (retried until ``deadline``) that has presented ``secret``."""
    while True:
        try:
            conn = socket.create_connection((address, port), timeout=max(0.01, deadline - time.monotonic()))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    conn.settimeout(None)
    conn.sendall(secret)
    return conn


def hand_over(conn: socket.socket, command: list[str]) -> None:
    """Become ``command`` with the connection as its descriptor 3 (CRIU's ``--ps-socket 3``)."""
    if conn.fileno() != PS_SOCKET_FD:
        os.dup2(conn.fileno(), PS_SOCKET_FD)
    os.set_inheritable(PS_SOCKET_FD, True)  # also when it was descriptor 3 already (dup2 is then a no-op)
    os.execvp(command[0], command)


def send(address: str, port: int, sources: str, timeout: float, secret: bytes) -> int:
    sys.stdin.readline()  # wait for "go"
    total = 0
    with connect_own(address, port, secret, time.monotonic() + timeout) as conn:
        deadline = time.monotonic() + timeout
        for item in sources.split(","):
            src, _, name = item.partition("=")
            rename = f"--transform=s,^\\.,{name},"
            # tar writes into the connection itself: no copy through this process.
            tar = subprocess.run(
                ["tar", *TAR_FLAGS, *RECORD, "--totals", rename, "-C", src, "-cf", "-", "."],
                stdout=conn.fileno(),
                stderr=subprocess.PIPE,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
            if tar.returncode != 0:
                raise SystemExit(f"tar failed to pack {src}: {tar.stderr.strip()[-300:]}")
            total += _total(tar.stderr)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # wait for the receiver to close: everything arrived
    return total


def main(argv: list[str]) -> int:
    mode, address, port = argv[0], argv[1], int(argv[2])
    secret = bytes.fromhex(sys.stdin.readline().strip())
    if len(secret) != SECRET_BYTES:
        raise SystemExit("no secret on standard input")
    if mode in ("accept", "connect"):
        timeout = float(argv[3])
        command = argv[argv.index("--") + 1 :]
        deadline = time.monotonic() + timeout
        if mode == "accept":
            conn = listen_own(address, port, argv[4], secret, deadline)
        else:
            conn = connect_own(address, port, secret, deadline)
            print("connected", flush=True)
            if sys.stdin.readline().strip() != "go":  # podhop went away: nothing to do
                return 1
        hand_over(conn, command)
    path, timeout = argv[3], float(argv[4])
    if mode == "recv":
        total = receive(address, port, path, timeout, argv[5], secret)
    else:
        total = send(address, port, path, timeout, secret)
    print(json.dumps({"bytes": total}), flush=True)
    # The migration waits for this process to end: skip the interpreter's teardown (~10 ms here).
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
