"""Kubernetes quantity parsing and formatting."""

from __future__ import annotations

import pytest

from podhop.objects.quantity import (
    GI,
    MI,
    cpu_quantity,
    format_cpu,
    format_memory,
    memory_quantity,
    parse_cpu,
    parse_memory,
)


@pytest.mark.parametrize(
    ("quantity", "millicores"),
    [
        ("100m", 100),
        ("0.5", 500),
        (2, 2000),
        ("1.5", 1500),
        (1.5, 1500),
        ("0.1", 100),
        (".25", 250),
        ("1", 1000),
        ("1000m", 1000),
        ("0", 0),
        ("1e-3", 1),
        ("2k", 2_000_000),
        ("+3", 3000),
    ],
)
def test_parse_cpu(quantity: str | int | float, millicores: int) -> None:
    assert parse_cpu(quantity) == millicores


@pytest.mark.parametrize(
    ("quantity", "size"),
    [
        ("1e3", 1000),
        ("128974848", 128974848),
        (128974848, 128974848),
        ("129M", 129_000_000),
        ("123Mi", 123 * MI),
        ("64Mi", 64 * MI),
        ("1Ki", 1024),
        ("1k", 1000),
        ("1Gi", GI),
        ("1.5Gi", 3 * GI // 2),
        ("2Ti", 2 * 1024**4),
        ("1Pi", 1024**5),
        ("1Ei", 1024**6),
        ("1G", 10**9),
        ("1T", 10**12),
        ("1P", 10**15),
        ("1E", 10**18),
        ("128974848000m", 128974848),
        ("0.5", 1),
    ],
)
def test_parse_memory(quantity: str | int, size: int) -> None:
    assert parse_memory(quantity) == size


@pytest.mark.parametrize(
    ("quantity", "fragment"),
    [
        ("lots", "invalid quantity 'lots'"),
        ("", "invalid quantity ''"),
        ("Mi", "invalid quantity 'Mi'"),
        ("12 Mi", "unknown suffix ' Mi'"),
        ("12mi", "unknown suffix 'mi'"),
        ("-1", "must not be negative"),
        ("1e999", "exponent out of range"),
        (True, "expected a string or a number"),
        (float("nan"), "not a finite number"),
    ],
)
def test_invalid_quantities(quantity: object, fragment: str) -> None:
    for parse in (parse_cpu, parse_memory):
        with pytest.raises(ValueError, match="invalid quantity") as info:
            parse(quantity)  # type: ignore[arg-type]
        assert fragment in str(info.value)


def test_cpu_finer_than_a_millicore_is_rejected() -> None:
    with pytest.raises(ValueError, match="more precise than 1m"):
        parse_cpu("0.0005")


def test_format_like_kubectl_top() -> None:
    assert format_cpu(250) == "250m"
    assert format_cpu(1500) == "1500m"
    assert format_memory(123 * MI) == "123Mi"
    assert format_memory(123 * MI + MI - 1) == "123Mi"
    assert format_memory(20 * GI) == "20480Mi"
    assert format_memory(0) == "0Mi"


@pytest.mark.parametrize(("millicores", "text"), [(100, "100m"), (2000, "2"), (1500, "1500m"), (0, "0")])
def test_exact_cpu_round_trips(millicores: int, text: str) -> None:
    assert cpu_quantity(millicores) == text
    assert parse_cpu(text) == millicores


@pytest.mark.parametrize(
    ("size", "text"),
    [(64 * MI, "64Mi"), (2 * GI, "2Gi"), (3072, "3Ki"), (1536, "1536"), (1000, "1000"), (0, "0")],
)
def test_exact_memory_round_trips(size: int, text: str) -> None:
    assert memory_quantity(size) == text
    assert parse_memory(text) == size
