"""SPEC S-7 promotion gate (seed 003 §4, §6): ``optiflow run --live`` starts only when the
account's demo record in the database meets the gate — ≥ 20 closed demo trades, win rate ≥ 55 %,
no unresolved critical incident in the last 24 h; ``--skip-gate`` overrides it, printed, sent
and audited. Real SQLite files, the real CLI entry point."""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal as D

import pytest

from bot.cli import _promotion_gate, main
from bot.notices import Category, NoticeBuilder
from storage import Storage
from tests.fake_binance import API_KEY, API_SECRET, FakeBinance
from trading.adapters.marketdata import default_data_dir
from trading.domain.config import TradingConfig
from trading.domain.events import RiskNotice
from trading.domain.models import Order, OrderLeg, OrderSide, OrderStatus, OrderType, Position, Side
from trading.domain.oms import make_client_order_id
from trading.domain.promotion import GATE_MIN_TRADES, GATE_MIN_WIN_RATE, promotion_gate
from trading.domain.errors import OptiFlowError

XRP = "XRP/USDT:USDT"
T0 = 1_749_000_000_000


def test_s7_spec_gate_numbers():
    """≥ 20 closed demo trades and a win rate ≥ 55 % (seed 003)."""
    assert (GATE_MIN_TRADES, GATE_MIN_WIN_RATE) == (20, 55)
    wins_11 = [D(1)] * 11 + [D(-1)] * 9  # 55 % of 20
    assert promotion_gate(wins_11, []).passed
    assert not promotion_gate(wins_11[:19], []).passed  # 19 trades
    assert not promotion_gate([D(1)] * 10 + [D(-1)] * 10, []).passed  # 50 %
    blocked = promotion_gate(wins_11, ["NO_STOP", "POSITION_TOO_OLD"])
    assert not blocked.passed and blocked.incidents == ("NO_STOP",)


async def record(db, trades: list[D], env: str = "demo", incident: str = "", first: int = 0) -> None:
    """Closed trades of ``env`` in ``db`` (each with its filled entry order, as the engine leaves
    them) and optionally an open monitor incident."""
    store = await Storage.open(db)
    try:
        await record_into(store, trades, env, incident, first)
    finally:
        await store.close()


async def record_into(store, trades: list[D], env: str = "demo", incident: str = "", first: int = 0) -> None:
    """:func:`record` into an open ``store``; ``first`` numbers the first trade (its times)."""
    async with store.transaction():
        for i, net in enumerate(trades, start=first):
            position_id = f"main|{XRP}|{T0 + i * 600_000}"
            cid = make_client_order_id(env, "main", XRP, Side.LONG, position_id, OrderLeg.ENTRY.value)
            await store.orders.upsert(Order(cid, "main", XRP, OrderSide.BUY, OrderType.MARKET, OrderLeg.ENTRY,
                                            D(10), False, T0 + i * 600_000, OrderStatus.CLOSED, filled=D(10),
                                            average=D(2)))
            await store.positions.upsert(Position(
                position_id, "main", XRP, Side.LONG, D(0), D(10), D(2), T0 + i * 600_000, D("1.98"), D("2.01"),
                D("2.02"), 5, realised_pnl=net, closed_ms=T0 + i * 600_000 + 300_000, exit_price=D(2)))
        if incident:
            await store.incidents.open(f"{incident}|x", incident, "no_stop", "text", T0)


