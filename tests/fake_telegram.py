"""A loopback fake of the Telegram Bot API (aiohttp), for driving the real aiogram HTTP session.

It answers ``/bot<token>/<method>`` like api.telegram.org: ``getUpdates`` hands out queued
updates (long polling: it waits until an update is queued or the poll times out, capped at
``max_poll_wait`` seconds), every other call is recorded and answered with a plausible result:
getMe, deleteWebhook, setMyCommands, sendMessage, sendPhoto and sendDocument (JSON or multipart;
uploaded files are kept), editMessageText, editMessageReplyMarkup, answerCallbackQuery.

Strict like the real Bot API (https://core.telegram.org/bots/api#sendmessage): a text longer
than 4096 characters after entity parsing is refused with 400 "Bad Request: message is too
long", a caption longer than 1024 with 400 "Bad Request: message caption is too long", an empty
text with 400 "Bad Request: message text is empty". Length is counted after parsing the HTML
(tags dropped, entities unescaped) in UTF-16 code units, as Telegram counts entity offsets — the
stricter reading for emoji. The refused calls are in ``refused`` with status 400.

Injected errors (like aiogram's ``tests/mocked_bot.py`` queue of responses): ``fake.fail(...)``
queues one error answer for the next matching call — a 429 with ``retry_after`` or any other
code; ``fake.fail_all`` answers every non-polling call with that status until reset. Refused
calls are in ``fake.refused``, not in ``fake.calls``. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

SENDING = ("sendmessage", "sendphoto", "senddocument")
MESSAGE_LIMIT, CAPTION_LIMIT = 4096, 1024
_TAG = re.compile(r"<[^>]*>")


def visible_length(text: str, parse_mode: str | None) -> int:
    """Length of ``text`` as Telegram counts it after entity parsing: UTF-16 code units of the
    text without HTML tags and with HTML entities unescaped (``parse_mode`` HTML)."""
    if parse_mode and parse_mode.upper() == "HTML":
        text = html.unescape(_TAG.sub("", text))
    return len(text.encode("utf-16-le")) // 2


@dataclass(slots=True)
class InjectedError:
    """One queued error answer: ``status`` (429, 400, 500...), ``retry_after`` seconds for a
    429, and the method it applies to (lower-case; None = the next call of any method)."""

    status: int = 429
    retry_after: int = 1
    method: str | None = None
    description: str = ""


class FakeTelegram:
    """Start with ``await fake.start()``; ``fake.base`` is the URL for TELEGRAM_API_BASE.

    Attributes:
        calls: (method, params) of every accepted call, in arrival order; multipart files
            appear in params as ``{"filename": ..., "data": bytes}``; a sent message's params
            also carry ``"result"``, the message as the bot received it.
        files: (method, field, content) of every uploaded file (sendPhoto, sendDocument).
        refused: (method, params, status) of calls answered with an injected error.
        on_call: optional callback(method, params) run for every accepted call (tests stamp
            their injected clock with it).
    """

    def __init__(self, max_poll_wait: float = 0.5) -> None:
        self.updates: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.files: list[tuple[str, str, bytes]] = []
        self.refused: list[tuple[str, dict[str, Any], int]] = []
        self.errors: deque[InjectedError] = deque()
        self.fail_all: int | None = None
        self.on_call: Callable[[str, dict[str, Any]], None] | None = None
        self.sent = asyncio.Event()
        self.max_poll_wait = max_poll_wait
        self._new_update = asyncio.Event()
        self._message_ids = itertools.count(1000)
        self._update_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base = ""

    # ------------------------------------------------------------------ test side
    def _queue(self, update: dict[str, Any]) -> None:
        self.updates.append({"update_id": next(self._update_ids), **update})
        self._new_update.set()

    def queue_text(self, user_id: int, text: str) -> None:
        """Queue a private text message from ``user_id``."""
        entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}] if text.startswith("/") else []
        self._queue({
            "message": {
                "message_id": next(self._message_ids), "date": int(time.time()),
                "chat": {"id": user_id, "type": "private", "first_name": "T"},
                "from": {"id": user_id, "is_bot": False, "first_name": "T"},
                "text": text, "entities": entities,
            },
        })

    def queue_callback(self, user_id: int, data: str, message: dict[str, Any] | int = 1) -> None:
        """Queue a button tap with ``data`` (forged data welcome) from ``user_id`` on
        ``message``: a message the bot sent (a ``"result"`` of :attr:`calls`) or its id."""
        if isinstance(message, int):
            message = {"message_id": message, "date": int(time.time()),
                       "chat": {"id": user_id, "type": "private"}, "text": "…"}
        self._queue({
            "callback_query": {
                "id": str(next(self._message_ids)), "chat_instance": "ci",
                "from": {"id": user_id, "is_bot": False, "first_name": "T"},
                "message": message,
                "data": data,
            },
        })

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        """Wait (polling every 50 ms) until ``predicate()`` is true; TimeoutError after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)

    def fail(self, status: int = 429, retry_after: int = 1, method: str | None = None, times: int = 1) -> None:
        """Answer the next ``times`` matching calls with an error (429 carries retry_after)."""
        for _ in range(times):
            self.errors.append(InjectedError(status, retry_after, method and method.lower()))

    def texts_to(self, chat_id: int) -> list[str]:
        """Texts the bot sent to ``chat_id``."""
        return [p.get("text", "") for m, p in self.calls if m == "sendmessage" and str(p.get("chat_id")) == str(chat_id)]

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        """Parameters of every accepted call of ``method`` (case-insensitive)."""
        method = method.lower()
        return [p for m, p in self.calls if m == method]

    def messages_with_button(self, chat_id: int, prefix: str) -> list[dict[str, Any]]:
        """Messages sent to ``chat_id`` that carry a button whose label starts with ``prefix``."""
        found = []
        for method, params in self.calls:
            result = params.get("result")
            if method not in SENDING or result is None or str(params.get("chat_id")) != str(chat_id):
                continue
            rows = (result.get("reply_markup") or {}).get("inline_keyboard", [])
            if any(b["text"].startswith(prefix) for row in rows for b in row):
                found.append(result)
        return found

    async def tap(self, user_id: int, prefix: str, timeout: float = 60) -> dict[str, Any]:
        """Wait for the one message to ``user_id`` with a button labelled ``prefix…``, then tap
        that button as ``user_id`` (a queued callback query); returns the message."""
        await self.wait_until(lambda: self.messages_with_button(user_id, prefix), timeout)
        [message] = self.messages_with_button(user_id, prefix)
        [data] = [b["callback_data"] for row in message["reply_markup"]["inline_keyboard"] for b in row
                  if b["text"].startswith(prefix)]
        self.queue_callback(user_id, data, message)
        return message

    # ------------------------------------------------------------------ server
    async def start(self) -> None:
        """Listen on 127.0.0.1 at a free port."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return await request.json()
        params: dict[str, Any] = {}
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                data = await part.read()  # type: ignore[union-attr]
                if part.filename:  # type: ignore[union-attr]
                    params[part.name] = {"filename": part.filename, "data": bytes(data)}  # type: ignore[union-attr]
                else:
                    params[part.name] = data.decode("utf-8")  # type: ignore[union-attr]
            # aiogram sends a file as "attach://<name>" plus a part of that name.
            for key, value in list(params.items()):
                if isinstance(value, str) and value.startswith("attach://"):
                    params[key] = params.pop(value[len("attach://"):], value)
            return params
        return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}

    def _injected(self, method: str) -> InjectedError | None:
        if self.fail_all is not None:
            return InjectedError(self.fail_all)
        for error in self.errors:
            if error.method in (None, method):
                self.errors.remove(error)
                return error
        return None

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"].lower()
        params = await self._params(request)
        if method == "getupdates":
            return await self._get_updates(params)
        error = self._injected(method)
        if error is not None:
            self.refused.append((method, params, error.status))
            return self._error(error)
        refusal = self._bad_request(method, params)
        if refusal is not None:
            self.refused.append((method, params, 400))
            return self._error(InjectedError(400, method=method, description=refusal))
        self.calls.append((method, params))
        self.files += [(method, key, value["data"]) for key, value in params.items()
                       if isinstance(value, dict) and "data" in value]
        if self.on_call is not None:
            self.on_call(method, params)
        if method == "getme":
            return self._ok({"id": 999, "is_bot": True, "first_name": "OptiFlow", "username": "optiflow_test_bot"})
        if method in SENDING:
            self.sent.set()
            params["result"] = message = self._message(params)
            return self._ok(message)
        if method == "editmessagetext":
            return self._ok(self._message(params, message_id=int(params.get("message_id") or 0)))
        if method == "editmessagereplymarkup":
            return self._ok(self._message(params, message_id=int(params.get("message_id") or 0)))
        return self._ok(True)  # answerCallbackQuery, setMyCommands, deleteWebhook, ...

    @staticmethod
    def _bad_request(method: str, params: dict[str, Any]) -> str | None:
        """The description Telegram answers a malformed call with, or None."""
        mode = params.get("parse_mode")
        if method in ("sendmessage", "editmessagetext"):
            text = str(params.get("text") or "")
            if not text.strip():
                return "Bad Request: message text is empty"
            if visible_length(text, mode) > MESSAGE_LIMIT:
                return "Bad Request: message is too long"
        if method in ("sendphoto", "senddocument", "editmessagecaption") and params.get("caption"):
            if visible_length(str(params["caption"]), mode) > CAPTION_LIMIT:
                return "Bad Request: message caption is too long"
        return None

    async def _get_updates(self, params: dict[str, Any]) -> web.Response:
        offset = int(params.get("offset") or 0)
        pending = [u for u in self.updates if u["update_id"] >= offset]
        if not pending:
            self._new_update.clear()
            wait = min(float(params.get("timeout") or 0), self.max_poll_wait)
            try:
                await asyncio.wait_for(self._new_update.wait(), wait)
            except asyncio.TimeoutError:
                pass
            pending = [u for u in self.updates if u["update_id"] >= offset]
        return self._ok(pending)

    def _message(self, params: dict[str, Any], message_id: int | None = None) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        message: dict[str, Any] = {
            "message_id": message_id or next(self._message_ids), "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
        }
        if "text" in params:
            message["text"] = params["text"]
        if "caption" in params:
            message["caption"] = params["caption"]
        if "photo" in params:
            message["photo"] = [{"file_id": "p1", "file_unique_id": "u1", "width": 1, "height": 1}]
        if "document" in params:
            message["document"] = {"file_id": "d1", "file_unique_id": "u2"}
        if "reply_markup" in params:
            markup = params["reply_markup"]
            message["reply_markup"] = json.loads(markup) if isinstance(markup, str) else markup
        return message

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(error: InjectedError) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": error.status}
        if error.status == 429:
            body["description"] = f"Too Many Requests: retry after {error.retry_after}"
            body["parameters"] = {"retry_after": error.retry_after}
        else:
            body["description"] = error.description or {400: "Bad Request: injected"}.get(error.status, "Injected error")
        return web.json_response(body, status=error.status)


@pytest.fixture
async def fake():
    """A running :class:`FakeTelegram` (import this fixture into a test module by name)."""
    server = FakeTelegram()
    await server.start()
    yield server
    await server.stop()
