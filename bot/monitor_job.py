"""The minute job of the monitor (SPEC M-1) in chat: one pass of
``TradingService.run_monitor`` and each new alert sent once, through the notifier as a critical
message, with its playbook button (T-4, T-6). ``optiflow run`` schedules :func:`monitor_job`
every minute (``bot/cli.py``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiogram.utils.formatting import Text

from bot.notices import Category
from keyboards.playbook import alert_keyboard
from trading.domain.events import Alert
from trading.domain.monitor import FeedWatch

if TYPE_CHECKING:
    from bot.logbuffer import RingBufferHandler
    from bot.notifier import Notifier
    from trading.app.service import TradingService

log = logging.getLogger(__name__)

ERROR_WINDOW_MS = 10 * 60_000  # "recent log window" of SPEC M-1


def render_alert(alert: Alert) -> str:
    """One line per alert: "⚠️ KIND: text"."""
    return f"⚠️ {alert.kind}: {alert.text}"


async def monitor_pass(
    trading: "TradingService", log_buffer: "RingBufferHandler | None", wall_ms: int,
    feed_watch: FeedWatch | None = None,
) -> list[Alert]:
    """Run the monitor once; errors counted in the log lines of the last 10 min (wall clock);
    with ``feed_watch``, the feed is stale when the replay runs but its clock stopped moving."""
    if feed_watch is not None:
        info = trading.runtime_info()
        trading.feed_stale = feed_watch.observe(info.clock_ms, wall_ms, info.feed_state == "replaying")
    errors = log_buffer.errors_since(wall_ms - ERROR_WINDOW_MS) if log_buffer is not None else 0
    return await trading.run_monitor(recent_errors=errors)


async def send_alerts(notifier: "Notifier", alerts: list[Alert]) -> None:
    """Queue each alert once for every chat as a critical message (T-4: kept in the outbox until
    Telegram took it) with the button of its playbook (T-6)."""
    for alert in alerts:
        await notifier.notify(Category.ALERT, Text(render_alert(alert)), reply_markup=alert_keyboard(alert.playbook))


def monitor_job(trading: "TradingService", notifier: "Notifier", log_buffer: "RingBufferHandler | None"):
    """The minute job of SPEC M-1 for the scheduler (``Jobs.add_interval``): one
    :func:`monitor_pass` with a feed watch kept across passes, then :func:`send_alerts`."""
    feed_watch = FeedWatch()

    async def run() -> None:
        await send_alerts(notifier, await monitor_pass(trading, log_buffer, trading.wall_clock(), feed_watch))

    return run
