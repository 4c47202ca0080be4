"""SPEC A-1 beyond naive edits (issue 15): anchors outside the file, the head marker, the ledger
replay of the state tables, and a corrupt file — each tamper a hostile tester tried is caught,
by ``audit verify`` (exit 1 naming it) and, where it matters for trading, by the start itself
(exit 2, one line, the bot does not trade on the file).

Every case starts from a real paper replay's database (trades, exits, open positions, a /pause
command last) and edits it the way someone with file access would: plain SQL after dropping the
append-only triggers, or a script that recomputes the whole hash chain.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from bot.cli import main
from tests.stack import replayed
from tests.test_audit import END, copy_db, tamper
from trading.domain.audit import GENESIS, canonical_json, sha256_hex
from trading.domain.config import TradingConfig

XRP = "XRP/USDT:USDT"


@pytest.fixture(scope="module")
def ledger_db(tmp_path_factory, data_dir) -> Path:
    """A replay with trades, exits and open positions, then a /pause command (the last record)."""
    path = tmp_path_factory.mktemp("anchors") / "paper.db"

    async def build() -> None:
        runtime = await replayed(path, data_dir, END, TradingConfig())
        await runtime.service.set_paused(XRP, True)
        await runtime.close()

    asyncio.run(build())
    return path


def head(path: Path) -> str:
    """The anchor a trader keeps from a message: ``SEQ:HASH`` of the last record."""
    with sqlite3.connect(path) as conn:
        seq, digest = conn.execute("SELECT seq, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    conn.close()
    return f"{seq}:{digest}"


def verify(path: Path, capsys, *anchors: str) -> tuple[int, str]:
    code = main(["audit", "verify", "--db", str(path), *(a for anchor in anchors for a in ("--head", anchor))])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def start(path: Path, capsys) -> tuple[int, str]:
    """``optiflow run`` on the file (console, replay to the end, one /status)."""
    code = main(["run", "--db", str(path), "--speed", "max", "--say", "/status"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def recompute_chain(path: Path) -> None:
    """What a careful forger does after an edit: rehash every record from seq 1 and rewrite the
    head marker, so the file is self-consistent again."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT id, seq, ts, action, bot, symbol, side, size, why, config_id FROM audit"
                            " ORDER BY id").fetchall()
        prev = GENESIS
        for rowid, seq, ts, action, bot, symbol, side, size, why, config_id in rows:
            body = {"action": action, "bot": bot, "config_id": config_id, "prev_hash": prev, "seq": seq,
                    "side": side, "size": size, "symbol": symbol, "ts": ts, "why": json.loads(why)}
            digest = sha256_hex(canonical_json(body))
            conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest, rowid))
            prev = digest
        conn.execute("UPDATE runtime SET value = ? WHERE key = 'audit_head'", (f"{rows[-1][1]}:{prev}",))
    conn.close()


def test_a1_untouched_file_verifies_with_its_anchor_and_the_ledger(ledger_db, tmp_path, capsys):
    """The baseline: chain, anchor and ledger agree; the output gives the head as SEQ:HASH."""
    path = copy_db(ledger_db, tmp_path / "copy.db")
    anchor = head(path)
    code, out = verify(path, capsys, anchor, anchor.split(":")[0] + ":" + anchor.split(":")[1][:16])
    assert code == 0, out
    assert f"head {anchor}" in out and "anchors OK" in out and "ledger OK" in out
    with sqlite3.connect(path) as conn:
        actions = {a for (a,) in conn.execute("SELECT DISTINCT action FROM audit")}
    conn.close()
    assert {"POSITION", "BALANCE", "FILL", "ORDER_FILLED"} <= actions


def test_a1_tail_cut_and_restarted_over_is_caught_by_the_anchor(ledger_db, tmp_path, capsys):
    """The tail (the /pause record) deleted and the head marker rewritten to match, then a
    restart: its records re-use the seq, so the file verifies on its own — but the anchor the
    trader got before (build card / shutdown message) names a hash the file no longer has."""
    path = copy_db(ledger_db, tmp_path / "copy.db")
    anchor = head(path)
    seq = int(anchor.split(":")[0])
    with sqlite3.connect(path) as conn:
        prev = conn.execute("SELECT seq, hash FROM audit WHERE seq = ?", (seq - 1,)).fetchone()
    conn.close()
    tamper(path, f"DELETE FROM audit WHERE seq = {seq}",
           f"UPDATE runtime SET value = '{prev[0]}:{prev[1]}' WHERE key = 'audit_head'")
    code, out = start(path, capsys)
    assert code == 0, out  # nothing inside the file betrays it now
    assert int(head(path).split(":")[0]) >= seq  # the restart's records took the cut seq
    code, out = verify(path, capsys)
    assert code == 0, out
    code, out = verify(path, capsys, anchor)
    assert code == 1
    assert f"does not match the anchor at seq {seq}" in out and "rewritten" in out


