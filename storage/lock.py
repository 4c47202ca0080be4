"""One writer per database file (SPEC L-4): an OS lock held for the life of the process.

``<database>.lock`` beside the SQLite file is locked with ``fcntl.flock(LOCK_EX | LOCK_NB)``
before SQLite opens the database, so a second ``optiflow run`` / ``backtest`` on the same file
fails before it writes anything, and names the holder: the lock file holds the pid of the process
that owns it. The kernel drops the lock when the holder exits, however it exits (SIGKILL
included), so a crash never leaves a stale lock behind; the file itself stays (deleting it would
let two processes lock two different files of the same name).

A separate lock file, not a lock on the database file: SQLite keeps POSIX locks on its own file
descriptors, and closing any other descriptor of that file in this process would drop them.
flock is advisory and local: it does not hold across NFS mounts (keep the database on a local
disk) or against programs that ignore it (the ``sqlite3`` shell).
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from trading.domain.errors import OptiFlowError

try:  # POSIX only; on other systems the lock is a no-op with a warning in the docs
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".lock"


class DatabaseInUse(OptiFlowError):
    """Another process holds the database (SPEC L-4); ``pid`` is the holder's (None if unknown).

    The message is one line fit to show a trader: the file, the holder's pid and what to do.
    """

    def __init__(self, db_path: Path, pid: int | None) -> None:
        self.db_path = db_path
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process (pid unknown)"
        super().__init__(
            f"database {db_path} is in use by OptiFlow {holder}; one process per database "
            "(SPEC L-4): stop that one first or give --db another file"
        )


def lock_path(db_path: str | Path) -> Path:
    """The lock file of the database at ``db_path``: the same path plus ``.lock``."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + LOCK_SUFFIX)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class ProcessLock:
    """The exclusive lock of one database file, taken by :meth:`acquire` and held until
    :meth:`release` (or the process ends).

    Args:
        db_path: the SQLite database file the lock protects (it need not exist yet).
    """

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self.path = lock_path(self.db_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock without waiting and write this process's pid into the lock file.

        Raises:
            DatabaseInUse: another process holds it (the message names its pid).
            OptiFlowError: the lock file cannot be created (missing folder, no permission).
        """
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            raise OptiFlowError(f"--db {self.db_path}: the folder {self.db_path.parent} does not exist") from None
        except OSError as exc:
            raise OptiFlowError(f"--db {self.db_path}: cannot create the lock file {self.path}: "
                                f"{exc.strerror or exc}") from None
        if fcntl is None:  # pragma: no cover - no flock on this system
            self._fd = fd
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise OptiFlowError(f"--db {self.db_path}: cannot lock {self.path}: {exc.strerror or exc}") from None
            pid = _read_pid(fd)
            deadline = time.monotonic() + 0.5
            while pid is None and time.monotonic() < deadline:  # the holder is writing its pid now
                time.sleep(0.02)
                pid = _read_pid(fd)
            os.close(fd)
            raise DatabaseInUse(self.db_path, pid) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError:
            pass  # the lock holds without the pid; a second process says "pid unknown"
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it); the file stays."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def holder_pid(db_path: str | Path) -> int | None:
    """The pid written in the lock file of ``db_path`` (the holder if it is locked), or None."""
    try:
        text = lock_path(db_path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
