"""The ``optiflow`` command line.

``optiflow run``: paper mode on a replay of the bundled real candles; the chat runs over Telegram
when ``TELEGRAM_BOT_TOKEN`` is set, otherwise in this terminal. ``optiflow backtest``: the same
engine as fast as possible over a window, then a result table, a trades CSV and a chart PNG.
``optiflow check`` / ``optiflow smoke``: pre-flight and a round trip on the exchange in demo, or
live with ``--live`` (SPEC O-7, S-1; see ``bot.preflight``).
Invalid options or config print one line naming the problem and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
import tempfile
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from trading.domain.errors import OptiFlowError

log = logging.getLogger("optiflow")

EXIT_USAGE = 2
EXIT_ERROR = 1


class _Parser(argparse.ArgumentParser):
    """argparse that prints one line (no usage dump) and exits 2 on a bad option."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"optiflow: {message} (see optiflow {self.prog.split()[-1]} --help)\n")


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed must be 'max' or a number, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"--speed must be 'max' or a positive number, not {text!r}")
    return value


def _notional(text: str) -> Decimal:
    """``--notional``: a positive, finite amount in quote (a Decimal, never a float)."""
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"--notional must be an amount in quote, e.g. 10, not {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"--notional must be a positive amount, not {text!r}")
    return value


def _day(text: str) -> int:
    """YYYY-MM-DD (UTC) → epoch ms of that day's 00:00."""
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dates are YYYY-MM-DD, not {text!r}") from None
    return int(day.timestamp() * 1000)


