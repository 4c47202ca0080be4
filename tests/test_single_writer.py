"""SPEC L-4: one process per database — a second ``optiflow`` on the same file refuses to start
with one line naming the holder's pid, and writes nothing. Real processes, real SQLite file."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.lock import holder_pid, lock_path

PROJECT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "OPTIFLOW_", "BINANCE_"))}
    env["PYTHONPATH"] = str(PROJECT)
    return env


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True,
                          timeout=180, env=_env(), cwd=cwd)


def _fingerprint(db: Path) -> dict[str, str]:
    """sha256 of the database file and its WAL / shared-memory files (what "nothing written" means)."""
    out = {}
    for suffix in ("", "-wal", "-shm"):
        path = db.with_name(db.name + suffix)
        out[suffix or "db"] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"
    return out


@pytest.fixture
def first_run(tmp_path):
    """``optiflow run`` (paper, console chat) on ``shared.db``, replaying slowly so it sits
    still; yields (process, db path) once it holds the database and has printed its prompt."""
    db = tmp_path / "shared.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "run", "--db", str(db), "--symbols", "XRP", "--timeframe", "5m",
         "--speed", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
    )
    try:
        banner = process.stdout.readline()  # printed after the runtime is built (lock, migrations, restore)
        assert "console chat" in banner, (banner, process.stderr.read() if process.poll() is not None else "")
        yield process, db
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_l4_second_process_refuses_to_start_and_names_the_holder(first_run, tmp_path):
    """L-4: while one ``optiflow run`` holds ``shared.db``, a second ``run`` and a ``backtest``
    on the same file each exit 2 with one line naming the holder's pid; the database, its WAL
    and shared memory are byte for byte unchanged; the first process goes on answering and
    exits cleanly."""
    process, db = first_run
    assert holder_pid(db) == process.pid
    time.sleep(1.0)  # let the first candle's writes settle (the next frame is 300 s away at --speed 1)
    before = _fingerprint(db)
    assert before == _fingerprint(db)

    second = _cli("run", "--db", str(db), "--speed", "max", "--say", "/summary", cwd=tmp_path)
    backtest = _cli("backtest", "--db", str(db), "--out", str(tmp_path / "bt"), cwd=tmp_path)

    for result in (second, backtest):
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"in use by OptiFlow process {process.pid}" in lines[0] and str(db) in lines[0]
        assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "bt").exists()
    assert _fingerprint(db) == before  # nothing written by the refused processes
    assert holder_pid(db) == process.pid  # and the lock file still names the holder

    out, err = process.communicate("/summary\nquit\n", timeout=120)
    assert process.returncode == 0, err[-2000:]
    assert "Summary" in out


def test_l4_the_lock_goes_with_the_process_even_on_sigkill(tmp_path):
    """L-4: the lock is the kernel's — a holder killed with SIGKILL leaves no stale lock, so the
    next start on the file succeeds (the crash drill restarts this way)."""
    db = tmp_path / "killed.db"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import asyncio, sys\n"
         "from storage import Storage\n"
         "async def main():\n"
         "    await Storage.open(sys.argv[1])\n"
         "    print('held', flush=True)\n"
         "    await asyncio.sleep(600)\n"
         "asyncio.run(main())\n", str(db)],
        stdout=subprocess.PIPE, text=True, env=_env(), cwd=PROJECT,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = _cli("run", "--db", str(db), "--speed", "max", "--say", "/help", cwd=tmp_path)
        assert refused.returncode == 2 and f"process {holder.pid}" in refused.stderr
        holder.kill()
        holder.wait(timeout=30)
        assert lock_path(db).exists()  # the file stays; the lock does not
        result = _cli("run", "--db", str(db), "--symbols", "XRP", "--timeframe", "5m", "--speed", "max",
                      "--say", "/status", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert holder_pid(db) != holder.pid  # the last holder wrote its own pid
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)


async def test_l4_in_process_second_open_is_refused_before_sqlite_opens(tmp_path):
    """L-4 at the storage layer: a second ``Storage.open`` of a held file raises DatabaseInUse
    naming this pid; after ``close`` the file opens again; the read-only tools still read it."""
    from storage import DatabaseInUse, Storage

    db = tmp_path / "one.db"
    first = await Storage.open(db)
    try:
        with pytest.raises(DatabaseInUse, match=f"process {os.getpid()}"):
            await Storage.open(db)
        reader = await Storage.open_for_reading(db)  # audit verify beside a running bot
        try:
            assert reader.db.readonly
            assert (await reader.audit.verify()).ok
        finally:
            await reader.close()
    finally:
        await first.close()
    again = await Storage.open(db)
    await again.close()
