"""Start-up build card (SPEC L-1) and graceful shutdown (SPEC L-2).

``Lifecycle.request_shutdown(reason)`` is the one way to stop the process: SIGINT/SIGTERM call
it, and so can a chat command (it is in the Dispatcher's workflow data as ``request_shutdown``,
``await request_shutdown("/shutdown by 4242")``). It only flags the stop and returns at once;
``_run_telegram`` then stops polling and runs :meth:`Lifecycle.shutdown`:

1. stop entries (the replay loop stops; pending entries and ladder additions are cancelled —
   protective reduce-only stops stay on open positions unless they are flattened);
2. optionally close every position (``OPTIFLOW_FLATTEN_ON_SHUTDOWN``);
3. persist; send what is still queued (merged), then post the run summary and "🛑 Bot shutting
   down…" last (critical: stored in the outbox first, so a message Telegram did not accept in
   time is sent at the next start);
4. close the notifier, the scheduler and the bot session, each with a timeout.

A crash (an exception out of polling or the replay) sends "💥 OptiFlow stopped on an error"
with the error type and a redacted one-line message — never a secret — before exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiogram.utils.formatting import Bold, Text, as_key_value, as_list

from bot.notices import Category
from bot.render import account_risk_lines, money, pct, render_summary
from bot.render_audit import render_anchor
from bot.shutdown import SHUTDOWN_TEXT  # one text for the console and the chat
from storage.db import StorageFault
from trading.domain.errors import OptiFlowError

if TYPE_CHECKING:
    from bot.notifier import Notifier
    from trading.domain.views import AccountRiskView
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds each shutdown step may take before it is abandoned (SPEC L-2)."""

    replay: float = 10.0
    orders: float = 10.0
    notifier: float = 10.0
    session: float = 5.0


