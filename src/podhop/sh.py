"""Running external tools: one place that turns failures into :class:`CommandError`.

Why: podhop drives real tools (``ip``, ``iptables``, ``tc``, ``runc``,
``criu``, ``debootstrap``). Each call must fail loudly with the tool's own
message, never hang forever, and never be parsed from a shell string. Keeping
that in one helper keeps the wrappers in ``net`` and ``runtime`` short.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Sequence

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
