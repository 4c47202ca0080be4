"""Monitor M-1 and playbooks T-6: the pure detection core at its thresholds, then once-per-
incident alerts on the real stack with the incident state in SQLite across a restart."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

from bot.runtime import build_paper_runtime
from keyboards.playbook import PlaybookCb, alert_keyboard
from tests import stack
from tests.test_risk_chat import OPEN_END, two_bots
from trading.domain.monitor import MINUTE_MS, MonitorSnapshot, WatchedPosition, detect, diff
from trading.domain.playbooks import PLAYBOOKS, SAFE_ACTIONS, find_playbook

NOW = 1_748_908_800_000 + 10 * 3_600_000
QUIET = MonitorSnapshot(now_ms=NOW, daily_loss_pct=D(0), sl_streaks={"A": 0}, positions=(), recent_errors=0,
                        feed_stale=False, local_contracts={}, exchange_contracts={})


def kinds(snapshot: MonitorSnapshot) -> list[str]:
    return [i.kind for i in detect(snapshot)]


def test_m1_each_condition_fires_at_its_threshold_and_not_below():
    """M-1: daily loss ≥ 1.5 %, SL streak ≥ 2, position older than 60 min, > 5 errors, feed
    stale, position without stop, local vs exchange mismatch; a quiet state raises nothing."""
    assert kinds(QUIET) == []
    assert kinds(replace(QUIET, daily_loss_pct=D("1.49"))) == []
    assert kinds(replace(QUIET, daily_loss_pct=D("1.5"))) == ["DAILY_LOSS"]
    assert kinds(replace(QUIET, sl_streaks={"A": 1, "B": 2})) == ["SL_STREAK"]
    young = WatchedPosition("A", "BTC/USDT:USDT", NOW - 60 * MINUTE_MS, True)
    old = replace(young, opened_ms=NOW - 60 * MINUTE_MS - 1)
    assert kinds(replace(QUIET, positions=(young,))) == []
    assert kinds(replace(QUIET, positions=(old,))) == ["POSITION_TOO_OLD"]
    assert kinds(replace(QUIET, positions=(replace(young, has_stop=False),))) == ["NO_STOP"]
    assert kinds(replace(QUIET, recent_errors=5)) == []
    assert kinds(replace(QUIET, recent_errors=6)) == ["LOG_ERRORS"]
    assert kinds(replace(QUIET, feed_stale=True)) == ["FEED_STALE"]
    held = {"BTC/USDT:USDT": D("0.004")}
    assert kinds(replace(QUIET, local_contracts=held, exchange_contracts=held)) == []
    assert kinds(replace(QUIET, local_contracts=held, exchange_contracts={})) == ["POSITION_MISMATCH"]
    assert kinds(replace(QUIET, local_contracts=held, exchange_contracts=None)) == []  # unknown: not judged


def test_m1_every_incident_names_an_existing_playbook_T6():
    """M-1 alerts link to their playbook; every playbook step action is a known safe action."""
    everything = replace(
        QUIET, daily_loss_pct=D(3), sl_streaks={"A": 3}, recent_errors=9, feed_stale=True,
        positions=(WatchedPosition("A", "BTC/USDT:USDT", NOW - 2 * 3_600_000, False),),
        local_contracts={"ETH/USDT:USDT": D(1)}, exchange_contracts={},
    )
    incidents = detect(everything)
    assert len(incidents) == 7
    assert all(i.playbook in PLAYBOOKS for i in incidents)
    assert all(step.action in ("", *SAFE_ACTIONS) for p in PLAYBOOKS.values() for step in p.steps)
    titles = {p.title for p in PLAYBOOKS.values()}
    assert titles == {"Exchange down", "Position without stop", "Daily loss hit", "API key rejected",
                      "Websocket down", "Balance mismatch", "Stuck order", "Strategy underperforming",
                      "Someone else on the account"}
    assert find_playbook("position-without STOP") is PLAYBOOKS["no_stop"] and find_playbook("nope") is None
    [button] = [b for row in alert_keyboard("no_stop").inline_keyboard for b in row]
    assert PlaybookCb.unpack(button.callback_data).incident == "no_stop"


def test_m1_diff_alerts_new_incidents_once_and_closes_cleared_ones():
    """M-1 no spam: an open incident is not new; one that is gone is closed."""
    [incident] = detect(replace(QUIET, feed_stale=True))
    assert diff([], [incident]) == ([incident], [])
    assert diff([incident.key], [incident]) == ([], [])
    assert diff([incident.key], []) == ([], [incident.key])


async def test_m1_alert_once_per_incident_survives_restart_and_reopens_after_clearing(tmp_path, data_dir):
    """M-1 on the real stack: a position older than 60 min alerts once, not again next minute,
    not again after a restart (incident state in SQLite); when it clears the incident closes,
    and a new occurrence alerts again."""
    db = tmp_path / "paper.db"
    runtime = await stack.replayed(db, data_dir, OPEN_END, two_bots())
    try:
        positions = list(runtime.engine.positions.values())
        assert positions
        late = max(p.opened_ms for p in positions) + 61 * MINUTE_MS
        first = await runtime.service.run_monitor(late)
        assert sorted(a.kind for a in first) == ["POSITION_TOO_OLD"] * len(positions)
        assert all(a.playbook == "stuck_order" and a.symbol in a.text for a in first)
        assert await runtime.service.run_monitor(late + MINUTE_MS) == []
        await runtime.persister.flush()
    finally:
        await runtime.close()
    restarted = await build_paper_runtime(config=two_bots(), db_path=db, data_dir=data_dir, end_ms=OPEN_END)
    try:
        assert await restarted.service.run_monitor(late + 2 * MINUTE_MS) == []  # no re-alert after restart
        early = min(p.opened_ms for p in positions) + MINUTE_MS
        assert await restarted.service.run_monitor(early) == []  # condition cleared → closed
        assert await restarted.store.incidents.list_open() == {}
        again = await restarted.service.run_monitor(late + 3 * MINUTE_MS)
        assert len(again) == len(positions)
        restarted.service.feed_stale = True
        [stale] = await restarted.service.run_monitor(late + 4 * MINUTE_MS)
        assert stale.kind == "FEED_STALE" and stale.playbook == "ws_down"
    finally:
        await restarted.close()


async def test_m1_log_errors_alert_reaches_chat_with_its_playbook_button(tmp_path, data_dir):
    """M-1: more than 5 ERROR lines in the last 10 min of the log raise one alert, sent to the
    chat through the notifier as a critical message with the "📖 Playbook" button (T-4, T-6);
    older errors do not count."""
    import io
    import logging

    from aiogram.methods import SendMessage

    from bot.console import make_console_bot
    from bot.logbuffer import RingBufferHandler
    from bot.monitor_job import monitor_pass, send_alerts
    from bot.notifier import Notifier

    runtime = await stack.replayed(tmp_path / "paper.db", data_dir, OPEN_END, two_bots())
    buffer = RingBufferHandler()
    bot = make_console_bot(tmp_path / "out", out=io.StringIO())
    try:
        record = logging.LogRecord("optiflow", logging.ERROR, __file__, 1, "order rejected", None, None)
        for _ in range(6):
            buffer.emit(record)
        wall = int(record.created * 1000)
        opened = min(p.opened_ms for p in runtime.engine.positions.values())
        runtime.engine.clock.current_ms = opened + MINUTE_MS  # positions young: only the log counts
        assert await monitor_pass(runtime.service, buffer, wall + 11 * 60_000) == []  # outside the window
        [alert] = await monitor_pass(runtime.service, buffer, wall + 60_000)
        assert alert.kind == "LOG_ERRORS" and alert.playbook == "exchange_down"
        notifier = Notifier(bot, runtime.store.outbox, [7])
        await notifier.start()
        await send_alerts(notifier, [alert])
        assert len(await runtime.store.outbox.pending()) <= 1  # critical: kept until Telegram took it (T-4)
        assert await notifier.close(10)
        assert await runtime.store.outbox.pending() == []
        [message] = [r for r in bot.session.requests if isinstance(r, SendMessage)]
        assert message.text == "⚠️ LOG_ERRORS: 6 errors in the recent log (&gt; 5)"  # HTML, escaped (T-4)
        [[button]] = message.reply_markup.inline_keyboard
        assert button.text == "📖 Playbook: Exchange down"
        assert await monitor_pass(runtime.service, buffer, wall + 90_000) == []  # once per incident
    finally:
        await bot.session.close()
        await runtime.close()


def test_m1_feed_is_stale_when_prices_stop_while_the_feed_should_run():
    """M-1 feed stale: the market clock stuck for 3 min of wall time while feeding → stale; a
    new price clears it; a finished replay (not feeding) is never stale."""
    from trading.domain.monitor import FeedWatch

    watch = FeedWatch()
    assert watch.observe(1000, 0, True) is False
    assert watch.observe(1000, 2 * MINUTE_MS, True) is False
    assert watch.observe(1000, 3 * MINUTE_MS, True) is True
    assert watch.observe(2000, 4 * MINUTE_MS, True) is False  # prices moved again
    assert watch.observe(2000, 60 * MINUTE_MS, False) is False  # replay over: not an incident


async def test_m1_minute_pass_alerts_a_stuck_replay_feed_once(tmp_path, data_dir):
    """M-1 through the minute job: a replay that should be feeding but whose clock stopped
    raises FEED_STALE once, linked to the websocket-down playbook."""
    from bot.monitor_job import monitor_pass
    from trading.domain.monitor import FeedWatch

    runtime = await stack.replayed(tmp_path / "paper.db", data_dir, OPEN_END, two_bots())
    try:
        opened = min(p.opened_ms for p in runtime.engine.positions.values())
        runtime.engine.clock.current_ms = opened + MINUTE_MS  # young positions: only the feed counts
        runtime.service.feed_state = "replaying"
        watch = FeedWatch()
        assert await monitor_pass(runtime.service, None, 0, watch) == []
        [alert] = await monitor_pass(runtime.service, None, 3 * MINUTE_MS, watch)
        assert (alert.kind, alert.playbook) == ("FEED_STALE", "ws_down")
        assert await monitor_pass(runtime.service, None, 4 * MINUTE_MS, watch) == []
    finally:
        await runtime.close()
