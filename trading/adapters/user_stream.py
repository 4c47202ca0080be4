"""SPEC S-2 order and position updates over ccxt.pro websockets (``watch_orders``,
``watch_positions``: the exchange's user-data stream), with REST polling as the fall back.

The stream is a trigger, never the book of record: an update about one of our orders wakes the
live loop at once, which reads the fill over REST (the supervisor's fill poll, SPEC O-5) and
places the brackets (O-3, R-10) within a round trip instead of at the next pass; a position
the exchange reports with a size this bot does not hold (closed by hand in the exchange's app,
liquidated) asks for a reconciliation at the next pass instead of in up to 30 s. When the
socket fails the watcher says so (``active`` = "rest") and redials every ``retry_s``; the
supervisor's REST polling every 0.5 s goes on either way, so nothing depends on the socket.

The listenKey (Binance: valid 60 minutes, to be extended every 30–60 minutes; the connection
is dropped at 24 h) is kept alive by this watcher itself, every ``keepalive_s`` (default 30 min):
ccxt's own keep-alive does not always reschedule itself, and a key that expires kills the
stream silently (Binance sends ``listenKeyExpired``, which ccxt ignores, then nothing). A
keep-alive that fails (-1125 "This listenKey does not exist") marks the stream down — REST
polling covers, /runtime says why — forgets the dead key and redials with a new one
(issue 13 defect 6).

Wiring: ``bot.runtime.build_exchange_runtime`` builds it with a keyed ccxt.pro client
(:func:`trading.adapters.ws_feed.make_ws_client` with keys), calls :meth:`start`, waits on :attr:`wake`
between passes, reads :meth:`take_mismatch` after each pass and :meth:`close` on shutdown.
Never imports aiogram.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from trading.ports import PositionBook

log = logging.getLogger(__name__)

WEBSOCKET = "websocket"
REST = "rest"


@dataclass(slots=True)
class UserStreamWatcher:
    """Listens to ``watch_orders`` and ``watch_positions`` in the background (S-2).

    Args:
        engine: the trading core (its tracked orders and positions are compared, never changed);
        client: a keyed ccxt.pro client (closed by :meth:`close`); prefixes: our client order id
        prefixes (SPEC O-2), so updates of other orders on the account do not wake the loop;
        retry_s: wall seconds before redialling a failed stream; keepalive_s: wall seconds
        between listenKey keep-alives (PUT ``/fapi/v1/listenKey``).

    State for /runtime: :attr:`active` ("websocket" once a stream delivered, "rest" while it
    is down or before), :attr:`order_updates`, :attr:`position_updates`, :attr:`last_error`.
    """

    engine: PositionBook
    client: Any
    prefixes: tuple[str, ...]
    retry_s: float = 5.0
    keepalive_s: float = 30 * 60.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    active: str = REST
    order_updates: int = 0
    position_updates: int = 0
    last_error: str = ""
    keepalives: int = 0
    keepalive_failures: int = 0
    _exchange_positions: dict[str, Decimal] = field(default_factory=dict)  # symbol → signed contracts
    _dirty: set[str] = field(default_factory=set)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def start(self) -> None:
        """Start both listeners (on the running loop)."""
        # Updates only: the positions snapshot is the reconciler's REST read (O-5), and ccxt's
        # snapshot wait can stall watch_positions when watch_orders opened the stream first.
        self.client.options["watchPositions"] = {"fetchPositionsSnapshot": False, "awaitPositionsSnapshot": False}
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen(self._orders, "orders")),
                       loop.create_task(self._listen(self._positions, "positions")),
                       loop.create_task(self._keep_alive())]

    async def close(self) -> None:
        """Stop listening and close the client (call once on shutdown)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        await self.client.close()

    def status(self) -> str:
        """What /runtime shows about order and position updates."""
        if self.active == WEBSOCKET:
            return (f"orders and positions: websocket user stream ({self.order_updates} order, "
                    f"{self.position_updates} position updates; REST polling every 0.5 s stays on)")
        reason = f": {self.last_error}" if self.last_error else ""
        return f"orders and positions: REST polling every 0.5 s (user stream down{reason})"

    async def keep_alive_once(self) -> bool:
        """Extend the listenKey (PUT ``/fapi/v1/listenKey``); on failure the stream is marked
        down, the dead key forgotten and the sockets closed, so the listeners redial with a new
        key. Returns True when the key was extended."""
        try:
            await self.client.fapiPrivatePutListenKey()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # -1125 (key expired) or the network: the stream cannot be trusted
            self.keepalive_failures += 1
            self.active = REST
            self.last_error = f"listenKey keep-alive failed ({type(exc).__name__}: the key expired or is unknown)"
            log.warning("user stream: %s; REST polling covers, redialling with a new listenKey", self.last_error)
            self._forget_listen_key()
            await self._reset_client()
            return False
        self.keepalives += 1
        return True

    async def _reset_client(self) -> None:
        """Close the client's sockets (the listeners fail and redial) and reopen it for REST
        (ccxt refuses requests on an instance closed by the user; the redial may need a new
        listenKey)."""
        try:
            await self.client.close()
        except Exception as close_exc:  # a broken socket may fail to close: the redial is fresh anyway
            log.debug("closing the user stream: %s", close_exc)
        self.client.open()

    def _forget_listen_key(self) -> None:
        """Drop ccxt's cached listenKey so the next dial asks for a new one (ccxt reuses a
        cached key for up to its refresh rate, dead or not)."""
        for bucket in ("linear", "future", "swap"):
            options = self.client.options.get(bucket)
            if isinstance(options, dict) and "listenKey" in options:
                self.client.options[bucket] = {**options, "listenKey": None, "lastAuthenticatedTime": 0}

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            await self.keep_alive_once()

    def take_mismatch(self) -> list[str]:
        """Symbols whose latest exchange position (from the stream) differs from this bot's,
        checked after the loop's pass booked what REST shows; each reported once per update.
        The caller asks for a reconciliation (O-5) when this is not empty."""
        engine = self.engine
        mismatched = []
        for symbol in sorted(self._dirty):
            remote = self._exchange_positions.get(symbol, Decimal(0))
            local = sum((p.contracts * p.side.sign for (_b, s), p in engine.positions.items() if s == symbol),
                        Decimal(0))
            if remote != local:
                mismatched.append(symbol)
        self._dirty.clear()
        return mismatched

    # ------------------------------------------------------------ internals
    async def _listen(self, receive, what: str) -> None:
        while True:
            try:
                try:
                    await receive()
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # this listener is being stopped
                    # Its futures were cancelled: the client was reset (a failed keep-alive or the
                    # other listener's failure), the reason is already noted.
                    await asyncio.sleep(self.retry_s)
                    continue
                self.active = WEBSOCKET
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any socket or parse failure: REST polling covers, redial later
                self.active = REST
                self.last_error = f"{what}: {type(exc).__name__}"
                log.warning("user stream (%s) failed: %s; REST polling covers, redial in %s s",
                            what, type(exc).__name__, self.retry_s)
                await self._reset_client()  # a fresh socket on the next dial
                await asyncio.sleep(self.retry_s)

    async def _orders(self) -> None:
        orders = await self.client.watch_orders()
        ours = [o for o in orders if str(o.get("clientOrderId") or "").startswith(self.prefixes)]
        self.order_updates += len(orders)
        if ours:
            self.wake.set()

    async def _positions(self) -> None:
        symbols = set(self.engine.markets)
        positions = await self.client.watch_positions()
        for position in positions:
            symbol = position.get("symbol")
            if symbol not in symbols:
                continue
            contracts = Decimal(str(position.get("contracts") or 0))
            signed = -contracts if position.get("side") == "short" else contracts
            self.position_updates += 1
            self._exchange_positions[symbol] = signed
            self._dirty.add(symbol)
        self.wake.set()
