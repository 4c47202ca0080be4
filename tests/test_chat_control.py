"""Commands T-2, buttons T-3 and confirmations T-1 on the real paper stack: real Updates fed to
a fresh Dispatcher (``dp.feed_update``), Bot API requests recorded by the console transport, a
real SQLite file (STYLE: aiogram's tests/mocked_bot.py)."""

from __future__ import annotations

import io
import logging
from decimal import Decimal
from pathlib import Path

import pytest
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from aiogram.types import CallbackQuery, InlineKeyboardMarkup

from bot.app import build_dispatcher
from bot.console import ConsoleChat, keyboard_buttons, make_console_bot
from bot.logbuffer import RingBufferHandler, redact
from bot.render import COMMANDS
from bot.settings import Settings
from keyboards.confirm import confirm_keyboard
from keyboards.pager import PAGE_SIZE, PageCb, page_of
from keyboards.pause import MAX_CALLBACK_BYTES, pause_keyboard
from keyboards.playbook import alert_keyboard, playbook_keyboard, playbooks_keyboard
from keyboards.positions import positions_keyboard
from tests import stack
from tests.test_chat import position_view
from tests.test_risk_chat import OPEN_END, RISK_END, two_bots
from trading.domain.config import TradingConfig
from trading.domain.models import OrderLeg
from trading.domain.playbooks import PLAYBOOKS
from trading.app.service import CONFIRM_TTL_MS

USER, OTHER = 7, 8
TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


class Chat:
    """One trader talking to the real stack; ``now`` drives the service's wall clock."""

    def __init__(self, runtime, tmp_path: Path, **deps) -> None:
        self.runtime = runtime
        self.now = 1_800_000_000_000
        runtime.service.wall_clock = lambda: self.now
        runtime.service.started_ms = self.now
        self.dp = build_dispatcher(runtime.service, Settings(), frozenset({USER, OTHER}), **deps)
        self.bot = make_console_bot(tmp_path / "out", out=io.StringIO())
        self.session = self.bot.session
        self.console = ConsoleChat(self.dp, self.bot, USER, out=io.StringIO())

    async def say(self, text: str) -> str:
        """Send ``text``; the texts of every message sent in reply, joined."""
        before = len(self.session.requests)
        await self.console.send_text(text)
        return "\n".join(r.text for r in self.session.requests[before:] if isinstance(r, SendMessage))

    def buttons(self) -> list[str]:
        """Labels of the last printed keyboard."""
        return [b.text for b in keyboard_buttons(self.session.keyboard_message)]

    def data_of(self, label: str) -> str:
        """Callback data of the last keyboard's button starting with ``label``."""
        [button] = [b for b in keyboard_buttons(self.session.keyboard_message) if b.text.startswith(label)]
        return button.callback_data

    async def tap(self, label: str, user: int = USER) -> list:
        """Tap the button whose label starts with ``label`` (as ``user``); the new requests."""
        message = self.session.keyboard_message
        [button] = [b for b in keyboard_buttons(message) if b.text.startswith(label)]
        return await self.tap_data(button.callback_data, user, message)

    async def tap_data(self, data: str, user: int = USER, message=None) -> list:
        """Deliver a callback query with raw ``data`` (forged data included)."""
        before = len(self.session.requests)
        console = self.console if user == USER else ConsoleChat(self.dp, self.bot, user, out=io.StringIO())
        query = CallbackQuery(
            id=str(len(self.session.requests)), from_user=console.user, chat_instance=str(user),
            message=message or self.session.keyboard_message, data=data,
        )
        await console._feed(callback_query=query)
        return self.session.requests[before:]

    async def close(self) -> None:
        """Close the console bot session."""
        await self.bot.session.close()


def answers(requests: list) -> list[str]:
    """Texts of the answerCallbackQuery calls among ``requests``."""
    return [r.text or "" for r in requests if isinstance(r, AnswerCallbackQuery)]


def close_orders(runtime) -> list:
    """Reduce-only close orders the engine has on its books."""
    return [o for o in runtime.engine.open_orders.values() if o.leg is OrderLeg.CLOSE]


