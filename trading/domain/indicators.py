"""Incremental technical indicators for the replay hot path (SPEC S-10).

Every ``update`` is O(1) in pure float arithmetic: no numpy, no Decimal and no container
allocation per candle, because the replay must sustain ≥ 400,000 candles/s over all symbols on
a two-core machine. The numbers reproduce TA-Lib 0.6 (default compatibility, unstable period 0):
same seeding, same first output index and, where practical, the same order of floating-point
operations, so ``tests/test_indicators.py`` checks them against ``talib`` on real candles.

Units: prices (open/high/low/close, ATR, MACD, EMA) in quote currency; volume in contracts.

Classes:
    :class:`SMA`, :class:`EMA`, :class:`RSI`, :class:`ATR`, :class:`MACD` — one indicator each,
    ``update(...)`` returns None until warm, then the latest value (also kept as an attribute).
    :class:`IndicatorSet` — the per-symbol bundle the engine calls once per closed candle.
"""

from __future__ import annotations

from trading.domain.errors import ConfigError

_NAN = float("nan")


def _check_period(name: str, period: object) -> int:
    """``period`` as a positive int, else ConfigError naming the field."""
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise ConfigError(f"{name} must be a positive whole number of candles, got {period!r}")
    return period


class SMA:
    """Simple moving average over the last ``period`` values (TA-Lib ``SMA``).

    A running sum over a ring buffer, O(1) per value. As in TA-Lib the carried sum holds the
    last ``period - 1`` values; the new value is added, the average taken, then the value that
    leaves the window next is subtracted. To stop rounding drift from accumulating over millions
    of candles (a huge volume spike followed by quiet candles could otherwise leave a residue,
    even a slightly negative average of zero volumes), the sum is recomputed from the buffer
    once per lap of the ring — O(period) every ``period`` candles, i.e. O(1) amortised.

    Args:
        period: window length in values (candles), ≥ 1.

    Attributes:
        period: the window length.
        value: the latest average (input unit, e.g. contracts for volume), None until
            ``period`` values have been seen.
    """

    __slots__ = ("period", "value", "_buf", "_idx", "_carry", "_count")

    def __init__(self, period: int = 20) -> None:
        self.period = _check_period("SMA period", period)
        self.value: float | None = None
        # Pre-sized once so that update never grows a container.
        self._buf = [0.0] * period
        self._idx = 0  # slot the next value is written to (it holds the value that left)
        self._carry = 0.0  # sum of the newest period - 1 values
        self._count = 0

    def update(self, x: float) -> float | None:
        """Add one value; return the average of the last ``period`` values, or None while
        fewer than ``period`` have been seen."""
        buf = self._buf
        i = self._idx
        buf[i] = x
        j = i + 1
        if j == self.period:
            j = 0
            # End of a lap: the buffer is exactly the current window (also on the first lap,
            # which ends with the period-th value); resumming it discards any accumulated
            # rounding residue (see class docstring).
            total = sum(buf)
        else:
            total = self._carry + x
        self._carry = total - buf[j]
        self._idx = j
        if self._count < self.period:
            self._count += 1
            if self._count < self.period:
                # Warm-up: buf[j] is still the 0.0 placeholder, so nothing was subtracted.
                return None
        value = total / self.period
        self.value = value
        return value


class EMA:
    """Exponential moving average, alpha = 2 / (period + 1) (TA-Lib ``EMA``).

    Seeded, as TA-Lib does, with the simple average of the first ``period`` values (the first
    output is at index ``period - 1``); afterwards ``ema += (x - ema) * alpha``, written in
    TA-Lib's operation order ``(x - ema) * alpha + ema``.

    Args:
        period: length in values (candles), ≥ 1.

    Attributes:
        period, alpha: the parameters.
        value: the latest EMA (input unit, quote for prices), None until warm.
    """

    __slots__ = ("period", "alpha", "value", "_sum", "_count")

    def __init__(self, period: int = 50) -> None:
        self.period = _check_period("EMA period", period)
        self.alpha = 2.0 / (period + 1)
        self.value: float | None = None
        self._sum = 0.0
        self._count = 0

    def update(self, x: float) -> float | None:
        """Add one value; return the EMA, or None while fewer than ``period`` values seen."""
        value = self.value
        if value is not None:
            value = (x - value) * self.alpha + value
        else:
            self._sum += x
            self._count += 1
            if self._count < self.period:
                return None
            value = self._sum / self.period
        self.value = value
        return value


