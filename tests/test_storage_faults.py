"""SPEC M-1 storage faults: a failed database write (disk full, read-only file, a file locked by
another program) halts entries at once, alerts the trader over a path that does not need the
database, and ends the process with one line and a non-zero exit; after the fault clears, a
restart resumes with nothing lost (state equal to an uninterrupted run's).

Real SQLite files, the real aiogram HTTP session against the loopback fake Bot API; the faults
are SQLite's own: ``PRAGMA max_page_count`` (the file cannot grow: SQLITE_FULL), ``PRAGMA
query_only`` (SQLITE_READONLY) on the bot's connection, and a second program holding the write
lock past ``busy_timeout`` (SQLITE_BUSY) against a real ``optiflow run`` process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from bot.app import build_dispatcher
from bot.cli import _run_telegram
from bot.lifecycle import HALTED_FEED_STATE
from bot.runtime import build_paper_runtime
from bot.settings import Settings
from storage import StorageFault
from tests import crash_drill, stack
from tests.fake_telegram import FakeTelegram, fake  # noqa: F401 - the fixture
from trading.domain.config import BotProfile, TradingConfig

USER = 4242
TOKEN = "123456:TEST-TOKEN"
DAY0 = 1_748_908_800_000
DAY = 86_400_000
END = DAY0 + 4 * DAY
HALT = "Trading halted: database write failed"
PROJECT = str(Path(__file__).resolve().parent.parent)  # subprocesses run this tree's code


def config() -> TradingConfig:
    return TradingConfig(bots=(BotProfile(symbols=crash_drill.SYMBOLS, timeframe="5m", max_positions=4),))


async def until(predicate, timeout: float = 60) -> None:
    async def loop():
        while not predicate():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(loop(), timeout)


async def _uninterrupted(db, data_dir) -> dict:
    runtime = await build_paper_runtime(config=config(), db_path=db, data_dir=data_dir, end_ms=END)
    await runtime.replay(durable=True)
    await runtime.close()
    return crash_drill.state(db)


async def _fault_mid_run(fake, tmp_path, data_dir, pragma: str, reason: str):
    """Run the bot over Telegram on a paced replay, inject ``pragma`` into its own connection
    once the build card is out, and return (runtime, exit code, clock at the fault, clock at
    the end)."""
    runtime = await build_paper_runtime(config=config(), db_path=tmp_path / "fault.db", data_dir=data_dir, end_ms=END)
    settings = Settings(telegram_bot_token=TOKEN, telegram_api_base=fake.base, telegram_allowed_user_ids=(USER,))
    dp = build_dispatcher(runtime.service, settings, settings.allowed_user_ids())
    at_fault: list[int] = []
    runtime.store.db.on_fault(lambda fault: at_fault.append(runtime.clock.now_ms()))
    run = asyncio.create_task(_run_telegram(runtime, dp, settings, argparse.Namespace(speed=20_000.0), asyncio.Event()))
    await until(lambda: any(t.startswith("<b>🚀 OptiFlow") for t in fake.texts_to(USER)))
    before = await runtime.store.db.fetchone("PRAGMA page_count")
    async with runtime.store.db._conn.execute(pragma.format(pages=before[0])):
        pass
    code = await asyncio.wait_for(run, 90)
    assert at_fault, "no write failed"
    assert reason in str(runtime.store.db.fault)
    return runtime, code, at_fault[0]


async def test_m1_disk_full_halts_entries_alerts_without_the_database_and_a_restart_loses_nothing(
        fake, tmp_path, data_dir):
    """M-1, disk full (the file may not grow by one page): the replay stops at the failed write
    (the clock does not move past that candle), the halt alert reaches Telegram although the
    outbox cannot be written, the run ends with exit 1; the file keeps the last good write and
    verifies; a restart on it resumes to the end with balance, positions, orders, fills, risk
    state, signals, equity and audit equal to an uninterrupted run's."""
    reference = await _uninterrupted(tmp_path / "reference.db", data_dir)
    runtime, code, fault_ms = await _fault_mid_run(fake, tmp_path, data_dir, "PRAGMA max_page_count = {pages}",
                                                   "database or disk is full")
    try:
        assert code == 1
        assert runtime.clock.now_ms() - fault_ms <= 5 * 60_000  # halted at once: no candle after the one that failed
        assert fault_ms < END - DAY  # (the fault came mid-run, not at the end)
        texts = fake.texts_to(USER)
        alert = next(t for t in texts if HALT in t)
        assert "database or disk is full" in alert and "No new entries" in alert
        assert runtime.service.feed_state == HALTED_FEED_STATE
        with pytest.raises(StorageFault):  # fail closed: nothing written after the fault
            await runtime.store.outbox.add(USER, "alert", "x", False, 0, "")
    finally:
        try:
            await runtime.close()
        except StorageFault:
            pass
    db = tmp_path / "fault.db"
    with sqlite3.connect(db) as conn:  # the alert never needed the database
        assert conn.execute("SELECT COUNT(*) FROM notification_outbox WHERE body LIKE ?", (f"%{HALT}%",)).fetchone()[0] == 0
    conn.close()
    assert crash_drill.state(db) != reference  # the run really stopped early
    assert (await crash_drill._verify(db)).ok
    restarted = await build_paper_runtime(config=config(), db_path=db, data_dir=data_dir, end_ms=END)
    await restarted.replay(durable=True)
    await restarted.close()
    assert crash_drill.state(db) == reference


