"""Walk-forward parameter search on Optuna (SPEC D-2), with trials evaluated one by one, on
local worker processes or on Ray (SPEC D-3).

The study file (TOML) declares a base config, the search space and the study::

    base = "optiscalp.toml"            # relative to this file; absent = the built-in defaults
    [study]
    name = "safe-5m"
    objectives = ["profit_factor"]     # profit_factor | return_dd | sharpe; two = multi-objective
    trials = 20                        # per fold
    folds = 3
    in_sample_ratio = 3                # in-sample window = 3 × out-of-sample window
    from = "2025-06-03"                # first UTC day
    to = "2025-06-23"                  # last UTC day (inclusive)
    seed = 42
    batch = 4                          # trials asked together (see below)
    min_trades = 5                     # fewer in-sample trades score the objective's worst
    [params]
    "bots.*.stop_loss_pct" = { low = 0.4, high = 1.2, step = 0.1 }
    "bots.*.strategy.min_score" = { low = 2.5, high = 4.0, step = 0.25 }
    "bots.*.timeout_minutes" = { choices = [30, 60, 90] }

A parameter is a dotted path into the config (``bots.*`` = every bot, ``bots.0`` = the first),
a range ``low``/``high`` (``step``, ``log``; integers when low, high and step are) or ``choices``.

Walk-forward: the window is cut into ``folds`` consecutive out-of-sample (OOS) slices, each
preceded by its in-sample (IS) slice (rolling). For each fold an Optuna study (``<name>-fold<i>``
in the storage) searches the IS slice; its best trial is then backtested once on the OOS slice —
the figure a trader can expect — beside the base config on the same slice. Reports lead with OOS.

Determinism: the driver asks ``batch`` trials from a TPE sampler seeded from (seed, fold, first
trial number of the batch), has them evaluated (anywhere: in order, on processes or on Ray), then
tells the results in trial order. The proposals therefore depend on the seed and the batch only,
never on the number of workers or on which finished first: 1 job, N jobs and Ray give the same
trials and the same best. A killed run resumes from the storage: trials left RUNNING are evaluated
again with their params, then the study goes on as if never interrupted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trading.domain.config import TradingConfig, describe_validation_error, load_trading_config
from trading.domain.errors import ConfigError

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
Objective = Literal["profit_factor", "return_dd", "sharpe"]
# Caps keep every score finite (a window with no losing trade has an infinite profit factor).
OBJECTIVE_CAP = {"profit_factor": 10.0, "return_dd": 50.0, "sharpe": 50.0}
OBJECTIVE_WORST = {"profit_factor": 0.0, "return_dd": -50.0, "sharpe": -50.0}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(_Strict):
    """One searched parameter: a range (``low``/``high``, optional ``step`` and ``log``) or
    ``choices``."""

    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _shape(self) -> "ParamSpec":
        if self.choices is not None:
            if self.low is not None or self.high is not None or not self.choices:
                raise ValueError("give either non-empty choices or low/high")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError("a range needs low ≤ high")
        return self

    def is_int(self) -> bool:
        """Integer range: low, high (and step) are whole numbers."""
        values = [self.low, self.high] + ([self.step] if self.step is not None else [])
        return self.choices is None and all(float(v).is_integer() for v in values)


class StudySpec(_Strict):
    """The ``[study]`` table (see the module docstring for each field)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    objectives: tuple[Objective, ...] = ("profit_factor",)
    trials: int = Field(default=20, ge=1, le=10_000)
    folds: int = Field(default=3, ge=1, le=50)
    in_sample_ratio: float = Field(default=3.0, gt=0, le=50)
    start: str = Field(alias="from", pattern=r"^\d{4}-\d{2}-\d{2}$")
    end: str = Field(alias="to", pattern=r"^\d{4}-\d{2}-\d{2}$")
    seed: int = 42
    batch: int = Field(default=4, ge=1, le=256)
    min_trades: int = Field(default=5, ge=0)

    @model_validator(mode="after")
    def _objectives(self) -> "StudySpec":
        if not 1 <= len(self.objectives) <= 2 or len(set(self.objectives)) != len(self.objectives):
            raise ValueError("objectives: one, or two different ones")
        return self

    def window_ms(self) -> tuple[int, int]:
        """[start, end) in epoch ms UTC (``to`` is inclusive)."""
        def day(text: str) -> int:
            return int(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp() * 1000)

        return day(self.start), day(self.end) + DAY_MS


