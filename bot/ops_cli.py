"""Server commands (issue 15: run it for months): ``optiflow backup``, ``optiflow health``,
``optiflow alert`` and ``optiflow watch``.

* ``backup`` copies the database with SQLite's online backup API, in one step from a read-only
  connection: a consistent snapshot, safe while the bot runs (it takes no lock of its own and
  never blocks the bot's writes for longer than the copy of the pages), checked with
  ``PRAGMA integrity_check`` and renamed into place only when complete.
* ``health`` reads the age of the heartbeat file the bot's event loop rewrites (``bot.service``):
  exit 0 when fresh, 1 when stale or missing — the container health check.
* ``alert`` sends one Telegram message to the notification chats with no database and no running
  bot (systemd ``OnFailure=``; a crash also kills the bot's own notifications).
* ``watch`` is the watchdog outside the bot: it polls the heartbeat and sends one alert when the
  bot dies or hangs, and one when it is back (the compose equivalent of ``OnFailure=``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from trading.domain.errors import OptiFlowError

log = logging.getLogger(__name__)


def _db_path(db: Path | None) -> Path:
    if db is not None:
        return db
    from bot.settings import load_settings

    return load_settings().optiflow_db_path


# ------------------------------------------------------------------ backup
def backup_database(db: Path, out: Path) -> tuple[int, str]:
    """Copy ``db`` to ``out`` with the SQLite online backup API (one step: a consistent
    snapshot even while the bot writes), check the copy and return its audit head (seq, hash).

    Raises:
        OptiFlowError: no database at ``db``, ``out`` exists or cannot be written, or the copy
            fails its integrity check (the partial file is removed).
    """
    if not db.is_file():
        raise OptiFlowError(f"no database at {db} (give --db PATH)")
    if out.exists():
        raise OptiFlowError(f"--out {out} already exists: a backup never overwrites a file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptiFlowError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    partial = out.with_name(out.name + ".partial")
    try:
        source = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise OptiFlowError(f"cannot read {db}: {exc}") from None
    try:
        target = sqlite3.connect(partial)
        try:
            source.backup(target)  # pages=-1: every page in one step, under one read transaction
            target.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
            problems = [r[0] for r in target.execute("PRAGMA integrity_check(1)")]
            if problems != ["ok"]:
                raise OptiFlowError(f"the copy of {db} fails PRAGMA integrity_check: {problems[0]}")
            row = target.execute("SELECT seq, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        finally:
            target.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise OptiFlowError(f"backup of {db} failed: {exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    os.replace(partial, out)
    return (0, "0" * 64) if row is None else (int(row[0]), str(row[1]))


def backup_command(args) -> int:
    """``optiflow backup [--db FILE] [--out FILE]``: print where the copy went and its audit
    head (the ``--head`` to verify a restore with)."""
    db = _db_path(args.db)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or db.parent / "backups" / f"{db.stem}-{stamp}.db"
    seq, digest = backup_database(db, out)
    print(f"backup written: {out} ({out.stat().st_size:,} bytes); audit head {seq}:{digest}")
    return 0


# ------------------------------------------------------------------ health
def health_command(args) -> int:
    """``optiflow health [--db FILE] [--max-age S]``: 0 when the bot's event loop beat within
    ``max_age`` seconds, else 1 (one line either way)."""
    from bot.service import heartbeat_age, heartbeat_path

    path = heartbeat_path(_db_path(args.db))
    age = heartbeat_age(path)
    if age is None:
        print(f"unhealthy: no heartbeat at {path}")
        return 1
    if age > args.max_age:
        print(f"unhealthy: last heartbeat {age:.0f} s ago (more than {args.max_age:.0f} s)")
        return 1
    print(f"healthy: last heartbeat {age:.0f} s ago")
    return 0


# ------------------------------------------------------------------ alert
async def send_alert(text: str) -> int:
    """Send ``text`` (plain, cut to 4000 characters) to every notification chat through the Bot
    API, with no database; returns how many chats got it.

    Raises:
        OptiFlowError: no token or no chat configured.
    """
    from aiogram.exceptions import TelegramAPIError, TelegramNetworkError

    from bot.cli import make_telegram_bot
    from bot.settings import load_settings

    settings = load_settings()
    if settings.telegram_bot_token is None:
        raise OptiFlowError("optiflow alert needs TELEGRAM_BOT_TOKEN")
    chats = settings.notify_chat_ids()
    if not chats:
        raise OptiFlowError("optiflow alert needs TELEGRAM_ALLOWED_USER_IDS or TELEGRAM_NOTIFY_CHAT_IDS")
    bot = make_telegram_bot(settings)
    sent = 0
    try:
        for chat_id in chats:
            try:
                await bot.send_message(chat_id=chat_id, text=text[:4000], parse_mode=None)
                sent += 1
            except (TelegramAPIError, TelegramNetworkError) as exc:
                print(f"optiflow: alert to chat {chat_id} failed: {type(exc).__name__}", file=sys.stderr)
    finally:
        await bot.session.close()
    return sent


async def alert_command(args) -> int:
    """``optiflow alert --text TEXT``: exit 0 when at least one chat got it, else 1."""
    text = args.text.replace("\\n", "\n").strip()
    if not text:
        raise OptiFlowError("--text is empty")
    return 0 if await send_alert(text) else 1


# ------------------------------------------------------------------ watch
async def watch_command(args) -> int:
    """``optiflow watch [--db FILE] [--max-age S] [--every S]``: poll the heartbeat until
    stopped; alert once when it goes stale (the bot died or hung) and once when it is fresh
    again. A failed alert is tried again at the next poll."""
    from bot.service import heartbeat_age, heartbeat_path

    path = heartbeat_path(_db_path(args.db))
    host = socket.gethostname()
    down = False
    started = time.monotonic()
    print(f"watching {path}: alert when no heartbeat for {args.max_age:.0f} s", flush=True)
    while True:
        age = heartbeat_age(path)
        stale = age is None or age > args.max_age
        if stale and not down and (age is not None or time.monotonic() - started > args.max_age):
            what = "no heartbeat file" if age is None else f"no heartbeat for {age:.0f} s"
            text = (f"🚨 OptiFlow on {host} is DOWN or hung: {what} ({path.name}). "
                    "Trading and its own alerts stopped; open positions keep their exchange stops.")
            if await _try_alert(text):
                down = True
        elif not stale and down:
            if await _try_alert(f"✅ OptiFlow on {host} is running again (heartbeat {age:.0f} s ago)."):
                down = False
        await asyncio.sleep(args.every)


async def _try_alert(text: str) -> bool:
    try:
        return await send_alert(text) > 0
    except OptiFlowError as exc:
        print(f"optiflow: {exc}", file=sys.stderr, flush=True)
        return False
    except Exception as exc:  # the watchdog must outlive a network error
        print(f"optiflow: alert failed: {type(exc).__name__}", file=sys.stderr, flush=True)
        return False
