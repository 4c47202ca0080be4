"""Wiring of the chat layer: one Dispatcher with the services injected by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiogram import Dispatcher
from aiogram.types import BotCommand
from aiogram.utils.callback_answer import CallbackAnswerMiddleware

from bot.middlewares import AllowListMiddleware
from bot.render import COMMANDS
from handlers import build_routers

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from bot.logbuffer import RingBufferHandler
    from trading.app.analytics import AnalyticsService
    from trading.app.service import TradingService

# The Telegram command menu (SPEC T-2), from the same list as /help.
BOT_COMMANDS: list[BotCommand] = [
    BotCommand(command=command, description=description[:256])
    for _, items in COMMANDS
    for command, description in items
]


def build_dispatcher(
    trading: "TradingService",
    settings: Any,
    allowed_user_ids: frozenset[int],
    analytics: "AnalyticsService | None" = None,
    *,
    log_buffer: "RingBufferHandler | None" = None,
    request_shutdown: "Callable[[str], Any] | None" = None,
    research: Any = None,
    optimizer: Any = None,
    roles: "Mapping[int, str] | None" = None,
) -> Dispatcher:
    """A Dispatcher serving ``trading`` to the users in ``allowed_user_ids`` (SPEC T-1).

    ``trading``, ``settings``, ``analytics``, ``log_buffer`` (/log) and ``request_shutdown``
    (the lifecycle's ``request_shutdown(reason)``, called after a confirmed /shutdown) reach
    handlers as parameters of those names; without ``analytics`` the signal analytics commands
    answer that they are not available, without the others /log and /shutdown say so.
    ``research`` (``trading.app.research.ResearchService``, /chart) and ``optimizer``
    (``bot.optimize_jobs.OptimizeJobs``, /optimize) are the research tools (SPEC D-2); without
    them those commands say they are not available in this mode.
    ``roles`` (user id → owner / trader / viewer, ``Settings.user_roles()``) limits what each
    allowed user may do (SPEC T-1); without it every allowed user is an owner.
    """
    dp = Dispatcher(
        trading=trading, settings=settings, analytics=analytics, log_buffer=log_buffer,
        request_shutdown=request_shutdown, research=research, optimizer=optimizer,
    )
    dp.update.outer_middleware(AllowListMiddleware(allowed_user_ids, roles))
    dp.callback_query.middleware(CallbackAnswerMiddleware())
    dp.include_routers(*build_routers())
    return dp
