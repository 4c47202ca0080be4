"""``optiflow check`` and ``optiflow smoke`` through the real CLI entry point and the real ccxt
client against the loopback fake Binance USDⓈ-M (SPEC O-7, S-1, S-4, O-6)."""

from __future__ import annotations

import asyncio

import pytest

from bot.cli import main
from tests.fake_binance import API_KEY, API_SECRET, FakeBinance
from trading.adapters.marketdata import default_data_dir
from trading.domain.models import OrderType
from trading.domain.oms import client_order_id_prefix

XRP = "XRP/USDT:USDT"


@pytest.fixture
async def fake(monkeypatch, tmp_path):
    exchange = FakeBinance(default_data_dir(), symbols=(XRP, "BTC/USDT:USDT"))
    await exchange.start()
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("EXCHANGE_API_BASE", exchange.base_url)
    monkeypatch.setenv("BINANCE_API_KEY", API_KEY)
    monkeypatch.setenv("BINANCE_API_SECRET", API_SECRET)
    monkeypatch.setenv("OPTIFLOW_MODE", "demo")
    yield exchange
    await exchange.stop()


async def run_cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_o7_check_prints_what_it_checked_and_sets_margin_and_leverage(fake, capsys):
    code = await run_cli("check", "--symbols", "XRP")
    out = capsys.readouterr().out
    assert code == 0, out
    for line in ("API key present, secret present", "key permissions: futures trading enabled",
                 "quote coin: USDT (default for demo)", "markets: ", "position mode: one-way",
                 f"{XRP}: margin isolated, leverage 5×", "balance: 10000", "pre-flight passed",
                 "brackets (O-3): stop-loss STOP_MARKET, take-profit TAKE_PROFIT_MARKET, reduce-only, "
                 "triggered by MARK_PRICE"):
        assert line in out, line
    assert API_KEY not in out and API_SECRET not in out
    assert fake._margin_type[XRP] == "isolated" and fake._leverage[XRP] == 5


async def test_o7_check_fails_on_hedge_mode_and_missing_keys(fake, capsys, monkeypatch):
    fake.dual_side = True
    assert await run_cli("check", "--symbols", "XRP") == 1
    assert "hedge (dual side)" in capsys.readouterr().out
    monkeypatch.delenv("BINANCE_API_SECRET")
    assert await run_cli("check", "--symbols", "XRP") == 1
    assert "MISSING (BINANCE_API_SECRET)" in capsys.readouterr().out


async def test_s1_live_mode_needs_the_flag(fake, capsys, monkeypatch):
    monkeypatch.setenv("OPTIFLOW_MODE", "live")
    assert await run_cli("check") == 2
    assert "--live" in capsys.readouterr().err


async def test_o6_smoke_opens_brackets_verifies_closes_and_leaves_nothing(fake, capsys):
    fake.start_auto(0.3)
    code = await run_cli("smoke", "--symbol", "XRP", "--notional", "10", "--timeout", "20")
    out = capsys.readouterr().out
    assert code == 0, out
    for line in ("entry 4.5 contracts", "opened: 4.5", "brackets resting: sl STOP_MARKET",
                 "stop verified on the exchange", "nothing of ours left", "smoke test passed"):
        assert line in out, line
    assert fake.position(XRP) is None and fake.open_orders() == []
    assert len(fake.accepted_ids) == len(set(fake.accepted_ids)) >= 3


async def test_o3_o7_smoke_with_limit_take_profits_last_price_triggers_and_cross_margin(
        fake, capsys, tmp_path, monkeypatch):
    """O-3 from the config's ``[orders]``: take-profits go out as TAKE_PROFIT limits at their
    target (price = trigger), every bracket reduce-only and triggered by CONTRACT_PRICE; O-7:
    the symbol is set to the configured margin mode at start."""
    config = tmp_path / "orders.toml"
    config.write_text('[account]\nmargin_mode = "cross"\n'
                      '[orders]\ntp_order_style = "limit"\nstop_working_type = "CONTRACT_PRICE"\n')
    monkeypatch.setenv("OPTIFLOW_CONFIG", str(config))
    fake.margin_type = "isolated"  # the account's current setting: the start must change it
    fake.start_auto(0.3)
    code = await run_cli("smoke", "--symbol", "XRP", "--notional", "10", "--timeout", "20")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "TAKE_PROFIT @" in out and "TAKE_PROFIT_MARKET" not in out
    brackets = [a for a in fake.venue.algos.values() if a.reduce_only and a.client_id.startswith(client_order_id_prefix("demo", "smoke"))]
    assert {a.order_type for a in brackets} == {OrderType.STOP_MARKET.value, OrderType.TAKE_PROFIT.value}
    for algo in brackets:
        assert algo.working_type == "CONTRACT_PRICE"
        if algo.order_type == OrderType.TAKE_PROFIT.value:
            assert algo.price == algo.trigger
    assert fake.position(XRP) is None and fake.open_orders() == []
    assert fake._margin_type[XRP] == "cross"


async def test_smoke_refuses_a_notional_below_the_exchange_minimum(fake, capsys):
    code = await run_cli("smoke", "--symbol", "BTC", "--notional", "10")
    assert code == 1
    assert "is below the exchange limit" in capsys.readouterr().out
    assert fake.accepted_ids == []


