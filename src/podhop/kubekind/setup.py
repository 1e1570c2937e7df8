"""``podhop setup`` for the Kubernetes kind (Debian tools, Go builds, ``kubectl`` on PATH) and its checks.

Why: ``make test`` on a fresh clone must install everything itself, and a
second setup must be instant. The Debian part is four packages (CNI plugins,
the registry, skopeo, buildah); the rest is :mod:`components` (cached by
version). ``/usr/bin/kubectl`` on these machines is a cloud-sdk dispatcher, so
setup links the kubectl it built as ``/usr/local/bin/kubectl`` (first on PATH)
— but only when that path is free or already one of podhop's links.

The checks (:func:`checks`) are plain tuples so that :mod:`podhop.doctor` can
wrap them without an import cycle; each is read-only and fast.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from podhop import sh
from podhop.kubekind import components, config

Report = Callable[[str], None]
KUBE_PACKAGES: tuple[str, ...] = (
    "containernetworking-plugins",  # bridge, host-local, loopback, portmap in /usr/lib/cni
    "docker-registry",  # the cluster's registry (2.8)
    "skopeo",  # pushes OCI layouts (base images, checkpoint images)
    "buildah",  # for building checkpoint images by hand
    "util-linux",  # nsenter
)
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
KUBECTL_LINK = Path("/usr/local/bin/kubectl")


def link_kubectl(report: Report, link: Path = KUBECTL_LINK) -> None:
    """Point ``link`` at podhop's kubectl unless something else already lives there."""
    target = components.binary("kubectl")
    if link.is_symlink():
        current = Path(os.readlink(link))
        if current == target:
            report(f"kubectl: {link} -> {target}")
            return
        if components.bin_root() not in current.parents:
            report(f"kubectl: {link} points elsewhere ({current}); left alone")
            return
    elif link.exists():
        report(f"kubectl: {link} exists and is not podhop's; left alone")
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.podhop-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)
    report(f"kubectl: linked {link} -> {target}")


def ensure_kubernetes(report: Report) -> dict[str, float]:
    """Packages, the component builds (once per version) and the kubectl link; build seconds per component."""
    from podhop.setup.host import ensure_packages

    ensure_packages(report, KUBE_PACKAGES)
    times = components.ensure_all(report)
    link_kubectl(report)
    return times


# --------------------------------------------------------------------------- doctor


def checks() -> list[tuple[str, bool, str, str | None]]:
    """(name, ok, detail, fix) for everything the Kubernetes kind needs."""
    fix = "run `podhop setup` (builds the Kubernetes components once)"
    out: list[tuple[str, bool, str, str | None]] = []
    for c in components.COMPONENTS:
        built = components.is_built(c)
        info = components.build_info(c) or {}
        secs = info.get("seconds")
        detail = f"{c.key} in {components.component_dir(c)}" + (f" (built in {secs} s)" if secs else "")
        if not built:
            detail = f"{c.key} not built"
        out.append((f"k8s {c.name}", built, detail, None if built else fix))
    kubectl = sh.which("kubectl")
    want = components.KUBERNETES.version
    version = _kubectl_version(kubectl) if kubectl else None
    out.append(
        (
            "k8s kubectl on PATH",
            version == want,
            f"{kubectl}: {version or 'not a real kubectl'}" if kubectl else "no kubectl on PATH",
            None if version == want else f"{fix}; it links {KUBECTL_LINK}",
        )
    )
    text = config.containerd_config_sample()
    restore = "enable_experimental_restore_via_create = true" in text
    cd = components.binary("containerd")
    cd_version = ""
    if cd.exists():
        cd_version = _first_line(sh.run([str(cd), "--version"], check=False, timeout=5).stdout)
    ok_version = bool(re.search(r" v2\.[123]\.", cd_version))
    flag = f"enable_experimental_restore_via_create = {str(restore).lower()}"
    out.append(
        (
            "k8s restore in containerd",
            restore and ok_version,
            f"{cd_version or 'containerd not built'}; {flag}",
            None if restore and ok_version else "containerd 2.1-2.3 restores in CreateContainer (not 2.4)",
        )
    )
    criu = components_criu()
    out.append(
        (
            "k8s CRIU for containerd",
            criu is not None,
            f"`criu` = {criu}, first on containerd's PATH" if criu else "no CRIU wrapper",
            None if criu else "run `podhop setup` (installs CRIU >= 4.2)",
        )
    )
    missing = [p for p in CNI_PLUGINS if not (Path(config.CNI_BIN_DIR) / p).exists()]
    tools = [t for t in ("docker-registry", "skopeo", "nsenter") if sh.which(t) is None]
    out.append(
        (
            "k8s CNI, registry, skopeo",
            not missing and not tools,
            "present" if not missing and not tools else "missing: " + ", ".join(missing + tools),
            None if not missing and not tools else "run `podhop setup`",
        )
    )
    return out


def components_criu() -> Path | None:
    from podhop.settings import paths

    wrapper = paths().criu_wrapper
    return wrapper if wrapper.name == "criu" and os.access(wrapper, os.X_OK) else None


def _kubectl_version(kubectl: str) -> str | None:
    proc = sh.run([kubectl, "version", "--client", "-o", "json"], check=False, timeout=5)
    match = re.search(r'"gitVersion":\s*"([^"]+)"', proc.stdout)
    return match.group(1) if match else None


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
