"""Running external tools: one place that turns failures into :class:`CommandError`.

Why: podhop drives real tools (``ip``, ``iptables``, ``tc``, ``runc``,
``criu``, ``debootstrap``). Each call must fail loudly with the tool's own
message, never hang forever, and never be parsed from a shell string. Keeping
that in one helper keeps the wrappers in ``net`` and ``runtime`` short.
A tool that starts others (runc and its CRIU, CRIU and its helpers) runs in a
process group of its own (:func:`run_group`), killed whole on a timeout.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from podhop.errors import CommandError, PreflightError

DEFAULT_TIMEOUT_S = 120.0


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | bytes | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    hint: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and capture its output as text.

    Raises :class:`CommandError` with the tool's stderr when ``check`` and it
    exits non-zero or times out; :class:`PreflightError` when the tool is missing.
    """
    args = [str(a) for a in argv]
    data = input.decode() if isinstance(input, bytes) else input
    try:
        proc = subprocess.run(args, input=data, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise PreflightError(
            f"`{args[0]}` is not installed", hint="run `podhop setup` (or `make setup`)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(args, -1, f"timed out after {timeout} s", hint=hint) from exc
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stderr or proc.stdout, hint=hint)
    return proc


def ok(argv: Sequence[str], *, timeout: float | None = DEFAULT_TIMEOUT_S) -> bool:
    """Run ``argv``; True when it exits 0. For probes and best-effort cleanup."""
    try:
        return run(argv, check=False, timeout=timeout).returncode == 0
    except (CommandError, PreflightError):
        return False


def which(tool: str) -> str | None:
    """Absolute path of ``tool`` on PATH (also looking in the sbin directories)."""
    found = shutil.which(tool)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        found = shutil.which(tool, path=d)
        if found:
            return found
    return None


def default_sigint() -> None:
    """A ``preexec_fn``: the child takes SIGINT as a request to stop even when podhop itself runs with
    SIGINT ignored (a background job inherits that): hey's graceful stop relies on it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_group(argv: list[str], timeout: float) -> None:
    """Run ``argv`` in its own process group; on timeout, interrupt or error kill the whole group
    (runc *and* the CRIU it started) and wait until it is gone.

    Killing runc alone would leave its CRIU running, still tracing (and, for a frozen source,
    holding) the container; the source could then only be resumed after CRIU gave up.
    """
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=timeout)
    except BaseException:
        kill_group(proc.pid)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, err)


def kill_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGKILL a process group and wait (bounded) until none of it is left alive (zombies
    waiting for a parent that may never reap them do not count)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if not _live_members(pgid):
            return
        time.sleep(0.02)


def _live_members(pgid: int) -> list[int]:
    live = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            live.append(int(entry.name))
    return live
