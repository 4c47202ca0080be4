"""SPEC L-3 / O-5: on restart the saved state is reconciled with the exchange before any new
entry; a position without its stop gets one again, stray orders are cancelled, and the report
(what was found, what was repaired) is returned, logged and stored in the audit trail."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bot.runtime import Runtime, build_paper_runtime
from tests.stack import replayed
from trading.domain.config import TradingConfig
from trading.domain.models import OrderLeg
from trading.domain.oms import leg_of

DAY0 = 1_748_908_800_000  # 2025-06-03T00:00Z, first bundled candle
END = DAY0 + 65 * 3_600_000  # the window ends with two positions open, brackets resting


async def first_run(path: Path, data_dir: Path) -> list:
    runtime = await replayed(path, data_dir, END)
    positions = list(runtime.engine.positions.values())
    await runtime.close()
    return positions


async def restart(path: Path, data_dir: Path) -> Runtime:
    return await build_paper_runtime(config=TradingConfig(), db_path=path, data_dir=data_dir, end_ms=END)


async def test_l3_clean_restart_reports_nothing_to_repair(tmp_path, data_dir):
    db = tmp_path / "paper.db"
    positions = await first_run(db, data_dir)
    runtime = await restart(db, data_dir)
    try:
        report = runtime.reconcile_report
        assert report.clean and report.positions == len(positions) == 2
        assert "nothing to repair" in report.text()
        last = (await runtime.store.audit.last(1))[0]
        assert last.action == "RECONCILE" and last.why["found"] == []
    finally:
        await runtime.close()


async def test_l3_o5_position_that_lost_its_stop_gets_it_back_before_any_entry(tmp_path, data_dir):
    """Crash between the entry fill and the stop (the stop never reached the exchange): the
    restart finds the naked position and places the stop at the position's level (R-10)."""
    db = tmp_path / "paper.db"
    positions = await first_run(db, data_dir)
    naked = positions[0]
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM orders WHERE symbol = ? AND leg = 'sl' AND status = 'open'", (naked.symbol,))
    conn.close()
    runtime = await restart(db, data_dir)
    try:
        report = runtime.reconcile_report
        assert any(naked.symbol in line and "without a full resting stop-loss" in line for line in report.found)
        assert any(naked.symbol in line and "stop-loss" in line for line in report.repaired)
        stops = [o for o in await runtime.exchange.fetch_open_orders(naked.symbol) if o.leg is OrderLeg.STOP_LOSS]
        assert len(stops) == 1 and stops[0].amount == naked.contracts and stops[0].trigger_price == naked.stop_loss
        # Persisted and audited before the replay goes on.
        stored = [o for o in await runtime.store.orders.list_open(symbol=naked.symbol) if o.leg is OrderLeg.STOP_LOSS]
        assert [o.client_order_id for o in stored] == [stops[0].client_order_id]
        record = [r for r in await runtime.store.audit.last(5) if r.action == "RECONCILE"][-1]
        assert record.why["repaired"] == report.repaired
        # The chain verifies; the ledger replay still sees that the lost stop's row was
        # deleted outside the bot (its ORDER_PLACED record has no row any more).
        check = await runtime.store.audit.verify()
        assert check.kind == "ledger" and "is missing from the orders table" in check.problem
        assert leg_of(check.problem.split("order ")[1].split()[0]) is OrderLeg.STOP_LOSS  # O-2 ids name their leg
    finally:
        await runtime.close()


async def test_o5_stray_bracket_without_position_is_cancelled(tmp_path, data_dir):
    """A reduce-only order of this bot resting on a symbol with no position (crash during a
    close, before its brackets were cancelled) is cancelled on restart."""
    db = tmp_path / "paper.db"
    positions = await first_run(db, data_dir)
    held = {p.symbol for p in positions}
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT * FROM orders WHERE leg = 'tp1' AND status != 'open' AND symbol NOT IN (?, ?)"
                           " ORDER BY created_ms DESC LIMIT 1", tuple(held)).fetchone()
        cid = row[0]
        conn.execute("UPDATE orders SET status = 'open' WHERE client_order_id = ?", (cid,))
        symbol = row[2]
        # the exchange held a position then (restored from SQLite), so the order is accepted as resting
    conn.close()
    runtime = await restart(db, data_dir)
    try:
        report = runtime.reconcile_report
        assert any(cid in line and "stray" in line for line in report.found), report.text()
        assert cid not in {o.client_order_id for o in await runtime.exchange.fetch_open_orders(symbol)}
        assert (await runtime.store.orders.get(cid)).status.value == "canceled"
    finally:
        await runtime.close()


