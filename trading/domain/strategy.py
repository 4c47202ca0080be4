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
