"""A loopback fake of OKX's v5 REST API (aiohttp) for tests, spoken to by the real ccxt ``okx``
client whose ``urls['api']['rest']`` points at :attr:`FakeOkx.base_url` (issue 18, SPEC S-3).

Modelled from OKX's v5 API docs and ccxt's ``okx.py``, as strict as the venue and stricter where
unsure (a test that passes only because the fake is kind would be a defect):

- authentication: ``OK-ACCESS-KEY`` / ``OK-ACCESS-PASSPHRASE`` / ``OK-ACCESS-TIMESTAMP`` (ISO 8601,
  within 30 s of the server clock, 50102) / ``OK-ACCESS-SIGN`` = base64(HMAC-SHA256(secret,
  timestamp + method + requestPath (+ ?query) + body)) checked on every private request (50103,
  50104, 50105, 50111, 50113); this is a demo-trading server, so every private request must carry
  ``x-simulated-trading: 1`` (50101, "APIKey does not match current environment"); POST bodies
  must be ``application/json`` (50006);
- orders: ``tdMode`` isolated / cross (51000), net position mode only (``posSide`` absent or
  ``net``, 51000), ``sz`` a positive multiple of ``lotSz`` (51121) and ≥ ``minSz`` (51020), ``px``
  on the tick (51000) and within ±5 % of the mark (51006), margin from the USDT cash balance
  (51008), ``reduceOnly`` with nothing to reduce refused (51169), an order in another margin mode
  than the instrument's open position refused (51000); unknown body keys are refused (51000): no
  Binance parameter (``workingType``, ``priceProtect``, ``timeInForce``…) gets through;
- client ids: ``clOrdId`` and ``algoClOrdId`` letters and digits, 1–32 (51000); an id is never
  accepted twice on the account, open or finished (51016; stricter than "unique among open
  orders", so an id reused after a fill is caught);
- algo orders (``/trade/order-algo``): ``ordType`` ``conditional`` (``slTriggerPx`` + ``slOrdPx``,
  ``tpTriggerPx`` + ``tpOrdPx``; ``-1`` = market) or ``trigger`` (``triggerPx`` + ``orderPx``),
  trigger price types ``last`` / ``mark`` / ``index``; a stop-loss on the wrong side of the
  reference price is refused (51280 / 51278, take-profits 51279 / 51277); the lifecycle
  ``live`` → ``effective`` (it placed the order ``ordId``, whose ``clOrdId`` is empty: fills of a
  triggered stop carry no id of ours) / ``canceled`` / ``order_failed`` (it triggered, but its
  reduce-only order had nothing to reduce); ``/trade/orders-algo-pending`` needs ``ordType``
  (``conditional`` and ``oco`` may be combined, nothing else); look-up and cancel by ``algoId`` or
  ``algoClOrdId``;
- instruments: linear USDT swaps with ``ctVal`` (XRP 100, DOGE 1000, BTC 0.01 … contracts of the
  base coin), modelled on OKX's ``/public/instruments`` rows (not a live dump); prices are the
  bundled real Binance candles (the test drives time with :meth:`FakeOkx.advance`, one candle per
  call); market orders fill at once at the last price (slippage against the taker), limit
  orders and triggers on each candle's path open → nearer extreme → other extreme → close.

Public market data also includes ``/market/books`` (the order book top as OKX documents it:
``asks`` ascending and ``bids`` descending, each level ``[px, sz in contracts, "0", number of
orders]``, and ``ts``; ``sz`` 1–400 levels per side, default 1), consistent with the ticker's
``askPx`` / ``bidPx``.

Time: :attr:`FakeOkx.wall_ms` is the server clock that stamps orders, fills and positions (real
time unless a test binds it to its own clock, as the chaos test does); the signature's
``OK-ACCESS-TIMESTAMP`` is always checked against the real clock, because ccxt signs with it.

Faults (:meth:`FakeOkx.inject`, each counted in :attr:`FakeOkx.faults_injected` when it hits):
``5xx`` (HTTP 503), ``50011`` (HTTP 429 rate limit) and ``timeout_after_accept`` (the order is
accepted, then the reply stalls past the client timeout) on requests whose path contains the
given text; ``partial`` (the next market order fills half and the rest is cancelled: OKX's
market orders do not rest, what the price limit does not let fill is cancelled — a thin book); ``invisible`` (the next order or algo order is accepted but its look-ups answer
51603 and the pending lists omit it for ``invisible_ms`` of server time — OKX documents no such
lag; modelled because Binance's order service shows one and the code must survive it on any
venue); and the trigger faults ``stop_fail`` (the next algo order to trigger ends
``order_failed``: the order it tried to place was refused, failCode 51006 price limit) and
``stop_partial`` (the next algo order to trigger places a market order that fills half and
is cancelled for the rest, OKX's price-limit protection on a thin book).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl

from aiohttp import web

from trading.adapters.marketdata import CandleSeries, load_candles

API_KEY = "okx-fake-key"
API_SECRET = "okx-fake-secret"
PASSPHRASE = "okxFakePass1"
ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
FAULT_KINDS = ("5xx", "50011", "timeout_after_accept", "partial", "invisible", "stop_fail", "stop_partial")
HTTP_FAULTS = ("5xx", "50011")
TRIGGER_FAULTS = ("stop_fail", "stop_partial")
ZERO = Decimal(0)
TAKER, MAKER = Decimal("0.0005"), Decimal("0.0002")  # OKX regular tier, swaps
ALGO_PENDING_TYPES = {"conditional", "oco", "trigger", "move_order_stop", "iceberg", "twap", "chase"}

# Linear USDT perpetuals as OKX's /api/v5/public/instruments lists them (fields ccxt reads);
# values modelled on OKX's published contract specifications, not a live dump.
INSTRUMENTS = {
    "XRP": {"ctVal": "100", "lotSz": "0.01", "minSz": "0.01", "tickSz": "0.0001", "lever": "50"},
    "DOGE": {"ctVal": "1000", "lotSz": "0.01", "minSz": "0.01", "tickSz": "0.00001", "lever": "50"},
    "ADA": {"ctVal": "100", "lotSz": "0.1", "minSz": "0.1", "tickSz": "0.0001", "lever": "50"},
    "SOL": {"ctVal": "1", "lotSz": "0.01", "minSz": "0.01", "tickSz": "0.01", "lever": "50"},
    "LTC": {"ctVal": "1", "lotSz": "0.01", "minSz": "0.01", "tickSz": "0.01", "lever": "50"},
    "ETH": {"ctVal": "0.1", "lotSz": "0.01", "minSz": "0.01", "tickSz": "0.01", "lever": "100"},
    "BTC": {"ctVal": "0.01", "lotSz": "0.01", "minSz": "0.01", "tickSz": "0.1", "lever": "100"},
}
PLACE_KEYS = {"instId", "tdMode", "ccy", "clOrdId", "tag", "side", "posSide", "ordType", "sz", "px", "reduceOnly",
              "tgtCcy", "stpMode", "banAmend", "attachAlgoOrds", "pxUsd", "pxVol", "quickMgnType"}
ALGO_KEYS = {"instId", "tdMode", "ccy", "side", "posSide", "ordType", "sz", "tag", "tgtCcy", "algoClOrdId",
             "clOrdId", "reduceOnly", "closeFraction", "cxlOnClosePos", "tpTriggerPx", "tpTriggerPxType",
             "tpOrdPx", "tpOrdKind", "slTriggerPx", "slTriggerPxType", "slOrdPx", "triggerPx", "triggerPxType",
             "orderPx", "quickMgnType"}


class OkxReject(Exception):
    """An OKX error: ``code`` (top level or the order's ``sCode``), ``msg`` and the HTTP status."""

    def __init__(self, code: str, msg: str, http: int = 200) -> None:
        super().__init__(msg)
        self.code, self.msg, self.http = code, msg, http


@dataclass(slots=True)
class Instrument:
    """One swap: ids, contract value (base coin per contract), lot, minimum and tick."""

    inst_id: str
    symbol: str
    base: str
    ct_val: Decimal
    lot: Decimal
    min_sz: Decimal
    tick: Decimal
    max_lever: int

    def row(self) -> dict:
        """The /public/instruments row."""
        spec = INSTRUMENTS[self.base]
        return {"instType": "SWAP", "instId": self.inst_id, "uly": f"{self.base}-USDT", "instFamily": f"{self.base}-USDT",
                "baseCcy": "", "quoteCcy": "", "settleCcy": "USDT", "ctVal": spec["ctVal"], "ctMult": "1",
                "ctValCcy": self.base, "optType": "", "stk": "", "listTime": "1611916828000", "expTime": "",
                "lever": spec["lever"], "tickSz": spec["tickSz"], "lotSz": spec["lotSz"], "minSz": spec["minSz"],
                "ctType": "linear", "alias": "", "state": "live", "ruleType": "normal", "maxLmtSz": "100000000",
                "maxMktSz": "100000", "maxLmtAmt": "20000000", "maxMktAmt": "1000000", "maxTwapSz": "100000000",
                "maxIcebergSz": "100000000", "maxTriggerSz": "100000000", "maxStopSz": "100000"}


@dataclass(slots=True)
class VOrder:
    """A regular order (``/trade/order``)."""

    ord_id: str
    cl_ord_id: str
    inst: Instrument
    side: str
    ord_type: str
    sz: Decimal
    px: Decimal
    td_mode: str
    reduce_only: bool
    c_time: int
    u_time: int
    tag: str = ""
    state: str = "live"
    acc_fill: Decimal = ZERO
    fill_value: Decimal = ZERO  # Σ fill size × price
    fee: Decimal = ZERO  # negative: charged
    algo_id: str = ""
    algo_cl_ord_id: str = ""
    cancel_source: str = ""
    visible_ms: int = 0  # the ``invisible`` fault: looked up and listed from this server time

    @property
    def open(self) -> bool:
        """live or partially_filled."""
        return self.state in ("live", "partially_filled")

    def avg(self) -> Decimal:
        """Average fill price (0 before a fill)."""
        return self.fill_value / self.acc_fill if self.acc_fill else ZERO


@dataclass(slots=True)
class Algo:
    """An algo order (``/trade/order-algo``)."""

    algo_id: str
    algo_cl_ord_id: str
    cl_ord_id: str
    inst: Instrument
    side: str
    ord_type: str
    sz: Decimal
    td_mode: str
    reduce_only: bool
    c_time: int
    u_time: int
    sl_trigger: Decimal | None = None
    sl_ord_px: str = ""
    sl_type: str = "last"
    tp_trigger: Decimal | None = None
    tp_ord_px: str = ""
    tp_type: str = "last"
    trigger: Decimal | None = None
    order_px: str = ""
    trigger_type: str = "last"
    trigger_up: bool = True  # a trigger order fires when the price rises to it (else falls)
    tag: str = ""
    state: str = "live"
    ord_id: str = ""
    actual_sz: str = ""
    actual_px: str = ""
    actual_side: str = ""
    trigger_time: str = ""
    fail_code: str = ""
    visible_ms: int = 0  # the ``invisible`` fault: looked up and listed from this server time


@dataclass(slots=True)
class Position:
    """Net position of one instrument: signed contracts, average price, margin mode, leverage."""

    pos: Decimal
    avg: Decimal
    mgn_mode: str
    lever: int
    c_time: int
    u_time: int
    realized: Decimal = ZERO


@dataclass(slots=True)
class Fill:
    """One fill as /trade/fills reports it."""

    trade_id: str
    ord_id: str
    cl_ord_id: str
    inst: Instrument
    side: str
    sz: Decimal
    px: Decimal
    fee: Decimal
    ts: int
    maker: bool


@dataclass(slots=True)
class Fault:
    """One armed fault hitting the next ``count`` requests whose path contains ``path``."""

    kind: str
    path: str = ""
    count: int = 1


@dataclass
class FakeOkx:
    """The fake OKX account and its REST API (see the module docstring).

    Args: data_dir (the bundled candles), symbols (ccxt unified, ``XRP/USDT:USDT``), cash (USDT
    cash balance), slippage_pct (against the taker on market fills), timeframe of the price path,
    start_index (first candle), stall_s (how long ``timeout_after_accept`` stalls).
    """

    data_dir: Path
    symbols: tuple[str, ...] = ("XRP/USDT:USDT",)
    cash: Decimal = Decimal(10_000)
    slippage_pct: Decimal = Decimal("0.02")
    timeframe: str = "1m"
    start_index: int = 100
    stall_s: float = 0.5
    invisible_ms: int = 1_500
    pos_mode: str = "net_mode"
    acct_lv: str = "2"
    perm: str = "read_only,trade"

    base_url: str = field(init=False, default="")
    requests: Counter = field(init=False, default_factory=Counter)
    bodies: list = field(init=False, default_factory=list)  # (method, path, body) of private POSTs
    accepted_ids: list[str] = field(init=False, default_factory=list)
    rejected: Counter = field(init=False, default_factory=Counter)  # sCode → count
    faults_injected: Counter = field(init=False, default_factory=Counter)  # fault kind → times it hit

    def __post_init__(self) -> None:
        self.instruments: dict[str, Instrument] = {}
        for base, spec in INSTRUMENTS.items():
            inst = Instrument(f"{base}-USDT-SWAP", f"{base}/USDT:USDT", base, Decimal(spec["ctVal"]),
                              Decimal(spec["lotSz"]), Decimal(spec["minSz"]), Decimal(spec["tickSz"]), int(spec["lever"]))
            self.instruments[inst.inst_id] = inst
        self.by_symbol = {i.symbol: i for i in self.instruments.values()}
        self.series: dict[str, CandleSeries] = {s: load_candles(self.data_dir, s, self.timeframe) for s in self.symbols}
        self.index = self.start_index
        self.last: dict[str, Decimal] = {}
        self.mark_offset: dict[str, Decimal] = {}
        self.orders: dict[str, VOrder] = {}
        self.algos: dict[str, Algo] = {}
        self.positions: dict[str, Position] = {}
        self.fills: list[Fill] = []
        self.leverage: dict[tuple[str, str], int] = {}  # (instId, mgnMode) → lever
        self.used_ids: set[str] = set()  # every clOrdId / algoClOrdId ever accepted
        self._ids = itertools.count(600_000_000_000_000_001)
        self._faults: list[Fault] = []
        self._order_faults: list[str] = []  # armed ``partial`` / ``invisible`` (next order each)
        self.trigger_faults: list[str] = []  # armed ``stop_fail`` / ``stop_partial`` (next trigger each)
        self.wall_ms = lambda: int(time.time() * 1000)  # the server clock (a test may bind its own)
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        for symbol in self.symbols:
            self.last[symbol] = Decimal(str(self.series[symbol].close[self.index]))

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> str:
        """Serve on 127.0.0.1 (a free port); returns the base URL."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving (stalled replies are released)."""
        self._stop.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def inject(self, kind: str, path: str = "", count: int = 1) -> None:
        """Arm a fault (see the module docstring): an HTTP fault or ``timeout_after_accept`` for
        the next ``count`` requests whose path contains ``path``; ``partial`` / ``invisible`` for
        the next ``count`` orders accepted; a trigger fault for the next ``count`` triggers."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        if kind in TRIGGER_FAULTS:
            self.trigger_faults.extend([kind] * count)
        elif kind in ("partial", "invisible"):
            self._order_faults.extend([kind] * count)
        else:
            self._faults.append(Fault(kind, path, count))

    def clear_faults(self) -> None:
        """Disarm every pending fault."""
        self._faults.clear()
        self._order_faults.clear()
        self.trigger_faults.clear()

    def _take_order_fault(self, kind: str) -> bool:
        if kind in self._order_faults:
            self._order_faults.remove(kind)
            self.faults_injected[kind] += 1
            return True
        return False

    # ------------------------------------------------------------- helpers
    def _id(self) -> str:
        return str(next(self._ids))

    def now_ms(self) -> int:
        """The server clock (epoch ms): :attr:`wall_ms`."""
        return self.wall_ms()

    def _visible(self, item: "VOrder | Algo") -> bool:
        return self.now_ms() >= item.visible_ms

    def mark(self, symbol: str) -> Decimal:
        """Mark price: the last price plus the symbol's configured offset."""
        return self.last[symbol] + self.mark_offset.get(symbol, ZERO)

    def _ref(self, symbol: str, kind: str) -> Decimal:
        return self.mark(symbol) if kind in ("mark", "index") else self.last[symbol]

    def position(self, symbol: str) -> Decimal:
        """Signed contracts held on ``symbol`` (0 when flat)."""
        p = self.positions.get(self.by_symbol[symbol].inst_id)
        return p.pos if p else ZERO

    def open_orders(self, symbol: str | None = None) -> list[VOrder]:
        """Open regular orders, oldest first (also those the ``invisible`` fault hides)."""
        return [o for o in self.orders.values() if o.open and (symbol is None or o.inst.symbol == symbol)]

    def open_algos(self, symbol: str | None = None) -> list[Algo]:
        """Live algo orders, oldest first (also those the ``invisible`` fault hides)."""
        return [a for a in self.algos.values() if a.state == "live" and (symbol is None or a.inst.symbol == symbol)]

    # ------------------------------------------------------------- inspection (tests)
    @staticmethod
    def client_id(order: "VOrder") -> str:
        """The client id the account shows for a regular order: its ``clOrdId``, or for an order a
        triggered algo placed (no ``clOrdId``) the algo's ``algoClOrdId``."""
        return order.cl_ord_id or order.algo_cl_ord_id

    def open_ids(self, symbol: str | None = None, *, shown: bool = False) -> set[str]:
        """Client ids of what the account holds open: live algo orders and open regular orders
        (``shown``: only those the API shows, i.e. not hidden by the ``invisible`` fault)."""
        return {a.algo_cl_ord_id for a in self.open_algos(symbol) if not shown or self._visible(a)} | {
            self.client_id(o) for o in self.open_orders(symbol) if not shown or self._visible(o)}

    def alive_ids(self, symbol: str | None = None) -> set[str]:
        """Client ids of orders still alive: :meth:`open_ids` plus algo orders triggered whose
        order still works."""
        working = {o.algo_id for o in self.open_orders(symbol) if o.algo_id}
        return self.open_ids(symbol) | {a.algo_cl_ord_id for a in self.algos.values()
                                        if a.state == "effective" and a.algo_id in working}

    def working_stop(self, symbol: str, prefix: str = "") -> bool:
        """True when a reduce-only stop-loss algo order of ``prefix`` works on ``symbol``: live
        (waiting for its trigger), or triggered with its order still working."""
        working = {o.algo_id for o in self.open_orders(symbol) if o.algo_id}
        return any(a.sl_trigger is not None and a.reduce_only and a.algo_cl_ord_id.startswith(prefix)
                   and a.inst.symbol == symbol and (a.state == "live" or (a.state == "effective" and a.algo_id in working))
                   for a in self.algos.values())

    def accepted_twice(self) -> list[str]:
        """Client ids accepted more than once (a duplicated order: what must never happen)."""
        return sorted(cid for cid, n in Counter(self.accepted_ids).items() if n > 1)

    def candle(self, symbol: str) -> tuple[int, float, float, float, float, float]:
        """The current candle of ``symbol``: (open time ms, open, high, low, close, volume)."""
        s, i = self.series[symbol], self.index
        return int(s.timestamp[i]), s.open[i], s.high[i], s.low[i], s.close[i], s.volume[i]

    def plant_algo(self, symbol: str, algo_cl_ord_id: str, sz: Decimal) -> Algo:
        """A live algo order the client does not know (a leftover of a session whose database was
        lost): a reduce-only take-profit buy, market on trigger, at half the last price."""
        inst = self.by_symbol[symbol]
        now = self.now_ms()
        algo = Algo(self._id(), algo_cl_ord_id, "", inst, "buy", "conditional", sz, "isolated", True, now, now,
                    tp_trigger=(self.last[symbol] / 2 // inst.tick) * inst.tick, tp_ord_px="-1", tp_type="last")
        self.algos[algo.algo_id] = algo
        self.used_ids.add(algo_cl_ord_id)
        self.accepted_ids.append(algo_cl_ord_id)
        return algo

    def place_by_hand(self, symbol: str, cl_ord_id: str, side: str, sz: Decimal, px: Decimal,
                      td_mode: str = "isolated") -> VOrder:
        """Someone else on the account (OKX's app, another bot) rests a limit order."""
        inst = self.by_symbol[symbol]
        now = self.now_ms()
        order = VOrder(self._id(), cl_ord_id, inst, side, "limit", sz, px, td_mode, False, now, now)
        self.orders[order.ord_id] = order
        self.used_ids.add(cl_ord_id)
        self._match(symbol)
        return order

    def balance(self) -> Decimal:
        """USDT cash balance (realised PnL and fees in)."""
        return self.cash

    # ------------------------------------------------------------- matching
    def _fill(self, order: VOrder, sz: Decimal, px: Decimal, maker: bool) -> None:
        inst = order.inst
        fee = -(sz * inst.ct_val * px * (MAKER if maker else TAKER))
        signed = sz if order.side == "buy" else -sz
        now = self.now_ms()
        pos = self.positions.get(inst.inst_id)
        if pos is None or pos.pos == 0:
            self.positions[inst.inst_id] = Position(signed, px, order.td_mode, self.leverage.get(
                (inst.inst_id, order.td_mode), 1), now, now)
        else:
            if (pos.pos > 0) == (signed > 0):  # adds
                total = pos.pos + signed
                pos.avg = (pos.avg * abs(pos.pos) + px * sz) / abs(total)
                pos.pos = total
            else:  # reduces (net mode: a larger order flips)
                closing = min(abs(signed), abs(pos.pos))
                pnl = (px - pos.avg) * closing * inst.ct_val * (1 if pos.pos > 0 else -1)
                self.cash += pnl
                pos.realized += pnl
                rest = abs(signed) - closing
                pos.pos += signed if rest == 0 else (-pos.pos)
                if rest > 0:
                    pos.pos = rest if signed > 0 else -rest
                    pos.avg = px
            pos.u_time = now
            if pos.pos == 0:
                del self.positions[inst.inst_id]
        self.cash += fee
        order.acc_fill += sz
        order.fill_value += sz * px
        order.fee += fee
        order.state = "filled" if order.acc_fill >= order.sz else "partially_filled"
        order.u_time = now
        self.fills.append(Fill(self._id(), order.ord_id, order.cl_ord_id, inst, order.side, sz, px, fee, now, maker))

    def _reducible(self, inst: Instrument, side: str) -> Decimal:
        pos = self.positions.get(inst.inst_id)
        if pos is None or pos.pos == 0 or (pos.pos > 0) == (side == "buy"):
            return ZERO
        return abs(pos.pos)

    def _market_px(self, order: VOrder) -> Decimal:
        last = self.last[order.inst.symbol]
        slip = last * self.slippage_pct / 100
        px = last + slip if order.side == "buy" else last - slip
        return (px / order.inst.tick).to_integral_value() * order.inst.tick

    def _market_fill(self, order: VOrder, fraction: Decimal | None = None) -> None:
        """Fill a market order at the last price (slippage against the taker); ``fraction``: fill
        only that share (a thin book: the price limit stops it) and cancel the rest."""
        px = self._market_px(order)
        sz = order.sz
        if order.reduce_only:
            sz = min(sz, self._reducible(order.inst, order.side))
        if fraction is not None and sz > 0:
            part = (sz * fraction / order.inst.lot).to_integral_value(rounding="ROUND_DOWN") * order.inst.lot
            if order.inst.min_sz <= part < sz:
                self._fill(order, part, px, maker=False)
                order.state, order.cancel_source = "canceled", "price_limit"
                return
        if sz > 0:
            self._fill(order, sz, px, maker=False)
        if order.acc_fill < order.sz:  # a reduce-only remainder with nothing left to reduce
            order.state = "canceled" if order.acc_fill == 0 else "filled" if order.acc_fill >= order.sz else "canceled"
            order.cancel_source = "reduce_only"

    def advance(self, steps: int = 1) -> None:
        """Move every symbol ``steps`` real candles on: resting limit orders fill and algo orders
        trigger along each candle's path (stop-losses before take-profits at the same price)."""
        for _ in range(steps):
            self.index += 1
            for symbol in self.symbols:
                s = self.series[symbol]
                o, h, low, c = (Decimal(str(x)) for x in (s.open[self.index], s.high[self.index],
                                                          s.low[self.index], s.close[self.index]))
                path = [o, low, h, c] if (o - low) <= (h - o) else [o, h, low, c]
                for price in path:
                    self.last[symbol] = price
                    self._match(symbol)
                self.last[symbol] = c

    def set_price(self, symbol: str, price: Decimal) -> None:
        """Move ``symbol``'s last price to ``price`` now (orders and triggers react)."""
        self.last[symbol] = price
        self._match(symbol)

    def _match(self, symbol: str) -> None:
        last = self.last[symbol]
        for algo in sorted(self.open_algos(symbol), key=lambda a: (a.sl_trigger is None, a.c_time)):
            self._maybe_trigger(algo)
        for order in self.open_orders(symbol):
            if order.ord_type != "limit":
                continue
            crossed = last <= order.px if order.side == "buy" else last >= order.px
            if crossed:
                sz = order.sz - order.acc_fill
                if order.reduce_only:
                    sz = min(sz, self._reducible(order.inst, order.side))
                    if sz == 0:
                        order.state, order.cancel_source = "canceled", "reduce_only"
                        continue
                self._fill(order, sz, order.px, maker=True)

    def _maybe_trigger(self, algo: Algo) -> None:
        symbol = algo.inst.symbol
        hit, ord_px, which = False, "", ""
        if algo.sl_trigger is not None:
            ref = self._ref(symbol, algo.sl_type)
            hit = ref <= algo.sl_trigger if algo.side == "sell" else ref >= algo.sl_trigger
            ord_px, which = algo.sl_ord_px, "sl"
        if not hit and algo.tp_trigger is not None:
            ref = self._ref(symbol, algo.tp_type)
            hit = ref >= algo.tp_trigger if algo.side == "sell" else ref <= algo.tp_trigger
            ord_px, which = algo.tp_ord_px, "tp"
        if not hit and algo.trigger is not None:
            ref = self._ref(symbol, algo.trigger_type)
            hit = (ref >= algo.trigger) if algo.trigger_up else (ref <= algo.trigger)
            ord_px, which = algo.order_px, ""
        if not hit:
            return
        now = self.now_ms()
        algo.trigger_time, algo.u_time, algo.actual_side = str(now), now, which
        if algo.reduce_only and self._reducible(algo.inst, algo.side) == 0:
            algo.state, algo.fail_code = "order_failed", "51169"  # nothing to reduce
            return
        fault = self.trigger_faults.pop(0) if self.trigger_faults else ""
        if fault:
            self.faults_injected[fault] += 1
        if fault == "stop_fail":
            algo.state, algo.fail_code = "order_failed", "51006"  # the order it placed was refused
            return
        order = VOrder(self._id(), "", algo.inst, algo.side, "market" if ord_px == "-1" else "limit", algo.sz,
                       ZERO if ord_px == "-1" else Decimal(ord_px), algo.td_mode, algo.reduce_only, now, now,
                       algo_id=algo.algo_id, algo_cl_ord_id=algo.algo_cl_ord_id)
        self.orders[order.ord_id] = order
        algo.state, algo.ord_id = "effective", order.ord_id
        algo.actual_sz, algo.actual_px = str(algo.sz), ord_px
        if order.ord_type == "market" and fault == "stop_partial":
            self._market_fill(order, Decimal("0.5"))  # price-limit protection: the rest is cancelled
        elif order.ord_type == "market":
            self._market_fill(order)
        else:
            self._match(symbol)

    # ------------------------------------------------------------- HTTP
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests[f"{request.method} {path}"] += 1
        for fault in self._faults:
            if fault.path in path and fault.count > 0 and fault.kind != "timeout_after_accept":
                fault.count -= 1
                self.faults_injected[fault.kind] += 1
                if fault.kind == "5xx":
                    return web.Response(status=503, text="Service Unavailable")
                return web.json_response({"code": "50011", "msg": "Too Many Requests", "data": []}, status=429)
        body = await request.text()
        try:
            if not path.startswith("/api/v5/"):
                raise OkxReject("404", "Not Found", 404)
            route = path[len("/api/v5/"):]
            query = dict(parse_qsl(request.query_string, keep_blank_values=True))
            if not route.startswith(("public/", "market/")):
                self._authenticate(request, body)
            handler = self._routes().get((request.method, route))
            if handler is None:
                raise OkxReject("404", f"{request.method} {route} is not served by this fake", 404)
            payload = json.loads(body) if request.method == "POST" and body else {}
            if request.method == "POST":
                self.bodies.append((request.method, route, payload))
            data = handler(query if request.method == "GET" else payload)
        except OkxReject as exc:
            self.rejected[exc.code] += 1
            return web.json_response({"code": exc.code, "msg": exc.msg, "data": []}, status=exc.http)
        except _OrderRejects as exc:
            for code in exc.codes:
                self.rejected[code] += 1
            return web.json_response({"code": "1", "msg": "All operations failed", "data": exc.rows})
        for fault in self._faults:
            if fault.kind == "timeout_after_accept" and fault.path in path and fault.count > 0:
                fault.count -= 1
                self.faults_injected[fault.kind] += 1
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=self.stall_s)
                except TimeoutError:
                    pass
        return web.json_response({"code": "0", "msg": "", "data": data})

    def _authenticate(self, request: web.Request, body: str) -> None:
        h = request.headers
        key, passphrase = h.get("OK-ACCESS-KEY"), h.get("OK-ACCESS-PASSPHRASE")
        stamp, sign = h.get("OK-ACCESS-TIMESTAMP"), h.get("OK-ACCESS-SIGN")
        if not key:
            raise OkxReject("50103", 'Request header "OK-ACCESS-KEY" cannot be empty.', 401)
        if not passphrase:
            raise OkxReject("50104", 'Request header "OK-ACCESS-PASSPHRASE" cannot be empty.', 401)
        if not stamp or not sign:
            raise OkxReject("50107", 'Request header "OK-ACCESS-TIMESTAMP" cannot be empty.', 401)
        if key != API_KEY:
            raise OkxReject("50111", "Invalid OK-ACCESS-KEY.", 401)
        if passphrase != PASSPHRASE:
            raise OkxReject("50105", 'Request header "OK-ACCESS-PASSPHRASE" incorrect.', 401)
        try:
            when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            raise OkxReject("50112", "Invalid OK-ACCESS-TIMESTAMP.", 401) from None
        if abs(when.timestamp() * 1000 - time.time() * 1000) > 30_000:  # ccxt signs with the real clock
            raise OkxReject("50102", "Timestamp request expired.", 401)
        path_query = request.path + (f"?{request.query_string}" if request.query_string else "")
        expected = base64.b64encode(hmac.new(API_SECRET.encode(), f"{stamp}{request.method}{path_query}{body}".encode(),
                                             hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, sign):
            raise OkxReject("50113", "Invalid Sign.", 401)
        if h.get("x-simulated-trading") != "1":
            raise OkxReject("50101", "APIKey does not match current environment.", 401)
        if request.method == "POST" and "application/json" not in h.get("Content-Type", ""):
            raise OkxReject("50006", "Invalid Content-Type, please use 'application/json' format.", 400)

    def _routes(self) -> dict:
        return {
            ("GET", "public/time"): lambda q: [{"ts": str(self.now_ms())}],
            ("GET", "public/instruments"): self._instruments,
            ("GET", "market/ticker"): self._ticker,
            ("GET", "market/tickers"): lambda q: [self._ticker_row(s) for s in self.symbols],
            ("GET", "market/candles"): self._candles,
            ("GET", "market/books"): self._books,
            ("GET", "market/history-candles"): self._candles,
            ("GET", "public/funding-rate"): self._funding,
            ("GET", "public/mark-price"): lambda q: [{"instType": "SWAP", "instId": self._inst(q).inst_id,
                                                      "markPx": str(self.mark(self._inst(q).symbol)),
                                                      "ts": str(self.now_ms())}],
            ("GET", "account/config"): self._config,
            ("GET", "account/balance"): self._balance,
            ("GET", "account/positions"): self._positions,
            ("POST", "account/set-leverage"): self._set_leverage,
            ("POST", "account/set-position-mode"): self._set_position_mode,
            ("GET", "account/trade-fee"): lambda q: [{"instType": "SWAP", "maker": "-0.0002", "taker": "-0.0005",
                                                      "level": "Lv1", "ts": str(self.now_ms())}],
            ("POST", "trade/order"): lambda b: self._place_batch([b]),
            ("POST", "trade/batch-orders"): self._place_batch,
            ("GET", "trade/order"): self._get_order,
            ("GET", "trade/orders-pending"): self._pending,
            ("POST", "trade/cancel-order"): lambda b: self._cancel_batch([b]),
            ("POST", "trade/cancel-batch-orders"): self._cancel_batch,
            ("POST", "trade/order-algo"): self._place_algo,
            ("GET", "trade/order-algo"): self._get_algo,
            ("GET", "trade/orders-algo-pending"): self._algo_pending,
            ("POST", "trade/cancel-algos"): self._cancel_algos,
            ("GET", "trade/fills"): self._fills,
            ("GET", "trade/fills-history"): self._fills,
        }

    # ------------------------------------------------------------- public
    def _inst(self, q: dict) -> Instrument:
        inst_id = q.get("instId")
        if not inst_id:
            raise OkxReject("50014", "Parameter instId can not be empty.")
        if inst_id not in self.instruments:
            raise OkxReject("51001", "Instrument ID does not exist.")
        return self.instruments[inst_id]

    def _instruments(self, q: dict) -> list:
        if q.get("instType") != "SWAP":
            return []  # this fake lists swaps only
        return [i.row() for i in self.instruments.values()]

    def _ticker_row(self, symbol: str) -> dict:
        inst = self.by_symbol[symbol]
        last = self.last.get(symbol)
        if last is None:
            raise OkxReject("51001", "Instrument ID does not exist.")
        tick = inst.tick
        s = self.series[symbol]
        vol = sum(Decimal(str(v)) for v in s.volume[max(0, self.index - 1439):self.index + 1])
        return {"instType": "SWAP", "instId": inst.inst_id, "last": str(last), "lastSz": "1",
                "askPx": str(last + tick), "askSz": "100", "bidPx": str(last - tick), "bidSz": "100",
                "open24h": str(Decimal(str(s.open[max(0, self.index - 1439)]))), "high24h": str(last), "low24h": str(last),
                "volCcy24h": str(vol), "vol24h": str(vol / inst.ct_val), "ts": str(self.now_ms()),
                "sodUtc0": str(last), "sodUtc8": str(last)}

    BOOK_LEVELS = 400  # OKX: at most 400 levels per side on /market/books

    def _books(self, q: dict) -> list:
        """``GET /market/books``: ``instId`` (required), ``sz`` levels per side (1–400, default 1).
        Levels ``[px, sz (contracts), "0" (deprecated), number of orders]``, asks ascending from
        the ticker's ``askPx`` (last + tick), bids descending from its ``bidPx`` (last − tick)."""
        extra = set(q) - {"instId", "sz"}
        if extra:
            raise OkxReject("51000", f"Parameter {min(extra)} error")
        inst = self._inst(q)
        if inst.symbol not in self.symbols:
            raise OkxReject("51001", "Instrument ID does not exist.")
        raw = q.get("sz", "1")
        if not re.fullmatch(r"[0-9]+", str(raw)) or not 1 <= int(raw) <= self.BOOK_LEVELS:
            raise OkxReject("51000", "Parameter sz error")
        last, tick = self.last[inst.symbol], inst.tick
        depth = int(raw)
        asks = [[str(last + tick * (i + 1)), str(inst.lot * 1000 * (i + 1)), "0", str(i + 1)] for i in range(depth)]
        bids = [[str(last - tick * (i + 1)), str(inst.lot * 1000 * (i + 1)), "0", str(i + 1)] for i in range(depth)]
        return [{"asks": asks, "bids": bids, "ts": str(self.now_ms())}]

    def _ticker(self, q: dict) -> list:
        inst = self._inst(q)
        if inst.symbol not in self.symbols:
            raise OkxReject("51001", "Instrument ID does not exist.")
        return [self._ticker_row(inst.symbol)]

    def _candles(self, q: dict) -> list:
        inst = self._inst(q)
        if q.get("bar") not in ("1m", None):
            raise OkxReject("51000", "Parameter bar error")
        limit = int(q.get("limit") or 100)
        if not 1 <= limit <= 300:
            raise OkxReject("51000", "Parameter limit error")
        s = self.series[inst.symbol]
        rows = []
        for i in range(self.index, max(-1, self.index - limit), -1):  # newest first, the last one forming
            rows.append([str(int(s.timestamp[i])), str(s.open[i]), str(s.high[i]), str(s.low[i]), str(s.close[i]),
                         str(Decimal(str(s.volume[i])) / inst.ct_val), str(s.volume[i]), "0",
                         "0" if i == self.index else "1"])
        return rows

    def _funding(self, q: dict) -> list:
        inst = self._inst(q)
        nxt = (self.now_ms() // 28_800_000 + 1) * 28_800_000
        return [{"instType": "SWAP", "instId": inst.inst_id, "fundingRate": "0.0001", "fundingTime": str(nxt),
                 "nextFundingRate": "", "nextFundingTime": str(nxt + 28_800_000), "method": "current_period",
                 "ts": str(self.now_ms())}]

    # ------------------------------------------------------------- account
    def _config(self, q: dict) -> list:
        return [{"uid": "44705892343619584", "mainUid": "44705892343619584", "acctLv": self.acct_lv,
                 "posMode": self.pos_mode, "autoLoan": False, "greeksType": "PA", "level": "Lv1", "levelTmp": "",
                 "ctIsoMode": "automatic", "mgnIsoMode": "automatic", "label": "optiflow-test", "roleType": "0",
                 "perm": self.perm, "ip": "", "kycLv": "1", "opAuth": "0"}]

    def _upl(self, inst: Instrument, pos: Position) -> Decimal:
        return (self.mark(inst.symbol) - pos.avg) * pos.pos * inst.ct_val

    def _balance(self, q: dict) -> list:
        upl = sum((self._upl(self.instruments[i], p) for i, p in self.positions.items()), ZERO)
        frozen = sum((abs(p.pos) * self.instruments[i].ct_val * p.avg / p.lever for i, p in self.positions.items()), ZERO)
        eq = self.cash + upl
        detail = {"ccy": "USDT", "eq": str(eq), "cashBal": str(self.cash), "availBal": str(self.cash - frozen),
                  "availEq": str(eq - frozen), "frozenBal": str(frozen), "ordFrozen": "0", "upl": str(upl),
                  "isoEq": str(frozen), "disEq": str(eq), "eqUsd": str(eq), "uTime": str(self.now_ms())}
        return [{"totalEq": str(eq), "adjEq": str(eq), "isoEq": str(frozen), "uTime": str(self.now_ms()),
                 "details": [detail]}]

    def _positions(self, q: dict) -> list:
        wanted = set(q["instId"].split(",")) if q.get("instId") else None
        rows = []
        for inst_id, p in self.positions.items():
            if wanted is not None and inst_id not in wanted:
                continue
            inst = self.instruments[inst_id]
            mark = self.mark(inst.symbol)
            margin = abs(p.pos) * inst.ct_val * p.avg / p.lever
            liq = p.avg * (1 - Decimal(1) / p.lever) if p.pos > 0 else p.avg * (1 + Decimal(1) / p.lever)
            rows.append({"instType": "SWAP", "instId": inst_id, "mgnMode": p.mgn_mode, "posId": "3" + inst_id[:3],
                         "posSide": "net", "pos": str(p.pos), "availPos": str(abs(p.pos)), "avgPx": str(p.avg),
                         "upl": str(self._upl(inst, p)), "uplRatio": "0", "lever": str(p.lever),
                         "liqPx": str(liq.quantize(inst.tick)), "markPx": str(mark), "last": str(self.last[inst.symbol]),
                         "margin": str(margin) if p.mgn_mode == "isolated" else "", "imr": "" if p.mgn_mode == "isolated"
                         else str(margin), "mmr": str(margin / 10), "notionalUsd": str(abs(p.pos) * inst.ct_val * mark),
                         "ccy": "USDT", "realizedPnl": str(p.realized), "cTime": str(p.c_time), "uTime": str(p.u_time),
                         "adl": "1", "mgnRatio": "10", "interest": "0", "tradeId": "", "optVal": ""})
        return rows

    def _set_leverage(self, b: dict) -> list:
        extra = set(b) - {"instId", "ccy", "lever", "mgnMode", "posSide"}
        if extra:
            raise OkxReject("51000", f"Parameter {min(extra)} error")
        inst = self._inst(b)
        mode = b.get("mgnMode")
        if mode not in ("isolated", "cross"):
            raise OkxReject("51000", "Parameter mgnMode error")
        if b.get("posSide") not in (None, "net"):
            raise OkxReject("51000", "Parameter posSide error")  # net mode
        try:
            lever = int(Decimal(str(b.get("lever"))))
        except (ArithmeticError, ValueError, TypeError):
            raise OkxReject("51000", "Parameter lever error") from None
        if not 1 <= lever <= inst.max_lever:
            raise OkxReject("59102", "Leverage exceeds the maximum leverage. Please adjust the leverage")
        self.leverage[(inst.inst_id, mode)] = lever
        pos = self.positions.get(inst.inst_id)
        if pos is not None and pos.mgn_mode == mode:
            pos.lever = lever
        return [{"lever": str(lever), "mgnMode": mode, "instId": inst.inst_id, "posSide": "net"}]

    def _set_position_mode(self, b: dict) -> list:
        if b.get("posMode") not in ("net_mode", "long_short_mode"):
            raise OkxReject("51000", "Parameter posMode error")
        if self.positions or self.open_orders() or self.open_algos():
            raise OkxReject("59000", "Settings failed. Close any open positions or orders before modifying settings.")
        self.pos_mode = b["posMode"]
        return [{"posMode": self.pos_mode}]

    # ------------------------------------------------------------- orders
    def _check_common(self, b: dict, allowed: set) -> Instrument:
        extra = set(b) - allowed
        if extra:
            raise _Row("51000", f"Parameter {min(extra)} error")
        if not b.get("instId"):
            raise _Row("50014", "Parameter instId can not be empty.")
        inst = self.instruments.get(b["instId"])
        if inst is None or inst.symbol not in self.symbols:
            raise _Row("51001", "Instrument ID does not exist.")
        if b.get("tdMode") not in ("isolated", "cross"):
            raise _Row("51000", "Parameter tdMode error")
        if b.get("side") not in ("buy", "sell"):
            raise _Row("51000", "Parameter side error")
        if self.pos_mode == "net_mode" and b.get("posSide") not in (None, "net"):
            raise _Row("51000", "Parameter posSide error")
        if self.pos_mode == "long_short_mode" and b.get("posSide") not in ("long", "short"):
            raise _Row("51000", "Parameter posSide error")
        pos = self.positions.get(inst.inst_id)
        if pos is not None and pos.mgn_mode != b["tdMode"]:
            raise _Row("51000", "Parameter tdMode error")  # the open position is in the other margin mode
        try:
            sz = Decimal(str(b.get("sz")))
        except ArithmeticError:
            raise _Row("51000", "Parameter sz error") from None
        if not sz.is_finite() or sz <= 0:
            raise _Row("51000", "Parameter sz error")
        if sz % inst.lot != 0:
            raise _Row("51121", f"Order quantity must be a multiple of the lot size {inst.lot}.")
        if sz < inst.min_sz:
            raise _Row("51020", "Your order should meet or exceed the minimum order amount.")
        if "reduceOnly" in b and not isinstance(b["reduceOnly"], bool) and b["reduceOnly"] not in ("true", "false"):
            raise _Row("51000", "Parameter reduceOnly error")
        if b.get("tag") and not re.match(r"^[A-Za-z0-9]{1,16}$", str(b["tag"])):
            raise _Row("51000", "Parameter tag error")
        return inst

    def _check_id(self, value: object, name: str) -> str:
        cid = str(value or "")
        if value is not None and not ID_RE.match(cid):
            raise _Row("51000", f"Parameter {name} error")
        if cid and cid in self.used_ids:
            raise _Row("51016", f"Duplicated {name}")
        return cid

    def _price(self, value: object, inst: Instrument, name: str) -> Decimal:
        try:
            px = Decimal(str(value))
        except ArithmeticError:
            raise _Row("51000", f"Parameter {name} error") from None
        if not px.is_finite() or px <= 0 or px % inst.tick != 0:
            raise _Row("51000", f"Parameter {name} error")
        return px

    def _place_batch(self, rows: list) -> list:
        if not isinstance(rows, list) or not rows or len(rows) > 20:
            raise OkxReject("51000", "Parameter body error")
        out, failed = [], []
        for b in rows:
            try:
                out.append(self._place_one(b))
            except _Row as exc:
                row = {"clOrdId": str(b.get("clOrdId") or ""), "ordId": "", "sCode": exc.code, "sMsg": exc.msg,
                       "tag": str(b.get("tag") or ""), "ts": str(self.now_ms())}
                out.append(row)
                failed.append(exc.code)
        if failed and len(failed) == len(rows):
            raise _OrderRejects(out, failed)
        return out

    def _place_one(self, b: dict) -> dict:
        inst = self._check_common(b, PLACE_KEYS)
        if b.get("ordType") not in ("market", "limit", "post_only", "fok", "ioc", "optimal_limit_ioc"):
            raise _Row("51000", "Parameter ordType error")
        cid = self._check_id(b.get("clOrdId"), "clOrdId")
        sz = Decimal(str(b["sz"]))
        reduce = b.get("reduceOnly") in (True, "true")
        symbol = inst.symbol
        if b["ordType"] == "market":
            if "px" in b:
                raise _Row("51000", "Parameter px error")
            px = ZERO
        else:
            px = self._price(b.get("px"), inst, "px")
            mark = self.mark(symbol)
            if (b["side"] == "buy" and px > mark * Decimal("1.05")) or (b["side"] == "sell" and px < mark * Decimal("0.95")):
                raise _Row("51006", "Order price is not within the price limit")
        if reduce and self._reducible(inst, b["side"]) == 0:
            raise _Row("51169", "Order failed because you don't have any positions in this direction for this "
                                "contract to reduce or close.")
        if not reduce:
            lever = self.leverage.get((inst.inst_id, b["tdMode"]), 1)
            price = px if px > 0 else self.last[symbol]
            need = sz * inst.ct_val * price / lever
            frozen = sum((abs(p.pos) * self.instruments[i].ct_val * p.avg / p.lever for i, p in self.positions.items()), ZERO)
            if need > self.cash - frozen:
                raise _Row("51008", "Order failed. Insufficient USDT margin in account")
        now = self.now_ms()
        order = VOrder(self._id(), cid, inst, b["side"], "limit" if b["ordType"] != "market" else "market", sz, px,
                       b["tdMode"], reduce, now, now, tag=str(b.get("tag") or ""))
        self.orders[order.ord_id] = order
        if cid:
            self.used_ids.add(cid)
            self.accepted_ids.append(cid)
        if self._take_order_fault("invisible"):
            order.visible_ms = now + self.invisible_ms
        if order.ord_type == "market":
            self._market_fill(order, Decimal("0.5") if self._take_order_fault("partial") else None)
        else:
            self._match(symbol)
        return {"clOrdId": cid, "ordId": order.ord_id, "sCode": "0", "sMsg": "Order placed", "tag": order.tag,
                "ts": str(now)}

    def _order_row(self, o: VOrder) -> dict:
        fill = [f for f in self.fills if f.ord_id == o.ord_id]
        last = fill[-1] if fill else None
        return {"instType": "SWAP", "instId": o.inst.inst_id, "ccy": "", "ordId": o.ord_id, "clOrdId": o.cl_ord_id,
                "tag": o.tag, "px": "" if o.ord_type == "market" else str(o.px), "sz": str(o.sz), "pnl": "0",
                "ordType": o.ord_type, "side": o.side, "posSide": "net", "tdMode": o.td_mode,
                "accFillSz": str(o.acc_fill), "fillPx": str(last.px) if last else "", "tradeId": last.trade_id if last else "",
                "fillSz": str(last.sz) if last else "", "fillTime": str(last.ts) if last else "",
                "avgPx": str(o.avg()) if o.acc_fill else "", "state": o.state,
                "lever": str(self.leverage.get((o.inst.inst_id, o.td_mode), 1)), "feeCcy": "USDT", "fee": str(o.fee),
                "rebateCcy": "USDT", "rebate": "0", "category": "normal", "reduceOnly": "true" if o.reduce_only else "false",
                "cancelSource": o.cancel_source, "cancelSourceReason": "", "algoClOrdId": o.algo_cl_ord_id,
                "algoId": o.algo_id, "attachAlgoOrds": [], "tpTriggerPx": "", "slTriggerPx": "", "stpMode": "cancel_maker",
                "source": "", "uTime": str(o.u_time), "cTime": str(o.c_time)}

    def _find_order(self, q: dict) -> VOrder:
        inst = self._inst(q)
        ord_id, cid = q.get("ordId"), q.get("clOrdId")
        if not ord_id and not cid:
            raise OkxReject("51003", "Either client order ID or order ID is required.")
        for o in reversed(list(self.orders.values())):
            if o.inst is inst and ((ord_id and o.ord_id == ord_id) or (cid and not ord_id and o.cl_ord_id == cid)):
                if not self._visible(o):
                    break  # accepted, not shown yet (the ``invisible`` fault)
                return o
        raise OkxReject("51603", "Order does not exist")

    def _get_order(self, q: dict) -> list:
        return [self._order_row(self._find_order(q))]

    def _pending(self, q: dict) -> list:
        inst = self._inst(q) if q.get("instId") else None
        return [self._order_row(o) for o in reversed(self.open_orders(inst.symbol if inst else None))
                if self._visible(o)]

    def _cancel_batch(self, rows: list) -> list:
        out, failed = [], []
        for b in rows:
            cid = str(b.get("clOrdId") or "")
            try:
                if set(b) - {"instId", "ordId", "clOrdId"}:
                    raise _Row("51000", f"Parameter {min(set(b) - {'instId', 'ordId', 'clOrdId'})} error")
                try:
                    order = self._find_order(b)
                except OkxReject as exc:
                    raise _Row("51400" if exc.code == "51603" else exc.code,
                               "Order cancellation failed as the order has been filled, canceled or does not exist."
                               if exc.code == "51603" else exc.msg) from None
                if order.state == "canceled":
                    raise _Row("51401", "Cancellation failed as the order is already canceled.")
                if order.state == "filled":
                    raise _Row("51402", "Cancellation failed as the order is already completed.")
                order.state, order.u_time, order.cancel_source = "canceled", self.now_ms(), "user"
                out.append({"clOrdId": order.cl_ord_id, "ordId": order.ord_id, "sCode": "0", "sMsg": "",
                            "ts": str(self.now_ms())})
            except _Row as exc:
                out.append({"clOrdId": cid, "ordId": str(b.get("ordId") or ""), "sCode": exc.code, "sMsg": exc.msg,
                            "ts": str(self.now_ms())})
                failed.append(exc.code)
        if failed and len(failed) == len(rows):
            raise _OrderRejects(out, failed)
        return out

    # ------------------------------------------------------------- algo orders
    def _place_algo(self, b: dict) -> list:
        try:
            return [self._place_algo_one(b)]
        except _Row as exc:
            raise _OrderRejects([{"algoId": "", "algoClOrdId": str(b.get("algoClOrdId") or ""),
                                  "clOrdId": str(b.get("clOrdId") or ""), "sCode": exc.code, "sMsg": exc.msg,
                                  "tag": str(b.get("tag") or "")}], [exc.code]) from None

    def _trigger_px(self, b: dict, name: str, inst: Instrument) -> Decimal | None:
        if b.get(name) in (None, ""):
            return None
        return self._price(b[name], inst, name)

    def _place_algo_one(self, b: dict) -> dict:
        inst = self._check_common(b, ALGO_KEYS)
        kind = b.get("ordType")
        if kind not in ("conditional", "trigger"):
            raise _Row("51000", "Parameter ordType error")  # oco, trailing, iceberg, twap: not served here
        algo_cid = self._check_id(b.get("algoClOrdId"), "algoClOrdId")
        cl_cid = self._check_id(b.get("clOrdId"), "clOrdId")
        symbol = inst.symbol
        reduce = b.get("reduceOnly") in (True, "true")
        now = self.now_ms()
        algo = Algo(self._id(), algo_cid, cl_cid, inst, b["side"], kind, Decimal(str(b["sz"])), b["tdMode"], reduce,
                    now, now, tag=str(b.get("tag") or ""))
        for t in ("slTriggerPxType", "tpTriggerPxType", "triggerPxType"):
            if b.get(t) not in (None, "last", "mark", "index"):
                raise _Row("51000", f"Parameter {t} error")
        if kind == "conditional":
            for stray in ("triggerPx", "orderPx"):
                if stray in b:
                    raise _Row("51000", f"Parameter {stray} error")
            algo.sl_trigger = self._trigger_px(b, "slTriggerPx", inst)
            algo.tp_trigger = self._trigger_px(b, "tpTriggerPx", inst)
            if algo.sl_trigger is None and algo.tp_trigger is None:
                raise _Row("51000", "Parameter slTriggerPx error")
            if algo.sl_trigger is not None and algo.tp_trigger is not None:
                raise _Row("51000", "Parameter ordType error")  # both: that is an oco
            if algo.sl_trigger is not None:
                if b.get("slOrdPx") in (None, ""):
                    raise _Row("51000", "Parameter slOrdPx error")
                algo.sl_ord_px = "-1" if str(b["slOrdPx"]) == "-1" else str(self._price(b["slOrdPx"], inst, "slOrdPx"))
                algo.sl_type = b.get("slTriggerPxType") or "last"
                ref = self._ref(symbol, algo.sl_type)
                if algo.side == "sell" and algo.sl_trigger >= ref:
                    raise _Row("51280", "SL trigger price must be lower than the last price")
                if algo.side == "buy" and algo.sl_trigger <= ref:
                    raise _Row("51278", "SL trigger price must be higher than the last price")
            else:
                if b.get("tpOrdPx") in (None, ""):
                    raise _Row("51000", "Parameter tpOrdPx error")
                algo.tp_ord_px = "-1" if str(b["tpOrdPx"]) == "-1" else str(self._price(b["tpOrdPx"], inst, "tpOrdPx"))
                algo.tp_type = b.get("tpTriggerPxType") or "last"
                ref = self._ref(symbol, algo.tp_type)
                if algo.side == "sell" and algo.tp_trigger <= ref:
                    raise _Row("51279", "TP trigger price must be higher than the last price")
                if algo.side == "buy" and algo.tp_trigger >= ref:
                    raise _Row("51277", "TP trigger price must be lower than the last price")
        else:
            algo.trigger = self._trigger_px(b, "triggerPx", inst)
            if algo.trigger is None:
                raise _Row("51000", "Parameter triggerPx error")
            if b.get("orderPx") in (None, ""):
                raise _Row("51000", "Parameter orderPx error")  # -1 for a market fill
            algo.order_px = "-1" if str(b["orderPx"]) == "-1" else str(self._price(b["orderPx"], inst, "orderPx"))
            algo.trigger_type = b.get("triggerPxType") or "last"
            algo.trigger_up = algo.trigger > self._ref(symbol, algo.trigger_type)
        if self._take_order_fault("invisible"):
            algo.visible_ms = now + self.invisible_ms
        self.algos[algo.algo_id] = algo
        for used in (algo_cid, cl_cid):
            if used:
                self.used_ids.add(used)
        if algo_cid:
            self.accepted_ids.append(algo_cid)
        return {"algoId": algo.algo_id, "algoClOrdId": algo_cid, "clOrdId": cl_cid, "sCode": "0", "sMsg": "",
                "tag": algo.tag}

    def _algo_row(self, a: Algo) -> dict:
        return {"instType": "SWAP", "instId": a.inst.inst_id, "ccy": "", "ordId": a.ord_id,
                "ordIdList": [a.ord_id] if a.ord_id else [], "algoId": a.algo_id, "clOrdId": a.cl_ord_id,
                "algoClOrdId": a.algo_cl_ord_id, "sz": str(a.sz), "closeFraction": "", "ordType": a.ord_type,
                "side": a.side, "posSide": "net", "tdMode": a.td_mode, "tgtCcy": "", "state": a.state,
                "lever": str(self.leverage.get((a.inst.inst_id, a.td_mode), 1)),
                "tpTriggerPx": str(a.tp_trigger) if a.tp_trigger is not None else "",
                "tpTriggerPxType": a.tp_type if a.tp_trigger is not None else "", "tpOrdPx": a.tp_ord_px,
                "slTriggerPx": str(a.sl_trigger) if a.sl_trigger is not None else "",
                "slTriggerPxType": a.sl_type if a.sl_trigger is not None else "", "slOrdPx": a.sl_ord_px,
                "triggerPx": str(a.trigger) if a.trigger is not None else "",
                "triggerPxType": a.trigger_type if a.trigger is not None else "", "ordPx": a.order_px,
                "actualSz": a.actual_sz, "actualPx": a.actual_px, "actualSide": a.actual_side,
                "triggerTime": a.trigger_time, "tag": a.tag, "reduceOnly": "true" if a.reduce_only else "false",
                "failCode": a.fail_code, "cTime": str(a.c_time), "uTime": str(a.u_time)}

    def _find_algo(self, q: dict) -> Algo:
        algo_id, cid = q.get("algoId"), q.get("algoClOrdId")
        if not algo_id and not cid:
            raise OkxReject("50015", "Either parameter algoId or algoClOrdId is required.")
        for a in reversed(list(self.algos.values())):
            if (algo_id and a.algo_id == algo_id) or (cid and not algo_id and a.algo_cl_ord_id == cid):
                if q.get("instId") and a.inst.inst_id != q["instId"]:
                    continue
                if not self._visible(a):
                    break  # accepted, not shown yet (the ``invisible`` fault)
                return a
        raise OkxReject("51603", "Order does not exist")

    def _get_algo(self, q: dict) -> list:
        return [self._algo_row(self._find_algo(q))]

    def _algo_pending(self, q: dict) -> list:
        kinds = set((q.get("ordType") or "").split(","))
        if not q.get("ordType") or not kinds <= ALGO_PENDING_TYPES or (len(kinds) > 1 and kinds != {"conditional", "oco"}):
            raise OkxReject("51000", "Parameter ordType error")
        inst = self._inst(q) if q.get("instId") else None
        return [self._algo_row(a) for a in reversed(self.open_algos(inst.symbol if inst else None))
                if a.ord_type in kinds and self._visible(a)]

    def _cancel_algos(self, rows: list) -> list:
        if not isinstance(rows, list) or not rows:
            raise OkxReject("51000", "Parameter body error")
        out, failed = [], []
        for b in rows:
            try:
                if set(b) - {"instId", "algoId", "algoClOrdId"}:
                    raise _Row("51000", "Parameter body error")
                if not b.get("instId"):
                    raise _Row("50014", "Parameter instId can not be empty.")
                try:
                    algo = self._find_algo(b)
                except OkxReject as exc:
                    raise _Row("51400" if exc.code == "51603" else exc.code,
                               "Cancellation failed as the order does not exist." if exc.code == "51603" else exc.msg
                               ) from None
                if algo.state != "live":
                    raise _Row("51400", "Cancellation failed as the order does not exist.")
                algo.state, algo.u_time = "canceled", self.now_ms()
                out.append({"algoId": algo.algo_id, "algoClOrdId": algo.algo_cl_ord_id, "sCode": "0", "sMsg": ""})
            except _Row as exc:
                out.append({"algoId": str(b.get("algoId") or ""), "algoClOrdId": str(b.get("algoClOrdId") or ""),
                            "sCode": exc.code, "sMsg": exc.msg})
                failed.append(exc.code)
        if failed and len(failed) == len(rows):
            raise _OrderRejects(out, failed)
        return out

    def _fills(self, q: dict) -> list:
        inst = self._inst(q) if q.get("instId") else None
        limit = int(q.get("limit") or 100)
        rows = [f for f in self.fills if inst is None or f.inst is inst]
        rows = rows[::-1][:limit]  # newest first
        return [{"instType": "SWAP", "instId": f.inst.inst_id, "tradeId": f.trade_id, "ordId": f.ord_id,
                 "clOrdId": f.cl_ord_id, "billId": f.trade_id, "tag": "", "fillPx": str(f.px), "fillSz": str(f.sz),
                 "side": f.side, "posSide": "net", "execType": "M" if f.maker else "T", "feeCcy": "USDT",
                 "fee": str(f.fee), "ts": str(f.ts), "fillTime": str(f.ts), "fillIdxPx": "", "fillMarkPx": ""}
                for f in rows]


class _Row(Exception):
    """One order refused inside a batch: ``sCode`` and ``sMsg``."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


class _OrderRejects(Exception):
    """Every order of a request refused: OKX answers ``code`` 1 with each row's sCode."""

    def __init__(self, rows: list, codes: list) -> None:
        super().__init__("All operations failed")
        self.rows, self.codes = rows, codes
