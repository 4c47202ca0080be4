"""The ``optiflow`` CLI as a trader uses it: backtest results that add up, clear one-line errors."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import subprocess
import sys
from decimal import Decimal

import pytest

from bot.cli import main

SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "XRP/USDT:USDT")


@pytest.fixture(scope="module")
def backtest(tmp_path_factory):
    """One full backtest on the bundled data (4 symbols, 5m, 21 days)."""
    out = tmp_path_factory.mktemp("backtest")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["backtest", "--chart", "--out", str(out)])
    return code, buffer.getvalue(), out


def test_backtest_trades_every_symbol_and_net_pnl_equals_csv_sum(backtest):
    """Acceptance: ≥ 1 trade per symbol; printed net PnL = Σ trades CSV, to the cent."""
    code, text, out = backtest
    assert code == 0
    with (out / "trades.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["symbol"] for row in rows} == set(SYMBOLS)
    for symbol in SYMBOLS:
        assert re.search(rf"{re.escape(symbol)}\s+trades\s+[1-9]", text), symbol
    printed = Decimal(re.search(r"net PnL\s+(-?[\d.]+) USDT", text).group(1))
    total = sum(Decimal(row["net_pnl"]) for row in rows)
    assert printed == total.quantize(Decimal("0.01"))
    assert int(re.search(r"trades\s+(\d+)", text).group(1)) == len(rows)
    # Each row adds up: net = realised − fees + funding.
    for row in rows:
        assert Decimal(row["net_pnl"]) == Decimal(row["realised_pnl"]) - Decimal(row["fees"]) + Decimal(row["funding"])
    assert (out / "chart.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_backtest_result_table_has_the_trader_figures(backtest):
    _, text, _ = backtest
    for label in ("trades", "win rate", "profit factor", "net PnL", "max drawdown", "fees", "funding"):
        assert re.search(rf"^\s+{label}\s", text, re.MULTILINE), label


def test_backtest_window_and_symbols(tmp_path, capsys):
    """--symbols / --timeframe / --from / --to restrict the replay."""
    code = main(["backtest", "--symbols", "XRP", "--timeframe", "1m", "--from", "2025-06-10",
                 "--to", "2025-06-11", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert code == 0
    assert "2025-06-10T00:00:00Z → 2025-06-12T00:00:00Z" in text  # last candle close
    assert "candles        2,880" in text  # 2 days of 1m candles, the warm-up excluded
    rows = list(csv.DictReader((tmp_path / "trades.csv").open()))
    assert all(row["symbol"] == "XRP/USDT:USDT" for row in rows)
    assert all("2025-06-10" <= row["opened_utc"][:10] <= "2025-06-11" for row in rows)
    assert not (tmp_path / "chart.png").exists() and "chart PNG" not in text  # only with --chart


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_invalid_option_is_one_line_and_exit_2():
    result = run_cli("backtest", "--timeframe", "7m")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--timeframe" in result.stderr


def test_invalid_config_names_the_field(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[[bots]]\nname = 'a'\nleverage = 0\n", encoding="utf-8")
    assert main(["backtest", "--config", str(config), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "bots.0.leverage" in err and "bad.toml" in err


def test_o3_an_unknown_take_profit_style_names_the_field(tmp_path, capsys):
    """O-3: ``[orders] tp_order_style`` is "market" or "limit"; anything else stops the start."""
    config = tmp_path / "orders.toml"
    config.write_text("[orders]\ntp_order_style = 'post_only'\n", encoding="utf-8")
    assert main(["backtest", "--config", str(config), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "orders.tp_order_style" in err and "'market' or 'limit'" in err


def test_unknown_symbol_is_a_clear_error(tmp_path, capsys):
    assert main(["backtest", "--symbols", "NOPE", "--out", str(tmp_path)]) == 2
    assert "NOPE/USDT:USDT" in capsys.readouterr().err


def test_s1_live_is_never_the_default_and_needs_keys(tmp_path, capsys, monkeypatch):
    """SPEC S-1: live needs --live and keys; without keys it stops before touching anything."""
    monkeypatch.delenv("BINANCE_API_KEY", raising=False)
    monkeypatch.delenv("BINANCE_API_SECRET", raising=False)
    assert main(["run", "--live", "--db", str(tmp_path / "x.db"), "--say", "/summary"]) == 2
    assert "needs BINANCE_API_KEY and BINANCE_API_SECRET" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_backtest_refuses_an_existing_database(tmp_path, capsys):
    db = tmp_path / "used.db"
    db.write_bytes(b"something")
    assert main(["backtest", "--db", str(db), "--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_b1_optiscalp_example_trades_every_bot(tmp_path, capsys):
    """Issue 3 acceptance / B-1: the shipped multi-bot example trades with every bot, and the
    result is broken down per bot and per exit reason."""
    from pathlib import Path

    from trading.domain.config import load_trading_config

    example = Path(__file__).resolve().parent.parent / "examples" / "optiscalp.toml"
    bots = [b.name for b in load_trading_config(example).bots]
    assert main(["backtest", "--config", str(example), "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    per_bot = text.split("per bot:")[1].split("per symbol:")[0]
    for bot in bots:
        assert re.search(rf"^\s+{bot}\s+trades\s+[1-9]", per_bot, re.MULTILINE), bot
    reasons = text.split("per exit reason:")[1].split("trades CSV")[0]
    rows = list(csv.DictReader((tmp_path / "trades.csv").open()))
    assert {r["bot"] for r in rows} == set(bots)
    for reason in {r["exit_reason"] for r in rows}:
        assert reason in reasons


def test_invalid_environment_names_the_variable(tmp_path, capsys, monkeypatch):
    """A bad setting exits 2 with one line naming the variable, never its secret value."""
    monkeypatch.setenv("TELEGRAM_ALLOWED_USER_IDS", "12,abc")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:SECRET-VALUE")
    assert main(["backtest", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "TELEGRAM_ALLOWED_USER_IDS" in err and "SECRET-VALUE" not in err
    assert err.strip().count("\n") == 0
