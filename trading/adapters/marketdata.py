"""Loading of the bundled real Binance data: candles, funding events and market rules.

File formats are those of ``data/README.md`` (gzip CSV with a header; epoch ms UTC timestamps;
the ccxt ``binanceusdm.load_markets()`` dump for market rules).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import warnings
import zlib
from array import array
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from trading.domain.errors import BadData, MissingData
from trading.domain.models import Candle, Market



def default_data_dir() -> Path:
    """The project's bundled ``data/`` folder (beside the packages in an editable install)."""
    return Path(__file__).resolve().parents[2] / "data"


def file_stem(symbol: str) -> str:
    """ccxt unified symbol → file stem: ``BTC/USDT:USDT`` → ``BTC_USDT_USDT``."""
    return symbol.replace("/", "_").replace(":", "_")


@dataclass(slots=True)
class CandleSeries:
    """Columnar candles of one symbol and timeframe, oldest first.

    Arrays of equal length n: ``timestamp`` (int64, candle open time, epoch ms UTC), ``open``,
    ``high``, ``low``, ``close`` (float64, quote) and ``volume`` (float64, contracts). Columnar
    arrays keep a replay of hundreds of thousands of candles compact and fast.
    """

    symbol: str
    timeframe: str
    timestamp: array
    open: array
    high: array
    low: array
    close: array
    volume: array
    proxy_of: str = ""
    """The symbol whose candles stand in for ``symbol``'s (SPEC S-6: ``X/USDT:USDT`` for an
    ``X/USDC:USDC`` without candles of its own); "" = the symbol's own candles."""

    def __len__(self) -> int:
        return len(self.timestamp)

    def candle(self, index: int) -> Candle:
        """The candle at ``index`` as a :class:`Candle`."""
        return Candle(
            self.timestamp[index], self.open[index], self.high[index],
            self.low[index], self.close[index], self.volume[index],
        )

    def between(self, start_ms: int | None, end_ms: int | None) -> "CandleSeries":
        """The candles with start_ms ≤ timestamp < end_ms (None = unbounded)."""
        from bisect import bisect_left

        lo = 0 if start_ms is None else bisect_left(self.timestamp, start_ms)
        hi = len(self) if end_ms is None else bisect_left(self.timestamp, end_ms)
        return CandleSeries(
            self.symbol, self.timeframe, self.timestamp[lo:hi], self.open[lo:hi],
            self.high[lo:hi], self.low[lo:hi], self.close[lo:hi], self.volume[lo:hi], self.proxy_of,
        )


def load_candles(data_dir: Path, symbol: str, timeframe: str) -> CandleSeries:
    """Read ``ohlcv/binance_futures_<SYMBOL>-<tf>.csv.gz`` under ``data_dir``.

    Raises:
        MissingData: the file is not there.
        BadData: the file is truncated or not gzip, a row is malformed (too few or too many
            fields, not a number), or its open times are not strictly increasing (out of order
            or repeated) — naming the file and line; bad data is never used silently.
    """
    path = data_dir / "ohlcv" / f"binance_futures_{file_stem(symbol)}-{timeframe}.csv.gz"
    if not path.exists():
        raise MissingData(f"no candles for {symbol} {timeframe}: {path} not found")
    rows = _fast_rows(path)
    if rows is not None:
        return CandleSeries(symbol, timeframe, *(_column(rows[name], code) for name, code in _COLUMNS))
    # The line parser: the authority on what is wrong with a file, naming the line.
    ts, o, h, lo, c, v = (array("q"), array("d"), array("d"), array("d"), array("d"), array("d"))
    last = None
    with _reading(path):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            header = handle.readline().strip()
            if header != "timestamp,open,high,low,close,volume":
                raise BadData(f"{path}: unexpected header {header[:80]!r}")
            for line_no, line in enumerate(handle, start=2):
                fields = line.rstrip("\n").split(",")
                if len(fields) != 6:
                    raise BadData(f"{path}:{line_no}: malformed candle row: {len(fields)} fields, 6 expected")
                try:
                    stamp = int(fields[0])
                    values = [float(x) for x in fields[1:]]
                except ValueError as exc:
                    raise BadData(f"{path}:{line_no}: malformed candle row ({exc})") from None
                if last is not None and stamp <= last:
                    what = "repeated" if stamp == last else "out of order"
                    raise BadData(f"{path}:{line_no}: candle {stamp} is {what} (the row before opened at {last})")
                last = stamp
                ts.append(stamp)
                o.append(values[0])
                h.append(values[1])
                lo.append(values[2])
                c.append(values[3])
                v.append(values[4])
    return CandleSeries(symbol, timeframe, ts, o, h, lo, c, v)


