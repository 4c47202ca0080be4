"""The matching side of the loopback fake Binance USDⓈ-M (``tests.fake_binance``): accounts,
positions, the order book of one account and Binance's algo (conditional) order service, as
strict as the venue's documentation. No HTTP here: ``tests.fake_binance`` parses requests and
renders Binance's JSON; this module decides what the exchange does.

Modelled from Binance's USDⓈ-M docs (New Order, New Algo Order, Query Algo Order, Event Algo
Order Update, Account Information V3, Position Information V3) and ccxt's binanceusdm:

- two services: the matching engine (MARKET and LIMIT orders, ``orderId``, ``clientOrderId``)
  and the algo service (STOP_MARKET, TAKE_PROFIT_MARKET, TAKE_PROFIT, ``algoId``,
  ``clientAlgoId``), whose orders pass NEW → TRIGGERING → TRIGGERED → FINISHED (or CANCELED,
  EXPIRED, REJECTED); a triggered order becomes an order of its own in the matching engine
  (``actualOrderId``; its ``clientOrderId`` is the ``clientAlgoId``, an assumption of this fake)
  which can fill, part-fill then expire, expire or be cancelled;
- a client order id is unique among *open* orders only (-4116), and must match
  ``^[\\.A-Z\\:/a-z0-9_-]{1,36}$``; an id of a filled or cancelled order can be used again;
- market orders fill at once (at the last price, plus slippage against the taker); a market
  order's quantity is checked against MARKET_LOT_SIZE, a limit's against LOT_SIZE (-4004 below
  the minimum, -4005 above the maximum, -1111 off the step); prices on the tick (-4014); a
  LIMIT within PERCENT_PRICE of the mark; MIN_NOTIONAL for orders that add exposure (-4164);
- reduce-only: a market order with nothing to reduce is refused (-2022); a reduce-only
  conditional order is accepted without a position (Binance checks at trigger) and expires then;
- at most MAX_NUM_ALGO_ORDERS open conditional orders per symbol (-4045);
- -2021 "Order would immediately trigger" against the mark price when ``workingType`` is
  MARK_PRICE, against the last price for CONTRACT_PRICE;
- one-way mode only: in hedge (dual-side) mode every order without ``positionSide`` is refused
  (-4061);
- wallet balances per asset (USDT, USDC): realised PnL and fees of a symbol settle in its margin
  asset; margin comes from that asset, or from every asset in multi-assets mode.

Time: ``clock`` is the candle clock (the real candle being replayed); ``wall_ms()`` is the
exchange's server time, used for order and trade timestamps, the "accepted but not yet visible"
window, the demo venue's own cancels and listenKey validity.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
OPEN = ("NEW", "PARTIALLY_FILLED")
ALGO_WORKING = ("NEW", "TRIGGERING", "TRIGGERED")
ALGO_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET", "TAKE_PROFIT", "STOP", "TRAILING_STOP_MARKET")
TRIGGER_FAULTS = ("stop_expire", "stop_partial_expire", "stop_stuck")
ZERO = Decimal(0)


class BinanceReject(Exception):
    """A Binance error reply ``{"code": code, "msg": msg}`` with an HTTP status."""

    def __init__(self, code: int, msg: str, http: int = 400, headers: dict | None = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.http, self.headers = code, msg, http, headers or {}


@dataclass(frozen=True, slots=True)
class Rules:
    """One symbol's exchange filters (from Binance's own exchangeInfo entry)."""

    symbol: str  # ccxt unified
    market_id: str  # Binance id, e.g. XRPUSDT
    settle: str  # margin asset: USDT or USDC
    tick: Decimal
    step: Decimal
    lot_min: Decimal
    lot_max: Decimal
    market_min: Decimal
    market_max: Decimal
    min_notional: Decimal
    max_algo: int
    pct_up: Decimal
    pct_down: Decimal

    @classmethod
    def from_ccxt(cls, market: dict) -> "Rules":
        """Rules of one ccxt market dict whose ``info`` is Binance's exchangeInfo entry."""
        filters = {f["filterType"]: f for f in market["info"]["filters"]}
        lot, mkt = filters["LOT_SIZE"], filters.get("MARKET_LOT_SIZE", filters["LOT_SIZE"])
        pct = filters.get("PERCENT_PRICE", {"multiplierUp": "1.05", "multiplierDown": "0.95"})
        return cls(
            symbol=market["symbol"], market_id=market["id"], settle=market["settle"],
            tick=Decimal(filters["PRICE_FILTER"]["tickSize"]), step=Decimal(lot["stepSize"]),
            lot_min=Decimal(lot["minQty"]), lot_max=Decimal(lot["maxQty"]),
            market_min=Decimal(mkt["minQty"]), market_max=Decimal(mkt["maxQty"]),
            min_notional=Decimal(filters.get("MIN_NOTIONAL", {}).get("notional", "5")),
            max_algo=int(filters.get("MAX_NUM_ALGO_ORDERS", {}).get("limit", 10)),
            pct_up=Decimal(pct["multiplierUp"]), pct_down=Decimal(pct["multiplierDown"]),
        )


