"""Middlewares of the chat layer: per update (the allow-list, SPEC T-1) and per Bot API request
(waiting out Telegram's flood control, SPEC T-4)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import GetUpdates, TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.dispatcher.middlewares.user_context import (
    EVENT_FROM_USER_KEY,
    UserContextMiddleware,
)
from aiogram.types import TelegramObject, Update, User

if TYPE_CHECKING:
    from aiogram import Bot

log = logging.getLogger(__name__)


class AllowListMiddleware(BaseMiddleware):
    """Outer ``dp.update`` middleware: only users in ``allowed_user_ids`` reach the handlers
    (SPEC T-1). Anyone else gets no reply at all, and one WARNING names their user id and the
    update type — never the message text, which may carry anything."""

    def __init__(self, allowed_user_ids: frozenset[int]) -> None:
        self.allowed_user_ids = frozenset(allowed_user_ids)

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        """Pass the update on if its sender is allowed; otherwise drop it and log."""
        user: User | None = data.get(EVENT_FROM_USER_KEY)
        if user is None and isinstance(event, Update):
            # Registered ahead of aiogram's UserContextMiddleware: resolve the sender ourselves.
            user = UserContextMiddleware.resolve_event_context(event).user
        if user is not None and user.id in self.allowed_user_ids:
            return await handler(event, data)
        kind = event.event_type if isinstance(event, Update) else type(event).__name__
        log.warning(
            "T-1: dropped %s update from user id=%s (not in the allow-list)",
            kind,
            user.id if user else "unknown",
        )
        return UNHANDLED


class RetryAfterMiddleware(BaseRequestMiddleware):
    """Session request middleware: every Bot API call of the bot (replies to commands, the
    /daily photo, a button's answer, edits, notifications) that meets Telegram's flood control
    (429 ``retry_after``, aiogram's :class:`~aiogram.exceptions.TelegramRetryAfter`) waits the
    time Telegram asks and is sent again (SPEC T-4) — aiogram 3 never retries by itself. A 429
    means the call was not executed, so sending it again never duplicates a message.

    Bounded: at most ``max_retries`` retries and ``max_wait`` seconds in all for one call; a
    ``retry_after`` beyond what is left is not waited and the error goes to the caller (the
    notifier keeps critical messages and tries again later). ``getUpdates`` is left to the
    dispatcher's own back-off.

    Args:
        max_retries: retries per call (default 5).
        max_wait: seconds of waiting per call, all retries together (default 120).
        sleep: ``asyncio.sleep``-like (injectable for tests).
    """

    def __init__(self, max_retries: int = 5, max_wait: float = 120.0,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.max_retries = max_retries
        self.max_wait = max_wait
        self._sleep = sleep
        self.retried = 0  # calls sent again after a 429 (for /runtime and tests)

    async def __call__(self, make_request: NextRequestMiddlewareType[TelegramType], bot: "Bot",
                       method: TelegramMethod[TelegramType]) -> Response[TelegramType]:
        """Send ``method``; on a 429 wait ``retry_after`` and send it again, within the bounds."""
        if isinstance(method, GetUpdates):
            return await make_request(bot, method)
        waited = 0.0
        attempt = 0
        while True:
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                wait = float(exc.retry_after)
                attempt += 1
                if attempt > self.max_retries or waited + wait > self.max_wait:
                    log.warning("Telegram flood control on %s: retry_after %s s is past the bound, giving up",
                                type(method).__name__, exc.retry_after)
                    raise
                log.warning("Telegram flood control on %s: waiting %s s (retry %s)", type(method).__name__,
                            exc.retry_after, attempt)
                await self._sleep(wait)
                waited += wait
                self.retried += 1
