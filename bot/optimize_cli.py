"""``optiflow optimize STUDY.toml`` (SPEC D-2, D-3): a walk-forward Optuna study over the data
folder; writes ``best.toml`` (the best config), ``report.txt`` / ``report.json`` (out-of-sample
first, in-sample beside it) and ``report.png`` (optimization history, parameter importances,
out-of-sample equity) to ``--out`` (default ``OPTIFLOW_OUTPUT_DIR/optimize/<study name>``).

The study lives in an Optuna storage (``<out>/study.db`` SQLite by default, ``--storage URL``
for any RDB): running the same command again resumes it. ``--jobs N`` runs N backtests at once
on this machine; ``--ray [ADDRESS]`` runs them on Ray (a local instance, or a cluster started
with ``ray start --head``). See :mod:`trading.app.optimize` for the study file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from datetime import datetime, timezone
from pathlib import Path

from trading.domain.errors import OptiFlowError

REPORT_FILES = ("best.toml", "report.txt", "report.json", "report.png")


def add_parser(sub) -> None:
    """Register ``optimize`` on the ``optiflow`` subparsers."""
    optimize = sub.add_parser("optimize", help="walk-forward parameter search on Optuna (SPEC D-2)")
    optimize.add_argument("study", type=Path, help="study file: base config, [study], [params] (see examples/)")
    optimize.add_argument("--jobs", type=int, default=1, help="backtests at once on this machine (default 1)")
    optimize.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                          help="run the trials on Ray: a local instance, or ADDRESS (auto, HOST:6379) of a cluster")
    optimize.add_argument("--storage", help="Optuna storage URL (default sqlite:///<out>/study.db)")
    optimize.add_argument("--out", type=Path, help="output folder (default OPTIFLOW_OUTPUT_DIR/optimize/<name>)")
    optimize.add_argument("--trials", type=int, help="trials per fold (overrides the study file)")
    optimize.add_argument("--folds", type=int, help="walk-forward folds (overrides the study file)")
    optimize.add_argument("--seed", type=int, help="sampler seed (overrides the study file)")
    optimize.add_argument("--data-dir", type=Path, help="data folder (default OPTIFLOW_DATA_DIR)")


def make_runner(jobs: int, ray_address: str | None, data_dir: Path):
    """The trial runner: in this process, on ``jobs`` local processes, or on Ray (D-3).

    Raises:
        OptiFlowError: ``--jobs`` below 1, or Ray unavailable.
    """
    from trading.app.optimize import InProcessRunner, ProcessRunner, RayRunner

    if jobs < 1:
        raise OptiFlowError("--jobs must be at least 1")
    if ray_address is not None:
        return RayRunner(ray_address or None, jobs, data_dir)
    return InProcessRunner() if jobs == 1 else ProcessRunner(jobs)


def optimize(study_path: Path, *, data_dir: Path, out_dir: Path | None = None, output_root: Path = Path("out"),
             storage: str | None = None, jobs: int = 1, ray_address: str | None = None,
             overrides: dict | None = None, progress_file: Path | None = None, log=print):
    """Run or resume the study and write its files; returns (StudyResult, out folder).

    Raises:
        ConfigError / DataError / OptiFlowError: with a message fit for the trader.
    """
    from bot.backtesting import evaluate
    from trading.app.optimize import load_search_space, run_study

    space = load_search_space(study_path, overrides)
    out = out_dir or output_root / "optimize" / space.study.name
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    runner = make_runner(jobs, ray_address, data_dir)
    try:
        result = run_study(space, data_dir, storage, evaluate, runner,
                           progress_file=progress_file or out / "progress.json", log=log)
    finally:
        runner.close()
    write_report(result, out)
    return result, out


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _pf(value) -> str:
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return "∞"
    return f"{value:.2f}"


def _cols(m: dict) -> str:
    if not m:
        return f"{'-':>6} {'-':>6} {'-':>8} {'-':>7}"
    return f"{m['trades']:>6} {_pf(m['profit_factor']):>6} {m['net_return_pct']:>+8.2f} {m['max_drawdown_pct']:>7.2f}"


def chained(curves) -> tuple[float, float]:
    """(compounded return %, max drawdown %) of out-of-sample equity curves chained fold after
    fold (each fold's backtest starts from the same balance)."""
    value, peak, worst = 1.0, 1.0, 0.0
    for curve in curves:
        if not curve:
            continue
        start = curve[0][1]
        base = value
        for _, equity in curve:
            value = base * equity / start
            peak = max(peak, value)
            worst = max(worst, (peak - value) / peak * 100)
    return (value - 1) * 100, worst


def render_text(result) -> str:
    """The report as text: out-of-sample results first, in-sample beside them per fold."""
    from trading.domain.views import proxy_note

    study = result.space.study
    folds = result.folds
    oos_ret, oos_dd = chained([r.oos_metrics.get("equity", []) for r in folds])
    base_ret, base_dd = chained([r.base_oos_metrics.get("equity", []) for r in folds])
    trades = sum(r.oos_metrics["trades"] for r in folds)
    lines = [
        f"OptiFlow walk-forward optimization: {study.name}",
        f"objective {' + '.join(study.objectives)}; {len(folds)} folds × {study.trials} trials; seed {study.seed}; "
        f"{result.runner}; {result.trials_run} trials run in {result.elapsed_s:.0f} s",
        "",
        "OUT-OF-SAMPLE (windows the search never saw; what to expect):",
        f"  best configs, folds chained: return {oos_ret:+.2f} %, max drawdown {oos_dd:.2f} %, {trades} trades",
        f"  base config, same windows:   return {base_ret:+.2f} %, max drawdown {base_dd:.2f} %",
        "",
        "Per fold, in-sample and out-of-sample side by side (PF = profit factor, ret/DD in %):",
        f"  {'':<4} {'':<35} | {'IN-SAMPLE (best trial)':<30} | {'OUT-OF-SAMPLE (same config)':<30} "
        f"| {'OUT-OF-SAMPLE (base config)':<30}",
        f"  {'fold':<4} {'out-of-sample window (UTC)':<35}" + f" | {'trades':>6} {'PF':>6} {'ret %':>8} {'DD %':>7}" * 3,
    ]
    for r in folds:
        window = f"{_utc(r.fold.is_end)} → {_utc(r.fold.oos_end)}"
        lines.append(f"  {r.fold.index:<4} {window:<35} | {_cols(r.is_metrics)} | {_cols(r.oos_metrics)} "
                     f"| {_cols(r.base_oos_metrics)}")
    lines += ["", "Best parameters per fold (found in-sample):"]
    for r in folds:
        params = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in r.best_params.items())
        lines.append(f"  fold {r.fold.index} (trial {r.best_number}, in-sample {_utc(r.fold.is_start)} → "
                     f"{_utc(r.fold.is_end)}): {params}")
    proxies = {tuple(p) for r in folds for p in r.oos_metrics.get("price_proxies", [])}
    if proxies:
        lines += ["", f"⚠️ {proxy_note(tuple(sorted(proxies)))}"]
    lines += ["", f"best.toml = fold {folds[-1].fold.index}'s best (fit on the most recent in-sample window); "
              f"study storage: {result.storage}"]
    return "\n".join(lines)


