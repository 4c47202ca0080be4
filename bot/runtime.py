"""The composition root: the only place where storage, exchange, engine, replay and the trading
service are wired together (STYLE). Paper mode on a replay of the bundled real candles."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bot.persister import REPLAY_CURSOR_KEY, Persister
from storage import Storage
from trading.config import TradingConfig
from trading.engine import HOUR_MS, Engine
from trading.errors import DataError, UnknownSymbol
from trading.events import EventBuffer
from trading.marketdata import (
    CandleSeries,
    load_candles,
    load_ccxt_markets,
    load_funding,
    market_from_ccxt,
)
from trading.models import ExitReason, Market, Side
from trading.ports import ReplayClock
from trading.replay import ReplayResult, ReplaySource, close_at_end, run_replay
from trading.service import TradingService
from trading.simulated import SimulatedExchange

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
            )
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
                    except DataError as exc:
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
            persister = Persister(store, buffer)
            await persister.flush()
        except BaseException:
            await store.close()
            raise
        service = TradingService(engine, store, mode="paper")
        return cls(config, store, engine, exchange, clock, buffer, persister, service, sources, resume_after)

    async def replay(self, speed: float | None = None, stop=None, clock_hook=None) -> ReplayResult:
        """Replay the loaded candles from the resume point (see :func:`run_replay`);
        ``clock_hook`` runs at simulated times (the daily report, SPEC T-5)."""
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
            clock_hook=clock_hook,
        )
        self.resume_after_ms = result.last_open_ms or self.resume_after_ms
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

    async def close(self) -> None:
        """Persist what is buffered and close the database."""
        try:
            await self.persister.flush()
        finally:
            await self.store.close()
