"""SPEC T-1 roles (issue 15 item 10): TELEGRAM_ALLOWED_USER_IDS stays the owner list; traders
may pause, resume and close; viewers get status and reports only. Everything happens in one
group chat, where every member has only their own role: a refused command or button says so in
one line, changes nothing, and is audited; strangers in the group get nothing at all."""

from __future__ import annotations

import io
import itertools
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from aiogram.methods import AnswerCallbackQuery, SendMessage
from aiogram.types import CallbackQuery, Chat, Message, MessageEntity, Update, User

from bot.app import build_dispatcher
from bot.console import keyboard_buttons, make_console_bot
from bot.settings import Settings, load_settings
from tests import stack
from trading.domain.reasons import ReasonCode
from tests.test_risk_chat import OPEN_END, two_bots
from trading.domain.errors import ConfigError

OWNER, TRADER, VIEWER, STRANGER = 11, 22, 33, 44
GROUP = Chat(id=-100123, type="supergroup", title="desk")


class Group:
    """A group chat with the real Dispatcher on the console transport."""

    def __init__(self, runtime, tmp_path) -> None:
        settings = Settings(telegram_allowed_user_ids=(OWNER,), telegram_trader_ids=(TRADER,),
                            telegram_viewer_ids=(VIEWER,))
        self.runtime = runtime
        self.dp = build_dispatcher(runtime.service, settings, settings.allowed_user_ids(), roles=settings.user_roles(),
                                   request_shutdown=lambda reason: None)
        self.bot = make_console_bot(tmp_path / "out", out=io.StringIO())
        self.ids = itertools.count(1)

    def _user(self, user_id: int) -> User:
        return User(id=user_id, is_bot=False, first_name=f"u{user_id}")

    async def say(self, user_id: int, text: str) -> list:
        before = len(self.bot.session.requests)
        entities = [MessageEntity(type="bot_command", offset=0, length=len(text.split()[0]))] if text.startswith("/") else None
        message = Message(message_id=next(self.ids) + 10_000, date=datetime.now(timezone.utc), chat=GROUP,
                          from_user=self._user(user_id), text=text, entities=entities)
        await self.dp.feed_update(self.bot, Update(update_id=next(self.ids), message=message))
        return self.bot.session.requests[before:]

    async def tap(self, user_id: int, label: str) -> list:
        message = self.bot.session.keyboard_message
        [button] = [b for b in keyboard_buttons(message) if b.text.startswith(label)]
        before = len(self.bot.session.requests)
        query = CallbackQuery(id=str(next(self.ids)), from_user=self._user(user_id), chat_instance="g",
                              message=message, data=button.callback_data)
        await self.dp.feed_update(self.bot, Update(update_id=next(self.ids), callback_query=query))
        return self.bot.session.requests[before:]


def texts(requests: list) -> list[str]:
    return [r.text for r in requests if isinstance(r, SendMessage)]


def answers(requests: list) -> list[str]:
    return [r.text or "" for r in requests if isinstance(r, AnswerCallbackQuery)]


@pytest.fixture
async def group(tmp_path, data_dir):
    runtime = await stack.replayed(tmp_path / "paper.db", data_dir, OPEN_END, two_bots())
    chat = Group(runtime, tmp_path)
    yield chat
    await chat.bot.session.close()
    await runtime.close()


