"""``podhop setup``: make this Debian machine able to run clusters and migrate pods.

Why: the local backend needs a handful of Debian packages, two sysctls, a
CRIU that works on this kernel, and base images. Debian 12's CRIU (3.17)
fails on recent kernels (vDSO) and Debian 13's (4.1.1) cannot dump TCP
sockets on kernels >= 6.16; CRIU 4.2 works but only Debian unstable ships
it. Adding unstable to the host's apt sources would drag the whole system
towards it, so podhop debootstraps a private minimal sid root holding CRIU
and runs that binary through the root's own dynamic loader (a wrapper script
runc is pointed at with ``runc --criu``). Host tools CRIU calls
(``iptables-restore``) still come from the host, with the host's libraries.

Every step is idempotent and reports progress through a callback, so a second
``podhop setup`` takes about a second, and an interrupted one never leaves a
half-built root that looks finished (build in a temporary directory, rename).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import platform
import re
import shlex
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from podhop import locks, sh
from podhop.errors import CommandError, PodhopError, PreflightError, SetupError
from podhop.runtime.criu import KDAT_CACHE, KDAT_WRAPPER_LINES, ensure_kdat_cache
from podhop.runtime.images import DEFAULT_MIRROR, clean_apt_caches, debian_mirror, debootstrap, remove_tree
from podhop.settings import paths

__all__ = [
    "APT_PACKAGES",
    "CRIU_MIN_VERSION",
    "DEFAULT_MIRROR",
    "PIPE_MAX_SIZE",
    "Report",
    "criu_check",
    "criu_path",
    "criu_version",
    "debian_mirror",
    "ensure_criu",
    "ensure_packages",
    "ensure_sysctls",
    "setup_all",
    "system_criu_ok",
]

Report = Callable[[str], None]

#: Debian packages the local backend uses (CRIU comes separately: see module doc).
APT_PACKAGES: tuple[str, ...] = (
    "runc",  # the OCI runtime (crun refuses the cgroup v1 hybrid layout)
    "iptables",  # service NAT, and CRIU's network lock
    "iproute2",  # ip (netns, veth, bridge), tc (link shaping)
    "hey",  # HTTP load generator for experiments
    "debootstrap",  # builds the base images and CRIU's private root
    "debian-archive-keyring",  # lets debootstrap verify the archive
    "ca-certificates",
    "procps",  # ps, sysctl, pkill
    "util-linux",  # nsenter, unshare
    "mount",  # mount, umount (overlays)
    "kmod",  # modprobe (overlay, br_netfilter)
    "tar",  # image layers
    "curl",  # health probes
    "skopeo",  # moves OCI images (podhop's layouts to registries and container storage)
    "podman",  # the peer podhop's checkpoint archives interoperate with (tests, baseline benchmark)
    "zstd",  # Podman's archives are zstd-compressed
    "conntrack",  # the Kubernetes kind's LB controller drops connections pinned before kube-proxy's rules
)

CRIU_MIN_VERSION = (4, 2, 0)
#: CRIU's page server grows pipes to this size; without CAP_SYS_RESOURCE the
#: sysctl is the ceiling, so it must be at least this (64 MiB).
PIPE_MAX_SIZE = 67108864
#: Sysctls raised to at least these. Each Kubernetes-kind node's kubelet and containerd hold
#: inotify instances of their own (Debian's default 128 per user runs out at a few clusters:
#: "too many open files" from fsnotify and a kubelet that never starts).
SYSCTL_MINIMUMS = {
    "fs.pipe-max-size": PIPE_MAX_SIZE,
    "fs.inotify.max_user_instances": 8192,
    "fs.inotify.max_user_watches": 524288,
}
CRIU_SUITE = "sid"  # Debian unstable: the only suite shipping CRIU >= 4.2 (as of 2025)

_SYSCTL_ROOT = Path("/proc/sys")

# --------------------------------------------------------------------------- packages


def missing_packages(packages: tuple[str, ...] = APT_PACKAGES) -> list[str]:
    """The packages of ``packages`` that dpkg does not report as installed."""
    try:
        proc = sh.run(["dpkg-query", "-W", "-f=${Package} ${Status}\\n", *packages], check=False, timeout=30)
    except PreflightError as exc:
        raise SetupError("dpkg-query is missing: `podhop setup` supports Debian hosts only") from exc
    installed: set[str] = set()
    for line in proc.stdout.splitlines():
        name, _, status = line.partition(" ")
        if status.strip() == "install ok installed":
            installed.add(name.split(":", 1)[0])
    return [p for p in packages if p not in installed]


def ensure_packages(report: Report, packages: tuple[str, ...] = APT_PACKAGES) -> None:
    """Install the missing ``packages`` (``apt-get update`` only when something is missing)."""
    missing = missing_packages(packages)
    if not missing:
        report(f"packages: all {len(packages)} present")
        return
    if os.geteuid() != 0:
        raise SetupError(f"installing {', '.join(missing)} needs root", hint="run `sudo podhop setup`")
    env = ["env", "DEBIAN_FRONTEND=noninteractive"]
    report(f"packages: installing {', '.join(missing)}; apt-get update…")
    sh.run([*env, "apt-get", "update", "-q"], timeout=900, hint="check the apt sources and the network")
    report(f"packages: apt-get install {' '.join(missing)}…")
    sh.run(
        [*env, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        timeout=1800,
        hint="check the apt sources and the network",
    )
    still = missing_packages(packages)
    if still:
        raise SetupError(f"apt-get did not install {', '.join(still)}")
    report(f"packages: installed {', '.join(missing)}")


# --------------------------------------------------------------------------- sysctls


def read_sysctl(name: str) -> str:
    """The value of sysctl ``name`` (dotted), read from /proc/sys."""
    return (_SYSCTL_ROOT / name.replace(".", "/")).read_text().strip()


def _write_sysctl(name: str, value: str) -> None:
    try:
        (_SYSCTL_ROOT / name.replace(".", "/")).write_text(value + "\n")
    except OSError as exc:
        raise SetupError(
            f"cannot set {name}={value}: {exc.strerror or exc}", hint=f"run as root: sysctl -w {name}={value}"
        ) from exc


def ensure_sysctls(report: Report) -> None:
    """Raise the :data:`SYSCTL_MINIMUMS` (never lower one) and enable ``net.ipv4.ip_forward``."""
    for name, minimum in SYSCTL_MINIMUMS.items():
        value = int(read_sysctl(name))
        if value < minimum:
            _write_sysctl(name, str(minimum))
            report(f"sysctl: {name} {value} -> {minimum}")
        else:
            report(f"sysctl: {name} = {value}")
    if read_sysctl("net.ipv4.ip_forward") != "1":
        _write_sysctl("net.ipv4.ip_forward", "1")
        report("sysctl: net.ipv4.ip_forward 0 -> 1")
    else:
        report("sysctl: net.ipv4.ip_forward = 1")


# --------------------------------------------------------------------------- CRIU


def criu_version(binary: list[str]) -> tuple[int, int, int] | None:
    """``(major, minor, patch)`` from ``binary --version``; None when it fails or prints no version."""
    try:
        proc = sh.run([*binary, "--version"], check=False, timeout=10)
    except (PreflightError, CommandError, OSError):
        return None
    if proc.returncode != 0:
        return None
    match = re.search(r"Version:\s*(\d+)\.(\d+)(?:\.(\d+))?", proc.stdout + proc.stderr)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def criu_check(binary: list[str]) -> tuple[bool, str]:
    """Run ``binary check``: (passed, first failing line or the last line of its output)."""
    try:
        proc = sh.run([*binary, "check"], check=False, timeout=20)
    except (PreflightError, CommandError, OSError) as exc:
        return False, str(exc)
    lines = [ln.strip() for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip()]
    if proc.returncode == 0:
        return True, lines[-1] if lines else "Looks good."
    failing = next((ln for ln in lines if ln.startswith("Error")), None)
    return False, failing or (lines[-1] if lines else f"exit status {proc.returncode}")


def _version_text(version: tuple[int, int, int] | None) -> str:
    return "unknown" if version is None else ".".join(map(str, version))


def _system_criu_status() -> tuple[bool, str]:
    system = sh.which("criu")
    if system is None:
        return False, "no system criu"
    version = criu_version([system])
    if version is None or version < CRIU_MIN_VERSION:
        return False, f"system criu {_version_text(version)} is older than 4.2"
    passed, line = criu_check([system])
    if not passed:
        return False, f"system criu {_version_text(version)}: `criu check` fails: {line}"
    return True, f"system criu {_version_text(version)} ({system})"


def system_criu_ok() -> bool:
    """True when the system's ``criu`` exists, is >= 4.2 and ``criu check`` passes."""
    return _system_criu_status()[0]


