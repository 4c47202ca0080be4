"""Incremental indicators (SPEC S-10) checked against TA-Lib on the bundled REAL Binance candles.

TA-Lib (``talib``, the C library's reference implementation) is the independent oracle: every
indicator must agree to 1e-6 relative from its first value, and start at the same candle.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib

from trading.domain.errors import ConfigError
from trading.domain.indicators import ATR, EMA, MACD, RSI, SMA, IndicatorSet
from trading.adapters.marketdata import default_data_dir, load_candles

SYMBOLS = ["BTC/USDT:USDT", "XRP/USDT:USDT"]
N_CANDLES = 5_000
REL, ABS = 1e-6, 1e-12


@pytest.fixture(scope="module", params=SYMBOLS)
def candles(request):
    """(symbol, high, low, close, volume) of the first N_CANDLES real 1m candles, as Python
    float lists (what the engine passes) — numpy copies are made where TA-Lib needs them."""
    series = load_candles(default_data_dir(), request.param, "1m")
    assert len(series) >= N_CANDLES
    cols = [list(col[:N_CANDLES]) for col in (series.high, series.low, series.close, series.volume)]
    return (request.param, *cols)


def _np(values):
    return np.asarray(values, dtype=np.float64)


def _assert_matches_talib(ours: list[float | None], ref: np.ndarray, what: str) -> None:
    """``ours`` is None exactly where TA-Lib gives NaN (so the first value is at the same
    index) and within 1e-6 relative elsewhere."""
    assert len(ours) == len(ref)
    first_ours = next(i for i, x in enumerate(ours) if x is not None)
    first_ref = int(np.argmax(~np.isnan(ref)))
    assert first_ours == first_ref, f"{what}: first value at {first_ours}, TA-Lib at {first_ref}"
    for i, (x, r) in enumerate(zip(ours, ref)):
        if x is None:
            assert math.isnan(r), f"{what}[{i}]: None but TA-Lib has {r}"
        else:
            assert math.isclose(x, r, rel_tol=REL, abs_tol=ABS), f"{what}[{i}]: {x} != TA-Lib {r}"


def _run(indicator, *columns) -> list[float | None]:
    """Feed the columns row by row; also check that update's return equals the attribute."""
    out = []
    for row in zip(*columns):
        value = indicator.update(*row)
        assert value == indicator.value
        out.append(value)
    return out


@pytest.mark.parametrize("period", [14, 7])
def test_s10_rsi_matches_talib(candles, period):
    """S-10: RSI (Wilder smoothing, seeded with the mean of the first `period` changes)."""
    symbol, _, _, close, _ = candles
    ours = _run(RSI(period), close)
    _assert_matches_talib(ours, talib.RSI(_np(close), period), f"{symbol} RSI({period})")


@pytest.mark.parametrize("period", [14, 5])
def test_s10_atr_matches_talib(candles, period):
    """S-10: ATR (true range with the previous close, Wilder smoothing, TA-Lib seed)."""
    symbol, high, low, close, _ = candles
    ours = _run(ATR(period), high, low, close)
    ref = talib.ATR(_np(high), _np(low), _np(close), period)
    _assert_matches_talib(ours, ref, f"{symbol} ATR({period})")


@pytest.mark.parametrize("period", [20, 3])
def test_s10_volume_sma_matches_talib(candles, period):
    """S-10: SMA of the volume (running sum over a ring buffer)."""
    symbol, _, _, _, volume = candles
    ours = _run(SMA(period), volume)
    _assert_matches_talib(ours, talib.SMA(_np(volume), period), f"{symbol} SMA({period})")


@pytest.mark.parametrize("period", [50, 9])
def test_s10_ema_matches_talib(candles, period):
    """S-10: EMA seeded with the SMA of the first `period` closes."""
    symbol, _, _, close, _ = candles
    ours = _run(EMA(period), close)
    _assert_matches_talib(ours, talib.EMA(_np(close), period), f"{symbol} EMA({period})")


