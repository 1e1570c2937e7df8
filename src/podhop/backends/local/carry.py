"""Moving a container's checkpoint between two nodes: images in memory, and the stream that carries them.

Why: the bytes of a move cross a link, and where they sit on both sides sets
the speed. Images live in a tmpfs per move and side when the machine has the
memory (CRIU writes and reads them at memory speed, not the disk's 80-100 MB/s
here). Everything that is not streamed by CRIU's page server — CRIU's images,
the root filesystem's changes, a private ``/dev/shm`` — goes in one
:class:`Transfer`: both ends started in ``prepare`` (the receiver listening on
the target, the sender waiting), so that only the bytes are on the critical
path; the ends themselves are :mod:`podhop.backends.local.transfer`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from podhop import sh
from podhop.migrate.plan import MigrationError
from podhop.runtime import criu, mounts

if TYPE_CHECKING:
    from podhop.backends.local.moves import ContainerMove, Side


def free_port() -> int:
    return 20000 + secrets.randbelow(9000)


#: Memory kept free beside checkpoint images held in memory (the node's other pods need it too).
MEMORY_RESERVE_B = 1 << 30


def available_memory() -> int:
    """``MemAvailable`` of the machine, in bytes (0 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def images_in_memory(move: ContainerMove, state_b: int, undo: ExitStack) -> bool:
    """Give the move's images directories (source and target) a tmpfs each, sized for ``state_b``.

    CRIU then writes and reads its images at memory speed instead of the node's disk (a page
    server on a disk writes at 80-100 MB/s here). When the machine lacks the memory for both
    copies, the images stay on disk. The mounts go with :func:`release_images`.
    """
    size = state_b * 5 // 4 + (32 << 20)
    if available_memory() < 2 * size + MEMORY_RESERVE_B:
        return False
    for d in (move.src.images, move.dst.images):
        d.mkdir(parents=True, exist_ok=True)
        undo.callback(mounts.unmount_under, d)
        sh.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "podhop-images", str(d)])
    return True


def release_images(move: ContainerMove) -> None:
    """Unmount and delete the move's checkpoint files on both nodes (never through a mount)."""
    for d in (move.src.images, move.dst.images):
        mounts.unmount_under(d)
    for d in (move.src.images.parent, move.dst.images, move.dst.work.parent):
        shutil.rmtree(d, ignore_errors=True)