def _rsi(avg_gain: float, avg_loss: float) -> float:
    """RSI from Wilder's average gain and loss: 100 · gain / (gain + loss).

    A perfectly flat window (gain = loss = 0) gives the neutral 50. TA-Lib returns 0 there —
    and whenever gain + loss < 1e-8 in absolute terms, which on sub-cent assets is an ordinary
    quiet market — and 0 would read as "extremely oversold" to the strategy.
    """
    total = avg_gain + avg_loss
    return 100.0 * (avg_gain / total) if total != 0.0 else 50.0


class RSI:
    """Relative Strength Index with Wilder smoothing (Wilder 1978 / TA-Lib ``RSI``).

    Seeded with the mean gain and mean loss of the first ``period`` close-to-close changes
    (first output at index ``period``); then ``avg = (avg · (period − 1) + x) / period``
    for gains and losses. RSI = 100 · avg_gain / (avg_gain + avg_loss); 50 on a perfectly flat
    window (see :func:`_rsi`; the only difference from TA-Lib).

    Args:
        period: number of changes, ≥ 1 (14 by default).

    Attributes:
        period: the parameter.
        value: the latest RSI in [0, 100], None until warm.
        avg_gain, avg_loss: Wilder averages of the up and down moves (quote).
    """

    __slots__ = ("period", "value", "avg_gain", "avg_loss", "_prev", "_count")

    def __init__(self, period: int = 14) -> None:
        self.period = _check_period("RSI period", period)
        self.value: float | None = None
        self.avg_gain = 0.0
        self.avg_loss = 0.0
        self._prev: float | None = None
        self._count = 0  # changes seen, up to period

    def update(self, close: float) -> float | None:
        """Add one close (quote); return the RSI, or None until ``period`` changes are seen."""
        prev = self._prev
        self._prev = close
        if prev is None:
            return None
        change = close - prev
        n = self.period
        if self._count == n:
            # TA-Lib's order: avg *= n - 1; avg += move; avg /= n.
            if change < 0.0:
                self.avg_gain = self.avg_gain * (n - 1) / n
                self.avg_loss = (self.avg_loss * (n - 1) - change) / n
            else:
                self.avg_gain = (self.avg_gain * (n - 1) + change) / n
                self.avg_loss = self.avg_loss * (n - 1) / n
        else:
            # Warm-up: the averages hold plain sums until the period-th change.
            if change < 0.0:
                self.avg_loss -= change
            else:
                self.avg_gain += change
            self._count += 1
            if self._count < n:
                return None
            self.avg_gain /= n
            self.avg_loss /= n
        value = _rsi(self.avg_gain, self.avg_loss)
        self.value = value
        return value


class ATR:
    """Average True Range with Wilder smoothing (Wilder 1978 / TA-Lib ``ATR``).

    True range = max(high, previous close) − min(low, previous close), i.e. the largest of
    high − low, |high − prev close| and |low − prev close|; the first candle has no previous
    close and yields no true range. Seeded with the mean of the first ``period`` true ranges
    (first output at index ``period``), then ``atr = (atr · (period − 1) + tr) / period``.

    Args:
        period: number of true ranges, ≥ 1 (14 by default).

    Attributes:
        period: the parameter.
        value: the latest ATR in quote, None until warm.
    """

    __slots__ = ("period", "value", "_sum", "_prev", "_count")

    def __init__(self, period: int = 14) -> None:
        self.period = _check_period("ATR period", period)
        self.value: float | None = None
        self._sum = 0.0
        self._prev: float | None = None
        self._count = 0

    def update(self, high: float, low: float, close: float) -> float | None:
        """Add one candle (prices in quote); return the ATR, or None until warm."""
        prev = self._prev
        self._prev = close
        if prev is None:
            return None
        # Same operands as TA-Lib's TRANGE, so the same float result.
        tr = (high if high > prev else prev) - (low if low < prev else prev)
        value = self.value
        n = self.period
        if value is not None:
            value = (value * (n - 1) + tr) / n
        else:
            self._sum += tr
            self._count += 1
            if self._count < n:
                return None
            value = self._sum / n
        self.value = value
        return value


