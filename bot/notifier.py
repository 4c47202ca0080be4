"""One outgoing queue for everything the bot sends unprompted (SPEC T-4).

* Priorities: critical (stop-loss, risk stops, alerts, shutdown, crash) before normal (entries,
  take-profits, exits, reports) before low (digests); first in, first out within a priority.
* Critical messages are never dropped: each part is written to the SQLite outbox before it is
  queued and deleted once Telegram accepted it; :meth:`Notifier.start` re-queues what a previous
  run left behind.
* Pacing under Telegram's limits: at most one message per ``chat_interval`` seconds per chat,
  ``group_per_minute`` per minute in a group chat (negative chat id) and about 30 a second in
  all; a 429 ``retry_after``
  (aiogram's :class:`~aiogram.exceptions.TelegramRetryAfter`) is waited out and the same
  message is sent again. The clock and the sleep are injectable, so tests do not wait.
* Bursts are merged: all queued low-priority texts for a chat go out as one digest, and when
  ``merge_after`` or more normal texts are waiting for a chat they go out as one message.
* Texts are aiogram ``formatting`` nodes (escaped), sent as HTML, split at 4096 characters.
* Categories can be ``on``, ``silent`` (``disable_notification``) or ``off`` (critical ones
  cannot be off).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup
from aiogram.utils.formatting import Bold, Text

from bot.notices import CRITICAL_CATEGORIES, PRIORITY, Category, Notice, NoticeBuilder, Priority
from bot.render import split_text

if TYPE_CHECKING:
    from aiogram import Bot

    from storage.repositories import OutboxRepository
    from trading.domain.events import Event

log = logging.getLogger(__name__)

Mode = Literal["on", "silent", "off"]
CAPTION_LIMIT = 1024
STANDALONE = frozenset({Category.LIFECYCLE, Category.REPORT})  # never merged into a burst
GIVE_UP_AFTER = 5  # network failures before a non-critical message is dropped


@dataclass(slots=True)
class _Outgoing:
    """One queued send: a text (critical ones already split and stored as HTML), a photo or a
    document."""

    priority: Priority
    chat_id: int
    category: Category
    silent: bool
    text: Text | None = None
    html: str | None = None
    outbox_id: int | None = None
    file: bytes | None = None
    filename: str = ""
    kind: Literal["text", "photo", "document"] = "text"
    markup: str = ""  # inline keyboard JSON, sent with this message
    attempts: int = field(default=0)
    key: tuple[str, str] | None = None  # (bot, symbol) / (bot, "*"): kept in event order


class Notifier:
    """The outgoing queue. Use ``await start()``, then :meth:`notify` / :meth:`send_photo` /
    :meth:`send_document` / :meth:`on_events`; ``await close(timeout)`` at shutdown.

    Args:
        bot: the aiogram Bot (its session sends).
        outbox: the SQLite outbox repository (``storage.outbox``).
        chat_ids: chats that get every notification (the allowed users' private chats, a group).
        modes: category value → ``on`` / ``silent`` / ``off``; missing = ``on``.
        builder: turns events into notices (:meth:`on_events`); default one with quote USDT.
        clock: monotonic seconds (injectable); sleep: ``asyncio.sleep``-like (injectable).
        wall_ms: epoch ms UTC for the outbox's created_ms.
        chat_interval: seconds between two messages to one chat (Telegram: about 1/s).
        group_per_minute: messages per minute to a group chat (Telegram: 20).
        global_interval: seconds between any two messages (Telegram: about 30/s per bot).
        merge_after: this many waiting normal texts for one chat are sent as one message.

    Raises:
        ValueError: a critical category is set to ``off``.
    """

    def __init__(
        self,
        bot: "Bot",
        outbox: "OutboxRepository",
        chat_ids: Sequence[int],
        modes: Mapping[str, Mode] | None = None,
        *,
        builder: NoticeBuilder | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        chat_interval: float = 1.0,
        group_per_minute: int = 20,
        merge_after: int = 3,
        global_interval: float = 1 / 30,
    ) -> None:
        self.bot = bot
        self.outbox = outbox
        self.chat_ids = tuple(dict.fromkeys(chat_ids))
        self.modes: dict[str, Mode] = dict(modes or {})
        for category in CRITICAL_CATEGORIES:
            if self.modes.get(category.value) == "off":
                raise ValueError(f"notification category {category.value} is critical: on or silent only")
        self.builder = builder or NoticeBuilder()
        self._clock = clock
        self._sleep = sleep
        self._wall_ms = wall_ms
        self.chat_interval = chat_interval
        self.group_per_minute = group_per_minute
        self.merge_after = merge_after
        self.global_interval = global_interval
        self._last_any = float("-inf")
        self._heap: list[tuple[int, int, int, _Outgoing]] = []  # (priority key, seq, part, item)
        self._seq = itertools.count()
        self._last_sent: dict[int, float] = {}
        self._group_window: dict[int, deque[float]] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        self._current: list[_Outgoing] = []  # the batch being sent
        self.delivered = 0
        self.dropped = 0

    # ------------------------------------------------------------------ input
    def mode(self, category: Category) -> Mode:
        """``on`` / ``silent`` / ``off`` for ``category``."""
        return self.modes.get(category.value, "on")

    async def start(self) -> None:
        """Queue the critical messages a previous run left in the outbox, then start sending."""
        queued = {e[-1].outbox_id for e in self._heap}
        for message in await self.outbox.pending():
            if message.id in queued:
                continue
            try:
                category = Category(message.category)
            except ValueError:  # a category this version does not know: still critical
                category = Category.ALERT
            self._push(_Outgoing(Priority.CRITICAL, message.chat_id, category, message.silent,
                                 html=message.body, outbox_id=message.id, markup=message.markup))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="notifier")

    async def notify(self, category: Category, text: Text, *, first: bool = False,
                     reply_markup: InlineKeyboardMarkup | None = None,
                     key: tuple[str, str] | None = None) -> list[int]:
        """Queue ``text`` for every chat (critical ones are stored in the outbox first);
        ``first`` puts a critical text ahead of everything queued (the shutdown message when
        Telegram cannot take the backlog in time); ``reply_markup`` (e.g. a monitor alert's
        playbook button, M-1) goes with the last part and keeps the message out of merges.
        ``key`` — (bot, symbol) of the position, (bot, "*") for a bot's risk stop — keeps one
        position's messages in event order: a critical one never overtakes an earlier queued
        message of the same key (that one is sent first). Returns the outbox ids of critical
        parts."""
        mode = self.mode(category)
        ids: list[int] = []
        if mode == "off":
            return ids
        silent = mode == "silent"
        priority = PRIORITY[category]
        markup = reply_markup.model_dump_json(exclude_none=True) if reply_markup is not None else ""
        for chat_id in self.chat_ids:
            if priority is Priority.CRITICAL:
                parts = split_text(text)
                for n, part in enumerate(parts):
                    html = part.as_html()
                    keyboard = markup if n == len(parts) - 1 else ""
                    outbox_id = await self._store(chat_id, category, html, silent, keyboard)
                    if outbox_id is not None:
                        ids.append(outbox_id)
                    self._push(_Outgoing(priority, chat_id, category, silent, html=html, outbox_id=outbox_id,
                                         markup=keyboard, key=key), first=first)
            else:
                self._push(_Outgoing(priority, chat_id, category, silent, text=text, markup=markup, key=key))
        return ids

    async def _store(self, chat_id: int, category: Category, html: str, silent: bool, markup: str) -> int | None:
        """Write a critical part to the outbox; None when the database refuses the write (SPEC
        M-1: disk full, read-only, locked): the message is still queued, in memory only, so the
        alert about a storage fault never depends on the storage."""
        try:
            return await self.outbox.add(chat_id, category.value, html, silent, self._wall_ms(), markup)
        except Exception as exc:
            log.error("outbox write failed (%s: %s); sending without it", type(exc).__name__, exc)
            return None

    async def _forget(self, outbox_id: int) -> None:
        """Delete a sent critical part from the outbox; a failed delete is logged (the part may
        be sent again after a restart, never lost)."""
        try:
            await self.outbox.delete(outbox_id)
        except Exception as exc:
            log.error("outbox delete failed (%s: %s)", type(exc).__name__, exc)

    async def send_photo(self, category: Category, png: bytes, filename: str, caption: Text) -> None:
        """Queue a photo (e.g. the daily chart, SPEC T-5) with a caption cut to 1024 characters."""
        await self._queue_file("photo", category, png, filename, caption)

    async def send_document(self, category: Category, data: bytes, filename: str, caption: Text) -> None:
        """Queue a document (e.g. the daily CSV) with a caption cut to 1024 characters."""
        await self._queue_file("document", category, data, filename, caption)

    async def _queue_file(self, kind, category: Category, data: bytes, filename: str, caption: Text) -> None:
        mode = self.mode(category)
        if mode == "off":
            return
        caption = split_text(caption, CAPTION_LIMIT)[0]
        for chat_id in self.chat_ids:
            self._push(_Outgoing(PRIORITY[category], chat_id, category, mode == "silent", text=caption,
                                 file=data, filename=filename, kind=kind))

    async def on_events(self, events: Sequence["Event"]) -> None:
        """Persister listener: notices for events already written to SQLite (SPEC T-4)."""
        await self.notify_all(self.builder.build(events))

    async def notify_all(self, notices: Iterable[Notice]) -> None:
        """Queue several notices in order; an alert with a playbook gets its button (T-6)."""
        from keyboards.playbook import alert_keyboard

        for notice in notices:
            markup = alert_keyboard(notice.playbook) if notice.playbook else None
            await self.notify(notice.category, notice.text, key=notice.key, reply_markup=markup)

    def _push(self, item: _Outgoing, first: bool = False, place: tuple[int, int, int] | None = None) -> None:
        key = -1 if first else int(item.priority)
        if item.key is not None and place is None:
            self._keep_order(item, key)
        heapq.heappush(self._heap, (*(place or (key, next(self._seq), 0)), item))
        self._idle.clear()
        self._wakeup.set()

    def _keep_order(self, item: _Outgoing, key: int) -> None:
        """SPEC T-4 per-position order: messages of ``item``'s key (same chat) still queued at
        a lower priority move up to ``item``'s priority, keeping their earlier place in line,
        so they go out before it (an entry before the stop-loss it led to)."""
        bot, symbol = item.key  # type: ignore[misc]
        moved = False
        for n, entry in enumerate(self._heap):
            other = entry[-1]
            if (entry[0] > key and other.chat_id == item.chat_id and other.key is not None
                    and other.key[0] == bot and (symbol == "*" or other.key[1] in (symbol, "*"))):
                self._heap[n] = (key, *entry[1:])
                moved = True
        if moved:
            heapq.heapify(self._heap)

    # ------------------------------------------------------------------ output
    @property
    def pending(self) -> int:
        """Messages waiting (not counting the one being sent)."""
        return len(self._heap)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything queued was sent (or given up); False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def wait_sent(self, outbox_ids: Iterable[int], timeout: float) -> bool:
        """Wait until the critical messages with these outbox ids were handled (sent or
        refused for good); False on timeout."""
        ids = set(outbox_ids)

        def waiting() -> bool:
            return any(e[-1].outbox_id in ids for e in self._heap) or any(x.outbox_id in ids for x in self._current)

        async def poll() -> None:
            while waiting():
                await asyncio.sleep(0.05)

        try:
            await asyncio.wait_for(poll(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 10.0) -> bool:
        """Send what is queued within ``timeout`` seconds, then stop. Critical messages not sent
        stay in the outbox for the next start. Returns True when everything went out."""
        done = await self.drain(timeout)
        if not done:
            left = len(self._heap) + len(self._current)
            log.warning("notifier closed with %s messages unsent (critical ones stay in the outbox)", left)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        return done

    async def _run(self) -> None:
        while True:
            if not self._heap:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            key, seq, _, item = heapq.heappop(self._heap)
            batch = self._current = self._merge(item)
            try:
                await self._send(batch, (key, seq))
            except asyncio.CancelledError:
                raise
            except Exception:  # the sender must survive anything; log and go on
                log.exception("notification to chat %s failed", item.chat_id)
            finally:
                self._current = []

    def _merge(self, item: _Outgoing) -> list[_Outgoing]:
        """``item`` plus the waiting texts it absorbs: every low one for the chat (a digest),
        or every one of its priority (critical, normal) when ``merge_after`` or more wait —
        critical texts stay whole and in order inside the merged message."""
        if item.kind != "text" or (item.html is not None and item.priority is not Priority.CRITICAL):
            return [item]  # files, and the later parts of an already merged message
        if item.category in STANDALONE or item.markup:
            return [item]  # build card, summary, shutdown, crash, daily report: each on its own
        same = [e for e in self._heap if e[-1].chat_id == item.chat_id and e[-1].priority is item.priority
                and e[-1].kind == "text" and (e[-1].html is None or item.priority is Priority.CRITICAL)
                and e[-1].category not in STANDALONE and not e[-1].markup]
        if item.priority is not Priority.LOW and len(same) + 1 < self.merge_after:
            return [item]
        if not same:
            return [item]
        taken = {id(e[-1]) for e in same}
        self._heap = [e for e in self._heap if id(e[-1]) not in taken]
        heapq.heapify(self._heap)
        return [item, *(e[-1] for e in sorted(same, key=lambda e: e[:3]))]

    async def _send(self, batch: list[_Outgoing], place: tuple[int, int]) -> None:
        first = batch[0]
        if first.kind != "text":
            await self._deliver(first, None)
            return
        if first.html is not None and first.priority is not Priority.CRITICAL:
            await self._deliver(first, first.html)
            return
        if first.html is not None:
            chunks = _chunks(batch)
            for n, chunk in enumerate(chunks):
                # Only a single (unmerged) message carries a keyboard, on its last chunk.
                await self._deliver(first if n == len(chunks) - 1 else replace(first, markup=""), chunk)
            # Sent, or refused for good (bad request, bot blocked): either way never again.
            # Network trouble retries inside _deliver; a cancel (shutdown) keeps the rows.
            for entry in batch:
                if entry.outbox_id is not None:
                    await self._forget(entry.outbox_id)
            return
        if len(batch) == 1:
            text = first.text
            if first.markup:
                for part in split_text(text)[:-1]:  # a keyboard goes with the last part
                    await self._deliver(replace(first, markup=""), part.as_html())
                await self._deliver(first, split_text(text)[-1].as_html())
                return
        else:
            title = "🗒 Digest" if first.priority is Priority.LOW else "📣 Updates"
            # (critical batches are joined as stored HTML in _chunks)
            nodes: list[Any] = [Bold(f"{title} ({len(batch)})")]
            for entry in batch:
                nodes += ["\n\n", entry.text]
            text = Text(*nodes)
        silent = all(e.silent for e in batch)
        assert text is not None
        parts = split_text(text)
        # Later parts go back to the queue in this batch's place, so a critical message (or
        # the shutdown message) can still go between them.
        for n, part in enumerate(parts[1:], start=1):
            self._push(_Outgoing(first.priority, first.chat_id, first.category, silent, html=part.as_html()),
                       place=(place[0], place[1], n))
        await self._deliver(_Outgoing(first.priority, first.chat_id, first.category, silent), parts[0].as_html())

    async def _wait_turn(self, chat_id: int) -> None:
        now = self._clock()
        ready = max(self._last_sent.get(chat_id, float("-inf")) + self.chat_interval,
                    self._last_any + self.global_interval)
        if chat_id < 0:
            window = self._group_window.setdefault(chat_id, deque())
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= self.group_per_minute:
                ready = max(ready, window[0] + 60)
        if ready > now:
            await self._sleep(ready - now)

    def _sent(self, chat_id: int) -> None:
        now = self._clock()
        self._last_sent[chat_id] = now
        self._last_any = now
        if chat_id < 0:
            self._group_window.setdefault(chat_id, deque()).append(now)

    async def _deliver(self, item: _Outgoing, html: str | None) -> bool | None:
        """Send one message, waiting out 429s and retrying network errors (critical ones until
        the process stops). Returns True when sent, None when given up."""
        plain_text = False
        while True:
            await self._wait_turn(item.chat_id)
            try:
                await self._call(item, html, plain_text)
            except TelegramRetryAfter as exc:
                self._sent(item.chat_id)
                log.warning("Telegram flood control: waiting %s s", exc.retry_after)
                await self._sleep(float(exc.retry_after))
                continue
            except (TelegramNetworkError, TelegramServerError) as exc:
                self._sent(item.chat_id)
                item.attempts += 1
                if item.priority is not Priority.CRITICAL and item.attempts >= GIVE_UP_AFTER:
                    log.error("notification to chat %s dropped after %s failures: %s", item.chat_id,
                              item.attempts, type(exc).__name__)
                    self.dropped += 1
                    return None
                await self._sleep(min(60.0, 2.0 ** item.attempts))
                continue
            except TelegramBadRequest as exc:
                self._sent(item.chat_id)
                if html is not None and not plain_text:
                    log.warning("Telegram refused a notification as HTML (%s); sending it as plain text", exc.message)
                    plain_text = True
                    continue
                log.error("Telegram refused a notification to chat %s: %s", item.chat_id, exc.message)
                self.dropped += 1
                return None
            except (TelegramForbiddenError, TelegramUnauthorizedError) as exc:
                log.error("cannot notify chat %s: %s", item.chat_id, exc.message)
                self.dropped += 1
                return None
            self._sent(item.chat_id)
            self.delivered += 1
            return True

    async def _call(self, item: _Outgoing, html: str | None, plain_text: bool) -> None:
        common: dict[str, Any] = {"chat_id": item.chat_id, "disable_notification": item.silent}
        if item.markup:
            common["reply_markup"] = InlineKeyboardMarkup.model_validate_json(item.markup)
        if item.kind == "text":
            await self.bot.send_message(text=html, parse_mode=None if plain_text else "HTML", **common)
            return
        caption = item.text.as_html() if item.text is not None else None
        media = BufferedInputFile(item.file or b"", filename=item.filename)
        if item.kind == "photo":
            await self.bot.send_photo(photo=media, caption=caption, parse_mode="HTML", **common)
        else:
            await self.bot.send_document(document=media, caption=caption, parse_mode="HTML", **common)


def _units(text: str) -> int:
    """UTF-16 code units of ``text``: how Telegram counts a message's length (an emoji is 2)."""
    return len(text.encode("utf-16-le")) // 2


def _chunks(batch: list[_Outgoing], limit: int = 4096) -> list[str]:
    """Stored HTML texts of a critical batch joined into messages of at most ``limit`` UTF-16
    units (SPEC T-4: each text whole, in order). The HTML's own length bounds the visible
    length Telegram checks (tags and entities only add), and it is counted in UTF-16 units as
    Telegram counts — by code points an emoji-heavy backlog passed 4096 and was refused."""
    if len(batch) == 1:
        return [batch[0].html or ""]
    header = f"<b>🚨 {len(batch)} alerts</b>"
    chunks: list[str] = []
    current = header
    for entry in batch:
        html = entry.html or ""
        if _units(current) + 2 + _units(html) > limit:
            chunks.append(current)
            current = html
        else:
            current = f"{current}\n\n{html}"
    chunks.append(current)
    return chunks
