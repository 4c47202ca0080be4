"""Pre-trade filters (SPEC F-1 … F-5): reason codes, boundaries, fail closed, real market rules."""

from __future__ import annotations

import statistics
from dataclasses import replace
from decimal import Decimal as D

import pytest
from pydantic import ValidationError

from trading.domain.filters import (
    FILTER_CHECKS,
    EntryLog,
    FilterConfig,
    FilterContext,
    MarketStats,
    check_liquidity,
    check_notional,
    check_safety,
    check_spread,
    check_volatility,
    liquidity_floor,
    run_filters,
)
from trading.domain.indicators import ATR
from trading.adapters.marketdata import default_data_dir, load_candles

CFG = FilterConfig()
NOW = 1_750_000_000_000
MIN = 60_000

# A clean XRP entry: every filter passes.
BASE = FilterContext(
    symbol="XRP/USDT:USDT", spread_pct=0.02, quote_volume_24h=5e8, intended_notional=D(375),
    equity=D(400), atr=0.005, close=2.2, tick_size=D("0.0001"), volume=150_000.0,
    median_volume=100_000.0, median_atr=0.005, last_entry_ms=None, entries_last_hour=0,
    now_ms=NOW, rounded_notional=D("374.88"), exchange_min_notional=D(5),
)


def decide(**changes):
    return run_filters(replace(BASE, **changes), CFG)


def reason(**changes) -> str:
    return decide(**changes).reason


def test_f_allows_a_clean_entry_and_checks_in_spec_order():
    """SPEC F-1 … F-5: a clean candidate passes; the pipeline runs F-1 to F-5 in order."""
    assert run_filters(BASE, CFG).allowed
    assert FILTER_CHECKS == (check_spread, check_liquidity, check_volatility, check_safety, check_notional)
    # Both spread and notional fail: the first one in SPEC order is reported (S-13).
    assert reason(spread_pct=0.5, rounded_notional=D(1)) == "SPREAD_TOO_WIDE"


def test_f1_spread_strictly_below_max():
    """SPEC F-1: spread < 0.1 % of mid; 0.1 % itself is too wide."""
    assert reason(spread_pct=0.0999) == "OK"
    assert reason(spread_pct=0.1) == "SPREAD_TOO_WIDE"
    assert decide(spread_pct=0.12).detail == "spread=0.12% max=0.1%"


def test_f1_f2_missing_market_data_fails_closed():
    """SPEC F-1, F-2: no spread or no 24 h volume → deny, naming the field."""
    d = decide(spread_pct=None)
    assert (d.allowed, d.reason) == (False, "MISSING_DATA") and "spread_pct" in d.detail
    d = decide(quote_volume_24h=None)
    assert d.reason == "MISSING_DATA" and "quote_volume_24h" in d.detail
    assert reason(quote_volume_24h=float("nan")) == "MISSING_DATA"


@pytest.mark.parametrize(
    ("equity", "floor"),
    [
        ("0", 20000), ("-50", 20000), ("120", 20000), ("369.99", 20000),
        ("370", 25000), ("620", 25000), ("100000", 25000),
    ],
)
def test_f2_liquidity_floor_spec_example(equity, floor):
    """SPEC F-2: floor 20 000 up to 369.99 equity, 25 000 (the cap) from 370."""
    assert liquidity_floor(D(equity), CFG) == D(floor)


def test_f2_liquidity_floor_grows_per_250_above_120_until_cap():
    """SPEC F-2: +5 000 per full 250 of equity above 120 (cap raised to see the steps)."""
    cfg = FilterConfig(liquidity_floor_cap=D(40000))
    assert [liquidity_floor(D(e), cfg) for e in ("369.99", "370", "619.99", "620", "870", "5000")] == [
        D(20000), D(25000), D(25000), D(30000), D(35000), D(40000)
    ]


def test_f2_volume_must_exceed_100x_notional_and_the_floor():
    """SPEC F-2: 24 h quote volume > 100 × intended notional (strict) and ≥ floor."""
    assert reason(intended_notional=D(375), quote_volume_24h=37_500.01) == "OK"
    assert reason(intended_notional=D(375), quote_volume_24h=37_500.0) == "LOW_LIQUIDITY"
    # Small notional: the floor binds (25 000 at 400 equity, 20 000 at 200).
    assert reason(intended_notional=D(10), quote_volume_24h=25_000.0) == "OK"
    assert reason(intended_notional=D(10), quote_volume_24h=24_999.99) == "LOW_LIQUIDITY"
    assert reason(intended_notional=D(10), equity=D(200), quote_volume_24h=20_000.0) == "OK"
    detail = decide(intended_notional=D(375), quote_volume_24h=30_000.0).detail
    assert "volume24h=30000" in detail and "need>37500" in detail and "floor=25000" in detail