@dataclass(slots=True)
class VOrder:
    """An order of the matching engine (what ``/fapi/v1/order`` knows)."""

    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY / SELL
    type: str  # MARKET / LIMIT
    qty: Decimal
    price: Decimal  # LIMIT price, 0 for MARKET
    reduce_only: bool
    time_ms: int
    update_ms: int
    tif: str = "GTC"
    status: str = "NEW"
    executed: Decimal = ZERO
    cum_quote: Decimal = ZERO
    orig_type: str = ""  # the conditional type it came from (triggered algo order), else its type
    stop_price: Decimal = ZERO
    working_type: str = "CONTRACT_PRICE"
    price_protect: bool = False
    visible_ms: int = 0  # "accepted but not yet visible" until this wall time
    algo_id: int | None = None
    rest_on_next_candle: Decimal = ZERO  # the partial-fill fault: what fills on the next candle

    @property
    def is_open(self) -> bool:
        """NEW or PARTIALLY_FILLED."""
        return self.status in OPEN

    @property
    def avg_price(self) -> Decimal:
        """Average fill price (0 before a fill)."""
        return self.cum_quote / self.executed if self.executed else ZERO


@dataclass(slots=True)
class AlgoOrder:
    """A conditional order of the algo service (what ``/fapi/v1/algoOrder`` knows)."""

    algo_id: int
    client_id: str
    symbol: str
    side: str
    order_type: str
    qty: Decimal
    trigger: Decimal
    price: Decimal  # TAKE_PROFIT: the limit once triggered; 0 otherwise
    working_type: str
    price_protect: bool
    reduce_only: bool
    create_ms: int
    update_ms: int
    tif: str = "GTC"
    status: str = "NEW"
    trigger_ms: int = 0
    actual_order_id: int | None = None
    visible_ms: int = 0
    cancelled_by: str = ""  # "user" or "venue"
    reason: str = ""  # ALGO_UPDATE "rm": why it failed
    stuck: int = 0  # the stop_stuck fault: candles it stays TRIGGERING


@dataclass(slots=True)
class Position:
    """One-way net position: signed contracts (+long/−short) and average entry."""

    amount: Decimal
    entry: Decimal
    update_ms: int


@dataclass(frozen=True, slots=True)
class Trade:
    """One fill as /fapi/v1/userTrades reports it (symbol ccxt unified)."""

    id: int
    order_id: int
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str
    realized_pnl: Decimal
    maker: bool
    time_ms: int


