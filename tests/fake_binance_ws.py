"""A loopback fake of Binance USDⓈ-M market streams (``wss://fstream.binance.com/market/ws/<n>``)
plugged into :class:`tests.fake_binance.FakeBinance`'s aiohttp app, spoken to by the real
``ccxt.pro.binanceusdm`` client (SPEC S-2).

Protocol (what ccxt.pro sends for ``watch_ohlcv``): a JSON ``{"method": "SUBSCRIBE", "params":
["xrpusdt@kline_1m", ...], "id": n}`` answered ``{"result": null, "id": n}``; then each
:meth:`FakeBinance.advance` pushes, on every socket subscribed to the stream, one ``kline``
event of the real candle that just closed (``"x": true``), the same candle REST ``klines``
serves from then on.

The user-data stream (``/private/ws?listenKey=…``, what ccxt.pro's ``watch_orders`` /
``watch_positions`` dial for USDⓈ-M after ``POST /fapi/v1/listenKey``): every order change
pushes an ``ORDER_TRADE_UPDATE``, every conditional order change an ``ALGO_UPDATE``, every fill
an ``ACCOUNT_UPDATE`` with the symbol's position and the wallet balance, as Binance does. A
listenKey is valid for ``FakeBinance.listen_key_ttl_ms`` after its last keep-alive (PUT); once
it expires its sockets get one ``listenKeyExpired`` event and then nothing (Binance's silent
death of a stream that was not kept alive).

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
    listen_key: str = ""
    expired: bool = False  # its listenKey expired: it gets nothing more


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
        self.expired_events_sent = 0  # listenKeyExpired events pushed

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

    def user_event(self, event: dict) -> None:
        """Push one user-data event (``ORDER_TRADE_UPDATE``, ``ALGO_UPDATE``, ``ACCOUNT_UPDATE``,
        built by ``tests.fake_binance_venue.Venue``) to every user-data socket whose listenKey
        is still valid; a socket whose key expired gets ``listenKeyExpired`` once and nothing
        more (it stays open: a silent death, as on Binance)."""
        if self.silent:
            return
        self._push_user(event)

    def _push_user(self, event: dict) -> None:
        self.check_listen_keys()
        for sock in self.sockets:
            if sock.private and not sock.expired:
                sock.outbox.put_nowait(event)
                self.user_events_sent += 1

    def check_listen_keys(self) -> None:
        """Tell every user-data socket whose key expired (called as exchange time passes)."""
        for sock in self.sockets:
            if sock.private and not sock.expired and not self.fake.listen_key_valid(sock.listen_key):
                sock.expired = True
                sock.outbox.put_nowait({"e": "listenKeyExpired", "E": self.fake.wall_ms(),
                                        "listenKey": sock.listen_key})
                self.expired_events_sent += 1

    # ----------------------------------------------------------- serving
    async def _serve_private(self, request: web.Request) -> web.StreamResponse:
        """The user-data stream: the listenKey the REST side handed out, then events only."""
        if self.refusing:
            self.refused += 1
            return web.Response(status=503, text="Service Unavailable")
        key = request.query.get("listenKey", "")
        if not self.fake.listen_key_valid(key):
            return web.Response(status=400, text="Invalid listenKey")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        sock = _Socket(ws, private=True, listen_key=key)
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
