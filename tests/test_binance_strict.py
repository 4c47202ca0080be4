"""Issue 13: Binance as it really is. Each test here failed on the code before issue 13 against
the strict fake (tests/fake_binance.py, tests/fake_binance_venue.py) and passes after; real ccxt
client, real SQLite, one simulated clock for the bot and the exchange (tests/binance_harness.py)."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest

from bot.runtime import build_exchange_runtime
from tests.binance_harness import (
    PREFIX,
    XRP,
    adapter_for,
    bind,
    build,
    open_long,
    record_alerts,
    step,
    working_stops,
)
from tests.fake_binance import API_KEY, API_SECRET, FakeBinance
from trading.adapters.marketdata import default_data_dir
from trading.adapters.order_gateway import OrderGateway
from trading.domain.errors import ConfigError, RateLimited
from trading.domain.models import OrderStatus, OrderType, Side
from trading.domain.oms import entry_order

XRP_USDC = "XRP/USDC:USDC"


@pytest.fixture
async def fake():
    exchange = FakeBinance(default_data_dir(), symbols=(XRP,), stall_s=0.3, start_index=5)
    await exchange.start()
    yield exchange
    await exchange.stop()


def below(fake: FakeBinance, price: Decimal, pct: str = "3") -> Decimal:
    """``price`` minus ``pct`` % (a mark far enough below a long's stop to trigger it)."""
    return price * (1 - Decimal(pct) / 100)


# ------------------------------------------------------------------ defect 1: dead stops
async def test_r10_o6_a_stop_whose_market_order_expired_is_not_reported_resting_and_is_replaced(fake, tmp_path):
    """Defect 1 (R-10, O-6): the stop triggers on the mark price, its market order EXPIRES
    unfilled (algoStatus FINISHED, actual order EXPIRED). The adapter reports it dead — not
    resting — and the position gets a new working stop at once (the price came back above it)."""
    clock = bind(fake)
    rt = await build(fake, tmp_path / "d1.db", clock)
    try:
        await open_long(rt, clock)
        stop = rt.engine.stop_of("xrp", XRP)
        fake.inject("stop_expire")
        fake.set_mark(XRP, below(fake, stop.trigger_price))
        fake.advance()  # the mark crosses the stop: it triggers, its market order expires
        assert fake.algo(stop.client_order_id).status == "FINISHED"
        fake.venue.mark_offset[XRP] = Decimal(0)  # the mark is back above the stop level
        await step(rt, clock)
        remote = await rt.exchange.fetch_order(stop.client_order_id, XRP)
        assert remote.status is not OrderStatus.OPEN and remote.filled == 0
        assert fake.position(XRP)[0] == Decimal(10) and ("xrp", XRP) in rt.engine.positions
        [working] = working_stops(fake)
        assert working.client_id != stop.client_order_id
        assert working.qty == Decimal(10) and rt.engine.stop_of("xrp", XRP).client_order_id == working.client_id
    finally:
        await rt.close()


async def test_r10_a_stop_part_filled_then_expired_books_the_part_and_closes_the_rest(fake, tmp_path):
    """Defect 1 (R-10): the triggered stop fills half and the rest expires while the mark stays
    below the stop: the half is booked, a new stop for the rest is refused (-2021, it would
    trigger at once) and the rest is closed at market — never a position without a stop."""
    clock = bind(fake)
    rt = await build(fake, tmp_path / "d1b.db", clock)
    try:
        await open_long(rt, clock)
        stop = rt.engine.stop_of("xrp", XRP)
        fake.inject("stop_partial_expire")
        fake.set_mark(XRP, below(fake, stop.trigger_price))
        fake.advance()
        for _ in range(3):
            await step(rt, clock)
        assert fake.position(XRP) is None and rt.engine.positions == {}
        assert [o for o in fake.open_orders() if o.client_order_id.startswith(PREFIX)] == []
        fills = await rt.store.fills.list(since_ms=0)
        assert sum(f.amount for f in fills if f.leg.value == "sl") == Decimal(5)  # the half the stop filled
    finally:
        await rt.close()


# -------------------------------------------------------- defect 2: an entry sent twice
def _entry(clock, intent: str):
    return entry_order(env="demo", bot="xrp", symbol=XRP, side=Side.LONG, intent_id=intent,
                       contracts=Decimal(10), now_ms=clock.now_ms())


@pytest.mark.parametrize("hidden_ms", [1_500, 20_000])
async def test_o2_o4_a_timed_out_entry_the_order_service_cannot_show_yet_is_never_sent_twice(fake, hidden_ms):
    """Defect 2 (O-2, O-4): the entry is accepted and fills, the reply times out, and Binance's
    order service answers -2013 for a while (1.5 s, 20 s). The gateway sees a fill on the symbol
    that no order it can show explains and does not send the entry again — at once, without
    waiting while a position may be open: one order, one position. (Before: one look-up, then a
    resend the exchange accepted, the first order being filled and so no longer open.)"""
    clock = bind(fake)
    adapter = adapter_for(fake)
    await adapter.load_markets()
    try:
        gateway = OrderGateway(adapter, sleep=clock.sleep, clock=clock.now_ms)
        fake.invisible_ms = hidden_ms
        fake.inject("timeout_after_accept")
        fake.inject("invisible")
        order = _entry(clock, "lag")
        result = await gateway.create_order(order)
        assert result.client_order_id == order.client_order_id and result.status is OrderStatus.OPEN
        assert fake.accepted_twice() == [] and fake.accepted_ids == [order.client_order_id]
        assert fake.position(XRP)[0] == Decimal(10)
    finally:
        await adapter.close()


async def test_o2_r10_a_late_entry_is_booked_once_with_its_stop_as_soon_as_the_exchange_shows_it(fake, tmp_path):
    """Defect 2 through the runtime (O-2, R-10): the entry's reply times out and the order stays
    hidden 1.5 s; the entry is tracked as accepted and unconfirmed, and within 2 s of it showing
    up its fill is booked and its stop rests — one order, one position, one stop."""
    clock = bind(fake)
    rt = await build(fake, tmp_path / "d2.db", clock)
    try:
        price = await rt.exchange.fetch_last_price(XRP)  # the order gate values the entry at it (O-9)
        fake.inject("timeout_after_accept", path="/order")
        fake.inject("invisible", path="/order")
        await rt.engine.submit_entry("xrp", XRP, Side.LONG, Decimal(10), price=price)
        shown = clock.now_ms() + fake.invisible_ms
        while not working_stops(fake):
            await step(rt, clock)
            assert clock.now_ms() <= shown + 2_000, "no stop 2 s after the exchange showed the entry"
        assert fake.accepted_twice() == [] and fake.position(XRP)[0] == Decimal(10)
        assert rt.engine.positions[("xrp", XRP)].contracts == Decimal(10)
        assert rt.gateway.stats["resend_withheld"] == 1
    finally:
        await rt.close()


async def test_l3_o5_a_restart_settles_an_entry_the_exchange_does_not_show_yet_before_trading(fake, tmp_path):
    """L-3, O-5 (found by the chaos run): the bot is killed right after sending an entry that
    filled but that Binance's order service hides for 3 s; the restarted bot does not give the
    entry up, nor book the position as someone else's: its start-up reconciliation runs again
    until the exchange shows the order, then books the fill with its stop — before any entry."""
    clock = bind(fake)
    db = tmp_path / "settle.db"
    rt = await build(fake, db, clock)
    price = await rt.exchange.fetch_last_price(XRP)  # the order gate values the entry at it (O-9)
    fake.invisible_ms = 3_000
    fake.inject("invisible", path="/order")
    await rt.engine.submit_entry("xrp", XRP, Side.LONG, Decimal(10), price=price)
    await rt.persister.flush()
    await rt.close(flush=False)  # killed before it saw the fill
    restarted = await build(fake, db, clock)
    try:
        assert restarted.engine.positions[("xrp", XRP)].contracts == Decimal(10)
        assert len(working_stops(fake)) == 1 and restarted.supervisor.reconciler.unsettled == 0
        assert restarted.guard.foreign == {} and fake.accepted_twice() == []
        # The report the chat posts is the settled one, not the first pass's "not settled yet".
        text = restarted.reconcile_report.text()
        assert "not settled yet" not in text and "did not show at first" in text
        assert "settled by" in text and "1 fill(s) booked" in text and restarted.reconcile_report.fills_booked == 1
    finally:
        await restarted.close()


async def test_o2_an_order_that_never_reached_the_exchange_is_still_sent_once(fake):
    """Defect 2, the other side: a 5xx before the order reached the exchange, nothing traded,
    no position — after the spread look-ups it is sent (once)."""
    clock = bind(fake)
    adapter = adapter_for(fake)
    await adapter.load_markets()
    try:
        gateway = OrderGateway(adapter, sleep=clock.sleep, clock=clock.now_ms)
        fake.inject("5xx", path="/order", method="POST")
        order = _entry(clock, "retry")
        await gateway.create_order(order)
        assert fake.accepted_ids == [order.client_order_id] and fake.position(XRP)[0] == Decimal(10)
        assert gateway.stats["lookup_again"] == len(gateway.lookup_delays_s)
    finally:
        await adapter.close()


# -------------------------------------------------- defect 3: unrealised PnL counted twice
async def test_r3_r5_z4_the_balance_is_the_wallet_and_unrealised_pnl_counts_once(fake, tmp_path):
    """Defect 3 (R-3, R-5, Z-4): with a long open and the mark 5 % above its entry, the port's
    balance is Binance's walletBalance (ccxt's ``total`` is the margin balance, which already
    holds the unrealised PnL); the engine's equity adds the unrealised PnL once."""
    clock = bind(fake)
    rt = await build(fake, tmp_path / "d3.db", clock)
    try:
        await open_long(rt, clock, "1000")
        entry = fake.position(XRP)[1]
        fake.set_mark(XRP, entry * Decimal("1.05"))
        wallet = fake.venue.assets["USDT"]
        assert fake.venue.unrealised(XRP) > 100  # a real unrealised gain on the exchange
        assert await rt.exchange.fetch_balance() == wallet
        await rt.engine.fills.refresh_balance(clock.now_ms())
        assert rt.engine.account.balance == wallet
        assert rt.engine.equity() == wallet + rt.engine.unrealised_pnl()
    finally:
        await rt.close()


async def test_o5_r10_a_reconciliation_never_counts_a_fill_twice_while_our_close_is_working(fake, tmp_path):
    """O-5 (found by the 10,000-step chaos run on the strict fake): a close fills half at once
    (the rest waits for the next candle); booking it makes the bot re-place the stop, which the
    exchange refuses (the mark is past it), so a second close goes out and fills half at once too
    — during a reconciliation, before the position is read. The exchange then shows less than
    the bot booked; repairing the size then and booking the fill later would count it twice (the
    bot flat, the exchange still short of a close and unprotected). The repair waits until our
    working market orders are booked: every fill is booked once and both end flat together."""
    clock = bind(fake)
    rt = await build(fake, tmp_path / "race.db", clock)
    try:
        await open_long(rt, clock)
        stop = rt.engine.stop_of("xrp", XRP)
        fake.set_mark(XRP, below(fake, stop.trigger_price))  # any new stop would trigger at once (-2021)
        fake.inject("partial", path="/order", method="POST", count=2)
        await rt.engine.close_position("xrp", XRP)  # 5 now, 5 at the next candle
        clock.current_ms += 31_000
        await rt.tick(clock.now_ms())  # the reconciliation books it, the refused stop sends a close
        for _ in range(6):
            local = rt.engine.positions.get(("xrp", XRP))
            exchange = fake.position(XRP)
            assert local is not None or exchange is None, f"bot flat, exchange {exchange}"
            await step(rt, clock, 1_000)
        fake.venue.mark_offset[XRP] = Decimal(0)
        fake.advance()
        for _ in range(3):
            await step(rt, clock)
        assert fake.position(XRP) is None and rt.engine.positions == {}
        fills = await rt.store.fills.list(since_ms=0)
        assert sum(f.amount for f in fills if f.leg.value != "entry") == Decimal(10)  # each fill booked once
    finally:
        await rt.close()


# ------------------------------------------------------- defect 4: duplicate stops
async def test_o6_a_stop_the_algo_service_does_not_show_yet_is_not_placed_twice(fake, tmp_path):
    """Defect 4 (O-6, R-10): the stop is accepted but the algo service answers -2013 for 3 s;
    the fill poll and the 1.5 s verification look again instead of placing a second full-size
    stop: never more than one stop on the exchange, and it is the one the bot tracks."""
    clock = bind(fake)
    rt = await build(fake, tmp_path / "d4.db", clock)
    try:
        fake.invisible_ms = 3_000
        fake.inject("invisible", path="/algoOrder")  # the first conditional order: the stop
        await open_long(rt, clock)
        stop = rt.engine.stop_of("xrp", XRP)
        for _ in range(16):  # 8 s of passes every 0.5 s
            assert len(working_stops(fake)) == 1
            await step(rt, clock)
        assert [s.client_id for s in working_stops(fake)] == [stop.client_order_id]
        assert rt.engine.stop_of("xrp", XRP).client_order_id == stop.client_order_id
        assert rt.supervisor.verifier.replaced == 0
    finally:
        await rt.close()


# ------------------------------------------------------------ defect 5: the ccxt pin
def test_o4_ccxt_older_than_4_5_27_is_refused_at_start_with_one_line(monkeypatch):
    """Defect 5 (O-4): ccxt < 4.5.27 sends Binance conditional orders to the old endpoint
    (-4120) or cannot fetch / cancel / parse them: the adapter refuses it at construction with
    one line, and pyproject.toml pins the minimum."""
    import tomllib
    from pathlib import Path

    import ccxt

    from trading.adapters import ccxt_exchange

    monkeypatch.setattr(ccxt, "__version__", "4.5.26")
    with pytest.raises(ConfigError) as info:
        ccxt_exchange.CcxtExchange(mode="demo", api_key="k", secret="s")
    assert "4.5.26" in str(info.value) and ">= 4.5.27" in str(info.value) and "\n" not in str(info.value)
    check = ccxt_exchange.check_ccxt_version
    assert check("4.5.27") == "4.5.27" and check("4.6.0") == "4.6.0"
    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    [pin] = [d for d in project["project"]["dependencies"] if d.startswith("ccxt")]
    assert pin.replace(" ", "") == "ccxt>=4.5.27,<5"


def test_o4_optiflow_check_says_in_one_line_that_ccxt_is_too_old(monkeypatch, capsys, tmp_path):
    """Defect 5 through the CLI: ``optiflow check`` exits 2 with one line, no traceback."""
    import ccxt

    from bot.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BINANCE_API_KEY", API_KEY)
    monkeypatch.setenv("BINANCE_API_SECRET", API_SECRET)
    monkeypatch.setenv("OPTIFLOW_MODE", "demo")
    monkeypatch.setattr(ccxt, "__version__", "4.4.99")
    assert main(["check", "--symbols", "XRP"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("optiflow: ccxt 4.4.99 is too old") and "Traceback" not in err[0]


# ---------------------------------------------------------- defect 7: start-up checks
async def test_o7_run_refuses_a_hedge_mode_account_in_one_line(fake, tmp_path):
    """Defect 7 (O-7): hedge (dual-side) position mode is refused when the runtime starts (every
    order would get -4061), not only by ``optiflow check``."""
    clock = bind(fake)
    fake.dual_side = True
    with pytest.raises(ConfigError, match="hedge .dual-side. mode") as info:
        await build(fake, tmp_path / "d7.db", clock)
    assert "\n" not in str(info.value) and fake.accepted_ids == []


async def test_o7_s4_usdc_perps_in_multi_assets_mode_read_the_balance_and_the_real_fees(tmp_path):
    """Defect 7 (O-7, S-4): a multi-assets account trading XRP/USDC:USDC with its funds in USDT
    (Binance leaves the USDC asset at 0, ccxt then drops it): the balance is the account's
    total wallet, and the account's own USDC commission (maker 0, taker 0.04 %) replaces ccxt's
    default fees — the fee booked equals the fee the exchange charged."""
    fake = FakeBinance(default_data_dir(), symbols=(XRP_USDC,), assets={"USDT": Decimal(5_000)}, multi_assets=True,
                       start_index=5)
    await fake.start()
    clock = bind(fake)
    try:
        rt = await build(fake, tmp_path / "d7b.db", clock, symbol=XRP_USDC, quote="USDC")
        try:
            assert rt.engine.account.balance == Decimal(5_000)
            market = rt.engine.markets[XRP_USDC]
            assert (market.maker_fee, market.taker_fee) == (Decimal("0"), Decimal("0.0004"))
            await open_long(rt, clock, symbol=XRP_USDC)
            [fill] = await rt.store.fills.list(since_ms=0)
            [trade] = fake.trades
            assert fill.fee == trade.fee and trade.fee_asset == "USDC"
        finally:
            await rt.close()
    finally:
        await fake.stop()


# -------------------------------------------------------- defect 8: bans and keys
async def test_o4_a_418_ip_ban_is_waited_out_as_long_as_binance_says_without_a_request(fake):
    """Defect 8 (O-4): a 418 with Retry-After 120 s: the call fails, and no request reaches the
    exchange until the ban ends (each one would extend it); then calls work again."""
    clock = bind(fake)
    adapter = adapter_for(fake)
    await adapter.load_markets()
    try:
        gateway = OrderGateway(adapter, sleep=clock.sleep, clock=clock.now_ms)
        fake.inject("418", path="account", retry_after_s=120)
        with pytest.raises(RateLimited):
            await gateway.fetch_balance()
        banned_until = clock.now_ms() + 120_000
        sent = sum(fake.requests.values())
        for _ in range(5):  # 110 … 70 s left: longer than one call waits (60 s), it fails at once
            clock.current_ms += 10_000
            with pytest.raises(RateLimited):
                await gateway.fetch_balance()
        assert sum(fake.requests.values()) == sent and fake.requests_during_ban == 0
        clock.current_ms += 10_000  # 60 s left: the call waits them out, then asks
        assert await gateway.fetch_balance() == Decimal(10_000)
        assert clock.now_ms() >= banned_until and fake.requests_during_ban == 0
    finally:
        await adapter.close()


async def test_o4_api_keys_never_reach_a_log_even_at_debug(fake, caplog):
    """Defect 8: ccxt logs every request's headers (``X-MBX-APIKEY``) at DEBUG; through the
    adapter (REST) and the websocket client the key and secret are masked at any level."""
    from trading.adapters.ws_feed import make_ws_client

    caplog.set_level(logging.DEBUG)
    clock = bind(fake)
    adapter = adapter_for(fake)
    ws = make_ws_client("demo", api_base=fake.base_url, api_key=API_KEY, secret=API_SECRET)
    try:
        await adapter.load_markets()
        await adapter.fetch_balance()
        await adapter.create_order(_entry(clock, "logged"))
        await ws.fetch_balance()
        fake.inject("5xx", path="account")
        with pytest.raises(Exception):
            await adapter.fetch_balance()
    finally:
        await adapter.close()
        await ws.close()
    text = caplog.text
    assert "X-MBX-APIKEY" in text  # the headers were logged …
    assert API_KEY not in text and API_SECRET not in text  # … masked


# ------------------------------------------------------- defect 9: the demo venue's cancels
async def test_r10_t6_l1_the_demo_venue_cancelling_a_stop_is_no_incident_it_is_placed_again(fake, tmp_path):
    """Item 9 (R-10, T-2 /runtime, L-1): Binance's demo venue cancels conditional orders on its own
    (~53 s); the bot tells that from its own cancels, places the stop again (no emergency close),
    and /runtime and the build card say that the demo venue does this."""
    from bot.lifecycle import build_card

    clock = bind(fake)
    fake.demo_cancel_after_ms = 53_000
    fake.venue.demo_cancel_after_ms = 53_000
    rt = await build(fake, tmp_path / "d9.db", clock)
    alerts = record_alerts(rt)
    try:
        await open_long(rt, clock)
        first = rt.engine.stop_of("xrp", XRP)
        clock.current_ms += 54_000
        fake.advance()  # the venue cancels it on its own
        await step(rt, clock)
        assert fake.algo(first.client_order_id).cancelled_by == "venue"
        assert ("xrp", XRP) in rt.engine.positions and fake.position(XRP)[0] == Decimal(10)
        [working] = working_stops(fake)
        assert working.client_id != first.client_order_id and working.qty == Decimal(10)
        assert not [a for a in alerts if a.kind == "NO_STOP"]
        take_profits = [a for a in fake.venue.algos.values() if a.order_type == "TAKE_PROFIT_MARKET"
                        and a.status == "NEW" and a.client_id.startswith(PREFIX)]
        assert take_profits and all(a.create_ms > first.created_ms for a in take_profits)  # placed again too
        assert "demo venue cancels conditional orders on its own" in rt.feed_state()
        assert rt.guard.venue_cancels >= 1 and f"({rt.guard.venue_cancels} so far this run)" in rt.feed_state()
        assert "demo venue cancels conditional orders" in build_card(rt, "demo", "binanceusdm").as_html()
    finally:
        await rt.close()


# ------------------------------------------------- defect 10: triggered but not filled
async def test_r10_a_stop_triggered_but_not_filled_for_5_s_closes_the_rest_at_market_with_an_alert(fake, tmp_path):
    """Item 10 (R-10, M-1): the stop triggers but stays TRIGGERING (no fill: a gap, price
    protection); after the 5 s grace the rest of the position is closed at market and a
    STOP_NOT_FILLED alert is sent — not a minute later, not never."""
    clock = bind(fake)
    rt = await build(fake, tmp_path / "d10.db", clock)
    alerts = record_alerts(rt)
    try:
        await open_long(rt, clock)
        stop = rt.engine.stop_of("xrp", XRP)
        fake.inject("stop_stuck")
        fake.set_mark(XRP, below(fake, stop.trigger_price))
        fake.advance()
        assert fake.algo(stop.client_order_id).status == "TRIGGERING"
        await step(rt, clock)  # the fill poll sees it triggered
        assert fake.position(XRP)[0] == Decimal(10)
        for _ in range(4):  # 2 s more: still within the grace
            await step(rt, clock)
        assert fake.position(XRP)[0] == Decimal(10)
        for _ in range(8):  # past 5 s
            await step(rt, clock)
        assert fake.position(XRP) is None and rt.engine.positions == {}
        assert [a.kind for a in alerts if a.kind == "STOP_NOT_FILLED"] == ["STOP_NOT_FILLED"]
        await rt.persister.flush()
        [closed] = await rt.store.positions.list_closed()
        assert closed.exit_reason.value == "NO_STOP"
    finally:
        await rt.close()


# ------------------------------------------------- defect 11: someone else on the account
async def test_o5_t6_a_position_someone_else_opened_is_reported_once_never_booked_as_ours(fake, tmp_path):
    """Item 11 (O-5, T-6, M-1): a trade in the exchange's app on our symbol (a client id of no
    prefix of ours) and a limit order of a second bot: the reconciliation books neither as
    ours, cancels nothing of theirs, reports each once with the "someone_else" playbook and
    pauses entries on the symbol; "Adopt" then books the position with a stop-loss."""
    clock = bind(fake)
    rt = await build(fake, tmp_path / "d11.db", clock)
    alerts = record_alerts(rt)
    try:
        fake.trade_by_hand(XRP, "BUY", Decimal(20))
        far = (fake.venue.last[XRP] * Decimal("0.97")).quantize(Decimal("0.0001"))
        fake.venue.place_order(XRP, "other_bot_1", "BUY", "LIMIT", Decimal(10), far, False, "GTC")
        await step(rt, clock, 31_000)
        await step(rt, clock, 31_000)
        assert rt.engine.positions == {} and fake.position(XRP)[0] == Decimal(20)
        assert [o.client_order_id for o in fake.open_orders(XRP)] == ["other_bot_1"]  # never cancelled
        kinds = sorted(a.kind for a in alerts)
        assert kinds == ["FOREIGN_ORDER", "FOREIGN_POSITION"]  # once each, not every 30 s
        assert all(a.playbook == "someone_else" for a in alerts)
        assert XRP in rt.engine.paused["xrp"]
        assert "someone else on the account" in rt.feed_state()
        assert "Adopted" in await rt.service.exchange_actions["ADOPT_FOREIGN"]()
        position = rt.engine.positions[("xrp", XRP)]
        assert position.contracts == Decimal(20) and len(working_stops(fake)) == 1
        assert XRP not in rt.engine.paused["xrp"]
    finally:
        await rt.close()


async def test_m1_someone_else_found_at_start_is_reported_once_across_restarts(fake, tmp_path):
    """M-1 (one alert per incident, not one per start), L-3: someone else's position and order,
    there before the bot starts, are reported by the start-up reconciliation — handed to the
    notifier, which is attached after it — and not again after two restarts (the venue guard's
    memory is stored in the database); "Adopt" after the restarts still lifts the pause the
    guard set before them."""
    clock = bind(fake)
    db = tmp_path / "m1.db"
    fake.trade_by_hand(XRP, "BUY", Decimal(20))
    far = (fake.venue.last[XRP] * Decimal("0.97")).quantize(Decimal("0.0001"))
    fake.venue.place_order(XRP, "other_bot_1", "BUY", "LIMIT", Decimal(10), far, False, "GTC")
    kinds = []
    for _ in range(3):  # the first start, then two restarts, each with a minute of passes
        rt = await build(fake, db, clock)
        alerts = record_alerts(rt, with_unheard=True)
        try:
            await step(rt, clock, 31_000)
            await step(rt, clock, 31_000)
            kinds.append(sorted(a.kind for a in alerts if a.kind.startswith("FOREIGN")))
            assert XRP in rt.engine.paused["xrp"] and "someone else on the account" in rt.feed_state()
        finally:
            await rt.close()
        clock.current_ms += 60_000
    assert kinds == [["FOREIGN_ORDER", "FOREIGN_POSITION"], [], []]
    rt = await build(fake, db, clock)
    try:
        assert "Adopted" in await rt.service.exchange_actions["ADOPT_FOREIGN"]()
        assert rt.engine.positions[("xrp", XRP)].contracts == Decimal(20)
        assert XRP not in rt.engine.paused["xrp"]
    finally:
        await rt.close()


# --------------------------------------------------------------- defect 12: the canary
async def test_o6_m1_the_daily_canary_places_looks_up_and_cancels_a_far_stop_in_demo(fake, tmp_path):
    """Item 12 (O-6, M-1): once a UTC day in demo one far-away reduce-only STOP_MARKET is placed
    (without a position: Binance checks reduce-only at trigger), looked up and cancelled;
    nothing is left; /runtime shows the result; the next day it runs again."""
    clock = bind(fake)
    rt = await build(fake, tmp_path / "d12.db", clock, canary=True)
    try:
        await step(rt, clock)
        canaries = [a for a in fake.venue.algos.values() if a.client_id.endswith("cnry")]
        assert len(canaries) == 1
        canary = canaries[0]
        assert canary.status == "CANCELED" and canary.cancelled_by == "user" and canary.reduce_only
        assert canary.order_type == "STOP_MARKET" and canary.trigger < fake.venue.mark(XRP) * Decimal("0.6")
        assert fake.open_orders() == [] and rt.guard.canary_failures == 0
        assert "daily canary: passed" in rt.feed_state()
        await step(rt, clock)
        assert len([a for a in fake.venue.algos.values() if a.client_id.endswith("cnry")]) == 1  # once a day
        await step(rt, clock, 86_400_000)
        assert len([a for a in fake.venue.algos.values() if a.client_id.endswith("cnry")]) == 2
    finally:
        await rt.close()


async def test_m1_a_failing_canary_alerts_and_live_runs_it_only_when_asked(fake, tmp_path):
    """Item 12 (M-1): the venue refusing the canary's conditional order raises a CANARY_FAILED
    alert naming the step; in live mode the canary is opt-in (off by default)."""
    clock = bind(fake)
    rt = await build(fake, tmp_path / "d12b.db", clock, canary=True)
    alerts = record_alerts(rt)
    try:
        fake.inject("5xx", path="/algoOrder", method="POST")
        await step(rt, clock)
        failed = [a for a in alerts if a.kind == "CANARY_FAILED"]
        assert len(failed) == 1
        alert = failed[0]
        assert "'place'" in alert.text and rt.guard.canary_failures == 1
        assert "daily canary: FAILED at 'place'" in rt.feed_state()
    finally:
        await rt.close()
    live = await build_exchange_runtime(config=rt.config, db_path=tmp_path / "live.db", exchange=adapter_for(fake),
                                        env="live", clock=clock, sleep=clock.sleep)
    try:
        assert live.guard.canary is False
    finally:
        await live.close()


async def test_s2_o5_the_fake_keeps_its_strict_rules(fake):
    """The strict fake itself (issue 13): -4045 past MAX_NUM_ALGO_ORDERS, client ids checked
    against Binance's pattern, MARKET_LOT_SIZE, -2021 against the mark for MARK_PRICE and a
    reduce-only conditional order accepted without a position, expiring at its trigger."""
    from tests.fake_binance_venue import BinanceReject

    venue = fake.venue
    last = venue.last[XRP]
    with pytest.raises(BinanceReject) as bad:
        venue.place_order(XRP, "bad id!", "BUY", "MARKET", Decimal(10), None, False, "GTC")
    assert bad.value.code == -1100
    with pytest.raises(BinanceReject) as big:
        venue.place_order(XRP, "big", "BUY", "MARKET", Decimal(2_000_001), None, False, "GTC")
    assert big.value.code == -4005  # MARKET_LOT_SIZE maxQty 2,000,000 (LOT_SIZE allows 10,000,000)
    fake.set_mark(XRP, last * Decimal("0.9"))
    with pytest.raises(BinanceReject) as crossed:  # below the last price but above the mark
        venue.place_algo(XRP, "stop1", "SELL", "STOP_MARKET", Decimal(10), (last * Decimal("0.95")).quantize(
            Decimal("0.0001")), None, "MARK_PRICE", True, True, "GTC")
    assert crossed.value.code == -2021
    venue.mark_offset[XRP] = Decimal(0)
    trigger = (last * Decimal("0.5")).quantize(Decimal("0.0001"))
    for i in range(10):
        venue.place_algo(XRP, f"far{i}", "SELL", "STOP_MARKET", Decimal(10), trigger, None, "CONTRACT_PRICE",
                         False, True, "GTC")
    with pytest.raises(BinanceReject) as full:
        venue.place_algo(XRP, "far10", "SELL", "STOP_MARKET", Decimal(10), trigger, None, "CONTRACT_PRICE",
                         False, True, "GTC")
    assert full.value.code == -4045
    far = fake.algo("far0")
    venue.on_candle(XRP, trigger, trigger, trigger - 1 if trigger > 1 else trigger / 2, trigger)
    assert far.status == "EXPIRED" and far.reason == "Reduce Only reject"  # no position to reduce
    await asyncio.sleep(0)


async def test_o5_positions_come_in_the_v3_shape_and_accounts_without_can_trade(fake):
    """The strict fake answers positionRisk v3 (only symbols in use, no leverage or margin type)
    and account v3 without ``canTrade`` — the adapter reads what each version has (the demo
    key check reads v2, the balance v3)."""
    clock = bind(fake)
    adapter = adapter_for(fake)
    await adapter.load_markets()
    try:
        raw = await adapter.client.fapiPrivateV3GetPositionRisk()
        assert raw == []
        await adapter.create_order(_entry(clock, "v3"))
        [row] = await adapter.client.fapiPrivateV3GetPositionRisk()
        assert "leverage" not in row and "marginType" not in row and Decimal(row["positionAmt"]) == 10
        account = await adapter.client.fapiPrivateV3GetAccount()
        assert "canTrade" not in account
        assert (await adapter.fetch_key_permissions())["futures"] is True
        [position] = await adapter.fetch_position_details()
        assert position.contracts == Decimal(10) and position.entry_price == fake.position(XRP)[1]
        assert OrderType.MARKET.value == "MARKET"
    finally:
        await adapter.close()
