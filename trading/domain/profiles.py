"""Progressive balance profiles and per-symbol multipliers (SPEC Z-3).

The base position size is the margin (quote currency) one position gets at a given account
balance: linear inside a profile, so it grows smoothly with the account, and continuous across
profiles (each profile starts where the previous one ends). Decimal arithmetic throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class BalanceProfile:
    """One SPEC Z-3 profile, selected by balance ≥ min_balance.

    min_balance / threshold: the balance range (quote) over which the size rises linearly
    from size_at_min to size_at_max (base position size, margin in quote per position); above
    threshold the size stays at size_at_max.
    """

    name: str
    min_balance: Decimal
    threshold: Decimal
    size_at_min: Decimal
    size_at_max: Decimal


# SPEC Z-3. "large ≥ 3000" has no upper end in the SPEC; 10 000 is where it reaches 300 and
# stays (clamped), so the size never grows without bound with the balance.
BALANCE_PROFILES: tuple[BalanceProfile, ...] = (
    BalanceProfile("micro", Decimal(100), Decimal(500), Decimal(30), Decimal(50)),
    BalanceProfile("small", Decimal(500), Decimal(1500), Decimal(50), Decimal(150)),
    BalanceProfile("medium", Decimal(1500), Decimal(3000), Decimal(150), Decimal(200)),
    BalanceProfile("large", Decimal(3000), Decimal(10000), Decimal(200), Decimal(300)),
)


def balance_profile(balance: Decimal) -> BalanceProfile:
    """SPEC Z-3 profile of ``balance`` (quote): the last one whose min_balance ≤ balance;
    below 100 the micro profile still applies."""
    chosen = BALANCE_PROFILES[0]
    for profile in BALANCE_PROFILES:
        if balance >= profile.min_balance:
            chosen = profile
    return chosen


def base_position_size(balance: Decimal) -> Decimal:
    """SPEC Z-3 base position size: margin in quote per position for ``balance`` (quote).

    size = size_at_min + (balance − min_balance) / (threshold − min_balance) × (size_at_max −
    size_at_min), clamped to [size_at_min, size_at_max] of the profile (so 30 below 100, 300
    above 10 000). Example: 1018 → small → 50 + 518/1000 × 100 = 101.8.
    """
    p = balance_profile(balance)
    size = p.size_at_min + (balance - p.min_balance) / (p.threshold - p.min_balance) * (
        p.size_at_max - p.size_at_min
    )
    return min(p.size_at_max, max(p.size_at_min, size))


# SPEC Z-3 multipliers by base asset; any other asset gets 1.0.
SYMBOL_MULTIPLIERS = MappingProxyType(
    {
        "BTC": Decimal("1.2"),
        "ETH": Decimal("1.0"),
        "SOL": Decimal("0.9"),
        "DOGE": Decimal("0.8"),
        "XRP": Decimal("0.8"),
    }
)


def symbol_multiplier(symbol: str) -> Decimal:
    """SPEC Z-3 multiplier (dimensionless) for a ccxt unified symbol, by its base asset:
    ``BTC/USDT:USDT`` → BTC → 1.2; unknown assets → 1.0."""
    base = symbol.split("/", 1)[0].upper()
    return SYMBOL_MULTIPLIERS.get(base, Decimal("1.0"))
