"""A loopback fake Binance USDⓈ-M REST API for tests (aiohttp), spoken to by the real ccxt
``binanceusdm`` client whose ``urls['api']`` entries point at :attr:`FakeBinance.base_url`.

As strict as the venue (issue 13): the account, orders, algo orders and positions are
``tests.fake_binance_venue.Venue`` — see that module for the rules it enforces (client-id
uniqueness among open orders only and its pattern, MARKET_LOT_SIZE / LOT_SIZE / tick /
PERCENT_PRICE / MIN_NOTIONAL, -4045, -2021 against the mark price for MARK_PRICE, reduce-only
conditional orders accepted without a position and expiring at trigger, NEW → TRIGGERING →
TRIGGERED/FINISHED, hedge mode refused with -4061, USDT and USDC wallets, multi-assets mode).

What it serves (the part ccxt calls for this bot): ``/fapi/v1/exchangeInfo`` built from the real
ccxt markets dump in ``data/markets`` (each market's ``info`` is Binance's own exchangeInfo
entry), ``time``, ``klines`` from the bundled real candles (a USDC perpetual without candles
of its own replays its USDT twin's), ``markPriceKlines`` and ``fundingRate`` from the real
mark-price candles and funding events in ``data_dir`` (SPEC D-1; paginated and limited as
Binance documents them: klines ``limit`` ≤ 1500 with its weight by limit, ``fundingRate``
``limit`` ≤ 1000, ``startTime``/``endTime`` windows, ascending rows), ``ticker/24hr``,
``ticker/price``, ``ticker/bookTicker``, ``depth`` (the order book top: ``limit`` one of 5, 10,
20, 50, 100, 500, 1000 else -1130, weight 2/5/10/20 by limit; bid at the last price, ask
``spread_ticks[symbol]`` ticks above it, default 1), ``premiumIndex`` (mark price, one symbol or all); signed: ``order`` POST/GET/DELETE (by ``orderId`` or
``origClientOrderId``), ``algoOrder`` POST/GET/DELETE (by ``algoId`` or ``clientAlgoId``),
``openOrders``, ``openAlgoOrders``, ``allOpenOrders``, ``algoOpenOrders`` DELETE, ``userTrades``,
``positionRisk`` (v2: every served symbol with leverage and margin type; v3: only symbols with a
position, without them), ``account`` (v2 with ``canTrade``; v3 without), ``balance`` (v2, v3),
``leverage``, ``marginType``, ``positionSide/dual``, ``multiAssetsMargin``, ``commissionRate``,
``apiRestrictions`` (sapi), ``listenKey`` (POST/PUT/DELETE, valid ``listen_key_ttl_ms`` from its
last keep-alive, -1125 once expired).

Market orders are answered as Binance answers ``newOrderRespType=RESULT`` (what ccxt sends):
FILLED at once. The test drives the candles with :meth:`FakeBinance.advance` (one real candle per
call) and the exchange clock with :attr:`FakeBinance.wall_ms` (real time unless a test binds it
to its own clock).

Request weight (``weight_limit``, off by default): Binance's IP limit of 2400 weight per minute
(REQUEST_WEIGHT in exchangeInfo), every reply carrying ``X-MBX-USED-WEIGHT-1M``; past the limit
a request is refused with HTTP 429 and a ``Retry-After`` of the seconds left in the window
(``fundingRate`` also has its own 500 requests per 5 minutes). ``now_ms`` serves history: every
candle closed by then, instead of the candle index that :meth:`FakeBinance.advance` moves.

Faults (:meth:`FakeBinance.inject`): ``5xx`` (HTTP 503), ``429`` with ``Retry-After``, ``418``
(an IP ban for ``Retry-After`` seconds: every request before it ends is answered 418 again and
counted in :attr:`requests_during_ban`), ``-1021`` (timestamp outside recvWindow),
``timeout_after_accept`` (the order is accepted, then the reply stalls past the client's
timeout), ``partial`` (a market order fills half now, the rest at the next candle's open),
``invisible`` (the order is accepted but answers -2013 and is missing from the open lists for
``invisible_ms`` of exchange time — Binance's order service lagging behind its matching engine),
and the trigger faults ``stop_expire`` (the next conditional order to trigger becomes a market
order that expires unfilled), ``stop_partial_expire`` (fills half, the rest expires) and
``stop_stuck`` (stays TRIGGERING for ``venue.stuck_candles`` candles, default two). ``demo_cancel_after_ms`` makes the venue
cancel conditional orders on its own once they are that old (checked at each candle), as Binance's
demo environment does.
Market and user-data streams over websocket: :attr:`FakeBinance.ws` (``tests.fake_binance_ws``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fake_binance_venue import (
    ALGO_WORKING,
    TRIGGER_FAULTS,
    AlgoOrder,
    BinanceReject,
    Rules,
    Trade,
    Venue,
    VOrder,
)
from trading.adapters.marketdata import CandleSeries, load_candles, load_ccxt_markets
from trading.domain.models import Order, OrderLeg, OrderSide, OrderStatus, OrderType
from trading.ports import ReplayClock

API_KEY = "fake-test-key"
API_SECRET = "fake-test-secret"

FAULT_KINDS = ("5xx", "429", "418", "-1021", "timeout_after_accept", "partial", "invisible", *TRIGGER_FAULTS)
ORDER_FAULTS = ("timeout_after_accept", "partial", "invisible")
USDC_COMMISSION = (Decimal("0"), Decimal("0.0004"))  # Binance's USDC perpetuals: no maker fee
__all__ = ["API_KEY", "API_SECRET", "FAULT_KINDS", "BinanceReject", "FakeBinance", "Trade"]


@dataclass(slots=True)
class Fault:
    """One armed fault: ``kind`` (see FAULT_KINDS) hits the next ``count`` requests whose path
    contains ``path`` (and whose method is ``method`` when given)."""

    kind: str
    path: str = ""
    method: str | None = None
    count: int = 1
    retry_after_s: int = 1


@dataclass
class FakeBinance:
    """The fake exchange: one account, the given symbols, real candles of ``timeframe``.

    Args:
        data_dir: the bundled ``data/`` folder; symbols: ccxt unified symbols served with candles
        (all 454 markets are listed in exchangeInfo); start_index: candle index of the first
        :meth:`advance`; balance: USDT wallet balance (``assets`` overrides: asset → balance);
        slippage_pct: % against the taker on market fills; stall_s: how long a
        ``timeout_after_accept`` reply stalls; dual_side / margin_type / can_trade /
        multi_assets: the account's settings; commission: symbol → (maker, taker) fractions
        (default: the market's dump fees, USDC perpetuals maker 0 / taker 0.04 %);
        demo_cancel_after_ms: the venue cancels conditional orders this old (None: never);
        listen_key_ttl_ms: a listenKey's validity after its last keep-alive (Binance: 60 min);
        invisible_ms: how long the ``invisible`` fault hides an accepted order; now_ms: serve
        history up to this time (see the module docstring); weight_limit / weight_window_s /
        funding_limit / funding_window_s: the request-weight budget (None: unlimited);
        liquidation_prices: positionRisk ``liquidationPrice`` per symbol (Binance's own figure;
        "0" = none reported); funding_rates: premiumIndex ``lastFundingRate`` per symbol.
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
    assets: dict[str, Decimal] | None = None
    multi_assets: bool = False
    commission: dict[str, tuple[Decimal, Decimal]] | None = None
    demo_cancel_after_ms: int | None = None
    listen_key_ttl_ms: int = 3_600_000
    invisible_ms: int = 1_500
    now_ms: int | None = None
    weight_limit: int | None = None
    weight_window_s: float = 60.0
    funding_limit: int = 500
    funding_window_s: float = 300.0
    liquidation_prices: dict = field(default_factory=dict)
    funding_rates: dict = field(default_factory=dict)

    raw_markets: dict = field(init=False)
    base_url: str = field(init=False, default="")
    accepted_ids: list[str] = field(init=False, default_factory=list)
    faults_injected: Counter = field(init=False, default_factory=Counter)
    requests: Counter = field(init=False, default_factory=Counter)

    def __post_init__(self) -> None:
        self.raw_markets = _cached("markets", self.data_dir, lambda: load_ccxt_markets(self.data_dir))
        self._by_id = {m["id"]: m for m in self.raw_markets.values() if m.get("linear") and m.get("swap")}
        self.wall_ms: Callable[[], int] = lambda: int(time.time() * 1000)
        self.clock = ReplayClock()  # the candle clock
        self.series: dict[str, CandleSeries] = {
            s: _cached(f"{s}|{self.timeframe}", self.data_dir, lambda s=s: _candles(self.data_dir, s, self.timeframe))
            for s in self.symbols
        }
        rules = {s: Rules.from_ccxt(self.raw_markets[s]) for s in self.symbols}
        commission = {s: (USDC_COMMISSION if self.raw_markets[s]["settle"] == "USDC" else
                          (Decimal(str(self.raw_markets[s]["maker"])), Decimal(str(self.raw_markets[s]["taker"]))))
                      for s in self.symbols}
        commission.update(self.commission or {})
        self.venue = Venue(rules, dict(self.assets or {"USDT": self.balance}), self.slippage_pct, commission,
                           lambda: self.wall_ms(), multi_assets=self.multi_assets, dual_side=self.dual_side,
                           demo_cancel_after_ms=self.demo_cancel_after_ms)
        self.index = self.start_index - 1  # index of the current (last closed) candle
        self._faults: list[Fault] = []
        self._leverage: dict[str, int] = self.venue.leverage
        self._margin_type: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self.stalled = 0
        self.duplicate_rejections = 0  # -4116: an id sent again while its order was still open
        self.duplicate_ids: list[str] = []
        self.banned_until_ms = 0  # 418: the IP ban ends at this exchange time
        self.requests_during_ban = 0
        self.listen_keys: dict[str, int] = {}  # listenKey → exchange time it expires
        self._listen_key_seq = 0
        from tests.fake_binance_ws import FakeBinanceStreams

        self.ws = FakeBinanceStreams(self)  # market and user-data streams (SPEC S-2)
        self.venue.on_event = self.ws.user_event
        self.rate_limited = 0  # requests refused with 429 for exceeding the weight limit
        self.spread_ticks: dict[str, int] = {}  # symbol → ask − bid in ticks (default 1): a test widens it
        self._weight_used = 0
        self._weight_window_start = 0.0
        self._funding_used = 0
        self._funding_window_start = 0.0

    def __setattr__(self, name, value) -> None:
        object.__setattr__(self, name, value)
        if name == "dual_side" and "venue" in self.__dict__:
            self.venue.dual_side = value

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
        """Arm a fault (see the module docstring) for the next matching request(s); a trigger
        fault for the next ``count`` conditional orders to trigger."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        if kind in TRIGGER_FAULTS:
            self.venue.trigger_faults.extend([kind] * count)
            self.faults_injected[kind] += count
            return
        self._faults.append(Fault(kind, path, method, count, retry_after_s))

    def clear_faults(self) -> None:
        """Disarm every pending fault."""
        self._faults.clear()
        self.venue.trigger_faults.clear()

    def candle(self, symbol: str) -> tuple[int, float, float, float, float, float]:
        """The current candle of ``symbol``: (open time ms, open, high, low, close, volume)."""
        s = self.series[symbol]
        i = self.index
        return s.timestamp[i], s.open[i], s.high[i], s.low[i], s.close[i], s.volume[i]

    def advance(self) -> list[Trade]:
        """Move every symbol to its next real candle (see ``Venue.on_candle``: rests of part
        fills at its open, limits it trades through, triggers on its high/low, stops first).
        Returns the new trades."""
        before = len(self.venue.trades)
        self.index += 1
        self.venue.housekeeping()
        self.ws.check_listen_keys()
        for symbol in self.symbols:
            ts, o, h, low, c, _ = self.candle(symbol)
            self.clock.current_ms = ts + self._tf_ms() - 1
            self.venue.on_candle(symbol, _d(o), _d(h), _d(low), _d(c))
        self.ws.publish()
        return self.venue.trades[before:]

    def _tf_ms(self) -> int:
        from trading.domain.models import TIMEFRAME_MS

        return TIMEFRAME_MS[self.timeframe]

    def set_mark(self, symbol: str, mark: Decimal) -> None:
        """Make the mark price of ``symbol`` differ from its last price (premiumIndex, MARK_PRICE
        triggers and -2021 checks follow it)."""
        self.venue.mark_offset[symbol] = mark - self.venue.last[symbol]

    def close_by_hand(self, symbol: str) -> None:
        """The trader closes ``symbol``'s position in the exchange's app (not through the bot):
        a reduce-only market order under the app's own client id fills at once."""
        amount, _entry = self.position(symbol)
        self.trade_by_hand(symbol, "SELL" if amount > 0 else "BUY", abs(amount), reduce_only=True)

    def trade_by_hand(self, symbol: str, side: str, qty: Decimal, *, reduce_only: bool = False,
                      client_id: str | None = None) -> VOrder:
        """Someone else on the account (the exchange's app, a second bot) sends a market order."""
        cid = client_id or f"web_{self.venue._next_id}"
        return self.venue.place_order(symbol, cid, side, "MARKET", qty, None, reduce_only, "GTC")

    def cancel_by_hand(self, client_order_id: str) -> None:
        """The trader cancels a conditional order in the exchange's app (not through the bot)."""
        self.venue.cancel_algo(self.algo(client_order_id), by="user")

    def cancel_by_venue(self, client_order_id: str) -> None:
        """The venue cancels a conditional order on its own (Binance's demo environment does)."""
        self.venue.cancel_algo(self.algo(client_order_id), by="venue")

    # ------------------------------------------------------------- inspection
    def position(self, symbol: str) -> tuple[Decimal, Decimal] | None:
        """The exchange's net position: (signed contracts, entry price) or None."""
        pos = self.venue.positions.get(symbol)
        return None if pos is None else (pos.amount, pos.entry)

    def algo(self, client_order_id: str) -> AlgoOrder:
        """The latest algo order with this client id (KeyError when none)."""
        found = [a for a in self.venue.algos.values() if a.client_id == client_order_id]
        if not found:
            raise KeyError(client_order_id)
        return found[-1]

    def orders_of(self, client_order_id: str) -> list[VOrder]:
        """Every matching-engine order ever accepted under this client id, oldest first."""
        return [o for o in self.venue.orders.values() if o.client_id == client_order_id]

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """What the account shows open and cancellable: conditional orders waiting for their
        trigger and open matching-engine orders, as domain orders (bot "exchange")."""
        return [_algo_order(a) for a in self.venue.open_algos(symbol)] + [
            _plain_order(o) for o in self.venue.open_orders(symbol)]

    def alive_ids(self, symbol: str | None = None) -> set[str]:
        """Client ids of orders still alive on the exchange: conditional orders not final
        (NEW, TRIGGERING, TRIGGERED) and open matching-engine orders."""
        return {a.client_id for a in self.venue.algos.values() if a.status in ALGO_WORKING
                and (symbol is None or a.symbol == symbol)} | {o.client_id for o in self.venue.open_orders(symbol)}

    def working_stop(self, symbol: str, prefix: str = "") -> bool:
        """True when a reduce-only STOP_MARKET of ``prefix`` is working on ``symbol`` (waiting for
        its trigger, or triggered and executing)."""
        return any(a.order_type == "STOP_MARKET" and a.reduce_only and a.client_id.startswith(prefix)
                   and a.symbol == symbol and a.status in ALGO_WORKING for a in self.venue.algos.values())

    def accepted_twice(self) -> list[str]:
        """Client ids accepted more than once (a duplicated order: what must never happen)."""
        return sorted(cid for cid, n in Counter(self.accepted_ids).items() if n > 1)

    @property
    def trades(self) -> list[Trade]:
        """Every fill so far, oldest first."""
        return self.venue.trades

    def plant_order(self, symbol: str, client_order_id: str, contracts: Decimal) -> None:
        """An open conditional order the client does not know about (a leftover of an earlier
        session whose database was lost): a TAKE_PROFIT_MARKET buy at half the last price."""
        rules = self.venue.rules[symbol]
        trigger = (self.venue.last[symbol] / 2 // rules.tick) * rules.tick
        self.venue.place_algo(symbol, client_order_id, "BUY", "TAKE_PROFIT_MARKET", contracts, trigger, None,
                              "CONTRACT_PRICE", False, True, "GTC")
        self.accepted_ids.append(client_order_id)

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
            self._check_ban()
            if "signature" in params:
                self._verify(request, request.query_string, body)
            self.ws.check_listen_keys()
            faults = self._take_faults(path, method)
            for fault in faults:
                if fault.kind not in ORDER_FAULTS:
                    self._raise_fault(fault)
            handler = self._route(method, path)
            if handler is None:
                raise BinanceReject(-1000, f"fake: no route for {method} {path}", http=404)
            headers = self._charge_weight(method, path, params)
            kinds = {fault.kind for fault in faults}
            for kind in ("partial", "invisible"):
                if kind in kinds:
                    params["_" + kind] = "1"
            result = handler(params)
            if "timeout_after_accept" in kinds:
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

    def _check_ban(self) -> None:
        now = self.wall_ms()
        if now < self.banned_until_ms:
            self.requests_during_ban += 1
            left = max(1, (self.banned_until_ms - now + 999) // 1000)
            raise BinanceReject(-1003, f"Way too many requests; IP banned until {self.banned_until_ms}. Please use "
                                       "the websocket for live updates to avoid bans.", http=418,
                                headers={"Retry-After": str(left)})

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
        if tail == "depth":
            limit = int(params.get("limit", 500))
            return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
        return 1

    def _charge_weight(self, method: str, path: str, params: dict) -> dict[str, str]:
        """Count the request against the IP weight budget (when ``weight_limit`` is set) and
        refuse it with 429 + Retry-After once the window's budget is spent."""
        import math

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

    def _take_faults(self, path: str, method: str) -> list[Fault]:
        """The faults this request meets: the first armed one that matches, plus every other
        order fault that also matches (an order can be accepted, hidden AND answered late)."""
        taken: list[Fault] = []
        for fault in list(self._faults):
            if not (fault.path in path and (fault.method is None or fault.method == method)):
                continue
            if fault.kind in ORDER_FAULTS:
                if not (method == "POST" and path.endswith(("/order", "/algoOrder"))):
                    continue
                if fault.kind == "partial" and not path.endswith("/order"):
                    continue
                if any(f.kind == fault.kind for f in taken):
                    continue
            elif any(f.kind not in ORDER_FAULTS for f in taken):
                continue
            fault.count -= 1
            if fault.count <= 0:
                self._faults.remove(fault)
            self.faults_injected[fault.kind] += 1
            taken.append(fault)
            if fault.kind not in ORDER_FAULTS:
                break
        return taken

    def _raise_fault(self, fault: Fault) -> None:
        if fault.kind == "5xx":
            raise BinanceReject(-1001, "Internal error; unable to process your request. Please try again.", http=503)
        if fault.kind == "429":
            raise BinanceReject(-1003, "Too many requests; please use the websocket for live updates.", http=429,
                                headers={"Retry-After": str(fault.retry_after_s)})
        if fault.kind == "418":
            self.banned_until_ms = self.wall_ms() + fault.retry_after_s * 1000
            raise BinanceReject(-1003, f"Way too many requests; IP banned until {self.banned_until_ms}.", http=418,
                                headers={"Retry-After": str(fault.retry_after_s)})
        if fault.kind == "-1021":
            raise BinanceReject(-1021, "Timestamp for this request is outside of the recvWindow.", http=400)

    def _route(self, method: str, path: str):
        tail = path.split("/", 3)[-1] if path.startswith(("/fapi/", "/sapi/")) else path
        version = path.split("/")[2] if path.startswith("/fapi/") else ""
        if tail == "account" and method == "GET":
            return self._account_v3 if version == "v3" else self._account_v2
        if tail == "positionRisk" and method == "GET":
            return self._position_risk_v3 if version == "v3" else self._position_risk_v2
        return {
            ("GET", "exchangeInfo"): self._exchange_info,
            ("GET", "time"): lambda p: {"serverTime": self.wall_ms()},
            ("GET", "ping"): lambda p: {},
            ("GET", "klines"): self._klines,
            ("GET", "markPriceKlines"): self._mark_klines,
            ("GET", "fundingRate"): self._funding_rate,
            ("GET", "ticker/24hr"): self._ticker_24hr,
            ("GET", "ticker/price"): self._ticker_price,
            ("GET", "ticker/bookTicker"): self._book_ticker,
            ("GET", "depth"): self._depth,
            ("GET", "premiumIndex"): self._premium_index,
            ("POST", "order"): self._post_order,
            ("GET", "order"): self._get_order,
            ("DELETE", "order"): self._delete_order,
            ("POST", "algoOrder"): self._post_algo_order,
            ("GET", "algoOrder"): self._get_algo_order,
            ("DELETE", "algoOrder"): self._delete_algo_order,
            ("GET", "openOrders"): self._open_orders,
            ("GET", "openAlgoOrders"): self._open_algo_orders,
            ("DELETE", "allOpenOrders"): self._cancel_all,
            ("DELETE", "algoOpenOrders"): self._cancel_all_algo,
            ("GET", "userTrades"): self._user_trades,
            ("GET", "balance"): self._balance,
            ("POST", "leverage"): self._set_leverage,
            ("GET", "leverageBracket"): self._leverage_bracket,
            ("POST", "marginType"): self._set_margin_type,
            ("GET", "positionSide/dual"): lambda p: {"dualSidePosition": self.venue.dual_side},
            ("POST", "positionSide/dual"): self._set_dual,
            ("GET", "multiAssetsMargin"): lambda p: {"multiAssetsMargin": self.venue.multi_assets},
            ("GET", "commissionRate"): self._commission_rate,
            ("GET", "account/apiRestrictions"): self._api_restrictions,
            ("POST", "listenKey"): self._new_listen_key,
            ("PUT", "listenKey"): self._keep_listen_key,
            ("DELETE", "listenKey"): self._close_listen_key,
        }.get((method, tail))

    # --------------------------------------------------------------- public
    def _exchange_info(self, p: dict) -> dict:
        return {
            "timezone": "UTC", "serverTime": self.wall_ms(), "futuresType": "U_MARGINED",
            "rateLimits": [], "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"},
                       {"asset": "USDC", "marginAvailable": True, "autoAssetExchange": "-10000"}],
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
        return self.venue.last.get(symbol) or _d(self.candle(symbol)[4])

    def _ticker_24hr(self, p: dict):
        ids = [p["symbol"]] if "symbol" in p else [self.raw_markets[s]["id"] for s in self.symbols]
        rows = []
        for market_id in ids:
            symbol = self._served(market_id)
            ts, o, h, low, c, v = self.candle(symbol)
            rows.append({"symbol": market_id, "lastPrice": str(self._last(symbol)), "openPrice": repr(o),
                         "highPrice": repr(h), "lowPrice": repr(low), "volume": repr(v), "quoteVolume": "0",
                         "openTime": ts, "closeTime": ts + self._tf_ms() - 1, "priceChange": "0",
                         "priceChangePercent": "0", "weightedAvgPrice": repr(c), "lastQty": "0", "count": 0})
        return rows[0] if "symbol" in p else rows

    def _ticker_price(self, p: dict):
        symbol = self._served(p.get("symbol"))
        return {"symbol": p["symbol"], "price": str(self._last(symbol)), "time": self.wall_ms()}

    def _book_ticker(self, p: dict):
        ids = [p["symbol"]] if "symbol" in p else [self.raw_markets[s]["id"] for s in self.symbols]
        rows = []
        for market_id in ids:
            symbol = self._served(market_id)
            last = self._last(symbol)
            tick = self.venue.rules[symbol].tick
            ask = last + tick * self.spread_ticks.get(symbol, 1)
            rows.append({"symbol": market_id, "bidPrice": str(last), "bidQty": "100", "askPrice": str(ask),
                         "askQty": "100", "time": self.wall_ms()})
        return rows[0] if "symbol" in p else rows

    _DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)

    def _depth(self, p: dict):
        """``GET /fapi/v1/depth``: ``limit`` levels a side, one tick apart, the best bid at the
        last price and the best ask ``spread_ticks`` ticks above it."""
        if not p.get("symbol"):
            raise BinanceReject(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        symbol = self._served(p["symbol"])
        limit = self._int_param(p, "limit", 500)
        if limit not in self._DEPTH_LIMITS:
            raise BinanceReject(-1130, "Data sent for parameter 'limit' is not valid.")
        last, tick = self._last(symbol), self.venue.rules[symbol].tick
        ask = last + tick * self.spread_ticks.get(symbol, 1)
        now = self.wall_ms()
        return {"lastUpdateId": now, "E": now, "T": now,
                "bids": [[str(last - tick * i), "100"] for i in range(limit)],
                "asks": [[str(ask + tick * i), "100"] for i in range(limit)]}

    def _premium_index(self, p: dict):
        ids = [p["symbol"]] if p.get("symbol") else [self.raw_markets[s]["id"] for s in self.symbols]
        rows = []
        eight_hours = 8 * 3_600_000  # Binance USDⓈ-M funds every 8 h (00:00, 08:00, 16:00 UTC)
        for market_id in ids:
            symbol = self._served(market_id)
            rows.append({"symbol": market_id, "markPrice": str(self.venue.mark(symbol)),
                         "indexPrice": str(self._last(symbol)), "estimatedSettlePrice": str(self._last(symbol)),
                         "lastFundingRate": self.funding_rates.get(symbol, "0.0001"),
                         "nextFundingTime": self.clock.current_ms - self.clock.current_ms % eight_hours + eight_hours,
                         "interestRate": "0.0001", "time": self.wall_ms()})
        return rows[0] if p.get("symbol") else rows

    # --------------------------------------------------------------- orders
    @staticmethod
    def _bool(p: dict, key: str) -> bool:
        return str(p.get(key, "false")).lower() == "true"

    def _order_params(self, p: dict) -> tuple[str, Decimal, Decimal | None]:
        symbol = self._served(p.get("symbol"))
        if not self.can_trade:
            raise BinanceReject(-2015, "Invalid API-key, IP, or permissions for action.", http=401)
        if not p.get("quantity"):
            raise BinanceReject(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        price = Decimal(p["price"]) if p.get("price") else None
        return symbol, Decimal(p["quantity"]), price

    def _post_order(self, p: dict) -> dict:
        symbol, quantity, price = self._order_params(p)
        cid = p.get("newClientOrderId")
        if not cid:
            raise BinanceReject(-1102, "Mandatory parameter 'newClientOrderId' was not sent (this fake needs one).")
        order_type = p.get("type", "")
        if p.get("newOrderRespType", "ACK") not in ("ACK", "RESULT"):
            raise BinanceReject(-1136, "Invalid newOrderRespType.")
        try:
            order = self.venue.place_order(
                symbol, cid, p.get("side", ""), order_type, quantity, price, self._bool(p, "reduceOnly"),
                p.get("timeInForce", ""), position_side=p.get("positionSide", ""), partial="_partial" in p,
                invisible_ms=self.invisible_ms if "_invisible" in p else 0)
        except BinanceReject as exc:
            self._count_duplicate(exc, cid)
            raise
        self.accepted_ids.append(cid)
        if p.get("newOrderRespType") == "RESULT":
            return self._order_json(order)
        return {**self._order_json(order), "status": "NEW", "executedQty": "0", "cumQuote": "0", "avgPrice": "0"}

    def _post_algo_order(self, p: dict) -> dict:
        if p.get("algoType") != "CONDITIONAL":
            raise BinanceReject(-1102, "Mandatory parameter 'algoType' was not sent, was empty/null, or malformed.")
        symbol, quantity, price = self._order_params(p)
        cid = p.get("clientAlgoId")
        if not cid:
            raise BinanceReject(-1102, "Mandatory parameter 'clientAlgoId' was not sent (this fake needs one).")
        if not p.get("triggerPrice"):
            raise BinanceReject(-1102, "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.")
        try:
            algo = self.venue.place_algo(
                symbol, cid, p.get("side", ""), p.get("type", ""), quantity, Decimal(p["triggerPrice"]), price,
                p.get("workingType", "CONTRACT_PRICE"), self._bool(p, "priceProtect"), self._bool(p, "reduceOnly"),
                p.get("timeInForce", ""), position_side=p.get("positionSide", ""),
                invisible_ms=self.invisible_ms if "_invisible" in p else 0)
        except BinanceReject as exc:
            self._count_duplicate(exc, cid)
            raise
        self.accepted_ids.append(cid)
        return self._algo_json(algo)

    def _count_duplicate(self, exc: BinanceReject, cid: str) -> None:
        if exc.code == -4116:
            self.duplicate_rejections += 1
            self.duplicate_ids.append(cid)

    def _find(self, p: dict) -> VOrder:
        symbol = self._served(p.get("symbol"))
        if p.get("orderId"):
            return self.venue.find_order(symbol, order_id=int(p["orderId"]))
        if p.get("origClientOrderId"):
            return self.venue.find_order(symbol, client_id=p["origClientOrderId"])
        raise BinanceReject(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")

    def _find_algo(self, p: dict) -> AlgoOrder:
        if p.get("algoId"):
            return self.venue.find_algo(algo_id=int(p["algoId"]))
        if p.get("clientAlgoId"):
            return self.venue.find_algo(client_id=p["clientAlgoId"])
        raise BinanceReject(-1102, "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!")

    def _get_order(self, p: dict) -> dict:
        return self._order_json(self._find(p))

    def _get_algo_order(self, p: dict) -> dict:
        return self._algo_json(self._find_algo(p))

    def _delete_order(self, p: dict) -> dict:
        try:
            order = self._find(p)
        except BinanceReject as exc:
            if exc.code == -2013:
                raise BinanceReject(-2011, "Unknown order sent.") from None
            raise
        return self._order_json(self.venue.cancel_order(order))

    def _delete_algo_order(self, p: dict) -> dict:
        try:
            algo = self._find_algo(p)
        except BinanceReject as exc:
            if exc.code == -2013:
                raise BinanceReject(-2011, "Unknown order sent.") from None
            raise
        self.venue.cancel_algo(algo)
        return {"algoId": algo.algo_id, "clientAlgoId": algo.client_id, "code": "200", "msg": "success"}

    def _open_orders(self, p: dict) -> list:
        symbol = self._served(p["symbol"]) if p.get("symbol") else None
        return [self._order_json(o) for o in self.venue.open_orders(symbol, visible_only=True)]

    def _open_algo_orders(self, p: dict) -> list:
        symbol = self._served(p["symbol"]) if p.get("symbol") else None
        return [self._algo_json(a) for a in self.venue.open_algos(symbol, visible_only=True)]

    def _cancel_all(self, p: dict) -> dict:
        symbol = self._served(p.get("symbol"))
        for order in self.venue.open_orders(symbol):
            self.venue.cancel_order(order)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _cancel_all_algo(self, p: dict) -> dict:
        symbol = self._served(p.get("symbol"))
        for algo in self.venue.open_algos(symbol):
            self.venue.cancel_algo(algo)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _user_trades(self, p: dict) -> list:
        symbol = self._served(p.get("symbol"))
        since = int(p.get("startTime", 0))
        until = int(p.get("endTime", 2**62))
        market_id = self.raw_markets[symbol]["id"]
        rows = []
        for t in self.venue.trades:
            if t.symbol != symbol or not since <= t.time_ms <= until:
                continue
            rows.append({"symbol": market_id, "id": t.id, "orderId": t.order_id, "side": t.side,
                         "price": str(t.price), "qty": str(t.qty), "realizedPnl": str(t.realized_pnl),
                         "quoteQty": str(t.qty * t.price), "commission": str(t.fee), "commissionAsset": t.fee_asset,
                         "time": t.time_ms, "positionSide": "BOTH", "buyer": t.side == "BUY", "maker": t.maker})
        limit = int(p.get("limit", 500))
        return rows[:limit] if "startTime" in p else rows[-limit:]

    def _order_json(self, order: VOrder) -> dict:
        return {
            "orderId": order.order_id, "symbol": self.venue.rules[order.symbol].market_id, "status": order.status,
            "clientOrderId": order.client_id, "price": str(order.price), "avgPrice": str(order.avg_price),
            "origQty": str(order.qty), "executedQty": str(order.executed), "cumQty": str(order.executed),
            "cumQuote": str(order.cum_quote), "timeInForce": order.tif, "type": order.type,
            "reduceOnly": order.reduce_only, "closePosition": False, "side": order.side, "positionSide": "BOTH",
            "stopPrice": str(order.stop_price), "workingType": order.working_type, "priceProtect": order.price_protect,
            "origType": order.orig_type or order.type, "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0, "time": order.time_ms, "updateTime": order.update_ms,
        }

    def _algo_json(self, algo: AlgoOrder) -> dict:
        actual = self.venue.orders.get(algo.actual_order_id) if algo.actual_order_id else None
        return {
            "algoId": algo.algo_id, "clientAlgoId": algo.client_id, "algoType": "CONDITIONAL",
            "orderType": algo.order_type, "symbol": self.venue.rules[algo.symbol].market_id, "side": algo.side,
            "positionSide": "BOTH", "timeInForce": algo.tif, "quantity": str(algo.qty), "algoStatus": algo.status,
            "actualOrderId": str(algo.actual_order_id or ""),
            "actualPrice": str(actual.avg_price if actual else Decimal(0)),
            "triggerPrice": str(algo.trigger), "price": str(algo.price), "icebergQuantity": None,
            "tpTriggerPrice": "0.000", "tpPrice": "0.000", "slTriggerPrice": "0.000", "slPrice": "0.000",
            "tpOrderType": "", "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": algo.working_type,
            "priceMatch": "NONE", "closePosition": False, "priceProtect": algo.price_protect,
            "reduceOnly": algo.reduce_only, "createTime": algo.create_ms, "updateTime": algo.update_ms,
            "triggerTime": algo.trigger_ms, "goodTillDate": 0,
        }

    # -------------------------------------------------------------- account
    def _position_row(self, symbol: str, *, v3: bool) -> dict:
        venue = self.venue
        pos = venue.positions.get(symbol)
        amount, entry = (pos.amount, pos.entry) if pos else (Decimal(0), Decimal(0))
        mark = venue.mark(symbol)
        lev = venue.leverage.get(symbol, 20)
        notional = amount * mark
        row = {
            "symbol": venue.rules[symbol].market_id, "positionSide": "BOTH", "positionAmt": str(amount),
            "entryPrice": str(entry), "breakEvenPrice": str(entry), "markPrice": str(mark),
            "unRealizedProfit": str(venue.unrealised(symbol)),
            "liquidationPrice": self.liquidation_prices.get(symbol, "0") if pos else "0", "isolatedMargin": "0",
            "notional": str(notional), "isolatedWallet": "0", "updateTime": pos.update_ms if pos else 0,
        }
        if v3:
            return {**row, "marginAsset": venue.rules[symbol].settle, "initialMargin": str(abs(notional) / lev),
                    "maintMargin": "0", "positionInitialMargin": str(abs(notional) / lev),
                    "openOrderInitialMargin": "0", "adl": 0, "bidNotional": "0", "askNotional": "0"}
        return {**row, "leverage": str(lev), "maxNotionalValue": "1000000",
                "marginType": self._margin_type.get(symbol, self.margin_type), "isAutoAddMargin": "false"}

    def _position_risk_v2(self, p: dict) -> list:
        return [self._position_row(s, v3=False) for s in self.symbols
                if not p.get("symbol") or p["symbol"] == self.venue.rules[s].market_id]

    def _position_risk_v3(self, p: dict) -> list:
        """V3 lists only symbols with a position or open orders, without leverage / margin type."""
        busy = set(self.venue.positions) | {o.symbol for o in self.venue.open_orders()} | {
            a.symbol for a in self.venue.open_algos()}
        return [self._position_row(s, v3=True) for s in self.symbols if s in busy
                and (not p.get("symbol") or p["symbol"] == self.venue.rules[s].market_id)]

    def _asset_rows(self) -> list[dict]:
        venue = self.venue
        rows = []
        for asset in ("USDT", "USDC"):
            wallet = venue.assets.get(asset, Decimal(0))
            upnl = sum((venue.unrealised(s) for s in venue.positions if venue.rules[s].settle == asset), Decimal(0))
            used = sum((abs(p.amount) * p.entry / venue.leverage.get(s, 20) for s, p in venue.positions.items()
                        if venue.rules[s].settle == asset), Decimal(0))
            touched = asset in venue.assets
            rows.append({"asset": asset, "walletBalance": str(wallet), "unrealizedProfit": str(upnl),
                         "marginBalance": str(wallet + upnl), "maintMargin": "0", "initialMargin": str(used),
                         "positionInitialMargin": str(used), "openOrderInitialMargin": "0",
                         "crossWalletBalance": str(wallet), "crossUnPnl": str(upnl),
                         "availableBalance": str(wallet + upnl - used), "maxWithdrawAmount": str(wallet - used),
                         "marginAvailable": True,
                         # Binance leaves an asset never funded at updateTime 0 (ccxt then skips it).
                         "updateTime": venue.asset_updated_ms.get(asset, self.wall_ms()) if touched else 0})
        return rows

    def _totals(self) -> dict:
        """Account totals: every asset in multi-assets mode (USD value, 1:1 here), USDT only in
        single-asset mode (as Binance's docs say)."""
        rows = [r for r in self._asset_rows() if self.venue.multi_assets or r["asset"] == "USDT"]
        total = lambda key: str(sum((Decimal(r[key]) for r in rows), Decimal(0)))  # noqa: E731
        return {"totalInitialMargin": total("initialMargin"), "totalMaintMargin": "0",
                "totalWalletBalance": total("walletBalance"), "totalUnrealizedProfit": total("unrealizedProfit"),
                "totalMarginBalance": total("marginBalance"), "totalPositionInitialMargin": total("initialMargin"),
                "totalOpenOrderInitialMargin": "0", "totalCrossWalletBalance": total("walletBalance"),
                "totalCrossUnPnl": total("unrealizedProfit"), "availableBalance": total("availableBalance"),
                "maxWithdrawAmount": total("maxWithdrawAmount")}

    def _account_v3(self, p: dict) -> dict:
        positions = [{k: row[k] for k in ("symbol", "positionSide", "positionAmt", "unRealizedProfit",
                                          "isolatedMargin", "notional", "isolatedWallet", "initialMargin",
                                          "maintMargin", "updateTime")}
                     for row in (self._position_row(s, v3=True) for s in self.venue.positions)]
        return {**self._totals(), "assets": self._asset_rows(), "positions": positions}

    def _account_v2(self, p: dict) -> dict:
        return {"feeTier": 0, "feeBurn": False, "canTrade": self.can_trade, "canDeposit": True, "canWithdraw": False,
                "updateTime": 0, "multiAssetsMargin": self.venue.multi_assets, "tradeGroupId": -1, **self._totals(),
                "assets": self._asset_rows(), "positions": self._position_risk_v2({})}

    def _balance(self, p: dict) -> list:
        return [{"accountAlias": "fake", "asset": r["asset"], "balance": r["walletBalance"],
                 "crossWalletBalance": r["crossWalletBalance"], "crossUnPnl": r["crossUnPnl"],
                 "availableBalance": r["availableBalance"], "maxWithdrawAmount": r["maxWithdrawAmount"],
                 "marginAvailable": True, "updateTime": r["updateTime"]} for r in self._asset_rows()]

    def _commission_rate(self, p: dict) -> dict:
        symbol = self._served(p.get("symbol"))
        maker, taker = self.venue.commission[symbol]
        return {"symbol": p["symbol"], "makerCommissionRate": str(maker), "takerCommissionRate": str(taker),
                "rpiCommissionRate": "0"}

    def _set_leverage(self, p: dict) -> dict:
        symbol = self._served(p.get("symbol"))
        leverage = int(p["leverage"])
        if not 1 <= leverage <= 125:
            raise BinanceReject(-4028, "Leverage is not valid.")
        self._leverage[symbol] = leverage
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
        if symbol in self.venue.positions:
            raise BinanceReject(-4048, "Margin type cannot be changed if there exists position.")
        self._margin_type[symbol] = wanted
        return {"code": 200, "msg": "success"}

    def _set_dual(self, p: dict) -> dict:
        wanted = p["dualSidePosition"].lower() == "true"
        if wanted == self.venue.dual_side:
            raise BinanceReject(-4059, "No need to change position side.")
        self.dual_side = wanted
        return {"code": 200, "msg": "success"}

    def _api_restrictions(self, p: dict) -> dict:
        return {"ipRestrict": False, "createTime": 0, "enableReading": True, "enableFutures": self.can_trade,
                "enableWithdrawals": False, "enableSpotAndMarginTrading": False, "enableMargin": False,
                "enableInternalTransfer": False, "permitsUniversalTransfer": False, "enableVanillaOptions": False}

    # ------------------------------------------------------ user-data stream keys
    def listen_key_valid(self, key: str) -> bool:
        """True while ``key`` has not expired (its last keep-alive was under the TTL ago)."""
        expires = self.listen_keys.get(key)
        return expires is not None and self.wall_ms() < expires

    def _new_listen_key(self, p: dict) -> dict:
        """POST: the account's valid key extended, or a new one (Binance: one key per API key)."""
        valid = [k for k in self.listen_keys if self.listen_key_valid(k)]
        if valid:
            key = valid[-1]
        else:
            self._listen_key_seq += 1
            key = f"fake-listen-key-{self._listen_key_seq}"
        self.listen_keys[key] = self.wall_ms() + self.listen_key_ttl_ms
        return {"listenKey": key}

    def _keep_listen_key(self, p: dict) -> dict:
        valid = [k for k in self.listen_keys if self.listen_key_valid(k)]
        if not valid:
            raise BinanceReject(-1125, "This listenKey does not exist.")
        self.listen_keys[valid[-1]] = self.wall_ms() + self.listen_key_ttl_ms
        return {"listenKey": valid[-1]}

    def _close_listen_key(self, p: dict) -> dict:
        for key in [k for k in self.listen_keys if self.listen_key_valid(k)]:
            self.listen_keys[key] = 0
        return {}


def _d(value: float) -> Decimal:
    return Decimal(repr(value))


def _candles(data_dir: Path, symbol: str, timeframe: str) -> CandleSeries:
    """The bundled candles of ``symbol``; a USDC perpetual without its own file replays its USDT
    twin's (the fake needs a price path, not USDC history)."""
    try:
        return load_candles(data_dir, symbol, timeframe)
    except Exception:
        if ":USDC" not in symbol:
            raise
        base = symbol.split("/")[0]
        return load_candles(data_dir, f"{base}/USDT:USDT", timeframe)


def _leg_of(reduce_only: bool, order_type: str) -> OrderLeg:
    if not reduce_only:
        return OrderLeg.ENTRY
    if order_type == "STOP_MARKET":
        return OrderLeg.STOP_LOSS
    return OrderLeg.TP1 if order_type.startswith("TAKE_PROFIT") else OrderLeg.CLOSE


def _algo_order(a: AlgoOrder) -> Order:
    return Order(client_order_id=a.client_id, bot="exchange", symbol=a.symbol, side=OrderSide(a.side.lower()),
                 type=OrderType(a.order_type), leg=_leg_of(a.reduce_only, a.order_type), amount=a.qty,
                 reduce_only=a.reduce_only, created_ms=a.create_ms, status=OrderStatus.OPEN, trigger_price=a.trigger,
                 price=a.price if a.order_type == "TAKE_PROFIT" else None, updated_ms=a.update_ms)


def _plain_order(o: VOrder) -> Order:
    return Order(client_order_id=o.client_id, bot="exchange", symbol=o.symbol, side=OrderSide(o.side.lower()),
                 type=OrderType(o.type), leg=_leg_of(o.reduce_only, o.type), amount=o.qty, reduce_only=o.reduce_only,
                 created_ms=o.time_ms, status=OrderStatus.OPEN, filled=o.executed,
                 average=o.avg_price or None, price=o.price if o.type == "LIMIT" else None, updated_ms=o.update_ms)


_CACHE: dict = {}


def _cached(key: str, data_dir: Path, load):
    """Bundled files are read once per test session (they never change)."""
    full = (key, str(data_dir))
    if full not in _CACHE:
        _CACHE[full] = load()
    return _CACHE[full]
