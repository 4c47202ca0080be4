"""/signalstats, /failstats, /blockers, /near, /topmissed, /filters (SPEC S-13, T-2 analytics).

Thin: parse the one optional argument → one ``AnalyticsService`` call → render → answer.
``analytics`` is injected by name (``build_dispatcher(..., analytics=svc)``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from dataclasses import replace

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.render import render_usage, split_text
from bot.render_stats import (
    render_blockers,
    render_fail_stats,
    render_filters,
    render_near,
    render_signal_stats,
    render_top_missed,
)
from handlers.common import answer_text
from keyboards.pager import PageCb, add_pager_row, page_of
from trading.app.analytics import UnknownBot

if TYPE_CHECKING:
    from trading.app.analytics import AnalyticsService

MAX_HOURS = 24 * 365  # a year of replayed or live history is the longest window worth grouping
MAX_ROWS = 50  # /near and /topmissed: more lines than this is a report, not a chat answer
_WHOLE = re.compile(r"[0-9]{1,9}")  # ASCII only: str.isdigit() also accepts "²", which int() refuses
UNAVAILABLE = "Signal analytics are not available in this run."
LIST_PAGE = 10  # /near and /topmissed lines per page (SPEC T-3 paging)


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
    text, markup = await _list_page(analytics, "near", limit, 0)
    await _answer_paged(message, text, markup)


async def on_top_missed(message: Message, command: CommandObject, analytics: "AnalyticsService | None" = None) -> None:
    """The N symbols (default 10) with most signals that met the score but were blocked, last 24 h."""
    limit = parse_count(command.args, 10, MAX_ROWS)
    if await _refused(message, command, analytics, limit, "n", MAX_ROWS):
        return
    text, markup = await _list_page(analytics, "top", limit, 0)
    await _answer_paged(message, text, markup)


async def _list_page(analytics: "AnalyticsService", name: str, limit: int, page: int):
    """One page (10 lines) of /near or /topmissed and its pager keyboard (None: one page)."""
    if name == "near":
        report = await analytics.near(limit)
        shown, page, pages = page_of(report.signals, page, LIST_PAGE)
        text = render_near(replace(report, signals=tuple(shown)))
    else:
        report = await analytics.top_missed(limit)
        shown, page, pages = page_of(report.symbols, page, LIST_PAGE)
        text = render_top_missed(replace(report, symbols=tuple(shown)), first_rank=page * LIST_PAGE + 1)
    builder = InlineKeyboardBuilder()
    add_pager_row(builder, name, page, pages, str(limit))
    markup = builder.as_markup()
    return text, markup if markup.inline_keyboard else None


async def _answer_paged(message: Message, text, markup: InlineKeyboardMarkup | None) -> None:
    parts = split_text(text)
    for i, part in enumerate(parts):
        await message.answer(**part.as_kwargs(), reply_markup=markup if i == len(parts) - 1 else None)


async def on_list_page(
    query: CallbackQuery, callback_data: PageCb, callback_answer: CallbackAnswer,
    analytics: "AnalyticsService | None" = None,
) -> None:
    """A pager tap under /near or /topmissed: redraw that message with the asked page."""
    limit = parse_count(callback_data.arg, 10, MAX_ROWS)
    if analytics is None or limit is None or not isinstance(query.message, Message):
        callback_answer.text = "This list cannot be paged any more."
        return
    text, markup = await _list_page(analytics, callback_data.name, limit, callback_data.page)
    try:
        await query.message.edit_text(**split_text(text)[0].as_kwargs(), reply_markup=markup)
    except TelegramBadRequest as error:
        if "not modified" not in error.message:
            raise


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
    router.callback_query.register(on_list_page, PageCb.filter(F.name.in_({"near", "top"})))
    return router
