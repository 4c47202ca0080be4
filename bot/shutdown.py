"""The shutdown request of the console chat (SPEC L-2, T-2 /shutdown).

In the console, a confirmed /shutdown calls :meth:`ShutdownSignal.request` (the Dispatcher's
``request_shutdown``); ``optiflow run`` stops the interactive session and the replay, prints
:data:`SHUTDOWN_TEXT` and exits 0. With Telegram, ``bot.lifecycle.Lifecycle.request_shutdown``
takes its place and runs the whole L-2 sequence (stop entries, optional flatten, cancel our
orders, run summary, sessions closed with timeouts).
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

SHUTDOWN_TEXT = "🛑 Bot shutting down…"


class ShutdownSignal:
    """Set once by :meth:`request`; ``reason`` says who asked."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason = ""
        self.flatten: bool | None = None  # the /shutdown dialog's choice (SPEC L-2); None = the default

    def request(self, reason: str, flatten: bool | None = None) -> None:
        """Ask the run loop to shut down (idempotent: the first reason and choice are kept);
        ``flatten``: close every position first (True) or keep them with their stops (False)."""
        if not self.event.is_set():
            self.reason = reason
            self.flatten = flatten
            log.warning("shutdown requested: %s", reason)
            self.event.set()