def test_f3_volatility_atr_pct_boundary():
    """SPEC F-3: ATR% of close ≥ 0.17 % (configurable 0.17–0.19)."""
    assert reason(close=100.0, atr=0.17, tick_size=D("0.01")) == "OK"
    assert reason(close=100.0, atr=0.1699, tick_size=D("0.01")) == "LOW_VOLATILITY"
    assert reason(close=100.0, atr=0.18, tick_size=D("0.01")) == "OK"
    cfg = FilterConfig(min_atr_pct=0.19)
    assert run_filters(replace(BASE, close=100.0, atr=0.18, tick_size=D("0.01")), cfg).reason == "LOW_VOLATILITY"
    assert "min=0.17%" in decide(close=100.0, atr=0.1, tick_size=D("0.01")).detail


def test_f3_atr_at_least_three_real_ticks(markets):
    """SPEC F-3: ATR ≥ 3 × tick size, with the REAL Binance tick sizes (BTC 0.1, XRP 0.0001)."""
    btc, xrp = markets["BTC/USDT:USDT"], markets["XRP/USDT:USDT"]
    assert (btc.tick_size, xrp.tick_size) == (D("0.1"), D("0.0001"))
    # ATR% is generous here (close tiny vs ATR) so only the tick rule can deny.
    ctx = replace(BASE, close=0.01, tick_size=btc.tick_size, median_atr=0.1)
    assert run_filters(replace(ctx, atr=0.3), CFG).reason == "OK"  # exactly 3 ticks
    assert run_filters(replace(ctx, atr=0.2999), CFG).reason == "LOW_VOLATILITY"
    ctx = replace(BASE, close=0.0001, tick_size=xrp.tick_size, median_atr=0.0001)
    assert run_filters(replace(ctx, atr=0.0003), CFG).reason == "OK"
    d = run_filters(replace(ctx, atr=0.00029), CFG)
    assert d.reason == "LOW_VOLATILITY" and "3 ticks" in d.detail


def test_f3_unknown_atr_close_or_tick_fails_closed():
    """SPEC F-3: NaN ATR (warming up), a zero close or a zero tick size → MISSING_DATA."""
    assert "atr" in decide(atr=float("nan")).detail
    assert reason(atr=float("nan")) == "MISSING_DATA"
    assert reason(close=0.0) == "MISSING_DATA"
    assert reason(tick_size=D(0)) == "MISSING_DATA"


def test_f4_volume_and_atr_vs_median():
    """SPEC F-4: candle volume ≥ 1.2 × median volume; ATR ≥ 0.9 × median ATR."""
    assert reason(volume=120_000.0) == "OK"
    assert reason(volume=119_999.0) == "LOW_VOLUME_VS_MEDIAN"
    # Binary-exact values: 0.9 × 0.5 is exactly 0.45 in float (0.9 × 0.01 is not 0.009).
    assert reason(atr=0.45, median_atr=0.5, close=100.0, tick_size=D("0.01")) == "OK"
    assert reason(atr=0.449, median_atr=0.5, close=100.0, tick_size=D("0.01")) == "LOW_ATR_VS_MEDIAN"
    assert reason(median_volume=None) == "MISSING_DATA"
    assert "median_atr" in decide(median_atr=None).detail


def test_f4_cooldown_300_seconds_per_symbol():
    """SPEC F-4: ≥ 300 s since the last entry on that symbol."""
    assert reason(last_entry_ms=NOW - 300_000) == "OK"
    d = decide(last_entry_ms=NOW - 299_000)
    assert d.reason == "ENTRY_COOLDOWN" and "299s" in d.detail and "min=300s" in d.detail


def test_f4_at_most_six_entries_per_hour():
    """SPEC F-4: ≤ 6 entries per hour per bot — the 7th is refused."""
    assert reason(entries_last_hour=5) == "OK"
    assert decide(entries_last_hour=6).detail == "entries=6 max=6 per hour"
    assert reason(entries_last_hour=6) == "ENTRY_RATE_LIMIT"


def test_f4_entry_log_cooldown_and_rolling_hour():
    """SPEC F-4: the EntryLog answers last entry per symbol and entries in the last hour."""
    log = EntryLog()
    assert log.last_entry_ms("BTC/USDT:USDT") is None and log.entries_in_last_hour(NOW) == 0
    for k in range(6):
        log.record("BTC/USDT:USDT" if k % 2 else "XRP/USDT:USDT", NOW + k * 5 * MIN)
    assert log.last_entry_ms("BTC/USDT:USDT") == NOW + 25 * MIN
    assert log.last_entry_ms("XRP/USDT:USDT") == NOW + 20 * MIN
    assert log.entries_in_last_hour(NOW + 30 * MIN) == 6
    assert log.entries_in_last_hour(NOW + 60 * MIN - 1) == 6
    assert log.entries_in_last_hour(NOW + 60 * MIN) == 5  # the first is an hour old now
    assert log.entries_in_last_hour(NOW + 85 * MIN) == 0
    assert log.last_entry_ms("BTC/USDT:USDT") == NOW + 25 * MIN  # pruning keeps the cooldown


