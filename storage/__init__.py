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

from storage.db import Database, StorageError
from storage.migrations import SCHEMA_VERSION
from storage.repositories import (
    AccountRepository,
    AuditRepository,
    BlacklistRepository,
    ConfigSnapshotRepository,
    ConfirmationRepository,
    EquityRepository,
    FillRepository,
    IncidentRepository,
    OrderRepository,
    PauseRepository,
    PositionRepository,
    RiskStateRepository,
    RuntimeRepository,
    SignalRepository,
)

__all__ = ["SCHEMA_VERSION", "Database", "Storage", "StorageError"]


class Storage:
    """Facade over one :class:`Database` and its repositories.

    Attributes: ``db``, ``orders``, ``fills``, ``positions``, ``equity``, ``signals``, ``risk``,
    ``pauses``, ``account``, ``runtime``, ``blacklist``, ``audit``, ``config_snapshots``.
    ``pauses``, ``account``, ``runtime``, ``blacklist``, ``confirmations``, ``incidents``.
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

    @classmethod
    async def open(cls, path: str | Path) -> "Storage":
        """Open (create, migrate) the SQLite file at ``path``.

        Raises:
            StorageError: the file cannot be opened or its schema is newer than this code.
        """
        return cls(await Database.open(path))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """``async with store.transaction():`` — every repository write inside commits together
        or, if the block raises, not at all (see :meth:`Database.transaction`)."""
        async with self.db.transaction():
            yield

    async def close(self) -> None:
        """Close the database connection."""
        await self.db.close()
