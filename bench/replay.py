"""Replay throughput: candles/s through the full path (feed → indicators → strategy → risk →
OMS → simulated exchange → storage) for every bundled symbol, and the peak RSS.

Usage: ``python bench/replay.py [--timeframe 1m|5m|both]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

from bot.runtime import PaperRuntime
from trading.domain.config import BotProfile, TradingConfig
from trading.adapters.marketdata import default_data_dir

SYMBOLS = tuple(f"{base}/USDT:USDT" for base in ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "LTC"))


async def bench(timeframe: str) -> tuple[int, float, int]:
    """Replay every bundled symbol at ``timeframe`` into a fresh file database; returns
    (candles, seconds, trades)."""
    config = TradingConfig(bots=(BotProfile(symbols=SYMBOLS, timeframe=timeframe, max_positions=4),))
    with tempfile.TemporaryDirectory() as tmp:
        runtime = await PaperRuntime.build(config=config, db_path=Path(tmp) / "bench.db", data_dir=default_data_dir())
        try:
            started = time.perf_counter()
            result = await runtime.replay(speed=None)
            elapsed = time.perf_counter() - started
            trades = await runtime.store.positions.count_closed()
        finally:
            await runtime.close()
    return result.candles, elapsed, trades


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeframe", choices=["1m", "5m", "both"], default="both")
    args = parser.parse_args()
    frames = ["1m", "5m"] if args.timeframe == "both" else [args.timeframe]
    total_candles, total_seconds = 0, 0.0
    for timeframe in frames:
        candles, seconds, trades = asyncio.run(bench(timeframe))
        total_candles += candles
        total_seconds += seconds
        print(f"{timeframe}: {candles:,} candles, {len(SYMBOLS)} symbols, {trades} trades in {seconds:.2f} s "
              f"→ {candles / seconds:,.0f} candles/s")
    print(f"all: {total_candles / total_seconds:,.0f} candles/s")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS: {peak_kib / 1024:.1f} MiB (python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
