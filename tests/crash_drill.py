"""Crash drill (SPEC L-3, O-5, A-1, O-2): kill a paper replay with SIGKILL at random moments,
restart it on the same SQLite file each time, and compare the end state with an uninterrupted
run of the same window.

Usage: ``python -m tests.crash_drill [--kills 50] [--seed 6] [--days 6]``; prints one JSON object
(figures and violations) and exits 1 when a violation is found. The driver imports the trading
core once and forks one child per run (``os.fork``: a restart costs milliseconds, not the
~0.7 s of a fresh interpreter); each child is a whole bot process — it opens the database,
restores and reconciles, replays with durable flushes — and is killed with SIGKILL. Nothing here
imports aiogram.

Checked:
- no order placed twice: every client order id has exactly one ORDER_PLACED audit record, and
  the set of orders equals the uninterrupted run's;
- after each restart's reconciliation, every open position has a resting stop-loss on the
  (simulated) exchange covering its contracts;
- balance, positions, orders, fills, risk state, blacklist, signals and equity samples equal
  the uninterrupted run's (exact Decimal text); the audit trail equals it record by record once
  the RECONCILE records each restart adds are set aside;
- the audit chain verifies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import select
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bot.runtime import build_paper_runtime
from trading.domain.config import BotProfile, TradingConfig
from trading.adapters.marketdata import default_data_dir
from trading.domain.models import OrderLeg

DAY0 = 1_748_908_800_000  # 2025-06-03T00:00Z, first bundled candle
SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT", "XRP/USDT:USDT", "SOL/USDT:USDT")


CONFIG_FILE: Path | None = None  # --config: a trading config TOML instead of the default below


def drill_config() -> TradingConfig:
    """Four symbols on 5m, up to 4 positions: trades, exits and open positions in a few days
    (or the ``--config`` file, e.g. examples/scaling.toml for the Z-4 preset and E-10 ladder)."""
    if CONFIG_FILE is not None:
        from trading.domain.config import load_trading_config

        return load_trading_config(CONFIG_FILE)
    return TradingConfig(bots=(BotProfile(symbols=SYMBOLS, timeframe="5m", max_positions=4),))


async def _child(db: Path, end_ms: int, fd: int) -> None:
    """One bot process: build (restore + reconcile), report stops, replay durably to the end."""
    runtime = await build_paper_runtime(config=drill_config(), db_path=db, data_dir=default_data_dir(), end_ms=end_ms)
    resting = await runtime.exchange.fetch_open_orders()
    naked = [
        f"{p.symbol} {p.contracts}" for p in runtime.engine.positions.values()
        if not any(o.leg is OrderLeg.STOP_LOSS and o.symbol == p.symbol and o.amount >= p.contracts for o in resting)
    ]
    report = runtime.reconcile_report
    os.write(fd, (json.dumps({"ready": True, "positions": report.positions, "found": report.found,
                              "naked": naked}) + "\n").encode())
    started = time.perf_counter()
    await runtime.replay(durable=True)
    await runtime.close()
    os.write(fd, (json.dumps({"done": True, "replay_s": time.perf_counter() - started}) + "\n").encode())


def _fork(db: Path, end_ms: int) -> tuple[int, int]:
    """Start a child bot process; returns (pid, read end of its status pipe)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the driver
        code = 0
        try:
            os.close(read_fd)
            asyncio.run(_child(db, end_ms, write_fd))
        except BaseException:  # noqa: BLE001 - report and exit non-zero
            import traceback

            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


class _Lines:
    """JSON lines from a child's pipe, with a timeout."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer, self.closed = fd, b"", False

    def next(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.closed = True
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def _run_to_end(db: Path, end_ms: int) -> tuple[dict, dict]:
    pid, fd = _fork(db, end_ms)
    lines = _Lines(fd)
    ready = lines.next(60)
    done = lines.next(120)
    os.waitpid(pid, 0)
    os.close(fd)
    if not ready or not done:
        raise RuntimeError("the child bot process failed (see stderr)")
    return ready, done


def _situation(db: Path) -> tuple[int | None, list[str]]:
    """The replay cursor the killed run left, and what was in flight in its saved state:
    "entry_in_flight" (entry sent, not filled), "position_open", "after_partial_close"."""
    with sqlite3.connect(db) as conn:
        try:
            row = conn.execute("SELECT value FROM runtime WHERE key = 'replay_cursor_ms'").fetchone()
            entries = conn.execute("SELECT COUNT(*) FROM orders WHERE status = 'open' AND leg = 'entry'").fetchone()[0]
            held = conn.execute("SELECT contracts, initial_contracts FROM positions WHERE closed_ms IS NULL").fetchall()
        except sqlite3.OperationalError:
            return None, []
    conn.close()
    tags = ["entry_in_flight"] * bool(entries) + ["position_open"] * bool(held)
    tags += ["after_partial_close"] * any(c != i for c, i in held)
    return (int(row[0]) if row else None), tags


def state(db: Path) -> dict[str, list]:
    """Everything a trader's money depends on, as comparable rows (ids of append-only tables
    left out: they count insert attempts, not state)."""
    with sqlite3.connect(db) as conn:
        out = {
            "account": conn.execute("SELECT balance, peak_equity, updated_ms FROM account").fetchall(),
            "positions": conn.execute("SELECT * FROM positions ORDER BY position_id").fetchall(),
            "orders": conn.execute("SELECT * FROM orders ORDER BY client_order_id").fetchall(),
            "fills": conn.execute("SELECT client_order_id, bot, symbol, side, leg, amount, price, fee, timestamp"
                                  " FROM fills ORDER BY id").fetchall(),
            "risk_state": conn.execute("SELECT * FROM risk_state ORDER BY bot").fetchall(),
            "blacklist": conn.execute("SELECT * FROM symbol_blacklist ORDER BY bot, symbol").fetchall(),
            "signals": conn.execute("SELECT timestamp, bot, symbol, side, score, passed, blocked_by, min_score,"
                                    " components FROM signals ORDER BY id").fetchall(),
            "equity": conn.execute("SELECT timestamp, balance, equity FROM equity_snapshots ORDER BY id").fetchall(),
            "audit": conn.execute("SELECT ts, action, bot, symbol, side, size, why, config_id FROM audit"
                                  " WHERE action != 'RECONCILE' ORDER BY id").fetchall(),
        }
    conn.close()
    return out


def placed_twice(db: Path) -> list[str]:
    """Client order ids with more than one ORDER_PLACED audit record."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT json_extract(why, '$.client_order_id'), COUNT(*) FROM audit WHERE action = 'ORDER_PLACED'"
            " GROUP BY 1 HAVING COUNT(*) > 1"
        ).fetchall()
    conn.close()
    return [cid for cid, _n in rows]