def write_report(result, out: Path) -> None:
    """Write best.toml, report.txt, report.json and report.png into ``out``."""
    import tomli_w

    from trading.adapters.research_charts import render_study_chart
    from trading.domain.views import proxy_note

    study = result.space.study
    header = (f"# Best config of study {study.name!r} (optiflow optimize), fold {result.folds[-1].fold.index}'s "
              f"in-sample best.\n# Its out-of-sample result is in report.txt; params: "
              f"{json.dumps(result.folds[-1].best_params)}\n")
    (out / "best.toml").write_text(header + tomli_w.dumps(result.best_config.model_dump(mode="python", exclude_none=True)),
                                   encoding="utf-8")
    text = render_text(result)
    (out / "report.txt").write_text(text + "\n", encoding="utf-8")
    payload = {
        "study": study.model_dump(mode="json", by_alias=True), "runner": result.runner, "storage": result.storage,
        "elapsed_s": result.elapsed_s, "trials_run": result.trials_run,
        "folds": [{"fold": r.fold.index, "in_sample": [r.fold.is_start, r.fold.is_end],
                   "out_of_sample": [r.fold.is_end, r.fold.oos_end], "best_trial": r.best_number,
                   "best_params": r.best_params, "best_values": r.best_values, "in_sample_metrics": r.is_metrics,
                   "out_of_sample_metrics": {k: v for k, v in r.oos_metrics.items() if k != "equity"},
                   "base_out_of_sample_metrics": {k: v for k, v in r.base_oos_metrics.items() if k != "equity"},
                   "importances": r.importances} for r in result.folds],
    }
    (out / "report.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    importances: dict[str, float] = {}
    with_importances = [r.importances for r in result.folds if r.importances]
    for imp in with_importances:
        for name, value in imp.items():
            importances[name] = importances.get(name, 0.0) + value / len(with_importances)
    proxies = tuple(sorted({tuple(p) for r in result.folds for p in r.oos_metrics.get("price_proxies", [])}))
    png = render_study_chart(
        f"Walk-forward study {study.name}: {' + '.join(study.objectives)}", study.objectives[0],
        [r.history for r in result.folds], importances,
        [r.oos_metrics.get("equity", []) for r in result.folds], [r.base_oos_metrics.get("equity", []) for r in result.folds],
        note=proxy_note(proxies),
    )
    (out / "report.png").write_bytes(png)


async def optimize_command(args: argparse.Namespace) -> int:
    """``optiflow optimize``: run the study off the event loop, print the report."""
    from bot.settings import load_settings

    settings = load_settings()
    if not args.study.is_file():
        raise OptiFlowError(f"no study file at {args.study}")
    overrides = {"trials": args.trials, "folds": args.folds, "seed": args.seed}
    result, out = await asyncio.to_thread(
        optimize, args.study, data_dir=args.data_dir or settings.optiflow_data_dir, out_dir=args.out,
        output_root=settings.optiflow_output_dir, storage=args.storage, jobs=args.jobs, ray_address=args.ray,
        overrides=overrides,
    )
    print(render_text(result))
    print("files: " + ", ".join(str(out / name) for name in REPORT_FILES))
    return 0
