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

Run as ``python -m podhop.runtime.monitor --log L --exit-file E --status-fd N -- runc ...``;
:func:`launch` does that and waits for the status line.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import subprocess
import sys
import time
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
    parser.add_argument("--join-cgroup", default=None, help="run the command from inside this cgroup")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    log = _LogWriter(args.log)
    def join() -> None:  # in the child, before exec: the monitor itself stays where it is
        from podhop.runtime import cgroups

        cgroups.join(args.join_cgroup)

    try:
        runtime = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            preexec_fn=join if args.join_cgroup else None,
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


def launch(
    command: list[str], log: Path, exit_file: Path, timeout: float = 60.0, join_cgroup: str | None = None
) -> int:
    """Start a monitor running ``command`` (from inside cgroup ``join_cgroup`` if given); return the
    monitor's pid once runc succeeded.

    Raises ``RuntimeError`` with runc's return code when the command failed; the
    caller reads runc's own log for the reason.
    """
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
                *(["--join-cgroup", join_cgroup] if join_cgroup else []),
                "--",
                *command,
            ],
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as status:
        ready, _, _ = select.select([status], [], [], timeout)
        line = status.readline() if ready else b""
    if not line:
        proc.kill()
        raise RuntimeError(f"monitor gave no status within {timeout} s")
    result = json.loads(line)
    if not result.get("ok"):
        proc.wait(timeout=5)
        raise RuntimeError(f"runtime failed: {result}")
    return proc.pid


if __name__ == "__main__":
    sys.exit(main())
