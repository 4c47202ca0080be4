"""Replay throughput: candles/s through the full path (feed → indicators → strategy → risk →
OMS → simulated exchange → storage) for every bundled symbol, and the peak RSS.

Usage: ``python bench/replay.py [--timeframe 1m|5m|both]``. Prints figures; asserts nothing.
CPU seconds are printed beside wall seconds: on a shared machine they move less.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

from bot.runtime import build_paper_runtime
from trading.domain.config import BotProfile, TradingConfig
from trading.adapters.marketdata import default_data_dir

SYMBOLS = tuple(f"{base}/USDT:USDT" for base in ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "LTC"))


async def bench(timeframe: str, symbols: tuple[str, ...] = SYMBOLS, data_dir: Path | None = None,
                start_ms: int | None = None, end_ms: int | None = None,
                max_positions: int | None = 4) -> tuple[int, float, float, int]:
    """Replay ``symbols`` (default: every bundled one) at ``timeframe`` from ``data_dir``
    (default: the bundled data), candles in [``start_ms``, ``end_ms``) epoch ms UTC when given,
    into a fresh file database; ``max_positions`` None keeps the profile's default. Returns
    (candles, wall seconds, CPU seconds of this process, closed trades)."""
    profile = BotProfile(symbols=symbols, timeframe=timeframe)
    if max_positions is not None:
        profile = BotProfile(symbols=symbols, timeframe=timeframe, max_positions=max_positions)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = await build_paper_runtime(config=TradingConfig(bots=(profile,)), db_path=Path(tmp) / "bench.db",
                                            data_dir=data_dir or default_data_dir(), start_ms=start_ms, end_ms=end_ms)
        try:
            started, cpu_started = time.perf_counter(), time.process_time()
            result = await runtime.replay(speed=None)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            trades = await runtime.store.positions.count_closed()
        finally:
            await runtime.close()
    return result.candles, elapsed, cpu, trades


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeframe", choices=["1m", "5m", "both"], default="both")
    args = parser.parse_args()
    frames = ["1m", "5m"] if args.timeframe == "both" else [args.timeframe]
    total_candles, total_seconds, total_cpu = 0, 0.0, 0.0
    for timeframe in frames:
        candles, seconds, cpu, trades = asyncio.run(bench(timeframe))
        total_candles += candles
        total_seconds += seconds
        total_cpu += cpu
        print(f"{timeframe}: {candles:,} candles, {len(SYMBOLS)} symbols, {trades} trades in {seconds:.2f} s "
              f"({cpu:.2f} s CPU) → {candles / seconds:,.0f} candles/s ({candles / cpu:,.0f} per CPU second)")
    print(f"all: {total_candles / total_seconds:,.0f} candles/s ({total_candles / total_cpu:,.0f} per CPU second)")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS: {peak_kib / 1024:.1f} MiB (python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
