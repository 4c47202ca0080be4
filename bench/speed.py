"""Every speed figure of issue 17 in one run, with freqtrade's beside them when its anchor has
run (``bash ../shared/anchors/freqtrade/futures/run_futures_bench.sh /tmp/anchors/ftfut``).

    python bench/speed.py                  # all sections (~5 minutes on 2 cores)
    python bench/speed.py --only replay,backtest --runs 5
    python bench/speed.py --freqtrade /tmp/anchors/ftfut/results

Sections (figures are printed, nothing is asserted; a shared machine moves wall time, CPU
seconds move less, so both are shown and repeated runs report the median):

- ``replay``: candles/s through the full event path (feed → market state → strategy → risk →
  OMS → simulated exchange → events → storage) on the shared 4-symbol 30-day set
  (BTC ETH SOL XRP USDⓈ-M, 2025-05-25 → 06-24, ``../shared/data``) and the 7 bundled symbols.
- ``backtest``: ``optiflow backtest`` as a whole process on the shared set: CPU (user + system),
  wall and peak RSS (``os.wait4``).
- ``startup``: ``optiflow run`` (paper, console) from process start to its prompt line.
- ``latency``: candle close → order sent, 100 symbols in paper on the live feeds' path
  (``RestCandleFeed.process_closed`` → ``Engine.step`` with incremental indicators → OMS → the
  venue port). The 100 symbols are the 7 bundled markets' REAL 5m candles and metadata
  relabelled (``BTC01/USDT:USDT`` …), each copy shifted by whole days so their signals do not
  coincide; all 100 candles of a close time arrive together, so the figure includes waiting
  behind the other symbols of the same close.
- ``summary``: /summary through the aiogram dispatcher (console session) with 10,000 closed
  trades in the database (a real backtest's trades repeated with shifted times), paper and
  exchange-account form (the latter sums every closed trade).
- ``chart``: the daily report chart (equity curve and per-trade PnL PNG) render time.
- ``optimize``: trials/minute of ``examples/optimize.toml`` (1 job and 2 jobs; Ray: bench/optimize.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SHARED_SYMBOLS = ("BTC", "ETH", "SOL", "XRP")
SHARED_FROM, SHARED_TO = "2025-05-25", "2025-06-23"  # --to is inclusive: 30 days, as freqtrade's 20250525-20250624
BUNDLED_SYMBOLS = ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "LTC")
DAY_MS = 86_400_000
SECTIONS = ("replay", "backtest", "startup", "latency", "summary", "chart", "optimize")


def _perp(base: str) -> str:
    return f"{base}/USDT:USDT"


def _day_ms(day: str) -> int:
    from datetime import datetime, timezone

    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp() * 1000)


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


# ------------------------------------------------------------------ replay
def bench_replay(runs: int) -> dict:
    """Replay candles/s (median of ``runs``) for each data set and timeframe."""
    sys.path.insert(0, str(Path(__file__).parent))
    from replay import bench as replay_bench  # bench/replay.py

    from trading.adapters.marketdata import default_data_dir

    sets = [("bundled 7 symbols", default_data_dir(), BUNDLED_SYMBOLS, None, None)]
    if SHARED_DATA.is_dir():
        sets.insert(0, ("shared 4 symbols 30 d", SHARED_DATA, SHARED_SYMBOLS, _day_ms(SHARED_FROM),
                        _day_ms(SHARED_TO) + DAY_MS))
    figures = {}
    for label, data_dir, bases, start_ms, end_ms in sets:
        for timeframe in ("1m", "5m"):
            rows = [asyncio.run(replay_bench(timeframe, tuple(map(_perp, bases)), data_dir, start_ms, end_ms,
                                             max_positions=None)) for _ in range(runs)]
            candles, trades = rows[0][0], rows[0][3]
            wall = statistics.median(r[1] for r in rows)
            cpu = statistics.median(r[2] for r in rows)
            figures[(label, timeframe)] = candles / cpu
            print(f"replay {label:<22} {timeframe}: {candles:>8,} candles, {trades:>3} trades, "
                  f"{wall:5.2f} s wall {cpu:5.2f} s CPU → {candles / wall:>9,.0f} candles/s "
                  f"({candles / cpu:,.0f} per CPU s)")
    return figures


# ------------------------------------------------------------------ whole process
def _optiflow() -> str:
    script = Path(sys.executable).with_name("optiflow")
    return str(script) if script.exists() else "optiflow"


# ``optiflow ARGS`` in the same process, printing its own peak RSS at exit. The child's
# ru_maxrss is no use here: Linux carries the parent's high-water mark across fork and exec, so
# every child of this (large) bench process would report at least the bench's own peak.
# VmHWM belongs to the process's address space after exec: the child's own figure.
_WITH_PEAK_RSS = """
import atexit, sys
def _peak():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                sys.stderr.write('PEAK_RSS_KB ' + line.split()[1] + '\\n')
atexit.register(_peak)
from bot.cli import main
sys.argv[0] = 'optiflow'
sys.exit(main())
"""


def _measure(argv: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float, float]:
    """(CPU s user+system, wall s, peak RSS MB) of ``optiflow argv`` in a child process; raises
    on a non-zero exit."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", _WITH_PEAK_RSS, *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=env, cwd=cwd)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode()
    child.stderr.close()
    if child.returncode != 0:
        raise RuntimeError(f"optiflow {' '.join(argv)} exited {child.returncode}: {err[-500:]}")
    peak_kb = int(err.rsplit("PEAK_RSS_KB ", 1)[1].split()[0])
    return usage.ru_utime + usage.ru_stime, wall, peak_kb / 1024


