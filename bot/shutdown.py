"""Minimal shutdown request for /shutdown (SPEC L-2, T-2 control).

A confirmed /shutdown calls :meth:`ShutdownSignal.request` (injected into the Dispatcher as
``request_shutdown``); the run loop in ``bot/cli.py`` waits on :attr:`ShutdownSignal.event`,
stops polling and the replay, sends :data:`SHUTDOWN_TEXT` and exits 0.

INTEGRATION NOTE: the full L-2 sequence (stop entries, optional flatten, cancel our orders, run
summary, session timeouts) lives in the lifecycle module of the other branch; at merge its
``request_shutdown(reason)`` replaces this class and the run loop calls that sequence.
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

    def request(self, reason: str) -> None:
        """Ask the run loop to shut down (idempotent: the first reason is kept)."""
        if not self.event.is_set():
            self.reason = reason
            log.warning("shutdown requested: %s", reason)
            self.event.set()
