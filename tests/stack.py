"""The real stack for chat tests: a paper runtime replayed over the bundled candles into a file
database, and a fresh Dispatcher on the console transport to talk to it."""

from __future__ import annotations

import io
from pathlib import Path

from aiogram.methods import SendMessage

from bot.app import build_dispatcher
from bot.console import ConsoleChat, make_console_bot
from bot.runtime import Runtime, build_paper_runtime
from bot.settings import Settings
from trading.domain.config import TradingConfig

USER = 7


async def replayed(db_path: Path, data_dir: Path, end_ms: int, config: TradingConfig | None = None) -> Runtime:
    """A paper runtime over the bundled candles up to ``end_ms`` (epoch ms UTC), replayed into
    the file database ``db_path``."""
    runtime = await build_paper_runtime(
        config=config or TradingConfig(), db_path=db_path, data_dir=data_dir, end_ms=end_ms
    )
    await runtime.replay()
    return runtime


async def ask(runtime: Runtime, tmp_path: Path, *lines: str, user: int = USER) -> list[str]:
    """Type each line into a fresh Dispatcher as ``user``; one reply text per line (the parts of
    a split reply joined)."""
    dp = build_dispatcher(runtime.service, Settings(), frozenset({user}))
    bot = make_console_bot(tmp_path / "out", out=io.StringIO())
    chat = ConsoleChat(dp, bot, user, out=io.StringIO())
    replies = []
    try:
        for line in lines:
            before = len(bot.session.requests)
            await chat.send_text(line)
            new = bot.session.requests[before:]
            replies.append("\n".join(r.text for r in new if isinstance(r, SendMessage)))
    finally:
        await bot.session.close()
    return replies
