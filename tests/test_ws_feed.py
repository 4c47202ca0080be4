"""SPEC S-2 websocket market data with fall back to REST and switch back: the real ccxt.pro
``binanceusdm`` client over real websockets against the loopback fake (``tests.fake_binance_ws``),
the real ccxt REST client for the fall back, real SQLite; candles are the bundled real ones."""

from __future__ import annotations

import asyncio

import pytest

from tests.fake_binance import FakeBinance
from tests.test_live_runtime import XRP, build, xrp_config
from trading.engine.core import Engine
from trading.domain.events import EventBuffer
from trading.adapters.rest_feed import RestCandleFeed
from trading.adapters.marketdata import default_data_dir, load_candles
from trading.ports import ReplayClock
from trading.adapters.ws_feed import HybridCandleFeed, make_ws_client

START = 400  # the bundled XRP 1m candle the fake starts at (300 warm-up candles before it)
KLINES = "GET /fapi/v1/klines"


async def until(condition, timeout_s: float = 5.0) -> None:
    """Wait for a condition the socket sets (a message received, a close noticed)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


class Harness:
    """The fake exchange, a live runtime's engine and the hybrid feed on a replay clock."""

    def __init__(self, fake: FakeBinance, rt, feed: HybridCandleFeed, clock: ReplayClock) -> None:
        self.fake, self.rt, self.feed, self.clock = fake, rt, feed, clock

    async def candle(self, over_socket: bool = True) -> None:
        """The next real candle closes; with ``over_socket`` wait until the client has it."""
        seen = self.feed.messages
        self.clock.current_ms += 60_000  # its close time: then the exchange pushes it
        self.fake.advance()
        assert self.clock.current_ms == self.fake.clock.current_ms + 1
        if over_socket:
            await until(lambda: self.feed.messages > seen)

    async def step(self) -> int:
        """One pass of the live loop at the replay clock's time."""
        return await self.feed.step(self.clock.now_ms())

    def journal(self) -> list[tuple[int, str]]:
        """Processed candles: (open time ms, source), oldest first."""
        return [(open_ms, source) for _, _, open_ms, source in self.feed.rest_feed.journal]

    def assert_engine_saw_each_candle_once(self, last_index: int) -> None:
        """The engine's market state equals the one built from warm-up + each candle once, in order."""
        series = load_candles(default_data_dir(), XRP, "1m")
        opens = [t for t, _ in self.journal()]
        assert opens == [series.timestamp[i] for i in range(START + 1, last_index + 1)]
        reference = Engine(config=xrp_config(), markets=self.rt.engine.markets, exchange=self.rt.gateway,
                           clock=ReplayClock(), sink=EventBuffer())
        ref = reference.feeds[(XRP, "1m")]
        for i in range(START - 299, last_index + 1):
            reference.warm(ref, series.high[i], series.low[i], series.close[i], series.volume[i])
        state = self.rt.engine.feeds[(XRP, "1m")]
        assert state.last_close == series.close[last_index]
        assert state.indicators.rsi == ref.indicators.rsi and state.indicators.atr == ref.indicators.atr


@pytest.fixture
async def harness(tmp_path):
    fake = FakeBinance(default_data_dir(), symbols=(XRP,), start_index=START)
    await fake.start()
    clock = ReplayClock(fake.clock.current_ms + 1)
    rt = await build(fake, tmp_path / "live.db", clock)
    ws = make_ws_client("demo", api_base=fake.base_url, timeout_ms=2_000)  # streams at the same host
    assert ws.urls["api"]["ws"]["linear"] == fake.ws.ccxt_ws_base()
    # the fake pushes one kline per candle (Binance: every 250 ms), so silence is 1.5 candles
    feed = HybridCandleFeed(rt.engine, RestCandleFeed(rt.engine, rt.gateway, warmup=300, window=5), ws, clock,
                            silence_timeout_ms=90_000, retry_ms=0, close_grace_ms=0)
    h = Harness(fake, rt, feed, clock)
    try:
        await feed.warm_up(clock.now_ms())
        await fake.ws.wait_subscribed(1)
        yield h
    finally:
        await feed.close()
        await rt.close()
        await fake.stop()


async def test_s2_candles_arrive_over_the_socket_and_are_processed_once_each(harness):
    h = harness
    rest_reads = h.fake.requests[KLINES]
    for _ in range(3):
        await h.candle()
        assert await h.step() == 1
        assert await h.step() == 0  # the same candle is not processed again
    assert h.feed.active == "websocket" and h.feed.status()["last_switch_reason"] == "start"
    assert h.fake.requests[KLINES] == rest_reads  # no REST poll while the socket is healthy
    assert [s for _, s in h.journal()] == ["websocket"] * 3
    h.assert_engine_saw_each_candle_once(START + 3)


