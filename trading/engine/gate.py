"""The order gate: THE one place every order passes on its way to the venue (SPEC O-9).

An order that adds exposure — a strategy entry, a reactive entry (E-6), a scaling-ladder
addition (E-10), a manual entry — is checked against the trading state here, whatever sent it:

1. data: the market, a reference price and a positive equity must be known (fail closed);
2. trading state (STYLE: nautilus' ACTIVE / REDUCING / HALTED): a bot's day stop (R-2, R-3
   and its hard limit, R-4) or the account's drawdown PAUSE (R-5, latched until a confirmed
   /resume) halts exposure; at the REDUCE stage new entries go on at reduced risk (sizing) but
   no position grows (no ladder addition);
3. pauses (R-7) and the symbol blacklist (R-6);
4. an addition needs the open position it adds to, on the same side;
5. caps (Z-2, R-8): the position's notional ≤ ``max_position_size_pct`` % of equity ×
   leverage, its margin ≤ the allocation of the equity tier in force (Z-4, R-9 hysteresis),
   and the account's margin in positions and pending entries ≤ ``max_total_margin_pct`` % of
   equity.

A refusal is a :class:`~trading.domain.reasons.ReasonCode`: the order never reaches the venue,
an :class:`~trading.domain.events.OrderRefused` event is emitted (audited as ORDER_REFUSED, A-1)
and logged — once per bot, symbol, leg and reason while it lasts, so a halted account with an
open position does not write one record per candle. Reduce-only orders (stops, take-profits,
closes) always pass: HALTED still lets a position be protected and closed.

Unlike nautilus' gate, this one fails closed on missing data (nautilus issue #4011).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from decimal import Decimal

from trading.domain.config import AccountConfig, BotProfile
from trading.domain.errors import ExchangeError
from trading.domain.events import EventSink, OrderRefused, OrderUpdated
from trading.domain.models import Order, OrderLeg, OrderSide, OrderStatus
from trading.domain.reasons import DrawdownStage, ReasonCode
from trading.engine.book import Book
from trading.engine.risk_state import RiskBook
from trading.ports import Clock, ExchangePort

log = logging.getLogger(__name__)

HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the gate kept an order from the venue: ``reason`` and the figures in ``detail``."""

    reason: ReasonCode
    detail: str = ""


