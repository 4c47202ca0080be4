"""/audit: the newest audit records and the hash-chain verification (SPEC A-1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.render_audit import render_audit
from handlers.common import answer_text

if TYPE_CHECKING:
    from trading.app.service import TradingService


async def on_audit(message: Message, trading: "TradingService") -> None:
    """Verify the chain and show the last records."""
    await answer_text(message, render_audit(await trading.audit_status()))


def build_router() -> Router:
    """Router with /audit."""
    router = Router(name="audit")
    router.message.register(on_audit, Command("audit"))
    return router
