"""One exception hierarchy for everything podhop raises on purpose.

Why: the CLI must turn any failure into one clear line (what failed, why, and
where possible how to fix it) and a non-zero exit, while library users want to
catch podhop's failures without catching programming errors. Every error here
derives from :class:`PodhopError`; wrappers around external tools chain the
original cause (``raise ... from exc``) so that ``--debug`` can show it.
"""

from __future__ import annotations


class PodhopError(Exception):
    """Base of every error podhop raises on purpose."""

    #: A short hint telling the user how to fix the problem, when we know one.
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ManifestError(PodhopError):
    """A manifest or spec file is invalid; the message names the document and field."""


class SchedulingError(PodhopError):
    """No node can take a pod (capacity, nodeSelector)."""


class NotFoundError(PodhopError):
    """A named cluster, node, pod, service or image does not exist."""


class AlreadyExistsError(PodhopError):
    """Something with that name already exists."""


class ImageError(NotFoundError):
    """An image is not available locally."""


class CommandError(PodhopError):
    """An external tool (runc, ip, iptables, tc, criu, ...) failed."""

    def __init__(self, argv: list[str], returncode: int, stderr: str, *, hint: str | None = None) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr.strip()
        tail = self.stderr.splitlines()[-3:] if self.stderr else []
        detail = ("; ".join(tail)) if tail else f"exit status {returncode}"
        super().__init__(f"`{' '.join(argv[:3])}…` failed: {detail}", hint=hint)


class RuntimeFailure(PodhopError):
    """A container could not be created, started, stopped or inspected."""


class ClusterError(PodhopError):
    """A cluster-level operation (create, delete, network setup) failed."""


class PreflightError(PodhopError):
    """The machine lacks something podhop needs (root, a tool, a kernel feature)."""


class SetupError(PodhopError):
    """Installing prerequisites or building images failed."""
