"""Issue 15 item 7: bad input that used to give a traceback or a wrong result. Each case, run as
a real ``optiflow`` process: exit 2 (a usage or data error), one line on stderr naming the
problem, no traceback, no report; bad market data is never used silently (a symbol whose file is
broken is not dropped with a warning, a partial replay never reports the whole window)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trading.adapters.marketdata import default_data_dir

PROJECT = Path(__file__).resolve().parent.parent
XRP_5M = "ohlcv/binance_futures_XRP_USDT_USDT-5m.csv.gz"
BTC_5M = "ohlcv/binance_futures_BTC_USDT_USDT-5m.csv.gz"


def optiflow(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "OPTIFLOW_", "BINANCE_"))}
    base["PYTHONPATH"] = str(PROJECT)
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, timeout=180,
                          cwd=cwd, env={**base, **(env or {})})


def assert_one_line(result: subprocess.CompletedProcess, *words: str, code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "trades CSV" not in result.stdout
    return lines[0]


def data_copy(tmp_path: Path) -> Path:
    """A private copy of the bundled data (markets, funding, XRP and BTC 5m candles)."""
    source = default_data_dir()
    target = tmp_path / "data"
    shutil.copytree(source / "markets", target / "markets")
    shutil.copytree(source / "funding", target / "funding")
    (target / "ohlcv").mkdir()
    for name in (XRP_5M, BTC_5M):
        shutil.copy(source / name, target / name)
    return target


def rewrite(path: Path, edit) -> None:
    """Rewrite the rows of a gzip CSV through ``edit(lines) -> lines``."""
    with gzip.open(path, "rt") as handle:
        lines = handle.read().splitlines()
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(edit(lines)) + "\n")


@pytest.mark.parametrize("args, words", [
    (["backtest", "--to", "2020-01-01"], ["--to 2020-01-01", "no candle"]),
    (["backtest", "--from", "2030-01-01"], ["--from 2030-01-01", "data ends at"]),
    (["smoke", "--symbol", "XRP", "--notional", "abc"], ["--notional", "'abc'"]),
    (["smoke", "--symbol", "XRP", "--notional", "-5"], ["--notional", "positive"]),
    (["run", "--speed", "nan"], ["--speed", "'nan'"]),
    (["run", "--speed", "inf"], ["--speed", "'inf'"]),
    (["backtest", "--db", "missing-folder/x.db"], ["missing-folder", "does not exist"]),
    (["run", "--db", "missing-folder/x.db", "--say", "/help"], ["missing-folder", "does not exist"]),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path, args, words):
    assert_one_line(optiflow(*args, cwd=tmp_path), *words)


def test_db_in_a_missing_folder_never_leaves_a_traceback_behind(tmp_path):
    """The clean line used to be followed, now and then, by an aiosqlite thread's traceback:
    five runs in a row, each exactly one line."""
    for _ in range(5):
        assert_one_line(optiflow("backtest", "--db", "nowhere/x.db", cwd=tmp_path), "does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_config_that_is_not_utf8_names_the_file(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_bytes(b"\xff\xfe[[bots]]\nname = 'a'\n")
    assert_one_line(optiflow("backtest", "--config", str(config), cwd=tmp_path), str(config), "not UTF-8")


@pytest.mark.parametrize("where", ["file", "folder"])
def test_out_to_an_unwritable_place_fails_before_the_replay(tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    out = blocker if where == "file" else blocker / "sub"
    line = assert_one_line(optiflow("backtest", "--symbols", "XRP", "--out", str(out), cwd=tmp_path), "--out")
    assert str(out) in line


def test_audit_export_out_to_an_unwritable_place(tmp_path):
    db = tmp_path / "a.db"
    assert optiflow("backtest", "--symbols", "XRP", "--from", "2025-06-10", "--to", "2025-06-10", "--db", str(db),
                    "--out", str(tmp_path / "bt"), cwd=tmp_path).returncode == 0
    (tmp_path / "blocker").write_text("x")
    assert_one_line(optiflow("audit", "export", "--db", str(db), "--out", str(tmp_path / "blocker" / "a.jsonl"),
                             cwd=tmp_path), "--out", "cannot write")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, words", [
    (_truncate, ["unreadable", "truncated"]),
    (lambda p: rewrite(p, lambda rows: rows[:100] + [",".join(rows[100].split(",")[:4])] + rows[101:]),
     [":101:", "4 fields, 6 expected"]),
    (lambda p: rewrite(p, lambda rows: rows[:200] + [rows[300]] + rows[201:300] + rows[301:]),
     [":202:", "out of order"]),
    (lambda p: rewrite(p, lambda rows: rows[:50] + [rows[49]] + rows[50:]), [":51:", "repeated"]),
])
def test_bad_market_data_stops_the_run_naming_file_and_line(tmp_path, damage, words):
    """A broken candle file of one of two symbols: the backtest stops naming the file (and the
    line) instead of dropping the symbol or replaying part of the window."""
    data = data_copy(tmp_path)
    damage(data / XRP_5M)
    result = optiflow("backtest", "--symbols", "BTC,XRP", "--timeframe", "5m", "--out", str(tmp_path / "bt"),
                      cwd=tmp_path, env={"OPTIFLOW_DATA_DIR": str(data)})
    assert_one_line(result, "binance_futures_XRP_USDT_USDT-5m.csv.gz", *words)
    assert not (tmp_path / "bt" / "trades.csv").exists()


def test_bad_funding_file_is_named_too(tmp_path):
    data = data_copy(tmp_path)
    rewrite(data / "funding/binance_futures_XRP_USDT_USDT-funding_rate.csv.gz", lambda rows: rows[:5] + ["oops"] + rows[5:])
    result = optiflow("backtest", "--symbols", "XRP", "--out", str(tmp_path / "bt"), cwd=tmp_path,
                      env={"OPTIFLOW_DATA_DIR": str(data)})
    assert_one_line(result, "funding_rate.csv.gz:6", "malformed funding row")
