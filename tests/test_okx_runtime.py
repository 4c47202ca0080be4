"""Issue 18 acceptance, demo mode on the loopback fake OKX (``tests.fake_okx``, real ccxt ``okx``
client, real SQLite): the flow the Binance fake runs (``tests/test_live_runtime.py``) — entry,
brackets as OKX algo orders, the O-6 verified stop, a partial take-profit the brackets follow, the
close, and a restart reconciled before any entry (L-3, O-5) — with OKX's contracts (ctVal 100 XRP),
isolated margin with leverage, net mode and the demo header."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.runtime import Runtime, build_exchange_runtime
from tests.fake_okx import API_KEY, API_SECRET, PASSPHRASE, FakeOkx
from trading.adapters.ccxt_exchange import CcxtExchange
from trading.adapters.marketdata import default_data_dir
from trading.domain.models import OrderLeg, OrderType, Side
from trading.domain.oms import client_order_id_prefix, leg_of
from tests.test_live_runtime import Sleep, xrp_config  # the same bot and clock as the Binance demo tests
from trading.ports import ReplayClock

XRP = "XRP/USDT:USDT"


@pytest.fixture
async def fake():
    exchange = FakeOkx(default_data_dir(), symbols=(XRP,))
    await exchange.start()
    yield exchange
    await exchange.stop()


def adapter(fake: FakeOkx) -> CcxtExchange:
    return CcxtExchange(exchange_id="okx", mode="demo", api_key=API_KEY, secret=API_SECRET, password=PASSPHRASE,
                        api_base=fake.base_url, timeout_ms=2_000, rate_limit_ms=1)


async def build(fake: FakeOkx, db, clock) -> Runtime:
    return await build_exchange_runtime(config=xrp_config(), db_path=db, exchange=adapter(fake), env="demo",
                                        clock=clock, sleep=Sleep(clock))


def our_algos(fake: FakeOkx):
    prefix = client_order_id_prefix("demo", "xrp")
    return [a for a in fake.open_algos(XRP) if a.algo_cl_ord_id.startswith(prefix)]


def our_orders(fake: FakeOkx):
    prefix = client_order_id_prefix("demo", "xrp")
    return [o for o in fake.open_orders(XRP) if o.cl_ord_id.startswith(prefix)]


def stops(fake: FakeOkx):
    return [a for a in our_algos(fake) if a.sl_trigger is not None]


async def open_long(rt: Runtime, clock: ReplayClock, contracts: Decimal) -> None:
    await rt.engine.submit_entry("xrp", XRP, Side.LONG, contracts, price=await rt.exchange.fetch_last_price(XRP))
    clock.current_ms += 500
    await rt.tick(clock.now_ms())


async def test_s3_o3_o6_e1_okx_entry_brackets_verified_stop_partial_take_profit_close(fake, tmp_path):
    clock = ReplayClock(1_000_000)
    rt = await build(fake, tmp_path / "okx.db", clock)
    try:
        # O-7 at start: isolated margin with the profile's leverage, net mode, nothing else sent.
        assert fake.leverage[("XRP-USDT-SWAP", "isolated")] == rt.config.bots[0].leverage
        await open_long(rt, clock, Decimal(2))
        assert fake.position(XRP) == Decimal(2)  # contracts of ctVal 100 XRP (S-3)
        position = rt.engine.positions[("xrp", XRP)]
        assert position.contracts == Decimal(2)
        [stop] = stops(fake)
        assert stop.reduce_only and stop.sz == Decimal(2) and stop.side == "sell" and stop.td_mode == "isolated"
        assert stop.sl_ord_px == "-1" and stop.sl_type == "mark" and stop.ord_type == "conditional"
        assert stop.sl_trigger == position.stop_loss
        tps = [a for a in our_algos(fake) if a.tp_trigger is not None]
        assert tps and all(a.reduce_only and a.tp_ord_px == "-1" for a in tps)
        # No Binance parameter reached an OKX body; every id is OKX-valid (the fake refuses others).
        for _method, _route, body in fake.bodies:
            for row in body if isinstance(body, list) else [body]:
                assert not {"workingType", "priceProtect", "timeInForce", "stopPrice"} & set(row)
        # O-6: the stop vanishes on the exchange; the check 1.5 s after the entry places it again.
        stop.state = "canceled"
        clock.current_ms += 1_500
        await rt.tick(clock.now_ms())
        assert rt.supervisor.verifier.replaced == 1
        [again] = stops(fake)
        assert again.algo_cl_ord_id != stop.algo_cl_ord_id and leg_of(again.algo_cl_ord_id) is OrderLeg.STOP_LOSS
        assert again.sz == Decimal(2)
        # E-1 partial take-profit: TP1 triggers, fills its share; the stop follows the rest.
        [tp1] = [a for a in our_algos(fake) if leg_of(a.algo_cl_ord_id) is OrderLeg.TP1]
        fake.set_price(XRP, tp1.tp_trigger)
        assert tp1.state == "effective" and fake.position(XRP) == Decimal(2) - tp1.sz
        clock.current_ms += 1_000
        await rt.tick(clock.now_ms())
        position = rt.engine.positions[("xrp", XRP)]
        assert position.contracts == Decimal(2) - tp1.sz
        [resized] = stops(fake)
        assert resized.sz == position.contracts
        fills = await rt.store.fills.list(since_ms=0)
        assert any(f.leg is OrderLeg.TP1 and f.amount == tp1.sz for f in fills)
        # Close at market: flat, and nothing of ours left resting (algo or plain).
        await rt.engine.close_position("xrp", XRP)
        clock.current_ms += 500
        await rt.tick(clock.now_ms())
        assert fake.position(XRP) == 0 and rt.engine.positions == {}
        assert our_algos(fake) == [] and our_orders(fake) == []
        assert fake.rejected == {} or set(fake.rejected) <= {"51400"}  # at most cancels of already-gone brackets
        assert "Binance" not in rt.feed_state()  # /runtime: no word about Binance's demo venue on OKX
        assert len(fake.accepted_ids) == len(set(fake.accepted_ids))  # O-2: no id sent twice
    finally:
        await rt.close()


async def test_l3_o5_okx_restart_books_the_missed_fill_and_places_brackets(fake, tmp_path):
    """The bot dies between sending an entry and seeing its fill; the restart (L-3) books the
    fill from the exchange, opens the position and places its brackets before anything else;
    a stray of ours (an algo order its database lost) is cancelled by the periodic check (O-5)."""
    clock = ReplayClock(1_000_000)
    db = tmp_path / "okx.db"
    rt = await build(fake, db, clock)
    await rt.engine.submit_entry("xrp", XRP, Side.SHORT, Decimal(3), price=await rt.exchange.fetch_last_price(XRP))
    await rt.persister.flush()
    await rt.close(flush=False)  # killed before it saw the fill (OKX filled it at once)
    assert fake.position(XRP) == Decimal(-3)
    fake.advance()
    clock.current_ms += 60_000
    rt = await build(fake, db, clock)
    try:
        assert rt.reconcile_report.fills_booked == 1
        position = rt.engine.positions[("xrp", XRP)]
        assert position.side is Side.SHORT and position.contracts == Decimal(3)
        [stop] = stops(fake)
        assert stop.side == "buy" and stop.sz == Decimal(3) and stop.sl_trigger > fake.last[XRP]
        local = {o.client_order_id for o in rt.engine.open_orders.values()}
        assert local == {a.algo_cl_ord_id for a in our_algos(fake)}
        # A stray of ours: a reduce-only take-profit the database does not know.
        stray = client_order_id_prefix("demo", "xrp") + "0" * 16 + "tp2"
        ex = rt.exchange
        await ex.client.private_post_trade_order_algo({
            "instId": "XRP-USDT-SWAP", "tdMode": "isolated", "side": "buy", "ordType": "conditional", "sz": "1",
            "reduceOnly": True, "algoClOrdId": stray, "clOrdId": "strayclordid1",
            "tpTriggerPx": str((fake.last[XRP] * Decimal("0.9")).quantize(Decimal("0.0001"))), "tpOrdPx": "-1"})
        clock.current_ms += 30_000
        report = await rt.tick(clock.now_ms())
        assert report is not None and report.strays_cancelled == 1
        assert stray not in {a.algo_cl_ord_id for a in our_algos(fake)}
        assert (await rt.store.audit.verify()).ok
    finally:
        await rt.close()


async def test_s3_okx_ctval_sizes_the_notional_and_fees(fake, tmp_path):
    """S-3: notional = contracts × ctVal × price; the booked fee is the taker rate on it."""
    clock = ReplayClock(1_000_000)
    rt = await build(fake, tmp_path / "okx.db", clock)
    try:
        market = rt.engine.markets[XRP]
        assert market.contract_size == Decimal(100) and market.step_size == Decimal("0.01")
        await open_long(rt, clock, Decimal("0.5"))
        [fill] = [f for f in await rt.store.fills.list(since_ms=0) if f.leg is OrderLeg.ENTRY]
        assert fill.amount == Decimal("0.5")
        assert fill.fee == (Decimal("0.5") * 100 * fill.price * market.taker_fee)
        [ours] = [o for o in fake.orders.values() if o.cl_ord_id == fill.client_order_id]
        assert -ours.fee == fill.fee  # the exchange charged the same
        assert OrderType.STOP_MARKET in {o.type for o in rt.engine.open_orders.values()}
    finally:
        await rt.close()
