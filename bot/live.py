"""Composition of demo / live trading (SPEC S-1, O-2, O-5, O-6, L-3): the ccxt adapter behind the
order gateway, the engine restored from SQLite, then reconciled with the exchange before any
entry. Paper mode never comes here (``bot.runtime.PaperRuntime``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bot.persister import Persister
from bot.runtime import audit_head, audited_restore_details, save_config_snapshot
from storage import Storage
from trading.adapters.ccxt_exchange import CcxtExchange, resolve_quote, unified_symbol
from trading.domain.config import TradingConfig
from trading.engine.core import HOUR_MS, Engine
from trading.domain.errors import ConfigError, ExchangeError, OrderRejected, UnknownSymbol
from trading.domain.events import EventBuffer
from trading.domain.models import ExitReason, Order
from trading.adapters.order_gateway import OrderGateway, Sleep
from trading.ports import Clock
from trading.adapters.rest_feed import RestCandleFeed
from trading.app.reconcile import (
    RECONCILE_EVERY_MS,
    UNCONFIRMED_GRACE_MS,
    FillTracker,
    Reconciler,
    ReconcileReport,
    StopVerifier,
    Supervisor,
)
from trading.app.service import TradingService
from trading.app.venue_guard import VenueGuard
from trading.adapters.user_stream import UserStreamWatcher
from trading.adapters.ws_feed import HybridCandleFeed, make_ws_client

log = logging.getLogger(__name__)


RECONCILE_REQUESTED = (
    "🔁 Reconciliation with the exchange requested: it runs within a second — missed fills booked, "
    "stray orders cancelled, missing stop-losses placed again (or the position closed at market if "
    "the exchange refuses the stop). Repairs are logged and audited: see /audit."
)


def reconcile_actions(supervisor: Supervisor) -> dict[str, Callable[[], Awaitable[str]]]:
    """The playbook actions a demo/live run serves (SPEC T-6 "place stops again", "reconcile"),
    for ``TradingService.exchange_actions``. Both make a reconciliation due at the live loop's
    next tick (O-5: one reconciliation also places missing stops again, R-10), so it never runs
    beside the loop's own order operations; each returns the line the chat shows."""

    async def request() -> str:
        supervisor.reconcile_soon()
        return RECONCILE_REQUESTED

    return {"REPLACE_STOPS": request, "RECONCILE": request}


async def set_margin_modes(exchange: OrderGateway, config: TradingConfig) -> None:
    """SPEC O-7 at start: every traded symbol on the config's ``account.margin_mode``. The
    exchange refuses a change while a position is open (Binance -4048): that is logged as a
    warning and the run goes on (``optiflow check`` is the strict pre-flight)."""
    for symbol in config.all_symbols():
        try:
            await exchange.set_margin_mode(symbol, config.account.margin_mode)
        except OrderRejected as exc:
            log.warning("%s: margin mode not set to %s: %s", symbol, config.account.margin_mode, exc.reason)


def feed_state_text(status: dict) -> str:
    """The /runtime and /status "Market feed" line for a live feed's ``status()`` (SPEC S-2):
    the active source, and since when and why it last switched (epoch ms UTC shown in UTC)."""
    from bot.render import utc

    source = "websocket (ccxt.pro watch_ohlcv)" if status["active"] == "websocket" else "REST polling"
    if status.get("last_switch_ms") is None:
        return source
    reason = status.get("last_switch_reason") or ""
    return f"{source} since {utc(status['last_switch_ms'])} UTC" + (f" ({reason})" if reason else "")


def make_market_stream_client(settings, mode: str, *, user_data: bool = False):
    """The ccxt.pro client for S-2 websocket candles (public streams, no keys), or with
    ``user_data`` the keyed one for the user-data stream (order and position updates); None
    where everything stays on REST polling: only Binance USDⓈ-M streams are wired (OKX polls).
    ``EXCHANGE_API_BASE`` also moves the streams (``ws://host/ws``: loopback fakes, proxies)."""
    if settings.optiflow_exchange != "binanceusdm":
        return None
    if not user_data:
        return make_ws_client(mode, api_base=settings.exchange_api_base)
    return make_ws_client(mode, api_base=settings.exchange_api_base,
                          api_key=settings.binance_api_key.get_secret_value(),
                          secret=settings.binance_api_secret.get_secret_value())


class WallClock:
    """The wall clock, epoch ms UTC."""

    def now_ms(self) -> int:
        """Current wall time, epoch ms UTC."""
        return int(time.time() * 1000)


def make_exchange(settings, mode: str, *, timeout_ms: int = 10_000,
                  stop_working_type: str = "MARK_PRICE") -> CcxtExchange:
    """The ccxt adapter for ``mode`` from settings (keys from SecretStr, never printed);
    ``stop_working_type``: the config's ``orders.stop_working_type`` (SPEC O-3).

    Raises:
        ConfigError: keys missing (names the variables, never their values).
    """
    if settings.binance_api_key is None or settings.binance_api_secret is None:
        raise ConfigError(f"{mode} mode needs BINANCE_API_KEY and BINANCE_API_SECRET")
    return CcxtExchange(
        exchange_id=settings.optiflow_exchange,
        mode=mode,  # type: ignore[arg-type]
        api_key=settings.binance_api_key.get_secret_value(),
        secret=settings.binance_api_secret.get_secret_value(),
        api_base=settings.exchange_api_base,
        quote=resolve_quote(mode, settings.optiflow_quote),
        timeout_ms=timeout_ms,
        stop_working_type=stop_working_type,
    )


