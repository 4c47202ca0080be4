"""Per-update middlewares of the chat layer."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.dispatcher.middlewares.user_context import (
    EVENT_FROM_USER_KEY,
    UserContextMiddleware,
)
from aiogram.types import TelegramObject, Update, User

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
