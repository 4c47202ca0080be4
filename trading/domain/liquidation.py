"""Liquidation prices of Binance USDⓈ-M positions from the maintenance-margin brackets (the
exchange's leverage tiers), for paper mode and for the entry check; demo and live show the
exchange's own figure where it reports one.

Binance's formula ("Liquidation Price Calculation", USDⓈ-M futures; one-way mode; the same one
freqtrade's ``binance.dry_run_liquidation_price`` implements)::

    LP = (WB − TMM₁ + UPNL₁ + cum − side × Q × EP) / (Q × MMR − side × Q)

WB: wallet balance backing the position (isolated: the position's margin, Q × EP / leverage;
cross: the wallet balance); TMM₁ / UPNL₁: maintenance margin and unrealised PnL of the *other*
positions (cross only, 0 when isolated); cum: the bracket's maintenance amount; side +1 long,
−1 short; Q: position size in base units (contracts × contractSize); EP: entry price; MMR: the
bracket's maintenance margin rate. The bracket is the one whose notional range holds Q × EP.

Pure: Decimal in, Decimal out; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from trading.domain.models import Side

ZERO = Decimal(0)
HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class MarginBracket:
    """One maintenance-margin bracket of a symbol: notional range [min_notional, max_notional)
    in quote, maintenance margin rate (fraction), maintenance amount ``cum`` (quote) and the
    highest leverage the bracket allows."""

    min_notional: Decimal
    max_notional: Decimal
    maintenance_rate: Decimal
    cum: Decimal
    max_leverage: int


def bracket_for(brackets: Sequence[MarginBracket], notional: Decimal) -> MarginBracket:
    """The bracket holding ``notional`` (quote); the last one beyond the table.

    Raises:
        ValueError: no brackets.
    """
    if not brackets:
        raise ValueError("no maintenance-margin brackets")
    for bracket in brackets:
        if bracket.min_notional <= notional < bracket.max_notional:
            return bracket
    return brackets[-1]


def liquidation_price(
    *,
    side: Side,
    contracts: Decimal,
    entry_price: Decimal,
    contract_size: Decimal,
    wallet_balance: Decimal,
    brackets: Sequence[MarginBracket],
    other_maintenance: Decimal = ZERO,
    other_unrealised: Decimal = ZERO,
) -> Decimal | None:
    """Binance's liquidation price (quote) of one position (see the module doc); None when the
    position cannot be liquidated (the formula gives ≤ 0: a long backed by more than its
    notional) or the inputs are empty."""
    quantity = contracts * contract_size
    if quantity <= 0 or entry_price <= 0:
        return None
    bracket = bracket_for(brackets, quantity * entry_price)
    sign = Decimal(side.sign)
    numerator = wallet_balance - other_maintenance + other_unrealised + bracket.cum - sign * quantity * entry_price
    denominator = quantity * bracket.maintenance_rate - sign * quantity
    if denominator == 0:
        return None
    price = numerator / denominator
    return price if price > 0 else None


def isolated_liquidation_price(*, side: Side, contracts: Decimal, entry_price: Decimal, contract_size: Decimal,
                               leverage: int, brackets: Sequence[MarginBracket]) -> Decimal | None:
    """The liquidation price (quote) of an isolated position whose margin is its initial
    margin: notional / leverage. E.g. a 1-contract long at 100, 5×, MMR 0.5 %: 80.40."""
    margin = contracts * contract_size * entry_price / leverage
    return liquidation_price(side=side, contracts=contracts, entry_price=entry_price, contract_size=contract_size,
                             wallet_balance=margin, brackets=brackets)


def distance_pct(mark: Decimal, liquidation: Decimal) -> Decimal:
    """How far the liquidation price is from ``mark`` (quote), in % of the mark."""
    return abs(mark - liquidation) / mark * HUNDRED if mark > 0 else ZERO


def remaining_share_pct(entry: Decimal, mark: Decimal, liquidation: Decimal, side: Side) -> Decimal:
    """What is left of the entry → liquidation distance at ``mark``, in % (100 at the entry, 0 at
    the liquidation price; above 100 when the position is in profit)."""
    whole = (entry - liquidation) * side.sign
    if whole <= 0:
        return HUNDRED
    return (mark - liquidation) * side.sign / whole * HUNDRED


def stop_beyond_liquidation(side: Side, stop: Decimal, liquidation: Decimal | None) -> bool:
    """True when the stop-loss sits at or beyond the liquidation price (the position would be
    liquidated before its stop triggers)."""
    if liquidation is None:
        return False
    return stop <= liquidation if side is Side.LONG else stop >= liquidation


def brackets_from_ccxt_tiers(tiers: Sequence[dict]) -> tuple[MarginBracket, ...]:
    """Brackets from ccxt's ``fetch_leverage_tiers`` / freqtrade's ``binance_leverage_tiers.json``
    entries (``minNotional``, ``maxNotional``, ``maintenanceMarginRate``, ``maxLeverage``,
    ``info.cum``), lowest notional first."""
    out = []
    for tier in tiers:
        info = tier.get("info") or {}
        out.append(MarginBracket(
            min_notional=Decimal(str(tier["minNotional"])),
            max_notional=Decimal(str(tier["maxNotional"])),
            maintenance_rate=Decimal(str(tier["maintenanceMarginRate"])),
            cum=Decimal(str(info.get("cum", "0"))),
            max_leverage=int(float(tier.get("maxLeverage") or 1)),
        ))
    return tuple(sorted(out, key=lambda b: b.min_notional))
