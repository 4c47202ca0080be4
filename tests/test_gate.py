"""The order gate (SPEC O-9): every order that adds exposure — here the scaling ladder's additions
(E-10) and entries sent by hand — passes the trading state (R-2/R-3 day stops, R-5 drawdown),
pauses (R-7), the blacklist (R-6) and the caps (Z-2, R-8) in one place, on the engine's one
order path (gateway over the simulated venue, fills booked by the fill tracker). A refusal is a
ReasonCode, audited once; reduce-only orders always pass."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest

from tests.test_engine import SYMBOL, Harness
from trading.domain.audit import ORDER_REFUSED, entries_for_events
from trading.domain.events import OrderRefused
from trading.domain.models import OrderLeg, Side
from trading.domain.reasons import ReasonCode
from trading.engine.book import PendingEntry


async def ladder_ready(markets) -> Harness:
    """A ladder-on long of XRP filled at 2.0, one candle later, in a small profit: the next
    position check sends the first rung unless the gate refuses it."""
    h = Harness(markets, ladder=True, timeout_minutes=0)
    await h.start()
    await h.enter(2.0)
    await h.candle(2.0, 2.0, 2.0, 2.0)
    assert h.position() is not None
    h.clock.current_ms += 300_000
    h.feed.last_close = 2.004
    return h


def additions(h: Harness) -> list:
    return [o for o in h.engine.open_orders.values() if o.leg is OrderLeg.ADD]


def refusals(h: Harness) -> list[OrderRefused]:
    return [e for e in h.buffer.events if isinstance(e, OrderRefused)]


async def test_o9_an_active_account_adds_the_rung(markets):
    """The control case: nothing stops the addition, it reaches the venue."""
    h = await ladder_ready(markets)
    await h.engine.manage_positions(h.feed)
    (add,) = additions(h)
    assert add.client_order_id in {o.client_order_id for o in await h.exchange.fetch_open_orders(SYMBOL)}
    assert refusals(h) == []


def halt(h: Harness) -> None:
    h.engine.risk.halt("main", ReasonCode.SL_STREAK)  # two stop-losses in a row today


def pause(h: Harness) -> None:
    assert h.engine.set_paused("main", SYMBOL, True)  # R-7, from Telegram


def drawdown_pause(h: Harness) -> None:
    # R-5 at SPEC's thresholds: the greater of 15 % or 100 quote below a 1300 peak (equity ≈ 1000).
    h.engine.book.account = replace(h.engine.account, peak_equity=D(1300))


def blacklist(h: Harness) -> None:
    for _ in range(3):  # the third stop-loss on the symbol blocks it for 120 min
        h.engine.risk.count_stop_loss("main", SYMBOL, h.clock.now_ms())


@pytest.mark.parametrize("state, reason", [
    (halt, ReasonCode.SL_STREAK),
    (pause, ReasonCode.SYMBOL_PAUSED),
    (drawdown_pause, ReasonCode.DRAWDOWN_PAUSE),
    (blacklist, ReasonCode.SYMBOL_BLACKLISTED),
])
async def test_o9_r5_r7_e10_a_halted_paused_or_drawdown_paused_account_refuses_a_ladder_addition(markets, state, reason):
    """O-9: the ladder asks for a rung; the gate refuses it with a ReasonCode, nothing reaches
    the venue, the refusal is audited once (not at every candle), and a reduce-only close still
    goes through (HALTED lets a position be closed)."""
    h = await ladder_ready(markets)
    state(h)
    await h.engine.manage_positions(h.feed)
    assert additions(h) == []
    assert [o.leg for o in await h.exchange.fetch_open_orders(SYMBOL)].count(OrderLeg.ADD) == 0
    (refused,) = refusals(h)
    assert refused.reason is reason and isinstance(refused.reason, ReasonCode)
    assert refused.order.leg is OrderLeg.ADD and refused.order.symbol == SYMBOL
    records = [r for r in entries_for_events(h.buffer.events) if r.action == ORDER_REFUSED]
    assert [r.why["reason"] for r in records] == [reason]
    h.clock.current_ms += 300_000  # the next candle asks again: refused again, not audited again
    await h.engine.manage_positions(h.feed)
    assert additions(h) == [] and len(refusals(h)) == 1 and h.engine.gate.refused == 2
    close = await h.engine.close_position("main", SYMBOL)
    assert close is not None and close.reduce_only
    assert close.client_order_id in {o.client_order_id for o in await h.exchange.fetch_open_orders(SYMBOL)}


async def test_o9_drawdown_reduce_stage_lets_entries_in_but_no_position_grow(markets):
    """R-5 REDUCE (the greater of 8 % or 50 quote below the peak; here 1120 → 120 ≥ 89.60): new entries
    go on at half risk (test_engine), but the gate refuses every ladder addition."""
    h = await ladder_ready(markets)
    h.engine.book.account = replace(h.engine.account, peak_equity=D(1120))
    await h.engine.manage_positions(h.feed)
    assert additions(h) == []
    assert [e.reason for e in refusals(h)] == [ReasonCode.DRAWDOWN_REDUCE]


async def test_o9_z2_r8_caps_refuse_a_manual_entry_at_spec_defaults(markets):
    """Z-2 / R-8 at SPEC's defaults on a 1000 account at 5×: a position's notional ≤ 20 % of
    equity × leverage = 1000 quote; the margin in positions ≤ 50 % of equity = 500 quote. An
    entry sent by hand passes the same gate as the strategy's."""
    h = Harness(markets)
    await h.start()
    h.feed.last_close = 2.0
    refused = await h.engine.submit_entry("main", SYMBOL, Side.LONG, D(501), price=D(2))  # 1002 quote
    assert refused is None and [e.reason for e in refusals(h)] == [ReasonCode.MAX_POSITION_SIZE]
    accepted = await h.engine.submit_entry("main", SYMBOL, Side.LONG, D(400), price=D(2))  # 800 quote
    assert accepted is not None
    await h.candle(2.0, 2.0, 2.0, 2.0)
    assert h.position().contracts == D(400)  # 160 quote of margin
    addition = replace(accepted, client_order_id="probe", leg=OrderLeg.ADD, amount=D(1))
    assert h.engine.gate.check(addition, price=D(2)) is None
    # Another entry of the account waits for its fill with 400 quote of margin (1000 XRP at
    # 5×): 560 of 500 are spoken for, so nothing may add exposure.
    h.engine.book.pending[("other", SYMBOL)] = PendingEntry("other", Side.LONG,
                                                            replace(accepted, amount=D(1000)), 5)
    refusal = h.engine.gate.check(addition, price=D(2))
    assert refusal is not None and refusal.reason is ReasonCode.TOTAL_MARGIN


async def test_o9_the_gate_fails_closed_without_a_price(markets):
    """STYLE: no price → deny (nautilus fails open here; we do not)."""
    h = Harness(markets)
    await h.engine.start()
    assert await h.engine.submit_entry("main", SYMBOL, Side.LONG, D(10)) is None
    assert [e.reason for e in refusals(h)] == [ReasonCode.MISSING_DATA]
    assert await h.exchange.fetch_open_orders() == []
