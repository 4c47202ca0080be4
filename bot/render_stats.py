"""Signal analytics (``trading.app.analytics``) → Telegram text (SPEC S-13, T-2 analytics).

Pure functions returning aiogram ``formatting`` nodes, one element per line so that
:func:`bot.render.split_text` can cut long lists between lines. Counts with thousands
separators, scores with 2 decimals (score points), percentages with 2 decimals, times UTC.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aiogram.utils.formatting import Bold, Code, Text, as_line, as_list

from bot.render import pct, plain, utc
from trading.app.analytics import (
    BlockersReport,
    BotFilters,
    FailStatsReport,
    NearMissReport,
    SignalStatsReport,
    TopMissedReport,
    Window,
)


def n(count: int) -> str:
    """A count with thousands separators: ``12,345``."""
    return f"{count:,}"


def score(value: float) -> str:
    """A score in points with 2 decimals (``inf`` = no minimum could be met: equity ≤ 0)."""
    return f"{value:.2f}"


def no_signals(window: Window) -> Text:
    """The empty-window line, e.g. ``No evaluated signals in the last 24 h.``"""
    who = f" for bot {window.bot}" if window.bot else ""
    return Text(f"No evaluated signals{who} in the last {window.hours} h.")


def _header(title: str, window: Window, detail: str = "") -> Text:
    who = f" · bot {window.bot}" if window.bot else ""
    return as_list(
        as_line(Bold(title), f" — last {window.hours} h{who}", end=""),
        f"{utc(window.since_ms)} → {utc(window.until_ms - 1)} UTC{detail}",
    )


def render_signal_stats(report: SignalStatsReport) -> Text:
    """/signalstats: totals, then per symbol evaluated, passed (%), average and max score."""
    if not report.evaluated:
        return no_signals(report.window)
    lines = [
        as_line("  • ", Code(s.symbol),
                f": {n(s.evaluated)} evaluated, {n(s.passed)} passed ({pct(s.pass_rate_pct)}),"
                f" avg score {score(s.avg_score)}, max {score(s.max_score)}", end="")
        for s in report.symbols
    ]
    total = f"Evaluated {n(report.evaluated)} · passed {n(report.passed)} ({pct(report.pass_rate_pct)})"
    return as_list(_header("Signal stats", report.window), total, *lines)


def render_fail_stats(report: FailStatsReport) -> Text:
    """/failstats: per symbol the blocked signals (% of evaluated) and their reason codes."""
    if not report.evaluated:
        return no_signals(report.window)
    if not report.symbols:
        return as_list(_header("Blocked signals by symbol", report.window), "No signal was blocked.")
    lines = [
        as_line("  • ", Code(s.symbol), f": {n(s.blocked)} blocked of {n(s.evaluated)} ({pct(s.blocked_pct)}) — ",
                ", ".join(f"{reason} {n(count)}" for reason, count in s.reasons), end="")
        for s in report.symbols
    ]
    return as_list(_header("Blocked signals by symbol", report.window), *lines)


def render_blockers(report: BlockersReport) -> Text:
    """/blockers: each reason code with its count, share of blocked signals and symbols hit."""
    if not report.evaluated:
        return no_signals(report.window)
    detail = f" · {n(report.blocked)} blocked of {n(report.evaluated)} evaluated"
    if not report.blockers:
        return as_list(_header("Blockers", report.window, detail), "No signal was blocked.")
    lines = [
        as_line("  • ", Code(b.reason),
                f": {n(b.count)} ({pct(b.share_pct)}), {n(b.symbols)} symbol{'' if b.symbols == 1 else 's'}",
                end="")
        for b in report.blockers
    ]
    return as_list(_header("Blockers", report.window, detail), *lines)


def render_near(report: NearMissReport) -> Text:
    """/near: newest near misses with time, side, score vs. minimum, blocker and components."""
    if not report.evaluated:
        return no_signals(report.window)
    header = _header("Near misses", report.window)
    rule = f"Blocked with score ≥ min − {report.margin:g}, or blocked after meeting the score."
    if not report.signals:
        return as_list(header, rule, "No near misses.")
    lines = [
        as_line("  • ", f"{utc(s.timestamp)} ", Code(s.symbol),
                f" {s.side.value.upper()} · score {score(s.score)} / min {score(s.min_score)} · ",
                Code(s.blocked_by), f" · bot {s.bot}",
                f" · {', '.join(s.components)}" if s.components else "", end="")
        for s in report.signals
    ]
    return as_list(header, rule, *lines)


def render_top_missed(report: TopMissedReport, first_rank: int = 1) -> Text:
    """/topmissed: symbols with most signals that met the score but were blocked; ranks start
    at ``first_rank`` (a later page of the list)."""
    if not report.evaluated:
        return no_signals(report.window)
    header = _header("Top missed", report.window)
    rule = "Signals that met their min score but were blocked by a later check."
    if not report.symbols:
        return as_list(header, rule, "No missed signals.")
    lines = [
        as_line(f"  {rank}. ", Code(m.symbol), f": {n(m.missed)} missed, mostly ",
                Code(m.top_blocker), f" ({n(m.top_blocker_count)})", end="")
        for rank, m in enumerate(report.symbols, start=first_rank)
    ]
    return as_list(header, rule, *lines)


def setting(value: Any) -> str:
    """A config value for display: Decimal exactly, tuples comma-joined, None as ``—``."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, (tuple, list)):
        return ", ".join(setting(v) for v in value)
    return str(value)


def render_filters(bots: tuple[BotFilters, ...]) -> Text:
    """/filters: every current setting of each bot (percentages in %, — = off / tier default)."""
    blocks = [
        as_list(Bold(f"Filters — bot {b.bot}"),
                *(as_line(f"{name}: ", Code(setting(value)), end="") for name, value in b.values))
        for b in bots
    ]
    return as_list(*blocks, "Percentages in %; — = off or the equity tier's default.", sep="\n\n")
