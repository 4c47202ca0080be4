"""The composition root of trading (STYLE): one :func:`build_runtime` for paper, backtest, demo and
live (SPEC O-9). Only the venue behind the order gateway (the simulated exchange or ccxt) and the
market feed (the replay, REST or websocket) differ; the engine, the order gate, the gateway, the
fill tracker, stop verification and reconciliation are the same objects in every mode.

- :func:`build_paper_runtime`: the simulated exchange restored from SQLite, replaying the bundled
  real candles (paper mode and ``optiflow backtest``).
- :func:`build_exchange_runtime`: the ccxt adapter on Binance USDⓈ-M / OKX (demo, live), candles
  over websocket or REST (``bot.live`` makes the adapter and the stream clients). What only a real
  venue needs comes on top of the same objects (issue 13): the O-7 start-up checks (hedge mode
  refused, the account's own fees), the venue guard (``trading.app.venue_guard``: stops that
  triggered and did not fill, the venue's own cancels, someone else on the account, the daily
  canary) and the waits for an order the exchange does not show yet.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.persister import ACCOUNT_RISK_KEY, REPLAY_CURSOR_KEY, Persister
from storage import Storage
from trading.adapters.leverage_tiers import load_margin_brackets
from trading.adapters.marketdata import (
    CandleSeries,
    default_data_dir,
    load_ccxt_markets,
    load_replay_candles,
    load_replay_funding,
    market_from_ccxt,
)
from trading.adapters.order_gateway import OrderGateway, Sleep
from trading.adapters.simulated import SimulatedExchange
from trading.app.reconcile import (
    RECONCILE_EVERY_MS,
    UNCONFIRMED_GRACE_MS,
    FillTracker,
    Reconciler,
    ReconcileReport,
    StopVerifier,
    Supervisor,
)
from trading.app.replay import ReplayFeed, ReplayResult, ReplaySource
from trading.app.service import TradingService
from trading.domain.audit import canonical_json, config_snapshot_id
from trading.domain.config import TradingConfig
from trading.domain.errors import DataError, ExchangeError, MissingData, OrderRejected, UnknownSymbol
from trading.domain.events import EventBuffer
from trading.domain.launch import record_from_trades
from trading.domain.models import AccountRisk, ExitReason, Market, Order, OrderLeg, Side
from trading.domain.oms import client_order_id_prefix
from trading.engine.core import HOUR_MS, Engine
from trading.ports import Clock, ExchangePort, ReplayClock

log = logging.getLogger(__name__)

SETTLE_PAUSE_S = 0.5  # between the start-up reconciliations that settle what the venue does not show yet
GUARD_MEMORY_KEY = "venue_guard"  # runtime table: the venue guard's memory across restarts (M-1)

# O-5's 30 s are wall-clock seconds against a network venue. On the replay clock the paper
# runtime reconciles hourly: a paced replay at the default 3000× covers an hour in 1.2 s of wall
# time (far more often than every 30 s), and the simulated venue is in-process and announces each
# order it changes, so nothing can drift between candles at --speed max either.
REPLAY_RECONCILE_EVERY_MS = 3_600_000

RECONCILE_REQUESTED = (
    "🔁 Reconciliation with the exchange requested: it runs within a second — missed fills booked, "
    "stray orders cancelled, missing stop-losses placed again (or the position closed at market if "
    "the exchange refuses the stop). Repairs are logged and audited: see /audit."
)


def load_markets(data_dir: Path, symbols: tuple[str, ...]) -> dict[str, Market]:
    """Market rules of ``symbols`` from the bundled ccxt dump.

    Raises:
        UnknownSymbol: a symbol is not listed on Binance USDⓈ-M.
    """
    raw = load_ccxt_markets(data_dir)
    markets = {}
    for symbol in symbols:
        if symbol not in raw:
            raise UnknownSymbol(f"{symbol} is not a Binance USDⓈ-M market")
        markets[symbol] = market_from_ccxt(raw[symbol])
    return markets


async def audit_head(store: Storage) -> str:
    """The hash of the last audit record of ``store`` (GENESIS, 64 zeros, when the log is
    empty), as the build card shows it at start and at shutdown (SPEC L-1, A-1)."""
    return (await store.audit.head())[1]


async def save_config_snapshot(store: Storage, config: TradingConfig) -> str:
    """Store the config in force and return its snapshot id, which every audit record of this
    run cites (SPEC A-1)."""
    config_json = config.model_dump(mode="json")
    config_id = config_snapshot_id(config_json)
    await store.config_snapshots.save(config_id, canonical_json(config_json), int(time.time() * 1000))
    return config_id


async def audited_restore_details(store: Storage, open_orders: list[Order]) -> dict:
    """The ``Engine.restore`` keyword arguments read from the audit and the equity log (SPEC
    L-3, A-1): the exit reasons of close orders still in flight, the time of the last equity
    sample (epoch ms UTC) and the TP1 share / ATR / leverage decided for unfilled entries; the
    account risk state (R-5, R-9) and the trade record (net PnL and wallet balance after each
    closed trade, oldest first: the Z-5 launch ramp is rebuilt from it)."""
    closing = [o.client_order_id for o in open_orders if o.leg is OrderLeg.CLOSE]
    saved = await store.runtime.get(ACCOUNT_RISK_KEY)
    account = await store.account.get()
    closed = sorted(await store.positions.list_closed(), key=lambda p: (p.closed_ms or 0, p.position_id))
    record = record_from_trades([p.net_pnl for p in closed], account.balance) if account is not None else []
    return {
        "account_risk": AccountRisk.from_dict(json.loads(saved)) if saved else None,
        "trade_record": record,
        "close_reasons": {cid: ExitReason(r) for cid, r in (await store.audit.exit_reasons(closing)).items()},
        "last_sample_ms": getattr(await store.equity.latest(), "timestamp", None),
        "entry_details": await store.audit.entry_details(
            [o.client_order_id for o in open_orders if o.leg is OrderLeg.ENTRY]),
    }


async def set_margin_modes(exchange: OrderGateway, config: TradingConfig) -> None:
    """SPEC O-7 at start: every traded symbol on the config's ``account.margin_mode``. The
    venue refuses a change while a position is open (Binance -4048): that is logged as a
    warning and the run goes on (``optiflow check`` is the strict pre-flight)."""
    for symbol in config.all_symbols():
        try:
            await exchange.set_margin_mode(symbol, config.account.margin_mode)
        except OrderRejected as exc:
            log.warning("%s: margin mode not set to %s: %s", symbol, config.account.margin_mode, exc.reason)


def feed_state_text(status: dict) -> str:
    """The /runtime and /status "Market feed" line for a feed's ``status()`` (SPEC S-2): the
    active source, and since when and why it last switched (epoch ms UTC shown in UTC)."""
    from bot.render import utc

    source = {"websocket": "websocket (ccxt.pro watch_ohlcv)", "replay": "replay of recorded candles"}.get(
        status["active"], "REST polling")
    if status.get("last_switch_ms") is None:
        return source
    reason = status.get("last_switch_reason") or ""
    return f"{source} since {utc(status['last_switch_ms'])} UTC" + (f" ({reason})" if reason else "")


@dataclass(slots=True)
class Runtime:
    """Everything one trading process runs, over one SQLite file (built by :func:`build_runtime`).

    ``exchange`` is the venue adapter (``SimulatedExchange`` or ``CcxtExchange``), ``gateway``
    the order gateway over it (the engine's port), ``feed`` the market feed (``ReplayFeed``,
    ``RestCandleFeed`` or ``HybridCandleFeed``), ``reconcile_report`` what the start-up
    reconciliation found and repaired (SPEC L-3: the chat posts ``reconcile_report.text()``),
    ``guard`` the venue guard of a demo/live runtime (``trading.app.venue_guard.VenueGuard``,
    issue 13; None on the simulated venue).
    """

    mode: str
    config: TradingConfig
    store: Storage
    exchange: Any
    gateway: OrderGateway
    engine: Engine
    clock: Clock
    buffer: EventBuffer
    persister: Persister
    supervisor: Supervisor
    reconcile_report: ReconcileReport
    service: TradingService
    feed: Any
    user_stream: Any = None
    guard: Any = None
    trading: bool = False  # the trading loop (replay or live) is running
    guard_saved: dict | None = None  # the venue guard's memory as last stored
    mark_watch_s: float = 5.0  # demo/live: seconds between mark-price reads while positions are open
    marks_read_ms: int = 0  # when the marks were last read (epoch ms UTC)

    async def save_guard_memory(self) -> None:
        """Store the venue guard's memory (reported foreign incidents, the trader's "ignore",
        its pauses) when it changed, so a restart does not report them again (SPEC M-1)."""
        state = self.guard.remembered()
        if state != self.guard_saved:
            await self.store.runtime.set(GUARD_MEMORY_KEY, json.dumps(state, sort_keys=True))
            self.guard_saved = state

    async def watch_marks(self, now_ms: int) -> int:
        """Demo/live, between candle closes: every :attr:`mark_watch_s` seconds while positions
        are open, read the exchange's mark price of each held symbol (one request each) and run
        the account guard on them (SPEC R-3 hard daily limit, R-5, liquidation distance: a crash
        inside a 5m candle is seen within seconds, not at its close). A failed read is skipped.
        Returns how many marks were read (0 in a replay, when not due or nothing is held)."""
        if isinstance(self.feed, ReplayFeed) or now_ms - self.marks_read_ms < self.mark_watch_s * 1000:
            return 0
        held = sorted(self.engine.held_symbols)
        if not held:
            return 0
        self.marks_read_ms = now_ms
        marks = {}
        for symbol in held:
            price = await self.gateway.fetch_mark_price(symbol)
            if price is not None:
                marks[symbol] = price
        if marks:
            await self.engine.watch_marks(marks)
        return len(marks)

    async def request_reconcile(self) -> str:
        """The playbook actions "place stops again" and "reconcile now" (SPEC T-6, O-5: one
        reconciliation also places missing stops again, R-10). While the trading loop runs it
        makes a reconciliation due at the loop's next tick, so it never runs beside the loop's
        own order operations; with the loop stopped (a finished replay) it runs now. Returns
        the line the chat shows."""
        if self.trading:
            self.supervisor.reconcile_soon()
            return RECONCILE_REQUESTED
        report = await self.supervisor.reconciler.run()
        await self.persister.flush()
        return report.text()

    # ------------------------------------------------------------ replay
    @property
    def sources(self) -> list[ReplaySource]:
        """The replayed candles per feed (paper runtimes only; [] otherwise)."""
        return self.feed.sources if isinstance(self.feed, ReplayFeed) else []

    @property
    def resume_after_ms(self) -> int | None:
        """Epoch ms UTC of the last candle the replay processed (paper runtimes)."""
        return self.feed.resume_after_ms if isinstance(self.feed, ReplayFeed) else None

    async def replay(self, speed: float | None = None, stop=None, durable: bool | None = None,
                     clock_hook=None) -> ReplayResult:
        """Replay the loaded candles from the resume point (see :meth:`ReplayFeed.run`;
        ``durable`` persists state-bearing events before the next candle, default when paced);
        the service's ``feed_state`` tells /runtime and /status whether prices are still moving;
        ``clock_hook`` runs at simulated times (the daily report, SPEC T-5)."""
        self.service.feed_state = "replaying"
        self.trading = True
        try:
            result = await self.feed.run(buffer=self.buffer, flush=self.persister.flush, speed=speed, stop=stop,
                                         durable=durable, on_frame=self.service.loop_timings.record,
                                         clock_hook=clock_hook)
        finally:
            self.trading = False
        self.service.feed_state = "replay stopped" if result.stopped else "replay finished (no more candles)"
        return result

    # -------------------------------------------------------------- live
    async def tick(self, now_ms: int) -> ReconcileReport | None:
        """Poll fills, verify stops, reconcile when due, then persist the events. A position
        the user stream reports differently from ours after that (closed in the exchange's
        app, liquidated) makes a reconciliation due at the next pass (S-2, O-5). The venue guard
        (demo/live, issue 13) runs the daily canary before the pass and, after it, closes what is
        left of a position whose stop triggered and did not fill and places again what the venue
        cancelled on its own."""
        if self.guard is not None:
            await self.guard.before_tick(now_ms)  # the daily canary (issue 13)
        report = await self.supervisor.tick(now_ms)
        if self.guard is not None:
            await self.guard.tick(now_ms)  # unfilled stops, venue cancels (issue 13)
            await self.save_guard_memory()
        if self.user_stream is not None:
            mismatched = self.user_stream.take_mismatch()
            if mismatched:
                log.warning("the exchange reports other positions on %s: reconciling", ", ".join(mismatched))
                self.supervisor.reconcile_soon()
                self.user_stream.wake.set()  # the next pass runs at once, not after the pause
        await self.persister.flush()
        return report

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0, ready: asyncio.Event | None = None,
                  *, speed: float | None = None, clock_hook=None) -> None:
        """Trade until ``stop`` is set. A replay feed replays (at ``speed``, see
        :meth:`replay`); a live feed runs the live loop (SPEC S-2, O-5, O-6): warm the
        indicators, then every ``interval_s`` process new closed candles, poll fills, verify
        stops, reconcile when due and persist. ``ready`` is set after the first pass."""
        if isinstance(self.feed, ReplayFeed):
            if ready is not None:
                ready.set()
            await self.replay(speed=speed, stop=stop, clock_hook=clock_hook)
            return
        await self.feed.warm_up(self.clock.now_ms())
        self.service.feed_state = self.feed_state()
        if self.user_stream is not None:
            self.user_stream.start()
        self.trading = True
        try:
            while not stop.is_set():
                now = self.clock.now_ms()
                await self.feed.step(now)
                await self.watch_marks(now)
                await self.tick(now)
                self.service.feed_state = self.feed_state()
                if ready is not None:
                    ready.set()
                await self._pause(stop, interval_s)
        finally:
            self.trading = False

    def feed_state(self) -> str:
        """The /runtime and /status "Market feed" line: candles, then order updates (S-2)."""
        text = feed_state_text(self.feed.status())
        if self.user_stream is not None:
            text = f"{text} · {self.user_stream.status()}"
        return " · ".join([text, *self.venue_notes()])

    def venue_notes(self) -> list[str]:
        """What /runtime and the build card say about the venue (issue 13: the demo venue's own
        cancels, the canary, unfilled stops, someone else on the account); [] on the simulated
        venue."""
        return self.guard.status_lines() if self.guard is not None else []

    async def _pause(self, stop: asyncio.Event, interval_s: float) -> None:
        """Wait ``interval_s`` seconds between passes, less when stopping or when the user
        stream saw one of our orders or a position change (the next pass polls fills at once)."""
        waits = {asyncio.ensure_future(stop.wait())}
        wake = self.user_stream.wake if self.user_stream is not None else None
        if wake is not None:
            waits.add(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if wake is not None and wake.is_set():
            wake.clear()
            self.supervisor.poll_soon()

    # --------------------------------------------------------- shutdown
    async def flatten(self, *, attempts: int = 10, pause_s: float = 0.5, reason: ExitReason = ExitReason.MANUAL) -> int:
        """Close every open position at market now (SPEC L-2 ``flatten_on_shutdown``): pending
        entries cancelled, a reduce-only market close sent per position, then the fills are
        booked — the simulated venue fills them at the last close at once; an exchange is
        polled (up to ``attempts`` × ``pause_s`` seconds). Returns how many closes were sent.
        Exchange errors while polling are logged; the next start's reconciliation (L-3) books
        whatever fill this missed."""
        engine = self.engine
        await engine.cancel_pending_entries()
        orders = await engine.close_all(reason)
        if isinstance(self.feed, ReplayFeed):
            await self.feed.fill_at_last_close()
        for attempt in range(attempts):
            if not engine.positions:
                break
            if attempt and not isinstance(self.feed, ReplayFeed):
                await asyncio.sleep(pause_s)
            try:
                await self.supervisor.tracker.poll()
            except ExchangeError as exc:
                log.warning("flatten: fills not read yet: %s", exc.reason)
        await self.persister.flush()
        return len(orders)

    async def close_positions_at_end(self) -> None:
        """Close everything at the last closes (END_OF_DATA), so a backtest's result contains
        every trade it opened."""
        await self.flatten(attempts=1, reason=ExitReason.END_OF_DATA)

    async def audit_head(self) -> str:
        """The audit chain's head hash (64 hex; GENESIS zeros when empty) for the build card at
        start and at shutdown (SPEC L-1, A-1). Persists buffered events first."""
        await self.persister.flush()
        return await audit_head(self.store)

    async def close(self, *, flush: bool = True) -> None:
        """Persist (unless simulating a kill), close the database, the feed's clients and the
        venue's session."""
        try:
            if flush:
                await self.persister.flush()
        finally:
            try:
                await self.feed.close()  # the websocket clients, if any (S-2)
                if self.user_stream is not None:
                    await self.user_stream.close()
            finally:
                await self.store.close()
                close = getattr(self.exchange, "close", None)
                if close is not None:
                    await close()