class _SpaceFile(_Strict):
    base: str | None = None
    study: StudySpec
    params: dict[str, ParamSpec]


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """A loaded study file: the base config, the study settings and the parameters."""

    path: Path
    base: TradingConfig
    study: StudySpec
    params: dict[str, ParamSpec]

    def fingerprint(self) -> str:
        """sha256 of what makes a study (base config, params, window, objectives, seed, batch):
        a stored study with another fingerprint is not resumed under the same name."""
        payload = {"base": self.base.model_dump(mode="json"), "params": {k: v.model_dump() for k, v in self.params.items()},
                   "study": self.study.model_dump(mode="json", exclude={"trials"})}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_search_space(path: Path, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Read a study file; ``overrides`` replace ``[study]`` fields (CLI ``--trials`` …).

    Raises:
        ConfigError: unreadable file, bad TOML, an invalid field (named), a parameter path the
            config does not have, or a base config that does not load.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read study file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    if overrides:
        raw.setdefault("study", {}).update({k: v for k, v in overrides.items() if v is not None})
    try:
        spec = _SpaceFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, str(path))) from None
    base = load_trading_config((path.parent / spec.base) if spec.base else None)
    if not spec.params:
        raise ConfigError(f"{path}: [params] declares no parameter to search")
    probe = base.model_dump(mode="json")
    for name in spec.params:
        _set_path(probe, name, None, check_only=True, source=str(path))
    start, end = spec.study.window_ms()
    if end <= start:
        raise ConfigError(f"{path}: study.to is before study.from")
    return SearchSpace(path, base, spec.study, dict(spec.params))


def _set_path(tree: dict, dotted: str, value: Any, *, check_only: bool = False, source: str = "") -> None:
    """Set ``dotted`` (``bots.*.stop_loss_pct``) in the config JSON ``tree``.

    Raises:
        ConfigError: a part of the path does not exist in the config.
    """
    parts = dotted.split(".")

    def walk(node: Any, i: int) -> None:
        key = parts[i]
        last = i == len(parts) - 1
        if isinstance(node, list):
            targets = range(len(node)) if key == "*" else [int(key)] if key.isdigit() and int(key) < len(node) else None
            if targets is None:
                raise ConfigError(f"{source}: params: {dotted!r}: no list item {key!r}")
            for t in targets:
                if last:
                    if not check_only:
                        node[t] = value
                else:
                    walk(node[t], i + 1)
            return
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{source}: params: {dotted!r}: the config has no field {key!r}")
        if last:
            if not check_only:
                node[key] = value
        else:
            walk(node[key], i + 1)

    walk(tree, 0)


def apply_params(base: TradingConfig, params: dict[str, Any]) -> TradingConfig:
    """``base`` with ``params`` (dotted path → value) set.

    Raises:
        ConfigError: the result is not a valid config (e.g. TP2 below TP1), naming the field.
    """
    tree = base.model_dump(mode="json")
    for name, value in params.items():
        _set_path(tree, name, value)
    try:
        return TradingConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "trial")) from None


@dataclass(frozen=True, slots=True)
class Fold:
    """One walk-forward fold: in-sample [is_start, is_end) then out-of-sample [is_end, oos_end),
    epoch ms UTC."""

    index: int
    is_start: int
    is_end: int
    oos_end: int


def walk_forward_folds(start_ms: int, end_ms: int, folds: int, in_sample_ratio: float) -> list[Fold]:
    """Rolling folds over [start_ms, end_ms): out-of-sample slices of equal whole hours, the
    last ending at end_ms, each after an in-sample slice ``in_sample_ratio`` times as long.

    Raises:
        ConfigError: the window is too short for an hour-long out-of-sample slice.
    """
    oos = int((end_ms - start_ms) / (folds + in_sample_ratio)) // HOUR_MS * HOUR_MS
    if oos < HOUR_MS:
        raise ConfigError("study window too short for its folds")
    in_sample = int(oos * in_sample_ratio) // HOUR_MS * HOUR_MS
    first_oos = end_ms - folds * oos
    return [Fold(i + 1, first_oos + i * oos - in_sample, first_oos + i * oos, first_oos + (i + 1) * oos)
            for i in range(folds)]


