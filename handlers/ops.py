"""/playbook [incident], /log [n] and the playbook step buttons (SPEC T-2 ops, T-6).

Playbook actions run through the same service verbs as the commands; closing a symbol asks for
confirmation; "place stops again" and "reconcile" ask the supervisor for a reconciliation with
the venue (every mode, SPEC O-5, O-9); the "someone else on the account" actions (adopt, ignore,
close, issue 13) run the demo/live venue guard, and in paper mode say that nobody else trades the
simulated exchange.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.render import render_paused, render_usage
from bot.render_ops import render_log, render_playbook, render_playbooks
from handlers.common import answer_text
from handlers.stats import parse_count
from keyboards.pause import packed, symbol_labels
from keyboards.playbook import PlaybookActionCb, PlaybookCb, playbook_keyboard, playbooks_keyboard
from keyboards.positions import ClosePositionCb
from trading.domain.errors import OptiFlowError
from trading.domain.playbooks import PLAYBOOKS, find_playbook

if TYPE_CHECKING:
    from bot.logbuffer import RingBufferHandler
    from trading.app.service import TradingService

LOG_DEFAULT, LOG_MAX = 20, 100
# Someone else on the account (issue 13) is a real venue's incident: nobody else trades the simulated
# exchange, so paper has nothing to adopt, ignore or close.
FOREIGN_ACTIONS = ("ADOPT_FOREIGN", "IGNORE_FOREIGN", "CLOSE_FOREIGN")
NO_FOREIGN_IN_PAPER = "Nobody else trades the simulated exchange in paper mode: there is nothing to adopt, ignore or close."


async def on_playbook(message: Message, command: CommandObject) -> None:
    """``/playbook`` lists the incidents; ``/playbook KEY`` shows its steps with buttons."""
    if not command.args:
        await message.answer(**render_playbooks().as_kwargs(), reply_markup=playbooks_keyboard())
        return
    playbook = find_playbook(command.args)
    if playbook is None:
        problem = f"Unknown incident: {command.args.strip()[:32]} (one of: {', '.join(PLAYBOOKS)})"
        await message.answer(**render_usage("Usage: /playbook [incident]", problem).as_kwargs())
        return
    await message.answer(**render_playbook(playbook).as_kwargs(), reply_markup=playbook_keyboard(playbook))


async def on_playbook_button(query: CallbackQuery, callback_data: PlaybookCb, callback_answer: CallbackAnswer) -> None:
    """A tap on an incident in the list: show its playbook."""
    playbook = PLAYBOOKS.get(callback_data.incident)
    if playbook is None or not isinstance(query.message, Message):
        callback_answer.text = "Unknown playbook"
        return
    await query.message.answer(**render_playbook(playbook).as_kwargs(), reply_markup=playbook_keyboard(playbook))


async def on_playbook_action(
    query: CallbackQuery, callback_data: PlaybookActionCb, trading: "TradingService", callback_answer: CallbackAnswer
) -> None:
    """Run a playbook step's safe action (SPEC T-6)."""
    message = query.message if isinstance(query.message, Message) else None
    action = callback_data.action
    if action == "PAUSE_ALL":
        symbols = await trading.pause_all(True)
        callback_answer.text = "Paused all symbols"
        if message is not None:
            await message.answer(**render_paused(symbols, True).as_kwargs())
    elif action == "CLOSE_SYMBOL":
        held = list(dict.fromkeys(p.symbol for p in await trading.open_positions()))
        if not held:
            callback_answer.text = "No open positions"
            return
        callback_answer.text = "Pick the symbol to close"
        if message is not None:
            labels = symbol_labels(tuple(held))
            builder = InlineKeyboardBuilder()
            for symbol in held:
                builder.button(text=f"❌ Close {labels[symbol]}", callback_data=packed(ClosePositionCb(symbol=symbol)))
            builder.adjust(2)
            await message.answer(text="Which symbol? (a confirm follows)", reply_markup=builder.as_markup())
    elif action in trading.exchange_actions:  # every venue: place stops again, reconcile now (O-5, O-6)
        callback_answer.text = "Running…"
        try:
            result = await trading.exchange_actions[action]()
        except OptiFlowError as exc:  # the exchange refused or is down: say why, keep the bot up
            result = f"{action.replace('_', ' ').capitalize()} failed: {exc}"
        if message is not None:
            await message.answer(text=result, parse_mode=None)
    elif action in FOREIGN_ACTIONS and trading.mode == "paper":
        callback_answer.text = "Not in paper mode"
        if message is not None:
            await message.answer(text=NO_FOREIGN_IN_PAPER, parse_mode=None)
    else:
        callback_answer.text = "Not available in this version"


async def on_log(message: Message, command: CommandObject, log_buffer: "RingBufferHandler | None" = None) -> None:
    """``/log [n]``: the last n (1..100, default 20) lines of the bot's log, secrets redacted."""
    n = parse_count(command.args, LOG_DEFAULT, LOG_MAX)
    if n is None:
        await message.answer(**render_usage(f"Usage: /log [n] (n = 1..{LOG_MAX})").as_kwargs())
        return
    if log_buffer is None:
        await message.answer(text="The log buffer is not enabled in this run.", parse_mode=None)
        return
    for page in render_log(log_buffer.tail(n), n):
        await answer_text(message, page)


def build_router() -> Router:
    """Router with /playbook, /log and the playbook buttons."""
    router = Router(name="ops")
    router.message.register(on_playbook, Command("playbook"))
    router.message.register(on_log, Command("log"))
    router.callback_query.register(on_playbook_button, PlaybookCb.filter())
    router.callback_query.register(on_playbook_action, PlaybookActionCb.filter())
    return router
