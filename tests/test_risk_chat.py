"""/risk [bot], /pause|/resume BOT and /open [bot] on the REAL stack (SPEC T-2, B-1, R-2..R-7).

A two-bot paper runtime (bot A on BTC/ETH, bot B on SOL/XRP, 5m) replays the bundled real candles
into a file database; the chat is a real Dispatcher fed through the console transport, and every
reply is checked against the engine's and the database's own numbers. No fakes. The last tests
render hand-built views for the states a short replay does not reach (R-5 REDUCE, an R-6 block).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from bot.app import BOT_COMMANDS
from bot.render import COMMANDS, money, pct, render_risk
from bot.runtime import Runtime, build_paper_runtime
from tests import stack
from trading.domain.config import BotProfile, TradingConfig
from trading.domain.models import ZERO, TradingState
from trading.domain.presets import effective_limits
from trading.domain.risk import daily_loss_pct
from trading.domain.views import BotRisk, RiskReport, SymbolRisk

DAY0 = 1_748_908_800_000  # 2025-06-03T00:00Z, first bundled candle
HOUR = 3_600_000
RISK_END = DAY0 + 40 * HOUR  # day 2 evening: A halted by its SL streak, B by the daily loss, SLs counted
OPEN_END = DAY0 + 34 * HOUR  # day 2 morning: one position open in each bot
USER = 7
A_SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")
B_SYMBOLS = ("SOL/USDT:USDT", "XRP/USDT:USDT")
QUOTE = "USDT"


def two_bots(a_name: str = "A") -> TradingConfig:
    """SPEC B-1: two bot profiles on one account, 5m candles."""
    return TradingConfig(bots=(
        BotProfile(name=a_name, symbols=A_SYMBOLS, timeframe="5m"),
        BotProfile(name="B", symbols=B_SYMBOLS, timeframe="5m"),
    ))


async def replayed(tmp_path: Path, data_dir: Path, end_ms: int, config: TradingConfig | None = None) -> Runtime:
    """The two-bot paper runtime replayed up to ``end_ms``."""
    return await stack.replayed(tmp_path / "paper.db", data_dir, end_ms, config or two_bots())


async def ask(runtime: Runtime, tmp_path: Path, *lines: str) -> list[str]:
    """One reply text per typed line (see tests/stack.py)."""
    return await stack.ask(runtime, tmp_path, *lines, user=USER)


def bot_block(text: str, name: str) -> str:
    """The paragraph of /risk that starts with ``Bot NAME``."""
    blocks = [b for b in text.split("\n\n") if b.startswith(f"Bot {name}\n")]
    assert len(blocks) == 1, f"no single block for bot {name} in:\n{text}"
    return blocks[0]


def symbol_line(block: str, symbol: str) -> str:
    """The bullet line of ``symbol`` in a bot block."""
    [line] = [line for line in block.splitlines() if f"• {symbol} — " in line]
    return line


# --------------------------------------------------------------------- /risk, real stack
async def test_risk_matches_engine_counters_R2_R3_R4_R5_R6_T2(tmp_path, data_dir):
    """T-2 /risk on the real stack: per bot the R-2 SL streak, trades today, R-4 profit factor
    and halt reason equal ``engine.risk_states``; per symbol the R-6 stop-losses equal
    ``engine.blacklist``; R-5 drawdown and R-3 daily loss equal the engine's account numbers."""
    runtime = await replayed(tmp_path, data_dir, RISK_END)
    try:
        engine = runtime.engine
        states = dict(engine.risk_states)
        blacklist = dict(engine.blacklist)
        positions = list(engine.positions)
        equity = engine.equity()
        peak = max(engine.account.peak_equity, equity)
        stage = engine.drawdown_stage(equity)
        unrealised = engine.unrealised_pnl()
        limits = {
            b.name: effective_limits(runtime.config.preset, b, equity, engine.closed_trades)
            for b in runtime.config.bots
        }
        [text] = await ask(runtime, tmp_path, "/risk")
    finally:
        await runtime.close()

    # The window is chosen so the counters are not all zero (else the test proves little).
    assert set(states) == {"A", "B"}
    assert any(s.sl_streak for s in states.values()) and any(s.halted_reason for s in states.values())
    assert any(e.stop_losses for e in blacklist.values())

    halted = next(s.halted_reason for s in states.values() if s.halted_reason)
    assert text.startswith("Risk\n")
    assert f"Trading state: {TradingState.HALTED.value} — {halted}" in text
    assert f"Equity: {money(equity, QUOTE)} (peak {money(peak, QUOTE)})" in text
    assert f"Drawdown: {pct((peak - equity) / peak * 100)} / {money(peak - equity, QUOTE)} below peak" in text
    assert f"stage {stage}" in text
    realised = sum((s.realised_today for s in states.values()), ZERO)
    day_start = next(iter(states.values())).day_start_equity
    used = daily_loss_pct(realised + unrealised, day_start)
    assert f"Daily loss used: {pct(used)} of {pct(runtime.config.account.daily_loss_limit_pct)} limit" in text

    for name, symbols in (("A", A_SYMBOLS), ("B", B_SYMBOLS)):
        block = bot_block(text, name)
        state = states[name]
        opened = sum(1 for (bot, _symbol) in positions if bot == name)
        assert f"Positions: {opened}/{limits[name].max_positions}" in block
        assert f"SL streak: {state.sl_streak}/{limits[name].sl_streak_limit}" in block
        assert f"Trades today: {state.trades_today}" in block
        pf = state.profit_factor_today
        assert f"Profit factor today: {f'{pf:.2f}' if pf is not None else 'n/a (no losing trade)'}" in block
        assert (f"Entries: halted: {state.halted_reason}" if state.halted_reason else "Entries: allowed") in block
        for symbol in symbols:
            entry = blacklist.get((name, symbol))
            count = entry.stop_losses if entry else 0
            line = symbol_line(block, symbol)
            assert f"{count}/3 stop-losses toward blacklist" in line
            blocked = entry is not None and entry.blocked_until_ms is not None
            assert ("blocked until" in line) is blocked
            assert "paused" not in line