FeedFactory = Callable[[Engine, OrderGateway, FillTracker, Supervisor, TradingService], Any]


async def build_runtime(
    *,
    mode: str,
    config: TradingConfig,
    store: Storage,
    venue: ExchangePort,
    clock: Clock,
    make_feed: FeedFactory,
    record_orders: bool = True,
    sleep: Sleep | None = None,
    rng=None,
    make_user_stream: Callable[[Engine, tuple[str, ...]], Any] | None = None,
    reconcile_every_ms: int = RECONCILE_EVERY_MS,
    price_proxies: dict[str, str] | None = None,
    venue_positions: Callable[[], Any] | None = None,
    next_funding: Callable[[str], Any] | None = None,
    venue_lags: bool = True,
    venue_checks: Callable[[OrderGateway, TradingConfig], Awaitable[Any]] | None = None,
    make_guard: Callable[[Engine, OrderGateway, tuple[str, ...]], Any] | None = None,
) -> Runtime:
    """Restore the saved state into one engine behind the order gateway, reconcile it with the
    venue before any entry (SPEC L-3, O-5) and attach the market feed — for every mode.

    Args:
        mode: "paper" | "demo" | "live" (part of client order ids, O-2; the chat shows it).
        config: the trading config; store: the open database (closed here on failure).
        venue: the venue adapter — ``SimulatedExchange`` (already restored from ``store``) or
            ``CcxtExchange``; the gateway wraps it.
        clock: the replay clock (set to the resume point) or the wall clock.
        make_feed: builds the market feed from (engine, gateway, tracker, supervisor, service).
        record_orders: store each order before it is sent (O-2: a restart looks an unknown
            outcome up instead of resending). Off for the simulated venue, whose book is stored
            with the engine's state in the same transaction, so neither can know an order the
            other does not.
        sleep / rng: the gateway's back-off sleep and jitter source (tests).
        make_user_stream: builds the user-data stream watcher from (engine, our client-id
            prefixes), or None.
        reconcile_every_ms: the period of the reconciliation (O-5: 30 s against an exchange).
        price_proxies: symbol → the symbol whose candles stand in for it (S-6), for reports.
        venue_positions / next_funding: the exchange's positions (liquidation prices) and the
            next funding of a symbol, for /open (see :class:`TradingService`).
        venue_lags: the venue may show an order it accepted only later (an exchange's order
            service, issue 13): an order of unknown fate is looked up again over seconds, and
            the start-up reconciliation runs again (every 0.5 s, up to ``UNCONFIRMED_GRACE_MS``)
            until nothing is left unsettled before any entry. False for the simulated venue,
            which shows every order the moment it accepts it (nothing to wait for).
        venue_checks: awaited with (gateway, config) before anything else (the O-7 start-up
            checks of an exchange, ``bot.preflight.startup_checks``).
        make_guard: builds the venue guard from (engine, gateway, our client-id prefixes); the
            reconciler consults it and :meth:`Runtime.tick` drives it (demo/live, issue 13).

    Raises:
        UnknownSymbol: a configured symbol is not listed on the venue; ExchangeError: the venue
        could not be reached after retries; StorageError.
    """
    try:
        async def record(order: Order) -> bool:
            async with store.transaction():  # SPEC O-2: stored before it is sent
                if await store.orders.get(order.client_order_id) is not None:
                    return True
                await store.orders.upsert(order)
            return False

        kwargs: dict[str, Any] = {"record": record if record_orders else None, "clock": clock.now_ms}
        if sleep is not None:
            kwargs["sleep"] = sleep
        if rng is not None:
            kwargs["rng"] = rng
        if not venue_lags:
            kwargs["lookup_delays_s"] = ()
        gateway = OrderGateway(venue, **kwargs)
        if venue_checks is not None:
            await venue_checks(gateway, config)  # O-7: hedge mode refused, the account's fees (issue 13)
        listed = await gateway.load_markets()
        markets = {}
        for symbol in config.all_symbols():
            if symbol not in listed:
                raise UnknownSymbol(f"{symbol} is not listed on the {mode} venue")
            markets[symbol] = listed[symbol]
        buffer = EventBuffer()
        brackets = load_margin_brackets(default_data_dir(), config.all_symbols())  # liquidation prices
        engine = Engine(config=config, markets=markets, exchange=gateway, clock=clock, sink=buffer, env=mode,
                        brackets=brackets)
        config_id = await save_config_snapshot(store, config)  # SPEC A-1: records cite it
        open_orders = await store.orders.list_open()
        engine.restore(
            account=await store.account.get(), positions=await store.positions.list_open(),
            open_orders=open_orders,
            risk_states=[s for s in [await store.risk.get(b.name) for b in config.bots] if s],
            paused={b.name: await store.pauses.list(b.name) for b in config.bots},
            blacklist=await store.blacklist.list(), closed_trades=await store.positions.count_closed(),
            recent_fills=await store.fills.list(since_ms=clock.now_ms() - HOUR_MS),
            **await audited_restore_details(store, open_orders),
        )
        await set_margin_modes(gateway, config)
        await engine.start()
        verifier = StopVerifier(engine, gateway)
        tracker = FillTracker(engine, gateway, verifier)
        prefixes = tuple(client_order_id_prefix(mode, name) for name in engine.bots)
        guard = None if make_guard is None else make_guard(engine, gateway, prefixes)
        guard_saved = None
        if guard is not None and (stored := await store.runtime.get(GUARD_MEMORY_KEY)):
            guard_saved = json.loads(stored)
            guard.remember(guard_saved)  # what was reported before this start is not reported again (M-1)
        reconciler = Reconciler(engine, gateway, tracker, verifier, prefixes, guard=guard)
        supervisor = Supervisor(tracker, verifier, reconciler, reconcile_every_ms=reconcile_every_ms)
        persister = Persister(store, buffer, config_id)
        # SPEC L-3: reconcile before any new entry; the report is audited in the flush below.
        first = await reconciler.run()
        if venue_lags:
            # Issue 13: an order of ours the exchange does not show yet (its order service lags), a
            # size a working market order of ours may still change, a position not traced yet are
            # settled before any entry: the reconciliation runs again for a few seconds.
            settle_until = clock.now_ms() + UNCONFIRMED_GRACE_MS
            later = []
            for _ in range(int(UNCONFIRMED_GRACE_MS / 1000 / SETTLE_PAUSE_S)):
                if not reconciler.unsettled or clock.now_ms() >= settle_until:
                    break
                await (sleep or asyncio.sleep)(SETTLE_PAUSE_S)
                later.append(await reconciler.run())
            first = first.settled_by(later)  # the report the chat posts (L-3)
        supervisor.reconciled(clock.now_ms())
        await persister.flush()
        service = TradingService(engine, store, mode=mode, config_id=config_id, price_proxies=price_proxies or {},
                                 venue_positions=venue_positions, next_funding=next_funding)
        feed = make_feed(engine, gateway, tracker, supervisor, service)  # may read files: inside the guard
        user_stream = None if make_user_stream is None else make_user_stream(engine, reconciler.prefixes)
    except BaseException:
        await store.close()
        raise
    runtime = Runtime(mode, config, store, venue, gateway, engine, clock, buffer, persister, supervisor, first,
                      service, feed, user_stream, guard, guard_saved=guard_saved)
    if guard is not None:
        await runtime.save_guard_memory()  # what the start-up reconciliation reported
    # The playbook buttons "place stops again" and "reconcile" (T-6), for every venue.
    service.exchange_actions.update({"REPLACE_STOPS": runtime.request_reconcile,
                                     "RECONCILE": runtime.request_reconcile})
    if guard is not None:
        service.exchange_actions.update(guard.actions())  # "someone else on the account" (issue 13)
    return runtime