class MACD:
    """Moving Average Convergence/Divergence (Appel 1979 / TA-Lib ``MACD``).

    MACD line = EMA(fast) − EMA(slow) of the close; signal = EMA(signal) of the MACD line;
    histogram = MACD − signal. Seeding follows TA-Lib exactly, so values agree from the first
    one: both EMAs start at index ``slow − 1``, the slow one seeded with the mean of the first
    ``slow`` closes and the fast one with the mean of the last ``fast`` of those (not with an
    EMA run since index ``fast − 1``); the signal EMA is seeded with the mean of the first
    ``signal`` MACD values. First output at index ``slow + signal − 2`` (33 for 12/26/9).

    Args:
        fast, slow, signal: EMA lengths in candles, 1 ≤ fast < slow, signal ≥ 1.

    Attributes:
        fast, slow, signal_period: the parameters.
        macd, signal, histogram: latest values in quote, None until warm.
    """

    __slots__ = (
        "fast", "slow", "signal_period", "macd", "signal", "histogram",
        "_kf", "_ks", "_kg", "_ema_fast", "_ema_slow", "_fast_sum", "_slow_sum",
        "_signal_sum", "_count",
    )

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self.fast = _check_period("MACD fast period", fast)
        self.slow = _check_period("MACD slow period", slow)
        self.signal_period = _check_period("MACD signal period", signal)
        if fast >= slow:
            raise ConfigError(f"MACD fast period ({fast}) must be shorter than slow ({slow})")
        self._kf = 2.0 / (fast + 1)
        self._ks = 2.0 / (slow + 1)
        self._kg = 2.0 / (signal + 1)
        self.macd: float | None = None
        self.signal: float | None = None
        self.histogram: float | None = None
        self._ema_fast = 0.0
        self._ema_slow = 0.0
        self._fast_sum = 0.0
        self._slow_sum = 0.0
        self._signal_sum = 0.0
        self._count = 0  # closes seen, capped once warm

    def update(self, close: float) -> float | None:
        """Add one close (quote); return the MACD line, or None until the signal is warm
        (``histogram`` and ``signal`` are then set too)."""
        if self.signal is not None:
            ef = (close - self._ema_fast) * self._kf + self._ema_fast
            es = (close - self._ema_slow) * self._ks + self._ema_slow
            self._ema_fast, self._ema_slow = ef, es
            m = ef - es
            sig = (m - self.signal) * self._kg + self.signal
            self.macd, self.signal, self.histogram = m, sig, m - sig
            return m
        self._count += 1
        count = self._count
        slow = self.slow
        if count < slow:
            self._slow_sum += close
            if count > slow - self.fast:
                self._fast_sum += close
            return None
        if count == slow:
            self._ema_slow = (self._slow_sum + close) / slow
            self._ema_fast = (self._fast_sum + close) / self.fast
        else:
            self._ema_fast = (close - self._ema_fast) * self._kf + self._ema_fast
            self._ema_slow = (close - self._ema_slow) * self._ks + self._ema_slow
        m = self._ema_fast - self._ema_slow
        self._signal_sum += m
        if count - slow + 1 < self.signal_period:
            return None
        sig = self._signal_sum / self.signal_period
        self.macd, self.signal, self.histogram = m, sig, m - sig
        return m


