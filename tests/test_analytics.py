"""Signal analytics (SPEC S-13, T-2 analytics): exact SQL aggregates on a real SQLite file, the
service windows on an injected clock, the chat commands through a real Dispatcher and the
console transport, and /blockers on a real replay of the bundled candles."""

from __future__ import annotations

import io
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from aiogram.methods import EditMessageText, SendMessage

from bot.app import build_dispatcher
from bot.console import ConsoleChat, keyboard_buttons, make_console_bot
from bot.runtime import build_paper_runtime
from storage import Storage
from trading.app.analytics import (
    AnalyticsService,
    BlockerCount,
    MissedSymbol,
    SymbolBlockerCount,
    UnknownBot,
)
from trading.domain.config import (
    BotProfile,
    RegimeRiskMultipliers,
    StrategyConfig,
    TradingConfig,
)
from trading.domain.filters import FilterConfig
from trading.domain.models import Side, SignalEvaluation
from trading.ports import ReplayClock

H = 3_600_000
NOW = 1_748_952_000_000  # 2025-06-03 12:00 UTC
BTC, ETH, SOL, XRP = "BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "XRP/USDT:USDT"
SBM, MAXP, PAUSED = "SCORE_BELOW_MIN", "MAX_POSITIONS", "SYMBOL_PAUSED"
USER = 7


def sig(at_ms: int, symbol: str, score: float, blocked_by: str = "", *, bot: str = "main",
        side: Side = Side.LONG, min_score: float = 3.0, components: tuple[str, ...] = ()) -> SignalEvaluation:
    """One evaluated signal; passed when nothing blocked it."""
    return SignalEvaluation(at_ms, bot, symbol, side, score, not blocked_by, blocked_by, min_score, components)


# In the last 24 h before NOW (window [NOW + 1 − 24 h, NOW + 1)) unless noted.
SIGNALS = [
    sig(NOW, BTC, 3.4, components=("rsi", "volume")),  # passed, stamped exactly "now"
    sig(NOW - 2 * H, BTC, 2.8, SBM, side=Side.SHORT),  # near: 0.2 under the minimum
    sig(NOW - 3 * H, BTC, 1.0, SBM),  # far under: not near
    sig(NOW - 4 * H, BTC, 3.2, MAXP, components=("macd", "atr")),  # met the score, blocked later
    sig(NOW - 5 * H, ETH, 3.6, MAXP),
    sig(NOW - 6 * H, ETH, 3.1, PAUSED, side=Side.SHORT),
    sig(NOW - 7 * H, ETH, 3.0, PAUSED, side=Side.SHORT),  # score == minimum: met it
    sig(NOW - 8 * H, ETH, 0.5, SBM),
    sig(NOW - 9 * H, SOL, 2.5, SBM, bot="swing"),  # exactly min − 0.5: still near
    sig(NOW - 10 * H, SOL, 3.3, bot="swing"),  # passed
    sig(NOW - 11 * H, XRP, 2.9, SBM, min_score=0.0),  # pre-migration row: threshold unknown
    sig(NOW + 1 - 24 * H, XRP, 2.9, SBM, min_score=0.0),  # first ms of the window
    sig(NOW - 25 * H, BTC, 3.5, MAXP),  # outside the window
    sig(NOW + 1, BTC, 3.5, MAXP),  # after "now" (the clock has not got there)
]
WINDOW = {"since_ms": NOW + 1 - 24 * H, "until_ms": NOW + 1}


def config() -> TradingConfig:
    """Two bots: main (BTC, ETH, XRP) and swing (SOL) with a fixed min score."""
    return TradingConfig(bots=(
        BotProfile(name="main", symbols=(BTC, ETH, XRP)),
        BotProfile(name="swing", symbols=(SOL,), strategy=StrategyConfig(min_score=3.3, rsi_oversold=25)),
    ))


@pytest.fixture
async def store(tmp_path):
    s = await Storage.open(tmp_path / "analytics.db")
    yield s
    await s.close()


