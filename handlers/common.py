"""/start, /help and the error router: domain errors become their text, anything else a short
"Internal error" — never a traceback in chat."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiogram import Bot, F, Router
from aiogram.dispatcher.middlewares.user_context import UserContextMiddleware
from aiogram.filters import Command, CommandStart
from aiogram.types import CallbackQuery, ErrorEvent, Message
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.formatting import Text

from bot.render import render_help, render_start, split_text
from trading.domain.errors import OptiFlowError

if TYPE_CHECKING:
    from trading.app.service import TradingService

log = logging.getLogger(__name__)

INTERNAL_ERROR = "Internal error, see logs"


async def answer_text(message: Message, text: Text) -> None:
    """Send ``text`` to the message's chat, split past Telegram's 4096-unit limit (SPEC T-4)."""
    for part in split_text(text):
        await message.answer(**part.as_kwargs())


async def on_start(message: Message, trading: "TradingService") -> None:
    """Greet and show the trading mode."""
    await message.answer(**render_start(trading.mode).as_kwargs())


async def on_help(message: Message) -> None:
    """List the commands by category (SPEC T-2)."""
    await message.answer(**render_help().as_kwargs())


async def on_error(event: ErrorEvent, bot: Bot) -> bool:
    """Tell the user what went wrong in one line; log unexpected errors with their traceback."""
    error = event.exception
    if isinstance(error, OptiFlowError):
        log.info("update %s: %s: %s", event.update.update_id, type(error).__name__, error)
        text = str(error) or type(error).__name__
    else:
        log.error("update %s failed", event.update.update_id, exc_info=error)
        text = INTERNAL_ERROR
    chat = UserContextMiddleware.resolve_event_context(event.update).chat
    if chat is None:
        return True
    try:
        await bot.send_message(chat_id=chat.id, text=text, parse_mode=None)
    except Exception:  # the error path must never raise again: log and swallow
        log.exception("could not report an error to chat %s", chat.id)
    return True


async def on_unknown_callback(query: CallbackQuery, callback_answer: CallbackAnswer) -> None:
    """Any tap no other handler took (stale, unknown or forged data): answer it anyway (through
    the answer middleware), so the trader's button never spins (SPEC T-3), and run nothing."""
    callback_answer.text = "This button is not valid any more."


async def on_unknown_command(message: Message) -> None:
    """A /command no handler took: one line pointing to /help (never silence, never a trace)."""
    word = (message.text or "").split()[0][:33]
    await message.answer(text=f"{word} is not available in this run. /help lists the commands.", parse_mode=None)


async def on_plain_text(message: Message) -> None:
    """Any other message (plain text such as "hello" or "summary", a 5,000-character paste, a
    sticker): one line pointing to /help, naming the command when the first word is one (SPEC
    T-2) — never silence. Nothing of the text is echoed beyond that word."""
    from bot.render import COMMANDS

    word = (message.text or "").strip().split(maxsplit=1)[0].lstrip("/").lower()[:32] if message.text else ""
    known = {command for _, items in COMMANDS for command, _ in items}
    if word in known:
        text = f"Commands start with a slash: /{word}. /help lists them all."
    else:
        text = "I answer commands only, e.g. /summary or /open. /help lists them all."
    await message.answer(text=text, parse_mode=None)


def build_fallback_router() -> Router:
    """Router to include LAST: answers callback queries, /commands and any other message
    nobody else handled."""
    router = Router(name="fallback")
    router.callback_query.register(on_unknown_callback)
    router.message.register(on_unknown_command, F.text.startswith("/"))
    router.message.register(on_plain_text)
    return router


def build_router() -> Router:
    """Router with /start, /help and the error handler."""
    router = Router(name="common")
    router.message.register(on_start, CommandStart())
    router.message.register(on_help, Command("help"))
    router.errors.register(on_error)
    return router
