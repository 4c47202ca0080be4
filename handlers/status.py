"""/summary, /open [bot], /status, /risk [bot], /runtime (SPEC T-2 status, B-1), with close
buttons and the shared pager under /open (T-3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, Message
from aiogram.utils.callback_answer import CallbackAnswer

from bot.render import render_positions, render_risk, render_summary, render_usage, split_text
from bot.render_ops import render_runtime, render_status
from handlers.common import answer_text
from keyboards.pager import PageCb, page_of
from keyboards.positions import positions_keyboard

if TYPE_CHECKING:
    from trading.app.service import TradingService


async def _bot_argument(message: Message, command: CommandObject, trading: "TradingService") -> tuple[bool, str | None]:
    """Parse the optional ``[bot]`` argument: (True, bot or None) when usable; otherwise answer
    the problem and the usage line (naming the configured bots) and return (False, None)."""
    usage = f"Usage: /{command.command.lower()} [bot]"
    words = (command.args or "").split()
    if not words:
        return True, None
    if len(words) > 1:
        await message.answer(**render_usage(usage).as_kwargs())
        return False, None
    bot = trading.resolve_bot(words[0])
    if bot is None:
        problem = f"Unknown bot: {words[0][:32]} (bots: {', '.join(trading.bot_names())})"
        await message.answer(**render_usage(usage, problem).as_kwargs())
        return False, None
    return True, bot


async def on_summary(message: Message, trading: "TradingService") -> None:
    """Balance, equity, risk state and open positions."""
    await answer_text(message, render_summary(await trading.summary()))


async def on_open(message: Message, command: CommandObject, trading: "TradingService") -> None:
    """``/open``: open positions with entry, contracts, PnL, SL and TP1/TP2; ``/open BOT``: only
    that bot's (SPEC B-1)."""
    ok, bot = await _bot_argument(message, command, trading)
    if not ok:
        return
    await _send_open_page(message, trading, bot, 0)


async def _open_page(trading: "TradingService", bot: str | None, page: int):
    positions = await trading.open_positions()
    if bot is not None:
        positions = [p for p in positions if p.bot == bot]
    shown, page, pages = page_of(positions, page)
    text = render_positions(shown, trading.quote, bot)
    return text, positions_keyboard(shown, page, pages, bot or "")


async def _send_open_page(message: Message, trading: "TradingService", bot: str | None, page: int) -> None:
    """One page of /open (5 positions) with a close button per position and the pager."""
    text, markup = await _open_page(trading, bot, page)
    parts = split_text(text)
    for i, part in enumerate(parts):
        await message.answer(**part.as_kwargs(), reply_markup=markup if i == len(parts) - 1 else None)


async def on_page(
    query: CallbackQuery, callback_data: PageCb, trading: "TradingService", callback_answer: CallbackAnswer
) -> None:
    """A pager tap: redraw the list's message with the asked page (SPEC T-3)."""
    if not isinstance(query.message, Message):
        callback_answer.text = "This list cannot be paged any more."
        return
    bot = trading.resolve_bot(callback_data.arg) if callback_data.arg else None
    text, markup = await _open_page(trading, bot, callback_data.page)
    first = split_text(text)[0]
    try:
        await query.message.edit_text(**first.as_kwargs(), reply_markup=markup)
    except TelegramBadRequest as error:
        if "not modified" not in error.message:
            raise


async def on_status(message: Message, trading: "TradingService") -> None:
    """Trading state, halted bots, paused symbols, feed state (SPEC T-2)."""
    summary = await trading.summary()
    await answer_text(message, render_status(summary, trading.halted_bots(), trading.feed_state))


async def on_runtime(message: Message, trading: "TradingService") -> None:
    """Uptime, mode, feed state, loop timings (SPEC T-2)."""
    await answer_text(message, render_runtime(trading.runtime_info()))


async def on_risk(message: Message, command: CommandObject, trading: "TradingService") -> None:
    """``/risk [bot]``: trading state, drawdown stage, daily loss vs limit, per-bot streaks and
    per-symbol blacklist counters (SPEC T-2, R-1..R-7)."""
    ok, bot = await _bot_argument(message, command, trading)
    if not ok:
        return
    await answer_text(message, render_risk(await trading.risk_report(bot), trading.quote))


def build_router() -> Router:
    """Router with /summary, /open, /risk, /status, /runtime and the /open pager."""
    router = Router(name="status")
    router.message.register(on_summary, Command("summary"))
    router.message.register(on_open, Command("open"))
    router.message.register(on_risk, Command("risk"))
    router.message.register(on_status, Command("status"))
    router.message.register(on_runtime, Command("runtime"))
    router.callback_query.register(on_page, PageCb.filter(F.name == "open"))
    return router
