"""``optiflow data download`` and ``optiflow data check`` (SPEC D-1).

``download`` fetches candles, mark-price candles, funding events and market rules through ccxt
(public endpoints, no keys) into ``OPTIFLOW_DATA_DIR`` (or ``--data-dir``) in the bundled format;
it is incremental and resumes after Ctrl+C or a kill (see :mod:`trading.adapters.downloader`).
``check`` lists gaps, duplicates, out-of-order and malformed rows of every data file and exits 1
when it finds any. ``EXCHANGE_API_BASE`` points ccxt at another host (the loopback fake in tests).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timezone
from pathlib import Path

from trading.domain.errors import OptiFlowError

EXIT_PROBLEMS = 1


def add_parser(sub, day) -> None:
    """Register ``data download`` / ``data check`` on the ``optiflow`` subparsers; ``day``
    parses YYYY-MM-DD into epoch ms (the CLI's own date type)."""
    data = sub.add_parser("data", help="download market data or check the data folder (SPEC D-1)")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=type(data))
    download = data_sub.add_parser("download", help="candles, funding, mark prices and market rules via ccxt")
    download.add_argument("--exchange", choices=["binanceusdm", "okx"], default="binanceusdm")
    download.add_argument("--symbols", required=True, help="comma-separated, e.g. BTC,ETH or BTC/USDC:USDC")
    download.add_argument("--quote", default="USDT", help="quote coin of short symbols (default USDT)")
    download.add_argument("--timeframe", choices=["1m", "5m", "15m", "1h"], default="1m")
    download.add_argument("--from", dest="start", type=day, required=True, metavar="YYYY-MM-DD", help="first UTC day")
    download.add_argument("--to", dest="end", type=day, required=True, metavar="YYYY-MM-DD",
                          help="last UTC day (inclusive)")
    download.add_argument("--data-dir", type=Path, help="target folder (default OPTIFLOW_DATA_DIR)")
    download.add_argument("--no-funding", action="store_true", help="skip funding rate history")
    download.add_argument("--no-mark", action="store_true", help="skip mark-price candles")
    download.add_argument("--rate-limit-ms", type=int, default=None,
                          help="ccxt's pacing in ms per unit of request weight (default: ccxt's for the exchange)")
    check = data_sub.add_parser("check", help="list gaps, duplicates and out-of-order rows")
    check.add_argument("--data-dir", type=Path, help="folder to check (default OPTIFLOW_DATA_DIR)")
    check.add_argument("--symbols", help="only these symbols, e.g. BTC,ETH")
    check.add_argument("--quote", default="USDT", help="quote coin of short symbols (default USDT)")


def _symbols(text: str, quote: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise OptiFlowError("--symbols: no symbol given")
    return [s if "/" in s else f"{s.upper()}/{quote}:{quote}" for s in items]


def make_client(exchange_id: str, api_base: str | None, rate_limit_ms: int | None):
    """A public (keyless) ccxt async client with its rate limiter on; ``api_base`` replaces every
    REST URL's host (EXCHANGE_API_BASE)."""
    import ccxt.async_support as ccxt_async

    from trading.adapters.ccxt_exchange import rebase_url

    config = {"enableRateLimit": True, "timeout": 30_000, "options": {"defaultType": "swap"}}
    if exchange_id == "binanceusdm":
        config["options"]["fetchCurrencies"] = False
    if rate_limit_ms is not None:
        config["rateLimit"] = rate_limit_ms
    client = getattr(ccxt_async, exchange_id)(config)
    if api_base:
        client.urls["api"] = {key: rebase_url(url, api_base) for key, url in client.urls["api"].items()}
    return client


async def data_command(args: argparse.Namespace) -> int:
    """Run ``optiflow data download|check``; returns the exit code."""
    from bot.settings import load_settings

    settings = load_settings()
    data_dir = args.data_dir or settings.optiflow_data_dir
    if args.data_command == "check":
        return _check(data_dir, args)
    return await _download(data_dir, args, settings.exchange_api_base)


async def _download(data_dir: Path, args: argparse.Namespace, api_base: str | None) -> int:
    from trading.adapters.downloader import Downloader, tqdm_progress

    if args.end < args.start:
        raise OptiFlowError("--to is before --from")
    symbols = _symbols(args.symbols, args.quote)
    client = make_client(args.exchange, api_base, args.rate_limit_ms)
    downloader = Downloader(client, args.exchange, data_dir, progress=tqdm_progress)
    try:
        result = await downloader.run(symbols, args.timeframe, args.start, args.end + 86_400_000,
                                      funding=not args.no_funding, mark=not args.no_mark)
    except asyncio.CancelledError:
        print("download interrupted: what was fetched is kept; run the same command again to resume")
        raise
    finally:
        await client.close()
    for job in result.jobs:
        print(f"{job.symbol:<16} {job.kind:<8} +{job.fetched:>7} rows  → {job.total:>8} in {job.path}")
    print(f"markets: {result.markets_file}")
    if downloader.retries:
        print(f"rate limits / errors waited out: {downloader.retries} ({downloader.waited_s:.1f} s)")
    return 0


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M")


def _check(data_dir: Path, args: argparse.Namespace) -> int:
    from trading.adapters.downloader import check_data_dir
    from trading.adapters.marketdata import file_stem

    if not data_dir.is_dir():
        raise OptiFlowError(f"no data folder at {data_dir}")
    patterns = ["*"] if not args.symbols else [f"*_{file_stem(s)}-*" for s in _symbols(args.symbols, args.quote)]
    results = [r for pattern in patterns for r in check_data_dir(data_dir, pattern)]
    if not results:
        raise OptiFlowError(f"no data files under {data_dir}")
    bad = 0
    for r in results:
        name = r.path.relative_to(data_dir)
        if r.ok:
            print(f"OK   {name}: {r.rows} rows")
            continue
        bad += 1
        print(f"FAIL {name}: {r.rows} rows")
        if r.problem:
            print(f"     {r.problem}")
        if r.gaps:
            missing = sum(g[2] for g in r.gaps)
            print(f"     gaps: {len(r.gaps)} ({missing} candles missing, largest {max(g[2] for g in r.gaps)})")
            for first, last, count in r.gaps[:10]:
                print(f"       {_utc(first)} → {_utc(last)} ({count} missing)")
            if len(r.gaps) > 10:
                print(f"       … and {len(r.gaps) - 10} more")
        if r.duplicates:
            print(f"     duplicate timestamps: {len(r.duplicates)} (first {_utc(r.duplicates[0])})")
        if r.out_of_order:
            line, ts = r.out_of_order[0]
            print(f"     out-of-order rows: {len(r.out_of_order)} (first at line {line}, {_utc(ts)})")
        if r.misaligned:
            print(f"     timestamps off the timeframe grid: {len(r.misaligned)}")
        if r.bad_rows:
            print(f"     malformed rows: {len(r.bad_rows)} (first at line {r.bad_rows[0]})")
    print(f"{len(results)} files checked, {bad} with problems")
    return EXIT_PROBLEMS if bad else 0