async def test_risk_of_one_bot_shows_only_that_bot_B1_T2(tmp_path, data_dir):
    """B-1 / T-2: ``/risk B`` (and ``/risk b``, case-insensitive) show bot B and its symbols only;
    the account lines (R-3, R-5 are shared) stay."""
    runtime = await replayed(tmp_path, data_dir, RISK_END)
    try:
        text, lower = await ask(runtime, tmp_path, "/risk B", "/risk b")
        state = runtime.engine.risk_states["B"]
    finally:
        await runtime.close()
    assert text == lower
    assert f"SL streak: {state.sl_streak}/" in bot_block(text, "B")
    assert "Bot A" not in text
    for symbol in A_SYMBOLS:
        assert symbol not in text
    for symbol in B_SYMBOLS:
        assert symbol in text
    assert "Drawdown:" in text and "Daily loss used:" in text


async def test_risk_unknown_bot_answers_usage_with_bot_names_B1_T2(tmp_path, data_dir):
    """T-2: ``/risk nope`` answers the problem naming the bots and one usage line; two words
    answer the usage line alone. No traceback, no report."""
    runtime = await replayed(tmp_path, data_dir, DAY0 + 2 * HOUR)
    try:
        unknown, extra, open_unknown = await ask(runtime, tmp_path, "/risk nope", "/risk A B", "/open nope")
    finally:
        await runtime.close()
    assert unknown == "Unknown bot: nope (bots: A, B)\nUsage: /risk [bot]"
    assert extra == "Usage: /risk [bot]"
    assert open_unknown == "Unknown bot: nope (bots: A, B)\nUsage: /open [bot]"


