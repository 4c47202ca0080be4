"""The engine's book: open positions, working orders and pending entries, the account, and what
follows from them — mark prices, unrealised PnL, equity and margin (SPEC Z-2, R-8).

State plus small queries; the only side effect is the events that tracking and forgetting orders
emit (the persister writes them, SPEC O-5).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

from trading.domain.events import EventSink, OrderUpdated
from trading.domain.models import (
    ZERO,
    Account,
    ExitReason,
    Market,
    Order,
    OrderLeg,
    OrderStatus,
    OrderType,
    Position,
    Side,
)
from trading.domain.profiles import balance_profile
from trading.domain.sizing import EquityTier
from trading.engine.feeds import FeedState
from trading.ports import Clock


@dataclass(slots=True)
class PendingEntry:
    """An entry order sent and not filled yet, with what its brackets will use at the fill:
    ``tp1_share_pct`` (% closed at TP1; None after a restart without the audit record: resolved
    again at the fill), ``atr`` (quote, for E-1 ATR targets) and ``leverage`` (×)."""

    intent_id: str
    side: Side
    order: Order
    leverage: int
    tp1_share_pct: Decimal | None = None
    atr: Decimal | None = None


@dataclass(slots=True)
class Book:
    """Positions keyed by (bot, symbol), working orders by client order id, pending entries by
    (bot, symbol), the account (None before start), and caches the hot path reads.

    Args: markets (rules per symbol), feeds (market state per (symbol, timeframe): the last
    closes are the mark prices), sink and clock (for order events).
    """

    markets: dict[str, Market]
    feeds: dict[tuple[str, str], FeedState]
    sink: EventSink
    clock: Clock
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    open_orders: dict[str, Order] = field(default_factory=dict)
    pending: dict[tuple[str, str], PendingEntry] = field(default_factory=dict)
    held_symbols: set[str] = field(default_factory=set)  # symbols with an open position (hot path)
    close_reasons: dict[str, ExitReason] = field(default_factory=dict)  # close order id → why
    account: Account | None = None
    closed_trades: int = 0
    tier_min_score: float = float("inf")  # min score of the equity tier (Z-4), set on balance changes
    # symbol → the exchange's mark price read between candle closes (demo/live account watch,
    # R-3); a symbol's next candle close replaces it
    live_marks: dict[str, Decimal] = field(default_factory=dict)

    # ------------------------------------------------------------ prices
    def mark_price(self, symbol: str) -> Decimal | None:
        """The exchange's mark price read since the symbol's last candle close (demo/live), else
        the last close seen for ``symbol`` (quote); None before the first candle."""
        live = self.live_marks.get(symbol)
        if live is not None:
            return live
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
        """Wallet balance + unrealised PnL in quote (0 before start)."""
        if self.account is None:
            return ZERO
        return self.account.balance + self.unrealised_pnl()

    def used_margin(self) -> Decimal:
        """Initial margin of the open positions and pending entries, in quote (SPEC R-8)."""
        total = ZERO
        for position in self.positions.values():
            total += position.margin(self.markets[position.symbol].contract_size)
        for (_bot, symbol), pending in self.pending.items():
            mark = self.mark_price(symbol)
            if mark is not None:
                total += pending.order.amount * self.markets[symbol].contract_size * mark / pending.leverage
        return total

    def balance_profile_name(self) -> str:
        """SPEC Z-3 balance profile of the wallet balance: micro, small, medium or large."""
        return balance_profile(self.account.balance if self.account else ZERO).name

    def update_tier(self, tier: EquityTier, equity: Decimal) -> None:
        """Cache the minimum score of the tier in force (Z-4, R-9 hysteresis) so the hot path
        never computes equity; no equity (≤ 0) takes no entry."""
        self.tier_min_score = tier.min_score if equity > 0 else float("inf")

    # ------------------------------------------------------------ orders
    def stop_of(self, bot: str, symbol: str) -> Order | None:
        """The stop-loss order tracked for ``bot``'s position on ``symbol``, if any."""
        for order in self.open_orders.values():
            if order.bot == bot and order.symbol == symbol and order.leg is OrderLeg.STOP_LOSS:
                return order
        return None

    def orders_of(self, bot: str, symbol: str) -> list[Order]:
        """The working orders of ``bot`` on ``symbol``, oldest first."""
        return [o for o in self.open_orders.values() if o.bot == bot and o.symbol == symbol]

    def close_in_flight(self, bot: str, symbol: str) -> bool:
        """True while a close at market of ``bot``'s position on ``symbol`` is unfilled."""
        return any(o.bot == bot and o.symbol == symbol and o.leg is OrderLeg.CLOSE for o in self.open_orders.values())

    def order_in_flight(self, bot: str, symbol: str) -> bool:
        """O-8 per-symbol lock: a market order (entry, addition or close) or a limit entry is
        still unfilled."""
        return any(
            o.bot == bot and o.symbol == symbol and o.type in (OrderType.MARKET, OrderType.LIMIT)
            for o in self.open_orders.values()
        )

    def track(self, order: Order) -> None:
        """Track an order the venue accepted (or its partly filled state) and emit it."""
        self.open_orders[order.client_order_id] = order
        self.sink.emit(OrderUpdated(order))

    def forget(self, client_order_id: str, status: OrderStatus, reason: str = "") -> Order | None:
        """Drop an order the venue no longer holds open (canceled, rejected or never accepted,
        SPEC O-5); a pending entry is dropped with it. Returns the order as it was tracked."""
        order = self.open_orders.pop(client_order_id, None)
        if order is None:
            return None
        if order.leg is OrderLeg.ENTRY:
            pending = self.pending.get((order.bot, order.symbol))
            if pending is not None and pending.order.client_order_id == client_order_id:
                del self.pending[(order.bot, order.symbol)]
        self.sink.emit(OrderUpdated(replace(order, status=status, reason=reason, updated_ms=self.clock.now_ms())))
        return order

    # --------------------------------------------------------- positions
    def counts(self, bot: str) -> tuple[int, int]:
        """(positions and pending entries of ``bot``, of the whole account), for SPEC R-1."""
        mine = sum(1 for (b, _s) in self.positions if b == bot) + sum(1 for (b, _s) in self.pending if b == bot)
        return mine, len(self.positions) + len(self.pending)

    def holder_of(self, symbol: str, other_than: str) -> str:
        """The bot other than ``other_than`` with a position or pending entry on ``symbol``
        ("" when none): one-way mode nets a symbol's contracts, so only one bot may hold it."""
        return next((b for (b, s) in [*self.positions, *self.pending] if s == symbol and b != other_than), "")

    def set_position(self, position: Position) -> None:
        """Store an open position."""
        self.positions[(position.bot, position.symbol)] = position
        self.held_symbols.add(position.symbol)

    def drop_position(self, position: Position) -> None:
        """Remove a closed position (the symbol stays held while another bot holds it)."""
        del self.positions[(position.bot, position.symbol)]
        if not any(symbol == position.symbol for _bot, symbol in self.positions):
            self.held_symbols.discard(position.symbol)
