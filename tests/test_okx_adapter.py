"""The ccxt adapter on OKX against the strict loopback fake (issue 18, SPEC S-1, S-3, O-2, O-3, O-4,
O-7, R-10): authentication with the passphrase and the demo header, OKX's id rules, algo orders
by ``algoClOrdId``, their lifecycle (a stop that fails on trigger is dead), errors mapped to ours."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.fake_okx import API_KEY, API_SECRET, PASSPHRASE, FakeOkx
from trading.adapters.ccxt_exchange import CcxtExchange
from trading.adapters.marketdata import default_data_dir
from trading.domain.errors import (
    AuthenticationFailed,
    DuplicateClientOrderId,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
)
from trading.domain.models import (
    Order,
    OrderLeg,
    OrderSide,
    OrderStatus,
    OrderType,
    Side,
)
from trading.domain.oms import bracket_order, entry_order

XRP = "XRP/USDT:USDT"


@pytest.fixture
async def fake():
    exchange = FakeOkx(default_data_dir(), symbols=(XRP,))
    await exchange.start()
    yield exchange
    await exchange.stop()


def make(fake, **kw) -> CcxtExchange:
    args = {"exchange_id": "okx", "mode": "demo", "api_key": API_KEY, "secret": API_SECRET, "password": PASSPHRASE,
                "api_base": fake.base_url, "timeout_ms": 2_000, "rate_limit_ms": 1}
    args.update(kw)
    return CcxtExchange(**args)


@pytest.fixture
async def okx(fake):
    ex = make(fake)
    await ex.load_markets()
    await ex.set_margin_mode(XRP, "isolated")
    await ex.set_leverage(XRP, 5)
    yield ex
    await ex.close()


def _stop(ex, fake, contracts="1", below="0.99", intent="i1", side=Side.LONG, leg=OrderLeg.STOP_LOSS, **kw) -> Order:
    return bracket_order(env="demo", bot="xrp", market=ex.market(XRP), side=side, intent_id=intent, leg=leg,
                         generation=0, contracts=Decimal(contracts), trigger_price=fake.last[XRP] * Decimal(below),
                         now_ms=1, **kw)


async def test_s1_okx_demo_sends_the_passphrase_signature_and_simulated_trading_header(fake, okx):
    assert okx.client.headers.get("x-simulated-trading") == "1"
    assert await okx.fetch_balance() == Decimal(10_000)  # cashBal, signed and accepted
    live = make(fake, mode="live")  # no demo header: the demo server refuses the key (50101)
    wrong = make(fake, password="notThePassphrase")
    try:
        with pytest.raises(AuthenticationFailed):
            await live.fetch_balance()
        with pytest.raises(AuthenticationFailed):
            await wrong.fetch_balance()
    finally:
        await live.close()
        await wrong.close()


async def test_o7_okx_margin_mode_is_per_order_and_leverage_per_mode(fake, okx):
    """set_margin_mode sends nothing that can fail start-up; set_leverage sets lever for the mode;
    every order carries tdMode (SPEC O-7)."""
    await okx.set_margin_mode(XRP, "cross")  # a leverage is known: it is set again for cross
    assert fake.leverage[("XRP-USDT-SWAP", "cross")] == 5
    with pytest.raises(OrderRejected):
        await okx.set_margin_mode(XRP, "portfolio")
    await okx.set_margin_mode(XRP, "isolated")
    entry = entry_order(env="demo", bot="xrp", symbol=XRP, side=Side.LONG, intent_id="m1", contracts=Decimal(1), now_ms=1)
    await okx.create_order(entry)
    assert fake.positions["XRP-USDT-SWAP"].mgn_mode == "isolated" and fake.positions["XRP-USDT-SWAP"].lever == 5
    assert await okx.fetch_position_mode() is False
    fake.pos_mode = "long_short_mode"
    assert await okx.fetch_position_mode() is True


async def test_o2_okx_refuses_ids_with_dashes_and_ids_used_before(fake, okx):
    old_style = Order(client_order_id="ofdxrp-0123456789abcdef-entry", bot="xrp", symbol=XRP, side=OrderSide.BUY,
                      type=OrderType.MARKET, leg=OrderLeg.ENTRY, amount=Decimal(1), reduce_only=False, created_ms=1)
    with pytest.raises(OrderRejected, match="clOrdId"):
        await okx.create_order(old_style)  # the pre-issue-18 ids would fail every order (51000)
    entry = entry_order(env="demo", bot="xrp", symbol=XRP, side=Side.LONG, intent_id="d1", contracts=Decimal(1), now_ms=1)
    await okx.create_order(entry)
    with pytest.raises(DuplicateClientOrderId):
        await okx.create_order(entry)  # 51016, even though the first one filled
    stop = _stop(okx, fake)
    await okx.create_order(stop)
    with pytest.raises(DuplicateClientOrderId):
        await okx.create_order(stop)


async def test_o3_okx_stop_is_a_conditional_algo_by_algo_client_id_with_market_fill(fake, okx):
    await okx.create_order(entry_order(env="demo", bot="xrp", symbol=XRP, side=Side.LONG, intent_id="s1",
                                       contracts=Decimal(1), now_ms=1))
    stop = _stop(okx, fake, intent="s1")
    await okx.create_order(stop)
    [algo] = fake.open_algos(XRP)
    assert (algo.ord_type, algo.sl_ord_px, algo.sl_type, algo.algo_cl_ord_id) == ("conditional", "-1", "mark",
                                                                                 stop.client_order_id)
    [listed] = [o for o in await okx.fetch_open_orders(XRP) if o.type is OrderType.STOP_MARKET]
    assert listed.client_order_id == stop.client_order_id and listed.trigger_price == stop.trigger_price
    assert (await okx.fetch_order(stop.client_order_id, XRP)).status is OrderStatus.OPEN
    await okx.cancel_order(stop.client_order_id, XRP)
    assert algo.state == "canceled"
    assert (await okx.fetch_order(stop.client_order_id, XRP)).status is OrderStatus.CANCELED
    with pytest.raises(OrderNotFound):
        await okx.cancel_order(stop.client_order_id, XRP)
    with pytest.raises(OrderNotFound):
        await okx.fetch_order("ofdxrp000unknown0000000000sl", XRP)


async def test_o3_okx_trigger_price_type_last_for_contract_price(fake):
    ex = make(fake, stop_working_type="CONTRACT_PRICE")
    try:
        await ex.load_markets()
        await ex.create_order(entry_order(env="demo", bot="xrp", symbol=XRP, side=Side.LONG, intent_id="c1",
                                          contracts=Decimal(1), now_ms=1))
        await ex.create_order(_stop(ex, fake, intent="c1"))
        await ex.create_order(_stop(ex, fake, intent="c1", leg=OrderLeg.TP1, below="1.01", tp_order_style="limit"))
        sl, tp = fake.open_algos(XRP)
        assert sl.sl_type == "last" and tp.tp_type == "last" and tp.tp_ord_px == str(tp.tp_trigger)
    finally:
        await ex.close()


async def test_r10_okx_a_stop_on_the_wrong_side_is_refused_not_accepted(fake, okx):
    await okx.create_order(entry_order(env="demo", bot="xrp", symbol=XRP, side=Side.LONG, intent_id="w1",
                                       contracts=Decimal(1), now_ms=1))
    with pytest.raises(OrderRejected, match="51280"):
        await okx.create_order(_stop(okx, fake, intent="w1", below="1.01"))  # a sell stop above the mark


async def test_r10_okx_triggered_stop_reads_closed_with_its_fill_and_a_failed_one_dead(fake, okx):
    await okx.create_order(entry_order(env="demo", bot="xrp", symbol=XRP, side=Side.LONG, intent_id="t1",
                                       contracts=Decimal(2), now_ms=1))
    stop = _stop(okx, fake, contracts="2", intent="t1")
    tp = _stop(okx, fake, contracts="2", intent="t1", leg=OrderLeg.TP1, below="1.01")
    await okx.create_order(stop)
    await okx.create_order(tp)
    fake.set_price(XRP, stop.trigger_price - Decimal("0.0005"))
    done = await okx.fetch_order(stop.client_order_id, XRP)
    assert done.status is OrderStatus.CLOSED and done.filled == Decimal(2) and done.average is not None
    assert fake.position(XRP) == 0
    # The take-profit still rests (OKX does not cancel it with the position); when it triggers
    # with nothing to reduce its order fails: dead, not resting, not filled.
    fake.set_price(XRP, tp.trigger_price + Decimal("0.0005"))
    failed = await okx.fetch_order(tp.client_order_id, XRP)
    assert failed.status is OrderStatus.REJECTED and failed.filled == 0 and "order_failed" in failed.reason


async def test_o4_okx_faults_map_to_our_error_types(fake, okx):
    fake.inject("5xx", "account/balance")
    with pytest.raises(ExchangeUnavailable):
        await okx.fetch_balance()
    fake.inject("50011", "account/balance")
    with pytest.raises(RateLimited):
        await okx.fetch_balance()
    reduce = Order(client_order_id="ofdxrp814aaaaaaaaaaaaaaaaclose", bot="xrp", symbol=XRP, side=OrderSide.SELL,
                   type=OrderType.MARKET, leg=OrderLeg.CLOSE, amount=Decimal(1), reduce_only=True, created_ms=1)
    with pytest.raises(OrderRejected, match="51169"):
        await okx.create_order(reduce)  # nothing to reduce: a business refusal, not retried


async def test_o7_okx_key_permissions_from_account_config(fake, okx):
    assert await okx.fetch_key_permissions() == {"read": True, "futures": True, "withdrawals": False}
    fake.perm = "read_only,withdraw,trade"
    assert (await okx.fetch_key_permissions())["withdrawals"] is True
    fake.perm, fake.acct_lv = "read_only,trade", "1"  # spot mode: no swaps at all
    assert (await okx.fetch_key_permissions())["futures"] is False


async def test_f1_okx_order_book_top_through_ccxt_fetch_order_book(fake, okx):
    """F-1 reads the book top at decision time through ccxt's generic ``fetch_order_book(symbol,
    limit)``; on OKX that is ``GET /market/books?instId=…&sz=…`` answered as OKX documents it:
    asks ascending, bids descending, each level [px, sz in contracts, "0", number of orders],
    with ``ts``; the top is the ticker's askPx / bidPx."""
    book = await okx.client.fetch_order_book(XRP, 5)
    assert fake.requests["GET /api/v5/market/books"] == 1
    asks, bids = book["asks"], book["bids"]
    assert len(asks) == len(bids) == 5
    assert [a[0] for a in asks] == sorted(a[0] for a in asks) and [b[0] for b in bids] == sorted((b[0] for b in bids),
                                                                                                reverse=True)
    tick = Decimal("0.0001")
    assert Decimal(str(asks[0][0])) == fake.last[XRP] + tick and Decimal(str(bids[0][0])) == fake.last[XRP] - tick
    assert book["symbol"] == XRP and book["timestamp"] == int(book["timestamp"]) > 0
    ticker = await okx.client.fetch_ticker(XRP)
    assert (ticker["ask"], ticker["bid"]) == (asks[0][0], bids[0][0])
    # The adapter's F-1 read (what the engine calls when an entry is decided): 2 ticks over mid.
    spread = await okx.spread_pct(XRP, float(fake.last[XRP]))
    assert spread == pytest.approx(float(2 * tick / fake.last[XRP] * 100))
    assert fake.requests["GET /api/v5/market/books"] == 2
    # The raw reply, field by field (strict as the docs: four strings per level, ts a string).
    raw = await okx.client.public_get_market_books({"instId": "XRP-USDT-SWAP", "sz": "2"})
    [row] = raw["data"]
    assert set(row) == {"asks", "bids", "ts"} and isinstance(row["ts"], str)
    assert all(len(level) == 4 and level[2] == "0" and all(isinstance(x, str) for x in level)
               for level in row["asks"] + row["bids"])
    default = await okx.client.public_get_market_books({"instId": "XRP-USDT-SWAP"})
    assert len(default["data"][0]["asks"]) == 1  # OKX's default depth is 1
    for bad, code in (({"instId": "XRP-USDT-SWAP", "sz": "401"}, "51000"), ({"instId": "XRP-USDT-SWAP", "sz": "0"}, "51000"),
                      ({"sz": "5"}, "50014"), ({"instId": "XRP-USDT-SWAP", "depth": "5"}, "51000")):
        with pytest.raises(Exception, match=f'"code": "{code}"'):
            await okx.client.public_get_market_books(bad)


