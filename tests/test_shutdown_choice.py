"""SPEC L-2 (seed 003): ``flatten_on_shutdown`` defaults on in live and off in paper and demo;
the /shutdown dialog's choice — "close all and stop" or "stop, keep positions with their stops"
— overrides it for that shutdown. Real paper runtime, real Notifier over the fake Bot API."""

from __future__ import annotations

import asyncio

import pytest

from bot.cli import make_telegram_bot
from bot.lifecycle import SHUTDOWN_TEXT, Lifecycle, Timeouts
from bot.notifier import Notifier
from bot.runtime import build_paper_runtime
from bot.settings import Settings, load_settings
from tests.fake_telegram import fake  # noqa: F401 - the fixture
from tests.test_notifier import FakeTime
from trading.domain.config import TradingConfig
from trading.domain.models import ExitReason, OrderLeg

USER = 4242
TOKEN = "123456:TEST-TOKEN"
DAY0 = 1_748_908_800_000
HOUR = 3_600_000


@pytest.mark.parametrize("mode, default", [("live", True), ("demo", False), ("paper", False)])
def test_l2_flatten_on_shutdown_defaults_on_in_live_off_in_paper_and_demo(monkeypatch, tmp_path, mode, default):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("OPTIFLOW_FLATTEN_ON_SHUTDOWN", raising=False)
    assert load_settings().flatten_on_shutdown(mode) is default
    monkeypatch.setenv("OPTIFLOW_FLATTEN_ON_SHUTDOWN", "false" if default else "true")
    assert load_settings().flatten_on_shutdown(mode) is not default  # set explicitly, it wins
    monkeypatch.setenv("OPTIFLOW_FLATTEN_ON_SHUTDOWN", "")
    assert load_settings().flatten_on_shutdown(mode) is default  # empty = the default


@pytest.mark.parametrize("choice", [True, False])
async def test_l2_the_dialog_choice_overrides_the_default(fake, tmp_path, data_dir, choice):  # noqa: F811
    """A live-like lifecycle (flatten on by default) asked to "stop, keep positions" keeps the
    open position and its exchange stop; asked to "close all and stop" it closes it at market.
    Either way the summary and the shutdown message go out last."""
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=tmp_path / "s.db", data_dir=data_dir,
                                       end_ms=DAY0 + 57 * HOUR)
    bot = make_telegram_bot(Settings(telegram_bot_token=TOKEN, telegram_api_base=fake.base))
    clock = FakeTime()
    notifier = Notifier(bot, runtime.store.outbox, [USER], clock=clock.clock, sleep=clock.sleep)
    lifecycle = Lifecycle(runtime, notifier, flatten=not choice, secrets=[TOKEN], timeouts=Timeouts(notifier=30))
    try:
        await runtime.replay()
        open_before = list(runtime.engine.positions.values())
        assert open_before, "the window must end with an open position"
        await notifier.start()
        await lifecycle.request_shutdown("/shutdown confirmed", flatten=choice)
        assert lifecycle.flatten is choice
        assert await lifecycle.shutdown(None, asyncio.Event())
        if choice:
            assert runtime.engine.positions == {}
            closed = {p.position_id: p for p in await runtime.store.positions.list_closed()}
            assert all(closed[p.position_id].exit_reason is ExitReason.MANUAL for p in open_before)
        else:
            assert set(runtime.engine.positions) == {(p.bot, p.symbol) for p in open_before}
            stops = [o for o in runtime.engine.open_orders.values() if o.leg is OrderLeg.STOP_LOSS]
            assert {(o.bot, o.symbol) for o in stops} == {(p.bot, p.symbol) for p in open_before}
            assert all(o.reduce_only for o in runtime.engine.open_orders.values())  # only protection left
    finally:
        await bot.session.close()
        await runtime.close()
    texts = fake.texts_to(USER)
    assert texts[-1].split("\n")[0] == f"{SHUTDOWN_TEXT} (/shutdown confirmed)"
    assert "🔗 Audit head <code>" in texts[-1] and texts[-2].startswith("<b>Run summary</b>")  # A-1 anchor
