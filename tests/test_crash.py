"""Acceptance (issue 6): SIGKILL a paper replay at ≥ 50 random moments, restart it each time on
the same SQLite file (SPEC L-3), and check against an uninterrupted run: no order placed twice
(O-2), every position has its stop after the restart's reconciliation (O-5, R-10), the same
balance, positions, orders, fills and audit records, and an audit chain that verifies (A-1).
The drill itself is ``tests/crash_drill.py`` (forked child processes, no aiogram)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_l3_a1_o2_o5_sigkill_at_50_random_moments_changes_nothing():
    run = subprocess.run(
        [sys.executable, "-m", "tests.crash_drill", "--kills", "50", "--seed", "6", "--days", "6"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["violations"] == [], result
    assert run.returncode == 0, run.stderr[-2000:]
    assert result["kills"] >= 50
    # The kills landed both during start-up (restore / reconcile) and across the replay, with
    # entries in flight and positions open in the saved state.
    assert result["moments"]["starting"] > 0 and result["moments"]["replaying"] > 0
    assert result["distinct_cursors"] >= 10
    assert result["saved_state_at_kill"].get("position_open", 0) > 0
    assert result["fills"] > 20 and result["audit_records"] > 100