@pytest.mark.parametrize("fast, slow, signal", [(12, 26, 9), (5, 35, 5), (3, 10, 1)])
def test_s10_macd_matches_talib_from_first_value(candles, fast, slow, signal):
    """S-10: MACD line, signal and histogram.

    No warm-up allowance is needed: MACD reproduces TA-Lib's seeding (the fast EMA is seeded at
    index slow − 1 with the mean of the last `fast` of the first `slow` closes, not run from
    index fast − 1), so the values agree from TA-Lib's first output on.
    """
    symbol, _, _, close, _ = candles
    macd = MACD(fast, slow, signal)
    lines, signals, hists = [], [], []
    for c in close:
        value = macd.update(c)
        assert value == macd.macd
        lines.append(macd.macd)
        signals.append(macd.signal)
        hists.append(macd.histogram)
    ref_line, ref_signal, ref_hist = talib.MACD(_np(close), fast, slow, signal)
    name = f"{symbol} MACD({fast},{slow},{signal})"
    _assert_matches_talib(lines, ref_line, name + " line")
    _assert_matches_talib(signals, ref_signal, name + " signal")
    _assert_matches_talib(hists, ref_hist, name + " histogram")


def _nan_if_none(x: float | None) -> float:
    return math.nan if x is None else x


def _same(a: float, b: float) -> bool:
    """Bit-for-bit equal floats, NaN equal to NaN."""
    return a == b or (math.isnan(a) and math.isnan(b))


def test_s10_indicator_set_equals_individual_classes(candles):
    """S-10: IndicatorSet's flat attributes are exactly the individual classes' values, during
    warm-up (NaN where a class still gives None) and on the inlined hot path."""
    _, high, low, close, volume = candles
    ind = IndicatorSet()
    rsi, macd, atr, vol, ema = RSI(14), MACD(12, 26, 9), ATR(14), SMA(20), EMA(50)
    prev_hist = math.nan
    for i, (h, low_, c, v) in enumerate(zip(high, low, close, volume)):
        ready = ind.update(h, low_, c, v)
        rsi.update(c)
        atr.update(h, low_, c)
        vol.update(v)
        ema.update(c)
        macd.update(c)
        assert ready is ind.ready
        expected = {
            "rsi": rsi.value, "atr": atr.value, "volume_sma": vol.value, "ema": ema.value,
            "macd": macd.macd, "macd_signal": macd.signal, "macd_hist": macd.histogram,
            "prev_macd_hist": prev_hist, "close": c, "volume": v,
        }
        for name, value in expected.items():
            got = getattr(ind, name)
            assert isinstance(got, float), (i, name)
            assert _same(got, _nan_if_none(value)), f"candle {i} {name}: {got} != {value}"
        prev_hist = _nan_if_none(macd.histogram)


def test_s10_indicator_set_matches_talib(candles):
    """S-10: end to end, the IndicatorSet's ready values agree with TA-Lib."""
    _, high, low, close, volume = candles
    h, lo, c, v = _np(high), _np(low), _np(close), _np(volume)
    ref = {
        "rsi": talib.RSI(c, 14), "atr": talib.ATR(h, lo, c, 14), "volume_sma": talib.SMA(v, 20),
        "ema": talib.EMA(c, 50),
    }
    ref["macd"], ref["macd_signal"], ref["macd_hist"] = talib.MACD(c, 12, 26, 9)
    ind = IndicatorSet()
    for i, row in enumerate(zip(high, low, close, volume)):
        if not ind.update(*row):
            continue
        for name, series in ref.items():
            assert math.isclose(getattr(ind, name), series[i], rel_tol=REL, abs_tol=ABS), (i, name)
        assert math.isclose(ind.prev_macd_hist, ref["macd_hist"][i - 1], rel_tol=REL, abs_tol=ABS)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # defaults: EMA(50) is the slowest, ready at index 49
        {"ema_period": 10},  # MACD(12,26,9) slowest, index 33
        {"ema_period": 10, "rsi_period": 40},  # RSI slowest, index 40
        {"ema_period": 10, "atr_period": 45},  # ATR slowest, index 45
        {"ema_period": 10, "volume_period": 60},  # volume SMA slowest, index 59
        {"ema_period": 10, "macd_slow": 40, "macd_signal": 12},  # MACD, index 50
    ],
)
def test_s10_ready_flips_exactly_when_slowest_indicator_warms(candles, kwargs):
    """S-10: update() returns False until the slowest indicator's first value, True from then
    on; each indicator's first value index is its TA-Lib lookback."""
    _, high, low, close, volume = candles
    p = {"rsi_period": 14, "macd_fast": 12, "macd_slow": 26, "macd_signal": 9, "atr_period": 14,
         "volume_period": 20, "ema_period": 50, **kwargs}
    first_ready = max(
        p["rsi_period"], p["atr_period"], p["macd_slow"] + p["macd_signal"] - 2,
        p["volume_period"] - 1, p["ema_period"] - 1,
    )
    ind = IndicatorSet(**p)
    flags = [ind.update(*row) for row in zip(high[:200], low[:200], close[:200], volume[:200])]
    assert flags == [i >= first_ready for i in range(200)]
    # At the flip every value is a number; prev_macd_hist too unless MACD itself was last.
    assert not math.isnan(ind.rsi + ind.atr + ind.volume_sma + ind.ema + ind.macd_hist)


