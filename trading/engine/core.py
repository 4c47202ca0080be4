"""The trading engine's facade: one core for paper, backtest, demo and live (SPEC O-9).

Per closed candle (:meth:`Engine.step`, called by the replay AND the live feeds): indicators
(S-10) and regime (S-12) → ScalpingV1 score and the 1+1 rule (S-11) → exit policies and the
ladder for held positions (E-2..E-5, E-10) → for each candidate: minimum score of the equity tier
(Z-4) → RiskGuard (R-1..R-8, S-5) → sizing (Z-1, Z-2) → filters (F-1..F-5) → the order gate (O-9)
→ entry order with a deterministic client order id (O-2). Fills arrive from the fill tracker
(``trading.app.reconcile``) and open, grow or close positions with their reduce-only brackets
(E-1, O-3, R-10). The engine emits domain events to an :class:`~trading.domain.events.EventSink`
and never touches storage or chat.

The work is split by job: :mod:`~trading.engine.book` (positions, orders, equity, margin),
:mod:`~trading.engine.risk_state` (day counters, pauses, blacklist, drawdown stage),
:mod:`~trading.engine.gate` (the one place every order passes), :mod:`~trading.engine.entries`,
:mod:`~trading.engine.protection` (brackets, closes), :mod:`~trading.engine.fills`,
:mod:`~trading.engine.management` and :mod:`~trading.engine.guard` (the account watch: R-3 hard
limit, R-5 latch, R-9 tier, liquidation alerts). Outside code uses this facade only.

Hot path: the market-state half of :meth:`Engine.step` is synchronous, float-only and
allocation-free unless the strategy sees a momentum condition. Everything that can await
(orders) happens only when there is order work.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import replace
from decimal import Decimal

from trading.domain.config import BotProfile, TradingConfig
from trading.domain.errors import OptiFlowError, OrderNotFound
from trading.domain.events import AccountChanged, EquitySampled, EventSink, OrderUpdated
from trading.domain.filters import MarketStats
from trading.domain.indicators import IndicatorSet
from trading.domain.liquidation import MarginBracket
from trading.domain.models import (
    TIMEFRAME_MS,
    Account,
    AccountRisk,
    EquitySnapshot,
    ExitReason,
    Fill,
    Market,
    Order,
    OrderLeg,
    OrderStatus,
    OrderType,
    Position,
    RiskState,
    Side,
    SignalEvaluation,
    SymbolBlacklist,
    TradingState,
)
from trading.domain.presets import EffectiveLimits
from trading.domain.reasons import DrawdownStage
from trading.domain.regime import RegimeDetector
from trading.domain.strategy import ScalpingV1, SignalCheck
from trading.engine.book import Book, PendingEntry
from trading.engine.entries import Entries
from trading.engine.feeds import BotRuntime, FeedState
from trading.engine.fills import Fills
from trading.engine.gate import OrderGate
from trading.engine.guard import AccountGuard
from trading.engine.management import Management
from trading.engine.protection import Protection
from trading.engine.risk_state import DAY_MS, RiskBook, utc_day
from trading.ports import Clock, ExchangePort

__all__ = ["DAY_MS", "HOUR_MS", "BotRuntime", "Engine", "FeedState", "PendingEntry", "utc_day"]

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000


class Engine:
    """The trading core. Build it, :meth:`restore` saved state if any, ``await start()``, then
    feed candles with :meth:`step` and fills with :meth:`on_fill`.

    Args:
        config: the trading config; markets: rules per symbol (every configured symbol must be
        listed); exchange: the venue port (the order gateway over the simulated exchange or
        ccxt); clock; sink: event listener; env: "paper" | "demo" | "live" (part of client
        order ids, O-2); brackets: maintenance-margin brackets per symbol (liquidation prices;
        none = not computed).

    Raises:
        OptiFlowError: a configured symbol is not a listed market, or a bot's targets cannot
            clear that market's round-trip taker fee (E-7, naming the field).
    """

    def __init__(self, *, config: TradingConfig, markets: dict[str, Market], exchange: ExchangePort,
                 clock: Clock, sink: EventSink, env: str = "paper",
                 brackets: dict[str, tuple[MarginBracket, ...]] | None = None) -> None:
        self.config = config
        self.markets = markets
        self.exchange = exchange
        self.clock = clock
        self.sink = sink
        self.env = env
        self.bots: dict[str, BotRuntime] = {p.name: BotRuntime(p, ScalpingV1(p.strategy)) for p in config.bots}
        self.feeds: dict[tuple[str, str], FeedState] = {}
        for profile in config.bots:
            for symbol in profile.symbols:
                if symbol not in markets:
                    raise OptiFlowError(f"bot {profile.name}: {symbol} is not a listed market")
                key = (symbol, profile.timeframe)
                feed = self.feeds.get(key)
                bot = self.bots[profile.name]
                if feed is None:
                    tf_ms = TIMEFRAME_MS[profile.timeframe]
                    self.feeds[key] = FeedState(symbol, profile.timeframe, tf_ms, IndicatorSet(), (bot,),
                                                MarketStats.for_timeframe(tf_ms), RegimeDetector())
                else:
                    feed.bots = feed.bots + (bot,)
        _check_market_fees(config, markets)
        profiles = {name: bot.profile for name, bot in self.bots.items()}
        self.book = Book(markets, self.feeds, sink, clock)
        self.risk = RiskBook(config.account, profiles, sink, launch=config.preset == "launch")
        self.gate = OrderGate(self.book, self.risk, exchange, sink, clock, config.account, profiles)
        self.protection = Protection(self.book, self.gate, sink, clock, env, profiles, config.orders)
        self.guard = AccountGuard(self.book, self.risk, self.gate, self.protection, sink, clock, config.account,
                                  brackets or {})
        self.entries = Entries(self.book, self.risk, self.gate, exchange, sink, clock, env, config, self.bots,
                               liquidation=self.guard.liquidation_of)
        self.fills = Fills(self.book, self.risk, self.protection, exchange, sink, clock, profiles,
                           self.limits, self.entries.reactive_entry, self.guard.watch, self.guard.liquidation_of)
        self.management = Management(self.book, self.gate, self.protection, self.entries, sink, clock, env,
                                     config.account.max_total_margin_pct, config.account.max_position_size_pct,
                                     self.guard)
        self.next_sample_ms = 0  # epoch ms UTC of the next hourly equity sample (tick)

    # ------------------------------------------------------------- state views
    @property
    def positions(self) -> dict[tuple[str, str], Position]:
        """Open positions by (bot, symbol)."""
        return self.book.positions

    @property
    def open_orders(self) -> dict[str, Order]:
        """Working orders by client order id."""
        return self.book.open_orders

    @property
    def held_symbols(self) -> set[str]:
        """Symbols with an open position."""
        return self.book.held_symbols

    @property
    def account(self) -> Account | None:
        """Wallet balance, peak equity (quote); None before :meth:`start`."""
        return self.book.account

    @property
    def closed_trades(self) -> int:
        """Trades closed since the account began."""
        return self.book.closed_trades

    @property
    def risk_states(self) -> dict[str, RiskState]:
        """Today's risk counters per bot (R-2, R-3, R-4)."""
        return self.risk.states

    @property
    def paused(self) -> dict[str, frozenset[str]]:
        """SPEC R-7: paused symbols per bot (a copy: change them with :meth:`set_paused`)."""
        return {bot: frozenset(symbols) for bot, symbols in self.risk.paused.items()}

    @property
    def blacklist(self) -> dict[tuple[str, str], SymbolBlacklist]:
        """SPEC R-6 blacklist entries by (bot, symbol)."""
        return self.risk.blacklist

    def limits(self, profile: BotProfile, equity: Decimal | None = None) -> EffectiveLimits:
        """The preset's limits for ``profile`` at ``equity`` (quote; default the equity now, Z-4)."""
        return self.entries.limits(profile, equity)

    # ----------------------------------------------------------- lifecycle
    def restore(
        self,
        *,
        account: Account | None,
        positions: list[Position],
        open_orders: list[Order],
        risk_states: list[RiskState],
        paused: dict[str, set[str]],
        blacklist: list[SymbolBlacklist] = (),
        closed_trades: int = 0,
        recent_fills: list[Fill] = (),
        close_reasons: dict[str, ExitReason] | None = None,
        last_sample_ms: int | None = None,
        entry_details: dict[str, tuple[Decimal, Decimal | None, int]] | None = None,
        account_risk: AccountRisk | None = None,
        trade_record: list[tuple[Decimal, Decimal]] = (),
    ) -> None:
        """Load saved state after a restart (SPEC L-3): account, open positions, open orders,
        risk counters, paused symbols (R-7), symbol blacklist (R-6) and the last hour's fills
        (their entries rebuild the F-4 cooldown and hourly entry count), oldest first, the exit
        reasons of close orders still in flight (client order id → reason, from the audit), the
        time of the last equity sample (epoch ms UTC), per unfilled entry order (client
        order id) the TP1 share %, ATR and leverage decided at the signal (from the audit), the
        account risk state (R-5 pause, tier, R-9 ceilings) and the trade record — (net PnL,
        wallet balance after) per closed trade, oldest first — the launch ramp (Z-5) and the
        recent KPIs are rebuilt from."""
        book, risk = self.book, self.risk
        risk.restore_account(account_risk, list(trade_record))
        book.account = account
        book.close_reasons.update(close_reasons or {})
        if last_sample_ms is not None:  # the hourly equity sample keeps its rhythm (no extra sample)
            self.next_sample_ms = last_sample_ms - last_sample_ms % HOUR_MS + HOUR_MS
        for fill in recent_fills:
            if fill.leg is OrderLeg.ENTRY:
                risk.entry_log(fill.bot).record(fill.symbol, fill.timestamp)
        book.closed_trades = closed_trades
        for entry in blacklist:
            risk.blacklist[(entry.bot, entry.symbol)] = entry
        for position in positions:
            book.set_position(position)
        for order in open_orders:
            book.open_orders[order.client_order_id] = order
            if order.leg is OrderLeg.ENTRY and order.filled == 0:  # a partly filled one has its position
                # An entry sent but not filled yet counts for F-4 like the filled ones.
                risk.entry_log(order.bot).record(order.symbol, order.created_ms)
                side = Side.LONG if order.side.value == "buy" else Side.SHORT
                intent_id = f"{order.bot}|{order.symbol}|{order.created_ms}"
                share, atr, leverage = (entry_details or {}).get(
                    order.client_order_id, (None, None, self.bots[order.bot].profile.leverage))
                book.pending[(order.bot, order.symbol)] = PendingEntry(intent_id, side, order, leverage, share, atr)
        for state in risk_states:
            risk.states[state.bot] = state
        for bot, symbols in paused.items():
            risk.paused.setdefault(bot, set()).update(symbols)

    async def start(self) -> None:
        """Set leverage per symbol (O-7), read the balance, open the day's risk state."""
        for bot in self.bots.values():
            for symbol in bot.profile.symbols:
                await self.exchange.set_leverage(symbol, bot.profile.leverage)
                self.entries.leverage_set[symbol] = bot.profile.leverage
        balance = await self.exchange.fetch_balance()
        book = self.book
        if book.account is None:
            book.account = Account(balance, balance, self.clock.now_ms())
            self.sink.emit(AccountChanged(book.account))
        elif book.account.balance != balance:
            book.account = replace(book.account, balance=balance)
            self.sink.emit(AccountChanged(book.account))
        equity = self.equity()
        book.update_tier(self.risk.observe(self.clock.now_ms(), equity, book.account.peak_equity), equity)

    async def watch_marks(self, marks: dict[str, Decimal]) -> None:
        """Between candle closes (demo/live): take the exchange's mark prices (symbol → quote)
        of held symbols as their prices until their next close, then run the account guard's
        pass on them — SPEC R-3 (the hard daily limit closes every position at market as soon
        as a mark shows it, so a day cannot lose much more than the limit inside one candle),
        R-5/R-9 equity stages, liquidation distance. The clock duties run first (a new UTC day
        starts its counters before its first loss is judged)."""
        self.tick(self.clock.now_ms())
        self.book.live_marks.update(marks)
        await self.guard.watch()

    # ------------------------------------------------------------ hot path
    def step(self, feed: FeedState, o: float, h: float, low: float, c: float, v: float) -> Awaitable[object] | None:
        """One closed candle of ``feed`` through the whole engine (SPEC O-9: the replay and the
        live feeds call this same step; prices in quote, volume in contracts; the clock must read
        the candle's close time).

        The market-state half runs at once, synchronous and float-only: indicators (S-10), the
        F-2/F-4 rolling stats, the regime (S-12), then the strategy (S-11) for every bot on the
        feed. The order half — exits and the ladder for positions held on the symbol, the entry
        pipeline for the candidates that satisfy the 1+1 rule — is returned as an awaitable when
        there is order work (``work = engine.step(...); if work is not None: await work``) and
        None otherwise, so a candle with nothing to trade costs no coroutine and one call.
        """
        feed.last_close = c
        feed.last_volume = v
        series = feed.series
        if series is not None:
            # A replay: this candle's indicators, statistics, regime and strategy verdicts were
            # computed in bulk (trading.engine.series), and the replay positioned them on it.
            found = series.found(feed.bots)
        else:
            # warm()'s body, inlined: the live feeds run this for every candle.
            if self.book.live_marks:  # this close is newer than a mark read between closes
                self.book.live_marks.pop(feed.symbol, None)
            ind = feed.indicators
            ready = ind.update(h, low, c, v)
            feed.stats.update(c, v, ind.atr)
            feed.regime.update(c)
            found = None
            if ready:
                for bot in feed.bots:
                    check = bot.strategy.evaluate(
                        ind.rsi, ind.macd_hist, ind.prev_macd_hist, ind.atr, v, ind.volume_sma, c, ind.ema
                    )
                    if check is not None and check.one_plus_one:
                        if found is None:
                            found = []
                        found.append((bot, check))
        if feed.symbol in self.book.held_symbols:
            return self.act(feed, found)
        if found is None:
            return None
        if len(found) == 1:  # the common case: one candidate, its entry pipeline is the work
            bot, check = found[0]
            return self.entries.try_enter(bot, feed, check)
        return self.act(feed, found)

    async def act(self, feed: FeedState, found: list[tuple[BotRuntime, SignalCheck]] | None) -> None:
        """The order half of a candle step: manage the positions held on ``feed``'s symbol
        (exits, ladder), then try the candidates the step found."""
        if feed.symbol in self.book.held_symbols:
            await self.management.manage_positions(feed)
        if found is not None:
            for bot, check in found:
                await self.entries.try_enter(bot, feed, check)

    def attach_series(self, feed: FeedState, series) -> None:
        """Give ``feed`` its market state computed in bulk for a replay (a
        ``trading.engine.series.SeriesMarket`` over the candles to replay): from now on the
        replay positions it on each candle it steps (``series.seek(i)``) and :meth:`step` reads
        the candle's indicators, statistics, regime and strategy verdicts from it."""
        feed.series = series
        feed.indicators = series.indicators
        feed.stats = series.stats
        feed.regime = series.regime

    @staticmethod
    def warm(feed: FeedState, h: float, low: float, c: float, v: float) -> bool:
        """Feed one closed candle into the feed's market state only — indicators (S-10), F-2/F-4
        rolling stats and regime (S-12) — with no trading decision (warm-up before a replay or a
        live start; :meth:`step` starts with the same lines). True once the indicators are warm."""
        feed.last_close = c
        feed.last_volume = v
        ind = feed.indicators
        ready = ind.update(h, low, c, v)
        feed.stats.update(c, v, ind.atr)
        feed.regime.update(c)
        return ready

    def tick(self, now_ms: int) -> None:
        """Clock duties: UTC day roll-over of the risk counters and an hourly equity sample."""
        if now_ms >= self.risk.next_day_ms:
            self.risk.roll_day(now_ms, self.equity())
        if now_ms >= self.next_sample_ms:
            self.sample_equity(now_ms)
            self.next_sample_ms = now_ms - now_ms % HOUR_MS + HOUR_MS

    async def manage_positions(self, feed: FeedState) -> None:
        """Exit policies and the ladder for the positions on ``feed``'s symbol (E-2..E-5, E-10)."""
        await self.management.manage_positions(feed)

    async def try_enter(self, bot: BotRuntime, feed: FeedState, check: SignalCheck) -> SignalEvaluation:
        """Take a candidate through the entry pipeline (see :mod:`trading.engine.entries`)."""
        return await self.entries.try_enter(bot, feed, check)

    # --------------------------------------------------------------- fills
    async def on_fill(self, fill: Fill) -> None:
        """Book an execution (see :mod:`trading.engine.fills`)."""
        await self.fills.on_fill(fill)

    def on_funding(self, symbol: str, amount: Decimal, now: int) -> None:
        """Attribute a funding payment (quote, + received) to the open position on ``symbol``."""
        self.fills.on_funding(symbol, amount, now)

    # ------------------------------------------------------------- queries
    def equity(self) -> Decimal:
        """Wallet balance + unrealised PnL in quote (0 before start)."""
        return self.book.equity()

    def unrealised_pnl(self) -> Decimal:
        """Unrealised PnL of all open positions at the last closes, in quote."""
        return self.book.unrealised_pnl()

    def used_margin(self) -> Decimal:
        """Initial margin of the open positions and pending entries, in quote (SPEC R-8)."""
        return self.book.used_margin()

    def mark_price(self, symbol: str) -> Decimal | None:
        """Last close seen for ``symbol`` (quote), or None before the first candle."""
        return self.book.mark_price(symbol)

    def balance_profile_name(self) -> str:
        """SPEC Z-3 balance profile of the wallet balance: micro, small, medium or large."""
        return self.book.balance_profile_name()

    def drawdown_stage(self, equity: Decimal | None = None) -> DrawdownStage:
        """SPEC R-5 stage of the account now (or at ``equity``, quote)."""
        account = self.book.account
        if account is None:
            return DrawdownStage.NONE
        return self.risk.stage(account.peak_equity, self.equity() if equity is None else equity)

    def trading_state(self, bot: str) -> TradingState:
        """ACTIVE / REDUCING / HALTED of ``bot`` now (its day stop, the drawdown stage)."""
        return self.risk.state_of(bot, self.drawdown_stage())

    def is_paused(self, bot: str, symbol: str) -> bool:
        """SPEC R-7: True when ``symbol`` is paused for ``bot``."""
        return self.risk.is_paused(bot, symbol)

    def pending_entries(self) -> int:
        """Entries sent but not filled yet."""
        return len(self.book.pending)

    def pending_entry(self, bot: str, symbol: str) -> PendingEntry | None:
        """The entry of ``bot`` on ``symbol`` sent and not filled yet, if any."""
        return self.book.pending.get((bot, symbol))

    def tracked_order(self, client_order_id: str) -> Order | None:
        """The open order this engine tracks under ``client_order_id``, if any."""
        return self.book.open_orders.get(client_order_id)

    def stop_of(self, bot: str, symbol: str) -> Order | None:
        """The stop-loss order tracked for ``bot``'s position on ``symbol``, if any."""
        return self.book.stop_of(bot, symbol)

    def close_in_flight(self, bot: str, symbol: str) -> bool:
        """True while a close at market of ``bot``'s position on ``symbol`` is unfilled."""
        return self.book.close_in_flight(bot, symbol)

    # ------------------------------------------- commands and the order path
    def set_paused(self, bot: str, symbol: str, paused: bool) -> bool:
        """SPEC R-7: pause or resume entries on ``symbol`` for ``bot`` (the caller persists and
        audits the command). Returns True when it changed anything."""
        return self.risk.set_paused(bot, symbol, paused)

    def clear_risk_stop(self, bot: str) -> str:
        """Lift ``bot``'s day stop (R-2, R-3's daily limit, R-4) by hand; returns the reason it
        had ('' if none; the R-3 hard limit is never lifted: it holds to the next UTC day). The
        trader confirmed this in chat (SPEC T-1 "resume after a risk stop")."""
        return self.risk.clear_stop(bot)

    def resume_drawdown(self) -> bool:
        """Lift the latched R-5 drawdown pause (a confirmed /resume, T-1); a new pause is
        measured from the equity now. True when a pause was lifted."""
        return self.risk.resume_drawdown(self.clock.now_ms(), self.equity())

    def liquidation_price(self, position: Position) -> Decimal | None:
        """The position's liquidation price (quote) from the maintenance-margin brackets, or
        None when unknown."""
        return self.guard.liquidation_of(position)

    def sample_equity(self, now_ms: int) -> EquitySnapshot:
        """Record balance and equity now (for the equity curve and drawdown)."""
        book = self.book
        assert book.account is not None
        equity = self.equity()
        book.update_tier(self.risk.observe(now_ms, equity, book.account.peak_equity), equity)
        snapshot = EquitySnapshot(now_ms, book.account.balance, equity)
        if equity > book.account.peak_equity:
            book.account = replace(book.account, peak_equity=equity, updated_ms=now_ms)
            self.sink.emit(AccountChanged(book.account))
        self.sink.emit(EquitySampled(snapshot))
        return snapshot

    async def submit_entry(self, bot: str, symbol: str, side: Side, contracts: Decimal,
                           limit_price: Decimal | None = None, price: Decimal | None = None) -> Order | None:
        """An entry sent by hand through the order gate (see :meth:`Entries.submit_entry`)."""
        return await self.entries.submit_entry(bot, symbol, side, contracts, limit_price, price)

    async def close_position(self, bot: str, symbol: str, reason: ExitReason = ExitReason.MANUAL) -> Order | None:
        """Send a reduce-only market close for ``bot``'s position on ``symbol`` (SPEC T-2
        /close). Returns the close order, or None when there is no such position or a close is
        already on its way (a second tap never doubles the close)."""
        position = self.book.positions.get((bot, symbol))
        if position is None or self.book.close_in_flight(bot, symbol):
            return None
        return await self.protection.close_at_market(position, reason)

    async def close_all(self, reason: ExitReason) -> list[Order]:
        """Send a reduce-only market close for every open position (they fill at the next price
        the venue sees). Returns the close orders placed."""
        orders = []
        for position in list(self.book.positions.values()):
            order = await self.protection.close_at_market(position, reason)
            if order is not None:
                orders.append(order)
        return orders

    async def ensure_stop(self, bot: str, symbol: str) -> None:
        """SPEC O-6 / R-10: place the position's stop again for its current size; if that is
        refused the position is closed at market and a NO_STOP alert is raised."""
        position = self.book.positions.get((bot, symbol))
        if position is not None:
            await self.protection.replace_stop(position, self.clock.now_ms())

    async def place_bracket(self, order: Order) -> Order | None:
        """Send a reduce-only bracket of an open position through the order gate (reduce-only
        orders always pass; a take-profit the venue cancelled on its own, placed again under a
        new client id by ``trading.app.venue_guard``). Returns the accepted order, or None when
        the venue refused it (recorded with its reason)."""
        if not order.reduce_only:
            raise ValueError(f"{order.client_order_id}: only a reduce-only bracket is placed this way")
        return await self.gate.place(order)

    async def repair_position(self, bot: str, symbol: str, signed_contracts: Decimal, entry_price: Decimal) -> None:
        """SPEC O-5: make the local position match the venue's (see :meth:`Fills.repair_position`)."""
        await self.fills.repair_position(bot, symbol, signed_contracts, entry_price)

    async def cancel_stray(self, order: Order) -> bool:
        """SPEC O-5: cancel an order of ours the venue holds that protects or opens nothing
        (untracked, or reduce-only where its bot holds no position); it stops being tracked.
        Returns True when it was cancelled, False when the venue no longer had it open.

        Raises:
            ExchangeError: the cancel failed (the next reconciliation tries again).
        """
        try:
            cancelled = await self.exchange.cancel_order(order.client_order_id, order.symbol)
        except OrderNotFound:
            self.book.forget(order.client_order_id, OrderStatus.CANCELED, "RECONCILE: not open on the exchange")
            return False
        self.book.open_orders.pop(order.client_order_id, None)
        self.sink.emit(OrderUpdated(replace(cancelled, bot=order.bot or cancelled.bot, leg=order.leg,
                                            reason="RECONCILE: stray order")))
        return True

    def track_partial(self, order: Order) -> None:
        """Keep a partly filled order tracked, with its ``filled`` / ``average`` so far (persisted
        with the fill, so a restart books only the growth, SPEC O-5)."""
        self.book.track(order)

    def forget_order(self, client_order_id: str, status: OrderStatus, reason: str = "") -> None:
        """Drop an order the venue no longer holds open (canceled, rejected or never accepted,
        SPEC O-5); a pending entry is dropped with it."""
        self.book.forget(client_order_id, status, reason)

    async def cancel_working_orders(self, *, keep_protection: bool = True) -> int:
        """Cancel this process's working orders at shutdown (SPEC L-2): pending entries and
        ladder additions always; reduce-only stops and take-profits only when
        ``keep_protection`` is False (an open position keeps its exchange stop otherwise).
        Returns how many orders were cancelled."""
        await self.cancel_pending_entries()
        cancelled = 0
        for order in list(self.book.open_orders.values()):
            if order.reduce_only and keep_protection:
                continue
            await self.gate.cancel(order)
            cancelled += 1
        return cancelled

    async def expire_limit_entries(self, now_ms: int, symbol: str | None = None) -> int:
        """SPEC O-3: cancel limit entries (of ``symbol``, or all) still unfilled after
        ``orders.limit_entry_timeout_s``. An entry the venue confirms cancelled with nothing
        more filled is dropped with its pending intent; one that filled (partly) meanwhile stays
        tracked, so the fill tracker books the fill and its brackets follow (a part already
        filled keeps its position). Returns how many cancels were sent.

        Raises:
            ExchangeError: the cancel could not be sent after retries (the next call tries again).
        """
        timeout_s = self.config.orders.limit_entry_timeout_s
        deadline = now_ms - timeout_s * 1000
        expired = [o for o in self.book.open_orders.values()
                   if o.type is OrderType.LIMIT and o.leg is OrderLeg.ENTRY and o.created_ms <= deadline
                   and (symbol is None or o.symbol == symbol)]
        for local in expired:
            try:
                cancelled = await self.exchange.cancel_order(local.client_order_id, local.symbol)
            except OrderNotFound:
                continue  # filled and gone: the fill tracker books it
            if cancelled.status is not OrderStatus.OPEN and cancelled.filled <= local.filled:
                # Nothing more filled: drop it (and its pending intent if nothing filled at all).
                self.book.forget(local.client_order_id, OrderStatus.CANCELED,
                                 f"limit entry unfilled after {timeout_s} s")
        return len(expired)

    async def cancel_pending_entries(self) -> None:
        """Cancel entry orders that have not filled yet (end of a backtest, shutdown)."""
        book = self.book
        for key, pending in list(book.pending.items()):
            del book.pending[key]
            await self.gate.cancel(pending.order)



def _check_market_fees(config: TradingConfig, markets: dict[str, Market]) -> None:
    """SPEC E-7 at start: every bot's targets must clear the round-trip taker fee of each
    market it trades (the venue's rate, which may be above the config's assumption)."""
    from trading.domain.config import fee_problem

    checked: set[Decimal] = set()
    for profile in config.bots:
        for symbol in profile.symbols:
            fee = markets[symbol].taker_fee * 100
            if fee <= config.account.taker_fee_pct or fee in checked:
                continue
            checked.add(fee)
            problem = fee_problem(config, fee, f" on {symbol}")
            if problem:
                raise OptiFlowError(problem)
