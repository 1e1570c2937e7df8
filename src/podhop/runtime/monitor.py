"""The per-container monitor: holds a container's stdio and keeps its log.

Why: CRIU can only dump a process whose stdio is a pipe (or /dev/null) that
lives outside the container, never a file on the host (``Can't lookup
mount``). Something must hold the other end of those pipes for the container's
whole life, write what comes through them to the pod's log, and learn the
container's exit status. That is what conmon does for Podman and CRI-O; this
is a small equivalent in plain Python (standard library only, so it starts in
tens of milliseconds).

The monitor runs one runc command (``runc run -d`` or ``runc restore -d``)
with its pipes as the container's stdio. It makes itself a child subreaper,
so when runc exits the container's init is re-parented to it and its exit
status can be recorded. It reports runc's outcome on a status fd the launcher
passed in (one JSON line), then copies output to the log in the CRI format
(``<RFC3339Nano> <stream> F <line>``, the format kubelet writes and
``podhop logs`` reads) until the container exits, and writes the exit code to
``--exit-file``.

Run as ``python -m podhop.runtime.monitor --log L --exit-file E --status-fd N``; it reads
its command as one JSON line on its standard input (``{"command": [...], "join_cgroup": ...}``;
end of input: nothing to do). So a monitor can be started ahead of time (:func:`prestart`, in a
migration's ``prepare``) and its interpreter start-up (~50 ms) is off the critical path;
:meth:`Pending.go` hands it the runc command and waits for the status line, and :func:`launch`
is both at once.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def _stamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond * 1000:09d}Z"


class _LogWriter:
    def __init__(self, path: Path) -> None:
        self.file = path.open("ab", buffering=0)
        self.partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def feed(self, stream: str, data: bytes) -> None:
        buf = self.partial[stream] + data
        *lines, rest = buf.split(b"\n")
        self.partial[stream] = rest
        if lines:
            ts = _stamp().encode()
            self.file.write(b"".join(ts + b" " + stream.encode() + b" F " + ln + b"\n" for ln in lines))

    def close(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                self.file.write(_stamp().encode() + b" " + stream.encode() + b" P " + rest + b"\n")
        self.file.close()


def _report(fd: int, payload: dict[str, object]) -> None:
    try:
        os.write(fd, (json.dumps(payload) + "\n").encode())
        os.close(fd)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podhop-monitor")
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--exit-file", required=True, type=Path)
    parser.add_argument("--status-fd", required=True, type=int)
    args = parser.parse_args(argv)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # cancelled before it was needed
    order = json.loads(line)
    command: list[str] = order["command"]
    join_cgroup: str | None = order.get("join_cgroup")

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    log = _LogWriter(args.log)

    def join() -> None:  # in the child, before exec: the monitor itself stays where it is
        from podhop.runtime import cgroups

        assert join_cgroup is not None
        cgroups.join(join_cgroup)

    try:
        runtime = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            preexec_fn=join if join_cgroup else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        _report(args.status_fd, {"ok": False, "error": str(exc)})
        return 1
    os.close(out_w)
    os.close(err_w)
    rc = runtime.wait()
    if rc != 0:
        _report(args.status_fd, {"ok": False, "returncode": rc})
        return 1
    _report(args.status_fd, {"ok": True, "monitor_pid": os.getpid()})

    streams = {out_r: "stdout", err_r: "stderr"}
    exit_code: int | None = None
    while streams:
        ready, _, _ = select.select(list(streams), [], [], 1.0)
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                log.feed(streams[fd], data)
            else:
                os.close(fd)
                del streams[fd]
        exit_code, _ = _reap(exit_code)
    log.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        exit_code, left = _reap(exit_code)
        if not left:
            break
        time.sleep(0.05)
    args.exit_file.write_text(json.dumps({"exitCode": exit_code, "finishedAt": _stamp()}))
    return 0


def _reap(exit_code: int | None) -> tuple[int | None, bool]:
    """Collect exited children; keep the first exit status (the container's init).

    Returns the exit code so far and whether children are left. A death by
    signal N is reported as 128+N, as conmon and Kubernetes do.
    """
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return exit_code, False
        if pid == 0:
            return exit_code, True
        if exit_code is None:
            code = os.waitstatus_to_exitcode(status)
            exit_code = 128 - code if code < 0 else code


@dataclass
class Pending:
    """A monitor started ahead of time, waiting for its command (see the module doc)."""

    proc: subprocess.Popen[bytes]
    status: int  # read end of the status pipe

    def go(self, command: list[str], timeout: float = 60.0, join_cgroup: str | None = None) -> int:
        """Run ``command`` (from inside cgroup ``join_cgroup`` if given); the monitor's pid once runc
        succeeded.

        Raises ``RuntimeError`` with runc's return code when the command failed; the caller reads
        runc's own log for the reason.
        """
        assert self.proc.stdin is not None and self.status >= 0, "a monitor runs one command"
        status_fd, self.status = self.status, -1  # from here on the monitor is the container's
        try:
            self.proc.stdin.write(
                (json.dumps({"command": command, "join_cgroup": join_cgroup}) + "\n").encode()
            )
            self.proc.stdin.close()
        except OSError as exc:
            os.close(status_fd)
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise RuntimeError(f"monitor is gone: {exc}") from exc
        with os.fdopen(status_fd, "rb") as status:
            ready, _, _ = select.select([status], [], [], timeout)
            line = status.readline() if ready else b""
        if not line:
            self.proc.kill()
            raise RuntimeError(f"monitor gave no status within {timeout} s")
        result = json.loads(line)
        if not result.get("ok"):
            self.proc.wait(timeout=5)
            raise RuntimeError(f"runtime failed: {result}")
        return self.proc.pid

    def cancel(self) -> None:
        """Not needed after all: the monitor exits without running anything. Nothing to do once
        :meth:`go` was called (the monitor then belongs to the container, or has ended)."""
        if self.status < 0:
            return
        status_fd, self.status = self.status, -1
        os.close(status_fd)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def prestart(log: Path, exit_file: Path) -> Pending:
    """Start a monitor that will keep ``log`` and ``exit_file``; it waits for :meth:`Pending.go`."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "podhop.runtime.monitor",
                "--log",
                str(log),
                "--exit-file",
                str(exit_file),
                "--status-fd",
                str(write_fd),
            ],
            pass_fds=(write_fd,),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return Pending(proc, read_fd)


def launch(
    command: list[str], log: Path, exit_file: Path, timeout: float = 60.0, join_cgroup: str | None = None
) -> int:
    """Start a monitor running ``command`` at once (see :meth:`Pending.go`); the monitor's pid."""
    return prestart(log, exit_file).go(command, timeout, join_cgroup)


if __name__ == "__main__":
    sys.exit(main())