async def test_l3_entry_in_flight_at_the_crash_fills_with_the_brackets_decided_at_the_signal(tmp_path, data_dir):
    """Killed after the entry was sent, before it filled: the restart resumes the pending entry
    with the TP1 share, ATR and leverage decided at the signal (from its RISK_ALLOWED record),
    not recomputed at the fill."""
    probe = await replayed(tmp_path / "probe.db", data_dir, END)
    allowed = [r for r in await probe.store.audit.list() if r.action == "RISK_ALLOWED"]
    await probe.close()
    signal_ms = allowed[0].ts  # the entry goes out at this candle close = next candle's open
    db = tmp_path / "paper.db"
    first = await replayed(db, data_dir, signal_ms)
    (key, pending), = first.engine.book.pending.items()
    decided = (pending.tp1_share_pct, pending.atr, pending.leverage)
    await first.close()
    assert decided[0] is not None and decided[1] is not None
    second = await build_paper_runtime(config=TradingConfig(), db_path=db, data_dir=data_dir, end_ms=END)
    try:
        restored = second.engine.pending_entry(*key)
        assert (restored.tp1_share_pct, restored.atr, restored.leverage) == decided
        assert restored.order.client_order_id == pending.order.client_order_id
        assert second.reconcile_report.clean
    finally:
        await second.close()


async def test_l3_close_in_flight_at_the_crash_keeps_its_exit_reason(tmp_path, data_dir):
    """Killed after a TIMEOUT close was sent, before it filled: after the restart the fill books
    the position as closed by TIMEOUT (the reason comes back from the EXIT audit record), not
    as a manual close."""
    week = DAY0 + 7 * 86_400_000
    probe = await replayed(tmp_path / "probe.db", data_dir, week)
    timeout_exit = next(r for r in await probe.store.audit.list()
                        if r.action == "EXIT" and r.why["reason"] == "TIMEOUT")
    await probe.close()
    db = tmp_path / "paper.db"
    first = await replayed(db, data_dir, timeout_exit.ts)  # the close is sent, not filled yet
    cid = timeout_exit.why["client_order_id"]
    assert cid in first.engine.open_orders
    await first.close()
    second = await build_paper_runtime(config=TradingConfig(), db_path=db, data_dir=data_dir, end_ms=week)
    try:
        assert second.reconcile_report.clean
        await second.replay()
        closed = await second.store.positions.get(timeout_exit.why["position_id"])
    finally:
        await second.close()
    assert closed.closed_ms is not None and closed.exit_reason.value == "TIMEOUT"


async def test_l3_o5_entry_filled_while_down_is_booked_and_gets_its_brackets(tmp_path, data_dir):
    """Crash between entry and brackets: the exchange filled the entry while the bot was down.
    The restart's reconciliation books that fill at the exchange's price, opens the position
    and places its stop before anything else (O-5 "fills missed while down are booked")."""
    probe = await replayed(tmp_path / "probe.db", data_dir, END)
    signal_ms = next(r.ts for r in await probe.store.audit.list() if r.action == "RISK_ALLOWED")
    await probe.close()
    db = tmp_path / "paper.db"
    await (await replayed(db, data_dir, signal_ms)).close()
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=db, data_dir=data_dir, end_ms=END)
    try:
        ((bot, symbol), pending), = runtime.engine.book.pending.items()
        # The exchange fills the entry at the next open without the bot seeing it.
        source = next(s for s in runtime.sources if s.feed.symbol == symbol)
        i = source.series.timestamp.index(signal_ms)
        runtime.exchange.on_change = None  # nobody hears of it
        runtime.exchange.fill_pending(symbol, signal_ms, source.series.open[i])
        contracts, price = (await runtime.exchange.fetch_positions())[symbol]
        runtime.supervisor.reconciler.runs = 0  # as at a restart: the one reconciler, first pass
        report = await runtime.supervisor.reconciler.run()
        position = runtime.engine.positions[(bot, symbol)]
        resting = await runtime.exchange.fetch_open_orders(symbol)
    finally:
        await runtime.close()
    assert any("filled while down" in line for line in report.found)
    assert position.entry_price == price and position.contracts == abs(contracts) == pending.order.amount
    stops = [o for o in resting if o.leg is OrderLeg.STOP_LOSS]
    assert len(stops) == 1 and stops[0].amount == position.contracts and stops[0].trigger_price == position.stop_loss
    assert {o.leg for o in resting} >= {OrderLeg.STOP_LOSS, OrderLeg.TP1}
