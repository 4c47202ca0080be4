"""Progressive balance profiles and per-symbol multipliers (SPEC Z-3)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from trading.domain.profiles import (
    BALANCE_PROFILES,
    SYMBOL_MULTIPLIERS,
    balance_profile,
    base_position_size,
    symbol_multiplier,
)


def test_z3_spec_worked_example_1018_is_small_101_8():
    """SPEC Z-3 example: 1018 → small, 50 + 518/1000 × 100 = 101.8 quote of margin."""
    assert balance_profile(D(1018)).name == "small"
    assert base_position_size(D(1018)) == D("101.8")
    assert isinstance(base_position_size(D(1018)), D)


@pytest.mark.parametrize(
    ("balance", "name", "size"),
    [
        ("50", "micro", "30"),  # below 100: micro, clamped to its minimum
        ("100", "micro", "30"),
        ("300", "micro", "40"),
        ("499.99", "micro", "49.9995"),
        ("500", "small", "50"),
        ("1000", "small", "100"),
        ("1499.99", "small", "149.999"),
        ("1500", "medium", "150"),
        ("2250", "medium", "175"),
        ("3000", "large", "200"),
        ("6500", "large", "250"),
        ("10000", "large", "300"),
        ("250000", "large", "300"),  # clamped above the large threshold
    ],
)
def test_z3_profiles_and_linear_size(balance, name, size):
    """SPEC Z-3: micro 100–500 → 30–50; small 500–1500 → 50–150; medium 1500–3000 → 150–200;
    large ≥ 3000 → 200–300, linear inside each profile."""
    assert balance_profile(D(balance)).name == name
    assert base_position_size(D(balance)) == D(size)


def test_z3_profile_table_matches_spec():
    """SPEC Z-3: the table itself (large reaches 300 at 10 000)."""
    rows = [(p.name, p.min_balance, p.threshold, p.size_at_min, p.size_at_max) for p in BALANCE_PROFILES]
    assert rows == [
        ("micro", 100, 500, 30, 50),
        ("small", 500, 1500, 50, 150),
        ("medium", 1500, 3000, 150, 200),
        ("large", 3000, 10000, 200, 300),
    ]


def test_z3_size_is_continuous_and_never_falls_as_balance_grows():
    """SPEC Z-3: no jump at a profile boundary and a non-decreasing size in balance."""
    sizes = [base_position_size(D(b) / 4) for b in range(0, 60_000)]
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    for edge in (D(500), D(1500), D(3000)):
        assert base_position_size(edge) - base_position_size(edge - D("0.01")) < D("0.011")


def test_z3_symbol_multipliers_by_base_asset():
    """SPEC Z-3: BTC 1.2, ETH 1.0, SOL 0.9, DOGE 0.8, XRP 0.8; others 1.0."""
    assert symbol_multiplier("BTC/USDT:USDT") == D("1.2")
    assert symbol_multiplier("BTC/USDC:USDC") == D("1.2")
    assert symbol_multiplier("ETH/USDT:USDT") == D("1.0")
    assert symbol_multiplier("SOL/USDT:USDT") == D("0.9")
    assert symbol_multiplier("DOGE/USDT:USDT") == D("0.8")
    assert symbol_multiplier("XRP/USDC:USDC") == D("0.8")
    assert symbol_multiplier("ADA/USDT:USDT") == D("1.0")
    assert symbol_multiplier("1000PEPE/USDT:USDT") == D("1.0")
    assert symbol_multiplier("WBTC/USDT:USDT") == D("1.0")  # the base asset, not a substring
    with pytest.raises(TypeError):
        SYMBOL_MULTIPLIERS["ADA"] = D(2)  # type: ignore[index]
