"""The real ccxt client against the loopback fake Binance USDⓈ-M (tests/fake_binance.py):
the adapter (SPEC S-1, S-3, S-4), the error mapping and the hardened order path (O-2, O-4, O-8)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.fake_binance import API_KEY, API_SECRET, FakeBinance
from trading.adapters.ccxt_exchange import CcxtExchange, map_ccxt_error, resolve_quote, unified_symbol
from trading.domain.errors import (
    ConfigError,
    DuplicateClientOrderId,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    TimestampOutOfSync,
)
from trading.adapters.marketdata import default_data_dir, load_candles, load_ccxt_markets, market_from_ccxt
from dataclasses import replace

from trading.domain.models import OrderLeg, OrderStatus, OrderType, Side
from trading.domain.oms import bracket_order, entry_order
from trading.adapters.order_gateway import OrderGateway

XRP = "XRP/USDT:USDT"


@pytest.fixture
async def fake():
    exchange = FakeBinance(default_data_dir(), symbols=(XRP,), stall_s=0.5)
    await exchange.start()
    yield exchange
    await exchange.stop()


@pytest.fixture
async def adapter(fake):
    ex = CcxtExchange(mode="demo", api_key=API_KEY, secret=API_SECRET, api_base=fake.base_url, timeout_ms=250, rate_limit_ms=1)
    await ex.load_markets()
    yield ex
    await ex.close()


class SimSleep:
    """Records the waits the gateway asks for instead of sleeping (simulated time)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _entry(intent: str, contracts: str = "10", side: Side = Side.LONG):
    return entry_order(env="demo", bot="xrp", symbol=XRP, side=side, intent_id=intent,
                       contracts=Decimal(contracts), now_ms=0)


# ---------------------------------------------------------------- fake + adapter
async def test_s3_markets_come_from_the_real_dump(adapter):
    dump = load_ccxt_markets(default_data_dir())
    assert adapter.market(XRP) == market_from_ccxt(dump[XRP])
    assert adapter.market("BTC/USDT:USDT").min_notional == Decimal(100)


async def test_s2_klines_are_the_bundled_candles(fake, adapter):
    for _ in range(3):
        fake.advance()
    rows = await adapter.client.fetch_ohlcv(XRP, "1m", limit=4)
    series = load_candles(default_data_dir(), XRP, "1m")
    assert [r[0] for r in rows] == list(series.timestamp[:4])
    assert [r[4] for r in rows] == list(series.close[:4])


async def test_o2_client_ids_are_unique_among_open_orders_only(fake, adapter):
    """O-2 as Binance enforces it: a client order id held by an OPEN order is refused (-4116);
    once that order is filled or cancelled the same id is accepted again — so a blind resend of
    a filled entry would be a second entry (issue 13 defect 2)."""
    far = (Decimal(repr(fake.candle(XRP)[4])) * Decimal("0.97")).quantize(Decimal("0.0001"))
    order = replace(_entry("dup"), type=OrderType.LIMIT, price=far)
    accepted = await adapter.create_order(order)
    assert accepted.status is OrderStatus.OPEN
    with pytest.raises(DuplicateClientOrderId):
        await adapter.create_order(order)
    await adapter.cancel_order(order.client_order_id, XRP)
    assert (await adapter.create_order(order)).status is OrderStatus.OPEN  # the same id, a second order
    assert fake.accepted_ids == [order.client_order_id] * 2 and fake.duplicate_rejections == 1


async def test_o2_a_market_order_answers_filled_at_once(fake, adapter):
    """ccxt sends ``newOrderRespType=RESULT``: Binance answers a market order FILLED, with its fill."""
    accepted = await adapter.create_order(_entry("now"))
    assert accepted.status is OrderStatus.CLOSED and accepted.filled == Decimal(10)
    assert fake.position(XRP)[0] == Decimal(10)


