"""Middlewares of the chat layer: per update (the allow-list, SPEC T-1) and per Bot API request
(waiting out Telegram's flood control, SPEC T-4)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
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
from aiogram.types import CallbackQuery, Message, TelegramObject, Update, User

if TYPE_CHECKING:
    from aiogram import Bot

log = logging.getLogger(__name__)


OWNER, TRADER, VIEWER = "owner", "trader", "viewer"
RANK = {VIEWER: 0, TRADER: 1, OWNER: 2}

# SPEC T-1 roles: what each command and button needs; anything not listed is a viewer's (status,
# reports, /help, /playbook to read). Buttons by their CallbackData prefix (keyboards/).
COMMAND_ROLES = {"shutdown": OWNER, "pause": TRADER, "resume": TRADER, "close": TRADER, "closeall": TRADER,
                 "log": TRADER}
BUTTON_ROLES = {"ps": TRADER, "pt": TRADER, "pa": TRADER, "cp": TRADER, "cf": TRADER, "px": TRADER}
OWNER_ACTIONS = frozenset({"SHUTDOWN", "LIFT_RISK_STOP"})  # confirmations only an owner may run


def required_role(event: TelegramObject) -> tuple[str, str]:
    """(role needed, what was asked — "/shutdown" or "button ps") for a message or a tap."""
    if isinstance(event, Message) and event.text and event.text.startswith("/"):
        command = event.text.split(maxsplit=1)[0][1:].split("@", 1)[0].lower()
        return COMMAND_ROLES.get(command, VIEWER), f"/{command[:32]}"
    if isinstance(event, CallbackQuery):
        prefix = (event.data or "").split("|", 1)[0][:8]
        return BUTTON_ROLES.get(prefix, VIEWER), f"button {prefix}"
    return VIEWER, "message"


class AllowListMiddleware(BaseMiddleware):
    """Outer ``dp.update`` middleware (SPEC T-1): only users in ``allowed_user_ids`` reach the
    handlers; anyone else gets no reply at all, and one WARNING names their user id and the
    update type — never the message text, which may carry anything.

    With ``roles`` (user id → owner / trader / viewer), an allowed user asking for more than
    their role (a viewer's /pause, a trader's /shutdown, a viewer tapping a pause toggle) gets one
    line saying so, and the refusal is audited (``trading.record_command("refused", …)``);
    handlers get the role as the ``role`` parameter. The role is the sender's, never the chat's:
    in a group every member has only their own role. Without ``roles`` every allowed user is an
    owner.
    """

    def __init__(self, allowed_user_ids: frozenset[int], roles: Mapping[int, str] | None = None) -> None:
        self.allowed_user_ids = frozenset(allowed_user_ids)
        self.roles = dict(roles or {})

    def role_of(self, user_id: int) -> str:
        """The user's role (owner when no roles were given)."""
        return self.roles.get(user_id, OWNER if not self.roles else VIEWER)

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        """Pass the update on if its sender is allowed and their role suffices; otherwise drop
        it (strangers) or refuse it in one line (roles)."""
        user: User | None = data.get(EVENT_FROM_USER_KEY)
        if user is None and isinstance(event, Update):
            # Registered ahead of aiogram's UserContextMiddleware: resolve the sender ourselves.
            user = UserContextMiddleware.resolve_event_context(event).user
        if user is not None and user.id in self.allowed_user_ids:
            role = self.role_of(user.id)
            inner = event.event if isinstance(event, Update) else event
            needed, asked = required_role(inner)
            if RANK[role] < RANK[needed]:
                await self._refuse(inner, data, user.id, role, needed, asked)
                return None
            data["role"] = role
            return await handler(event, data)
        kind = event.event_type if isinstance(event, Update) else type(event).__name__
        log.warning(
            "T-1: dropped %s update from user id=%s (not in the allow-list)",
            kind,
            user.id if user else "unknown",
        )
        return UNHANDLED

    @staticmethod
    async def _refuse(event: TelegramObject, data: dict[str, Any], user_id: int, role: str, needed: str,
                      asked: str) -> None:
        """One line to the user and an audit record of the refusal (SPEC T-1, A-1)."""
        text = f"⛔ {asked} needs the {needed} role; you are a {role}."
        log.warning("T-1: refused %s to user id=%s (role %s)", asked, user_id, role)
        trading = data.get("trading")
        if trading is not None:
            try:
                await trading.record_command("refused", why={"user_id": user_id, "role": role, "asked": asked,
                                                             "needs": needed})
            except Exception as exc:  # a refusal never fails louder than the refusal itself
                log.error("refusal not audited: %s", type(exc).__name__)
        bot = data.get("bot")
        if isinstance(event, Message):
            await event.answer(text=text, parse_mode=None)
        elif isinstance(event, CallbackQuery) and bot is not None:
            await bot.answer_callback_query(callback_query_id=event.id, text=text, show_alert=True)


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