@pytest.fixture
async def filled(store):
    await store.signals.add_many(SIGNALS)
    return store


@pytest.fixture
def analytics(filled) -> AnalyticsService:
    return AnalyticsService(filled, config(), ReplayClock(NOW))


# ------------------------------------------------------------------ repository aggregates
async def test_s13_new_columns_round_trip(filled):
    """S-13: min_score and components are stored and read back exactly."""
    assert await filled.signals.list() == sorted(SIGNALS, key=lambda s: s.timestamp)
    with pytest.raises(ValueError, match="cannot contain ','"):
        await filled.signals.add_many([sig(NOW, BTC, 1.0, components=("a,b",))])


async def test_s13_stats_by_symbol(filled):
    """S-13 /signalstats numbers: evaluated, passed, pass rate, avg and max score per symbol."""
    stats = await filled.signals.stats_by_symbol(**WINDOW)
    assert [(s.symbol, s.evaluated, s.passed, s.max_score) for s in stats] == [
        (BTC, 4, 1, 3.4), (ETH, 4, 0, 3.6), (SOL, 2, 1, 3.3), (XRP, 2, 0, 2.9),
    ]
    by = {s.symbol: s for s in stats}
    assert by[BTC].avg_score == pytest.approx((3.4 + 2.8 + 1.0 + 3.2) / 4)
    assert by[BTC].pass_rate_pct == Decimal(25) and by[SOL].pass_rate_pct == Decimal(50)
    assert by[ETH].pass_rate_pct == 0
    swing = await filled.signals.stats_by_symbol(bot="swing", **WINDOW)
    assert [(s.symbol, s.evaluated, s.passed) for s in swing] == [(SOL, 2, 1)]


async def test_s13_blocker_counts_share_and_symbols(filled):
    """S-13 /blockers: count, share % of blocked signals, distinct symbols; passed excluded."""
    assert await filled.signals.blocker_counts(**WINDOW) == [
        BlockerCount(SBM, 6, Decimal(600) / Decimal(10), 4),
        BlockerCount(MAXP, 2, Decimal(20), 2),
        BlockerCount(PAUSED, 2, Decimal(20), 1),
    ]
    assert await filled.signals.blocker_counts(bot="swing", **WINDOW) == [BlockerCount(SBM, 1, Decimal(100), 1)]
    everything = await filled.signals.blocker_counts()  # no window: the two rows outside count too
    assert [(b.reason, b.count) for b in everything] == [(SBM, 6), (MAXP, 4), (PAUSED, 2)]


async def test_s13_blocker_counts_by_symbol(filled):
    """S-13 /failstats rows: per symbol and reason code, most frequent first."""
    assert await filled.signals.blocker_counts_by_symbol(**WINDOW) == [
        SymbolBlockerCount(BTC, SBM, 2), SymbolBlockerCount(BTC, MAXP, 1),
        SymbolBlockerCount(ETH, PAUSED, 2), SymbolBlockerCount(ETH, MAXP, 1), SymbolBlockerCount(ETH, SBM, 1),
        SymbolBlockerCount(SOL, SBM, 1),
        SymbolBlockerCount(XRP, SBM, 2),
    ]


async def test_s13_near_misses_newest_first(filled):
    """S-13 /near: within the margin of the minimum, or blocked after meeting the score; rows
    without a recorded minimum (min_score 0) are never "near"."""
    near = await filled.signals.near_misses(10, **WINDOW)
    assert [(s.timestamp, s.symbol, s.blocked_by) for s in near] == [
        (NOW - 2 * H, BTC, SBM), (NOW - 4 * H, BTC, MAXP), (NOW - 5 * H, ETH, MAXP),
        (NOW - 6 * H, ETH, PAUSED), (NOW - 7 * H, ETH, PAUSED), (NOW - 9 * H, SOL, SBM),
    ]
    assert near[1] == SIGNALS[3]  # whole evaluation back, components included
    assert [s.timestamp for s in await filled.signals.near_misses(2, **WINDOW)] == [NOW - 2 * H, NOW - 4 * H]
    tight = await filled.signals.near_misses(10, margin=0.1, **WINDOW)
    assert [s.blocked_by for s in tight] == [MAXP, MAXP, PAUSED, PAUSED]


