"""SPEC S-2 market data for demo / live: ccxt REST polling of closed candles (the websocket feed
with fall back to this one is ``trading.adapters.ws_feed``). Each new closed candle goes through the same
engine steps as a replayed one: market state → position management → entries; missed polls catch
up in order, and a candle is never processed twice (:meth:`RestCandleFeed.process_closed`, shared
by both feeds)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from trading.ports import CandleEngine
from trading.domain.errors import ExchangeError
from trading.domain.models import Candle

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RestCandleFeed:
    """Polls ``fetch_ohlcv`` for every engine feed (symbol, timeframe).

    Args:
        engine: the trading core; exchange: the order gateway (retried reads) or the adapter,
        with ``fetch_ohlcv(symbol, timeframe, limit) -> list[Candle]``; warmup: candles read at
        start to warm the indicators (no trading on them); window: candles read per poll at least
        (after a longer pause a poll reads every candle since the last one processed, up to 1000);
        on_step: called with each candle step's wall time in ms (the /runtime loop timings, T-2).

    ``journal`` keeps the last 1000 processed candles as (symbol, timeframe, open time ms,
    source) — source "rest" or "websocket" — for /runtime and tests.
    """

    engine: CandleEngine
    exchange: object
    warmup: int = 300
    window: int = 5
    last_open_ms: dict[tuple[str, str], int] = field(default_factory=dict)
    processed: int = 0
    active: str = "rest"  # what /runtime shows for this feed alone (trading.adapters.ws_feed switches)
    journal: deque = field(default_factory=lambda: deque(maxlen=1000))
    on_step: Callable[[float], None] | None = None  # wall ms per candle step (/runtime loop timings, T-2)

    async def warm_up(self, now_ms: int) -> None:
        """Warm each feed's indicators on its last closed candles (SPEC S-10, L-3)."""
        for key, feed in self.engine.feeds.items():
            candles = await self.exchange.fetch_ohlcv(feed.symbol, feed.timeframe, self.warmup)
            for candle in self._closed(candles, feed.timeframe_ms, now_ms):
                self.engine.warm(feed, candle.high, candle.low, candle.close, candle.volume)
                self.last_open_ms[key] = candle.timestamp

    async def step(self, now_ms: int) -> int:
        """One pass of the live loop: :meth:`poll`, an exchange failure logged and not raised
        (the next pass catches up). The same call as ``HybridCandleFeed.step``."""
        return await poll_safely(self, now_ms)

    def status(self) -> dict:
        """What /runtime shows (as ``HybridCandleFeed.status``): REST polling, never switched."""
        return {"active": self.active, "last_switch_ms": None, "last_switch_reason": ""}

    async def close(self) -> None:
        """Nothing to close: REST reads go through the exchange adapter, closed by its owner."""

    async def poll(self, now_ms: int) -> int:
        """Process every candle closed since the last poll; returns how many.

        Raises:
            ExchangeError: a read failed after the gateway's retries (the next poll catches up).
        """
        count = 0
        for key, feed in self.engine.feeds.items():
            last = self.last_open_ms.get(key)
            limit = self.window
            if last is not None:  # catch up after a pause (or a websocket outage) in one read
                limit = max(limit, min(1000, (now_ms - last) // feed.timeframe_ms + 2))
            candles = await self.exchange.fetch_ohlcv(feed.symbol, feed.timeframe, limit)
            count += await self.process_closed(key, self._closed(candles, feed.timeframe_ms, now_ms), now_ms)
        return count

    async def process_closed(self, key: tuple[str, str], candles: list[Candle], now_ms: int,
                             source: str = "rest") -> int:
        """Run each CLOSED candle of feed ``key`` (symbol, timeframe) newer than the last one
        processed through the engine, oldest first: tick, market state, position management,
        entries (SPEC S-2: each candle exactly once, in order, whichever source delivered it).

        Args:
            key: the engine feed key; candles: closed candles in any order (older or already
            processed ones are skipped); now_ms: epoch ms UTC for ``engine.tick``; source: "rest"
            or "websocket", recorded in :attr:`journal`.
        Returns: how many candles were processed.
        """
        engine = self.engine
        feed = engine.feeds[key]
        last = self.last_open_ms.get(key)
        fresh = sorted((c for c in candles if last is None or c.timestamp > last), key=lambda c: c.timestamp)
        if fresh and last is not None and fresh[0].timestamp > last + feed.timeframe_ms:
            log.warning("%s %s: candles missing between %s and %s", feed.symbol, feed.timeframe,
                        last, fresh[0].timestamp)
        count = 0
        for candle in fresh:
            done = self.last_open_ms.get(key)
            if done is not None and candle.timestamp <= done:  # a duplicate row: never twice
                continue
            started = time.perf_counter()
            engine.tick(now_ms)
            work = engine.step(feed, candle.open, candle.high, candle.low, candle.close, candle.volume)
            # The market state took this candle: it is done even if its order work below fails,
            # so a retry never feeds the indicators the same candle twice.
            self.last_open_ms[key] = candle.timestamp
            self.journal.append((feed.symbol, feed.timeframe, candle.timestamp, source))
            count += 1
            try:
                if work is not None:
                    await work
            except ExchangeError as exc:  # the supervisor's checks and reconciliation repair (O-5, O-6)
                log.warning("%s %s: order step on the candle at %s failed: %s", feed.symbol, feed.timeframe,
                            candle.timestamp, exc.reason)
            if self.on_step is not None:
                self.on_step((time.perf_counter() - started) * 1000)
        self.processed += count
        return count

    @staticmethod
    def _closed(candles: list[Candle], timeframe_ms: int, now_ms: int) -> list[Candle]:
        """Candles whose close time has passed, oldest first (the forming one is dropped)."""
        return sorted((c for c in candles if c.timestamp + timeframe_ms <= now_ms), key=lambda c: c.timestamp)


async def poll_safely(feed: RestCandleFeed, now_ms: int) -> int:
    """:meth:`RestCandleFeed.poll`, an exchange failure logged (the next poll catches up)."""
    try:
        return await feed.poll(now_ms)
    except ExchangeError as exc:
        log.warning("candle poll failed: %s", exc.reason)
        return 0