async def build_paper_runtime(
    *,
    config: TradingConfig,
    db_path: Path,
    data_dir: Path,
    start_ms: int | None = None,
    end_ms: int | None = None,
    bulk: bool = True,
) -> Runtime:
    """Paper mode (and backtests): the simulated exchange restored from the database at
    ``db_path`` (created if missing), replaying the bundled real candles in ``data_dir``.

    Args:
        start_ms / end_ms: replay window (epoch ms UTC; candles before start_ms only warm the
            indicators). A saved replay cursor later than start_ms wins (restart resumes).
        bulk: the market state computed in bulk and only the candles where something can happen
            stepped (default); False = candle by candle with the live feeds' incremental state
            (the reference ``tests/test_speed.py`` proves the default equal to).

    Raises:
        DataError, UnknownSymbol, StorageError: with a message fit for the trader.
    """
    markets = load_markets(data_dir, config.all_symbols())
    series: dict[tuple[str, str], CandleSeries] = {}
    for profile in config.bots:
        for symbol in profile.symbols:
            key = (symbol, profile.timeframe)
            if key in series:
                continue
            try:
                loaded = load_replay_candles(data_dir, symbol, profile.timeframe)  # S-6 proxy
            except MissingData as exc:
                # A profile written for live may list markets without bundled candles; a file
                # that is there but broken stops the run (BadData), never silently used.
                log.warning("%s; %s is not replayed", exc, symbol)
                continue
            series[key] = loaded if end_ms is None else loaded.between(None, end_ms)
    if not series:
        raise DataError("no bundled candles for any configured symbol and timeframe")
    funding = {key: load_replay_funding(data_dir, key[0], key[1]) for key in series}  # before the database opens
    store = await Storage.open(db_path)
    try:
        cursor_text = await store.runtime.get(REPLAY_CURSOR_KEY)
        resume_after = int(cursor_text) if cursor_text else None
        if start_ms is not None:
            resume_after = max(resume_after or 0, start_ms - 1)
        first = min((s.timestamp[0] for s in series.values() if len(s)), default=0)
        clock = ReplayClock(max(resume_after or 0, first))
        account = await store.account.get()
        balance = account.balance if account else config.account.starting_balance
        venue = SimulatedExchange(markets, balance, config.paper.slippage_pct, clock)
        venue.restore(
            balance,
            [(p.symbol, p.contracts if p.side is Side.LONG else -p.contracts, p.entry_price, p.leverage)
             for p in await store.positions.list_open()],
            await store.orders.list_open(),
            await store.orders.list_closed(),
        )
    except BaseException:
        await store.close()
        raise

    def make_feed(engine: Engine, gateway, tracker, supervisor, service) -> ReplayFeed:
        sources = [ReplaySource(feed, series[key], funding[key]) for key, feed in engine.feeds.items() if key in series]
        return ReplayFeed(engine, venue, tracker, supervisor, clock, sources, resume_after, bulk)

    async def next_funding(symbol: str):
        """The next bundled funding event of ``symbol`` after the replay clock: (rate, ms)."""
        events = next((events for (s, _tf), events in funding.items() if s == symbol), [])
        i = bisect.bisect_right([ts for ts, _rate in events], clock.now_ms())
        return (events[i][1], events[i][0]) if i < len(events) else None

    proxies = {s.symbol: s.proxy_of for s in series.values() if s.proxy_of}  # S-6: labelled in reports
    return await build_runtime(mode="paper", config=config, store=store, venue=venue, clock=clock,
                               make_feed=make_feed, record_orders=False,
                               reconcile_every_ms=REPLAY_RECONCILE_EVERY_MS, price_proxies=proxies,
                               next_funding=next_funding, venue_lags=False)