def bench_backtest(runs: int) -> dict:
    """``optiflow backtest`` on the shared set, 5m and 1m: median CPU, wall, peak RSS."""
    if not SHARED_DATA.is_dir():
        print("backtest: ../shared/data not found, skipped")
        return {}
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, OPTIFLOW_DATA_DIR=str(SHARED_DATA), OPTIFLOW_OUTPUT_DIR=tmp)
        for timeframe in ("5m", "1m"):
            rows = []
            for run in range(runs + 1):  # the first run warms the page cache and the parsed-candle cache
                argv = ["backtest", "--db", f"{tmp}/bt-{timeframe}-{run}.db", "--symbols",
                        ",".join(SHARED_SYMBOLS), "--timeframe", timeframe, "--from", SHARED_FROM, "--to", SHARED_TO,
                        "--out", f"{tmp}/out-{timeframe}-{run}"]
                measured = _measure(argv, env)
                if run:
                    rows.append(measured)
            cpu, wall, rss = (statistics.median(r[i] for r in rows) for i in range(3))
            figures[timeframe] = (cpu, wall, rss)
            print(f"backtest shared 4 symbols {timeframe}: {cpu:5.2f} s CPU, {wall:5.2f} s wall, peak RSS {rss:5.0f} MB")
    return figures


