"""Demo/live composition against the loopback fake Binance: entry → brackets → O-6 stop check →
close, O-5 reconciliation and L-3 restart from the SQLite file (real ccxt client, real SQLite)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from decimal import Decimal

import pytest

from bot.runtime import Runtime, build_exchange_runtime
from tests.fake_binance import API_KEY, API_SECRET, FakeBinance
from trading.adapters.ccxt_exchange import CcxtExchange
from trading.domain.config import TradingConfig
from trading.adapters.marketdata import default_data_dir
from trading.domain.models import ExitReason, OrderType, Side
from trading.domain.oms import client_order_id_prefix
from trading.ports import ReplayClock

XRP = "XRP/USDT:USDT"


def xrp_config() -> TradingConfig:
    base = TradingConfig()
    bot = base.bots[0].model_copy(update={"name": "xrp", "symbols": (XRP,), "timeframe": "1m"})
    return base.model_copy(update={"bots": (bot,)})


class Sleep:
    def __init__(self, clock: ReplayClock) -> None:
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.clock.current_ms += int(seconds * 1000)


@pytest.fixture
async def fake():
    exchange = FakeBinance(default_data_dir(), symbols=(XRP,), stall_s=0.4)
    await exchange.start()
    yield exchange
    await exchange.stop()


async def build(fake, db, clock) -> Runtime:
    adapter = CcxtExchange(mode="demo", api_key=API_KEY, secret=API_SECRET, api_base=fake.base_url, timeout_ms=200,
                           rate_limit_ms=1)
    return await build_exchange_runtime(config=xrp_config(), db_path=db, exchange=adapter, env="demo",
                                   clock=clock, sleep=Sleep(clock))


async def open_long(rt: Runtime, fake: FakeBinance, clock: ReplayClock) -> None:
    """A market long of 10 XRP: sent, filled at the next candle's open, booked by the next pass
    (which places its brackets)."""
    await rt.engine.submit_entry("xrp", XRP, Side.LONG, Decimal(10), price=await rt.exchange.fetch_last_price(XRP))
    fake.advance()
    clock.current_ms += 500
    await rt.tick(clock.now_ms())


async def restart_after_missed_fill(fake: FakeBinance, db, clock: ReplayClock, side: Side) -> Runtime:
    """An entry of 10 XRP is sent, the bot is killed before it sees the fill (nothing more
    flushed), the entry fills while it is down; returns the runtime rebuilt a minute later
    from the SQLite file (restored and reconciled, L-3)."""
    rt = await build(fake, db, clock)
    await rt.engine.submit_entry("xrp", XRP, side, Decimal(10), price=await rt.exchange.fetch_last_price(XRP))
    await rt.persister.flush()
    await rt.close(flush=False)  # killed before it saw the fill
    fake.advance()  # the entry fills while the bot is down
    clock.current_ms += 60_000
    return await build(fake, db, clock)


def ours(fake):
    prefix = client_order_id_prefix("demo", "xrp")
    return [o for o in fake.open_orders() if o.client_order_id.startswith(prefix)]


async def test_o6_entry_gets_brackets_verified_stop_and_closes_clean(fake, tmp_path):
    clock = ReplayClock(1_000_000)
    rt = await build(fake, tmp_path / "live.db", clock)
    try:
        await open_long(rt, fake, clock)
        assert fake.position(XRP)[0] == Decimal(10)
        assert ("xrp", XRP) in rt.engine.positions
        stops = [o for o in ours(fake) if o.type is OrderType.STOP_MARKET]
        assert len(stops) == 1 and stops[0].reduce_only and stops[0].amount == Decimal(10)
        # O-6: the stop vanishes on the exchange (cancelled by hand); the check 1.5 s later
        # places it again.
        fake.cancel_by_hand(stops[0].client_order_id)
        clock.current_ms += 1_500
        await rt.tick(clock.now_ms())
        assert rt.supervisor.verifier.replaced == 1
        assert len([o for o in ours(fake) if o.type is OrderType.STOP_MARKET]) == 1
        await rt.engine.close_position("xrp", XRP)
        fake.advance()
        clock.current_ms += 500
        await rt.tick(clock.now_ms())
        assert fake.position(XRP) is None
        assert ours(fake) == []
        assert rt.engine.positions == {}
    finally:
        await rt.close()


async def test_o5_l3_restart_reconciles_missed_fill_and_strays(fake, tmp_path):
    clock = ReplayClock(1_000_000)
    db = tmp_path / "live.db"
    rt = await restart_after_missed_fill(fake, db, clock, Side.SHORT)
    try:
        assert rt.reconcile_report.fills_booked == 1
        position = rt.engine.positions[("xrp", XRP)]
        assert position.side is Side.SHORT and position.contracts == Decimal(10)
        assert any(o.type is OrderType.STOP_MARKET for o in ours(fake))
        local = {o.client_order_id for o in rt.engine.open_orders.values()}
        assert local == {o.client_order_id for o in ours(fake)}
    finally:
        await rt.close()


async def test_a1_l3_live_restart_reconciliation_and_fills_are_audited(fake, tmp_path):
    """A-1 in demo/live: the fill booked at restart and the start-up reconciliation (L-3) are
    audit records citing the config in force; a clean periodic check (O-5) adds no record, one
    that cancels a stray does; the chain verifies and the head is the build card's."""
    from storage import Storage

    clock = ReplayClock(1_000_000)
    db = tmp_path / "live.db"
    rt = await restart_after_missed_fill(fake, db, clock, Side.LONG)
    try:
        records = await rt.store.audit.list()
        reconciles = [r for r in records if r.action == "RECONCILE"]
        assert len(reconciles) == 2  # the first (empty) start and the restart
        last = reconciles[-1]
        assert last.why["fills_booked"] == 1 and last.why["repaired"] == rt.reconcile_report.repaired
        assert not rt.reconcile_report.clean and "Restart reconciliation" in rt.reconcile_report.text()
        assert any(r.action == "FILL" and r.symbol == XRP for r in records)
        assert rt.service.config_id and all(r.config_id == rt.service.config_id for r in records)
        # A clean periodic pass adds no record; a stray of ours is cancelled and audited.
        clock.current_ms += 30_000
        report = await rt.tick(clock.now_ms())
        assert report is not None and report.periodic and report.clean
        assert len([r for r in await rt.store.audit.list() if r.action == "RECONCILE"]) == 2
        stray = client_order_id_prefix("demo", "xrp") + "stray1-tp1"
        fake.plant_order(XRP, stray, Decimal(100))  # of ours, but its database lost it
        clock.current_ms += 30_000
        report = await rt.tick(clock.now_ms())
        assert report.strays_cancelled == 1
        assert stray not in {o.client_order_id for o in fake.open_orders()}
        last = [r for r in await rt.store.audit.list() if r.action == "RECONCILE"][-1]
        assert last.why["periodic"] and any(stray in line for line in last.why["found"])
        assert (await rt.store.audit.verify()).ok
        head = await rt.audit_head()
    finally:
        await rt.close()
    store = await Storage.open(db)
    try:
        assert (await store.audit.head())[1] == head
    finally:
        await store.close()


