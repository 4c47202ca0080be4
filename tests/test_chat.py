"""Chat layer (SPEC T-1..T-5, R-7): real Updates through a fresh Dispatcher, asserting on the
Bot API requests recorded by the console transport (STYLE: aiogram's tests/mocked_bot.py).

``FakeTradingService`` is an in-test double of ``trading.app.service.TradingService`` returning real
view objects; end-to-end tests on the real stack live elsewhere.
"""

from __future__ import annotations

import csv
import io
import logging
from datetime import date, datetime, timezone
from decimal import Decimal as D
from itertools import count

import pytest
from aiogram.methods import (
    SendDocument,
    AnswerCallbackQuery,
    EditMessageReplyMarkup,
    SendMessage,
    SendPhoto,
)
from aiogram.types import CallbackQuery, Chat, Message, Update, User
from aiogram.utils.formatting import Bold, Text, as_list

from bot.app import BOT_COMMANDS, build_dispatcher
from bot.console import ConsoleChat, ConsoleSession, keyboard_buttons, make_console_bot
from bot.render import render_positions, split_text
from keyboards.pause import PauseAllCb, PauseSymbolCb, pause_keyboard
from trading.domain.errors import ExchangeError, UnknownSymbol
from trading.domain.models import EquitySnapshot, ExitReason, Position, Side, TradingState
from trading.domain.reports import build_report
from trading.domain.views import PeriodReport, PositionView, Summary

USER_ID = 42
STRANGER_ID = 666
DAY = date(2024, 3, 1)
DAY_MS = int(datetime(2024, 3, 1, tzinfo=timezone.utc).timestamp() * 1000)
SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT", "1000000MOG/USDT:USDT")


def position_view(symbol: str = "BTC/USDT:USDT", **changes) -> PositionView:
    """A realistic open long."""
    fields = dict(
        position_id="ema-BTC-1", bot="ema", symbol=symbol, side=Side.LONG,
        contracts=D("0.012"), entry_price=D("61234.5"), mark_price=D("61500.1"),
        unrealised_pnl=D("3.18720"), pnl_pct_on_margin=D("4.337"), notional=D("738.0012"),
        margin=D("73.48140"), stop_loss=D("60400.0"), take_profit_1=D("62100.0"),
        take_profit_2=D("63000.0"), tp1_done=False, opened_ms=DAY_MS + 3_600_000,
    )
    fields.update(changes)
    return PositionView(**fields)


def closed_trade(n: int, symbol: str, pnl: str, reason: ExitReason) -> Position:
    """A closed position of the report day."""
    opened = DAY_MS + n * 3_600_000
    return Position(
        position_id=f"ema-{n}", bot="ema", symbol=symbol, side=Side.LONG, contracts=D(0),
        initial_contracts=D("0.01"), entry_price=D("60000"), opened_ms=opened, stop_loss=D("59000"),
        take_profit_1=D("61000"), take_profit_2=D("62000"), leverage=10, realised_pnl=D(pnl),
        fees=D("0.48"), funding=D("-0.02"), closed_ms=opened + 1_800_000, exit_price=D("61000"),
        exit_reason=reason,
    )


