"""A loopback fake of Binance USDⓈ-M market streams (``wss://fstream.binance.com/market/ws/<n>``)
plugged into :class:`tests.fake_binance.FakeBinance`'s aiohttp app, spoken to by the real
``ccxt.pro.binanceusdm`` client (SPEC S-2).

Protocol (what ccxt.pro sends for ``watch_ohlcv``): a JSON ``{"method": "SUBSCRIBE", "params":
["xrpusdt@kline_1m", ...], "id": n}`` answered ``{"result": null, "id": n}``; then each
:meth:`FakeBinance.advance` pushes, on every socket subscribed to the stream, one ``kline``
event of the real candle that just closed (``"x": true``), the same candle REST ``klines``
serves from then on.

The user-data stream (``/private/ws?listenKey=…``, what ccxt.pro's ``watch_orders`` /
``watch_positions`` dial for USDⓈ-M after ``POST /fapi/v1/listenKey``): every fill the fake
books pushes an ``ORDER_TRADE_UPDATE`` of the order and an ``ACCOUNT_UPDATE`` with the symbol's
position and the wallet balance, as Binance does.

Fault injection: :meth:`drop` closes every socket (code 1001, "going away"); :meth:`refuse`
answers new connections HTTP 503 until :meth:`accept`; :meth:`silence` keeps the sockets open
but sends nothing (no subscription replies, no events) until :meth:`speak`. They apply to the
market streams and the user-data stream alike.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web


@dataclass(slots=True)
class _Socket:
    """One client connection: its subscribed streams and an ordered outbox."""

    ws: web.WebSocketResponse
    streams: set[str] = field(default_factory=set)
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    private: bool = False  # a user-data stream socket


class FakeBinanceStreams:
    """The market-stream side of one :class:`FakeBinance` (``fake.ws``)."""

    def __init__(self, fake) -> None:
        self.fake = fake
        self.sockets: list[_Socket] = []
        self.refusing = False
        self.silent = False
        self.connections = 0  # accepted websocket connections so far
        self.refused = 0
        self.subscriptions = 0  # SUBSCRIBE requests received
        self.events_sent = 0
        self.user_connections = 0  # user-data stream connections accepted
        self.user_events_sent = 0

    def attach(self, app: web.Application) -> None:
        """Add the stream routes (before FakeBinance's catch-all REST route)."""
        app.router.add_get("/market/ws/{stream}", self._serve)
        app.router.add_get("/market/ws", self._serve)
        app.router.add_get("/private/ws", self._serve_private)

    def ccxt_ws_base(self) -> str:
        """What ccxt's ``urls['api']['ws']['linear']`` becomes (ccxt inserts ``/market``)."""
        return self.fake.base_url.replace("http://", "ws://") + "/ws"

    # ------------------------------------------------------------ faults
    async def drop(self) -> None:
        """Close every open socket (the client sees the server go away)."""
        for sock in list(self.sockets):
            await sock.ws.close(code=1001, message=b"going away")

    def refuse(self) -> None:
        """Answer new connections with HTTP 503 until :meth:`accept`."""
        self.refusing = True

    def accept(self) -> None:
        """Accept connections again."""
        self.refusing = False

    def silence(self) -> None:
        """Keep sockets open but send nothing until :meth:`speak`."""
        self.silent = True

    def speak(self) -> None:
        """End :meth:`silence` (events resume with the next candle)."""
        self.silent = False

    async def wait_subscribed(self, count: int = 1, timeout_s: float = 5.0) -> None:
        """Wait until ``count`` SUBSCRIBE requests in total have arrived (raises TimeoutError)."""
        async with asyncio.timeout(timeout_s):
            while self.subscriptions < count:
                await asyncio.sleep(0.01)

    # ----------------------------------------------------------- pushing
    def publish(self) -> None:
        """Push the candle that just closed to every subscriber (called by ``advance``)."""
        if self.silent:
            return
        fake = self.fake
        for symbol in fake.symbols:
            market_id = fake.raw_markets[symbol]["id"]
            stream = f"{market_id.lower()}@kline_{fake.timeframe}"
            ts, o, h, low, c, v = fake.candle(symbol)
            event = {
                "e": "kline", "E": fake.clock.current_ms, "s": market_id,
                "k": {"t": ts, "T": ts + fake._tf_ms() - 1, "s": market_id, "i": fake.timeframe,
                      "f": 0, "L": 0, "o": repr(o), "c": repr(c), "h": repr(h), "l": repr(low),
                      "v": repr(v), "n": 0, "x": True, "q": "0", "V": "0", "Q": "0", "B": "0"},
            }
            for sock in self.sockets:
                if stream in sock.streams:
                    sock.outbox.put_nowait(event)
                    self.events_sent += 1

    def user_fill(self, order, fill, order_id: int, trade_id: int) -> None:
        """Push the user-data events of one booked fill: ``ORDER_TRADE_UPDATE`` (execution type
        TRADE, the order's state after it) and ``ACCOUNT_UPDATE`` (its symbol's position)."""
        if self.silent:
            return
        fake = self.fake
        market_id = fake.raw_markets[fill.symbol]["id"]
        now = fake.clock.current_ms
        state = "FILLED" if order.status.value == "closed" else "PARTIALLY_FILLED"
        kind = "LIMIT" if order.type.value == "LIMIT" else "MARKET"
        self._push_user({"e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": {
            "s": market_id, "c": order.client_order_id, "S": order.side.value.upper(), "o": kind, "f": "GTC",
            "q": str(order.amount), "p": str(order.price or 0), "ap": str(fill.price), "sp": "0", "x": "TRADE",
            "X": state, "i": order_id, "l": str(fill.amount), "z": str(order.filled or fill.amount),
            "L": str(fill.price), "n": str(fill.fee), "N": "USDT", "T": now, "t": trade_id, "b": "0", "a": "0",
            "m": kind == "LIMIT", "R": order.reduce_only, "wt": "CONTRACT_PRICE", "ot": order.type.value,
            "ps": "BOTH", "cp": False, "rp": "0"}})
        position = fake.position(fill.symbol)
        contracts, entry = position if position is not None else (0, 0)
        self._push_user({"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": {
            "m": "ORDER", "B": [{"a": "USDT", "wb": str(fake.sim._balance), "cw": str(fake.sim._balance), "bc": "0"}],
            "P": [{"s": market_id, "pa": str(contracts), "ep": str(entry), "bep": str(entry), "cr": "0", "up": "0",
                   "mt": "isolated", "iw": "0", "ps": "BOTH"}]}})

    def _push_user(self, event: dict) -> None:
        for sock in self.sockets:
            if sock.private:
                sock.outbox.put_nowait(event)
                self.user_events_sent += 1

    # ----------------------------------------------------------- serving
    async def _serve_private(self, request: web.Request) -> web.StreamResponse:
        """The user-data stream: the listenKey the REST side handed out, then events only."""
        if self.refusing:
            self.refused += 1
            return web.Response(status=503, text="Service Unavailable")
        if request.query.get("listenKey") != "fake-listen-key":
            return web.Response(status=400, text="Invalid listenKey")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        sock = _Socket(ws, private=True)
        self.sockets.append(sock)
        self.user_connections += 1
        writer = asyncio.get_running_loop().create_task(self._write(sock))
        try:
            async for _msg in ws:  # the client sends nothing we need to answer
                pass
        finally:
            writer.cancel()
            self.sockets.remove(sock)
        return ws

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        if self.refusing:
            self.refused += 1
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        sock = _Socket(ws)
        self.sockets.append(sock)
        self.connections += 1
        writer = asyncio.get_running_loop().create_task(self._write(sock))
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                request_json = json.loads(msg.data)
                if request_json.get("method") == "SUBSCRIBE":
                    self.subscriptions += 1
                    sock.streams.update(request_json.get("params", []))
                    if not self.silent:
                        sock.outbox.put_nowait({"result": None, "id": request_json.get("id")})
                elif request_json.get("method") == "UNSUBSCRIBE":
                    sock.streams.difference_update(request_json.get("params", []))
                    sock.outbox.put_nowait({"result": None, "id": request_json.get("id")})
        finally:
            writer.cancel()
            self.sockets.remove(sock)
        return ws

    @staticmethod
    async def _write(sock: _Socket) -> None:
        while True:
            message = await sock.outbox.get()
            if sock.ws.closed:
                return
            await sock.ws.send_str(json.dumps(message))