@dataclass(slots=True)
class OrderGate:
    """Checks every order that adds exposure, then sends it; sends and cancels the rest.

    Args: book (positions, orders, account), risk (day stops, pauses, blacklist, drawdown
    stage), venue (the exchange port: the order gateway or a bare venue), sink (events), clock,
    account_rules (caps), profiles (bot name → profile).
    """

    book: Book
    risk: RiskBook
    venue: ExchangePort
    sink: EventSink
    clock: Clock
    account_rules: AccountConfig
    profiles: dict[str, BotProfile]
    refused: int = 0
    _last_refusal: dict[tuple[str, str, OrderLeg], ReasonCode] = field(default_factory=dict)

    # ------------------------------------------------------------- checks
    def check(self, order: Order, *, leverage: int | None = None, price: Decimal | None = None) -> Refusal | None:
        """None when ``order`` may go to the venue, else the :class:`Refusal`.

        Args:
            order: the order; reduce-only ones always pass.
            leverage: × for a new entry (the leverage its position will use); an addition
                uses its position's. Missing for an entry: refused (MISSING_DATA).
            price: reference price in quote the caps value the order at (the signal's close
                for an entry); default the symbol's mark price (last close).
        """
        if order.reduce_only:
            return None
        book = self.book
        bot, symbol = order.bot, order.symbol
        market = book.markets.get(symbol)
        price = price if price is not None else book.mark_price(symbol)
        equity = book.equity()
        if market is None or price is None or price <= 0 or book.account is None or equity <= 0:
            return Refusal(ReasonCode.MISSING_DATA, f"market={market is not None} price={price} equity={equity}")
        halted = self.risk.halted_reason(bot)
        if halted:
            return Refusal(ReasonCode(halted), "the bot's entries are stopped for the rest of the UTC day")
        if self.risk.account.drawdown_paused:
            return Refusal(ReasonCode.DRAWDOWN_PAUSE, "drawdown pause (R-5) until a confirmed /resume")
        stage = self.risk.stage(book.account.peak_equity, equity)
        if stage is DrawdownStage.PAUSE:
            return Refusal(ReasonCode.DRAWDOWN_PAUSE, f"equity {equity:.2f} vs peak {book.account.peak_equity:.2f}")
        adding = order.leg is OrderLeg.ADD
        if adding and stage is DrawdownStage.REDUCE:
            return Refusal(ReasonCode.DRAWDOWN_REDUCE, "no position grows while the drawdown stage is REDUCE")
        if self.risk.is_paused(bot, symbol):
            return Refusal(ReasonCode.SYMBOL_PAUSED, symbol)
        until = self.risk.blacklisted_until(bot, symbol)
        if until is not None and self.clock.now_ms() < until:
            return Refusal(ReasonCode.SYMBOL_BLACKLISTED, f"{symbol} until {until}")
        position = book.positions.get((bot, symbol))
        held_notional = held_margin = Decimal(0)
        if adding:
            same_side = position is not None and (order.side is OrderSide.BUY) == (position.side.sign > 0)
            if not same_side:
                return Refusal(ReasonCode.NO_POSITION, f"no {order.side.value} position of {bot} on {symbol}")
            leverage = position.leverage
            held_notional = position.notional(price, market.contract_size)
            held_margin = position.margin(market.contract_size)
        if not leverage or leverage <= 0:
            return Refusal(ReasonCode.MISSING_DATA, f"leverage={leverage}")
        notional = order.amount * market.contract_size * price
        rules = self.account_rules
        size_cap = equity * rules.max_position_size_pct / HUNDRED * leverage
        if held_notional + notional > size_cap:
            return Refusal(ReasonCode.MAX_POSITION_SIZE,
                           f"notional {held_notional + notional:.2f} > {size_cap:.2f} "
                           f"({rules.max_position_size_pct}% of equity × {leverage})")
        allocation = equity * self.risk.tier(equity).allocation_pct / HUNDRED
        if held_margin * leverage + notional > allocation * leverage:
            return Refusal(ReasonCode.TIER_ALLOCATION,
                           f"margin {held_margin + notional / leverage:.2f} > tier allocation {allocation:.2f}")
        room = equity * rules.max_total_margin_pct / HUNDRED - book.used_margin()
        if notional > room * leverage:
            return Refusal(ReasonCode.TOTAL_MARGIN,
                           f"margin {notional / leverage:.2f} > room {max(room, Decimal(0)):.2f} under "
                           f"{rules.max_total_margin_pct}% of equity")
        return None

    # -------------------------------------------------------------- sends
    async def place(self, order: Order, *, leverage: int | None = None, price: Decimal | None = None,
                    prechecked: bool = False) -> Order | None:
        """Send ``order`` unless the gate refuses it; track it when the venue accepts it.

        An order already tracked under the same client order id is not sent again (SPEC O-2).
        ``leverage`` / ``price``: see :meth:`check`; ``prechecked``: the caller ran
        :meth:`check` at this same instant and it passed (the entry pipeline records the
        gate's reason itself), so it is not run twice. Returns the accepted order, or None
        when it was refused (recorded, see :meth:`refuse`) or rejected by the venue (recorded
        with the venue's reason).
        """
        tracked = self.book.open_orders.get(order.client_order_id)
        if tracked is not None:
            return tracked
        if not order.reduce_only:
            refusal = None if prechecked else self.check(order, leverage=leverage, price=price)
            if refusal is not None:
                self.refuse(order, refusal)
                return None
            self._last_refusal.pop((order.bot, order.symbol, order.leg), None)
        try:
            accepted = await self.venue.create_order(order)
        except ExchangeError as exc:
            self.sink.emit(OrderUpdated(replace(order, status=OrderStatus.REJECTED, reason=exc.reason)))
            log.error("%s order on %s rejected: %s", order.leg.value, order.symbol, exc.reason)
            return None
        self.book.track(accepted)
        return accepted

    def refuse(self, order: Order, refusal: Refusal) -> None:
        """Record a refusal: an OrderRefused event and a log line, once while the same reason
        holds for the bot, symbol and leg."""
        self.refused += 1
        key = (order.bot, order.symbol, order.leg)
        if self._last_refusal.get(key) is refusal.reason:
            return
        self._last_refusal[key] = refusal.reason
        self.sink.emit(OrderRefused(self.clock.now_ms(), order, refusal.reason, refusal.detail))
        log.info("order gate refused %s %s of %s on %s: %s %s", order.leg.value, order.amount, order.bot,
                 order.symbol, refusal.reason.value, refusal.detail)

    async def cancel(self, order: Order) -> None:
        """Cancel a working order (always allowed); a failure is logged and the order dropped
        from tracking (the fill poll or reconciliation books what the venue did, SPEC O-5)."""
        self.book.open_orders.pop(order.client_order_id, None)
        try:
            cancelled = await self.venue.cancel_order(order.client_order_id, order.symbol)
        except ExchangeError as exc:
            log.warning("cancel of %s failed: %s", order.client_order_id, exc.reason)
            cancelled = replace(order, status=OrderStatus.CANCELED, reason=exc.reason)
        self.sink.emit(OrderUpdated(cancelled))
