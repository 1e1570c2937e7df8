"""The load generator: `hey` runs bounded in count and time, and its per-request CSV parsed.

Why: the seed measured with ``hey -n 10000 -c 100``; we run the same tool so
numbers compare, but with ``-o csv`` so that every answered request's latency,
status and start offset is kept — that is what latency-over-time plots and
per-phase percentiles need. hey leaves requests that got no answer out of its
CSV, so a phase is always bounded by count (``-n``) and its errors are
*requests sent − answers* plus answers with status ≥ 400.

"Sent" is what hey sends, not what it was asked: each of its ``-c`` workers
sends ``⌊n/c⌋`` requests, so ``hey -n 1005 -c 10`` sends 1,000 (checked: its
own summary counts 1,000 answers and no error). Counting ``n`` there invented
failures (125 phantom errors in one demo run). So every run size is rounded
up to a multiple of the concurrency before hey starts (:func:`run_size`), and
the count sent is :func:`hey_sends` of what was passed, which is then exact.
Each phase keeps hey's own two distributions: status codes (from the CSV,
every answer has one) and requests without an answer (hey's error
distribution: in CSV mode hey prints no summary, so these are counted, not
named). Every run is also
bounded in time: past its deadline hey gets SIGINT (it then prints what it
has) and the phase is marked truncated; SIGKILL follows if it ignores that.
hey runs in its own session so that a terminal Ctrl-C reaches us, not it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from podhop import sh
from podhop.errors import PreflightError, RuntimeFailure


@dataclass(frozen=True)
class HeyRequest:
    """One answered request: wall-clock start (s), latency (ms), HTTP status."""

    start: float
    latency_ms: float
    status: int


@dataclass
class LoadRun:
    """One hey run (a phase's load): what was asked, when, and what came back."""

    url: str
    requests: int
    concurrency: int
    started: float = 0.0  # time.time() when hey was started
    ended: float = 0.0
    answers: list[HeyRequest] = field(default_factory=list)
    truncated: bool = False  # stopped at its time bound
    counted: int | None = None  # requests counted as sent, when runs were merged
    chunks: int = 1
    returncode: int | None = None
    stderr: str = ""

    @property
    def duration_s(self) -> float:
        return max(0.0, self.ended - self.started)


def hey_sends(requests: int, concurrency: int) -> int:
    """How many requests ``hey -n requests -c concurrency`` sends: ``⌊n/c⌋`` per worker."""
    return (requests // concurrency) * concurrency if concurrency > 0 else 0


def run_size(requests: int, concurrency: int) -> int:
    """``requests`` rounded up to a multiple of ``concurrency`` (at least one request per worker)."""
    c = max(1, concurrency)
    return max(c, -(-requests // c) * c)


def hey_binary() -> str:
    found = shutil.which("hey")
    if found is None:
        raise PreflightError("`hey` is not installed", hint="run `podhop setup` (or apt-get install hey)")
    return found


def hey_argv(
    url: str,
    requests: int,
    concurrency: int,
    *,
    qps: float | None = None,
    timeout_s: float = 10.0,
    binary: str = "hey",
) -> list[str]:
    """hey's command line. ``qps`` is a total rate; hey's ``-q`` is per worker. ``requests`` must be a
    multiple of ``concurrency`` (:func:`run_size`), so that hey sends exactly that many."""
    if requests % concurrency:
        raise ValueError(f"hey -n {requests} -c {concurrency} would send {hey_sends(requests, concurrency)}")
    argv = [binary, "-n", str(requests), "-c", str(concurrency), "-t", str(max(1, math.ceil(timeout_s)))]
    if qps:
        argv += ["-q", f"{qps / concurrency:.3f}"]
    return [*argv, "-o", "csv", url]


def parse_hey_csv(text: str, started: float) -> list[HeyRequest]:
    """Parse ``hey -o csv``; each row's start is ``started`` plus hey's ``offset`` column.

    Rows without the ``offset``/``status-code`` columns (old hey versions) get the
    start time of the run and status 200.
    """
    rows: list[HeyRequest] = []
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return rows
    cols = {name.strip(): i for i, name in enumerate(header)}
    if "response-time" not in cols:
        raise RuntimeFailure(f"hey printed no CSV header (got {','.join(header)[:80]!r})")
    i_rt, i_st, i_off = cols["response-time"], cols.get("status-code"), cols.get("offset")
    for row in reader:
        if len(row) <= i_rt:
            continue
        try:
            latency = float(row[i_rt]) * 1000
            status = int(row[i_st]) if i_st is not None else 200
            offset = float(row[i_off]) if i_off is not None else 0.0
        except ValueError:
            continue
        rows.append(HeyRequest(started + offset, latency, status))
    rows.sort(key=lambda r: r.start)
    return rows


def run_hey(
    url: str,
    requests: int,
    concurrency: int,
    *,
    qps: float | None = None,
    timeout_s: float = 10.0,
    max_s: float = 60.0,
    stop: Callable[[], bool] | None = None,
    on_tick: Callable[[float], None] | None = None,
) -> LoadRun:
    """Run hey to completion, or until ``max_s`` / ``stop()``; never longer than ``max_s`` + 10 s."""
    proc, run, out = start_hey(url, requests, concurrency, qps=qps, timeout_s=timeout_s)
    return finish_hey(proc, run, out, max_s=max_s, stop=stop, on_tick=on_tick)


def start_hey(
    url: str, requests: int, concurrency: int, *, qps: float | None = None, timeout_s: float = 10.0
) -> tuple[subprocess.Popen[bytes], LoadRun, Any]:
    """Start hey in the background (its CSV goes to a temporary file); see :func:`finish_hey`.

    ``requests`` is rounded up to a multiple of ``concurrency`` (:func:`run_size`); the run records it."""
    requests = run_size(requests, concurrency)
    argv = hey_argv(url, requests, concurrency, qps=qps, timeout_s=timeout_s, binary=hey_binary())
    # files, not pipes: nothing can block reading them; finish_hey closes them
    out = (tempfile.TemporaryFile(), tempfile.TemporaryFile())  # noqa: SIM115
    run = LoadRun(url, requests, concurrency, started=time.time())
    proc = subprocess.Popen(
        argv, stdout=out[0], stderr=out[1], start_new_session=True, preexec_fn=sh.default_sigint
    )
    return proc, run, out


def finish_hey(
    proc: subprocess.Popen[bytes],
    run: LoadRun,
    out: Any,
    *,
    max_s: float = 60.0,
    stop: Callable[[], bool] | None = None,
    on_tick: Callable[[float], None] | None = None,
) -> LoadRun:
    """Wait for hey within its bound, then parse its CSV. Kills it on any exception (Ctrl-C).

    ``on_tick`` is called with the seconds elapsed about every 0.2 s (progress display).
    """
    last_tick = 0.0
    try:
        while proc.poll() is None:
            elapsed = time.time() - run.started
            if elapsed > max_s or (stop is not None and stop()):
                run.truncated = True
                _interrupt(proc)
                break
            if on_tick is not None and elapsed - last_tick >= 0.2:
                last_tick = elapsed
                on_tick(elapsed)
            time.sleep(0.05)
        run.ended = time.time()
        run.returncode = proc.returncode
        with contextlib.suppress(ProcessLookupError):  # anything hey left in its session
            os.killpg(proc.pid, signal.SIGKILL)
        out[1].seek(0)
        run.stderr = out[1].read().decode(errors="replace")[-2000:]
        out[0].seek(0)
        text = out[0].read().decode(errors="replace")
    except BaseException:
        kill(proc)
        raise
    finally:
        for f in out:
            f.close()
    if run.returncode not in (0, -signal.SIGINT, 130) and not text.strip():
        raise RuntimeFailure(f"hey failed (exit {run.returncode}): {run.stderr.strip()[-300:]}")
    run.answers = parse_hey_csv(text, run.started)
    return run


def _interrupt(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (hey stops its workers and prints what it has), then SIGKILL after 10 s."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        kill(proc)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill hey's whole session (best effort) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


class ChainedLoad:
    """Load that must span something of unknown length (a migration): hey runs back to back.

    The first run sends ``first`` requests; whenever a run ends while :meth:`finish` has
    not been called yet, another of ``then`` requests starts at once. Each run is bounded
    by count, so errors stay exact; the whole chain is bounded by ``max_s``. Runs happen
    in a thread, so the caller is free to run the migration meanwhile.
    """

    def __init__(
        self,
        url: str,
        first: int,
        then: int,
        concurrency: int,
        *,
        qps: float | None = None,
        timeout_s: float = 10.0,
        max_s: float = 60.0,
    ) -> None:
        self.url, self.first, self.then, self.concurrency = url, first, then, concurrency
        self.qps, self.timeout_s, self.max_s = qps, timeout_s, max_s
        self.runs: list[LoadRun] = []
        self.started = 0.0
        self._finished = threading.Event()
        self._abort = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ChainedLoad:
        hey_binary()
        self.started = time.time()
        self._thread = threading.Thread(target=self._loop, name="podhop-load", daemon=True)
        self._thread.start()
        return self

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        n = self.first
        try:
            while not self._abort.is_set():
                left = self.max_s - (time.time() - self.started)
                if left <= 0:
                    break
                proc, run, out = start_hey(
                    self.url, n, self.concurrency, qps=self.qps, timeout_s=self.timeout_s
                )
                self.runs.append(finish_hey(proc, run, out, max_s=left, stop=self._abort.is_set))
                if self._finished.is_set() or run.truncated:
                    break
                n = self.then
        except BaseException as exc:
            self._error = exc

    def finish(self) -> LoadRun:
        """Let the current run complete (no new one starts); return all runs merged as one."""
        self._finished.set()
        if self._thread is not None:
            self._thread.join(timeout=self.max_s + 20)
        if self._error is not None:
            raise self._error
        return merge(self.url, self.concurrency, self.runs)

    def abort(self) -> None:
        """Stop now (Ctrl-C, failure): the running hey is interrupted."""
        self._abort.set()
        if self._thread is not None:
            self._thread.join(timeout=15)


def merge(url: str, concurrency: int, runs: list[LoadRun]) -> LoadRun:
    """Back-to-back runs as one phase: counts summed, answers concatenated."""
    if not runs:
        return LoadRun(url, 0, concurrency, started=time.time(), ended=time.time())
    out = LoadRun(
        url, sum(r.requests for r in runs), concurrency, started=runs[0].started, ended=runs[-1].ended
    )
    out.answers = sorted((a for r in runs for a in r.answers), key=lambda a: a.start)
    out.truncated = any(r.truncated for r in runs)
    out.counted = sum(sent(r) for r in runs)
    out.chunks = len(runs)
    out.returncode = runs[-1].returncode
    out.stderr = runs[-1].stderr
    return out


def sent(run: LoadRun) -> int:
    """Requests a run sent: all of them when it completed, its answers when it was cut short (the
    requests it had in flight then are not counted as lost: hey was stopped, not the service)."""
    if run.counted is not None:
        return run.counted
    return len(run.answers) if run.truncated else hey_sends(run.requests, run.concurrency)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of already sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class PhaseStats:
    """The figures of one load phase (what the seed's hey summary showed, plus errors)."""

    requests: int  # sent, as hey sends them (⌊n/c⌋·c; answers when truncated)
    answered: int
    errors: int  # no_answer + bad_status
    no_answer: int  # sent but not answered (hey's error distribution: timeouts, refused, reset)
    bad_status: int  # answered with status >= 400
    rps: float  # requests finished (answered or failed) per second, as hey reports it
    duration_s: float
    latency_ms: dict[str, float | None]  # p50 p95 p99 mean max; None without answers
    status_codes: dict[str, int]
    truncated: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(run: LoadRun) -> PhaseStats:
    """Per-phase figures. A truncated run's unsent requests are not counted as errors."""
    lat = sorted(r.latency_ms for r in run.answers)
    bad_status = sum(1 for r in run.answers if r.status >= 400)
    n_sent = sent(run)
    no_answer = max(0, n_sent - len(run.answers))
    codes: dict[str, int] = {}
    for r in run.answers:
        codes[str(r.status)] = codes.get(str(r.status), 0) + 1
    duration = run.duration_s
    return PhaseStats(
        requests=n_sent,
        answered=len(run.answers),
        errors=no_answer + bad_status,
        no_answer=no_answer,
        bad_status=bad_status,
        rps=round(n_sent / duration, 1) if duration > 0 else 0.0,
        duration_s=round(duration, 3),
        latency_ms={
            "p50": round(percentile(lat, 50), 3) if lat else None,
            "p95": round(percentile(lat, 95), 3) if lat else None,
            "p99": round(percentile(lat, 99), 3) if lat else None,
            "mean": round(sum(lat) / len(lat), 3) if lat else None,
            "max": round(lat[-1], 3) if lat else None,
        },
        status_codes=dict(sorted(codes.items())),
        truncated=run.truncated,
    )


def during_requests(
    baseline_rps: float, during_s: float, minimum: int, maximum: int, concurrency: int = 1
) -> int:
    """How many requests make the during phase last ``during_s`` at the baseline's rate (a multiple of
    ``concurrency``, so that hey sends them all)."""
    wanted = math.ceil(max(baseline_rps, 1.0) * during_s)
    return run_size(max(minimum, min(maximum, wanted)), concurrency)