async def test_m1_read_only_file_halts_and_status_says_so(fake, tmp_path, data_dir):
    """M-1, read-only database: the same halt, the alert names SQLite's reason, and /status
    shows HALTED instead of "ACTIVE · replaying" (it still reads the file)."""
    runtime, code, _ = await _fault_mid_run(fake, tmp_path, data_dir, "PRAGMA query_only = 1",
                                            "attempt to write a readonly database")
    try:
        assert code == 1
        assert any(HALT in t and "readonly" in t for t in fake.texts_to(USER))
        [status] = await stack.ask(runtime, tmp_path, "/status")
        assert "HALTED (database write failed" in status and HALTED_FEED_STATE in status
        assert "ACTIVE" not in status
    finally:
        try:
            await runtime.close()
        except StorageFault:
            pass


async def test_m1_a_locked_file_stops_the_process_with_one_line_and_exit_1(tmp_path):
    """M-1 end to end: ``optiflow run`` over Telegram as a process; another program takes the
    database's write lock and holds it past busy_timeout (5 s). The bot sends the halt alert,
    exits 1, and its stderr ends with one ``optiflow: stopped: …`` line naming the file and
    the reason — no traceback. After the lock is released the file verifies and a restart
    answers."""
    telegram = FakeTelegram()
    await telegram.start()
    db = tmp_path / "locked.db"
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE": telegram.base,
           "TELEGRAM_ALLOWED_USER_IDS": str(USER), "PYTHONPATH": PROJECT}
    stderr = (tmp_path / "stderr.txt").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", "--db", str(db), "--timeframe", "5m", "--speed", "20000",
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
    )
    other = None
    try:
        await until(lambda: any(t.startswith("<b>🚀 OptiFlow") for t in telegram.texts_to(USER)), 90)
        other = sqlite3.connect(db, timeout=10, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
        await until(lambda: any(HALT in t for t in telegram.texts_to(USER)), 60)
        code = await asyncio.wait_for(process.wait(), 60)
    finally:
        if other is not None:
            other.rollback()
            other.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
        stderr.close()
        await telegram.stop()
    log = (tmp_path / "stderr.txt").read_text()
    assert code == 1, log[-3000:]
    assert "Traceback" not in log
    last = log.strip().splitlines()[-1]
    assert last.startswith(f"optiflow: stopped: database write failed on {db}: database is locked")
    assert [line for line in log.splitlines() if line.startswith("optiflow:")] == [last]
    alert = next(t for t in telegram.texts_to(USER) if HALT in t)
    assert "database is locked" in alert
    assert (await crash_drill._verify(db)).ok
    again = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", "--db", str(db), "--timeframe", "5m", "--speed", "max",
        "--say", "/status", cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")}, "PYTHONPATH": PROJECT},
    )
    out, err = await asyncio.wait_for(again.communicate(), 180)
    assert again.returncode == 0, err.decode()[-2000:]
    assert "Market feed: replay finished" in out.decode() and "HALTED" not in out.decode()
