"""Scaling ladder (SPEC E-10, opt-in): add to a position within the caps (Z-2, R-8, R-9).

Pure decision functions: the engine passes the policy, the ladder state, time (epoch ms UTC),
PnL (% on margin) and account figures (quote) in, and gets an :class:`Addition` to send as a
market order, or a :class:`LadderDenied` with an UPPER_SNAKE reason code to record.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from trading.domain.models import Market
from trading.domain.precision import floor_amount, min_notional
from trading.domain.regime import Regime
from trading.domain.reasons import ReasonCode

HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class LadderPolicy:
    """How a position may grow (SPEC E-10).

    multipliers: size of addition i as a multiple of the base size (regime factor already
    applied); max_additions: additions allowed per position; min_interval_s: seconds between
    additions; min_pnl_pct: add only while PnL ≥ this % on margin (negative, R-9).
    """

    multipliers: tuple[Decimal, ...]
    max_additions: int
    min_interval_s: int
    min_pnl_pct: Decimal

    def __post_init__(self) -> None:
        if self.max_additions < 0 or len(self.multipliers) < self.max_additions:
            raise ValueError("LadderPolicy needs one multiplier per allowed addition")
        if self.min_interval_s < 0 or any(m <= 0 for m in self.multipliers):
            raise ValueError("LadderPolicy interval must be ≥ 0 s and multipliers > 0")


def _d(*values: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(v) for v in values)


# SPEC E-10 per balance profile (Z-3). micro and medium use the default row: the SPEC names only
# small and large; the Z-2 caps still bind a micro account.
_BASE_POLICIES = {
    "default": LadderPolicy(_d("1.0", "0.7", "0.5", "0.3", "0.2"), 5, 60, Decimal(-2)),
    "small": LadderPolicy(_d("1.0", "0.6", "0.4"), 3, 60, Decimal("-1.5")),
    "large": LadderPolicy(_d("1.0", "0.8", "0.6", "0.4", "0.3", "0.2", "0.15"), 7, 30, Decimal(-3)),
}
_PROFILE_ROW = {"default": "default", "micro": "default", "medium": "default", "small": "small", "large": "large"}
REGIME_SIZE_MULTIPLIER = {"trending": Decimal("1.1"), "ranging": Decimal("0.9"), "choppy": Decimal("0.7")}
CHOPPY_MAX_ADDITIONS = 3
CHOPPY_MIN_PNL_PCT = Decimal(-1)


def ladder_policy(balance_profile: str, regime: Regime | str) -> LadderPolicy:
    """The E-10 ladder for a balance profile (micro/small/medium/large/default) and regime.

    Sizes are scaled by the regime (trending ×1.1, ranging ×0.9, choppy ×0.7); choppy also
    caps the ladder at ≤ 3 additions and PnL ≥ −1 % on margin (the stricter of both wins).

    Raises:
        ValueError: unknown profile or regime (a config typo must not pick a ladder silently).
    """
    row = _PROFILE_ROW.get(balance_profile.strip().lower() or "default")
    regime_name = str(getattr(regime, "value", regime)).lower()
    if row is None or regime_name not in REGIME_SIZE_MULTIPLIER:
        raise ValueError(f"unknown balance profile {balance_profile!r} or regime {regime!r}")
    base = _BASE_POLICIES[row]
    factor = REGIME_SIZE_MULTIPLIER[regime_name]
    max_additions, min_pnl = base.max_additions, base.min_pnl_pct
    if regime_name == Regime.CHOPPY.value:
        max_additions = min(max_additions, CHOPPY_MAX_ADDITIONS)
        min_pnl = max(min_pnl, CHOPPY_MIN_PNL_PCT)
    return LadderPolicy(
        multipliers=tuple(m * factor for m in base.multipliers[:max_additions]),
        max_additions=max_additions,
        min_interval_s=base.min_interval_s,
        min_pnl_pct=min_pnl,
    )


@dataclass(frozen=True, slots=True)
class LadderState:
    """Ladder progress of one position: additions done and the time of the last one (epoch ms
    UTC). Start it with ``last_addition_ms=position.opened_ms`` so the first addition also
    waits min_interval_s after the entry; persist it with the position."""

    additions: int = 0
    last_addition_ms: int | None = None

    def after_addition(self, now_ms: int) -> "LadderState":
        """The state once an addition has filled at ``now_ms`` (epoch ms UTC)."""
        return replace(self, additions=self.additions + 1, last_addition_ms=now_ms)


@dataclass(frozen=True, slots=True)
class Addition:
    """An allowed addition (SPEC E-10): contracts floored to the step; notional and margin in
    quote at the given price and leverage."""

    contracts: Decimal
    notional: Decimal
    margin: Decimal


@dataclass(frozen=True, slots=True)
class LadderDenied:
    """Why no addition is made: ``reason`` is an UPPER_SNAKE code, ``detail`` the numbers."""

    reason: str
    detail: str = ""


def next_addition(
    *,
    policy: LadderPolicy,
    state: LadderState,
    now_ms: int,
    pnl_pct: Decimal,
    base_size_quote: Decimal,
    price: Decimal,
    market: Market,
    leverage: int,
    equity: Decimal,
    used_margin: Decimal,
    free_margin: Decimal,
    max_total_margin_pct: Decimal = Decimal(50),
    max_position_size_pct: Decimal = Decimal(20),
    position_notional: Decimal,
    reserve_pct: Decimal = Decimal(20),
) -> Addition | LadderDenied:
    """Decide the next ladder addition (SPEC E-10, Z-2, R-8, R-9). First denial wins, in order:

    MISSING_DATA (fail closed) → LADDER_MAX_ADDITIONS → LADDER_TOO_SOON (< min_interval_s since
    the last addition) → LADDER_PNL_TOO_LOW (pnl_pct < min_pnl_pct: never add to a loser beyond
    the threshold, R-9) → LADDER_MARGIN_RESERVE (margin > (100 − reserve_pct) % of free margin)
    → LADDER_TOTAL_MARGIN (used + margin > max_total_margin_pct % of equity) →
    LADDER_POSITION_CAP (position + addition notional > max_position_size_pct % × equity ×
    leverage) → NOTIONAL_BELOW_MINIMUM (< min_qty or < max(exchange MIN_NOTIONAL, 5)).

    Args:
        pnl_pct: the position's unrealised PnL in % on margin (exits.pnl_pct_on_margin).
        base_size_quote: the Z-3 base position size in quote; addition i is multipliers[i] × it.
        price: expected fill price (quote); used_margin: margin of all open positions, this one
        included (quote); free_margin: the account's free margin (quote); position_notional:
        this position's notional now (quote). Caps are checked on the floored size (never shrunk
        to fit: a rung either fits whole or is denied).
    """
    cs = market.contract_size
    if price <= 0 or equity <= 0 or leverage <= 0 or base_size_quote <= 0 or cs <= 0:
        return LadderDenied(ReasonCode.MISSING_DATA, f"price={price} equity={equity} leverage={leverage} "
                            f"base={base_size_quote}")
    if state.additions >= policy.max_additions:
        return LadderDenied(ReasonCode.LADDER_MAX_ADDITIONS, f"{state.additions} of {policy.max_additions} done")
    if state.last_addition_ms is not None:
        waited_ms = now_ms - state.last_addition_ms
        if waited_ms < policy.min_interval_s * 1000:
            return LadderDenied(ReasonCode.LADDER_TOO_SOON, f"{waited_ms / 1000:.1f} s < {policy.min_interval_s} s")
    if pnl_pct < policy.min_pnl_pct:
        return LadderDenied(ReasonCode.LADDER_PNL_TOO_LOW, f"PnL {pnl_pct:.2f} % < {policy.min_pnl_pct} % on margin")
    wanted = base_size_quote * policy.multipliers[state.additions]
    contracts = floor_amount(market, wanted / (price * cs))
    notional = contracts * cs * price
    margin = notional / leverage
    spendable = free_margin * (HUNDRED - reserve_pct) / HUNDRED
    if free_margin <= 0 or margin > spendable:
        return LadderDenied(ReasonCode.LADDER_MARGIN_RESERVE, f"margin {margin:.2f} > {spendable:.2f} "
                            f"({100 - reserve_pct} % of free margin {free_margin:.2f})")
    total_cap = equity * max_total_margin_pct / HUNDRED
    if used_margin + margin > total_cap:
        return LadderDenied(ReasonCode.LADDER_TOTAL_MARGIN, f"used {used_margin:.2f} + {margin:.2f} > "
                            f"{total_cap:.2f} ({max_total_margin_pct} % of equity)")
    position_cap = equity * max_position_size_pct / HUNDRED * leverage
    if position_notional + notional > position_cap:
        return LadderDenied(ReasonCode.LADDER_POSITION_CAP, f"notional {position_notional:.2f} + {notional:.2f} > "
                            f"{position_cap:.2f} ({max_position_size_pct} % of equity × {leverage})")
    floor = min_notional(market)
    if contracts <= 0 or contracts < market.min_qty or notional < floor:
        return LadderDenied(ReasonCode.NOTIONAL_BELOW_MINIMUM, f"{market.symbol}: {contracts} contracts = "
                            f"{notional:.2f} quote < {floor} (min qty {market.min_qty})")
    return Addition(contracts=contracts, notional=notional, margin=margin)


def average_entry(contracts: Decimal, entry_price: Decimal, added: Decimal, fill_price: Decimal) -> Decimal:
    """The position's entry price (quote) after an addition fill: the contract-weighted mean
    (SPEC E-10: the brackets are then re-placed from it for the new size)."""
    total = contracts + added
    return (contracts * entry_price + added * fill_price) / total if total > 0 else entry_price
