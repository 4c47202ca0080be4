"""Simulated exchange for paper mode and backtests: a venue behind the same port as the ccxt
adapter (SPEC O-9), so paper and backtest trade through the same order gateway, fill tracking,
stop verification and reconciliation as demo and live.

The port (all async, none of them waits): ``load_markets``, ``set_leverage``,
``set_margin_mode``, ``fetch_balance``, ``create_order``, ``cancel_order``, ``fetch_order`` (by
client order id, with its fill: filled, average, fee), ``fetch_open_orders``,
``fetch_positions`` and ``spread_pct``. Time moves only when the replay moves it: the replay
calls the synchronous hooks :meth:`SimulatedExchange.fill_pending` and
:meth:`SimulatedExchange.next_trigger` for each candle of a symbol in ``active_symbols``, and
every order the venue fills, rejects or expires on its own is announced through ``on_change``
(as Binance's user-data stream announces ORDER_TRADE_UPDATE), so the fill tracker looks it up
and books it at once — no polling loop, no sleep.

Binance USDⓈ-M semantics in one-way mode:
- market orders fill at the NEXT candle's open, plus slippage against the taker;
- reduce-only STOP_MARKET and TAKE_PROFIT_MARKET orders trigger on the candle's high/low; when
  one candle touches both, the stop fills first (conservative); a candle that opens beyond the
  trigger fills at the open (gap);
- a LIMIT entry (SPEC O-3 ``entry_order_style = "limit"``) rests on the book: it fills at its
  price as a maker once a candle trades through it (low ≤ price for a buy);
- a TAKE_PROFIT order (SPEC O-3 ``tp_order_style = "limit"``) is a limit at its trigger price: it
  fills there as a maker (maker fee, no slippage) when the candle trades through it, or at the
  open as a taker when the candle opens beyond it (the limit crosses the book);
- fees are the market's taker fee on the fill's notional; funding is applied at the real
  funding events on the open position (long pays a positive rate);
- notional = contracts × contractSize × price (SPEC S-3).
The wallet balance moves by realised PnL − fees ± funding, as on the exchange.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from collections.abc import Callable

from trading.domain.errors import OrderNotFound, OrderRejected, UnknownSymbol
from trading.domain.models import Fill, Market, Order, OrderSide, OrderStatus, OrderType
from trading.ports import Clock
from trading.domain.precision import round_price

HUNDRED = Decimal(100)


@dataclass(slots=True)
class _NetPosition:
    """The exchange's view of a symbol: signed contracts (+long/−short) and average entry."""

    contracts: Decimal
    entry_price: Decimal
    leverage: int


