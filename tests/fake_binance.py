"""A loopback fake Binance USDⓈ-M REST API for tests (aiohttp), spoken to by the real ccxt
``binanceusdm`` client whose ``urls['api']`` entries point at :attr:`FakeBinance.base_url`.

What it serves (the part ccxt calls for this bot): ``/fapi/v1/exchangeInfo`` built from the real
ccxt markets dump in ``data/markets`` (each market's ``info`` is Binance's own exchangeInfo
entry), ``time``, ``klines`` from the bundled real candles, ``markPriceKlines`` and ``fundingRate``
from the real mark-price candles and funding events in ``data_dir`` (SPEC D-1; paginated and
limited as Binance documents them: klines ``limit`` ≤ 1500 with its weight by limit,
``fundingRate`` ``limit`` ≤ 1000, ``startTime``/``endTime`` windows, ascending rows),
``ticker/24hr``, ``ticker/price``, ``ticker/bookTicker``, ``premiumIndex`` (one symbol or all);
signed: ``order`` POST/GET/DELETE, ``algoOrder``
POST/GET/DELETE (Binance moved conditional STOP_MARKET / TAKE_PROFIT_MARKET orders to the algo
service, and ccxt 4.5 routes them there), ``openOrders``, ``openAlgoOrders``, ``allOpenOrders``,
``algoOpenOrders`` DELETE, ``userTrades``, ``positionRisk`` (v2, v3), ``account`` / ``balance``
(v2, v3), ``leverage``, ``marginType``, ``positionSide/dual``, ``apiRestrictions`` (sapi),
``listenKey``.

Matching is the simulated exchange's (``trading.adapters.simulated.SimulatedExchange``): market orders fill
at the next candle's open, stops before take-profits. The test drives time with
:meth:`FakeBinance.advance` (one real candle per call). A client order id is unique per account
as on Binance: a second order with an id already used is refused with -4116
("ClientOrderId is duplicated"); every accepted id is recorded in :attr:`accepted_ids`.

Request weight (``weight_limit``, off by default): Binance's IP limit of 2400 weight per minute
(REQUEST_WEIGHT in exchangeInfo), every reply carrying ``X-MBX-USED-WEIGHT-1M``; past the limit
a request is refused with HTTP 429 and a ``Retry-After`` of the seconds left in the window
(``fundingRate`` also has its own 500 requests per 5 minutes). ``now_ms`` serves history: every
candle closed by then, instead of the candle index that :meth:`FakeBinance.advance` moves.

Fault injection (:meth:`FakeBinance.inject`): ``5xx`` (HTTP 503), ``429`` and ``418`` with a
``Retry-After`` header, ``-1021`` (timestamp outside recvWindow), ``timeout_after_accept`` (the
order is accepted, then the reply stalls past the client's timeout) and ``partial`` (a market
order fills in two halves over two candles). Market streams over websocket (kline events, with
drop / refuse / silence faults): :attr:`FakeBinance.ws`, see ``tests.fake_binance_ws``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl

from aiohttp import web

from trading.domain.errors import OrderRejected
from trading.adapters.marketdata import CandleSeries, load_candles, load_ccxt_markets, market_from_ccxt
from trading.domain.models import Order, OrderLeg, OrderSide, OrderStatus, OrderType
from trading.ports import ReplayClock
from trading.adapters.simulated import SimulatedExchange

API_KEY = "fake-test-key"
API_SECRET = "fake-test-secret"

FAULT_KINDS = ("5xx", "429", "418", "-1021", "timeout_after_accept", "partial")
_STATUS = {
    OrderStatus.OPEN: "NEW",
    OrderStatus.CLOSED: "FILLED",
    OrderStatus.CANCELED: "CANCELED",
    OrderStatus.REJECTED: "EXPIRED",
}
_ALGO_STATUS = {
    OrderStatus.OPEN: "NEW",
    OrderStatus.CLOSED: "FINISHED",
    OrderStatus.CANCELED: "CANCELED",
    OrderStatus.REJECTED: "EXPIRED",
}


class BinanceReject(Exception):
    """A Binance error reply ``{"code": code, "msg": msg}`` with an HTTP status."""

    def __init__(self, code: int, msg: str, http: int = 400, headers: dict | None = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.http, self.headers = code, msg, http, headers or {}


@dataclass(slots=True)
class Fault:
    """One armed fault: ``kind`` (see FAULT_KINDS) hits the next ``count`` requests whose path
    contains ``path`` (and whose method is ``method`` when given)."""

    kind: str
    path: str = ""
    method: str | None = None
    count: int = 1
    retry_after_s: int = 1


@dataclass(slots=True)
class _Record:
    """Exchange-side bookkeeping of one order: its numeric id and whether it is an algo order."""

    order_id: int
    algo: bool
    time_ms: int
    working_type: str = "CONTRACT_PRICE"
    price_protect: bool = False
    limit_price: str = "0"  # TAKE_PROFIT: the limit it becomes once triggered
    actual_order_id: int | None = None  # an algo order that triggered: the market order it became


@dataclass(slots=True)
class Trade:
    """One fill as /fapi/v1/userTrades reports it."""

    id: int
    order_id: int
    client_order_id: str
    symbol: str  # ccxt unified
    side: OrderSide
    qty: Decimal
    price: Decimal
    fee: Decimal
    realized_pnl: Decimal
    time_ms: int


@dataclass
class FakeBinance:
    """The fake exchange: one account, the given symbols, real candles of ``timeframe``.

    Args:
        data_dir: the bundled ``data/`` folder; symbols: ccxt unified symbols served with candles
        (all 454 markets are listed in exchangeInfo); start_index: candle index of the first
        :meth:`advance`; balance: USDT wallet balance; slippage_pct: as the paper engine.
    """

    data_dir: Path
    symbols: tuple[str, ...] = ("XRP/USDT:USDT",)
    timeframe: str = "1m"
    start_index: int = 0
    balance: Decimal = Decimal(10_000)
    slippage_pct: Decimal = Decimal("0.02")
    stall_s: float = 1.0
    dual_side: bool = False
    margin_type: str = "cross"
    can_trade: bool = True
    now_ms: int | None = None
    weight_limit: int | None = None
    weight_window_s: float = 60.0
    funding_limit: int = 500
    funding_window_s: float = 300.0
    # positionRisk "liquidationPrice" per symbol (Binance's own figure; "0" = none reported) and
    # premiumIndex "lastFundingRate" per symbol: the values a test makes the exchange report.
    liquidation_prices: dict = field(default_factory=dict)
    funding_rates: dict = field(default_factory=dict)

    raw_markets: dict = field(init=False)
    base_url: str = field(init=False, default="")
    accepted_ids: list[str] = field(init=False, default_factory=list)
    faults_injected: Counter = field(init=False, default_factory=Counter)
    requests: Counter = field(init=False, default_factory=Counter)
    trades: list[Trade] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.raw_markets = _cached("markets", self.data_dir, lambda: load_ccxt_markets(self.data_dir))
        self._by_id = {m["id"]: m for m in self.raw_markets.values() if m.get("linear") and m.get("swap")}
        markets = {s: market_from_ccxt(self.raw_markets[s]) for s in self.symbols}
        self.clock = ReplayClock()
        self.sim = SimulatedExchange(markets, self.balance, self.slippage_pct, self.clock)
        self.series: dict[str, CandleSeries] = {
            s: _cached(f"{s}|{self.timeframe}", self.data_dir, lambda s=s: load_candles(self.data_dir, s, self.timeframe))
            for s in self.symbols
        }
        self.index = self.start_index - 1  # index of the current (last closed) candle
        self._records: dict[str, _Record] = {}
        self._actual: dict[int, str] = {}  # actualOrderId → client id of the algo order
        self._ids = itertools.count(1_000_001)
        self._trade_ids = itertools.count(1)
        self._faults: list[Fault] = []
        self._filled_before: dict[str, Decimal] = {}  # partial fills: contracts filled by the first half
        self._avg_before: dict[str, Decimal] = {}
        self._partial: dict[str, Decimal] = {}  # client id → contracts still to fill (partial fault)
        self._leverage: dict[str, int] = {}
        self._margin_type: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self.stalled = 0
        self.duplicate_rejections = 0  # orders sent again under an id already used (-4116)
        self.duplicate_ids: list[str] = []
        from tests.fake_binance_ws import FakeBinanceStreams

        self.ws = FakeBinanceStreams(self)  # market streams (SPEC S-2 websocket feed)
        self.rate_limited = 0  # requests refused with 429 for exceeding the weight limit
        self._weight_used = 0
        self._weight_window_start = 0.0
        self._funding_used = 0
        self._funding_window_start = 0.0

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> str:
        """Serve on 127.0.0.1 (a free port) and return the base URL ``http://127.0.0.1:PORT``."""
        app = web.Application()
        self.ws.attach(app)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        if self.index < self.start_index:
            self.advance()
        return self.base_url

    def start_auto(self, interval_s: float) -> None:
        """Advance one candle every ``interval_s`` seconds of wall time (for CLI tests that run
        the bot's own loop); :meth:`stop` ends it."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                self.advance()

        self._auto = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        """Stop serving (stalled replies are released)."""
        if getattr(self, "_auto", None) is not None:
            self._auto.cancel()
        self._stop.set()
        await self.ws.drop()
        if self._runner is not None:
            await self._runner.cleanup()

    def ccxt_urls(self) -> dict[str, str]:
        """The ``urls['api']`` overrides that send ccxt's binanceusdm here."""
        b = self.base_url
        return {
            "fapiPublic": f"{b}/fapi/v1", "fapiPublicV2": f"{b}/fapi/v2", "fapiPublicV3": f"{b}/fapi/v3",
            "fapiPrivate": f"{b}/fapi/v1", "fapiPrivateV2": f"{b}/fapi/v2", "fapiPrivateV3": f"{b}/fapi/v3",
            "fapiData": f"{b}/futures/data", "public": f"{b}/api/v3", "private": f"{b}/api/v3",
            "sapi": f"{b}/sapi/v1", "sapiV2": f"{b}/sapi/v2", "sapiV3": f"{b}/sapi/v3",
        }

    # ---------------------------------------------------------------- driving
    def inject(self, kind: str, path: str = "", method: str | None = None, count: int = 1, retry_after_s: int = 1) -> None:
        """Arm a fault (see the module docstring) for the next matching request(s)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        self._faults.append(Fault(kind, path, method, count, retry_after_s))

    def clear_faults(self) -> None:
        """Disarm every pending fault."""
        self._faults.clear()

    def candle(self, symbol: str) -> tuple[int, float, float, float, float, float]:
        """The current candle of ``symbol``: (open time ms, open, high, low, close, volume)."""
        s = self.series[symbol]
        i = self.index
        return s.timestamp[i], s.open[i], s.high[i], s.low[i], s.close[i], s.volume[i]

    def advance(self) -> list[Trade]:
        """Move every symbol to its next real candle: pending market orders fill at its open
        (a partial-fill fault splits one in two halves over two candles), then stops and
        take-profits trigger on its high/low (stop first). Returns the new trades."""
        self.index += 1
        new: list[Trade] = []
        for symbol in self.symbols:
            ts, o, h, low, c, _ = self.candle(symbol)
            self.clock.current_ms = ts
            held = self._hold_partials(symbol)
            for fill in self.sim.fill_pending(symbol, ts, o):
                new.append(self._book(fill))
            self._release_partials(symbol, held)
            while (fill := self.sim.next_trigger(symbol, ts, o, h, low)) is not None:
                new.append(self._book(fill))
            self.clock.current_ms = ts + self._tf_ms() - 1
            self.sim._last_price[symbol] = Decimal(repr(c))
        self.ws.publish()
        return new

    def _tf_ms(self) -> int:
        from trading.domain.models import TIMEFRAME_MS

        return TIMEFRAME_MS[self.timeframe]

    def _hold_partials(self, symbol: str) -> list[Order]:
        """Partial fills: an order marked partial fills half now, the rest on the next candle."""
        held = []
        for cid, remaining in list(self._partial.items()):
            order = self.sim._orders[cid]
            if order.symbol != symbol or order.status is not OrderStatus.OPEN:
                continue
            if remaining == 0:  # second candle: let the rest fill normally
                del self._partial[cid]
                continue
            market = self.sim._markets[symbol]
            half = (order.amount / 2 // market.step_size) * market.step_size
            if half <= 0:
                del self._partial[cid]
                continue
            # fill `half` now through a twin order, keep the original open for the rest
            twin = replace(order, client_order_id=cid + "#p", amount=half)
            self.sim._orders[twin.client_order_id] = twin
            self.sim._pending[symbol] = [twin.client_order_id if x == cid else x for x in self.sim._pending.get(symbol, [])]
            self._partial[cid] = order.amount - half
            held.append(order)
        return held

    def _release_partials(self, symbol: str, held: list[Order]) -> None:
        for order in held:
            cid = order.client_order_id
            twin = self.sim._orders.pop(cid + "#p")
            rest = self._partial[cid]
            self.sim._orders[cid] = replace(order, amount=rest, filled=Decimal(0), status=OrderStatus.OPEN)
            self._filled_before[cid] = twin.filled
            self._avg_before[cid] = twin.average or Decimal(0)
            self._partial[cid] = Decimal(0)
            self.sim._pending.setdefault(symbol, []).append(cid)
            self.sim.active_symbols.add(symbol)

    def _book(self, fill) -> Trade:
        cid = fill.client_order_id.removesuffix("#p")
        record = self._records[cid]
        order_id = record.order_id
        if record.algo:
            # Binance: a triggered conditional order becomes a market order of its own; the algo
            # order only tells its id (actualOrderId).
            record.actual_order_id = order_id = next(self._ids)
            self._actual[order_id] = cid
        trade = Trade(next(self._trade_ids), order_id, cid, fill.symbol, fill.side, fill.amount,
                      fill.price, fill.fee, Decimal(0), fill.timestamp)
        self.trades.append(trade)
        order = self.sim._orders.get(fill.client_order_id)
        if order is not None:
            self.ws.user_fill(order, fill, order_id, trade.id)
        return trade

    def close_by_hand(self, symbol: str) -> None:
        """The trader closes ``symbol``'s position in the exchange's app (not through the bot):
        a reduce-only market order fills at the last price at once."""
        contracts, _entry = self.sim.position(symbol)
        side = OrderSide.SELL if contracts > 0 else OrderSide.BUY
        order = Order(client_order_id=f"app-close-{next(self._ids)}", bot="app", symbol=symbol, side=side,
                      type=OrderType.MARKET, leg=OrderLeg.CLOSE, amount=abs(contracts), reduce_only=True,
                      created_ms=self.clock.current_ms)
        _run_sync(self.sim.create_order(order))
        self._records[order.client_order_id] = _Record(next(self._ids), False, self.clock.current_ms)
        for fill in self.sim.fill_pending(symbol, self.clock.current_ms, float(self._last(symbol))):
            self._book(fill)

    # ------------------------------------------------------------- inspection
    def position(self, symbol: str) -> tuple[Decimal, Decimal] | None:
        """The exchange's net position: (signed contracts, entry price) or None."""
        return self.sim.position(symbol)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders (plain and algo), as the simulator holds them."""
        return [o for o in self.sim._orders.values() if o.status is OrderStatus.OPEN
                and not o.client_order_id.endswith("#p") and (symbol is None or o.symbol == symbol)]

    def plant_order(self, symbol: str, client_order_id: str, contracts: Decimal) -> None:
        """An open conditional order the client does not know about (a leftover of an earlier
        session whose database was lost): a TAKE_PROFIT_MARKET buy at half the last price."""
        market = self.sim._markets[symbol]
        trigger = (self._last(symbol) / 2 // market.tick_size) * market.tick_size
        order = Order(client_order_id=client_order_id, bot="exchange", symbol=symbol, side=OrderSide.BUY,
                      type=OrderType.TAKE_PROFIT_MARKET, leg=OrderLeg.TP1, amount=contracts, reduce_only=False,
                      created_ms=self.clock.current_ms, trigger_price=trigger)
        _run_sync(self.sim.create_order(order))
        self._records[client_order_id] = _Record(next(self._ids), True, self.clock.current_ms)
        self.accepted_ids.append(client_order_id)

    def force_fill(self, symbol: str) -> list[Trade]:
        """Fill pending market orders of ``symbol`` at the current close (a fill the client has
        not seen: reconciliation must book it)."""
        ts, _, _, _, c, _ = self.candle(symbol)
        return [self._book(f) for f in self.sim.fill_pending(symbol, ts, c)]

    # --------------------------------------------------------------- serving
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        method = request.method
        self.requests[f"{method} {path}"] += 1
        try:
            params = dict(parse_qsl(request.query_string, keep_blank_values=True))
            body = await request.text()
            if body:
                params.update(parse_qsl(body, keep_blank_values=True))
            signed = "signature" in params
            if signed:
                self._verify(request, request.query_string, body)
            fault = self._take_fault(path, method)
            if fault is not None and fault.kind != "timeout_after_accept" and fault.kind != "partial":
                self._raise_fault(fault)
            handler = self._route(method, path)
            if handler is None:
                raise BinanceReject(-1000, f"fake: no route for {method} {path}", http=404)
            headers = self._charge_weight(method, path, params)
            if fault is not None and fault.kind == "partial":
                params["_partial"] = "1"
            result = handler(params)
            if fault is not None and fault.kind == "timeout_after_accept":
                self.stalled += 1
                try:
                    await asyncio.wait_for(self._stop.wait(), self.stall_s)
                except TimeoutError:
                    pass
            return web.Response(text=json.dumps(result), content_type="application/json", headers=headers)
        except BinanceReject as exc:
            return web.Response(
                status=exc.http, text=json.dumps({"code": exc.code, "msg": exc.msg}),
                content_type="application/json", headers=exc.headers,
            )

    def _verify(self, request: web.Request, query: str, body: str) -> None:
        if request.headers.get("X-MBX-APIKEY") != API_KEY:
            raise BinanceReject(-2015, "Invalid API-key, IP, or permissions for action.", http=401)
        total = query + body
        payload, _, signature = total.rpartition("&signature=")
        expected = hmac.new(API_SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise BinanceReject(-1022, "Signature for this request is not valid.", http=400)

    _KLINE_PATHS = ("klines", "markPriceKlines", "premiumIndexKlines", "indexPriceKlines")

    def _request_weight(self, method: str, path: str, params: dict) -> int:
        """Binance's documented weight of a request (USDⓈ-M market data endpoints; 1 else)."""
        tail = path.rsplit("/", 1)[-1]
        if tail in self._KLINE_PATHS:
            limit = int(params.get("limit", 500))
            return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
        if tail == "exchangeInfo":
            return 1
        if tail == "premiumIndex":
            return 1 if params.get("symbol") else 10
        return 1

    def _charge_weight(self, method: str, path: str, params: dict) -> dict[str, str]:
        """Count the request against the IP weight budget (when ``weight_limit`` is set) and
        refuse it with 429 + Retry-After once the window's budget is spent."""
        import math
        import time

        if self.weight_limit is None:
            return {}
        now = time.monotonic()
        if now - self._weight_window_start >= self.weight_window_s:
            self._weight_window_start, self._weight_used = now, 0
        weight = self._request_weight(method, path, params)
        retry = str(max(1, math.ceil(self.weight_window_s - (now - self._weight_window_start))))
        if self._weight_used + weight > self.weight_limit:
            self.rate_limited += 1
            raise BinanceReject(-1003, "Too many requests; current limit of IP is "
                                f"{self.weight_limit} requests per minute.", http=429,
                                headers={"Retry-After": retry, "X-MBX-USED-WEIGHT-1M": str(self._weight_used)})
        if path.endswith("/fundingRate"):
            if now - self._funding_window_start >= self.funding_window_s:
                self._funding_window_start, self._funding_used = now, 0
            if self._funding_used >= self.funding_limit:
                self.rate_limited += 1
                left = self.funding_window_s - (now - self._funding_window_start)
                raise BinanceReject(-1003, "Too many requests.", http=429,
                                    headers={"Retry-After": str(max(1, math.ceil(left)))})
            self._funding_used += 1
        self._weight_used += weight
        return {"X-MBX-USED-WEIGHT-1M": str(self._weight_used)}

    def _take_fault(self, path: str, method: str) -> Fault | None:
        for fault in self._faults:
            if fault.path in path and (fault.method is None or fault.method == method):
                if fault.kind in ("timeout_after_accept", "partial") and not (
                    method == "POST" and path.endswith(("/order", "/algoOrder"))
                ):
                    continue
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                self.faults_injected[fault.kind] += 1
                return fault
        return None

    @staticmethod
    def _raise_fault(fault: Fault) -> None:
        if fault.kind == "5xx":
            raise BinanceReject(-1001, "Internal error; unable to process your request. Please try again.", http=503)
        if fault.kind in ("429", "418"):
            raise BinanceReject(
                -1003, "Too many requests; please use the websocket for live updates.",
                http=int(fault.kind), headers={"Retry-After": str(fault.retry_after_s)},
            )
        if fault.kind == "-1021":
            raise BinanceReject(-1021, "Timestamp for this request is outside of the recvWindow.", http=400)

    def _route(self, method: str, path: str):
        tail = path.split("/", 3)[-1] if path.startswith(("/fapi/", "/sapi/")) else path
        return {
            ("GET", "exchangeInfo"): self._exchange_info,
            ("GET", "time"): lambda p: {"serverTime": self._server_time()},
            ("GET", "ping"): lambda p: {},
            ("GET", "klines"): self._klines,
            ("GET", "markPriceKlines"): self._mark_klines,
            ("GET", "fundingRate"): self._funding_rate,
            ("GET", "ticker/24hr"): self._ticker_24hr,
            ("GET", "ticker/price"): self._ticker_price,
            ("GET", "ticker/bookTicker"): self._book_ticker,
            ("GET", "premiumIndex"): self._premium_index,
            ("POST", "order"): self._post_order,
            ("GET", "order"): self._get_order,
            ("DELETE", "order"): lambda p: self._delete_order(p, algo=False),
            ("POST", "algoOrder"): self._post_order,
            ("GET", "algoOrder"): self._get_algo_order,
            ("DELETE", "algoOrder"): lambda p: self._delete_order(p, algo=True),
            ("GET", "openOrders"): lambda p: self._open(p, algo=False),
            ("GET", "openAlgoOrders"): lambda p: self._open(p, algo=True),
            ("DELETE", "allOpenOrders"): lambda p: self._cancel_all(p, algo=False),
            ("DELETE", "algoOpenOrders"): lambda p: self._cancel_all(p, algo=True),
            ("GET", "userTrades"): self._user_trades,
            ("GET", "positionRisk"): self._position_risk,
            ("GET", "account"): self._account,
            ("GET", "balance"): self._balance,
            ("POST", "leverage"): self._set_leverage,
            ("GET", "leverageBracket"): self._leverage_bracket,
            ("POST", "marginType"): self._set_margin_type,
            ("GET", "positionSide/dual"): lambda p: {"dualSidePosition": self.dual_side},
            ("POST", "positionSide/dual"): self._set_dual,
            ("GET", "account/apiRestrictions"): self._api_restrictions,
            ("POST", "listenKey"): lambda p: {"listenKey": "fake-listen-key"},
            ("PUT", "listenKey"): lambda p: {},
            ("DELETE", "listenKey"): lambda p: {},
        }.get((method, tail))

    @staticmethod
    def _server_time() -> int:
        import time

        return int(time.time() * 1000)

    # --------------------------------------------------------------- public
    def _exchange_info(self, p: dict) -> dict:
        return {
            "timezone": "UTC", "serverTime": self._server_time(), "futuresType": "U_MARGINED",
            "rateLimits": [], "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": [m["info"] for m in self._by_id.values()],
        }

    def _unified(self, market_id: str | None) -> str:
        market = self._by_id.get(market_id or "")
        if market is None:
            raise BinanceReject(-1121, "Invalid symbol.")
        return market["symbol"]

    def _served(self, market_id: str | None) -> str:
        symbol = self._unified(market_id)
        if symbol not in self.series:
            raise BinanceReject(-1121, f"Invalid symbol (the fake serves {', '.join(self.symbols)}).")
        return symbol

    _INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")

    @staticmethod
    def _int_param(p: dict, name: str, default: int | None = None) -> int | None:
        if name not in p:
            return default
        try:
            return int(p[name])
        except ValueError:
            raise BinanceReject(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.") from None

    def _window(self, timestamps, p: dict, served_end: int, default_limit: int, max_limit: int) -> range:
        """Binance's startTime / endTime / limit semantics over ascending ``timestamps`` of which
        the first ``served_end`` exist by now: rows with startTime ≤ t ≤ endTime, the first
        ``limit`` of them from startTime, or the last ``limit`` up to endTime / now."""
        from bisect import bisect_left, bisect_right

        limit = self._int_param(p, "limit", default_limit)
        if not 1 <= limit <= max_limit:
            raise BinanceReject(-1130, "Data sent for parameter 'limit' is not valid.")
        start = self._int_param(p, "startTime")
        end_time = self._int_param(p, "endTime")
        if start is not None and end_time is not None and start > end_time:
            raise BinanceReject(-1023, "Start time is greater than end time.")
        hi = served_end if end_time is None else min(served_end, bisect_right(timestamps, end_time, 0, served_end))
        if start is not None:
            lo = bisect_left(timestamps, start, 0, hi)
            return range(lo, min(hi, lo + limit))
        return range(max(0, hi - limit), hi)

    def _served_end(self, symbol: str, timestamps, tf_ms: int) -> int:
        """How many of ``timestamps`` are closed candles by now (``now_ms``, else the candle
        index that :meth:`advance` moves)."""
        from bisect import bisect_right

        if self.now_ms is not None:
            return bisect_right(timestamps, self.now_ms - tf_ms)
        return self.index + 1

    def _klines(self, p: dict) -> list:
        symbol = self._served(p.get("symbol"))
        interval = p.get("interval")
        if interval not in self._INTERVALS:
            raise BinanceReject(-1120, "Invalid interval.")
        if interval != self.timeframe:
            raise BinanceReject(-1120, f"Invalid interval (the fake serves {self.timeframe} candles).")
        s = self.series[symbol]
        tf = self._tf_ms()
        rows = self._window(s.timestamp, p, self._served_end(symbol, s.timestamp, tf), 500, 1500)
        return [[s.timestamp[i], repr(s.open[i]), repr(s.high[i]), repr(s.low[i]), repr(s.close[i]),
                 repr(s.volume[i]), s.timestamp[i] + tf - 1, "0", 0, "0", "0", "0"] for i in rows]

    def _history_file(self, kind: str, symbol: str) -> list[list[str]]:
        """Rows of the real ``mark`` (8h mark-price candles) or ``funding`` file of ``symbol``
        in ``data_dir`` (empty when absent), read once."""
        import gzip

        from trading.adapters.marketdata import file_stem

        name = (f"mark/binance_futures_{file_stem(symbol)}-8h-mark.csv.gz" if kind == "mark"
                else f"funding/binance_futures_{file_stem(symbol)}-funding_rate.csv.gz")
        path = self.data_dir / name

        def load() -> list[list[str]]:
            if not path.exists():
                return []
            with gzip.open(path, "rt") as handle:
                handle.readline()
                return [line.strip().split(",") for line in handle if line.strip()]

        return _cached(f"{kind}|{symbol}", self.data_dir, load)

    def _now_ms(self) -> int:
        """The exchange's present: ``now_ms``, else the close of the current candle."""
        if self.now_ms is not None:
            return self.now_ms
        first = self.symbols[0]
        return self.series[first].timestamp[self.index] + self._tf_ms()

    def _mark_klines(self, p: dict) -> list:
        symbol = self._served(p.get("symbol"))
        if p.get("interval") not in self._INTERVALS:
            raise BinanceReject(-1120, "Invalid interval.")
        if p["interval"] != "8h":
            raise BinanceReject(-1120, "Invalid interval (the fake has real 8h mark-price candles only).")
        rows = self._history_file("mark", symbol)
        stamps = [int(r[0]) for r in rows]
        tf = 8 * 3_600_000
        from bisect import bisect_right

        window = self._window(stamps, p, bisect_right(stamps, self._now_ms() - tf), 500, 1500)
        return [[stamps[i], rows[i][1], rows[i][2], rows[i][3], rows[i][4], "0", stamps[i] + tf - 1, "0", 0,
                 "0", "0", "0"] for i in window]

    def _funding_rate(self, p: dict) -> list:
        if not p.get("symbol"):
            raise BinanceReject(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        symbol = self._served(p["symbol"])
        rows = self._history_file("funding", symbol)
        stamps = [int(r[0]) for r in rows]
        marks = {int(r[0]): r[1] for r in self._history_file("mark", symbol)}
        from bisect import bisect_right

        if "startTime" not in p and "endTime" not in p:
            p = {**p, "limit": p.get("limit", "200")}
        window = self._window(stamps, p, bisect_right(stamps, self._now_ms()), 100, 1000)
        return [{"symbol": p["symbol"], "fundingTime": stamps[i], "fundingRate": rows[i][1],
                 "markPrice": marks.get(stamps[i] - stamps[i] % (8 * 3_600_000), "")} for i in window]

    def _last(self, symbol: str) -> Decimal:
        return Decimal(repr(self.candle(symbol)[4]))

    def _ticker_24hr(self, p: dict):
        ids = [p["symbol"]] if "symbol" in p else [self.raw_markets[s]["id"] for s in self.symbols]
        rows = []
        for market_id in ids:
            symbol = self._served(market_id)
            ts, o, h, low, c, v = self.candle(symbol)
            rows.append({"symbol": market_id, "lastPrice": repr(c), "openPrice": repr(o), "highPrice": repr(h),
                         "lowPrice": repr(low), "volume": repr(v), "quoteVolume": "0", "openTime": ts,
                         "closeTime": ts + self._tf_ms() - 1, "priceChange": "0", "priceChangePercent": "0",
                         "weightedAvgPrice": repr(c), "lastQty": "0", "count": 0})
        return rows[0] if "symbol" in p else rows

    def _ticker_price(self, p: dict):
        symbol = self._served(p.get("symbol"))
        return {"symbol": p["symbol"], "price": str(self._last(symbol)), "time": self.clock.current_ms}

    def _book_ticker(self, p: dict):
        ids = [p["symbol"]] if "symbol" in p else [self.raw_markets[s]["id"] for s in self.symbols]
        rows = []
        for market_id in ids:
            symbol = self._served(market_id)
            last = self._last(symbol)
            tick = self.sim._markets[symbol].tick_size
            rows.append({"symbol": market_id, "bidPrice": str(last), "bidQty": "100", "askPrice": str(last + tick),
                         "askQty": "100", "time": self.clock.current_ms})
        return rows[0] if "symbol" in p else rows

    def _premium_index(self, p: dict):
        ids = [p["symbol"]] if p.get("symbol") else [self.raw_markets[s]["id"] for s in self.symbols]
        rows = []
        for market_id in ids:
            symbol = self._served(market_id)
            last = str(self._last(symbol))
            eight_hours = 8 * 3_600_000  # Binance USDⓈ-M funds every 8 h (00:00, 08:00, 16:00 UTC)
            rows.append({"symbol": market_id, "markPrice": last, "indexPrice": last,
                         "lastFundingRate": self.funding_rates.get(symbol, "0.0001"),
                         "nextFundingTime": self.clock.current_ms - self.clock.current_ms % eight_hours + eight_hours,
                         "interestRate": "0.0001", "time": self.clock.current_ms})
        return rows[0] if p.get("symbol") else rows

    # --------------------------------------------------------------- orders
    def _post_order(self, p: dict) -> dict:
        symbol = self._served(p.get("symbol"))
        algo = "algoType" in p
        cid = p.get("clientAlgoId") if algo else p.get("newClientOrderId")
        if not cid:
            raise BinanceReject(-1102, "Mandatory parameter 'newClientOrderId' was not sent.")
        if cid in self._records:
            self.duplicate_rejections += 1
            self.duplicate_ids.append(cid)
            raise BinanceReject(-4116, "ClientOrderId is duplicated.")
        if not self.can_trade:
            raise BinanceReject(-2015, "Invalid API-key, IP, or permissions for action.", http=401)
        kind = p.get("type") or p.get("orderType")
        try:
            order_type = OrderType(kind)
        except ValueError:
            raise BinanceReject(-1116, "Invalid orderType.") from None
        if (order_type in (OrderType.MARKET, OrderType.LIMIT)) == algo:
            raise BinanceReject(-4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.")
        quantity = Decimal(p["quantity"])
        market = self.sim._markets[symbol]
        if quantity % market.step_size != 0:
            raise BinanceReject(-1111, "Precision is over the maximum defined for this asset.")
        trigger = Decimal(p["triggerPrice"]) if algo else None
        if trigger is not None and trigger % market.tick_size != 0:
            raise BinanceReject(-1111, "Precision is over the maximum defined for this asset.")
        limit_price = "0"
        if order_type is OrderType.TAKE_PROFIT:  # a limit once triggered: Binance needs its price
            if not p.get("price"):
                raise BinanceReject(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
            if Decimal(p["price"]) % market.tick_size != 0:
                raise BinanceReject(-1111, "Precision is over the maximum defined for this asset.")
            if Decimal(p["price"]) != trigger:  # the simulator fills it at its trigger (OptiFlow's style)
                raise BinanceReject(-1102, "this fake supports TAKE_PROFIT with price == triggerPrice only")
            limit_price = p["price"]
        reduce_only = p.get("reduceOnly", "false").lower() == "true"
        price = None
        if order_type is OrderType.LIMIT:
            if not p.get("price") or not p.get("timeInForce"):
                raise BinanceReject(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
            price = Decimal(p["price"])
            if price % market.tick_size != 0:
                raise BinanceReject(-1111, "Precision is over the maximum defined for this asset.")
        if not reduce_only and order_type in (OrderType.MARKET, OrderType.LIMIT):
            notional = quantity * market.contract_size * (price or self._last(symbol))
            if notional < market.min_notional:
                raise BinanceReject(-4164, f"Order's notional must be no smaller than {market.min_notional} (unless you choose reduce only).")
            lev = self._leverage.get(symbol, 20)
            if notional / lev > self.sim._balance:
                raise BinanceReject(-2019, "Margin is insufficient.")
        leg = OrderLeg.ENTRY if not reduce_only else (OrderLeg.STOP_LOSS if order_type is OrderType.STOP_MARKET else
                                                       OrderLeg.TP1 if algo else OrderLeg.CLOSE)
        order = Order(client_order_id=cid, bot="exchange", symbol=symbol, side=OrderSide(p["side"].lower()),
                      type=order_type, leg=leg, amount=quantity, reduce_only=reduce_only,
                      created_ms=self.clock.current_ms, trigger_price=trigger, price=price)
        try:
            accepted = _run_sync(self.sim.create_order(order))
        except OrderRejected as exc:
            text = str(exc)
            if "-2021" in text:
                raise BinanceReject(-2021, "Order would immediately trigger.") from None
            raise BinanceReject(-2022, "ReduceOnly Order is rejected.") from None
        record = _Record(next(self._ids), algo, self.clock.current_ms, p.get("workingType", "CONTRACT_PRICE"),
                         p.get("priceProtect", "false").lower() == "true", limit_price)
        self._records[cid] = record
        self.accepted_ids.append(cid)
        if p.get("_partial") and order_type is OrderType.MARKET:
            self._partial[cid] = quantity
        return self._algo_json(accepted) if algo else self._order_json(accepted)

    def _lookup(self, p: dict, algo: bool) -> Order:
        symbol = self._unified(p.get("symbol")) if p.get("symbol") else None
        cid = p.get("clientAlgoId") if algo else p.get("origClientOrderId")
        actual = False
        if cid is None:
            key = "algoId" if algo else "orderId"
            wanted = int(p.get(key, -1))
            cid = next((c for c, r in self._records.items() if r.order_id == wanted), None)
            if cid is None and not algo and wanted in self._actual:
                cid, actual = self._actual[wanted], True
        record = self._records.get(cid or "")
        order = self.sim._orders.get(cid or "")
        if record is None or order is None or (record.algo != algo and not actual) or (symbol and order.symbol != symbol):
            raise BinanceReject(-2013, "Order does not exist.")
        return order

    def _get_order(self, p: dict) -> dict:
        order = self._lookup(p, algo=False)
        record = self._records[order.client_order_id]
        if record.algo:  # the market order a triggered conditional order became
            kind = "LIMIT" if order.type is OrderType.TAKE_PROFIT else "MARKET"
            return {**self._order_json(order), "orderId": record.actual_order_id, "type": kind,
                    "clientOrderId": f"autoclose-{record.actual_order_id}", "origType": order.type.value,
                    "stopPrice": str(order.trigger_price)}
        return self._order_json(order)

    def _get_algo_order(self, p: dict) -> dict:
        return self._algo_json(self._lookup(p, algo=True))

    def _delete_order(self, p: dict, algo: bool) -> dict:
        try:
            order = self._lookup(p, algo=algo)
        except BinanceReject:
            raise BinanceReject(-2011, "Unknown order sent.") from None
        if order.status is not OrderStatus.OPEN:
            raise BinanceReject(-2011, "Unknown order sent.")
        cancelled = _run_sync(self.sim.cancel_order(order.client_order_id, order.symbol))
        self._partial.pop(order.client_order_id, None)
        if algo:
            record = self._records[order.client_order_id]
            return {"algoId": record.order_id, "clientAlgoId": order.client_order_id, "code": "200", "msg": "success"}
        return self._order_json(cancelled)

    def _open(self, p: dict, algo: bool) -> list:
        symbol = self._unified(p["symbol"]) if p.get("symbol") else None
        rows = []
        for order in self.open_orders(symbol):
            if self._records[order.client_order_id].algo == algo:
                rows.append(self._algo_json(order) if algo else self._order_json(order))
        return rows

    def _cancel_all(self, p: dict, algo: bool) -> dict:
        symbol = self._served(p.get("symbol"))
        for order in self.open_orders(symbol):
            if self._records[order.client_order_id].algo == algo:
                _run_sync(self.sim.cancel_order(order.client_order_id, symbol))
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _user_trades(self, p: dict) -> list:
        symbol = self._served(p.get("symbol"))
        since = int(p.get("startTime", 0))
        rows = []
        for t in self.trades:
            if t.symbol != symbol or t.time_ms < since:
                continue
            rows.append({"symbol": p["symbol"], "id": t.id, "orderId": t.order_id, "side": t.side.value.upper(),
                         "price": str(t.price), "qty": str(t.qty), "realizedPnl": str(t.realized_pnl),
                         "quoteQty": str(t.qty * t.price), "commission": str(t.fee), "commissionAsset": "USDT",
                         "time": t.time_ms, "positionSide": "BOTH", "buyer": t.side is OrderSide.BUY,
                         "maker": False})
        return rows[-int(p.get("limit", 500)):]

    def _order_json(self, order: Order) -> dict:
        record = self._records[order.client_order_id]
        filled = order.filled + self._filled_before.get(order.client_order_id, Decimal(0))
        status = _STATUS[order.status]
        if order.status is OrderStatus.OPEN and filled > 0:
            status = "PARTIALLY_FILLED"
        average = order.average or self._avg_before.get(order.client_order_id) or Decimal(0)
        market = self.raw_markets[order.symbol]
        return {
            "orderId": record.order_id, "symbol": market["id"], "status": status,
            "clientOrderId": order.client_order_id, "price": str(order.price or 0), "avgPrice": str(average),
            "origQty": str(order.amount + self._filled_before.get(order.client_order_id, Decimal(0))),
            "executedQty": str(filled), "cumQuote": str(filled * average), "timeInForce": "GTC",
            "type": order.type.value, "reduceOnly": order.reduce_only, "closePosition": False,
            "side": order.side.value.upper(), "positionSide": "BOTH", "stopPrice": "0",
            "workingType": record.working_type, "priceProtect": record.price_protect,
            "origType": order.type.value, "time": record.time_ms, "updateTime": order.updated_ms or record.time_ms,
        }

    def _algo_json(self, order: Order) -> dict:
        record = self._records[order.client_order_id]
        market = self.raw_markets[order.symbol]
        return {
            "algoId": record.order_id, "clientAlgoId": order.client_order_id, "algoType": "CONDITIONAL",
            "orderType": order.type.value, "symbol": market["id"], "side": order.side.value.upper(),
            "positionSide": "BOTH", "timeInForce": "GTC", "quantity": str(order.amount),
            "algoStatus": _ALGO_STATUS[order.status], "triggerPrice": str(order.trigger_price),
            "price": record.limit_price,
            "workingType": record.working_type, "closePosition": False, "priceProtect": record.price_protect,
            "reduceOnly": order.reduce_only, "createTime": record.time_ms,
            "updateTime": order.updated_ms or record.time_ms,
            "triggerTime": order.updated_ms if record.actual_order_id else 0, "goodTillDate": 0,
            "actualOrderId": str(record.actual_order_id or ""),
            "actualPrice": str(order.average) if record.actual_order_id else "0",
        }

    # -------------------------------------------------------------- account
    def _position_rows(self, p: dict) -> list:
        rows = []
        for symbol in self.symbols:
            market_id = self.raw_markets[symbol]["id"]
            if p.get("symbol") and p["symbol"] != market_id:
                continue
            pos = self.sim.position(symbol)
            amount, entry = pos if pos else (Decimal(0), Decimal(0))
            mark = self._last(symbol)
            upnl = (mark - entry) * amount if pos else Decimal(0)
            lev = self._leverage.get(symbol, 20)
            rows.append({
                "symbol": market_id, "positionAmt": str(amount), "entryPrice": str(entry), "breakEvenPrice": str(entry),
                "markPrice": str(mark), "unRealizedProfit": str(upnl),
                "liquidationPrice": self.liquidation_prices.get(symbol, "0") if pos else "0",
                "leverage": str(lev), "maxNotionalValue": "1000000",
                "marginType": self._margin_type.get(symbol, self.margin_type), "isolatedMargin": "0",
                "isAutoAddMargin": "false", "positionSide": "BOTH", "notional": str(amount * mark),
                "isolatedWallet": "0", "updateTime": self.clock.current_ms,
                "initialMargin": str(abs(amount * mark) / lev), "maintMargin": "0", "adl": 0,
            })
        return rows

    def _position_risk(self, p: dict) -> list:
        return self._position_rows(p)

    def _asset(self) -> dict:
        wallet = self.sim._balance
        upnl = sum((Decimal(r["unRealizedProfit"]) for r in self._position_rows({})), Decimal(0))
        return {"asset": "USDT", "walletBalance": str(wallet), "unrealizedProfit": str(upnl),
                "marginBalance": str(wallet + upnl), "maintMargin": "0", "initialMargin": "0",
                "positionInitialMargin": "0", "openOrderInitialMargin": "0", "maxWithdrawAmount": str(wallet),
                "crossWalletBalance": str(wallet), "crossUnPnl": str(upnl), "availableBalance": str(wallet),
                "marginAvailable": True, "updateTime": self.clock.current_ms, "balance": str(wallet)}

    def _account(self, p: dict) -> dict:
        asset = self._asset()
        return {"feeTier": 0, "canTrade": self.can_trade, "canDeposit": True, "canWithdraw": False,
                "totalWalletBalance": asset["walletBalance"], "totalUnrealizedProfit": asset["unrealizedProfit"],
                "totalMarginBalance": asset["marginBalance"], "availableBalance": asset["availableBalance"],
                "maxWithdrawAmount": asset["maxWithdrawAmount"], "assets": [asset],
                "positions": self._position_rows({}), "updateTime": self.clock.current_ms}

    def _balance(self, p: dict) -> list:
        asset = self._asset()
        return [{"accountAlias": "fake", **asset}]

    def _set_leverage(self, p: dict) -> dict:
        symbol = self._served(p.get("symbol"))
        leverage = int(p["leverage"])
        if not 1 <= leverage <= 125:
            raise BinanceReject(-4028, "Leverage is not valid.")
        self._leverage[symbol] = leverage
        _run_sync(self.sim.set_leverage(symbol, leverage))
        return {"leverage": leverage, "maxNotionalValue": "1000000", "symbol": p["symbol"]}

    def _leverage_bracket(self, p: dict) -> list:
        ids = [p["symbol"]] if p.get("symbol") else [self.raw_markets[s]["id"] for s in self.symbols]
        return [{"symbol": i, "brackets": [{"bracket": 1, "initialLeverage": 125, "notionalCap": 1_000_000,
                                             "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0}]} for i in ids]

    def _set_margin_type(self, p: dict) -> dict:
        symbol = self._served(p.get("symbol"))
        wanted = p["marginType"].lower()
        wanted = "cross" if wanted == "crossed" else wanted
        if self._margin_type.get(symbol, self.margin_type) == wanted:
            raise BinanceReject(-4046, "No need to change margin type.")
        self._margin_type[symbol] = wanted
        return {"code": 200, "msg": "success"}

    def _set_dual(self, p: dict) -> dict:
        wanted = p["dualSidePosition"].lower() == "true"
        if wanted == self.dual_side:
            raise BinanceReject(-4059, "No need to change position side.")
        self.dual_side = wanted
        return {"code": 200, "msg": "success"}

    def _api_restrictions(self, p: dict) -> dict:
        return {"ipRestrict": False, "createTime": 0, "enableReading": True, "enableFutures": self.can_trade,
                "enableWithdrawals": False, "enableSpotAndMarginTrading": False, "enableMargin": False,
                "enableInternalTransfer": False, "permitsUniversalTransfer": False, "enableVanillaOptions": False}


_CACHE: dict = {}


def _cached(key: str, data_dir: Path, load):
    """Bundled files are read once per test session (they never change)."""
    full = (key, str(data_dir))
    if full not in _CACHE:
        _CACHE[full] = load()
    return _CACHE[full]


def _run_sync(coro):
    """Run a SimulatedExchange port coroutine that never awaits (it completes at once)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("simulated exchange coroutine suspended")
