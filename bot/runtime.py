"""The composition root: the only place where storage, exchange, engine, replay and the trading
service are wired together (STYLE). Paper mode on a replay of the bundled real candles."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from bot.persister import REPLAY_CURSOR_KEY, Persister
from storage import Storage
from trading.domain.audit import canonical_json, config_snapshot_id
from trading.domain.config import TradingConfig
from trading.engine.core import HOUR_MS, Engine
from trading.domain.errors import DataError, MissingData, UnknownSymbol
from trading.domain.events import EventBuffer
from trading.adapters.marketdata import (
    CandleSeries,
    load_candles,
    load_ccxt_markets,
    load_funding,
    market_from_ccxt,
)
from trading.domain.models import ExitReason, Market, Order, OrderLeg, Side
from trading.ports import ReplayClock
from trading.app.reconcile import ReconcileReport, reconcile
from trading.app.replay import ReplayResult, ReplaySource, close_at_end, run_replay
from trading.app.service import TradingService
from trading.adapters.simulated import SimulatedExchange

log = logging.getLogger(__name__)


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
    sample (epoch ms UTC) and the TP1 share / ATR / leverage decided for unfilled entries."""
    closing = [o.client_order_id for o in open_orders if o.leg is OrderLeg.CLOSE]
    return {
        "close_reasons": {cid: ExitReason(r) for cid, r in (await store.audit.exit_reasons(closing)).items()},
        "last_sample_ms": getattr(await store.equity.latest(), "timestamp", None),
        "entry_details": await store.audit.entry_details(
            [o.client_order_id for o in open_orders if o.leg is OrderLeg.ENTRY]),
    }


