"""Trials per minute of `optiflow optimize examples/optimize.toml` (SPEC D-2, D-3) on this
machine: 1 job, 2 jobs (worker processes) and a local Ray instance with 2 CPUs. Each run starts
a fresh study in a temporary folder; the time covers the whole study (3 folds × 12 in-sample
trials, plus the out-of-sample backtests) including Ray's start-up.

    python bench/optimize.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bot.optimize_cli import optimize
from trading.adapters.marketdata import default_data_dir

STUDY = Path(__file__).resolve().parents[1] / "examples" / "optimize.toml"


def main() -> None:
    """Run the three configurations and print trials/minute for each."""
    for label, jobs, ray in (("1 job", 1, None), ("2 jobs", 2, None), ("Ray (local, 2 CPUs)", 2, "")):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            result, _ = optimize(STUDY, data_dir=default_data_dir(), out_dir=Path(tmp), jobs=jobs, ray_address=ray,
                                 log=lambda _line: None)
            elapsed = time.perf_counter() - started
        print(f"{label:<20} {result.trials_run} trials in {elapsed:5.1f} s → {result.trials_run / elapsed * 60:5.1f} trials/min")


if __name__ == "__main__":
    main()