class IndicatorSet:
    """All indicators of one symbol and timeframe, updated once per closed candle (SPEC S-10).

    RSI(rsi_period), MACD(macd_fast, macd_slow, macd_signal), ATR(atr_period), SMA(volume_period)
    of the volume and EMA(ema_period) of the close (the trend filter), with the same formulas
    and seeding as :class:`RSI`, :class:`MACD`, :class:`ATR`, :class:`SMA` and :class:`EMA`
    (results are bit-identical to those classes).

    During warm-up the candles go through those classes. Once every indicator is warm their
    state is copied into flat float slots and :meth:`update` runs a single inlined function —
    saving five method calls and the warm-up branches on every later candle (measured 1.3–1.6×
    the throughput of calling the five classes: 1.0–1.35 M candles/s on one core, CPython 3.11).

    Args:
        rsi_period, atr_period, volume_period, ema_period: lengths in candles (≥ 1).
        macd_fast, macd_slow, macd_signal: MACD EMA lengths in candles (fast < slow).

    Attributes (floats, NaN while that indicator is still warming up):
        rsi: RSI in [0, 100].
        macd, macd_signal, macd_hist: MACD line, signal and histogram (quote).
        prev_macd_hist: the histogram of the previous candle (NaN until there is one), to
            detect a histogram turn.
        atr: ATR (quote).
        volume_sma: average volume of the last ``volume_period`` candles (contracts).
        ema: EMA of the close (quote).
        close, volume: the latest candle's close (quote) and volume (contracts).
        ready: True once every indicator is warm (from candle index
            max(rsi, atr, macd_slow + macd_signal − 2, volume_period − 1, ema_period − 1)).
    """

    __slots__ = (
        "rsi", "macd", "macd_signal", "macd_hist", "prev_macd_hist", "atr", "volume_sma",
        "ema", "close", "volume", "ready",
        # warm-up delegates (dropped once ready)
        "_warm_rsi", "_warm_macd", "_warm_atr", "_warm_vol", "_warm_ema",
        # steady-state state, copied from the delegates
        "_rsi_n", "_rsi_n1", "_avg_gain", "_avg_loss",
        "_atr_n", "_atr_n1",
        "_kf", "_ks", "_kg", "_ema_fast", "_ema_slow",
        "_vbuf", "_vidx", "_vcarry", "_vn", "_vlast",
        "_ek",
    )

    def __init__(
        self,
        rsi_period: int = 14,
        macd_fast: int = 12,
        macd_slow: int = 26,
        macd_signal: int = 9,
        atr_period: int = 14,
        volume_period: int = 20,
        ema_period: int = 50,
    ) -> None:
        self._warm_rsi: RSI | None = RSI(rsi_period)
        self._warm_macd: MACD | None = MACD(macd_fast, macd_slow, macd_signal)
        self._warm_atr: ATR | None = ATR(atr_period)
        self._warm_vol: SMA | None = SMA(volume_period)
        self._warm_ema: EMA | None = EMA(ema_period)
        self.rsi = self.macd = self.macd_signal = self.macd_hist = _NAN
        self.prev_macd_hist = self.atr = self.volume_sma = self.ema = _NAN
        self.close = self.volume = _NAN
        self.ready = False
        # Constants as floats with the same values the classes use (n and n - 1 as ints
        # convert exactly, so the arithmetic is identical).
        self._rsi_n, self._rsi_n1 = float(rsi_period), float(rsi_period - 1)
        self._atr_n, self._atr_n1 = float(atr_period), float(atr_period - 1)
        self._vn = float(volume_period)
        self._vlast = volume_period - 1
        self._kf = self._warm_macd._kf
        self._ks = self._warm_macd._ks
        self._kg = self._warm_macd._kg
        self._ek = self._warm_ema.alpha
        self._avg_gain = self._avg_loss = self._ema_fast = self._ema_slow = 0.0
        self._vbuf: list[float] = []
        self._vidx = 0
        self._vcarry = 0.0

    def update(self, high: float, low: float, close: float, volume: float) -> bool:
        """Add one closed candle (prices in quote, volume in contracts); return ``ready``.

        O(1), float arithmetic only; the attributes hold the new values on return.
        """
        if not self.ready:
            return self._warm_up(high, low, close, volume)
        prev = self.close
        self.close = close
        self.volume = volume

        # RSI, Wilder smoothing in TA-Lib's order (see RSI.update).
        n, n1 = self._rsi_n, self._rsi_n1
        change = close - prev
        if change < 0.0:
            gain = self._avg_gain * n1 / n
            loss = (self._avg_loss * n1 - change) / n
        else:
            gain = (self._avg_gain * n1 + change) / n
            loss = self._avg_loss * n1 / n
        self._avg_gain = gain
        self._avg_loss = loss
        total = gain + loss
        self.rsi = 100.0 * (gain / total) if total != 0.0 else 50.0

        # ATR: true range against the previous close, Wilder smoothing.
        tr = (high if high > prev else prev) - (low if low < prev else prev)
        self.atr = (self.atr * self._atr_n1 + tr) / self._atr_n

        # MACD: two EMAs of the close, signal EMA of their difference.
        ef = (close - self._ema_fast) * self._kf + self._ema_fast
        es = (close - self._ema_slow) * self._ks + self._ema_slow
        self._ema_fast = ef
        self._ema_slow = es
        m = ef - es
        sig = (m - self.macd_signal) * self._kg + self.macd_signal
        self.macd = m
        self.macd_signal = sig
        self.prev_macd_hist = self.macd_hist
        self.macd_hist = m - sig

        # Volume SMA: ring buffer with the carried sum of the newest period - 1 volumes,
        # resummed once per lap against rounding drift (see SMA).
        buf = self._vbuf
        i = self._vidx
        buf[i] = volume
        if i == self._vlast:
            total = sum(buf)
            i = 0
        else:
            total = self._vcarry + volume
            i += 1
        self._vcarry = total - buf[i]
        self._vidx = i
        self.volume_sma = total / self._vn

        # Trend filter EMA of the close.
        self.ema = (close - self.ema) * self._ek + self.ema
        return True

    def _warm_up(self, high: float, low: float, close: float, volume: float) -> bool:
        """Feed the candle to the per-indicator classes; hand their state over to the flat
        slots when the slowest one warms up."""
        rsi, macd, atr, vol, ema = (
            self._warm_rsi, self._warm_macd, self._warm_atr, self._warm_vol, self._warm_ema,
        )
        assert rsi is not None and macd is not None and atr is not None
        assert vol is not None and ema is not None
        rsi.update(close)
        atr.update(high, low, close)
        if macd.histogram is not None:
            self.prev_macd_hist = macd.histogram
        macd.update(close)
        vol.update(volume)
        ema.update(close)
        self.close = close
        self.volume = volume
        self.rsi = _NAN if rsi.value is None else rsi.value
        self.atr = _NAN if atr.value is None else atr.value
        self.volume_sma = _NAN if vol.value is None else vol.value
        self.ema = _NAN if ema.value is None else ema.value
        if macd.histogram is not None:
            self.macd = macd.macd  # type: ignore[assignment]
            self.macd_signal = macd.signal  # type: ignore[assignment]
            self.macd_hist = macd.histogram
        if (
            rsi.value is None or atr.value is None or vol.value is None
            or ema.value is None or macd.histogram is None
        ):
            return False
        self._avg_gain, self._avg_loss = rsi.avg_gain, rsi.avg_loss
        self._ema_fast, self._ema_slow = macd._ema_fast, macd._ema_slow
        self._vbuf, self._vidx, self._vcarry = vol._buf, vol._idx, vol._carry
        self._warm_rsi = self._warm_macd = self._warm_atr = self._warm_vol = self._warm_ema = None
        self.ready = True
        return True