def version() -> str:
    """The installed optiflow version, or ``unknown``."""
    try:
        return metadata.version("optiflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_commit(directory: Path = PROJECT_DIR) -> str:
    """The short git commit of the source tree (``OPTIFLOW_GIT_COMMIT`` wins), or ``unknown``."""
    forced = os.environ.get("OPTIFLOW_GIT_COMMIT")
    if forced:
        return forced[:40]
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=directory, capture_output=True,
                                text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else "unknown"


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


HALTED_FEED_STATE = "HALTED — database write failed, no new entries (M-1)"


def halt_text(fault: BaseException, secrets: list[str] | None = None) -> Text:
    """The alert for a failed database write (SPEC M-1), for the chat and the console: what
    happened, what the bot did (no new entries; stops stay) and what to do."""
    detail = redact(str(fault).splitlines()[0] if str(fault) else type(fault).__name__, secrets or [])[:400]
    return Text("🛑 ", Bold("Trading halted: database write failed"), "\n", detail, "\n",
                "No new entries. Open positions keep their stop-losses. Free the disk or fix the file, "
                "then start again: the state up to the last good write is kept.")


def build_card(runtime: "Runtime", mode: str, exchange: str, audit_head: tuple[int, str] | str = "",
               account_risk: "AccountRiskView | None" = None) -> Text:
    """SPEC L-1: version, git commit, mode, exchange, equity tier, the limits in force (each
    bot's as its preset applies them now: tier, launch stage, R-9), the account risk lines (Z-5
    launch stage, R-5 drawdown stage, R-3 hard limit, S-7 live gate), the audit chain's head
    (A-1 anchor: ``SEQ:HASH`` in full; a bare hash is shown shortened) and what the start-up
    reconciliation found (L-3)."""
    config = runtime.config
    engine = runtime.engine
    quote = config.account.quote
    equity = engine.equity()
    tier = engine.risk.tier(equity)
    account = config.account
    bots = []
    for b in config.bots:
        limits = engine.limits(b, equity)
        bots.append(f"{b.name}: {', '.join(s.split('/')[0] for s in b.symbols)} · {b.timeframe} · {limits.leverage}× · "
                    f"risk {pct(limits.risk_pct)} · max {limits.max_positions} positions · "
                    f"SL streak stop {limits.sl_streak_limit}")
    return as_list(
        Bold(f"🚀 OptiFlow {version()} ({git_commit()})"),
        as_key_value("Mode", mode.upper()),
        as_key_value("Exchange", exchange),
        as_key_value("Preset", config.preset),
        as_key_value("Tier", f"{tier.name} (equity {money(equity, quote)}, max leverage {tier.max_leverage}×)"),
        as_key_value("Limits", f"daily loss {pct(account.daily_loss_limit_pct)} (hard {pct(account.daily_loss_hard_limit_pct)}) · "
                     f"margin {pct(account.max_total_margin_pct)} · position {pct(account.max_position_size_pct)} · "
                     f"drawdown reduce {pct(account.drawdown_reduce_pct)} or {money(account.drawdown_reduce_quote, quote)}, "
                     f"pause {pct(account.drawdown_pause_pct)} or {money(account.drawdown_pause_quote, quote)}"),
        *(as_key_value("Bot", line) for line in bots),
        *account_risk_lines(account_risk, quote),
        *([_head_line(audit_head)] if audit_head else []),
        *_reconcile_lines(runtime),
        *(as_key_value("Venue", line) for line in getattr(runtime, "venue_notes", list)()),
    )


def _head_line(audit_head: tuple[int, str] | str) -> Text:
    if isinstance(audit_head, tuple):
        return render_anchor(*audit_head)
    return as_key_value("Audit head", f"{audit_head[:16]}…")


def shutdown_text(reason: str, audit_head: tuple[int, str] | None) -> Text:
    """"🛑 Bot shutting down… (reason)" and the audit head at that moment (SPEC L-2, A-1 anchor)."""
    lines: list[Any] = [SHUTDOWN_TEXT, reason]
    if audit_head is not None:
        lines += ["\n", render_anchor(*audit_head)]
    return Text(*lines)


def _reconcile_lines(runtime: "Runtime") -> list[Text]:
    """What the L-3 restart reconciliation checked, found and repaired (none before a build)."""
    report = getattr(runtime, "reconcile_report", None)
    return [] if report is None else [Text(report.text())]


class Lifecycle:
    """Owns the stop flag and the shutdown sequence of one ``optiflow run`` (SPEC L-1, L-2).

    Args:
        runtime: the paper runtime (engine, service, persister).
        notifier: the outgoing queue (build card, summary, shutdown and crash messages).
        flatten: close every position at shutdown (``flatten_on_shutdown``: default on in live,
            off in paper/demo, SPEC L-2; the /shutdown dialog's choice overrides it).
        secrets: values that must never appear in a crash message (token, keys, proxy URL).
        timeouts: per-step limits.
    """

    def __init__(self, runtime: "Runtime", notifier: "Notifier", *, flatten: bool = False,
                 secrets: list[str] | None = None, timeouts: Timeouts = Timeouts(),
                 mode: str = "paper", exchange: str = "simulated Binance USDⓈ-M (replay of bundled real candles)") -> None:
        self.runtime = runtime
        self.notifier = notifier
        self.flatten = flatten
        self.secrets = [s for s in (secrets or []) if s]
        self.timeouts = timeouts
        self.mode = mode
        self.exchange = exchange
        self.stop_requested = asyncio.Event()
        self.reason = ""
        self.crash: BaseException | None = None

    # ------------------------------------------------------------------ start
    async def announce_start(self) -> Text:
        """Log the build card and queue it for the chat (SPEC L-1)."""
        await self.runtime.audit_head()  # persists what is buffered first
        card = build_card(self.runtime, self.mode, self.exchange, await self.runtime.store.audit.head(),
                          await self.runtime.service.account_risk())
        text, _ = card.render()
        for line in text.splitlines():
            log.info("build card: %s", line)
        await self.notifier.notify(Category.LIFECYCLE, card)
        return card

    # ------------------------------------------------------------------ stop
    async def request_shutdown(self, reason: str, flatten: bool | None = None) -> None:
        """Ask for the L-2 shutdown (signals, /shutdown, a crash); returns at once; repeated
        calls keep the first reason. ``flatten``: the trader's choice in the /shutdown dialog
        ("close all and stop" True, "stop, keep positions with their stops" False); None keeps
        ``flatten_on_shutdown``."""
        if not self.stop_requested.is_set():
            if flatten is not None:
                self.flatten = flatten
            self.reason = reason[:200]
            log.warning("shutdown requested: %s", self.reason)
            self.stop_requested.set()

    def install_signal_handlers(self) -> None:
        """SIGINT and SIGTERM request the shutdown (instead of aiogram's own handlers)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda s=sig: asyncio.ensure_future(self.request_shutdown(s.name)))

    def on_storage_fault(self, fault: StorageFault, stop_trading: asyncio.Event | None = None) -> None:
        """``Database.on_fault`` listener (SPEC M-1): halt entries at once (the trading loop's
        stop flag; /status says HALTED), remember the fault as the crash and request the
        shutdown, whose crash message goes out without the database (the notifier keeps it in
        memory when the outbox cannot be written)."""
        self.crash = self.crash or fault
        if stop_trading is not None:
            stop_trading.set()
        service = getattr(self.runtime, "service", None)
        if service is not None:
            service.feed_state = HALTED_FEED_STATE
        asyncio.ensure_future(self.request_shutdown("storage fault: trading halted"))

    def watch(self, task: asyncio.Task) -> None:
        """Done-callback for a background task (the replay): an exception is a crash."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.crash = self.crash or error
            asyncio.ensure_future(self.request_shutdown(f"crash: {type(error).__name__}"))

    def crash_text(self, error: BaseException) -> Text:
        """The chat message for a crash: type and a redacted first line, no traceback (a
        storage fault: :func:`halt_text`, SPEC M-1)."""
        if isinstance(error, StorageFault):
            return halt_text(error, self.secrets)
        detail = redact(str(error).splitlines()[0] if str(error) else "", self.secrets)[:300]
        return Text("💥 ", Bold("OptiFlow stopped on an error"), f": {type(error).__name__}",
                    f": {detail}" if detail else "", "\nSee the log for details.")

    def log_crash(self, error: BaseException) -> None:
        """Log the crash with its traceback, secrets redacted; an error of ours (a storage
        fault, SPEC M-1) in one line — its message says everything."""
        if isinstance(error, OptiFlowError):
            log.error("stopped: %s", redact(f"{type(error).__name__}: {error}", self.secrets))
            return
        text = "".join(traceback.format_exception(error))
        log.error("crash:\n%s", redact(text, self.secrets))

    async def shutdown(self, replay: asyncio.Task | None, stop_replay: asyncio.Event) -> bool:
        """Run the L-2 sequence (see the module doc). Returns True when every message went out."""
        runtime = self.runtime
        stop_replay.set()
        if replay is not None:
            try:
                await asyncio.wait_for(asyncio.shield(replay), self.timeouts.replay)
            except asyncio.TimeoutError:
                log.error("replay did not stop within %s s", self.timeouts.replay)
            except Exception as exc:  # already reported through watch()
                self.crash = self.crash or exc
        summary = head = None
        try:
            await asyncio.wait_for(self._stop_trading(), self.timeouts.orders)
            summary = render_summary(await runtime.service.summary())
        except Exception as exc:
            log.error("shutdown step failed: %s", redact(f"{type(exc).__name__}: {exc}", self.secrets))
        try:
            head = await runtime.store.audit.head()  # the anchor of what this run recorded
        except Exception as exc:
            log.error("audit head not read: %s", type(exc).__name__)
        # What is still queued (entries, exits of the last moments) goes out first, merged into
        # as few messages as possible, so the shutdown message is the last one the trader sees.
        self.notifier.merge_after = 1
        backlog = not await self.notifier.drain(self.timeouts.notifier / 2)
        if backlog:
            log.warning("notifications still queued at shutdown; the shutdown message goes first")
        finals: list[int] = []
        if self.crash is not None:
            self.log_crash(self.crash)
            finals += await self.notifier.notify(Category.LIFECYCLE, self.crash_text(self.crash), first=backlog)
        if summary is not None:
            finals += await self.notifier.notify(
                Category.LIFECYCLE, Text(Bold("Run summary"), "\n", summary), first=backlog)
        reason = f" ({self.reason})" if self.reason and self.crash is None else ""
        finals += await self.notifier.notify(Category.LIFECYCLE, shutdown_text(reason, head), first=backlog)
        if backlog:
            # The shutdown message is the last one: stop once the final messages went out;
            # critical leftovers stay in the outbox for the next start.
            sent = await self.notifier.wait_sent(finals, self.timeouts.notifier / 2)
            await self.notifier.close(0)
        else:
            sent = await self.notifier.close(self.timeouts.notifier / 2)
        if not sent:
            log.error("Telegram did not take the shutdown messages in time; they are kept for the next start")
        return sent

    async def _stop_trading(self) -> None:
        runtime = self.runtime
        if self.flatten:
            closed = await runtime.flatten()
            log.warning("flatten on shutdown: %s positions closed", closed)
        cancelled = await runtime.engine.cancel_working_orders(keep_protection=not self.flatten)
        log.info("shutdown: %s working orders cancelled", cancelled)
        await runtime.persister.flush()


async def close_with_timeout(what: str, closing: Any, timeout: float) -> None:
    """Await ``closing`` for at most ``timeout`` seconds; log (never raise) a failure."""
    try:
        await asyncio.wait_for(closing, timeout)
    except Exception as exc:
        log.error("closing %s failed: %s", what, type(exc).__name__)
