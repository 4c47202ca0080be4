"""Issue 15 chat details (SPEC T-2, T-3, T-4): plain text gets a pointer to /help, one
position's notifications keep their event order, a stale ❌ Close button checks the position
first, and /log 100 never sends a header alone."""

from __future__ import annotations

import logging

from aiogram.methods import SendMessage
from aiogram.utils.formatting import Text

from bot.logbuffer import RingBufferHandler
from bot.notices import NoticeBuilder
from bot.notifier import Notifier
from storage import Storage
from tests.fake_telegram import MESSAGE_LIMIT, fake, visible_length  # noqa: F401 - the fixture
from tests.test_chat_control import Chat, answers, open_stack  # noqa: F401 - the fixture
from tests.test_notifier import CHAT, DAY0, FakeTime, make_bot
from trading.domain.events import PositionChanged, RiskStateChanged
from trading.domain.models import ExitReason, Position, RiskState, Side
from decimal import Decimal as D


async def test_t2_plain_text_gets_a_pointer_to_help(open_stack):
    """"hello", "summary" without the slash and a 5,000-character message each get one short
    line pointing to /help (naming /summary when that was meant), never silence or an echo."""
    chat = open_stack
    for text, expected in (("hello", "/help"), ("summary", "/summary"), ("Summary please", "/summary"),
                           ("x" * 5000, "/help")):
        reply = await chat.say(text)
        assert expected in reply and "/help" in reply, (text[:20], reply)
        assert len(reply) < 200 and "xxxxxxxxxx" not in reply


def _position(closed: bool = False) -> Position:
    position = Position("p1", "main", "BTC/USDT:USDT", Side.LONG, D("0.002"), D("0.002"), D("65000"), DAY0,
                        D("64480"), D("65390"), D("65780"), 5)
    if closed:
        return Position("p1", "main", "BTC/USDT:USDT", Side.LONG, D("0"), D("0.002"), D("65000"), DAY0,
                        D("64480"), D("65390"), D("65780"), 5, realised_pnl=D("-1.04"), closed_ms=DAY0 + 60_000,
                        exit_price=D("64480"), exit_reason=ExitReason.STOP_LOSS)
    return position


async def test_t4_one_positions_messages_arrive_in_event_order(fake, tmp_path):
    """T-4: an entry (normal) queued behind other messages, then its stop-loss and the risk stop
    it caused (critical): the entry still goes out before its stop-loss, and the stop-loss
    before the risk stop (which also keeps every earlier message of its bot ahead of it); another
    bot's normal message keeps its place after the critical ones."""
    store = await Storage.open(tmp_path / "order.db")
    bot = make_bot(fake)
    clock = FakeTime()
    notifier = Notifier(bot, store.outbox, [CHAT], clock=clock.clock, sleep=clock.sleep, merge_after=100,
                        builder=NoticeBuilder("USDT"))
    try:
        from bot.notices import Category

        await notifier.notify(Category.ENTRY, Text("other entry ETH"), key=("B", "ETH/USDT:USDT"))
        await notifier.on_events([PositionChanged(_position())])
        await notifier.on_events([PositionChanged(_position(closed=True)),
                                  RiskStateChanged(RiskState("main", "2025-06-03", D("1000"), 2, D("-5"), 2,
                                                             halted_reason="SL_STREAK"))])
        await notifier.start()
        assert await notifier.drain(timeout=30)
    finally:
        await notifier.close(timeout=1)
        await bot.session.close()
        await store.close()
    texts = fake.texts_to(CHAT)
    entry = next(i for i, t in enumerate(texts) if "Entry" in t and "BTC" in t)
    stop = next(i for i, t in enumerate(texts) if "Stop-loss" in t)
    risk = next(i for i, t in enumerate(texts) if "Risk stop" in t)
    other = next(i for i, t in enumerate(texts) if "other entry ETH" in t)
    assert entry < stop < risk
    assert other > risk  # an unrelated normal message does not jump ahead of critical ones


async def test_t3_stale_close_button_checks_the_position_first(open_stack):
    """T-3: a ❌ Close button from an older /open, tapped after the position closed, answers
    that the position is gone and asks nothing."""
    chat = open_stack
    await chat.say("/open")
    button = chat.buttons()[0]
    symbol = next(p.symbol for p in chat.runtime.engine.positions.values() if button.split()[-1] in p.symbol)
    stale = chat.data_of(button)
    message = chat.session.keyboard_message
    await chat.runtime.flatten()  # the position is closed by other means
    assert not any(p.symbol == symbol for p in chat.runtime.engine.positions.values())
    requests = await chat.tap_data(stale, message=message)
    assert answers(requests) == [f"No open position on {symbol} any more."]
    assert not [r for r in requests if isinstance(r, SendMessage)]  # no confirm dialog


async def test_t2_log_100_first_message_has_lines_and_none_is_over_the_limit(tmp_path, data_dir):
    """/log 100 with long lines: several messages, the first carries the header AND log lines,
    each within 4096 characters, every line present once, in order."""
    from tests import stack
    from tests.test_risk_chat import OPEN_END, two_bots

    runtime = await stack.replayed(tmp_path / "paper.db", data_dir, OPEN_END, two_bots())
    buffer = RingBufferHandler(capacity=200)
    logger = logging.getLogger("optiflow.test.log100")
    logger.addHandler(buffer)
    chat = Chat(runtime, tmp_path, log_buffer=buffer)
    try:
        for i in range(100):
            logger.warning("line %03d %s", i, "detail " * 20)
        before = len(chat.session.requests)
        await chat.console.send_text("/log 100")
        sent = [r.text for r in chat.session.requests[before:] if isinstance(r, SendMessage)]
    finally:
        logger.removeHandler(buffer)
        await chat.close()
        await runtime.close()
    assert len(sent) >= 3
    assert sent[0].startswith("Last 100 of up to 100 log lines") and "line 000" in sent[0]
    assert all(visible_length(t, None) <= MESSAGE_LIMIT for t in sent)
    joined = "\n".join(sent)
    positions = [joined.find(f"line {i:03d} ") for i in range(100)]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)