async def test_o7_live_check_reads_the_key_restrictions(fake, capsys):
    fake.can_trade = False
    code = await run_cli("check", "--live", "--symbols", "XRP")
    out = capsys.readouterr().out
    assert code == 1
    assert "live mode" in out and "quote coin: USDC (default for live)" in out
    assert "futures trading NOT enabled" in out and "XRP/USDC:USDC: tick 0.0001" in out
    assert fake.requests["GET /sapi/v1/account/apiRestrictions"] == 1


async def test_s1_demo_run_trades_on_the_exchange_and_chats(fake, capsys, tmp_path):
    """``optiflow run`` in demo mode: reconciled, candles polled from the exchange, the chat
    answers from the live state (no Telegram token: console)."""
    fake.start_auto(0.2)
    code = await run_cli("run", "--symbols", "XRP", "--timeframe", "1m", "--db", str(tmp_path / "demo.db"),
                         "--say", "/summary", "--say", "/audit", "--say", "/log 100", "--say", "/runtime")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Summary — DEMO" in out and "Balance: 10,000.00 USDT" in out
    assert "Realised PnL (total): +0.00 USDT" in out  # the bot's trades, not balance − paper start
    # A-1 / L-3 in demo: the start-up reconciliation is an audit record of a verified chain.
    assert "Audit chain OK" in out and "RECONCILE" in out
    assert "The log buffer is not enabled" not in out  # /log is wired in demo as in paper
    assert API_KEY not in out and API_SECRET not in out
    assert fake.requests["GET /fapi/v1/klines"] >= 1  # the warm-up reads REST
    # S-2: candles come over the websocket (REST is the fall back); /runtime says which.
    assert "Market feed: websocket (ccxt.pro watch_ohlcv) since" in out
    assert (tmp_path / "demo.db").exists()
    assert fake._margin_type[XRP] == "isolated"  # O-7: set at start, as configured (default)


async def test_s1_l2_demo_run_over_telegram_has_the_paper_lifecycle(fake, tmp_path):
    """``optiflow run`` in demo mode over the real aiogram HTTP session (loopback fake Bot API):
    the build card comes first with the mode and exchange (L-1), /summary answers from the
    exchange state, the "no stop" playbook's button asks for a reconciliation (T-6, O-5), a
    confirmed /shutdown sends the run summary and then the shutdown message last (L-2), exit 0,
    and no key or token reaches the chat or the log."""
    import os
    import sys

    from bot.runtime import RECONCILE_REQUESTED
    from bot.shutdown import SHUTDOWN_TEXT
    from tests.fake_telegram import FakeTelegram

    allowed = 4242
    telegram = FakeTelegram()
    await telegram.start()
    fake.start_auto(0.2)
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": "123456:TEST-TOKEN", "TELEGRAM_API_BASE": telegram.base,
           "TELEGRAM_ALLOWED_USER_IDS": str(allowed)}
    stderr = (tmp_path / "stderr.txt").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", "--symbols", "XRP", "--timeframe", "1m",
        "--db", str(tmp_path / "demo.db"), env=env, cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
    )
    texts = lambda: telegram.texts_to(allowed)  # noqa: E731 - a short local accessor
    try:
        await telegram.wait_until(lambda: any("OptiFlow" in t for t in texts()), timeout=90)
        telegram.queue_text(allowed, "/summary")
        await telegram.wait_until(lambda: any("Summary — DEMO" in t for t in texts()), timeout=30)
        # S-2: the kline stream is subscribed on the exchange's socket and /runtime names the source.
        await telegram.wait_until(lambda: any("xrpusdt@kline_1m" in s.streams for s in fake.ws.sockets), timeout=30)
        telegram.queue_text(allowed, "/runtime")
        await telegram.wait_until(lambda: any("Market feed" in t for t in texts()), timeout=30)
        assert any("websocket (ccxt.pro watch_ohlcv)" in t for t in texts() if "Market feed" in t), [t for t in texts() if "Market feed" in t]
        telegram.queue_text(allowed, "/playbook no_stop")
        await telegram.tap(allowed, "🛡", timeout=30)
        await telegram.wait_until(lambda: RECONCILE_REQUESTED in texts(), timeout=30)
        telegram.queue_text(allowed, "/shutdown")
        await telegram.tap(allowed, "✅ Stop, keep positions with their stops", timeout=30)
        returncode = await asyncio.wait_for(process.wait(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        stderr.close()
        await telegram.stop()
    log = (tmp_path / "stderr.txt").read_text()
    assert returncode == 0, log[-2000:]
    card = texts()[0]
    assert card.startswith("<b>🚀 OptiFlow") and "DEMO" in card and "binanceusdm" in card and "Audit head" in card
    assert "Live gate:</b> ❌ promotion gate (S-7) not met: 0 closed demo trades" in card  # S-7 on the card
    assert texts()[-1].split("\n")[0] == f"{SHUTDOWN_TEXT} (/shutdown confirmed by user id={allowed} (keep))"
    assert "🔗 Audit head <code>" in texts()[-1]  # A-1 anchor
    assert texts()[-2].startswith("<b>Run summary</b>")
    everything = log + "\n".join(texts())
    assert "Traceback" not in log
    for secret in ("TEST-TOKEN", API_KEY, API_SECRET):
        assert secret not in everything
