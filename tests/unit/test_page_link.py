"""The ends of CRIU's page-server connection (``transfer accept`` / ``transfer connect``), on loopback.

The accepting end must hand its command only the connection from the allowed address that opens with
the secret; any other is dropped unread while it keeps waiting. The connecting end must present the
secret, and run its command only when told ``go``.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager

import pytest

TOOL = [sys.executable, "-m", "podhop.backends.local.transfer"]
#: The command each end becomes: print what arrives on descriptor 3 (CRIU's ``--ps-socket 3``).
READ_FD3 = [sys.executable, "-c", "import os, sys; sys.stdout.write(os.read(3, 100).decode())"]


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def end(argv: list[str], secret: bytes) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([*TOOL, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(secret.hex().encode() + b"\n")
    proc.stdin.flush()
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def answer(sock: socket.socket) -> str:
    """What the accepting end did with a connection: closed it, or kept it open for its command."""
    sock.settimeout(10)
    try:
        return "closed" if sock.recv(1) == b"" else "answered"
    except ConnectionResetError:
        return "closed"


def test_accept_hands_over_only_the_allowed_address_with_the_secret() -> None:
    secret, port = secrets.token_bytes(32), free_port()
    with end(["accept", "127.0.0.1", str(port), "20", "127.0.0.1", "--", *READ_FD3], secret) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == b"listening\n"
        with closing(socket.create_connection(("127.0.0.1", port))) as wrong:
            wrong.sendall(secrets.token_bytes(32) + b"intruder")
            assert answer(wrong) == "closed"
        stranger = socket.socket()
        with closing(stranger):
            stranger.bind(("127.0.0.2", 0))  # another address than the one allowed
            stranger.connect(("127.0.0.1", port))
            stranger.sendall(secret + b"stranger")
            assert answer(stranger) == "closed"
        with closing(socket.create_connection(("127.0.0.1", port))) as own:
            own.sendall(secret + b"pages")
            out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0 and out == b"pages"  # only the migration's own bytes reached it


@pytest.mark.parametrize("told", ["go", "nothing"])
def test_connect_presents_the_secret_and_runs_only_when_told(told: str) -> None:
    secret = secrets.token_bytes(32)
    with closing(socket.create_server(("127.0.0.1", 0))) as server:
        port = server.getsockname()[1]
        with end(["connect", "127.0.0.1", str(port), "20", "--", *READ_FD3], secret) as proc:
            assert proc.stdout is not None and proc.stdout.readline() == b"connected\n"
            conn, _ = server.accept()
            with closing(conn):
                conn.settimeout(10)
                assert conn.recv(32, socket.MSG_WAITALL) == secret
                conn.sendall(b"served")
                assert proc.stdin is not None
                if told == "go":
                    proc.stdin.write(b"go\n")
                proc.stdin.close()
                out = proc.stdout.read()
                proc.wait(timeout=20)
    if told == "go":
        assert proc.returncode == 0 and out == b"served"
    else:  # podhop went away before the dump: no command ran
        assert proc.returncode == 1 and out == b""
