"""RiskGuard pipeline (SPEC R-1, R-2, R-3, R-7, S-5): reason codes, order, fail closed."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

from trading.domain.risk import RiskContext, RiskGuard, check_data

BASE = RiskContext(
    bot="main", symbol="BTC/USDT:USDT", hour_utc=12, price=D(100000), equity=D(1000),
    day_start_equity=D(1000), daily_pnl=D(0), open_positions_bot=0, max_positions_bot=2,
    open_positions_account=0, max_positions_account=2, symbol_busy=False, paused=False,
    sl_streak=0, sl_streak_limit=2, daily_loss_limit_pct=D(2), halted_reason="",
    trading_hours_utc=(8, 20), blackout_hours_utc=(2, 6),
)
GUARD = RiskGuard()


def reason(**changes) -> str:
    return GUARD.check_entry(replace(BASE, **changes)).reason


def test_allows_a_clean_entry():
    assert GUARD.check_entry(BASE).allowed


def test_r1_max_positions_per_bot_and_account():
    """SPEC R-1."""
    assert reason(open_positions_bot=2) == "MAX_POSITIONS"
    assert reason(open_positions_account=2, max_positions_bot=5) == "MAX_POSITIONS_ACCOUNT"
    assert reason(open_positions_bot=1, open_positions_account=1) == "OK"


def test_r2_sl_streak_stops_entries():
    """SPEC R-2: two stop-losses in a row stop entries."""
    assert reason(sl_streak=1) == "OK"
    assert reason(sl_streak=2) == "SL_STREAK"
    assert reason(sl_streak=2, sl_streak_limit=3) == "OK"  # the scaling preset allows 3


def test_r3_daily_loss_realised_plus_unrealised():
    """SPEC R-3: a loss ≥ 2 % of day-start equity stops entries."""
    assert reason(daily_pnl=D("-19.99")) == "OK"
    assert reason(daily_pnl=D(-20)) == "DAILY_LOSS_LIMIT"
    detail = GUARD.check_entry(replace(BASE, daily_pnl=D(-25))).detail
    assert "2.50%" in detail and "limit=2%" in detail


def test_r7_paused_symbol_is_denied():
    """SPEC R-7."""
    assert reason(paused=True) == "SYMBOL_PAUSED"


def test_s5_trading_hours_and_blackout():
    """SPEC S-5: 08:00–20:00 UTC by default; never 02:00–06:00."""
    assert reason(hour_utc=3) == "BLACKOUT_HOURS"
    assert reason(hour_utc=7) == "OUTSIDE_TRADING_HOURS"
    assert reason(hour_utc=20) == "OUTSIDE_TRADING_HOURS"
    assert reason(hour_utc=3, trading_hours_utc=(0, 24)) == "BLACKOUT_HOURS"
    assert reason(hour_utc=23, trading_hours_utc=(0, 24)) == "OK"


def test_fails_closed_on_missing_data():
    """Missing price, equity or day-start equity denies (nautilus fails open; we do not)."""
    assert reason(price=None) == "MISSING_DATA"
    assert reason(equity=None) == "MISSING_DATA"
    assert reason(day_start_equity=None) == "MISSING_DATA"
    assert reason(daily_pnl=None) == "MISSING_DATA"


def test_halted_day_blocks_before_anything_else():
    """A day stop holds for the rest of the UTC day, whatever else is true."""
    assert reason(halted_reason="SL_STREAK", sl_streak=0) == "SL_STREAK"


def test_first_denial_wins_in_pipeline_order():
    """The pipeline is ordered: data, day stop, pause, hours, symbol, R-1, R-2, R-3."""
    assert reason(paused=True, open_positions_bot=5, sl_streak=9) == "SYMBOL_PAUSED"
    assert reason(symbol_busy=True, open_positions_bot=5) == "POSITION_OPEN"


def test_a_crashing_check_denies():
    """An exception inside a check denies the entry (fail closed)."""

    def broken(ctx):
        raise ValueError("boom")

    decision = RiskGuard((check_data, broken)).check_entry(BASE)
    assert not decision.allowed and decision.reason == "RISK_CHECK_ERROR"
