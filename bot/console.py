"""Console transport: the same Dispatcher and handlers, with stdin/stdout instead of Telegram.

:class:`ConsoleSession` answers the Bot API locally (STYLE: aiogram's ``tests/mocked_bot.py``):
it records every outgoing method, prints texts and numbered inline buttons, and saves photos and
documents to an output folder. :class:`ConsoleChat` turns typed lines and button numbers into
real ``Update`` objects fed to ``dp.feed_update``. Used when no Telegram token is set, and by tests.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
from collections.abc import AsyncGenerator, Iterable
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from typing import Any, TextIO

from aiogram import Bot, Dispatcher
from aiogram.client.session.base import BaseSession
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageCaption,
    EditMessageReplyMarkup,
    EditMessageText,
    GetMe,
    SendDocument,
    SendMessage,
    SendPhoto,
    TelegramMethod,
)
from aiogram.types import (
    CallbackQuery,
    Chat,
    Document,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Message,
    MessageEntity,
    PhotoSize,
    TelegramObject,
    Update,
    User,
)

log = logging.getLogger(__name__)

# Syntactically valid for aiogram's token check; never sent anywhere.
CONSOLE_TOKEN = "100000:console"


class ConsoleSession(BaseSession):
    """A Bot API session that never leaves the process.

    Attributes:
        requests: every method the bot called, in order (tests assert on these).
        messages: the bot's messages by (chat id, message id), as last sent or edited.
        keyboard_message: the message whose inline keyboard was printed last (for taps).
    """

    def __init__(self, output_dir: Path | str = Path("out"), out: TextIO | None = None) -> None:
        super().__init__()
        self.output_dir = Path(output_dir)
        self._out = out
        self.requests: list[TelegramMethod[Any]] = []
        self.messages: dict[tuple[int, int], Message] = {}
        self.keyboard_message: Message | None = None
        self.closed = False
        # One counter for both directions, like a Telegram private chat's message ids.
        self._message_ids = itertools.count(1)

    @property
    def out(self) -> TextIO:
        """The stream printed to (``sys.stdout`` at call time unless one was given)."""
        return self._out or sys.stdout

    def next_message_id(self) -> int:
        """A fresh message id in the shared chat sequence."""
        return next(self._message_ids)

    async def close(self) -> None:
        """Nothing to release; remembered for tests."""
        self.closed = True

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        """Downloads are not supported offline."""
        raise NotImplementedError("the console transport downloads no files")
        yield b""  # pragma: no cover - makes this an async generator, like the base class

    async def make_request(self, bot: Bot, method: TelegramMethod[Any], timeout: int | None = None) -> Any:
        """Record ``method``, act it out locally and return a result of its declared type."""
        self.requests.append(method)
        result = await self._perform(bot, method)
        if isinstance(result, TelegramObject):
            result = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        # Parse it the way a real Telegram reply is parsed: typed per method and bound to ``bot``.
        content = self.json_dumps({"ok": True, "result": result})
        return self.check_response(bot, method, HTTPStatus.OK, content).result

    # ----------------------------------------------------------------- methods
    async def _perform(self, bot: Bot, method: TelegramMethod[Any]) -> Any:
        if isinstance(method, SendMessage):
            return self._send(bot, method.chat_id, text=method.text, entities=method.entities,
                              reply_markup=method.reply_markup)
        if isinstance(method, (SendPhoto, SendDocument)):
            return await self._send_file(bot, method)
        if isinstance(method, (EditMessageText, EditMessageReplyMarkup, EditMessageCaption)):
            return self._edit(method)
        if isinstance(method, AnswerCallbackQuery):
            if method.text:
                self._print(f"({method.text})")
            return True
        if isinstance(method, GetMe):
            return User(id=bot.id, is_bot=True, first_name="OptiFlow", username="optiflow_console_bot")
        if method.__returning__ is bool:  # SetMyCommands, DeleteWebhook, SendChatAction, …
            return True
        raise NotImplementedError(f"console transport: {type(method).__name__} is not supported")

    def _send(self, bot: Bot, chat_id: Any, *, reply_markup: Any = None, **content: Any) -> Message:
        markup = reply_markup if isinstance(reply_markup, InlineKeyboardMarkup) else None
        message = Message(
            message_id=self.next_message_id(),
            date=datetime.now(timezone.utc),
            chat=Chat(id=int(chat_id), type="private"),
            from_user=User(id=bot.id, is_bot=True, first_name="OptiFlow"),
            reply_markup=markup,
            **{k: v for k, v in content.items() if v is not None},
        )
        self.messages[(message.chat.id, message.message_id)] = message
        if message.text:
            self._print(message.text)
        self._show_keyboard(message)
        return message

    async def _send_file(self, bot: Bot, method: SendPhoto | SendDocument) -> Message:
        is_photo = isinstance(method, SendPhoto)
        upload = method.photo if is_photo else method.document
        file_id = f"console-{len(self.requests)}"  # unique per request
        if isinstance(upload, InputFile):
            data = b"".join([chunk async for chunk in upload.read(bot)])
            name = Path(upload.filename or f"{file_id}.bin").name  # no path tricks
            path = self.output_dir / name
            await asyncio.to_thread(self._write, path, data)
            self._print(f"{'photo' if is_photo else 'document'} saved: {path}")
        else:  # a file_id or URL string: nothing to save
            data, name = b"", str(upload)
            self._print(f"{'photo' if is_photo else 'document'}: {name}")
        if method.caption:
            self._print(method.caption)
        if is_photo:
            media: dict[str, Any] = {"photo": [PhotoSize(file_id=file_id, file_unique_id=file_id, width=800,
                                                         height=600, file_size=len(data))]}
        else:
            media = {"document": Document(file_id=file_id, file_unique_id=file_id, file_name=name,
                                          file_size=len(data))}
        return self._send(bot, method.chat_id, caption=method.caption, reply_markup=method.reply_markup, **media)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def _edit(self, method: EditMessageText | EditMessageReplyMarkup | EditMessageCaption) -> Message | bool:
        key = (int(method.chat_id or 0), int(method.message_id or 0))
        old = self.messages.get(key)
        if old is None:  # an inline-mode message or one sent before this session: report success
            return True
        markup = method.reply_markup if isinstance(method.reply_markup, InlineKeyboardMarkup) else None
        changes: dict[str, Any] = {"reply_markup": markup, "edit_date": int(datetime.now(timezone.utc).timestamp())}
        if isinstance(method, EditMessageText):
            changes.update(text=method.text, entities=method.entities)
            self._print(f"(edited) {method.text}")
        elif isinstance(method, EditMessageCaption):
            changes.update(caption=method.caption)
            self._print(f"(edited caption) {method.caption}")
        else:
            self._print("(buttons updated)")
        message = old.model_copy(update=changes)
        self.messages[key] = message
        if self.keyboard_message is not None and self.keyboard_message.message_id == message.message_id:
            self.keyboard_message = None  # replaced below if the edit kept a keyboard
        self._show_keyboard(message)
        return message

    # ---------------------------------------------------------------- printing
    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _show_keyboard(self, message: Message) -> None:
        if message.reply_markup is None or not message.reply_markup.inline_keyboard:
            return
        self.keyboard_message = message
        number = itertools.count(1)
        for row in message.reply_markup.inline_keyboard:
            self._print("  ".join(f"[{next(number)}] {button.text}" for button in row))


def keyboard_buttons(message: Message | None) -> list[InlineKeyboardButton]:
    """The inline buttons of ``message`` in printed order (row by row)."""
    if message is None or message.reply_markup is None:
        return []
    return [button for row in message.reply_markup.inline_keyboard for button in row]


class ConsoleChat:
    """A private chat between one user and the bot, driven from text.

    Args:
        dp: the Dispatcher (as built by ``bot.app.build_dispatcher``).
        bot: a Bot whose session is a :class:`ConsoleSession` (see :func:`make_console_bot`).
        user_id: the Telegram user id the console speaks as (it must be allow-listed, SPEC T-1).
        out: where to echo typed lines (``sys.stdout`` at call time by default).
        deps: extra keyword data for ``dp.feed_update`` (e.g. ``trading=...``).
    """

    def __init__(self, dp: Dispatcher, bot: Bot, user_id: int, out: TextIO | None = None, **deps: Any) -> None:
        if not isinstance(bot.session, ConsoleSession):
            raise TypeError("ConsoleChat needs a Bot with a ConsoleSession (see make_console_bot)")
        self.dp, self.bot, self.deps = dp, bot, deps
        self.session: ConsoleSession = bot.session
        self._out = out
        self.user = User(id=user_id, is_bot=False, first_name="Console", username="console")
        self.chat = Chat(id=user_id, type="private", first_name="Console")
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)

    async def _feed(self, **event: Any) -> Any:
        update = Update(update_id=next(self._update_ids), **event)
        return await self.dp.feed_update(self.bot, update, **self.deps)

    async def send_text(self, text: str) -> Any:
        """Deliver ``text`` as a private message from the user; returns the dispatcher result."""
        entities = None
        if text.startswith("/"):
            command = text.split()[0]
            entities = [MessageEntity(type="bot_command", offset=0, length=len(command.encode("utf-16-le")) // 2)]
        message = Message(
            message_id=self.session.next_message_id(),
            date=datetime.now(timezone.utc),
            chat=self.chat,
            from_user=self.user,
            text=text,
            entities=entities,
        )
        return await self._feed(message=message)

    async def tap(self, n: int) -> Any:
        """Tap the ``n``-th button (1-based) of the last printed keyboard; False if there is none."""
        message = self.session.keyboard_message
        buttons = keyboard_buttons(message)
        if not 1 <= n <= len(buttons):
            self._echo(f"No button {n}.")
            return False
        button = buttons[n - 1]
        if button.callback_data is None:
            self._echo(f"Button {n} is a link: {button.url or '-'}")
            return False
        query = CallbackQuery(
            id=str(next(self._callback_ids)),
            from_user=self.user,
            chat_instance=str(self.chat.id),
            message=message,
            data=button.callback_data,
        )
        return await self._feed(callback_query=query)

    async def handle_line(self, line: str) -> None:
        """One console line: a bare number taps a button, anything else is a message."""
        line = line.strip()
        if not line:
            return
        try:
            if line.isdigit():
                await self.tap(int(line))
            else:
                await self.send_text(line)
        except Exception:  # keep the console alive; the traceback goes to the log, not the chat
            log.exception("console input failed")
            self._echo("Internal error, see logs")

    async def say(self, lines: Iterable[str]) -> None:
        """Scripted use: echo each line as ``> line`` and handle it."""
        for line in lines:
            self._echo(f"> {line}")
            await self.handle_line(line)

    async def run_interactive(self, stdin: TextIO | None = None, until: asyncio.Event | None = None) -> None:
        """Read lines until ``quit``/``exit``, EOF, or ``until`` is set — by a handled line (a
        confirmed /shutdown) or from outside (the trading task stopped on a storage fault, SPEC
        M-1) — without blocking the event loop. Lines are read by a daemon thread, so a process
        whose chat ends without input never waits for a line to exit."""
        stdin = stdin or sys.stdin
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def read() -> None:
            while True:
                try:
                    line = stdin.readline()
                except (OSError, ValueError):
                    line = ""
                try:
                    loop.call_soon_threadsafe(lines.put_nowait, line)
                except RuntimeError:  # the loop is closed: nobody listens any more
                    return
                if not line:
                    return

        threading.Thread(target=read, name="console-stdin", daemon=True).start()
        stopped = asyncio.ensure_future(until.wait()) if until is not None else None
        try:
            while True:
                if until is not None and until.is_set():
                    return
                next_line = asyncio.ensure_future(lines.get())
                waits = {next_line} if stopped is None else {next_line, stopped}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if not next_line.done():
                    next_line.cancel()
                    return
                line = next_line.result()
                if not line or line.strip().lower() in ("quit", "exit"):
                    return
                await self.handle_line(line)
        finally:
            if stopped is not None:
                stopped.cancel()

    def _echo(self, text: str) -> None:
        print(text, file=self._out or sys.stdout, flush=True)


def make_console_bot(output_dir: Path | str = Path("out"), out: TextIO | None = None) -> Bot:
    """A Bot that talks to the console: photos and documents are saved under ``output_dir``."""
    return Bot(token=CONSOLE_TOKEN, session=ConsoleSession(output_dir=output_dir, out=out))
