"""The minute job of the monitor (SPEC M-1) in chat: one pass of
``TradingService.run_monitor`` and each new alert sent with its playbook button (T-6).

INTEGRATION NOTE: the scheduler and the outgoing notifier queue (T-4, T-5) live in the other
branch; at merge, schedule :func:`monitor_pass` every minute there and send the alerts through
the notifier (critical priority) instead of ``bot.send_message``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiogram import Bot

from keyboards.playbook import alert_keyboard
from trading.events import Alert
from trading.monitor import FeedWatch

if TYPE_CHECKING:
    from bot.logbuffer import RingBufferHandler
    from trading.service import TradingService

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


async def send_alerts(bot: Bot, chat_ids: Iterable[int], alerts: list[Alert]) -> None:
    """Send each alert to each chat with the button of its playbook; a failed send is logged."""
    for alert in alerts:
        for chat_id in chat_ids:
            try:
                await bot.send_message(chat_id=chat_id, text=render_alert(alert), parse_mode=None,
                                       reply_markup=alert_keyboard(alert.playbook))
            except Exception:  # an alert that cannot be sent must not stop the monitor
                log.exception("could not send the %s alert to %s", alert.kind, chat_id)


async def monitor_loop(
    bot: Bot, trading: "TradingService", log_buffer: "RingBufferHandler | None", chat_ids: Iterable[int],
    interval_s: float = 60.0,
) -> None:
    """Every ``interval_s`` seconds: one monitor pass, alerts sent. Runs until cancelled."""
    chat_ids = tuple(chat_ids)
    feed_watch = FeedWatch()
    while True:
        await asyncio.sleep(interval_s)
        try:
            alerts = await monitor_pass(trading, log_buffer, trading.wall_clock(), feed_watch)
        except Exception:
            log.exception("monitor pass failed")
            continue
        await send_alerts(bot, chat_ids, alerts)
