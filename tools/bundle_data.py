"""Copy the compact subset of ``../shared/data`` that OptiFlow ships in ``data/``.

Real Binance USDⓈ-M data only: the candles are sliced by time, never altered. Run from the
project root: ``python tools/bundle_data.py [--shared ../shared/data]``. The provenance of every
source file is in ``../shared/data/SOURCES.json``; ``data/README.md`` repeats it for what we ship.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from datetime import datetime, timezone
from pathlib import Path

SYMBOLS = ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "LTC")
TIMEFRAMES = ("1m", "5m")
# 2025-06-03T00:00Z → end of the shared files (2025-06-24T10:3x): 21 days of every symbol.
START_MS = int(datetime(2025, 6, 3, tzinfo=timezone.utc).timestamp() * 1000)


def _slice_csv_gz(source: Path, target: Path, start_ms: int) -> int:
    """Copy the header and every row with timestamp ≥ start_ms; returns the row count."""
    rows = 0
    with gzip.open(source, "rt") as src, gzip.open(target, "wt", compresslevel=9) as dst:
        dst.write(src.readline())
        for line in src:
            if int(line.split(",", 1)[0]) >= start_ms:
                dst.write(line)
                rows += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("data"))
    args = parser.parse_args()
    for sub in ("ohlcv", "funding", "markets"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    for base in SYMBOLS:
        for timeframe in TIMEFRAMES:
            name = f"binance_futures_{base}_USDT_USDT-{timeframe}.csv.gz"
            n = _slice_csv_gz(args.shared / "ohlcv" / name, args.out / "ohlcv" / name, START_MS)
            print(f"ohlcv/{name}: {n} rows")
        name = f"binance_futures_{base}_USDT_USDT-funding_rate.csv.gz"
        n = _slice_csv_gz(args.shared / "funding" / name, args.out / "funding" / name, START_MS)
        print(f"funding/{name}: {n} rows")
    for name in ("binanceusdm_markets.ccxt.json.gz", "binanceusdm_markets_summary.csv",
                 "binance_leverage_tiers.freqtrade.json.gz"):
        shutil.copyfile(args.shared / "markets" / name, args.out / "markets" / name)
        print(f"markets/{name}: copied")


if __name__ == "__main__":
    main()