class FakeTradingService:
    """In-test double of ``trading.app.service.TradingService`` (same interface, real views)."""

    mode = "paper"
    quote = "USDT"

    def __init__(self, positions: list[PositionView] | None = None, trades: list[Position] | None = None):
        self.positions = positions if positions is not None else [position_view()]
        self.trades = trades if trades is not None else [
            closed_trade(1, "BTC/USDT:USDT", "12.50", ExitReason.TP2),
            closed_trade(3, "ETH/USDT:USDT", "-7.25", ExitReason.STOP_LOSS),
        ]
        self.paused: set[str] = set()
        self.set_paused_calls: list[tuple[str, bool]] = []
        self.report_days: list[date | None] = []

    def symbols(self) -> tuple[str, ...]:
        """The configured symbols."""
        return SYMBOLS

    def resolve_symbol(self, text: str) -> str:
        """"btc" / "BTCUSDT" / "BTC/USDT:USDT" → "BTC/USDT:USDT"; UnknownSymbol otherwise."""
        wanted = text.strip().upper().replace("/", "").replace(":", "")
        for symbol in SYMBOLS:
            base = symbol.split("/")[0]
            if wanted in (base, base + "USDT", symbol.replace("/", "").replace(":", "")):
                return symbol
        raise UnknownSymbol(f"Unknown symbol: {text.strip()[:32]}")

    def bot_names(self) -> tuple[str, ...]:
        """The one bot of the positions above."""
        return ("ema",)

    def resolve_bot(self, text: str) -> str | None:
        """"ema" (any case) → "ema"; None otherwise."""
        return "ema" if text.strip().lower() == "ema" else None

    async def summary(self) -> Summary:
        """A fixed account with the current positions and pauses."""
        unrealised = sum((p.unrealised_pnl for p in self.positions), D(0))
        return Summary(
            mode=self.mode, quote=self.quote, balance=D("10012.3456"), equity=D("10012.3456") + unrealised,
            unrealised_pnl=unrealised, realised_pnl_total=D("12.3456"), trading_state=TradingState.ACTIVE,
            state_reason="", sl_streak=1, sl_streak_limit=3, daily_loss_used_pct=D("0.4"),
            daily_loss_limit_pct=D("3"), positions=tuple(self.positions),
            paused_symbols=tuple(sorted(self.paused)), closed_trades=len(self.trades), clock_ms=DAY_MS + 7_200_000,
        )

    async def open_positions(self) -> list[PositionView]:
        """The positions given at construction."""
        return list(self.positions)

    async def paused_symbols(self) -> set[str]:
        """Symbols paused so far."""
        return set(self.paused)

    async def bot_pause_states(self) -> dict[str, bool]:
        """The one bot: paused when every symbol is."""
        return {"ema": set(SYMBOLS) <= self.paused}

    def halted_bots(self) -> dict[str, str]:
        """No risk stop in these tests."""
        return {}

    def liftable_stops(self) -> dict[str, str]:
        """No risk stop to lift in these tests."""
        return {}

    async def set_paused(self, symbol: str, paused: bool) -> None:
        """Record the call and apply it (R-7)."""
        if symbol not in SYMBOLS:
            raise UnknownSymbol(f"Unknown symbol: {symbol}")
        self.set_paused_calls.append((symbol, paused))
        (self.paused.add if paused else self.paused.discard)(symbol)

    async def daily_report(self, day: date | None = None) -> PeriodReport:
        """A real report (trading.domain.reports) over the given trades; None = DAY."""
        self.report_days.append(day)
        start = int(datetime(*(day or DAY).timetuple()[:3], tzinfo=timezone.utc).timestamp() * 1000)
        curve = [EquitySnapshot(start + i * 3_600_000, D(10000), D(10000) + D(i % 4)) for i in range(6)]
        return build_report(
            title=f"Daily report {(day or DAY).isoformat()} (UTC)", start_ms=start, end_ms=start + 86_400_000,
            trades=self.trades, equity_curve=curve, start_equity=D(10000), end_equity=D("10004.75"),
        )

    async def report_chart(self, report: PeriodReport) -> bytes:
        """The real chart, rendered off the loop like the service does."""
        import asyncio

        from trading.adapters.charts import render_report_chart

        return await asyncio.to_thread(render_report_chart, report)


# ------------------------------------------------------------------------- fixtures
@pytest.fixture
def trading() -> FakeTradingService:
    """A fresh service double."""
    return FakeTradingService()


@pytest.fixture
def out() -> io.StringIO:
    """What the console transport prints."""
    return io.StringIO()


@pytest.fixture
def bot(tmp_path, out):
    """A Bot on the console transport, saving files under tmp_path/out."""
    return make_console_bot(tmp_path / "out", out=out)


@pytest.fixture
def session(bot) -> ConsoleSession:
    """The recording session of ``bot``."""
    return bot.session


@pytest.fixture
def dp(trading):
    """A fresh Dispatcher per test (routers attach to one parent only)."""
    return build_dispatcher(trading, settings=None, allowed_user_ids=frozenset({USER_ID}))


@pytest.fixture
def chat(dp, bot, out) -> ConsoleChat:
    """A console chat as the allow-listed user."""
    return ConsoleChat(dp, bot, USER_ID, out=out)


