"""SPEC T-4: replies survive Telegram's flood control — over the real aiogram HTTP session and
long polling against the loopback fake Bot API, a 429 ``retry_after`` on the reply to /summary
(sendMessage), on the /daily chart (sendPhoto) and on a button's answer (answerCallbackQuery)
is waited out and the same call sent again; nothing is lost and no "Internal error" appears."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiogram.exceptions import TelegramRetryAfter

from bot.app import build_dispatcher
from bot.cli import make_telegram_bot
from bot.middlewares import RetryAfterMiddleware
from bot.runtime import build_paper_runtime
from bot.settings import Settings
from handlers.common import INTERNAL_ERROR
from tests.fake_telegram import fake  # noqa: F401 - the fixture
from trading.domain.config import TradingConfig

USER = 4242
DAY0 = 1_748_908_800_000


async def test_t4_replies_photo_and_button_answer_wait_out_429_and_arrive(fake, tmp_path, data_dir):
    runtime = await build_paper_runtime(config=TradingConfig(), db_path=tmp_path / "flood.db", data_dir=data_dir,
                                       end_ms=DAY0 + 30 * 3_600_000)
    stamps: dict[str, list[float]] = {}
    fake.on_call = lambda method, params: stamps.setdefault(method, []).append(time.monotonic())
    try:
        await runtime.replay()
        settings = Settings(telegram_bot_token="123456:TEST-TOKEN", telegram_api_base=fake.base,
                            telegram_allowed_user_ids=(USER,))
        dp = build_dispatcher(runtime.service, settings, settings.allowed_user_ids())
        bot = make_telegram_bot(settings)
        [retry] = [m for m in bot.session.middleware._middlewares if isinstance(m, RetryAfterMiddleware)]
        polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=1))
        try:
            refused_at = time.monotonic()
            fake.fail(429, retry_after=1, method="sendMessage")
            fake.queue_text(USER, "/summary")
            await fake.wait_until(lambda: any("Balance:" in t for t in fake.texts_to(USER)), 30)
            assert stamps["sendmessage"][0] - refused_at >= 1.0  # retry_after was waited out

            fake.fail(429, retry_after=1, method="sendPhoto")
            fake.queue_text(USER, "/daily 2025-06-03")
            await fake.wait_until(lambda: fake.calls_of("sendPhoto"), 30)

            fake.queue_text(USER, "/pause")
            fake.fail(429, retry_after=1, method="answerCallbackQuery")
            await fake.tap(USER, "⏸ BTC", 30)
            await fake.wait_until(lambda: fake.calls_of("answerCallbackQuery"), 30)
        finally:
            await dp.stop_polling()
            await polling
            await bot.session.close()
    finally:
        await runtime.close()
    assert sorted(m for m, _, status in fake.refused if status == 429) == ["answercallbackquery", "sendmessage",
                                                                            "sendphoto"]
    assert retry.retried == 3
    assert INTERNAL_ERROR not in fake.texts_to(USER)
    assert fake.calls_of("sendPhoto")[0]["photo"]["data"].startswith(b"\x89PNG")
    assert "Paused BTC" in fake.calls_of("answerCallbackQuery")[0].get("text", "")


async def test_t4_retry_is_bounded():
    """T-4 bounds: a retry_after beyond the wait budget is not waited (the caller gets the 429);
    after max_retries the 429 goes to the caller too."""
    from aiogram.methods import SendMessage

    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    calls = 0

    async def always_429(bot, method):
        nonlocal calls
        calls += 1
        raise TelegramRetryAfter(method=method, message="Too Many Requests", retry_after=2)

    method = SendMessage(chat_id=1, text="x")
    with pytest.raises(TelegramRetryAfter):
        await RetryAfterMiddleware(max_retries=3, max_wait=100, sleep=sleep)(always_429, None, method)
    assert calls == 4 and sleeps == [2.0, 2.0, 2.0]
    sleeps.clear()
    calls = 0
    with pytest.raises(TelegramRetryAfter):
        await RetryAfterMiddleware(max_retries=5, max_wait=3, sleep=sleep)(always_429, None, method)
    assert calls == 2 and sleeps == [2.0]
