"""Bandwidth limits on a node's link, with ``tc`` (htb).

Why: a migration's transfer time depends on the link between nodes, and edge
links are slow. Each node's link to the cluster network can be capped; the cap
is applied to both directions (egress of the node's ``eth0`` inside its
namespace, and egress of the host-side veth towards it), so anything crossing
it — requests, responses, checkpoint images — sees the same limit. There is no
``netem`` on these machines, so delay is not emulated.
"""

from __future__ import annotations

import re
from decimal import Decimal

from podhop import sh

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_rate(text: str) -> int:
    """'100mbit', '1gbit', '500kbit', '1G' (bits/s), '12500000' -> bits per second."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(bit|bps|b)?(?:/s)?\s*", text.lower())
    if not m:
        raise ValueError(f"invalid bandwidth {text!r}: use e.g. 100mbit, 1gbit, 500kbit")
    value = Decimal(m.group(1)) * _UNITS[m.group(2)]
    if m.group(3) == "bps":  # bytes per second, as tc spells it
        value *= 8
    if value < 1:
        raise ValueError(f"invalid bandwidth {text!r}: must be at least 1 bit/s")
    return int(value)


def format_rate(bits_per_s: int) -> str:
    for unit, factor in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits_per_s >= factor and bits_per_s % factor == 0:
            return f"{bits_per_s // factor}{unit}"
    return f"{bits_per_s}bit"


def _tc(netns: str | None, *args: str) -> None:
    sh.run(["tc"] + (["-n", netns] if netns else []) + list(args))


def limit(netns: str | None, dev: str, bits_per_s: int) -> None:
    """Cap egress of ``dev`` at ``bits_per_s`` (replacing any earlier cap)."""
    rate = f"{bits_per_s}bit"
    _tc(netns, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "10")
    _tc(
        netns,
        "class",
        "replace",
        "dev",
        dev,
        "parent",
        "1:",
        "classid",
        "1:10",
        "htb",
        "rate",
        rate,
        "ceil",
        rate,
        "burst",
        "64k",
        "cburst",
        "64k",
    )


def clear(netns: str | None, dev: str) -> None:
    """Remove any cap from ``dev`` (idempotent)."""
    sh.ok(["tc"] + (["-n", netns] if netns else []) + ["qdisc", "del", "dev", dev, "root"])
