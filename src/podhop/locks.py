"""Cross-process locks on files that say who holds them, and give up after a while.

Why: every podhop command is its own process, and some of them must not
overlap — two operations on one cluster, two setups building the same root,
two writers of the image store. One ``flock`` per lock file does that; this
module adds what a user waiting on one needs: the holder writes its pid,
command line and start time into the file, a waiter reports "waiting for
`podhop migrate web …` (pid 4242) for 12 s" through a callback (the CLI prints
it), and gives up with :class:`LockTimeout` after ``timeout`` seconds instead
of hanging for ever. Locks are re-entrant within a thread and exclusive
between threads of one process too (rebalance runs migrations in threads).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from podhop.errors import PodhopError

#: Default patience, seconds; ``PODHOP_LOCK_TIMEOUT`` overrides it.
DEFAULT_TIMEOUT_S = 600.0
POLL_S = 0.1
REPORT_EVERY_S = 1.0

Waiting = Callable[[str, float], None]


class LockTimeout(PodhopError):
    """A lock stayed held by another podhop process for longer than we were willing to wait."""


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str
    since: float

    def describe(self) -> str:
        return f"`{self.command}` (pid {self.pid}, for {time.time() - self.since:.0f} s)"


def default_timeout() -> float:
    try:
        return float(os.environ.get("PODHOP_LOCK_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S


def holder(path: Path) -> Holder | None:
    """Who holds (or last held) the lock at ``path``, as it wrote itself down."""
    try:
        doc = json.loads(path.read_text() or "null")
        return Holder(int(doc["pid"]), str(doc["command"]), float(doc["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _Entry:
    def __init__(self) -> None:
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.fh: object = None


_registry: dict[str, _Entry] = {}
_registry_lock = threading.Lock()


def _entry(path: Path) -> _Entry:
    with _registry_lock:
        return _registry.setdefault(str(path), _Entry())


@contextmanager
def hold(
    path: Path, what: str, *, timeout: float | None = None, on_wait: Waiting | None = None
) -> Iterator[None]:
    """Hold the lock file ``path`` (``what`` names it in messages: "cluster lab")."""
    entry = _entry(path)
    limit = default_timeout() if timeout is None else timeout
    start = time.monotonic()
    if not entry.thread_lock.acquire(timeout=limit if limit > 0 else -1):
        raise LockTimeout(f"{what} is busy in this process; gave up after {limit:.0f} s")
    try:
        if entry.depth == 0:
            entry.fh = _acquire(path, what, start, limit, on_wait)
        entry.depth += 1
        try:
            yield
        finally:
            entry.depth -= 1
            if entry.depth == 0:
                fh = entry.fh
                entry.fh = None
                assert hasattr(fh, "close")
                fh.close()  # closing releases the flock
    finally:
        entry.thread_lock.release()


def _acquire(path: Path, what: str, start: float, limit: float, on_wait: Waiting | None) -> object:
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("a+")
    last_report = -REPORT_EVERY_S
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            waited = time.monotonic() - start
            who = holder(path)
            desc = who.describe() if who else "another podhop process"
            if waited >= limit:
                fh.close()
                pid = f"kill {who.pid}" if who else "stop it"
                raise LockTimeout(
                    f"{what} is held by {desc}; gave up waiting after {limit:.0f} s",
                    hint=f"wait for it (or, if it is stuck, {pid}); PODHOP_LOCK_TIMEOUT sets the wait",
                ) from None
            if on_wait is not None and waited - last_report >= REPORT_EVERY_S:
                on_wait(f"waiting for {what}, held by {desc}", waited)
                last_report = waited
            time.sleep(POLL_S)
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps({"pid": os.getpid(), "command": " ".join(_argv()), "since": time.time()}))
    fh.flush()
    return fh


def _argv() -> list[str]:
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "/podhop")):
        argv[0] = "podhop"
    return argv[:8]