@pytest.fixture
async def open_stack(tmp_path, data_dir):
    """Two bots replayed to a moment with one position open in each."""
    runtime = await stack.replayed(tmp_path / "paper.db", data_dir, OPEN_END, two_bots())
    chat = Chat(runtime, tmp_path)
    yield chat
    await chat.close()
    await runtime.close()


# ----------------------------------------------------------------------------- T-2
async def test_t2_every_listed_command_answers_and_bad_arguments_get_one_usage_line(open_stack):
    """T-2: every command in the one table behind /help and the menu answers (the two another
    issue implements aside); a malformed argument gets a one-line usage reply, never an error."""
    chat = open_stack
    elsewhere = {"dailycsv", "audit"}
    for _category, items in COMMANDS:
        for command, _ in items:
            if command in elsewhere:
                continue
            reply = await chat.say(f"/{command}")
            assert reply and "Internal error" not in reply, command
    for bad in ("/close", "/close BTC ETH", "/close NOPE", "/closeall now", "/shutdown now", "/log abc",
                "/log 0", "/log 101", "/playbook volcano", "/open nobot", "/pause a b", "/daily 2025-13-45"):
        reply = await chat.say(bad)
        assert "Usage: /" in reply, bad
        assert "Internal error" not in reply and "Traceback" not in reply, bad
    assert close_orders(chat.runtime) == []  # nothing above closed anything
    assert await chat.say("/nosuch") == "/nosuch is not available in this run. /help lists the commands."


async def test_t2_status_and_runtime_show_state_mode_feed(open_stack):
    """T-2 /status (trading state, halted bots, paused, feed) and /runtime (uptime, mode, feed
    state, loop timings said honestly)."""
    chat = open_stack
    status = await chat.say("/status")
    assert "Trading state: ACTIVE" in status and "Halted bots: none" in status
    assert "Open positions: 2" in status and "Market feed: replay finished (no more candles)" in status
    chat.now += 3_725_000
    runtime = await chat.say("/runtime")
    assert "Uptime: 1h 02m 05s" in runtime and "Mode: PAPER" in runtime
    assert "Loop timings: avg " in runtime and "per candle step" in runtime  # the replay was timed
    avg, peak = chat.runtime.service.loop_timings.stats()
    assert 0 < avg <= peak


async def test_t2_log_shows_recent_lines_without_secrets(tmp_path, data_dir):
    """T-2 /log [n]: the last n lines of the bot's log from the ring buffer; a bot token or an
    ``api_key=...`` in a log line never reaches the chat."""
    runtime = await stack.replayed(tmp_path / "paper.db", data_dir, OPEN_END, two_bots())
    buffer = RingBufferHandler(capacity=50)
    logger = logging.getLogger("optiflow.test.log")
    logger.addHandler(buffer)
    chat = Chat(runtime, tmp_path, log_buffer=buffer)
    try:
        for i in range(30):
            logger.warning("line %d", i)
        logger.error("login with %s failed, api_key=abcdef123456", TOKEN)
        reply = await chat.say("/log 3")
        assert "line 28" in reply and "line 29" in reply and "line 27" not in reply
        assert "failed" in reply and TOKEN not in reply and "abcdef123456" not in reply
        assert buffer.errors_since(0) == 1
    finally:
        logger.removeHandler(buffer)
        await chat.close()
        await runtime.close()
    assert redact(f"token {TOKEN}") == "token [redacted]"


# ------------------------------------------------------------------- T-1, T-3 confirm
async def test_t1_close_asks_confirmation_then_sends_one_reduce_only_close(open_stack):
    """T-1/T-3: /close SYMBOL only asks; the confirm tap sends one reduce-only market close;
    a second tap on the same dialog does nothing more."""
    chat = open_stack
    symbol = next(iter(chat.runtime.engine.positions.values())).symbol
    reply = await chat.say(f"/close {symbol}")
    assert reply.startswith(f"Close {symbol} at market?")
    assert close_orders(chat.runtime) == []
    confirm = chat.data_of("✅")
    requests = await chat.tap("✅")
    assert answers(requests) == ["Done"]
    [order] = close_orders(chat.runtime)
    assert order.symbol == symbol and order.reduce_only
    assert any(isinstance(r, SendMessage) and "Close sent" in r.text for r in requests)
    assert answers(await chat.tap_data(confirm)) == ["Already done."]
    assert len(close_orders(chat.runtime)) == 1


