"""Reason codes and drawdown stages (STYLE: nautilus' standard reason codes).

Every refusal the core makes — a RiskGuard check (SPEC R-*), a pre-trade filter (F-*), sizing
(Z-*), the ladder (E-10) or the order gate (O-9) — names one :class:`ReasonCode`. They are
``StrEnum`` members, so a stored or rendered code is its plain UPPER_SNAKE text
(``ReasonCode.SYMBOL_PAUSED == "SYMBOL_PAUSED"``) and records written before the enum existed
still compare equal.
"""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    """Why an entry, an addition or an order was refused (or, for ``OK``, let through)."""

    OK = "OK"
    # Fail closed (STYLE: no price, market or account → deny).
    MISSING_DATA = "MISSING_DATA"
    RISK_CHECK_ERROR = "RISK_CHECK_ERROR"
    FILTER_ERROR = "FILTER_ERROR"
    # Strategy (S-11) and the exchange.
    SCORE_BELOW_MIN = "SCORE_BELOW_MIN"
    EXCHANGE_REJECTED = "EXCHANGE_REJECTED"
    # Trading state: day stops and the drawdown stages.
    SL_STREAK = "SL_STREAK"
    DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
    DAILY_LOSS_HARD_LIMIT = "DAILY_LOSS_HARD_LIMIT"  # everything closed, halted to the next UTC day
    DAILY_PROFIT_FACTOR = "DAILY_PROFIT_FACTOR"
    DRAWDOWN_PAUSE = "DRAWDOWN_PAUSE"
    DRAWDOWN_REDUCE = "DRAWDOWN_REDUCE"
    # Per symbol: pauses, blacklist, one position per symbol (B-1), hours (S-5).
    SYMBOL_PAUSED = "SYMBOL_PAUSED"
    SYMBOL_BLACKLISTED = "SYMBOL_BLACKLISTED"
    POSITION_OPEN = "POSITION_OPEN"
    SYMBOL_HELD_BY_OTHER_BOT = "SYMBOL_HELD_BY_OTHER_BOT"
    BLACKOUT_HOURS = "BLACKOUT_HOURS"
    OUTSIDE_TRADING_HOURS = "OUTSIDE_TRADING_HOURS"
    # Limits (R-1, Z-4).
    MAX_POSITIONS = "MAX_POSITIONS"
    MAX_POSITIONS_ACCOUNT = "MAX_POSITIONS_ACCOUNT"
    MAX_TRADES_PER_DAY = "MAX_TRADES_PER_DAY"
    PAIR_NOT_IN_TIER = "PAIR_NOT_IN_TIER"
    # Sizing caps (Z-1, Z-2, R-8) and exchange minimums (F-5, O-1).
    TIER_ALLOCATION = "TIER_ALLOCATION"
    MAX_POSITION_SIZE = "MAX_POSITION_SIZE"
    TOTAL_MARGIN = "TOTAL_MARGIN"
    BASE_SIZE = "BASE_SIZE"
    MARGIN_LIMIT = "MARGIN_LIMIT"
    NOTIONAL_BELOW_MINIMUM = "NOTIONAL_BELOW_MINIMUM"
    # The stop-loss would sit beyond the liquidation price: the position would be liquidated first.
    STOP_BEYOND_LIQUIDATION = "STOP_BEYOND_LIQUIDATION"
    # Pre-trade filters (F-1..F-4).
    SPREAD_TOO_WIDE = "SPREAD_TOO_WIDE"
    LOW_LIQUIDITY = "LOW_LIQUIDITY"
    LOW_VOLATILITY = "LOW_VOLATILITY"
    LOW_VOLUME_VS_MEDIAN = "LOW_VOLUME_VS_MEDIAN"
    LOW_ATR_VS_MEDIAN = "LOW_ATR_VS_MEDIAN"
    ENTRY_COOLDOWN = "ENTRY_COOLDOWN"
    ENTRY_RATE_LIMIT = "ENTRY_RATE_LIMIT"
    # Scaling ladder (E-10).
    LADDER_MAX_ADDITIONS = "LADDER_MAX_ADDITIONS"
    LADDER_TOO_SOON = "LADDER_TOO_SOON"
    LADDER_PNL_TOO_LOW = "LADDER_PNL_TOO_LOW"
    LADDER_MARGIN_RESERVE = "LADDER_MARGIN_RESERVE"
    LADDER_TOTAL_MARGIN = "LADDER_TOTAL_MARGIN"
    LADDER_POSITION_CAP = "LADDER_POSITION_CAP"
    # The order gate (O-9): an order that adds exposure to a position that is not there.
    NO_POSITION = "NO_POSITION"


class DrawdownStage(StrEnum):
    """SPEC R-5 stage of the account: entries as usual, risk reduced, or entries paused."""

    NONE = "NONE"
    REDUCE = "REDUCE"
    PAUSE = "PAUSE"


# Reasons that stop a bot's entries for the rest of the UTC day (trading state HALTED).
DAY_STOP_REASONS = frozenset({ReasonCode.SL_STREAK, ReasonCode.DAILY_LOSS_LIMIT,
                              ReasonCode.DAILY_PROFIT_FACTOR, ReasonCode.DAILY_LOSS_HARD_LIMIT})
# Day stops a confirmed /resume cannot lift: the R-3 hard limit holds the account to the next UTC day.
UNLIFTABLE_STOPS = frozenset({ReasonCode.DAILY_LOSS_HARD_LIMIT})
