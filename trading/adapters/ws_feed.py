"""SPEC S-2 market data over ccxt.pro websockets (``watch_ohlcv``) with automatic fall back to REST
polling when the socket fails or goes silent, and a switch back when it recovers.

A background task only listens (candles land in a cache, message times are noted); every engine
step happens in :meth:`HybridCandleFeed.step`, on the caller's loop, through the same
:meth:`RestCandleFeed.process_closed` bookkeeping as REST polling: each closed candle exactly once,
in order, whichever source delivered it, never twice across a switch. After a fall back REST
catches up on the candles missed while the socket was down; the pass that switches back polls
REST first, so the socket never leaves a gap (a gap seen later is filled over REST too). A candle
whose last socket update came before its close is read over REST (its values may not be final).
Binance USDⓈ-M only (OKX stays on REST polling).

Wiring in ``bot.runtime.build_exchange_runtime`` (the integrator's part):
  build: ``feed = HybridCandleFeed(engine, RestCandleFeed(engine, gateway),
  make_ws_client(mode, api_base=settings.exchange_api_base), clock)`` (field type ``RestCandleFeed |
  HybridCandleFeed``; paper mode never builds it);
  run(): ``await feed.warm_up(now)`` once instead of ``self.feed.warm_up``, then each pass
  ``await feed.step(now)`` instead of ``poll_safely(self.feed, now)``;
  close(): ``await feed.close()`` before ``exchange.close()``;
  /runtime: ``feed.status()`` → ``{"active": "websocket"|"rest", "last_switch_ms", "last_switch_reason"}``.
``watch_orders`` / ``watch_positions`` are not used: fills and positions stay with the REST
supervisor (``trading.app.reconcile``). Never imports aiogram.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from trading.adapters.ccxt_exchange import check_ccxt_version, guard_client_logs, rebase_url
from trading.adapters.rest_feed import RestCandleFeed, poll_safely
from trading.domain.models import Candle
from trading.ports import CandleEngine, Clock

log = logging.getLogger(__name__)

WEBSOCKET = "websocket"
REST = "rest"


def make_ws_client(mode: str = "demo", *, api_base: str | None = None, ws_base: str | None = None,
                   timeout_ms: int = 10_000, api_key: str | None = None, secret: str | None = None) -> Any:
    """One ``ccxt.pro.binanceusdm`` client: public market streams without keys (klines are
    public); with ``api_key`` / ``secret`` (plain strings from SecretStr at the composition
    root, never logged) also the user-data stream (``watch_orders``, ``watch_positions``).

    Args:
        mode: "demo" (Binance demo trading URLs) or "live"; api_base: scheme://host replacing
        every REST URL (markets are loaded over REST), as ``CcxtExchange``'s ``api_base``;
        ws_base: replaces ``urls['api']['ws']['linear']`` (the USDⓈ-M streams; ccxt turns
        ``<base>/ws`` into ``<base>/market/ws/<n>`` for klines), e.g. ``ws://127.0.0.1:PORT/ws``;
        when omitted with ``api_base`` given, ``api_base`` with ws(s):// and ``/ws`` (a loopback
        fake or a proxy serves both); timeout_ms: REST timeout.
    """
    import ccxt.pro as ccxt_pro  # ccxt's websocket flavour (SPEC S-2)

    config: dict[str, Any] = {
        "enableRateLimit": True, "timeout": timeout_ms,
        "options": {"defaultType": "swap", "fetchCurrencies": False},
    }
    if api_key and secret:
        config.update(apiKey=api_key, secret=secret)
    check_ccxt_version()
    client = ccxt_pro.binanceusdm(config)
    guard_client_logs(client, api_key, secret)  # keys never reach a log (issue 13 defect 8)
    client.maxRetriesOnFailure = 0
    if mode == "demo":
        client.enable_demo_trading(True)
    urls = dict(client.urls["api"])
    if api_base:
        urls = {key: rebase_url(url, api_base) for key, url in urls.items()}
    if ws_base is None and api_base:
        ws_base = api_base.rstrip("/").replace("http", "ws", 1) + "/ws"
    if ws_base:
        ws = dict(urls["ws"])
        ws["linear"] = ws_base
        urls["ws"] = ws
    client.urls["api"] = urls
    return client


@dataclass(slots=True)
class HybridCandleFeed:
    """Closed candles from the websocket while it is healthy, from REST polling otherwise (S-2).

    Args:
        engine: the trading core; rest_feed: the REST poller (its warm-up, its candle bookkeeping
        and its processing are shared); ws_client: a ccxt.pro client (:func:`make_ws_client`),
        closed by :meth:`close`; clock: epoch ms UTC (message times and switches use it);
        silence_timeout_ms: no websocket message for this long → fall back to REST (Binance pushes
        kline updates every 250 ms, so 10 s of silence means a dead socket; a fake that pushes
        once per candle needs about 2× the timeframe); retry_ms: wait before reconnecting after
        a failure; close_grace_ms: a websocket candle counts as closed once a later candle of the
        same feed has arrived or this long after its close time (its final update has come);
        final_slack_ms: a closed candle whose last socket update was received earlier than this
        before its close time may not hold its final values (a hiccup at the close): it is read
        over REST instead (ccxt drops Binance's "closed" flag ``x``).

    State for /runtime: :attr:`active` ("websocket" or "rest"), :attr:`last_switch_ms`,
    :attr:`last_switch_reason`, :attr:`switches`; :attr:`messages` counts websocket updates.
    """

    engine: CandleEngine
    rest_feed: RestCandleFeed
    ws_client: Any
    clock: Clock
    silence_timeout_ms: int = 10_000
    retry_ms: int = 5_000
    close_grace_ms: int = 1_000
    final_slack_ms: int = 2_000
    active: str = WEBSOCKET
    last_switch_ms: int | None = None
    last_switch_reason: str = ""
    switches: int = 0
    messages: int = 0
    socket_error: str | None = None
    processed_by: Counter = field(default_factory=Counter)
    _cache: dict[tuple[str, str], dict[int, tuple[Candle, int]]] = field(default_factory=dict)  # → (candle, received ms)
    _listener: asyncio.Task | None = None
    _listen_started_ms: int = 0
    _messages_at_start: int = 0
    _last_message_ms: int = 0
    _next_retry_ms: int = 0

    # ------------------------------------------------------------ lifecycle
    async def warm_up(self, now_ms: int) -> None:
        """Warm the indicators over REST (SPEC S-10, L-3), then open the socket.

        Raises:
            ExchangeError: the warm-up read failed after retries.
        """
        await self.rest_feed.warm_up(now_ms)
        self._switch(WEBSOCKET, now_ms, "start")
        self._start_listener(now_ms)

    async def close(self) -> None:
        """Stop listening and close the ccxt.pro client (call once on shutdown)."""
        await self._stop_listener()
        await self.ws_client.close()

    @property
    def listening(self) -> bool:
        """True while the websocket listener runs (connected, connecting or waiting for data)."""
        return self._listener is not None and not self._listener.done()

    def status(self) -> dict[str, Any]:
        """What /runtime shows: the active source, when and why it last switched."""
        return {"active": self.active, "last_switch_ms": self.last_switch_ms,
                "last_switch_reason": self.last_switch_reason}

    # ----------------------------------------------------------------- step
    async def step(self, now_ms: int) -> int:
        """One pass of the live loop (call every second): check the socket, switch source when
        needed, process the candles closed since the last pass; returns how many. Exchange
        failures are logged, never raised (the next pass catches up)."""
        if self.active == WEBSOCKET:
            reason = self._socket_trouble(now_ms)
            if reason is None:
                count = await self._process_ws(now_ms)
                if self._overdue(now_ms):  # one stream of the socket stays mute: REST catches up
                    count += await self._poll_rest(now_ms)
                return count
            await self._fall_back(now_ms, reason)
        count = await self._poll_rest(now_ms)
        if self._listener is None or self._listener.done():
            if self._listener is not None:
                self._note_failure(now_ms)
            if now_ms >= self._next_retry_ms:
                self._start_listener(now_ms)
        elif self.messages == self._messages_at_start:
            if now_ms - self._listen_started_ms > self.silence_timeout_ms:  # connected but mute: redial
                await self._stop_listener()
                self._next_retry_ms = now_ms + self.retry_ms
        else:  # the socket delivers again; the poll above caught up to now
            self._switch(WEBSOCKET, now_ms, "socket recovered")
            count += await self._process_ws(now_ms)
        return count

    # ------------------------------------------------------------ internals
    def _socket_trouble(self, now_ms: int) -> str | None:
        if self._listener is None or self._listener.done():
            self._note_failure(now_ms)
            return f"socket failed: {self.socket_error or 'listener stopped'}"
        silent_ms = now_ms - self._last_message_ms
        if silent_ms > self.silence_timeout_ms:
            return f"socket silent for {silent_ms // 1000} s"
        return None

    def _overdue(self, now_ms: int) -> bool:
        """A feed whose next candle closed more than the silence timeout ago (other feeds'
        messages keep the socket looking alive)."""
        for key, feed in self.engine.feeds.items():
            last = self.rest_feed.last_open_ms.get(key)
            if last is not None and now_ms - (last + 2 * feed.timeframe_ms) > self.silence_timeout_ms:
                return True
        return False

    def _note_failure(self, now_ms: int) -> None:
        task = self._listener
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.socket_error = f"{type(exc).__name__}: {str(exc)[:160]}"
        if task is not None:
            self._listener = None
            self._next_retry_ms = now_ms + self.retry_ms

    async def _fall_back(self, now_ms: int, reason: str) -> None:
        await self._stop_listener()
        self._next_retry_ms = now_ms + self.retry_ms
        self._switch(REST, now_ms, reason)

    def _switch(self, source: str, now_ms: int, reason: str) -> None:
        if source != self.active or self.last_switch_ms is None:
            if self.last_switch_ms is not None:
                self.switches += 1
                log.warning("market data: %s → %s (%s)", self.active, source, reason)
            self.active, self.last_switch_ms, self.last_switch_reason = source, now_ms, reason

    async def _poll_rest(self, now_ms: int) -> int:
        before = self.rest_feed.processed
        await poll_safely(self.rest_feed, now_ms)
        count = self.rest_feed.processed - before
        self.processed_by[REST] += count
        return count

    async def _process_ws(self, now_ms: int) -> int:
        count = 0
        for key, feed in self.engine.feeds.items():
            cached = self._cache.get(key)
            if not cached:
                continue
            last = self.rest_feed.last_open_ms.get(key)
            stamps = sorted(cached)
            newest = stamps[-1]
            closed = [cached[t] for t in stamps
                      if (last is None or t > last)
                      and (t < newest or t + feed.timeframe_ms + self.close_grace_ms <= now_ms)]
            final = []
            for candle, received_ms in closed:
                if received_ms < candle.timestamp + feed.timeframe_ms - self.final_slack_ms:
                    break  # maybe not its final values: REST reads it (and waits for it, in order)
                final.append(candle)
            gap = bool(closed) and last is not None and closed[0][0].timestamp > last + feed.timeframe_ms
            if gap or len(final) < len(closed):
                count += await self._poll_rest(now_ms)  # the socket missed some: REST fills the gap
            closed = final
            done = await self.rest_feed.process_closed(key, closed, now_ms, source=WEBSOCKET)
            self.processed_by[WEBSOCKET] += done
            count += done
            last = self.rest_feed.last_open_ms.get(key)
            if last is not None:
                for t in [t for t in cached if t <= last]:
                    del cached[t]
        return count

    def _start_listener(self, now_ms: int) -> None:
        self._listen_started_ms = now_ms
        self._messages_at_start = self.messages
        self._last_message_ms = now_ms  # the silence timeout counts from the (re)connection
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _stop_listener(self) -> None:
        task, self._listener = self._listener, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self.ws_client.close_ws_clients()  # a silent socket is dropped, a fresh one dialled
        except Exception as exc:  # closing a broken socket may fail; the next dial is fresh anyway
            log.debug("closing websocket: %s", exc)

    async def _listen(self) -> None:
        """Receive kline updates into the cache until cancelled or the socket fails (raises)."""
        pairs = [[feed.symbol, feed.timeframe] for feed in self.engine.feeds.values()]
        keys = {(feed.symbol, feed.timeframe) for feed in self.engine.feeds.values()}
        while True:
            update = await self.ws_client.watch_ohlcv_for_symbols(pairs)
            self._last_message_ms = self.clock.now_ms()
            self.messages += 1
            for symbol, by_timeframe in update.items():
                for timeframe, rows in by_timeframe.items():
                    key = (symbol, timeframe)
                    if key not in keys:
                        continue
                    cache = self._cache.setdefault(key, {})
                    for row in rows:
                        candle = Candle(int(row[0]), float(row[1]), float(row[2]), float(row[3]),
                                        float(row[4]), float(row[5]))
                        cache[candle.timestamp] = (candle, self._last_message_ms)
