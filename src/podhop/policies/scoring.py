"""Node filtering and scoring as kube-scheduler does it, as pure functions.

Why: podhop places pods itself (there is no kube-scheduler), and its
placements should be the ones a Kubernetes user would predict. So the filter
and the three resource scorers reproduce kube-scheduler's
``noderesources`` plugins, integer arithmetic included, on plain values.
Callers describe each node as a :class:`NodeState` (allocatable, what its
pods request, how many pods, labels) and ask :func:`pick_node` for one pod or
:func:`place_all` for a batch; :func:`rank_nodes` and
:func:`explain_unschedulable` say why.

Formulas (``MaxNodeScore`` = 100, cpu and memory weighted 1:1):

* Filter (``NodeResourcesFit``): ``pods + 1 <= max_pods`` and, for each of
  cpu and memory *that the pod requests*, ``requested + request <=
  allocatable``. Real requests: a pod requesting nothing always fits.
* ``least-allocated`` (``NodeResourcesFit``, ``LeastAllocated`` strategy):
  per resource ``(alloc - req) * 100 // alloc`` (0 if ``req > alloc`` or
  ``alloc == 0``), then ``(cpu + memory) // 2``.
* ``most-allocated`` (``MostAllocated``): per resource
  ``min(req, alloc) * 100 // alloc``, then ``(cpu + memory) // 2``.
  For both, ``req`` is the node's *non-zero* requested total plus the pod's
  non-zero request: an unset cpu/memory request counts as 100m / 200Mi
  (``DefaultMilliCPURequest``, ``DefaultMemoryRequest``), so best-effort pods
  still spread.
* ``balanced`` (``NodeResourcesBalancedAllocation``): fractions
  ``f = min(1, (requested + request) / alloc)`` over resources with
  ``alloc > 0`` using *real* requests; ``std = |f_cpu - f_mem| / 2`` (the
  population standard deviation of two values); score ``int((1 - std) *
  100)``. A pod that requests nothing scores 0 everywhere (kube-scheduler
  skips the plugin for best-effort pods).

Ties are broken deterministically: fewer pods first, then node name in
natural order (``node-2`` before ``node-10``), unlike kube-scheduler's
random choice, so placements are reproducible.

Deviation: kube-scheduler substitutes the non-zero defaults per *container*;
here they apply to the pod's total request (identical for single-container
pods, or when every container sets its requests). An explicit ``cpu: 0`` is
indistinguishable from an unset one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TypeAlias

from podhop.objects.model import Pairs, Resources
from podhop.objects.quantity import MI

HOSTNAME_LABEL = "kubernetes.io/hostname"
MAX_NODE_SCORE = 100
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * MI

_NO_SELECTOR: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class NodeState:
    """What the scheduler needs to know about one node.

    ``requested`` is the sum of the real requests of the pods on the node.
    ``non_zero_requested`` is the same sum with unset requests counted at
    the non-zero defaults; ``None`` means "same as ``requested``". Use
    :meth:`with_pod` to account for a pod so that both stay right.
    """

    name: str
    allocatable: Resources
    requested: Resources
    pods: int = 0
    max_pods: int = 110
    labels: Pairs = ()
    non_zero_requested: Resources | None = None

    @property
    def scoring_requested(self) -> Resources:
        return self.requested if self.non_zero_requested is None else self.non_zero_requested

    @property
    def labels_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def with_pod(self, request: Resources) -> NodeState:
        """This node after one more pod with ``request`` is bound to it."""
        return replace(
            self,
            requested=self.requested + request,
            non_zero_requested=self.scoring_requested + non_zero(request),
            pods=self.pods + 1,
        )


def non_zero(request: Resources) -> Resources:
    """The request as kube-scheduler's scorers see it: unset cpu/memory become 100m / 200Mi."""
    return Resources(
        request.cpu_m or DEFAULT_MILLI_CPU_REQUEST,
        request.memory_b or DEFAULT_MEMORY_REQUEST,
    )


def matches_selector(node: NodeState, selector: Mapping[str, str]) -> bool:
    """nodeSelector semantics; ``kubernetes.io/hostname`` is always the node's name."""
    labels = node.labels_dict
    for key, value in selector.items():
        actual = node.name if key == HOSTNAME_LABEL else labels.get(key)
        if actual != value:
            return False
    return True


def fits(node: NodeState, request: Resources) -> bool:
    """``NodeResourcesFit`` filter: room for one more pod with this (real) request."""
    return not _insufficient(node, request)


def _insufficient(node: NodeState, request: Resources) -> list[str]:
    reasons: list[str] = []
    if node.pods + 1 > node.max_pods:
        reasons.append("pods")
    free = node.allocatable - node.requested
    if request.cpu_m > 0 and request.cpu_m > free.cpu_m:
        reasons.append("cpu")
    if request.memory_b > 0 and request.memory_b > free.memory_b:
        reasons.append("memory")
    return reasons