_update_ids = count(1000)


def message_update(text: str, user_id: int = USER_ID) -> Update:
    """A real private-chat message Update."""
    user = User(id=user_id, is_bot=False, first_name="Trader")
    return Update(
        update_id=next(_update_ids),
        message=Message(
            message_id=next(_update_ids), date=datetime.now(timezone.utc),
            chat=Chat(id=user_id, type="private"), from_user=user, text=text,
        ),
    )


def sent(session: ConsoleSession, kind=SendMessage) -> list:
    """Recorded requests of one method type."""
    return [r for r in session.requests if isinstance(r, kind)]


def texts(session: ConsoleSession) -> str:
    """All sent message texts, newline-joined."""
    return "\n".join(r.text for r in sent(session))


# ----------------------------------------------------------------------------- T-2
async def test_summary_shows_balance_equity_positions_T2(dp, bot, session, trading):
    """T-2 /summary: balance, equity, risk state, open positions, money with 2 decimals + quote."""
    await dp.feed_update(bot, message_update("/summary"), trading=trading)
    [request] = sent(session)
    assert "Balance: 10,012.35 USDT" in request.text
    assert "Equity: 10,015.53 USDT" in request.text
    assert "Unrealised PnL: +3.19 USDT" in request.text
    assert "Risk state: ACTIVE" in request.text
    assert "Open positions: 1" in request.text
    assert "BTC/USDT:USDT LONG 0.012 @ 61234.5" in request.text
    assert "2024-03-01 02:00 UTC" in request.text
    assert request.entities, "formatting entities (bold) are sent, not Markdown"


async def test_open_lists_entry_contracts_sl_tps_T2(dp, bot, session):
    """T-2 /open: entry, contracts, notional, unrealised PnL, SL, TP1/TP2 per position."""
    trading = FakeTradingService(positions=[
        position_view(),
        position_view("1000000MOG/USDT:USDT", side=Side.SHORT, contracts=D("3"), entry_price=D("0.0000012"),
                      stop_loss=D("0.0000013"), take_profit_1=D("0.0000011"), take_profit_2=D("0.0000010"),
                      tp1_done=True),
    ])
    await dp.feed_update(bot, message_update("/open"), trading=trading)
    text = texts(session)
    assert "Open positions (2)" in text
    assert "Entry 61234.5" in text and "Contracts 0.012" in text
    assert "Notional 738.00 USDT" in text
    assert "SL 60400.0 · TP1 62100.0 · TP2 63000.0" in text
    assert "Unrealised PnL +3.19 USDT (+4.34% on margin)" in text
    # tiny prices are printed as given, never as 1.2E-6
    assert "Entry 0.0000012" in text and "TP1 0.0000011 ✓" in text
    assert "1000000MOG/USDT:USDT SHORT" in text
    assert "Opened 2024-03-01 01:00 UTC" in text


async def test_open_without_positions_T2(dp, bot, session):
    """T-2 /open with nothing open."""
    await dp.feed_update(bot, message_update("/open"), trading=FakeTradingService(positions=[]))
    assert texts(session) == "No open positions."


async def test_help_lists_categories_and_menu_matches_T2(dp, bot, session, trading):
    """T-2: /help lists the implemented commands by category; the command menu has the same."""
    await dp.feed_update(bot, message_update("/help"), trading=trading)
    text = texts(session)
    for word in ("Status", "Control", "Analytics", "Ops", "/summary", "/open", "/pause", "/resume", "/daily", "/help"):
        assert word in text
    assert [c.command for c in BOT_COMMANDS] == [
        "summary", "open", "status", "risk", "runtime", "pause", "resume", "close", "closeall", "shutdown",
        "daily", "dailycsv", "signalstats", "failstats", "blockers", "near", "topmissed", "filters", "chart", "optimize",
        "playbook", "log",
        "audit", "help",
    ]


async def test_start_greets_with_mode(dp, bot, session, trading):
    """/start names the trading mode."""
    await dp.feed_update(bot, message_update("/start"), trading=trading)
    assert "PAPER mode" in texts(session)