async def _verify(db: Path):
    from storage import Storage

    store = await Storage.open(db)
    try:
        return await store.audit.verify()
    finally:
        await store.close()


def drill(kills: int, seed: int, days: int, workdir: Path) -> dict:
    """Run the reference and the killed run; returns the figures and the violations found."""
    rng = random.Random(seed)
    end_ms = DAY0 + days * 86_400_000
    reference = workdir / "reference.db"
    _, done = _run_to_end(reference, end_ms)
    replay_s = done["replay_s"]
    crashed = workdir / "crashed.db"
    violations: list[str] = []
    moments = {"starting": 0, "replaying": 0}
    cursors: list[int] = []
    repairs = 0
    made = 0
    in_flight: dict[str, int] = {}
    finished = False
    started = time.perf_counter()
    while not finished:
        pid, fd = _fork(crashed, end_ms)
        lines = _Lines(fd)
        if made >= kills:  # enough kills: let this one run to the end
            ready, done = lines.next(60), lines.next(120)
            finished = bool(done and done.get("done"))
            if not finished:
                violations.append("the last run did not finish")
                finished = True
        else:
            before_ready = rng.random() < 0.2
            ready = None
            if before_ready:
                time.sleep(rng.uniform(0, 0.15))  # during start-up: open, restore, reconcile
            else:
                ready = lines.next(60)
                # a slice of the replay, so the kills spread over the whole window
                time.sleep(rng.uniform(0, 2.5 * replay_s / kills))
            os.kill(pid, signal.SIGKILL)
            made += 1
            moments["starting" if ready is None else "replaying"] += 1
        os.waitpid(pid, 0)
        ready = ready or lines.next(0.01)
        if ready and ready.get("ready"):
            if ready["naked"]:
                violations.append(f"position without a stop after reconcile: {ready['naked']}")
            repairs += bool(ready["found"])
        os.close(fd)
        if not finished:
            cursor, tags = _situation(crashed)
            cursors.append(cursor or 0)
            for tag in tags:
                in_flight[tag] = in_flight.get(tag, 0) + 1
    elapsed = time.perf_counter() - started
    ref, got = state(reference), state(crashed)
    for table in ref:
        if ref[table] != got[table]:
            first = next((i for i, (a, b) in enumerate(zip(ref[table], got[table])) if a != b),
                         min(len(ref[table]), len(got[table])))
            violations.append(f"{table} differs from the uninterrupted run at row {first} "
                              f"({len(ref[table])} vs {len(got[table])} rows)")
    twice = placed_twice(crashed)
    if twice:
        violations.append(f"orders placed twice: {twice[:5]}")
    check = asyncio.run(_verify(crashed))
    if not check.ok:
        violations.append(f"audit chain broken: {check.problem}")
    distinct = len(set(cursors))
    return {
        "kills": made, "moments": moments, "saved_state_at_kill": in_flight, "distinct_cursors": distinct,
        "restarts_with_repairs": repairs, "window_days": days, "symbols": len(drill_config().all_symbols()),
        "reference_replay_s": round(replay_s, 3), "drill_s": round(elapsed, 2),
        "orders": len(got["orders"]), "fills": len(got["fills"]), "audit_records": check.count,
        "open_positions_end": sum(1 for p in got["positions"] if p[16] is None),
        "violations": violations,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--config", type=Path, help="trading config TOML (default: 4 symbols, 5m)")
    args = parser.parse_args()
    global CONFIG_FILE
    CONFIG_FILE = args.config
    with tempfile.TemporaryDirectory(prefix="optiflow-crash-") as tmp:
        result = drill(args.kills, args.seed, args.days, Path(tmp))
    print(json.dumps(result))
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
