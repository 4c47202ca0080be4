"""The event-driven trading engine: one core for replay now and live later.

Per closed candle: indicators (S-10) → ScalpingV1 score and the 1+1 rule (S-11) → minimum score
of the equity tier (Z-4) → RiskGuard (R-1..R-3, R-7, S-5) → sizing (Z-1, Z-2) → market entry with
a deterministic client order id (O-2) → on the fill, reduce-only brackets SL / TP1 / TP2 (E-1,
O-3) that follow the position size. Fills, funding and the clock drive everything; the engine
emits domain events to an :class:`~trading.domain.events.EventSink` and never touches storage or chat.

Hot path: :meth:`Engine.on_candle` is synchronous, float-only and allocation-free unless the
strategy sees a momentum condition. Everything that can await (orders) happens only on events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal

from trading.domain.config import BotProfile, TradingConfig
from trading.domain.errors import ExchangeError, OptiFlowError, OrderNotFound
from trading.domain.events import (
    AccountChanged,
    Alert,
    BlacklistChanged,
    EquitySampled,
    EntryDecided,
    EventSink,
    ExitDecided,
    FillBooked,
    OrderUpdated,
    PositionChanged,
    RiskStateChanged,
    SignalEvaluated,
)
from trading.domain.exits import (
    CLOSE_ALL,
    PARTIAL_CLOSE,
    atr_targets,
    auto_profit,
    fixed_targets,
    partial_close_floor,
    pnl_pct_on_margin,
    split_contracts,
    stepwise_action,
    timeout,
)
from trading.domain.filters import EntryLog, FilterContext, MarketStats, run_filters
from trading.domain.indicators import IndicatorSet
from trading.domain.ladder import (
    LadderDenied,
    LadderState,
    average_entry,
    ladder_policy,
    next_addition,
)
from trading.domain.models import (
    TIMEFRAME_MS,
    ZERO,
    Account,
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
)
from trading.domain.oms import bracket_order, close_order, entry_order, limit_entry_price
from trading.ports import Clock, ExchangePort
from trading.domain.precision import floor_price
from trading.domain.presets import EffectiveLimits, effective_limits, pair_allowed
from trading.domain.profiles import balance_profile, base_position_size, symbol_multiplier
from trading.domain.regime import Regime, RegimeDetector
from trading.domain.risk import (
    DAY_STOP_REASONS,
    RiskContext,
    RiskGuard,
    daily_loss_pct,
    drawdown_stage,
)
from trading.domain.sizing import SizingRejected, equity_tier, size_position
from trading.domain.strategy import ScalpingV1, SignalCheck

log = logging.getLogger(__name__)

HUNDRED = Decimal(100)
DAY_MS = 86_400_000
HOUR_MS = 3_600_000


_LEG_REASONS = {
    OrderLeg.STOP_LOSS: ExitReason.STOP_LOSS,
    OrderLeg.TP1: ExitReason.TP1,
    OrderLeg.TP2: ExitReason.TP2,
    OrderLeg.TP3: ExitReason.TP3,
}
_TAKE_PROFITS = frozenset({ExitReason.TP1, ExitReason.TP2, ExitReason.TP3, ExitReason.STEP_TP, ExitReason.AUTO_PROFIT})
_LIMIT_REASONS = frozenset({"MAX_POSITIONS", "MAX_POSITIONS_ACCOUNT"})
_POLICY_REASONS = {"AUTO_PROFIT": ExitReason.AUTO_PROFIT, "TIMEOUT": ExitReason.TIMEOUT, "MAX_HOLD": ExitReason.MAX_HOLD}


def utc_day(timestamp_ms: int) -> str:
    """'YYYY-MM-DD' of an epoch ms UTC timestamp."""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


@dataclass(slots=True)
class BotRuntime:
    """A configured bot (SPEC B-1) with its strategy instance."""

    profile: BotProfile
    strategy: ScalpingV1

    @property
    def name(self) -> str:
        """The bot's name."""
        return self.profile.name


@dataclass(slots=True)
class FeedState:
    """Per symbol and timeframe: indicators, the bots trading it and the last close (quote)."""

    symbol: str
    timeframe: str
    timeframe_ms: int
    indicators: IndicatorSet
    bots: tuple[BotRuntime, ...]
    stats: MarketStats
    regime: RegimeDetector
    last_close: float = 0.0
    last_volume: float = 0.0


@dataclass(slots=True)
class _PendingEntry:
    intent_id: str
    side: Side
    order: Order
    leverage: int
    tp1_share_pct: Decimal | None = None  # None after a restart: resolved again at the fill
    atr: Decimal | None = None  # ATR (quote) at the signal, for E-1 ATR targets