async def test_s13_top_missed_ranks_symbols_with_top_blocker(filled):
    """S-13 /topmissed: blocked signals that met their min score, per symbol, top blocker."""
    assert await filled.signals.top_missed(10, **WINDOW) == [MissedSymbol(ETH, 3, PAUSED, 2), MissedSymbol(BTC, 1, MAXP, 1)]
    assert await filled.signals.top_missed(1, **WINDOW) == [MissedSymbol(ETH, 3, PAUSED, 2)]
    assert await filled.signals.top_missed(10) == [MissedSymbol(BTC, 3, MAXP, 3), MissedSymbol(ETH, 3, PAUSED, 2)]


async def test_s13_aggregates_use_the_new_indexes(filled):
    """The blocker queries are served by an index, not a scan of every signal."""
    plan = await filled.db.fetchall(
        "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM signals WHERE blocked_by = 'X' AND timestamp >= 0"
    )
    assert any("ix_signals_blocked_by_timestamp" in row[3] for row in plan)


# ------------------------------------------------------------------------------- service
async def test_t2_service_windows_follow_the_injected_clock(analytics, filled):
    """T-2: "last N hours" is relative to clock.now_ms() (the replay clock), not the wall."""
    stats = await analytics.signal_stats()
    assert (stats.evaluated, stats.passed) == (12, 2)
    assert stats.window.since_ms == NOW + 1 - 24 * H and stats.window.until_ms == NOW + 1
    assert (await analytics.signal_stats(hours=1)).evaluated == 1  # only the signal at NOW
    later = AnalyticsService(filled, config(), ReplayClock(NOW + 48 * H))
    assert (await later.signal_stats()).evaluated == 0
    with pytest.raises(ValueError):
        analytics.window(0)


async def test_t2_service_fail_stats_blockers_near_top_missed(analytics):
    """T-2: each service call returns the repository numbers wrapped with its window."""
    fails = await analytics.fail_stats()
    assert [(s.symbol, s.evaluated, s.blocked) for s in fails.symbols] == [
        (ETH, 4, 4), (BTC, 4, 3), (XRP, 2, 2), (SOL, 2, 1),
    ]
    assert fails.symbols[0].reasons == ((PAUSED, 2), (MAXP, 1), (SBM, 1))
    assert fails.symbols[1].blocked_pct == Decimal(75)
    blockers = await analytics.blockers()
    assert (blockers.evaluated, blockers.blocked) == (12, 10)
    near = await analytics.near(limit=3)
    assert len(near.signals) == 3 and near.margin == 0.5
    assert [m.symbol for m in (await analytics.top_missed(limit=5)).symbols] == [ETH, BTC]
    assert (await analytics.blockers(bot="swing")).blocked == 1
    with pytest.raises(UnknownBot):
        await analytics.blockers(bot="nobody")


def test_t2_filters_lists_every_profile_and_strategy_field(tmp_path):
    """T-2 /filters: every BotProfile and StrategyConfig field, generically (new fields appear
    without code changes), nested ones as ``strategy.<field>``."""
    service = AnalyticsService(store=type("S", (), {"signals": None})(), config=config(), clock=ReplayClock(NOW))
    main, swing = service.filters()
    nested = {"strategy": StrategyConfig, "filters": FilterConfig, "regime_risk": RegimeRiskMultipliers}
    expected = [f for f in BotProfile.model_fields if f not in nested]
    for prefix, model in nested.items():
        expected += [f"{prefix}.{f}" for f in model.model_fields]
    assert [name for name, _ in main.values] == expected
    values = dict(swing.values)
    assert values["strategy.rsi_oversold"] == 25 and values["strategy.min_score"] == 3.3
    assert values["risk_pct"] == Decimal("0.75") and values["symbols"] == (SOL,)
    assert [b.bot for b in service.filters("swing")] == ["swing"]
    with pytest.raises(UnknownBot, match="main, swing"):
        service.filters("nope")