async def test_s2_dropped_socket_falls_back_to_rest_then_switches_back_without_doubles(harness):
    h = harness
    await h.candle()
    assert await h.step() == 1
    # (b) the server drops the socket and refuses to take it back: REST at the next pass,
    # within the silence timeout (one candle = 60 s < 90 s)
    h.fake.ws.refuse()
    await h.fake.ws.drop()
    await until(lambda: not h.feed.listening)
    await h.candle(over_socket=False)
    switched_at = h.clock.now_ms()
    assert await h.step() == 1  # the candle the socket missed, by REST
    assert h.feed.status() == {"active": "rest", "last_switch_ms": switched_at,
                               "last_switch_reason": h.feed.last_switch_reason}
    assert h.feed.last_switch_reason.startswith("socket failed")
    await until(lambda: not h.feed.listening)  # the redial was refused (HTTP 503)
    await h.candle(over_socket=False)
    assert await h.step() == 1 and h.feed.active == "rest"
    assert h.fake.ws.refused >= 1
    # (c) the server takes connections again: the next pass redials; the first candle over
    # the new socket switches back; REST caught up first, so nothing is processed twice
    await until(lambda: not h.feed.listening)  # this pass's redial was refused too
    h.fake.ws.accept()
    subscribed = h.fake.ws.subscriptions
    await h.step()
    await h.fake.ws.wait_subscribed(subscribed + 1)
    await h.candle()
    assert await h.step() == 1
    assert h.feed.active == "websocket" and h.feed.last_switch_reason == "socket recovered"
    for _ in range(2):
        await h.candle()
        assert await h.step() == 1
    assert [s for _, s in h.journal()] == ["websocket", "rest", "rest", "rest", "websocket", "websocket"]
    assert h.feed.switches == 2
    h.assert_engine_saw_each_candle_once(START + 6)


async def test_s2_silent_socket_falls_back_after_the_timeout_and_recovers(harness):
    h = harness
    await h.candle()
    assert await h.step() == 1
    h.fake.ws.silence()  # the socket stays open but nothing comes
    await h.candle(over_socket=False)
    assert await h.step() == 0  # 60 s without a message: still within the 90 s timeout
    assert h.feed.active == "websocket"
    await h.candle(over_socket=False)
    assert await h.step() == 2  # 120 s: fall back; REST processes both missed candles
    assert h.feed.active == "rest" and h.feed.last_switch_reason == "socket silent for 120 s"
    h.fake.ws.speak()
    await h.fake.ws.wait_subscribed(2)  # the silent socket was dropped and a fresh one dialled
    await h.candle()
    assert await h.step() == 1
    assert h.feed.active == "websocket" and h.feed.last_switch_reason == "socket recovered"
    await h.candle()
    assert await h.step() == 1
    assert [s for _, s in h.journal()] == ["websocket", "rest", "rest", "rest", "websocket"]
    h.assert_engine_saw_each_candle_once(START + 5)


async def test_s2_rest_catches_up_an_outage_longer_than_its_poll_window(harness):
    """Seven candles (window 5) close while the socket is down and REST has not polled yet:
    the fall back reads them all, in order, none lost, none twice."""
    h = harness
    h.fake.ws.refuse()
    await h.fake.ws.drop()
    await until(lambda: not h.feed.listening)
    for _ in range(7):
        await h.candle(over_socket=False)
    assert await h.step() == 7
    assert h.feed.active == "rest" and h.feed.processed_by == {"rest": 7}
    h.assert_engine_saw_each_candle_once(START + 7)


async def test_s2_a_candle_last_updated_before_its_close_is_read_over_rest(harness):
    """The socket's last update of a candle came 5 s before its close (a hiccup at the close): its
    values may not be final, so REST reads that candle; the socket stays the active source."""
    h = harness
    series = load_candles(default_data_dir(), XRP, "1m")
    seen = h.feed.messages
    h.clock.current_ms += 55_000
    h.fake.advance()
    await until(lambda: h.feed.messages > seen)
    h.clock.current_ms += 5_000  # its close time
    rest_reads = h.fake.requests[KLINES]
    assert await h.step() == 1
    assert h.fake.requests[KLINES] == rest_reads + 1
    assert h.journal() == [(series.timestamp[START + 1], "rest")]
    await h.candle()
    assert await h.step() == 1
    assert h.journal()[-1] == (series.timestamp[START + 2], "websocket") and h.feed.active == "websocket"
    h.assert_engine_saw_each_candle_once(START + 2)
