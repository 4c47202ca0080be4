"""Issue 5 acceptance over HTTP (SPEC T-1..T-3, T-5, T-6, L-2): the real aiogram HTTP session
against the loopback fake Telegram Bot API.

(a) `optiflow run` (paper replay) as a subprocess: an allowed user goes /summary → /open →
pauses a symbol by button → /daily (a PNG photo arrives) → /playbook → /shutdown, confirmed;
the process sends "🛑 Bot shutting down…" and exits 0.
(b) 200 updates from strangers, in-process with ``dp.feed_update`` on the real stack: no reply,
no state change (database compared before and after).
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path

from aiogram.types import CallbackQuery, Chat, Message, Update, User

from bot.app import build_dispatcher
from bot.console import make_console_bot
from bot.settings import Settings
from bot.shutdown import SHUTDOWN_TEXT
from tests import stack
from tests.fake_telegram import FakeTelegram
from tests.test_risk_chat import OPEN_END, two_bots

ALLOWED, STRANGER = 4242, 666
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _count(fake: FakeTelegram, method: str) -> int:
    return sum(1 for m, _ in fake.calls if m == method)


async def test_acceptance_allowed_user_session_ends_with_confirmed_shutdown_T2_T3_L2(tmp_path):
    """Issue 5 acceptance (a), end to end over HTTP through `optiflow run`."""
    fake = FakeTelegram()
    await fake.start()
    db = tmp_path / "run.db"
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": "123456:TEST-TOKEN", "TELEGRAM_API_BASE": fake.base,
           "TELEGRAM_ALLOWED_USER_IDS": str(ALLOWED), "OPTIFLOW_DB_PATH": str(db)}
    out, err = (tmp_path / "stdout.txt").open("wb"), (tmp_path / "stderr.txt").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", "--speed", "max", "--symbols", "BTC,ETH", env=env, cwd=tmp_path,
        stdout=out, stderr=err,
    )
    texts = lambda: fake.texts_to(ALLOWED)  # noqa: E731 - a short local accessor
    try:
        fake.queue_text(ALLOWED, "/summary")
        await fake.wait_until(lambda: any("Balance:" in t for t in texts()), timeout=90)
        fake.queue_text(ALLOWED, "/open")
        await fake.wait_until(lambda: any("open positions" in t.lower() for t in texts()))
        fake.queue_text(ALLOWED, "/pause")
        answered = _count(fake, "answercallbackquery")
        await fake.tap(ALLOWED, "⏸ BTC")
        await fake.wait_until(lambda: _count(fake, "answercallbackquery") > answered)
        fake.queue_text(ALLOWED, "/daily")
        await fake.wait_until(lambda: any(m == "sendphoto" for m, _, _ in fake.files))
        fake.queue_text(ALLOWED, "/playbook")
        await fake.wait_until(lambda: any(t.startswith("Incident playbooks") for t in texts()))
        fake.queue_text(ALLOWED, "/shutdown")
        await fake.wait_until(lambda: fake.messages_with_button(ALLOWED, "✅ Close all and stop"))
        assert fake.messages_with_button(ALLOWED, "✅ Stop, keep positions with their stops")  # L-2: both choices
        assert SHUTDOWN_TEXT not in texts()  # nothing happens before the confirm
        await fake.tap(ALLOWED, "✅ Close all and stop")
        returncode = await asyncio.wait_for(process.wait(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        out.close()
        err.close()
        await fake.stop()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr and "TEST-TOKEN" not in stderr
    assert texts()[-1].split("\n")[0] == f"{SHUTDOWN_TEXT} (/shutdown confirmed by user id={ALLOWED} (flatten))"
    assert texts()[-2].startswith("<b>Run summary</b>")  # L-2: the summary, then the shutdown message
    assert texts()[0].startswith("<b>🚀 OptiFlow") and "Audit head" in texts()[0]  # L-1 build card first
    [(_, field, photo)] = [f for f in fake.files if f[0] == "sendphoto"]
    [photo_params] = [p for m, p in fake.calls if m == "sendphoto"]
    assert photo_params[field]["filename"].endswith(".png") and str(photo_params["chat_id"]) == str(ALLOWED)
    assert photo.startswith(PNG_MAGIC) and len(photo) > 1000
    with sqlite3.connect(db) as conn:  # the button's pause was persisted (SPEC R-7)
        paused = {row[0] for row in conn.execute("SELECT symbol FROM paused_symbols")}
    assert paused == {"BTC/USDT:USDT"}
    with sqlite3.connect(db) as conn:  # L-2 "close all and stop": nothing left open
        assert conn.execute("SELECT COUNT(*) FROM positions WHERE closed_ms IS NULL").fetchone()[0] == 0
    assert "setmycommands" in [m for m, _ in fake.calls]


def _db_state(path: Path) -> dict[str, list]:
    """Every row of every table (the state a stranger must not change)."""
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: sorted(map(repr, conn.execute(f"SELECT * FROM {t}"))) for t in tables}


async def test_acceptance_200_stranger_updates_get_no_reply_and_change_nothing_T1(tmp_path, data_dir):
    """Issue 5 acceptance (b): 200 messages and button taps from strangers — commands, real
    button data of the allowed user's keyboards, forged data — get no reply and change nothing."""
    runtime = await stack.replayed(tmp_path / "paper.db", data_dir, OPEN_END, two_bots())
    await runtime.persister.flush()
    dp = build_dispatcher(runtime.service, Settings(), frozenset({ALLOWED}))
    bot = make_console_bot(tmp_path / "out", out=io.StringIO())
    try:
        # Real buttons a stranger might have seen (or guessed): confirmations of the allowed user.
        confirm_id = await runtime.service.request_confirmation(ALLOWED, "CLOSE_ALL")
        shutdown_id = await runtime.service.request_confirmation(ALLOWED, "SHUTDOWN")
        await runtime.persister.flush()
        before = _db_state(tmp_path / "paper.db")
        paused_before = {k: set(v) for k, v in runtime.engine.paused.items()}
        orders_before = dict(runtime.engine.open_orders)
        commands = ["/summary", "/open", "/close BTC", "/closeall", "/shutdown", "/pause all", "/resume all",
                    "/log 50", "/playbook no_stop", "/daily", "/risk", "/start", "hello"]
        data = [f"cf|{confirm_id}|1", f"cf|{shutdown_id}|1", "pa|1", "ps|BTC/USDT:USDT|1", "pt|A|1",
                "cp|BTC/USDT:USDT", "px|PAUSE_ALL|", "pg|open|1|", "pb|no_stop", "cf|abc|1", "zz", "x" * 64]
        rng = random.Random(5)
        for i in range(200):
            user = User(id=STRANGER + i % 7, is_bot=False, first_name="Stranger")
            chat = Chat(id=user.id, type="private")
            if i % 2 == 0:
                text = rng.choice(commands)
                message = Message(message_id=i + 1, date=datetime.now(timezone.utc), chat=chat, from_user=user,
                                  text=text)
                update = Update(update_id=i + 1, message=message)
            else:
                host = Message(message_id=i, date=datetime.now(timezone.utc), chat=chat, text="menu")
                query = CallbackQuery(id=str(i), from_user=user, chat_instance="x", message=host,
                                      data=rng.choice(data))
                update = Update(update_id=i + 1, callback_query=query)
            await dp.feed_update(bot, update)
        await runtime.persister.flush()
        assert bot.session.requests == []  # not a message, not an edit, not a callback answer
        assert _db_state(tmp_path / "paper.db") == before
        assert {k: set(v) for k, v in runtime.engine.paused.items()} == paused_before
        assert runtime.engine.open_orders == orders_before
        # The same Dispatcher does answer the allowed user (the silence above is the allow-list).
        owner = User(id=ALLOWED, is_bot=False, first_name="Owner")
        hello = Message(message_id=999, date=datetime.now(timezone.utc), chat=Chat(id=ALLOWED, type="private"),
                        from_user=owner, text="/summary")
        await dp.feed_update(bot, Update(update_id=999, message=hello))
        assert len(bot.session.requests) == 1
    finally:
        await bot.session.close()
        await runtime.close()
