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
import itertools
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
    """Probe ``target()`` (an ``(ip, port)``, re-read every attempt) at ``rate_hz`` until stopped."""

    target: Callable[[], tuple[str, int]]
    rate_hz: float = 200.0
    timeout_s: float = 1.0
    attempts: list[Attempt] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Probe:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="podhop-probe", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> list[Attempt]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return sorted(self.attempts, key=lambda a: a.start)

    def __enter__(self) -> Probe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _run(self) -> None:
        """Start one attempt every period, whether or not earlier ones have answered yet."""
        period = 1.0 / self.rate_hz
        next_at = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        while not self._stop.is_set():
            task = asyncio.create_task(self._attempt())
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if pending:
            await asyncio.wait(pending, timeout=self.timeout_s + 1)

    async def _attempt(self) -> None:
        ip, port = self.target()
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
            self.attempts.append(Attempt(start, time.time(), ok, "" if ok else f"answer {answer[:20]!r}"))
        except (OSError, TimeoutError) as exc:
            self.attempts.append(Attempt(start, time.time(), False, type(exc).__name__))


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
