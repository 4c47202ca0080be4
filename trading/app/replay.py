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

from array import array

import numpy as np

from trading.adapters.marketdata import CandleSeries
from trading.adapters.simulated import SimulatedExchange
from trading.app.reconcile import FillTracker, Supervisor
from trading.domain.events import EventBuffer, ReplayProgress, SignalsBelowMinimum
from trading.domain.models import Side, SignalEvaluation
from trading.domain.strategy import LONG, SHORT, component_names
from trading.domain.presets import min_score_floor
from trading.domain.reasons import ReasonCode
from trading.engine.core import BotRuntime, Engine, FeedState
from trading.engine.series import SeriesMarket
from trading.ports import ReplayClock

SCORE_BELOW_MIN = ReasonCode.SCORE_BELOW_MIN
_NEVER = 2 ** 62  # "no candle" for below_next
_SIDES = {LONG: Side.LONG, SHORT: Side.SHORT}  # by ScalpingV1.evaluate_all's side codes


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


def _column(values) -> array:
    """A candle column as an ``array('d')`` (the loader's own when it is one)."""
    if isinstance(values, array) and values.typecode == "d":
        return values
    column = array("d")
    column.frombytes(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return column


@dataclass(slots=True)
class _Track:
    """One source's candles and bulk market state, in the shapes the replay loop indexes."""

    source: ReplaySource
    stamps: np.ndarray  # int64 open times (epoch ms UTC)
    open: array  # array('d') columns: compact, and indexing them gives Python floats
    high: array
    low: array
    close: array
    volume: array
    below: list[tuple[BotRuntime, np.ndarray]]  # per bot: candles with a candidate under its floor
    steps: array  # 1 where some bot's candidate may pass its minimum score (the candle is stepped)
    below_next: int = 0  # the first ``below`` candle not recorded yet, over every bot (_NEVER: none)


@dataclass(slots=True)
class ReplayFeed:
    """The replay market feed of a paper runtime over a simulated venue.

    Args: engine; venue (the simulated exchange; the feed subscribes to its ``on_change``);
    tracker and supervisor (the one fill tracker / supervisor of the runtime); clock (moved by
    the replay); sources (candles per feed); resume_after_ms (candles that opened at or before
    it are history: a restart resumes where the last run stopped, SPEC L-3); bulk (default
    True): each source's market state is computed in bulk for all its candles at construction
    (:class:`~trading.engine.series.SeriesMarket`) and attached to the engine's feed, and a
    backtest steps only the candles where something can happen. False: the incremental market
    state of the live feeds, every candle stepped — the reference the bulk replay is proven
    equal to (``tests/test_speed.py``).
    """

    engine: Engine
    venue: SimulatedExchange
    tracker: FillTracker
    supervisor: Supervisor
    clock: ReplayClock
    sources: list[ReplaySource]
    resume_after_ms: int | None = None
    bulk: bool = True
    active: str = "replay"
    _changed: list[str] = field(default_factory=list)
    _tracks: list[_Track] = field(default_factory=list)
    _timeline: np.ndarray | None = None
    _step_positions: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.venue.on_change = self._changed.append
        stamps: list[np.ndarray] = []
        for source in self.sources:
            feed, series = source.feed, source.series
            ts = np.asarray(series.timestamp, dtype=np.int64)
            if not self.bulk:  # candle by candle: the incremental market state, every candle stepped
                self._tracks.append(_Track(source, ts, _column(series.open), _column(series.high),
                                           _column(series.low), _column(series.close), _column(series.volume),
                                           [], array("b", bytes(len(ts)))))
                continue
            high, low, close, volume = (np.asarray(col, dtype=np.float64)
                                        for col in (series.high, series.low, series.close, series.volume))
            market = SeriesMarket(high, low, close, volume, feed.timeframe_ms,
                                  {bot.name: bot.strategy for bot in feed.bots})
            self.engine.attach_series(feed, market)
            below = []
            flags = np.zeros(len(ts), dtype=np.int8)
            for bot in feed.bots:
                steps, under = market.candidates(bot.name, min_score_floor(bot.profile))
                flags[steps] = 1
                stamps.append(ts[steps])
                below.append((bot, under))
            self._tracks.append(_Track(source, ts, _column(series.open), market.high, market.low, market.close,
                                       market.volume, below, array("b", flags.tobytes())))
        self._timeline = np.unique(np.concatenate([t.stamps for t in self._tracks])) if self._tracks else \
            np.zeros(0, dtype=np.int64)
        # Timeline positions with a candidate that may pass its bot's minimum score.
        wanted = np.unique(np.concatenate(stamps)) if stamps else np.zeros(0, dtype=np.int64)
        self._step_positions = np.searchsorted(self._timeline, wanted)

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

        As fast as possible (no ``speed``, no ``clock_hook``) the replay steps only the candles
        where something can happen: a candidate that may pass its bot's minimum score, a symbol
        with a position or with orders on the venue, the hourly equity sample and the UTC day
        roll, a due stop verification or reconciliation. Every other candle changes nothing but
        the market state, which is computed in bulk; its candidates scoring under the lowest
        minimum score any tier sets are recorded as SCORE_BELOW_MIN (S-13) without entering the
        order path. Paced, every candle is stepped.
        """
        engine, venue, clock, supervisor = self.engine, self.venue, self.clock, self.supervisor
        tracks = self._tracks
        timeline = self._timeline
        resume_after_ms = self.resume_after_ms
        pointers = [0] * len(tracks)
        funding_pointers = [0] * len(tracks)
        below_pointers = [[0] * len(t.below) for t in tracks]
        active = venue.active_symbols
        held = engine.held_symbols
        changed = self._changed
        verifier_due = supervisor.verifier.due  # (bot, symbol) → due ms of the O-6 checks
        risk = engine.risk
        skipping = self.bulk and speed is None and clock_hook is None
        step_positions = self._step_positions.tolist()
        next_step = 0  # index into step_positions
        if durable is None:
            durable = speed is not None
        candles = 0
        since_flush = 0
        last_open = resume_after_ms or 0
        frame_seconds = None
        if speed:
            frame_seconds = min(t.source.feed.timeframe_ms for t in tracks) / 1000 / speed
        count = len(timeline)
        pos = 0
        if resume_after_ms is not None:
            # Candles that opened by the resume point are history: their market state is in the
            # bulk arrays, their decisions in the database.
            pos = int(np.searchsorted(timeline, resume_after_ms, side="right"))
            self._position(pos, pointers, below_pointers)
            if not self.bulk:  # the incremental state learns the history candle by candle
                for k, track in enumerate(tracks):
                    feed = track.source.feed
                    for i in range(pointers[k]):
                        engine.warm(feed, track.high[i], track.low[i], track.close[i], track.volume[i])
            self._sync_marks(pointers)
        stamps_list = timeline.tolist()
        while pos < count:
            ts = stamps_list[pos]
            if skipping and not (held or active or supervisor.requested or verifier_due):
                # Nothing is open: jump to the next candle where something can happen.
                while next_step < len(step_positions) and step_positions[next_step] < pos:
                    next_step += 1
                target = step_positions[next_step] if next_step < len(step_positions) else count
                # The UTC day roll-over and the hourly equity sample happen at their candle.
                due_pos = int(np.searchsorted(timeline, min(risk.next_day_ms, engine.next_sample_ms)))
                target = min(target, max(due_pos, pos))
                if target > pos:
                    skipped = self._skip(pos, target, pointers, below_pointers)
                    candles += skipped
                    since_flush += skipped
                    last_open = stamps_list[target - 1]
                    pos = target
                    if pos >= count:
                        break
                    ts = stamps_list[pos]
                    self._sync_marks(pointers)
            if stop is not None and stop.is_set():
                self._sync_marks(pointers, seek=True)
                await _flush(buffer, flush, last_open)
                self.resume_after_ms = last_open
                return ReplayResult(candles, last_open, True)
            if clock_hook is not None and clock.current_ms >= clock_hook.next_due_ms:
                # Every candle that closed by now is processed: persist it, then run the hook.
                await _flush(buffer, flush, last_open)
                await clock_hook.due(clock.current_ms)
            started = perf_counter() if on_frame is not None else 0.0
            clock.current_ms = ts
            engine.tick(ts)
            venue_changed = False
            for k, track in enumerate(tracks):
                i = pointers[k]
                stamps = track.stamps
                if i >= len(stamps) or stamps[i] != ts:
                    continue
                pointers[k] = i + 1
                feed = track.source.feed
                symbol = feed.symbol
                candles += 1
                since_flush += 1
                if skipping and not track.steps[i] and symbol not in held and symbol not in active:
                    # Nothing can happen on this candle: its market state is in the bulk arrays.
                    # (Positioned all the same: a reactive entry, E-6, may read it at this instant.)
                    feed.last_close = track.close[i]
                    feed.last_volume = track.volume[i]
                    feed.series.seek(i)
                    if track.below_next <= i:
                        self._record_below(k, i + 1, below_pointers)
                    continue
                o = track.open[i]
                clock.current_ms = ts
                if symbol in active:
                    # O-3: a limit entry whose time ran out by this candle's open never fills in it.
                    await engine.expire_limit_entries(ts, symbol)
                    venue.fill_pending(symbol, ts, o)
                    if changed:
                        venue_changed = True
                        await self.book_changes()
                    h, low = track.high[i], track.low[i]
                    while True:
                        fill = venue.next_trigger(symbol, ts, o, h, low)
                        if changed:
                            venue_changed = True
                            await self.book_changes()
                        if fill is None:
                            break
                end = ts + feed.timeframe_ms
                events = track.source.funding
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
                if feed.series is not None:
                    feed.series.seek(i)
                for b, (_bot, under) in enumerate(track.below):
                    p = below_pointers[k][b]
                    if p < len(under) and under[p] == i:  # the step records it (S-13)
                        below_pointers[k][b] = p + 1
                work = engine.step(feed, o, track.high[i], track.low[i], track.close[i], track.volume[i])
                if work is not None:
                    await work
            last_open = ts
            pos += 1
            if venue_changed or supervisor.requested or (verifier_due and supervisor.due(clock.current_ms)):
                await supervisor.tick(clock.current_ms)
            if on_frame is not None:
                on_frame((perf_counter() - started) * 1000)
            if (durable and buffer.critical) or since_flush >= flush_every:
                since_flush = 0
                await _flush(buffer, flush, ts)
            if frame_seconds is not None:
                await _pace(frame_seconds, stop)
        self._sync_marks(pointers, seek=True)
        # The clock ends at the last candle's close, stepped or passed over.
        closes = [int(t.stamps[-1]) + t.source.feed.timeframe_ms for t in tracks if len(t.stamps)]
        if closes and count:
            clock.current_ms = max(clock.current_ms, max(closes))
        await _flush(buffer, flush, last_open)
        if clock_hook is not None and clock.current_ms >= clock_hook.next_due_ms:
            await clock_hook.due(clock.current_ms)
        self.resume_after_ms = last_open or self.resume_after_ms
        return ReplayResult(candles, last_open, False)

    def _position(self, pos: int, pointers: list[int], below_pointers: list[list[int]]) -> None:
        """Point every source at its first candle at or after timeline position ``pos``."""
        at = self._timeline[pos] if pos < len(self._timeline) else None
        for k, track in enumerate(self._tracks):
            i = len(track.stamps) if at is None else int(np.searchsorted(track.stamps, at))
            pointers[k] = i
            for b, (_bot, under) in enumerate(track.below):
                below_pointers[k][b] = int(np.searchsorted(under, i))
            track.below_next = min((int(under[below_pointers[k][b]]) for b, (_bot, under) in enumerate(track.below)
                                    if below_pointers[k][b] < len(under)), default=_NEVER)

    def _skip(self, pos: int, target: int, pointers: list[int], below_pointers: list[list[int]]) -> int:
        """Pass over timeline positions [pos, target): nothing happens on them but the market
        state (in the bulk arrays) and candidates under every minimum score, recorded here as
        SCORE_BELOW_MIN evaluations (S-13). Returns how many candles were passed over."""
        passed = 0
        at = self._timeline[target] if target < len(self._timeline) else None
        records: list[tuple[int, int, int, SignalEvaluation]] = []
        for k, track in enumerate(self._tracks):
            start = pointers[k]
            stop = len(track.stamps) if at is None else int(np.searchsorted(track.stamps, at))
            passed += stop - start
            pointers[k] = stop
            self._record_below(k, stop, below_pointers, records)
        # The order a candle-by-candle replay records them in (time, then source, then bot), so
        # the signals table reads the same wherever a restart resumed.
        records.sort(key=lambda r: r[:3])
        if records:
            self.engine.sink.emit(SignalsBelowMinimum(tuple(r[3] for r in records)))
        return passed

    def _record_below(self, k: int, stop: int, below_pointers: list[list[int]],
                      into: list | None = None) -> None:
        """Record source ``k``'s candidates under every minimum score on candles before index
        ``stop`` as SCORE_BELOW_MIN evaluations (S-13), at their candle's close, with the
        minimum score in force (the profile's, else the equity tier's). ``into``: collect
        (time, source, bot, evaluation) there instead of emitting."""
        track = self._tracks[k]
        feed = track.source.feed
        market = feed.series
        tier_min = self.engine.book.tier_min_score
        stamps = track.stamps
        found: list[SignalEvaluation] = []
        for b, (bot, under) in enumerate(track.below):
            p = below_pointers[k][b]
            if p >= len(under) or under[p] >= stop:
                continue
            floor = bot.profile.strategy.min_score
            min_score = tier_min if floor is None else floor
            sides, scores, components = market.side[bot.name], market.score[bot.name], market.components[bot.name]
            name, symbol, tf_ms = bot.name, feed.symbol, feed.timeframe_ms
            while p < len(under) and under[p] < stop:
                i = int(under[p])
                at = int(stamps[i]) + tf_ms
                evaluation = SignalEvaluation(at, name, symbol, _SIDES[sides[i]], scores[i], False,
                                              SCORE_BELOW_MIN, min_score, component_names(components[i]))
                if into is None:
                    found.append(evaluation)
                else:
                    into.append((at, k, b, evaluation))
                p += 1
            below_pointers[k][b] = p
        track.below_next = min((int(under[below_pointers[k][b]]) for b, (_bot, under) in enumerate(track.below)
                                if below_pointers[k][b] < len(under)), default=_NEVER)
        if found:
            self.engine.sink.emit(SignalsBelowMinimum(tuple(found)))

    def _sync_marks(self, pointers: list[int], *, seek: bool = False) -> None:
        """Every feed's last close and volume are its latest candle before the pointer (the
        mark prices the engine values positions and equity at); with ``seek`` its market state
        is positioned on that candle too (the end of a replay: /status, /chart, the next run)."""
        for k, track in enumerate(self._tracks):
            i = pointers[k]
            if i > 0:
                feed = track.source.feed
                feed.last_close = track.close[i - 1]
                feed.last_volume = track.volume[i - 1]
                if seek and feed.series is not None:
                    feed.series.seek(i - 1)

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