def test_s7_run_live_on_a_database_without_a_demo_record_refuses_with_one_line(tmp_path, monkeypatch, capsys):
    """Acceptance: `optiflow run --live` on a database with no demo record exits 2 with one line
    naming the gate — before any exchange is contacted (there is none here)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BINANCE_API_KEY", API_KEY)
    monkeypatch.setenv("BINANCE_API_SECRET", API_SECRET)
    monkeypatch.setenv("EXCHANGE_API_BASE", "http://127.0.0.1:9")  # nothing listens: a call would fail loudly
    assert main(["run", "--live", "--db", str(tmp_path / "fresh.db")]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and "promotion gate (S-7) not met" in err
    assert "0 closed demo trades (needs ≥ 20)" in err and "--skip-gate" in err
    assert "Traceback" not in captured.err and API_KEY not in captured.err + captured.out
    assert not (tmp_path / "fresh.db").exists()  # nothing written by a refused start


async def test_s7_the_gate_reads_demo_trades_win_rate_and_incidents_from_the_database(tmp_path):
    config = TradingConfig()
    db = tmp_path / "gate.db"
    await record(db, [D(1)] * 12 + [D(-1)] * 8, env="paper")  # paper trades are not a demo record
    with pytest.raises(OptiFlowError, match="0 closed demo trades"):
        await _promotion_gate(db, False, config)
    await record(db, [D(1)] * 10 + [D(-1)] * 10)  # 20 demo trades at 50 %
    with pytest.raises(OptiFlowError, match=r"demo win rate 50\.0 % \(needs ≥ 55 %\)"):
        await _promotion_gate(db, False, config)
    db2 = tmp_path / "gate2.db"
    await record(db2, [D(1)] * 11 + [D(-1)] * 9)  # 55 %
    assert await _promotion_gate(db2, False, config) is None
    await record(db2, [], incident="NO_STOP")
    with pytest.raises(OptiFlowError, match="unresolved critical incident.*NO_STOP"):
        await _promotion_gate(db2, False, config)


async def test_s7_t2_summary_on_an_exchange_account_follows_each_closed_trade(tmp_path):
    """/summary on an exchange account sums every closed trade and shows the S-7 gate; both are
    derived once per write of the orders/positions tables (10,000 trades would otherwise be
    reread on every call) — a trade that closes shows in the very next /summary."""
    from bot.runtime import build_paper_runtime

    runtime = await build_paper_runtime(config=TradingConfig(), db_path=tmp_path / "s.db", data_dir=default_data_dir())
    try:
        service = runtime.service
        service.mode = "demo"
        empty = await service.summary()
        assert empty.realised_pnl_total == 0 and "0 closed demo trades" in empty.account_risk.gate
        await record_into(runtime.store, [D(1)] * 11 + [D(-1)] * 9)  # 20 demo trades at 55 %
        met = await service.summary()
        assert met.realised_pnl_total == D(2) and met.account_risk.gate_passed
        assert (await service.summary()).realised_pnl_total == D(2)  # unchanged without a write
        await record_into(runtime.store, [D("-3.5")], first=20)  # one more loss: 11 of 21 = 52.4 %
        after = await service.summary()
        assert after.realised_pnl_total == D("-1.5") and not after.account_risk.gate_passed
        assert "52.4 %" in after.account_risk.gate
        await record_into(runtime.store, [D(4)], env="paper", first=21)  # not a demo trade, still a trade
        assert (await service.summary()).realised_pnl_total == D("2.5")
        assert "52.4 %" in (await service.account_risk()).gate  # the paper trade is not in the record
    finally:
        await runtime.close()


async def test_s7_skip_gate_overrides_it_printed_and_audited(tmp_path, capsys):
    db = tmp_path / "skip.db"
    skipped = await _promotion_gate(db, True, TradingConfig())
    assert skipped is not None and not skipped.passed
    assert "⚠️ --skip-gate: promotion gate (S-7) not met" in capsys.readouterr().out
    store = await Storage.open(db)
    try:
        (command,) = [r for r in await store.audit.list() if r.action == "COMMAND"]
        assert command.why["command"] == "skip_gate" and command.why["demo_trades"] == 0
        assert (await store.audit.verify()).ok
    finally:
        await store.close()
    notice = RiskNotice(T0, "PROMOTION_GATE_SKIPPED", f"Live trading started with --skip-gate: {skipped.line()}")
    (sent,) = NoticeBuilder().build([notice])
    assert sent.category is Category.RISK and "Promotion gate skipped" in sent.text.render()[0]


async def test_s7_live_run_with_skip_gate_starts_and_the_override_is_audited(tmp_path, monkeypatch, capsys):
    """`optiflow run --live --skip-gate` on the loopback fake exchange: it starts (console chat),
    /risk shows the gate, and the database holds the override's records (COMMAND and the
    PROMOTION_GATE_SKIPPED notice sent to chat)."""
    exchange = FakeBinance(default_data_dir(), symbols=(XRP,))
    await exchange.start()
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("EXCHANGE_API_BASE", exchange.base_url)
        monkeypatch.setenv("BINANCE_API_KEY", API_KEY)
        monkeypatch.setenv("BINANCE_API_SECRET", API_SECRET)
        monkeypatch.setenv("OPTIFLOW_QUOTE", "USDT")
        exchange.start_auto(0.2)
        db = tmp_path / "live.db"
        code = await asyncio.to_thread(main, ["run", "--live", "--skip-gate", "--symbols", "XRP", "--timeframe", "1m",
                                              "--db", str(db), "--say", "/risk"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "⚠️ --skip-gate" in out and "Live gate: ❌ promotion gate (S-7) not met" in out
    finally:
        await exchange.stop()
    store = await Storage.open(db)
    try:
        actions = [r.action for r in await store.audit.list()]
        assert "COMMAND" in actions and "PROMOTION_GATE_SKIPPED" in actions
    finally:
        await store.close()


async def test_s7_o2_demo_trades_under_ids_of_an_older_version_still_count(tmp_path, monkeypatch):
    """Issue 18 changed the client order id layout (OKX allows letters and digits only): demo
    trades whose entries carry the old dashed ids still count toward the gate."""
    import trading.domain.oms as oms
    from trading.app.promotion import demo_trade_nets

    db = tmp_path / "old.db"
    monkeypatch.setattr(sys.modules[__name__], "make_client_order_id", oms.legacy_client_order_id)
    await record(db, [D(1)] * 3)
    monkeypatch.setattr(sys.modules[__name__], "make_client_order_id", oms.make_client_order_id)
    await record(db, [D(-1)] * 2, first=3)
    store = await Storage.open(db)
    try:
        nets = await demo_trade_nets(store)
        assert sorted(nets) == [D(-1)] * 2 + [D(1)] * 3
        entries = await store.orders.filled_entry_ids()
        assert sum("-" in cid for cid in entries) == 3
    finally:
        await store.close()
