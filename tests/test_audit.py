"""SPEC A-1 audit trail: canonical form and hash chain, decision records written with the state
they describe, manual commands, and ``audit verify`` catching edits, deletions and reorders."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from bot.runtime import PaperRuntime
from storage import Storage
from tests.stack import replayed
from trading.audit import GENESIS, AuditEntry, canonical_json, chain, verify
from trading.config import TradingConfig

DAY0 = 1_748_908_800_000  # 2025-06-03T00:00Z, first bundled candle
END = DAY0 + 65 * 3_600_000  # 65 h of real 5m candles: trades, exits, open positions


@pytest.fixture(scope="module")
def audited_db(tmp_path_factory, data_dir) -> Path:
    """A database with a real replay's audit trail (built once per module; tests copy it)."""
    import asyncio

    path = tmp_path_factory.mktemp("audit") / "paper.db"

    async def build() -> None:
        runtime = await replayed(path, data_dir, END)
        await runtime.service.set_paused("XRP/USDT:USDT", True)
        await runtime.close()

    asyncio.run(build())
    return path


def copy_db(source: Path, target: Path) -> Path:
    """A consistent copy of an SQLite file (the backup API, WAL included)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()
    return target


def test_a1_canonical_json_is_sorted_compact_and_decimals_are_strings():
    text = canonical_json({"b": Decimal("0.010"), "a": [1, 2.5, "x"], "c": {"z": None, "y": True}})
    assert text == '{"a":[1,"2.5","x"],"b":"0.010","c":{"y":true,"z":null}}'


def test_a1_each_hash_is_sha256_of_the_canonical_body_and_links_to_the_previous():
    entries = [AuditEntry(1_000, "FILL", "main", "BTC/USDT:USDT", "buy", Decimal("0.002"), {"price": Decimal("65000.1")}),
               AuditEntry(2_000, "COMMAND", "main", "BTC/USDT:USDT", "", None, {"command": "pause"})]
    first, second = chain(entries, head_seq=0, head_hash=GENESIS, config_id="cfg")
    body = ('{"action":"FILL","bot":"main","config_id":"cfg","prev_hash":"' + GENESIS + '","seq":1,'
            '"side":"buy","size":"0.002","symbol":"BTC/USDT:USDT","ts":1000,"why":{"price":"65000.1"}}')
    assert first.hash == hashlib.sha256(body.encode()).hexdigest()
    assert second.prev_hash == first.hash and second.seq == 2
    assert verify([first, second]).ok and verify([first, second]).head_hash == second.hash
    assert verify([second]).broken_seq == 2  # the first record is missing


async def test_a1_replay_records_orders_fills_risk_and_exit_decisions(audited_db, tmp_path):
    store = await Storage.open(copy_db(audited_db, tmp_path / "copy.db"))
    try:
        records = await store.audit.list()
        result = await store.audit.verify()
        closed = await store.positions.list_closed()
        fills = await store.fills.list()
        orders = await store.db.fetchall("SELECT client_order_id FROM orders WHERE status != 'rejected'")
        config_body = await store.config_snapshots.get(records[0].config_id)
    finally:
        await store.close()
    assert result.ok and result.count == len(records) and result.head_hash == records[-1].hash
    by_action: dict[str, list] = {}
    for record in records:
        by_action.setdefault(record.action, []).append(record)
    # Every fill and every order the state holds is in the trail, with its id.
    assert len(by_action["FILL"]) == len(fills)
    placed = {r.why["client_order_id"] for r in by_action["ORDER_PLACED"]}
    assert {row[0] for row in orders} <= placed
    # Every closed trade has its exit decision with the reason the position carries.
    exits = {(r.why["position_id"], r.why["reason"]) for r in by_action["EXIT"]}
    for position in closed:
        assert (position.position_id, position.exit_reason.value) in exits
    # Risk decisions carry the score, the conditions met and the first blocker or the checks passed.
    allowed, denied = by_action["RISK_ALLOWED"], by_action["RISK_DENIED"]
    assert all(r.why["first_blocker"] and "score" in r.why for r in denied)
    assert all(r.why["checks_passed"] and r.size is not None and r.why["client_order_id"] in placed for r in allowed)
    # The manual /pause is recorded, and records cite the stored config snapshot.
    assert [(r.why["command"], r.symbol) for r in by_action["COMMAND"]] == [("pause", "XRP/USDT:USDT")]
    assert json.loads(config_body)["account"]["starting_balance"] == str(TradingConfig().account.starting_balance)


async def test_a1_audit_rows_are_written_in_the_same_transaction_as_the_state(tmp_path, data_dir):
    """A flush that fails rolls back its audit records with the state (no record without state)."""
    runtime = await PaperRuntime.build(config=TradingConfig(), db_path=tmp_path / "p.db", data_dir=data_dir, end_ms=END)
    try:
        before = await runtime.store.audit.count()
        original = runtime.store.account.save

        async def broken(account):
            raise sqlite3.OperationalError("disk I/O error")

        runtime.store.account.save = broken
        with pytest.raises(sqlite3.OperationalError):
            await runtime.replay()
        runtime.store.account.save = original
        assert await runtime.store.audit.count() == before
        assert await runtime.store.fills.list() == []
    finally:
        await runtime.store.close()


async def test_a1_triggers_refuse_update_and_delete(audited_db, tmp_path):
    path = copy_db(audited_db, tmp_path / "copy.db")
    with sqlite3.connect(path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE audit SET size = '999' WHERE seq = 3")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit WHERE seq = 3")
    conn.close()