async def test_t3_confirmation_expires_after_60_s(open_stack):
    """T-3: the confirm button stops working after 60 s; the tap is answered and nothing closes."""
    chat = open_stack
    await chat.say("/closeall")
    chat.now += CONFIRM_TTL_MS
    requests = await chat.tap("✅")
    assert answers(requests) == ["This confirmation expired — ask again."]
    assert any(isinstance(r, EditMessageText) and r.reply_markup is None for r in requests)
    assert close_orders(chat.runtime) == []


async def test_t1_confirmation_of_another_user_and_cancel_run_nothing(open_stack):
    """T-1: another (allowed) user cannot confirm my dialog; Cancel consumes it."""
    chat = open_stack
    await chat.say("/closeall")
    confirm = chat.data_of("✅")
    assert answers(await chat.tap("✅", user=OTHER)) == ["This button is not valid any more."]
    assert answers(await chat.tap("✖️", user=OTHER)) == ["This button is not valid any more."]
    assert answers(await chat.tap("✖️")) == ["Cancelled"]
    assert answers(await chat.tap_data(confirm)) == ["Already done."]
    assert close_orders(chat.runtime) == []


async def test_t3_open_has_close_button_per_position_that_asks_first(open_stack):
    """T-3: /open shows one ❌ Close button per position; the tap opens a confirm dialog."""
    chat = open_stack
    await chat.say("/open")
    symbols = {p.symbol for p in chat.runtime.engine.positions.values()}
    labels = chat.buttons()
    assert len(labels) == len(symbols) and all(label.startswith("❌ Close ") for label in labels)
    requests = await chat.tap(labels[0])
    assert answers(requests) == ["Confirm the close"]
    assert chat.buttons()[0].startswith("✅ Close")
    assert close_orders(chat.runtime) == []
    await chat.tap("✅")
    assert len(close_orders(chat.runtime)) == 1


async def test_t3_forged_and_unknown_taps_are_answered_and_change_nothing(open_stack):
    """T-3: a tap always gets an answer, also for forged, unknown or stale data; none acts."""
    chat = open_stack
    await chat.say("/open")
    paused_before = {k: set(v) for k, v in chat.runtime.engine.paused.items()}
    for data in ("cf|abc|1", "cf|999999|1", "zz|nothing", "", "ps|NOPE/USDT:USDT|1", "pg|open|-5",
                 "cp|NOPE/USDT:USDT", "px|LAUNCH_MISSILES|", "pb|volcano", "pt|nobot|1", "x" * 64):
        requests = await chat.tap_data(data)
        assert len([r for r in requests if isinstance(r, AnswerCallbackQuery)]) == 1, data
    assert close_orders(chat.runtime) == []
    assert {k: set(v) for k, v in chat.runtime.engine.paused.items()} == paused_before


def liftable_day() -> TradingConfig:
    """The two bots with the R-3 hard limit out of the way (10 %): that day ends their entries
    at the 2 % daily limit, a stop a confirmed /resume may lift (the 3 % hard limit may not)."""
    config = two_bots()
    return config.model_copy(update={"account": config.account.model_copy(
        update={"daily_loss_hard_limit_pct": Decimal(10)})})


async def test_t1_resume_after_a_risk_stop_asks_to_lift_it(tmp_path, data_dir):
    """T-1: after R-2/R-3 stopped bots for the day, /resume all resumes the pause flags but
    lifting the risk stop itself needs a confirm."""
    runtime = await stack.replayed(tmp_path / "paper.db", data_dir, RISK_END, liftable_day())
    chat = Chat(runtime, tmp_path)
    try:
        halted = runtime.service.halted_bots()
        assert halted
        reply = await chat.say("/resume all")
        assert "Still stopped by a risk rule: " + ", ".join(f"{b} ({r})" for b, r in halted.items()) in reply
        assert f"Lift the risk stop of bot(s) {', '.join(halted)}" in reply
        assert runtime.service.halted_bots() == halted
        confirm = chat.data_of("✅")
        requests = await chat.tap("✅")
        assert answers(requests) == ["Done"]
        assert runtime.service.halted_bots() == {}
        assert answers(await chat.tap_data(confirm)) == ["Already done."]
    finally:
        await chat.close()
        await runtime.close()


