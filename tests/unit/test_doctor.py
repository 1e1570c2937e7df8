"""Preflight checks: always a list, never an exception, every failure with its fix.

Why: ``podhop doctor`` is what a user runs when something is wrong, so it
must keep working when the machine is broken in any way, and it must be fast
enough to run before every cluster command.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from podhop import doctor
from podhop.doctor import CLUSTER, INFO, KUBERNETES, MIGRATION, Check
from podhop.setup import host

STATUS_NO_SYS_RESOURCE = """Name:\tcat
Umask:\t0022
State:\tR (running)
CapInh:\t0000000000000000
CapPrm:\t000001fffeffffff
CapEff:\t000001fffeffffff
CapBnd:\t000001fffeffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t0
"""


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PODHOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PODHOP_RUN", str(tmp_path / "run"))
    return tmp_path / "home"


def _assert_well_formed(checks: list[Check]) -> None:
    assert isinstance(checks, list) and checks
    for check in checks:
        assert isinstance(check, Check)
        assert check.name and check.detail
        assert check.needed_for in (CLUSTER, MIGRATION, INFO, KUBERNETES)
        if not check.ok:
            assert check.fix, f"failing check {check.name!r} has no fix"


# --------------------------------------------------------------------------- run_checks


def test_run_checks_is_well_formed_and_fast(empty_home: Path) -> None:
    started = time.monotonic()
    checks = doctor.run_checks()
    elapsed = time.monotonic() - started
    _assert_well_formed(checks)
    assert elapsed < 3.0, f"doctor took {elapsed:.2f} s"
    names = [c.name for c in checks]
    for expected in (
        "root",
        "kernel",
        "cgroups",
        "runc",
        "iptables",
        "ip",
        "tc",
        "hey",
        "debootstrap",
        "criu",
        "tcp repair",
        "CAP_SYS_RESOURCE",
        "fs.pipe-max-size",
        "net.ipv4.ip_forward",
        "images",
    ):
        assert expected in names
    images = next(c for c in checks if c.name == "images")
    assert not images.ok  # empty PODHOP_HOME
    assert images.fix is not None and "podhop setup" in images.fix
    assert not doctor.cluster_possible(checks)
    assert not doctor.migration_possible(checks)


def test_a_probe_that_raises_becomes_a_failing_line(
    empty_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom() -> list[Check]:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(doctor, "_check_cgroups", boom)
    monkeypatch.setattr(doctor, "_check_sysctls", boom)
    checks = doctor.run_checks()
    _assert_well_formed(checks)
    broken = [c for c in checks if "kaboom" in c.detail]
    assert {c.name for c in broken} == {"cgroups", "sysctls"}
    assert all(not c.ok and c.fix for c in broken)
    assert not doctor.cluster_possible(checks)


def test_missing_tools_are_failing_lines_with_a_fix(
    empty_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("podhop.sh.which", lambda tool: None)
    checks = doctor.run_checks()
    _assert_well_formed(checks)
    by_name = {c.name: c for c in checks}
    for name in ("runc", "iptables", "ip", "tc", "hey", "debootstrap", "criu"):
        assert not by_name[name].ok, name
    assert "apt-get install iproute2" in (by_name["tc"].fix or "")
    assert "podhop setup" in (by_name["criu"].fix or "")


def _fake_criu(tmp_path: Path, version_line: str, check_rc: int = 0, check_out: str = "Looks good.") -> Path:
    script = tmp_path / "criu"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$1" in --version) echo "{version_line}";; '
        f'check) echo "{check_out}" >&2; exit {check_rc};; esac\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_old_criu_wrapper_fails_with_setup_fix(empty_home: Path, tmp_path: Path) -> None:
    wrapper = host.criu_path()
    assert wrapper is None
    bin_dir = empty_home / "bin"
    bin_dir.mkdir(parents=True)
    fake = _fake_criu(tmp_path, "Version: 3.17.1")
    os.symlink(fake, bin_dir / "criu")
    checks = doctor.run_checks()
    criu = next(c for c in checks if c.name == "criu")
    assert not criu.ok and "3.17.1" in criu.detail
    assert criu.fix is not None and "podhop setup" in criu.fix
    assert not doctor.migration_possible(checks)


def test_failing_criu_check_shows_first_error_line(empty_home: Path, tmp_path: Path) -> None:
    bin_dir = empty_home / "bin"
    bin_dir.mkdir(parents=True)
    fake = _fake_criu(
        tmp_path,
        "Version: 4.2.1",
        check_rc=1,
        check_out="Warn  (x): meh\nError (criu/vdso.c:613): vdso: boom",
    )
    os.symlink(fake, bin_dir / "criu")
    checks = doctor.run_checks()
    by_name = {c.name: c for c in checks}
    assert by_name["criu"].ok
    assert not by_name["criu check"].ok
    assert by_name["criu check"].detail.startswith("Error (criu/vdso.c:613)")


# --------------------------------------------------------------------------- pure helpers


def test_capability_parsing() -> None:
    assert not doctor.has_capability(STATUS_NO_SYS_RESOURCE, doctor.CAP_SYS_RESOURCE)
    assert doctor.has_capability(STATUS_NO_SYS_RESOURCE, 21)  # CAP_SYS_ADMIN
    assert doctor.has_capability(STATUS_NO_SYS_RESOURCE, 25)  # CAP_SYS_TIME
    full = STATUS_NO_SYS_RESOURCE.replace("CapEff:\t000001fffeffffff", "CapEff:\t000001ffffffffff")
    assert doctor.has_capability(full, doctor.CAP_SYS_RESOURCE)
    assert doctor.capability_mask(STATUS_NO_SYS_RESOURCE, "CapAmb") == 0
    with pytest.raises(ValueError):
        doctor.capability_mask("Name:\tx\n")


def test_capability_check_explains_missing_sys_resource() -> None:
    (check,) = doctor._check_capabilities(STATUS_NO_SYS_RESOURCE)
    assert not check.ok
    assert check.needed_for == INFO  # a warning, not fatal
    assert "rlimit" in check.detail
    assert check.fix is not None and "root inside containers" in check.fix
    full = STATUS_NO_SYS_RESOURCE.replace("CapEff:\t000001fffeffffff", "CapEff:\t000001ffffffffff")
    assert doctor._check_capabilities(full)[0].ok


def test_kernel_version() -> None:
    assert doctor.kernel_version("6.18.44-fc-v782") == (6, 18)
    assert doctor.kernel_version("5.10.0-23-amd64") == (5, 10)
    with pytest.raises(ValueError):
        doctor.kernel_version("weird")


def test_possible_follows_needed_for() -> None:
    ok = Check("a", True, "fine", None, CLUSTER)
    info_bad = Check("b", False, "meh", "nothing", INFO)
    mig_bad = Check("c", False, "bad", "fix it", MIGRATION)
    cluster_bad = Check("d", False, "bad", "fix it", CLUSTER)
    assert doctor.cluster_possible([ok, info_bad]) and doctor.migration_possible([ok, info_bad])
    assert doctor.cluster_possible([ok, mig_bad]) and not doctor.migration_possible([ok, mig_bad])
    assert not doctor.cluster_possible([cluster_bad]) and not doctor.migration_possible([cluster_bad])
    assert "ready" in doctor.summary([ok])


def test_criu_version_parsing(tmp_path: Path) -> None:
    assert host.criu_version([str(_fake_criu(tmp_path, "Version: 4.2.1"))]) == (4, 2, 1)
    other = tmp_path / "o"
    other.mkdir()
    assert host.criu_version([str(_fake_criu(other, "Version: 3.17"))]) == (3, 17, 0)
    assert host.criu_version([str(tmp_path / "nope")]) is None
    assert host.criu_version(["false"]) is None
