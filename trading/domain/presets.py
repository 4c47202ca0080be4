"""Sizing presets (SPEC Z-4): the limits a bot trades with right now.

``safe`` (default): Z-1 at the profile's risk (0.75 %), its leverage (5×) and positions (2, or 3
after 100 closed trades); the equity tier only sets caps, the minimum score and the TP1 share.
``scaling``: the tier table sets risk/trade, max positions, leverage cap, minimum score, TP1 share
and trades/day (lower, safer end of each range), the SL streak limit is 3, and the pair universe
grows with the tier. ``launch`` (Z-5): the stage of the launch ramp (``trading.domain.launch``)
sets risk/trade, leverage and positions; the tier sets caps, scores and the TP1 share as in
``safe``. Every preset: never BTC/ETH below 500 equity.

The tier comes in from the engine (R-9 hysteresis, :func:`trading.domain.sizing.next_tier`);
:func:`capped` then applies R-9's "never rise" ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from trading.domain.config import BotProfile
from trading.domain.launch import LaunchStage
from trading.domain.launch import stage as launch_stage
from trading.domain.sizing import EQUITY_TIERS, EquityTier, equity_tier

SAFE, SCALING, LAUNCH = "safe", "scaling", "launch"
SCALING_SL_STREAK_LIMIT = 3  # SPEC R-2: 3 in the scaling preset
EXPERIENCED_AFTER_TRADES = 100  # SPEC Z-4: safe preset allows one more position after 100 trades

# SPEC Z-4 pair universe: minimum equity (quote) per base asset; others are open to every tier.
MAJORS = frozenset({"BTC", "ETH"})
MID_CAPS = frozenset({"SOL", "LINK", "DOT"})
MAJORS_ABSOLUTE_MIN_EQUITY = Decimal(500)


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """What a bot may do at the current equity: risk_pct in % of equity, leverage ×, max open
    positions, minimum ScalpingV1 score, TP1 share in %, SL streak limit, trades per UTC day
    (None = no cap), and the tier they come from."""

    risk_pct: Decimal
    leverage: int
    max_positions: int
    min_score: float
    tp1_share_pct: Decimal
    sl_streak_limit: int
    max_trades_per_day: int | None
    tier: EquityTier
    launch_stage: int = 0  # Z-5 stage (launch preset), 0 = not on the ramp
    capped: bool = False  # R-9 held risk or leverage below what the preset would give now


def min_score_floor(profile: BotProfile) -> float:
    """The lowest minimum ScalpingV1 score ``profile`` can ever require (SPEC S-11, Z-4): its
    own ``min_score`` when set, else the lowest tier's. A candidate scoring below it is refused
    at any equity, so a replay records it without running the entry pipeline (S-13)."""
    if profile.strategy.min_score is not None:
        return profile.strategy.min_score
    return min(tier.min_score for tier in EQUITY_TIERS)


def effective_limits(preset: str, profile: BotProfile, equity: Decimal, closed_trades: int, *,
                     tier: EquityTier | None = None, stage: LaunchStage | None = None) -> EffectiveLimits:
    """Resolve the preset for ``profile`` at ``equity`` (quote) after ``closed_trades``: Z-4
    ``safe`` / ``scaling``, or Z-5 ``launch`` at ``stage`` (default stage 1). ``tier``: the tier
    in force (R-9 hysteresis; default the plain tier of ``equity``). Explicit ``min_score`` /
    ``tp1_share_pct`` in the profile override the tier's."""
    tier = tier or equity_tier(equity)
    min_score = profile.strategy.min_score if profile.strategy.min_score is not None else tier.min_score
    tp1_share = profile.tp1_share_pct if profile.tp1_share_pct is not None else tier.tp1_share_pct
    if preset == SCALING:
        return EffectiveLimits(
            risk_pct=tier.risk_pct,
            leverage=min(profile.leverage, tier.max_leverage),
            max_positions=tier.max_positions,
            min_score=min_score,
            tp1_share_pct=tp1_share,
            sl_streak_limit=max(profile.sl_streak_limit, SCALING_SL_STREAK_LIMIT),
            max_trades_per_day=tier.max_trades_per_day,
            tier=tier,
        )
    if preset == LAUNCH:
        step = stage or launch_stage(1)
        return EffectiveLimits(
            risk_pct=step.risk_pct,
            leverage=min(step.leverage, tier.max_leverage),
            max_positions=step.max_positions,
            min_score=min_score,
            tp1_share_pct=tp1_share,
            sl_streak_limit=profile.sl_streak_limit,
            max_trades_per_day=None,
            tier=tier,
            launch_stage=step.number,
        )
    positions = profile.max_positions
    if closed_trades >= EXPERIENCED_AFTER_TRADES and profile.max_positions_experienced is not None:
        positions = max(positions, profile.max_positions_experienced)
    return EffectiveLimits(
        risk_pct=profile.risk_pct,
        leverage=min(profile.leverage, tier.max_leverage),
        max_positions=positions,
        min_score=min_score,
        tp1_share_pct=tp1_share,
        sl_streak_limit=profile.sl_streak_limit,
        max_trades_per_day=None,
        tier=tier,
    )


def capped(limits: EffectiveLimits, ceiling: tuple[Decimal, int] | None) -> EffectiveLimits:
    """SPEC R-9 no martingale: ``limits`` with risk % and leverage held at or below ``ceiling``
    (risk %, leverage ×: what was applied before equity fell below its peak or a losing streak
    began), so neither rises while that lasts — a lower equity tier with a higher risk % or
    leverage never raises them. ``ceiling`` None = no ceiling (at the peak, no losing streak)."""
    if ceiling is None:
        return limits
    risk, leverage = ceiling
    if limits.risk_pct <= risk and limits.leverage <= leverage:
        return limits
    return replace(limits, risk_pct=min(limits.risk_pct, risk), leverage=min(limits.leverage, leverage),
                   capped=True)


def pair_allowed(preset: str, symbol: str, equity: Decimal) -> bool:
    """SPEC Z-4 pair universe: BTC/ETH never below 500 equity (≥ 750 in ``scaling``); SOL,
    LINK, DOT from 300 in ``scaling``; other (low-price) alts at any equity."""
    base = symbol.split("/")[0].upper()
    if base in MAJORS:
        floor = Decimal(750) if preset == SCALING else MAJORS_ABSOLUTE_MIN_EQUITY
        return equity >= floor
    if base in MID_CAPS and preset == SCALING:
        return equity >= 300
    return True