async def test_l2_shutdown_offers_close_all_and_stop_or_stop_keeping_positions(tmp_path, data_dir):
    """T-1/L-2: /shutdown asks with both choices — "close all and stop" and "stop, keep
    positions with their stops"; each confirm calls the lifecycle's request_shutdown(reason,
    flatten=...) with the trader's choice."""
    runtime = await stack.replayed(tmp_path / "paper.db", data_dir, OPEN_END, two_bots())
    calls: list[tuple[str, bool | None]] = []
    chat = Chat(runtime, tmp_path, request_shutdown=lambda reason, flatten=None: calls.append((reason, flatten)))
    try:
        assert (await chat.say("/shutdown")).startswith("Shut the bot down?")
        assert {"✅ Close all and stop", "✅ Stop, keep positions with their stops", "✖️ Cancel"} <= set(chat.buttons())
        assert calls == []
        await chat.tap("✅ Close all and stop")
        await chat.say("/shutdown")
        await chat.tap("✅ Stop, keep positions with their stops")
        assert calls == [(f"/shutdown confirmed by user id={USER} (flatten)", True),
                         (f"/shutdown confirmed by user id={USER} (keep)", False)]
    finally:
        await chat.close()
        await runtime.close()


# ------------------------------------------------------------------------ T-3 pages
def test_t3_pager_pages_and_clamps():
    """T-3 shared pager: 5 per page, out-of-range pages clamp, one-page lists have no pager."""
    items = list(range(12))
    assert page_of(items, 0) == ([0, 1, 2, 3, 4], 0, 3)
    assert page_of(items, 2) == ([10, 11], 2, 3)
    assert page_of(items, 9)[1:] == (2, 3) and page_of(items, -1)[1] == 0
    assert page_of([], 0) == ([], 0, 1)
    views = [position_view(f"S{i}/USDT:USDT", position_id=f"p{i}") for i in range(PAGE_SIZE)]
    markup = positions_keyboard(views, page=1, pages=3, bot="A")
    pager = [PageCb.unpack(b.callback_data) for b in markup.inline_keyboard[-1]]
    assert [p.page for p in pager] == [0, 1, 2] and {p.arg for p in pager} == {"A"}
    assert positions_keyboard([], 0, 1) is None


def _all_data(markup: InlineKeyboardMarkup | None) -> list[str]:
    return [b.callback_data for row in (markup.inline_keyboard if markup else []) for b in row if b.callback_data]


def test_t3_every_keyboard_fits_64_bytes():
    """T-3: callback_data ≤ 64 bytes for every keyboard we build, with the longest symbols,
    bot names and ids we allow."""
    long_symbols = ("1000000MOG/USDT:USDT", "1000SATS/USDT:USDT", "BTC/USDT:USDT")
    bots = {"OptiScalp A long name": True, "B": False}
    views = [position_view(s, position_id=s) for s in long_symbols]
    markups = [
        pause_keyboard(long_symbols, {long_symbols[0]}, bots),
        positions_keyboard(views, page=3, pages=99, bot="OptiScalp A long name"),
        confirm_keyboard(2**62, "Close"),
        playbooks_keyboard(),
        *(playbook_keyboard(p) for p in PLAYBOOKS.values()),
        *(alert_keyboard(p) for p in PLAYBOOKS),
    ]
    data = [d for m in markups for d in _all_data(m)]
    assert len(data) > 20
    assert all(len(d.encode()) <= MAX_CALLBACK_BYTES for d in data)


