"""Writes the engine's domain events to SQLite in one transaction per flush.

Events are buffered by :class:`trading.domain.events.EventBuffer`; a flush keeps only the last version
of each order, position, risk state and the account (they are snapshots), and batch-inserts
fills, equity samples and evaluated signals. The audit records of the flush's decisions
(SPEC A-1: orders, fills, risk decisions, exits, commands, reconciliation) are chained and
written in the SAME transaction as the state they describe, so a crash keeps both or neither.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence

from trading.domain.audit import entries_for_events
from trading.domain.events import (
    AccountChanged,
    AccountRiskChanged,
    Alert,
    BlacklistChanged,
    EquitySampled,
    Event,
    EventBuffer,
    FillBooked,
    OrderUpdated,
    PositionChanged,
    ReplayProgress,
    RiskStateChanged,
    SignalEvaluated,
    SignalsBelowMinimum,
)

REPLAY_CURSOR_KEY = "replay_cursor_ms"
UNHEARD_KEPT = 50  # alerts kept for a listener attached late (the notifier, after the start-up reconciliation)
ACCOUNT_RISK_KEY = "account_risk"  # SPEC: the account risk state as JSON (trading.domain.models.AccountRisk)

log = logging.getLogger(__name__)

Listener = Callable[[Sequence[Event]], Awaitable[None]]


class Persister:
    """Drains an :class:`EventBuffer` into the repositories of a ``storage.Storage``."""

    def __init__(self, store, buffer: EventBuffer, config_id: str = "") -> None:
        """Args: store (``storage.Storage``), buffer (the engine's sink), config_id (the
        config snapshot id audit records cite, SPEC A-1)."""
        self._store = store
        self._buffer = buffer
        self.config_id = config_id
        self._listeners: list[Listener] = []
        # Alerts flushed while nobody listened: the start-up reconciliation's (SPEC L-3, M-1)
        # run before the notifier is attached; the newest UNHEARD_KEPT are kept for it.
        self.unheard: list[Alert] = []
        self._owed: list[Listener] = []

    def add_listener(self, listener: Listener, *, with_unheard: bool = False) -> None:
        """Call ``await listener(events)`` with every flushed batch, in order, AFTER it is
        committed (the notifier, SPEC T-4: nothing is announced that a crash could undo).
        ``with_unheard``: the next flush first hands it the alerts flushed before any listener
        was attached (e.g. someone else's position found at start), as one batch.
        A listener's exception is logged, never raised into the trading loop."""
        self._listeners.append(listener)
        if with_unheard and self.unheard:
            self._owed.append(listener)

    async def _pay_owed(self) -> None:
        """Hand the unheard alerts to the listeners owed them (then forget them)."""
        owed, self._owed = self._owed, []
        for listener in owed:
            try:
                await listener(list(self.unheard))
            except Exception:
                log.exception("event listener %r failed", listener)
        self.unheard.clear()

    async def flush(self) -> int:
        """Persist every buffered event; returns how many were written."""
        events = self._buffer.drain()
        if not events:
            if self._owed:
                await self._pay_owed()
            return 0
        orders, positions, risk, fills, samples, signals = {}, {}, {}, [], [], []
        blacklist = {}
        account = cursor = account_risk = None
        for event in events:
            if isinstance(event, SignalEvaluated):
                signals.append(event.evaluation)
            elif isinstance(event, SignalsBelowMinimum):
                signals.extend(event.evaluations)
            elif isinstance(event, EquitySampled):
                samples.append(event.snapshot)
            elif isinstance(event, OrderUpdated):
                orders[event.order.client_order_id] = event.order
            elif isinstance(event, FillBooked):
                fills.append(event.fill)
            elif isinstance(event, PositionChanged):
                positions[event.position.position_id] = event.position
            elif isinstance(event, AccountChanged):
                account = event.account
            elif isinstance(event, RiskStateChanged):
                risk[event.state.bot] = event.state
            elif isinstance(event, BlacklistChanged):
                blacklist[(event.entry.bot, event.entry.symbol)] = event.entry
            elif isinstance(event, ReplayProgress):
                cursor = event.cursor_ms
            elif isinstance(event, AccountRiskChanged):
                account_risk = event.state
        audit = entries_for_events(events)
        store = self._store
        async with store.transaction():
            if audit:
                await store.audit.append(audit, self.config_id)
            # One executemany a table: a flush at the end of a backtest writes thousands of rows.
            if orders:
                await store.orders.upsert_many(orders.values())
            if fills:
                await store.fills.add_many(fills)
            if positions:
                await store.positions.upsert_many(positions.values())
            for state in risk.values():
                await store.risk.save(state)
            for entry in blacklist.values():
                await store.blacklist.save(entry)
            if account is not None:
                await store.account.save(account)
            if samples:
                await store.equity.add_many(samples)
            if signals:
                await store.signals.add_many(signals)
            if cursor is not None:
                await store.runtime.set(REPLAY_CURSOR_KEY, str(cursor))
            if account_risk is not None:
                await store.runtime.set(ACCOUNT_RISK_KEY, json.dumps(account_risk.as_dict(), sort_keys=True))
        if not self._listeners:
            self.unheard.extend(event for event in events if isinstance(event, Alert))
            del self.unheard[:-UNHEARD_KEPT]
        elif self._owed:
            await self._pay_owed()
        for listener in self._listeners:
            try:
                await listener(events)
            except Exception:
                log.exception("event listener %r failed", listener)
        return len(events)
