"""Fills: booking executions into positions, realised PnL, funding and the account (SPEC E-1,
E-10, O-3, O-5, R-2, R-6).

Every fill arrives here from the fill tracker (``trading.app.reconcile.FillTracker``), in paper
and backtest as in demo and live: an entry opens its position and places its brackets, an
addition averages the entry and moves the brackets, an exit reduces or closes the position and
updates the day's risk counters. After each fill the wallet balance is read back from the venue.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from decimal import Decimal

from trading.domain.config import BotProfile
from trading.domain.events import AccountChanged, Alert, EventSink, FillBooked, OrderUpdated, PositionChanged
from trading.domain.exits import fixed_targets
from trading.domain.ladder import average_entry
from trading.domain.models import ZERO, Account, ExitReason, Fill, OrderLeg, OrderStatus, Position, Side
from trading.domain.precision import floor_price
from trading.domain.presets import EffectiveLimits
from trading.engine.book import Book, PendingEntry
from trading.engine.protection import Protection
from trading.engine.risk_state import _TAKE_PROFITS, RiskBook
from trading.ports import Clock, ExchangePort

log = logging.getLogger(__name__)

_LEG_REASONS = {
    OrderLeg.STOP_LOSS: ExitReason.STOP_LOSS,
    OrderLeg.TP1: ExitReason.TP1,
    OrderLeg.TP2: ExitReason.TP2,
    OrderLeg.TP3: ExitReason.TP3,
}


@dataclass(slots=True)
class Fills:
    """Books fills and funding.

    Args: book, risk, protection (brackets and closes), venue (the wallet balance is read
    after each fill), sink, clock, profiles (bot name → profile), limits (the effective limits
    of a profile now, Z-4), on_closed (awaited with (bot, time) when a position closes: the E-6
    reactive entry), guard (awaited after each fill: the account watch, R-3 / R-5 / R-9),
    liquidation (a position's liquidation price, quote: the entry message shows it).
    """

    book: Book
    risk: RiskBook
    protection: Protection
    venue: ExchangePort
    sink: EventSink
    clock: Clock
    profiles: dict[str, BotProfile]
    limits: Callable[[BotProfile], EffectiveLimits]
    on_closed: Callable[[str, int], Awaitable[None]]
    guard: Callable[[], Awaitable[None]] | None = None
    liquidation: Callable[[Position], Decimal | None] | None = None

    async def on_fill(self, fill: Fill) -> None:
        """Book an execution: open the position and place its brackets, or grow, reduce or close
        it and keep the brackets in step (SPEC E-1, E-10, O-3); then read the balance."""
        book = self.book
        self.sink.emit(FillBooked(fill))
        order = book.open_orders.pop(fill.client_order_id, None)
        if order is not None:
            self.sink.emit(OrderUpdated(replace(order, status=OrderStatus.CLOSED, filled=fill.amount,
                                                average=fill.price, updated_ms=fill.timestamp)))
        key = (fill.bot, fill.symbol)
        if fill.leg is OrderLeg.ADD:
            if key in book.positions:
                await self._add_to_position(book.positions[key], fill)
            else:
                await self.protection.close_orphan(fill)
        elif fill.leg is OrderLeg.ENTRY:
            pending = book.pending.pop(key, None)
            if pending is None:
                log.error("entry fill without a pending entry: %s", fill.client_order_id)
                return
            await self._open_position(pending, fill)
        else:
            position = book.positions.get(key)
            if position is None:
                log.error("exit fill without a position: %s", fill.client_order_id)
                return
            await self.reduce_position(position, fill)
        await self.refresh_balance(fill.timestamp)
        if self.guard is not None:
            await self.guard()

    async def _open_position(self, pending: PendingEntry, fill: Fill) -> None:
        """Create the position and its reduce-only brackets (SPEC E-1, O-3, R-10)."""
        profile = self.profiles[fill.bot]
        market = self.book.markets[fill.symbol]
        share = pending.tp1_share_pct
        if share is None:
            share = self.limits(profile).tp1_share_pct
        stop, take_profits, prices = self.protection.brackets(
            profile, market, pending.side, fill.price, fill.amount, pending.intent_id, share, pending.atr, fill.timestamp
        )
        position = Position(
            position_id=pending.intent_id, bot=fill.bot, symbol=fill.symbol, side=pending.side,
            contracts=fill.amount, initial_contracts=fill.amount, entry_price=fill.price,
            opened_ms=fill.timestamp, stop_loss=ZERO, take_profit_1=ZERO, take_profit_2=ZERO,
            leverage=pending.leverage, fees=fill.fee,
            tp1_done=not any(o.leg is OrderLeg.TP1 for o in take_profits),
            last_addition_ms=fill.timestamp,
        )
        position = self.protection.with_levels(position, market, stop, take_profits, prices)
        self.protection.store(position, None if self.liquidation is None else self.liquidation(position))
        await self.protection.protect(position, stop, take_profits)

    async def _add_to_position(self, position: Position, fill: Fill) -> None:
        """E-10: book a ladder addition (or the rest of a partly filled entry), average the
        entry and re-place every bracket for the new size and levels."""
        profile = self.profiles[position.bot]
        market = self.book.markets[position.symbol]
        entry = average_entry(position.contracts, position.entry_price, fill.amount, fill.price)
        contracts = position.contracts + fill.amount
        old = [o for o in self.book.orders_of(position.bot, position.symbol) if o.reduce_only]
        share = self.limits(profile).tp1_share_pct
        intent = f"{position.position_id}|add{position.additions + 1}"
        stop, take_profits, prices = self.protection.brackets(
            profile, market, position.side, entry, contracts, intent, share, None, fill.timestamp, position.tp1_done
        )
        position = replace(
            position, contracts=contracts, initial_contracts=position.initial_contracts + fill.amount,
            entry_price=entry, fees=position.fees + fill.fee, additions=position.additions + 1,
            last_addition_ms=fill.timestamp,
        )
        position = self.protection.with_levels(position, market, stop, take_profits, prices)
        self.protection.store(position)
        await self.protection.protect(position, stop, take_profits, replacing=old)

    async def reduce_position(self, position: Position, fill: Fill) -> None:
        """Book an exit fill: realised PnL and fees; a partial exit moves the stop to the rest
        (E-1), a full one closes the position, cancels its brackets, books the trade in the
        day's risk counters (R-2, R-3, R-4, R-6) and runs the reactive entry (E-6)."""
        book = self.book
        market = book.markets[fill.symbol]
        pnl = position.side.sign * (fill.price - position.entry_price) * fill.amount * market.contract_size
        remaining = position.contracts - fill.amount
        position = replace(
            position, contracts=remaining, realised_pnl=position.realised_pnl + pnl,
            fees=position.fees + fill.fee, tp1_done=position.tp1_done or fill.leg is OrderLeg.TP1,
        )
        reason = _LEG_REASONS.get(fill.leg) or book.close_reasons.pop(fill.client_order_id, ExitReason.MANUAL)
        if fill.leg in _LEG_REASONS:  # a resting bracket decided this exit (E-1)
            self.protection.decide_exit(position, reason, fill.amount,
                                        why={"bracket_order_id": fill.client_order_id, "price": fill.price})
        state = self.risk.take_profit_seen(position.bot) if reason in _TAKE_PROFITS else self.risk.states.get(position.bot)
        if remaining > 0:
            self.protection.store(position)
            if fill.leg is not OrderLeg.STOP_LOSS:
                await self.protection.replace_stop(position, fill.timestamp)  # the stop follows the size
            if state is not None:
                self.risk.set_state(state)
            return
        average_exit = position.entry_price + position.realised_pnl / (
            position.side.sign * position.initial_contracts * market.contract_size
        )
        closed = replace(position, closed_ms=fill.timestamp, exit_price=average_exit, exit_reason=reason)
        book.drop_position(position)
        book.closed_trades += 1
        self.sink.emit(PositionChanged(closed))
        await self.protection.cancel_brackets(position.bot, position.symbol)
        limit = self.limits(self.profiles[position.bot]).sl_streak_limit
        self.risk.trade_closed(closed, reason, fill.timestamp, limit, state)
        await self.on_closed(position.bot, fill.timestamp)

    async def refresh_balance(self, now: int) -> None:
        """Read the wallet balance from the venue; peak equity, the tier (R-9 hysteresis) and
        the launch ramp's record (Z-5) follow."""
        balance = await self.venue.fetch_balance()
        book = self.book
        assert book.account is not None
        equity = balance + book.unrealised_pnl()
        book.account = Account(balance, max(book.account.peak_equity, equity), now)
        self.sink.emit(AccountChanged(book.account))
        self.risk.record_balance(now, balance)
        book.update_tier(self.risk.observe(now, equity, book.account.peak_equity), equity)

    def on_funding(self, symbol: str, amount: Decimal, now: int) -> None:
        """Attribute a funding payment (quote, + received) to the open position on ``symbol``
        and to the wallet balance."""
        book = self.book
        for key, position in book.positions.items():
            if key[1] == symbol:
                updated = replace(position, funding=position.funding + amount)
                book.positions[key] = updated
                self.sink.emit(PositionChanged(updated))
                break
        assert book.account is not None
        book.account = replace(book.account, balance=book.account.balance + amount, updated_ms=now)
        self.sink.emit(AccountChanged(book.account))

    async def repair_position(self, bot: str, symbol: str, signed_contracts: Decimal, entry_price: Decimal) -> None:
        """SPEC O-5: make the local position of ``bot`` on ``symbol`` match the venue's (signed
        contracts, entry price in quote; 0 = flat). A position found only on the venue is
        adopted with a stop; one gone from the venue is closed locally at the last mark; a size
        difference moves the stop to the venue's size."""
        book = self.book
        key = (bot, symbol)
        position = book.positions.get(key)
        now = self.clock.now_ms()
        market = book.markets[symbol]
        if signed_contracts == 0:
            if position is None:
                return
            mark = book.mark_price(symbol) or position.entry_price
            fill = Fill(f"reconcile|{position.position_id}", bot, symbol, position.side.exit_order_side,
                        OrderLeg.CLOSE, position.contracts, mark, ZERO, now)
            self.sink.emit(Alert("RECONCILED", bot, symbol, "position closed on the exchange; booked at the last mark"))
            await self.reduce_position(position, fill)
            return
        side = Side.LONG if signed_contracts > 0 else Side.SHORT
        contracts = abs(signed_contracts)
        if position is not None and position.side is side and position.contracts == contracts:
            return
        if position is not None and position.side is not side:
            await self.repair_position(bot, symbol, ZERO, entry_price)
            position = None
        if position is None:
            profile = self.profiles[bot]
            levels = fixed_targets(entry_price, side, profile.take_profit_1_pct, profile.take_profit_2_pct,
                                   profile.stop_loss_pct)
            position = Position(
                position_id=f"{bot}|{symbol}|{now}|adopted", bot=bot, symbol=symbol, side=side,
                contracts=contracts, initial_contracts=contracts, entry_price=entry_price, opened_ms=now,
                stop_loss=floor_price(market, levels.stop_loss), take_profit_1=floor_price(market, levels.take_profit_1),
                take_profit_2=floor_price(market, levels.take_profit_2), leverage=profile.leverage,
                tp1_done=True,
            )
            book.pending.pop(key, None)
            self.sink.emit(Alert("RECONCILED", bot, symbol, f"position of {contracts} found on the exchange; adopted"))
        else:
            position = replace(position, contracts=contracts, initial_contracts=max(position.initial_contracts, contracts))
        self.protection.store(position)
        await self.protection.replace_stop(position, now)
