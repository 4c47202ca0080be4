"""SPEC L-1 build card, L-2 shutdown (request_shutdown from chat, flatten, crash message) and the
issue-5 settings, through the real aiogram HTTP session against the loopback fake Bot API."""

from __future__ import annotations

import argparse
import os
import signal
import asyncio
import sqlite3

import pytest
from aiogram.utils.formatting import Text

from bot.app import build_dispatcher
from bot.cli import _run_telegram, main, make_telegram_bot
from bot.lifecycle import SHUTDOWN_TEXT, Lifecycle, Timeouts
from bot.notifier import Notifier
from bot.runtime import build_paper_runtime
from bot.settings import Settings, load_settings
from tests.fake_telegram import fake  # noqa: F401 - the fixture
from tests.test_notifier import FakeTime
from trading.domain.config import TradingConfig
from trading.domain.errors import ConfigError
from trading.domain.models import ExitReason

USER = 4242
TOKEN = "123456:TEST-TOKEN"
DAY0 = 1_748_908_800_000
HOUR = 3_600_000


async def until(predicate, timeout: float = 60) -> None:
    """Wait until ``predicate()`` is true (polling the fake's record), or fail."""
    async def loop():
        while not predicate():
            await asyncio.sleep(0.05)
    await asyncio.wait_for(loop(), timeout)


async def test_l1_l2_card_then_request_shutdown_from_chat_sends_summary_and_shutdown_last(fake, tmp_path, data_dir):
    """The path /shutdown takes: the build card goes out first; a paced replay crossing
    midnight sends that day's report and chart (T-5 wiring); ``request_shutdown`` from the
    Dispatcher's workflow data stops polling, posts the run summary and then "🛑 Bot shutting
    down…" with the reason; _run_telegram returns 0 and the outbox is empty."""
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=tmp_path / "l.db", data_dir=data_dir,
                                       end_ms=DAY0 + 30 * HOUR)
    settings = Settings(telegram_bot_token=TOKEN, telegram_api_base=fake.base, telegram_allowed_user_ids=(USER,))
    dp = build_dispatcher(runtime.service, settings, settings.allowed_user_ids())
    args = argparse.Namespace(speed=1e9)  # paced (so reports follow the simulated clock), but fast
    stop = asyncio.Event()
    try:
        run = asyncio.create_task(_run_telegram(runtime, dp, settings, args, stop))
        await until(lambda: any(t.startswith("<b>🚀 OptiFlow") for t in fake.texts_to(USER)))
        await until(lambda: "setmycommands" in [m for m, _ in fake.calls])
        await until(lambda: [p["photo"]["filename"] for p in fake.calls_of("sendPhoto")] == ["daily-2025-06-03.png"])
        await dp["request_shutdown"](f"/shutdown by {USER}")
        assert await asyncio.wait_for(run, 60) == 0
        assert await runtime.store.outbox.pending() == []
    finally:
        await runtime.close()
    texts = fake.texts_to(USER)
    card = texts[0]
    for fragment in ("Mode:</b> PAPER", "Exchange:</b> simulated Binance", "Tier:</b>", "Limits:</b> daily loss 2.00%"):
        assert fragment in card
    assert texts[-1].split("\n")[0] == f"{SHUTDOWN_TEXT} (/shutdown by {USER})"
    assert texts[-2].startswith("<b>Run summary</b>") and "Balance" in texts[-2]
    assert "deletewebhook" in [m for m, _ in fake.calls]
    assert any(t.startswith("<b>Daily report 2025-06-03 (UTC)</b>") for t in texts)


