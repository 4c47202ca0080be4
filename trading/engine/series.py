"""Market state computed in bulk for a replay (SPEC S-10, S-11, S-12, F-2, F-4; issue 17).

The live feeds update a symbol's market state one candle at a time (``IndicatorSet``,
``MarketStats``, ``RegimeDetector``, ``ScalpingV1.evaluate``). A replay knows every candle in
advance, so it computes the same quantities for the whole series at once — TA-Lib for the
indicators (the reference our incremental ones reproduce), numpy for the rolling statistics, the
efficiency ratio and the strategy's conditions — and the engine reads them at the candles where
something can happen. :class:`SeriesMarket` holds the arrays and, positioned on a candle with
:meth:`SeriesMarket.seek`, exposes the attributes the engine reads from the incremental objects
(``indicators``, ``stats``, ``regime``), so entries, exits, sizing and the filters run unchanged.

Equal to the incremental state: the strategy's verdict (side, score, components, 1+1) is the
same on every bundled candle and the indicators agree to 1e-12 relative (TA-Lib and the
incremental classes differ only in the order of a few float operations); ``tests/test_speed.py``
proves both on the bundled data, and the backtests give the same trades either way.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from statistics import median

import numpy as np

from trading.domain.filters import MarketStats
from trading.domain.indicators import IndicatorSet
from trading.domain.regime import Regime, RegimeDetector
from trading.domain.strategy import NO_SIGNAL, ScalpingV1

_REGIMES = (None, Regime.CHOPPY, Regime.RANGING, Regime.TRENDING)


def _floats(values: np.ndarray) -> array:
    """A float64 numpy array as an ``array('d')`` (a copy of the bytes)."""
    column = array("d")
    column.frombytes(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return column


@dataclass(slots=True)
class SeriesIndicators:
    """The attributes of :class:`~trading.domain.indicators.IndicatorSet` at the candle the
    market is positioned on (floats; NaN while an indicator warms up)."""

    rsi: float = float("nan")
    macd_hist: float = float("nan")
    prev_macd_hist: float = float("nan")
    atr: float = float("nan")
    volume_sma: float = float("nan")
    ema: float = float("nan")
    close: float = float("nan")
    volume: float = float("nan")
    ready: bool = False


class SeriesStats:
    """The F-2 / F-4 statistics of :class:`~trading.domain.filters.MarketStats` at the candle
    the market is positioned on: ``quote_volume_24h`` (quote), ``median_volume()`` (contracts)
    and ``median_atr()`` (quote), each None where the incremental one gives None."""

    __slots__ = ("quote_volume_24h", "_market", "_index")

    def __init__(self, market: "SeriesMarket") -> None:
        self._market = market
        self._index = -1
        self.quote_volume_24h: float | None = None

    def median_volume(self) -> float | None:
        """Median volume of the last ``median_window`` candles (None until that many)."""
        m, i = self._market, self._index
        w = m.median_window
        return median(m.volume[i - w + 1:i + 1]) if i + 1 >= w else None

    def median_atr(self) -> float | None:
        """Median ATR of the last ``median_window`` candles with an ATR (None until that many)."""
        m, i = self._market, self._index
        w = m.median_window
        first = m.first_atr
        if first < 0 or i - first + 1 < w:
            return None
        return median(m.atr[i - w + 1:i + 1])


class SeriesRegime:
    """The S-12 regime of :class:`~trading.domain.regime.RegimeDetector` at the candle the
    market is positioned on: ``regime`` (None while it warms up) and ``efficiency_ratio``."""

    __slots__ = ("regime", "efficiency_ratio")

    def __init__(self) -> None:
        self.regime: Regime | None = None
        self.efficiency_ratio: float | None = None


class SeriesMarket:
    """One symbol/timeframe's market state for every candle of a replayed series.

    Args:
        high, low, close, volume: the candles (float64 arrays of equal length n; quote,
            contracts), oldest first.
        timeframe_ms: candle length (the 24 h window of F-2 is a day of candles).
        strategies: bot name → its ScalpingV1 (S-11), evaluated on every candle at once.

    Attributes:
        indicators / stats / regime: the views the engine reads (see :meth:`seek`).
        side, score, components, one_plus_one: per bot, the strategy's verdict per candle
            (``ScalpingV1.evaluate_all``).
        high / low / close / volume / atr: the candles' prices and volumes and the ATR, as
            Python lists (the replay hands them to the engine as floats).
    """

    def __init__(self, high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray,
                 timeframe_ms: int, strategies: dict[str, ScalpingV1]) -> None:
        import talib  # the indicators' reference implementation (S-10)

        reference = IndicatorSet()
        stats = MarketStats.for_timeframe(timeframe_ms)
        detector = RegimeDetector()
        rsi = talib.RSI(close, reference._warm_rsi.period)
        atr = talib.ATR(high, low, close, reference._warm_atr.period)
        macd = reference._warm_macd
        _, _, hist = talib.MACD(close, macd.fast, macd.slow, macd.signal_period)
        volume_sma = talib.SMA(volume, reference._warm_vol.period)
        ema = talib.EMA(close, reference._warm_ema.period)
        prev_hist = np.full_like(hist, np.nan)
        prev_hist[1:] = hist[:-1]
        ready = ~(np.isnan(rsi) | np.isnan(atr) | np.isnan(hist) | np.isnan(volume_sma) | np.isnan(ema))
        self.n = len(close)
        self.median_window = stats.median_window
        valid_atr = np.flatnonzero(~np.isnan(atr))
        self.first_atr = int(valid_atr[0]) if len(valid_atr) else -1
        # F-2: quote volume of the last day of candles (a partial day sums what there is).
        quote = volume * close
        total = np.cumsum(quote)
        per_day = stats.candles_per_day
        qv24 = total.copy()
        qv24[per_day:] = total[per_day:] - total[:-per_day]
        # S-12: Kaufman's efficiency ratio over `period` changes, classified as the detector does.
        period = detector.period
        moves = np.abs(np.diff(close, prepend=close[:1]))
        regime_code = np.zeros(self.n, dtype=np.int8)
        er = np.full(self.n, np.nan)
        if self.n > period:
            noise = np.lib.stride_tricks.sliding_window_view(moves[1:], period).sum(axis=1)
            direction = np.abs(close[period:] - close[:-period])
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where(noise > 0.0, np.minimum(1.0, direction / noise), 0.0)
            er[period:] = ratio
            regime_code[period:] = np.where(ratio >= detector.trending_er, 3,
                                            np.where(ratio < detector.choppy_er, 1, 2))
        # array.array columns: 8 bytes a value (a list of floats takes 32) and indexing them
        # gives Python floats, which is all the engine reads, at the candles it steps.
        self.high = _floats(high)
        self.low = _floats(low)
        self.close = _floats(close)
        self.volume = _floats(volume)
        self.atr = _floats(atr)
        self._columns = (_floats(rsi), _floats(hist), _floats(prev_hist), self.atr, _floats(volume_sma),
                         _floats(ema), self.close, self.volume, array("b", ready.astype(np.int8).tobytes()))
        self._qv24 = _floats(qv24)
        self._er = _floats(er)
        self._regime = array("b", regime_code.tobytes())
        self.side: dict[str, array] = {}
        self.score: dict[str, array] = {}
        self.components: dict[str, array] = {}
        self.one_plus_one: dict[str, np.ndarray] = {}
        self._opo: dict[str, array] = {}
        for name, strategy in strategies.items():
            side, score, bits, opo = strategy.evaluate_all(rsi, hist, prev_hist, atr, volume, volume_sma, close, ema,
                                                          ready)
            self.side[name] = array("b", side.tobytes())
            self.score[name] = _floats(score)
            self.components[name] = array("b", bits.tobytes())
            self.one_plus_one[name] = opo
            self._opo[name] = array("b", opo.astype(np.int8).tobytes())
        self.indicators = SeriesIndicators()
        self.stats = SeriesStats(self)
        self.regime = SeriesRegime()
        self.index = -1

    def candidates(self, bot: str, floor: float) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the candles where ``bot``'s strategy finds a 1+1 candidate: those scoring
        at least ``floor`` (they go through the engine's entry pipeline) and those below it
        (recorded as SCORE_BELOW_MIN without entering the order path, SPEC S-13)."""
        opo = self.one_plus_one[bot]
        score = np.frombuffer(self.score[bot], dtype=np.float64)
        return np.flatnonzero(opo & (score >= floor)), np.flatnonzero(opo & (score < floor))

    def seek(self, i: int) -> None:
        """Position the views on candle ``i`` (0-based): what the incremental objects hold after
        that candle's update."""
        self.index = i
        ind = self.indicators
        (rsi, hist, prev_hist, atr, vsma, ema, close, volume, ready) = self._columns
        ind.rsi = rsi[i]
        ind.macd_hist = hist[i]
        ind.prev_macd_hist = prev_hist[i]
        ind.atr = atr[i]
        ind.volume_sma = vsma[i]
        ind.ema = ema[i]
        ind.close = close[i]
        ind.volume = volume[i]
        ind.ready = bool(ready[i])
        self.stats._index = i
        self.stats.quote_volume_24h = self._qv24[i]
        self.regime.regime = _REGIMES[self._regime[i]]
        er = self._er[i]
        self.regime.efficiency_ratio = None if er != er else er

    def found(self, bots) -> list | None:
        """The 1+1 candidates of ``bots`` (the feed's ``BotRuntime`` objects) on the candle the
        market is positioned on, as ``Engine.step`` finds them: [(bot, SignalCheck)] or None."""
        i = self.index
        found = None
        for bot in bots:
            if self._opo[bot.name][i]:
                if found is None:
                    found = []
                found.append((bot, self.check(bot.name, i)))
        return found

    def check(self, bot: str, i: int):
        """``bot``'s verdict on candle ``i`` as the :class:`~trading.domain.strategy.SignalCheck`
        ``ScalpingV1.evaluate`` returns (None without a signal)."""
        from trading.domain.models import Side
        from trading.domain.strategy import LONG, SignalCheck, component_names

        side = self.side[bot][i]
        if side == NO_SIGNAL:
            return None
        return SignalCheck(Side.LONG if side == LONG else Side.SHORT, self.score[bot][i],
                           component_names(self.components[bot][i]), bool(self._opo[bot][i]))