async def test_r10_o5_okx_chaos_faults_of_the_fake_read_through_the_adapter(fake, okx):
    """The fake's OKX faults as the adapter reads them (the chaos test arms them at random): a
    market order the price limit stops half way is cancelled with its part filled; an
    order the venue does not show yet is unknown to look-ups (51603), then known; a stop whose
    triggered order is refused is dead (order_failed); one whose order fills half and is
    cancelled for the rest is dead with that half filled."""
    fake.inject("partial")
    entry = entry_order(env="demo", bot="xrp", symbol=XRP, side=Side.LONG, intent_id="p1", contracts=Decimal(8),
                        now_ms=1)
    await okx.create_order(entry)
    half = await okx.fetch_order(entry.client_order_id, XRP)
    assert half.status is OrderStatus.CANCELED and half.filled == Decimal(4) and fake.position(XRP) == Decimal(4)
    fake.inject("invisible")
    stop = _stop(okx, fake, contracts="2", intent="p1")
    await okx.create_order(stop)
    with pytest.raises(OrderNotFound):
        await okx.fetch_order(stop.client_order_id, XRP)
    assert stop.client_order_id not in {o.client_order_id for o in await okx.fetch_open_orders(XRP)}
    fake.wall_ms = lambda: int(__import__("time").time() * 1000) + fake.invisible_ms
    assert (await okx.fetch_order(stop.client_order_id, XRP)).status is OrderStatus.OPEN
    fake.inject("stop_fail")
    fake.set_price(XRP, stop.trigger_price - Decimal("0.0005"))
    dead = await okx.fetch_order(stop.client_order_id, XRP)
    assert dead.status is OrderStatus.REJECTED and dead.filled == 0 and "51006" in dead.reason
    assert fake.position(XRP) == Decimal(4) and fake.faults_injected == {"partial": 1, "invisible": 1, "stop_fail": 1}
    fake.inject("stop_partial")
    again = _stop(okx, fake, contracts="4", intent="p2", below="0.98")
    await okx.create_order(again)
    fake.set_price(XRP, again.trigger_price - Decimal("0.0005"))
    part = await okx.fetch_order(again.client_order_id, XRP)
    assert part.status is OrderStatus.REJECTED and part.filled == Decimal(2) and fake.position(XRP) == Decimal(2)


