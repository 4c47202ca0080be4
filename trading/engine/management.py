"""Position management at each candle close: exit policies (SPEC E-2..E-5) and the scaling
ladder (E-10). Closes go out as reduce-only market orders; an addition passes the order gate
like any entry (O-9, R-9) — a halted, paused or drawdown-paused account never grows a position.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from trading.domain.events import EventSink, PositionChanged
from trading.domain.exits import (
    CLOSE_ALL,
    PARTIAL_CLOSE,
    auto_profit,
    partial_close_floor,
    pnl_pct_on_margin,
    stepwise_action,
    stepwise_config,
    timeout,
)
from trading.domain.ladder import LadderDenied, LadderState, ladder_policy, next_addition
from trading.domain.models import ExitReason, OrderLeg, Position
from trading.domain.oms import entry_order
from trading.domain.regime import Regime
from trading.engine.book import Book
from trading.engine.entries import Entries
from trading.engine.feeds import BotRuntime, FeedState
from trading.engine.gate import OrderGate
from trading.engine.guard import AccountGuard
from trading.engine.protection import Protection
from trading.ports import Clock

_POLICY_REASONS = {"AUTO_PROFIT": ExitReason.AUTO_PROFIT, "TIMEOUT": ExitReason.TIMEOUT, "MAX_HOLD": ExitReason.MAX_HOLD}


@dataclass(slots=True)
class Management:
    """Runs the exit policies and the ladder for the positions of one feed's symbol.

    Args: book, gate, protection, entries (limits and the Z-3 base size), sink, clock, env
    (client order ids, O-2), max_total_margin_pct / max_position_size_pct (the account caps
    the ladder sizes within, Z-2, R-8), guard (the account watch run first at each candle
    close of a held symbol: R-3 hard limit, R-5, R-9, liquidation).
    """

    book: Book
    gate: OrderGate
    protection: Protection
    entries: Entries
    sink: EventSink
    clock: Clock
    env: str
    max_total_margin_pct: Decimal
    max_position_size_pct: Decimal
    guard: AccountGuard | None = None

    async def manage_positions(self, feed: FeedState) -> None:
        """Exit policies at the candle close for every bot's position on ``feed.symbol``, after
        the account watch (R-3 may close everything): E-4 max hold / timeout, E-3 AutoProfit,
        then E-2 stepwise take-profit (with the E-5 partial-close floor and E-7 fees first) and
        the E-10 ladder. One close in flight per symbol (O-8)."""
        if self.guard is not None:
            await self.guard.watch()
        book = self.book
        symbol = feed.symbol
        market = book.markets[symbol]
        bot: BotRuntime
        for bot in feed.bots:
            position = book.positions.get((bot.name, symbol))
            if position is None or book.close_in_flight(bot.name, symbol):
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
                await self.protection.close_at_market(position, _POLICY_REASONS[action.reason])
                continue
            if profile.exit_mode == "stepwise":
                await self._step_take_profit(position, mark)
            if profile.ladder and not book.order_in_flight(bot.name, symbol):
                await self._ladder(position, feed, mark, pnl_pct, now)

    async def _step_take_profit(self, position: Position, mark: Decimal) -> None:
        """E-2: close the share of the next profit step reached — steps in quote, or in % of the
        position's notional at entry — with the E-5 floor and E-7 fees first applied (a step
        worth less than the round-trip taker fees of what it closes is not sent)."""
        market = self.book.markets[position.symbol]
        profile = self.entries.bots[position.bot].profile
        floor = partial_close_floor(self.book.balance_profile_name())
        unrealised = position.unrealised_pnl(mark, market.contract_size)
        in_pct = profile.step_tp_pct is not None
        config = stepwise_config(profile.step_tp_pct if in_pct else profile.step_tp_quote, profile.step_tp_shares_pct,
                                 in_pct=in_pct,
                                 notional=position.initial_contracts * market.contract_size * position.entry_price)
        step, steps_done = stepwise_action(position, unrealised, position.steps_done, market, floor, config,
                                           market.taker_fee)
        if steps_done != position.steps_done:
            position = replace(position, steps_done=steps_done)
            self.book.positions[(position.bot, position.symbol)] = position
            self.sink.emit(PositionChanged(position))
        if step is None or step.kind not in (PARTIAL_CLOSE, CLOSE_ALL) or step.contracts <= 0:
            return
        await self.protection.close_part(position, step.contracts, ExitReason.STEP_TP, f"step{steps_done}",
                                         {"step": steps_done})

    async def _ladder(self, position: Position, feed: FeedState, mark: Decimal, pnl_pct: Decimal, now: int) -> None:
        """E-10: ask the ladder policy for the next addition and send it as a market order
        through the order gate (which refuses it when the account is halted, the symbol paused
        or blacklisted, the drawdown stage forbids growth, or a cap would be passed)."""
        book = self.book
        market = book.markets[position.symbol]
        equity = book.equity()
        used = book.used_margin()
        policy = ladder_policy(book.balance_profile_name(), feed.regime.regime or Regime.RANGING)
        result = next_addition(
            policy=policy, state=LadderState(position.additions, position.last_addition_ms), now_ms=now,
            pnl_pct=pnl_pct, base_size_quote=self.entries.base_notional(position.symbol, position.leverage),
            price=mark, market=market, leverage=position.leverage, equity=equity, used_margin=used,
            free_margin=equity - used, max_total_margin_pct=self.max_total_margin_pct,
            max_position_size_pct=self.max_position_size_pct,
            position_notional=position.notional(mark, market.contract_size),
        )
        if isinstance(result, LadderDenied):
            return
        order = entry_order(env=self.env, bot=position.bot, symbol=position.symbol, side=position.side,
                            intent_id=f"{position.position_id}|add{position.additions + 1}",
                            contracts=result.contracts, now_ms=now)
        await self.gate.place(replace(order, leg=OrderLeg.ADD), price=mark)