async def build_exchange_runtime(
    *,
    config: TradingConfig,
    db_path: Path,
    exchange: Any,
    env: str,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
    rng=None,
    ws_client=None,
    user_stream_client=None,
    canary: bool | None = None,
) -> Runtime:
    """Demo or live (SPEC S-1): the ccxt adapter ``exchange`` (``bot.live.make_exchange``), the
    engine restored from ``db_path`` and reconciled with the exchange before any entry (L-3).
    The O-7 start-up checks run first (``bot.preflight.startup_checks``: hedge mode refused, the
    account's own commission rates); the venue guard watches what only a real venue does
    (issue 13); ``canary``: its daily conditional-order canary (None: on in demo, off in live).

    ``ws_client`` (a ccxt.pro client, ``bot.live.make_market_stream_client``) makes the candle
    feed a websocket one with REST as its fall back (S-2); the runtime closes it. None = REST
    polling. ``user_stream_client`` (a keyed ccxt.pro client) adds the order and position
    updates of the user-data stream; the runtime closes it. ``sleep`` / ``rng`` / ``clock`` are
    injected by tests.

    Raises:
        ConfigError: the account is in hedge mode; UnknownSymbol, ExchangeError, StorageError.
    """
    from bot.live import WallClock
    from bot.preflight import startup_checks
    from trading.app.venue_guard import VenueGuard
    from trading.adapters.rest_feed import RestCandleFeed
    from trading.adapters.user_stream import UserStreamWatcher
    from trading.adapters.ws_feed import HybridCandleFeed

    clock = clock or WallClock()
    store = await Storage.open(db_path)

    def make_feed(engine: Engine, gateway, tracker, supervisor, service):
        feed = RestCandleFeed(engine, gateway, on_step=service.loop_timings.record)
        if ws_client is not None:  # S-2: websocket candles, REST as the fall back
            feed = HybridCandleFeed(engine, feed, ws_client, clock)
        return feed

    make_user_stream = None
    if user_stream_client is not None:
        def make_user_stream(engine: Engine, prefixes: tuple[str, ...]) -> UserStreamWatcher:
            return UserStreamWatcher(engine, user_stream_client, prefixes)

    def make_guard(engine: Engine, gateway: OrderGateway, prefixes: tuple[str, ...]) -> VenueGuard:
        return VenueGuard(engine, gateway, exchange, prefixes, mode=env,
                          canary=(env == "demo") if canary is None else canary)

    return await build_runtime(mode=env, config=config, store=store, venue=exchange, clock=clock,
                               make_feed=make_feed, sleep=sleep, rng=rng, make_user_stream=make_user_stream,
                               venue_positions=getattr(exchange, "fetch_position_details", None),
                               next_funding=getattr(exchange, "fetch_next_funding", None),
                               venue_checks=startup_checks, make_guard=make_guard)
