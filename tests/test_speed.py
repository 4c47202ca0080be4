"""Issue 17: the faster paths give the same results as the reference ones, on the bundled REAL
candles — the bulk market state of a replay (indicators, statistics, regime and ScalpingV1's
verdicts) against the live feeds' incremental one, a whole bulk backtest against a candle-by-
candle one, the numpy candle loader against the line parser, and the audit chain's hash against
the generic canonical form. Speed figures are in ``bench/``, never asserted here."""

from __future__ import annotations

import gzip
import math
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from bot.runtime import build_paper_runtime
from trading.adapters import marketdata
from trading.adapters.marketdata import default_data_dir, load_candles
from trading.domain.audit import AuditEntry, chain
from trading.domain.config import StrategyConfig, TradingConfig, load_trading_config
from trading.domain.errors import BadData
from trading.domain.filters import MarketStats
from trading.domain.indicators import IndicatorSet
from trading.domain.models import TIMEFRAME_MS
from trading.domain.regime import RegimeDetector
from trading.domain.strategy import ScalpingV1
from trading.engine.series import SeriesMarket

ROOT = Path(__file__).resolve().parent.parent
SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "XRP/USDT:USDT", "ADA/USDT:USDT",
           "DOGE/USDT:USDT", "LTC/USDT:USDT")


def _close(a, b, rel: float) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


@pytest.mark.parametrize("timeframe", ["5m", "1m"])
def test_s10_s11_s12_bulk_market_state_equals_the_incremental_one_on_every_bundled_candle(timeframe):
    """O-9 / S-10 / S-11 / S-12 / F-2 / F-4: on every candle of every bundled series the bulk
    state gives the same strategy verdict (side, score, components, 1+1 — what decides an
    entry), the same regime and medians, and indicators and the 24 h volume within 1e-11 and
    1e-9 relative (TA-Lib and the incremental classes order a few float operations differently)."""
    strategy = ScalpingV1(StrategyConfig())
    verdicts = 0
    for symbol in SYMBOLS:
        series = load_candles(default_data_dir(), symbol, timeframe)
        market = SeriesMarket(*(np.asarray(col) for col in (series.high, series.low, series.close, series.volume)),
                              TIMEFRAME_MS[timeframe], {"bot": strategy})
        ind, stats, regime = IndicatorSet(), MarketStats.for_timeframe(TIMEFRAME_MS[timeframe]), RegimeDetector()
        for i, (h, low, c, v) in enumerate(zip(series.high, series.low, series.close, series.volume)):
            ready = ind.update(h, low, c, v)
            stats.update(c, v, ind.atr)
            regime.update(c)
            market.seek(i)
            bulk = market.indicators
            assert bulk.ready == ready, (symbol, i)
            if ready:
                for ours, theirs in ((ind.rsi, bulk.rsi), (ind.atr, bulk.atr), (ind.macd_hist, bulk.macd_hist),
                                     (ind.prev_macd_hist, bulk.prev_macd_hist), (ind.volume_sma, bulk.volume_sma),
                                     (ind.ema, bulk.ema)):
                    assert _close(ours, theirs, 1e-11), (symbol, i, ours, theirs)
            assert _close(stats.quote_volume_24h, market.stats.quote_volume_24h, 1e-9), (symbol, i)
            assert stats.median_volume() == market.stats.median_volume(), (symbol, i)
            assert _close(stats.median_atr(), market.stats.median_atr(), 1e-11), (symbol, i)
            assert regime.regime == market.regime.regime, (symbol, i)
            expected = strategy.evaluate(ind.rsi, ind.macd_hist, ind.prev_macd_hist, ind.atr, v, ind.volume_sma, c,
                                         ind.ema) if ready else None
            assert market.check("bot", i) == expected, (symbol, i)
            verdicts += expected is not None
    assert verdicts > 10_000  # the comparison is not vacuous


