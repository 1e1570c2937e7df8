"""Building the cluster's components from pinned Go modules, cached by version.

Why: nothing but package registries can be reached here, so Kubernetes,
containerd, etcd and metrics-server are built from their Go modules through the
Go module proxy. ``k8s.io/kubernetes`` cannot be ``go install``ed (its go.mod
replaces every ``k8s.io/<staging>`` module with a local path), so podhop ships a
small wrapper module per component (``gomod/<name>/go.mod`` + ``go.sum``) that
requires the upstream module, pins each staging module to ``v0.X.Y`` with
``replace`` lines, and lists the commands as ``tool`` directives. The pins are the
whole definition of a version: the wrapper's go.sum makes builds reproducible.

Binaries land in ``<data>/k8s/bin/<name>-<version>/`` (``PODHOP_HOME`` moves
``<data>``), built into a temporary directory and renamed into place with a
stamp file, so an interrupted build never looks finished and a second setup
only checks the stamps. Builds run under ``nice -n 19`` (this machine's two
cores are shared) with ``-trimpath -ldflags "-s -w"`` and the version variables
that ``kubectl version`` and ``containerd --version`` print.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from podhop.errors import SetupError
from podhop.settings import paths

Report = Callable[[str], None]
GOMOD_DIR = Path(__file__).parent / "gomod"
BUILD_TIMEOUT_S = 3 * 3600

KUBERNETES_VERSION = "v1.37.2"
CONTAINERD_VERSION = "v2.3.7"
ETCD_VERSION = "v3.6.16"
METRICS_SERVER_VERSION = "v0.8.0"
PAUSE_VERSION = "3.10"
AGENT_VERSION = "0.1"  # bump by hand for a release; the source hash below changes with every edit


def source_hash(name: str) -> str:
    """A short hash of a wrapper module's files: a changed source is a new version, built anew."""
    h = hashlib.sha256()
    for f in sorted((GOMOD_DIR / name).iterdir()):
        if f.is_file() and (f.suffix == ".go" or f.name in ("go.mod", "go.sum")):
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:10]


@dataclass(frozen=True)
class Component:
    """One wrapper module and the commands built from it."""

    name: str
    version: str
    packages: tuple[str, ...]
    ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    outputs: dict[str, str] = field(default_factory=dict)  # package -> binary name when not the last element

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def binaries(self) -> tuple[str, ...]:
        return tuple(self.outputs.get(p, p.rstrip("/").split("/")[-1]) for p in self.packages)


def _k8s_ldflags(version: str) -> tuple[str, ...]:
    major, minor = version.lstrip("v").split(".")[:2]
    out = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        out += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return tuple(out)


KUBERNETES = Component(
    "kubernetes",
    KUBERNETES_VERSION,
    tuple(
        f"k8s.io/kubernetes/cmd/{c}"
        for c in (
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
            "kubectl",
        )
    ),
    _k8s_ldflags(KUBERNETES_VERSION),
)
CONTAINERD = Component(
    "containerd",
    CONTAINERD_VERSION,
    tuple(
        f"github.com/containerd/containerd/v2/cmd/{c}"
        for c in ("containerd", "containerd-shim-runc-v2", "ctr")
    ),
    (
        f"-X github.com/containerd/containerd/v2/version.Version={CONTAINERD_VERSION}",
        "-X github.com/containerd/containerd/v2/version.Revision=podhop",
    ),
    tags=("no_btrfs", "no_devmapper", "no_zfs"),
)
ETCD = Component(
    "etcd", ETCD_VERSION, ("go.etcd.io/etcd/server/v3",), outputs={"go.etcd.io/etcd/server/v3": "etcd"}
)
METRICS_SERVER = Component(
    "metrics-server",
    METRICS_SERVER_VERSION,
    ("sigs.k8s.io/metrics-server/cmd/metrics-server",),
    (f"-X k8s.io/client-go/pkg/version.gitVersion={METRICS_SERVER_VERSION}",),
)
PAUSE = Component(
    "pause", PAUSE_VERSION, ("podhop.dev/kubekind/pause",), outputs={"podhop.dev/kubekind/pause": "pause"}
)

#: podhop's node agent (``gomod/agent``): the DaemonSet's binary, see ``backends/kubernetes/install.py``.
AGENT = Component(
    "agent",
    f"{AGENT_VERSION}-{source_hash('agent')}",
    ("podhop.dev/kubekind/agent",),
    outputs={"podhop.dev/kubekind/agent": "podhop-agent"},
)

COMPONENTS: tuple[Component, ...] = (PAUSE, AGENT, ETCD, CONTAINERD, METRICS_SERVER, KUBERNETES)


def bin_root() -> Path:
    return paths().data_dir / "k8s" / "bin"