def test_a1_tail_cut_without_the_marker_rewrite_is_refused_at_start(ledger_db, tmp_path, capsys):
    """A cut tail with the head marker left: the restart refuses before writing (it would re-use
    the seqs) with one line, and verify names the missing records."""
    path = copy_db(ledger_db, tmp_path / "copy.db")
    seq = int(head(path).split(":")[0])
    tamper(path, f"DELETE FROM audit WHERE seq = {seq}")
    code, out = start(path, capsys)
    assert code == 2 and "tail was deleted" in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1
    assert int(head(path).split(":")[0]) == seq - 1  # nothing written
    code, out = verify(path, capsys)
    assert code == 1 and f"BROKEN at seq {seq}" in out and "tail was deleted" in out


@pytest.mark.parametrize("statement, words", [
    ("DELETE FROM runtime WHERE key = 'audit_head'", "head marker is missing"),
    ("UPDATE runtime SET value = '3:' || (SELECT hash FROM audit WHERE seq = 3) WHERE key = 'audit_head'",
     "marker or the tail was rewritten"),
])
def test_a1_head_marker_deleted_or_rewritten_is_caught(ledger_db, tmp_path, capsys, statement, words):
    path = copy_db(ledger_db, tmp_path / "copy.db")
    tamper(path, statement)
    code, out = verify(path, capsys)
    assert code == 1 and words in out
    code, out = start(path, capsys)
    assert code == 2 and words in out


def test_a1_recomputed_chain_after_an_edit_is_caught_by_the_anchor(ledger_db, tmp_path, capsys):
    """An EXIT record's stop-loss relabelled TP1, then the whole chain rehashed and the marker
    rewritten: the file is self-consistent; the anchor from outside is not."""
    path = copy_db(ledger_db, tmp_path / "copy.db")
    anchor = head(path)
    tamper(path, "UPDATE audit SET why = replace(why, '\"reason\":\"SL\"', '\"reason\":\"TP1\"') WHERE seq = "
                 "(SELECT MIN(seq) FROM audit WHERE action = 'EXIT' AND why LIKE '%\"reason\":\"SL\"%')")
    recompute_chain(path)
    assert verify(path, capsys)[0] == 0  # what verify alone cannot see
    code, out = verify(path, capsys, anchor)
    assert code == 1 and "rewritten" in out


def test_a1_edit_of_record_1_is_caught(ledger_db, tmp_path, capsys):
    """Record 1 (the first start's reconciliation) is checked like every other: its hash over
    its body, its prev_hash the genesis."""
    path = copy_db(ledger_db, tmp_path / "copy.db")
    tamper(path, "UPDATE audit SET why = replace(why, '\"positions\":0', '\"positions\":7') WHERE seq = 1")
    code, out = verify(path, capsys)
    assert code == 1 and "BROKEN at seq 1:" in out and "edited" in out
    path = copy_db(ledger_db, tmp_path / "again.db")
    tamper(path, f"UPDATE audit SET prev_hash = '{'1' * 64}' WHERE seq = 1")
    code, out = verify(path, capsys)
    assert code == 1 and "BROKEN at seq 1:" in out


def test_a1_balance_edited_is_caught_and_the_bot_refuses_to_trade_on_it(ledger_db, tmp_path, capsys):
    """balance + 100,000 in the account table: verify names the account; ``run`` refuses with
    one line (so /summary never shows the forged balance)."""
    path = copy_db(ledger_db, tmp_path / "copy.db")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE account SET balance = CAST(CAST(balance AS REAL) + 100000 AS TEXT)")
    conn.close()
    code, out = verify(path, capsys)
    assert code == 1 and "state tables do not match the audit" in out and "account: balance" in out
    code, out = start(path, capsys)
    assert code == 2 and "edited without the audit" in out and "Balance" not in out
    assert len(out.strip().splitlines()) == 1


def test_a1_stop_loss_turned_into_a_win_is_caught(ledger_db, tmp_path, capsys):
    """A closed stop-loss trade rewritten as a TP2 win in the positions table."""
    path = copy_db(ledger_db, tmp_path / "copy.db")
    with sqlite3.connect(path) as conn:
        position_id = conn.execute("SELECT position_id FROM positions WHERE exit_reason = 'SL' LIMIT 1").fetchone()[0]
        conn.execute("UPDATE positions SET exit_reason = 'TP2', realised_pnl = ltrim(realised_pnl, '-')"
                     " WHERE position_id = ?", (position_id,))
    conn.close()
    code, out = verify(path, capsys)
    assert code == 1 and f"positions table: {position_id}" in out


