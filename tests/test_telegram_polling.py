"""Telegram transport (issue 2 §7, SPEC T-1): the real aiogram HTTP session and long polling
against a loopback fake of the Bot API — once in-process, once through ``optiflow run``."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from bot.app import build_dispatcher
from bot.cli import make_telegram_bot
from bot.runtime import build_paper_runtime
from bot.settings import Settings
from tests.fake_telegram import fake  # noqa: F401 - the fixture
from trading.domain.config import TradingConfig

ALLOWED, STRANGER = 4242, 666
DAY0 = 1_748_908_800_000


async def test_long_polling_answers_allowed_user_only(fake, tmp_path, data_dir):
    """T-1 over real HTTP: the allowed user gets /summary; the stranger gets nothing."""
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=tmp_path / "t.db", data_dir=data_dir,
                                       end_ms=DAY0 + 12 * 3_600_000)
    try:
        await runtime.replay()
        settings = Settings(telegram_bot_token="123456:TEST-TOKEN", telegram_api_base=fake.base,
                            telegram_allowed_user_ids=(ALLOWED,))
        dp = build_dispatcher(runtime.service, settings, settings.allowed_user_ids())
        bot = make_telegram_bot(settings)
        fake.queue_text(STRANGER, "/summary")
        fake.queue_text(ALLOWED, "/summary")
        polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=1))
        await asyncio.wait_for(fake.sent.wait(), timeout=30)
        await asyncio.sleep(0.3)  # let a wrongly addressed second reply show up, if any
        await dp.stop_polling()
        await polling
    finally:
        await runtime.close()
    (text,) = fake.texts_to(ALLOWED)
    assert "Balance:" in text and "Equity:" in text
    assert fake.texts_to(STRANGER) == []


async def test_optiflow_run_over_telegram_and_sigint_shuts_down_cleanly(fake, tmp_path):
    """`optiflow run` with a token: sends the build card (L-1, also in the log), sets the
    command menu, answers over long polling, notifies trades (T-4), and on SIGINT stops,
    persists, posts the run summary and "🛑 Bot shutting down…" LAST, and exits 0 (SPEC L-2)."""
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": "123456:TEST-TOKEN", "TELEGRAM_API_BASE": fake.base,
           "TELEGRAM_ALLOWED_USER_IDS": str(ALLOWED), "OPTIFLOW_DB_PATH": str(tmp_path / "run.db"),
           "OPTIFLOW_LOG_LEVEL": "INFO"}
    fake.queue_text(ALLOWED, "/open")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", "--speed", "max", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )

    def answered_open() -> bool:
        return any(t.startswith("Open positions") or t.startswith("No open positions") for t in fake.texts_to(ALLOWED))

    try:
        async def wait_open():
            while not answered_open():
                await asyncio.sleep(0.1)
        await asyncio.wait_for(wait_open(), timeout=90)
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
    log = stderr.decode()
    assert process.returncode == 0, log[-2000:]
    assert "Traceback" not in log
    assert "TEST-TOKEN" not in log  # secrets never reach the logs
    assert "build card: 🚀 OptiFlow" in log and "build card: Mode: PAPER" in log
    methods = [m for m, _ in fake.calls]
    assert "setmycommands" in methods and "deletewebhook" in methods
    texts = fake.texts_to(ALLOWED)
    assert texts[0].startswith("<b>🚀 OptiFlow")
    assert texts[-1].split("\n")[0] == "🛑 Bot shutting down… (SIGINT)", log[-3000:]
    assert texts[-2].startswith("<b>Run summary</b>")
    assert Path(tmp_path / "run.db").stat().st_size > 0
    with sqlite3.connect(tmp_path / "run.db") as db:
        # The build card, summary and shutdown message were accepted (deleted from the outbox).
        assert db.execute("SELECT COUNT(*) FROM notification_outbox WHERE category = 'lifecycle'").fetchone()[0] == 0