@dataclass(slots=True)
class Engine:
    """The trading core. Build it, :meth:`restore` saved state if any, ``await start()``, then
    feed candles. Args: config (trading config), markets (rules per symbol), exchange (the port),
    clock, sink (event listener), env ("paper" | "demo" | "live", part of client order ids)."""

    config: TradingConfig
    markets: dict[str, Market]
    exchange: ExchangePort
    clock: Clock
    sink: EventSink
    env: str = "paper"
    bots: dict[str, BotRuntime] = field(default_factory=dict)
    feeds: dict[tuple[str, str], FeedState] = field(default_factory=dict)
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    open_orders: dict[str, Order] = field(default_factory=dict)
    risk_states: dict[str, RiskState] = field(default_factory=dict)
    paused: dict[str, set[str]] = field(default_factory=dict)
    blacklist: dict[tuple[str, str], SymbolBlacklist] = field(default_factory=dict)
    held_symbols: set[str] = field(default_factory=set)  # symbols with an open position (hot-path test)
    account: Account | None = None
    closed_trades: int = 0
    guard: RiskGuard = field(default_factory=RiskGuard)
    _pending: dict[tuple[str, str], _PendingEntry] = field(default_factory=dict)
    _close_reasons: dict[str, ExitReason] = field(default_factory=dict)
    _next_day_ms: int = 0
    _next_sample_ms: int = 0
    _entry_logs: dict[str, EntryLog] = field(default_factory=dict)  # F-4 per bot
    _waiting: dict[str, list] = field(default_factory=dict)  # E-6 candidates blocked by R-1, per bot
    _leverage_set: dict[str, int] = field(default_factory=dict)  # leverage last set per symbol
    _tier_min_score: float = float("inf")  # min score of the current equity tier (Z-4); set on balance changes

    def __post_init__(self) -> None:
        for profile in self.config.bots:
            self.bots[profile.name] = BotRuntime(profile, ScalpingV1(profile.strategy))
            self.paused.setdefault(profile.name, set())
        for profile in self.config.bots:
            for symbol in profile.symbols:
                if symbol not in self.markets:
                    raise OptiFlowError(f"bot {profile.name}: {symbol} is not a listed market")
                key = (symbol, profile.timeframe)
                feed = self.feeds.get(key)
                bot = self.bots[profile.name]
                if feed is None:
                    tf_ms = TIMEFRAME_MS[profile.timeframe]
                    self.feeds[key] = FeedState(
                        symbol, profile.timeframe, tf_ms, IndicatorSet(), (bot,),
                        MarketStats.for_timeframe(tf_ms), RegimeDetector(),
                    )
                else:
                    feed.bots = feed.bots + (bot,)

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
    ) -> None:
        """Load saved state after a restart (SPEC L-3): account, open positions, open orders,
        risk counters, paused symbols (R-7), symbol blacklist (R-6) and the last hour's fills
        (their entries rebuild the F-4 cooldown and hourly entry count), oldest first, and the
        exit reasons of close orders still in flight (client order id → reason, from the audit)
        the time of the last equity sample (epoch ms UTC), and per unfilled entry order (client
        order id) the TP1 share %, ATR and leverage decided at the signal (from the audit)."""
        self.account = account
        self._close_reasons.update(close_reasons or {})
        if last_sample_ms is not None:  # the hourly equity sample keeps its rhythm (no extra sample)
            self._next_sample_ms = last_sample_ms - last_sample_ms % HOUR_MS + HOUR_MS
        for fill in recent_fills:
            if fill.leg is OrderLeg.ENTRY:
                self._entry_logs.setdefault(fill.bot, EntryLog()).record(fill.symbol, fill.timestamp)
        self.closed_trades = closed_trades
        for entry in blacklist:
            self.blacklist[(entry.bot, entry.symbol)] = entry
        for position in positions:
            self.positions[(position.bot, position.symbol)] = position
            self.held_symbols.add(position.symbol)
        for order in open_orders:
            self.open_orders[order.client_order_id] = order
            if order.leg is OrderLeg.ENTRY and order.filled == 0:  # a partly filled one has its position
                # An entry sent but not filled yet counts for F-4 like the filled ones.
                self._entry_logs.setdefault(order.bot, EntryLog()).record(order.symbol, order.created_ms)
                side = Side.LONG if order.side.value == "buy" else Side.SHORT
                intent_id = f"{order.bot}|{order.symbol}|{order.created_ms}"
                share, atr, leverage = (entry_details or {}).get(
                    order.client_order_id, (None, None, self.bots[order.bot].profile.leverage))
                self._pending[(order.bot, order.symbol)] = _PendingEntry(intent_id, side, order, leverage, share, atr)
        for state in risk_states:
            self.risk_states[state.bot] = state
        for bot, symbols in paused.items():
            self.paused.setdefault(bot, set()).update(symbols)

    async def start(self) -> None:
        """Set leverage per symbol (O-7), read the balance, open the day's risk state."""
        for bot in self.bots.values():
            for symbol in bot.profile.symbols:
                await self.exchange.set_leverage(symbol, bot.profile.leverage)
                self._leverage_set[symbol] = bot.profile.leverage
        balance = await self.exchange.fetch_balance()
        if self.account is None:
            self.account = Account(balance, balance, self.clock.now_ms())
            self.sink.emit(AccountChanged(self.account))
        elif self.account.balance != balance:
            self.account = replace(self.account, balance=balance)
            self.sink.emit(AccountChanged(self.account))
        self._update_tier(self.equity())

    # ------------------------------------------------------------ hot path
    def on_candle(
        self, feed: FeedState, o: float, h: float, low: float, c: float, v: float
    ) -> list[tuple[BotRuntime, SignalCheck]] | None:
        """Process one closed candle of ``feed`` (prices in quote, volume in contracts).

        Returns the candidates that satisfy the 1+1 rule, for :meth:`try_enter`, or None."""
        if not self.warm(feed, h, low, c, v):
            return None
        ind = feed.indicators
        found = None
        for bot in feed.bots:
            check = bot.strategy.evaluate(
                ind.rsi, ind.macd_hist, ind.prev_macd_hist, ind.atr, v, ind.volume_sma, c, ind.ema
            )
            if check is not None and check.one_plus_one:
                if found is None:
                    found = []
                found.append((bot, check))
        return found

    @staticmethod
    def warm(feed: FeedState, h: float, low: float, c: float, v: float) -> bool:
        """Feed one closed candle into the feed's market state only — indicators (S-10), F-2/F-4
        rolling stats and regime (S-12) — with no trading decision (replay warm-up after a
        restart, and the first step of :meth:`on_candle`). True once the indicators are warm."""
        feed.last_close = c
        feed.last_volume = v
        ind = feed.indicators
        ready = ind.update(h, low, c, v)
        feed.stats.update(c, v, ind.atr)
        feed.regime.update(c)
        return ready

    def tick(self, now_ms: int) -> None:
        """Clock duties: UTC day roll-over of the risk counters and an hourly equity sample."""
        if now_ms >= self._next_day_ms:
            self._roll_day(now_ms)
        if now_ms >= self._next_sample_ms:
            self.sample_equity(now_ms)
            self._next_sample_ms = now_ms - now_ms % HOUR_MS + HOUR_MS

    async def manage_positions(self, feed: FeedState) -> None:
        """Exit policies at the candle close for every bot's position on ``feed.symbol``:
        E-4 max hold / timeout, E-3 AutoProfit, then E-2 stepwise take-profit (with the E-5
        partial-close floor). Orders go out as reduce-only market closes; one close in flight
        per symbol (O-8)."""
        symbol = feed.symbol
        market = self.markets[symbol]
        for bot in feed.bots:
            position = self.positions.get((bot.name, symbol))
            if position is None or self._close_in_flight(bot.name, symbol):
                continue
            profile = bot.profile
            now = self.clock.now_ms()
            mark = Decimal(repr(feed.last_close))
            pnl_pct = pnl_pct_on_margin(position, mark, market.contract_size)
            action = timeout(position, now, pnl_pct, hold_minutes=profile.timeout_minutes or None,
                             min_pnl_pct=profile.timeout_min_pnl_pct, max_hold_minutes=profile.max_hold_minutes or None)
            if action is None and profile.auto_profit_pct > 0:
                action = auto_profit(position, pnl_pct, threshold_pct=profile.auto_profit_pct)
            if action is not None and action.kind == CLOSE_ALL:
                await self._close_at_market(position, _POLICY_REASONS[action.reason])
                continue
            if profile.exit_mode == "stepwise":
                await self._step_take_profit(position, market, mark)
            if profile.ladder and not self._order_in_flight(bot.name, symbol):
                await self._ladder(position, profile, feed, mark, pnl_pct, now)

    async def _step_take_profit(self, position: Position, market: Market, mark: Decimal) -> None:
        """E-2: close the share of the next profit step reached (E-5 floor applied)."""
        floor = partial_close_floor(self.balance_profile_name())
        unrealised = position.unrealised_pnl(mark, market.contract_size)
        step, steps_done = stepwise_action(position, unrealised, position.steps_done, market, floor)
        if steps_done != position.steps_done:
            position = replace(position, steps_done=steps_done)
            self.positions[(position.bot, position.symbol)] = position
            self.sink.emit(PositionChanged(position))
        if step is None or step.kind not in (PARTIAL_CLOSE, CLOSE_ALL) or step.contracts <= 0:
            return
        order = close_order(env=self.env, bot=position.bot, symbol=position.symbol, side=position.side,
                            intent_id=f"{position.position_id}|step{steps_done}", contracts=step.contracts,
                            now_ms=self.clock.now_ms())
        self._close_reasons[order.client_order_id] = ExitReason.STEP_TP
        self._decide_exit(position, ExitReason.STEP_TP, step.contracts, order.client_order_id, {"step": steps_done})
        await self._place(order)

    def _close_in_flight(self, bot: str, symbol: str) -> bool:
        return any(
            o.bot == bot and o.symbol == symbol and o.leg is OrderLeg.CLOSE for o in self.open_orders.values()
        )

    def _order_in_flight(self, bot: str, symbol: str) -> bool:
        """O-8 per-symbol lock: a market order (entry, addition or close) or a limit entry is
        still unfilled."""
        return any(
            o.bot == bot and o.symbol == symbol and o.type in (OrderType.MARKET, OrderType.LIMIT)
            for o in self.open_orders.values()
        )

    def balance_profile_name(self) -> str:
        """SPEC Z-3 balance profile of the wallet balance: micro, small, medium or large."""
        return balance_profile(self.account.balance if self.account else ZERO).name

    # --------------------------------------------------------------- entry
    async def try_enter(self, bot: BotRuntime, feed: FeedState, check: SignalCheck) -> SignalEvaluation:
        """Take a candidate through score, RiskGuard, sizing and the entry order; record the
        evaluation with its first blocker (SPEC S-13) and return it."""
        now = self.clock.now_ms()
        symbol = feed.symbol
        profile = bot.profile
        min_score = profile.strategy.min_score
        if min_score is None:
            min_score = self._tier_min_score
        if check.score < min_score:
            # Most candidates stop here: decided without touching Decimal or equity.
            return self._record(now, bot, symbol, check, "SCORE_BELOW_MIN", min_score)
        price = Decimal(repr(feed.last_close)) if feed.last_close > 0 else None
        equity = self.equity()
        limits = effective_limits(self.config.preset, profile, equity, self.closed_trades)
        min_score = limits.min_score
        if check.score < min_score:
            return self._record(now, bot, symbol, check, "SCORE_BELOW_MIN", min_score)
        stage = self.drawdown_stage(equity)
        ctx = self._risk_context(profile, symbol, price, equity, now, stage, limits)
        decision = self.guard.check_entry(ctx)
        if not decision.allowed:
            if decision.reason in DAY_STOP_REASONS:
                self._halt(profile.name, decision.reason)
            elif decision.reason in _LIMIT_REASONS:
                # E-6: remembered, so a position closing at this instant lets it in at once.
                self._waiting.setdefault(profile.name, []).append((now, bot, feed, check))
            return self._record(now, bot, symbol, check, decision.reason, min_score)
        assert price is not None  # check_data denied otherwise
        try:
            size = size_position(
                market=self.markets[symbol],
                equity=equity,
                price=price,
                stop_loss_pct=profile.stop_loss_pct,
                risk_pct=limits.risk_pct,
                leverage=limits.leverage,
                used_margin=self.used_margin(),
                max_total_margin_pct=self.config.account.max_total_margin_pct,
                max_position_size_pct=self.config.account.max_position_size_pct,
                # half risk at the reduce stage; S-12: less in a choppy market. R-9: both ≤ 1.
                risk_multiplier=(self.config.account.drawdown_risk_multiplier if stage == "REDUCE" else Decimal(1))
                * self._regime_risk(profile, feed),
                # E-10: with the ladder on, a position starts at the Z-3 base size and grows.
                max_notional=self._base_notional(symbol, limits.leverage) if profile.ladder else None,
            )
        except SizingRejected as exc:
            return self._record(now, bot, symbol, check, exc.reason, min_score)
        market = self.markets[symbol]
        entries = self._entry_logs.setdefault(profile.name, EntryLog())
        verdict = run_filters(
            FilterContext(
                symbol=symbol,
                spread_pct=self.exchange.spread_pct(symbol, feed.last_close),
                quote_volume_24h=feed.stats.quote_volume_24h,
                intended_notional=size.intended_notional,
                equity=equity,
                atr=feed.indicators.atr,
                close=feed.last_close,
                tick_size=market.tick_size,
                volume=feed.last_volume,
                median_volume=feed.stats.median_volume(),
                median_atr=feed.stats.median_atr(),
                last_entry_ms=entries.last_entry_ms(symbol),
                entries_last_hour=entries.entries_in_last_hour(now),
                now_ms=now,
                rounded_notional=size.notional,
                exchange_min_notional=market.min_notional,
            ),
            profile.filters,
        )
        if not verdict.allowed:
            return self._record(now, bot, symbol, check, verdict.reason, min_score)
        intent_id = f"{profile.name}|{symbol}|{now}"
        if self._leverage_set.get(symbol) != limits.leverage:
            await self.exchange.set_leverage(symbol, limits.leverage)
            self._leverage_set[symbol] = limits.leverage
        orders = self.config.orders
        order = entry_order(
            env=self.env, bot=profile.name, symbol=symbol, side=check.side,
            intent_id=intent_id, contracts=size.contracts, now_ms=now,
            limit_price=limit_entry_price(market, check.side, price, orders.limit_entry_offset_pct)
            if orders.entry_order_style == "limit" else None,
        )
        try:
            accepted = await self.exchange.create_order(order)
        except ExchangeError as exc:
            self.sink.emit(OrderUpdated(replace(order, status=OrderStatus.REJECTED, reason=exc.reason)))
            log.warning("entry rejected on %s: %s", symbol, exc.reason)
            return self._record(now, bot, symbol, check, "EXCHANGE_REJECTED", min_score)
        self._track(accepted)
        entries.record(symbol, now)
        atr = feed.indicators.atr
        pending = self._pending[(profile.name, symbol)] = _PendingEntry(
            intent_id, check.side, accepted, limits.leverage, limits.tp1_share_pct,
            Decimal(repr(atr)) if atr == atr and atr > 0 else None,  # NaN-safe
        )
        self.sink.emit(EntryDecided(accepted.client_order_id, limits.tp1_share_pct, pending.atr, limits.leverage))
        return self._record(now, bot, symbol, check, "", min_score)

    def _record(
        self, now: int, bot: BotRuntime, symbol: str, check: SignalCheck, blocked_by: str, min_score: float = 0.0
    ) -> SignalEvaluation:
        evaluation = SignalEvaluation(
            now, bot.name, symbol, check.side, check.score, not blocked_by, blocked_by, min_score, check.components
        )
        self.sink.emit(SignalEvaluated(evaluation))
        return evaluation

    def _risk_context(
        self,
        profile: BotProfile,
        symbol: str,
        price: Decimal | None,
        equity: Decimal,
        now: int,
        stage: str,
        limits: EffectiveLimits,
    ) -> RiskContext:
        state = self.risk_states.get(profile.name)
        bot_positions = sum(1 for (b, _s) in self.positions if b == profile.name) + sum(
            1 for (b, _s) in self._pending if b == profile.name
        )
        account_positions = len(self.positions) + len(self._pending)
        account_limit = sum(
            limits.max_positions if b.profile is profile
            else effective_limits(self.config.preset, b.profile, equity, self.closed_trades).max_positions
            for b in self.bots.values()
        )
        daily_pnl = None
        if state is not None:
            daily_pnl = sum((s.realised_today for s in self.risk_states.values()), ZERO) + self.unrealised_pnl()
        return RiskContext(
            bot=profile.name,
            symbol=symbol,
            hour_utc=(now // HOUR_MS) % 24,
            price=price,
            equity=equity if equity > 0 else None,
            day_start_equity=None if state is None else state.day_start_equity,
            daily_pnl=daily_pnl,
            open_positions_bot=bot_positions,
            max_positions_bot=limits.max_positions,
            open_positions_account=account_positions,
            max_positions_account=account_limit,
            symbol_busy=(profile.name, symbol) in self.positions or (profile.name, symbol) in self._pending,
            paused=symbol in self.paused.get(profile.name, ()),
            sl_streak=0 if state is None else state.sl_streak,
            sl_streak_limit=limits.sl_streak_limit,
            daily_loss_limit_pct=self.config.account.daily_loss_limit_pct,
            halted_reason="" if state is None else state.halted_reason,
            trading_hours_utc=profile.trading_hours_utc,
            blackout_hours_utc=profile.blackout_hours_utc,
            symbol_held_by=next(
                (b for (b, s) in [*self.positions, *self._pending] if s == symbol and b != profile.name), ""
            ),
            blacklisted_until_ms=self._blacklisted_until(profile.name, symbol),
            now_ms=now,
            trades_today=0 if state is None else state.trades_today,
            profit_factor_today=None if state is None else state.profit_factor_today,
            min_trades_for_profit_factor=profile.min_trades_for_profit_factor,
            min_profit_factor=profile.min_profit_factor,
            drawdown_stage=stage,
            max_trades_per_day=limits.max_trades_per_day,
            pair_allowed=pair_allowed(self.config.preset, symbol, equity),
        )

    @staticmethod
    def _regime_risk(profile: BotProfile, feed: FeedState) -> Decimal:
        """SPEC S-12 sizing factor of the feed's current regime (1 while it warms up)."""
        regime = feed.regime.regime
        return Decimal(1) if regime is None else getattr(profile.regime_risk, regime.value)

    def _blacklisted_until(self, bot: str, symbol: str) -> int | None:
        entry = self.blacklist.get((bot, symbol))
        return None if entry is None else entry.blocked_until_ms

    def drawdown_stage(self, equity: Decimal | None = None) -> str:
        """SPEC R-5 stage of the account now: "NONE", "REDUCE" or "PAUSE"."""
        if self.account is None:
            return "NONE"
        account = self.config.account
        return drawdown_stage(
            self.account.peak_equity,
            self.equity() if equity is None else equity,
            reduce_pct=account.drawdown_reduce_pct,
            reduce_quote=account.drawdown_reduce_quote,
            pause_pct=account.drawdown_pause_pct,
            pause_quote=account.drawdown_pause_quote,
        )

    # --------------------------------------------------------------- fills
    async def on_fill(self, fill: Fill) -> None:
        """Book an execution: open the position and place its brackets, or reduce / close it
        and keep the brackets in step (SPEC E-1, O-3)."""
        self.sink.emit(FillBooked(fill))
        order = self.open_orders.pop(fill.client_order_id, None)
        if order is not None:
            self.sink.emit(
                OrderUpdated(replace(order, status=OrderStatus.CLOSED, filled=fill.amount, average=fill.price, updated_ms=fill.timestamp))
            )
        key = (fill.bot, fill.symbol)
        if fill.leg is OrderLeg.ADD:
            if key in self.positions:
                await self._add_to_position(self.positions[key], fill)
            else:
                await self._close_orphan(fill)
        elif fill.leg is OrderLeg.ENTRY:
            pending = self._pending.pop(key, None)
            if pending is None:
                log.error("entry fill without a pending entry: %s", fill.client_order_id)
                return
            await self._open_position(pending, fill)
        else:
            position = self.positions.get(key)
            if position is None:
                log.error("exit fill without a position: %s", fill.client_order_id)
                return
            await self._reduce_position(position, fill)
        await self._refresh_balance(fill.timestamp)

    async def _close_orphan(self, fill: Fill) -> None:
        """An addition filled after its position closed (its cancel lost the race): the exchange
        now holds contracts nobody manages and no stop protects — close them at once (R-10)."""
        side = Side.LONG if fill.side.value == "buy" else Side.SHORT
        self.sink.emit(Alert("NO_STOP", fill.bot, fill.symbol,
                             f"addition filled without a position; closing {fill.amount} at market"))
        await self._place(close_order(env=self.env, bot=fill.bot, symbol=fill.symbol, side=side,
                                      intent_id=f"orphan|{fill.client_order_id}", contracts=fill.amount,
                                      now_ms=fill.timestamp))

    def _brackets(
        self, profile: BotProfile, market: Market, side: Side, entry: Decimal, contracts: Decimal,
        intent_id: str, share: Decimal, atr: Decimal | None, now: int, tp1_done: bool = False,
    ) -> tuple[Order, list[Order], list[Decimal]]:
        """The stop for all ``contracts`` and the take-profits (E-1 fixed TP1/TP2 by the TP1
        share, or ATR TP1/TP2/TP3 at 50/30/20 %), from ``entry``. Returns (stop, take-profits,
        target prices); triggers are floored to the tick by bracket_order."""
        levels = fixed_targets(entry, side, profile.take_profit_1_pct, profile.take_profit_2_pct, profile.stop_loss_pct)
        if profile.tp_mode == "atr" and atr is not None and atr > 0:
            targets = atr_targets(entry, side, atr)
            prices = [price for price, _ in targets]
            amounts = split_contracts(market, contracts, [pct for _, pct in targets])
        else:
            prices = [levels.take_profit_1, levels.take_profit_2]
            if tp1_done:
                share = ZERO  # TP1 already taken: what is left goes to TP2
            if share <= 0 or share >= HUNDRED:  # one target takes everything (swing: TP2 only)
                amounts = [contracts, ZERO] if share >= HUNDRED else [ZERO, contracts]
            else:
                amounts = split_contracts(market, contracts, [share, HUNDRED - share])
        # E-5: a partial take-profit worth less than the floor is not placed; its contracts go
        # to the last target (a small position is held to its final bracket).
        floor = partial_close_floor(self.balance_profile_name())
        for i in range(len(amounts) - 1):
            if 0 < amounts[i] * market.contract_size * entry < floor:
                amounts[-1] += amounts[i]
                amounts[i] = ZERO
        legs = (OrderLeg.TP1, OrderLeg.TP2, OrderLeg.TP3)
        take_profits = [
            bracket_order(env=self.env, bot=profile.name, market=market, side=side, intent_id=intent_id,
                          leg=leg, generation=0, contracts=amount, trigger_price=price, now_ms=now,
                          tp_order_style=self.config.orders.tp_order_style)
            for leg, price, amount in zip(legs, prices, amounts)
            if amount > 0
        ]
        stop = bracket_order(env=self.env, bot=profile.name, market=market, side=side, intent_id=intent_id,
                             leg=OrderLeg.STOP_LOSS, generation=0, contracts=contracts,
                             trigger_price=levels.stop_loss, now_ms=now)
        return stop, take_profits, prices

    async def _protect(
        self, position: Position, stop: Order, take_profits: list[Order], replacing: list[Order] = ()
    ) -> None:
        """Place the stop first; without a working stop the position is closed at once (R-10);
        then the take-profits (brackets exit mode only). ``replacing``: the brackets these
        supersede, cancelled only once the new stop rests (never a moment without a stop)."""
        if await self._place(stop) is None:
            for order in replacing:
                if order.leg is not OrderLeg.STOP_LOSS:  # the old stop still guards the old size
                    await self._cancel(order)
            self.sink.emit(Alert("NO_STOP", position.bot, position.symbol,
                                 f"stop-loss rejected; closing {position.symbol} at market"))
            await self._close_at_market(position, ExitReason.NO_STOP)
            return
        for order in replacing:
            await self._cancel(order)
        if self.bots[position.bot].profile.exit_mode == "brackets":
            for order in take_profits:
                await self._place(order)

    @staticmethod
    def _levels(position: Position, market: Market, stop: Order, take_profits: list[Order], prices: list[Decimal]) -> Position:
        by_leg = {o.leg: o.trigger_price for o in take_profits}
        return replace(
            position,
            stop_loss=stop.trigger_price,
            take_profit_1=by_leg.get(OrderLeg.TP1) or floor_price(market, prices[0]),
            take_profit_2=by_leg.get(OrderLeg.TP2) or floor_price(market, prices[1]),
            take_profit_3=by_leg.get(OrderLeg.TP3),
        )

    async def _open_position(self, pending: _PendingEntry, fill: Fill) -> None:
        """Create the position and its reduce-only brackets (SPEC E-1, O-3, R-10)."""
        profile = self.bots[fill.bot].profile
        market = self.markets[fill.symbol]
        share = pending.tp1_share_pct
        if share is None:
            share = effective_limits(self.config.preset, profile, self.equity(), self.closed_trades).tp1_share_pct
        stop, take_profits, prices = self._brackets(
            profile, market, pending.side, fill.price, fill.amount, pending.intent_id, share, pending.atr, fill.timestamp
        )
        position = Position(
            position_id=pending.intent_id,
            bot=fill.bot,
            symbol=fill.symbol,
            side=pending.side,
            contracts=fill.amount,
            initial_contracts=fill.amount,
            entry_price=fill.price,
            opened_ms=fill.timestamp,
            stop_loss=ZERO,
            take_profit_1=ZERO,
            take_profit_2=ZERO,
            leverage=pending.leverage,
            fees=fill.fee,
            tp1_done=not any(o.leg is OrderLeg.TP1 for o in take_profits),
            last_addition_ms=fill.timestamp,
        )
        position = self._levels(position, market, stop, take_profits, prices)
        self.positions[(fill.bot, fill.symbol)] = position
        self.held_symbols.add(fill.symbol)
        self.sink.emit(PositionChanged(position))
        await self._protect(position, stop, take_profits)

    async def _add_to_position(self, position: Position, fill: Fill) -> None:
        """E-10: book a ladder addition, average the entry and re-place every bracket for the
        new size and levels (brackets follow the position)."""
        profile = self.bots[position.bot].profile
        market = self.markets[position.symbol]
        entry = average_entry(position.contracts, position.entry_price, fill.amount, fill.price)
        contracts = position.contracts + fill.amount
        old = [o for o in self.open_orders.values()
               if o.bot == position.bot and o.symbol == position.symbol and o.reduce_only]
        share = effective_limits(self.config.preset, profile, self.equity(), self.closed_trades).tp1_share_pct
        intent = f"{position.position_id}|add{position.additions + 1}"
        stop, take_profits, prices = self._brackets(
            profile, market, position.side, entry, contracts, intent, share, None, fill.timestamp, position.tp1_done
        )
        position = replace(
            position,
            contracts=contracts,
            initial_contracts=position.initial_contracts + fill.amount,
            entry_price=entry,
            fees=position.fees + fill.fee,
            additions=position.additions + 1,
            last_addition_ms=fill.timestamp,
        )
        position = self._levels(position, market, stop, take_profits, prices)
        self.positions[(position.bot, position.symbol)] = position
        self.sink.emit(PositionChanged(position))
        await self._protect(position, stop, take_profits, replacing=old)

    async def _ladder(self, position: Position, profile: BotProfile, feed: FeedState, mark: Decimal,
                      pnl_pct: Decimal, now: int) -> None:
        """E-10: ask the ladder policy for the next addition and send it as a market order."""
        market = self.markets[position.symbol]
        equity = self.equity()
        used = self.used_margin()
        policy = ladder_policy(self.balance_profile_name(), feed.regime.regime or Regime.RANGING)
        result = next_addition(
            policy=policy,
            state=LadderState(position.additions, position.last_addition_ms),
            now_ms=now,
            pnl_pct=pnl_pct,
            base_size_quote=self._base_notional(position.symbol, position.leverage),
            price=mark,
            market=market,
            leverage=position.leverage,
            equity=equity,
            used_margin=used,
            free_margin=equity - used,
            max_total_margin_pct=self.config.account.max_total_margin_pct,
            max_position_size_pct=self.config.account.max_position_size_pct,
            position_notional=position.notional(mark, market.contract_size),
        )
        if isinstance(result, LadderDenied):
            return
        order = entry_order(env=self.env, bot=position.bot, symbol=position.symbol, side=position.side,
                            intent_id=f"{position.position_id}|add{position.additions + 1}",
                            contracts=result.contracts, now_ms=now)
        await self._place(replace(order, leg=OrderLeg.ADD))

    def _base_notional(self, symbol: str, leverage: int) -> Decimal:
        """Z-3 base position size (margin, quote) × per-symbol multiplier × leverage = notional."""
        balance = self.account.balance if self.account else ZERO
        return base_position_size(balance) * symbol_multiplier(symbol) * leverage

    async def _reduce_position(self, position: Position, fill: Fill) -> None:
        market = self.markets[fill.symbol]
        pnl = position.side.sign * (fill.price - position.entry_price) * fill.amount * market.contract_size
        remaining = position.contracts - fill.amount
        position = replace(
            position,
            contracts=remaining,
            realised_pnl=position.realised_pnl + pnl,
            fees=position.fees + fill.fee,
            tp1_done=position.tp1_done or fill.leg is OrderLeg.TP1,
        )
        reason = _LEG_REASONS.get(fill.leg) or self._close_reasons.pop(fill.client_order_id, ExitReason.MANUAL)
        if fill.leg in _LEG_REASONS:  # a resting bracket decided this exit (E-1)
            self._decide_exit(position, reason, fill.amount, why={"bracket_order_id": fill.client_order_id,
                                                                   "price": fill.price})
        state = self.risk_states.get(position.bot)
        if state is not None and reason in _TAKE_PROFITS:
            state = replace(state, sl_streak=0)  # SPEC R-2: a take-profit resets the streak
        if remaining > 0:
            self.positions[(position.bot, position.symbol)] = position
            self.sink.emit(PositionChanged(position))
            if fill.leg is not OrderLeg.STOP_LOSS:
                await self._replace_stop(position, market, fill.timestamp)  # the stop follows the size
            if state is not None:
                self._set_risk_state(state)
            return
        average_exit = position.entry_price + position.realised_pnl / (
            position.side.sign * position.initial_contracts * market.contract_size
        )
        closed = replace(position, closed_ms=fill.timestamp, exit_price=average_exit, exit_reason=reason)
        del self.positions[(position.bot, position.symbol)]
        if not any(symbol == position.symbol for _bot, symbol in self.positions):
            self.held_symbols.discard(position.symbol)
        self.closed_trades += 1
        self.sink.emit(PositionChanged(closed))
        await self._cancel_brackets(position.bot, position.symbol)
        if reason is ExitReason.STOP_LOSS:
            self._count_stop_loss(position.bot, position.symbol, fill.timestamp)
        if state is not None:
            streak = state.sl_streak + 1 if reason is ExitReason.STOP_LOSS else state.sl_streak
            net = closed.net_pnl
            state = replace(
                state,
                sl_streak=streak,
                realised_today=state.realised_today + net,
                trades_today=state.trades_today + 1,
                gross_profit_today=state.gross_profit_today + max(net, ZERO),
                gross_loss_today=state.gross_loss_today - min(net, ZERO),
            )
            profile = self.bots[position.bot].profile
            limit = effective_limits(self.config.preset, profile, self.equity(), self.closed_trades).sl_streak_limit
            if not state.halted_reason and streak >= limit:
                state = replace(state, halted_reason="SL_STREAK")
            loss = daily_loss_pct(
                sum((s.realised_today for b, s in self.risk_states.items() if b != state.bot), ZERO)
                + state.realised_today,
                state.day_start_equity,
            )
            if not state.halted_reason and loss >= self.config.account.daily_loss_limit_pct:
                state = replace(state, halted_reason="DAILY_LOSS_LIMIT")
            self._set_risk_state(state)
        await self._reactive_entry(position.bot, fill.timestamp)

    async def _reactive_entry(self, bot_name: str, now: int) -> None:
        """SPEC E-6: when a position closes and the bot is below its limit, the candidates that
        R-1 blocked at this same instant are scanned again at once instead of waiting for the
        next candle. Candidates of earlier instants are stale and dropped."""
        waiting = [w for w in self._waiting.pop(bot_name, ()) if w[0] == now]
        for _when, bot, feed, check in waiting:
            await self.try_enter(bot, feed, check)

    def _count_stop_loss(self, bot: str, symbol: str, now: int) -> None:
        """SPEC R-6: the Nth stop-loss on a symbol blocks it for blacklist_minutes."""
        profile = self.bots[bot].profile
        entry = self.blacklist.get((bot, symbol)) or SymbolBlacklist(bot, symbol)
        count = entry.stop_losses + 1
        if count >= profile.blacklist_stop_losses:
            entry = SymbolBlacklist(bot, symbol, 0, now + profile.blacklist_minutes * 60_000)
            self.sink.emit(Alert("SYMBOL_BLACKLISTED", bot, symbol,
                                 f"{count} stop-losses: {symbol} paused {profile.blacklist_minutes} min"))
        else:
            entry = replace(entry, stop_losses=count)
        self.blacklist[(bot, symbol)] = entry
        self.sink.emit(BlacklistChanged(entry))

    async def _replace_stop(self, position: Position, market: Market, now: int) -> None:
        """After a partial close the stop is re-placed for the remaining contracts (brackets
        follow the position size, SPEC E-1 / E-10). The new stop goes out before the old one is
        cancelled, so the position is never without a stop (R-10)."""
        old = [o for o in self.open_orders.values()
               if o.bot == position.bot and o.symbol == position.symbol and o.leg is OrderLeg.STOP_LOSS]
        # The id derives from the event (time and size), so a retry reuses it and a later
        # replacement never collides with a cancelled one (SPEC O-2).
        stop = bracket_order(env=self.env, bot=position.bot, market=market, side=position.side,
                             intent_id=f"{position.position_id}|{now}|{position.contracts}",
                             leg=OrderLeg.STOP_LOSS, generation=1,
                             contracts=position.contracts, trigger_price=position.stop_loss, now_ms=now)
        placed = await self._place(stop)
        for order in old:
            if order.client_order_id != stop.client_order_id:  # the same event placed it already (O-2)
                await self._cancel(order)
        if placed is None:
            self.sink.emit(Alert("NO_STOP", position.bot, position.symbol,
                                 f"stop-loss re-placement rejected; closing {position.symbol} at market"))
            await self._close_at_market(position, ExitReason.NO_STOP)

    async def _place(self, order: Order) -> Order | None:
        """Place an order; a rejection is recorded with the exchange's reason and returns None.
        An order already tracked under the same client order id is not sent again (SPEC O-2)."""
        tracked = self.open_orders.get(order.client_order_id)
        if tracked is not None:
            return tracked
        try:
            accepted = await self.exchange.create_order(order)
        except ExchangeError as exc:
            self.sink.emit(OrderUpdated(replace(order, status=OrderStatus.REJECTED, reason=exc.reason)))
            log.error("%s order on %s rejected: %s", order.leg.value, order.symbol, exc.reason)
            return None
        self._track(accepted)
        return accepted

    async def _close_at_market(self, position: Position, reason: ExitReason) -> Order | None:
        """Send a reduce-only market order for the whole remaining position."""
        now = self.clock.now_ms()
        # The id derives from the event (reason, time and size, SPEC O-2): a retry of this close
        # reuses it, a later close of the same position (the first one expired) never does.
        order = close_order(env=self.env, bot=position.bot, symbol=position.symbol, side=position.side,
                            intent_id=f"{position.position_id}|{reason.value}|{now}|{position.contracts}",
                            contracts=position.contracts, now_ms=now)
        self._close_reasons[order.client_order_id] = reason
        self._decide_exit(position, reason, position.contracts, order.client_order_id)
        return await self._place(order)

    def _decide_exit(self, position: Position, reason: ExitReason, contracts: Decimal, client_order_id: str = "",
                     why: dict | None = None) -> None:
        """Emit the exit decision with its reason for the audit trail (SPEC A-1)."""
        self.sink.emit(ExitDecided(self.clock.now_ms(), position.bot, position.symbol, position.side.value,
                                   position.position_id, reason.value, contracts, client_order_id, why or {}))

    def _track(self, order: Order) -> None:
        self.open_orders[order.client_order_id] = order
        self.sink.emit(OrderUpdated(order))

    async def _cancel(self, order: Order) -> None:
        self.open_orders.pop(order.client_order_id, None)
        try:
            cancelled = await self.exchange.cancel_order(order.client_order_id, order.symbol)
        except ExchangeError as exc:
            log.warning("cancel of %s failed: %s", order.client_order_id, exc.reason)
            cancelled = replace(order, status=OrderStatus.CANCELED, reason=exc.reason)
        self.sink.emit(OrderUpdated(cancelled))

    async def _cancel_brackets(self, bot: str, symbol: str) -> None:
        """Cancel this bot's reduce-only orders, unfilled ladder additions and the rest of a
        partly filled limit entry on ``symbol`` (any of them filling after the close would open
        a position nobody manages)."""
        for order in list(self.open_orders.values()):
            if order.bot == bot and order.symbol == symbol and (
                    order.reduce_only or order.leg is OrderLeg.ADD
                    or (order.leg is OrderLeg.ENTRY and order.type is OrderType.LIMIT)):
                await self._cancel(order)

    async def _refresh_balance(self, now: int) -> None:
        balance = await self.exchange.fetch_balance()
        assert self.account is not None
        equity = balance + self.unrealised_pnl()
        self.account = Account(balance, max(self.account.peak_equity, equity), now)
        self.sink.emit(AccountChanged(self.account))
        self._update_tier(equity)

    def _update_tier(self, equity: Decimal) -> None:
        """Cache the equity tier's minimum score so the hot path never computes equity (Z-4)."""
        self._tier_min_score = equity_tier(equity).min_score if equity > 0 else float("inf")

    def on_funding(self, symbol: str, amount: Decimal, now: int) -> None:
        """Attribute a funding payment (quote, + received) to the open position on ``symbol``."""
        for key, position in self.positions.items():
            if key[1] == symbol:
                updated = replace(position, funding=position.funding + amount)
                self.positions[key] = updated
                self.sink.emit(PositionChanged(updated))
                break
        assert self.account is not None
        self.account = replace(self.account, balance=self.account.balance + amount, updated_ms=now)
        self.sink.emit(AccountChanged(self.account))

    async def close_all(self, reason: ExitReason) -> list[Order]:
        """Send a reduce-only market close for every open position (they fill at the next
        price the exchange sees). Returns the close orders placed."""
        orders = []
        for position in list(self.positions.values()):
            order = await self._close_at_market(position, reason)
            if order is not None:
                orders.append(order)
        return orders

    async def close_position(self, bot: str, symbol: str, reason: ExitReason = ExitReason.MANUAL) -> Order | None:
        """Send a reduce-only market close for ``bot``'s position on ``symbol`` (SPEC T-2
        /close). Returns the close order, or None when there is no such position or a close is
        already on its way (a second tap never doubles the close)."""
        position = self.positions.get((bot, symbol))
        if position is None or self._close_in_flight(bot, symbol):
            return None
        return await self._close_at_market(position, reason)

    def clear_risk_stop(self, bot: str) -> str:
        """Lift ``bot``'s day stop (R-2, R-3, R-4) by hand; returns the reason it had ('' if none).
        The trader confirmed this in chat (SPEC T-1 "resume after a risk stop")."""
        state = self.risk_states.get(bot)
        if state is None or not state.halted_reason:
            return ""
        self._set_risk_state(replace(state, halted_reason=""))
        return state.halted_reason

    async def cancel_working_orders(self, *, keep_protection: bool = True) -> int:
        """Cancel this process's working orders at shutdown (SPEC L-2): pending entries and
        ladder additions always; reduce-only stops and take-profits only when
        ``keep_protection`` is False (an open position keeps its exchange stop otherwise).
        Returns how many orders were cancelled."""
        await self.cancel_pending_entries()
        cancelled = 0
        for order in list(self.open_orders.values()):
            if order.reduce_only and keep_protection:
                continue
            await self._cancel(order)
            cancelled += 1
        return cancelled

    async def expire_limit_entries(self, now_ms: int, symbol: str | None = None) -> int:
        """SPEC O-3: cancel limit entries (of ``symbol``, or all) still unfilled after
        ``orders.limit_entry_timeout_s``. An entry the exchange confirms cancelled with nothing
        more filled is dropped with its pending intent; one that filled (partly) meanwhile stays
        tracked, so the fill poll books the fill and its brackets follow (a part already filled
        keeps its position). Returns how many cancels were sent.

        Raises:
            ExchangeError: the cancel could not be sent after retries (the next call tries again).
        """
        timeout_s = self.config.orders.limit_entry_timeout_s
        deadline = now_ms - timeout_s * 1000
        expired = [o for o in self.open_orders.values()
                   if o.type is OrderType.LIMIT and o.leg is OrderLeg.ENTRY and o.created_ms <= deadline
                   and (symbol is None or o.symbol == symbol)]
        for local in expired:
            try:
                cancelled = await self.exchange.cancel_order(local.client_order_id, local.symbol)
            except OrderNotFound:
                continue  # filled and gone: the fill poll books it
            if cancelled.status is not OrderStatus.OPEN and cancelled.filled <= local.filled:
                # Nothing more filled: drop it (and its pending intent if nothing filled at all).
                self.forget_order(local.client_order_id, OrderStatus.CANCELED,
                                  f"limit entry unfilled after {timeout_s} s")
        return len(expired)

    async def cancel_pending_entries(self) -> None:
        """Cancel entry orders that have not filled yet (end of a backtest, shutdown)."""
        for key, pending in list(self._pending.items()):
            del self._pending[key]
            await self._cancel(pending.order)

    # ------------------------------------------------------------ state
    def _halt(self, bot: str, reason: str) -> None:
        state = self.risk_states.get(bot)
        if state is not None and not state.halted_reason:
            self._set_risk_state(replace(state, halted_reason=reason))

    def _set_risk_state(self, state: RiskState) -> None:
        self.risk_states[state.bot] = state
        self.sink.emit(RiskStateChanged(state))

    def _roll_day(self, now_ms: int) -> None:
        day = utc_day(now_ms)
        equity = self.equity()
        for name in self.bots:
            state = self.risk_states.get(name)
            if state is None or state.day != day:
                self._set_risk_state(RiskState(name, day, equity))
        self._next_day_ms = now_ms - now_ms % DAY_MS + DAY_MS

    def sample_equity(self, now_ms: int) -> EquitySnapshot:
        """Record balance and equity now (for the equity curve and drawdown)."""
        assert self.account is not None
        equity = self.equity()
        self._update_tier(equity)
        snapshot = EquitySnapshot(now_ms, self.account.balance, equity)
        if equity > self.account.peak_equity:
            self.account = replace(self.account, peak_equity=equity, updated_ms=now_ms)
            self.sink.emit(AccountChanged(self.account))
        self.sink.emit(EquitySampled(snapshot))
        return snapshot

    def mark_price(self, symbol: str) -> Decimal | None:
        """Last close seen for ``symbol`` (quote), or None before the first candle."""
        best = 0.0
        for (feed_symbol, _tf), feed in self.feeds.items():
            if feed_symbol == symbol and feed.last_close > 0:
                best = feed.last_close
        return Decimal(repr(best)) if best > 0 else None

    def unrealised_pnl(self) -> Decimal:
        """Unrealised PnL of all open positions at the last closes, in quote."""
        total = ZERO
        for position in self.positions.values():
            mark = self.mark_price(position.symbol)
            if mark is not None:
                total += position.unrealised_pnl(mark, self.markets[position.symbol].contract_size)
        return total

    def equity(self) -> Decimal:
        """Balance + unrealised PnL in quote (0 before start)."""
        if self.account is None:
            return ZERO
        return self.account.balance + self.unrealised_pnl()

    def used_margin(self) -> Decimal:
        """Initial margin of the open positions and pending entries, in quote (SPEC R-8)."""
        total = ZERO
        for position in self.positions.values():
            total += position.margin(self.markets[position.symbol].contract_size)
        for (bot, symbol), pending in self._pending.items():
            mark = self.mark_price(symbol)
            if mark is not None:
                total += pending.order.amount * self.markets[symbol].contract_size * mark / pending.leverage
        return total

    def pending_entries(self) -> int:
        """Entries sent but not filled yet."""
        return len(self._pending)

    # ------------------------------------------------- live order path (SPEC O-5, O-6)
    async def submit_entry(self, bot: str, symbol: str, side: Side, contracts: Decimal,
                           limit_price: Decimal | None = None) -> Order | None:
        """Send an entry of ``contracts`` (already at step size) for ``bot`` outside the
        strategy (operator smoke test, SPEC O-3): market, or a limit at ``limit_price`` (quote,
        at tick size); brackets follow when it fills. Returns the accepted order, or None when
        the exchange rejected it (recorded with the reason)."""
        now = self.clock.now_ms()
        leverage = self.bots[bot].profile.leverage
        intent_id = f"{bot}|{symbol}|{now}"
        order = entry_order(env=self.env, bot=bot, symbol=symbol, side=side, intent_id=intent_id,
                            contracts=contracts, now_ms=now, limit_price=limit_price)
        accepted = await self._place(order)
        if accepted is not None:
            self._pending[(bot, symbol)] = _PendingEntry(intent_id, side, accepted, leverage)
        return accepted

    async def close_position(self, bot: str, symbol: str, reason: ExitReason = ExitReason.MANUAL) -> Order | None:
        """Send a reduce-only market close for the open position of ``bot`` on ``symbol``."""
        position = self.positions.get((bot, symbol))
        if position is None or self._close_in_flight(bot, symbol):
            return None
        return await self._close_at_market(position, reason)

    def tracked_order(self, client_order_id: str) -> Order | None:
        """The open order this engine tracks under ``client_order_id``, if any."""
        return self.open_orders.get(client_order_id)

    def track_partial(self, order: Order) -> None:
        """Keep a partly filled order tracked, with its ``filled`` / ``average`` so far (persisted
        with the fill, so a restart books only the growth, SPEC O-5)."""
        self.open_orders[order.client_order_id] = order
        self.sink.emit(OrderUpdated(order))

    def forget_order(self, client_order_id: str, status: OrderStatus, reason: str = "") -> None:
        """Drop an order the exchange no longer holds open (canceled, rejected or never
        accepted, SPEC O-5); a pending entry is dropped with it."""
        order = self.open_orders.pop(client_order_id, None)
        if order is None:
            return
        if order.leg is OrderLeg.ENTRY:
            pending = self._pending.get((order.bot, order.symbol))
            if pending is not None and pending.order.client_order_id == client_order_id:
                del self._pending[(order.bot, order.symbol)]
        self.sink.emit(OrderUpdated(replace(order, status=status, reason=reason, updated_ms=self.clock.now_ms())))

    def stop_of(self, bot: str, symbol: str) -> Order | None:
        """The stop-loss order tracked for ``bot``'s position on ``symbol``, if any."""
        for order in self.open_orders.values():
            if order.bot == bot and order.symbol == symbol and order.leg is OrderLeg.STOP_LOSS:
                return order
        return None

    async def ensure_stop(self, bot: str, symbol: str) -> None:
        """SPEC O-6 / R-10: place the position's stop again for its current size; if that is
        rejected the position is closed at market and a NO_STOP alert is raised."""
        position = self.positions.get((bot, symbol))
        if position is not None:
            await self._replace_stop(position, self.markets[symbol], self.clock.now_ms())

    async def repair_position(self, bot: str, symbol: str, signed_contracts: Decimal, entry_price: Decimal) -> None:
        """SPEC O-5: make the local position of ``bot`` on ``symbol`` match the exchange's
        (signed contracts, entry price in quote; 0 = flat). A position found only on the
        exchange is adopted with a stop; one gone from the exchange is closed locally at the
        last mark; a size difference moves the stop to the exchange's size."""
        key = (bot, symbol)
        position = self.positions.get(key)
        now = self.clock.now_ms()
        market = self.markets[symbol]
        if signed_contracts == 0:
            if position is None:
                return
            mark = self.mark_price(symbol) or position.entry_price
            fill = Fill(f"reconcile|{position.position_id}", bot, symbol, position.side.exit_order_side,
                        OrderLeg.CLOSE, position.contracts, mark, ZERO, now)
            self.sink.emit(Alert("RECONCILED", bot, symbol, "position closed on the exchange; booked at the last mark"))
            await self._reduce_position(position, fill)
            return
        side = Side.LONG if signed_contracts > 0 else Side.SHORT
        contracts = abs(signed_contracts)
        if position is not None and position.side is side and position.contracts == contracts:
            return
        if position is not None and position.side is not side:
            await self.repair_position(bot, symbol, ZERO, entry_price)
            position = None
        if position is None:
            profile = self.bots[bot].profile
            levels = fixed_targets(entry_price, side, profile.take_profit_1_pct, profile.take_profit_2_pct,
                                   profile.stop_loss_pct)
            position = Position(
                position_id=f"{bot}|{symbol}|{now}|adopted", bot=bot, symbol=symbol, side=side,
                contracts=contracts, initial_contracts=contracts, entry_price=entry_price, opened_ms=now,
                stop_loss=floor_price(market, levels.stop_loss), take_profit_1=floor_price(market, levels.take_profit_1),
                take_profit_2=floor_price(market, levels.take_profit_2), leverage=profile.leverage,
                tp1_done=True,
            )
            self._pending.pop(key, None)
            self.sink.emit(Alert("RECONCILED", bot, symbol, f"position of {contracts} found on the exchange; adopted"))
        else:
            position = replace(position, contracts=contracts, initial_contracts=max(position.initial_contracts, contracts))
        self.positions[key] = position
        self.held_symbols.add(symbol)
        self.sink.emit(PositionChanged(position))
        await self._replace_stop(position, market, now)
