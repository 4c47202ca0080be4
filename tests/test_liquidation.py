"""Liquidation and funding (issue 14 deliverable 7): the liquidation price from Binance's
maintenance-margin brackets (the bundled leverage tiers) in paper and from the exchange in
demo/live, its distance in /open and in the entry message, an alert when a position comes within
20 % of the entry → liquidation distance, an entry refused when its stop sits beyond the
liquidation price, the day's funding per symbol and the next funding of open positions."""

from __future__ import annotations

from decimal import Decimal as D

from bot.notices import NoticeBuilder
from tests import stack
from tests.fake_binance import FakeBinance
from tests.test_engine import SYMBOL, Harness
from trading.adapters.leverage_tiers import load_margin_brackets
from trading.adapters.marketdata import default_data_dir, load_replay_funding
from trading.domain.config import AccountConfig
from trading.domain.events import Alert, PositionChanged
from trading.domain.liquidation import isolated_liquidation_price, liquidation_price, stop_beyond_liquidation
from trading.domain.models import Side
from trading.domain.reasons import ReasonCode

BRACKETS = load_margin_brackets(default_data_dir(), [SYMBOL])[SYMBOL]


def test_bundled_xrp_brackets_are_binances():
    """The bundled tiers (freqtrade's dump of Binance's leverageBracket): XRP's first bracket is
    notional 0–10 000 at a 0.5 % maintenance rate (75×); the second 10 000–20 000 at 0.65 %,
    cum 15."""
    first, second = BRACKETS[0], BRACKETS[1]
    assert (first.max_notional, first.maintenance_rate, first.cum, first.max_leverage) == (10000, D("0.005"), 0, 75)
    assert (second.min_notional, second.maintenance_rate, second.cum) == (10000, D("0.0065"), 15)


def test_liquidation_price_follows_binances_formula():
    """LP = (WB − TMM + UPNL + cum − side·Q·EP) / (Q·MMR − side·Q). Isolated, 100 XRP at 2.0, 5×
    (margin 40): long (40 − 200) / (0.5 − 100) = 1.60804…, short (40 + 200) / (0.5 + 100) =
    2.38806…; 7 500 XRP (notional 15 000, bracket 2, cum 15): (3000 + 15 − 15000) / (48.75 −
    7500) = 1.60846…"""
    long = isolated_liquidation_price(side=Side.LONG, contracts=D(100), entry_price=D(2), contract_size=D(1),
                                      leverage=5, brackets=BRACKETS)
    short = isolated_liquidation_price(side=Side.SHORT, contracts=D(100), entry_price=D(2), contract_size=D(1),
                                       leverage=5, brackets=BRACKETS)
    big = isolated_liquidation_price(side=Side.LONG, contracts=D(7500), entry_price=D(2), contract_size=D(1),
                                     leverage=5, brackets=BRACKETS)
    assert long == D(-160) / D("-99.5") and short == D(240) / D("100.5")
    assert big == D(-11985) / D("-7451.25")
    # Cross: the whole wallet backs the position, other positions' maintenance and PnL count.
    cross = liquidation_price(side=Side.LONG, contracts=D(100), entry_price=D(2), contract_size=D(1),
                              wallet_balance=D(1000), brackets=BRACKETS, other_maintenance=D(10),
                              other_unrealised=D(-20))
    assert cross is None  # 1000 − 10 − 20 backs a 200-quote long: it cannot be liquidated
    assert stop_beyond_liquidation(Side.LONG, D("1.60"), long) and not stop_beyond_liquidation(Side.LONG, D("1.7"), long)


async def test_an_entry_whose_stop_sits_beyond_liquidation_is_refused(markets):
    """At 8× (the 300–750 tier's cap) an isolated XRP long is liquidated ≈ 12.06 % below its
    entry: a 12.5 % stop would never trigger first — refused; a 12 % stop is fine."""
    refused = Harness(markets, balance="400", leverage=8, stop_loss_pct=D("12.5"), auto_profit_pct=D(0))
    await refused.start()
    evaluation = await refused.enter(2.0)
    assert evaluation.blocked_by == ReasonCode.STOP_BEYOND_LIQUIDATION
    assert refused.engine.open_orders == {}
    allowed = Harness(markets, balance="400", leverage=8, stop_loss_pct=D(12), auto_profit_pct=D(0))
    await allowed.start()
    assert (await allowed.enter(2.0)).passed