@pytest.mark.parametrize("config", ["default", "examples/launch.toml", "examples/scaling.toml"])
async def test_o9_bulk_backtest_trades_exactly_as_candle_by_candle(tmp_path, data_dir, config):
    """O-9 / S-13: a backtest that computes the market state in bulk and steps only the candles
    where something can happen trades exactly as one that steps every candle with the live
    feeds' incremental state: the same trades (entry, exit, reason, fees, net PnL to the last
    decimal), the same evaluated signals in the same order (S-13), the same equity curve."""
    trading_config = TradingConfig() if config == "default" else load_trading_config(ROOT / config)
    results = []
    for bulk in (True, False):
        runtime = await build_paper_runtime(config=trading_config, db_path=tmp_path / f"{bulk}.db", data_dir=data_dir,
                                            bulk=bulk)
        try:
            await runtime.replay()
            await runtime.close_positions_at_end()
            trades = [(p.position_id, p.contracts, p.entry_price, p.exit_price, p.exit_reason, p.fees, p.funding,
                       p.net_pnl) for p in sorted(await runtime.store.positions.list_closed(), key=lambda p: p.position_id)]
            db = runtime.store.db
            signals = await db.fetchall("SELECT timestamp, bot, symbol, side, score, passed, blocked_by, min_score,"
                                        " components FROM signals ORDER BY id")
            equity = await db.fetchall("SELECT timestamp, balance, equity FROM equity_snapshots ORDER BY id")
            results.append((trades, [tuple(r) for r in signals], [tuple(r) for r in equity]))
        finally:
            await runtime.close()
    (bulk_trades, bulk_signals, bulk_equity), (trades, signals, equity) = results
    assert len(trades) > 50
    assert bulk_trades == trades
    assert bulk_signals == signals and len(signals) > 1_000
    assert bulk_equity == equity


def test_d1_numpy_candle_loader_equals_the_line_parser_and_caches(tmp_path, monkeypatch):
    """The fast loader (numpy's C parser, then a cached binary copy) returns exactly what the
    line parser returns for every bundled file; a bad row still stops the load naming its line
    (the line parser is the authority on errors, SPEC D-1)."""
    monkeypatch.setenv("OPTIFLOW_CACHE_DIR", str(tmp_path / "cache"))
    columns = ("timestamp", "open", "high", "low", "close", "volume")
    for path in sorted((default_data_dir() / "ohlcv").glob("binance_futures_*.csv.gz")):
        base, quote, settle, timeframe = path.name[len("binance_futures_"):-len(".csv.gz")].replace("-", "_").split("_")
        symbol = f"{base}/{quote}:{settle}"
        fast = load_candles(default_data_dir(), symbol, timeframe)
        cached = load_candles(default_data_dir(), symbol, timeframe)
        with monkeypatch.context() as m:
            m.setattr(marketdata, "_fast_rows", lambda _path: None)
            reference = load_candles(default_data_dir(), symbol, timeframe)
        for name in columns:
            assert getattr(fast, name) == getattr(reference, name) == getattr(cached, name), (path.name, name)
    assert len(list((tmp_path / "cache" / "candles").glob("*.npy"))) == 14
    data = tmp_path / "data"
    (data / "ohlcv").mkdir(parents=True)
    source = default_data_dir() / "ohlcv" / "binance_futures_XRP_USDT_USDT-5m.csv.gz"
    rows = gzip.open(source, "rt").read().splitlines()
    rows[7] = rows[7].replace(",", ";", 1)
    (data / "ohlcv" / source.name).write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    with pytest.raises(BadData, match=r"csv.gz:8: malformed candle row"):
        load_candles(data, "XRP/USDT:USDT", "5m")


def test_a1_the_chain_hashes_its_records_as_the_generic_canonical_form_does():
    """A-1: ``chain`` writes each record's canonical JSON key by key instead of encoding a dict
    again; the hash is the one ``AuditRecord.computed_hash`` (what ``audit verify`` checks)
    computes, whatever the values (unicode, Decimals, nested lists, None)."""
    entries = [AuditEntry(1, "EXIT", "bot", "BTC/USDT:USDT", "long", Decimal("0.001"),
                          {"reason": "TP1", "price": Decimal("65000.1"), "why": ["a", {"b": None}]}),
               AuditEntry(2, "COMMAND", "böt", "", "", None, {"command": "pause ⏸", "n": 3, "ok": True}),
               replace(AuditEntry(3, "FILL"), why={"x": 1.5})]
    records = chain(entries, head_seq=41, head_hash="ab" * 32, config_id="cfg")
    assert [r.seq for r in records] == [42, 43, 44]
    assert all(r.hash == r.computed_hash() for r in records)