def _anchor(text: str) -> tuple[int, str]:
    """``--head SEQ:HASH`` → (seq, hash prefix) (SPEC A-1 anchors)."""
    from trading.domain.audit import parse_anchor

    try:
        return parse_anchor(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The CLI grammar (``optiflow run`` / ``backtest`` / ``audit verify|export`` / ``check`` /
    ``smoke`` / ``backup`` / ``health`` / ``alert`` / ``watch``)."""
    parser = _Parser(prog="optiflow", description="OptiFlow: Telegram-first futures trading bot")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = _Parser(add_help=False)
    common.add_argument("--config", type=Path, help="trading config TOML (default: OPTIFLOW_CONFIG or built-in safe preset)")
    common.add_argument("--db", type=Path, help="SQLite database file")
    common.add_argument("--symbols", help="comma-separated symbols, e.g. BTC,ETH or BTC/USDT:USDT")
    common.add_argument("--timeframe", choices=["1m", "5m"], help="candle timeframe of the bundled data")
    run = sub.add_parser("run", parents=[common], help="paper-trade the bundled real candles and chat")
    run.add_argument("--speed", type=_speed, default=3000.0, metavar="max|N",
                     help="replay speed: 'max' or N × real time (default 3000)")
    run.add_argument("--say", action="append", default=[], metavar="TEXT",
                     help="after the replay, send TEXT as the allowed user, print the replies, exit")
    run.add_argument("--live", action="store_true", help="trade real money (needs API keys and the demo record of S-7)")
    run.add_argument("--skip-gate", action="store_true",
                     help="with --live: start although the demo record misses the promotion gate (audited)")
    backtest = sub.add_parser("backtest", parents=[common], help="replay as fast as possible and report")
    backtest.add_argument("--from", dest="start", type=_day, metavar="YYYY-MM-DD", help="first UTC day")
    backtest.add_argument("--to", dest="end", type=_day, metavar="YYYY-MM-DD", help="last UTC day (inclusive)")
    backtest.add_argument("--out", type=Path, help="output folder for the CSV and PNG (default OPTIFLOW_OUTPUT_DIR/backtest)")
    backtest.add_argument("--chart", action="store_true",
                          help="also draw chart.png (equity curve and per-trade PnL; loads matplotlib)")
    check = sub.add_parser("check", parents=[common], help="pre-flight against the exchange (demo, or live with --live)")
    check.add_argument("--live", action="store_true", help="check the real-money account (needs API keys)")
    smoke = sub.add_parser("smoke", parents=[common], help="open → brackets → verify → close on the exchange")
    smoke.add_argument("--symbol", required=True, help="symbol, e.g. XRP or XRP/USDT:USDT")
    smoke.add_argument("--notional", type=_notional, default=Decimal(10), help="entry notional in quote (default 10)")
    smoke.add_argument("--live", action="store_true", help="trade real money (needs API keys)")
    smoke.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each step (default 60)")
    audit = sub.add_parser("audit", help="check or export the audit trail (SPEC A-1)")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    verify = audit_sub.add_parser("verify", help="check the hash chain, the anchors and the ledger; exit 1 naming "
                                                 "the first problem")
    verify.add_argument("--db", type=Path, help="SQLite database file (default OPTIFLOW_DB_PATH)")
    verify.add_argument("--head", action="append", default=[], type=_anchor, metavar="SEQ:HASH",
                        help="an audit head seen outside the file (build card, shutdown message, daily report; "
                             "≥ 16 hex digits): proves nothing up to it was cut or rewritten; repeatable")
    export = audit_sub.add_parser("export", help="write records as JSON lines (dates UTC)")
    export.add_argument("--db", type=Path, help="SQLite database file (default OPTIFLOW_DB_PATH)")
    export.add_argument("--from", dest="start", type=_day, metavar="YYYY-MM-DD", help="first UTC day")
    export.add_argument("--to", dest="end", type=_day, metavar="YYYY-MM-DD", help="last UTC day (inclusive)")
    export.add_argument("--out", type=Path, help="output file (default: standard output)")
    from bot import data_cli, optimize_cli

    data_cli.add_parser(sub, _day)
    optimize_cli.add_parser(sub)
    backup = sub.add_parser("backup", help="copy the database with SQLite's online backup API (safe while running)")
    backup.add_argument("--db", type=Path, help="SQLite database file (default OPTIFLOW_DB_PATH)")
    backup.add_argument("--out", type=Path, help="backup file (default backups/<db>-<UTC time>.db beside the database)")
    health = sub.add_parser("health", help="exit 0 when the running bot's event loop beat recently (health check)")
    health.add_argument("--db", type=Path, help="SQLite database file of the bot (default OPTIFLOW_DB_PATH)")
    health.add_argument("--max-age", type=_seconds, default=90.0, metavar="S", help="seconds (default 90)")
    alert = sub.add_parser("alert", help="send one Telegram message to the notification chats (no database, no bot)")
    alert.add_argument("--text", required=True, help="the message (\\n for a new line)")
    watch = sub.add_parser("watch", help="watchdog outside the bot: alert when its heartbeat stops, and when back")
    watch.add_argument("--db", type=Path, help="SQLite database file of the bot (default OPTIFLOW_DB_PATH)")
    watch.add_argument("--max-age", type=_seconds, default=120.0, metavar="S",
                       help="alert after S seconds without a heartbeat (default 120)")
    watch.add_argument("--every", type=_seconds, default=15.0, metavar="S", help="poll every S seconds (default 15)")
    return parser


def _seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seconds must be a number, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"seconds must be positive, not {text!r}")
    return value


def _apply_overrides(config, symbols: str | None, timeframe: str | None):
    """Restrict / retime the configured bots from ``--symbols`` and ``--timeframe``."""
    from trading.domain.errors import ConfigError

    if symbols is None and timeframe is None:
        return config
    quote = config.account.quote
    wanted: list[str] = []
    if symbols is not None:
        for item in (s.strip() for s in symbols.split(",")):
            if not item:
                continue
            wanted.append(item if "/" in item else f"{item.upper()}/{quote}:{quote}")
        if not wanted:
            raise ConfigError("--symbols: no symbol given")
    bots = []
    for bot in config.bots:
        update: dict = {}
        if wanted:
            update["symbols"] = tuple(wanted)
        if timeframe is not None:
            update["timeframe"] = timeframe
        bots.append(bot.model_copy(update=update))
    return config.model_copy(update={"bots": tuple(bots)})


def _load(args):
    from bot.settings import load_settings
    from trading.domain.config import load_trading_config

    settings = load_settings()
    logging.getLogger().setLevel(settings.optiflow_log_level)
    if settings.optiflow_log_level != "DEBUG":
        logging.getLogger("aiogram").setLevel(logging.WARNING)  # an INFO line per update is noise in chat
    config = load_trading_config(args.config or settings.optiflow_config)
    config = _apply_overrides(config, args.symbols, args.timeframe)
    return settings, config


async def _run(args) -> int:
    from bot.app import build_dispatcher
    from bot.console import ConsoleChat, make_console_bot
    from bot.logbuffer import install as install_log_buffer
    from bot.runtime import build_paper_runtime
    from bot.settings import CONSOLE_USER_ID
    from bot.shutdown import ShutdownSignal
    from trading.app.analytics import AnalyticsService

    settings, config = _load(args)
    if args.live or settings.optiflow_mode != "paper":
        return await _run_exchange(args, settings, config)
    allowed = settings.allowed_user_ids()
    if settings.telegram_bot_token is not None and not allowed:
        raise OptiFlowError("TELEGRAM_ALLOWED_USER_IDS is empty: nobody could use the bot")
    runtime = await build_paper_runtime(
        config=config, db_path=args.db or settings.optiflow_db_path, data_dir=settings.optiflow_data_dir
    )
    try:
        log_buffer = install_log_buffer()
        if settings.telegram_bot_token is not None:
            log_buffer.add_secret(settings.telegram_bot_token.get_secret_value())
        shutdown = ShutdownSignal()
        research, optimizer = _research_tools(runtime, settings, args)
        dp = build_dispatcher(
            runtime.service, settings, allowed, analytics=AnalyticsService(runtime.store, runtime.config, runtime.clock),
            log_buffer=log_buffer, request_shutdown=shutdown.request, research=research, optimizer=optimizer,
            roles=settings.user_roles(),
        )
        stop = asyncio.Event()
        if settings.telegram_bot_token is not None:
            try:
                return await _run_telegram(runtime, dp, settings, args, stop, log_buffer)
            finally:
                await optimizer.close()
        _halt_console_on_storage_fault(runtime, stop, shutdown)
        bot = make_console_bot(settings.optiflow_output_dir)
        owners = settings.telegram_allowed_user_ids
        user_id = min(owners) if owners else (min(allowed) if allowed else CONSOLE_USER_ID)
        chat = ConsoleChat(dp, bot, user_id)
        try:
            if args.say:
                result = await runtime.replay(speed=args.speed)
                print(f"replayed {result.candles} candles; {await runtime.store.positions.count_closed()} trades closed")
                await chat.say(args.say)
                return 0
            replay = asyncio.create_task(runtime.replay(speed=args.speed, stop=stop))
            replay.add_done_callback(lambda task: shutdown.event.set() if _failed(task) else None)
            print("OptiFlow paper mode — console chat. Type /help, a button number to tap it, or quit.")
            try:
                await chat.run_interactive(until=shutdown.event)
            finally:
                stop.set()
                await replay
            if shutdown.event.is_set():
                from bot.shutdown import SHUTDOWN_TEXT

                await _console_stop(runtime, shutdown, settings.flatten_on_shutdown("paper"))
                print(SHUTDOWN_TEXT)
            return 0
        finally:
            await optimizer.close()
            await bot.session.close()
    finally:
        await _close_runtime(runtime)
        _raise_fault(runtime)  # one line and exit 1 in main (SPEC M-1)


def _failed(task: asyncio.Task) -> bool:
    """True when a background task ended with an exception."""
    return not task.cancelled() and task.exception() is not None


def _raise_fault(runtime) -> None:
    """Raise the storage fault the run met, if any (SPEC M-1: exit 1 with one line, even when
    it was a chat command's write that failed)."""
    if runtime.store.db.fault is not None:
        raise runtime.store.db.fault


def _halt_console_on_storage_fault(runtime, stop: asyncio.Event, shutdown) -> None:
    """SPEC M-1 in the console chat: at the first failed database write, stop trading (no new
    entries), print the alert in this terminal (a path without the database) and end the chat;
    ``main`` then exits 1 with one line."""
    from bot.lifecycle import HALTED_FEED_STATE, halt_text

    def halted(fault) -> None:
        stop.set()
        runtime.service.feed_state = HALTED_FEED_STATE
        print(halt_text(fault).render()[0], flush=True)
        shutdown.request("storage fault: trading halted")

    runtime.store.db.on_fault(halted)


async def _close_runtime(runtime) -> None:
    """Close the runtime; after a storage fault (SPEC M-1) its last flush fails again and the
    file keeps the last good write: that is already reported, so it is not raised twice."""
    from storage import StorageFault

    try:
        await runtime.close()
    except StorageFault:
        if runtime.store.db.fault is None:
            raise


async def _console_stop(runtime, shutdown, default_flatten: bool) -> None:
    """SPEC L-2 in the console chat: the /shutdown dialog's choice (else ``flatten_on_shutdown``)
    closes every position at market, then this run's working orders are cancelled (a kept
    position keeps its stop)."""
    flatten = default_flatten if shutdown.flatten is None else shutdown.flatten
    if flatten:
        closed = await runtime.flatten()
        print(f"closed {closed} position(s) at market before stopping")
    await runtime.engine.cancel_working_orders(keep_protection=not flatten)
    await runtime.persister.flush()


def _research_tools(runtime, settings, args):
    """/chart and /optimize for a paper run (SPEC D-2): charts from the replayed data, studies
    as child processes; "apply to paper" writes the paper config file (--config, OPTIFLOW_CONFIG,
    else OPTIFLOW_OUTPUT_DIR/paper.toml)."""
    from bot.optimize_jobs import OptimizeJobs
    from trading.app.research import ResearchService

    research = ResearchService(runtime.store, runtime.clock, runtime.config, settings.optiflow_data_dir,
                               runtime.service.price_proxies)
    paper_config = args.config or settings.optiflow_config or settings.optiflow_output_dir / "paper.toml"
    optimizer = OptimizeJobs(settings.optiflow_study_dir, settings.optiflow_output_dir, paper_config,
                             settings.optiflow_data_dir)
    return research, optimizer


async def _run_exchange(args, settings, config) -> int:
    """Demo or live trading (SPEC S-1: live needs --live AND keys): the engine on the exchange,
    candles and order updates over websockets with REST polling as their fall back (S-2),
    orders through the gateway, reconciled before any entry (L-3); the chat runs over Telegram
    or in this terminal as in paper mode."""
    from bot.app import build_dispatcher
    from bot.console import ConsoleChat, make_console_bot
    from bot.live import make_exchange, make_market_stream_client, requote
    from bot.runtime import build_exchange_runtime
    from bot.logbuffer import install as install_log_buffer
    from bot.preflight import _mode
    from bot.settings import CONSOLE_USER_ID
    from bot.shutdown import SHUTDOWN_TEXT, ShutdownSignal
    from trading.app.analytics import AnalyticsService
    from trading.adapters.ccxt_exchange import resolve_quote

    mode = _mode(settings, args.live)
    allowed = settings.allowed_user_ids()
    if settings.telegram_bot_token is not None and not allowed:
        raise OptiFlowError("TELEGRAM_ALLOWED_USER_IDS is empty: nobody could use the bot")
    quote = resolve_quote(mode, settings.optiflow_quote)
    config = requote(config, quote)
    exchange = make_exchange(settings, mode, stop_working_type=config.orders.stop_working_type,
                             margin_mode=config.account.margin_mode)
    skipped = None
    if mode == "live":  # S-7, before anything talks to the exchange
        try:
            skipped = await _promotion_gate(args.db or settings.optiflow_db_path, getattr(args, "skip_gate", False),
                                            config)
        except BaseException:
            await exchange.close()
            raise
    if mode == "live":
        print(f"⚠️ LIVE trading on {settings.optiflow_exchange}: real money, {len(config.bots)} bot(s), "
              f"symbols {', '.join(config.all_symbols())}, quote {quote}")
    ws_client = make_market_stream_client(settings, mode)
    user_stream_client = make_market_stream_client(settings, mode, user_data=True)
    try:
        runtime = await build_exchange_runtime(config=config, db_path=args.db or settings.optiflow_db_path,
                                          exchange=exchange, env=mode, ws_client=ws_client,
                                          user_stream_client=user_stream_client,
                                          canary={"on": True, "off": False}.get(settings.optiflow_canary))
    except BaseException:
        await exchange.close()
        for client in (ws_client, user_stream_client):
            if client is not None:
                await client.close()
        raise
    if skipped is not None:  # S-7: the override is sent (and audited with the next flush)
        from trading.domain.events import RiskNotice

        runtime.engine.sink.emit(RiskNotice(runtime.clock.now_ms(), "PROMOTION_GATE_SKIPPED",
                                            f"Live trading started with --skip-gate: {skipped.line()}",
                                            {"demo_trades": skipped.demo_trades, "win_rate": skipped.win_rate,
                                             "incidents": list(skipped.incidents)}))
    stop = asyncio.Event()
    ready = asyncio.Event()
    loop_task = None
    try:
        # /log (secrets redacted: the Telegram token and the exchange keys) and a confirmed
        # /shutdown work as in paper mode (SPEC T-2, L-2).
        log_buffer = install_log_buffer()
        for secret in (settings.telegram_bot_token, settings.binance_api_key, settings.binance_api_secret,
                       settings.okx_api_key, settings.okx_api_secret, settings.okx_api_passphrase):
            if secret is not None:
                log_buffer.add_secret(secret.get_secret_value())
        shutdown = ShutdownSignal()
        dp = build_dispatcher(
            runtime.service, settings, allowed, analytics=AnalyticsService(runtime.store, runtime.config, runtime.clock),
            log_buffer=log_buffer, request_shutdown=shutdown.request, roles=settings.user_roles(),
        )
        if settings.telegram_bot_token is not None:
            # The same outgoing side as paper: notifier, daily report, monitor, build card and
            # the L-2 shutdown; the live loop is the trading coroutine.
            return await _run_telegram(
                runtime, dp, settings, args, stop, log_buffer, trading=lambda stop, _hook: runtime.run(stop),
                mode=mode, exchange=settings.optiflow_exchange,
            )
        _halt_console_on_storage_fault(runtime, stop, shutdown)
        loop_task = asyncio.create_task(runtime.run(stop, ready=ready))
        loop_task.add_done_callback(lambda task: shutdown.event.set() if _failed(task) else None)
        bot = make_console_bot(settings.optiflow_output_dir)
        owners = settings.telegram_allowed_user_ids
        chat = ConsoleChat(dp, bot, min(owners) if owners else (min(allowed) if allowed else CONSOLE_USER_ID))
        try:
            if args.say:
                await asyncio.wait([asyncio.ensure_future(ready.wait()), loop_task],
                                   return_when=asyncio.FIRST_COMPLETED)
                await chat.say(args.say)
                return 0
            print(f"OptiFlow {mode} mode — console chat. Type /help, a button number to tap it, or quit.")
            await chat.run_interactive(until=shutdown.event)
            if shutdown.event.is_set():
                stop.set()
                await asyncio.gather(loop_task, return_exceptions=True)
                await _console_stop(runtime, shutdown, settings.flatten_on_shutdown(mode))
                print(SHUTDOWN_TEXT)
            return 0
        finally:
            await bot.session.close()
    finally:
        stop.set()
        if loop_task is not None:
            await asyncio.gather(loop_task, return_exceptions=True)
        await _close_runtime(runtime)
        _raise_fault(runtime)  # one line and exit 1 in main (SPEC M-1)


async def _promotion_gate(db_path: Path, skip: bool, config):
    """SPEC S-7 before anything touches the exchange: ``--live`` starts only when the demo record
    in ``db_path`` meets the promotion gate. Returns None when it does; with ``--skip-gate`` the
    :class:`~trading.domain.promotion.GateResult` that was overridden (printed here, audited as a
    COMMAND record now, announced in chat by the caller).

    Raises:
        OptiFlowError: the gate is not met and not skipped (one line naming the gate).
    """
    import time

    from bot.runtime import save_config_snapshot
    from storage import Storage
    from trading.app.promotion import demo_gate
    from trading.domain.audit import entries_for_events
    from trading.domain.events import CommandIssued

    if not Path(db_path).exists() and not skip:  # no database: no demo record (and none created)
        from trading.domain.promotion import promotion_gate

        raise OptiFlowError(f"--live refused: {promotion_gate([], []).line()} in {db_path} "
                            "(trade demo first, or --skip-gate to override)")
    store = await Storage.open(db_path)
    try:
        gate = await demo_gate(store)
        if gate.passed:
            print(f"✅ {gate.line()}")
            return None
        if not skip:
            raise OptiFlowError(f"--live refused: {gate.line()} (trade demo first, or --skip-gate to override)")
        print(f"⚠️ --skip-gate: {gate.line()} — live trading starts anyway (audited)")
        config_id = await save_config_snapshot(store, config)
        async with store.transaction():
            await store.audit.append(entries_for_events([CommandIssued(
                int(time.time() * 1000), "skip_gate", source="cli",
                why={"gate": gate.line(), "demo_trades": gate.demo_trades, "win_rate": gate.win_rate,
                     "incidents": list(gate.incidents)})]), config_id)
        return gate
    finally:
        await store.close()


def make_telegram_bot(settings):
    """The Telegram Bot (long polling) for ``TELEGRAM_BOT_TOKEN``, talking to the official Bot
    API or to ``TELEGRAM_API_BASE`` (a self-hosted Bot API server, aiogram's
    ``TelegramAPIServer.from_base``), through ``TELEGRAM_PROXY`` if set; every call waits out
    a 429 and is sent again (:class:`bot.middlewares.RetryAfterMiddleware`, SPEC T-4).

    Raises:
        ConfigError: TELEGRAM_PROXY is set but aiogram's proxy extra (aiohttp-socks) is missing.
    """
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import PRODUCTION, TelegramAPIServer

    from trading.domain.errors import ConfigError

    api = TelegramAPIServer.from_base(settings.telegram_api_base) if settings.telegram_api_base else PRODUCTION
    proxy = settings.telegram_proxy.get_secret_value() if settings.telegram_proxy is not None else None
    try:
        session = AiohttpSession(api=api, proxy=proxy)
    except RuntimeError:
        raise ConfigError(
            "environment: TELEGRAM_PROXY: needs aiogram's proxy support: pip install 'aiogram[proxy]'"
        ) from None
    from bot.middlewares import RetryAfterMiddleware

    session.middleware(RetryAfterMiddleware())  # SPEC T-4: every call survives a 429
    return Bot(token=settings.telegram_bot_token.get_secret_value(), session=session)


async def _run_telegram(runtime, dp, settings, args, stop: asyncio.Event, log_buffer=None, setup_jobs=None, *,
                        trading=None, mode: str = "paper", exchange: str | None = None) -> int:
    """Long polling plus the outgoing side: notifier (T-4), scheduled daily report (T-5), build
    card (L-1) and the graceful shutdown (L-2). Returns 0 after the shutdown message, 1 after
    a crash (its message sent first).

    ``setup_jobs(jobs, notifier)`` registers interval hooks before the scheduler starts, e.g.
    ``jobs.add_interval("monitor", 60, monitor.check)`` whose alerts call
    ``notifier.notify(Category.ALERT, text, reply_markup=playbook_button)`` (M-1, O-5).
    ``dp["request_shutdown"]`` and ``dp["notifier"]`` reach handlers by those names. The
    monitor (M-1) runs every minute and sends each new alert once, as a critical message with
    its playbook button (T-6); ``log_buffer`` gives it the recent log errors.

    ``trading(stop, clock_hook)`` returns the coroutine that trades until ``stop`` is set:
    None = the paper replay of ``runtime`` at ``args.speed`` (the daily report at simulated
    midnights); otherwise demo/live on the exchange (the daily report at wall-clock midnight in
    the report zone), with ``mode`` and ``exchange`` shown on the build card."""
    from bot.app import BOT_COMMANDS
    from bot.lifecycle import Lifecycle, close_with_timeout
    from bot.monitor_job import monitor_job
    from bot.notices import NoticeBuilder
    from bot.notifier import Notifier
    from bot.scheduler import DailyReport, Jobs, ReplayDayBoundary

    bot = make_telegram_bot(settings)
    notifier = Notifier(bot, runtime.store.outbox, settings.notify_chat_ids(), settings.optiflow_notifications,
                        builder=NoticeBuilder(runtime.config.account.quote))
    notifier.builder.prime(
        await runtime.store.positions.list_open(),
        [s for s in [await runtime.store.risk.get(b.name) for b in runtime.config.bots] if s],
    )
    # with_unheard: the start-up reconciliation's alerts (someone else's position found at
    # start, …) were flushed before the notifier listened; its next flush hands them over.
    runtime.persister.add_listener(notifier.on_events, with_unheard=True)
    secrets = [settings.telegram_bot_token.get_secret_value()]
    for secret in (settings.telegram_proxy, settings.binance_api_key, settings.binance_api_secret,
                   settings.okx_api_key, settings.okx_api_secret, settings.okx_api_passphrase):
        if secret is not None:
            secrets.append(secret.get_secret_value())
    lifecycle = Lifecycle(runtime, notifier, flatten=settings.flatten_on_shutdown(mode), secrets=secrets,
                          mode=mode, **({"exchange": exchange} if exchange else {}))
    dp["request_shutdown"] = lifecycle.request_shutdown
    dp["notifier"] = notifier
    jobs = Jobs()
    # T-5 in replay: the report follows the simulated clock; at --speed max the replay is a
    # fast-forward (a backtest), so the trader asks /daily instead of getting one per day.
    report = DailyReport(runtime.service, notifier, settings.report_zone(), audit_head=runtime.store.audit.head)
    hook = None
    if trading is None:
        hook = ReplayDayBoundary(report, runtime.clock.now_ms()) if args.speed is not None else None

        def trading(stop, clock_hook):
            return runtime.replay(speed=args.speed, stop=stop, clock_hook=clock_hook)
    else:
        jobs.add_daily_report(report)  # demo/live: 00:00 in OPTIFLOW_REPORT_TZ
    jobs.add_interval("monitor", 60, monitor_job(runtime.service, notifier, log_buffer))  # M-1
    # M-1: the first failed database write halts entries and requests the shutdown, whose
    # crash message goes out without the database.
    runtime.store.db.on_fault(lambda fault: lifecycle.on_storage_fault(fault, stop))
    if setup_jobs is not None:
        setup_jobs(jobs, notifier)
    replay = None
    from bot.service import ServiceBeat, heartbeat_path

    beat = ServiceBeat(heartbeat_path(runtime.store.db.path))  # systemd watchdog + heartbeat file
    try:
        lifecycle.install_signal_handlers()
        await notifier.start()
        await lifecycle.announce_start()
        beat.ready()
        jobs.start()
        replay = asyncio.create_task(trading(stop, hook))
        replay.add_done_callback(lifecycle.watch)
        await bot.delete_webhook(drop_pending_updates=False)
        await bot.set_my_commands(BOT_COMMANDS)
        polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False, close_bot_session=False))
        stopping = asyncio.create_task(lifecycle.stop_requested.wait())
        await asyncio.wait({polling, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not polling.done():
            await close_with_timeout("polling", dp.stop_polling(), 10)
        stopping.cancel()
        if polling.done() and not polling.cancelled() and polling.exception() is not None:
            lifecycle.crash = lifecycle.crash or polling.exception()
    except Exception as exc:  # a crash: report it in chat before exit (L-2)
        lifecycle.crash = lifecycle.crash or exc
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().remove_signal_handler(sig)
        jobs.shutdown()  # no monitor alert or report after the shutdown message
        await beat.stopping()
        await lifecycle.shutdown(replay, stop)
        await close_with_timeout("bot session", bot.session.close(), lifecycle.timeouts.session)
    if lifecycle.crash is not None:
        from storage import StorageFault

        if not isinstance(lifecycle.crash, StorageFault):  # a fault: the caller raises it (one line)
            print("optiflow: stopped on an error (see the log)", file=sys.stderr)
        return 1
    return 0


def _fault_line(fault) -> str:
    """The one line a storage fault ends the process with (SPEC M-1)."""
    return (f"stopped: {fault}; trading halted, no new entries — free the disk or fix the file, "
            "then start again (state up to the last good write is kept)")


async def _backtest(args) -> int:
    from bot.runtime import build_paper_runtime

    settings, config = _load(args)
    if args.start is not None and args.end is not None and args.end < args.start:
        raise OptiFlowError("--to is before --from")
    end_ms = None if args.end is None else args.end + 86_400_000
    out_dir = args.out or settings.optiflow_output_dir / "backtest"
    if args.db is not None:
        from storage.lock import ProcessLock

        probe = ProcessLock(args.db)  # SPEC L-4: a file in use says so before anything is written
        probe.acquire()
        probe.release()
    _writable_dir(out_dir, "--out")  # before the replay, not after it
    with tempfile.TemporaryDirectory(prefix="optiflow-backtest-") as tmp:
        db_path = args.db or Path(tmp) / "backtest.db"
        if args.db is not None and args.db.exists() and args.db.stat().st_size > 0:
            raise OptiFlowError(f"--db {args.db} already exists: a backtest needs a new database file")
        runtime = await build_paper_runtime(
            config=config, db_path=db_path, data_dir=settings.optiflow_data_dir,
            start_ms=args.start, end_ms=end_ms,
        )
        try:
            _check_window(runtime.sources, args.start, args.end)
            result = await runtime.replay(speed=None)
            await runtime.close_positions_at_end()
            first = min(s.series.timestamp[0] for s in runtime.sources if len(s.series))
            start_ms = max(args.start or first, first)
            report = await runtime.service.period_report(
                "Backtest", start_ms, runtime.clock.now_ms() + 1, start_equity=config.account.starting_balance
            )
            report = _with_start_equity(report, config.account.starting_balance)
            out_dir.mkdir(parents=True, exist_ok=True)
            csv_path = out_dir / "trades.csv"
            _write_trades_csv(csv_path, report.trades)
            print(_format_backtest(report, result.candles, config))
            print(f"trades CSV: {csv_path}")
            if args.chart:  # matplotlib only when asked: a sweep of backtests never loads it
                png_path = out_dir / "chart.png"
                png_path.write_bytes(await runtime.service.report_chart(report))
                print(f"chart PNG:  {png_path}")
        finally:
            await _close_runtime(runtime)
    return 0


def _writable_dir(folder: Path, option: str) -> None:
    """Create ``folder`` if needed and make sure files can be written in it.

    Raises:
        OptiFlowError: one line naming the option, the folder and the reason.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".optiflow-probe-"):
            pass
    except FileExistsError:
        raise OptiFlowError(f"{option} {folder}: a file is in the way, not a folder") from None
    except OSError as exc:
        raise OptiFlowError(f"{option} {folder}: cannot write there ({exc.strerror or exc})") from None


def _check_window(sources, start_ms: int | None, end_day_ms: int | None) -> None:
    """A backtest window with no bundled candle in it is an error, never an empty report.

    Raises:
        OptiFlowError: naming the window and where the data ends.
    """
    stamps = [s.series.timestamp for s in sources if len(s.series)]
    if not stamps:
        day = _utc(end_day_ms)[:10] if end_day_ms is not None else "?"
        raise OptiFlowError(f"--to {day}: the bundled data has no candle up to that day")
    last = max(t[-1] for t in stamps)
    if start_ms is not None and start_ms > last:
        raise OptiFlowError(f"--from {_utc(start_ms)[:10]}: the bundled data ends at {_utc(last)} (no candle to replay)")


def _with_start_equity(report, starting_balance: Decimal):
    """A backtest's percentages are relative to the starting balance."""
    from dataclasses import replace

    from trading.domain.reports import max_drawdown_pct

    curve = [starting_balance, *(s.equity for s in report.equity_curve), report.end_equity]
    return replace(
        report,
        start_equity=starting_balance,
        net_pnl_pct=report.net_pnl / starting_balance * 100,
        max_drawdown_pct=max_drawdown_pct(curve),
    )


def _utc(ms: int | None) -> str:
    from bot.exports import iso_utc

    return iso_utc(ms)


def _write_trades_csv(path: Path, trades) -> None:
    """One row per closed trade at full Decimal precision (see :mod:`bot.exports`)."""
    from bot.exports import write_trades_csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        write_trades_csv(handle, trades)


def _format_backtest(report, candles: int, config) -> str:
    quote = config.account.quote
    cent = Decimal("0.01")
    pf = "n/a (no losing trade)" if report.profit_factor is None else f"{report.profit_factor:.2f}"
    rows = [
        ("period (UTC)", f"{_utc(report.start_ms)} → {_utc(report.end_ms - 1)}"),
        ("candles", f"{candles:,}"),
        ("trades", str(len(report.trades))),
        ("win rate", f"{report.win_rate:.2f} %"),
        ("profit factor", pf),
        ("net PnL", f"{report.net_pnl.quantize(cent)} {quote} ({report.net_pnl_pct:.2f} %)"),
        ("max drawdown", f"{report.max_drawdown_pct:.2f} %"),
        ("fees", f"{report.fees.quantize(cent)} {quote}"),
        ("funding", f"{report.funding.quantize(cent)} {quote}"),
        ("end equity", f"{report.end_equity.quantize(cent)} {quote}"),
    ]
    if report.price_proxies:  # SPEC S-6: USDT candles standing in for USDC ones say so
        from trading.domain.views import proxy_note

        rows.append(("prices", proxy_note(report.price_proxies)))
    width = max(len(k) for k, _ in rows)
    lines = ["OptiFlow backtest (paper engine, real Binance USDⓈ-M candles)"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    lines += _breakdown("per bot", report.trades, lambda t: t.bot, quote)
    lines += _breakdown("per symbol", report.trades, lambda t: t.symbol, quote)
    lines += _breakdown("per exit reason", report.trades,
                        lambda t: t.exit_reason.value if t.exit_reason else "?", quote)
    from bot.kpi_text import kpi_lines

    kpis = kpi_lines(report.kpis, quote)  # T-5 / §11
    lines += [f"  {kpis[0]}", *(f"    {line}" for line in kpis[1:])] if kpis else []
    return "\n".join(lines)


def _breakdown(title: str, trades, key, quote: str) -> list[str]:
    """Rows of trades, win rate and net PnL grouped by ``key`` (issue 3 §8: per bot, per exit)."""
    groups: dict[str, list] = {}
    for trade in trades:
        groups.setdefault(key(trade), []).append(trade.net_pnl)
    cent = Decimal("0.01")
    lines = [f"  {title}:"]
    for name in sorted(groups):
        nets = groups[name]
        wins = sum(1 for n in nets if n > 0)
        lines.append(
            f"    {name:<16} trades {len(nets):>4}   win {wins / len(nets) * 100:>6.2f} %"
            f"   net {sum(nets, Decimal(0)).quantize(cent):>10} {quote}"
        )
    return lines


EXIT_BROKEN = 1


async def _open_existing(db: Path | None):
    """The storage of an existing database file (``--db`` or OPTIFLOW_DB_PATH).

    Raises:
        OptiFlowError: the file does not exist (an audit never creates a database).
    """
    from bot.settings import load_settings
    from storage import Storage

    path = db or load_settings().optiflow_db_path
    if not Path(path).is_file():
        raise OptiFlowError(f"no database at {path} (give --db PATH)")
    return await Storage.open_for_reading(path)


async def _audit(args) -> int:
    """``optiflow audit verify``: exit 0 and print the head hash and count, or exit 1 naming the
    first broken record. ``optiflow audit export``: JSON lines of the records in the window."""
    import sqlite3

    from storage import StorageError

    store = await _open_existing(args.db)
    try:
        if args.audit_command == "verify":
            try:
                await store.db.check_integrity()  # SPEC A-1: a corrupt file is one clear line
                result = await store.audit.verify(args.head)
            except sqlite3.DatabaseError as exc:  # corruption integrity_check did not reach
                raise StorageError(f"Database {store.db.path} is corrupt: {exc} (restore a backup, see README)") from None
            return _print_verification(result, args.head)
        if args.start is not None and args.end is not None and args.end < args.start:
            raise OptiFlowError("--to is before --from")
        end_ms = None if args.end is None else args.end + 86_400_000
        records = await store.audit.list(since_ms=args.start, until_ms=end_ms)
        lines = "".join(record.as_json() + "\n" for record in records)
        if args.out is None:
            sys.stdout.write(lines)
        else:
            try:
                args.out.write_text(lines, encoding="utf-8")
            except OSError as exc:
                raise OptiFlowError(f"--out {args.out}: cannot write there ({exc.strerror or exc})") from None
            print(f"{len(records)} audit records written to {args.out}", file=sys.stderr)
        return 0
    finally:
        await store.close()


def _print_verification(result, anchors) -> int:
    """Print ``audit verify``'s verdict (SPEC A-1); returns the exit code (0 or 1)."""
    if not result.ok:
        where = f"seq {result.broken_seq}" if result.broken_seq is not None else "the state tables"
        title = {"chain": "audit chain BROKEN", "anchor": "audit chain does not match the anchor",
                 "ledger": "state tables do not match the audit"}.get(result.kind, "audit BROKEN")
        print(f"{title} at {where}: {result.problem}")
        if result.kind == "ledger":
            print(f"the chain itself verifies: {result.count} records, head {result.head_seq}:{result.head_hash}")
        else:
            print(f"{result.count} records verified before it; last good head {result.head_seq}:{result.head_hash}")
        return EXIT_BROKEN
    print(f"audit chain OK: {result.count} records, head {result.head_seq}:{result.head_hash}")
    if anchors:
        print("anchors OK: " + ", ".join(f"{seq}:{digest[:16]}…" for seq, digest in anchors))
    print("ledger OK: orders, fills, positions and balance match the audit records")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``optiflow`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from bot import ops_cli

    if args.command in ("backup", "health"):  # synchronous and light: no event loop, no aiogram
        sync = {"backup": ops_cli.backup_command, "health": ops_cli.health_command}[args.command]
        try:
            return sync(args)
        except OptiFlowError as exc:
            print(f"optiflow: {exc}", file=sys.stderr)
            return EXIT_USAGE
    from bot.data_cli import data_command
    from bot.optimize_cli import optimize_command
    from bot.preflight import check_command, smoke_command

    handler = {"run": _run, "backtest": _backtest, "audit": _audit, "check": check_command,
               "smoke": smoke_command, "data": data_command, "optimize": optimize_command,
               "alert": ops_cli.alert_command, "watch": ops_cli.watch_command}[args.command]
    try:
        return asyncio.run(handler(args))
    except OptiFlowError as exc:
        from storage.db import StorageFault

        if isinstance(exc, StorageFault):  # SPEC M-1: a write failed while running
            print(f"optiflow: {_fault_line(exc)}", file=sys.stderr)
            return EXIT_ERROR
        print(f"optiflow: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("🛑 OptiFlow shutting down…", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