async def test_near_liquidation_alert_once_at_20_percent_of_the_way_left(markets):
    """SPEC default 20 %: an 8× long from 2.0 liquidates at ≈ 1.7588; the alert fires when the
    mark is within 20 % of the 2.0 → 1.7588 distance (≤ 1.8071), once per position."""
    assert AccountConfig().liquidation_alert_pct == 20
    h = Harness(markets, balance="400", leverage=8, stop_loss_pct=D(11), auto_profit_pct=D(0), timeout_minutes=0,
                account={"daily_loss_limit_pct": D(50), "daily_loss_hard_limit_pct": D(50)})
    await h.start()
    await h.enter(2.0)
    await h.candle(2.0, 2.0, 2.0, 2.0)
    position = h.position()
    liquidation = h.engine.liquidation_price(position)
    assert liquidation is not None and abs(liquidation - D("1.7588")) < D("0.0001")
    opened = [e for e in h.buffer.events if isinstance(e, PositionChanged) and e.position.is_open][0]
    assert opened.liquidation == liquidation  # the entry message shows it
    (entry,) = [n for n in NoticeBuilder().build([opened])]
    assert f"Liquidation ≈ {liquidation:.6g} (12.06 % from the entry)" in entry.text.render()[0]
    threshold = liquidation + (position.entry_price - liquidation) * D("0.2")

    def alerts():
        return [e for e in h.buffer.events if isinstance(e, Alert) and e.kind == "NEAR_LIQUIDATION"]

    h.feed.last_close = float(threshold) + 0.0005
    await h.engine.manage_positions(h.feed)
    assert alerts() == []
    h.feed.last_close = float(threshold) - 0.0005
    await h.engine.manage_positions(h.feed)
    h.feed.last_close = float(threshold) - 0.001
    await h.engine.manage_positions(h.feed)
    (alert,) = alerts()
    assert alert.symbol == SYMBOL and "liquidation" in alert.text


async def test_open_shows_the_liquidation_estimate_and_the_next_funding_in_paper(tmp_path, data_dir):
    """/open in paper: the liquidation price estimated from the brackets with its distance, and
    the next bundled funding event with what the position pays or receives; /daily sums the
    day's funding per symbol."""
    from tests.test_risk_chat import OPEN_END, two_bots

    runtime = await stack.replayed(tmp_path / "o.db", data_dir, OPEN_END, two_bots())
    try:
        views = await runtime.service.open_positions()
        [text] = await stack.ask(runtime, tmp_path, "/open")
        now = runtime.clock.now_ms()
        report = await runtime.service.period_report("so far", 1_748_908_800_000, now + 1)
    finally:
        await runtime.close()
    assert views
    for view in views:
        assert view.liquidation_source == "estimate" and view.liquidation_price is not None
        assert f"Liquidation {view.liquidation_price:.6g} (" in text
        events = load_replay_funding(data_dir, view.symbol, "5m")
        when, rate = next((ts, r) for ts, r in events if ts > now)
        assert (view.next_funding_ms, view.next_funding_rate) == (when, rate)
        assert view.next_funding_amount == -view.side.sign * rate * view.notional
    assert "estimate from the margin brackets" in text and "Next funding " in text
    by_symbol = {s: sum((t.funding for t in report.trades if t.symbol == s), D(0)) for s in {t.symbol for t in report.trades}}
    assert dict(report.funding_by_symbol) == {s: a for s, a in by_symbol.items() if a}
    assert report.funding_by_symbol and sum(a for _, a in report.funding_by_symbol) == report.funding


async def test_open_shows_the_exchanges_liquidation_price_in_demo(tmp_path):
    """Demo (real ccxt client, loopback fake Binance): /open shows the liquidation price the
    exchange reports in positionRisk (not the estimate), and the next funding from premiumIndex
    with what the long pays at a positive rate."""
    from tests.test_live_runtime import Sleep, build, open_long
    from trading.ports import ReplayClock

    exchange = FakeBinance(default_data_dir(), symbols=(SYMBOL,), stall_s=0.4)
    await exchange.start()
    clock = ReplayClock(1_000_000)
    runtime = await build(exchange, tmp_path / "demo.db", clock)
    try:
        await open_long(runtime, exchange, clock)
        assert runtime.engine.positions
        exchange.liquidation_prices[SYMBOL] = "1.2345"
        exchange.funding_rates[SYMBOL] = "0.00025"
        (view,) = await runtime.service.open_positions()
        [text] = await stack.ask(runtime, tmp_path, "/open")
    finally:
        await runtime.close()
        await exchange.stop()
    assert view.liquidation_price == D("1.2345") and view.liquidation_source == "exchange"
    assert view.next_funding_rate == D("0.00025") and view.next_funding_amount < 0
    assert "Liquidation 1.2345 (" in text and "from the mark, exchange)" in text
    assert "Next funding +0.0250 % at " in text and "you pay ≈ " in text
    _ = Sleep
