"""S-2 order and position updates over the user-data stream (ccxt.pro ``watch_orders`` /
``watch_positions``) against the loopback fake Binance, real ccxt clients, real SQLite: a fill
wakes the live loop at once (brackets within a round trip, O-3 / R-10), a position closed in the
exchange's app is reconciled at once (O-5), and when the stream fails REST polling books the
fills as before and /runtime says so."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from bot.runtime import build_exchange_runtime
from tests.fake_binance import API_KEY, API_SECRET, FakeBinance
from tests.test_live_runtime import ours, xrp_config
from trading.adapters.ccxt_exchange import CcxtExchange
from trading.adapters.marketdata import default_data_dir
from trading.domain.models import OrderType, Side
from trading.adapters.ws_feed import make_ws_client

XRP = "XRP/USDT:USDT"


async def until(condition, timeout_s: float = 8.0) -> None:
    """Wait (wall time) until ``condition()`` holds; fails the test after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture
async def running(tmp_path):
    """The fake exchange and a demo runtime whose loop runs with a long pause between passes
    (30 s): anything that happens sooner came through the user stream."""
    fake = FakeBinance(default_data_dir(), symbols=(XRP,))
    await fake.start()
    adapter = CcxtExchange(mode="demo", api_key=API_KEY, secret=API_SECRET, api_base=fake.base_url,
                           timeout_ms=2_000, rate_limit_ms=1)
    user_client = make_ws_client("demo", api_base=fake.base_url, api_key=API_KEY, secret=API_SECRET)
    rt = await build_exchange_runtime(config=xrp_config(), db_path=tmp_path / "live.db", exchange=adapter, env="demo",
                                      user_stream_client=user_client)
    rt.user_stream.retry_s = 0.2
    stop, ready = asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(rt.run(stop, interval_s=30, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await until(lambda: fake.ws.user_connections >= 1)
        yield fake, rt
    finally:
        stop.set()
        await asyncio.gather(loop, return_exceptions=True)
        await rt.close()
        await fake.stop()


async def test_s2_a_fill_on_the_user_stream_gets_its_brackets_at_once(running):
    fake, rt = running
    await rt.engine.submit_entry("xrp", XRP, Side.LONG, Decimal(10))
    fake.advance()  # the entry fills; the stream pushes ORDER_TRADE_UPDATE and ACCOUNT_UPDATE
    await until(lambda: ("xrp", XRP) in rt.engine.positions
                and any(o.type is OrderType.STOP_MARKET for o in ours(fake)))
    await until(lambda: rt.user_stream.order_updates >= 1 and rt.user_stream.position_updates >= 1)
    await until(lambda: "websocket user stream" in rt.service.feed_state)


async def test_s2_o5_a_position_closed_in_the_exchange_app_is_reconciled_at_once(running):
    fake, rt = running
    await rt.engine.submit_entry("xrp", XRP, Side.LONG, Decimal(10))
    fake.advance()
    await until(lambda: any(o.type is OrderType.STOP_MARKET for o in ours(fake)))
    fake.close_by_hand(XRP)  # not through the bot: only the exchange knows
    await until(lambda: not rt.engine.positions and ours(fake) == [])
    for _ in range(100):  # the pass persists its audit records at its end
        records = [r for r in await rt.store.audit.list() if r.action == "RECONCILE"]
        if records[-1].why["periodic"]:
            break
        await asyncio.sleep(0.05)
    assert records[-1].why["positions_repaired"] == 1 and records[-1].why["periodic"]


async def test_s2_without_the_user_stream_rest_polling_books_fills_and_runtime_says_so(running):
    fake, rt = running
    fake.ws.refuse()
    await fake.ws.drop()
    await until(lambda: rt.user_stream.active == "rest")
    await rt.engine.submit_entry("xrp", XRP, Side.LONG, Decimal(10))
    fake.advance()
    await asyncio.sleep(1.0)
    assert ("xrp", XRP) not in rt.engine.positions  # nothing woke the loop: the next pass is 30 s away
    rt.supervisor.poll_soon()
    await rt.tick(rt.clock.now_ms())  # the REST fill poll of a pass books it all the same
    assert ("xrp", XRP) in rt.engine.positions and any(o.type is OrderType.STOP_MARKET for o in ours(fake))
    rt.service.feed_state = rt.feed_state()
    assert "REST polling every 0.5 s (user stream down" in rt.service.feed_state
    fake.ws.accept()  # the stream comes back: the watcher redials and reports it again
    await until(lambda: fake.ws.user_connections >= 2)
    await rt.engine.close_position("xrp", XRP)
    fake.advance()
    await until(lambda: not rt.engine.positions and rt.user_stream.active == "websocket")


async def test_s2_the_listen_key_is_kept_alive_and_an_expired_one_falls_back_to_rest_then_redials(tmp_path):
    """Issue 13 defect 6 (S-2): a listenKey lives 60 min after its last keep-alive and an expired
    one kills the stream silently (``listenKeyExpired``, which ccxt ignores, then nothing). The
    watcher extends it itself — through three 40-minute gaps the same key keeps delivering —
    and when a keep-alive finds it expired (-1125) the stream is reported down (REST polling,
    /runtime says why) and redialled with a new key, which delivers again."""
    import time

    wall = [int(time.time() * 1000)]
    fake = FakeBinance(default_data_dir(), symbols=(XRP,))
    fake.wall_ms = lambda: wall[0]  # the exchange's clock, moved by the test
    await fake.start()
    adapter = CcxtExchange(mode="demo", api_key=API_KEY, secret=API_SECRET, api_base=fake.base_url,
                           timeout_ms=2_000, rate_limit_ms=1)
    user_client = make_ws_client("demo", api_base=fake.base_url, api_key=API_KEY, secret=API_SECRET)
    rt = await build_exchange_runtime(config=xrp_config(), db_path=tmp_path / "live.db", exchange=adapter, env="demo",
                                      user_stream_client=user_client, canary=False)
    rt.user_stream.retry_s = 0.2
    rt.user_stream.keepalive_s = 0.3
    stop, ready = asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(rt.run(stop, interval_s=30, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await until(lambda: fake.ws.user_connections >= 1)
        for _ in range(3):  # 40 minutes at a time (real 1 s: several keep-alives): each extends the key
            wall[0] += 40 * 60_000
            await asyncio.sleep(1.0)
        await rt.engine.submit_entry("xrp", XRP, Side.LONG, Decimal(10))
        await until(lambda: ("xrp", XRP) in rt.engine.positions)  # woken by the stream, not the 30 s pass
        assert len(fake.listen_keys) == 1 and fake.ws.expired_events_sent == 0 and rt.user_stream.keepalives >= 6
        wall[0] += 61 * 60_000  # the key expires before the next keep-alive
        await until(lambda: "listenKey keep-alive failed" in rt.user_stream.status())
        assert "REST polling every 0.5 s (user stream down" in rt.feed_state()
        await until(lambda: len(fake.listen_keys) == 2 and fake.ws.user_connections >= 2)  # a new key
        await rt.engine.close_position("xrp", XRP)
        await until(lambda: not rt.engine.positions and rt.user_stream.active == "websocket")
    finally:
        stop.set()
        await asyncio.gather(loop, return_exceptions=True)
        await rt.close()
        await fake.stop()