@dataclass(slots=True)
class PaperRuntime:
    """Everything a paper run needs, built and restored from the database by :meth:`build`."""

    config: TradingConfig
    store: Storage
    engine: Engine
    exchange: SimulatedExchange
    clock: ReplayClock
    buffer: EventBuffer
    persister: Persister
    service: TradingService
    sources: list[ReplaySource]
    resume_after_ms: int | None
    reconcile_report: ReconcileReport
    """What the start-up reconciliation found and repaired (SPEC L-3): the chat layer posts
    ``reconcile_report.text()`` once the bot is up."""

    @classmethod
    async def build(
        cls,
        *,
        config: TradingConfig,
        db_path: Path,
        data_dir: Path,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> "PaperRuntime":
        """Open (or create) the database, restore saved state (SPEC L-3) and load the candles.

        Args:
            start_ms / end_ms: replay window (epoch ms UTC; candles before start_ms only warm the
                indicators). A saved replay cursor later than start_ms wins (restart resumes).

        Raises:
            DataError, UnknownSymbol, StorageError: with a message fit for the trader.
        """
        markets = load_markets(data_dir, config.all_symbols())
        store = await Storage.open(db_path)
        try:
            clock = ReplayClock()
            buffer = EventBuffer()
            account = await store.account.get()
            positions = await store.positions.list_open()
            open_orders = await store.orders.list_open()
            balance = account.balance if account else config.account.starting_balance
            exchange = SimulatedExchange(markets, balance, config.paper.slippage_pct, clock)
            exchange.restore(
                balance,
                [
                    (p.symbol, p.contracts if p.side is Side.LONG else -p.contracts, p.entry_price, p.leverage)
                    for p in positions
                ],
                open_orders,
                await store.orders.list_closed(),
            )
            config_id = await save_config_snapshot(store, config)
            engine = Engine(config=config, markets=markets, exchange=exchange, clock=clock, sink=buffer)
            risk_states = [s for s in [await store.risk.get(b.name) for b in config.bots] if s]
            paused = {b.name: await store.pauses.list(b.name) for b in config.bots}
            cursor_text = await store.runtime.get(REPLAY_CURSOR_KEY)
            resume_after = int(cursor_text) if cursor_text else None
            recent = [] if resume_after is None else await store.fills.list(since_ms=resume_after - HOUR_MS)
            engine.restore(
                account=account, positions=positions, open_orders=open_orders,
                risk_states=risk_states, paused=paused, blacklist=await store.blacklist.list(),
                closed_trades=await store.positions.count_closed(), recent_fills=recent,
                **await audited_restore_details(store, open_orders),
            )
            if start_ms is not None:
                resume_after = max(resume_after or 0, start_ms - 1)
            sources: list[ReplaySource] = []
            loaded: dict[tuple[str, str], CandleSeries] = {}
            for (symbol, timeframe), feed in engine.feeds.items():
                series = loaded.get((symbol, timeframe))
                if series is None:
                    try:
                        series = load_candles(data_dir, symbol, timeframe)
                    except MissingData as exc:  # a bad file (BadData) stops the run instead
                        # A profile written for live may list markets without bundled candles.
                        log.warning("%s; %s is not replayed", exc, symbol)
                        continue
                loaded[(symbol, timeframe)] = series
                if end_ms is not None:
                    series = series.between(None, end_ms)
                sources.append(ReplaySource(feed, series, load_funding(data_dir, symbol)))
            if not sources:
                raise DataError("no bundled candles for any configured symbol and timeframe")
            first = min((s.series.timestamp[0] for s in sources if len(s.series)), default=0)
            clock.current_ms = max(resume_after or 0, first)
            await engine.start()
            # SPEC L-3 / O-5: the exchange is the source of truth; repair before any new entry.
            # The repairs and the report are persisted (and audited) in the next flush.
            report = await reconcile(engine, await exchange.fetch_positions())
            persister = Persister(store, buffer, config_id)
            await persister.flush()
        except BaseException:
            await store.close()
            raise
        service = TradingService(engine, store, mode="paper", config_id=config_id)
        return cls(config, store, engine, exchange, clock, buffer, persister, service, sources, resume_after, report)

    async def replay(self, speed: float | None = None, stop=None, durable: bool | None = None,
                     clock_hook=None) -> ReplayResult:
        """Replay the loaded candles from the resume point (see :func:`run_replay`; ``durable``
        persists state-bearing events before the next candle, default when paced); the
        service's ``feed_state`` tells /runtime and /status whether prices are still moving;
        ``clock_hook`` runs at simulated times (the daily report, SPEC T-5)."""
        self.service.feed_state = "replaying"
        result = await run_replay(
            engine=self.engine,
            exchange=self.exchange,
            clock=self.clock,
            sources=self.sources,
            buffer=self.buffer,
            flush=self.persister.flush,
            resume_after_ms=self.resume_after_ms,
            speed=speed,
            stop=stop,
            durable=durable,
            on_frame=self.service.loop_timings.record,
            clock_hook=clock_hook,
        )
        self.resume_after_ms = result.last_open_ms or self.resume_after_ms
        self.service.feed_state = "replay stopped" if result.stopped else "replay finished (no more candles)"
        return result

    async def flatten(self) -> int:
        """Close every open position at market now (SPEC L-2 ``flatten_on_shutdown``): the
        simulated exchange fills each close at the symbol's last price. Returns how many."""
        await self.engine.cancel_pending_entries()
        orders = await self.engine.close_all(ExitReason.MANUAL)
        last_close = {s.feed.symbol: s.feed.last_close for s in self.sources}
        for order in orders:
            price = last_close.get(order.symbol, 0.0)
            for fill in self.exchange.fill_pending(order.symbol, self.clock.now_ms(), price):
                await self.engine.on_fill(fill)
        await self.persister.flush()
        return len(orders)

    async def close_positions_at_end(self) -> None:
        """Close everything at the last closes (backtests)."""
        await close_at_end(engine=self.engine, exchange=self.exchange, sources=self.sources, flush=self.persister.flush)

    async def audit_head(self) -> str:
        """The audit chain's head hash (64 hex; GENESIS zeros when empty) for the build card at
        start and at shutdown (SPEC L-1, A-1). Persists buffered events first."""
        await self.persister.flush()
        return await audit_head(self.store)

    async def close(self) -> None:
        """Persist what is buffered and close the database."""
        try:
            await self.persister.flush()
        finally:
            await self.store.close()