_ROW = [("t", "<i8"), ("o", "<f8"), ("h", "<f8"), ("l", "<f8"), ("c", "<f8"), ("v", "<f8")]
_COLUMNS = (("t", "q"), ("o", "d"), ("h", "d"), ("l", "d"), ("c", "d"), ("v", "d"))
_HEADER = b"timestamp,open,high,low,close,volume"


def _column(values, typecode: str) -> array:
    column = array(typecode)
    column.frombytes(values.tobytes())
    return column


def cache_dir() -> Path | None:
    """Where parsed candle files are kept (``OPTIFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME`` or
    ``~/.cache`` + ``/optiflow``); None when it cannot be created (nothing is cached then)."""
    base = os.environ.get("OPTIFLOW_CACHE_DIR")
    if base:
        folder = Path(base)
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "optiflow"
    try:
        folder = folder / "candles"
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder


def _fast_rows(path: Path):
    """The candles of ``path`` parsed by numpy (a C parser: Python's own correctly rounded float
    conversion, ten times faster than a line loop), and kept in the cache as a binary array keyed
    by the file's path, size and modification time, so the next load reads them at once. None
    when anything is off — a truncated file, a bad row, open times not strictly increasing —
    and the line parser then says what and where (it is the authority, SPEC D-1)."""
    import numpy as np

    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    folder = cache_dir()
    cached = None if folder is None else folder / f"{key}.npy"
    if cached is not None and cached.exists():
        try:
            return np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            pass  # a damaged cache file: parse again below
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error):
        return None
    header, _, body = raw.partition(b"\n")
    if header.strip() != _HEADER:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data" for a header-only file
            rows = np.loadtxt(io.BytesIO(body), delimiter=",", dtype=_ROW, ndmin=1, comments=None,
                              encoding="utf-8")
    except ValueError:
        return None
    if len(rows) > 1 and not bool(np.all(np.diff(rows["t"]) > 0)):
        return None
    if cached is not None:
        try:
            temporary = cached.with_suffix(f".{os.getpid()}.tmp")
            with temporary.open("wb") as handle:
                np.save(handle, rows, allow_pickle=False)
            os.replace(temporary, cached)
        except OSError:
            pass  # a read-only cache: parse again next time
    return rows


