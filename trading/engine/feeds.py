"""Per-symbol market state the engine keeps, and the bots that trade it (SPEC B-1, S-10, S-12)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trading.domain.config import BotProfile
from trading.domain.filters import MarketStats
from trading.domain.indicators import IndicatorSet
from trading.domain.regime import RegimeDetector
from trading.domain.strategy import ScalpingV1


@dataclass(slots=True)
class BotRuntime:
    """A configured bot (SPEC B-1) with its strategy instance; ``name`` is the profile's (a
    plain attribute: the replay reads it for every candidate)."""

    profile: BotProfile
    strategy: ScalpingV1
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.profile.name


@dataclass(slots=True)
class FeedState:
    """Per symbol and timeframe: indicators (S-10), the bots trading it, the F-2/F-4 rolling
    statistics, the regime (S-12) and the last close (quote) and volume (contracts).

    ``series``: in a replay, the market state computed in bulk for every candle
    (``trading.engine.series.SeriesMarket``); ``indicators``, ``stats`` and ``regime`` are then
    its views, positioned by the replay on the candle being stepped. None = updated candle by
    candle (live feeds)."""

    symbol: str
    timeframe: str
    timeframe_ms: int
    indicators: IndicatorSet
    bots: tuple[BotRuntime, ...]
    stats: MarketStats
    regime: RegimeDetector
    last_close: float = 0.0
    last_volume: float = 0.0
    series: Any = None