async def test_l2_a_crash_in_the_trading_loop_is_reported_in_chat_and_exits_1(fake, tmp_path, data_dir, monkeypatch):
    """An exception inside the replay (here injected into the engine after some candles) stops
    the bot: the chat gets the error type without secrets, then the summary and the shutdown
    message; _run_telegram returns 1."""
    from trading.engine.core import Engine

    runtime = await build_paper_runtime(config=TradingConfig(), db_path=tmp_path / "c.db", data_dir=data_dir,
                                       end_ms=DAY0 + 12 * HOUR)
    original = Engine.step
    calls = 0

    def failing(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 3:  # the replay steps only candles where something can happen
            raise ZeroDivisionError(f"injected fault near {TOKEN}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "step", failing)
    settings = Settings(telegram_bot_token=TOKEN, telegram_api_base=fake.base, telegram_allowed_user_ids=(USER,))
    dp = build_dispatcher(runtime.service, settings, settings.allowed_user_ids())
    try:
        code = await asyncio.wait_for(_run_telegram(runtime, dp, settings, argparse.Namespace(speed=None),
                                                    asyncio.Event()), 60)
    finally:
        await runtime.close()
    assert code == 1
    texts = fake.texts_to(USER)
    crash = next(t for t in texts if "stopped on an error" in t)
    assert "ZeroDivisionError" in crash and TOKEN not in "\n".join(texts)
    assert texts[-1].split("\n")[0] == SHUTDOWN_TEXT and texts.index(crash) < len(texts) - 1


async def test_l2_flatten_closes_positions_and_a_crash_is_reported_without_secrets(fake, tmp_path, data_dir):
    """flatten_on_shutdown closes the open position at market (MANUAL) and cancels its brackets;
    a crash sends the error type and a redacted line (no token), then the summary and the
    shutdown message."""
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=tmp_path / "f.db", data_dir=data_dir,
                                       end_ms=DAY0 + 57 * HOUR)
    bot = make_telegram_bot(Settings(telegram_bot_token=TOKEN, telegram_api_base=fake.base))
    clock = FakeTime()
    notifier = Notifier(bot, runtime.store.outbox, [USER], clock=clock.clock, sleep=clock.sleep)
    lifecycle = Lifecycle(runtime, notifier, flatten=True, secrets=[TOKEN], timeouts=Timeouts(notifier=30))
    try:
        await runtime.replay()
        open_before = list(runtime.engine.positions.values())
        assert open_before and runtime.engine.open_orders, "the window must end with an open position"
        await notifier.start()
        lifecycle.crash = RuntimeError(f"POST https://api.telegram.org/bot{TOKEN}/getMe failed")
        assert await lifecycle.shutdown(None, asyncio.Event())
        assert runtime.engine.positions == {} and runtime.engine.open_orders == {}
        closed = {p.position_id: p for p in await runtime.store.positions.list_closed()}
        assert all(closed[p.position_id].exit_reason is ExitReason.MANUAL for p in open_before)
    finally:
        await bot.session.close()
        await runtime.close()
    texts = fake.texts_to(USER)
    crash = next(t for t in texts if "stopped on an error" in t)
    assert "RuntimeError" in crash and "***" in crash and TOKEN not in "\n".join(texts)
    assert texts.index(crash) < len(texts) - 2 and texts[-1].split("\n")[0] == SHUTDOWN_TEXT


@pytest.mark.parametrize(("variable", "value"), [
    ("OPTIFLOW_NOTIFICATIONS", "stop_loss=off"),
    ("OPTIFLOW_NOTIFICATIONS", "entries=silent"),
    ("OPTIFLOW_REPORT_TZ", "Mars/Olympus"),
    ("TELEGRAM_API_BASE", "127.0.0.1:8081"),
    ("TELEGRAM_PROXY", "ftp://user:hunter2@proxy:21"),
    ("OPTIFLOW_FLATTEN_ON_SHUTDOWN", "maybe"),
    ("TELEGRAM_NOTIFY_CHAT_IDS", "-100x"),
])
def test_invalid_settings_exit_non_zero_naming_the_variable(monkeypatch, tmp_path, capsys, variable, value):
    """Each issue-5 setting rejects a bad value: ``optiflow run`` exits 2 with one line naming
    the variable (never a proxy password)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    assert main(["run", "--db", str(tmp_path / "x.db")]) == 2
    err = capsys.readouterr().err
    assert variable in err and "Traceback" not in err and "hunter2" not in err


def test_settings_categories_chats_zone_and_proxy(monkeypatch):
    """Several allowed users and a notification group all get notifications; categories parse
    to on/silent/off; the report zone loads; a proxy needs aiogram's proxy extra."""
    monkeypatch.setenv("TELEGRAM_ALLOWED_USER_IDS", "11, 22")
    monkeypatch.setenv("TELEGRAM_NOTIFY_CHAT_IDS", "-1001234")
    monkeypatch.setenv("OPTIFLOW_NOTIFICATIONS", "entry=silent, digest=off, stop_loss=silent")
    monkeypatch.setenv("OPTIFLOW_REPORT_TZ", "Europe/Berlin")
    settings = load_settings()
    assert settings.notify_chat_ids() == (11, 22, -1001234)
    assert settings.optiflow_notifications == {"entry": "silent", "digest": "off", "stop_loss": "silent"}
    assert str(settings.report_zone()) == "Europe/Berlin"
    proxied = Settings(telegram_bot_token=TOKEN, telegram_proxy="socks5://u:p@127.0.0.1:1080")
    try:
        import aiohttp_socks  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="TELEGRAM_PROXY"):
            make_telegram_bot(proxied)
    else:
        assert make_telegram_bot(proxied).session.proxy is not None