# ------------------------------------------------------------------------ T-6 playbooks
async def test_t6_o9_playbook_lists_incidents_and_steps_run_safe_actions(open_stack):
    """T-6: /playbook lists the incidents; a playbook's buttons pause all (at once), close a
    symbol (through the confirm dialog) and place lost stops again — in paper too (O-9: the
    simulated venue is reconciled like an exchange): a stop that vanished from the venue is
    found and placed again at the position's level."""
    chat = open_stack
    listing = await chat.say("/playbook")
    assert listing.startswith("Incident playbooks") and "Position without stop" in listing
    assert len(chat.buttons()) == len(PLAYBOOKS)
    await chat.tap("Position without stop")
    assert chat.buttons() == ["🛡 Place stops again", "❌ Close a symbol", "⏸ Pause all"]
    steps = chat.session.requests[-2].text
    assert steps.startswith("Playbook: Position without stop") and "1. Place the stop-loss again" in steps
    engine, venue = chat.runtime.engine, chat.runtime.exchange
    (bot, symbol), position = next(iter(engine.positions.items()))
    lost = engine.stop_of(bot, symbol)
    await venue.cancel_order(lost.client_order_id, symbol)  # gone on the venue, the bot does not know
    requests = await chat.tap("🛡 Place stops again")
    assert answers(requests) == ["Running…"]
    report = next(r.text for r in requests if isinstance(r, SendMessage))
    assert f"{symbol}: position of {bot}" in report and "without a full resting stop-loss" in report, report
    stops = [o for o in await venue.fetch_open_orders(symbol) if o.leg is OrderLeg.STOP_LOSS]
    assert len(stops) == 1 and stops[0].client_order_id != lost.client_order_id
    assert stops[0].amount == position.contracts and stops[0].trigger_price == position.stop_loss
    assert engine.stop_of(bot, symbol).client_order_id == stops[0].client_order_id
    assert close_orders(chat.runtime) == [] and all(not v for v in chat.runtime.engine.paused.values())
    await chat.say("/playbook no_stop")
    await chat.tap("⏸ Pause all")
    assert all(v == set(chat.runtime.engine.bots[k].profile.symbols) for k, v in chat.runtime.engine.paused.items())
    await chat.say("/playbook stuck order")
    await chat.tap("❌ Close a symbol")
    symbol_button = chat.buttons()[0]
    assert symbol_button.startswith("❌ Close ")
    await chat.tap(symbol_button)
    assert close_orders(chat.runtime) == []  # asks first
    await chat.tap("✅")
    assert len(close_orders(chat.runtime)) == 1


async def test_t6_someone_else_playbook_in_paper_says_nobody_else_trades_the_simulated_venue(open_stack):
    """T-6 (issue 13's "someone else on the account"): in paper the Adopt / Ignore / Close it
    buttons say that nobody else trades the simulated exchange, and change nothing."""
    chat = open_stack
    positions = dict(chat.runtime.engine.positions)
    await chat.say("/playbook someone_else")
    assert chat.buttons() == ["🤝 Adopt", "🙈 Ignore", "❌ Close it"]
    for button in ("🤝 Adopt", "🙈 Ignore", "❌ Close it"):
        requests = await chat.tap(button)
        assert answers(requests) == ["Not in paper mode"]
        [text] = [r.text for r in requests if isinstance(r, SendMessage)]
        assert text.startswith("Nobody else trades the simulated exchange in paper mode")
        await chat.say("/playbook someone_else")
    assert chat.runtime.engine.positions == positions and close_orders(chat.runtime) == []
    assert all(not v for v in chat.runtime.engine.paused.values())


async def test_t3_open_pages_five_positions_at_a_time(tmp_path):
    """T-3: a long /open shows 5 positions with their close buttons and a pager; "Next" edits
    the same message to the next page."""
    from tests.test_chat import FakeTradingService

    views = [position_view(f"COIN{i}/USDT:USDT", position_id=f"p{i}") for i in range(12)]
    trading = FakeTradingService(positions=views)
    dp = build_dispatcher(trading, Settings(), frozenset({USER}))
    bot = make_console_bot(tmp_path / "out", out=io.StringIO())
    console = ConsoleChat(dp, bot, USER, out=io.StringIO())
    try:
        await console.send_text("/open")
        labels = [b.text for b in keyboard_buttons(bot.session.keyboard_message)]
        assert labels == [f"❌ Close COIN{i}" for i in range(5)] + ["1/3", "Next ▶️"]
        assert "COIN4/USDT:USDT" in bot.session.keyboard_message.text
        assert "COIN5/USDT:USDT" not in bot.session.keyboard_message.text
        await console.tap(len(labels))  # Next ▶️
        [edit] = [r for r in bot.session.requests if isinstance(r, EditMessageText)]
        assert "COIN5/USDT:USDT" in edit.text and "COIN4/USDT:USDT" not in edit.text
        page2 = [b.text for row in edit.reply_markup.inline_keyboard for b in row]
        assert page2[-3:] == ["◀️ Prev", "2/3", "Next ▶️"]
    finally:
        await bot.session.close()


