"""/close SYMBOL, /closeall, /shutdown and lifting a risk stop: every dangerous action asks for
an inline confirm that expires after 60 s (SPEC T-1, T-2 control, T-3).

The confirmation lives in SQLite; the button carries only its id. Taps on expired, used,
foreign or unknown confirmations get an answer saying so and run nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.formatting import Text

from bot.middlewares import OWNER_ACTIONS
from bot.render import render_usage
from bot.render_ops import render_closes, render_confirm
from handlers.common import answer_text
from keyboards.confirm import ConfirmCb, confirm_keyboard, shutdown_keyboard
from keyboards.positions import ClosePositionCb
from trading.domain.errors import UnknownSymbol

if TYPE_CHECKING:
    from trading.app.service import TradingService

log = logging.getLogger(__name__)

RequestShutdown = Callable[..., Awaitable[None] | None]  # (reason, flatten=None)

# action code → (question, confirm button label); the argument is formatted into the question.
CLOSE, CLOSE_ALL, SHUTDOWN, LIFT_RISK_STOP = "CLOSE", "CLOSE_ALL", "SHUTDOWN", "LIFT_RISK_STOP"
FLATTEN, KEEP = "flatten", "keep"  # the two /shutdown choices (SPEC L-2), stored as the argument
QUESTIONS = {
    CLOSE: ("Close {arg} at market?", "Close"),
    CLOSE_ALL: ("Close ALL open positions at market?", "Close all"),
    SHUTDOWN: ("Shut the bot down? Close every position at market first, or stop and keep the positions "
               "with their stop-losses on the exchange.", "Shut down"),
    LIFT_RISK_STOP: ("Lift the risk stop of bot(s) {arg} and allow entries again today?", "Lift risk stop"),
}
REFUSALS = {
    "expired": "This confirmation expired — ask again.",
    "used": "Already done.",
    "unknown": "This button is not valid any more.",
}
SHUTTING_DOWN = "🛑 Bot shutting down…"


async def ask_confirmation(message: Message, trading: "TradingService", user_id: int, action: str, arg: str = "") -> None:
    """Store the action and send its confirm dialog to the message's chat."""
    confirmation_id = await trading.request_confirmation(user_id, action, arg)
    question, label = QUESTIONS[action]
    await message.answer(
        **render_confirm(question.format(arg=arg)).as_kwargs(), reply_markup=confirm_keyboard(confirmation_id, label)
    )


async def on_close(message: Message, command: CommandObject, trading: "TradingService") -> None:
    """``/close SYMBOL`` → confirm dialog (SPEC T-2, T-1)."""
    usage = "Usage: /close SYMBOL (e.g. /close BTC)"
    words = (command.args or "").split()
    if len(words) != 1:
        await message.answer(**render_usage(usage).as_kwargs())
        return
    try:
        symbol = trading.resolve_symbol(words[0])
    except UnknownSymbol as error:
        await message.answer(**render_usage(usage, str(error)).as_kwargs())
        return
    if not any(p.symbol == symbol for p in await trading.open_positions()):
        await message.answer(text=f"No open position on {symbol}.", parse_mode=None)
        return
    await ask_confirmation(message, trading, message.from_user.id, CLOSE, symbol)


async def on_close_all(message: Message, command: CommandObject, trading: "TradingService") -> None:
    """``/closeall`` → confirm dialog (SPEC T-2, T-1)."""
    if command.args:
        await message.answer(**render_usage("Usage: /closeall (no argument)").as_kwargs())
        return
    if not await trading.open_positions():
        await message.answer(text="No open positions.", parse_mode=None)
        return
    await ask_confirmation(message, trading, message.from_user.id, CLOSE_ALL)


async def on_shutdown(message: Message, command: CommandObject, trading: "TradingService") -> None:
    """``/shutdown`` → confirm dialog with both choices (SPEC T-2, T-1, L-2): "close all and
    stop" and "stop, keep positions with their stops" (each its own stored confirmation)."""
    if command.args:
        await message.answer(**render_usage("Usage: /shutdown (no argument)").as_kwargs())
        return
    user_id = message.from_user.id
    flatten_id = await trading.request_confirmation(user_id, SHUTDOWN, FLATTEN)
    keep_id = await trading.request_confirmation(user_id, SHUTDOWN, KEEP)
    await message.answer(**render_confirm(QUESTIONS[SHUTDOWN][0]).as_kwargs(),
                         reply_markup=shutdown_keyboard(flatten_id, keep_id))