def score(metrics: dict, objective: str, min_trades: int) -> float:
    """The value a study maximises: the metric capped at :data:`OBJECTIVE_CAP`, or the
    objective's worst when the backtest made fewer than ``min_trades`` trades."""
    if metrics["trades"] < min_trades:
        return OBJECTIVE_WORST[objective]
    value = float(metrics[objective])
    if math.isnan(value):
        return OBJECTIVE_WORST[objective]
    return max(OBJECTIVE_WORST[objective], min(OBJECTIVE_CAP[objective], value))


# --------------------------------------------------------------- runners
Evaluate = Callable[[dict, str, int, int], dict]
"""``evaluate(config_json, data_dir, start_ms, end_ms) -> metrics dict`` (picklable)."""


class Runner(Protocol):
    """Evaluates a batch of backtests and returns their metrics in the order given."""

    def map(self, evaluate: Evaluate, tasks: Sequence[tuple[dict, str, int, int]]) -> list[dict]:
        """Run ``evaluate(*task)`` for every task; results in task order."""

    def close(self) -> None:
        """Release workers."""


class InProcessRunner:
    """One job: the backtests run one after the other in this process."""

    name = "1 job"

    def map(self, evaluate: Evaluate, tasks: Sequence[tuple[dict, str, int, int]]) -> list[dict]:
        """See :class:`Runner`."""
        return [evaluate(*task) for task in tasks]

    def close(self) -> None:
        """Nothing to release."""


class ProcessRunner:
    """``--jobs N``: the standard library's process pool (``concurrent.futures``), N spawned
    worker processes on this machine."""

    def __init__(self, jobs: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.name = f"{jobs} jobs"
        self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))

    def map(self, evaluate: Evaluate, tasks: Sequence[tuple[dict, str, int, int]]) -> list[dict]:
        """See :class:`Runner`."""
        return list(self._pool.map(evaluate, *zip(*tasks))) if tasks else []

    def close(self) -> None:
        """Stop the worker processes."""
        self._pool.shutdown(cancel_futures=True)


class RayRunner:
    """``--ray [ADDRESS]`` (SPEC D-3): every backtest is a Ray task. Without an address a local
    Ray instance with ``jobs`` CPUs starts (and stops at :meth:`close`); with one (``auto`` or
    ``HOST:6379`` of a ``ray start --head`` cluster) the driver joins it and ships the data folder
    to the workers as the job's working directory (Ray's runtime_env; every node needs optiflow
    installed).

    Raises:
        ConfigError: Ray is not installed (``pip install 'optiflow[ray]'``) or the cluster cannot
            be reached.
    """

    def __init__(self, address: str | None, jobs: int, data_dir: Path) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs Ray: pip install 'optiflow[ray]'") from None
        self._ray = ray
        self._data_dir = str(data_dir)
        os.environ.setdefault("RAY_ACCEPT_CALLING_DEPRECATED_API", "1")
        try:
            if address:
                ray.init(address=address, log_to_driver=False,
                         runtime_env={"working_dir": self._data_dir, "excludes": ["*.part", "raw/"]})
                self._data_dir = "."  # the workers' working directory is the shipped data folder
                self.name = f"Ray cluster {address}"
            else:
                ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)
                self.name = f"Ray (local, {jobs} CPUs)"
        except Exception as exc:  # ray raises ConnectionError, RuntimeError, ValueError …
            raise ConfigError(f"--ray: cannot start or reach Ray ({type(exc).__name__}: {str(exc)[:200]})") from None
        self._remote: dict[Any, Any] = {}

    def map(self, evaluate: Evaluate, tasks: Sequence[tuple[dict, str, int, int]]) -> list[dict]:
        """See :class:`Runner`."""
        remote = self._remote.get(evaluate)
        if remote is None:
            remote = self._remote[evaluate] = self._ray.remote(num_cpus=1)(evaluate)
        refs = [remote.remote(cfg, self._data_dir if self._data_dir == "." else data, s, e) for cfg, data, s, e in tasks]
        return self._ray.get(refs)

    def close(self) -> None:
        """Leave (or stop the local) Ray instance."""
        self._ray.shutdown()


