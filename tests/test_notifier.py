"""SPEC T-4 notifications through the REAL aiogram HTTP session against the loopback fake Bot
API: priorities, 429 retry_after, pacing, digests, HTML escaping, 4096 split, the SQLite outbox
across a restart, and notices built from a real replay's persisted events."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from decimal import Decimal as D

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from aiogram.utils.formatting import Text

from bot.notices import Category, NoticeBuilder, Priority
from bot.notifier import Notifier
from bot.runtime import build_paper_runtime
from storage import Storage
from tests.fake_telegram import FakeTelegram, fake  # noqa: F401 - the fixture
from trading.domain.config import TradingConfig
from trading.domain.events import Alert, OrderUpdated, PositionChanged, RiskStateChanged
from trading.domain.models import (
    ExitReason,
    Order,
    OrderLeg,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    RiskState,
    Side,
)

CHAT, GROUP = 4242, -1001
DAY0 = 1_748_908_800_000


class FakeTime:
    """Injected clock: sleeping advances it at once (no real waiting), and records the sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def make_bot(fake: FakeTelegram) -> Bot:
    return Bot("123456:TEST-TOKEN", session=AiohttpSession(api=TelegramAPIServer.from_base(fake.base)))


async def test_t4_burst_of_300_under_429s_critical_all_in_order_low_merged(fake, tmp_path):
    """300 notifications while Telegram answers 429 now and then: every critical message
    arrives exactly once and in order, none dropped; the low-priority ones arrive merged into
    digests; retry_after is waited out and one chat never gets two messages within a second."""
    clock = FakeTime()
    stamps: list[float] = []
    fake.on_call = lambda method, params: stamps.append(clock.now)
    for _ in range(6):
        fake.fail(429, retry_after=7, method="sendMessage")
    store = await Storage.open(tmp_path / "n.db")
    bot = make_bot(fake)
    notifier = Notifier(bot, store.outbox, [CHAT], clock=clock.clock, sleep=clock.sleep)
    critical, low, normal = [], [], []
    try:
        for i in range(300):
            if i % 3 == 0:
                text = f"SL hit #{i} <BTC> & co"
                critical.append(text)
                await notifier.notify(Category.STOP_LOSS, Text(text))
            elif i % 3 == 1:
                low.append(f"funding #{i}")
                await notifier.notify(Category.DIGEST, Text(low[-1]))
            else:
                normal.append(f"entry #{i}")
                await notifier.notify(Category.ENTRY, Text(normal[-1]))
        await notifier.start()
        assert await notifier.drain(timeout=60)
        assert await store.outbox.pending() == []  # every critical row deleted once accepted
    finally:
        await notifier.close(timeout=1)
        await bot.session.close()
        await store.close()
    texts = fake.texts_to(CHAT)
    # HTML escaped on the way out; bursts merged, but every critical text whole, once, in order.
    everything = "\n".join(texts)
    assert re.findall(r"SL hit #\d+ [^\n]*", everything) == [
        t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") for t in critical
    ]
    sent_critical = [t for t in texts if "SL hit" in t]
    assert len([r for r in fake.refused if r[2] == 429]) == 6
    assert clock.sleeps.count(7.0) == 6  # each retry_after honoured
    # Critical first: all of them before any normal or low message.
    assert texts.index(sent_critical[-1]) < min(i for i, t in enumerate(texts) if "SL hit" not in t)
    digests = [t for t in texts if "Digest" in t]
    assert 1 <= len(digests) < len(low) // 10
    joined = "\n".join(digests)
    assert all(item in joined for item in low)
    assert all(item in everything for item in normal)
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(stamps, stamps[1:]))
    assert all(len(t) <= 4096 for t in texts)


async def test_t4_critical_messages_pending_in_sqlite_are_sent_after_a_restart(fake, tmp_path):
    """Telegram is down (HTTP 500): the critical messages stay in the outbox when the bot stops;
    the next start sends them, in order, and empties the outbox."""
    fake.fail_all = 500
    store = await Storage.open(tmp_path / "r.db")
    bot = make_bot(fake)
    first = Notifier(bot, store.outbox, [CHAT])
    await first.start()
    for i in range(3):
        await first.notify(Category.RISK, Text(f"Risk stop {i}"))
    playbook = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text="📖 Playbook", callback_data="pb|NO_STOP")]])
    await first.notify(Category.ALERT, Text("No stop on BTC"), reply_markup=playbook)
    await first.notify(Category.ENTRY, Text("entry, not critical"))
    assert not await first.close(timeout=0.3)
    await bot.session.close()
    await store.close()
    assert fake.texts_to(CHAT) == [] and fake.refused

    fake.fail_all = None
    store = await Storage.open(tmp_path / "r.db")
    assert [m.body for m in await store.outbox.pending()] == ["Risk stop 0", "Risk stop 1", "Risk stop 2", "No stop on BTC"]
    bot = make_bot(fake)
    clock = FakeTime()
    second = Notifier(bot, store.outbox, [CHAT], clock=clock.clock, sleep=clock.sleep)
    try:
        await second.start()
        assert await second.drain(timeout=30)
        assert await store.outbox.pending() == []
    finally:
        await second.close(timeout=1)
        await bot.session.close()
        await store.close()
    # The backlog goes out merged, each text whole and in order; the alert keeps its button.
    assert fake.texts_to(CHAT) == ["<b>🚨 3 alerts</b>\n\nRisk stop 0\n\nRisk stop 1\n\nRisk stop 2", "No stop on BTC"]
    markup = json.loads(fake.calls_of("sendMessage")[-1]["reply_markup"])
    assert markup["inline_keyboard"][0][0]["callback_data"] == "pb|NO_STOP"


