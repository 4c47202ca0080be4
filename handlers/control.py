"""/pause and /resume per symbol, per bot or all, with per-symbol toggles (SPEC T-2 control, T-3,
R-7, B-1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message
from aiogram.utils.callback_answer import CallbackAnswer

from bot.render import render_bot_paused, render_pause_menu, render_paused, render_usage
from handlers.dangerous import LIFT_RISK_STOP, ask_confirmation
from keyboards.pause import PauseAllCb, PauseBotCb, PauseSymbolCb, pause_keyboard, symbol_labels
from trading.domain.errors import UnknownSymbol

if TYPE_CHECKING:
    from trading.app.service import TradingService


async def _set_many(trading: "TradingService", symbols: tuple[str, ...], pause: bool) -> None:
    for symbol in symbols:
        await trading.set_paused(symbol, pause)


async def on_pause_command(message: Message, command: CommandObject, trading: "TradingService",
                           role: str = "owner") -> None:
    """``/pause`` → toggles; ``/pause SYMBOL`` / ``/pause BOT`` / ``/pause all`` (and /resume
    alike) → apply (SPEC R-7 "per symbol, per bot, or everything").

    A word that names both a symbol and a bot (a bot called "BTC") means the symbol: symbols are
    matched first, bot names (case-insensitive) only when no symbol matches; "all" always means
    everything.
    """
    pause = command.command.lower() == "pause"
    usage = f"Usage: /{command.command.lower()} [SYMBOL|bot|all]"
    args = (command.args or "").split()
    if not args:
        markup = pause_keyboard(trading.symbols(), await trading.paused_symbols(), await trading.bot_pause_states())
        await message.answer(**render_pause_menu().as_kwargs(), reply_markup=markup)
        if not pause:
            await _offer_lift(message, trading, message.from_user.id, role)
        return
    if len(args) > 1:
        await message.answer(**render_usage(usage).as_kwargs())
        return
    if args[0].lower() == "all":
        symbols = trading.symbols()
    else:
        try:
            symbols = (trading.resolve_symbol(args[0]),)
        except UnknownSymbol:
            bot = trading.resolve_bot(args[0])
            if bot is None:
                problem = f"Unknown symbol or bot: {args[0][:32]} (bots: {', '.join(trading.bot_names())})"
                await message.answer(**render_usage(usage, problem).as_kwargs())
                return
            await trading.set_bot_paused(bot, pause)
            await message.answer(**render_bot_paused(bot, pause).as_kwargs())
            if not pause:
                await _offer_lift(message, trading, message.from_user.id, role)
            return
    await _set_many(trading, symbols, pause)
    await message.answer(**render_paused(symbols, pause).as_kwargs())
    if not pause:
        await _offer_lift(message, trading, message.from_user.id, role)


async def _offer_lift(message: Message, trading: "TradingService", user_id: int, role: str = "owner") -> None:
    """After a resume: if a risk rule stopped a bot for the day, or the R-5 drawdown pause holds
    the account, entries stay blocked until an owner lifts that stop through a confirm dialog
    (SPEC T-1 "resume after a risk stop"; a trader is told only an owner can; R-5 "a confirmed
    /resume"). The R-3 hard limit is named but not offered: it holds to the next UTC day."""
    halted = trading.halted_bots()
    liftable = trading.liftable_stops()
    held = {b: r for b, r in halted.items() if b not in liftable}
    if held:
        await message.answer(
            text="Halted until 00:00 UTC (R-3 hard daily loss limit, cannot be lifted): "
                 + ", ".join(f"{b} ({r})" for b, r in held.items()), parse_mode=None
        )
    if liftable:
        stopped = "Still stopped by a risk rule: " + ", ".join(f"{b} ({r})" for b, r in liftable.items())
        if role != "owner":
            await message.answer(text=stopped + " — only an owner can lift it.", parse_mode=None)
            return
        await message.answer(text=stopped, parse_mode=None)
        await ask_confirmation(message, trading, user_id, LIFT_RISK_STOP, ", ".join(liftable))


async def _refresh(query: CallbackQuery, trading: "TradingService") -> None:
    if not isinstance(query.message, Message):
        return  # too old to edit (InaccessibleMessage): the state change itself is done
    markup = pause_keyboard(trading.symbols(), await trading.paused_symbols(), await trading.bot_pause_states())
    try:
        await query.message.edit_reply_markup(reply_markup=markup)
    except TelegramBadRequest as error:
        # A stale keyboard tapped twice yields the same markup; Telegram refuses a no-op edit.
        if "not modified" not in error.message:
            raise


async def on_pause_symbol(
    query: CallbackQuery, callback_data: PauseSymbolCb, trading: "TradingService", callback_answer: CallbackAnswer
) -> None:
    """Toggle one symbol, then redraw the keyboard."""
    await trading.set_paused(callback_data.symbol, callback_data.pause)
    label = symbol_labels(trading.symbols()).get(callback_data.symbol, callback_data.symbol)
    callback_answer.text = f"{'Paused' if callback_data.pause else 'Resumed'} {label}"
    await _refresh(query, trading)


async def on_pause_all(
    query: CallbackQuery, callback_data: PauseAllCb, trading: "TradingService", callback_answer: CallbackAnswer,
    role: str = "owner",
) -> None:
    """Pause or resume every symbol, then redraw the keyboard."""
    await _set_many(trading, trading.symbols(), callback_data.pause)
    callback_answer.text = "Paused all symbols" if callback_data.pause else "Resumed all symbols"
    await _refresh(query, trading)
    if not callback_data.pause and isinstance(query.message, Message):
        await _offer_lift(query.message, trading, query.from_user.id, role)


async def on_pause_bot(
    query: CallbackQuery, callback_data: PauseBotCb, trading: "TradingService", callback_answer: CallbackAnswer
) -> None:
    """Toggle every symbol of one bot (SPEC R-7 per bot), then redraw the keyboard."""
    if trading.resolve_bot(callback_data.bot) != callback_data.bot:
        callback_answer.text = "Unknown bot"
        return
    await trading.set_bot_paused(callback_data.bot, callback_data.pause)
    callback_answer.text = f"{'Paused' if callback_data.pause else 'Resumed'} bot {callback_data.bot}"
    await _refresh(query, trading)


def build_router() -> Router:
    """Router with /pause, /resume and their keyboard callbacks."""
    router = Router(name="control")
    router.message.register(on_pause_command, Command("pause", "resume"))
    router.callback_query.register(on_pause_symbol, PauseSymbolCb.filter())
    router.callback_query.register(on_pause_all, PauseAllCb.filter())
    router.callback_query.register(on_pause_bot, PauseBotCb.filter())
    return router