async def test_s2_rest_feed_processes_each_closed_candle_once_with_replay_state(tmp_path):
    """S-2 REST polling: warm-up, catch-up after missed polls, no candle twice, retried reads;
    the market state equals the one the replay path builds from the same bundled candles."""
    from trading.engine.core import Engine
    from trading.domain.events import EventBuffer
    from trading.adapters.rest_feed import RestCandleFeed
    from trading.adapters.marketdata import load_candles

    fake = FakeBinance(default_data_dir(), symbols=(XRP,), start_index=400)
    await fake.start()
    clock = ReplayClock()
    try:
        clock.current_ms = fake.clock.current_ms + 1
        rt = await build(fake, tmp_path / "live.db", clock)
        try:
            steps: list[float] = []  # wall ms per candle step: the /runtime loop timings (T-2)
            feed = RestCandleFeed(rt.engine, rt.gateway, warmup=300, window=5, on_step=steps.append)
            await feed.warm_up(clock.now_ms())
            for _ in range(3):
                fake.advance()
            clock.current_ms = fake.clock.current_ms + 1
            assert await feed.poll(clock.now_ms()) == 3
            assert await feed.poll(clock.now_ms()) == 0
            fake.advance()
            fake.inject("5xx", path="klines")
            clock.current_ms = fake.clock.current_ms + 1
            assert await feed.poll(clock.now_ms()) == 1
            assert len(steps) == 4 and all(ms >= 0 for ms in steps)  # warm-up candles are not steps
            state = rt.engine.feeds[(XRP, "1m")]
            series = load_candles(default_data_dir(), XRP, "1m")
            assert feed.last_open_ms[(XRP, "1m")] == series.timestamp[404]
            reference = Engine(config=xrp_config(), markets=rt.engine.markets, exchange=rt.gateway,
                               clock=ReplayClock(), sink=EventBuffer())
            ref = reference.feeds[(XRP, "1m")]
            for i in range(101, 405):  # the same candles: 300 warm-up + the 4 polled
                reference.warm(ref, series.high[i], series.low[i], series.close[i], series.volume[i])
            assert state.last_close == series.close[404]
            assert state.indicators.rsi == ref.indicators.rsi and state.indicators.atr == ref.indicators.atr
        finally:
            await rt.close()
    finally:
        await fake.stop()