async def test_t4_long_text_split_at_4096_modes_silent_and_off_group_pacing(fake, tmp_path):
    """A 10,000-character message arrives in parts of at most 4096; a silent category sends
    with disable_notification; an 'off' category sends nothing; a critical one cannot be off;
    a group chat gets at most 20 messages a minute."""
    clock = FakeTime()
    stamps: list[tuple[str, float]] = []
    fake.on_call = lambda method, params: stamps.append((str(params.get("chat_id")), clock.now))
    store = await Storage.open(tmp_path / "s.db")
    bot = make_bot(fake)
    with pytest.raises(ValueError, match="stop_loss"):
        Notifier(bot, store.outbox, [CHAT], {"stop_loss": "off"})
    notifier = Notifier(bot, store.outbox, [CHAT, GROUP], {"entry": "silent", "digest": "off"},
                        clock=clock.clock, sleep=clock.sleep, merge_after=100)
    long_text = Text("\n".join(f"line {i:05d} " + "x" * 40 for i in range(200)))
    try:
        await notifier.start()
        await notifier.notify(Category.ALERT, long_text)
        await notifier.notify(Category.DIGEST, Text("never sent"))
        for i in range(25):
            await notifier.notify(Category.ENTRY, Text(f"entry {i}"))
        assert await notifier.drain(timeout=30)
    finally:
        await notifier.close(timeout=1)
        await bot.session.close()
        await store.close()
    texts = fake.texts_to(CHAT)
    parts = [t for t in texts if t.startswith("line")]
    assert len(parts) == 3 and all(len(p) <= 4096 for p in parts)
    assert "\n".join(p.strip("\n") for p in parts) == long_text.as_html()  # cut at line ends only
    assert not any("never sent" in t for t in texts)
    entries = [p for p in fake.calls_of("sendMessage") if p["text"].startswith("entry")]
    assert len(entries) == 50 and all(p["disable_notification"] for p in entries)
    assert all(b[1] - a[1] >= 1 / 30 - 1e-9 for a, b in zip(stamps, stamps[1:]))  # ~30 a second across chats
    group_times = [t for chat, t in stamps if chat == str(GROUP)]
    assert all(b - a >= 60 - 1e-9 for a, b in zip(group_times, group_times[20:]))


async def test_t4_replay_events_become_notifications_after_they_are_persisted(fake, tmp_path, data_dir):
    """A real replay with the notifier listening to the persister: entries and exits are
    announced, stop-losses first (critical); every announced close is already in SQLite."""
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=tmp_path / "e.db", data_dir=data_dir,
                                       end_ms=DAY0 + 2 * 86_400_000)
    bot = make_bot(fake)
    clock = FakeTime()
    notifier = Notifier(bot, runtime.store.outbox, [CHAT], clock=clock.clock, sleep=clock.sleep, merge_after=10_000)
    notifier.builder.quote = runtime.config.account.quote
    runtime.persister.add_listener(notifier.on_events)
    try:
        await notifier.start()
        await runtime.replay()
        assert await notifier.drain(timeout=60)
        closed = await runtime.store.positions.list_closed()
    finally:
        await notifier.close(timeout=1)
        await bot.session.close()
        await runtime.close()
    texts = fake.texts_to(CHAT)
    entries = [t for t in texts if "Entry" in t]
    exits = [t for t in texts if "Net PnL" in t]
    assert closed, "the window must hold trades for this test to mean anything"
    assert len(exits) == len(closed)
    assert len(entries) >= len(closed)
    stop_losses = [p for p in closed if p.exit_reason and p.exit_reason.value == "SL"]
    assert len([t for t in exits if "Stop-loss" in t]) == len(stop_losses)


def _position(**changes) -> Position:
    base = Position(position_id="p1", bot="main", symbol="BTC/USDT:USDT", side=Side.LONG,
                    contracts=D("0.010"), initial_contracts=D("0.010"), entry_price=D("105000.0"),
                    opened_ms=DAY0, stop_loss=D("104160.0"), take_profit_1=D("105315.0"),
                    take_profit_2=D("105630.0"), leverage=5)
    return replace(base, **changes)


