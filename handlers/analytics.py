"""/daily: the day's report as text, then its chart as a photo (SPEC T-5); /dailycsv: that
day's trades as a CSV document (SPEC T-2)."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import BufferedInputFile, Message

from bot.exports import trades_csv
from bot.render import render_report, render_usage
from handlers.common import answer_text

if TYPE_CHECKING:
    from trading.app.service import TradingService

DAILY_USAGE = "Usage: /daily [YYYY-MM-DD]"
DAILYCSV_USAGE = "Usage: /dailycsv [YYYY-MM-DD]"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_day(text: str) -> date | None:
    """``YYYY-MM-DD`` → date; anything else (other formats, impossible dates) → None."""
    if not _DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


async def _day_report(message: Message, command: CommandObject, trading: "TradingService", usage: str):
    """The report of the UTC day in ``command``'s argument (default: the engine's current
    day) and that day as YYYY-MM-DD; None after answering ``usage`` for a bad date."""
    day = None
    if command.args:
        day = parse_day(command.args.strip())
        if day is None:
            problem = f"Bad date: {command.args.strip()[:32]}"
            await message.answer(**render_usage(usage, problem).as_kwargs())
            return None
    report = await trading.daily_report(day)
    return report, datetime.fromtimestamp(report.start_ms / 1000, tz=timezone.utc).date().isoformat()


async def on_daily(message: Message, command: CommandObject, trading: "TradingService") -> None:
    """Report of the given UTC day (default: the engine's current day), then its chart."""
    found = await _day_report(message, command, trading, DAILY_USAGE)
    if found is None:
        return
    report, name = found
    await answer_text(message, render_report(report, trading.quote))
    png = await trading.report_chart(report)
    await message.answer_photo(BufferedInputFile(png, filename=f"daily-{name}.png"), caption=report.title)


async def on_dailycsv(message: Message, command: CommandObject, trading: "TradingService") -> None:
    """The closed trades of the given UTC day (default: the engine's current day) as a CSV
    document, one row per trade at full precision (SPEC T-2, T-5)."""
    found = await _day_report(message, command, trading, DAILYCSV_USAGE)
    if found is None:
        return
    report, name = found
    await message.answer_document(
        BufferedInputFile(trades_csv(report.trades), filename=f"trades-{name}.csv"),
        caption=f"{len(report.trades)} trades closed on {name} (UTC)",
    )


def build_router() -> Router:
    """Router with /daily and /dailycsv."""
    router = Router(name="analytics")
    router.message.register(on_daily, Command("daily"))
    router.message.register(on_dailycsv, Command("dailycsv"))
    return router
