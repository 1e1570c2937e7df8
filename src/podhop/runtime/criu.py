"""The CRIU boundary: page servers, lazy-pages daemons, config files, stats, traps.

Why: runc drives CRIU for dump and restore, but a migration needs CRIU
directly too — a page server on the receiving node so memory streams over the
link instead of being written to disk and copied, a lazy-pages daemon for
post-copy — plus the clean-up that CRIU's traps demand (see
``shared/notes/criu-runc-recipes.md``):

- a failed or killed dump leaves CRIU's network lock (an iptables ``CRIU``
  chain) in the pod's namespace, so the source looks alive but answers
  nothing: :func:`remove_network_lock` takes it out;
- ``runc delete`` after a failed restore can wipe the root filesystem through
  CRIU's ``criu-root`` bind mount: :func:`podhop.runtime.mounts.unmount_under` must run first;
- CRIU probes the kernel's features on every run (~40-60 ms: namespaces, veths,
  iptables) unless it finds its cache ``/run/criu.kdat``, which it only *writes*
  when ``/run`` is a tmpfs (so that it dies with the boot). ``/run`` is on disk
  here, so :func:`ensure_kdat_cache` has CRIU write it in a private mount
  namespace over a tmpfs and puts it in place, stamped with the boot's id; the
  wrapper ``podhop setup`` writes drops a cache from another boot before CRIU
  reads it (:data:`KDAT_WRAPPER_LINES`).

Processes that must run in a node's network namespace are started with
``nsenter --net`` (not ``ip netns exec``, which remounts /sys and would hide
the cgroup hierarchy runc needs).
"""

from __future__ import annotations

import os
import shlex
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podhop import sh
from podhop.errors import PodhopError

KDAT_CACHE = Path("/run/criu.kdat")
KDAT_BOOT = Path("/run/podhop-criu.kdat.boot")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
#: Shell lines for the CRIU wrapper: a kernel-feature cache from an earlier boot (another kernel,
#: perhaps) goes before CRIU can read it. ``read`` and ``[`` are shell built-ins: no cost per run.
KDAT_WRAPPER_LINES = (
    f"read -r boot 2>/dev/null < {BOOT_ID}; read -r stamp 2>/dev/null < {KDAT_BOOT}\n"
    f'[ "$boot" = "$stamp" ] || rm -f {KDAT_CACHE}\n'
)


class CriuError(PodhopError):
    """CRIU (or runc's use of it) failed; the message carries CRIU's own last error line."""


def in_netns(netns_path: Path | str, argv: list[str]) -> list[str]:
    """``argv`` run in the network namespace at ``netns_path`` (and nothing else changed)."""
    return ["nsenter", f"--net={netns_path}", "--", *argv]


def write_config(path: Path, options: list[str]) -> None:
    """A CRIU configuration file (one option per line, without dashes), read via runc's annotation."""
    path.write_text("".join(f"{opt}\n" for opt in options))


#: Errors CRIU logs on every run here and survives (no CAP_SYS_RESOURCE): never the cause.
BENIGN_ERRORS = ("Can't setup RLIMIT_NOFILE for self",)


def last_error(*logs: Path) -> str:
    """CRIU's own reason for a failure: the first ``Error (file:line): ...`` line of the logs.

    The first error is the cause; later ones are consequences ("Dumping FAILED.", cleanup noise).
    """
    for log in logs:
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if "Error (" in line and not any(b in line for b in BENIGN_ERRORS):
                return line.split("):", 1)[-1].strip()
    return ""


def pagemap_bytes(images: Path) -> int:
    """Bytes of memory the images describe (``nr_pages`` of every pagemap entry), e.g. what a
    post-copy restore pulls lazily."""
    total = 0
    for path in images.glob("pagemap-*.img"):
        if path.name.startswith("pagemap-shmem"):
            continue
        for entry in read_entries(path)[1:]:  # the first entry is the pagemap head
            # pagemap_entry: nr_pages (2, uint32) in older CRIU; CRIU 4.x writes 0 there and the
            # count in field 5 (uint64 pages)
            pages = entry.get(5) or entry.get(2)
            total += pages * 4096 if isinstance(pages, int) else 0
    return total


def dirty_tracking(criu: Path) -> bool:
    """Whether the kernel tracks dirty memory (soft-dirty), which iterative pre-copy needs."""
    return sh.ok([str(criu), "check", "--feature", "mem_dirty_track"], timeout=20)


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def kdat_cache_fresh() -> bool:
    """Whether CRIU's kernel-feature cache exists and was made during this boot."""
    try:
        return KDAT_CACHE.stat().st_size > 0 and KDAT_BOOT.read_text().strip() == _boot_id() != ""
    except OSError:
        return False


