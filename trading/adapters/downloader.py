"""Market data download through ccxt into the data folder, and its integrity check (SPEC D-1).

What one download job writes, in the bundled format (``data/README.md``; gzip CSV, header line,
epoch ms UTC, numbers in the shortest round-trip float form):

- ``ohlcv/<prefix>_<SYMBOL>-<tf>.csv.gz``: closed candles from ``fetch_ohlcv``, paginated;
- ``mark/<prefix>_<SYMBOL>-8h-mark.csv.gz``: mark-price candles (``params={"price": "mark"}``)
  where the exchange has them, at the funding interval as the shared data set keeps them;
- ``funding/<prefix>_<SYMBOL>-funding_rate.csv.gz``: ``fetch_funding_rate_history``;
- ``markets/<exchange>_markets.ccxt.json.gz``: the ccxt ``load_markets()`` dump (market rules).

``<prefix>`` is ``binance_futures`` for ``binanceusdm`` (what the paper engine replays) and
``okx_futures`` for ``okx``. Incremental: only the candles missing from the file in the asked
window are fetched. Resumable: each page is appended (and fsynced) to ``<file>.part`` before the
next request, so a kill loses at most the page in flight; the next run merges the part file
into the gzip file (sorted, one row per timestamp) with an atomic replace. Rate limits: ccxt's
throttle paces the requests by each endpoint's weight; a 429/418 is waited out (its
``Retry-After``), network errors are retried with back-off, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trading.adapters.marketdata import file_stem
from trading.domain.errors import DataError

log = logging.getLogger(__name__)

TIMEFRAMES_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "8h": 28_800_000}
DOWNLOAD_TIMEFRAMES = ("1m", "5m", "15m", "1h")
MARK_TIMEFRAME = "8h"
FILE_PREFIX = {"binanceusdm": "binance_futures", "okx": "okx_futures"}
OHLCV_HEADER = "timestamp,open,high,low,close,volume"
MARK_HEADER = "timestamp,open,high,low,close"
FUNDING_HEADER = "timestamp,funding_rate"
PAGE_LIMIT = 1000  # ccxt's cap for Binance klines; Binance allows 1500 (weight 10 instead of 5)
MAX_TRIES = 8


def candle_path(data_dir: Path, exchange_id: str, symbol: str, timeframe: str) -> Path:
    """``ohlcv/<prefix>_<SYMBOL>-<tf>.csv.gz`` under ``data_dir`` (the bundled file name)."""
    return data_dir / "ohlcv" / f"{FILE_PREFIX[exchange_id]}_{file_stem(symbol)}-{timeframe}.csv.gz"


def mark_path(data_dir: Path, exchange_id: str, symbol: str) -> Path:
    """``mark/<prefix>_<SYMBOL>-8h-mark.csv.gz`` under ``data_dir``."""
    return data_dir / "mark" / f"{FILE_PREFIX[exchange_id]}_{file_stem(symbol)}-{MARK_TIMEFRAME}-mark.csv.gz"


def funding_path(data_dir: Path, exchange_id: str, symbol: str) -> Path:
    """``funding/<prefix>_<SYMBOL>-funding_rate.csv.gz`` under ``data_dir``."""
    return data_dir / "funding" / f"{FILE_PREFIX[exchange_id]}_{file_stem(symbol)}-funding_rate.csv.gz"


def markets_path(data_dir: Path, exchange_id: str) -> Path:
    """``markets/<exchange>_markets.ccxt.json.gz`` under ``data_dir``."""
    return data_dir / "markets" / f"{exchange_id}_markets.ccxt.json.gz"


def _num(value: Any) -> str:
    """A number in the bundled files' shortest round-trip form."""
    return repr(float(value))


