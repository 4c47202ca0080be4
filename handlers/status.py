"""/summary, /open [bot] and /risk [bot] (SPEC T-2 status, B-1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.render import render_positions, render_risk, render_summary, render_usage
from handlers.common import answer_text

if TYPE_CHECKING:
    from trading.service import TradingService


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
    positions = await trading.open_positions()
    if bot is not None:
        positions = [p for p in positions if p.bot == bot]
    await answer_text(message, render_positions(positions, trading.quote, bot))


async def on_risk(message: Message, command: CommandObject, trading: "TradingService") -> None:
    """``/risk [bot]``: trading state, drawdown stage, daily loss vs limit, per-bot streaks and
    per-symbol blacklist counters (SPEC T-2, R-1..R-7)."""
    ok, bot = await _bot_argument(message, command, trading)
    if not ok:
        return
    await answer_text(message, render_risk(await trading.risk_report(bot), trading.quote))


def build_router() -> Router:
    """Router with /summary, /open and /risk."""
    router = Router(name="status")
    router.message.register(on_summary, Command("summary"))
    router.message.register(on_open, Command("open"))
    router.message.register(on_risk, Command("risk"))
    return router
