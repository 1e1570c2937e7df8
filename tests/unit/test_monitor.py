"""The per-container monitor, driven with plain shell commands instead of runc."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podhop.runtime.monitor import launch, prestart

DEADLINE = 10.0  # seconds: bound of every wait
CRI_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([FP]) (.*)$")


class Monitor:
    def __init__(self, tmp_path: Path) -> None:
        self.log = tmp_path / "ctr.log"
        self.exit_file = tmp_path / "ctr.exit"
        self.pids: list[int] = []

    def launch(self, command: list[str]) -> int:
        pid = launch(command, self.log, self.exit_file, timeout=DEADLINE)
        self.pids.append(pid)
        return pid

    def wait_exit(self) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        while not self.exit_file.exists():
            assert time.monotonic() < deadline, "the monitor wrote no exit file in time"
            time.sleep(0.02)
        # the file is written in one call; wait until it parses
        while True:
            try:
                data: dict[str, Any] = json.loads(self.exit_file.read_text())
                return data
            except json.JSONDecodeError:
                assert time.monotonic() < deadline, "the exit file is not valid JSON"
                time.sleep(0.02)

    def entries(self) -> list[tuple[str, str, str, str]]:
        out = []
        for line in self.log.read_text().splitlines():
            m = CRI_LINE.match(line)
            assert m, f"not a CRI log line: {line!r}"
            out.append((m.group(1), m.group(2), m.group(3), m.group(4)))
        return out

    def reap(self) -> None:
        """Collect the monitors (our children) so none is left behind."""
        for pid in self.pids:
            deadline = time.monotonic() + DEADLINE
            while True:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    break
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)  # the monitor leads its own session
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)
                    break
                time.sleep(0.02)


@pytest.fixture
def mon(tmp_path: Path) -> Iterator[Monitor]:
    m = Monitor(tmp_path)
    yield m
    m.reap()


def test_output_is_logged_in_cri_format(mon: Monitor) -> None:
    pid = mon.launch(["sh", "-c", "echo out; echo err >&2; exit 0"])
    assert pid > 0
    exit_data = mon.wait_exit()
    assert "exitCode" in exit_data
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", exit_data["finishedAt"])
    entries = mon.entries()
    assert [(s, t, m) for _, s, t, m in entries if s == "stdout"] == [("stdout", "F", "out")]
    assert [(s, t, m) for _, s, t, m in entries if s == "stderr"] == [("stderr", "F", "err")]


def test_timestamps_are_ordered_and_current(mon: Monitor) -> None:
    mon.launch(["sh", "-c", "echo a; sleep 0.05; echo b; sleep 0.05; echo c"])
    mon.wait_exit()
    stamps = [ts for ts, _, _, _ in mon.entries()]
    assert len(stamps) == 3
    assert stamps == sorted(stamps)
    assert stamps[0][:4] == time.strftime("%Y", time.gmtime())


def test_multiple_lines_in_one_write_are_split(mon: Monitor) -> None:
    mon.launch(["sh", "-c", "printf 'one\\ntwo\\n\\nthree\\n'"])
    mon.wait_exit()
    assert [(s, t, m) for _, s, t, m in mon.entries()] == [
        ("stdout", "F", "one"),
        ("stdout", "F", "two"),
        ("stdout", "F", ""),
        ("stdout", "F", "three"),
    ]


def test_partial_last_line_is_tagged_p(mon: Monitor) -> None:
    mon.launch(["sh", "-c", "echo full; printf partial; printf half >&2"])
    mon.wait_exit()
    entries = [(s, t, m) for _, s, t, m in mon.entries()]
    assert ("stdout", "F", "full") in entries
    assert ("stdout", "P", "partial") in entries
    assert ("stderr", "P", "half") in entries
    assert len(entries) == 3


def test_log_is_appended_not_truncated(mon: Monitor) -> None:
    mon.log.write_text("2024-01-01T00:00:00.000000000Z stdout F earlier\n")
    mon.launch(["sh", "-c", "echo later"])
    mon.wait_exit()
    assert [m for _, _, _, m in mon.entries()] == ["earlier", "later"]


def test_failing_command_raises(mon: Monitor) -> None:
    with pytest.raises(RuntimeError, match="3"):
        launch(["sh", "-c", "echo no >&2; exit 3"], mon.log, mon.exit_file, timeout=DEADLINE)
    assert not mon.exit_file.exists()


def test_missing_command_raises(mon: Monitor, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        launch([str(tmp_path / "no-such-runtime"), "run"], mon.log, mon.exit_file, timeout=DEADLINE)
    assert not mon.exit_file.exists()


def test_launch_returns_before_the_container_exits(mon: Monitor) -> None:
    # like ``runc run -d``: the command exits at once, its child (the container) lives on
    started = time.monotonic()
    mon.launch(["sh", "-c", "(sleep 1; echo done) & exit 0"])
    assert time.monotonic() - started < 1.0, "launch waited for the container, not the runtime"
    assert not mon.exit_file.exists()
    mon.wait_exit()
    assert [(s, m) for _, s, _, m in mon.entries()] == [("stdout", "done")]


def test_descendants_output_and_exit_code_are_recorded(mon: Monitor) -> None:
    mon.launch(["sh", "-c", "(for i in 1 2 3; do echo $i; sleep 0.1; done; echo bye >&2; exit 7) & exit 0"])
    exit_data = mon.wait_exit()
    # the background child was re-parented to the monitor (a subreaper), which saw it exit
    assert exit_data["exitCode"] == 7
    entries = [(s, t, m) for _, s, t, m in mon.entries()]
    assert [m for s, _, m in entries if s == "stdout"] == ["1", "2", "3"]
    assert ("stderr", "F", "bye") in entries


def test_descendant_exit_code_zero(mon: Monitor) -> None:
    mon.launch(["sh", "-c", "(sleep 0.2; exit 0) & exit 0"])
    assert mon.wait_exit()["exitCode"] == 0


def test_descendant_killed_by_signal_has_nonzero_exit_code(mon: Monitor) -> None:
    mon.launch(["sh", "-c", "sh -c 'sleep 0.2; kill -TERM $$' & exit 0"])
    code = mon.wait_exit()["exitCode"]
    assert isinstance(code, int) and code != 0


def test_descendant_killed_by_sigterm_reports_143(mon: Monitor) -> None:
    mon.launch(["sh", "-c", "sh -c 'sleep 0.2; kill -TERM $$' & exit 0"])
    assert mon.wait_exit()["exitCode"] == 128 + signal.SIGTERM


def test_prestarted_monitor_runs_its_command_only_when_told(mon: Monitor) -> None:
    pending = prestart(mon.log, mon.exit_file)
    time.sleep(0.2)  # started ahead of time: it waits, touching nothing
    assert pending.proc.poll() is None
    assert not mon.log.exists() and not mon.exit_file.exists()
    pid = pending.go(["sh", "-c", "(echo restored; exit 4) & exit 0"], timeout=DEADLINE)
    mon.pids.append(pid)
    assert mon.wait_exit()["exitCode"] == 4
    assert "restored" in mon.log.read_text()


def test_cancelled_monitor_exits_without_running_anything(mon: Monitor, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pending = prestart(mon.log, mon.exit_file)
    pending.cancel()
    assert pending.proc.returncode == 0
    assert not marker.exists() and not mon.log.exists() and not mon.exit_file.exists()


def test_prestarted_monitor_reports_a_failing_command(mon: Monitor) -> None:
    pending = prestart(mon.log, mon.exit_file)
    with pytest.raises(RuntimeError, match="returncode"):
        pending.go(["sh", "-c", "exit 3"], timeout=DEADLINE)


def test_cancel_after_go_touches_nothing(mon: Monitor) -> None:
    pending = prestart(mon.log, mon.exit_file)
    mon.pids.append(pending.go(["sh", "-c", "(sleep 0.3; exit 0) & exit 0"], timeout=DEADLINE))
    r, w = os.pipe()  # likely to reuse the status pipe's number: cancel must not close it
    try:
        pending.cancel()
        os.write(w, b"x")
        assert os.read(r, 1) == b"x"
    finally:
        os.close(r)
        os.close(w)
    assert mon.wait_exit()["exitCode"] == 0
