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

Run inside the namespaces (``nsenter --net``) as
``python -m podhop.migrate.transfer recv ADDR PORT DEST [TIMEOUT]`` and
``python -m podhop.migrate.transfer send ADDR PORT SRC=NAME[,SRC=NAME...] [TIMEOUT]``;
the receiver prints ``listening`` when ready and ``{"bytes": N}`` when done.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

CHUNK = 1 << 20
TAR_FLAGS = ["--xattrs", "--xattrs-include=trusted.*", "--xattrs-include=user.*", "--numeric-owner"]


def receive(address: str, port: int, dest: str, timeout: float) -> int:
    with socket.create_server((address, port), reuse_port=False) as server:
        server.settimeout(timeout)
        print("listening", flush=True)
        conn, _ = server.accept()
    conn.settimeout(timeout)
    total = 0
    untar = subprocess.Popen(
        ["tar", *TAR_FLAGS, "--ignore-zeros", "-C", dest, "-xpf", "-"], stdin=subprocess.PIPE
    )
    assert untar.stdin is not None
    with conn:
        while True:
            data = conn.recv(CHUNK)
            if not data:
                break
            total += len(data)
            untar.stdin.write(data)
    untar.stdin.close()
    if untar.wait() != 0:
        raise SystemExit("tar failed to unpack the stream")
    return total


def send(address: str, port: int, sources: str, timeout: float) -> int:
    sys.stdin.readline()  # wait for "go"
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = socket.create_connection((address, port), timeout=timeout)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    total = 0
    with conn:
        for item in sources.split(","):
            src, _, name = item.partition("=")
            rename = f"--transform=s,^\\.,{name},"
            tar = subprocess.Popen(
                ["tar", *TAR_FLAGS, rename, "-C", src, "-cf", "-", "."], stdout=subprocess.PIPE
            )
            assert tar.stdout is not None
            while True:
                data = tar.stdout.read(CHUNK)
                if not data:
                    break
                conn.sendall(data)
                total += len(data)
            if tar.wait() != 0:
                raise SystemExit(f"tar failed to pack {src}")
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # wait for the receiver to close: everything arrived
    return total


def main(argv: list[str]) -> int:
    mode, address, port, path = argv[0], argv[1], int(argv[2]), argv[3]
    timeout = float(argv[4]) if len(argv) > 4 else 60.0
    total = receive(address, port, path, timeout) if mode == "recv" else send(address, port, path, timeout)
    print(json.dumps({"bytes": total}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