async def test_t1_roles_in_a_group_chat_viewer_trader_owner_stranger(group):
    runtime = group.runtime
    paused_before = await runtime.service.paused_symbols()
    # Viewer: reports yes; control no (one line each), and nothing changes.
    assert any("Balance:" in t for t in texts(await group.say(VIEWER, "/summary")))
    for command, needed in (("/pause XRP", "trader"), ("/close BTC", "trader"), ("/shutdown", "owner"),
                            ("/log 5", "trader")):
        [line] = texts(await group.say(VIEWER, command))
        assert line == f"⛔ {command.split()[0]} needs the {needed} role; you are a viewer.", line
    assert await runtime.service.paused_symbols() == paused_before
    # The owner's pause keyboard, tapped by the viewer: refused in the answer, nothing paused.
    await group.say(OWNER, "/pause")
    refused = await group.tap(VIEWER, "⏸ XRP")
    assert answers(refused) == ["⛔ button ps needs the trader role; you are a viewer."]
    assert await runtime.service.paused_symbols() == paused_before
    # Trader: pause and close yes; shutdown no; after /resume no risk-stop lift is offered.
    assert any("Paused" in t for t in texts(await group.say(TRADER, "/pause XRP")))
    assert "XRP/USDT:USDT" in await runtime.service.paused_symbols()
    symbol = next(iter(runtime.engine.positions.values())).symbol
    assert any(t.startswith(f"Close {symbol} at market?") for t in texts(await group.say(TRADER, f"/close {symbol}")))
    [line] = texts(await group.say(TRADER, "/shutdown"))
    assert line == "⛔ /shutdown needs the owner role; you are a trader."
    # Owner: the shutdown dialog appears.
    assert any(t.startswith("Shut the bot down?") for t in texts(await group.say(OWNER, "/shutdown")))
    # A stranger in the same group: nothing at all.
    assert await group.say(STRANGER, "/summary") == [] and await group.say(STRANGER, "/shutdown") == []
    # Every refusal is in the audit trail, with who, their role and what they asked.
    refusals = [r.why for r in await runtime.store.audit.list() if r.action == "COMMAND"
                and r.why.get("command") == "refused"]
    asked = [(w["user_id"], w["role"], w["asked"]) for w in refusals]
    assert asked == [(VIEWER, "viewer", "/pause"), (VIEWER, "viewer", "/close"), (VIEWER, "viewer", "/shutdown"),
                     (VIEWER, "viewer", "/log"), (VIEWER, "viewer", "button ps"), (TRADER, "trader", "/shutdown")]
    assert (await runtime.store.audit.verify()).ok


async def test_t1_a_trader_is_not_offered_to_lift_a_risk_stop(tmp_path, data_dir):
    """Lifting a risk stop (resume after a risk stop, T-1) stays the owner's."""
    from tests.test_risk_chat import RISK_END

    runtime = await stack.replayed(tmp_path / "risk.db", data_dir, RISK_END, two_bots())
    # Bot A stopped for the day by its stop-loss streak: a stop a confirmed /resume lifts
    # (the R-3 hard limit that also fires in this window is not liftable at all).
    state = runtime.engine.risk_states["A"]
    runtime.engine.risk.set_state(replace(state, halted_reason=ReasonCode.SL_STREAK))
    chat = Group(runtime, tmp_path)
    try:
        assert runtime.service.liftable_stops()
        replies = texts(await chat.say(TRADER, "/resume all"))
        assert any("only an owner can lift it" in t for t in replies)
        assert not any("Lift the risk stop" in t for t in replies)
        assert any("Lift the risk stop" in t for t in texts(await chat.say(OWNER, "/resume all")))
    finally:
        await chat.bot.session.close()
        await runtime.close()


@pytest.mark.parametrize("variable", ["TELEGRAM_ALLOWED_USER_IDS", "TELEGRAM_TRADER_IDS", "TELEGRAM_VIEWER_IDS"])
def test_t1_a_group_chat_id_in_a_role_list_is_refused(monkeypatch, variable):
    """A group's id (negative) in a role list would give every member that role: refused at
    start naming the variable."""
    monkeypatch.setenv(variable, "11,-100123")
    with pytest.raises(ConfigError, match=variable):
        load_settings()


def test_t1_roles_from_the_environment(monkeypatch):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:TEST-TOKEN")
    monkeypatch.setenv("TELEGRAM_ALLOWED_USER_IDS", "11")
    monkeypatch.setenv("TELEGRAM_TRADER_IDS", "22, 11")
    monkeypatch.setenv("TELEGRAM_VIEWER_IDS", "33")
    settings = load_settings()
    assert settings.user_roles() == {33: "viewer", 22: "trader", 11: "owner"}  # the stronger role wins
    assert settings.allowed_user_ids() == frozenset({11, 22, 33})
    assert settings.notify_chat_ids() == (11, 22)