def test_s10_prev_macd_hist_nan_when_macd_warms_last():
    """S-10: with MACD the slowest, there is no previous histogram on the first ready candle."""
    ind = IndicatorSet(ema_period=5)
    closes = [100.0 + math.sin(i / 3.0) for i in range(40)]
    flags = [ind.update(c + 1.0, c - 1.0, c, 10.0) for c in closes]
    assert flags.index(True) == 33
    ind = IndicatorSet(ema_period=5)
    for c in closes[:34]:
        ind.update(c + 1.0, c - 1.0, c, 10.0)
    assert math.isnan(ind.prev_macd_hist) and not math.isnan(ind.macd_hist)
    hist = ind.macd_hist
    ind.update(closes[34] + 1.0, closes[34] - 1.0, closes[34], 10.0)
    assert ind.prev_macd_hist == hist


def test_s10_rsi_flat_market_is_neutral():
    """S-10: a perfectly flat window gives RSI 50 (TA-Lib gives 0, which would read as
    "extremely oversold"; this is the one deliberate difference from TA-Lib)."""
    rsi = RSI(14)
    values = [rsi.update(2.5) for _ in range(20)]
    assert values[:14] == [None] * 14
    assert values[14:] == [50.0] * 6
    ind = IndicatorSet(ema_period=5, macd_slow=13, macd_signal=2)
    for _ in range(30):
        ind.update(2.5, 2.5, 2.5, 0.0)
    assert ind.ready and ind.rsi == 50.0 and ind.atr == 0.0 and ind.macd_hist == 0.0


def test_s10_volume_sma_has_no_rounding_drift():
    """S-10: after a huge volume spike the running sum is re-summed once per lap, so a window
    of zero volumes averages exactly 0 (a plain running sum can keep a residue, even < 0)."""
    sma = SMA(20)
    ind = IndicatorSet()
    # The spike swallows the low bits of the quiet volumes added while it is in the window; a
    # plain running sum then ends at -0.023 on the all-zero window, not 0.
    quiet = [0.1 * (i % 7) + 0.013 for i in range(30)]
    volumes = [0.1 * (i % 7) for i in range(100)] + [3.3e15] + quiet + [0.0] * 60
    for v in volumes:
        sma.update(v)
        ind.update(1.0, 1.0, 1.0, v)
    assert sma.value == 0.0 and ind.volume_sma == 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: SMA(0), lambda: EMA(-1), lambda: RSI(2.5), lambda: ATR(True),
        lambda: MACD(26, 12, 9), lambda: MACD(12, 12, 9), lambda: IndicatorSet(volume_period=0),
    ],
)
def test_s10_invalid_periods_rejected(make):
    """S-10: periods are whole positive candle counts and MACD needs fast < slow."""
    with pytest.raises(ConfigError):
        make()