@dataclass
class Transfer:
    """A stream of directories from the source node to the target node, started ahead of time."""

    recv: subprocess.Popen[str]
    send: subprocess.Popen[str]
    src: Side
    dst: Side
    port: int

    @classmethod
    def start(cls, src: Side, dst: Side, sources: dict[Path, str], dest: Path, timeout: float) -> Transfer:
        """Start both ends now (receiver listening, sender waiting): :meth:`go` then costs only the bytes.

        The receiver accepts only the source node's address presenting this transfer's secret.
        """
        dest.mkdir(parents=True, exist_ok=True)
        port = free_port()
        secret = secrets.token_hex(32) + "\n"
        tool = [sys.executable, "-m", "podhop.backends.local.transfer"]
        spec = ",".join(f"{path}={name}" for path, name in sources.items())
        recv_argv = [*tool, "recv", dst.node.ip, str(port), str(dest), str(timeout), src.node.ip]
        recv = subprocess.Popen(
            criu.in_netns(dst.netns_path, recv_argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        send = subprocess.Popen(
            criu.in_netns(src.netns_path, [*tool, "send", dst.node.ip, str(port), spec, str(timeout)]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        t = cls(recv, send, src, dst, port)
        assert recv.stdin is not None and send.stdin is not None and recv.stdout is not None
        for end in (recv.stdin, send.stdin):
            end.write(secret)
            end.flush()
        if recv.stdout.readline().strip() != "listening":
            t.stop()
            raise MigrationError("prepare", f"transfer receiver on {dst.node.name} did not start")
        return t

    def go(self, timeout: float) -> int:
        """Send everything; return the bytes that crossed the link."""
        try:
            _, send_err = self.send.communicate(input="go\n", timeout=timeout)
            if self.send.returncode != 0:
                raise MigrationError(
                    "transfer", f"sending from {self.src.node.name} failed: {send_err.strip()[-300:]}"
                )
            out, err = self.recv.communicate(timeout=timeout)
            if self.recv.returncode != 0:
                raise MigrationError(
                    "transfer", f"receiving on {self.dst.node.name} failed: {err.strip()[-300:]}"
                )
        except subprocess.TimeoutExpired as exc:
            raise MigrationError(
                "transfer", f"no progress within {timeout:.0f} s (is the link down?)"
            ) from exc
        return int(json.loads(out.strip().splitlines()[-1])["bytes"])

    def stop(self) -> None:
        for proc in (self.send, self.recv):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def start_transfer(move: ContainerMove, timeout: float, undo: ExitStack) -> Transfer:
    """Prepare moving CRIU's non-memory images and the container's filesystem changes over the link."""
    move.src.images.mkdir(parents=True, exist_ok=True)
    sources = {move.src.images: "checkpoint", Path(move.source.bundle) / "upper": "upper"}
    if (Path(move.source.bundle) / "shm").is_dir():  # a /dev/shm of its own (born in Podman)
        sources[Path(move.source.bundle) / "shm"] = "shm"
    t = Transfer.start(move.src, move.dst, sources, Path(move.target.bundle), timeout)
    undo.callback(t.stop)
    move.transfer_port = t.port
    return t


@dataclass
class PageLink:
    """CRIU's page-server connection of one move, made and checked ahead of the dump.

    The target's end listens (only the source node's address, presenting this link's secret, gets
    through) and becomes ``criu page-server --ps-socket``; the source's end connects and, on
    :meth:`go`, becomes the ``criu dump`` that streams into it (:mod:`podhop.backends.local.transfer`).
    """

    server: subprocess.Popen[bytes]  # the target's end: the page server, once connected
    dump: subprocess.Popen[bytes]  # the source's end: the dump, after go
    errors: Path  # both ends' standard error (the tool's own failures; CRIU logs to its files)
    port: int

    @classmethod
    def start(
        cls, src: Side, dst: Side, server_argv: list[str], dump_argv: list[str], timeout: float
    ) -> PageLink:
        port = free_port()
        secret = (secrets.token_hex(32) + "\n").encode()
        tool = [sys.executable, "-m", "podhop.backends.local.transfer"]
        dst.work.mkdir(parents=True, exist_ok=True)
        errors = dst.work / "page-link.err"
        accept = [*tool, "accept", dst.node.ip, str(port), str(timeout), src.node.ip, "--", *server_argv]
        connect = [*tool, "connect", dst.node.ip, str(port), str(timeout), "--", *dump_argv]
        procs: list[subprocess.Popen[bytes]] = []
        with errors.open("ab") as err:
            for netns_path, argv in ((dst.netns_path, accept), (src.netns_path, connect)):
                procs.append(
                    subprocess.Popen(
                        criu.in_netns(netns_path, argv),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        start_new_session=True,
                    )
                )
        link = cls(procs[0], procs[1], errors, port)
        for proc, word in ((link.server, b"listening"), (link.dump, b"connected")):
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(secret)
            proc.stdin.flush()
            if proc.stdout.readline().strip() != word:
                link.stop()
                detail = errors.read_text(errors="replace").strip().splitlines()[-1:] or ["no answer"]
                raise MigrationError("prepare", f"CRIU's page link to {dst.node.name}: {detail[0]}")
        return link

    def go(self, timeout: float) -> None:
        """Run the dump to its end (the page server ends with it); raises ``TimeoutExpired``."""
        assert self.dump.stdin is not None
        self.dump.stdin.write(b"go\n")
        self.dump.stdin.close()
        if self.dump.wait(timeout=timeout) != 0:
            raise criu.CriuError(f"criu dump exited with {self.dump.returncode}")
        if self.server.wait(timeout=30) != 0:
            raise criu.CriuError(f"criu page-server exited with {self.server.returncode}")

    def stop(self) -> None:
        for proc in (self.dump, self.server):
            if proc.poll() is None:
                sh.kill_group(proc.pid)
            proc.wait(timeout=10)
