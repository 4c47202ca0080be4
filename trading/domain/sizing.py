"""Position sizing: risk-based size (SPEC Z-1) within the caps of Z-2 and the equity tier (Z-4).

All money in quote currency (Decimal), sizes in contracts, percentages in %.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from trading.domain.errors import PrecisionError
from trading.domain.models import Market
from trading.domain.precision import check_order_size, floor_amount
from trading.domain.reasons import ReasonCode

HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class EquityTier:
    """One row of the SPEC Z-4 table: equity ≥ min_equity selects it.

    allocation_pct: margin cap per position in % of equity; min_score: ScalpingV1 score needed;
    tp1_share_pct: % of the position closed at TP1.
    """

    name: str
    min_equity: Decimal
    allocation_pct: Decimal
    max_leverage: int
    min_score: float
    tp1_share_pct: Decimal
    risk_pct: Decimal = Decimal(0)  # lower end of the tier's risk/trade range (scaling preset)
    max_positions: int = 0  # lower end of the tier's max positions range (scaling preset)
    max_trades_per_day: int = 0  # lower end of the tier's trades/day range (scaling preset)


# SPEC Z-4. Below 120 the first tier still applies (safe preset uses it for caps and scores).
# Where the table gives a range, the scaling preset takes its lower (safer) end.
EQUITY_TIERS: tuple[EquityTier, ...] = (
    EquityTier("120-300", Decimal(0), Decimal(40), 8, 3.0, Decimal(80), Decimal("2.3"), 2, 8),
    EquityTier("300-750", Decimal(300), Decimal(30), 8, 3.3, Decimal(75), Decimal("2.0"), 3, 12),
    EquityTier("750-1500", Decimal(750), Decimal(20), 6, 3.6, Decimal(70), Decimal("1.8"), 5, 18),
    EquityTier("1500+", Decimal(1500), Decimal(15), 5, 3.6, Decimal(70), Decimal("1.5"), 7, 18),
)


def equity_tier(equity: Decimal) -> EquityTier:
    """The SPEC Z-4 tier of ``equity`` (quote), without hysteresis (see :func:`next_tier`)."""
    chosen = EQUITY_TIERS[0]
    for tier in EQUITY_TIERS:
        if equity >= tier.min_equity:
            chosen = tier
    return chosen


def tier_named(name: str) -> EquityTier | None:
    """The Z-4 tier called ``name`` (e.g. ``"300-750"``), or None."""
    return next((t for t in EQUITY_TIERS if t.name == name), None)


def next_tier(current: EquityTier | None, equity: Decimal, margin_pct: Decimal = Decimal(2)) -> EquityTier:
    """SPEC R-9 tier hysteresis: the tier after seeing ``equity`` (quote) in ``current``.

    The tier moves up only once equity is ``margin_pct`` % above the next tier's lower boundary,
    and down only once it is ``margin_pct`` % below the current tier's, so equity wandering around
    a boundary (750 ± 10 with the default 2 %: up at ≥ 765, down below 735) never flips the tier
    back and forth. Without a current tier (a new account) the plain :func:`equity_tier` applies.
    """
    if current is None:
        return equity_tier(equity)
    index = EQUITY_TIERS.index(current)
    up = 1 + margin_pct / HUNDRED
    down = 1 - margin_pct / HUNDRED
    while index + 1 < len(EQUITY_TIERS) and equity >= EQUITY_TIERS[index + 1].min_equity * up:
        index += 1
    while index > 0 and equity < EQUITY_TIERS[index].min_equity * down:
        index -= 1
    return EQUITY_TIERS[index]


@dataclass(frozen=True, slots=True)
class PositionSize:
    """A sized entry: contracts (floored to the step), notional and margin in quote, the risk
    in quote if the stop is hit, which cap (if any) bound the size, and the notional intended
    before rounding (quote)."""

    contracts: Decimal
    notional: Decimal
    margin: Decimal
    risk: Decimal
    capped_by: str = ""
    intended_notional: Decimal = Decimal(0)  # after the caps, before rounding to the step (F-2)


class SizingRejected(Exception):
    """No valid size exists; ``reason`` is an UPPER_SNAKE code, ``detail`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


def size_position(
    *,
    market: Market,
    equity: Decimal,
    price: Decimal,
    stop_loss_pct: Decimal,
    risk_pct: Decimal,
    leverage: int,
    used_margin: Decimal,
    max_total_margin_pct: Decimal,
    max_position_size_pct: Decimal,
    risk_multiplier: Decimal = Decimal(1),
    max_notional: Decimal | None = None,
    tier: EquityTier | None = None,
) -> PositionSize:
    """Size an entry by risk (SPEC Z-1) and apply the caps (Z-2, R-8).

    risk = equity × risk_pct × risk_multiplier; notional = risk / sl_distance; capped so that
    margin ≤ the tier's allocation, notional ≤ max_position_size_pct × equity × leverage and
    used + new margin ≤ max_total_margin_pct × equity; contracts = notional / (price ×
    contractSize) floored to the step; then MIN_NOTIONAL is checked (O-1, F-5).

    Args:
        equity: account equity in quote; price: expected entry price in quote;
        stop_loss_pct: stop distance in % of price; risk_pct: % of equity risked;
        used_margin: margin already in open positions (quote); max_notional: an extra cap in
            quote (the Z-3 base size when the E-10 ladder is on), None = none; tier: the equity
            tier in force (R-9 hysteresis), default the plain tier of ``equity``.

    Raises:
        SizingRejected: missing inputs (fail closed), no margin room, or the size falls below the
            exchange minimums after rounding (reason NOTIONAL_BELOW_MINIMUM).
    """
    if equity <= 0 or price <= 0 or stop_loss_pct <= 0 or leverage <= 0:
        raise SizingRejected(ReasonCode.MISSING_DATA, f"equity={equity} price={price} sl={stop_loss_pct}%")
    risk = equity * risk_pct / HUNDRED * risk_multiplier
    notional = risk / (stop_loss_pct / HUNDRED)
    capped_by = ""
    tier = tier or equity_tier(equity)
    caps = (
        (ReasonCode.TIER_ALLOCATION, equity * tier.allocation_pct / HUNDRED * leverage),
        (ReasonCode.MAX_POSITION_SIZE, equity * max_position_size_pct / HUNDRED * leverage),
        (ReasonCode.TOTAL_MARGIN, (equity * max_total_margin_pct / HUNDRED - used_margin) * leverage),
    )
    if max_notional is not None:
        caps += ((ReasonCode.BASE_SIZE, max_notional),)  # E-10 / Z-3: the ladder's starting size
    for name, cap in caps:
        if notional > cap:
            notional, capped_by = cap, name
    if notional <= 0:
        raise SizingRejected(
            ReasonCode.MARGIN_LIMIT, f"used margin {used_margin:.2f} leaves no room under "
            f"{max_total_margin_pct}% of equity {equity:.2f}"
        )
    intended = notional
    contracts = floor_amount(market, notional / (price * market.contract_size))
    try:
        check_order_size(market, contracts, price)
    except PrecisionError as exc:
        raise SizingRejected(ReasonCode.NOTIONAL_BELOW_MINIMUM, str(exc)) from None
    notional = contracts * market.contract_size * price
    margin = notional / leverage
    return PositionSize(
        contracts=contracts,
        notional=notional,
        margin=margin,
        risk=notional * stop_loss_pct / HUNDRED,
        capped_by=capped_by,
        intended_notional=intended,
    )