def _loader_and_libdirs(root: Path) -> tuple[Path, list[Path]]:
    machine = platform.machine()
    table = {
        "x86_64": ("lib64/ld-linux-x86-64.so.2", "x86_64-linux-gnu"),
        "aarch64": ("lib/ld-linux-aarch64.so.1", "aarch64-linux-gnu"),
    }
    if machine not in table:
        raise SetupError(f"podhop's private CRIU supports x86_64 and aarch64, not {machine}")
    loader, triplet = table[machine]
    return root / loader, [root / "lib" / triplet, root / "usr" / "lib" / triplet]


def private_criu_argv(root: Path) -> list[str]:
    """The command line that runs the CRIU of the private root ``root`` with its own libraries."""
    loader, libdirs = _loader_and_libdirs(root)
    return [str(loader), "--library-path", ":".join(map(str, libdirs)), str(root / "usr" / "sbin" / "criu")]


def _private_criu_version(root: Path) -> tuple[int, int, int] | None:
    loader, _ = _loader_and_libdirs(root)
    if not loader.exists() or not (root / "usr" / "sbin" / "criu").exists():
        return None
    return criu_version(private_criu_argv(root))


def _build_private_criu(report: Report) -> None:
    """Debootstrap sid + criu next to ``criu_root`` and rename it into place once it works."""
    final = paths().criu_root
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{final.name}.*"):  # leftovers of interrupted runs (we hold the lock)
        report(f"criu: removing leftover {stale}")
        remove_tree(stale)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
    try:
        tmp.chmod(0o755)
        debootstrap(CRIU_SUITE, tmp, ["criu"], report)
        clean_apt_caches(tmp)
        version = _private_criu_version(tmp)
        if version is None or version < CRIU_MIN_VERSION:
            raise SetupError(
                f"Debian {CRIU_SUITE} gave CRIU {_version_text(version)}, podhop needs >= 4.2",
                hint="install CRIU >= 4.2 as the system criu; `podhop setup` then uses it",
            )
        report(f"criu: private root holds CRIU {_version_text(version)}")
        old: Path | None = None
        if final.exists() or final.is_symlink():
            old = parent / f".{final.name}.old-{os.getpid()}"
            os.rename(final, old)
        os.rename(tmp, final)
        if old is not None:
            remove_tree(old)
    except BaseException:
        with contextlib.suppress(PodhopError, OSError):
            remove_tree(tmp)
        raise