def bench_startup(runs: int) -> float:
    """Seconds from starting ``optiflow run`` (paper, console) to its prompt line (median)."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, OPTIFLOW_OUTPUT_DIR=tmp)
            env.pop("TELEGRAM_BOT_TOKEN", None)
            started = time.perf_counter()
            child = subprocess.Popen([_optiflow(), "run", "--db", f"{tmp}/run.db"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=tmp)
            for line in child.stdout:
                if "console chat" in line:
                    times.append(time.perf_counter() - started)
                    break
            child.stdin.write("quit\n")
            child.stdin.close()
            child.wait(60)
    figure = statistics.median(times)
    print(f"start-up: optiflow run → console prompt {figure:.2f} s (median of {runs}; "
          f"runs {', '.join(f'{t:.2f}' for t in times)})")
    return figure


# ------------------------------------------------------------------ latency, 100 symbols
def _relabelled_data(folder: Path, copies: int, timeframe: str, days: int, warmup: int) -> tuple[list[str], int, int]:
    """Write ``copies`` relabelled markets built from the bundled real ones into ``folder`` (the
    data-folder layout): copy k of market m is named ``<m><k>`` and trades m's real candles and
    metadata, shifted ``k`` days later so the copies' signals do not coincide. Returns
    (symbols, first traded candle's open ms, end ms)."""
    from trading.adapters.marketdata import default_data_dir, file_stem, load_candles

    source = default_data_dir()
    with gzip.open(source / "markets" / "binanceusdm_markets.ccxt.json.gz", "rt") as fh:
        markets = json.load(fh)
    (folder / "ohlcv").mkdir(parents=True)
    (folder / "markets").mkdir()
    loaded = {base: load_candles(source, _perp(base), timeframe) for base in BUNDLED_SYMBOLS}
    frame_ms = 60_000 if timeframe == "1m" else 300_000
    end_ms = min(series.timestamp[-1] for series in loaded.values()) + frame_ms
    start_ms = end_ms - days * DAY_MS
    first_ms = start_ms - warmup * frame_ms
    symbols, relabelled = [], {}
    for k in range(copies):
        base, shift_days = BUNDLED_SYMBOLS[k % len(BUNDLED_SYMBOLS)], k // len(BUNDLED_SYMBOLS)
        name = f"{base}{shift_days + 1:02d}"
        symbol = _perp(name)
        relabelled[symbol] = dict(markets[_perp(base)], symbol=symbol, id=f"{name}USDT", base=name, baseId=name)
        series, shift = loaded[base], shift_days * DAY_MS
        if series.timestamp[0] + shift > first_ms:
            raise SystemExit(f"the bundled {timeframe} candles are too short for {copies} copies over {days} days")
        lines = ["timestamp,open,high,low,close,volume"]
        for i in range(len(series)):
            moved = series.timestamp[i] + shift
            if first_ms <= moved < end_ms:
                lines.append(f"{moved},{series.open[i]!r},{series.high[i]!r},{series.low[i]!r},"
                             f"{series.close[i]!r},{series.volume[i]!r}")
        path = folder / "ohlcv" / f"binance_futures_{file_stem(symbol)}-{timeframe}.csv.gz"
        with gzip.open(path, "wt", compresslevel=1) as fh:
            fh.write("\n".join(lines) + "\n")
        symbols.append(symbol)
    with gzip.open(folder / "markets" / "binanceusdm_markets.ccxt.json.gz", "wt") as fh:
        json.dump(relabelled, fh)
    return symbols, start_ms, end_ms


async def _latency(copies: int, timeframe: str, days: int) -> tuple[list[float], list[float], int, float]:
    """Replay ``days`` of ``copies`` relabelled symbols candle by candle (``bulk=False``: the
    incremental market state of the live feeds, every candle stepped) and time each order the
    engine sends to the venue from the moment its close time arrived (``Engine.tick``, once per
    close time before any symbol's candle) and from its own candle's step."""
    from bot.runtime import build_paper_runtime
    from trading.domain.config import BotProfile, TradingConfig

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        symbols, start_ms, end_ms = _relabelled_data(folder, copies, timeframe, days, warmup=300)
        config = TradingConfig(bots=(BotProfile(symbols=tuple(symbols), timeframe=timeframe, max_positions=20),))
        runtime = await build_paper_runtime(config=config, db_path=Path(tmp) / "latency.db", data_dir=folder,
                                            start_ms=start_ms, end_ms=end_ms, bulk=False)
        try:
            engine, venue = runtime.engine, runtime.exchange
            arrived, step_started = [0.0], [0.0]
            from_arrival: list[float] = []
            from_step: list[float] = []
            real_tick, real_step, real_create = engine.tick, engine.step, venue.create_order

            def tick(now_ms):
                arrived[0] = time.perf_counter()
                return real_tick(now_ms)

            def step(feed, o, h, low, c, v):
                step_started[0] = time.perf_counter()
                return real_step(feed, o, h, low, c, v)

            async def create_order(*args, **kwargs):
                now = time.perf_counter()
                from_arrival.append((now - arrived[0]) * 1000)
                from_step.append((now - step_started[0]) * 1000)
                return await real_create(*args, **kwargs)

            engine.tick, engine.step, venue.create_order = tick, step, create_order
            cpu_started = time.process_time()
            result = await runtime.replay(speed=None)
            cpu = time.process_time() - cpu_started
            trades = await runtime.store.positions.count_closed()
        finally:
            await runtime.close()
    return from_arrival, from_step, trades, result.candles / cpu


def bench_latency(copies: int = 100, timeframe: str = "5m", days: int = 5) -> tuple[float, float]:
    """Candle close → order sent p50/p99 (ms) with ``copies`` symbols in paper."""
    from_arrival, from_step, trades, rate = asyncio.run(_latency(copies, timeframe, days))
    if not from_arrival:
        print("latency: no order was sent")
        return float("nan"), float("nan")
    p50, p99 = _percentile(from_arrival, 50), _percentile(from_arrival, 99)
    print(f"latency {copies} symbols {timeframe}, {days} days, {len(from_arrival)} orders ({trades} trades): "
          f"candle close → order sent p50 {p50:.2f} ms p99 {p99:.2f} ms (max {max(from_arrival):.2f}); "
          f"from the candle's own step p50 {_percentile(from_step, 50):.2f} ms p99 {_percentile(from_step, 99):.2f} ms; "
          f"{rate:,.0f} candle steps per CPU s")
    return p50, p99


# ------------------------------------------------------------------ /summary and the daily chart
async def _chat_runtime(tmp: Path):
    """A paper runtime after a real backtest of the 7 bundled symbols (5m), with its closed
    trades repeated (shifted back in time) until the database holds 10,000; and a console chat
    on the real aiogram dispatcher."""
    from bot.app import build_dispatcher
    from bot.console import ConsoleChat, make_console_bot
    from bot.runtime import build_paper_runtime
    from bot.settings import CONSOLE_USER_ID, Settings
    from trading.adapters.marketdata import default_data_dir
    from trading.app.analytics import AnalyticsService
    from trading.domain.config import BotProfile, TradingConfig

    config = TradingConfig(bots=(BotProfile(symbols=tuple(map(_perp, BUNDLED_SYMBOLS)), timeframe="5m"),))
    runtime = await build_paper_runtime(config=config, db_path=tmp / "chat.db", data_dir=default_data_dir())
    await runtime.replay(speed=None)
    closed = await runtime.store.positions.list_closed()
    span = max(p.closed_ms for p in closed) - min(p.opened_ms for p in closed) + DAY_MS
    copies, k = [], 1
    while len(closed) * (k + 1) <= 10_000 + len(closed):
        copies += [replace(p, position_id=f"{p.position_id}-{k}", opened_ms=p.opened_ms - k * span,
                           closed_ms=p.closed_ms - k * span) for p in closed]
        k += 1
    async with runtime.store.transaction():
        await runtime.store.positions.upsert_many(copies[: 10_000 - len(closed)])
    settings = Settings(_env_file=None, optiflow_output_dir=tmp)
    dp = build_dispatcher(runtime.service, settings, settings.allowed_user_ids(),
                          analytics=AnalyticsService(runtime.store, runtime.config, runtime.clock))
    bot = make_console_bot(tmp, out=io.StringIO())
    return runtime, ConsoleChat(dp, bot, CONSOLE_USER_ID, out=io.StringIO()), bot


async def _summary_and_chart(calls: int) -> tuple[int, dict[str, list[float]], float, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        runtime, chat, bot = await _chat_runtime(Path(tmp))
        try:
            trades = await runtime.store.positions.count_closed()
            timings = {}
            # demo: an exchange account's /summary sums every closed trade; "after a close": the
            # first /summary after a write to the positions table (its derived sums read again).
            for mode in ("paper", "demo", "after a close"):
                runtime.service.mode = "demo" if mode == "after a close" else mode
                times = []
                for _ in range(calls):
                    if mode == "after a close":
                        runtime.store.positions.revision += 1
                    started = time.perf_counter()
                    await chat.send_text("/summary")
                    times.append((time.perf_counter() - started) * 1000)
                timings[mode] = times
            runtime.service.mode = "paper"
            now = runtime.clock.now_ms()
            day_start = now - now % DAY_MS - DAY_MS
            report = await runtime.service.period_report("Daily", day_start, day_start + DAY_MS)
            started = time.perf_counter()
            await runtime.service.report_chart(report)
            first = (time.perf_counter() - started) * 1000
            renders = []
            for _ in range(5):
                started = time.perf_counter()
                await runtime.service.report_chart(report)
                renders.append((time.perf_counter() - started) * 1000)
        finally:
            await bot.session.close()
            await runtime.close()
    return trades, timings, first, renders


def bench_summary_and_chart(calls: int = 100) -> tuple[float, float]:
    """/summary p95 (ms) with 10,000 trades and the daily chart's median render (ms)."""
    trades, timings, first, renders = asyncio.run(_summary_and_chart(calls))
    print(f"/summary with {trades:,} closed trades, {calls} calls each through the dispatcher:")
    for mode, times in timings.items():
        label = {"paper": "paper", "demo": "exchange account", "after a close": "exchange account, first after a close"}[mode]
        print(f"  {label}: p50 {_percentile(times, 50):.1f} ms, p95 {_percentile(times, 95):.1f} ms")
    chart = statistics.median(renders)
    print(f"daily chart: {chart:.0f} ms per render (median of 5; the first, importing matplotlib: {first:.0f} ms)")
    return max(_percentile(times, 95) for times in timings.values()), chart


# ------------------------------------------------------------------ optimization
def bench_optimize() -> float:
    """Trials/minute of examples/optimize.toml with 1 job and 2 jobs; returns the 1-job figure."""
    from bot.optimize_cli import optimize
    from trading.adapters.marketdata import default_data_dir

    study = ROOT / "examples" / "optimize.toml"
    figures = []
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            result, _ = optimize(study, data_dir=default_data_dir(), out_dir=Path(tmp), jobs=jobs, ray_address=None,
                                 log=lambda _line: None)
            elapsed = time.perf_counter() - started
        figures.append(result.trials_run / elapsed * 60)
        print(f"optimize {jobs} job{'s' if jobs > 1 else ''}: {result.trials_run} trials in {elapsed:.1f} s → "
              f"{figures[-1]:.1f} trials/min")
    return figures[0]


# ------------------------------------------------------------------ freqtrade, same machine
def freqtrade_figures(results: Path) -> dict:
    """freqtrade's median CPU s, wall s, peak RSS MB and core-loop candles/s per timeframe from
    the anchor's ``/usr/bin/time -v`` logs and summary.json (stake 50 runs)."""
    figures = {}
    summary = {}
    if (results / "summary.json").exists():
        summary = json.loads((results / "summary.json").read_text())
    for timeframe, candles in (("5m", 4 * 30 * 288), ("1m", 4 * 30 * 1440)):
        rows = []
        for log in sorted(results.glob(f"{timeframe}_stake50_*.log")):
            text = log.read_text(errors="replace")
            fields = {}
            for key, pattern in (("user", r"User time \(seconds\): ([\d.]+)"), ("system", r"System time \(seconds\): ([\d.]+)"),
                                 ("rss", r"Maximum resident set size \(kbytes\): (\d+)"),
                                 ("wall", r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)")):
                found = re.search(pattern, text)
                if found:
                    fields[key] = found.group(1)
            if len(fields) == 4:
                minutes, seconds = fields["wall"].rsplit(":", 1)
                rows.append((float(fields["user"]) + float(fields["system"]),
                             float(minutes.split(":")[-1]) * 60 + float(seconds), int(fields["rss"]) / 1024))
        if rows:
            loops = [run["loop_only"] for run in summary.get(f"{timeframe}_stake50", {}).get("runs", []) if run.get("loop_only")]
            loop_rate = candles / statistics.median(loops) if loops else float("nan")
            figures[timeframe] = tuple(statistics.median(r[i] for r in rows) for i in range(3)) + (loop_rate,)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure for replay, backtest and start-up (median)")
    parser.add_argument("--freqtrade", type=Path, default=Path("/tmp/anchors/ftfut/results"),
                        help="freqtrade anchor results folder (run_futures_bench.sh); skipped when absent")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    unknown = wanted - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    replay = bench_replay(args.runs) if "replay" in wanted else {}
    backtest = bench_backtest(args.runs) if "backtest" in wanted else {}
    if "startup" in wanted:
        bench_startup(args.runs)
    if "latency" in wanted:
        bench_latency()
    if "summary" in wanted or "chart" in wanted:
        bench_summary_and_chart()
    if "optimize" in wanted:
        bench_optimize()
    freqtrade = freqtrade_figures(args.freqtrade) if args.freqtrade.is_dir() else {}
    if freqtrade and (backtest or replay):
        print(f"\nside by side with freqtrade 2026.9 ({args.freqtrade}), shared 4 symbols 30 days:")
        print("| measure | freqtrade | OptiFlow | ratio |")
        print("|---|---|---|---|")
        for timeframe in ("5m", "1m"):
            if timeframe in freqtrade and timeframe in backtest:
                ft, ours = freqtrade[timeframe], backtest[timeframe]
                print(f"| backtest {timeframe}, CPU s | {ft[0]:.2f} | {ours[0]:.2f} | {ours[0] / ft[0]:.2f}× |")
                print(f"| backtest {timeframe}, wall s | {ft[1]:.2f} | {ours[1]:.2f} | {ours[1] / ft[1]:.2f}× |")
                print(f"| backtest {timeframe}, peak RSS MB | {ft[2]:.0f} | {ours[2]:.0f} | {ours[2] / ft[2]:.2f}× |")
            key = ("shared 4 symbols 30 d", timeframe)
            if timeframe in freqtrade and key in replay:
                print(f"| replay {timeframe}, candles per CPU s | {freqtrade[timeframe][3]:,.0f} (core loop) | "
                      f"{replay[key]:,.0f} (full event path) | |")
    elif not freqtrade:
        print(f"(no freqtrade results in {args.freqtrade}: run ../shared/anchors/freqtrade/futures/run_futures_bench.sh)")


if __name__ == "__main__":
    main()