def test_outbox_table_exists_in_a_fresh_database(tmp_path):
    """The outbox is part of the schema (migration step appended)."""
    async def create():
        from storage import Storage

        store = await Storage.open(tmp_path / "o.db")
        await store.close()
    asyncio.run(create())
    tables = {r[0] for r in sqlite3.connect(tmp_path / "o.db").execute("SELECT name FROM sqlite_master")}
    assert "notification_outbox" in tables


async def test_l2_sigterm_takes_the_same_shutdown_path_and_interval_hooks_alert_with_a_button(
        fake, tmp_path, data_dir):
    """SIGTERM (a service manager stopping the bot) posts the summary and "🛑 Bot shutting
    down… (SIGTERM)" last and returns 0, like Ctrl+C. An interval hook registered by the
    composition root (the monitor's place, M-1) runs and its alert arrives with its button."""
    from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

    from bot.notices import Category

    def setup_jobs(jobs, notifier):
        async def monitor():
            if not alerts:
                alerts.append(1)
                button = InlineKeyboardButton(text="📖 Playbook", callback_data="pb|NO_STOP")
                await notifier.notify(Category.ALERT, Text("⚠️ Position without stop: BTC"),
                                      reply_markup=InlineKeyboardMarkup(inline_keyboard=[[button]]))
        jobs.add_interval("monitor", 0.05, monitor)

    alerts: list[int] = []
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=tmp_path / "t.db", data_dir=data_dir,
                                       end_ms=DAY0 + 6 * HOUR)
    settings = Settings(telegram_bot_token=TOKEN, telegram_api_base=fake.base, telegram_allowed_user_ids=(USER,))
    dp = build_dispatcher(runtime.service, settings, settings.allowed_user_ids())
    try:
        run = asyncio.create_task(_run_telegram(runtime, dp, settings, argparse.Namespace(speed=None), asyncio.Event(),
                                                setup_jobs=setup_jobs))
        await until(lambda: "setmycommands" in [m for m, _ in fake.calls])
        await until(lambda: "⚠️ Position without stop: BTC" in fake.texts_to(USER))
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(run, 60) == 0
    finally:
        await runtime.close()
    texts = fake.texts_to(USER)
    assert texts[-1].split("\n")[0] == f"{SHUTDOWN_TEXT} (SIGTERM)" and texts[-2].startswith("<b>Run summary</b>")
    alert = next(p for p in fake.calls_of("sendMessage") if p["text"] == "⚠️ Position without stop: BTC")
    assert "pb|NO_STOP" in alert["reply_markup"] and alerts == [1]