def least_allocated(node: NodeState, request: Resources) -> int:
    """``LeastAllocated``: favours emptier nodes (spreads pods)."""
    requested = node.scoring_requested + non_zero(request)
    cpu = _least(requested.cpu_m, node.allocatable.cpu_m)
    memory = _least(requested.memory_b, node.allocatable.memory_b)
    return (cpu + memory) // 2


def _least(requested: int, capacity: int) -> int:
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


def most_allocated(node: NodeState, request: Resources) -> int:
    """``MostAllocated``: favours fuller nodes (bin packing)."""
    requested = node.scoring_requested + non_zero(request)
    cpu = _most(requested.cpu_m, node.allocatable.cpu_m)
    memory = _most(requested.memory_b, node.allocatable.memory_b)
    return (cpu + memory) // 2


def _most(requested: int, capacity: int) -> int:
    if capacity == 0:
        return 0
    return min(requested, capacity) * MAX_NODE_SCORE // capacity


def balanced_allocation(node: NodeState, request: Resources) -> int:
    """``BalancedAllocation``: favours nodes whose cpu and memory usage stay proportional."""
    if request.is_zero:
        return 0
    requested = node.requested + request
    fractions = [
        min(1.0, used / capacity)
        for used, capacity in (
            (requested.cpu_m, node.allocatable.cpu_m),
            (requested.memory_b, node.allocatable.memory_b),
        )
        if capacity > 0
    ]
    std = 0.0
    if len(fractions) == 2:
        std = abs(fractions[0] - fractions[1]) / 2
    elif len(fractions) > 2:
        mean = sum(fractions) / len(fractions)
        std = math.sqrt(sum((f - mean) ** 2 for f in fractions) / len(fractions))
    return int((1 - std) * MAX_NODE_SCORE)


Scorer: TypeAlias = Callable[[NodeState, Resources], int]

SCORERS: dict[str, Scorer] = {
    "least-allocated": least_allocated,
    "most-allocated": most_allocated,
    "balanced": balanced_allocation,
}


def rank_nodes(
    nodes: Sequence[NodeState],
    request: Resources,
    selector: Mapping[str, str] = _NO_SELECTOR,
    scorer: str = "least-allocated",
) -> list[tuple[NodeState, int]]:
    """Feasible nodes with their scores, best first (ties broken as documented above)."""
    score = _scorer(scorer)
    feasible = [n for n in nodes if matches_selector(n, selector) and fits(n, request)]
    scored = [(n, score(n, request)) for n in feasible]
    scored.sort(key=lambda pair: (-pair[1], pair[0].pods, _natural(pair[0].name)))
    return scored


def pick_node(
    nodes: Sequence[NodeState],
    request: Resources,
    selector: Mapping[str, str] = _NO_SELECTOR,
    scorer: str = "least-allocated",
) -> NodeState | None:
    """The best node for one pod, or ``None`` when no node passes the filters."""
    ranked = rank_nodes(nodes, request, selector, scorer)
    return ranked[0][0] if ranked else None


def place_all(
    nodes: Sequence[NodeState],
    requests: Sequence[tuple[Resources, Mapping[str, str]]],
    scorer: str = "least-allocated",
) -> list[str | None]:
    """Place pods one after another, each seeing the ones placed before it.

    Returns the chosen node name per pod, ``None`` where nothing fits.
    """
    _scorer(scorer)
    states = list(nodes)
    placed: list[str | None] = []
    for request, selector in requests:
        chosen = pick_node(states, request, selector, scorer)
        if chosen is None:
            placed.append(None)
            continue
        index = states.index(chosen)
        states[index] = chosen.with_pod(request)
        placed.append(chosen.name)
    return placed


def explain_unschedulable(
    nodes: Sequence[NodeState],
    request: Resources,
    selector: Mapping[str, str] = _NO_SELECTOR,
) -> str:
    """Why no node fits, in kube-scheduler's words.

    E.g. ``0/3 nodes are available: 1 node(s) didn't match Pod's node selector, 2 Insufficient cpu.``
    """
    counts: dict[str, int] = {}
    for node in nodes:
        if not matches_selector(node, selector):
            reasons = ["node(s) didn't match Pod's node selector"]
        else:
            reasons = [
                "Too many pods" if r == "pods" else f"Insufficient {r}" for r in _insufficient(node, request)
            ]
        for reason in reasons:
            counts[reason] = counts.get(reason, 0) + 1
    available = sum(1 for n in nodes if matches_selector(n, selector) and fits(n, request))
    detail = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))
    return f"{available}/{len(nodes)} nodes are available" + (f": {detail}." if detail else ".")


def _scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r} (choose from {', '.join(SCORERS)})") from None


def _natural(name: str) -> tuple[tuple[int | str, ...], str]:
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def natural_key(name: str) -> tuple[tuple[int | str, ...], str]:
    """Sort key for node names in natural order (``node-2`` before ``node-10``), as ties are broken."""
    return _natural(name)