# ------------------------------------------------------------------ files
class RowFile:
    """One data file (gzip CSV) plus its ``.part`` journal of rows appended since the last merge.

    Rows are lists of strings whose first field is the timestamp (epoch ms UTC)."""

    def __init__(self, path: Path, header: str) -> None:
        self.path = path
        self.header = header
        self.part = path.with_name(path.name + ".part")

    def read(self) -> dict[int, list[str]]:
        """Every stored row by timestamp: the gzip file, then the part journal (a torn last line
        of a killed run is dropped; a later row wins over an earlier one of the same time).

        Raises:
            DataError: the gzip file has another header or a malformed row.
        """
        rows: dict[int, list[str]] = {}
        if self.path.exists():
            with gzip.open(self.path, "rt") as handle:
                header = handle.readline().strip()
                if header != self.header:
                    raise DataError(f"{self.path}: unexpected header {header!r}")
                for line_no, line in enumerate(handle, start=2):
                    fields = line.strip().split(",")
                    try:
                        rows[int(fields[0])] = fields
                    except ValueError:
                        raise DataError(f"{self.path}:{line_no}: malformed row") from None
        if self.part.exists():
            text = self.part.read_text(encoding="utf-8")
            width = self.header.count(",") + 1
            for line in text.split("\n")[:-1]:  # the text after the last newline is torn
                fields = line.split(",")
                if len(fields) == width and fields[0].isdigit():
                    rows[int(fields[0])] = fields
        return rows

    def append(self, rows: Iterable[list[str]]) -> None:
        """Append rows to the part journal, durable before returning (a kill keeps them)."""
        lines = "".join(",".join(r) + "\n" for r in rows)
        if not lines:
            return
        self.part.parent.mkdir(parents=True, exist_ok=True)
        with self.part.open("a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def merge(self) -> int:
        """Fold the part journal into the gzip file: rows sorted by time, one per timestamp,
        written to a temporary file and renamed over the old one (atomic). Returns the rows."""
        rows = self.read()
        if not self.part.exists() and self.path.exists():
            return len(rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as handle:
            handle.write(self.header + "\n")
            for ts in sorted(rows):
                handle.write(",".join(rows[ts]) + "\n")
        os.replace(tmp, self.path)
        self.part.unlink(missing_ok=True)
        return len(rows)


def missing_ranges(have: Iterable[int], start_ms: int, end_ms: int, tf_ms: int) -> list[tuple[int, int]]:
    """The candle open times of the grid [start_ms, end_ms) (aligned to ``tf_ms``) that are not
    in ``have``, as (first, last) runs, oldest first."""
    first = -(-start_ms // tf_ms) * tf_ms
    stored = set(have)
    runs: list[tuple[int, int]] = []
    run_start = None
    t = first
    while t < end_ms:
        if t in stored:
            if run_start is not None:
                runs.append((run_start, t - tf_ms))
                run_start = None
        elif run_start is None:
            run_start = t
        t += tf_ms
    if run_start is not None:
        runs.append((run_start, t - tf_ms))
    return runs


# ------------------------------------------------------------- download
@dataclass(slots=True)
class JobResult:
    """What one file got: ``kind`` (ohlcv / mark / funding), the rows fetched now and the rows
    the file holds after the merge."""

    kind: str
    symbol: str
    path: Path
    fetched: int
    total: int


@dataclass(slots=True)
class DownloadResult:
    """Every file the download touched, and the markets file."""

    jobs: list[JobResult] = field(default_factory=list)
    markets_file: Path | None = None


Progress = Callable[..., Any]
"""``progress(total=N|None, desc=str, unit=str)`` → an object with ``update(n)`` and ``close()``
(tqdm's interface)."""


def tqdm_progress(**kwargs: Any) -> Any:
    """A tqdm progress bar on stderr (SPEC D-1), hidden when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(disable=None, leave=True, dynamic_ncols=True, **kwargs)


class Downloader:
    """Fetches candles, mark-price candles, funding events and market rules of one exchange.

    Args:
        client: a ccxt async exchange (``ccxt.async_support.binanceusdm()`` or ``okx()``), with
            ``enableRateLimit`` on (ccxt's throttle by request weight); it is not closed here.
        exchange_id: ``binanceusdm`` or ``okx`` (file names, see :data:`FILE_PREFIX`).
        data_dir: the data folder (OPTIFLOW_DATA_DIR).
        progress: progress bar factory (:data:`Progress`); None = none.
        sleep: ``asyncio.sleep`` (tests may pass a recorder).
    """

    def __init__(self, client: Any, exchange_id: str, data_dir: Path, *, progress: Progress | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        if exchange_id not in FILE_PREFIX:
            raise DataError(f"exchange {exchange_id!r} is not supported (binanceusdm, okx)")
        self.client = client
        self.exchange_id = exchange_id
        self.data_dir = data_dir
        self.progress = progress
        self.sleep = sleep
        self.waited_s = 0.0  # time spent waiting out rate limits and errors
        self.retries = 0

    async def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """One ccxt call; 429/418 waited out per Retry-After, network errors retried with
        exponential back-off (1, 2, 4 … s, capped at 30), at most :data:`MAX_TRIES` times.

        Raises:
            DataError: the exchange refused the request or kept failing (names what).
        """
        import ccxt.async_support as ccxt

        for attempt in range(1, MAX_TRIES + 1):
            try:
                return await getattr(self.client, method)(*args, **kwargs)
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as exc:
                wait = _retry_after(self.client) or min(30.0, 2.0 ** (attempt - 1))
                problem = f"rate limited ({type(exc).__name__})"
            except (ccxt.NetworkError, ccxt.ExchangeNotAvailable) as exc:
                wait = min(30.0, 2.0 ** (attempt - 1))
                problem = f"network error ({type(exc).__name__})"
            except ccxt.BadSymbol:
                raise DataError(f"{what}: not a market on {self.exchange_id}") from None
            except ccxt.BaseError as exc:
                raise DataError(f"{what}: the exchange refused the request ({type(exc).__name__}: "
                                f"{str(exc)[:200]})") from None
            if attempt == MAX_TRIES:
                break
            log.warning("%s: %s, waiting %.1f s (try %d of %d)", what, problem, wait, attempt, MAX_TRIES)
            self.retries += 1
            self.waited_s += wait
            await self.sleep(wait)
        raise DataError(f"{what}: gave up after {MAX_TRIES} tries ({problem})")

    async def markets(self) -> dict[str, dict]:
        """Load the exchange's markets and store them as the markets file (atomic replace)."""
        markets = await self._call("markets", "load_markets")
        path = markets_path(self.data_dir, self.exchange_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as handle:
            json.dump(markets, handle, default=str)
        os.replace(tmp, path)
        return markets

    async def run(self, symbols: Iterable[str], timeframe: str, start_ms: int, end_ms: int, *,
                  funding: bool = True, mark: bool = True) -> DownloadResult:
        """Download ``symbols`` over [start_ms, end_ms) (epoch ms UTC): candles of
        ``timeframe``, mark-price candles and funding events, after storing the markets file.

        Raises:
            DataError: unknown symbol, unsupported timeframe, or the exchange kept failing.
        """
        if timeframe not in DOWNLOAD_TIMEFRAMES:
            raise DataError(f"timeframe {timeframe!r} is not one of {', '.join(DOWNLOAD_TIMEFRAMES)}")
        if end_ms <= start_ms:
            raise DataError("--to must be after --from")
        result = DownloadResult()
        markets = await self.markets()
        result.markets_file = markets_path(self.data_dir, self.exchange_id)
        symbols = list(symbols)
        for symbol in symbols:
            if symbol not in markets:
                raise DataError(f"{symbol} is not a market on {self.exchange_id}")
        has = getattr(self.client, "has", {}) or {}
        for symbol in symbols:
            result.jobs.append(await self.candles(symbol, timeframe, start_ms, end_ms))
            if mark and has.get("fetchMarkOHLCV"):
                result.jobs.append(await self.candles(symbol, MARK_TIMEFRAME, start_ms, end_ms, price="mark"))
            if funding and has.get("fetchFundingRateHistory"):
                result.jobs.append(await self.funding(symbol, start_ms, end_ms))
        return result

    async def candles(self, symbol: str, timeframe: str, start_ms: int, end_ms: int,
                      price: str | None = None) -> JobResult:
        """Fetch the closed candles of [start_ms, end_ms) missing from the file, page by page
        (``price="mark"``: mark-price candles, no volume column), then merge the file."""
        tf = TIMEFRAMES_MS[timeframe]
        if price == "mark":
            store, kind = RowFile(mark_path(self.data_dir, self.exchange_id, symbol), MARK_HEADER), "mark"
        else:
            store, kind = RowFile(candle_path(self.data_dir, self.exchange_id, symbol, timeframe), OHLCV_HEADER), "ohlcv"
        closed_by = self.client.milliseconds() - tf  # a candle still forming is never stored
        runs = missing_ranges(store.read().keys(), start_ms, min(end_ms, closed_by + 1), tf)
        total = sum((last - first) // tf + 1 for first, last in runs)
        bar = self._bar(total, f"{symbol} {kind} {timeframe}", "candles")
        fetched = 0
        params: dict[str, Any] = {} if price is None else {"price": price}
        try:
            for first, last in runs:
                since = first
                while since <= last:
                    page = await self._call(f"{symbol} {kind} {timeframe}", "fetch_ohlcv", symbol, timeframe,
                                            since, PAGE_LIMIT, {**params, "until": last})
                    rows = [r for r in page if since <= r[0] <= last and r[0] % tf == 0]
                    if not rows:
                        break  # nothing more in this run on the exchange (a gap of its own)
                    width = 5 if price == "mark" else 6
                    store.append([[str(int(r[0])), *(_num(v if v is not None else 0) for v in r[1:width])]
                                  for r in rows])
                    fetched += len(rows)
                    if bar is not None:
                        bar.update(len(rows))
                    since = int(rows[-1][0]) + tf
        finally:
            if bar is not None:
                bar.close()
        return JobResult(kind, symbol, store.path, fetched, store.merge())

    async def funding(self, symbol: str, start_ms: int, end_ms: int) -> JobResult:
        """Fetch the funding events of [start_ms, end_ms) before the first or after the last
        event already stored, page by page, then merge the file."""
        store = RowFile(funding_path(self.data_dir, self.exchange_id, symbol), FUNDING_HEADER)
        have = sorted(store.read())
        windows = [(start_ms, end_ms - 1)]
        if have:
            windows = [w for w in ((start_ms, min(end_ms, have[0]) - 1), (max(start_ms, have[-1] + 1), end_ms - 1))
                       if w[0] <= w[1]]
        bar = self._bar(None, f"{symbol} funding", "events")
        fetched = 0
        try:
            for first, last in windows:
                since = first
                while since <= last:
                    page = await self._call(f"{symbol} funding", "fetch_funding_rate_history", symbol, since,
                                            PAGE_LIMIT, {"until": last})
                    rows = [r for r in page if since <= r["timestamp"] <= last]
                    if not rows:
                        break
                    store.append([[str(int(r["timestamp"])), _num(r["fundingRate"])] for r in rows])
                    fetched += len(rows)
                    if bar is not None:
                        bar.update(len(rows))
                    since = int(rows[-1]["timestamp"]) + 1
        finally:
            if bar is not None:
                bar.close()
        return JobResult("funding", symbol, store.path, fetched, store.merge())

    def _bar(self, total: int | None, desc: str, unit: str) -> Any:
        return None if self.progress is None else self.progress(total=total, desc=desc, unit=unit)


def _retry_after(client: Any) -> float | None:
    """The ``Retry-After`` seconds of the client's last response, if it sent one."""
    headers = getattr(client, "last_response_headers", None) or {}
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


# ---------------------------------------------------------------- check
@dataclass(slots=True)
class FileCheck:
    """Integrity of one data file (SPEC D-1 ``data check``): rows, duplicate timestamps,
    out-of-order rows, timestamps off the timeframe grid, rows whose high/low do not contain
    open and close, and gaps as (first missing open, last missing open, missing candles)."""

    path: Path
    rows: int = 0
    duplicates: list[int] = field(default_factory=list)
    out_of_order: list[tuple[int, int]] = field(default_factory=list)  # (line, timestamp)
    misaligned: list[int] = field(default_factory=list)
    bad_rows: list[int] = field(default_factory=list)  # line numbers
    gaps: list[tuple[int, int, int]] = field(default_factory=list)
    problem: str = ""

    @property
    def ok(self) -> bool:
        """No problem of any kind."""
        return not (self.duplicates or self.out_of_order or self.misaligned or self.bad_rows or self.gaps
                    or self.problem)


def _timeframe_of(path: Path) -> int | None:
    """The candle length (ms) in a file name ``…-<tf>.csv.gz`` / ``…-<tf>-mark.csv.gz``."""
    name = path.name.removesuffix(".csv.gz").removesuffix("-mark")
    return TIMEFRAMES_MS.get(name.rsplit("-", 1)[-1])


def check_file(path: Path) -> FileCheck:
    """Check one candle, mark or funding file (funding: duplicates and order only)."""
    result = FileCheck(path)
    tf = _timeframe_of(path)
    candles = "funding" not in path.name
    previous: int | None = None
    seen: set[int] = set()
    try:
        with gzip.open(path, "rt") as handle:
            header = handle.readline().strip()
            if header not in (OHLCV_HEADER, MARK_HEADER, FUNDING_HEADER):
                result.problem = f"unexpected header {header!r}"
                return result
            for line_no, line in enumerate(handle, start=2):
                fields = line.strip().split(",")
                try:
                    ts = int(fields[0])
                    values = [float(v) for v in fields[1:]]
                except (ValueError, IndexError):
                    result.bad_rows.append(line_no)
                    continue
                result.rows += 1
                if ts in seen:
                    result.duplicates.append(ts)
                elif previous is not None and ts < previous:
                    result.out_of_order.append((line_no, ts))
                seen.add(ts)
                if candles:
                    if tf is not None and ts % tf:
                        result.misaligned.append(ts)
                    if len(values) >= 4:
                        o, h, low, c = values[:4]
                        if not (h >= max(o, c) and low <= min(o, c) and low > 0):
                            result.bad_rows.append(line_no)
                previous = ts
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        result.problem = f"unreadable ({exc})"
        return result
    if candles and tf is not None and seen:
        stamps = sorted(seen)
        for a, b in zip(stamps, stamps[1:]):
            if b - a > tf:
                result.gaps.append((a + tf, b - tf, (b - a) // tf - 1))
    return result


def check_data_dir(data_dir: Path, pattern: str = "*") -> list[FileCheck]:
    """:func:`check_file` for every ``ohlcv``, ``mark`` and ``funding`` file under ``data_dir``
    whose name matches ``pattern`` (glob), sorted by path; leftover ``.part`` journals of an
    interrupted download are reported as a problem (run the download again to merge them)."""
    results = []
    for folder in ("ohlcv", "mark", "funding"):
        base = data_dir / folder
        if not base.is_dir():
            continue
        for path in sorted(base.glob(f"{pattern}.csv.gz")):
            results.append(check_file(path))
        for part in sorted(base.glob(f"{pattern}.csv.gz.part")):
            results.append(FileCheck(part, problem="unfinished download (run `optiflow data download` again)"))
    return results
