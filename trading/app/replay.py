"""Replay feed: recorded real candles through the engine and the simulated exchange (SPEC S-1, S-2
"replay of bundled real candles", O-9).

One loop for backtests (as fast as possible) and paper runs (``speed`` × real time). Candles of
every symbol are merged by open time. For each candle: the clock is set to its open, limit
entries past their time are cancelled, the venue fills pending market orders at the open and
triggers stops / take-profits on the high/low — every order it changes is announced
(``SimulatedExchange.on_change``) and booked by the fill tracker, the same one demo and live
use — funding events inside the candle are applied, then the clock moves to the close and the
candle goes through :meth:`Engine.step`, the same step the live feeds call. After a candle step
in which the venue changed an order, or a stop verification fell due, the supervisor runs its
checks (stop verification O-6, missing stops R-10, reconciliation O-5) on the replay clock.

No sleeps and no polling loops unless paced: time moves only when the replay moves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from time import perf_counter
from typing import Protocol

from trading.adapters.marketdata import CandleSeries
from trading.adapters.simulated import SimulatedExchange
from trading.app.reconcile import FillTracker, Supervisor
from trading.domain.events import EventBuffer, ReplayProgress
from trading.engine.core import Engine, FeedState
from trading.ports import ReplayClock


@dataclass(slots=True)
class ReplaySource:
    """One symbol/timeframe to replay: the engine feed, its candles and funding events
    ((fundingTime epoch ms UTC, rate fraction), oldest first)."""

    feed: FeedState
    series: CandleSeries
    funding: list[tuple[int, Decimal]]


@dataclass(slots=True)
class ReplayResult:
    """What a replay did: candles processed (excluding warm-up), the last candle open time
    (epoch ms UTC) and whether it was stopped before the end."""

    candles: int
    last_open_ms: int
    stopped: bool


Flush = Callable[[], Awaitable[None]]


class ClockHook(Protocol):
    """Something that must run when the replay clock reaches ``next_due_ms`` (epoch ms UTC),
    e.g. the daily report at simulated day boundaries (SPEC T-5). The replay persists every
    buffered event first, so the hook sees the state up to that time; ``due`` moves
    ``next_due_ms`` forward."""

    next_due_ms: int

    async def due(self, now_ms: int) -> None:
        """Run for the replay clock at ``now_ms``."""


@dataclass(slots=True)
class ReplayFeed:
    """The replay market feed of a paper runtime over a simulated venue.

    Args: engine; venue (the simulated exchange; the feed subscribes to its ``on_change``);
    tracker and supervisor (the one fill tracker / supervisor of the runtime); clock (moved by
    the replay); sources (candles per feed); resume_after_ms (candles that opened at or before
    it only warm the indicators: a restart resumes where the last run stopped, SPEC L-3).
    """

    engine: Engine
    venue: SimulatedExchange
    tracker: FillTracker
    supervisor: Supervisor
    clock: ReplayClock
    sources: list[ReplaySource]
    resume_after_ms: int | None = None
    active: str = "replay"
    _changed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.venue.on_change = self._changed.append

    def status(self) -> dict:
        """What /runtime shows for this feed (as the live feeds' ``status()``)."""
        return {"active": self.active, "last_switch_ms": None, "last_switch_reason": ""}

    async def close(self) -> None:
        """Nothing to close: the candles are in memory."""

    async def book_changes(self) -> int:
        """Book every order the venue announced since the last call (fills, rejections)."""
        if not self._changed:
            return 0
        changed, self._changed[:] = list(self._changed), []
        return await self.tracker.book(changed)

    async def run(
        self,
        *,
        buffer: EventBuffer,
        flush: Flush,
        speed: float | None = None,
        flush_every: int = 50_000,
        durable: bool | None = None,
        stop: asyncio.Event | None = None,
        on_frame: Callable[[float], None] | None = None,
        clock_hook: ClockHook | None = None,
    ) -> ReplayResult:
        """Replay the sources from the resume point.

        Args:
            buffer / flush: the engine's event buffer and the persister's flush.
            speed: None = as fast as possible; N = N × real time (a 5m candle every 300/N s).
            flush_every: persist buffered events at least every this many candles.
            durable: persist events that carry trading state (orders, fills, positions) before
                the next candle; default: only when paced (``speed`` set). A flush writes the
                state and the replay cursor in one transaction, so a restart is consistent
                either way.
            stop: set it to end the replay early (Ctrl+C, /shutdown).
            on_frame: called with the wall time (ms) the engine spent on each timestamp's
                candles (fills, funding, signals, exits; not the pacing sleep) — the loop
                timings of /runtime (SPEC T-2). None = not measured.
            clock_hook: run (after a flush) each time the replay clock reaches its
                ``next_due_ms``.
        """
        engine, venue, clock, supervisor = self.engine, self.venue, self.clock, self.supervisor
        sources = self.sources
        resume_after_ms = self.resume_after_ms
        stamps: set[int] = set()
        for source in sources:
            stamps.update(source.series.timestamp)
        timeline = sorted(stamps)
        pointers = [0] * len(sources)
        funding_pointers = [0] * len(sources)
        # Per source, the columns and feed in plain lists: no attribute lookups per candle.
        indices = range(len(sources))
        feeds = [s.feed for s in sources]
        fundings = [s.funding for s in sources]
        stamps_of = [s.series.timestamp for s in sources]
        lengths = [len(t) for t in stamps_of]
        opens = [s.series.open for s in sources]
        highs = [s.series.high for s in sources]
        lows = [s.series.low for s in sources]
        closes = [s.series.close for s in sources]
        volumes = [s.series.volume for s in sources]
        active = venue.active_symbols
        changed = self._changed
        verifier_due = supervisor.verifier.due  # (bot, symbol) → due ms of the O-6 checks
        if durable is None:
            durable = speed is not None
        candles = 0
        since_flush = 0
        last_open = resume_after_ms or 0
        frame_seconds = None
        if speed:
            frame_seconds = min(s.feed.timeframe_ms for s in sources) / 1000 / speed
        for ts in timeline:
            if stop is not None and stop.is_set():
                await _flush(buffer, flush, last_open)
                self.resume_after_ms = last_open
                return ReplayResult(candles, last_open, True)
            warm = resume_after_ms is not None and ts <= resume_after_ms
            if not warm and clock_hook is not None and clock.current_ms >= clock_hook.next_due_ms:
                # Every candle that closed by now is processed: persist it, then run the hook.
                await _flush(buffer, flush, last_open)
                await clock_hook.due(clock.current_ms)
            started = perf_counter() if on_frame is not None and not warm else 0.0
            if not warm:
                clock.current_ms = ts
                engine.tick(ts)
            venue_changed = False
            for k in indices:
                i = pointers[k]
                if i >= lengths[k] or stamps_of[k][i] != ts:
                    continue
                pointers[k] = i + 1
                feed = feeds[k]
                o = opens[k][i]
                h = highs[k][i]
                low = lows[k][i]
                c = closes[k][i]
                v = volumes[k][i]
                if warm:
                    engine.warm(feed, h, low, c, v)  # the same market state step() keeps
                    continue
                symbol = feed.symbol
                clock.current_ms = ts
                if symbol in active:
                    # O-3: a limit entry whose time ran out by this candle's open never fills in it.
                    await engine.expire_limit_entries(ts, symbol)
                    venue.fill_pending(symbol, ts, o)
                    if changed:
                        venue_changed = True
                        await self.book_changes()
                    while True:
                        fill = venue.next_trigger(symbol, ts, o, h, low)
                        if changed:
                            venue_changed = True
                            await self.book_changes()
                        if fill is None:
                            break
                end = ts + feed.timeframe_ms
                events = fundings[k]
                j = funding_pointers[k]
                while j < len(events) and events[j][0] < end:
                    funding_ms, rate = events[j]
                    j += 1
                    if funding_ms >= ts:
                        amount = venue.apply_funding(symbol, rate, o, funding_ms)
                        if amount is not None:
                            engine.on_funding(symbol, amount, funding_ms)
                funding_pointers[k] = j
                clock.current_ms = end
                work = engine.step(feed, o, h, low, c, v)
                if work is not None:
                    await work
                candles += 1
                since_flush += 1
            if warm:
                continue
            last_open = ts
            if venue_changed or supervisor.requested or (verifier_due and supervisor.due(clock.current_ms)):
                await supervisor.tick(clock.current_ms)
            if on_frame is not None:
                on_frame((perf_counter() - started) * 1000)
            if (durable and buffer.critical) or since_flush >= flush_every:
                since_flush = 0
                await _flush(buffer, flush, ts)
            if frame_seconds is not None:
                await asyncio.sleep(frame_seconds)
        await _flush(buffer, flush, last_open)
        if clock_hook is not None and clock.current_ms >= clock_hook.next_due_ms:
            await clock_hook.due(clock.current_ms)
        self.resume_after_ms = last_open or self.resume_after_ms
        return ReplayResult(candles, last_open, False)

    async def fill_at_last_close(self) -> int:
        """Fill the market orders waiting on the venue (closes sent by a flatten or at the end
        of the data) at each symbol's last close, and book them (L-2, END_OF_DATA). Returns
        how many fills were booked."""
        last_close = {s.feed.symbol: s.feed.last_close for s in self.sources}
        for symbol in sorted(self.venue.active_symbols):
            price = last_close.get(symbol, 0.0)
            if price > 0:  # a symbol never replayed has no price to fill at
                self.venue.fill_pending(symbol, self.clock.now_ms(), price)
        return await self.book_changes()


async def _flush(buffer: EventBuffer, flush: Flush, cursor_ms: int) -> None:
    buffer.emit(ReplayProgress(cursor_ms))
    await flush()