# ------------------------------------------------------------------ study
@dataclass(slots=True)
class FoldResult:
    """One fold's outcome: the best in-sample trial (params, values, metrics), its
    out-of-sample metrics, the base config's out-of-sample metrics, and every trial's
    (number, first objective value or None for failed) for the history plot."""

    fold: Fold
    best_params: dict[str, Any]
    best_values: list[float]
    is_metrics: dict
    oos_metrics: dict
    base_oos_metrics: dict
    history: list[tuple[int, float | None]] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    best_number: int = -1


@dataclass(slots=True)
class StudyResult:
    """The whole walk-forward study: its folds, the best config (the last fold's in-sample best,
    i.e. fit on the most recent data), where it is stored, and how it ran."""

    space: SearchSpace
    folds: list[FoldResult]
    best_config: TradingConfig
    storage: str
    runner: str
    trials_run: int
    elapsed_s: float


def _write_progress(path: Path | None, **state: Any) -> None:
    """Atomically write the progress file the chat reads (SPEC D-2 progress on request)."""
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)


def run_study(space: SearchSpace, data_dir: Path, storage: str, evaluate: Evaluate, runner: Runner | None = None,
              *, progress_file: Path | None = None, log: Callable[[str], None] = print) -> StudyResult:
    """Run (or resume) the walk-forward study of ``space`` on the candles in ``data_dir``.

    Args:
        storage: an Optuna storage URL (``sqlite:///study.db`` by default; any RDB URL).
        evaluate: the backtest (``bot.backtesting.evaluate``), picklable for workers.
        runner: where backtests run (default: in this process).
        progress_file: JSON progress written after every batch (for ``/optimize`` in chat).

    Raises:
        ConfigError: the stored study was made with another setup (fingerprint), or Ray failed.
        DataError: the data does not cover the window.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runner = runner or InProcessRunner()
    study_spec = space.study
    start_ms, end_ms = study_spec.window_ms()
    folds = walk_forward_folds(start_ms, end_ms, study_spec.folds, study_spec.in_sample_ratio)
    directions = ["maximize"] * len(study_spec.objectives)
    fingerprint = space.fingerprint()
    base_json = space.base.model_dump(mode="json")
    data = str(data_dir)
    started = time.monotonic()
    trials_run = 0
    results: list[FoldResult] = []
    for fold in folds:
        name = f"{study_spec.name}-fold{fold.index}"
        study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True)
        stored = study.user_attrs.get("fingerprint")
        if stored is None:
            study.set_user_attr("fingerprint", fingerprint)
            study.set_user_attr("fold", [fold.is_start, fold.is_end, fold.oos_end])
        elif stored != fingerprint:
            raise ConfigError(f"study {study_spec.name!r} exists in {storage} with another setup; "
                              "give it another name (study.name) or delete the stored study")
        while True:
            from optuna.trial import TrialState

            trials = study.get_trials(deepcopy=False)
            finished = sum(1 for t in trials if t.state.is_finished())
            running = [t for t in trials if t.state is TrialState.RUNNING]
            if finished >= study_spec.trials and not running:
                break
            if running:  # left by a killed run: evaluate them again with their own params
                asked = [_resume_trial(study, t) for t in running]
            else:
                first = len(trials)
                count = min(study_spec.batch, study_spec.trials - finished)
                sampler = optuna.samplers.TPESampler(seed=_batch_seed(study_spec.seed, fold.index, first),
                                                     n_startup_trials=min(10, study_spec.trials), constant_liar=True)
                study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
                asked = [study.ask(_distributions(space.params)) for _ in range(count)]
            tasks, configs = [], []
            for trial in asked:
                try:
                    cfg = apply_params(space.base, trial.params)
                except ConfigError as exc:
                    configs.append(str(exc))
                    continue
                configs.append(cfg)
                tasks.append((cfg.model_dump(mode="json"), data, fold.is_start, fold.is_end))
            outcomes = iter(runner.map(evaluate, tasks))
            for trial, cfg in zip(asked, configs):
                if isinstance(cfg, str):
                    trial.set_user_attr("error", cfg)
                    study.tell(trial, state=TrialState.FAIL)
                    continue
                metrics = next(outcomes)
                trial.set_user_attr("metrics", _slim(metrics))
                study.tell(trial, [score(metrics, o, study_spec.min_trades) for o in study_spec.objectives])
                trials_run += 1
            done = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
            best = _best_trial(study)
            _write_progress(progress_file, state="running", study=study_spec.name, fold=fold.index,
                            folds=len(folds), done=done, trials=study_spec.trials,
                            best=None if best is None else best.values[0], objective=study_spec.objectives[0],
                            elapsed_s=round(time.monotonic() - started, 1))
            log(f"fold {fold.index}/{len(folds)}: {done}/{study_spec.trials} trials"
                + ("" if best is None else f", best {study_spec.objectives[0]} {best.values[0]:.3f}"))
        results.append(_finish_fold(study, fold, space, base_json, data, evaluate, runner))
    best_config = apply_params(space.base, results[-1].best_params) if results[-1].best_params else space.base
    result = StudyResult(space, results, best_config, storage, getattr(runner, "name", "1 job"), trials_run,
                         time.monotonic() - started)
    _write_progress(progress_file, state="done", study=study_spec.name, fold=len(folds), folds=len(folds),
                    done=study_spec.trials, trials=study_spec.trials, best=results[-1].best_values[0],
                    objective=study_spec.objectives[0], elapsed_s=round(result.elapsed_s, 1))
    return result


def _resume_trial(study: Any, frozen: Any) -> Any:
    """An ``optuna.Trial`` handle on a stored RUNNING trial (its params already sampled)."""
    import optuna

    return optuna.trial.Trial(study, frozen._trial_id)


def _batch_seed(seed: int, fold: int, first_trial: int) -> int:
    """The sampler seed of the batch whose first trial number is ``first_trial``."""
    digest = hashlib.sha256(f"{seed}:{fold}:{first_trial}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _distributions(params: dict[str, ParamSpec]) -> dict[str, Any]:
    """Optuna distributions of the declared parameters (``study.ask(fixed_distributions)``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, spec in params.items():
        if spec.choices is not None:
            out[name] = CategoricalDistribution(list(spec.choices))
        elif spec.is_int():
            out[name] = IntDistribution(int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1))
        else:
            out[name] = FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    return out


