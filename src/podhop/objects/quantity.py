"""Kubernetes resource quantities: parse ``"100m"``/``"64Mi"`` into integers and back.

Why: manifests state CPU and memory as Kubernetes quantity strings, while the
scheduler, the cgroup limits and the ``top`` output all want plain integers
(millicores and bytes). Parsing happens once, at load time, with exact
rational arithmetic so ``"0.1"`` is 100 millicores rather than 99.99…; the
formatters go the other way, either like ``kubectl top`` (for humans) or
exactly (for writing manifests back out).

Grammar (as in ``k8s.io/apimachinery/pkg/api/resource``): an optional sign, a
decimal number, then one suffix: binary ``Ki Mi Gi Ti Pi Ei``, decimal
``m k M G T P E`` or none, or an exponent ``e3``/``E-2``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

KI = 1024
MI = KI**2
GI = KI**3

_NUMBER = re.compile(r"([+-]?)(\d+(?:\.\d*)?|\.\d+)(.*)", re.DOTALL)
_EXPONENT = re.compile(r"[eE]([+-]?\d+)")
_BINARY = {"Ki": KI, "Mi": MI, "Gi": GI, "Ti": KI**4, "Pi": KI**5, "Ei": KI**6}
_DECIMAL: dict[str, Fraction | int] = {
    "": 1,
    "m": Fraction(1, 1000),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_MAX_EXPONENT = 30
_MAX_VALUE = 2**63 - 1


def parse_quantity(q: str | int | float) -> Fraction:
    """Parse a Kubernetes quantity into its exact, non-negative value (in base units)."""
    if isinstance(q, bool) or not isinstance(q, str | int | float):
        raise ValueError(f"invalid quantity {q!r}: expected a string or a number")
    if isinstance(q, float):
        if not math.isfinite(q):
            raise ValueError(f"invalid quantity {q!r}: not a finite number")
        value = Fraction(repr(q))
    elif isinstance(q, int):
        value = Fraction(q)
    else:
        value = _parse_string(q)
    if value < 0:
        raise ValueError(f"invalid quantity {q!r}: must not be negative")
    if value > _MAX_VALUE:
        raise ValueError(f"invalid quantity {q!r}: too large")
    return value


def _parse_string(q: str) -> Fraction:
    m = _NUMBER.fullmatch(q)
    if m is None:
        raise ValueError(
            f"invalid quantity {q!r} (expected a number with an optional suffix, e.g. '500m', '64Mi')"
        )
    sign, number, suffix = m.groups()
    value = Fraction(number)
    if suffix in _BINARY:
        value *= _BINARY[suffix]
    elif suffix in _DECIMAL:
        value *= _DECIMAL[suffix]
    elif (exp := _EXPONENT.fullmatch(suffix)) is not None:
        exponent = int(exp.group(1))
        if abs(exponent) > _MAX_EXPONENT:
            raise ValueError(f"invalid quantity {q!r}: exponent out of range")
        value *= Fraction(10) ** exponent
    else:
        raise ValueError(
            f"invalid quantity {q!r}: unknown suffix {suffix!r} "
            "(use one of Ki Mi Gi Ti Pi Ei, m k M G T P E, or an exponent like e3)"
        )
    return -value if sign == "-" else value


def parse_cpu(q: str | int | float) -> int:
    """CPU quantity in millicores: ``"100m"`` → 100, ``"0.5"`` → 500, ``2`` → 2000.

    Like the Kubernetes API, precision finer than 1m is rejected.
    """
    millicores = parse_quantity(q) * 1000
    if millicores.denominator != 1:
        raise ValueError(f"invalid quantity {q!r}: CPU cannot be more precise than 1m")
    return int(millicores)


def parse_memory(q: str | int | float) -> int:
    """Memory quantity in bytes: ``"64Mi"``, ``"129M"``, ``"1e3"``, ``128974848``.

    A fractional number of bytes is rounded up, as Kubernetes does.
    """
    return math.ceil(parse_quantity(q))


def format_cpu(millicores: int) -> str:
    """CPU the way ``kubectl top`` prints it: always millicores (``"250m"``, ``"1500m"``)."""
    return f"{millicores}m"


def format_memory(memory_b: int) -> str:
    """Memory the way ``kubectl top`` prints it: whole mebibytes, rounded down (``"123Mi"``)."""
    return f"{memory_b // MI}Mi"


def cpu_quantity(millicores: int) -> str:
    """Exact CPU quantity for a manifest: ``"2"`` for whole cores, else ``"250m"``."""
    if millicores % 1000 == 0:
        return str(millicores // 1000)
    return f"{millicores}m"


def memory_quantity(memory_b: int) -> str:
    """Exact memory quantity for a manifest: the largest binary suffix that divides it, else bytes."""
    for suffix, factor in reversed(_BINARY.items()):
        if memory_b and memory_b % factor == 0:
            return f"{memory_b // factor}{suffix}"
    return str(memory_b)