async def test_t6_o5_playbook_place_stops_again_reconciles_in_demo(fake, tmp_path):
    """T-6 in demo/live: the "no stop" playbook's button asks the supervisor for a reconciliation
    (O-5); the next tick places the vanished stop again (R-10) and audits the repair."""
    from tests.test_chat_control import Chat, answers

    clock = ReplayClock(1_000_000)
    rt = await build(fake, tmp_path / "live.db", clock)
    chat = Chat(rt, tmp_path)
    try:
        await open_long(rt, fake, clock)
        [stop] = [o for o in ours(fake) if o.type is OrderType.STOP_MARKET]
        fake.cancel_by_hand(stop.client_order_id)  # the stop vanished on the exchange
        rt.supervisor.verifier.due.clear()  # (the O-6 check already ran long ago)
        rt.trading = True  # this test's ticks are the live loop's passes
        await chat.say("/playbook no_stop")
        requests = await chat.tap("🛡 Place stops again")
        assert answers(requests) == ["Running…"]
        assert "Reconciliation with the exchange requested" in requests[0].text
        clock.current_ms += 1_000  # well before the 30 s period
        report = await rt.tick(clock.now_ms())
        assert report is not None and report.stops_replaced == 1
        stops = [o for o in ours(fake) if o.type is OrderType.STOP_MARKET]
        assert len(stops) == 1 and stops[0].amount == Decimal(10)
        record = [r for r in await rt.store.audit.list() if r.action == "RECONCILE"][-1]
        assert record.why["stops_replaced"] == 1 and record.why["periodic"]
    finally:
        await chat.close()
        await rt.close()


async def test_o3_limit_entry_rests_fills_gets_brackets_and_an_unfilled_one_expires(fake, tmp_path):
    """O-3 limit entries on the exchange: a GTC LIMIT rests (no position, tracked, not a stray
    for the reconciliation), fills once the price trades through it and gets its brackets; a
    limit that never fills is cancelled after ``limit_entry_timeout_s`` and its intent dropped."""
    clock = ReplayClock(1_000_000)
    rt = await build(fake, tmp_path / "live.db", clock)
    try:
        market = rt.engine.markets[XRP]
        # Below the next candles' lows: rests until the reconciliation and the timeout.
        far = (Decimal(repr(fake.candle(XRP)[4])) * Decimal("0.8")).quantize(market.tick_size)
        entry = await rt.engine.submit_entry("xrp", XRP, Side.LONG, Decimal(10), limit_price=far)
        assert entry is not None and entry.type is OrderType.LIMIT
        [resting] = ours(fake)
        assert resting.type is OrderType.LIMIT and resting.price == far
        fake.advance()
        clock.current_ms += 31_000  # a reconciliation is due: a tracked limit entry is no stray
        report = await rt.tick(clock.now_ms())
        assert report is not None and report.strays_cancelled == 0 and ours(fake) == [resting]
        assert rt.engine.pending_entries() == 1
        clock.current_ms += rt.config.orders.limit_entry_timeout_s * 1000
        await rt.tick(clock.now_ms())
        assert ours(fake) == [] and rt.engine.pending_entries() == 0 and rt.engine.open_orders == {}
        stored = await rt.store.orders.get(entry.client_order_id)
        assert stored.status.value == "canceled" and "limit entry unfilled" in stored.reason
        # A limit at the next candle's low fills there, then the brackets follow.
        price = Decimal(repr(fake.series[XRP].low[fake.index + 1])).quantize(market.tick_size)
        clock.current_ms += 1_000
        await rt.engine.submit_entry("xrp", XRP, Side.LONG, Decimal(10), limit_price=price)
        fake.advance()
        clock.current_ms += 500
        await rt.tick(clock.now_ms())
        assert fake.position(XRP) == (Decimal(10), price)
        position = rt.engine.positions[("xrp", XRP)]
        assert position.entry_price == price
        assert [o.type for o in ours(fake) if o.type is OrderType.STOP_MARKET] == [OrderType.STOP_MARKET]
        [fill] = [f for f in await rt.store.fills.list(since_ms=0) if f.leg.value == "entry"]
        assert fill.fee == Decimal(10) * price * market.maker_fee  # a resting limit pays the maker fee
    finally:
        await rt.close()


