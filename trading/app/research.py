"""The chart side of the research tools for the chat: ``/chart SYMBOL [hours]`` — candlesticks of
the last hours with the bot's entries, exits, and the open position's entry, stop and targets.

Paper mode: the candles are the replayed data (the same files, up to the replay clock); a USDC
symbol replayed from USDT candles says "proxy" in its caption (SPEC S-6).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trading.adapters.marketdata import load_replay_candles
from trading.adapters.research_charts import ChartLevel, ChartMarker, render_candles_chart
from trading.domain.config import TradingConfig
from trading.domain.errors import DataError, UnknownSymbol
from trading.domain.models import TIMEFRAME_MS, Side

HOUR_MS = 3_600_000
MAX_HOURS = 168


@dataclass(frozen=True, slots=True)
class ChartResult:
    """A chart PNG and its caption (symbol, window, trades shown)."""

    png: bytes
    caption: str


class ResearchService:
    """Charts from the running paper engine's data and the stored trades.

    Args:
        store: the storage facade (positions repository).
        clock: the engine clock (``now_ms()``, epoch ms UTC): the chart ends there.
        config: the trading config (symbols and their timeframes).
        data_dir: the data folder the replay reads.
        price_proxies: SPEC S-6 symbol → source symbol of its candles.
    """

    def __init__(self, store: Any, clock: Any, config: TradingConfig, data_dir: Path,
                 price_proxies: dict[str, str] | None = None) -> None:
        self._store = store
        self._clock = clock
        self._config = config
        self._data_dir = data_dir
        self._proxies = dict(price_proxies or {})
        self._series: dict[tuple[str, str], Any] = {}

    def resolve(self, text: str) -> str:
        """``BTC`` / ``btc`` / ``BTC/USDT:USDT`` → the configured symbol.

        Raises:
            UnknownSymbol: not a configured symbol (names the ones that are).
        """
        symbols = self._config.all_symbols()
        wanted = text.strip().upper()
        for symbol in symbols:
            if symbol.upper() == wanted or symbol.split("/")[0].upper() == wanted:
                return symbol
        raise UnknownSymbol(f"{text.strip()[:32]} is not traded here ({', '.join(s.split('/')[0] for s in symbols)})")

    def _timeframe(self, symbol: str) -> str:
        return min((b.timeframe for b in self._config.bots if symbol in b.symbols), key=TIMEFRAME_MS.get)

    async def chart(self, symbol: str, hours: int = 24) -> ChartResult:
        """The chart of ``symbol`` over the ``hours`` (1–168) before the engine clock.

        Raises:
            UnknownSymbol: not configured. DataError: no candles in the window.
        """
        hours = max(1, min(MAX_HOURS, hours))
        timeframe = self._timeframe(symbol)
        key = (symbol, timeframe)
        if key not in self._series:
            self._series[key] = await asyncio.to_thread(load_replay_candles, self._data_dir, symbol, timeframe)
        series = self._series[key]
        end = self._clock.now_ms()
        start = end - hours * HOUR_MS
        window = series.between(start, end - TIMEFRAME_MS[timeframe] + 1)  # closed candles only
        if not len(window):
            raise DataError(f"no {symbol} candles in the last {hours} h")
        candles = [(window.timestamp[i], window.open[i], window.high[i], window.low[i], window.close[i])
                   for i in range(len(window))]
        closed = [p for p in await self._store.positions.list_closed(since_ms=start) if p.symbol == symbol]
        open_ = [p for p in await self._store.positions.list_open() if p.symbol == symbol]
        markers: list[ChartMarker] = []
        for p in [*closed, *open_]:
            if p.opened_ms >= start:
                kind = "entry_long" if p.side is Side.LONG else "entry_short"
                markers.append(ChartMarker(kind, p.opened_ms, float(p.entry_price)))
            if p.closed_ms is not None and p.exit_price is not None:
                reason = p.exit_reason.value if p.exit_reason else ""
                markers.append(ChartMarker("exit", p.closed_ms, float(p.exit_price), reason))
        levels: list[ChartLevel] = []
        for p in open_:
            levels += [ChartLevel("entry", float(p.entry_price), f"{p.bot} entry"),
                       ChartLevel("stop", float(p.stop_loss), "SL"),
                       ChartLevel("tp", float(p.take_profit_1), "TP1"),
                       ChartLevel("tp", float(p.take_profit_2), "TP2")]
        note = f"proxy prices: {symbol} ← {self._proxies[symbol]} candles" if symbol in self._proxies else ""
        title = f"{symbol} {timeframe}, last {hours} h"
        png = await asyncio.to_thread(render_candles_chart, title, TIMEFRAME_MS[timeframe], candles, markers, levels,
                                      note)
        entries = sum(1 for m in markers if m.kind != "exit")
        exits = sum(1 for m in markers if m.kind == "exit")
        caption = f"{title}: {len(candles)} candles, {entries} entries, {exits} exits, {len(open_)} open"
        return ChartResult(png, caption + (f"\n⚠️ {note}" if note else ""))
