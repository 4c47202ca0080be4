"""One aiosqlite connection with explicit transactions (STYLE: mautrix/python's aiosqlite layer).

The connection runs with ``isolation_level=None`` so that sqlite3 never opens or commits
transactions behind our back; :meth:`Database.transaction` issues ``BEGIN IMMEDIATE`` /
``COMMIT`` / ``ROLLBACK`` itself, serialised by an ``asyncio.Lock``. A context variable remembers
which transaction the current task is in, so helpers called inside a ``transaction()`` block join
it instead of waiting for the lock they already hold (no deadlock), and helpers called outside
one run in their own short transaction.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import aiosqlite

from storage.lock import ProcessLock
from storage.migrations import MIGRATIONS
from trading.domain.errors import OptiFlowError

log = logging.getLogger(__name__)

PRAGMAS = ("foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000")

# The transaction token of the current task (one module-level variable for every Database:
# tokens are unique objects, so a task inside db A's transaction is not "inside" db B's).
_CURRENT_TXN: ContextVar[object | None] = ContextVar("optiflow_storage_txn", default=None)


class StorageError(OptiFlowError):
    """The database cannot be opened or migrated (unreadable file, schema newer than the code).

    The message names the file or the versions involved; it is fit to show a trader.
    """


class StorageFault(StorageError):
    """A write to the open database failed (SPEC M-1): disk full, read-only file or folder,
    locked by another program past ``busy_timeout``, I/O error, corruption. Trading must halt:
    the message is one line naming the file and SQLite's reason."""