# ------------------------------------------------------------ /pause BOT, /open BOT
async def test_pause_and_resume_a_bot_touch_only_its_symbols_R7_B1(tmp_path, data_dir):
    """R-7 "per bot": ``/pause A`` pauses exactly A's symbols in the database and the engine,
    bot B is untouched, /risk shows the pause; ``/resume A`` undoes it."""
    runtime = await replayed(tmp_path, data_dir, OPEN_END)
    try:
        pauses = runtime.store.pauses
        assert await pauses.list("A") == set() and await pauses.list("B") == set()
        paused_reply, risk_text = await ask(runtime, tmp_path, "/pause A", "/risk A")
        assert paused_reply == "Paused entries on every symbol of bot A."
        assert await pauses.list("A") == set(A_SYMBOLS)
        assert await pauses.list("B") == set()
        assert runtime.engine.paused["A"] == set(A_SYMBOLS) and runtime.engine.paused["B"] == set()
        for symbol in A_SYMBOLS:
            assert symbol_line(bot_block(risk_text, "A"), symbol).endswith(", paused")

        [resumed_reply] = await ask(runtime, tmp_path, "/resume a")
        assert resumed_reply == "Resumed entries on every symbol of bot A."
        assert await pauses.list("A") == set() and await pauses.list("B") == set()
        assert runtime.engine.paused["A"] == set()
    finally:
        await runtime.close()


async def test_pause_word_that_is_a_symbol_and_a_bot_means_the_symbol_R7_B1(tmp_path, data_dir):
    """R-7: a bot named like a symbol ("BTC") — ``/pause BTC`` pauses the symbol BTC (for every
    bot trading it), not the bot's other symbols; an unknown word names the bots."""
    runtime = await build_paper_runtime(
        config=two_bots(a_name="BTC"), db_path=tmp_path / "paper.db", data_dir=data_dir, end_ms=DAY0 + HOUR
    )
    try:
        reply, unknown, usage = await ask(runtime, tmp_path, "/pause BTC", "/pause nope", "/resume")
        assert reply == "Paused entries on BTC/USDT:USDT."
        assert await runtime.store.pauses.list("BTC") == {"BTC/USDT:USDT"}  # not ETH: the symbol won
        assert unknown == "Unknown symbol or bot: nope (bots: BTC, B)\nUsage: /pause [SYMBOL|bot|all]"
        assert usage.startswith("Entries per symbol")  # no argument still shows the toggles
    finally:
        await runtime.close()


async def test_open_of_one_bot_lists_only_its_positions_B1_T2(tmp_path, data_dir):
    """B-1 / T-2: ``/open A`` lists only bot A's open positions, ``/open B`` only B's."""
    runtime = await replayed(tmp_path, data_dir, OPEN_END)
    try:
        by_bot = {
            name: sorted(s for (b, s) in runtime.engine.positions if b == name) for name in ("A", "B")
        }
        everything, only_a, only_b = await ask(runtime, tmp_path, "/open", "/open A", "/open b")
    finally:
        await runtime.close()
    assert by_bot["A"] and by_bot["B"], f"the window must end with positions in both bots: {by_bot}"
    assert only_a.startswith(f"Open positions of bot A ({len(by_bot['A'])})")
    assert only_b.startswith(f"Open positions of bot B ({len(by_bot['B'])})")
    for symbol in by_bot["A"]:
        assert symbol in only_a and symbol not in only_b and symbol in everything
    for symbol in by_bot["B"]:
        assert symbol in only_b and symbol not in only_a and symbol in everything
    assert " · bot B" not in only_a and " · bot A" not in only_b


