"""SPEC D-1: ``optiflow data download`` / ``optiflow data check`` against the loopback fake
Binance USDⓈ-M REST API (tests/fake_binance.py) through the real ccxt client.

The fake serves the REAL candles, mark-price candles and funding events of the shared data set
(../shared/data: 1m candles from 2025-05-04 to 2025-06-24), paginated and limited as Binance
documents: klines ≤ 1500 rows a request and weighted by limit, fundingRate ≤ 1000, the IP budget of
2400 weight a minute refused with 429 + Retry-After.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bot.cli import main
from bot.data_cli import make_client
from tests.fake_binance import FakeBinance
from trading.adapters.downloader import (
    Downloader,
    RowFile,
    candle_path,
    check_file,
    funding_path,
    mark_path,
    missing_ranges,
)
from trading.adapters.marketdata import load_candles, load_funding

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT")
NOW_MS = 1_750_766_400_000  # 2025-06-24T12:00Z: after the last shared candle
DAY = 86_400_000


def _ms(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp() * 1000)


@pytest.fixture(scope="module")
def shared_data() -> Path:
    assert (SHARED_DATA / "ohlcv").is_dir(), f"the shared data set is missing at {SHARED_DATA}"
    return SHARED_DATA


def _rows(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt") as handle:
        handle.readline()
        return [line.strip().split(",") for line in handle]


async def test_d1_download_resumes_after_kill_a_month_of_1m_for_3_symbols_without_gaps_or_duplicates(
        tmp_path, shared_data):
    """Issue 16 acceptance: a month of 1m candles for 3 symbols (plus funding events and 8h mark
    candles and the markets file) from the fake exchange; the download process is SIGKILLed
    midway, then the same command resumes: every file equals the exchange's real rows of the
    window, with no duplicate and no gap, and the resumed run asks only for what was missing."""
    fake = FakeBinance(shared_data, symbols=SYMBOLS, timeframe="1m", now_ms=NOW_MS, weight_limit=2400)
    await fake.start()
    out = tmp_path / "data"
    env = {**os.environ, "EXCHANGE_API_BASE": fake.base_url}
    argv = [sys.executable, "-m", "bot.cli", "data", "download", "--symbols", "BTC,ETH,SOL", "--timeframe", "1m",
            "--from", "2025-05-10", "--to", "2025-06-08", "--data-dir", str(out), "--rate-limit-ms", "5"]
    try:
        first = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.PIPE)
        deadline = asyncio.get_running_loop().time() + 120
        while fake.requests["GET /fapi/v1/klines"] < 50:  # midway through the 2nd symbol
            assert first.returncode is None, (await first.stderr.read()).decode()[-2000:]
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        first.kill()
        await first.wait()
        served_before_kill = fake.requests["GET /fapi/v1/klines"]
        assert list((out / "ohlcv").glob("*.part")), "the kill landed after the download finished"
        fake.requests.clear()
        second = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                      stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(second.communicate(), timeout=180)
        assert second.returncode == 0, stderr.decode()[-2000:]
    finally:
        await fake.stop()
    start, end = _ms("2025-05-10"), _ms("2025-06-08") + DAY
    total_pages = 0
    for symbol in SYMBOLS:
        source = load_candles(shared_data, symbol, "1m").between(start, end)
        path = candle_path(out, "binanceusdm", symbol, "1m")
        rows = _rows(path)
        assert [int(r[0]) for r in rows] == list(source.timestamp)  # in order, no gap, no duplicate
        assert len(rows) == 30 * 1440
        assert [float(x) for x in rows[100][1:]] == [source.open[100], source.high[100], source.low[100],
                                                      source.close[100], source.volume[100]]
        assert check_file(path).ok
        funding = [(t, r) for t, r in load_funding(shared_data, symbol) if start <= t < end]
        assert [(int(t), float(r)) for t, r in _rows(funding_path(out, "binanceusdm", symbol))] == \
            [(t, float(r)) for t, r in funding]
        marks = _rows(mark_path(out, "binanceusdm", symbol))
        assert len(marks) == 90 and all(start <= int(m[0]) < end for m in marks)
        total_pages += -(-len(rows) // 1000)
    assert not list(out.rglob("*.part"))
    assert (out / "markets" / "binanceusdm_markets.ccxt.json.gz").exists()
    # Resumed, not restarted: the two runs together asked for about as many pages as one would.
    assert served_before_kill + fake.requests["GET /fapi/v1/klines"] <= total_pages + 3
    assert fake.rate_limited == 0  # ccxt's pacing kept within Binance's 2400 weight a minute
    assert b"Traceback" not in stderr


async def test_d1_download_waits_out_429_and_fetches_only_what_is_missing(tmp_path, shared_data):
    """Rate limits respected: with a tight weight budget the fake refuses requests with 429 +
    Retry-After; the downloader waits them out and loses nothing. A second download of a longer
    window fetches only the new candles (incremental)."""
    fake = FakeBinance(shared_data, symbols=("XRP/USDT:USDT",), timeframe="1m", now_ms=NOW_MS,
                       weight_limit=12, weight_window_s=3.0)  # wide: a loaded machine still hits it
    await fake.start()
    client = make_client("binanceusdm", fake.base_url, rate_limit_ms=1)
    seen: list[tuple[int | None, str]] = []

    class Bar:
        def __init__(self, total=None, desc="", unit=""):
            seen.append((total, desc))

        def update(self, n):
            pass

        def close(self):
            pass

    try:
        downloader = Downloader(client, "binanceusdm", tmp_path, progress=Bar)
        start = _ms("2025-06-01")
        first = await downloader.run(["XRP/USDT:USDT"], "1m", start, start + 2 * DAY, mark=False)
        assert fake.rate_limited >= 1 and downloader.retries >= 1
        assert first.jobs[0].total == 2 * 1440
        fake.requests.clear()
        fake.weight_limit = None  # count the requests of the incremental run alone
        second = await downloader.run(["XRP/USDT:USDT"], "1m", start, start + 3 * DAY, mark=False)
    finally:
        await client.close()
        await fake.stop()
    candles, funding = second.jobs
    assert candles.fetched == 1440 and candles.total == 3 * 1440
    assert fake.requests["GET /fapi/v1/klines"] == 2  # one page of 1000 and one of 440
    assert funding.fetched == 3 and funding.total == 9  # 8h funding events of the new day only
    source = load_candles(shared_data, "XRP/USDT:USDT", "1m").between(start, start + 3 * DAY)
    rows = _rows(candle_path(tmp_path, "binanceusdm", "XRP/USDT:USDT", "1m"))
    assert [int(r[0]) for r in rows] == list(source.timestamp)
    assert (2880, "XRP/USDT:USDT ohlcv 1m") in seen  # the progress bar knew the work ahead


async def test_d1_fake_klines_are_limited_like_binance(shared_data):
    """The fake is strict: limit > 1500 is refused (-1130), an unknown interval too (-1120), and
    startTime/endTime bound the rows (ascending, first ``limit`` from startTime)."""
    import ccxt.async_support as ccxt

    fake = FakeBinance(shared_data, symbols=("XRP/USDT:USDT",), timeframe="1m", now_ms=NOW_MS)
    await fake.start()
    client = make_client("binanceusdm", fake.base_url, rate_limit_ms=1)
    try:
        await client.load_markets()
        start = _ms("2025-06-01")
        rows = await client.fapiPublicGetKlines({"symbol": "XRPUSDT", "interval": "1m", "startTime": start,
                                                 "endTime": start + 9 * 60_000, "limit": 1500})
        assert [int(r[0]) for r in rows] == [start + i * 60_000 for i in range(10)]
        with pytest.raises(ccxt.BadRequest, match="-1130"):
            await client.fapiPublicGetKlines({"symbol": "XRPUSDT", "interval": "1m", "limit": 1501})
        with pytest.raises(ccxt.BadRequest, match="-1120"):
            await client.fapiPublicGetKlines({"symbol": "XRPUSDT", "interval": "7m"})
        funding = await client.fapiPublicGetFundingRate({"symbol": "XRPUSDT", "startTime": start, "limit": 2})
        assert [int(f["fundingTime"]) // 3_600_000 % 24 for f in funding] == [0, 8]
    finally:
        await client.close()
        await fake.stop()


def test_d1_data_check_lists_planted_gaps_duplicates_and_out_of_order_rows(tmp_path, data_dir, capsys):
    """`optiflow data check` on a real file with planted faults names each of them and exits 1;
    the untouched files pass."""
    src = data_dir / "ohlcv" / "binance_futures_BTC_USDT_USDT-5m.csv.gz"
    (tmp_path / "ohlcv").mkdir()
    shutil.copy(data_dir / "ohlcv" / "binance_futures_ETH_USDT_USDT-5m.csv.gz", tmp_path / "ohlcv")
    with gzip.open(src, "rt") as handle:
        lines = handle.readlines()
    header, rows = lines[0], lines[1:]
    gap_first, gap_last = int(rows[100].split(",")[0]), int(rows[111].split(",")[0])
    planted = rows[:100] + rows[112:500] + [rows[450]] + rows[500:600] + [rows[650], rows[600]] + rows[601:650] \
        + rows[651:]
    with gzip.open(tmp_path / "ohlcv" / src.name, "wt") as handle:
        handle.write(header + "".join(planted))
    code = main(["data", "check", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    iso = lambda ms: datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M")  # noqa: E731
    assert f"FAIL ohlcv/{src.name}" in out
    assert f"{iso(gap_first)} → {iso(gap_last)} (12 missing)" in out
    assert "duplicate timestamps: 1" in out and "out-of-order rows: 1" in out
    assert "OK   ohlcv/binance_futures_ETH_USDT_USDT-5m.csv.gz" in out
    assert "2 files checked, 1 with problems" in out


def test_d1_row_file_drops_a_torn_line_and_merges_atomically(tmp_path):
    """A kill in the middle of a write leaves a torn last line in the journal: it is dropped,
    the rest is merged sorted with one row per time, the journal removed."""
    store = RowFile(tmp_path / "x-1m.csv.gz", "timestamp,open,high,low,close,volume")
    store.append([["120000", "1.0", "2.0", "0.5", "1.5", "3.0"], ["60000", "1.0", "2.0", "0.5", "1.5", "3.0"]])
    with store.part.open("a") as handle:
        handle.write("180000,1.0,2.")
    assert sorted(store.read()) == [60000, 120000]
    assert store.merge() == 2 and not store.part.exists()
    assert [r[0] for r in _rows(store.path)] == ["60000", "120000"]
    assert missing_ranges([60000, 120000], 0, 300000, 60000) == [(0, 0), (180000, 240000)]


def test_d1_backtest_refuses_out_of_order_candles_naming_the_file(tmp_path, data_dir):
    """Never silently used: candles out of order or duplicated stop the load with one line
    naming the file and line (run `optiflow data check`)."""
    from trading.domain.errors import DataError

    (tmp_path / "ohlcv").mkdir()
    src = data_dir / "ohlcv" / "binance_futures_XRP_USDT_USDT-5m.csv.gz"
    with gzip.open(src, "rt") as handle:
        lines = handle.readlines()
    lines[10], lines[11] = lines[11], lines[10]
    with gzip.open(tmp_path / "ohlcv" / src.name, "wt") as handle:
        handle.write("".join(lines))
    with pytest.raises(DataError, match=r"XRP_USDT_USDT-5m.csv.gz:12: .*out of order"):
        load_candles(tmp_path, "XRP/USDT:USDT", "5m")