@dataclass
class Venue:
    """One Binance USDⓈ-M account: its orders, algo orders, positions and wallets.

    Args:
        rules: filters per symbol; assets: wallet balance per asset (quote units);
        slippage_pct: % added against the taker on market fills; commission: (maker, taker)
        fraction per symbol; wall_ms: the exchange clock (epoch ms); on_event: called with each
        user-data event dict (``ORDER_TRADE_UPDATE``, ``ALGO_UPDATE``, ``ACCOUNT_UPDATE``).
    """

    rules: dict[str, Rules]
    assets: dict[str, Decimal]
    slippage_pct: Decimal
    commission: dict[str, tuple[Decimal, Decimal]]
    wall_ms: Callable[[], int]
    on_event: Callable[[dict], None] = lambda event: None
    multi_assets: bool = False
    dual_side: bool = False
    demo_cancel_after_ms: int | None = None  # demo venue: cancels conditional orders this old
    stuck_candles: int = 2  # the stop_stuck fault: candles a triggered order stays TRIGGERING

    orders: dict[int, VOrder] = field(default_factory=dict)
    algos: dict[int, AlgoOrder] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    last: dict[str, Decimal] = field(default_factory=dict)
    mark_offset: dict[str, Decimal] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)
    trigger_faults: list[str] = field(default_factory=list)
    asset_updated_ms: dict[str, int] = field(default_factory=dict)
    venue_cancels: int = 0
    _next_id: int = 8_000_000_001
    _next_algo: int = 3_000_001
    _next_trade: int = 1

    # ------------------------------------------------------------ helpers
    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def mark(self, symbol: str) -> Decimal:
        """The mark price: the last price plus the symbol's configured offset."""
        return self.last[symbol] + self.mark_offset.get(symbol, ZERO)

    def _tick(self, symbol: str, price: Decimal) -> Decimal:
        tick = self.rules[symbol].tick
        return (price / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP) * tick

    def _visible(self, thing) -> bool:
        return self.wall_ms() >= thing.visible_ms

    def open_algos(self, symbol: str | None = None, *, visible_only: bool = False) -> list[AlgoOrder]:
        """Conditional orders still waiting for their trigger (NEW), oldest first."""
        return [a for a in self.algos.values() if a.status == "NEW" and (symbol is None or a.symbol == symbol)
                and (not visible_only or self._visible(a))]

    def open_orders(self, symbol: str | None = None, *, visible_only: bool = False) -> list[VOrder]:
        """Open matching-engine orders, oldest first."""
        return [o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)
                and (not visible_only or self._visible(o))]

    def find_order(self, symbol: str, *, order_id: int | None = None, client_id: str | None = None) -> VOrder:
        """The order by id or client id (the latest of that client id); -2013 when unknown or not
        visible yet."""
        found = None
        for order in self.orders.values():
            if order.symbol != symbol or not self._visible(order):
                continue
            if (order_id is not None and order.order_id == order_id) or (client_id is not None and order.client_id == client_id):
                found = order
        if found is None:
            raise BinanceReject(-2013, "Order does not exist.")
        return found

    def find_algo(self, *, algo_id: int | None = None, client_id: str | None = None) -> AlgoOrder:
        """The algo order by id or client id (the latest of that id); -2013 when unknown."""
        found = None
        for algo in self.algos.values():
            if not self._visible(algo):
                continue
            if (algo_id is not None and algo.algo_id == algo_id) or (client_id is not None and algo.client_id == client_id):
                found = algo
        if found is None:
            raise BinanceReject(-2013, "Order does not exist.")
        return found

    def _check_common(self, symbol: str, client_id: str, side: str, position_side: str) -> Rules:
        if not CLIENT_ID_RE.match(client_id):
            raise BinanceReject(-1100, "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                                       "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
        if side not in ("BUY", "SELL"):
            raise BinanceReject(-1117, "Invalid side.")
        if self.dual_side and position_side in ("", "BOTH"):
            raise BinanceReject(-4061, "Order's position side does not match user's setting.")
        return self.rules[symbol]

    @staticmethod
    def _check_qty(rules: Rules, qty: Decimal, market: bool) -> None:
        if qty <= 0:
            raise BinanceReject(-4003, "Quantity less than or equal to zero.")
        if qty % rules.step != 0:
            raise BinanceReject(-1111, "Precision is over the maximum defined for this asset.")
        low, high = (rules.market_min, rules.market_max) if market else (rules.lot_min, rules.lot_max)
        if qty < low:
            raise BinanceReject(-4004, "Quantity less than min quantity.")
        if qty > high:
            raise BinanceReject(-4005, "Quantity greater than max quantity.")

    @staticmethod
    def _check_tick(rules: Rules, price: Decimal) -> None:
        if price <= 0 or price % rules.tick != 0:
            raise BinanceReject(-4014, "Price not increased by tick size.")

    def _reduces(self, symbol: str, side: str) -> Decimal:
        """How much a ``side`` order may reduce of the position (0: it would add)."""
        pos = self.positions.get(symbol)
        if pos is None or pos.amount == 0:
            return ZERO
        if (pos.amount > 0 and side == "SELL") or (pos.amount < 0 and side == "BUY"):
            return abs(pos.amount)
        return ZERO

    def available(self, asset: str) -> Decimal:
        """Margin available for a new order settled in ``asset`` (every asset in multi-assets mode)."""
        pool = sum(self.assets.values(), ZERO) if self.multi_assets else self.assets.get(asset, ZERO)
        used = ZERO
        for symbol, pos in self.positions.items():
            if self.multi_assets or self.rules[symbol].settle == asset:
                used += abs(pos.amount) * pos.entry / self.leverage.get(symbol, 20)
        return pool - used

    def _check_margin(self, rules: Rules, qty: Decimal, price: Decimal) -> None:
        notional = qty * price
        if notional < rules.min_notional:
            raise BinanceReject(-4164, f"Order's notional must be no smaller than {rules.min_notional} "
                                       "(unless you choose reduce only).")
        if notional / self.leverage.get(rules.symbol, 20) > self.available(rules.settle):
            raise BinanceReject(-2019, "Margin is insufficient.")

    # ------------------------------------------------------------ placing
    def place_order(self, symbol: str, client_id: str, side: str, order_type: str, qty: Decimal,
                    price: Decimal | None, reduce_only: bool, tif: str, *, position_side: str = "",
                    partial: bool = False, invisible_ms: int = 0) -> VOrder:
        """POST /fapi/v1/order (MARKET or LIMIT). Raises BinanceReject."""
        rules = self._check_common(symbol, client_id, side, position_side)
        if order_type in ALGO_TYPES:
            raise BinanceReject(-4120, "Order type not supported for this endpoint. Please use the Algo Order API "
                                       "endpoints instead.")
        if order_type not in ("MARKET", "LIMIT"):
            raise BinanceReject(-1116, "Invalid orderType.")
        if any(o.client_id == client_id for o in self.open_orders(symbol)):
            raise BinanceReject(-4116, "ClientOrderId is duplicated.")
        self._check_qty(rules, qty, order_type == "MARKET")
        last = self.last[symbol]
        if order_type == "LIMIT":
            if price is None or not tif:
                raise BinanceReject(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
            self._check_tick(rules, price)
            mark = self.mark(symbol)
            if side == "BUY" and price > mark * rules.pct_up:
                raise BinanceReject(-4016, f"Limit price can't be higher than {self._tick(symbol, mark * rules.pct_up)}.")
            if side == "SELL" and price < mark * rules.pct_down:
                raise BinanceReject(-4024, f"Limit price can't be lower than {self._tick(symbol, mark * rules.pct_down)}.")
        if reduce_only:
            if order_type == "MARKET" and self._reduces(symbol, side) == 0:
                raise BinanceReject(-2022, "ReduceOnly Order is rejected.")
        else:
            self._check_margin(rules, qty, price if order_type == "LIMIT" else last)
        now = self.wall_ms()
        order = VOrder(self._id(), client_id, symbol, side, order_type, qty, price or ZERO, reduce_only, now, now,
                       tif=tif or "GTC", orig_type=order_type, visible_ms=now + invisible_ms)
        self.orders[order.order_id] = order
        self._emit_order(order, "NEW")
        if order_type == "MARKET":
            self._fill_market(order, last, partial=partial)
        elif (side == "BUY" and price >= last) or (side == "SELL" and price <= last):
            self._fill(order, order.qty, last, maker=False)  # crosses the book: fills at once as a taker
        return order

    def place_algo(self, symbol: str, client_id: str, side: str, order_type: str, qty: Decimal, trigger: Decimal,
                   price: Decimal | None, working_type: str, price_protect: bool, reduce_only: bool, tif: str, *,
                   position_side: str = "", invisible_ms: int = 0) -> AlgoOrder:
        """POST /fapi/v1/algoOrder (algoType CONDITIONAL). Raises BinanceReject."""
        rules = self._check_common(symbol, client_id, side, position_side)
        if order_type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET", "TAKE_PROFIT"):
            raise BinanceReject(-1116, "Invalid orderType.")
        if any(a.client_id == client_id for a in self.algos.values() if a.status in ALGO_WORKING):
            raise BinanceReject(-4116, "ClientOrderId is duplicated.")
        if len(self.open_algos(symbol)) >= rules.max_algo:
            raise BinanceReject(-4045, "Reach max stop order limit.")
        self._check_qty(rules, qty, order_type != "TAKE_PROFIT")
        self._check_tick(rules, trigger)
        limit = ZERO
        if order_type == "TAKE_PROFIT":
            if price is None:
                raise BinanceReject(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
            self._check_tick(rules, price)
            limit = price
        if working_type not in ("MARK_PRICE", "CONTRACT_PRICE"):
            raise BinanceReject(-1115, "Invalid workingType.")
        reference = self.mark(symbol) if working_type == "MARK_PRICE" else self.last[symbol]
        sell = side == "SELL"
        if order_type == "STOP_MARKET":
            crossed = trigger >= reference if sell else trigger <= reference
        else:
            crossed = trigger <= reference if sell else trigger >= reference
        if crossed:
            raise BinanceReject(-2021, "Order would immediately trigger.")
        if not reduce_only:
            self._check_margin(rules, qty, trigger)
        now = self.wall_ms()
        algo = AlgoOrder(self._next_algo, client_id, symbol, side, order_type, qty, trigger, limit, working_type,
                         price_protect, reduce_only, now, now, tif=tif or "GTC", visible_ms=now + invisible_ms)
        self._next_algo += 1
        self.algos[algo.algo_id] = algo
        self._emit_algo(algo)
        return algo

    # ----------------------------------------------------------- cancelling
    def cancel_order(self, order: VOrder) -> VOrder:
        """DELETE /fapi/v1/order: -2011 when it is no longer open."""
        if not order.is_open:
            raise BinanceReject(-2011, "Unknown order sent.")
        order.status = "CANCELED"
        order.rest_on_next_candle = ZERO
        order.update_ms = self.wall_ms()
        self._emit_order(order, "CANCELED")
        self._finish_algo_of(order)
        return order

    def cancel_algo(self, algo: AlgoOrder, by: str = "user") -> AlgoOrder:
        """DELETE /fapi/v1/algoOrder (``by`` "user"), or the venue's own cancel ("venue"):
        -2011 unless it still waits for its trigger."""
        if algo.status != "NEW":
            raise BinanceReject(-2011, "Unknown order sent.")
        algo.status = "CANCELED"
        algo.cancelled_by = by
        algo.update_ms = self.wall_ms()
        if by == "venue":
            self.venue_cancels += 1
        self._emit_algo(algo)
        return algo

    def housekeeping(self) -> None:
        """What the venue does on its own as time passes: the demo venue cancels conditional
        orders older than ``demo_cancel_after_ms`` (Binance futures connector issue #260)."""
        if self.demo_cancel_after_ms is None:
            return
        now = self.wall_ms()
        for algo in self.open_algos():
            if now - algo.create_ms >= self.demo_cancel_after_ms:
                self.cancel_algo(algo, by="venue")

    # ------------------------------------------------------------- candles
    def on_candle(self, symbol: str, open_: Decimal, high: Decimal, low: Decimal, close: Decimal) -> None:
        """One real candle of ``symbol``: the rest of part-filled market orders fills at its
        open, resting limits that it trades through fill at their price (maker), conditional
        orders whose trigger it reaches trigger (stops first, then the nearest take-profit);
        the last price becomes its close."""
        self.last[symbol] = open_
        for order in list(self.open_orders(symbol)):
            if order.rest_on_next_candle > 0:
                rest = order.rest_on_next_candle
                order.rest_on_next_candle = ZERO
                self._fill_market(order, open_, amount=rest)
        for algo in [a for a in self.algos.values() if a.symbol == symbol and a.status == "TRIGGERING"]:
            algo.stuck -= 1
            if algo.stuck <= 0:
                self._execute_triggered(algo, open_, open_)
        for order in self.open_orders(symbol):
            if order.type != "LIMIT" or order.rest_on_next_candle > 0:
                continue
            if (order.side == "BUY" and low <= order.price) or (order.side == "SELL" and high >= order.price):
                self._fill(order, order.qty - order.executed, order.price, maker=True)
        offset = self.mark_offset.get(symbol, ZERO)
        while True:
            chosen = None
            rank_best = (3, ZERO)
            for algo in self.open_algos(symbol):
                hi, lo = (high + offset, low + offset) if algo.working_type == "MARK_PRICE" else (high, low)
                sell = algo.side == "SELL"
                if algo.order_type == "STOP_MARKET":
                    touched = lo <= algo.trigger if sell else hi >= algo.trigger
                    rank = (0, ZERO)
                else:
                    touched = hi >= algo.trigger if sell else lo <= algo.trigger
                    rank = (1, abs(algo.trigger - open_))
                if touched and rank < rank_best:
                    chosen, rank_best = algo, rank
            if chosen is None:
                break
            self._trigger(chosen, open_)
        self.last[symbol] = close

    def _trigger(self, algo: AlgoOrder, open_: Decimal) -> None:
        algo.status = "TRIGGERING"
        algo.trigger_ms = algo.update_ms = self.wall_ms()
        self._emit_algo(algo)
        fault = self.trigger_faults.pop(0) if self.trigger_faults else ""
        if fault == "stop_stuck":
            algo.stuck = self.stuck_candles  # stays TRIGGERING, then goes to the matching engine
            algo.reason = "stuck"
            return
        self._execute_triggered(algo, open_, open_, fault)

    def _execute_triggered(self, algo: AlgoOrder, open_: Decimal, reference: Decimal, fault: str = "") -> None:
        """The triggered conditional order enters the matching engine as an order of its own."""
        sell = algo.side == "SELL"
        if algo.reduce_only and self._reduces(algo.symbol, algo.side) == 0:
            algo.status = "EXPIRED"  # nothing to reduce: expires at trigger
            algo.reason = "Reduce Only reject"
            algo.update_ms = self.wall_ms()
            self._emit_algo(algo)
            return
        limit = algo.order_type == "TAKE_PROFIT"
        now = self.wall_ms()
        actual = VOrder(self._id(), algo.client_id, algo.symbol, algo.side, "LIMIT" if limit else "MARKET", algo.qty,
                        algo.price if limit else ZERO, algo.reduce_only, now, now, tif=algo.tif,
                        orig_type=algo.order_type, stop_price=algo.trigger, working_type=algo.working_type,
                        price_protect=algo.price_protect, algo_id=algo.algo_id)
        self.orders[actual.order_id] = actual
        algo.actual_order_id = actual.order_id
        algo.status = "TRIGGERED"
        algo.update_ms = now
        self._emit_algo(algo)
        self._emit_order(actual, "NEW")
        if algo.order_type == "STOP_MARKET":
            gapped = open_ < algo.trigger if sell else open_ > algo.trigger
        else:
            gapped = open_ > algo.trigger if sell else open_ < algo.trigger
        base = open_ if gapped else algo.trigger
        if fault == "stop_expire":
            self._expire(actual)
        elif fault == "stop_partial_expire":
            rules = self.rules[algo.symbol]
            half = (algo.qty / 2 // rules.step) * rules.step
            if half > 0:
                self._fill_market(actual, base, amount=half, expire_rest=True)
            else:
                self._expire(actual)
        elif limit and not gapped:
            self._fill(actual, actual.qty, actual.price, maker=True)
        else:
            self._fill_market(actual, base)

    # --------------------------------------------------------------- fills
    def _fill_market(self, order: VOrder, reference: Decimal, *, partial: bool = False,
                     amount: Decimal | None = None, expire_rest: bool = False) -> None:
        buy = order.side == "BUY"
        slipped = reference * (1 + self.slippage_pct / 100) if buy else reference * (1 - self.slippage_pct / 100)
        price = self._tick(order.symbol, slipped)
        wanted = order.qty - order.executed if amount is None else amount
        if partial:
            rules = self.rules[order.symbol]
            half = (wanted / 2 // rules.step) * rules.step
            if 0 < half < wanted:
                order.rest_on_next_candle = wanted - half
                wanted = half
        self._fill(order, wanted, price, maker=False)
        if expire_rest and order.is_open:
            self._expire(order)

    def _expire(self, order: VOrder) -> None:
        order.status = "EXPIRED"
        order.rest_on_next_candle = ZERO
        order.update_ms = self.wall_ms()
        self._emit_order(order, "EXPIRED")
        self._finish_algo_of(order)

    def _fill(self, order: VOrder, qty: Decimal, price: Decimal, *, maker: bool) -> None:
        """Execute ``qty`` of ``order`` at ``price``: position, realised PnL and fee (in the
        symbol's margin asset); a reduce-only order never flips (the rest expires)."""
        symbol = order.symbol
        rules = self.rules[symbol]
        if order.reduce_only:
            room = self._reduces(symbol, order.side)
            if room == 0:
                self._expire(order)
                return
            qty = min(qty, room)
        now = self.wall_ms()
        signed = qty if order.side == "BUY" else -qty
        pos = self.positions.get(symbol)
        pnl = ZERO
        if pos is None or pos.amount == 0:
            self.positions[symbol] = Position(signed, price, now)
        elif (pos.amount > 0) == (signed > 0):
            total = pos.amount + signed
            pos.entry = (pos.entry * abs(pos.amount) + price * qty) / abs(total)
            pos.amount = total
            pos.update_ms = now
        else:
            closing = min(qty, abs(pos.amount))
            direction = 1 if pos.amount > 0 else -1
            pnl = direction * (price - pos.entry) * closing
            pos.amount += signed
            pos.update_ms = now
            if pos.amount == 0:
                del self.positions[symbol]
            elif (pos.amount > 0) != (direction > 0):  # flipped (not reduce-only): the rest opens at price
                pos.entry = price
        maker_rate, taker_rate = self.commission[symbol]
        fee = qty * price * (maker_rate if maker else taker_rate)
        asset = rules.settle
        self.assets[asset] = self.assets.get(asset, ZERO) + pnl - fee
        self.asset_updated_ms[asset] = now
        order.executed += qty
        order.cum_quote += qty * price
        order.update_ms = now
        order.status = "FILLED" if order.executed >= order.qty else "PARTIALLY_FILLED"
        trade = Trade(self._next_trade, order.order_id, symbol, order.side, qty, price, fee, asset, pnl, maker, now)
        self._next_trade += 1
        self.trades.append(trade)
        self._emit_order(order, "TRADE", trade)
        self._emit_account(symbol)
        if order.reduce_only and order.is_open and order.rest_on_next_candle == 0 and order.type == "MARKET":
            self._expire(order)  # a reduce-only market order larger than the position: the rest expires
        self._finish_algo_of(order)
        if symbol not in self.positions:
            self._expire_reduce_only_limits(symbol)

    def _expire_reduce_only_limits(self, symbol: str) -> None:
        """One-way mode: reduce-only orders resting in the book expire once the position is gone."""
        for order in self.open_orders(symbol):
            if order.reduce_only and order.type == "LIMIT":
                self._expire(order)

    def _finish_algo_of(self, order: VOrder) -> None:
        if order.algo_id is None or order.is_open:
            return
        algo = self.algos[order.algo_id]
        if algo.status == "TRIGGERED":
            algo.status = "FINISHED"
            algo.update_ms = self.wall_ms()
            self._emit_algo(algo)

    # --------------------------------------------------------------- events
    def _emit_order(self, order: VOrder, execution: str, trade: Trade | None = None) -> None:
        now = self.wall_ms()
        rules = self.rules[order.symbol]
        self.on_event({"e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": {
            "s": rules.market_id, "c": order.client_id, "S": order.side, "o": order.type, "f": order.tif,
            "q": str(order.qty), "p": str(order.price), "ap": str(order.avg_price), "sp": str(order.stop_price),
            "x": execution, "X": order.status, "i": order.order_id,
            "l": str(trade.qty if trade else ZERO), "z": str(order.executed), "L": str(trade.price if trade else ZERO),
            "n": str(trade.fee if trade else ZERO), "N": rules.settle, "T": now, "t": trade.id if trade else 0,
            "b": "0", "a": "0", "m": bool(trade and trade.maker), "R": order.reduce_only, "wt": order.working_type,
            "ot": order.orig_type or order.type, "ps": "BOTH", "cp": False,
            "rp": str(trade.realized_pnl if trade else ZERO), "pP": order.price_protect, "si": 0, "ss": 0,
            "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0}})

    def _emit_algo(self, algo: AlgoOrder) -> None:
        now = self.wall_ms()
        actual = self.orders.get(algo.actual_order_id) if algo.actual_order_id else None
        self.on_event({"e": "ALGO_UPDATE", "T": now, "E": now, "o": {
            "caid": algo.client_id, "aid": algo.algo_id, "at": "CONDITIONAL", "o": algo.order_type,
            "s": self.rules[algo.symbol].market_id, "S": algo.side, "ps": "BOTH", "f": algo.tif, "q": str(algo.qty),
            "X": algo.status, "ai": str(algo.actual_order_id or ""),
            "ap": str(actual.avg_price if actual else ZERO), "aq": str(actual.executed if actual else ZERO),
            "act": actual.type if actual else "0", "tp": str(algo.trigger), "p": str(algo.price),
            "V": "EXPIRE_MAKER", "wt": algo.working_type, "pm": "NONE", "cp": False, "pP": algo.price_protect,
            "R": algo.reduce_only, "tt": algo.trigger_ms, "gtd": 0, "rm": algo.reason}})

    def _emit_account(self, symbol: str) -> None:
        now = self.wall_ms()
        rules = self.rules[symbol]
        pos = self.positions.get(symbol)
        amount, entry = (pos.amount, pos.entry) if pos else (ZERO, ZERO)
        wallet = self.assets.get(rules.settle, ZERO)
        self.on_event({"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": {
            "m": "ORDER", "B": [{"a": rules.settle, "wb": str(wallet), "cw": str(wallet), "bc": "0"}],
            "P": [{"s": rules.market_id, "pa": str(amount), "ep": str(entry), "bep": str(entry), "cr": "0",
                   "up": str(self.unrealised(symbol)), "mt": "cross", "iw": "0", "ps": "BOTH"}]}})

    def unrealised(self, symbol: str) -> Decimal:
        """Unrealised PnL of ``symbol``'s position at the mark price (quote)."""
        pos = self.positions.get(symbol)
        if pos is None:
            return ZERO
        return (self.mark(symbol) - pos.entry) * pos.amount