def test_a1_open_position_edited_is_refused_at_start(ledger_db, tmp_path, capsys):
    """An open position's stop-loss moved in the table: the start refuses (it would trade on it)."""
    path = copy_db(ledger_db, tmp_path / "copy.db")
    with sqlite3.connect(path) as conn:
        assert conn.execute("UPDATE positions SET stop_loss = '1' WHERE closed_ms IS NULL").rowcount >= 1
    conn.close()
    code, out = start(path, capsys)
    assert code == 2 and "stop_loss" in out and "edited without the audit" in out
    assert verify(path, capsys)[0] == 1


@pytest.mark.parametrize("statement, words", [
    ("DELETE FROM fills WHERE id IN (SELECT id FROM fills ORDER BY id DESC LIMIT 3)", "missing from the fills table"),
    ("UPDATE fills SET fee = '0' WHERE id = (SELECT MIN(id) FROM fills)", "is in no FILL record"),
    ("UPDATE orders SET status = 'canceled' WHERE client_order_id = (SELECT client_order_id FROM orders"
     " WHERE status = 'closed' LIMIT 1)", "orders table"),
    ("DELETE FROM positions WHERE closed_ms IS NOT NULL AND position_id = (SELECT MIN(position_id) FROM positions"
     " WHERE closed_ms IS NOT NULL)", "missing from the positions table"),
])
def test_a1_fills_orders_positions_edited_without_the_audit_are_caught(ledger_db, tmp_path, capsys, statement, words):
    path = copy_db(ledger_db, tmp_path / "copy.db")
    with sqlite3.connect(path) as conn:
        conn.execute(statement)
    conn.close()
    code, out = verify(path, capsys)
    assert code == 1 and "state tables do not match the audit" in out and words in out, out


def _corrupt(path: Path) -> None:
    """Scattered corruption: garbage written into several pages in the middle of the file."""
    with sqlite3.connect(path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    with path.open("r+b") as handle:
        for page in range(pages // 4, pages - 1, max(1, pages // 7)):
            handle.seek(page * page_size + 8)
            handle.write(b"\xde\xad\xbe\xef" * 64)


def test_a1_scattered_corruption_is_one_line_never_a_traceback(ledger_db, tmp_path, capsys):
    """PRAGMA integrity_check at start and in verify: a corrupt file gives one clear line and a
    non-zero exit from both ``audit verify`` and ``run`` (which does not start on it)."""
    path = copy_db(ledger_db, tmp_path / "copy.db")
    _corrupt(path)
    for code, out in (verify(path, capsys), start(path, capsys)):
        assert code != 0
        assert "Traceback" not in out and "corrupt" in out
        assert len(out.strip().splitlines()) == 1, out


async def test_a1_anchors_in_build_card_shutdown_message_and_daily_report(tmp_path, data_dir, capsys):
    """The head as ``SEQ:HASH`` in the build card (at start), the daily report (at the simulated
    midnight) and the shutdown message (after the last write); each one verifies the file."""
    import argparse

    from bot.app import build_dispatcher
    from bot.cli import _run_telegram
    from bot.runtime import build_paper_runtime
    from bot.settings import Settings
    from tests.fake_telegram import FakeTelegram
    from tests.test_lifecycle import DAY0, HOUR, TOKEN, USER, until

    fake = FakeTelegram()
    await fake.start()
    path = tmp_path / "anchored.db"
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=path, data_dir=data_dir, end_ms=DAY0 + 30 * HOUR)
    settings = Settings(telegram_bot_token=TOKEN, telegram_api_base=fake.base, telegram_allowed_user_ids=(USER,))
    dp = build_dispatcher(runtime.service, settings, settings.allowed_user_ids())
    try:
        run = asyncio.create_task(_run_telegram(runtime, dp, settings, argparse.Namespace(speed=1e9), asyncio.Event()))
        await until(lambda: any(t.startswith("<b>Daily report") for t in fake.texts_to(USER)))
        await dp["request_shutdown"]("test")
        assert await asyncio.wait_for(run, 60) == 0
        final = await runtime.store.audit.head()
    finally:
        await runtime.close()
        await fake.stop()
    texts = fake.texts_to(USER)
    card = texts[0]
    report = next(t for t in texts if t.startswith("<b>Daily report"))
    anchors = []
    for text in (card, report, texts[-1]):
        assert "🔗 Audit head <code>" in text, text
        anchors.append(text.split("🔗 Audit head <code>")[1].split("</code>")[0])
    assert anchors[-1] == f"{final[0]}:{final[1]}"
    assert int(anchors[0].split(":")[0]) < int(anchors[1].split(":")[0]) < final[0]
    code, out = await asyncio.to_thread(verify, path, capsys, *anchors)
    assert code == 0, out