# ---------------------------------------------------------------------------------- chat
async def replies(analytics: AnalyticsService | None, tmp_path: Path, *lines: str) -> list[str]:
    """Texts the bot sent for ``lines``, through a real Dispatcher and the console transport."""
    dp = build_dispatcher(object(), None, frozenset({USER}), analytics=analytics)
    bot = make_console_bot(tmp_path / "out", out=io.StringIO())
    chat = ConsoleChat(dp, bot, USER, out=io.StringIO())
    sent: list[str] = []
    for line in lines:
        before = len(bot.session.requests)
        await chat.send_text(line)
        sent.append("\n".join(r.text for r in bot.session.requests[before:] if isinstance(r, SendMessage)))
    await bot.session.close()
    return sent


async def test_t2_chat_signalstats_failstats_blockers(analytics, tmp_path):
    """T-2 /signalstats, /failstats, /blockers show the aggregate numbers."""
    stats, fails, blockers, six_hours = await replies(
        analytics, tmp_path, "/signalstats", "/failstats", "/blockers", "/blockers 6"
    )
    assert "Signal stats — last 24 h" in stats and "2025-06-02 12:00 → 2025-06-03 12:00 UTC" in stats
    assert "Evaluated 12 · passed 2 (16.67%)" in stats
    assert "BTC/USDT:USDT: 4 evaluated, 1 passed (25.00%), avg score 2.60, max 3.40" in stats
    assert "ETH/USDT:USDT: 4 blocked of 4 (100.00%) — SYMBOL_PAUSED 2, MAX_POSITIONS 1, SCORE_BELOW_MIN 1" in fails
    assert "10 blocked of 12 evaluated" in blockers
    assert "SCORE_BELOW_MIN: 6 (60.00%), 4 symbols" in blockers
    assert "SYMBOL_PAUSED: 2 (20.00%), 1 symbol" in blockers
    assert "last 6 h" in six_hours and "SCORE_BELOW_MIN: 2 (50.00%)" in six_hours


async def test_t2_chat_near_topmissed_filters(analytics, tmp_path):
    """T-2 /near, /topmissed, /filters show the rows with their numbers."""
    near, top, filters, swing = await replies(analytics, tmp_path, "/near 2", "/topmissed", "/filters", "/filters swing")
    assert "2025-06-03 10:00 BTC/USDT:USDT SHORT · score 2.80 / min 3.00 · SCORE_BELOW_MIN · bot main" in near
    assert "2025-06-03 08:00 BTC/USDT:USDT LONG · score 3.20 / min 3.00 · MAX_POSITIONS · bot main · macd, atr" in near
    assert near.count(" · bot ") == 2
    assert "1. ETH/USDT:USDT: 3 missed, mostly SYMBOL_PAUSED (2)" in top
    assert "2. BTC/USDT:USDT: 1 missed, mostly MAX_POSITIONS (1)" in top
    assert "Filters — bot main" in filters and "Filters — bot swing" in filters
    assert "risk_pct: 0.75" in filters and "strategy.rsi_oversold: 30.0" in filters
    assert "symbols: BTC/USDT:USDT, ETH/USDT:USDT, XRP/USDT:USDT" in filters
    assert "strategy.min_score: —" in filters  # main: the equity tier decides
    assert "bot main" not in swing and "strategy.min_score: 3.3" in swing


