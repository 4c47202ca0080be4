"""Issue 16 acceptance (SPEC D-2 in chat): `/chart BTC` and `/optimize` end to end over the real
aiogram HTTP session and long polling against the loopback fake Telegram Bot API, on a paper
runtime replayed over the bundled real candles."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.app import build_dispatcher
from bot.cli import make_telegram_bot
from bot.optimize_jobs import OptimizeJobs
from bot.runtime import build_paper_runtime
from bot.settings import Settings
from tests.fake_telegram import fake  # noqa: F401 - the fixture
from tests.test_optimize import write_study
from trading.app.research import ResearchService
from trading.domain.config import TradingConfig, load_trading_config

ALLOWED = 4242
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DAY0 = 1_748_908_800_000  # 2025-06-03T00:00Z


def _photos(fake) -> list[tuple[dict, bytes]]:
    params = [p for m, p in fake.calls if m == "sendphoto"]
    files = [f for m, _, f in fake.files if m == "sendphoto"]
    return list(zip(params, files))


async def test_d2_chart_and_optimize_over_telegram_end_to_end(fake, tmp_path, data_dir):
    """/chart BTC → a candlestick PNG with the bot's trades of the last 24 h; /optimize NAME →
    a confirm button; after ✅ Start the study runs in a child process, /optimize status answers
    its progress, a second /optimize is refused while it runs, and its result arrives as the
    report plot with the out-of-sample summary and "Apply to paper", which writes best.toml as the
    paper config."""
    config = TradingConfig.model_validate({"bots": [{"symbols": ["BTC/USDT:USDT", "ETH/USDT:USDT"], "timeframe": "5m",
                                                     "trading_hours_utc": [0, 24], "blackout_hours_utc": [0, 0]}]})
    runtime = await build_paper_runtime(config=config, db_path=tmp_path / "paper.db", data_dir=data_dir,
                                       end_ms=DAY0 + 4 * 86_400_000)
    studies = tmp_path / "studies"
    studies.mkdir()
    write_study(studies)
    paper_config = tmp_path / "paper.toml"
    optimizer = OptimizeJobs(studies, tmp_path / "out", paper_config, data_dir)
    try:
        await runtime.replay()
        closed = [p for p in await runtime.store.positions.list_closed(since_ms=DAY0 + 3 * 86_400_000)
                  if p.symbol == "BTC/USDT:USDT"]
        settings = Settings(telegram_bot_token="123456:TEST-TOKEN", telegram_api_base=fake.base,
                            telegram_allowed_user_ids=(ALLOWED,))
        research = ResearchService(runtime.store, runtime.clock, runtime.config, data_dir)
        dp = build_dispatcher(runtime.service, settings, settings.allowed_user_ids(), research=research,
                              optimizer=optimizer)
        bot = make_telegram_bot(settings)
        polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=1))
        try:
            fake.queue_text(ALLOWED, "/chart BTC")
            await fake.wait_until(lambda: len(_photos(fake)) == 1, timeout=60)
            [(params, png)] = _photos(fake)
            assert png.startswith(PNG_MAGIC) and len(png) > 10_000
            assert params["caption"].startswith("BTC/USDT:USDT 5m, last 24 h: 288 candles")
            assert f"{len(closed)} exits" in params["caption"]
            fake.queue_text(ALLOWED, "/chart DOGE")
            await fake.wait_until(lambda: any("is not traded here" in t for t in fake.texts_to(ALLOWED)))
            fake.queue_text(ALLOWED, "/optimize ../etc/passwd")
            await fake.wait_until(lambda: any("name of a study file" in t for t in fake.texts_to(ALLOWED)))
            fake.queue_text(ALLOWED, "/optimize study")
            await fake.tap(ALLOWED, "✅ Start")
            await fake.wait_until(lambda: any("Study tiny started" in t for t in fake.texts_to(ALLOWED)))
            fake.queue_text(ALLOWED, "/optimize study")
            await fake.wait_until(lambda: any("one at a time" in t for t in fake.texts_to(ALLOWED)))
            fake.queue_text(ALLOWED, "/optimize status")
            await fake.wait_until(lambda: any(t.startswith("Study tiny: ") for t in fake.texts_to(ALLOWED)))
            await fake.wait_until(lambda: len(_photos(fake)) == 2, timeout=180)
            params, png = _photos(fake)[1]
            assert png.startswith(PNG_MAGIC)
            assert "OUT-OF-SAMPLE" in params["caption"] and "best configs, folds chained" in params["caption"]
            await fake.tap(ALLOWED, "✅ Apply to paper")
            await fake.wait_until(lambda: any("saved as the paper config" in t for t in fake.texts_to(ALLOWED)))
        finally:
            await dp.stop_polling()
            await polling
            await bot.session.close()
    finally:
        await optimizer.close()
        await runtime.close()
    best = tmp_path / "out" / "optimize" / "tiny" / "best.toml"
    assert paper_config.read_bytes() == best.read_bytes()
    assert load_trading_config(paper_config).bots[0].symbols == ("XRP/USDT:USDT",)
    assert Path(tmp_path / "out" / "optimize" / "tiny" / "study.db").exists()