def test_t4_notice_kinds_from_position_and_risk_snapshots():
    """Entry, TP1, stepwise step, scaling addition, each exit reason's category (SL critical,
    AutoProfit/Timeout normal), a risk stop announced once, funding as a digest, alerts and
    exchange rejections; a restart (prime) does not announce restored positions again."""
    builder = NoticeBuilder("USDT")
    opened = _position()
    tp1 = replace(opened, contracts=D("0.005"), tp1_done=True, stop_loss=D("105000.0"))
    step = replace(tp1, steps_done=1)
    added = replace(step, additions=1, contracts=D("0.008"))
    funded = replace(added, funding=D("0.12"))
    halted = RiskState("main", "2025-06-03", D("1000"), sl_streak=2, halted_reason="SL_STREAK")
    notices = builder.build([
        PositionChanged(opened), PositionChanged(tp1), PositionChanged(step), PositionChanged(added),
        PositionChanged(funded), RiskStateChanged(halted), RiskStateChanged(replace(halted, trades_today=3)),
        Alert("NO_STOP", "main", "BTC/USDT:USDT", "no working stop"),
    ])
    assert [n.category for n in notices] == [
        Category.ENTRY, Category.TAKE_PROFIT, Category.TAKE_PROFIT, Category.SCALING, Category.DIGEST,
        Category.RISK, Category.ALERT,
    ]
    assert [n.priority for n in notices][-2:] == [Priority.CRITICAL, Priority.CRITICAL]
    assert "SL_STREAK" in notices[5].text.as_html() and "+0.12 USDT" in notices[4].text.as_html()
    for reason, category in ((ExitReason.STOP_LOSS, Category.STOP_LOSS), (ExitReason.AUTO_PROFIT, Category.EXIT),
                             (ExitReason.TIMEOUT, Category.EXIT), (ExitReason.TP2, Category.TAKE_PROFIT)):
        fresh = NoticeBuilder("USDT")
        fresh.prime([funded])
        closed = replace(funded, contracts=D(0), closed_ms=DAY0 + 600_000, exit_price=D("104160.0"), exit_reason=reason)
        [notice] = fresh.build([PositionChanged(closed), PositionChanged(closed)])
        assert notice.category is category and "Net PnL" in notice.text.as_html()
    restarted = NoticeBuilder("USDT")
    restarted.prime([funded], [halted])
    assert restarted.build([PositionChanged(funded), RiskStateChanged(halted)]) == []
    [foreign] = NoticeBuilder().build([Alert("FOREIGN_POSITION", "main", "BTC/USDT:USDT", "not ours", "someone_else")])
    assert foreign.category is Category.ALERT and foreign.playbook == "someone_else"  # its button goes with it (T-6)
    rejected = Order("c1", "main", "BTC/USDT:USDT", OrderSide.BUY, OrderType.MARKET, OrderLeg.ENTRY, D("0.01"),
                     False, DAY0, status=OrderStatus.REJECTED, reason="-2019 Margin is insufficient")
    [notice] = NoticeBuilder().build([OrderUpdated(rejected)])
    assert notice.category is Category.ORDER and "-2019 Margin is insufficient" in notice.text.as_html()


async def test_t4_backlog_of_200_critical_alerts_all_arrive_none_over_the_limit(fake, tmp_path):
    """Issue 15: 200 critical alerts left in the outbox by a run that could not send them (stop-
    losses, risk stops, monitor alerts with emoji, escaped symbols, a few near the 4096 limit on
    their own). The next start sends every one, whole and in order, in merged messages the fake
    Bot API accepts (it refuses > 4096 characters after entity parsing, as Telegram does, counted
    in UTF-16: each emoji is 2), and the outbox ends empty: nothing refused, nothing dropped."""
    from tests.fake_telegram import MESSAGE_LIMIT, visible_length

    store = await Storage.open(tmp_path / "backlog.db")
    bodies = []
    for i in range(200):
        if i % 50 == 7:  # a long alert on its own, just under the limit once parsed
            body = Text(f"⚠️ STALE_FEED #{i:03d}\n", "🛑" * 1000, "\n", "x" * 2000).as_html()
        else:
            body = Text("🛑 ", f"Stop-loss LONG BTC/USDT:USDT (main) #{i:03d}\n", "Entry 65000 → exit 64480 ",
                        "<risk> & more 🔻🔻🔻\n", "Net PnL -3.21 USDT ⛔⛔").as_html()
        assert visible_length(body, "HTML") <= MESSAGE_LIMIT
        bodies.append(body)
        await store.outbox.add(CHAT, "stop_loss", body, False, DAY0 + i, "")
    bot = make_bot(fake)
    clock = FakeTime()
    notifier = Notifier(bot, store.outbox, [CHAT], clock=clock.clock, sleep=clock.sleep)
    try:
        await notifier.start()
        assert await notifier.drain(timeout=60)
        assert await store.outbox.pending() == []
    finally:
        await notifier.close(timeout=1)
        await bot.session.close()
        await store.close()
    assert fake.refused == [] and notifier.dropped == 0
    sent = fake.texts_to(CHAT)
    assert all(visible_length(t, "HTML") <= MESSAGE_LIMIT for t in sent)
    assert len(sent) < 200  # merged, not one message each
    joined = "\n\n".join(sent)
    positions = [joined.find(body) for body in bodies]
    assert all(p >= 0 for p in positions), "an alert was lost"
    assert positions == sorted(positions)  # in the order they happened