async def test_t2_chat_malformed_arguments_get_one_usage_line(analytics, tmp_path):
    """T-2: bad arguments answer a usage line (never a traceback); unknown bot names the bots."""
    answers = await replies(
        analytics, tmp_path, "/signalstats abc", "/blockers 0", "/near 51", "/topmissed 1 2", "/failstats ²",
        "/filters a b", "/filters nope",
    )
    assert answers[0] == "Usage: /signalstats [hours] — hours: a whole number 1–8760"
    assert answers[1] == "Usage: /blockers [hours] — hours: a whole number 1–8760"
    assert answers[2] == "Usage: /near [n] — n: a whole number 1–50"
    assert answers[3] == "Usage: /topmissed [n] — n: a whole number 1–50"
    assert answers[4].startswith("Usage: /failstats [hours]")
    assert answers[5] == "Usage: /filters [bot]"
    assert answers[6] == "Unknown bot: nope (bots: main, swing)\nUsage: /filters [bot]"


async def test_t2_chat_empty_window_and_missing_service(store, tmp_path):
    """T-2: an empty window says so plainly; a dispatcher without analytics says it is off."""
    empty = AnalyticsService(store, config(), ReplayClock(NOW))
    answers = await replies(empty, tmp_path, "/signalstats", "/failstats", "/blockers", "/near", "/topmissed")
    assert answers == ["No evaluated signals in the last 24 h."] * 5
    assert await replies(None, tmp_path, "/blockers", "/filters") == ["Signal analytics are not available in this run."] * 2


async def test_t3_long_near_list_is_paged_below_the_telegram_limit(store, tmp_path):
    """T-3/T-4: /near 50 with long rows comes in pages of 10 (none over 4096); walking the pager
    shows all 50 rows, none lost or repeated."""
    many = [sig(NOW - i * 60_000, BTC, 3.5, MAXP, components=("rsi", "macd", "volume", "atr", "trend"))
            for i in range(60)]
    await store.signals.add_many(many)
    dp = build_dispatcher(object(), None, frozenset({USER}), analytics=AnalyticsService(store, config(), ReplayClock(NOW)))
    bot = make_console_bot(tmp_path / "out", out=io.StringIO())
    chat = ConsoleChat(dp, bot, USER, out=io.StringIO())
    await chat.send_text("/near 50")
    for _ in range(4):
        await chat.tap(len(keyboard_buttons(bot.session.keyboard_message)))  # Next ▶️
    pages = [r.text for r in bot.session.requests if isinstance(r, (SendMessage, EditMessageText))]
    assert len(pages) == 5 and all(len(m.encode("utf-16-le")) // 2 <= 4096 for m in pages)
    assert [m.count("MAX_POSITIONS") for m in pages] == [10] * 5
    rows = [line for m in pages for line in m.splitlines() if "MAX_POSITIONS" in line]
    assert len(set(rows)) == 50


# ----------------------------------------------------------------------------- real data
DAY0 = 1_748_908_800_000  # 2025-06-03T00:00Z, first bundled candle


async def test_s13_t2_blockers_on_a_real_replay_match_a_direct_sql_count(tmp_path, data_dir):
    """S-13 / T-2 on REAL data: replay ~1 day of bundled candles, then /blockers (last 24 h of
    the replay clock) shows SCORE_BELOW_MIN with exactly the count SQL gives for that window."""
    db = tmp_path / "paper.db"
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=db, data_dir=data_dir, end_ms=DAY0 + 26 * H)
    try:
        await runtime.replay()
        await runtime.persister.flush()
        analytics = AnalyticsService(runtime.store, runtime.config, runtime.clock)
        [text] = await replies(analytics, tmp_path, "/blockers")
        now = runtime.clock.now_ms()
    finally:
        await runtime.close()
    with sqlite3.connect(db) as conn:
        count, total = conn.execute(
            "SELECT SUM(blocked_by = 'SCORE_BELOW_MIN'), COUNT(*) FROM signals WHERE timestamp >= ? AND timestamp < ?",
            (now + 1 - 24 * H, now + 1),
        ).fetchone()
        min_scores = conn.execute("SELECT MIN(min_score) FROM signals").fetchone()[0]
    assert now >= DAY0 + 24 * H and total > 0 and count > 0
    assert min_scores > 0  # the engine records the threshold each signal needed
    assert f"SCORE_BELOW_MIN: {count:,} (" in text
    assert f"of {total:,} evaluated" in text