async def test_t3_analytics_lists_share_the_pager(tmp_path, data_dir):
    """T-3: /near and /topmissed page 10 lines at a time with the same pager as /open; the
    second page continues where the first stopped."""
    from trading.app.analytics import AnalyticsService

    runtime = await stack.replayed(tmp_path / "paper.db", data_dir, OPEN_END, two_bots())
    analytics = AnalyticsService(runtime.store, runtime.config, runtime.clock)
    chat = Chat(runtime, tmp_path, analytics=analytics)
    try:
        report = await analytics.near(30)
        assert len(report.signals) > 10
        first = await chat.say("/near 30")
        assert chat.buttons()[-2:] == [f"1/{-(-len(report.signals) // 10)}", "Next ▶️"]
        assert first.count(" · bot ") == 10
        requests = await chat.tap("Next ▶️")
        [edit] = [r for r in requests if isinstance(r, EditMessageText)]
        assert edit.text.count(" · bot ") == min(10, len(report.signals) - 10)
        tenth = report.signals[10]
        assert f"{tenth.symbol} {tenth.side.value.upper()} · score" in edit.text
        await chat.say("/topmissed")  # a short list: no pager
        assert chat.session.requests[-1].reply_markup is None
    finally:
        await chat.close()
        await runtime.close()


async def test_l2_console_shutdown_stops_reading_after_the_confirm(tmp_path, data_dir):
    """L-2 in the console transport: "/shutdown", then tapping ✅ (button 1) ends the chat
    loop; the line after it is never handled."""
    from bot.shutdown import ShutdownSignal

    runtime = await stack.replayed(tmp_path / "paper.db", data_dir, OPEN_END, two_bots())
    signal = ShutdownSignal()
    chat = Chat(runtime, tmp_path, request_shutdown=signal.request)
    try:
        await chat.console.run_interactive(io.StringIO("/shutdown\n1\n/summary\n"), until=signal.event)
        assert signal.reason == f"/shutdown confirmed by user id={USER} (flatten)" and signal.flatten is True
        sent_texts = [r.text for r in chat.session.requests if isinstance(r, SendMessage)]
        assert sent_texts[0].startswith("Shut the bot down?") and not any("Balance:" in t for t in sent_texts)
    finally:
        await chat.close()
        await runtime.close()


async def test_t3_per_bot_pause_toggle_pauses_only_that_bot_R7_B1(open_stack):
    """T-3/R-7: with two bots, /pause shows a toggle per bot; tapping "⏸ bot A" pauses exactly
    A's symbols (engine and database) and redraws the toggle as paused."""
    from aiogram.methods import EditMessageReplyMarkup

    from tests.test_risk_chat import A_SYMBOLS

    chat = open_stack
    await chat.say("/pause")
    assert {"⏸ bot A", "⏸ bot B"} <= set(chat.buttons())
    requests = await chat.tap("⏸ bot A")
    assert answers(requests) == ["Paused bot A"]
    assert chat.runtime.engine.paused["A"] == set(A_SYMBOLS) and chat.runtime.engine.paused["B"] == set()
    assert await chat.runtime.store.pauses.list("A") == set(A_SYMBOLS)
    [edit] = [r for r in requests if isinstance(r, EditMessageReplyMarkup)]
    labels = [b.text for row in edit.reply_markup.inline_keyboard for b in row]
    assert "▶️ bot A (paused)" in labels and "⏸ bot B" in labels


async def test_t1_lifting_a_risk_stop_touches_only_the_bots_named_in_the_dialog(tmp_path, data_dir):
    """T-1: the confirm lifts the stops the trader was shown, not a stop that came later."""
    runtime = await stack.replayed(tmp_path / "paper.db", data_dir, RISK_END, liftable_day())
    try:
        halted = runtime.service.halted_bots()
        assert set(halted) == {"A", "B"}
        assert await runtime.service.clear_risk_stops(["A"]) == {"A": halted["A"]}
        assert runtime.service.halted_bots() == {"B": halted["B"]}
    finally:
        await runtime.close()
