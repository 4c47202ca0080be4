"""ScalpingV1 score and the 1+1 rule (SPEC S-11), long and short."""

from __future__ import annotations

from trading.domain.config import StrategyConfig
from trading.domain.models import Side
from trading.domain.strategy import ATR, MACD, RSI, TREND, VOLUME, ScalpingV1

STRATEGY = ScalpingV1(StrategyConfig())
# Neutral market: RSI 50, histogram flat positive, average volume, tiny ATR, price at the EMA.
NEUTRAL = dict(rsi=50.0, macd_hist=0.0, prev_macd_hist=0.0, atr=0.01, volume=100.0,
               volume_sma=100.0, close=100.0, ema=100.0)


def evaluate(**changes):
    return STRATEGY.evaluate(**{**NEUTRAL, **changes})


def test_s11_no_momentum_no_candidate():
    """Without RSI extreme or MACD turn there is nothing to score (the hot path's exit)."""
    assert evaluate(volume=500.0, atr=0.5) is None


def test_s11_one_plus_one_needs_participation():
    """RSI oversold alone is momentum without participation: not 1+1."""
    check = evaluate(rsi=25.0)
    assert check.side is Side.LONG
    assert check.components == (RSI,)
    assert not check.one_plus_one


def test_s11_long_full_score():
    """RSI oversold + MACD turning up + volume surge + ATR in band + above EMA = 4.6."""
    check = evaluate(rsi=25.0, prev_macd_hist=-0.3, macd_hist=-0.1, volume=200.0, atr=0.5,
                     close=101.0)
    assert check.side is Side.LONG
    assert set(check.components) == {RSI, MACD, VOLUME, ATR, TREND}
    assert check.score == 4.6
    assert check.one_plus_one


def test_s11_short_mirrors_long():
    """RSI overbought + histogram turning down from above zero + volume → short."""
    check = evaluate(rsi=75.0, prev_macd_hist=0.3, macd_hist=0.1, volume=160.0, close=99.0)
    assert check.side is Side.SHORT
    assert set(check.components) == {RSI, MACD, VOLUME, TREND}
    assert check.score == 3.6
    assert check.one_plus_one


def test_s11_atr_band_counts_as_participation():
    """ATR % of price inside [0.17 %, 2 %] is the volatility participation condition."""
    assert evaluate(rsi=25.0, atr=0.17).one_plus_one  # 0.17 % exactly
    assert not evaluate(rsi=25.0, atr=0.16).one_plus_one
    assert not evaluate(rsi=25.0, atr=2.5).one_plus_one  # too wild


def test_s11_macd_turn_must_start_below_zero_for_long():
    """A rising histogram above zero is not a turn."""
    assert evaluate(prev_macd_hist=0.1, macd_hist=0.2, volume=200.0) is None
