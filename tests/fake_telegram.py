"""A loopback fake of the Telegram Bot API (aiohttp), for driving the real aiogram HTTP session.

It answers ``/bot<token>/<method>`` like api.telegram.org: ``getUpdates`` hands out queued
updates (long polling, short waits), every other call is recorded and answered with a plausible
result. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

from aiohttp import web


class FakeTelegram:
    """Start with ``await fake.start()``; ``fake.base`` is the URL for TELEGRAM_API_BASE."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.files: list[tuple[str, str, bytes]] = []  # (method, field, content) of multipart uploads
        self.sent = asyncio.Event()
        self._message_ids = itertools.count(1000)
        self._update_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base = ""

    def queue_text(self, user_id: int, text: str) -> None:
        """Queue a private text message from ``user_id``."""
        entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}] if text.startswith("/") else []
        self.updates.append({
            "update_id": next(self._update_ids),
            "message": {
                "message_id": next(self._message_ids), "date": int(time.time()),
                "chat": {"id": user_id, "type": "private", "first_name": "T"},
                "from": {"id": user_id, "is_bot": False, "first_name": "T"},
                "text": text, "entities": entities,
            },
        })

    def queue_callback(self, user_id: int, data: str, message: dict[str, Any] | None = None) -> None:
        """Queue a button tap from ``user_id`` with callback ``data`` (forged data welcome) on
        ``message`` (a message the bot sent; a placeholder when None)."""
        message = message or {"message_id": 1, "date": int(time.time()), "chat": {"id": user_id, "type": "private"}}
        self.updates.append({
            "update_id": next(self._update_ids),
            "callback_query": {
                "id": str(next(self._update_ids)), "chat_instance": str(user_id), "data": data,
                "from": {"id": user_id, "is_bot": False, "first_name": "T"}, "message": message,
            },
        })

    async def wait_until(self, predicate, timeout: float = 60) -> None:
        """Wait (polling every 50 ms) until ``predicate()`` is true; TimeoutError after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)

    def texts_to(self, chat_id: int) -> list[str]:
        """Texts the bot sent to ``chat_id``."""
        return [p.get("text", "") for m, p in self.calls if m == "sendmessage" and str(p.get("chat_id")) == str(chat_id)]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"].lower()
        if request.content_type == "application/json":
            params = await request.json()
        else:
            params = {}
            for key, value in (await request.post()).items():
                if isinstance(value, str):
                    params[key] = value
                else:  # an uploaded file (sendPhoto, sendDocument)
                    self.files.append((request.match_info["method"].lower(), key, value.file.read()))
        if method == "getupdates":
            offset = int(params.get("offset") or 0)
            pending = [u for u in self.updates if u["update_id"] >= offset]
            if not pending:
                await asyncio.sleep(min(float(params.get("timeout") or 0), 0.2))
            return self._ok(pending)
        self.calls.append((method, params))
        if method == "getme":
            return self._ok({"id": 999, "is_bot": True, "first_name": "OptiFlow", "username": "optiflow_test_bot"})
        if method in ("sendmessage", "sendphoto", "senddocument"):
            self.sent.set()
            chat_id = int(params["chat_id"])
            message = {"message_id": next(self._message_ids), "date": int(time.time()),
                       "chat": {"id": chat_id, "type": "private"}, "text": params.get("text", "")}
            if "reply_markup" in params:
                markup = params["reply_markup"]
                message["reply_markup"] = json.loads(markup) if isinstance(markup, str) else markup
            params["result"] = message
            return self._ok(message)
        return self._ok(True)

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})