# ----------------------------------------------------------------------- T-3, R-7
async def test_pause_shows_toggles_and_tap_pauses_R7_T3(dp, bot, session, trading):
    """T-3 / R-7: /pause shows one toggle per symbol; tapping one calls set_paused and the
    keyboard is edited to the new state."""
    await dp.feed_update(bot, message_update("/pause"), trading=trading)
    [menu] = sent(session)
    labels = [b.text for b in keyboard_buttons(session.keyboard_message)]
    assert labels == ["⏸ BTC", "⏸ ETH", "⏸ 1000000MOG", "⏸ Pause all", "▶️ Resume all"]
    assert [len(row) for row in menu.reply_markup.inline_keyboard] == [2, 1, 2]

    button = menu.reply_markup.inline_keyboard[0][0]
    query = CallbackQuery(
        id="cb1", from_user=User(id=USER_ID, is_bot=False, first_name="Trader"), chat_instance="ci",
        message=session.keyboard_message, data=button.callback_data,
    )
    await dp.feed_update(bot, Update(update_id=1, callback_query=query), trading=trading)

    assert trading.set_paused_calls == [("BTC/USDT:USDT", True)]
    [edit] = sent(session, EditMessageReplyMarkup)
    assert edit.message_id == session.keyboard_message.message_id
    assert edit.reply_markup.inline_keyboard[0][0].text == "▶️ BTC (paused)"
    assert PauseSymbolCb.unpack(edit.reply_markup.inline_keyboard[0][0].callback_data).pause is False
    [answer] = sent(session, AnswerCallbackQuery)
    assert answer.text == "Paused BTC"


async def test_pause_all_and_resume_all_buttons_R7(chat, session, trading):
    """R-7: the Pause all / Resume all row applies to every symbol."""
    await chat.send_text("/pause")
    await chat.tap(4)  # ⏸ Pause all
    assert trading.paused == set(SYMBOLS)
    assert [b.text for b in keyboard_buttons(session.keyboard_message)][:3] == [
        "▶️ BTC (paused)", "▶️ ETH (paused)", "▶️ 1000000MOG (paused)"]
    await chat.tap(5)  # ▶️ Resume all
    assert trading.paused == set()
    await chat.tap(5)  # again: same markup, Telegram would say "not modified" — no error shown
    assert "Internal error" not in texts(session)


async def test_pause_and_resume_with_argument_R7(chat, session, trading):
    """R-7: /pause btc and /resume all act without a keyboard."""
    await chat.send_text("/pause btc")
    assert trading.paused == {"BTC/USDT:USDT"}
    assert sent(session)[-1].text == "Paused entries on BTC/USDT:USDT."
    await chat.send_text("/pause all")
    assert trading.paused == set(SYMBOLS)
    await chat.send_text("/resume ETHUSDT")
    assert "ETH/USDT:USDT" not in trading.paused
    await chat.send_text("/resume all")
    assert trading.paused == set()
    assert sent(session)[-1].text == "Resumed entries on all 3 symbols."


async def test_pause_unknown_symbol_gives_usage_and_changes_nothing_R7(dp, bot, session, trading):
    """/pause FOO → the reason and one usage line; no state change."""
    await dp.feed_update(bot, message_update("/pause FOO"), trading=trading)
    assert texts(session) == "Unknown symbol or bot: FOO (bots: ema)\nUsage: /pause [SYMBOL|bot|all]"
    await dp.feed_update(bot, message_update("/resume BTC ETH"), trading=trading)
    assert sent(session)[-1].text == "Usage: /resume [SYMBOL|bot|all]"
    assert trading.set_paused_calls == []


def test_callback_data_fits_64_bytes_for_long_symbols_T3():
    """T-3: callback_data ≤ 64 bytes, ``|`` separator keeps ccxt's ``:`` intact."""
    markup = pause_keyboard(["1000000MOG/USDT:USDT", "BTC/USDT:USDT"], {"1000000MOG/USDT:USDT"})
    datas = [b.callback_data for row in markup.inline_keyboard for b in row]
    assert all(len(d.encode()) <= 64 for d in datas)
    assert PauseSymbolCb.unpack(datas[0]) == PauseSymbolCb(symbol="1000000MOG/USDT:USDT", pause=False)
    assert PauseAllCb.unpack(datas[-1]) == PauseAllCb(pause=False)
    with pytest.raises(ValueError):
        PauseSymbolCb(symbol="X" * 70, pause=True).pack()