async def test_o2_r10_okx_a_stop_resent_under_a_burnt_id_is_placed_under_a_new_one(fake):
    """Issue 18 risk (3), SPEC O-2, R-10: the gateway sends a conditional order again at once
    under the same client id when a look-up does not find it after an unknown outcome — safe on
    Binance, where -4116 means an *open* order holds the id. OKX refuses an id used at any time
    before (51016), whatever became of its order. Here the stop is accepted, its reply is lost,
    and before the look-up can see it (not visible yet) it triggers and its order is refused
    (order_failed): the same-id resend is refused, the look-up still finds nothing, and a
    gateway that took "duplicate" to mean "it rests" would report a stop that does not work
    (for the 10 s grace, with the position unprotected). The stop must be placed under the next
    generation of its id instead: a stop works, nothing is accepted twice, the leg reads back."""
    import asyncio

    from trading.adapters.order_gateway import OrderGateway
    from trading.domain.oms import client_order_id_prefix, leg_of

    ex = make(fake, timeout_ms=150)
    await ex.load_markets()
    try:
        await ex.create_order(entry_order(env="demo", bot="xrp", symbol=XRP, side=Side.LONG, intent_id="b1",
                                          contracts=Decimal(2), now_ms=1))
        stop = _stop(ex, fake, contracts="2", intent="b1")
        fake.stall_s = 0.4
        fake.inject("timeout_after_accept", "trade/order-algo")
        fake.inject("invisible")

        async def trigger_while_the_reply_is_lost() -> None:
            while not any(a.algo_cl_ord_id == stop.client_order_id for a in fake.algos.values()):
                await asyncio.sleep(0.001)
            fake.inject("stop_fail")
            before = fake.last[XRP]
            fake.set_price(XRP, stop.trigger_price - Decimal("0.0005"))  # a wick triggers it; its order is refused
            fake.set_price(XRP, before)  # and the price comes back

        killer = asyncio.ensure_future(trigger_while_the_reply_is_lost())
        now = [10_000]

        async def sleep(seconds: float) -> None:
            now[0] += int(seconds * 1000)

        gateway = OrderGateway(ex, sleep=sleep, clock=lambda: now[0])
        placed = await gateway.create_order(stop)
        await killer
        [dead] = [a for a in fake.algos.values() if a.algo_cl_ord_id == stop.client_order_id]
        assert dead.state == "order_failed" and fake.rejected["51016"] == 1
        assert fake.position(XRP) == Decimal(2)
        assert placed.status is OrderStatus.OPEN
        assert fake.working_stop(XRP, client_order_id_prefix("demo", "xrp")), "the stop reported placed does not work"
        assert placed.client_order_id != stop.client_order_id and leg_of(placed.client_order_id) is OrderLeg.STOP_LOSS
        assert placed.client_order_id.startswith(client_order_id_prefix("demo", "xrp"))
        [working] = [a for a in fake.open_algos(XRP) if a.sl_trigger is not None]
        assert working.algo_cl_ord_id == placed.client_order_id and working.sz == Decimal(2)
        assert fake.accepted_twice() == []
    finally:
        await ex.close()


