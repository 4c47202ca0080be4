"""SPEC D-2 (``optiflow optimize``: Optuna, walk-forward, resumable storage, best config TOML,
report with plots) and D-3 (the same trials on worker processes and on a local Ray instance).

Small studies on the bundled real candles (XRP 5m, a week, 2 folds × 4 trials) keep this short;
`examples/optimize.toml` is the full-size one (3 parameters, 3 folds; README gives its timing).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.optimize_cli import optimize
from trading.app.optimize import apply_params, load_search_space, walk_forward_folds
from trading.domain.config import load_trading_config
from trading.domain.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

STUDY = """
[study]
name = "tiny"
objectives = {objectives}
trials = {trials}
folds = 2
in_sample_ratio = 2
from = "2025-06-10"
to = "2025-06-15"
seed = 7
batch = 2
min_trades = 1

[params]
"bots.*.stop_loss_pct" = {{ low = 0.4, high = 1.2, step = 0.1 }}
"bots.*.take_profit_1_pct" = {{ low = 0.3, high = 1.0, step = 0.1 }}
"bots.*.strategy.min_score" = {{ low = 2.5, high = 4.0, step = 0.25 }}
"""


def write_study(tmp_path: Path, trials: int = 4, objectives: str = '["profit_factor"]') -> Path:
    base = tmp_path / "base.toml"
    base.write_text('[[bots]]\nsymbols = ["XRP/USDT:USDT"]\ntimeframe = "5m"\ntrading_hours_utc = [0, 24]\n'
                    'blackout_hours_utc = [0, 0]\n')
    study = tmp_path / "study.toml"
    study.write_text('base = "base.toml"\n' + STUDY.format(trials=trials, objectives=objectives))
    return study


def trial_values(result) -> list[list]:
    return [[v for _, v in fold.history] for fold in result.folds]


def test_d2_optimize_writes_best_config_and_report_oos_beside_in_sample_and_resumes(tmp_path, data_dir, capsys):
    """`optiflow optimize` runs a walk-forward study: in-sample search per fold, the best scored
    out-of-sample beside the base config; best.toml loads as the config of the last fold's best;
    report.txt leads with out-of-sample figures and shows in-sample beside them; report.png is a
    PNG. Running it again resumes the stored study (no backtest repeated); more trials continue it."""
    study = write_study(tmp_path)
    out = tmp_path / "out"
    assert main(["optimize", str(study), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = (out / "report.txt").read_text()
    assert report.index("OUT-OF-SAMPLE") < report.index("IN-SAMPLE")
    assert "IN-SAMPLE (best trial)" in report and "OUT-OF-SAMPLE (same config)" in report
    assert "OUT-OF-SAMPLE (base config)" in report and "8 trials run" in report  # 2 folds × 4
    data = json.loads((out / "report.json").read_text())
    folds = data["folds"]
    assert [f["fold"] for f in folds] == [1, 2]
    assert folds[0]["out_of_sample"][0] == folds[0]["in_sample"][1]  # OOS follows its in-sample slice
    assert folds[1]["out_of_sample"][1] == 1_750_032_000_000  # 2025-06-16T00:00Z: the window's end
    best = load_trading_config(out / "best.toml")
    base = load_search_space(study).base
    assert best == apply_params(base, folds[-1]["best_params"])
    assert best.bots[0].stop_loss_pct != base.bots[0].stop_loss_pct or \
        best.bots[0].take_profit_1_pct != base.bots[0].take_profit_1_pct or \
        best.bots[0].strategy.min_score != base.bots[0].strategy.min_score
    assert (out / "report.png").read_bytes().startswith(PNG_MAGIC)
    assert "OUT-OF-SAMPLE" in printed
    # Resume: the same command finds every trial and out-of-sample score in the storage.
    assert main(["optimize", str(study), "--out", str(out)]) == 0
    assert "0 trials run" in (out / "report.txt").read_text()
    assert json.loads((out / "report.json").read_text())["folds"] == folds
    # More trials continue the stored study: only the new ones run (plus OOS if the best moved).
    result, _ = optimize(study, data_dir=data_dir, out_dir=out, overrides={"trials": 6})
    assert [len(f.history) for f in result.folds] == [6, 6]
    assert result.trials_run == 4
    progress = json.loads((out / "progress.json").read_text())
    assert progress["state"] == "done" and progress["done"] == 6


def test_d2_study_file_errors_are_one_line(tmp_path):
    """A parameter the config does not have, or a study with another setup under the same name,
    is refused with one line naming it."""
    study = write_study(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text(study.read_text().replace("strategy.min_score", "strategy.min_scor"))
    with pytest.raises(ConfigError, match="min_scor"):
        load_search_space(bad)
    folds = walk_forward_folds(0, 10 * 86_400_000, 3, 3)
    assert [f.oos_end - f.is_end for f in folds] == [folds[0].oos_end - folds[0].is_end] * 3
    assert folds[-1].oos_end == 10 * 86_400_000 and folds[0].is_end - folds[0].is_start == 3 * (folds[0].oos_end - folds[0].is_end)


def test_d3_same_best_trial_on_one_process_two_processes_and_local_ray(tmp_path, data_dir):
    """The same seeded study run in this process, on 2 worker processes (--jobs 2) and on a local
    Ray instance (--ray) proposes the same trials, scores them the same and picks the same best
    trial per fold — the trials ran elsewhere, nothing else changed."""
    study = write_study(tmp_path, objectives='["profit_factor", "return_dd"]')
    single, _ = optimize(study, data_dir=data_dir, out_dir=tmp_path / "one")
    double, _ = optimize(study, data_dir=data_dir, out_dir=tmp_path / "two", jobs=2)
    on_ray, _ = optimize(study, data_dir=data_dir, out_dir=tmp_path / "ray", jobs=2, ray_address="")
    assert on_ray.runner == "Ray (local, 2 CPUs)" and double.runner == "2 jobs"
    for other in (double, on_ray):
        assert trial_values(other) == trial_values(single)
        for a, b in zip(single.folds, other.folds):
            assert (a.best_number, a.best_params, a.best_values) == (b.best_number, b.best_params, b.best_values)
            assert a.oos_metrics == b.oos_metrics
    assert single.trials_run == 8