# ----------------------------------------------------------------------------- T-5
async def test_daily_sends_report_and_png_chart_T5(dp, bot, session, trading, tmp_path):
    """T-5 /daily: the report text, then the chart as a PNG photo."""
    await dp.feed_update(bot, message_update("/daily 2024-03-01"), trading=trading)
    assert trading.report_days == [DAY]
    text = texts(session)
    for fragment in ("Daily report 2024-03-01 (UTC)", "Trades: 2 (wins 1, losses 1)", "Win rate: 50.00%",
                     "Profit factor: 1.55", "Net PnL: +4.25 USDT (+0.04%)", "Fees: 0.96 USDT",
                     "Funding: -0.04 USDT", "Max drawdown: 0.03%", "SL / TP exits: 1 / 1",
                     "Best: BTC/USDT:USDT +12.00 USDT (1 trade)", "Worst: ETH/USDT:USDT -7.75 USDT (1 trade)"):
        assert fragment in text
    [photo] = sent(session, SendPhoto)
    assert photo.photo.filename == "daily-2024-03-01.png"
    assert photo.photo.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert (tmp_path / "out" / "daily-2024-03-01.png").read_bytes() == photo.photo.data
    assert session.requests.index(sent(session)[0]) < session.requests.index(photo)


async def test_dailycsv_sends_the_days_trades_as_a_csv_document_T2(dp, bot, session, trading):
    """T-2 /dailycsv: a CSV document with one row per closed trade of that day, at full
    precision, whose net_pnl column sums to the report's net PnL; a bad date gets the usage."""
    await dp.feed_update(bot, message_update("/dailycsv 2024-03-01"), trading=trading)
    [document] = sent(session, SendDocument)
    assert document.document.filename == "trades-2024-03-01.csv"
    rows = list(csv.DictReader(io.StringIO(document.document.data.decode("utf-8"))))
    report = await trading.daily_report(DAY)
    assert [r["position_id"] for r in rows] == [t.position_id for t in report.trades]
    assert sum(D(r["net_pnl"]) for r in rows) == report.net_pnl
    assert document.caption == "2 trades closed on 2024-03-01 (UTC)"
    await dp.feed_update(bot, message_update("/dailycsv yesterday"), trading=trading)
    assert "Usage: /dailycsv [YYYY-MM-DD]" in texts(session)


async def test_daily_without_trades_still_charts_T5(dp, bot, session):
    """T-5: a day without trades still gets a report and a chart."""
    trading = FakeTradingService(trades=[])
    await dp.feed_update(bot, message_update("/daily"), trading=trading)
    assert trading.report_days == [None]
    assert "Profit factor: n/a" in texts(session)
    assert sent(session, SendPhoto)[0].photo.data[:4] == b"\x89PNG"


async def test_daily_bad_date_gives_usage(dp, bot, session, trading):
    """/daily with a malformed date → reason + usage line, no report computed."""
    await dp.feed_update(bot, message_update("/daily 2024-13-45"), trading=trading)
    assert texts(session) == "Bad date: 2024-13-45\nUsage: /daily [YYYY-MM-DD]"
    assert trading.report_days == []


# ----------------------------------------------------------------------------- T-1
async def test_stranger_gets_nothing_and_is_logged_T1(dp, bot, session, trading, caplog):
    """T-1: a user outside the allow-list gets no reply; a warning names the id, not the text."""
    caplog.set_level(logging.WARNING)
    await dp.feed_update(bot, message_update("/summary secret-words", user_id=STRANGER_ID), trading=trading)
    query = CallbackQuery(id="x", from_user=User(id=STRANGER_ID, is_bot=False, first_name="X"),
                          chat_instance="ci", data=PauseAllCb(pause=True).pack())
    await dp.feed_update(bot, Update(update_id=7, callback_query=query), trading=trading)
    assert session.requests == []
    assert trading.set_paused_calls == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(STRANGER_ID) in w and "message" in w for w in warnings)
    assert any(str(STRANGER_ID) in w and "callback_query" in w for w in warnings)
    assert not any("secret-words" in r.getMessage() for r in caplog.records)