def test_f5_notional_after_rounding_at_least_exchange_min_and_5(markets):
    """SPEC F-5: rounded notional ≥ max(exchange MIN_NOTIONAL, 5 quote) — real BTC min is 100."""
    assert reason(rounded_notional=D(5)) == "OK"
    assert reason(rounded_notional=D("4.99")) == "NOTIONAL_BELOW_MINIMUM"
    assert reason(rounded_notional=D(4), exchange_min_notional=D(1)) == "NOTIONAL_BELOW_MINIMUM"
    btc_min = markets["BTC/USDT:USDT"].min_notional
    assert btc_min == D(100)
    assert reason(rounded_notional=D("99.99"), exchange_min_notional=btc_min) == "NOTIONAL_BELOW_MINIMUM"
    assert decide(rounded_notional=D("99.99"), exchange_min_notional=btc_min).detail == "notional=99.99 min=100.0"
    assert reason(rounded_notional=D(100), exchange_min_notional=btc_min) == "OK"


def test_f_exception_in_a_check_denies_with_filter_error():
    """SPEC F-1 … F-5 fail closed: a crashing check denies (FILTER_ERROR) instead of passing."""

    def broken(ctx, cfg):
        raise ZeroDivisionError("boom")

    d = run_filters(BASE, CFG, checks=(broken, *FILTER_CHECKS))
    assert (d.allowed, d.reason) == (False, "FILTER_ERROR") and "broken" in d.detail


def test_f_config_defaults_validation_and_frozen():
    """SPEC F-1 … F-5 defaults; unknown keys and out-of-range ATR% are rejected; frozen."""
    assert (CFG.max_spread_pct, CFG.liquidity_multiple, CFG.min_atr_pct, CFG.min_atr_ticks) == (0.1, 100, 0.17, 3)
    assert (CFG.min_seconds_between_entries, CFG.max_entries_per_hour, CFG.min_notional_floor) == (300, 6, 5)
    for bad in ({"min_atr_pct": 0.01}, {"min_atr_pct": 1.5}, {"spread": 1},
                {"liquidity_floor_cap": 100}, {"liquidity_floor_every": 0}):
        with pytest.raises(ValidationError):
            FilterConfig(**bad)
    with pytest.raises(ValidationError):
        CFG.max_spread_pct = 1.0  # type: ignore[misc]


def test_f2_f4_market_stats_on_real_btc_candles():
    """SPEC F-2, F-4: MarketStats' rolling 24 h quote volume and medians equal a direct
    recomputation on every REAL BTC 5m candle."""
    series = load_candles(default_data_dir(), "BTC/USDT:USDT", "5m")
    stats = MarketStats.for_timeframe(300_000, median_window=50)
    assert stats.candles_per_day == 288 and stats.quote_volume_24h is None
    atr = ATR(14)
    atrs: list[float] = []
    for t in range(len(series)):
        c, v = series.close[t], series.volume[t]
        a = atr.update(series.high[t], series.low[t], c)
        if a is not None:
            atrs.append(a)
        stats.update(c, v, a)
        lo = max(0, t - 287)
        expected = sum(series.volume[i] * series.close[i] for i in range(lo, t + 1))
        assert stats.quote_volume_24h == pytest.approx(expected, rel=1e-9), t
        if t % 97 == 0 or t < 60:
            vols = series.volume[max(0, t - 49): t + 1]
            assert stats.median_volume() == (statistics.median(vols) if t >= 49 else None), t
            assert stats.median_atr() == (statistics.median(atrs[-50:]) if len(atrs) >= 50 else None), t
    assert stats.candles == len(series)


def test_f2_market_stats_resyncs_after_a_volume_spike():
    """SPEC F-2: a huge quote-volume candle leaves no residue once out of the 24 h window."""
    stats = MarketStats(candles_per_day=4, median_window=3)
    stats.update(1.0, 1e18, None)
    for _ in range(4):
        stats.update(1.0, 0.5, None)
    assert stats.quote_volume_24h == 2.0


def test_f4_market_stats_skips_warming_atr_and_waits_for_a_full_window():
    """SPEC F-4: NaN/None ATRs (indicator warm-up) never enter the ATR median, and no median
    is given before the window is full (F-4 then denies with MISSING_DATA)."""
    stats = MarketStats(candles_per_day=288, median_window=3)
    stats.update(10.0, 1.0, float("nan"))
    stats.update(10.0, 2.0, None)
    assert stats.median_atr() is None and stats.median_volume() is None
    stats.update(10.0, 3.0, 0.4)
    assert stats.median_volume() == 2.0 and stats.median_atr() is None
    stats.update(10.0, 4.0, 0.2)
    assert stats.median_atr() is None  # only two real ATRs so far
    stats.update(10.0, 5.0, 0.3)
    assert stats.median_atr() == 0.3 and stats.median_volume() == 4.0
    stats.update(10.0, 6.0, 0.9)  # 0.4 leaves the window
    assert stats.median_atr() == 0.3
    stats.update(10.0, 7.0, 1.0)
    assert stats.median_atr() == 0.9