def is_storage_fault(exc: BaseException) -> bool:
    """True for SQLite errors of the file or the disk (``OperationalError`` and plain
    ``DatabaseError``), False for errors of the statement itself (constraint violations,
    misuse), which are bugs, not faults."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


def split_statements(script: str) -> list[str]:
    """Split an SQL script into complete statements (semicolons in strings, comments and
    trigger bodies are respected, via ``sqlite3.complete_statement``)."""
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer.strip())
            buffer = ""
    return statements


class Database:
    """The single SQLite connection of the process; rows come back as ``sqlite3.Row``.

    Use :meth:`open` (never the constructor) and :meth:`close` on shutdown. Errors from SQLite
    itself (constraint violations, a locked file after ``busy_timeout`` = 5000 ms) propagate as
    ``sqlite3.Error``.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path, lock: ProcessLock | None = None) -> None:
        self._conn = conn
        self.path = path
        self._process_lock = lock
        self.readonly = False
        self.fault: StorageFault | None = None
        self._fault_listeners: list[Callable[[StorageFault], None]] = []
        self._lock = asyncio.Lock()
        self._txn: object | None = None  # token of the transaction holding the lock
        self._savepoints = 0

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    async def open(cls, path: str | Path, *, migrations: Sequence[str] = MIGRATIONS, lock: bool = True) -> "Database":
        """Open (creating if needed) the database file at ``path``, check it and bring its schema
        up to date.

        Args:
            path: the SQLite file; its parent folder must exist.
            migrations: the migration steps (default: :data:`storage.migrations.MIGRATIONS`).
            lock: take the process lock of the file first (SPEC L-4: one writer per database),
                held until :meth:`close`; nothing is written before it is held.

        Raises:
            DatabaseInUse: another process holds the file (the message names its pid).
            StorageError: the file cannot be opened, fails ``PRAGMA integrity_check``, a
                migration fails, or its ``user_version`` is newer than ``len(migrations)`` (a
                downgrade would corrupt it).
            OptiFlowError: the folder does not exist.
        """
        path = Path(path)
        process_lock = ProcessLock(path) if lock else None
        if process_lock is not None:
            process_lock.acquire()
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            if process_lock is not None:
                process_lock.release()
            raise StorageError(f"Cannot open database {path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        db = cls(conn, path, process_lock)
        try:
            await db._refuse_newer(len(migrations))  # before the PRAGMAs change anything
            await db.check_integrity()
            for pragma in PRAGMAS:  # outside any transaction: foreign_keys/WAL ignore it inside
                async with conn.execute(f"PRAGMA {pragma}"):
                    pass
            await db._migrate(migrations)
        except BaseException as exc:
            await conn.close()
            if process_lock is not None:
                process_lock.release()
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"Cannot open database {path}: {exc}") from exc
            raise
        return db

    @classmethod
    async def open_readonly(cls, path: str | Path, *, known_version: int = len(MIGRATIONS)) -> "Database":
        """Open an existing database read-only without the process lock (``audit verify``
        beside a running bot, SPEC A-1): no PRAGMA, no migration, nothing written.

        Raises:
            StorageError: the file cannot be opened or read, fails ``PRAGMA integrity_check``, or
                its schema version differs from ``known_version`` (a read-only open cannot migrate).
        """
        path = Path(path)
        try:
            conn = await aiosqlite.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"Cannot open database {path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        db = cls(conn, path)
        db.readonly = True
        try:
            current = await db._refuse_newer(known_version)
            if current != known_version:
                raise StorageError(f"Database {path} has schema version {current}, older than this code's "
                                   f"{known_version}; stop the process using it and run this again to upgrade it.")
            await db.check_integrity()
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"Cannot open database {path}: {exc}") from exc
            raise
        return db

    async def check_integrity(self) -> None:
        """``PRAGMA integrity_check`` of the whole file (SPEC A-1: at start and in ``audit
        verify``), so scattered corruption is refused with one line instead of a traceback later.

        Raises:
            StorageError: naming the first problem SQLite found.
        """
        try:
            rows = await self.fetchall("PRAGMA integrity_check(5)")
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"Database {self.path} is corrupt: {exc} (restore a backup, see README)") from None
        problems = [line.strip() for r in rows for line in str(r[0]).splitlines()
                    if line.strip() and line.strip() != "ok" and not line.startswith("***")]
        if problems:
            raise StorageError(f"Database {self.path} is corrupt: PRAGMA integrity_check: {problems[0]}"
                               f"{f' (+{len(problems) - 1} more)' if len(problems) > 1 else ''} "
                               "(restore a backup, see README)")

    async def close(self) -> None:
        """Close the connection (waits for a running transaction of another task to finish).

        Raises:
            StorageError: called from inside this database's own ``transaction()`` block.
        """
        if self.in_transaction():
            raise StorageError("Cannot close the database inside one of its transactions.")
        async with self._lock:
            try:
                await self._conn.close()
            finally:
                if self._process_lock is not None:
                    self._process_lock.release()

    async def user_version(self) -> int:
        """The schema version stored in the file (``PRAGMA user_version``)."""
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0])

    async def _refuse_newer(self, known: int) -> int:
        """The file's schema version; raises StorageError if it is newer than ``known``."""
        current = await self.user_version()
        if current > known:
            raise StorageError(
                f"Database {self.path} has schema version {current}, newer than the "
                f"version {known} this code knows; refusing to open it (upgrade OptiFlow)."
            )
        return current

    async def _migrate(self, migrations: Sequence[str]) -> None:
        """Apply pending steps, one transaction per step (which also bumps user_version); the
        version is re-read inside the transaction, so two processes opening at once are safe."""
        known = len(migrations)
        while True:
            async with self.transaction():
                current = await self._refuse_newer(known)
                if current == known:
                    return
                for statement in split_statements(migrations[current]):
                    await self.execute(statement)
                await self.execute(f"PRAGMA user_version = {current + 1:d}")

    # ------------------------------------------------------------------ faults (SPEC M-1)
    def on_fault(self, listener: Callable[[StorageFault], None]) -> None:
        """Call ``listener(fault)`` (synchronously, once) at the first failed write, so the
        composition root can halt trading and alert over a path that does not need this file."""
        self._fault_listeners.append(listener)
        if self.fault is not None:
            listener(self.fault)

    def _refuse_after_fault(self) -> None:
        """Fail closed (SPEC M-1): after one failed write no later write may commit, or a
        restart would find later state (a newer replay cursor) without the state the failed
        write carried. The file keeps what the last good transaction committed."""
        if self.fault is not None:
            raise StorageFault(f"{self.fault} (no write since)")

    def _faulted(self, exc: sqlite3.Error) -> StorageFault:
        """Turn SQLite's error into a :class:`StorageFault`; tell the listeners the first time."""
        fault = StorageFault(f"database write failed on {self.path}: {exc}")
        if self.fault is None:
            self.fault = fault
            for listener in self._fault_listeners:
                try:
                    listener(fault)
                except Exception:  # a listener must never hide the fault itself
                    log.exception("storage fault listener %r failed", listener)
        return fault

    # ------------------------------------------------------------------ transactions
    def in_transaction(self) -> bool:
        """True when the calling task is inside this database's ``transaction()`` block."""
        return self._txn is not None and _CURRENT_TXN.get() is self._txn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """``async with db.transaction():`` — BEGIN IMMEDIATE, COMMIT on success, ROLLBACK on
        any exception (which is re-raised).

        Nested use in the same task does not deadlock: it becomes a SAVEPOINT, so an exception
        caught inside the outer block undoes only the inner block's writes.
        """
        if self.in_transaction():
            async with self._savepoint():
                yield
            return
        async with self._lock:
            await self._run("BEGIN IMMEDIATE")
            token = self._txn = object()
            reset = _CURRENT_TXN.set(token)
            try:
                yield
            except BaseException:
                await asyncio.shield(self._rollback())
                raise
            else:
                try:
                    await self._run("COMMIT")
                except BaseException:
                    await asyncio.shield(self._rollback())
                    raise
            finally:
                _CURRENT_TXN.reset(reset)
                self._txn = None

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        self._savepoints += 1
        name = f"sp_{self._savepoints}"
        await self._run(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            await self._run(f"ROLLBACK TO {name}")
            await self._run(f"RELEASE {name}")
            raise
        else:
            await self._run(f"RELEASE {name}")
        finally:
            self._savepoints -= 1

    async def _run(self, sql: str) -> None:
        if sql != "ROLLBACK" and not sql.startswith(("ROLLBACK TO", "RELEASE")):
            self._refuse_after_fault()
        try:
            async with self._conn.execute(sql):
                pass
        except sqlite3.Error as exc:
            if is_storage_fault(exc):
                raise self._faulted(exc) from exc
            raise

    async def _rollback(self) -> None:
        if self._conn.in_transaction:  # SQLite may already have rolled back (e.g. SQLITE_FULL)
            try:
                await self._run("ROLLBACK")
            except StorageFault:
                pass  # the fault that caused the rollback is the one to report

    @asynccontextmanager
    async def _joined(self) -> AsyncIterator[None]:
        """Join the caller's transaction, or run in a short one of its own."""
        if self.in_transaction():
            yield
        else:
            async with self.transaction():
                yield

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        """Reads inside a transaction see its writes; outside, they wait for it to finish so
        they never see uncommitted rows that a rollback could still undo."""
        if self.in_transaction():
            yield
        else:
            async with self._lock:
                yield

    # ------------------------------------------------------------------ helpers
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement (in the current transaction, or its own); returns rowcount.

        Raises:
            StorageFault: the file or the disk refused the write (SPEC M-1).
        """
        self._refuse_after_fault()
        async with self._joined():
            try:
                async with self._conn.execute(sql, params) as cursor:
                    return cursor.rowcount
            except sqlite3.Error as exc:
                if is_storage_fault(exc):
                    raise self._faulted(exc) from exc
                raise

    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        """Run one write statement for every parameter tuple of ``seq``, in one transaction.

        Raises:
            StorageFault: the file or the disk refused the write (SPEC M-1).
        """
        self._refuse_after_fault()
        async with self._joined():
            try:
                async with self._conn.executemany(sql, seq):
                    pass
            except sqlite3.Error as exc:
                if is_storage_fault(exc):
                    raise self._faulted(exc) from exc
                raise

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """The first row of a query, or ``None``."""
        async with self._reading():
            async with self._conn.execute(sql, params) as cursor:
                return await cursor.fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Every row of a query."""
        async with self._reading():
            return list(await self._conn.execute_fetchall(sql, params))
