"""SPEC A-1 audit trail: canonical form and hash chain, decision records written with the state
they describe, manual commands, and ``audit verify`` catching edits, deletions and reorders."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from bot.runtime import build_paper_runtime
from storage import Storage
from tests.stack import replayed
from trading.domain.audit import GENESIS, AuditEntry, canonical_json, chain, verify
from trading.domain.config import TradingConfig

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
    # The decision comes first: each RISK_ALLOWED is followed by the entry order it sent.
    for i, record in enumerate(records):
        if record.action == "RISK_ALLOWED":
            following = records[i + 1]
            assert following.action == "ORDER_PLACED" and following.why["client_order_id"] == record.why["client_order_id"]
            assert following.size == record.size and record.why["leverage"] > 0
    # The manual /pause is recorded, and records cite the stored config snapshot.
    assert [(r.why["command"], r.symbol) for r in by_action["COMMAND"]] == [("pause", "XRP/USDT:USDT")]
    assert json.loads(config_body)["account"]["starting_balance"] == str(TradingConfig().account.starting_balance)


async def test_a1_audit_rows_are_written_in_the_same_transaction_as_the_state(tmp_path, data_dir):
    """A flush that fails rolls back its audit records with the state (no record without state)."""
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=tmp_path / "p.db", data_dir=data_dir, end_ms=END)
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


# ------------------------------------------------------------------ audit verify / export / chat
def tamper(path: Path, *statements: str) -> None:
    """Someone with file access drops the append-only triggers, then runs ``statements``."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER audit_no_update")
        conn.execute("DROP TRIGGER audit_no_delete")
        for statement in statements:
            conn.execute(statement)
    conn.close()


def run_verify(path: Path, capsys) -> tuple[int, str]:
    from bot.cli import main

    code = main(["audit", "verify", "--db", str(path)])
    return code, capsys.readouterr().out


def test_a1_audit_verify_passes_an_untouched_log_and_prints_head_and_count(audited_db, tmp_path, capsys):
    path = copy_db(audited_db, tmp_path / "copy.db")
    code, out = run_verify(path, capsys)
    with sqlite3.connect(path) as conn:
        count, head = conn.execute("SELECT COUNT(*), (SELECT hash FROM audit ORDER BY id DESC LIMIT 1) FROM audit").fetchone()
    conn.close()
    assert code == 0
    assert f"{count} records" in out and head in out


@pytest.mark.parametrize("statements, seq, words", [
    # An edited field: the record's own hash no longer matches.
    (["UPDATE audit SET size = '999' WHERE seq = 5"], 5, "edited"),
    # A stop-loss exit relabelled as a take-profit.
    (["UPDATE audit SET why = replace(why, '\"SL\"', '\"TP1\"') WHERE seq = (SELECT MIN(seq) FROM audit"
      " WHERE action = 'EXIT' AND why LIKE '%\"SL\"%')"], "first SL exit", "edited"),
    # A record deleted in the middle, and a cut-off tail.
    (["DELETE FROM audit WHERE seq = 7"], 8, "seq 7 was deleted"),
    (["DELETE FROM audit WHERE seq > (SELECT MAX(seq) - 3 FROM audit)"], "last - 2", "tail was deleted"),
    # The config snapshot a record cites was edited (a risk limit rewritten after the fact).
    (["DROP TRIGGER config_snapshots_no_update",
      "UPDATE config_snapshots SET body = replace(body, '\"risk_pct\":', '\"risk_pct\": ')"], 1, "config snapshot"),
    # Two records swapped in storage order.
    (["UPDATE audit SET id = -1 WHERE seq = 10", "UPDATE audit SET id = 10 WHERE seq = 11",
      "UPDATE audit SET id = 11 WHERE seq = 10"], 11, "reordered"),
])
def test_a1_audit_verify_catches_edit_delete_reorder_and_names_the_record(
    audited_db, tmp_path, capsys, statements, seq, words
):
    path = copy_db(audited_db, tmp_path / "copy.db")
    with sqlite3.connect(path) as conn:
        first_sl = conn.execute("SELECT MIN(seq) FROM audit WHERE action = 'EXIT' AND why LIKE '%\"SL\"%'").fetchone()[0]
        last = conn.execute("SELECT MAX(seq) FROM audit").fetchone()[0]
    conn.close()
    expected = {"first SL exit": first_sl, "last - 2": last - 2}.get(seq, seq)
    tamper(path, *statements)
    code, out = run_verify(path, capsys)
    assert code == 1
    assert f"BROKEN at seq {expected}:" in out, out
    assert words in out


def test_a1_audit_export_writes_jsonl_of_the_utc_window(audited_db, tmp_path, capsys):
    from bot.cli import main

    path = copy_db(audited_db, tmp_path / "copy.db")
    out_file = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "--db", str(path), "--from", "2025-06-04", "--to", "2025-06-04",
                 "--out", str(out_file)]) == 0
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    day = (DAY0 + 86_400_000, DAY0 + 2 * 86_400_000)
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT COUNT(*) FROM audit WHERE ts >= ? AND ts < ?", day).fetchone()[0]
    conn.close()
    assert len(lines) == stored > 0
    assert all(day[0] <= line["ts"] < day[1] for line in lines)
    # Each line carries its hash, and re-hashing its canonical body gives it (offline check).
    for line in lines:
        digest = line.pop("hash")
        assert hashlib.sha256(canonical_json(line).encode()).hexdigest() == digest
    assert main(["audit", "export", "--db", str(tmp_path / "missing.db")]) == 2


async def test_a1_chat_audit_shows_last_records_and_the_verification(audited_db, tmp_path, data_dir):
    from tests.stack import ask

    path = copy_db(audited_db, tmp_path / "copy.db")
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=path, data_dir=data_dir, end_ms=END)
    try:
        head = (await runtime.store.audit.verify()).head_hash
        last = (await runtime.store.audit.last(1))[0]
        (text,) = await ask(runtime, tmp_path, "/audit")
    finally:
        await runtime.close()
    assert "Audit chain OK" in text and head[:16] in text
    assert f"#{last.seq} " in text and last.action in text
    tamper(path, "UPDATE audit SET size = '1' WHERE seq = 3")
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=path, data_dir=data_dir, end_ms=END)
    try:
        (text,) = await ask(runtime, tmp_path, "/audit")
    finally:
        await runtime.close()
    assert "BROKEN at seq 3" in text


async def test_a1_l1_audit_head_at_start_and_at_shutdown(tmp_path, data_dir):
    """L-1 build card: the head hash at start is the stored chain's head; at shutdown it is the
    head after everything the run recorded (the two differ when the run traded)."""
    from bot.runtime import audit_head
    from trading.domain.audit import GENESIS

    runtime = await build_paper_runtime(config=TradingConfig(), db_path=tmp_path / "p.db", data_dir=data_dir, end_ms=END)
    try:
        at_start = await runtime.audit_head()
        assert at_start != GENESIS  # the start-up reconciliation is the first record
        await runtime.replay()
        at_shutdown = await runtime.audit_head()
        check = await runtime.store.audit.verify()
    finally:
        await runtime.close()
    assert at_shutdown != at_start and at_shutdown == check.head_hash
    store = await Storage.open(tmp_path / "p.db")
    try:
        assert await audit_head(store) == at_shutdown
    finally:
        await store.close()
