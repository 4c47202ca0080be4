"""Acceptance (issue 2): replay real candles into a file database, restart from that file, then
ask /summary and /open through ``dp.feed_update`` and check the replies against the database
(SPEC L-3 restart resumes, T-2 status commands, R-7 pauses persist)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from bot.render import money, plain
from bot.runtime import Runtime, build_paper_runtime
from tests.stack import ask, replayed
from trading.domain.config import TradingConfig
from trading.domain.models import Side

DAY0 = 1_748_908_800_000  # 2025-06-03T00:00Z, first bundled candle
END = DAY0 + 65 * 3_600_000  # 65 h of real 5m candles: ends with two positions open
USER = 7


async def replay_window(db: Path, data_dir: Path) -> Runtime:
    return await replayed(db, data_dir, END)


async def chat_replies(runtime: Runtime, tmp_path: Path, *lines: str) -> list[str]:
    return await ask(runtime, tmp_path, *lines, user=USER)


async def test_l3_restart_from_the_file_resumes_and_chat_matches_the_database(tmp_path, data_dir):
    db = tmp_path / "paper.db"
    first = await replay_window(db, data_dir)
    before_positions = sorted(first.engine.positions.values(), key=lambda p: p.symbol)
    before_balance = first.engine.account.balance
    await first.service.set_paused("XRP/USDT:USDT", True)
    await first.close()
    assert len(before_positions) == 2  # the window ends with real positions open

    # Restart on the same file: state comes back from SQLite, not from memory.
    second = await build_paper_runtime(config=TradingConfig(), db_path=db, data_dir=data_dir, end_ms=END)
    try:
        stored_account = await second.store.account.get()
        stored_open = sorted(await second.store.positions.list_open(), key=lambda p: p.symbol)
        stored_closed = await second.store.positions.list_closed()
        assert stored_account.balance == before_balance
        assert stored_open == before_positions
        assert len(stored_closed) >= 2
        # The paper exchange resumed too: its wallet and resting brackets match the database.
        assert await second.exchange.fetch_balance() == stored_account.balance
        resting = await second.exchange.fetch_open_orders()
        assert {o.client_order_id for o in resting} == {
            o.client_order_id for o in await second.store.orders.list_open()
        }
        assert all(o.reduce_only for o in resting) and len(resting) >= 2 * 2  # SL + TP per position
        # Nothing is traded twice: the replay cursor makes the restarted replay a no-op.
        assert (await second.replay()).candles == 0
        assert len(await second.store.positions.list_closed()) == len(stored_closed)

        summary_text, open_text = await chat_replies(second, tmp_path, "/summary", "/open")
    finally:
        await second.close()

    quote = "USDT"
    assert money(stored_account.balance, quote) in summary_text
    assert "Open positions: 2" in summary_text
    assert f"Closed trades: {len(stored_closed)}" in summary_text
    assert "XRP/USDT:USDT" in summary_text.split("Paused:")[1]  # R-7 pause survived the restart
    for position in stored_open:
        block = open_text.split(position.symbol, 1)[1]
        assert ("LONG" if position.side is Side.LONG else "SHORT") in block.split("\n")[0]
        assert f"Entry {plain(position.entry_price)}" in block
        assert f"Contracts {plain(position.contracts)}" in block
        assert f"SL {plain(position.stop_loss)}" in block
        assert f"TP2 {plain(position.take_profit_2)}" in block
        if not position.tp1_done:
            assert f"TP1 {plain(position.take_profit_1)}" in block


async def test_equity_and_balance_agree_with_the_trades(tmp_path, data_dir):
    """The ledger adds up: balance = start + Σ net PnL of closed trades + what open positions
    already booked (fees, TP1, funding)."""
    runtime = await replay_window(tmp_path / "paper.db", data_dir)
    try:
        closed = await runtime.store.positions.list_closed()
        open_ = await runtime.store.positions.list_open()
        booked = sum((p.net_pnl for p in closed + open_), Decimal(0))
        assert runtime.engine.account.balance == TradingConfig().account.starting_balance + booked
        assert await runtime.exchange.fetch_balance() == runtime.engine.account.balance
    finally:
        await runtime.close()


async def test_f4_entry_cooldown_survives_a_restart(tmp_path, data_dir):
    """F-4 / L-3: the cooldown and hourly entry count come back from the stored fills, so a
    restart cannot be used to enter the same symbol again at once."""
    db = tmp_path / "paper.db"
    first = await replay_window(db, data_dir)
    logs = {bot: (dict(log._last), list(log._times)) for bot, log in first.engine.risk.entry_logs.items()}
    cursor = first.resume_after_ms
    await first.close()
    second = await build_paper_runtime(config=TradingConfig(), db_path=db, data_dir=data_dir, end_ms=END)
    try:
        fills = await second.store.fills.list(since_ms=cursor - 3_600_000)
        entries = [f for f in fills if f.leg.value == "entry"]
        assert entries, "the window should end with an entry in its last hour"
        restored = second.engine.risk.entry_logs["main"]
        for fill in entries:
            assert restored.last_entry_ms(fill.symbol) == logs["main"][0][fill.symbol]
        assert restored.entries_in_last_hour(cursor) == len(entries)
    finally:
        await second.close()


async def test_l3_restart_rebuilds_indicators_stats_and_regime(tmp_path, data_dir):
    """L-3: replaying the stored window again after a restart only warms the market state, and
    it comes back equal to the uninterrupted run's (indicators, F-2/F-4 stats, S-12 regime)."""
    db = tmp_path / "paper.db"
    first = await replay_window(db, data_dir)

    def market_state(runtime: Runtime) -> dict:
        return {
            key: (feed.indicators.rsi, feed.indicators.atr, feed.stats.quote_volume_24h,
                  feed.stats.median_volume(), feed.stats.median_atr(), feed.regime.efficiency_ratio)
            for key, feed in runtime.engine.feeds.items()
        }

    before = market_state(first)
    await first.close()
    second = await build_paper_runtime(config=TradingConfig(), db_path=db, data_dir=data_dir, end_ms=END)
    try:
        assert (await second.replay()).candles == 0
        after = market_state(second)
    finally:
        await second.close()
    assert all(value is not None for values in after.values() for value in values)
    assert after == before
