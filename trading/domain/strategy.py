"""ScalpingV1: RSI / MACD / ATR / volume score with the "1+1" rule (SPEC S-11), long and short.

The hot path: :meth:`ScalpingV1.evaluate` runs on every closed candle once the indicators are
warm. It returns ``None`` (no allocation) unless at least one momentum condition holds, so only
real candidates cost anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from trading.domain.config import StrategyConfig
from trading.domain.models import Side

# Component names, stored with each evaluated signal (S-13).
RSI, MACD, VOLUME, ATR, TREND = "rsi", "macd", "volume", "atr", "trend"


@dataclass(frozen=True, slots=True)
class SignalCheck:
    """A candidate entry: side, score (sum of the weights of the satisfied conditions) and the
    names of those conditions. ``one_plus_one`` is the SPEC S-11 rule: ≥ 1 momentum condition
    (RSI or MACD) and ≥ 1 participation condition (volume or volatility)."""

    side: Side
    score: float
    components: tuple[str, ...]
    one_plus_one: bool


class ScalpingV1:
    """The ScalpingV1 scorer (SPEC S-11).

    Conditions for a long (a short mirrors them): RSI ≤ rsi_oversold; MACD histogram turning up
    from below zero (hist > previous hist and previous hist < 0); volume ≥ volume_surge × volume
    SMA(20); ATR in [atr_pct_min, atr_pct_max] % of the close; close above EMA(50) (trend).
    """

    __slots__ = ("_cfg", "_oversold", "_overbought", "_surge", "_atr_lo", "_atr_hi")

    def __init__(self, config: StrategyConfig) -> None:
        self._cfg = config
        self._oversold = config.rsi_oversold
        self._overbought = config.rsi_overbought
        self._surge = config.volume_surge
        self._atr_lo = config.atr_pct_min / 100.0
        self._atr_hi = config.atr_pct_max / 100.0

    def evaluate(
        self,
        rsi: float,
        macd_hist: float,
        prev_macd_hist: float,
        atr: float,
        volume: float,
        volume_sma: float,
        close: float,
        ema: float,
    ) -> SignalCheck | None:
        """Score the candle that just closed.

        Args: indicator values of that candle (floats; prices in quote, volume in contracts).

        Returns:
            None when no momentum condition holds on either side (the common, cheap case);
            otherwise the better-scoring side's :class:`SignalCheck`.
        """
        long_rsi = rsi <= self._oversold
        short_rsi = rsi >= self._overbought
        long_macd = prev_macd_hist < 0.0 and macd_hist > prev_macd_hist
        short_macd = prev_macd_hist > 0.0 and macd_hist < prev_macd_hist
        if not (long_rsi or long_macd or short_rsi or short_macd):
            return None
        cfg = self._cfg
        participation: list[str] = []
        base = 0.0
        if volume_sma > 0.0 and volume >= self._surge * volume_sma:
            participation.append(VOLUME)
            base += cfg.weight_volume
        if close > 0.0 and self._atr_lo <= atr / close <= self._atr_hi:
            participation.append(ATR)
            base += cfg.weight_atr
        best: SignalCheck | None = None
        for side, by_rsi, by_macd, with_trend in (
            (Side.LONG, long_rsi, long_macd, close > ema),
            (Side.SHORT, short_rsi, short_macd, close < ema),
        ):
            if not (by_rsi or by_macd):
                continue
            names = []
            score = base
            if by_rsi:
                names.append(RSI)
                score += cfg.weight_rsi
            if by_macd:
                names.append(MACD)
                score += cfg.weight_macd
            names.extend(participation)
            if with_trend:
                names.append(TREND)
                score += cfg.weight_trend
            check = SignalCheck(side, round(score, 4), tuple(names), bool(participation))
            if best is None or check.score > best.score:
                best = check
        return best

    def evaluate_all(self, rsi, macd_hist, prev_macd_hist, atr, volume, volume_sma, close, ema, ready):
        """:meth:`ScalpingV1.evaluate` for every candle at once (numpy float64 arrays of equal
        length; ``ready`` a bool array: the indicators are warm). Returns (side, score, components,
        one_plus_one): int8 side codes (NO_SIGNAL, LONG, SHORT), float64 scores rounded as
        ``evaluate`` rounds them, int8 component bit masks and a bool array.

        The same comparisons and the same float additions in the same order as ``evaluate``, so a
        candle's result is identical to what ``evaluate`` returns for it (``tests/test_speed.py``).
        """
        import numpy as np

        cfg = self._cfg
        with np.errstate(invalid="ignore", divide="ignore"):
            long_rsi = rsi <= self._oversold
            short_rsi = rsi >= self._overbought
            long_macd = (prev_macd_hist < 0.0) & (macd_hist > prev_macd_hist)
            short_macd = (prev_macd_hist > 0.0) & (macd_hist < prev_macd_hist)
            vol = (volume_sma > 0.0) & (volume >= self._surge * volume_sma)
            atr_pct = atr / close
            atr_ok = (close > 0.0) & (self._atr_lo <= atr_pct) & (atr_pct <= self._atr_hi)
            long_trend = close > ema
            short_trend = close < ema
        zero = np.zeros(len(close))
        base = (zero + np.where(vol, cfg.weight_volume, 0.0)) + np.where(atr_ok, cfg.weight_atr, 0.0)
        participation = (vol.astype(np.int8) * 4) | (atr_ok.astype(np.int8) * 8)

        def side_score(by_rsi, by_macd, trend):
            score = base + np.where(by_rsi, cfg.weight_rsi, 0.0)
            score = score + np.where(by_macd, cfg.weight_macd, 0.0)
            score = score + np.where(trend, cfg.weight_trend, 0.0)
            bits = by_rsi.astype(np.int8) | (by_macd.astype(np.int8) * 2) | participation | (trend.astype(np.int8) * 16)
            return (by_rsi | by_macd) & ready, _rounded(score), bits

        long_on, long_score, long_bits = side_score(long_rsi, long_macd, long_trend)
        short_on, short_score, short_bits = side_score(short_rsi, short_macd, short_trend)
        # evaluate keeps LONG unless SHORT scores strictly higher.
        take_short = short_on & (~long_on | (short_score > long_score))
        side = np.where(take_short, SHORT, np.where(long_on, LONG, NO_SIGNAL)).astype(np.int8)
        score = np.where(take_short, short_score, np.where(long_on, long_score, 0.0))
        bits = np.where(take_short, short_bits, np.where(long_on, long_bits, 0)).astype(np.int8)
        one_plus_one = (side != NO_SIGNAL) & (participation != 0)
        return side, score, bits, one_plus_one


# Candle-by-candle results of :meth:`ScalpingV1.evaluate_all`: side codes.
NO_SIGNAL, LONG, SHORT = 0, 1, 2
# Component bits, in the order ``evaluate`` lists the names.
_BITS = ((1, RSI), (2, MACD), (4, VOLUME), (8, ATR), (16, TREND))


_NAMES = tuple(tuple(name for bit, name in _BITS if mask & bit) for mask in range(32))


def component_names(mask: int) -> tuple[str, ...]:
    """The component names a bit mask of :meth:`ScalpingV1.evaluate_all` stands for, in the
    order :meth:`ScalpingV1.evaluate` lists them (rsi, macd, volume, atr, trend)."""
    return _NAMES[mask]


def _rounded(scores):
    """``round(score, 4)`` (Python's correctly rounded decimal rounding) of every score: the
    scores take few distinct values, each rounded once."""
    import numpy as np

    values, inverse = np.unique(scores, return_inverse=True)
    return np.array([round(float(v), 4) for v in values], dtype=np.float64)[inverse]