def component_dir(c: Component) -> Path:
    return bin_root() / c.key


def _stamp(c: Component) -> Path:
    return component_dir(c) / ".built.json"


def is_built(c: Component) -> bool:
    d = component_dir(c)
    return _stamp(c).is_file() and all(os.access(d / b, os.X_OK) for b in c.binaries)


def binary(name: str) -> Path:
    """Path of a built binary (``kubelet``, ``containerd``, ``etcd``, ...)."""
    for c in COMPONENTS:
        if name in c.binaries:
            return component_dir(c) / name
    raise KeyError(name)


def build_info(c: Component) -> dict[str, object] | None:
    try:
        info = json.loads(_stamp(c).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def go_argv(c: Component, out_dir: Path) -> list[str]:
    """The ``go build`` command line for ``c`` (pure)."""
    argv = [
        "nice",
        "-n",
        "19",
        "go",
        "build",
        "-v",
        "-trimpath",
        "-ldflags",
        " ".join(("-s", "-w", *c.ldflags)),
    ]
    if c.tags:
        argv += ["-tags", " ".join(c.tags)]
    if len(c.packages) == 1:
        return [*argv, "-o", str(out_dir / c.binaries[0]), c.packages[0]]
    return [*argv, "-o", str(out_dir) + "/", *c.packages]


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod -buildvcs=false"})
    return env


def build(c: Component, report: Report) -> float:
    """Build ``c`` unless cached; return the seconds spent (0.0 when cached)."""
    if is_built(c):
        return 0.0
    if shutil.which("go") is None:
        raise SetupError(
            "the Go toolchain is missing", hint="install Go >= 1.26 (it builds the Kubernetes components)"
        )
    root = bin_root()
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".build-{c.key}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{c.key}-", dir=root))
    out = work / "out"
    out.mkdir()
    src = work / "src"
    shutil.copytree(GOMOD_DIR / c.name, src)
    start = time.monotonic()
    report(f"{c.key}: building {', '.join(c.binaries)} (go build, nice 19)…")
    log = work / "build.log"
    proc: subprocess.Popen[str] | None = None
    try:
        with log.open("w") as fh:
            proc = subprocess.Popen(
                go_argv(c, out), cwd=src, env=go_env(), stdout=fh, stderr=subprocess.PIPE, text=True
            )
            assert proc.stderr is not None
            last = time.monotonic()
            for count, line in enumerate(proc.stderr, 1):
                fh.write(line)
                if time.monotonic() - last > 5:
                    last = time.monotonic()
                    report(f"{c.key}: {count} packages compiled, {last - start:.0f} s")
            rc = proc.wait(timeout=BUILD_TIMEOUT_S)
        if rc != 0:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
            raise SetupError(f"building {c.key} failed (exit {rc}): {tail}", hint=f"full log: {log}")
        seconds = time.monotonic() - start
        (out / ".built.json").write_text(
            json.dumps(
                {
                    "component": c.name,
                    "version": c.version,
                    "seconds": round(seconds, 1),
                    "built": time.time(),
                }
            )
        )
        final = component_dir(c)
        if final.exists():
            shutil.rmtree(final)
        os.rename(out, final)
        shutil.rmtree(work, ignore_errors=True)
        if c.name == AGENT.name:  # versioned by source hash: each edit would leave a build behind
            _prune_agent_builds(root, c.key)
        report(f"{c.key}: built in {seconds:.0f} s")
        return seconds
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        # Keep the log of a failed build (the hint names it); the partial output goes.
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)
        raise


#: An agent build of another version is removed only once it is this old: another checkout of podhop
#: on the machine (a second work tree, a CI run) may be using it right now.
AGENT_BUILD_KEEP_S = 2 * 86400


def _prune_agent_builds(root: Path, keep: str, now: float | None = None) -> list[str]:
    """Remove agent builds other than ``keep`` not built in the last :data:`AGENT_BUILD_KEEP_S`."""
    now = time.time() if now is None else now
    removed = []
    for old in root.glob(f"{AGENT.name}-*"):
        if not old.is_dir() or old.name == keep:
            continue
        try:
            built = float(json.loads((old / ".built.json").read_text())["built"])
        except (OSError, ValueError, KeyError, TypeError):
            built = old.stat().st_mtime
        if now - built > AGENT_BUILD_KEEP_S:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old.name)
    return removed


def ensure_all(report: Report) -> dict[str, float]:
    """Build every component that is not cached; seconds per component (0.0 = cached)."""
    times = {}
    for c in COMPONENTS:
        times[c.key] = build(c, report)
        if times[c.key] == 0.0:
            report(f"{c.key}: cached in {component_dir(c)}")
    return times