async def test_s1_market_entry_fills_at_the_last_price_and_stop_triggers(fake, adapter):
    order = _entry("fill")
    await adapter.create_order(order)
    series = load_candles(default_data_dir(), XRP, "1m")
    filled = await adapter.fetch_order(order.client_order_id, XRP)
    assert filled.status is OrderStatus.CLOSED and filled.filled == Decimal(10)
    last = Decimal(repr(series.close[0]))
    assert last < filled.average <= last * Decimal("1.0003")  # the last price plus taker slippage
    fake.advance()
    positions = await adapter.fetch_positions()
    assert list(positions) == [XRP] and positions[XRP][0] == Decimal(10)
    assert positions[XRP][1] == filled.average  # the port's (signed contracts, entry price)
    details = await adapter.fetch_position_details()
    assert [(p.symbol, p.contracts, p.entry_price) for p in details] == [(XRP, Decimal(10), filled.average)]
    market = adapter.market(XRP)
    stop = bracket_order(env="demo", bot="xrp", market=market, side=Side.LONG, intent_id="fill",
                         leg=OrderLeg.STOP_LOSS, generation=0, contracts=Decimal(10),
                         trigger_price=Decimal(repr(series.close[1])) - Decimal("0.0005"), now_ms=0)
    await adapter.create_order(stop)
    assert [o.client_order_id for o in await adapter.fetch_open_orders(XRP)] == [stop.client_order_id]
    for _ in range(200):
        if not fake.position(XRP):
            break
        fake.advance()
    assert fake.position(XRP) is None  # the real candles reached the stop
    assert await adapter.fetch_open_orders(XRP) == []
    assert (await adapter.fetch_order(stop.client_order_id, XRP)).status is OrderStatus.CLOSED


async def test_s1_a_wrong_secret_is_refused(fake):
    ex = CcxtExchange(mode="demo", api_key=API_KEY, secret="wrong", api_base=fake.base_url)
    try:
        with pytest.raises(Exception) as info:
            await ex.fetch_balance()
        assert "Signature" in str(info.value) and "wrong" not in str(info.value)
    finally:
        await ex.close()


def test_s1_sandbox_is_refused_for_binance_futures_and_demo_uses_demo_urls():
    with pytest.raises(ConfigError, match="demo"):
        CcxtExchange(mode="demo", sandbox=True)
    ex = CcxtExchange(mode="demo", api_key="k", secret="s")
    assert ex.client.urls["api"]["fapiPrivate"].startswith("https://demo-fapi.binance.com")
    live = CcxtExchange(mode="live", api_key="k", secret="s")
    assert live.client.urls["api"]["fapiPrivate"].startswith("https://fapi.binance.com")
    assert live.client.maxRetriesOnFailure == 0 and live.client.enableRateLimit
    asyncio.get_event_loop_policy()  # clients were never opened: nothing to close


def test_s4_quote_coin_resolution():
    assert resolve_quote("live", None) == "USDC"
    assert resolve_quote("demo", None) == "USDT"
    assert resolve_quote("live", "usdt") == "USDT"
    assert unified_symbol("xrp", "USDC") == "XRP/USDC:USDC"
    assert unified_symbol("XRP/USDT:USDT", "USDC") == "XRP/USDT:USDT"


def test_s3_okx_is_mapped_and_unknown_exchanges_refused():
    ex = CcxtExchange(exchange_id="okx", mode="live", api_key="k", secret="s", password="p")
    assert ex.exchange_id == "okx" and ex.client.id == "okx"
    with pytest.raises(ConfigError, match="kraken"):
        CcxtExchange(exchange_id="kraken")


@pytest.mark.parametrize(
    ("fault", "expected"),
    [("5xx", ExchangeUnavailable), ("429", RateLimited), ("418", RateLimited), ("-1021", TimestampOutOfSync)],
)
async def test_o4_faults_map_to_our_error_types(fake, adapter, fault, expected):
    fake.inject(fault, retry_after_s=3)
    with pytest.raises(expected) as info:
        await adapter.fetch_balance()
    if expected is RateLimited:
        assert info.value.retry_after_s == 3


async def test_o4_business_and_not_found_errors(adapter):
    with pytest.raises(OrderRejected, match="Margin is insufficient"):
        await adapter.create_order(_entry("huge", "2000000"))
    with pytest.raises(OrderNotFound):
        await adapter.fetch_order("of-none-entry", XRP)
    with pytest.raises(OrderNotFound):
        await adapter.cancel_order("of-none-entry", XRP)
    import ccxt

    assert isinstance(map_ccxt_error(ccxt.OrderNotFound("x")), OrderNotFound)  # before InvalidOrder
    assert type(map_ccxt_error(ccxt.InvalidOrder("x"))) is OrderRejected
    assert type(map_ccxt_error(ccxt.InsufficientFunds("x"))) is OrderRejected
    assert isinstance(map_ccxt_error(ccxt.RateLimitExceeded("x"), 7), RateLimited)


# ---------------------------------------------------------------- order gateway
async def test_o2_timeout_after_accept_is_looked_up_not_resent(fake, adapter):
    sleep = SimSleep()
    gateway = OrderGateway(adapter, sleep=sleep)
    order = _entry("stall")
    fake.inject("timeout_after_accept")
    result = await gateway.create_order(order)
    assert result.client_order_id == order.client_order_id and result.status is OrderStatus.OPEN
    assert fake.accepted_ids == [order.client_order_id]
    assert fake.requests["POST /fapi/v1/order"] == 1
    assert gateway.stats["lookup_after_unknown"] == 1


