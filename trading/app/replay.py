"""Replay driver: feeds recorded real candles through the engine and the simulated exchange.

One loop for backtests (as fast as possible) and paper runs (``speed`` × real time). Candles of
every symbol are merged by open time. For each candle: the clock is set to its open, pending
market orders fill at the open, stops / take-profits trigger on its high/low, funding events
inside it are applied, then the clock moves to its close and the engine evaluates it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from decimal import Decimal
from time import perf_counter

from trading.engine.core import Engine, FeedState
from trading.domain.events import EventBuffer, ReplayProgress
from trading.adapters.marketdata import CandleSeries
from trading.domain.models import ExitReason
from trading.ports import ReplayClock
from trading.adapters.simulated import SimulatedExchange


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


async def run_replay(
    *,
    engine: Engine,
    exchange: SimulatedExchange,
    clock: ReplayClock,
    sources: Sequence[ReplaySource],
    buffer: EventBuffer,
    flush: Flush,
    resume_after_ms: int | None = None,
    speed: float | None = None,
    flush_every: int = 50_000,
    durable: bool | None = None,
    stop: asyncio.Event | None = None,
    on_frame: Callable[[float], None] | None = None,
    clock_hook: ClockHook | None = None,
) -> ReplayResult:
    """Replay ``sources`` through ``engine``.

    Args:
        resume_after_ms: candles that opened at or before this time only warm the indicators
            (a restart resumes where the last run stopped, SPEC L-3).
        speed: None = as fast as possible; N = N × real time (a 5m candle every 300/N s).
        flush_every: persist buffered events at least every this many candles.
        durable: persist events that carry trading state (orders, fills, positions) before the
            next candle; default: only when paced (``speed`` set). A flush writes the state and
            the replay cursor in one transaction, so a restart is consistent either way.
        stop: set it to end the replay early (Ctrl+C, /shutdown).
        on_frame: called with the wall time (ms) the engine spent on each timestamp's candles
            (fills, funding, signals, exits; not the pacing sleep) — the loop timings of
            /runtime (SPEC T-2). None = not measured.
        clock_hook: run (after a flush) each time the replay clock reaches its ``next_due_ms``.
    """
    stamps: set[int] = set()
    for source in sources:
        stamps.update(source.series.timestamp)
    timeline = sorted(stamps)
    pointers = [0] * len(sources)
    funding_pointers = [0] * len(sources)
    active = exchange.active_symbols
    held = engine.held_symbols
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
        for k, source in enumerate(sources):
            i = pointers[k]
            series = source.series
            if i >= len(series.timestamp) or series.timestamp[i] != ts:
                continue
            pointers[k] = i + 1
            feed = source.feed
            o, h, low, c, v = series.open[i], series.high[i], series.low[i], series.close[i], series.volume[i]
            if warm:
                engine.warm(feed, h, low, c, v)  # the same market state on_candle keeps
                continue
            symbol = feed.symbol
            clock.current_ms = ts
            if symbol in active:
                # O-3: a limit entry whose time ran out by this candle's open never fills in it.
                await engine.expire_limit_entries(ts, symbol)
                for fill in exchange.fill_pending(symbol, ts, o):
                    await engine.on_fill(fill)
                while (fill := exchange.next_trigger(symbol, ts, o, h, low)) is not None:
                    await engine.on_fill(fill)
            end = ts + feed.timeframe_ms
            events = source.funding
            j = funding_pointers[k]
            while j < len(events) and events[j][0] < end:
                funding_ms, rate = events[j]
                j += 1
                if funding_ms >= ts:
                    amount = exchange.apply_funding(symbol, rate, o, funding_ms)
                    if amount is not None:
                        engine.on_funding(symbol, amount, funding_ms)
            funding_pointers[k] = j
            clock.current_ms = end
            found = engine.on_candle(feed, o, h, low, c, v)
            if symbol in held:
                await engine.manage_positions(feed)
            if found is not None:
                for bot, check in found:
                    await engine.try_enter(bot, feed, check)
            candles += 1
            since_flush += 1
        if warm:
            continue
        last_open = ts
        if on_frame is not None:
            on_frame((perf_counter() - started) * 1000)
        if (durable and buffer.critical) or since_flush >= flush_every:
            since_flush = 0
            await _flush(buffer, flush, ts)
        if frame_seconds is not None:
            await _pace(frame_seconds, stop)
    await _flush(buffer, flush, last_open)
    if clock_hook is not None and clock.current_ms >= clock_hook.next_due_ms:
        await clock_hook.due(clock.current_ms)
    return ReplayResult(candles, last_open, False)


async def _pace(seconds: float, stop: asyncio.Event | None) -> None:
    """Sleep one frame of a paced replay, waking at once when ``stop`` is set (a quit or a
    shutdown never waits out a 5m frame at --speed 1)."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def _flush(buffer: EventBuffer, flush: Flush, cursor_ms: int) -> None:
    buffer.emit(ReplayProgress(cursor_ms))
    await flush()


async def close_at_end(
    *, engine: Engine, exchange: SimulatedExchange, sources: Sequence[ReplaySource], flush: Flush
) -> None:
    """Close every open position at the last close of its symbol (END_OF_DATA), so a backtest's
    result contains every trade it opened."""
    last_close = {s.feed.symbol: s.feed.last_close for s in sources}
    await engine.cancel_pending_entries()
    orders = await engine.close_all(ExitReason.END_OF_DATA)
    for order in orders:
        price = last_close.get(order.symbol, 0.0)
        for fill in exchange.fill_pending(order.symbol, engine.clock.now_ms(), price):
            await engine.on_fill(fill)
    await flush()
