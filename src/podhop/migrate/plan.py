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

``cold``      stop-and-copy: freeze (cgroup freezer), dump (much memory streams to a page
              server on the target meanwhile; a little goes with the rest), transfer,
              restore, switch the service's endpoints, remove the source. State
              preserved exactly.
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

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from podhop.errors import PodhopError


class Strategy(StrEnum):
    COLD = "cold"
    CLONE = "clone"
    POSTCOPY = "postcopy"
    PRECOPY = "precopy"


#: Each strategy's phases up to its commit point (each undone if a later one fails), then those after
#: it (best effort: they cannot undo the migration). Post-copy commits with the restore: once the
#: target runs, the source's CRIU hands over the memory and then ends the source.
PHASES: dict[Strategy, tuple[tuple[str, ...], tuple[str, ...]]] = {
    Strategy.COLD: (("prepare", "freeze", "dump", "transfer", "restore", "switch"), ("cleanup",)),
    Strategy.CLONE: (("prepare", "detach", "dump", "transfer", "restore", "switch"), ("drain", "cleanup")),
    Strategy.POSTCOPY: (("prepare", "dump", "transfer", "switch", "restore"), ("pull", "cleanup")),
    Strategy.PRECOPY: (
        ("prepare", "predump", "freeze", "dump", "transfer", "restore", "switch"),
        ("cleanup",),
    ),
}


PhaseHook = Callable[[str, Any], None]


@dataclass
class Options:
    """How to run a migration.

    Attributes:
        timeout_s: the whole migration must finish within this many seconds (default 120).
        probe: measure downtime with an outside probe (default on).
        probe_rate_hz: probe attempts per second (default 200).
        measure_resources: sample the source node's CPU/memory for 1 s before and after.
        drain_s: ``clone``: how long the source may take to finish in-flight requests.
        stream_pages_from_b: ``cold``/``clone``: a container using at least this much memory has
            its pages streamed to a page server on the target while CRIU dumps (the dump and the
            copy overlap); a smaller one is dumped into memory on its node and its pages go with
            the rest of the checkpoint, which spares CRIU's page-server hand-shake (default 64 MiB).
        on_phase: called with each phase's name and the migration as it starts (progress, and the
            tests' deterministic fault injection: raise, or let the deadline pass).
    """

    timeout_s: float = 120.0
    probe: bool = True
    probe_rate_hz: float = 200.0
    measure_resources: bool = True
    drain_s: float = 10.0
    stream_pages_from_b: int = 64 << 20
    on_phase: PhaseHook | None = None


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
    phases: tuple[str, ...]  # up to and including the commit point
    after_commit: tuple[str, ...] = ()
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
    other_endpoints: bool = False,
    unsupported: dict[str, str] | None = None,
) -> MigrationPlan:
    """Validate and build the plan; raise :class:`MigrationError` (phase ``plan``) when it cannot work.

    ``other_endpoints``: clone first detaches the source from its services (only worth it when each has
    another endpoint). ``unsupported``: strategies the backend cannot run, with the reason.
    """
    try:
        strat = Strategy(strategy)
    except ValueError as exc:
        valid = ", ".join(s.value for s in Strategy)
        raise MigrationError("plan", f"unknown strategy {strategy!r} (strategies: {valid})") from exc
    if unsupported and strat.value in unsupported:
        raise MigrationError(
            "plan", f"strategy {strat.value} is not available here: {unsupported[strat.value]}"
        )
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
    before, after = PHASES[strat]
    if not other_endpoints:
        before = tuple(p for p in before if p != "detach")
    return MigrationPlan(namespace, pod, source, target, strat, before, after, state_bytes, link_bps)
