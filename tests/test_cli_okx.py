"""``optiflow check`` and ``optiflow smoke`` on OKX (issue 18, SPEC O-7, S-1, S-3, O-6) through the
real CLI entry point and the real ccxt client against the strict loopback fake OKX."""

from __future__ import annotations

import asyncio

import pytest

from bot.cli import main
from tests.fake_okx import API_KEY, API_SECRET, PASSPHRASE, FakeOkx
from trading.adapters.marketdata import default_data_dir

XRP = "XRP/USDT:USDT"


@pytest.fixture
async def fake(monkeypatch, tmp_path):
    exchange = FakeOkx(default_data_dir(), symbols=(XRP,))
    await exchange.start()
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("OPTIFLOW_EXCHANGE", "okx")
    monkeypatch.setenv("EXCHANGE_API_BASE", exchange.base_url)
    monkeypatch.setenv("OKX_API_KEY", API_KEY)
    monkeypatch.setenv("OKX_API_SECRET", API_SECRET)
    monkeypatch.setenv("OKX_API_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("OPTIFLOW_MODE", "demo")
    yield exchange
    await exchange.stop()


async def run_cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_o7_okx_check_passes_and_sets_isolated_leverage(fake, capsys):
    code = await run_cli("check", "--symbols", "XRP")
    out = capsys.readouterr().out
    assert code == 0, out
    for line in ("okx, demo mode", "API key present, secret present, passphrase present",
                 "key permissions: futures trading enabled", "position mode: one-way",
                 f"{XRP}: tick 0.0001, step 0.01", "contractSize 100", f"{XRP}: margin isolated, leverage 5×",
                 "balance: 10000", "pre-flight passed"):
        assert line in out, line
    for secret in (API_KEY, API_SECRET, PASSPHRASE):
        assert secret not in out
    assert fake.leverage[("XRP-USDT-SWAP", "isolated")] == 5


async def test_o7_okx_check_fails_on_missing_passphrase_hedge_mode_and_spot_accounts(fake, capsys, monkeypatch):
    fake.pos_mode = "long_short_mode"
    assert await run_cli("check", "--symbols", "XRP") == 1
    assert "hedge (dual side)" in capsys.readouterr().out
    fake.pos_mode, fake.acct_lv = "net_mode", "1"
    assert await run_cli("check", "--symbols", "XRP") == 1
    assert "futures trading NOT enabled" in capsys.readouterr().out
    monkeypatch.delenv("OKX_API_PASSPHRASE")
    assert await run_cli("check", "--symbols", "XRP") == 1
    assert "MISSING (OKX_API_PASSPHRASE)" in capsys.readouterr().out


async def test_o6_okx_smoke_opens_brackets_verifies_closes_and_leaves_nothing(fake, capsys):
    code = await run_cli("smoke", "--symbol", "XRP", "--notional", "20", "--timeout", "20")
    out = capsys.readouterr().out
    assert code == 0, out
    for line in ("entry 0.09 contracts", "opened: 0.09", "brackets resting: sl STOP_MARKET",
                 "stop verified on the exchange", "nothing of ours left", "smoke test passed"):
        assert line in out, line
    assert fake.position(XRP) == 0 and fake.open_orders() == [] and fake.open_algos() == []
    assert len(fake.accepted_ids) == len(set(fake.accepted_ids)) >= 3