async def test_o2_order_is_recorded_before_it_is_sent(fake, adapter):
    seen: list[tuple[str, int]] = []

    async def record(order):
        seen.append((order.client_order_id, fake.requests["POST /fapi/v1/order"]))
        return False

    gateway = OrderGateway(adapter, record=record, sleep=SimSleep())
    order = _entry("rec")
    await gateway.create_order(order)
    assert seen == [(order.client_order_id, 0)]


async def test_o2_a_5xx_on_create_is_looked_up_then_placed_once(fake, adapter):
    gateway = OrderGateway(adapter, sleep=SimSleep())
    order = _entry("five")
    fake.inject("5xx", path="/order", method="POST")
    result = await gateway.create_order(order)
    assert result.status is OrderStatus.OPEN
    assert fake.accepted_ids == [order.client_order_id]
    assert fake.requests["GET /fapi/v1/order"] >= 1  # looked up before the second send


async def test_o4_rate_limit_waits_retry_after_and_time_errors_resync(fake, adapter):
    sleep = SimSleep()
    gateway = OrderGateway(adapter, sleep=sleep)
    fake.inject("429", retry_after_s=4)
    fake.inject("-1021", path="/account")
    balance = await gateway.fetch_balance()
    assert balance == Decimal(10_000)
    assert 4 in sleep.waits
    assert gateway.stats["time_resync"] == 1 and fake.requests["GET /fapi/v1/time"] >= 1


async def test_o4_reads_back_off_with_bounded_jitter_then_give_up(fake, adapter):
    sleep = SimSleep()
    gateway = OrderGateway(adapter, sleep=sleep, max_attempts=4, base_delay_s=0.5, max_delay_s=1.5)
    fake.inject("5xx", path="openOrders", count=10)
    with pytest.raises(ExchangeUnavailable):
        await gateway.fetch_open_orders(XRP)
    assert len(sleep.waits) == 3
    assert all(0 <= w <= bound for w, bound in zip(sleep.waits, (0.5, 1.0, 1.5)))


async def test_o4_business_rejection_is_not_retried(fake, adapter):
    gateway = OrderGateway(adapter, sleep=SimSleep())
    with pytest.raises(OrderRejected, match="Margin is insufficient"):
        await gateway.create_order(_entry("big", "2000000"))
    assert fake.requests["POST /fapi/v1/order"] == 1


async def test_o8_one_order_operation_per_symbol_at_a_time(fake, adapter):
    in_flight = 0
    peak = 0
    original = adapter.create_order

    async def counting(order):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.01)
            return await original(order)
        finally:
            in_flight -= 1

    adapter.create_order = counting
    gateway = OrderGateway(adapter, sleep=SimSleep())
    await asyncio.gather(*(gateway.create_order(_entry(f"c{i}")) for i in range(4)))
    assert peak == 1
    assert len(fake.accepted_ids) == 4


async def test_o2_partial_fill_is_reported_then_completed(fake, adapter):
    fake.inject("partial")
    order = _entry("part", "20")
    await adapter.create_order(order)
    half = await adapter.fetch_order(order.client_order_id, XRP)
    assert half.status is OrderStatus.OPEN and half.filled == Decimal(10)
    fake.advance()
    full = await adapter.fetch_order(order.client_order_id, XRP)
    assert full.status is OrderStatus.CLOSED and full.filled == Decimal(20)
    assert fake.position(XRP)[0] == Decimal(20)
    assert len(await adapter.fetch_my_trades(XRP)) == 2


async def test_o2_an_order_sent_before_is_looked_up_and_returned_without_its_fill(fake, adapter):
    """A restart re-sending an entry that already filled: the gateway finds it by client order id
    (nothing is sent) and hands it back without the fill, which the fill tracker books once."""
    order = _entry("again")
    await adapter.create_order(order)
    fake.advance()

    async def recorded_before(_order):
        return True

    gateway = OrderGateway(adapter, record=recorded_before, sleep=SimSleep())
    result = await gateway.create_order(order)
    # Open while its fill is still to be booked; the fill itself is the tracker's to book.
    assert result.status is OrderStatus.OPEN and result.filled == 0 and result.average is None
    assert fake.requests["POST /fapi/v1/order"] == 1
    assert fake.duplicate_rejections == 0
