"""Bandwidth strings: parse_rate and format_rate (tc's units: bit = bits/s, bps = bytes/s)."""

from __future__ import annotations

import pytest

from podhop.net.shaping import format_rate, parse_rate


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("100mbit", 100_000_000),
        ("1gbit", 1_000_000_000),
        ("500kbit", 500_000),
        ("1G", 1_000_000_000),
        ("1g", 1_000_000_000),
        ("10M", 10_000_000),
        ("1tbit", 10**12),
        ("12500000", 12_500_000),
        ("64bit", 64),
        ("100Mbit", 100_000_000),
        ("100MBIT", 100_000_000),
        ("100mbit/s", 100_000_000),
        (" 100 mbit ", 100_000_000),
        ("1.5mbit", 1_500_000),
        ("2.5gbit", 2_500_000_000),
        ("0.5mbit", 500_000),
        ("1mbps", 8_000_000),  # bytes per second, as tc spells it
        ("12.5mbps", 100_000_000),
        ("1kbps", 8_000),
        ("10bps", 80),
    ],
)
def test_parse_rate(text: str, bits: int) -> None:
    result = parse_rate(text)
    assert result == bits
    assert isinstance(result, int)


@pytest.mark.parametrize(
    "text",
    [
        "", "fast", "mbit", "-1mbit", "1xbit", "1 m bit", "1mbitmbit", "1,5mbit",
        "0", "0mbit", "0.0gbit", "1e6", "1.mbit",
    ],
)
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


@pytest.mark.parametrize("text", ["0.5", "0.5bit", "0.0001kbit"])
def test_parse_rate_never_returns_a_non_positive_rate(text: str) -> None:
    try:
        result = parse_rate(text)
    except ValueError:
        return
    assert result >= 1


@pytest.mark.parametrize(
    ("text", "bits"),
    [("1.005kbit", 1005), ("0.0157gbit", 15_700_000), ("0.0314mbit", 31_400)],
)
def test_parse_rate_of_exact_decimals(text: str, bits: int) -> None:
    assert parse_rate(text) == bits


@pytest.mark.parametrize(
    ("bits", "text"),
    [
        (1_000_000_000, "1gbit"),
        (10_000_000_000, "10gbit"),
        (100_000_000, "100mbit"),
        (1_500_000_000, "1500mbit"),
        (1_500_000, "1500kbit"),
        (500_000, "500kbit"),
        (1_000, "1kbit"),
        (999, "999bit"),
        (1_001, "1001bit"),
        (1, "1bit"),
        (12_345_678, "12345678bit"),
    ],
)
def test_format_rate(bits: int, text: str) -> None:
    assert format_rate(bits) == text


@pytest.mark.parametrize(
    "bits",
    [1, 8, 999, 1000, 1001, 64_000, 1_500_000, 12_500_000, 100_000_000, 10**9, 25 * 10**9, 123_456_789],
)
def test_format_then_parse_round_trips(bits: int) -> None:
    assert parse_rate(format_rate(bits)) == bits


@pytest.mark.parametrize("text", ["100mbit", "1gbit", "500kbit", "12500000", "1.5mbit", "1mbps"])
def test_parse_then_format_is_stable(text: str) -> None:
    bits = parse_rate(text)
    assert parse_rate(format_rate(bits)) == bits
