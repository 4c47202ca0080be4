"""Scheduled jobs (APScheduler 3 ``AsyncIOScheduler``): the daily report with its chart (SPEC
T-5) and interval hooks for the monitor (M-1) and reconciliation (O-5).

Two clocks drive the daily report:

* wall clock (live/demo): a cron job at 00:00 in ``tz`` (default UTC) reports the day that just
  ended in that zone;
* replay clock (paper): :class:`ReplayDayBoundary` is handed to the replay
  (``Runtime.replay(clock_hook=...)``) and reports each simulated day when the simulated
  clock crosses midnight in ``tz`` — never from wall time.

Both send through the :class:`~bot.notifier.Notifier`: the report text, then the PNG chart as a
photo (category ``report``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from aiogram.utils.formatting import Text

from bot.notices import Category
from bot.render import render_report

if TYPE_CHECKING:
    from bot.notifier import Notifier
    from trading.app.service import TradingService

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


def day_bounds(day: date, tz: tzinfo) -> tuple[int, int]:
    """[start, end) of ``day`` in ``tz`` as epoch ms UTC (23 or 25 hours on DST change days)."""
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def day_of(ms: int, tz: tzinfo) -> date:
    """The calendar day in ``tz`` of the instant ``ms`` (epoch ms UTC)."""
    return datetime.fromtimestamp(ms / 1000, tz=tz).date()


class DailyReport:
    """Builds and sends one day's report + chart (SPEC T-5).

    Args:
        trading: the trading service (``period_report``, ``report_chart``, ``quote``).
        notifier: where the report goes.
        tz: the zone whose midnight ends a day (settings ``OPTIFLOW_REPORT_TZ``).
    """

    def __init__(self, trading: "TradingService", notifier: "Notifier", tz: tzinfo = timezone.utc,
                 audit_head: "Callable[[], Awaitable[tuple[int, str]]] | None" = None) -> None:
        self.trading = trading
        self.notifier = notifier
        self.tz = tz
        self.audit_head = audit_head  # SPEC A-1: the report carries the head as an anchor
        self.sent_days: list[date] = []

    async def send(self, day: date) -> None:
        """Queue the report text and its chart for ``day`` (in ``tz``)."""
        start, end = day_bounds(day, self.tz)
        zone = "UTC" if self.tz in (timezone.utc,) or str(self.tz) == "UTC" else str(self.tz)
        report = await self.trading.period_report(f"Daily report {day.isoformat()} ({zone})", start, end)
        text = render_report(report, self.trading.quote)
        if self.audit_head is not None:
            from bot.render_audit import render_anchor

            text = Text(text, "\n", render_anchor(*await self.audit_head()))
        await self.notifier.notify(Category.REPORT, text)
        png = await self.trading.report_chart(report)
        await self.notifier.send_photo(Category.REPORT, png, f"daily-{day.isoformat()}.png", Text(report.title))
        self.sent_days.append(day)


class ReplayDayBoundary:
    """The daily report on the replay clock (a ``trading.app.replay.ClockHook``): due at each
    simulated midnight in ``tz`` after ``start_ms``; reports every day that ended since."""

    def __init__(self, report: DailyReport, start_ms: int) -> None:
        self.report = report
        self._day = day_of(start_ms, report.tz)
        self.next_due_ms = day_bounds(self._day, report.tz)[1]

    async def due(self, now_ms: int) -> None:
        """Report each day that ended by ``now_ms``, oldest first."""
        today = day_of(now_ms, self.report.tz)
        while self._day < today:
            try:
                await self.report.send(self._day)
            except Exception:  # a report must never stop the replay
                log.exception("daily report for %s failed", self._day)
            self._day += timedelta(days=1)
        self.next_due_ms = day_bounds(self._day, self.report.tz)[1]


class Jobs:
    """The process's APScheduler 3 ``AsyncIOScheduler`` and its jobs.

    Args:
        scheduler: an AsyncIOScheduler (default: a new one in UTC).
    """

    def __init__(self, scheduler: AsyncIOScheduler | None = None) -> None:
        self.scheduler = scheduler or AsyncIOScheduler(timezone=timezone.utc)

    def add_daily_report(self, report: DailyReport, hour: int = 0, minute: int = 0) -> None:
        """Wall-clock daily report at ``hour:minute`` in the report's zone (live/demo, T-5):
        it reports the day that just ended there."""

        async def run() -> None:
            now = datetime.now(report.tz)
            await report.send((now - timedelta(minutes=1)).date())

        self.scheduler.add_job(
            run, CronTrigger(hour=hour, minute=minute, timezone=report.tz), id="daily_report",
            replace_existing=True, coalesce=True, misfire_grace_time=3600,
        )

    def add_interval(self, name: str, seconds: float, job: Job) -> None:
        """Run ``await job()`` every ``seconds`` (monitor M-1 every 60 s, reconcile O-5): the
        composition root registers the callables; a job still running is not started twice,
        and a failing one is logged and runs again next time."""

        async def run() -> None:
            try:
                await job()
            except Exception:
                log.exception("scheduled job %s failed", name)

        self.scheduler.add_job(run, IntervalTrigger(seconds=seconds), id=name, replace_existing=True,
                               max_instances=1, coalesce=True)

    def start(self) -> None:
        """Start running jobs on the current event loop."""
        if not self.scheduler.running:
            self.scheduler.start()

    def shutdown(self) -> None:
        """Stop; jobs running now are not waited for."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