async def test_l2_flatten_on_shutdown_closes_at_market_and_books_the_fill(fake, tmp_path):
    """L-2 ``flatten_on_shutdown`` in demo/live: the open position is closed by a reduce-only
    market order whose fill is read back (and persisted) before the shutdown goes on; the stop
    and take-profits of the closed position are cancelled with it."""
    clock = ReplayClock(1_000_000)
    rt = await build(fake, tmp_path / "live.db", clock)
    try:
        await open_long(rt, fake, clock)
        assert ("xrp", XRP) in rt.engine.positions and ours(fake)
        fake.start_auto(0.05)  # the exchange keeps trading while the bot waits for the close's fill
        assert await rt.flatten(attempts=60, pause_s=0.05) == 1
        assert rt.engine.positions == {} and fake.position(XRP) is None
        assert ours(fake) == []
        assert await rt.store.positions.count_closed() == 1  # persisted before the shutdown goes on
    finally:
        await rt.close()


FIRST_PAPER_ENTRY = 952  # index of the candle whose close makes the paper backtest's first entry


@asynccontextmanager
async def demo_through_first_paper_entry(tmp_path, *, spread_ticks: int = 1, fault: str | None = None):
    """(fake, runtime): a demo runtime on the fake Binance (its book ``spread_ticks`` wide,
    ``fault`` armed on ``GET /fapi/v1/depth``), its REST feed warmed up, then stepped candle by
    candle through candle 952 of the bundled XRP 1m series — the close on which the paper
    backtest of the same config makes its first entry."""
    fake = FakeBinance(default_data_dir(), symbols=(XRP,), start_index=FIRST_PAPER_ENTRY - 8)
    fake.spread_ticks[XRP] = spread_ticks
    await fake.start()
    clock = ReplayClock()
    try:
        clock.current_ms = fake.clock.current_ms + 1
        if fault is not None:
            fake.inject(fault, path="depth")
        rt = await build(fake, tmp_path / "demo.db", clock)
        try:
            await rt.feed.warm_up(clock.now_ms())
            while fake.index < FIRST_PAPER_ENTRY:
                fake.advance()
                clock.current_ms = fake.clock.current_ms + 1
                await rt.feed.step(clock.now_ms())
            await rt.persister.flush()
            yield fake, rt
        finally:
            await rt.close()
    finally:
        await fake.stop()


def our_entries(fake: FakeBinance) -> list:
    """The orders of bot "xrp" the fake received: (side, type, status)."""
    prefix = client_order_id_prefix("demo", "xrp")
    return [(o.side, o.type, o.status) for o in fake.venue.orders.values() if o.client_id.startswith(prefix)]


async def test_f1_the_first_paper_entry_is_made_in_demo_with_the_exchange_spread(tmp_path):
    """The strategy trades in demo as it does in paper (SPEC O-9, F-1): the candle on which the
    paper backtest enters makes the same entry on the exchange, after the F-1 filter read the
    real spread from the order book (``GET /fapi/v1/depth``) — before the fix the spread was
    never read in demo/live, so F-1 refused every strategy entry (MISSING_DATA)."""
    from bot.runtime import build_paper_runtime
    from trading.adapters.marketdata import load_candles

    paper = await build_paper_runtime(config=xrp_config(), db_path=tmp_path / "paper.db", data_dir=default_data_dir())
    try:
        await paper.replay(speed=None)
        first = (await paper.store.positions.list_closed())[0]
    finally:
        await paper.close()
    series = load_candles(default_data_dir(), XRP, "1m")
    assert first.side is Side.LONG and first.opened_ms >= series.timestamp[FIRST_PAPER_ENTRY] + 60_000
    async with demo_through_first_paper_entry(tmp_path) as (fake, _rt):
        assert our_entries(fake) == [("BUY", "MARKET", "FILLED")]
        assert fake.requests["GET /fapi/v1/depth"] == 1  # F-1 read the book, for this candidate only