class SimulatedExchange:
    """In-process exchange (SPEC S-1 paper mode, O-9). Port methods are async; the replay driver
    calls the synchronous hooks :meth:`fill_pending` and :meth:`next_trigger` for each candle of
    a symbol in :attr:`active_symbols`.

    Args:
        markets: market rules per symbol; balance: starting wallet balance in quote;
        slippage_pct: % of price added against the taker on every market-type fill.

    Attributes:
        on_change: called with the client order id of every order the venue fills, rejects or
            expires by itself (not on create / cancel requests, which answer their caller);
            None = nobody listens.
    """

    def __init__(
        self, markets: dict[str, Market], balance: Decimal, slippage_pct: Decimal, clock: Clock
    ) -> None:
        self._markets = markets
        self._balance = balance
        self._slippage = slippage_pct / HUNDRED
        self._clock = clock
        self._orders: dict[str, Order] = {}  # every order seen, by client order id
        self._pending: dict[str, list[str]] = {}  # symbol → market orders waiting for an open
        self._triggers: dict[str, list[str]] = {}  # symbol → open stop / take-profit orders
        self._positions: dict[str, _NetPosition] = {}
        self._leverage: dict[str, int] = {}
        self._last_price: dict[str, Decimal] = {}  # last price seen by a hook, per symbol
        self._margin_mode: dict[str, str] = {}
        self._seq: dict[str, int] = {}  # client order id → acceptance order (open orders oldest first)
        self.active_symbols: set[str] = set()  # symbols with pending or trigger orders
        self.on_change: Callable[[str], None] | None = None

    # ----------------------------------------------------------------- port
    async def load_markets(self) -> dict[str, Market]:
        """The market rules this exchange was built with."""
        return dict(self._markets)

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        """Leverage for new positions on ``symbol`` (×)."""
        self._market(symbol)
        self._leverage[symbol] = leverage

    async def set_margin_mode(self, symbol: str, margin_mode: str) -> None:
        """``isolated`` or ``cross`` margin for ``symbol`` (SPEC O-7; the simulation books PnL
        the same way in both)."""
        self._market(symbol)
        if margin_mode not in ("isolated", "cross"):
            raise OrderRejected(f"{symbol}: margin mode {margin_mode!r} is not isolated or cross")
        self._margin_mode[symbol] = margin_mode

    async def fetch_balance(self) -> Decimal:
        """Wallet balance in quote (realised PnL, fees and funding included)."""
        return self._balance

    async def create_order(self, order: Order) -> Order:
        """Accept an order; a repeated client order id returns the existing order (SPEC O-2).

        Raises:
            OrderRejected: non-positive amount, a stop without trigger price, or a reduce-only
                order with no position to reduce. (Margin is bounded by the engine's sizing caps,
                SPEC R-8; the simulator does not model a margin rejection yet.)
        """
        existing = self._orders.get(order.client_order_id)
        if existing is not None:
            return existing
        self._market(order.symbol)
        if order.amount <= 0:
            raise OrderRejected(f"{order.symbol}: quantity must be positive")
        position = self._positions.get(order.symbol)
        if order.reduce_only:
            if position is None or not self._reduces(position, order.side):
                raise OrderRejected(f"{order.symbol}: ReduceOnly order is rejected (no position)")
        if order.type is OrderType.LIMIT:
            if order.price is None or order.price <= 0:
                raise OrderRejected(f"{order.symbol}: LIMIT needs a price")
        elif order.type is not OrderType.MARKET:
            if order.trigger_price is None:
                raise OrderRejected(f"{order.symbol}: {order.type.value} needs a trigger price")
            self._check_not_crossed(order)
        accepted = replace(order, status=OrderStatus.OPEN, updated_ms=self._clock.now_ms())
        self._orders[order.client_order_id] = accepted
        self._seq[order.client_order_id] = len(self._seq)
        book = self._pending if order.type is OrderType.MARKET else self._triggers
        book.setdefault(order.symbol, []).append(order.client_order_id)
        self.active_symbols.add(order.symbol)
        return accepted

    async def cancel_order(self, client_order_id: str, symbol: str) -> Order:
        """Cancel an open order.

        Raises:
            OrderNotFound: unknown, or no longer open (Binance -2011 "Unknown order sent.").
        """
        order = self._orders.get(client_order_id)
        if order is None or order.symbol != symbol or order.status is not OrderStatus.OPEN:
            raise OrderNotFound(f"{symbol}: Unknown order sent ({client_order_id})")
        return self._close_order(order, OrderStatus.CANCELED)

    async def fetch_order(self, client_order_id: str, symbol: str) -> Order:
        """One order by client order id, in any status, with what filled (amount, average
        price, fee).

        Raises:
            OrderNotFound: the venue never accepted it (Binance -2013 "Order does not exist.").
        """
        order = self._orders.get(client_order_id)
        if order is None or order.symbol != symbol:
            raise OrderNotFound(f"{symbol}: Order does not exist ({client_order_id})")
        return order

    async def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders, optionally of one symbol, oldest first."""
        symbols = [symbol] if symbol is not None else list(self.active_symbols)
        found = []
        for name in symbols:
            for book in (self._pending, self._triggers):
                for cid in book.get(name, ()):
                    order = self._orders[cid]
                    if order.status is OrderStatus.OPEN:
                        found.append(order)
        seq = self._seq
        found.sort(key=lambda o: seq.get(o.client_order_id, 0))
        return found

    async def fetch_positions(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Open positions: symbol → (signed contracts, +long/−short; entry price in quote)."""
        return {symbol: (p.contracts, p.entry_price) for symbol, p in self._positions.items()}

    # --------------------------------------------------------- simulation
    def restore(
        self,
        balance: Decimal,
        positions: list[tuple[str, Decimal, Decimal, int]],
        open_orders: list[Order],
        known_orders: list[Order] = (),
    ) -> None:
        """Resume a saved paper account: balance in quote; positions as (symbol, signed
        contracts, entry price, leverage); the open orders as they were; ``known_orders``: every
        other order ever sent (filled, canceled…), so a repeated client order id still returns
        the existing order after a restart, as on the exchange (SPEC O-2)."""
        self._balance = balance
        for order in known_orders:
            self._orders[order.client_order_id] = order
        for symbol, contracts, entry, leverage in positions:
            self._positions[symbol] = _NetPosition(contracts, entry, leverage)
        for order in open_orders:
            self._orders[order.client_order_id] = order
            self._seq[order.client_order_id] = len(self._seq)
            book = self._pending if order.type is OrderType.MARKET else self._triggers
            book.setdefault(order.symbol, []).append(order.client_order_id)
            self.active_symbols.add(order.symbol)

    def fill_pending(self, symbol: str, timestamp: int, open_price: float) -> list[Fill]:
        """Fill the market orders of ``symbol`` waiting for this candle's open (epoch ms UTC,
        quote), plus slippage against the taker."""
        self._last_price[symbol] = Decimal(repr(open_price))
        ids = self._pending.pop(symbol, None)
        if not ids:
            return []
        fills = []
        for cid in ids:
            order = self._orders[cid]
            if order.status is not OrderStatus.OPEN:
                continue
            position = self._positions.get(symbol)
            if order.reduce_only and (position is None or not self._reduces(position, order.side)):
                # Binance expires a reduce-only order with nothing left to reduce (a stop closed
                # the position first); it never opens the opposite side.
                self._close_order(order, OrderStatus.REJECTED, "ReduceOnly Order is rejected", notify=True)
                continue
            fills.append(self._execute(order, Decimal(repr(open_price)), timestamp))
        self._refresh_active(symbol)
        return fills

    def next_trigger(
        self, symbol: str, timestamp: int, open_price: float, high: float, low: float
    ) -> Fill | None:
        """The next triggered stop / take-profit order (or resting limit entry) of ``symbol`` in
        this candle, filled, or None. Stops come before take-profits when both are touched
        (conservative)."""
        ids = self._triggers.get(symbol)
        if not ids:
            return None
        self._last_price[symbol] = Decimal(repr(open_price))
        chosen: Order | None = None
        chosen_rank = (2, 0.0)
        for cid in ids:
            order = self._orders[cid]
            sell = order.side is OrderSide.SELL
            if order.type is OrderType.LIMIT:  # a resting limit: traded through its price
                limit = float(order.price)  # type: ignore[arg-type]
                touched = high >= limit if sell else low <= limit
                if touched and (1, 0.0) < chosen_rank:
                    chosen, chosen_rank = order, (1, 0.0)
                continue
            trigger = float(order.trigger_price)  # type: ignore[arg-type]
            if order.type is OrderType.STOP_MARKET:
                touched = low <= trigger if sell else high >= trigger
                rank = (0, 0.0)
            else:
                touched = high >= trigger if sell else low <= trigger
                rank = (1, abs(trigger - open_price))  # nearest take-profit first
            if touched and rank < chosen_rank:
                chosen, chosen_rank = order, rank
        if chosen is None:
            return None
        ids.remove(chosen.client_order_id)
        if chosen.type is OrderType.LIMIT:
            # It rested on the book: it fills at its own price as a maker, even when the candle
            # opened beyond it (the price passed through it between the candles).
            assert chosen.price is not None
            return self._execute(chosen, chosen.price, timestamp, maker=True)
        position = self._positions.get(symbol)
        if position is None or not self._reduces(position, chosen.side):
            # Binance rejects a reduce-only order that has nothing left to reduce.
            self._close_order(chosen, OrderStatus.REJECTED, "ReduceOnly Order is rejected", notify=True)
            return self.next_trigger(symbol, timestamp, open_price, high, low)
        trigger = chosen.trigger_price
        assert trigger is not None
        open_dec = Decimal(repr(open_price))
        sell = chosen.side is OrderSide.SELL
        if chosen.type is OrderType.STOP_MARKET:
            gapped = open_dec < trigger if sell else open_dec > trigger  # opened past the stop
        else:
            gapped = open_dec > trigger if sell else open_dec < trigger  # opened past the target
        if chosen.type is OrderType.TAKE_PROFIT and not gapped:
            return self._execute(chosen, trigger, timestamp, maker=True)  # rests on the book at its limit
        price = open_dec if gapped else trigger
        return self._execute(chosen, price, timestamp)

    def apply_funding(self, symbol: str, rate: Decimal, mark_price: float, timestamp: int) -> Decimal | None:
        """Apply one funding event (rate as a fraction) at ``mark_price`` (quote) to the open
        position of ``symbol``; returns the amount credited (negative = paid) or None when flat.
        Long pays when the rate is positive (Binance funding)."""
        position = self._positions.get(symbol)
        if position is None:
            return None
        market = self._markets[symbol]
        notional = position.contracts * market.contract_size * Decimal(repr(mark_price))
        amount = -(notional * rate)
        self._balance += amount
        return amount

    async def fetch_mark_price(self, symbol: str) -> Decimal:
        """The simulated mark: the last price the replay showed for ``symbol`` (quote). A replay
        never reads it between candle closes (it has none); the port stays whole. Raises
        UnknownSymbol for a symbol not priced yet."""
        price = self._last_price.get(symbol)
        if price is None:
            raise UnknownSymbol(f"no price seen yet for {symbol}")
        return price

    async def spread_pct(self, symbol: str, price: float) -> float | None:
        """Modelled bid/ask spread in % of mid (SPEC F-1): candles carry no order book, so the
        simulator quotes the narrowest book Binance allows, one tick wide. None for an unknown
        symbol or price (the F-1 filter then denies: fail closed)."""
        market = self._markets.get(symbol)
        if market is None or not price > 0:
            return None
        return float(market.tick_size) / price * 100.0

    def position(self, symbol: str) -> tuple[Decimal, Decimal] | None:
        """The exchange's net position of ``symbol``: (signed contracts, entry price) or None."""
        position = self._positions.get(symbol)
        return None if position is None else (position.contracts, position.entry_price)

    # ------------------------------------------------------------ helpers
    def _market(self, symbol: str) -> Market:
        market = self._markets.get(symbol)
        if market is None:
            raise UnknownSymbol(f"{symbol} is not listed on the simulated exchange")
        return market

    @staticmethod
    def _reduces(position: _NetPosition, side: OrderSide) -> bool:
        return (position.contracts > 0 and side is OrderSide.SELL) or (
            position.contracts < 0 and side is OrderSide.BUY
        )

    def _check_not_crossed(self, order: Order) -> None:
        """Binance -2021: a stop / take-profit whose trigger the price has already passed is
        rejected ("Order would immediately trigger")."""
        last = self._last_price.get(order.symbol)
        trigger = order.trigger_price
        if last is None or trigger is None:
            return
        sell = order.side is OrderSide.SELL
        if order.type is OrderType.STOP_MARKET:
            crossed = trigger >= last if sell else trigger <= last
        else:
            crossed = trigger <= last if sell else trigger >= last
        if crossed:
            raise OrderRejected(f"{order.symbol}: Order would immediately trigger (-2021)")

    def _refresh_active(self, symbol: str) -> None:
        if not self._pending.get(symbol) and not self._triggers.get(symbol):
            self.active_symbols.discard(symbol)

    def _close_order(self, order: Order, status: OrderStatus, reason: str = "", *, notify: bool = False) -> Order:
        closed = replace(order, status=status, updated_ms=self._clock.now_ms(), reason=reason)
        self._orders[order.client_order_id] = closed
        for book in (self._pending, self._triggers):
            ids = book.get(order.symbol)
            if ids and order.client_order_id in ids:
                ids.remove(order.client_order_id)
        self._refresh_active(order.symbol)
        if notify and self.on_change is not None:
            self.on_change(order.client_order_id)
        return closed

    def _execute(self, order: Order, reference: Decimal, timestamp: int, *, maker: bool = False) -> Fill:
        """Fill ``order`` whole at ``reference`` ± slippage (a taker), or exactly at
        ``reference`` with the maker fee when ``maker`` (a resting limit); book PnL, fee and
        position."""
        market = self._markets[order.symbol]
        buy = order.side is OrderSide.BUY
        if maker:
            slipped = reference
        else:
            slipped = reference * (1 + self._slippage) if buy else reference * (1 - self._slippage)
        price = round_price(market, slipped)
        amount = order.amount
        position = self._positions.get(order.symbol)
        if order.reduce_only and position is not None:
            amount = min(amount, abs(position.contracts))  # reduce-only never flips
        signed = amount if buy else -amount
        if position is None:
            leverage = self._leverage.get(order.symbol, 1)
            self._positions[order.symbol] = _NetPosition(signed, price, leverage)
        elif (position.contracts > 0) == (signed > 0):
            total = position.contracts + signed
            position.entry_price = (
                position.entry_price * abs(position.contracts) + price * amount
            ) / abs(total)
            position.contracts = total
        else:
            closing = min(amount, abs(position.contracts))
            direction = 1 if position.contracts > 0 else -1
            self._balance += direction * (price - position.entry_price) * closing * market.contract_size
            position.contracts += signed
            if position.contracts == 0:
                del self._positions[order.symbol]
        fee = amount * market.contract_size * price * (market.maker_fee if maker else market.taker_fee)
        self._balance -= fee
        self._orders[order.client_order_id] = replace(
            order,
            status=OrderStatus.CLOSED,
            filled=amount,
            average=price,
            updated_ms=timestamp,
            fee=fee,
        )
        self._refresh_active(order.symbol)
        if self.on_change is not None:
            self.on_change(order.client_order_id)
        return Fill(
            client_order_id=order.client_order_id,
            bot=order.bot,
            symbol=order.symbol,
            side=order.side,
            leg=order.leg,
            amount=amount,
            price=price,
            fee=fee,
            timestamp=timestamp,
        )
