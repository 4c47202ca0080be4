"""/signalstats, /failstats, /blockers, /near, /topmissed, /filters (SPEC S-13, T-2 analytics).

Thin: parse the one optional argument → one ``AnalyticsService`` call → render → answer.
``analytics`` is injected by name (``build_dispatcher(..., analytics=svc)``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.render import render_usage
from bot.render_stats import (
    render_blockers,
    render_fail_stats,
    render_filters,
    render_near,
    render_signal_stats,
    render_top_missed,
)
from handlers.common import answer_text
from trading.analytics import UnknownBot

if TYPE_CHECKING:
    from trading.analytics import AnalyticsService

MAX_HOURS = 24 * 365  # a year of replayed or live history is the longest window worth grouping
MAX_ROWS = 50  # /near and /topmissed: more lines than this is a report, not a chat answer
_WHOLE = re.compile(r"[0-9]{1,9}")  # ASCII only: str.isdigit() also accepts "²", which int() refuses
UNAVAILABLE = "Signal analytics are not available in this run."


def parse_count(args: str | None, default: int, maximum: int) -> int | None:
    """The optional whole-number argument in 1..``maximum`` (``default`` when absent); None when
    malformed (not a number, out of range, or more than one word)."""
    words = (args or "").split()
    if not words:
        return default
    if len(words) > 1 or not _WHOLE.fullmatch(words[0]) or not 1 <= int(words[0]) <= maximum:
        return None
    return int(words[0])


async def _refused(
    message: Message, command: CommandObject, analytics: "AnalyticsService | None", value: int | None,
    what: str, maximum: int,
) -> bool:
    """Answer and return True when analytics are not wired or the argument is malformed."""
    if analytics is None:
        await message.answer(UNAVAILABLE)
        return True
    if value is None:
        usage = f"Usage: /{command.command.lower()} [{what}] — {what}: a whole number 1–{maximum}"
        await message.answer(**render_usage(usage).as_kwargs())
        return True
    return False


async def on_signal_stats(
    message: Message, command: CommandObject, analytics: "AnalyticsService | None" = None
) -> None:
    """Per-symbol evaluated / passed signals and scores over the last N hours (default 24)."""
    hours = parse_count(command.args, 24, MAX_HOURS)
    if await _refused(message, command, analytics, hours, "hours", MAX_HOURS):
        return
    await answer_text(message, render_signal_stats(await analytics.signal_stats(hours)))


async def on_fail_stats(message: Message, command: CommandObject, analytics: "AnalyticsService | None" = None) -> None:
    """Blocked signals per symbol with their reason codes over the last N hours (default 24)."""
    hours = parse_count(command.args, 24, MAX_HOURS)
    if await _refused(message, command, analytics, hours, "hours", MAX_HOURS):
        return
    await answer_text(message, render_fail_stats(await analytics.fail_stats(hours)))


async def on_blockers(message: Message, command: CommandObject, analytics: "AnalyticsService | None" = None) -> None:
    """Reason codes by how many signals they blocked over the last N hours (default 24)."""
    hours = parse_count(command.args, 24, MAX_HOURS)
    if await _refused(message, command, analytics, hours, "hours", MAX_HOURS):
        return
    await answer_text(message, render_blockers(await analytics.blockers(hours)))


async def on_near(message: Message, command: CommandObject, analytics: "AnalyticsService | None" = None) -> None:
    """The newest N near misses of the last 24 h (default 10)."""
    limit = parse_count(command.args, 10, MAX_ROWS)
    if await _refused(message, command, analytics, limit, "n", MAX_ROWS):
        return
    await answer_text(message, render_near(await analytics.near(limit)))


async def on_top_missed(message: Message, command: CommandObject, analytics: "AnalyticsService | None" = None) -> None:
    """The N symbols (default 10) with most signals that met the score but were blocked, last 24 h."""
    limit = parse_count(command.args, 10, MAX_ROWS)
    if await _refused(message, command, analytics, limit, "n", MAX_ROWS):
        return
    await answer_text(message, render_top_missed(await analytics.top_missed(limit)))


async def on_filters(message: Message, command: CommandObject, analytics: "AnalyticsService | None" = None) -> None:
    """Every current threshold of each bot, or of the bot named in the argument."""
    if analytics is None:
        await message.answer(UNAVAILABLE)
        return
    words = (command.args or "").split()
    usage = "Usage: /filters [bot]"
    if len(words) > 1:
        await message.answer(**render_usage(usage).as_kwargs())
        return
    try:
        bots = analytics.filters(words[0] if words else None)
    except UnknownBot as error:
        await message.answer(**render_usage(usage, str(error)).as_kwargs())
        return
    await answer_text(message, render_filters(bots))


def build_router() -> Router:
    """Router with the signal analytics commands."""
    router = Router(name="stats")
    router.message.register(on_signal_stats, Command("signalstats"))
    router.message.register(on_fail_stats, Command("failstats"))
    router.message.register(on_blockers, Command("blockers"))
    router.message.register(on_near, Command("near"))
    router.message.register(on_top_missed, Command("topmissed"))
    router.message.register(on_filters, Command("filters"))
    return router
