"""SQLite persistence of OptiFlow: db (connection, transactions, migrations), repositories.

No Telegram and no trading logic here (STYLE). Usage::

    store = await Storage.open("optiflow.db")
    async with store.transaction():
        await store.positions.upsert(position)
        await store.fills.add(fill)
    await store.close()
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from storage.db import Database, StorageError, StorageFault
from storage.lock import DatabaseInUse
from storage.migrations import SCHEMA_VERSION
from storage.repositories import (
    AccountRepository,
    AuditMismatch,
    AuditRepository,
    BlacklistRepository,
    ConfigSnapshotRepository,
    ConfirmationRepository,
    EquityRepository,
    FillRepository,
    IncidentRepository,
    OrderRepository,
    OutboxRepository,
    PauseRepository,
    PositionRepository,
    RiskStateRepository,
    RuntimeRepository,
    SignalRepository,
)

__all__ = ["SCHEMA_VERSION", "AuditMismatch", "Database", "DatabaseInUse", "Storage", "StorageError", "StorageFault"]


class Storage:
    """Facade over one :class:`Database` and its repositories.

    Attributes: ``db``, ``orders``, ``fills``, ``positions``, ``equity``, ``signals``, ``risk``,
    ``pauses``, ``account``, ``runtime``, ``blacklist``, ``audit``, ``config_snapshots``,
    ``confirmations``, ``incidents``, ``outbox``.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.orders = OrderRepository(db)
        self.fills = FillRepository(db)
        self.positions = PositionRepository(db)
        self.equity = EquityRepository(db)
        self.signals = SignalRepository(db)
        self.risk = RiskStateRepository(db)
        self.pauses = PauseRepository(db)
        self.account = AccountRepository(db)
        self.runtime = RuntimeRepository(db)
        self.blacklist = BlacklistRepository(db)
        self.audit = AuditRepository(db)
        self.config_snapshots = ConfigSnapshotRepository(db)
        self.confirmations = ConfirmationRepository(db)
        self.incidents = IncidentRepository(db)
        self.outbox = OutboxRepository(db)

    @classmethod
    async def open(cls, path: str | Path) -> "Storage":
        """Open (create, check, migrate) the SQLite file at ``path``, holding its process lock
        until :meth:`close` (SPEC L-4: one process per database).

        Raises:
            DatabaseInUse: another process has the file open (the message names its pid).
            StorageError: the file cannot be opened, is corrupt, or its schema is newer than
                this code.
            AuditMismatch: the audit's head marker or the ledger of the balance and the open
                positions disagrees with the file (SPEC A-1): it was edited outside OptiFlow.
        """
        store = cls(await Database.open(path))
        try:
            await store.audit.check_at_start()  # SPEC A-1: never trade on a file edited outside
        except BaseException:
            await store.close()
            raise
        return store

    @classmethod
    async def open_for_reading(cls, path: str | Path) -> "Storage":
        """The storage of an existing file for the read-only tools (``audit verify``,
        ``audit export``): with the process lock when the file is free, else read-only beside
        the process that holds it (read-only: nothing written; an older schema is refused).

        Raises:
            StorageError: as :meth:`open`, or a read-only open of an older schema.
        """
        try:
            return cls(await Database.open(path))  # no start check: verify reports it in full
        except DatabaseInUse:
            return cls(await Database.open_readonly(path))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """``async with store.transaction():`` — every repository write inside commits together
        or, if the block raises, not at all (see :meth:`Database.transaction`)."""
        async with self.db.transaction():
            yield

    async def close(self) -> None:
        """Close the database connection."""
        await self.db.close()