async def on_close_button(
    query: CallbackQuery, callback_data: ClosePositionCb, trading: "TradingService", callback_answer: CallbackAnswer
) -> None:
    """The ❌ Close button under /open → confirm dialog for that symbol, only while a position
    is still open on it (SPEC T-3: a stale button says so instead of asking)."""
    if callback_data.symbol not in trading.symbols() or not isinstance(query.message, Message):
        callback_answer.text = REFUSALS["unknown"]
        return
    if not any(p.symbol == callback_data.symbol for p in await trading.open_positions()):
        callback_answer.text = f"No open position on {callback_data.symbol} any more."
        callback_answer.show_alert = True
        return
    await ask_confirmation(query.message, trading, query.from_user.id, CLOSE, callback_data.symbol)
    callback_answer.text = "Confirm the close"


async def _drop_keyboard(query: CallbackQuery, note: str) -> None:
    """Replace the dialog's text with ``note`` and remove its buttons (no second tap)."""
    if not isinstance(query.message, Message):
        return
    try:
        await query.message.edit_text(text=note, parse_mode=None, reply_markup=None)
    except TelegramBadRequest as error:
        if "not modified" not in error.message:
            raise


async def on_confirm(
    query: CallbackQuery,
    callback_data: ConfirmCb,
    trading: "TradingService",
    callback_answer: CallbackAnswer,
    request_shutdown: RequestShutdown | None = None,
    role: str = "owner",
) -> None:
    """Run (or cancel) a stored confirmation if it is this user's, unexpired and unused; a
    shutdown or a lifted risk stop only for an owner (SPEC T-1 roles)."""
    user_id = query.from_user.id
    if not callback_data.ok:
        if not await trading.cancel_confirmation(callback_data.id, user_id):
            callback_answer.text = REFUSALS["unknown"]
            return
        callback_answer.text = "Cancelled"
        await _drop_keyboard(query, "Cancelled.")
        return
    taken = await trading.take_confirmation(callback_data.id, user_id)
    if isinstance(taken, str):
        callback_answer.text = REFUSALS[taken]
        callback_answer.show_alert = taken == "expired"
        if taken == "expired":
            await _drop_keyboard(query, REFUSALS["expired"])
        return
    action, arg = taken
    if action in OWNER_ACTIONS and role != "owner":  # defence in depth: such a dialog is never offered
        callback_answer.text = f"⛔ {action.lower().replace('_', ' ')} needs the owner role; you are a {role}."
        callback_answer.show_alert = True
        await trading.record_command("refused", why={"user_id": user_id, "role": role, "asked": action,
                                                     "needs": "owner"})
        return
    log.warning("T-1: user id=%s confirmed %s %s", user_id, action, arg)
    if action == SHUTDOWN:
        if request_shutdown is None:
            callback_answer.text = "Shutdown is not available in this run."
            return
        callback_answer.text = "Shutting down"
        reason = f"/shutdown confirmed by user id={user_id}"
        if arg in (FLATTEN, KEEP):
            choice = "closing every position first" if arg == FLATTEN else "positions kept with their stops"
            await _drop_keyboard(query, f"Shutdown confirmed: {choice}.")
            result = request_shutdown(f"{reason} ({arg})", flatten=arg == FLATTEN)
        else:
            await _drop_keyboard(query, "Shutdown confirmed.")
            result = request_shutdown(reason)
        if result is not None:
            await result
        return
    if action == CLOSE:
        text: Text = render_closes(await trading.close_position(arg), f" on {arg}")
    elif action == CLOSE_ALL:
        text = render_closes(await trading.close_all(), "")
    elif action == LIFT_RISK_STOP:
        lifted = await trading.clear_risk_stops(arg.split(", "))  # only the bots the trader saw
        text = Text("Risk stop lifted: " + (", ".join(f"{b} ({r})" for b, r in lifted.items()) or "none was active") + ".")
    else:  # a row written by a newer version: refuse rather than guess
        callback_answer.text = REFUSALS["unknown"]
        return
    callback_answer.text = "Done"
    await _drop_keyboard(query, "Confirmed.")
    if isinstance(query.message, Message):
        await answer_text(query.message, text)


def build_router() -> Router:
    """Router with /close, /closeall, /shutdown, the close buttons and the confirm dialog."""
    router = Router(name="dangerous")
    router.message.register(on_close, Command("close"))
    router.message.register(on_close_all, Command("closeall"))
    router.message.register(on_shutdown, Command("shutdown"))
    router.callback_query.register(on_close_button, ClosePositionCb.filter())
    router.callback_query.register(on_confirm, ConfirmCb.filter())
    return router
