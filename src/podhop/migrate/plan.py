"""Migration plans: what will happen, as a value — no I/O.

Why: the same plan must be executable by a backend and costable by the
simulator (lightkube's "build the request, then send it"). A plan names the
pod, the source and target nodes and the strategy, and lists the phases the
engine will run, in order. Planning refuses what cannot work *before*
anything is touched: migrating to the node the pod is on, a target without
room for the pod's requests, or pre-copy on a kernel without dirty-memory
tracking (without soft-dirty, every pre-dump copies everything again, so
iterative pre-copy cannot converge: we say so rather than pretend).

Strategies:

``cold``      stop-and-copy: freeze (cgroup freezer), dump with memory streamed to a
              page server on the target, transfer the rest, restore, switch the
              service's endpoints, remove the source. State preserved exactly.
``clone``     make-before-break (the seed's way): dump with the source left running,
              restore on the target, add it to the service, drain and remove the
              source. For stateless pods.
``postcopy``  lazy pages: dump everything but memory, restore at once on the target,
              memory pulled on demand from a page server on the source (userfaultfd)
              and pushed in the background, so the freeze does not grow with memory.
``precopy``   iterative pre-dumps of dirty memory, then a short final dump; needs
              soft-dirty tracking in the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from podhop.errors import PodhopError


class Strategy(StrEnum):
    COLD = "cold"
    CLONE = "clone"
    POSTCOPY = "postcopy"
    PRECOPY = "precopy"


#: The phases every report times (milliseconds), in order.
REPORTED_PHASES = ("freeze", "dump", "transfer", "restore", "switch")

PHASES: dict[Strategy, tuple[str, ...]] = {
    Strategy.COLD: ("prepare", "freeze", "dump", "transfer", "restore", "switch", "cleanup"),
    Strategy.CLONE: ("prepare", "dump", "transfer", "restore", "switch", "drain", "cleanup"),
    Strategy.POSTCOPY: ("prepare", "dump", "transfer", "switch", "restore", "pull", "cleanup"),
    Strategy.PRECOPY: ("prepare", "predump", "freeze", "dump", "transfer", "restore", "switch", "cleanup"),
}


class MigrationError(PodhopError):
    """A migration was refused or failed; ``phase`` names where."""

    def __init__(self, phase: str, message: str, *, hint: str | None = None) -> None:
        self.phase = phase
        super().__init__(f"migration failed in phase {phase!r}: {message}", hint=hint)


@dataclass(frozen=True)
class MigrationPlan:
    """One pod's move. ``state_bytes`` and ``link_bps`` let a cost model predict it."""

    namespace: str
    pod: str
    source: str
    target: str
    strategy: Strategy
    phases: tuple[str, ...]
    state_bytes: int = 0
    link_bps: int | None = None


def plan_migration(
    namespace: str,
    pod: str,
    source: str,
    target: str,
    strategy: str | Strategy,
    *,
    target_fits: bool = True,
    dirty_tracking: bool = False,
    state_bytes: int = 0,
    link_bps: int | None = None,
) -> MigrationPlan:
    """Validate and build the plan; raise :class:`MigrationError` (phase ``plan``) when it cannot work."""
    try:
        strat = Strategy(strategy)
    except ValueError as exc:
        valid = ", ".join(s.value for s in Strategy)
        raise MigrationError("plan", f"unknown strategy {strategy!r} (strategies: {valid})") from exc
    if source == target:
        raise MigrationError("plan", f"pod {pod} already runs on {target}")
    if not target_fits:
        raise MigrationError(
            "plan",
            f"node {target} has no room for pod {pod}'s requests",
            hint="pick another node (podhop top nodes) or free capacity",
        )
    if strat is Strategy.PRECOPY and not dirty_tracking:
        raise MigrationError(
            "plan",
            "pre-copy needs the kernel to track dirty memory (soft-dirty), and this kernel does not "
            "(`criu check --feature mem_dirty_track` fails): every pre-dump would copy all memory again",
            hint="use --strategy postcopy to keep the freeze short for large memory, or cold",
        )
    if strat is Strategy.PRECOPY:
        raise MigrationError(
            "plan",
            "this kernel tracks dirty memory, but iterative pre-copy is not implemented in podhop yet",
            hint="use --strategy postcopy or cold",
        )
    return MigrationPlan(namespace, pod, source, target, strat, PHASES[strat], state_bytes, link_bps)
