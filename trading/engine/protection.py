"""Protection: the brackets of a position and the closes at market (SPEC E-1, O-3, O-6, R-10).

The stop goes out first; a position without a working stop is closed at once (R-10). Brackets
follow the position: after a partial close or an addition the stop is re-placed for the new
size before the old one is cancelled, so a position is never without a stop. Every order goes
through the order gate (reduce-only orders always pass it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from trading.domain.config import BotProfile, OrdersConfig
from trading.domain.events import Alert, EventSink, ExitDecided, PositionChanged
from trading.domain.exits import atr_targets, clears_fees, fixed_targets, partial_close_floor, split_contracts
from trading.domain.models import ZERO, ExitReason, Fill, Market, Order, OrderLeg, OrderType, Position, Side
from trading.domain.oms import bracket_order, close_order
from trading.domain.precision import floor_price
from trading.engine.book import Book
from trading.engine.gate import OrderGate
from trading.ports import Clock

HUNDRED = Decimal(100)
_TAKE_PROFIT_LEGS = (OrderLeg.TP1, OrderLeg.TP2, OrderLeg.TP3)


@dataclass(slots=True)
class Protection:
    """Places, follows and replaces brackets; closes positions at market.

    Args: book, gate (every order goes through it), sink, clock, env ("paper" | "demo" |
    "live", part of client order ids, O-2), profiles (bot name → profile), orders (the config's
    order styles, O-3).
    """

    book: Book
    gate: OrderGate
    sink: EventSink
    clock: Clock
    env: str
    profiles: dict[str, BotProfile]
    orders: OrdersConfig

    def brackets(
        self, profile: BotProfile, market: Market, side: Side, entry: Decimal, contracts: Decimal,
        intent_id: str, share: Decimal, atr: Decimal | None, now: int, tp1_done: bool = False,
    ) -> tuple[Order, list[Order], list[Decimal]]:
        """The stop for all ``contracts`` and the take-profits (E-1 fixed TP1/TP2 by the TP1
        share %, or ATR TP1/TP2/TP3 at 50/30/20 %), from ``entry`` (quote). Returns (stop,
        take-profits, target prices); triggers are floored to the tick by bracket_order."""
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
        # to the last target (a small position is held to its final bracket). E-7: neither is
        # one whose profit at its target would not clear the round-trip taker fees of its
        # contracts (an ATR target too close to the entry).
        floor = partial_close_floor(self.book.balance_profile_name())
        for i in range(len(amounts) - 1):
            if amounts[i] > 0 and (amounts[i] * market.contract_size * entry < floor or not clears_fees(
                    amounts[i], market.contract_size, entry, prices[i], side, market.taker_fee)):
                amounts[-1] += amounts[i]
                amounts[i] = ZERO
        take_profits = [
            bracket_order(env=self.env, bot=profile.name, market=market, side=side, intent_id=intent_id,
                          leg=leg, generation=0, contracts=amount, trigger_price=price, now_ms=now,
                          tp_order_style=self.orders.tp_order_style)
            for leg, price, amount in zip(_TAKE_PROFIT_LEGS, prices, amounts)
            if amount > 0
        ]
        stop = bracket_order(env=self.env, bot=profile.name, market=market, side=side, intent_id=intent_id,
                             leg=OrderLeg.STOP_LOSS, generation=0, contracts=contracts,
                             trigger_price=levels.stop_loss, now_ms=now)
        return stop, take_profits, prices

    @staticmethod
    def with_levels(position: Position, market: Market, stop: Order, take_profits: list[Order],
                    prices: list[Decimal]) -> Position:
        """``position`` with the stop and target prices of its brackets (quote)."""
        by_leg = {o.leg: o.trigger_price for o in take_profits}
        return replace(
            position,
            stop_loss=stop.trigger_price,
            take_profit_1=by_leg.get(OrderLeg.TP1) or floor_price(market, prices[0]),
            take_profit_2=by_leg.get(OrderLeg.TP2) or floor_price(market, prices[1]),
            take_profit_3=by_leg.get(OrderLeg.TP3),
        )

    async def protect(self, position: Position, stop: Order, take_profits: list[Order],
                      replacing: list[Order] = ()) -> None:
        """Place the stop first; without a working stop the position is closed at once (R-10);
        then the take-profits (brackets exit mode only). ``replacing``: the brackets these
        supersede, cancelled only once the new stop rests (never a moment without a stop)."""
        if await self.gate.place(stop) is None:
            for order in replacing:
                if order.leg is not OrderLeg.STOP_LOSS:  # the old stop still guards the old size
                    await self.gate.cancel(order)
            self.sink.emit(Alert("NO_STOP", position.bot, position.symbol,
                                 f"stop-loss rejected; closing {position.symbol} at market"))
            await self.close_at_market(position, ExitReason.NO_STOP)
            return
        for order in replacing:
            await self.gate.cancel(order)
        if self.profiles[position.bot].exit_mode == "brackets":
            for order in take_profits:
                await self.gate.place(order)

    async def replace_stop(self, position: Position, now: int) -> None:
        """The stop re-placed for the position's current contracts (brackets follow the size,
        E-1 / E-10; a missing stop, O-6 / R-10). The new stop goes out before the old one is
        cancelled, so the position is never without a stop; if it is refused the position is
        closed at market with a NO_STOP alert."""
        market = self.book.markets[position.symbol]
        old = [o for o in self.book.orders_of(position.bot, position.symbol) if o.leg is OrderLeg.STOP_LOSS]
        # The id derives from the event (time and size), so a retry reuses it and a later
        # replacement never collides with a cancelled one (SPEC O-2).
        stop = bracket_order(env=self.env, bot=position.bot, market=market, side=position.side,
                             intent_id=f"{position.position_id}|{now}|{position.contracts}",
                             leg=OrderLeg.STOP_LOSS, generation=1,
                             contracts=position.contracts, trigger_price=position.stop_loss, now_ms=now)
        placed = await self.gate.place(stop)
        for order in old:
            if order.client_order_id != stop.client_order_id:  # the same event placed it already (O-2)
                await self.gate.cancel(order)
        if placed is None:
            self.sink.emit(Alert("NO_STOP", position.bot, position.symbol,
                                 f"stop-loss re-placement rejected; closing {position.symbol} at market"))
            await self.close_at_market(position, ExitReason.NO_STOP)

    async def close_at_market(self, position: Position, reason: ExitReason) -> Order | None:
        """Send a reduce-only market order for the whole remaining position; returns it (None
        when the venue rejected it)."""
        now = self.clock.now_ms()
        # The id derives from the event (reason, time and size, SPEC O-2): a retry of this close
        # reuses it, a later close of the same position (the first one expired) never does.
        order = close_order(env=self.env, bot=position.bot, symbol=position.symbol, side=position.side,
                            intent_id=f"{position.position_id}|{reason.value}|{now}|{position.contracts}",
                            contracts=position.contracts, now_ms=now)
        self.book.close_reasons[order.client_order_id] = reason
        self.decide_exit(position, reason, position.contracts, order.client_order_id)
        return await self.gate.place(order)

    async def close_part(self, position: Position, contracts: Decimal, reason: ExitReason, intent: str,
                         why: dict) -> Order | None:
        """A reduce-only market close of ``contracts`` of ``position`` (E-2 step), recorded with
        ``reason`` and ``why`` for the audit; ``intent`` makes its client order id (O-2)."""
        order = close_order(env=self.env, bot=position.bot, symbol=position.symbol, side=position.side,
                            intent_id=f"{position.position_id}|{intent}", contracts=contracts,
                            now_ms=self.clock.now_ms())
        self.book.close_reasons[order.client_order_id] = reason
        self.decide_exit(position, reason, contracts, order.client_order_id, why)
        return await self.gate.place(order)

    async def close_orphan(self, fill: Fill) -> None:
        """An addition filled after its position closed (its cancel lost the race): the venue
        now holds contracts nobody manages and no stop protects — close them at once (R-10)."""
        side = Side.LONG if fill.side.value == "buy" else Side.SHORT
        self.sink.emit(Alert("NO_STOP", fill.bot, fill.symbol,
                             f"addition filled without a position; closing {fill.amount} at market"))
        await self.gate.place(close_order(env=self.env, bot=fill.bot, symbol=fill.symbol, side=side,
                                          intent_id=f"orphan|{fill.client_order_id}", contracts=fill.amount,
                                          now_ms=fill.timestamp))

    def decide_exit(self, position: Position, reason: ExitReason, contracts: Decimal, client_order_id: str = "",
                    why: dict | None = None) -> None:
        """Emit the exit decision with its reason for the audit trail (SPEC A-1)."""
        self.sink.emit(ExitDecided(self.clock.now_ms(), position.bot, position.symbol, position.side.value,
                                   position.position_id, reason.value, contracts, client_order_id, why or {}))

    async def cancel_brackets(self, bot: str, symbol: str) -> None:
        """Cancel ``bot``'s reduce-only orders, unfilled ladder additions and the rest of a
        partly filled limit entry on ``symbol`` (any of them filling after the close would open
        a position nobody manages)."""
        for order in self.book.orders_of(bot, symbol):
            if order.reduce_only or order.leg is OrderLeg.ADD or (
                    order.leg is OrderLeg.ENTRY and order.type is OrderType.LIMIT):
                await self.gate.cancel(order)

    def store(self, position: Position, liquidation: Decimal | None = None) -> None:
        """Keep ``position`` open in the book and emit it (with its liquidation price, quote,
        when given: the entry message shows it)."""
        self.book.set_position(position)
        self.sink.emit(PositionChanged(position, liquidation))
