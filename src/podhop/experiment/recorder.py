"""Background recording during a run: ``top`` every second, tagged with the phase it fell in.

Why: the seed looked at ``kubectl top`` once, by hand; to plot node load
before and after and to choose the hottest pod from measurements, the run
samples every node's and pod's CPU and memory once per second for its whole
length, without stopping for the load or the migration. The sampler runs in
its own thread with its own state-database connection (SQLite connections do
not cross threads), tags each row with the repetition and phase current when
its window ended, and hands rows over in batches so the runner can append
them to ``metrics.csv`` as it goes.
"""

from __future__ import annotations

import threading
import time

from podhop.backends.base import Backend, Sample
from podhop.experiment.selection import MetricRow

Tagged = tuple[MetricRow, int, str]


def rows_from_sample(s: Sample, t: float) -> list[MetricRow]:
    """A usage sample as rows (nodes first), stamped with the window's end ``t``."""
    rows = [
        MetricRow(
            t,
            s.window_s,
            "node",
            "",
            n.name,
            n.name,
            n.cpu_m,
            n.memory_b,
            n.cpu_capacity_m,
            n.memory_capacity_b,
        )
        for n in s.nodes
    ]
    rows += [
        MetricRow(t, s.window_s, "pod", p.namespace, p.name, p.node, p.cpu_m, p.memory_b) for p in s.pods
    ]
    return rows


class Sampler:
    """Samples the cluster every ``interval_s`` in a daemon thread until stopped."""

    def __init__(self, backend: Backend, interval_s: float = 1.0) -> None:
        self.backend = backend
        self.interval_s = interval_s
        self.repetition = 0
        self.phase = "setup"
        self.errors: list[str] = []
        self._rows: list[Tagged] = []
        self._taken = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tag(self, repetition: int, phase: str) -> None:
        """Rows whose window ends from now on belong to this repetition and phase."""
        self.repetition, self.phase = repetition, phase

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, name="podhop-sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                s = self.backend.top(self.interval_s)
            except Exception as exc:  # a vanished cgroup mid-migration must not end the recording
                self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(self.interval_s)
                continue
            rows = rows_from_sample(s, time.time())
            rep, phase = self.repetition, self.phase
            with self._lock:
                self._rows.extend((r, rep, phase) for r in rows)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)

    def take(self) -> list[Tagged]:
        """Rows recorded since the last call (for appending to the CSV)."""
        with self._lock:
            new = self._rows[self._taken :]
            self._taken = len(self._rows)
        return new

    def rows(self) -> list[MetricRow]:
        """Every row recorded so far."""
        with self._lock:
            return [r for r, _, _ in self._rows]

    def wait_samples(self, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` more samples than now have been recorded (for short phases)."""
        with self._lock:
            start = len({r.t for r, _, _ in self._rows})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len({r.t for r, _, _ in self._rows}) >= start + count:
                    return True
            time.sleep(0.05)
        return False