class _reading:
    """Context manager turning the errors of a truncated or non-gzip file into BadData."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, _traceback) -> bool:
        if isinstance(error, (EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError)):
            raise BadData(f"{self.path}: unreadable ({type(error).__name__}: {error}); the file is truncated or "
                          "not gzip CSV — download it again") from None
        if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
            raise BadData(f"{self.path}: cannot read ({error.strerror or error})") from None
        return False


def load_funding(data_dir: Path, symbol: str) -> list[tuple[int, Decimal]]:
    """Funding events of ``symbol`` as (fundingTime epoch ms UTC, rate as a fraction), oldest
    first; an empty list when the file is absent (no funding is then applied).

    Raises:
        BadData: the file is truncated, a row is malformed or out of order (names file and line).
    """
    path = data_dir / "funding" / f"binance_futures_{file_stem(symbol)}-funding_rate.csv.gz"
    if not path.exists():
        return []
    events: list[tuple[int, Decimal]] = []
    with _reading(path):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            handle.readline()
            for line_no, line in enumerate(handle, start=2):
                fields = line.strip().split(",")
                try:
                    t, rate = fields
                    event = (int(t), Decimal(rate))
                except (ValueError, ArithmeticError):
                    raise BadData(f"{path}:{line_no}: malformed funding row (2 fields expected: time, rate)") from None
                if events and event[0] <= events[-1][0]:
                    raise BadData(f"{path}:{line_no}: funding time {event[0]} is out of order or repeated")
                events.append(event)
    return events


def price_proxy(data_dir: Path, symbol: str, timeframe: str) -> str | None:
    """SPEC S-6: the symbol whose candles stand in for ``symbol``'s in paper/backtest —
    ``X/USDT:USDT`` for an ``X/USDC:USDC`` whose own candle file is absent while the USDT one
    is present; None when ``symbol`` has its own candles (or no proxy exists)."""
    if _candle_file(data_dir, symbol, timeframe).exists() or not symbol.endswith("/USDC:USDC"):
        return None
    proxy = symbol.split("/")[0] + "/USDT:USDT"
    return proxy if _candle_file(data_dir, proxy, timeframe).exists() else None


def _candle_file(data_dir: Path, symbol: str, timeframe: str) -> Path:
    return data_dir / "ohlcv" / f"binance_futures_{file_stem(symbol)}-{timeframe}.csv.gz"


def load_replay_candles(data_dir: Path, symbol: str, timeframe: str) -> CandleSeries:
    """The candles a paper/backtest run of ``symbol`` replays (SPEC S-6): its own, else those
    of its :func:`price_proxy` relabelled as ``symbol`` with ``proxy_of`` naming the source
    (every report then says "proxy").

    Raises:
        DataError: neither the symbol's nor a proxy's candles exist, or a row is bad.
    """
    proxy = price_proxy(data_dir, symbol, timeframe)
    if proxy is None:
        return load_candles(data_dir, symbol, timeframe)
    series = load_candles(data_dir, proxy, timeframe)
    series.symbol, series.proxy_of = symbol, proxy
    return series


def load_replay_funding(data_dir: Path, symbol: str, timeframe: str) -> list[tuple[int, Decimal]]:
    """Funding events for a replay of ``symbol``: its own, else (SPEC S-6, candles from a proxy
    and no funding file of its own) those of the same proxy."""
    path = data_dir / "funding" / f"binance_futures_{file_stem(symbol)}-funding_rate.csv.gz"
    proxy = price_proxy(data_dir, symbol, timeframe)
    if proxy is not None and not path.exists():
        return load_funding(data_dir, proxy)
    return load_funding(data_dir, symbol)


def load_ccxt_markets(data_dir: Path) -> dict[str, dict]:
    """The raw ccxt ``load_markets()`` dump bundled in ``markets/`` (symbol → ccxt market)."""
    path = data_dir / "markets" / "binanceusdm_markets.ccxt.json.gz"
    if not path.exists():
        raise MissingData(f"market rules not found: {path}")
    with _reading(path):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            try:
                return json.load(handle)
            except json.JSONDecodeError as exc:
                raise BadData(f"{path}: not the ccxt markets JSON ({exc})") from None


def market_from_ccxt(raw: dict) -> Market:
    """Build a :class:`Market` from one ccxt market dict (precision in TICK_SIZE mode).

    min_notional comes from ``limits.cost.min`` (Binance MIN_NOTIONAL filter), falling back to
    5 quote (SPEC F-5 floor) when the exchange does not state one.
    """

    def dec(value: object, default: str) -> Decimal:
        return Decimal(str(value)) if value is not None else Decimal(default)

    return Market(
        symbol=raw["symbol"],
        tick_size=dec(raw["precision"]["price"], "0"),
        step_size=dec(raw["precision"]["amount"], "0"),
        min_qty=dec(raw["limits"]["amount"]["min"], "0"),
        min_notional=dec(raw["limits"]["cost"]["min"], "5"),
        contract_size=dec(raw.get("contractSize"), "1"),
        maker_fee=dec(raw.get("maker"), "0.0002"),
        taker_fee=dec(raw.get("taker"), "0.0005"),
    )