def ensure_kdat_cache(criu: Path) -> bool:
    """Give CRIU its kernel-feature cache for this boot (see the module doc); True when in place.

    Cheap when the cache is fresh (two small reads), so callers run it before each migration.
    """
    if kdat_cache_fresh():
        return True
    if os.geteuid() != 0:
        return False
    script = (
        "mount -t tmpfs -o size=1m,mode=0700 podhop-kdat /run && "
        f"{shlex.quote(str(criu))} check >/dev/null 2>&1; cat /run/criu.kdat"
    )
    try:
        out = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if out.returncode != 0 or not out.stdout:
        return False
    tmp = KDAT_CACHE.with_name(f".criu.kdat.podhop-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(out.stdout)
    os.replace(tmp, KDAT_CACHE)
    stamp = KDAT_BOOT.with_name(f".{KDAT_BOOT.name}-{os.getpid()}")
    fd = os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(_boot_id() + "\n")
    os.replace(stamp, KDAT_BOOT)
    return True


def remove_network_lock(netns_path: Path | str) -> bool:
    """Remove CRIU's network lock from a namespace (after a failed dump). True if one was found."""
    found = False
    for tool in ("iptables", "ip6tables"):
        listing = sh.run(in_netns(netns_path, [tool, "-w", "-S"]), check=False).stdout
        if "-N CRIU" not in listing:
            continue
        found = True
        for chain in ("INPUT", "OUTPUT"):
            while sh.ok(in_netns(netns_path, [tool, "-w", "-D", chain, "-j", "CRIU"])):
                pass
        sh.ok(in_netns(netns_path, [tool, "-w", "-F", "CRIU"]))
        sh.ok(in_netns(netns_path, [tool, "-w", "-X", "CRIU"]))
    return found


@dataclass(frozen=True)
class Tls:
    """One migration's TLS material for CRIU's page-server connections (``--tls``).

    CRIU's TLS is mutual: the page server requires a client certificate, both
    sides check the peer's against ``cacert`` and the address they talk to.
    A fresh CA and one certificate (valid for both nodes' addresses) per
    migration make that a per-migration secret: no other process can connect.
    """

    cacert: Path
    cert: Path
    key: Path

    def options(self) -> list[str]:
        """CRIU's command-line options."""
        return [
            "--tls",
            "--tls-cacert",
            str(self.cacert),
            "--tls-cert",
            str(self.cert),
            "--tls-key",
            str(self.key),
        ]

    def config_lines(self) -> str:
        """The same, as CRIU configuration-file lines (for runc's ``org.criu.config``)."""
        return f"tls\ntls-cacert {self.cacert}\ntls-cert {self.cert}\ntls-key {self.key}\n"


def make_tls(directory: Path, addresses: list[str]) -> Tls:
    """Write a throw-away CA and a certificate for ``addresses`` into ``directory`` (root-only)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "podhop migration CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    ips = [ipaddress.ip_address(a) for a in addresses]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, addresses[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip) for ip in ips]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    pem = serialization.Encoding.PEM
    key_bytes = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    for path, data in (
        (tls.cacert, ca.public_bytes(pem)),
        (tls.cert, leaf.public_bytes(pem)),
        (tls.key, key_bytes),
    ):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    return tls


@dataclass
class Daemon:
    """A CRIU helper process (page server or lazy-pages daemon) running in a node's namespace."""

    proc: subprocess.Popen[bytes]
    log: Path
    name: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.stop()
            raise CriuError(
                f"{self.name} did not finish within {timeout:.0f} s: {last_error(self.log)}"
            ) from exc


def page_server_argv(criu: Path, images: Path, log: Path, ps_socket: int) -> list[str]:
    """``criu page-server`` receiving pages into ``images`` from the connection it inherits as
    descriptor ``ps_socket`` (made and checked by podhop: no listening, no TLS of CRIU's own)."""
    argv = [str(criu), "page-server", "--images-dir", str(images), "--ps-socket", str(ps_socket)]
    return [*argv, "-o", str(log), "-v4"]


def lazy_pages(
    criu: Path, netns_path: Path | str, address: str, port: int, images: Path, work: Path, tls: Tls
) -> Daemon:
    """Start the target's ``criu lazy-pages`` daemon that pulls pages from the source's page server."""
    log = work / "lazy-pages.log"
    argv = [
        str(criu),
        "lazy-pages",
        "--page-server",
        "--address",
        address,
        "--port",
        str(port),
        "--images-dir",
        str(images),
        "--work-dir",
        str(work),
        "-o",
        str(log),
        "-v4",
        *tls.options(),
    ]
    proc = subprocess.Popen(in_netns(netns_path, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (work / "lazy-pages.socket").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=10)
            raise CriuError(f"lazy-pages daemon did not start: {last_error(log)}")
        time.sleep(0.005)
    return Daemon(proc, log, argv[1])


# --- stats-dump / stats-restore: CRIU's own timings, decoded from its protobuf image -------------

_DUMP_FIELDS = {
    1: "freezing_time_us",
    2: "frozen_time_us",
    3: "memdump_time_us",
    4: "memwrite_time_us",
    5: "pages_scanned",
    6: "pages_skipped_parent",
    7: "pages_written",
    8: "irmap_resolve",
    9: "pages_lazy",
    10: "page_pipes",
    11: "page_pipe_bufs",
    12: "shpages_scanned",
    13: "shpages_skipped_parent",
    14: "shpages_written",
}
_RESTORE_FIELDS = {
    1: "pages_compared",
    2: "pages_skipped_cow",
    3: "forking_time_us",
    4: "restore_time_us",
    5: "pages_restored",
}


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _fields(data: bytes) -> dict[int, int | bytes]:
    out: dict[int, int | bytes] = {}
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            out[field], i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            out[field] = data[i : i + size]
            i += size
        elif wire == 5:
            out[field] = struct.unpack_from("<I", data, i)[0]
            i += 4
        elif wire == 1:
            out[field] = struct.unpack_from("<Q", data, i)[0]
            i += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def parse_entries(data: bytes) -> list[dict[int, int | bytes]]:
    """The protobuf entries of a CRIU image (two magics, then size-prefixed messages)."""
    out, i = [], 8
    while i + 4 <= len(data):
        (size,) = struct.unpack_from("<I", data, i)
        out.append(_fields(data[i + 4 : i + 4 + size]))
        i += 4 + size
    return out


def read_entries(path: Path) -> list[dict[int, int | bytes]]:
    """The protobuf entries of a CRIU image file."""
    return parse_entries(path.read_bytes())


@dataclass(frozen=True)
class Process:
    """One task of a dumped process tree."""

    pid: int
    ppid: int
    comm: str


def process_tree_of(pstree: bytes, core: Callable[[int], bytes | None]) -> list[Process]:
    """The tree from ``pstree.img``'s bytes, each task named from its ``core-PID.img`` (``core(pid)``)."""
    tree = []
    for entry in parse_entries(pstree):
        pid, ppid = int(entry.get(1, 0)), int(entry.get(2, 0))
        comm = ""
        data = core(pid)
        if data:
            try:
                tc = parse_entries(data)[0].get(3)  # core_entry.tc: task_core_entry
                name = _fields(tc).get(6) if isinstance(tc, bytes) else None  # task_core_entry.comm
            except (ValueError, IndexError, struct.error):
                name = None
            comm = name.decode(errors="replace") if isinstance(name, bytes) else ""
        tree.append(Process(pid, ppid, comm))
    return tree


def process_tree(images: Path) -> list[Process]:
    """The process tree of an images directory."""

    def core(pid: int) -> bytes | None:
        path = images / f"core-{pid}.img"
        return path.read_bytes() if path.exists() else None

    return process_tree_of((images / "pstree.img").read_bytes(), core)


def external_mounts(images: Path) -> list[str]:
    """The external mounts a restore of ``images`` must be given (``mnt_entry.ext_key`` of every
    ``mountpoints-*.img``), in order, each once: binds of files and directories from outside the
    container (``/etc/hosts``, ``/dev/shm``, cgroup v1 controllers, ``/dev/null`` for masked paths)."""
    keys: dict[str, None] = {}
    for path in sorted(images.glob("mountpoints-*.img")):
        for entry in read_entries(path):
            key = entry.get(18)
            if isinstance(key, bytes):
                keys[key.decode(errors="replace")] = None
    return list(keys)


def root_mode(images: Path) -> int | None:
    """The permission bits CRIU recorded for the container's ``/`` (a task's root or cwd in
    ``files.img``): a restore refuses a root of another mode (Podman's roots are 0555)."""
    path = images / "files.img"
    if not path.exists():
        return None
    for entry in read_entries(path):
        reg = entry.get(3)  # file_entry.reg: reg_file_entry
        if isinstance(reg, bytes):
            fields = _fields(reg)
            mode = fields.get(10)  # reg_file_entry.mode
            if fields.get(6) == b"/" and isinstance(mode, int):  # reg_file_entry.name
                return mode & 0o7777
    return None


def parse_stats(data: bytes) -> dict[str, int]:
    """Decode CRIU's ``stats-dump`` or ``stats-restore`` (two magics, a size, a ``StatsEntry``)."""
    if len(data) < 12:
        return {}
    try:
        (size,) = struct.unpack_from("<I", data, 8)
        entry = _fields(data[12 : 12 + size])
        out: dict[str, int] = {}
        for field, names in ((1, _DUMP_FIELDS), (2, _RESTORE_FIELDS)):
            sub = entry.get(field)
            if isinstance(sub, bytes):
                out.update(
                    {names[k]: v for k, v in _fields(sub).items() if k in names and isinstance(v, int)}
                )
    except (ValueError, IndexError, struct.error):
        return {}
    return out


def read_stats(path: Path) -> dict[str, int]:
    """CRIU's statistics file at ``path`` (empty when missing or unreadable)."""
    try:
        return parse_stats(path.read_bytes())
    except OSError:
        return {}


def dir_bytes(path: Path) -> int:
    """Total size of the regular files under ``path``."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += (Path(root) / f).lstat().st_size
            except OSError:
                continue
    return total