def _slim(metrics: dict) -> dict:
    """Metrics without the equity curve (kept small in the storage)."""
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in metrics.items() if k != "equity"}


def _best_trial(study: Any) -> Any:
    """Single objective: the best trial; two: of the Pareto front, the best on the first
    objective (ties: the lower trial number). None before any complete trial."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state is TrialState.COMPLETE]
    if not complete:
        return None
    pool = study.best_trials if len(study.directions) > 1 else complete
    return max(pool, key=lambda t: (t.values[0], -t.number))


def _finish_fold(study: Any, fold: Fold, space: SearchSpace, base_json: dict, data: str,
                 evaluate: Evaluate, runner: Runner) -> FoldResult:
    """Score the fold's best on its out-of-sample slice (once: stored in the study) beside the
    base config, and collect history and importances."""
    from optuna.trial import TrialState

    best = _best_trial(study)
    history = [(t.number, t.values[0] if t.state is TrialState.COMPLETE else None)
               for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    if best is None:
        raise ConfigError(f"fold {fold.index}: no trial completed (see the trials' errors in the storage)")
    stored = study.user_attrs.get("oos")
    if stored is None or stored.get("best_number") != best.number:
        best_cfg = apply_params(space.base, best.params).model_dump(mode="json")
        oos, base_oos = runner.map(evaluate, [(best_cfg, data, fold.is_end, fold.oos_end),
                                              (base_json, data, fold.is_end, fold.oos_end)])
        stored = {"best_number": best.number, "metrics": _json_safe(oos), "base": _json_safe(base_oos)}
        study.set_user_attr("oos", stored)
    importances: dict[str, float] = {}
    if len(space.params) > 1 and len([h for h in history if h[1] is not None]) >= 4:
        import warnings

        import optuna

        try:
            with warnings.catch_warnings():
                # Optuna's default evaluator (PED-ANOVA) ranks what leads to LOW targets: every
                # objective here is maximised, so the target is the negated first objective.
                warnings.simplefilter("ignore")
                importances = dict(optuna.importance.get_param_importances(study, target=lambda t: -t.values[0]))
        except (RuntimeError, ValueError, ZeroDivisionError):
            importances = {}
    return FoldResult(fold, dict(best.params), list(best.values), dict(best.user_attrs.get("metrics", {})),
                      stored["metrics"], stored["base"], history, importances, best.number)


def _json_safe(metrics: dict) -> dict:
    """Infinite floats (a profit factor with no losing trade) as None, for JSON storage."""
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in metrics.items()}
