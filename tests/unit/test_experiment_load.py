"""The hey wrapper: command line, CSV parsing, error counting, time bounds, chained runs (with a fake hey)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from podhop.experiment import load
from podhop.experiment.load import ChainedLoad, HeyRequest, LoadRun, merge, parse_hey_csv, summarize

HEADER = "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset\n"

# A stand-in for hey: like hey, each of its -c workers sends ⌊n/c⌋ requests; it answers all but two of
# them, the last answer with a 503. With -n ≥ 999990 it "hangs" until SIGINT, then prints 5 answers,
# like hey does when interrupted.
FAKE_HEY = r"""#!/bin/bash
n=0; c=1
while [ $# -gt 0 ]; do case $1 in -n) n=$2; shift 2;; -c) c=$2; shift 2;; *) shift;; esac; done
emit() {
  echo "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset"
  for ((i = 0; i < $1; i++)); do
    code=200; [ $i -eq $(($1 - 1)) ] && code=503
    printf '0.0%03d,0.0001,0.0000,0.0000,0.0040,0.0001,%d,0.%03d\n' $((i % 50 + 1)) $code $i
  done
}
if [ "$n" -ge 999990 ]; then trap 'emit 5; exit 0' INT; sleep 30 & wait; exit 0; fi
sleep 0.1
emit $((n / c * c - 2))
"""


@pytest.fixture
def fake_hey(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    exe = tmp_path / "hey"
    exe.write_text(FAKE_HEY)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return exe


def test_argv_bounds_count_and_converts_qps_per_worker() -> None:
    argv = load.hey_argv("http://10.0.0.1/", 10000, 100, qps=2000, timeout_s=2.5, binary="hey")
    assert argv == [
        "hey",
        "-n",
        "10000",
        "-c",
        "100",
        "-t",
        "3",
        "-q",
        "20.000",
        "-o",
        "csv",
        "http://10.0.0.1/",
    ]
    assert "-q" not in load.hey_argv("http://x/", 10, 1)


def test_parse_csv_puts_requests_on_the_wall_clock() -> None:
    text = HEADER + "0.0250,0.0010,0,0,0.02,0.001,200,1.5000\n0.1000,0,0,0,0.09,0.001,502,0.2500\nbad,row\n"
    rows = parse_hey_csv(text, started=1000.0)
    assert rows == [HeyRequest(1000.25, 100.0, 502), HeyRequest(1001.5, 25.0, 200)]
    old = parse_hey_csv("response-time,DNS+dialup\n0.0100,0\n", started=5.0)  # hey without offset/status
    assert old == [HeyRequest(5.0, 10.0, 200)]
    assert parse_hey_csv("", 0.0) == []


def test_summary_counts_unanswered_and_bad_status_as_errors() -> None:
    run = LoadRun("u", requests=10, concurrency=2, started=100.0, ended=102.0)
    run.answers = [HeyRequest(100 + i / 10, float(i + 1), 200 if i < 7 else 500) for i in range(8)]
    s = summarize(run)
    assert (s.requests, s.answered, s.errors) == (10, 8, 2 + 1)
    assert s.rps == 5.0 and s.duration_s == 2.0
    assert s.latency_ms["p50"] == 4.5 and s.latency_ms["max"] == 8.0
    assert s.latency_ms["p99"] == pytest.approx(7.93)
    assert s.status_codes == {"200": 7, "500": 1}
    run.truncated = True  # stopped at its time bound: unsent requests are not errors
    assert summarize(run).errors == 1 and summarize(run).requests == 8
    empty = summarize(LoadRun("u", requests=5, concurrency=1, started=1.0, ended=2.0))
    assert empty.errors == 5 and empty.latency_ms["p50"] is None


def test_during_requests_is_sized_from_the_baseline_rate() -> None:
    assert load.during_requests(2000.0, 10.0, 10000, 200000) == 20000
    assert load.during_requests(100.0, 10.0, 10000, 200000) == 10000  # at least a phase's requests
    assert load.during_requests(1e6, 10.0, 10000, 200000) == 200000  # at most max_requests


def test_run_hey_with_a_fake_hey(fake_hey: Path) -> None:
    run = load.run_hey("http://127.0.0.1:1/", 50, 5, max_s=10)
    s = summarize(run)
    assert (s.requests, s.answered, s.errors) == (50, 48, 3)
    assert not run.truncated and run.started <= run.answers[0].start <= run.ended


def test_time_bound_interrupts_hey_and_keeps_its_answers(fake_hey: Path) -> None:
    t0 = time.monotonic()
    run = load.run_hey("http://127.0.0.1:1/", 999999, 5, max_s=0.5)
    assert time.monotonic() - t0 < 5
    assert run.truncated and len(run.answers) == 5
    assert summarize(run).errors == 1  # the 503; unsent requests are not errors


def test_chained_load_spans_a_task_of_unknown_length(fake_hey: Path) -> None:
    chain = ChainedLoad("http://127.0.0.1:1/", 20, 10, 2, max_s=10).start()
    time.sleep(0.45)  # "the migration"
    run = chain.finish()
    assert run.chunks >= 3 and run.requests == 20 + 10 * (run.chunks - 1)
    assert summarize(run).errors == 3 * run.chunks
    assert [a.start for a in run.answers] == sorted(a.start for a in run.answers)
    assert not chain.running()


def test_chained_load_abort(fake_hey: Path) -> None:
    chain = ChainedLoad("http://127.0.0.1:1/", 999999, 10, 2, max_s=30).start()
    time.sleep(0.2)
    t0 = time.monotonic()
    chain.abort()
    assert time.monotonic() - t0 < 5 and not chain.running()


def test_merge_of_nothing() -> None:
    assert merge("u", 3, []).requests == 0


def test_hey_sends_floor_n_over_c_per_worker() -> None:
    """``hey -n 1005 -c 10`` sends 1,000: counting 1,005 invented 5 failures."""
    assert load.hey_sends(1005, 10) == 1000
    assert load.hey_sends(85169, 100) == 85100
    assert load.hey_sends(1000, 10) == 1000


def test_run_sizes_are_rounded_up_to_multiples_of_the_concurrency() -> None:
    assert load.run_size(1005, 10) == 1010
    assert load.run_size(1000, 10) == 1000
    assert load.run_size(3, 10) == 10  # at least one request per worker
    assert load.during_requests(1234.5, 2.0, 100, 100_000, concurrency=100) == 2500
    with pytest.raises(ValueError):
        load.hey_argv("http://x/", 1005, 10)


def test_a_run_asked_for_a_non_multiple_sends_and_counts_a_multiple(fake_hey: Path) -> None:
    run = load.run_hey("http://127.0.0.1:1/", 1005, 10, max_s=10)
    assert run.requests == 1010
    s = summarize(run)
    # the fake answers all but two (one more with a 503): exactly 3 errors, none invented
    assert (s.requests, s.answered, s.no_answer, s.bad_status, s.errors) == (1010, 1008, 2, 1, 3)


def test_an_unrounded_record_counts_what_hey_sent() -> None:
    """A run recorded with -n 1005 -c 10 (as before rounding) and 1,000 answers has no error."""
    run = LoadRun("u", requests=1005, concurrency=10, started=0.0, ended=1.0)
    run.answers = [HeyRequest(i / 1000, 1.0, 200) for i in range(1000)]
    s = summarize(run)
    assert (s.requests, s.errors, s.no_answer) == (1000, 0, 0)
    merged = merge("u", 10, [run, run])
    assert summarize(merged).errors == 0 and summarize(merged).requests == 2000
