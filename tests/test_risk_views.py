"""Issue 14 deliverable 6 and the build card (SPEC T-2, L-1, Z-4, Z-5, R-3, R-5, R-9, S-7):
/risk, /summary and the build card show the equity tier, the launch stage, the drawdown stage
and the hard daily limit — and the build card shows the limits the preset really applies. Real
paper runtime over the bundled candles, real Dispatcher on the console transport."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bot.lifecycle import build_card
from bot.render import money
from tests import stack
from tests.test_chat_control import Chat, answers
from tests.test_risk_chat import DAY0, HOUR, bot_block
from trading.domain.config import load_trading_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def test_scaling_preset_risk_summary_and_card_show_tier_drawdown_hard_limit_gate_and_applied_limits(
        tmp_path, data_dir):
    """The `scaling` preset at 400: the tier 300–750 sets 2.0 % risk, 8×, 3 positions and an SL
    streak stop of 3 — the build card shows those (not the profile's 0.75 % / 2 positions / 2),
    /risk and /summary show the tier, the R-5 stage with its thresholds, the R-3 hard limit
    and the S-7 live gate."""
    config = load_trading_config(EXAMPLES / "scaling.toml")
    runtime = await stack.replayed(tmp_path / "s.db", data_dir, DAY0 + 30 * HOUR, config)
    try:
        engine = runtime.engine
        equity = engine.equity()
        limits = engine.limits(config.bots[0], equity)
        assert (limits.tier.name, limits.leverage, limits.max_positions, limits.sl_streak_limit) == (
            "300-750", 8, 3, 3)
        card, _ = build_card(runtime, "paper", "simulated", "", await runtime.service.account_risk()).render()
        risk, summary = await stack.ask(runtime, tmp_path, "/risk", "/summary")
        stage = engine.drawdown_stage(equity).value
        peak = max(engine.account.peak_equity, equity)
    finally:
        await runtime.close()
    assert (f"scale: XRP, ADA, DOGE, SOL · 5m · 8× · risk {limits.risk_pct:.2f}% · max 3 positions · "
            "SL streak stop 3") in card
    assert "daily loss 2.00% (hard 3.00%)" in card
    for text in (card, risk, summary):
        assert "Equity tier: 300-750 (changes 2.00% past a boundary, R-9)" in text
        assert f"Drawdown stage: {stage}" in text
        assert "Hard daily limit: 3.00% closes everything, halts to 00:00 UTC" in text
        assert "Live gate: ❌ promotion gate (S-7) not met: 0 closed demo trades (needs ≥ 20)" in text
        assert "Launch stage" not in text
    # R-5 thresholds at the greater of 8 % / 50 quote and 15 % / 100 quote below the peak.
    reduce_at = peak - max(peak * 8 / 100, 50)
    pause_at = peak - max(peak * 15 / 100, 100)
    assert f"risk halves at {money(reduce_at, 'USDT')}, entries pause at {money(pause_at, 'USDT')}" in risk
    assert f"Risk / leverage: {limits.risk_pct} % per trade, 8×" in bot_block(risk, "scale")


async def test_z5_launch_preset_stage_in_risk_summary_and_build_card(tmp_path, data_dir):
    """Z-5: the `launch` preset shows its stage (1/6 at the start: one position at 0.5 %, 5×) and
    what the next step needs in /risk, /summary and the build card."""
    config = load_trading_config(EXAMPLES / "launch.toml")
    runtime = await stack.replayed(tmp_path / "l.db", data_dir, DAY0 + 6 * HOUR, config)
    try:
        ramp = runtime.engine.risk.ramp
        assert ramp.stage == 1
        card, _ = build_card(runtime, "paper", "simulated", "", await runtime.service.account_risk()).render()
        risk, summary = await stack.ask(runtime, tmp_path, "/risk", "/summary")
        wins = sum(1 for p in await runtime.store.positions.list_closed() if p.net_pnl > 0)
    finally:
        await runtime.close()
    for text in (card, risk, summary):
        assert "Launch stage: 1/6 — 1 position(s) at 0.5 % risk, up to 5×" in text
    assert f"next: stage 2 after 10 winning trades ({wins} so far)" in risk
    assert "launch: XRP, ADA, DOGE, SOL · 5m · 5× · risk 0.50% · max 1 positions" in card


async def test_r5_latched_pause_is_lifted_by_a_confirmed_resume_and_audited(tmp_path, data_dir):
    """R-5 / T-1: a latched drawdown pause shows in /risk; /resume all offers to lift it (as
    `account`); the confirm lifts it and records a COMMAND in the audit."""
    from tests.test_risk_chat import two_bots

    runtime = await stack.replayed(tmp_path / "p.db", data_dir, DAY0 + 6 * HOUR, two_bots())
    chat = Chat(runtime, tmp_path)
    try:
        risk = runtime.engine.risk
        risk.set_account(replace(risk.account, drawdown_paused=True))
        assert "Drawdown stage: PAUSE (latched until a confirmed /resume)" in await chat.say("/risk")
        reply = await chat.say("/resume all")
        assert "Still stopped by a risk rule: account (DRAWDOWN_PAUSE)" in reply
        assert answers(await chat.tap("✅")) == ["Done"]
        assert not risk.account.drawdown_paused
        await runtime.persister.flush()
        commands = [r.why for r in await runtime.store.audit.list() if r.action == "COMMAND"]
        assert {"command": "lift_risk_stop", "source": "chat", "reason": "DRAWDOWN_PAUSE"} in commands
        assert any(r.action == "DRAWDOWN_RESUMED" for r in await runtime.store.audit.list())
    finally:
        await chat.close()
        await runtime.close()
