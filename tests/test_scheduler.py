"""SPEC T-5 scheduled daily report (APScheduler 3) and interval hooks (M-1, O-5): in replay
the report fires at SIMULATED day boundaries, through the notifier, over the real aiogram HTTP
session against the loopback fake Bot API."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.notifier import Notifier
from bot.runtime import build_paper_runtime
from bot.scheduler import DailyReport, Jobs, ReplayDayBoundary, day_bounds
from tests.fake_telegram import fake  # noqa: F401 - the fixture
from tests.test_notifier import FakeTime
from trading.domain.config import TradingConfig

CHAT = 4242
DAY0 = 1_748_908_800_000  # 2025-06-03 00:00 UTC, the first bundled candle
DAY_MS = 86_400_000


async def test_t5_replay_sends_each_days_report_and_chart_at_simulated_midnight(fake, tmp_path, data_dir):
    """Three simulated days replayed in well under a wall-clock second: three reports, each
    with that day's closed trades (already persisted when the boundary passed), each followed
    by its PNG chart as a photo."""
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=tmp_path / "d.db", data_dir=data_dir,
                                       end_ms=DAY0 + 3 * DAY_MS - 1)
    bot = Bot("123456:TEST-TOKEN", session=AiohttpSession(api=TelegramAPIServer.from_base(fake.base)))
    clock = FakeTime()
    notifier = Notifier(bot, runtime.store.outbox, [CHAT], clock=clock.clock, sleep=clock.sleep, merge_after=10_000)
    report = DailyReport(runtime.service, notifier)
    hook = ReplayDayBoundary(report, runtime.clock.now_ms())
    try:
        await notifier.start()
        await runtime.replay(clock_hook=hook)
        assert await notifier.drain(timeout=60)
        per_day = [len(await runtime.store.positions.list_closed(since_ms=DAY0 + k * DAY_MS,
                                                                 until_ms=DAY0 + (k + 1) * DAY_MS))
                   for k in range(3)]
    finally:
        await notifier.close(timeout=1)
        await bot.session.close()
        await runtime.close()
    days = [date(2025, 6, 3), date(2025, 6, 4), date(2025, 6, 5)]
    assert report.sent_days == days
    reports = [t for t in fake.texts_to(CHAT) if t.startswith("<b>Daily report")]
    assert [r.split("\n")[0] for r in reports] == [f"<b>Daily report {d} (UTC)</b>" for d in days]
    assert sum(per_day) > 0, "the window must hold trades for this test to mean anything"
    for text, trades in zip(reports, per_day):
        assert f"<b>Trades:</b> {trades} (" in text
    photos = fake.calls_of("sendPhoto")
    assert [p["photo"]["filename"] for p in photos] == [f"daily-{d}.png" for d in days]
    assert all(p["photo"]["data"].startswith(b"\x89PNG\r\n\x1a\n") for p in photos)


def test_t5_report_day_in_a_configured_time_zone():
    """A day in Europe/Berlin (summer) runs 22:00 → 22:00 UTC; in UTC, midnight to midnight."""
    start, end = day_bounds(date(2025, 6, 3), ZoneInfo("Europe/Berlin"))
    assert start == DAY0 - 2 * 3_600_000 and end - start == DAY_MS
    assert day_bounds(date(2025, 6, 3), timezone.utc) == (DAY0, DAY0 + DAY_MS)
    # The day of the DST change is 23 hours long.
    start, end = day_bounds(date(2025, 3, 30), ZoneInfo("Europe/Berlin"))
    assert end - start == 23 * 3_600_000


async def test_t5_wall_clock_job_at_midnight_in_zone_and_interval_hooks_keep_running():
    """The cron job's next run is the next 00:00 in the configured zone; an interval hook
    (monitor, reconcile) runs repeatedly even when one run raises."""
    jobs = Jobs()
    tz = ZoneInfo("America/New_York")
    jobs.add_daily_report(DailyReport(trading=None, notifier=None, tz=tz))  # type: ignore[arg-type]
    runs = 0
    twice = asyncio.Event()

    async def monitor() -> None:
        nonlocal runs
        runs += 1
        if runs >= 2:
            twice.set()
        raise RuntimeError("a failing run must not unschedule the hook")

    jobs.add_interval("monitor", 0.05, monitor)
    jobs.start()
    try:
        daily = jobs.scheduler.get_job("daily_report")
        next_run = daily.next_run_time.astimezone(tz)
        assert (next_run.hour, next_run.minute) == (0, 0)
        assert next_run > datetime.now(tz)
        await asyncio.wait_for(twice.wait(), timeout=10)
    finally:
        jobs.shutdown()