async def test_f1_a_wide_spread_on_the_exchange_refuses_that_entry(tmp_path):
    """Same candles, but the exchange's book is 50 ticks wide (≈ 0.23 % of XRP's price, over
    the 0.1 % F-1 default): no order is sent and the refusal is recorded with its reason."""
    async with demo_through_first_paper_entry(tmp_path, spread_ticks=50) as (fake, rt):
        assert our_entries(fake) == []
        refused = [s for s in await rt.store.signals.list() if s.blocked_by == "SPREAD_TOO_WIDE"]
        assert len(refused) == 1 and not refused[0].passed and refused[0].side is Side.LONG


async def test_f1_an_unreadable_book_denies_that_entry_without_retrying(tmp_path):
    """The order book read fails (a 5xx): F-1 fails closed — no order, the refusal recorded as
    MISSING_DATA — and the candle step is not held up by retries (one request)."""
    async with demo_through_first_paper_entry(tmp_path, fault="5xx") as (fake, rt):
        assert our_entries(fake) == [] and fake.requests["GET /fapi/v1/depth"] == 1
        assert [s.blocked_by for s in await rt.store.signals.list() if not s.passed and s.score >= s.min_score] \
            == ["MISSING_DATA"]


async def test_r3_a_mark_between_candle_closes_trips_the_hard_daily_limit(tmp_path):
    """SPEC R-3 in demo/live: the hard daily limit (default 3 %) closes every position at market
    and halts the account as soon as the exchange's mark price shows it — read every 5 s while
    positions are open — not only at the next candle close. Here the price falls inside the
    candle, not far enough to reach the position's stop; the pass that only polls fills changes
    nothing, the mark watch closes the position and halts the account."""
    fake = FakeBinance(default_data_dir(), symbols=(XRP,), stall_s=0.4, balance=Decimal(1000))
    await fake.start()
    clock = ReplayClock()
    try:
        clock.current_ms = fake.clock.current_ms + 1
        adapter = CcxtExchange(mode="demo", api_key=API_KEY, secret=API_SECRET, api_base=fake.base_url,
                               timeout_ms=200, rate_limit_ms=1)
        base = xrp_config()
        bot = base.bots[0].model_copy(update={"leverage": 20})
        # One position can reach 4× equity here (Z-2: 20 % of equity × 20×) and its stop sits
        # ~0.8 % away: a 2.5 % hard limit leaves room between the limit and the stop.
        account = base.account.model_copy(update={"daily_loss_hard_limit_pct": Decimal("2.5")})
        rt = await build_exchange_runtime(config=base.model_copy(update={"bots": (bot,), "account": account}),
                                          db_path=tmp_path / "r3.db",
                                          exchange=adapter, env="demo", clock=clock, sleep=Sleep(clock))
        try:
            assert rt.mark_watch_s == 5.0  # the default cadence
            price = await rt.exchange.fetch_last_price(XRP)
            await rt.engine.submit_entry("xrp", XRP, Side.LONG, Decimal(1800), price=price)  # ~3,950 notional
            clock.current_ms += 500
            await rt.tick(clock.now_ms())  # booked; brackets placed
            position = rt.engine.book.positions[("xrp", XRP)]
            entry = position.entry_price
            # −0.7 % inside the candle: 1,800 × ~2.2 × 0.7 % ≈ 27.7 quote, ~2.8 % of the day's
            # 1,000 — over the 2.5 % hard limit, while the stop is further away.
            fake.venue.last[XRP] = (entry * Decimal("0.993")).quantize(Decimal("0.0001"))
            assert position.stop_loss < fake.venue.last[XRP]
            clock.current_ms += 1_000
            await rt.tick(clock.now_ms())
            assert ("xrp", XRP) in rt.engine.book.positions  # the candle has not closed: nothing seen
            clock.current_ms += 5_000
            assert await rt.watch_marks(clock.now_ms()) == 1
            clock.current_ms += 500
            await rt.tick(clock.now_ms())  # the close's fill booked
            assert ("xrp", XRP) not in rt.engine.book.positions
            assert fake.venue.positions.get(XRP) is None or fake.venue.positions[XRP].qty == 0
            view = await rt.service.account_risk()
            assert view.hard_limit_hit
            closed = await rt.store.positions.list_closed()
            assert [p.exit_reason for p in closed] == [ExitReason.DAILY_LOSS]
        finally:
            await rt.close()
    finally:
        await fake.stop()