# ------------------------------------------------------------------------ pure render
def risk_report(**changes) -> RiskReport:
    """A hand-built /risk view: REDUCE stage (R-5), one R-6 block, one R-7 pause."""
    now = DAY0 + 12 * HOUR + 5 * 60_000  # 2025-06-03 12:05 UTC
    fields = dict(
        trading_state=TradingState.REDUCING, state_reason="", equity=Decimal("1380.5"),
        peak_equity=Decimal("1520"), drawdown_pct=Decimal("9.177631578947368"), drawdown_quote=Decimal("139.5"),
        drawdown_stage="REDUCE", daily_loss_used_pct=Decimal("1.254"), daily_loss_limit_pct=Decimal("2"),
        bots=(
            BotRisk("A", 1, 2, 1, 2, 4, None, ""),
            BotRisk("B", 0, 2, 2, 2, 6, Decimal("0.4375"), "SL_STREAK"),
        ),
        symbols=(
            SymbolRisk("A", "BTC/USDT:USDT", 0, None, False),
            SymbolRisk("A", "ETH/USDT:USDT", 1, None, True),
            SymbolRisk("B", "SOL/USDT:USDT", 0, now + 120 * 60_000, False),
            SymbolRisk("B", "XRP/USDT:USDT", 2, DAY0 + 25 * HOUR, False),
        ),
        clock_ms=now,
    )
    fields.update(changes)
    return RiskReport(**fields)


def test_render_risk_shows_reduce_stage_blacklist_block_and_pause_R4_R5_R6_R7():
    """R-5 REDUCE reads "risk × 0.5"; R-6 block "blocked until HH:MM UTC" (full date when it ends
    another day); R-7 "paused"; R-4 profit factor "n/a" without a losing trade; R-2 reason."""
    text = render_risk(risk_report()).as_kwargs()["text"]
    assert "Trading state: REDUCING — drawdown: risk × 0.5 (R-5)" in text
    assert "Equity: 1,380.50 USDT (peak 1,520.00 USDT)" in text
    assert "Drawdown: 9.18% / 139.50 USDT below peak — stage REDUCE: risk × 0.5" in text
    assert "Daily loss used: 1.25% of 2.00% limit" in text
    a, b = bot_block(text, "A"), bot_block(text, "B")
    assert "Entries: allowed" in a and "Positions: 1/2" in a and "SL streak: 1/2" in a
    assert "Trades today: 4" in a and "Profit factor today: n/a (no losing trade)" in a
    assert symbol_line(a, "BTC/USDT:USDT").endswith("— 0/3 stop-losses toward blacklist")
    assert symbol_line(a, "ETH/USDT:USDT").endswith("— 1/3 stop-losses toward blacklist, paused")
    assert "Entries: halted: SL_STREAK (stop-loss streak, R-2)" in b and "Profit factor today: 0.44" in b
    assert symbol_line(b, "SOL/USDT:USDT").endswith("0/3 stop-losses toward blacklist, blocked until 14:05 UTC")
    assert symbol_line(b, "XRP/USDT:USDT").endswith("blocked until 2025-06-04 01:00 UTC")
    assert text.endswith("As of 2025-06-03 12:05 UTC")


def test_render_risk_pause_stage_and_halted_state_R5():
    """R-5 PAUSE: the state is HALTED with the drawdown reason and the stage reads "entries paused"."""
    report = risk_report(trading_state=TradingState.HALTED, state_reason="DRAWDOWN_PAUSE", drawdown_stage="PAUSE")
    text = render_risk(report).as_kwargs()["text"]
    assert "Trading state: HALTED — DRAWDOWN_PAUSE (drawdown from peak equity, R-5)" in text
    assert "stage PAUSE: entries paused" in text


def test_risk_is_in_help_and_menu_under_status_T2():
    """T-2: /risk is listed under status in /help and the command menu; /pause names bots."""
    status = dict(COMMANDS)["Status"]
    assert [c for c, _ in status] == ["summary", "open", "status", "risk", "runtime"]
    assert "risk" in [c.command for c in BOT_COMMANDS]
    control = dict(dict(COMMANDS)["Control"])
    assert "[SYMBOL|bot|all]" in control["pause"] and "[SYMBOL|bot|all]" in control["resume"]
