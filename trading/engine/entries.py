"""Entries: signal → score → RiskGuard → sizing → filters → the order gate → entry order (SPEC
S-11, S-13, Z-1..Z-4, R-1..R-8, F-1..F-5, O-2, O-3), the reactive entry (E-6) and entries sent
by hand (the smoke test). Every evaluated candidate is recorded with its first blocker (S-13).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from trading.domain.config import AccountConfig, BotProfile, OrdersConfig, TradingConfig
from trading.domain.events import EntryDecided, EventSink, SignalEvaluated
from trading.domain.filters import FilterContext, run_filters
from trading.domain.exits import fixed_targets
from trading.domain.liquidation import stop_beyond_liquidation
from trading.domain.models import Position, SignalEvaluation, Side
from trading.domain.oms import entry_order, limit_entry_price
from trading.domain.presets import LAUNCH, EffectiveLimits, capped, effective_limits, pair_allowed
from trading.domain.profiles import base_position_size, symbol_multiplier
from trading.domain.reasons import DAY_STOP_REASONS, DrawdownStage, ReasonCode
from trading.domain.risk import RiskContext, RiskGuard
from trading.domain.sizing import SizingRejected, size_position
from trading.domain.strategy import SignalCheck
from trading.engine.book import Book, PendingEntry
from trading.engine.feeds import BotRuntime, FeedState
from trading.engine.gate import OrderGate
from trading.engine.risk_state import RiskBook
from trading.ports import Clock, ExchangePort

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
_LIMIT_REASONS = frozenset({ReasonCode.MAX_POSITIONS, ReasonCode.MAX_POSITIONS_ACCOUNT})
_SCORE_BELOW_MIN = ReasonCode.SCORE_BELOW_MIN  # a module constant: enum attribute access costs ~10× (hot path)


@dataclass(slots=True)
class Entries:
    """Turns candidates into entry orders through the gate.

    Args: book, risk, gate, venue (leverage and the F-1 spread), sink, clock, env (client order
    ids, O-2), config (preset, account caps, order styles), bots (name → bot), guard (the
    RiskGuard pipeline), liquidation (the liquidation price of a position, quote, or None:
    an entry whose stop would sit beyond it is refused).
    """

    book: Book
    risk: RiskBook
    gate: OrderGate
    venue: ExchangePort
    sink: EventSink
    clock: Clock
    env: str
    config: TradingConfig
    bots: dict[str, BotRuntime]
    guard: RiskGuard = field(default_factory=RiskGuard)
    liquidation: Callable[[Position], Decimal | None] | None = None
    leverage_set: dict[str, int] = field(default_factory=dict)  # leverage last set per symbol (O-7)
    waiting: dict[str, list] = field(default_factory=dict)  # E-6 candidates blocked by R-1, per bot

    def limits(self, profile: BotProfile, equity: Decimal | None = None) -> EffectiveLimits:
        """The preset's limits for ``profile`` at ``equity`` (quote; default the equity now): the
        tier in force (R-9 hysteresis), the launch stage (Z-5), and R-9's ceiling — risk % and
        leverage never above what the bot's last entry used while equity is below its peak or a
        losing streak runs."""
        book, risk = self.book, self.risk
        equity = book.equity() if equity is None else equity
        limits = effective_limits(self.config.preset, profile, equity, book.closed_trades, tier=risk.tier(equity),
                                  stage=risk.ramp.current if self.config.preset == LAUNCH else None)
        peak = None if book.account is None else book.account.peak_equity
        if risk.losing(peak, equity):
            limits = capped(limits, risk.account.ceiling(profile.name))
        return limits

    def base_notional(self, symbol: str, leverage: int) -> Decimal:
        """Z-3 base position size (margin, quote) × per-symbol multiplier × leverage = notional."""
        account = self.book.account
        balance = account.balance if account is not None else Decimal(0)
        return base_position_size(balance) * symbol_multiplier(symbol) * leverage

    async def try_enter(self, bot: BotRuntime, feed: FeedState, check: SignalCheck) -> SignalEvaluation:
        """Take a candidate through score, RiskGuard, sizing, filters and the order gate, and
        send the entry; record the evaluation with its first blocker (SPEC S-13) and return it."""
        book = self.book
        now = self.clock.now_ms()
        symbol = feed.symbol
        profile = bot.profile
        min_score = profile.strategy.min_score
        if min_score is None:
            min_score = book.tier_min_score
        if check.score < min_score:
            # Most candidates stop here: decided without touching Decimal or equity.
            return self._record(now, bot, symbol, check, _SCORE_BELOW_MIN, min_score)
        price = Decimal(repr(feed.last_close)) if feed.last_close > 0 else None
        equity = book.equity()
        limits = self.limits(profile, equity)
        min_score = limits.min_score
        if check.score < min_score:
            return self._record(now, bot, symbol, check, ReasonCode.SCORE_BELOW_MIN, min_score)
        stage = self.risk.stage(None if book.account is None else book.account.peak_equity, equity)
        decision = self.guard.check_entry(self._risk_context(profile, symbol, price, equity, now, stage, limits))
        if not decision.allowed:
            if decision.reason in DAY_STOP_REASONS:
                self.risk.halt(profile.name, decision.reason)
            elif decision.reason in _LIMIT_REASONS:
                # E-6: remembered, so a position closing at this instant lets it in at once.
                self.waiting.setdefault(profile.name, []).append((now, bot, feed, check))
            return self._record(now, bot, symbol, check, decision.reason, min_score)
        assert price is not None  # check_data denied otherwise
        account = self.config.account
        try:
            size = size_position(
                market=book.markets[symbol], equity=equity, price=price, stop_loss_pct=profile.stop_loss_pct,
                risk_pct=limits.risk_pct, leverage=limits.leverage, used_margin=book.used_margin(),
                max_total_margin_pct=account.max_total_margin_pct,
                max_position_size_pct=account.max_position_size_pct,
                # half risk at the reduce stage; S-12: less in a choppy market. R-9: both ≤ 1.
                risk_multiplier=(account.drawdown_risk_multiplier if stage is DrawdownStage.REDUCE else Decimal(1))
                * self._regime_risk(profile, feed),
                # E-10: with the ladder on, a position starts at the Z-3 base size and grows.
                max_notional=self.base_notional(symbol, limits.leverage) if profile.ladder else None,
                tier=limits.tier,
            )
        except SizingRejected as exc:
            return self._record(now, bot, symbol, check, exc.reason, min_score)
        market = book.markets[symbol]
        if self._stop_beyond_liquidation(profile, symbol, check.side, price, size.contracts, limits.leverage):
            return self._record(now, bot, symbol, check, ReasonCode.STOP_BEYOND_LIQUIDATION, min_score)
        entries = self.risk.entry_log(profile.name)
        verdict = run_filters(
            FilterContext(
                symbol=symbol, spread_pct=await self.venue.spread_pct(symbol, feed.last_close),
                quote_volume_24h=feed.stats.quote_volume_24h, intended_notional=size.intended_notional,
                equity=equity, atr=feed.indicators.atr, close=feed.last_close, tick_size=market.tick_size,
                volume=feed.last_volume, median_volume=feed.stats.median_volume(),
                median_atr=feed.stats.median_atr(), last_entry_ms=entries.last_entry_ms(symbol),
                entries_last_hour=entries.entries_in_last_hour(now), now_ms=now,
                rounded_notional=size.notional, exchange_min_notional=market.min_notional,
            ),
            profile.filters,
        )
        if not verdict.allowed:
            return self._record(now, bot, symbol, check, verdict.reason, min_score)
        orders: OrdersConfig = self.config.orders
        intent_id = f"{profile.name}|{symbol}|{now}"
        order = entry_order(
            env=self.env, bot=profile.name, symbol=symbol, side=check.side, intent_id=intent_id,
            contracts=size.contracts, now_ms=now,
            limit_price=limit_entry_price(market, check.side, price, orders.limit_entry_offset_pct)
            if orders.entry_order_style == "limit" else None,
        )
        refusal = self.gate.check(order, leverage=limits.leverage, price=price)
        if refusal is not None:  # O-9: the gate has the last word (fails closed)
            self.gate.refuse(order, refusal)
            return self._record(now, bot, symbol, check, refusal.reason, min_score)
        if self.leverage_set.get(symbol) != limits.leverage:
            await self.venue.set_leverage(symbol, limits.leverage)
            self.leverage_set[symbol] = limits.leverage
        accepted = await self.gate.place(order, prechecked=True)
        if accepted is None:
            log.warning("entry rejected on %s", symbol)
            return self._record(now, bot, symbol, check, ReasonCode.EXCHANGE_REJECTED, min_score)
        entries.record(symbol, now)
        self.risk.applied(profile.name, limits.risk_pct, limits.leverage)  # the ceiling from now on
        atr = feed.indicators.atr
        pending = book.pending[(profile.name, symbol)] = PendingEntry(
            intent_id, check.side, accepted, limits.leverage, limits.tp1_share_pct,
            Decimal(repr(atr)) if atr == atr and atr > 0 else None,  # NaN-safe
        )
        self.sink.emit(EntryDecided(accepted.client_order_id, limits.tp1_share_pct, pending.atr, limits.leverage))
        return self._record(now, bot, symbol, check, "", min_score)

    async def submit_entry(self, bot: str, symbol: str, side: Side, contracts: Decimal,
                           limit_price: Decimal | None = None, price: Decimal | None = None):
        """Send an entry of ``contracts`` (already at step size) for ``bot`` outside the
        strategy (the operator's smoke test, SPEC O-3), through the order gate (O-9): market, or
        a limit at ``limit_price`` (quote, at tick size); brackets follow when it fills.
        ``price``: the reference price (quote) the gate values it at (default the limit price,
        else the last close; with neither the gate refuses: MISSING_DATA).
        Returns the accepted order, or None when the gate refused it or the venue rejected it
        (both recorded with the reason)."""
        now = self.clock.now_ms()
        leverage = self.bots[bot].profile.leverage
        intent_id = f"{bot}|{symbol}|{now}"
        order = entry_order(env=self.env, bot=bot, symbol=symbol, side=side, intent_id=intent_id,
                            contracts=contracts, now_ms=now, limit_price=limit_price)
        reference = price if price is not None else limit_price
        accepted = await self.gate.place(order, leverage=leverage, price=reference)
        if accepted is not None:
            self.book.pending[(bot, symbol)] = PendingEntry(intent_id, side, accepted, leverage)
        return accepted

    async def reactive_entry(self, bot_name: str, now: int) -> None:
        """SPEC E-6: when a position closes and the bot is below its limit, the candidates that
        R-1 blocked at this same instant are scanned again at once instead of waiting for the
        next candle. Candidates of earlier instants are stale and dropped."""
        waiting = [w for w in self.waiting.pop(bot_name, ()) if w[0] == now]
        for _when, bot, feed, check in waiting:
            await self.try_enter(bot, feed, check)

    def _record(self, now: int, bot: BotRuntime, symbol: str, check: SignalCheck, blocked_by: str,
                min_score: float = 0.0) -> SignalEvaluation:
        evaluation = SignalEvaluation(now, bot.name, symbol, check.side, check.score, not blocked_by, blocked_by,
                                      min_score, check.components)
        self.sink.emit(SignalEvaluated(evaluation))
        return evaluation

    def _risk_context(self, profile: BotProfile, symbol: str, price: Decimal | None, equity: Decimal, now: int,
                      stage: DrawdownStage, limits: EffectiveLimits) -> RiskContext:
        book, risk = self.book, self.risk
        state = risk.states.get(profile.name)
        bot_positions, account_positions = book.counts(profile.name)
        account_limit = sum(
            limits.max_positions if b.profile is profile else self.limits(b.profile, equity).max_positions
            for b in self.bots.values()
        )
        daily_pnl = None
        if state is not None:
            daily_pnl = risk.realised_today() + book.unrealised_pnl()
        account: AccountConfig = self.config.account
        return RiskContext(
            bot=profile.name, symbol=symbol, hour_utc=(now // HOUR_MS) % 24, price=price,
            equity=equity if equity > 0 else None,
            day_start_equity=None if state is None else state.day_start_equity, daily_pnl=daily_pnl,
            open_positions_bot=bot_positions, max_positions_bot=limits.max_positions,
            open_positions_account=account_positions, max_positions_account=account_limit,
            symbol_busy=(profile.name, symbol) in book.positions or (profile.name, symbol) in book.pending,
            paused=risk.is_paused(profile.name, symbol),
            sl_streak=0 if state is None else state.sl_streak, sl_streak_limit=limits.sl_streak_limit,
            daily_loss_limit_pct=account.daily_loss_limit_pct,
            halted_reason="" if state is None else state.halted_reason,
            trading_hours_utc=profile.trading_hours_utc, blackout_hours_utc=profile.blackout_hours_utc,
            symbol_held_by=book.holder_of(symbol, profile.name),
            blacklisted_until_ms=risk.blacklisted_until(profile.name, symbol), now_ms=now,
            trades_today=0 if state is None else state.trades_today,
            profit_factor_today=None if state is None else state.profit_factor_today,
            min_trades_for_profit_factor=profile.min_trades_for_profit_factor,
            min_profit_factor=profile.min_profit_factor, drawdown_stage=stage,
            max_trades_per_day=limits.max_trades_per_day,
            pair_allowed=pair_allowed(self.config.preset, symbol, equity),
        )

    def _stop_beyond_liquidation(self, profile: BotProfile, symbol: str, side: Side, price: Decimal,
                                 contracts: Decimal, leverage: int) -> bool:
        """True when the planned stop (the profile's stop-loss % from ``price``) sits at or
        beyond the liquidation price of the planned position (quote): it would be liquidated
        before its stop could trigger."""
        if self.liquidation is None:
            return False
        stop = fixed_targets(price, side, profile.take_profit_1_pct, profile.take_profit_2_pct,
                             profile.stop_loss_pct).stop_loss
        planned = Position(position_id="planned", bot=profile.name, symbol=symbol, side=side, contracts=contracts,
                           initial_contracts=contracts, entry_price=price, opened_ms=0, stop_loss=stop,
                           take_profit_1=price, take_profit_2=price, leverage=leverage)
        return stop_beyond_liquidation(side, stop, self.liquidation(planned))

    @staticmethod
    def _regime_risk(profile: BotProfile, feed: FeedState) -> Decimal:
        """SPEC S-12 sizing factor of the feed's current regime (1 while it warms up)."""
        regime = feed.regime.regime
        return Decimal(1) if regime is None else getattr(profile.regime_risk, regime.value)

