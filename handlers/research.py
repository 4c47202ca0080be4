"""/chart SYMBOL [hours] and /optimize NAME|status (SPEC D-2): parse → one service call → render.

``/optimize NAME`` asks to confirm, then starts the study in the background (one at a time);
``/optimize`` or ``/optimize status`` tells its progress; at the end the report plot arrives as a
photo with the out-of-sample summary and an "Apply to paper" button.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import BufferedInputFile, CallbackQuery, Message
from aiogram.utils.callback_answer import CallbackAnswer

from bot.render import render_usage
from keyboards.research import OptimizeCb, apply_keyboard, start_keyboard
from trading.domain.errors import ConfigError, DataError, UnknownSymbol

if TYPE_CHECKING:
    from bot.optimize_jobs import OptimizeJobs, StudyOutcome
    from trading.app.research import ResearchService

CHART_USAGE = "Usage: /chart SYMBOL [hours] (e.g. /chart BTC 12; hours 1–168, default 24)"
OPTIMIZE_USAGE = "Usage: /optimize NAME (a study file) or /optimize status"
CAPTION_LIMIT = 1024


async def on_chart(message: Message, command: CommandObject, research: "ResearchService | None") -> None:
    """Candlesticks of SYMBOL over the last hours with the bot's entries, exits, stop and targets."""
    if research is None:
        await message.answer(text="Charts are available in paper mode.", parse_mode=None)
        return
    words = (command.args or "").split()
    if not 1 <= len(words) <= 2 or (len(words) == 2 and not words[1].isdigit()):
        await message.answer(**render_usage(CHART_USAGE).as_kwargs())
        return
    try:
        symbol = research.resolve(words[0])
        chart = await research.chart(symbol, int(words[1]) if len(words) == 2 else 24)
    except (UnknownSymbol, DataError) as error:
        await message.answer(**render_usage(CHART_USAGE, str(error)).as_kwargs())
        return
    await message.answer_photo(BufferedInputFile(chart.png, filename=f"chart-{symbol.split('/')[0]}.png"),
                               caption=chart.caption[:CAPTION_LIMIT], parse_mode=None)


async def on_optimize(message: Message, command: CommandObject, optimizer: "OptimizeJobs | None") -> None:
    """``/optimize NAME`` → confirm dialog; ``/optimize`` / ``/optimize status`` → progress."""
    if optimizer is None:
        await message.answer(text="Studies can be started from chat in paper mode.", parse_mode=None)
        return
    arg = (command.args or "").strip()
    if not arg or arg == "status":
        await message.answer(text=optimizer.status(), parse_mode=None)
        return
    try:
        path = optimizer.resolve(arg)
        name = optimizer.study_name(path)
    except ConfigError as error:
        await message.answer(**render_usage(OPTIMIZE_USAGE, str(error)).as_kwargs())
        return
    if optimizer.running:
        await message.answer(text=f"Study {optimizer.current} is still running (one at a time). {optimizer.status()}",
                             parse_mode=None)
        return
    await message.answer(text=f"Start study {name} ({path.name})? It runs in the background; "
                              "ask /optimize status for progress.",
                         parse_mode=None, reply_markup=start_keyboard(path.stem))


def _reporter(bot: Bot, chat_id: int):
    async def on_done(outcome: "StudyOutcome") -> None:
        if not outcome.ok:
            await bot.send_message(chat_id, f"❌ Study {outcome.name} failed: {outcome.summary}", parse_mode=None)
            return
        await bot.send_photo(chat_id, BufferedInputFile(outcome.png, filename=f"study-{outcome.name}.png"),
                             caption=f"✅ {outcome.summary}"[:CAPTION_LIMIT], parse_mode=None,
                             reply_markup=apply_keyboard(outcome.name))
    return on_done


async def on_optimize_button(query: CallbackQuery, callback_data: OptimizeCb, callback_answer: CallbackAnswer,
                             optimizer: "OptimizeJobs | None", bot: Bot) -> None:
    """Start / cancel a confirmed study, or apply a finished study's best config to paper."""
    if optimizer is None:
        callback_answer.text = "Not available in this mode."
        return
    chat_id = query.message.chat.id if query.message else query.from_user.id
    if callback_data.action == "cancel":
        callback_answer.text = "Cancelled."
        await bot.send_message(chat_id, "Study not started.", parse_mode=None)
        return
    try:
        if callback_data.action == "start":
            name = await optimizer.start(optimizer.resolve(callback_data.name), _reporter(bot, chat_id))
            callback_answer.text = "Started."
            await bot.send_message(chat_id, f"🔬 Study {name} started. /optimize status for progress.",
                                   parse_mode=None)
        elif callback_data.action == "apply":
            path = optimizer.apply_to_paper(callback_data.name)
            callback_answer.text = "Applied."
            await bot.send_message(chat_id, f"✅ Best config of {callback_data.name} saved as the paper config "
                                            f"{path}; the next paper start uses it.", parse_mode=None)
    except ConfigError as error:
        callback_answer.text = "Refused."
        await bot.send_message(chat_id, str(error), parse_mode=None)


def build_router() -> Router:
    """A fresh research router."""
    router = Router(name="research")
    router.message.register(on_chart, Command("chart"))
    router.message.register(on_optimize, Command("optimize"))
    router.callback_query.register(on_optimize_button, OptimizeCb.filter())
    return router