async def test_o2_o5_an_order_sent_again_late_gets_its_grace_from_that_send(fake):
    """Found by the OKX chaos run (SPEC O-2, O-5, R-10): an entry refused with 5xx twice is
    looked up over several seconds between the sends, so its last send — accepted, not visible
    yet — comes more than the 10 s "not visible yet" grace after the order was created. Counted
    from the creation, the fill tracker gave the accepted entry up as "not on the exchange" at
    once and its position stood without a stop until the reconciliation traced it. The order the
    gateway returns carries its last send in ``updated_ms``, and the grace counts from there."""
    from trading.adapters.order_gateway import OrderGateway
    from trading.app.reconcile import UNCONFIRMED_GRACE_MS, unconfirmed

    ex = make(fake)
    await ex.load_markets()
    now = [1_000_000]

    async def sleep(seconds: float) -> None:
        now[0] += int(seconds * 1000)

    try:
        gateway = OrderGateway(ex, sleep=sleep, clock=lambda: now[0])
        entry = entry_order(env="demo", bot="xrp", symbol=XRP, side=Side.LONG, intent_id="g1",
                            contracts=Decimal(1), now_ms=now[0])
        fake.inject("5xx", "trade/batch-orders", count=2)
        fake.inject("invisible")
        fake.invisible_ms = 60_000
        placed = await gateway.create_order(entry)
        assert fake.faults_injected["5xx"] == 2 and fake.position(XRP) == Decimal(1)
        assert now[0] - entry.created_ms > UNCONFIRMED_GRACE_MS  # the look-ups and back-off took that long
        assert placed.status is OrderStatus.OPEN and placed.updated_ms > entry.created_ms
        assert unconfirmed(placed, now[0])  # still "not visible yet", not "never accepted"
        assert not unconfirmed(placed, placed.updated_ms + UNCONFIRMED_GRACE_MS)
    finally:
        await ex.close()