# -------------------------------------------------------------------------- errors
class BrokenTradingService(FakeTradingService):
    """Raises from the service: a domain error on /summary, a bug on /open."""

    async def summary(self) -> Summary:
        raise ExchangeError("Binance is down for maintenance")

    async def open_positions(self) -> list[PositionView]:
        raise ZeroDivisionError("decimal division by zero in secret place")


async def test_handler_errors_become_user_text_not_tracebacks(dp, bot, session, caplog):
    """Domain errors show their message; anything else a short line, the traceback goes to logs."""
    trading = BrokenTradingService()
    await dp.feed_update(bot, message_update("/summary"), trading=trading)
    await dp.feed_update(bot, message_update("/open"), trading=trading)
    assert [r.text for r in sent(session)] == ["Binance is down for maintenance", "Internal error, see logs"]
    assert "Traceback" not in texts(session) and "secret place" not in texts(session)
    assert any(r.exc_info and isinstance(r.exc_info[1], ZeroDivisionError) for r in caplog.records)


async def test_error_in_callback_reports_to_chat(chat, session):
    """A failing toggle (symbol no longer configured) answers the callback and explains in chat."""
    trading = FakeTradingService()
    chat.deps["trading"] = trading
    await chat.send_text("/pause")
    stale = session.keyboard_message.model_copy(update={"reply_markup": pause_keyboard(["DOGE/USDT:USDT"], set())})
    session.keyboard_message = stale
    await chat.tap(1)
    assert sent(session, AnswerCallbackQuery), "the spinner must stop even on errors"
    assert sent(session)[-1].text == "Unknown symbol: DOGE/USDT:USDT"


# ------------------------------------------------------------------------- console
async def test_console_prints_numbered_buttons_and_tap_works(chat, session, trading, out):
    """The console transport prints buttons as [n] and tap(n) sends the button's callback."""
    await chat.say(["/pause", "2"])
    printed = out.getvalue()
    assert "> /pause" in printed
    assert "[1] ⏸ BTC  [2] ⏸ ETH" in printed
    assert "[3] ⏸ 1000000MOG" in printed
    assert "[4] ⏸ Pause all  [5] ▶️ Resume all" in printed
    assert trading.paused == {"ETH/USDT:USDT"}
    assert "(Paused ETH)" in printed
    assert "[1] ⏸ BTC  [2] ▶️ ETH (paused)" in printed
    assert await chat.tap(9) is False and "No button 9." in out.getvalue()


async def test_console_interactive_reads_until_quit(chat, session, out, tmp_path):
    """run_interactive: lines are messages, numbers are taps, quit ends; photos are saved."""
    await chat.run_interactive(io.StringIO("/open\n\n/daily\nquit\n/summary\n"))
    printed = out.getvalue()
    assert "Open positions (1)" in printed
    assert "photo saved: " in printed and (tmp_path / "out" / "daily-2024-03-01.png").exists()
    assert "Summary" not in printed  # after quit


async def test_console_bot_answers_get_me(bot):
    """Handlers and filters may call getMe; the console answers with a fake bot user."""
    me = await bot.me()
    assert me.is_bot and me.id == bot.id


# ------------------------------------------------------------------------ splitting
def test_long_texts_are_split_at_4096_T4():
    """T-4: messages are split at 4096 chars, on line boundaries, keeping entities valid."""
    many = [position_view(position_id=str(i)) for i in range(60)]
    parts = split_text(render_positions(many))
    assert len(parts) > 1
    assert all(len(p) <= 4096 for p in parts)
    assert sum(p.render()[0].count("Entry 61234.5") for p in parts) == 60
    for part in parts:
        text, entities = part.render()
        assert not text.startswith("\n") and not text.endswith("\n")
        assert all(e.offset + e.length <= len(text.encode("utf-16-le")) // 2 for e in entities)
    huge = split_text(as_list(Bold("title"), "x" * 10_000))
    assert [len(p) for p in huge] == [5, 4096, 4096, 1808]  # a giant block starts its own message
    assert split_text(Text("short"))[0].render()[0] == "short"
