"""An availability probe: measures downtime from the outside, as a client sees it.

Why: a migration's downtime must be measured, not inferred from phase timings
(the service can be unreachable before the freeze starts or after restore
ends, e.g. while endpoints switch). The probe sends a small request at a fixed
rate (default 200/s) to an address — a service VIP, or wherever the pod is now
— on a fresh TCP connection each time, so every attempt goes through service
routing anew, and records each attempt's start, end and outcome. Attempts
start on schedule even while earlier ones hang (asyncio), so a frozen pod
does not slow the probe down.

``downtime_ms`` is the longest interval between two consecutive successful
answers minus the probe period (one period is the resolution), computed over
the attempts the probe recorded; ``failed`` counts failed attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from podhop.migrate.report import ProbeSummary

HTTP_GET = b"GET / HTTP/1.0\r\nHost: probe\r\nUser-Agent: podhop-probe\r\n\r\n"
REDIS_PING = b"PING\r\n"


@dataclass(frozen=True)
class Attempt:
    start: float  # time.time() seconds
    end: float
    ok: bool
    error: str = ""


def request_for(port: int) -> tuple[bytes, bytes]:
    """(request, expected answer prefix) for a port: Redis PING on 6379, HTTP GET elsewhere."""
    return (REDIS_PING, b"+PONG") if port == 6379 else (HTTP_GET, b"HTTP/1.")


@dataclass
class Probe:
    """Probe ``target()`` (an ``(ip, port)``, followed as it changes) at ``rate_hz`` until stopped.

    The requests are made by a process of their own (``python -m podhop.migrate.probe``): in the
    process that migrates, the probe's event loop waits for the interpreter whenever the migration
    runs Python, and a client that does not exist would see gaps (measured under the seed's load:
    20-75 ms with the main thread busy, against 22-36 ms idle). This process only follows the
    target — re-read every probe period and sent on when it changes — and collects the attempts.
    """

    target: Callable[[], tuple[str, int]]
    rate_hz: float = 200.0
    timeout_s: float = 1.0
    attempts: list[Attempt] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None

    def start(self) -> Probe:
        """Start probing; returns once the first attempt is under way."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "podhop.migrate.probe", str(self.rate_hz), str(self.timeout_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert proc.stdin is not None and proc.stdout is not None
        self._proc = proc
        ip, port = self.target()
        proc.stdin.write(f"{ip} {port}\n")
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "probing":
            proc.kill()
            proc.wait(timeout=5)
            raise RuntimeError("the probe process did not start")
        self._threads = [
            threading.Thread(target=self._collect, name="podhop-probe-collect", daemon=True),
            threading.Thread(target=self._follow, args=((ip, port),), name="podhop-probe", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Attempt]:
        """Stop (the attempts under way finish first); every attempt, by start time."""
        self._stop.set()
        for t in self._threads[1:]:
            t.join(timeout=5)
        if self._proc is not None:
            with contextlib.suppress(OSError):
                assert self._proc.stdin is not None
                self._proc.stdin.write("stop\n")
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=self.timeout_s + 5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        for t in self._threads[:1]:
            t.join(timeout=5)
        return sorted(self.attempts, key=lambda a: a.start)

    def __enter__(self) -> Probe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _follow(self, current: tuple[str, int]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        while not self._stop.wait(1.0 / self.rate_hz):
            now = self.target()
            if now != current:
                current = now
                with contextlib.suppress(OSError):
                    self._proc.stdin.write(f"{now[0]} {now[1]}\n")
                    self._proc.stdin.flush()

    def _collect(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            start, end, ok, error = line.rstrip("\n").split(" ", 3)
            self.attempts.append(Attempt(float(start), float(end), ok == "1", error))


class _Prober:
    """The probe process: one attempt every period, whether or not earlier ones have answered."""

    def __init__(self, rate_hz: float, timeout_s: float, target: tuple[str, int]) -> None:
        self.rate_hz, self.timeout_s, self.target = rate_hz, timeout_s, target
        self.done = asyncio.Event()

    def _read_command(self) -> None:
        line = sys.stdin.readline()
        if not line or line.strip() == "stop":
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
            self.done.set()
            return
        ip, port = line.split()
        self.target = (ip, int(port))

    async def run(self) -> None:
        asyncio.get_running_loop().add_reader(sys.stdin.fileno(), self._read_command)
        period = 1.0 / self.rate_hz
        next_at = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        print("probing", flush=True)
        while not self.done.is_set():
            task = asyncio.create_task(self._attempt(*self.target))
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += period
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), max(0.0, next_at - time.monotonic()))
        if pending:
            await asyncio.wait(pending, timeout=self.timeout_s + 1)

    async def _attempt(self, ip: str, port: int) -> None:
        request, expect = request_for(port)
        start = time.time()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), self.timeout_s)
            try:
                writer.write(request)
                answer = await asyncio.wait_for(reader.read(64), self.timeout_s)
            finally:
                writer.close()
            ok = answer.startswith(expect)
            error = "" if ok else f"answer {answer[:20]!r}".replace("\n", " ")
        except (OSError, TimeoutError) as exc:
            ok, error = False, type(exc).__name__
        sys.stdout.write(f"{start} {time.time()} {int(ok)} {error}\n")


def summarize(
    attempts: list[Attempt], rate_hz: float, since: float | None = None, until: float | None = None
) -> ProbeSummary:
    """Failed count, longest gap between successes (downtime) and latency, within [since, until]."""
    window = [
        a for a in attempts if (since is None or a.start >= since) and (until is None or a.start <= until)
    ]
    ok_ends = sorted(a.end for a in window if a.ok)
    period = 1.0 / rate_hz
    gap = max((b - a for a, b in itertools.pairwise(ok_ends)), default=0.0)
    if window and not ok_ends:
        gap = window[-1].end - window[0].start
    latencies = sorted((a.end - a.start) * 1000 for a in window if a.ok)
    return ProbeSummary(
        attempts=len(window),
        failed=sum(1 for a in window if not a.ok),
        longest_gap_ms=round(gap * 1000, 2),
        downtime_ms=round(max(0.0, gap - period) * 1000, 2),
        latency_p50_ms=round(latencies[len(latencies) // 2], 3) if latencies else 0.0,
        latency_max_ms=round(latencies[-1], 3) if latencies else 0.0,
    )


def main(argv: list[str]) -> int:
    """``python -m podhop.migrate.probe RATE_HZ TIMEOUT_S``: the target (``IP PORT``) and its changes
    on standard input, ``stop`` to end; one line per attempt on standard output."""
    ip, port = sys.stdin.readline().split()
    asyncio.run(_Prober(float(argv[0]), float(argv[1]), (ip, int(port))).run())
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