def requote(config: TradingConfig, quote: str) -> TradingConfig:
    """SPEC S-4: every bot's symbols on the resolved quote coin (``XRP/USDT:USDT`` →
    ``XRP/USDC:USDC`` when the quote is USDC)."""
    bots = []
    for bot in config.bots:
        symbols = tuple(unified_symbol(s.split("/")[0], quote) for s in bot.symbols)
        bots.append(bot.model_copy(update={"symbols": symbols}))
    account = config.account.model_copy(update={"quote": quote})
    return config.model_copy(update={"bots": tuple(bots), "account": account})


@dataclass(slots=True)
class LiveRuntime:
    """Engine + gateway + reconciliation over one SQLite file (built by :meth:`build`)."""

    config: TradingConfig
    store: Storage
    exchange: CcxtExchange
    gateway: OrderGateway
    engine: Engine
    buffer: EventBuffer
    persister: Persister
    supervisor: Supervisor
    first_report: ReconcileReport
    service: TradingService
    feed: RestCandleFeed | HybridCandleFeed
    clock: Clock
    user_stream: UserStreamWatcher | None = None
    guard: VenueGuard | None = None  # issue 13 items 9–12 (venue cancels, unfilled stops, foreign, canary)

    @classmethod
    async def build(
        cls,
        *,
        config: TradingConfig,
        db_path: Path,
        exchange: CcxtExchange,
        env: str,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        rng=None,
        ws_client=None,
        user_stream_client=None,
        canary: bool | None = None,
    ) -> "LiveRuntime":
        """Load markets, restore the saved state, start the engine and reconcile (L-3: before
        any entry). ``sleep`` / ``rng`` / ``clock`` are injected by tests. ``ws_client`` (a
        ccxt.pro client, :func:`make_market_stream_client`) makes the candle feed a websocket
        one with REST as its fall back (S-2); the runtime closes it. None = REST polling.
        ``user_stream_client`` (a keyed ccxt.pro client) adds the order and position updates of
        the user-data stream (:class:`trading.adapters.user_stream.UserStreamWatcher`); the runtime
        closes it. None = fills and positions by REST polling only. ``canary``: the daily
        conditional-order canary (None: on in demo, off in live).

        Raises:
            UnknownSymbol: a configured symbol is not listed; ExchangeError: the exchange could
            not be reached after retries; StorageError.
        """
        clock = clock or WallClock()
        store = await Storage.open(db_path)
        try:
            async def record(order: Order) -> bool:
                async with store.transaction():  # SPEC O-2: stored before it is sent
                    if await store.orders.get(order.client_order_id) is not None:
                        return True
                    await store.orders.upsert(order)
                return False

            kwargs = {"record": record, "clock": clock.now_ms}
            if sleep is not None:
                kwargs["sleep"] = sleep
            if rng is not None:
                kwargs["rng"] = rng
            gateway = OrderGateway(exchange, **kwargs)
            from bot.preflight import startup_checks

            await startup_checks(gateway, config)  # O-7: hedge mode refused, real fees (issue 13)
            all_markets = await gateway.load_markets()
            markets = {}
            for symbol in config.all_symbols():
                if symbol not in all_markets:
                    raise UnknownSymbol(f"{symbol} is not listed on {exchange.exchange_id}")
                markets[symbol] = all_markets[symbol]
            buffer = EventBuffer()
            engine = Engine(config=config, markets=markets, exchange=gateway, clock=clock, sink=buffer, env=env)
            config_id = await save_config_snapshot(store, config)  # SPEC A-1: records cite it
            recent = await store.fills.list(since_ms=clock.now_ms() - HOUR_MS)
            open_orders = await store.orders.list_open()
            engine.restore(
                account=await store.account.get(), positions=await store.positions.list_open(),
                open_orders=open_orders,
                risk_states=[s for s in [await store.risk.get(b.name) for b in config.bots] if s],
                paused={b.name: await store.pauses.list(b.name) for b in config.bots},
                blacklist=await store.blacklist.list(), closed_trades=await store.positions.count_closed(),
                recent_fills=recent,
                **await audited_restore_details(store, open_orders),
            )
            await set_margin_modes(gateway, config)
            await engine.start()
            verifier = StopVerifier(engine, gateway)
            tracker = FillTracker(engine, gateway, verifier)
            reconciler = Reconciler(engine, gateway, tracker, verifier)
            guard = VenueGuard(engine, gateway, exchange, reconciler.prefixes, mode=env,
                               canary=(env == "demo") if canary is None else canary)
            reconciler.guard = guard
            supervisor = Supervisor(tracker, verifier, reconciler)
            persister = Persister(store, buffer, config_id)
            # SPEC L-3: reconcile before any new entry; the report is audited in the flush below.
            first = await reconciler.run()
            # Issue 13: an order of ours the exchange does not show yet (its order service lags)
            # is settled before any entry: the reconciliation runs again for a few seconds.
            settle_until = clock.now_ms() + UNCONFIRMED_GRACE_MS
            while reconciler.unsettled and clock.now_ms() < settle_until:
                await (sleep or asyncio.sleep)(0.5)
                await reconciler.run()
            supervisor._next_reconcile_ms = clock.now_ms() + RECONCILE_EVERY_MS
            await persister.flush()
        except BaseException:
            await store.close()
            raise
        service = TradingService(engine, store, mode=env, config_id=config_id)
        service.exchange_actions.update(reconcile_actions(supervisor))  # playbook buttons (T-6)
        service.exchange_actions.update(guard.actions())  # "someone else on the account" (issue 13)
        feed: RestCandleFeed | HybridCandleFeed = RestCandleFeed(engine, gateway, on_step=service.loop_timings.record)
        if ws_client is not None:  # S-2: websocket candles, REST as the fall back
            feed = HybridCandleFeed(engine, feed, ws_client, clock)
        user_stream = None
        if user_stream_client is not None:
            user_stream = UserStreamWatcher(engine, user_stream_client, reconciler.prefixes)
        return cls(config, store, exchange, gateway, engine, buffer, persister, supervisor, first, service, feed, clock,
                   user_stream, guard)

    @property
    def reconcile_report(self) -> ReconcileReport:
        """The start-up reconciliation's report (SPEC L-3), as ``PaperRuntime.reconcile_report``."""
        return self.first_report

    async def audit_head(self) -> str:
        """The audit chain's head hash (64 hex; GENESIS zeros when empty) for the build card at
        start and at shutdown (SPEC L-1, A-1). Persists buffered events first."""
        await self.persister.flush()
        return await audit_head(self.store)

    async def tick(self, now_ms: int) -> ReconcileReport | None:
        """Poll fills, verify stops, reconcile when due, then persist the events. A position
        the user stream reports differently from ours after that (closed in the exchange's
        app, liquidated) makes a reconciliation due at the next pass (S-2, O-5)."""
        if self.guard is not None:
            await self.guard.before_tick(now_ms)  # the daily canary (issue 13)
        report = await self.supervisor.tick(now_ms)
        if self.guard is not None:
            await self.guard.tick(now_ms)  # unfilled stops, venue cancels (issue 13)
        if self.user_stream is not None:
            mismatched = self.user_stream.take_mismatch()
            if mismatched:
                log.warning("the exchange reports other positions on %s: reconciling", ", ".join(mismatched))
                self.supervisor.reconcile_soon()
                self.user_stream.wake.set()  # the next pass runs at once, not after the pause
        await self.persister.flush()
        return report

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0, ready: asyncio.Event | None = None) -> None:
        """The live loop (SPEC S-2 REST polling, O-5, O-6): warm the indicators, then every
        ``interval_s`` process new closed candles, poll fills, verify stops, reconcile when due
        and persist, until ``stop`` is set. ``ready`` is set after the first pass."""
        await self.feed.warm_up(self.clock.now_ms())
        self.service.feed_state = self.feed_state()
        if self.user_stream is not None:
            self.user_stream.start()
        while not stop.is_set():
            now = self.clock.now_ms()
            await self.feed.step(now)
            await self.tick(now)
            self.service.feed_state = self.feed_state()
            if ready is not None:
                ready.set()
            await self._pause(stop, interval_s)

    def feed_state(self) -> str:
        """The /runtime and /status "Market feed" line: candles, then order updates (S-2)."""
        text = feed_state_text(self.feed.status())
        if self.user_stream is not None:
            text = f"{text} · {self.user_stream.status()}"
        return " · ".join([text, *self.venue_notes()])

    def venue_notes(self) -> list[str]:
        """What /runtime and the build card say about the venue (issue 13: the demo venue's own
        cancels, the canary, unfilled stops, someone else on the account)."""
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

    async def flatten(self, *, attempts: int = 10, pause_s: float = 0.5) -> int:
        """Close every open position at market now (SPEC L-2 ``flatten_on_shutdown``): pending
        entries cancelled, a reduce-only market close sent per position, then the exchange is
        polled (up to ``attempts`` × ``pause_s`` seconds) until the closes are booked as fills.
        Returns how many closes were sent. Exchange errors while polling are logged; the next
        start's reconciliation (L-3) books whatever fill this missed."""
        await self.engine.cancel_pending_entries()
        orders = await self.engine.close_all(ExitReason.MANUAL)
        for attempt in range(attempts):
            if not self.engine.positions:
                break
            if attempt:
                await asyncio.sleep(pause_s)
            try:
                await self.supervisor.tracker.poll()
            except ExchangeError as exc:
                log.warning("flatten: fills not read yet: %s", exc.reason)
        await self.persister.flush()
        return len(orders)

    async def close(self, *, flush: bool = True) -> None:
        """Persist (unless simulating a kill), close the database and the ccxt session."""
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
                await self.exchange.close()