def _wrapper_script(argv: list[str], comment: str) -> str:
    return (
        "#!/bin/sh\n"
        f"# Written by `podhop setup`: {comment}\n"
        "# CRIU's kernel-feature cache is kept for one boot only (podhop.runtime.criu).\n"
        f"{KDAT_WRAPPER_LINES}"
        f'exec {" ".join(shlex.quote(a) for a in argv)} "$@"\n'
    )


def _write_wrapper(path: Path, script: str) -> bool:
    """Write the wrapper when its content differs; True when it was (re)written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.read_text() == script and os.access(path, os.X_OK):
            return False
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(script)
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return True


def ensure_criu(report: Report) -> Path:
    """Provide a working CRIU >= 4.2 behind the wrapper ``paths().criu_wrapper``; returns the wrapper.

    Uses the system ``criu`` when it is good enough; otherwise debootstraps
    Debian sid with ``criu`` into ``paths().criu_root`` (once). Verifies the
    wrapper with ``--version`` and ``check``.
    """
    p = paths()
    with locks.hold(p.data_dir / ".criu.lock", "CRIU's private root"):
        system_ok, why = _system_criu_status()
        if system_ok:
            system = sh.which("criu")
            assert system is not None
            script = _wrapper_script([system], "the system CRIU is >= 4.2")
            report(f"criu: using the {why}")
        else:
            report(f"criu: {why}; using a private CRIU from Debian {CRIU_SUITE}")
            version = _private_criu_version(p.criu_root)
            if version is None or version < CRIU_MIN_VERSION:
                _build_private_criu(report)
            else:
                report(f"criu: private root at {p.criu_root} holds CRIU {_version_text(version)}")
            script = _wrapper_script(
                private_criu_argv(p.criu_root), f"CRIU from Debian {CRIU_SUITE} in {p.criu_root}, own loader"
            )
        wrapper = p.criu_wrapper
        if _write_wrapper(wrapper, script):
            report(f"criu: wrote {wrapper}")
        version = criu_version([str(wrapper)])
        if version is None or version < CRIU_MIN_VERSION:
            raise SetupError(f"{wrapper} runs CRIU {_version_text(version)}, podhop needs >= 4.2")
        passed, line = criu_check([str(wrapper)])
        if not passed:
            raise SetupError(
                f"`criu check` fails with CRIU {_version_text(version)}: {line}",
                hint="this kernel lacks a feature CRIU needs; see `podhop doctor`",
            )
        report(f"criu: {wrapper} runs CRIU {_version_text(version)}; criu check: {line}")
        if ensure_kdat_cache(wrapper):
            report(f"criu: kernel-feature cache in {KDAT_CACHE} (this boot)")
        else:
            report("criu: could not make the kernel-feature cache (every CRIU run probes the kernel)")
        return wrapper


def criu_path() -> Path | None:
    """The CRIU wrapper when setup has written it (executable); never installs anything."""
    wrapper = paths().criu_wrapper
    return wrapper if wrapper.is_file() and os.access(wrapper, os.X_OK) else None


# --------------------------------------------------------------------------- everything


def setup_all(report: Report, *, images: bool = True, kubernetes: bool = True) -> None:
    """Packages, sysctls, CRIU, (when ``images``) the base images and (when ``kubernetes``)
    the Kubernetes kind's components. Idempotent.

    The two debootstraps (CRIU's root, the image root) are independent and
    run in parallel, so a first run takes about one debootstrap's time; the
    Go builds of the Kubernetes kind (CPU-bound, cached by version) run next to them.
    """
    from podhop.runtime import images as image_store

    lock = threading.Lock()

    def say(message: str) -> None:
        with lock:
            report(message)

    ensure_packages(say)
    ensure_sysctls(say)
    with concurrent.futures.ThreadPoolExecutor(max_workers=3, thread_name_prefix="podhop-setup") as pool:
        jobs: list[concurrent.futures.Future[object]] = [pool.submit(ensure_criu, say)]
        if images:
            jobs.append(pool.submit(image_store.ensure_base_images, say))
        if kubernetes:
            from podhop.kubekind.setup import ensure_kubernetes

            jobs.append(pool.submit(ensure_kubernetes, say))
        # The pool's exit waits for all, so none is left running half-way when one fails.
    for job in jobs:
        job.result()
