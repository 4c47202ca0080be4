"""/summary and /open (SPEC T-2, status)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.render import render_positions, render_summary
from handlers.common import answer_text

if TYPE_CHECKING:
    from trading.service import TradingService


async def on_summary(message: Message, trading: "TradingService") -> None:
    """Balance, equity, risk state and open positions."""
    await answer_text(message, render_summary(await trading.summary()))


async def on_open(message: Message, trading: "TradingService") -> None:
    """Open positions with entry, contracts, PnL, SL and TP1/TP2."""
    await answer_text(message, render_positions(await trading.open_positions(), trading.quote))


def build_router() -> Router:
    """Router with /summary and /open."""
    router = Router(name="status")
    router.message.register(on_summary, Command("summary"))
    router.message.register(on_open, Command("open"))
    return router
